"""The `flattrfed` commands for members' money and flattring: deposits, budgets, flattrs, peers."""

from __future__ import annotations

import argparse
import asyncio
import re
from collections.abc import Awaitable, Callable
from dataclasses import asdict
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.config import Settings


def _money(text: str, currency: str) -> int:
    from flattrfed.cli import CommandError
    from flattrfed.money import Money

    try:
        return Money.parse(text, currency).amount_minor
    except ValueError as error:
        raise CommandError(f"{text!r} is not an amount in {currency}: {error}") from None


async def _services(settings: Settings) -> Any:
    """A full instance (not listening) for commands that fetch from the network."""
    from flattrfed.app import create_app
    from flattrfed.context import SERVICES

    app = create_app(settings)
    return app[SERVICES]


async def _member(session: AsyncSession, name: str) -> Any:
    from flattrfed.cli import CommandError
    from flattrfed.db.models import Member

    member = await session.scalar(select(Member).where(Member.username == name))
    if member is None:
        raise CommandError(f"no member named {name!r}")
    return member


def _run(settings: Settings, work: Callable[[Any], Awaitable[Any]]) -> Any:
    """Run `work(services)` against a fully built (not listening) instance, then clean up."""
    from flattrfed.cli import CommandError
    from flattrfed.db.migrate import ensure_schema_current
    from flattrfed.flattring.claims import ClaimError
    from flattrfed.flattring.peers import PeeringError
    from flattrfed.flattring.policy import PolicyError
    from flattrfed.flattring.resolve import CannotFlattr
    from flattrfed.flattring.things import ThingError
    from flattrfed.flattring.wallets import WalletError
    from flattrfed.settlement.ledger import LedgerError

    async def run() -> Any:
        services = await _services(settings)
        try:
            await ensure_schema_current(services.database.engine)
            return await work(services)
        finally:
            await services.client.close()
            await services.database.dispose()

    try:
        return asyncio.run(run())
    except (
        CannotFlattr,
        ClaimError,
        LedgerError,
        PeeringError,
        PolicyError,
        ThingError,
        WalletError,
    ) as error:
        raise CommandError(str(error)) from None


def _output(args: argparse.Namespace, result: Any, text: str) -> int:
    from flattrfed.cli import print_json

    if args.json:
        print_json(result)
    else:
        print(text)
    return 0


def slug_for(title: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "_", title.lower()).strip("_")
    return (slug or "thing")[:24]


