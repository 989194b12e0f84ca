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


def _print_json(document: Any) -> None:
    print(json.dumps(document, indent=2, sort_keys=True, default=str))


async def _with_database(
    settings: Settings, work: Callable[[Any], Coroutine[Any, Any, Any]]
) -> Any:
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

    before, after = asyncio.run(_with_database(settings, run))
    if args.json:
        _print_json({"from": before, "to": after})
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

    current, problem = asyncio.run(_with_database(settings, run))
    head = migrate.head_revision()
    if args.json:
        _print_json({"current": current, "head": head, "up_to_date": problem is None})
    else:
        print(problem or f"database at revision {current} (up to date)")
    return 0 if problem is None else 1


def _serve_banner(settings: Settings, host: str, port: int) -> str:
    return (
        f"flattrfed is serving {settings.base_url} (listening on http://{host}:{port})\n"
        f"  health:            {settings.base_url}/health\n"
        "  first admin:       flattrfed admin create NAME   (with the same FLATTRFED_* settings)\n"
        "  stop:              Ctrl-C"
    )


def cmd_serve(settings: Settings, args: argparse.Namespace) -> int:
    from aiohttp import web

    from flattrfed.app import create_app

    async def check(database: Any) -> None:
        await ensure_schema_current(database.engine)

    # Refuse before binding the port, so a half-migrated instance never answers anybody.
    asyncio.run(_with_database(settings, check))
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
        await ensure_schema_current(services.database.engine)
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
            await services.database.dispose()

    asyncio.run(run())
    return 0


def cmd_admin_create(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.clock import SystemClock
    from flattrfed.flattring.members import MemberError, create_member

    generated = False
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    elif sys.stdin.isatty():
        password = getpass.getpass(f"password for {args.username}: ")
    else:
        password = secrets.token_urlsafe(15)
        generated = True

    async def run(database: Any) -> int:
        await ensure_schema_current(database.engine)
        async with database.transaction() as session:
            member = await create_member(
                session,
                username=args.username,
                password=password,
                is_admin=True,
                now=SystemClock().now(),
            )
            return int(member.id)

    try:
        member_id = asyncio.run(_with_database(settings, run))
    except MemberError as error:
        raise CommandError(str(error)) from None
    result: dict[str, Any] = {"id": member_id, "username": args.username, "admin": True}
    if generated:
        result["password"] = password
    if args.json:
        _print_json(result)
    else:
        print(f"admin {args.username} created")
        if generated:
            print(f"generated password (shown once): {password}")
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
        "allow_http": settings.allow_http,
        "registration": settings.registration,
        "worker_in_process": settings.worker_in_process,
    }
    _print_json(shown)
    return 0


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
