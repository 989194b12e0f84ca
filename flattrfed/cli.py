"""The `flattrfed` command line: serve, worker, database migrations and admin tasks."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import secrets
import signal
import sys
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from flattrfed.config import ConfigError, Settings, load_settings
from flattrfed.db.migrate import SchemaBehind, ensure_schema_current


class CommandError(Exception):
    """A command cannot do what was asked; the message is shown to the admin as one line."""


def print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, sort_keys=True, default=str))


async def with_database(settings: Settings, work: Callable[[Any], Coroutine[Any, Any, Any]]) -> Any:
    from flattrfed.db.session import Database

    database = Database(settings.database_url)
    try:
        return await work(database)
    finally:
        await database.dispose()


def cmd_db_upgrade(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.db import migrate

    settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def run(database: Any) -> tuple[str | None, str | None]:
        before = await migrate.current_revision(database.engine)
        await migrate.upgrade(database.engine)
        return before, await migrate.current_revision(database.engine)

    before, after = asyncio.run(with_database(settings, run))
    if args.json:
        print_json({"from": before, "to": after})
    elif before == after:
        print(f"database already at revision {after}")
    else:
        print(f"database migrated from {before or 'empty'} to {after}")
    return 0


def cmd_db_status(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.db import migrate

    async def run(database: Any) -> tuple[str | None, str | None]:
        return await migrate.current_revision(database.engine), await migrate.schema_problem(
            database.engine
        )

    current, problem = asyncio.run(with_database(settings, run))
    head = migrate.head_revision()
    if args.json:
        print_json({"current": current, "head": head, "up_to_date": problem is None})
    else:
        print(problem or f"database at revision {current} (up to date)")
    return 0 if problem is None else 1


def _serve_banner(settings: Settings, host: str, port: int) -> str:
    return (
        f"flattrfed is serving {settings.base_url} (listening on http://{host}:{port})\n"
        f"  health:            {settings.base_url}/health\n"
        "  first admin:       flattrfed member add NAME --admin   (same FLATTRFED_* settings)\n"
        "  stop:              Ctrl-C"
    )


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from aiohttp import web

    from flattrfed.app import create_app

    async def check(database: Any) -> None:
        await ensure_schema_current(database.engine)

    # Refuse before binding the port, so a half-migrated instance never answers anybody.
    asyncio.run(with_database(settings, check))
    app = create_app(settings)
    print(_serve_banner(settings, args.host, args.port), flush=True)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)
    return 0


def cmd_worker(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.app import create_app
    from flattrfed.context import SERVICES

    app = create_app(settings)
    services = app[SERVICES]

    async def run() -> None:
        # The same start-up as `serve`: a worker alone must still queue the month's close.
        await services.prepare()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        print(f"flattrfed worker {services.worker.worker_id} started", flush=True)
        try:
            if args.once:
                await services.worker.run_until_idle()
            else:
                await services.worker.run_forever(stop, poll_interval=args.poll_interval)
        finally:
            await services.client.close()
            await services.database.dispose()

    asyncio.run(run())
    return 0


def cmd_config_show(settings: Settings, args: argparse.Namespace) -> int:
    shown = {
        "base_url": settings.base_url,
        "data_dir": str(settings.data_dir),
        "database_url": settings.database_url,
        "currency": settings.currency,
        "fee_bp": settings.fee_bp,
        "budget_min_minor": settings.budget_min_minor,
        "budget_max_minor": settings.budget_max_minor,
        "allowed_private_addresses": [str(n) for n in settings.allowed_private_addresses],
        "trusted_proxies": [str(n) for n in settings.trusted_proxies],
        "allow_http": settings.allow_http,
        "registration": settings.registration,
        "worker_in_process": settings.worker_in_process,
    }
    print_json(shown)
    return 0


async def _instance_context(settings: Settings, database: Any) -> Any:
    from flattrfed.activitypub.urls import LocalUrls

    await ensure_schema_current(database.engine)
    return LocalUrls(settings.base_url)


def cmd_member_create(settings: Settings, args: argparse.Namespace) -> int:
    return _create_member(settings, args, is_admin=args.admin)


def cmd_admin_create(settings: Settings, args: argparse.Namespace) -> int:
    return _create_member(settings, args, is_admin=True)


def _read_password(args: argparse.Namespace) -> tuple[str, bool]:
    if args.password_stdin:
        return sys.stdin.readline().rstrip("\n"), False
    if sys.stdin.isatty():
        return getpass.getpass(f"password for {args.username}: "), False
    return secrets.token_urlsafe(15), True


def _create_member(settings: Settings, args: argparse.Namespace, *, is_admin: bool) -> int:
    from flattrfed.clock import SystemClock
    from flattrfed.flattring.members import MemberError, create_member

    password, generated = _read_password(args)

    async def run(database: Any) -> int:
        await ensure_schema_current(database.engine)
        async with database.transaction() as session:
            member = await create_member(
                session,
                username=args.username,
                password=password,
                is_admin=is_admin,
                now=SystemClock().now(),
            )
            return int(member.id)

    try:
        member_id = asyncio.run(with_database(settings, run))
    except MemberError as error:
        raise CommandError(str(error)) from None
    result: dict[str, Any] = {
        "id": member_id,
        "username": args.username,
        "admin": is_admin,
        "actor": f"{settings.base_url}/users/{args.username}",
        "handle": f"@{args.username}@{settings.host}",
    }
    if generated:
        result["password"] = password
    if args.json:
        print_json(result)
    else:
        print(f"{'admin' if is_admin else 'member'} {args.username} created")
        if generated:
            print(f"generated password (shown once): {password}")
    return 0


def cmd_thing_post(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.activitypub.actors import find_local_actor
    from flattrfed.activitypub.outbox import publish_post
    from flattrfed.clock import SystemClock

    async def run(database: Any) -> dict[str, Any]:
        urls = await _instance_context(settings, database)
        async with database.transaction() as session:
            actor = await find_local_actor(session, kind="thing", username=args.thing)
            if actor is None:
                raise CommandError(f"no thing with the handle {args.thing!r}")
            try:
                post = await publish_post(session, urls, actor, args.text, SystemClock().now())
            except ValueError as error:
                raise CommandError(str(error)) from None
            return {"id": post.uri, "thing": urls.actor("thing", args.thing)}

    result = asyncio.run(with_database(settings, run))
    if args.json:
        print_json(result)
    else:
        print(result["id"])
    return 0


def cmd_actor_rotate_key(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.activitypub.actors import find_local_actor
    from flattrfed.activitypub.outbox import rotate_actor_key
    from flattrfed.clock import SystemClock

    async def run(database: Any) -> dict[str, Any]:
        urls = await _instance_context(settings, database)
        async with database.transaction() as session:
            actor = await find_local_actor(session, username=args.handle)
            if actor is None:
                raise CommandError(f"no actor with the handle {args.handle!r}")
            queued = await rotate_actor_key(session, urls, actor, SystemClock().now())
            return {"actor": urls.actor(actor.kind, actor.username), "updates_queued": queued}

    result = asyncio.run(with_database(settings, run))
    if args.json:
        print_json(result)
    else:
        queued = result["updates_queued"]
        print(f"key rotated for {result['actor']}; Update queued to {queued} inboxes")
    return 0


def cmd_domain(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from flattrfed.activitypub.hosts import block_domain, unblock_domain
    from flattrfed.clock import SystemClock
    from flattrfed.db.models import DomainBlock

    async def run(database: Any) -> Any:
        await ensure_schema_current(database.engine)
        async with database.transaction() as session:
            if args.domain_command == "block":
                await block_domain(session, args.domain, args.reason, SystemClock().now())
                return {"blocked": args.domain.lower()}
            if args.domain_command == "unblock":
                return {
                    "unblocked": args.domain.lower(),
                    "was_blocked": await unblock_domain(session, args.domain),
                }
            rows = (await session.scalars(select(DomainBlock).order_by(DomainBlock.domain))).all()
            return [
                {"domain": row.domain, "reason": row.reason, "since": row.created_at}
                for row in rows
            ]

    result = asyncio.run(with_database(settings, run))
    if args.json or isinstance(result, dict):
        print_json(result)
    else:
        for row in result:
            print(f"{row['domain']}\t{row['reason']}")
    return 0


def cmd_deliveries(settings: Settings, args: argparse.Namespace) -> int:
    from sqlalchemy import select

    from flattrfed.activitypub.delivery import DELIVER_KIND
    from flattrfed.db.models import FederationHost, WorkItem

    async def run(database: Any) -> dict[str, Any]:
        await ensure_schema_current(database.engine)
        async with database.sessions() as session:
            query = select(WorkItem).where(WorkItem.kind == DELIVER_KIND)
            if not args.all:
                query = query.where(WorkItem.last_error.is_not(None))
            items = (
                await session.scalars(query.order_by(WorkItem.id.desc()).limit(args.limit))
            ).all()
            hosts = (
                await session.scalars(select(FederationHost).order_by(FederationHost.host))
            ).all()
        return {
            "deliveries": [
                {
                    "id": item.id,
                    "inbox": item.payload.get("inbox"),
                    "activity": item.payload.get("activity", {}).get("id"),
                    "state": item.state,
                    "attempts": item.attempts,
                    "next_attempt": item.run_after if item.state == "pending" else None,
                    "last_error": item.last_error,
                }
                for item in items
            ],
            "hosts": [
                {
                    "host": host.host,
                    "failure_days": host.failure_days,
                    "unavailable_since": host.unavailable_since,
                    "last_error": host.last_error,
                }
                for host in hosts
            ],
        }

    result = asyncio.run(with_database(settings, run))
    if args.json:
        print_json(result)
    else:
        for item in result["deliveries"]:
            fields = [item["id"], item["state"], item["attempts"], item["inbox"]]
            print("\t".join(str(field) for field in [*fields, item["last_error"] or ""]))
        for host in result["hosts"]:
            status = (
                f"unavailable since {host['unavailable_since']}"
                if host["unavailable_since"]
                else "failing"
            )
            print(
                f"host {host['host']}: {status} ({host['failure_days']} days): {host['last_error']}"
            )
    return 0


def cmd_check(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.settlement.checks import check_ledger

    async def run(database: Any) -> list[Any]:
        await ensure_schema_current(database.engine)
        async with database.sessions() as session:
            return await check_ledger(session, settings.currency)

    problems = asyncio.run(with_database(settings, run))
    if args.json:
        print_json({"ok": not problems, "problems": [vars(problem) for problem in problems]})
    elif not problems:
        print("ok")
    else:
        for problem in problems:
            print(f"{problem.invariant}: {problem.detail} [{', '.join(problem.rows)}]")
        print(f"{len(problems)} problem(s) found")
    return 1 if problems else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flattrfed",
        description="A federated Flattr: monthly budgets split among the things you flattr.",
        epilog="Settings come from FLATTRFED_* environment variables (see docs/admin-guide.md).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve the instance (and run the worker in-process)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8080)
    serve.set_defaults(handler=cmd_serve)

    worker = commands.add_parser("worker", help="run the background worker alone")
    worker.add_argument("--once", action="store_true", help="run until nothing is due, then exit")
    worker.add_argument("--poll-interval", type=float, default=1.0, metavar="SECONDS")
    worker.set_defaults(handler=cmd_worker)

    db = commands.add_parser("db", help="database schema").add_subparsers(
        dest="db_command", required=True, metavar="ACTION"
    )
    upgrade = db.add_parser("upgrade", help="migrate the database to this version's schema")
    upgrade.add_argument("--json", action="store_true")
    upgrade.set_defaults(handler=cmd_db_upgrade)
    status = db.add_parser("status", help="say whether the database schema is up to date")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=cmd_db_status)

    admin = commands.add_parser("admin", help="administrator accounts").add_subparsers(
        dest="admin_command", required=True, metavar="ACTION"
    )
    create = admin.add_parser("create", help="create an administrator account")
    create.add_argument("username")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    create.add_argument("--json", action="store_true")
    create.set_defaults(handler=cmd_admin_create)

    member = commands.add_parser("member", help="member accounts").add_subparsers(
        dest="member_command", required=True, metavar="ACTION"
    )
    member_create = member.add_parser(
        "add", aliases=["create"], help="create a member account (its actor keys too)"
    )
    member_create.add_argument("username")
    member_create.add_argument("--admin", action="store_true", help="make an administrator")
    member_create.add_argument("--password-stdin", action="store_true")
    member_create.add_argument("--json", action="store_true")
    member_create.set_defaults(handler=cmd_member_create)

    thing = commands.add_parser("thing", help="things (creator works)").add_subparsers(
        dest="thing_command", required=True, metavar="ACTION"
    )
    thing_post = thing.add_parser("post", help="publish a post to the thing's followers")
    thing_post.add_argument("thing", help="the thing's handle")
    thing_post.add_argument("--text", required=True)
    thing_post.add_argument("--json", action="store_true")
    thing_post.set_defaults(handler=cmd_thing_post)

    actor = commands.add_parser("actor", help="ActivityPub actors").add_subparsers(
        dest="actor_command", required=True, metavar="ACTION"
    )
    rotate = actor.add_parser("rotate-key", help="replace an actor's key and tell followers")
    rotate.add_argument("handle")
    rotate.add_argument("--json", action="store_true")
    rotate.set_defaults(handler=cmd_actor_rotate_key)

    domain = commands.add_parser("domain", help="domain blocks").add_subparsers(
        dest="domain_command", required=True, metavar="ACTION"
    )
    block = domain.add_parser("block", help="drop everything from a domain, send nothing to it")
    block.add_argument("domain")
    block.add_argument("--reason", default="")
    block.add_argument("--json", action="store_true")
    block.set_defaults(handler=cmd_domain)
    unblock = domain.add_parser("unblock", help="lift a domain block")
    unblock.add_argument("domain")
    unblock.add_argument("--json", action="store_true")
    unblock.set_defaults(handler=cmd_domain)
    blocks = domain.add_parser("list", help="list blocked domains")
    blocks.add_argument("--json", action="store_true")
    blocks.set_defaults(handler=cmd_domain)

    deliveries = commands.add_parser(
        "deliveries", help="failing deliveries and paused hosts (for admins)"
    )
    deliveries.add_argument("--all", action="store_true", help="include deliveries without errors")
    deliveries.add_argument("--limit", type=int, default=50)
    deliveries.add_argument("--json", action="store_true")
    deliveries.set_defaults(handler=cmd_deliveries)

    check = commands.add_parser("check", help="verify the ledger's invariants (exit 1 if broken)")
    check.add_argument("--json", action="store_true")
    check.set_defaults(handler=cmd_check)

    from flattrfed.cli_flattring import add_flattring_commands

    add_flattring_commands(commands, thing)
    from flattrfed.cli_settlement import add_exchange_commands, add_settlement_commands

    add_settlement_commands(commands)
    add_exchange_commands(commands)

    demo = commands.add_parser(
        "demo", help="three instances on loopback live through a month of flattrs and settle it"
    )
    demo.add_argument("--json", action="store_true", help="print the report as JSON")
    demo.add_argument(
        "--keep-running", action="store_true", help="keep the instances up to click through"
    )

    config = commands.add_parser("config", help="settings").add_subparsers(
        dest="config_command", required=True, metavar="ACTION"
    )
    config.add_parser("show", help="print the effective settings (secrets left out)").set_defaults(
        handler=cmd_config_show
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        # The demo makes its own three instances: it needs no settings of an instance.
        from flattrfed.demo import main as demo_main

        return demo_main(args.json, args.keep_running)
    try:
        settings = load_settings()
    except ConfigError as error:
        print(f"flattrfed: configuration error: {error}", file=sys.stderr)
        return 2
    from flattrfed.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        result: int = args.handler(settings, args)
        return result
    except (CommandError, SchemaBehind) as error:
        print(f"flattrfed: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
