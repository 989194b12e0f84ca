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