def cmd_thing_add(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.activitypub.actors import username_taken
    from flattrfed.flattring.things import create_thing

    async def work(services: Any) -> dict[str, Any]:
        async with services.database.transaction() as session:
            owner = await _member(session, args.owner)
            handle = args.handle
            if handle is None:
                base = slug_for(args.title)
                handle, number = base, 1
                while await username_taken(session, handle):
                    number += 1
                    handle = f"{base}_{number}"
            thing = await create_thing(
                session,
                owner=owner,
                handle=handle,
                title=args.title,
                description=args.description,
                external_url=args.url,
                now=services.clock.now(),
            )
            return {
                "id": services.urls.actor("thing", handle),
                "thing_id": thing.id,
                "handle": f"@{handle}@{settings.host}",
                "title": thing.title,
                "owner": args.owner,
            }

    result = _run(settings, work)
    return _output(args, result, f"thing {result['handle']} created: {result['id']}")


def cmd_thing_show(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.activitypub.actors import find_local_actor
    from flattrfed.db.models import Member, ReceivedLike, Thing
    from flattrfed.periods import Period

    async def work(services: Any) -> dict[str, Any]:
        from flattrfed.cli import CommandError

        name = args.thing.lstrip("@").split("@", 1)[0]
        async with services.database.sessions() as session:
            actor = await find_local_actor(session, kind="thing", username=name)
            if actor is None or actor.thing_id is None:
                raise CommandError(f"no thing with the handle {args.thing!r}")
            thing = await session.get(Thing, actor.thing_id)
            owner = await session.get(Member, thing.owner_id) if thing else None
            assert thing is not None
            assert owner is not None
            period = str(Period.of(services.clock.now()))
            live = (ReceivedLike.target_id == actor.id) & ReceivedLike.undone_at.is_(None)
            counts = {}
            for label, condition in {
                "flattrs_this_month": live & (ReceivedLike.flattr_period == period),
                "flattrs_all_time": live & ReceivedLike.flattr_period.is_not(None),
                "appreciations": live & ReceivedLike.flattr_period.is_(None),
            }.items():
                counts[label] = await session.scalar(
                    select(func.count()).select_from(ReceivedLike).where(condition)
                )
        return {
            "id": services.urls.actor("thing", actor.username),
            "thing_id": thing.id,
            "handle": f"@{actor.username}@{settings.host}",
            "title": thing.title,
            "description": thing.description,
            "url": thing.external_url,
            "owner": owner.username,
            "hidden": thing.hidden,
            **{key: int(value or 0) for key, value in counts.items()},
        }

    result = _run(settings, work)
    text = "\n".join(f"{key}: {value}" for key, value in result.items())
    return _output(args, result, text)


def cmd_deposit_record(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.flattring.wallets import record_deposit
    from flattrfed.money import Money

    amount = _money(args.amount, settings.currency)

    async def work(services: Any) -> dict[str, Any]:
        async with services.database.transaction() as session:
            member = await _member(session, args.name)
            request = await record_deposit(
                session,
                member=member,
                amount=Money(amount, settings.currency),
                bank_reference=args.reference,
                reference=args.request,
                currency=settings.currency,
                now=services.clock.now(),
            )
            from flattrfed.settlement import ledger

            wallet = await ledger.owed_to_member(session, ledger.wallet(member.id))
        return {
            "member": args.name,
            "reference": request.reference,
            "bank_reference": request.bank_reference,
            "amount_minor": amount,
            "wallet_minor": wallet,
            "currency": settings.currency,
        }

    result = _run(settings, work)
    shown = Money(result["wallet_minor"], settings.currency).format()
    return _output(args, result, f"deposit recorded; {args.name}'s wallet is now {shown}")


def cmd_deposit_request(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.flattring.wallets import ManualBankTransfer, request_deposit

    async def work(services: Any) -> dict[str, Any]:
        provider = ManualBankTransfer()
        async with services.database.transaction() as session:
            member = await _member(session, args.name)
            request = await request_deposit(session, member, provider, services.clock.now())
        return {
            "member": args.name,
            "reference": request.reference,
            "instructions": provider.instructions(request.reference, settings.currency),
        }

    result = _run(settings, work)
    return _output(args, result, result["instructions"])


def cmd_budget_set(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.flattring.policy import current_policy
    from flattrfed.flattring.wallets import set_budget

    none = args.amount.lower() in {"none", "off"}
    amount = None if none else _money(args.amount, settings.currency)

    async def work(services: Any) -> dict[str, Any]:
        async with services.database.transaction() as session:
            member = await _member(session, args.name)
            policy = await current_policy(session, settings, services.clock.now())
            await set_budget(session, member, amount, policy, settings.currency)
        return {"member": args.name, "budget_minor": amount, "currency": settings.currency}

    result = _run(settings, work)
    return _output(args, result, f"{args.name}'s monthly budget: {args.amount}")


def cmd_flattr(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.flattring.flattrs import flattr
    from flattrfed.flattring.policy import current_policy
    from flattrfed.flattring.resolve import resolve_target

    async def work(services: Any) -> dict[str, Any]:
        # The network lookup happens first; the flattr itself is one short transaction.
        target = await resolve_target(services, args.target)
        async with services.database.transaction() as session:
            member = await _member(session, args.name)
            now = services.clock.now()
            policy = await current_policy(session, settings, now)
            row = await flattr(
                session,
                services.urls,
                member,
                target,
                now,
                receiving_needs_budget=policy.receiving_needs_budget,
            )
            return {
                "flattr_id": row.id,
                "like": row.like_uri,
                "target": row.target_uri,
                "payee": row.payee_uri,
                "period": row.period,
                "status": row.status,
                "title": target.title,
            }

    result = _run(settings, work)
    note = "" if result["status"] == "payable" else " (pending until the creator claims it)"
    return _output(args, result, f"flattred {result['title']} for {result['period']}{note}")


def cmd_unflattr(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.flattring.flattrs import unflattr

    async def work(services: Any) -> dict[str, Any]:
        async with services.database.transaction() as session:
            member = await _member(session, args.name)
            row = await unflattr(session, member, args.flattr_id, services.clock.now())
            return {"flattr_id": row.id, "undone": True, "target": row.target_uri}

    result = _run(settings, work)
    return _output(args, result, f"flattr {args.flattr_id} undone")


def cmd_wallet_show(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.flattring.dashboard import member_dashboard
    from flattrfed.flattring.policy import current_policy

    async def work(services: Any) -> dict[str, Any]:
        async with services.database.transaction() as session:
            member = await _member(session, args.name)
            now = services.clock.now()
            policy = await current_policy(session, settings, now)
            board = await member_dashboard(session, member, policy, settings.currency, now)
        return asdict(board)

    result = _run(settings, work)
    text = "\n".join(f"{key}: {value}" for key, value in result.items())
    return _output(args, result, text)


def cmd_payout_request(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.flattring.policy import current_policy
    from flattrfed.flattring.wallets import request_payout
    from flattrfed.money import Money

    amount = _money(args.amount, settings.currency)

    async def work(services: Any) -> dict[str, Any]:
        async with services.database.transaction() as session:
            member = await _member(session, args.name)
            now = services.clock.now()
            policy = await current_policy(session, settings, now)
            payout = await request_payout(
                session, member, Money(amount, settings.currency), policy, settings.currency, now
            )
            return {"payout_id": payout.id, "member": args.name, "amount_minor": amount}

    result = _run(settings, work)
    return _output(args, result, f"payout {result['payout_id']} requested")


def cmd_payout_mark_paid(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.cli import CommandError
    from flattrfed.db.models import PayoutRequest
    from flattrfed.flattring.wallets import mark_payout_paid

    async def work(services: Any) -> dict[str, Any]:
        async with services.database.transaction() as session:
            payout = await session.get(PayoutRequest, args.payout_id)
            if payout is None:
                raise CommandError(f"no payout {args.payout_id}")
            await mark_payout_paid(
                session, payout, args.reference, settings.currency, services.clock.now()
            )
            return {"payout_id": payout.id, "state": payout.state, "reference": args.reference}

    result = _run(settings, work)
    return _output(args, result, f"payout {args.payout_id} marked paid")


def cmd_payout_list(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.db.models import Member, PayoutRequest

    async def work(services: Any) -> list[dict[str, Any]]:
        async with services.database.sessions() as session:
            rows = (
                await session.execute(
                    select(PayoutRequest, Member.username)
                    .join(Member, Member.id == PayoutRequest.member_id)
                    .order_by(PayoutRequest.id)
                )
            ).all()
        return [
            {
                "payout_id": payout.id,
                "member": name,
                "amount_minor": payout.amount_minor,
                "state": payout.state,
                "bank_reference": payout.bank_reference,
            }
            for payout, name in rows
        ]

    result = _run(settings, work)
    text = "\n".join(
        f"{row['payout_id']}\t{row['member']}\t{row['amount_minor']}\t{row['state']}"
        for row in result
    )
    return _output(args, result, text or "no payouts")


def cmd_peer_add(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.flattring.peers import add_peer, discover_peer

    limit = _money(args.credit_limit, settings.currency)

    async def work(services: Any) -> dict[str, Any]:
        now = services.clock.now()
        actor, currency = await discover_peer(services.nodeinfo, args.host, settings.currency, now)
        async with services.database.transaction() as session:
            peer = await add_peer(
                session,
                host=args.host,
                clearing_actor=actor,
                currency=currency,
                credit_limit_minor=limit,
                now=now,
                note=args.note,
            )
            result = {
                "host": peer.host,
                "clearing_actor": peer.clearing_actor,
                "currency": peer.currency,
                "credit_limit_minor": peer.credit_limit_minor,
            }
        # Statements this peer sent before we peered were kept: verify them now.
        result["waiting_statements"] = await services.exchange.process_waiting(args.host)
        return result

    result = _run(settings, work)
    return _output(args, result, f"peered with {args.host} ({result['clearing_actor']})")


def cmd_peer_list(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.db.models import Peer

    async def work(services: Any) -> list[dict[str, Any]]:
        async with services.database.sessions() as session:
            peers = (await session.scalars(select(Peer).order_by(Peer.host))).all()
        return [
            {
                "host": peer.host,
                "clearing_actor": peer.clearing_actor,
                "currency": peer.currency,
                "credit_limit_minor": peer.credit_limit_minor,
            }
            for peer in peers
        ]

    result = _run(settings, work)
    text = "\n".join(f"{row['host']}\t{row['credit_limit_minor']}" for row in result)
    return _output(args, result, text or "no peers")


def cmd_claim(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.flattring.claims import add_claim, refresh_pending, verify_claim

    async def work(services: Any) -> dict[str, Any]:
        if args.claim_command == "refresh":
            return {"released": await refresh_pending(services)}
        async with services.database.transaction() as session:
            member = await _member(session, args.name)
            claim = await add_claim(session, services, member, args.remote, services.clock.now())
            claim_id = claim.id
        if args.claim_command == "verify":
            claim = await verify_claim(services, claim_id)
        return {"claim_id": claim_id, "remote": args.remote, "state": claim.state}

    result = _run(settings, work)
    if "released" in result:
        text = f"{result['released']} pending flattrs released to their claimants"
    else:
        text = f"claim {result['claim_id']} of {result['remote']}: {result['state']}"
    return _output(args, result, text)


def cmd_policy(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.flattring.policy import current_policy, update_policy

    async def work(services: Any) -> dict[str, Any]:
        async with services.database.transaction() as session:
            now = services.clock.now()
            if args.policy_command == "set":
                value: Any = args.value
                if args.key == "receiving_needs_budget":
                    truth = {"1": True, "true": True, "yes": True, "0": False, "false": False}
                    value = truth.get(args.value.lower(), args.value)
                elif args.key != "registration":
                    value = int(args.value) if args.value.isdigit() else -1
                policy = await update_policy(session, settings, now, **{args.key: value})
            else:
                policy = await current_policy(session, settings, now)
        return {**asdict(policy), "currency": settings.currency}

    result = _run(settings, work)
    text = "\n".join(f"{key}: {value}" for key, value in result.items())
    return _output(args, result, text)


def _json_flag(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--json", action="store_true", help="print JSON")
    return parser


def add_flattring_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    thing: argparse._SubParsersAction[argparse.ArgumentParser],
) -> None:
    """Register this module's commands on the main parser (and the existing `thing` group)."""
    add = _json_flag(thing.add_parser("add", help="create a thing owned by a member"))
    add.add_argument("owner", help="the owning member's username")
    add.add_argument("--title", required=True)
    add.add_argument("--url", default=None, help="the work's own web address")
    add.add_argument("--description", default="")
    add.add_argument("--handle", default=None, help="its handle (default: made from the title)")
    add.set_defaults(handler=cmd_thing_add)
    show = _json_flag(thing.add_parser("show", help="a thing's details and flattr counts"))
    show.add_argument("thing", help="the thing's handle")
    show.set_defaults(handler=cmd_thing_show)

    deposit = commands.add_parser("deposit", help="wallet deposits").add_subparsers(
        dest="deposit_command", required=True, metavar="ACTION"
    )
    record = _json_flag(deposit.add_parser("record", help="credit a received bank transfer"))
    record.add_argument("name", help="the member's username")
    record.add_argument("amount", help="the amount received, e.g. 20.00")
    record.add_argument("--reference", required=True, help="the bank transfer's own reference")
    record.add_argument("--request", default=None, help="the member's deposit reference FL-…")
    record.set_defaults(handler=cmd_deposit_record)
    request = _json_flag(deposit.add_parser("request", help="a transfer reference for a member"))
    request.add_argument("name")
    request.set_defaults(handler=cmd_deposit_request)

    budget = commands.add_parser("budget", help="monthly budgets").add_subparsers(
        dest="budget_command", required=True, metavar="ACTION"
    )
    budget_set = _json_flag(budget.add_parser("set", help="set a member's monthly budget"))
    budget_set.add_argument("name")
    budget_set.add_argument("amount", help="e.g. 10.00, or 'none' to remove the budget")
    budget_set.set_defaults(handler=cmd_budget_set)

    flattr = _json_flag(commands.add_parser("flattr", help="flattr a URL or @name@host"))
    flattr.add_argument("name", help="the donor's username")
    flattr.add_argument("target", help="a fediverse URL or handle")
    flattr.set_defaults(handler=cmd_flattr)
    undo = _json_flag(commands.add_parser("unflattr", help="undo a flattr this month"))
    undo.add_argument("name")
    undo.add_argument("flattr_id", type=int)
    undo.set_defaults(handler=cmd_unflattr)

    wallet = commands.add_parser("wallet", help="a member's money").add_subparsers(
        dest="wallet_command", required=True, metavar="ACTION"
    )
    wallet_show = _json_flag(wallet.add_parser("show", help="the member's dashboard figures"))
    wallet_show.add_argument("name")
    wallet_show.set_defaults(handler=cmd_wallet_show)

    payout = commands.add_parser("payout", help="payouts to creators").add_subparsers(
        dest="payout_command", required=True, metavar="ACTION"
    )
    payout_request = _json_flag(payout.add_parser("request", help="request a payout"))
    payout_request.add_argument("name")
    payout_request.add_argument("amount")
    payout_request.set_defaults(handler=cmd_payout_request)
    paid = _json_flag(payout.add_parser("mark-paid", help="record that a payout was sent"))
    paid.add_argument("payout_id", type=int)
    paid.add_argument("--reference", required=True)
    paid.set_defaults(handler=cmd_payout_mark_paid)
    payout_list = _json_flag(payout.add_parser("list", help="all payout requests"))
    payout_list.set_defaults(handler=cmd_payout_list)

    peer = commands.add_parser("peer", help="clearing peers").add_subparsers(
        dest="peer_command", required=True, metavar="ACTION"
    )
    peer_add = _json_flag(peer.add_parser("add", help="peer with a flattrfed instance"))
    peer_add.add_argument("host", help="host[:port] of the other instance")
    peer_add.add_argument("--credit-limit", required=True, help="e.g. 500.00")
    peer_add.add_argument("--note", default="")
    peer_add.set_defaults(handler=cmd_peer_add)
    _json_flag(peer.add_parser("list", help="list peers")).set_defaults(handler=cmd_peer_list)

    claim = commands.add_parser("claim", help="claimed fediverse identities").add_subparsers(
        dest="claim_command", required=True, metavar="ACTION"
    )
    for action, text in [("add", "record a claim"), ("verify", "record and verify a claim")]:
        sub = _json_flag(claim.add_parser(action, help=text))
        sub.add_argument("name")
        sub.add_argument("remote", help="the remote actor's URL")
        sub.set_defaults(handler=cmd_claim)
    refresh = _json_flag(claim.add_parser("refresh", help="release pending flattrs now claimed"))
    refresh.set_defaults(handler=cmd_claim)

    policy = commands.add_parser("policy", help="instance policy").add_subparsers(
        dest="policy_command", required=True, metavar="ACTION"
    )
    _json_flag(policy.add_parser("show", help="show the policy")).set_defaults(handler=cmd_policy)
    policy_set = _json_flag(policy.add_parser("set", help="change one policy value"))
    policy_set.add_argument(
        "key",
        choices=[
            "registration",
            "fee_bp",
            "budget_min_minor",
            "budget_max_minor",
            "min_payout_minor",
            "receiving_needs_budget",
        ],
    )
    policy_set.add_argument("value")
    policy_set.set_defaults(handler=cmd_policy)
