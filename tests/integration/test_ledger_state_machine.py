"""A Hypothesis state machine: deposits, budgets, flattrs, undos, claims, closes and payouts in
any order keep every ledger invariant after every step (SQLite, and PostgreSQL when configured)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.urls import LocalUrls
from flattrfed.clock import ManualClock
from flattrfed.db.models import DonorClose, Flattr, IdentityClaim, Member, Share
from flattrfed.db.session import Database
from flattrfed.flattring.flattrs import PENDING, flattr, unflattr
from flattrfed.flattring.members import create_member
from flattrfed.flattring.policy import Policy
from flattrfed.flattring.resolve import CannotFlattr, Target
from flattrfed.flattring.things import create_thing
from flattrfed.flattring.wallets import WalletError, record_deposit, request_payout, set_budget
from flattrfed.money import Money
from flattrfed.periods import Period
from flattrfed.settlement import ledger
from flattrfed.settlement.checks import check_ledger
from flattrfed.settlement.close import CloseError, MonthClose
from tests.harness.databases import DatabaseFactory

T = TypeVar("T")
URLS = LocalUrls("https://alpha.example")
POLICY = Policy("open", 300, 200, 10_000, 100, False)
GRACE = timedelta(hours=1)
DONORS = ("ann", "ben", "cid")

# The state machine drives an asyncio database from Hypothesis' synchronous rules.
_factory: DatabaseFactory | None = None


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        assert _factory is not None
        self.database = Database(self.run(_factory.new_database("machine")))
        self.clock = ManualClock(datetime(2026, 10, 3, 12, tzinfo=UTC))
        self.ids: dict[str, int] = {}
        self.things: list[Target] = []
        self.bank = 0

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coroutine)

    def teardown(self) -> None:
        self.run(self.database.dispose())
        self.loop.close()

    @initialize()
    def members(self) -> None:
        async def make() -> None:
            async with self.database.transaction() as session:
                creator = await create_member(
                    session,
                    username="carol",
                    password="x" * 12,
                    is_admin=False,
                    now=self.clock.now(),
                )
                self.ids["carol"] = creator.id
                for index in range(2):
                    thing = await create_thing(
                        session,
                        owner=creator,
                        handle=f"t{index}",
                        title=f"T{index}",
                        now=self.clock.now(),
                    )
                    uri = URLS.actor("thing", f"t{index}")
                    self.things.append(
                        Target(
                            uri,
                            uri,
                            "alpha.example",
                            thing.title,
                            thing.title,
                            local_thing_id=thing.id,
                            flattrfed=True,
                        )
                    )
                for name in DONORS:
                    donor = await create_member(
                        session,
                        username=name,
                        password="x" * 12,
                        is_admin=False,
                        now=self.clock.now(),
                    )
                    self.ids[name] = donor.id
            remote = "https://beta.example/things/r"
            self.things.append(
                Target(
                    remote,
                    remote,
                    "beta.example",
                    "R",
                    "R",
                    payee_inbox=f"{remote}/inbox",
                    flattrfed=True,
                )
            )
            plain = "https://plain.example/users/dave"
            self.things.append(
                Target(
                    f"{plain}/statuses/1",
                    plain,
                    "plain.example",
                    "D",
                    "D",
                    payee_inbox=f"{plain}/inbox",
                    flattrfed=False,
                )
            )

        self.run(make())

    async def _member(self, session: AsyncSession, name: str) -> Member:
        member = await session.get(Member, self.ids[name])
        assert member is not None
        return member

    @rule(name=st.sampled_from(DONORS), amount=st.integers(1, 5000))
    def deposit(self, name: str, amount: int) -> None:
        async def go() -> None:
            async with self.database.transaction() as session:
                self.bank += 1
                await record_deposit(
                    session,
                    member=await self._member(session, name),
                    amount=Money(amount, "EUR"),
                    bank_reference=f"b{self.bank}",
                    currency="EUR",
                    now=self.clock.now(),
                )

        self.run(go())

    @rule(name=st.sampled_from(DONORS), amount=st.one_of(st.none(), st.integers(0, 20_000)))
    def budget(self, name: str, amount: int | None) -> None:
        async def go() -> None:
            try:
                async with self.database.transaction() as session:
                    await set_budget(
                        session, await self._member(session, name), amount, POLICY, "EUR"
                    )
            except WalletError:
                assert amount is not None
                assert not POLICY.budget_min_minor <= amount <= POLICY.budget_max_minor

        self.run(go())

    @rule(name=st.sampled_from(DONORS), index=st.integers(0, 3))
    def click(self, name: str, index: int) -> None:
        async def go() -> None:
            try:
                async with self.database.transaction() as session:
                    await flattr(
                        session,
                        URLS,
                        await self._member(session, name),
                        self.things[index],
                        self.clock.now(),
                    )
            except CannotFlattr:
                pass

        self.run(go())

    @rule(name=st.sampled_from(DONORS), pick=st.integers(0, 10))
    def undo(self, name: str, pick: int) -> None:
        async def go() -> None:
            async with self.database.transaction() as session:
                rows = (
                    await session.scalars(
                        select(Flattr)
                        .where(Flattr.donor_id == self.ids[name], Flattr.undone_at.is_(None))
                        .order_by(Flattr.id)
                    )
                ).all()
                if not rows:
                    return
                try:
                    await unflattr(
                        session,
                        await self._member(session, name),
                        rows[pick % len(rows)].id,
                        self.clock.now(),
                    )
                except CannotFlattr as error:
                    if "closed month" not in str(error):
                        raise

        self.run(go())

    @rule()
    def claim(self) -> None:
        """carol claims the plain author: the pending flattrs count for her, this month."""

        async def go() -> None:
            plain = self.things[3].payee_uri
            async with self.database.transaction() as session:
                if await session.scalar(select(IdentityClaim.id)) is None:
                    session.add(
                        IdentityClaim(
                            member_id=self.ids["carol"],
                            remote_actor_uri=plain,
                            state="verified",
                            created_at=self.clock.now(),
                            verified_at=self.clock.now(),
                        )
                    )
                await session.execute(
                    update(Flattr)
                    .where(
                        Flattr.payee_uri == plain,
                        Flattr.status == PENDING,
                        Flattr.undone_at.is_(None),
                    )
                    .values(
                        status="payable",
                        payee_uri=URLS.actor("person", "carol"),
                        payee_host="alpha.example",
                        counts_in_period=str(Period.of(self.clock.now())),
                    )
                )

        self.run(go())

    @rule(days=st.integers(1, 40))
    def time_passes(self, days: int) -> None:
        self.clock.advance(timedelta(days=days))

    @rule()
    def close_previous_month(self) -> None:
        period = Period.of(self.clock.now()).previous()
        closer = MonthClose(self.database, self.clock, currency="EUR", grace=GRACE, urls=URLS)
        try:
            self.run(closer.run(period, POLICY.fee_bp))
        except CloseError as error:
            if "can be closed from" not in str(error):
                raise

    @precondition(lambda self: bool(self.ids))
    @rule(amount=st.integers(100, 3000))
    def payout(self, amount: int) -> None:
        async def go() -> None:
            try:
                async with self.database.transaction() as session:
                    await request_payout(
                        session,
                        await self._member(session, "carol"),
                        Money(amount, "EUR"),
                        POLICY,
                        "EUR",
                        self.clock.now(),
                    )
            except WalletError:
                pass

        self.run(go())

    @invariant()
    def ledger_invariants_hold(self) -> None:
        async def check() -> None:
            async with self.database.sessions() as session:
                assert await check_ledger(session, "EUR") == []
                # 3: per-donor conservation of every close so far.
                for close in (await session.scalars(select(DonorClose))).all():
                    assert (
                        close.fee_minor + close.share_minor * close.things + close.carry_minor
                    ) == close.spent_minor
                    assert 0 <= close.carry_minor < max(close.things, 1)
                    shares = (
                        await session.scalars(
                            select(Share).where(
                                Share.run_id == close.run_id, Share.donor_id == close.donor_id
                            )
                        )
                    ).all()
                    assert len(shares) == close.things
                    assert {share.amount_minor for share in shares} <= {close.share_minor}
                for name in DONORS:
                    assert await ledger.owed_to_member(session, ledger.wallet(self.ids[name])) >= 0

        if self.ids:
            self.run(check())


@pytest.fixture
def machine_factory(database_factory: DatabaseFactory) -> DatabaseFactory:
    global _factory
    _factory = database_factory
    return database_factory


def test_ledger_invariants_hold_under_any_sequence_of_member_actions(
    machine_factory: DatabaseFactory,
) -> None:
    LedgerMachine.TestCase.settings = settings(
        max_examples=12,
        stateful_step_count=14,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    LedgerMachine.TestCase().runTest()
