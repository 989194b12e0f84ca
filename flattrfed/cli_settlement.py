"""The `flattrfed clearing` commands: run the month close by hand and see where it stands."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from sqlalchemy import func, select

from flattrfed.config import Settings


def _period(text: str) -> Any:
    from flattrfed.cli import CommandError
    from flattrfed.periods import Period

    try:
        return Period.parse(text)
    except ValueError as error:
        raise CommandError(f"{text!r} is not a period like 2026-11: {error}") from None


def cmd_clearing(settings: Settings, args: argparse.Namespace) -> int:
    from flattrfed.cli import CommandError, print_json
    from flattrfed.clock import SystemClock
    from flattrfed.db.migrate import ensure_schema_current
    from flattrfed.db.models import ClearingRun, DonorClose, Share
    from flattrfed.db.session import Database
    from flattrfed.settlement.close import CloseError
    from flattrfed.settlement.schedule import CloseScheduler

    period = _period(args.period)

    async def run() -> dict[str, Any]:
        database = Database(settings.database_url)
        try:
            await ensure_schema_current(database.engine)
            if args.clearing_command == "close":
                try:
                    await CloseScheduler(database, SystemClock(), settings).close(
                        period, runner_id="cli"
                    )
                except CloseError as error:
                    raise CommandError(str(error)) from None
            async with database.sessions() as session:
                run = await session.scalar(
                    select(ClearingRun).where(ClearingRun.period == str(period))
                )
                if run is None:
                    return {"period": str(period), "stage": "not started"}
                totals = (
                    await session.execute(
                        select(
                            func.count(),
                            func.coalesce(func.sum(DonorClose.spent_minor), 0),
                            func.coalesce(func.sum(DonorClose.fee_minor), 0),
                            func.coalesce(func.sum(DonorClose.carry_minor), 0),
                        ).where(DonorClose.run_id == run.id)
                    )
                ).one()
                shares = await session.execute(
                    select(Share.payee_host, func.count(), func.sum(Share.amount_minor))
                    .where(Share.run_id == run.id)
                    .group_by(Share.payee_host)
                    .order_by(Share.payee_host)
                )
                return {
                    "period": run.period,
                    "stage": run.stage,
                    "currency": run.currency,
                    "fee_bp": run.fee_bp,
                    "started_at": run.started_at,
                    "finished_at": run.finished_at,
                    "donors": int(totals[0]),
                    "spent_minor": int(totals[1]),
                    "fees_minor": int(totals[2]),
                    "carry_minor": int(totals[3]),
                    "by_host": [
                        {"host": host, "shares": int(count), "amount_minor": int(amount or 0)}
                        for host, count, amount in shares
                    ],
                }
        finally:
            await database.dispose()

    result = asyncio.run(run())
    if args.json:
        print_json(result)
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


def add_settlement_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    clearing = commands.add_parser("clearing", help="the monthly close").add_subparsers(
        dest="clearing_command", required=True, metavar="ACTION"
    )
    for action, text in [
        ("close", "close a period now (after its cutoff + grace); safe to repeat"),
        ("status", "where the close of a period stands, with its totals"),
    ]:
        sub = clearing.add_parser(action, help=text)
        sub.add_argument("period", help="the month, e.g. 2026-11")
        sub.add_argument("--json", action="store_true")
        sub.set_defaults(handler=cmd_clearing)


def _exchange_run(settings: Settings, work: Any) -> Any:
    from flattrfed.cli import CommandError
    from flattrfed.cli_flattring import _run
    from flattrfed.settlement.exchange import ExchangeError

    try:
        return _run(settings, work)
    except ExchangeError as error:
        raise CommandError(str(error)) from None


def _settlement_row(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "period": row.period,
        "peer": row.peer_host,
        "payable_minor": row.payable_minor,
        "receivable_minor": row.receivable_minor,
        "carried_in_minor": row.carried_in_minor,
        "net_minor": row.net_minor,
        "we_pay": row.net_minor > 0,
        "action": row.action,
        "state": row.state,
        "payment_reference": row.payment_reference,
        "bank_reference": row.bank_reference,
        "deadline": row.deadline,
    }


def cmd_settlement(settings: Settings, args: argparse.Namespace) -> int:
    import csv
    import io

    from flattrfed.cli import CommandError, print_json
    from flattrfed.db.models import Settlement, SettlementEvent, Statement
    from flattrfed.settlement.exchange import stored_lines

    async def work(services: Any) -> Any:
        exchange = services.exchange
        action = args.settlement_command
        if action == "issue":
            return {"issued": await exchange.issue_statements(_period(args.period))}
        if action == "mark-paid":
            row = await exchange.mark_paid(args.id, args.reference, args.admin)
            return _settlement_row(row)
        if action == "confirm":
            return _settlement_row(await exchange.confirm(args.id, args.admin))
        if action == "dispute":
            return _settlement_row(await exchange.dispute(args.id, args.reason, args.admin))
        async with services.database.sessions() as session:
            if action == "list":
                rows = (await session.scalars(select(Settlement).order_by(Settlement.id))).all()
                return [_settlement_row(row) for row in rows]
            if action == "statements":
                statements = (
                    await session.scalars(
                        select(Statement)
                        .where(Statement.period == str(_period(args.period)))
                        .order_by(Statement.id)
                    )
                ).all()
                return [
                    row.document
                    | {"_state": row.state, "_direction": row.direction}
                    # All pages of a long statement, not only the first one the document holds.
                    | ({"lines": lines} if (lines := await stored_lines(session, row.id)) else {})
                    for row in statements
                ]
            row = await session.get(Settlement, args.id)
            if row is None:
                raise CommandError(f"no settlement {args.id}")
            events = (
                await session.scalars(
                    select(SettlementEvent)
                    .where(SettlementEvent.settlement_id == row.id)
                    .order_by(SettlementEvent.id)
                )
            ).all()
            return _settlement_row(row) | {
                "document": row.document,
                "events": [
                    {"action": e.action, "actor": e.actor, "at": e.at, "detail": e.detail}
                    for e in events
                ],
            }

    result = _exchange_run(settings, work)
    if args.settlement_command == "statements" and getattr(args, "csv", False):
        # One row per statement line, for a spreadsheet or the bank reconciliation.
        out = io.StringIO()
        fields = ["statement", "direction", "state", "period", "like", "donor", "object", "amount"]
        writer = csv.DictWriter(out, fieldnames=fields)
        writer.writeheader()
        for document in result:
            for line in document.get("lines", []):
                writer.writerow(
                    {
                        "statement": document.get("id"),
                        "direction": document.get("_direction"),
                        "state": document.get("_state"),
                        "period": document.get("period"),
                        "like": line.get("like"),
                        "donor": line.get("donor"),
                        "object": line.get("object"),
                        "amount": line.get("amount"),
                    }
                )
        print(out.getvalue(), end="")
    elif args.json or args.settlement_command in {"show", "statements"}:
        print_json(result)
    elif args.settlement_command == "list" and getattr(args, "csv", False):
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(result[0]) if result else ["id"])
        writer.writeheader()
        writer.writerows(result)
        print(out.getvalue(), end="")
    elif isinstance(result, list):
        for row in result:
            print(
                "\t".join(
                    str(row[key])
                    for key in ("id", "period", "peer", "net_minor", "action", "state")
                )
            )
    else:
        for key, value in result.items():
            print(f"{key}: {value}")
    return 0


def add_exchange_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    settlement = commands.add_parser(
        "settlement", help="statements and settlements with peers"
    ).add_subparsers(dest="settlement_command", required=True, metavar="ACTION")
    listing = settlement.add_parser("list", help="all settlements")
    listing.add_argument("--csv", action="store_true", help="print CSV")
    show = settlement.add_parser("show", help="one settlement with its document and history")
    show.add_argument("id", type=int)
    paid = settlement.add_parser("mark-paid", help="record the bank transfer we sent")
    paid.add_argument("id", type=int)
    paid.add_argument("--reference", required=True, help="the bank transfer's reference")
    confirm = settlement.add_parser("confirm", help="record that the peer's payment arrived")
    confirm.add_argument("id", type=int)
    dispute = settlement.add_parser(
        "dispute", help="a payment did not arrive or is wrong: open an investigation"
    )
    dispute.add_argument("id", type=int)
    dispute.add_argument("--reason", required=True)
    issue = settlement.add_parser("issue", help="send statements of a closed period to peers")
    issue.add_argument("period")
    statements = settlement.add_parser(
        "statements", help="export a period's statements (JSON, or CSV lines with --csv)"
    )
    statements.add_argument("period")
    statements.add_argument("--csv", action="store_true", help="one CSV row per statement line")
    for sub in (listing, show, paid, confirm, dispute, issue, statements):
        sub.add_argument("--json", action="store_true")
        sub.set_defaults(handler=cmd_settlement)
    for sub in (paid, confirm, dispute):
        sub.add_argument("--admin", default="admin", help="who does this (kept in the history)")
