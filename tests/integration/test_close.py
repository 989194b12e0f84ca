"""The month close: exact splits, balanced postings, resumable after a crash at any stage."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from flattrfed.activitypub.urls import LocalUrls
from flattrfed.clock import ManualClock
from flattrfed.db.models import ClearingRun, DonorClose, Flattr, LedgerAccount, Member, Share
from flattrfed.db.session import Database
from flattrfed.flattring.flattrs import flattr, unflattr
from flattrfed.flattring.members import create_member
from flattrfed.flattring.resolve import Target
from flattrfed.flattring.things import create_thing
from flattrfed.flattring.wallets import record_deposit
from flattrfed.money import Money
from flattrfed.periods import Period
from flattrfed.settlement import ledger
from flattrfed.settlement.checks import check_ledger
from flattrfed.settlement.close import STAGES, CloseError, CrashForTest, MonthClose

URLS = LocalUrls("https://alpha.example")
NOVEMBER = Period(2026, 11)
GRACE = timedelta(hours=24)
FEE_BP = 500


def remote_target(number: int, host: str = "beta.example") -> Target:
    actor = f"https://{host}/things/t{number}"
    return Target(
        target_uri=actor,
        payee_uri=actor,
        payee_host=host,
        title=f"t{number}",
        payee_name=f"t{number}",
        payee_inbox=f"{actor}/inbox",
        flattrfed=True,
    )


async def populate(database: Database, clock: ManualClock) -> dict[str, int]:
    """Three donors: one with a budget above its wallet, one with a carry, one who undoes."""
    now = clock.now
    ids: dict[str, int] = {}
    async with database.transaction() as session:
        creator = await create_member(
            session, username="carol", password="x" * 12, is_admin=False, now=now()
        )
        ids["carol"] = creator.id
        local = []
        for index in range(2):
            thing = await create_thing(
                session, owner=creator, handle=f"zine{index}", title=f"Zine {index}", now=now()
            )
            local.append(
                Target(
                    target_uri=URLS.actor("thing", f"zine{index}"),
                    payee_uri=URLS.actor("thing", f"zine{index}"),
                    payee_host="alpha.example",
                    title=thing.title,
                    payee_name=thing.title,
                    local_thing_id=thing.id,
                    flattrfed=True,
                )
            )
        plans = {
            "ann": (1000, 700, [local[0], local[1], remote_target(1)]),
            "ben": (5000, 9000, [local[0], remote_target(1), remote_target(2, "gamma.example")]),
            "cid": (200, 300, [local[1]]),
        }
        for name, (budget, deposit, targets) in plans.items():
            donor = await create_member(
                session, username=name, password="x" * 12, is_admin=False, now=now()
            )
            ids[name] = donor.id
            donor.monthly_budget_minor = budget
            await record_deposit(
                session,
                member=donor,
                amount=Money(deposit, "EUR"),
                bank_reference=f"bank-{name}",
                currency="EUR",
                now=now(),
            )
            for target in targets:
                await flattr(session, URLS, donor, target, now())
    async with database.transaction() as session:
        cid = await session.get(Member, ids["cid"])
        assert cid is not None
        (row,) = (await session.scalars(select(Flattr).where(Flattr.donor_id == cid.id))).all()
        await unflattr(session, cid, row.id, now())  # undone before the cutoff: not counted
    return ids


def closer(database: Database, clock: ManualClock, **kwargs: Any) -> MonthClose:
    return MonthClose(database, clock, currency="EUR", grace=GRACE, urls=URLS, **kwargs)


async def state(database: Database) -> dict[str, Any]:
    """Everything a close writes, without ids that depend on insertion order."""
    async with database.sessions() as session:
        closes = sorted(
            (c.donor_id, c.spent_minor, c.fee_minor, c.share_minor, c.things, c.carry_minor)
            for c in (await session.scalars(select(DonorClose))).all()
        )
        shares = sorted(
            (s.donor_id, s.target_uri, s.payee_host, s.creator_id, s.amount_minor)
            for s in (await session.scalars(select(Share))).all()
        )
        balances = sorted(
            (a.code, a.balance_minor) for a in (await session.scalars(select(LedgerAccount))).all()
        )
        stages = [r.stage for r in (await session.scalars(select(ClearingRun))).all()]
    return {"closes": closes, "shares": shares, "balances": balances, "stages": stages}


def split_of(close: DonorClose) -> tuple[int, int, int, int]:
    return (close.spent_minor, close.fee_minor, close.share_minor, close.carry_minor)


@pytest.fixture
def november_clock(clock: ManualClock) -> ManualClock:
    clock.set(datetime(2026, 11, 10, 12, tzinfo=UTC))
    return clock


async def test_close_splits_each_budget_exactly_and_balances_the_ledger(
    database: Database, november_clock: ManualClock
) -> None:
    ids = await populate(database, november_clock)
    with pytest.raises(CloseError, match="can be closed from"):
        await closer(database, november_clock).run(NOVEMBER, FEE_BP)
    november_clock.set(NOVEMBER.closes_at(GRACE))
    result = await closer(database, november_clock).run(NOVEMBER, FEE_BP)
    assert (result.stage, result.donors, result.shares) == ("done", 2, 6)

    async with database.sessions() as session:
        closes = {c.donor_id: c for c in (await session.scalars(select(DonorClose))).all()}
        # ann: B = min(10.00, 7.00) = 700, fee 35, D 665, q 221, carry 2.
        ann = closes[ids["ann"]]
        assert (ann.spent_minor, ann.fee_minor, ann.share_minor, ann.carry_minor) == (
            700,
            35,
            221,
            2,
        )
        ben = closes[ids["ben"]]
        assert (ben.spent_minor, ben.fee_minor, ben.share_minor, ben.carry_minor) == (
            5000,
            250,
            1583,
            1,
        )
        assert ids["cid"] not in closes
        for close in closes.values():
            assert (
                close.fee_minor + close.share_minor * close.things + close.carry_minor
                == close.spent_minor
            )
        assert await ledger.owed_to_member(session, ledger.wallet(ids["ann"])) == 700 - 35 - 663
        assert await ledger.owed_to_member(session, ledger.wallet(ids["ben"])) == 9000 - 250 - 4749
        assert await ledger.owed_to_member(session, ledger.wallet(ids["cid"])) == 300
        assert await ledger.owed_to_member(session, ledger.earnings_available(ids["carol"])) == (
            221 * 2 + 1583
        )
        assert -await ledger.balance(session, ledger.peer_payable("beta.example")) == 221 + 1583
        assert -await ledger.balance(session, ledger.peer_payable("gamma.example")) == 1583
        assert -await ledger.balance(session, ledger.FEES) == 35 + 250
        assert await check_ledger(session, "EUR") == []


async def test_a_second_close_of_the_same_period_changes_nothing(
    database: Database, november_clock: ManualClock
) -> None:
    await populate(database, november_clock)
    november_clock.set(NOVEMBER.closes_at(GRACE))
    await closer(database, november_clock).run(NOVEMBER, FEE_BP)
    before = await state(database)
    again = await closer(database, november_clock, runner_id="other").run(NOVEMBER, FEE_BP)
    assert again.stage == "done"
    assert await state(database) == before


@pytest.mark.parametrize("crash_stage", STAGES[1:-1])
async def test_a_crash_after_any_stage_then_a_rerun_gives_the_uninterrupted_result(
    database_factory: Any, november_clock: ManualClock, crash_stage: str
) -> None:
    results = []
    for crash in (None, crash_stage):
        database = Database(await database_factory.new_database("close"))
        try:
            november_clock.set(datetime(2026, 11, 10, 12, tzinfo=UTC))
            await populate(database, november_clock)
            november_clock.set(NOVEMBER.closes_at(GRACE))
            if crash is not None:
                crashing = closer(database, november_clock, crash_after=crash.__eq__)
                with pytest.raises(CrashForTest):
                    await crashing.run(NOVEMBER, FEE_BP)
                # The crashed runner's lease must lapse before another runner may resume.
                with pytest.raises(CloseError, match="running elsewhere"):
                    await closer(database, november_clock, runner_id="second").run(NOVEMBER, FEE_BP)
                november_clock.advance(timedelta(hours=1))
            await closer(database, november_clock, runner_id="second").run(NOVEMBER, FEE_BP)
            results.append(await state(database))
            async with database.sessions() as session:
                assert await check_ledger(session, "EUR") == []
        finally:
            await database.dispose()
    assert results[0] == results[1]


CHUNK_CRASHES = [f"{stage}:chunk:{n}" for stage in ("snapshot", "shares", "posted") for n in (1, 3)]


@pytest.mark.parametrize("crash_at", CHUNK_CRASHES)
async def test_a_crash_between_chunks_then_a_rerun_gives_the_uninterrupted_result(
    database_factory: Any, november_clock: ManualClock, crash_at: str
) -> None:
    """With one member per chunk, a crash after the first or third chunk of a stage leaves
    part of the stage committed; the rerun must finish it without doubling anything."""
    stage_name, _, nth = crash_at.rpartition(":")
    results = []
    for crash in (False, True):
        database = Database(await database_factory.new_database("close"))
        try:
            november_clock.set(datetime(2026, 11, 10, 12, tzinfo=UTC))
            await populate(database, november_clock)
            november_clock.set(NOVEMBER.closes_at(GRACE))
            if crash:
                seen: list[str] = []

                def after(stage: str, seen: list[str] = seen) -> bool:
                    seen.append(stage)
                    return stage == stage_name and seen.count(stage) == int(nth)

                crashing = closer(database, november_clock, crash_after=after, chunk_members=1)
                with pytest.raises(CrashForTest):
                    await crashing.run(NOVEMBER, FEE_BP)
                november_clock.advance(timedelta(hours=1))
            await closer(database, november_clock, runner_id="second", chunk_members=1).run(
                NOVEMBER, FEE_BP
            )
            results.append(await state(database))
            async with database.sessions() as session:
                assert await check_ledger(session, "EUR") == []
        finally:
            await database.dispose()
    assert results[0] == results[1]


class StallingClose(MonthClose):
    """A runner that stalls past its lease after its first chunk, while `rival` takes over."""

    rival: MonthClose
    bounds_asked = 0

    async def _next_bound(self, after: int) -> int | None:
        self.bounds_asked += 1
        if self.bounds_asked == 2:
            assert isinstance(self.clock, ManualClock)
            self.clock.advance(timedelta(hours=1))
            await self.rival._acquire(NOVEMBER, FEE_BP, self.clock.now())
        return await super()._next_bound(after)


async def test_a_runner_whose_lease_was_taken_over_stops_at_its_next_chunk(
    database: Database, november_clock: ManualClock
) -> None:
    await populate(database, november_clock)
    november_clock.set(NOVEMBER.closes_at(GRACE))
    first = StallingClose(
        database, november_clock, currency="EUR", grace=GRACE, urls=URLS, chunk_members=1
    )
    first.rival = closer(database, november_clock, runner_id="second")
    with pytest.raises(CloseError, match="lost its lease"):
        await first.run(NOVEMBER, FEE_BP)
    result = await first.rival.run(NOVEMBER, FEE_BP)
    assert (result.stage, result.donors) == ("done", 2)
    async with database.sessions() as session:
        assert await check_ledger(session, "EUR") == []


async def test_two_concurrent_closes_run_the_period_once(
    database: Database, november_clock: ManualClock
) -> None:
    await populate(database, november_clock)
    november_clock.set(NOVEMBER.closes_at(GRACE))
    outcomes = await asyncio.gather(
        closer(database, november_clock, runner_id="one").run(NOVEMBER, FEE_BP),
        closer(database, november_clock, runner_id="two").run(NOVEMBER, FEE_BP),
        return_exceptions=True,
    )
    done = [o for o in outcomes if not isinstance(o, BaseException)]
    assert done, outcomes
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            assert isinstance(outcome, CloseError)
    state_now = await state(database)
    assert state_now["stages"] == ["done"]
    assert len(state_now["closes"]) == 2
    async with database.sessions() as session:
        assert await check_ledger(session, "EUR") == []


async def test_the_worker_closes_each_month_by_itself_after_the_grace_window(
    federation: Any,
) -> None:
    alpha = await federation.start("alpha", close_grace_hours=2)
    carol = await alpha.create_member("carol")
    thing = await alpha.create_thing(carol, "zine", "Zine")
    ann = await alpha.create_member("ann")
    services = alpha.services
    async with services.database.transaction() as session:
        donor = await session.get(Member, ann.id)
        assert donor is not None
        donor.monthly_budget_minor = 500
        await record_deposit(
            session,
            member=donor,
            amount=Money(800, "EUR"),
            bank_reference="t1",
            currency="EUR",
            now=federation.clock.now(),
        )
        target = Target(
            alpha.actor_uri("zine", "thing"),
            alpha.actor_uri("zine", "thing"),
            alpha.host,
            "Zine",
            "Zine",
            local_thing_id=thing.id,
            flattrfed=True,
        )
        await flattr(session, services.urls, donor, target, federation.clock.now())
    # 2026-11-15 now; the close of November is due on 2026-12-01 02:00 UTC.
    await alpha.run_worker()
    async with services.database.sessions() as session:
        runs = (await session.scalars(select(ClearingRun))).all()
        # October was due long ago (an instance started late closes the missed month).
        assert [(run.period, run.stage) for run in runs] == [("2026-10", "done")]
    federation.clock.set(datetime(2026, 12, 1, 1, 59, tzinfo=UTC))
    await alpha.run_worker()
    async with services.database.sessions() as session:
        assert len((await session.scalars(select(ClearingRun))).all()) == 1
    federation.clock.set(datetime(2026, 12, 1, 2, tzinfo=UTC))
    await alpha.run_worker()
    async with services.database.sessions() as session:
        runs = (await session.scalars(select(ClearingRun).order_by(ClearingRun.period))).all()
        assert [(run.period, run.stage) for run in runs] == [
            ("2026-10", "done"),
            ("2026-11", "done"),
        ]
        assert await ledger.owed_to_member(session, ledger.earnings_available(carol.id)) == 500
        assert await ledger.owed_to_member(session, ledger.wallet(ann.id)) == 300
        assert await check_ledger(session, "EUR") == []


async def test_clearing_commands_close_a_period_and_report_it(
    database: Database,
    november_clock: ManualClock,
    tmp_path: Any,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json

    from flattrfed.cli import main

    await populate(database, november_clock)
    for key, value in {
        "FLATTRFED_BASE_URL": "https://alpha.example",
        "FLATTRFED_DATA_DIR": str(tmp_path),
        "FLATTRFED_DATABASE_URL": database.url,
        "FLATTRFED_FEE_BP": str(FEE_BP),
    }.items():
        monkeypatch.setenv(key, value)
    # The command line runs its own event loop, so it runs in a thread here.
    assert await asyncio.to_thread(main, ["clearing", "status", "2026-11", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["stage"] == "not started"
    # The real clock is far past November 2026 + grace in any run of this test after that date;
    # before it, the command must refuse with the date it can run from.
    code = await asyncio.to_thread(main, ["clearing", "close", "2026-11", "--json"])
    output = capsys.readouterr()
    if code == 0:
        report = json.loads(output.out)
        assert report["stage"] == "done"
        assert report["donors"] == 2
    else:
        assert "can be closed from" in output.err


async def test_a_wallet_too_small_for_one_minor_unit_per_thing_moves_nothing(
    database: Database, november_clock: ManualClock
) -> None:
    async with database.transaction() as session:
        donor = await create_member(
            session, username="tiny", password="x" * 12, is_admin=False, now=november_clock.now()
        )
        donor.monthly_budget_minor = 1000
        await record_deposit(
            session,
            member=donor,
            amount=Money(5, "EUR"),
            bank_reference="tiny",
            currency="EUR",
            now=november_clock.now(),
        )
        for number in range(10):
            await flattr(session, URLS, donor, remote_target(number), november_clock.now())
        donor_id = donor.id
    november_clock.set(NOVEMBER.closes_at(GRACE))
    result = await closer(database, november_clock).run(NOVEMBER, FEE_BP)
    assert result.stage == "done"
    async with database.sessions() as session:
        (close,) = (await session.scalars(select(DonorClose))).all()
        assert (close.spent_minor, close.fee_minor, close.share_minor, close.carry_minor) == (
            5,
            0,
            0,
            5,
        )
        assert await ledger.owed_to_member(session, ledger.wallet(donor_id)) == 5
        assert await check_ledger(session, "EUR") == []
