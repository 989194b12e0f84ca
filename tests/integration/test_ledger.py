"""The ledger on a real database: balanced, idempotent, never overdrawn, and checkable."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, insert, select, text

from flattrfed.db.models import (
    ClearingRun,
    DepositRequest,
    DonorClose,
    Flattr,
    LedgerAccount,
    LedgerPosting,
    LedgerTransaction,
    Member,
    PayoutRequest,
    Share,
    Thing,
)
from flattrfed.db.session import Database
from flattrfed.settlement.checks import INVARIANTS, Problem, check_ledger
from flattrfed.settlement.ledger import (
    CASH_BANK,
    EXTERNAL,
    FEES,
    LedgerConflict,
    LedgerError,
    Overdraft,
    account_kind,
    balance,
    content_hash,
    deposit_txid,
    earnings_available,
    earnings_pending,
    is_member_liability,
    member_balances,
    owed_to_member,
    payout_txid,
    payouts_pending,
    peer_payable,
    post,
    wallet,
)

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)
CURRENCY = "EUR"


async def add_members(database: Database, count: int) -> list[int]:
    async with database.transaction() as session:
        members = [
            Member(username=f"m{index}", password_hash="x", created_at=NOW)
            for index in range(count)
        ]
        session.add_all(members)
        await session.flush()
        return [member.id for member in members]


async def post_in_own_transaction(
    database: Database, txid: str, postings: list[tuple[str, int]], *, memo: str = ""
) -> bool:
    async with database.transaction() as session:
        return await post(
            session,
            txid=txid,
            kind=txid.split(":")[0][:32],
            postings=postings,
            currency=CURRENCY,
            memo=memo,
            now=NOW,
        )


async def deposit(database: Database, member: int, amount: int, reference: str) -> None:
    async with database.transaction() as session:
        await session.execute(
            insert(DepositRequest).values(
                member_id=member,
                provider="manual",
                reference=reference,
                state="credited",
                amount_minor=amount,
                created_at=NOW,
                credited_at=NOW,
            )
        )
        await post(
            session,
            txid=deposit_txid(reference),
            kind="deposit",
            postings=[(CASH_BANK, amount), (wallet(member), -amount)],
            currency=CURRENCY,
            memo=f"bank transfer {reference}",
            now=NOW,
        )


@dataclass
class LedgerState:
    transactions: int
    postings: int
    balances: dict[str, int]


async def ledger_state(database: Database) -> LedgerState:
    async with database.sessions() as session:
        transactions = await session.scalar(select(func.count(LedgerTransaction.id)))
        postings = await session.scalar(select(func.count(LedgerPosting.id)))
        rows = await session.execute(select(LedgerAccount.code, LedgerAccount.balance_minor))
        return LedgerState(
            int(transactions or 0), int(postings or 0), {code: value for code, value in rows}
        )


async def problems_of(database: Database) -> list[Problem]:
    async with database.sessions() as session:
        return await check_ledger(session, CURRENCY)


def invariants(problems: list[Problem]) -> set[str]:
    return {problem.invariant for problem in problems}


# --- posting ------------------------------------------------------------------------------------


async def test_balanced_posting_is_written_and_updates_balances(database: Database) -> None:
    (member,) = await add_members(database, 1)
    assert await post_in_own_transaction(
        database, "topup:A", [(CASH_BANK, 1000), (wallet(member), -1000)]
    )
    assert await post_in_own_transaction(
        database,
        "spend:1",
        [(wallet(member), 300), (FEES, -30), (peer_payable("b.example"), -270)],
    )
    async with database.sessions() as session:
        assert await balance(session, CASH_BANK) == 1000
        assert await balance(session, wallet(member)) == -700
        assert await owed_to_member(session, wallet(member)) == 700
        assert await balance(session, FEES) == -30
        assert await owed_to_member(session, peer_payable("b.example")) == 270
        assert await balance(session, earnings_pending(member)) == 0  # never used
        assert await member_balances(session, member) == {
            "wallet": 700,
            "earnings_pending": 0,
            "earnings_available": 0,
            "payouts_pending": 0,
        }
        account = await session.scalar(
            select(LedgerAccount).where(LedgerAccount.code == wallet(member))
        )
        assert account is not None
        assert (account.kind, account.member_id, account.currency) == ("liability", member, "EUR")
        fees = await session.scalar(select(LedgerAccount).where(LedgerAccount.code == FEES))
        assert fees is not None
        assert (fees.kind, fees.member_id) == ("income", None)
        stored = await session.scalar(
            select(LedgerTransaction).where(LedgerTransaction.txid == "spend:1")
        )
        assert stored is not None
        assert stored.content_hash == content_hash(
            "spend",
            "EUR",
            [(wallet(member), 300), (FEES, -30), (peer_payable("b.example"), -270)],
            "",
        )
        with pytest.raises(ValueError, match="not a liability"):
            await owed_to_member(session, CASH_BANK)
    state = await ledger_state(database)
    assert (state.transactions, state.postings) == (2, 5)
    assert await problems_of(database) == []


@pytest.mark.parametrize(
    ("postings", "message"),
    [
        ([(CASH_BANK, 100), ("member:{m}:wallet", -99)], "sum to 1"),
        ([], "needs postings"),
        ([(CASH_BANK, 0), ("member:{m}:wallet", 0)], "is zero"),
        ([(CASH_BANK, 1.5), ("member:{m}:wallet", -1.5)], "must be an int"),
        ([(CASH_BANK, True), ("member:{m}:wallet", -1)], "must be an int"),
        ([(CASH_BANK, 2**53), ("member:{m}:wallet", -(2**53))], r"2\*\*53"),
        ([(CASH_BANK, 5), ("member:{m}:wallet", -3), ("member:{m}:wallet", -2)], "twice"),
        ([(CASH_BANK, 5), ("member:{m}:savings", -5)], "unknown account code"),
        ([(CASH_BANK, 5), ("member:99999:wallet", -5)], "no member 99999"),
    ],
)
async def test_invalid_transactions_are_refused_and_write_nothing(
    database: Database, postings: list[tuple[str, Any]], message: str
) -> None:
    (member,) = await add_members(database, 1)
    await deposit(database, member, 1000, "A")
    before = await ledger_state(database)
    lines = [(code.format(m=member), amount) for code, amount in postings]
    with pytest.raises(LedgerError, match=message):
        await post_in_own_transaction(database, "bad:1", lines)
    assert await ledger_state(database) == before


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("txid", "", "txid must not be empty"),
        ("txid", "x" * 301, "txid is longer"),
        ("kind", "k" * 33, "kind is longer"),
        ("memo", "a\x00b", "NUL"),
        ("currency", "XXX", "unknown currency"),
        ("currency", "SEK", "kept in EUR, not SEK"),
        ("now", datetime(2026, 1, 1), "aware"),  # noqa: DTZ001 (a naive time, to be refused)
    ],
)
async def test_bad_transaction_fields_are_refused(
    database: Database, field: str, value: Any, message: str
) -> None:
    (member,) = await add_members(database, 1)
    await deposit(database, member, 1000, "A")
    before = await ledger_state(database)
    arguments: dict[str, Any] = {
        "txid": "t:1",
        "kind": "test",
        "postings": [(CASH_BANK, 5), (wallet(member), -5)],
        "currency": CURRENCY,
        "memo": "",
        "now": NOW,
    }
    arguments[field] = value
    with pytest.raises(LedgerError, match=message):
        async with database.transaction() as session:
            await post(session, **arguments)
    assert await ledger_state(database) == before


async def test_replaying_a_txid_with_the_same_content_is_a_no_op(database: Database) -> None:
    (member,) = await add_members(database, 1)
    await deposit(database, member, 1000, "A")
    lines = [(wallet(member), 400), (FEES, -400)]
    assert await post_in_own_transaction(database, "spend:1", lines, memo="m") is True
    after_first = await ledger_state(database)
    # The same content in another order is the same transaction.
    assert await post_in_own_transaction(database, "spend:1", lines[::-1], memo="m") is False
    assert await ledger_state(database) == after_first
    assert after_first.balances[wallet(member)] == -600


@pytest.mark.parametrize(
    ("postings", "memo"),
    [
        ([("member:{m}:wallet", 401), (FEES, -401)], "m"),
        ([("member:{m}:wallet", 400), (EXTERNAL, -400)], "m"),
        ([("member:{m}:wallet", 400), (FEES, -400)], "other memo"),
    ],
)
async def test_same_txid_with_other_content_is_a_conflict_and_writes_nothing(
    database: Database, postings: list[tuple[str, int]], memo: str
) -> None:
    (member,) = await add_members(database, 1)
    await deposit(database, member, 1000, "A")
    await post_in_own_transaction(
        database, "spend:1", [(wallet(member), 400), (FEES, -400)], memo="m"
    )
    before = await ledger_state(database)
    lines = [(code.format(m=member), amount) for code, amount in postings]
    with pytest.raises(LedgerConflict, match="spend:1"):
        await post_in_own_transaction(database, "spend:1", lines, memo=memo)
    assert await ledger_state(database) == before
    assert await problems_of(database) == []


async def test_wallet_overdraft_is_refused_and_nothing_written(database: Database) -> None:
    (member,) = await add_members(database, 1)
    await deposit(database, member, 1000, "A")
    before = await ledger_state(database)
    with pytest.raises(Overdraft, match=r"member:\d+:wallet would be overdrawn by 1"):
        await post_in_own_transaction(
            database, "spend:1", [(wallet(member), 1001), (peer_payable("b.example"), -1001)]
        )
    assert await ledger_state(database) == before
    # The whole balance may be spent.
    assert await post_in_own_transaction(
        database, "spend:2", [(wallet(member), 1000), (FEES, -1000)]
    )
    async with database.sessions() as session:
        assert await balance(session, wallet(member)) == 0


async def test_overdraft_rolls_back_the_callers_other_writes(database: Database) -> None:
    (member,) = await add_members(database, 1)

    async def request_payout() -> None:
        async with database.transaction() as session:
            await session.execute(
                insert(PayoutRequest).values(
                    member_id=member, amount_minor=5, state="requested", created_at=NOW
                )
            )
            await post(
                session,
                txid=payout_txid(1, "requested"),
                kind="payout",
                postings=[(earnings_available(member), 5), (payouts_pending(member), -5)],
                currency=CURRENCY,
                memo="",
                now=NOW,
            )

    with pytest.raises(Overdraft):
        await request_payout()
    async with database.sessions() as session:
        assert await session.scalar(select(func.count(PayoutRequest.id))) == 0
    assert await ledger_state(database) == LedgerState(0, 0, {})


@pytest.mark.parametrize("account", [earnings_pending, earnings_available, payouts_pending])
async def test_no_member_account_can_be_overdrawn(database: Database, account: Any) -> None:
    (member,) = await add_members(database, 1)
    await post_in_own_transaction(database, "earn:1", [(EXTERNAL, 50), (account(member), -50)])
    with pytest.raises(Overdraft):
        await post_in_own_transaction(database, "take:1", [(account(member), 51), (EXTERNAL, -51)])
    # Non-member accounts may take either sign.
    assert await post_in_own_transaction(
        database, "peer:1", [(peer_payable("b.example"), 10), (EXTERNAL, -10)]
    )


async def test_concurrent_debits_of_one_wallet_cannot_overdraw(database: Database) -> None:
    (member,) = await add_members(database, 1)
    await deposit(database, member, 1000, "A")
    both_have_read = asyncio.Barrier(2)

    async def spend(number: int) -> bool:
        async with database.transaction() as session:
            # Each sees 1000 available before either writes: a check-then-write would let both in.
            assert await owed_to_member(session, wallet(member)) == 1000
            await both_have_read.wait()
            return await post(
                session,
                txid=f"spend:{number}",
                kind="spend",
                postings=[(wallet(member), 800), (FEES, -800)],
                currency=CURRENCY,
                memo="",
                now=NOW,
            )

    results = await asyncio.wait_for(
        asyncio.gather(spend(1), spend(2), return_exceptions=True), timeout=60
    )
    assert sorted(type(result).__name__ for result in results) == ["Overdraft", "bool"]
    assert True in results
    state = await ledger_state(database)
    assert state.balances[wallet(member)] == -200
    assert state.transactions == 2
    assert await problems_of(database) == []


async def test_concurrent_replays_of_one_txid_apply_it_once(database: Database) -> None:
    (member,) = await add_members(database, 1)
    await deposit(database, member, 1000, "A")
    both_ready = asyncio.Barrier(2)

    async def spend(memo: str) -> bool:
        async with database.transaction() as session:
            await session.scalar(select(func.count(LedgerTransaction.id)))
            await both_ready.wait()
            return await post(
                session,
                txid="spend:1",
                kind="spend",
                postings=[(wallet(member), 100), (FEES, -100)],
                currency=CURRENCY,
                memo=memo,
                now=NOW,
            )

    same = await asyncio.wait_for(asyncio.gather(spend("a"), spend("a")), timeout=60)
    assert sorted(same) == [False, True]
    other = await asyncio.wait_for(
        asyncio.gather(spend("a"), spend("b"), return_exceptions=True), timeout=60
    )
    assert other[0] is False
    assert isinstance(other[1], LedgerConflict)
    state = await ledger_state(database)
    assert state.balances[wallet(member)] == -900
    assert state.transactions == 2
    assert await problems_of(database) == []


# --- check_ledger ---------------------------------------------------------------------------


@dataclass
class World:
    donor: int
    creator: int
    thing: int
    payout: int


async def populate(database: Database) -> World:
    """A small clean instance: a deposit, a closed month (a local and a remote thing flattred,
    10 % fee), and a paid payout."""
    donor, creator = await add_members(database, 2)
    await deposit(database, donor, 1000, "DEP-1")
    async with database.transaction() as session:
        thing = (
            await session.execute(
                insert(Thing)
                .values(owner_id=creator, title="A blog", created_at=NOW)
                .returning(Thing.id)
            )
        ).scalar_one()
        run = (
            await session.execute(
                insert(ClearingRun)
                .values(
                    period="2026-10",
                    stage="done",
                    cutoff=datetime(2026, 11, 1, tzinfo=UTC),
                    fee_bp=1000,
                    currency=CURRENCY,
                    started_at=NOW,
                    finished_at=NOW,
                )
                .returning(ClearingRun.id)
            )
        ).scalar_one()
        # budget 600, wallet 1000: B = 600, fee 60, D = 540, n = 2, q = 270, carry 0.
        await session.execute(
            insert(DonorClose).values(
                run_id=run,
                donor_id=donor,
                budget_minor=600,
                wallet_minor=1000,
                spent_minor=600,
                fee_minor=60,
                share_minor=270,
                things=2,
                carry_minor=0,
            )
        )
        for number, (target, host, thing_id, creator_id) in enumerate(
            [
                ("https://a.example/things/blog", "a.example", thing, creator),
                ("https://b.example/things/song", "b.example", None, None),
            ]
        ):
            flattr = (
                await session.execute(
                    insert(Flattr)
                    .values(
                        donor_id=donor,
                        period="2026-10",
                        target_uri=target,
                        payee_uri=target,
                        payee_host=host,
                        thing_id=thing_id,
                        like_uri=f"https://a.example/likes/{number}",
                        status="payable",
                        created_at=NOW,
                    )
                    .returning(Flattr.id)
                )
            ).scalar_one()
            await session.execute(
                insert(Share).values(
                    run_id=run,
                    donor_id=donor,
                    flattr_id=flattr,
                    like_uri=f"https://a.example/likes/{number}",
                    target_uri=target,
                    payee_uri=target,
                    payee_host=host,
                    creator_id=creator_id,
                    amount_minor=270,
                )
            )
        payout = (
            await session.execute(
                insert(PayoutRequest)
                .values(member_id=creator, amount_minor=200, state="paid", created_at=NOW)
                .returning(PayoutRequest.id)
            )
        ).scalar_one()
    await post_in_own_transaction(
        database,
        f"close:2026-10:{donor}",
        [
            (wallet(donor), 600),
            (FEES, -60),
            (earnings_available(creator), -270),
            (peer_payable("b.example"), -270),
        ],
    )
    await post_in_own_transaction(
        database,
        payout_txid(payout, "requested"),
        [(earnings_available(creator), 200), (payouts_pending(creator), -200)],
    )
    await post_in_own_transaction(
        database, payout_txid(payout, "paid"), [(payouts_pending(creator), 200), (CASH_BANK, -200)]
    )
    return World(donor, creator, thing, payout)


async def test_a_clean_ledger_has_no_problems(database: Database) -> None:
    assert await problems_of(database) == []
    world = await populate(database)
    assert await problems_of(database) == []
    async with database.sessions() as session:
        assert await member_balances(session, world.creator) == {
            "wallet": 0,
            "earnings_pending": 0,
            "earnings_available": 70,
            "payouts_pending": 0,
        }
        assert (await member_balances(session, world.donor))["wallet"] == 400


async def run_sql(database: Database, *statements: str, **values: Any) -> None:
    async with database.transaction() as session:
        for statement in statements:
            await session.execute(text(statement), values)


CORRUPTIONS: list[tuple[str, list[str], set[str], str]] = [
    (
        "a posting changed",
        [
            "UPDATE ledger_postings SET amount_minor = amount_minor + 1"
            " WHERE id = (SELECT p.id FROM ledger_postings p"
            " JOIN ledger_transactions t ON t.id = p.transaction_id"
            " JOIN ledger_accounts a ON a.id = p.account_id"
            " WHERE t.txid LIKE 'close:%' AND a.code = 'income:fees')"
        ],
        {"1-double-entry", "9-immutable", "2-balance-cache", "7-zero-sum", "3-conservation"},
        "txid=close:2026-10:{donor}",
    ),
    (
        "a posting moved to another account",
        [
            "UPDATE ledger_postings SET account_id ="
            " (SELECT id FROM ledger_accounts WHERE code LIKE 'member:%:payouts:pending')"
            " WHERE id = (SELECT p.id FROM ledger_postings p"
            " JOIN ledger_transactions t ON t.id = p.transaction_id"
            " JOIN ledger_accounts a ON a.id = p.account_id"
            " WHERE t.txid LIKE 'close:%' AND a.code = 'income:fees')"
        ],
        {"9-immutable", "2-balance-cache", "3-conservation"},
        "txid=close:2026-10:{donor}",
    ),
    (
        "a cached balance changed",
        ["UPDATE ledger_accounts SET balance_minor = balance_minor - 5 WHERE code = :wallet"],
        {"2-balance-cache", "7-zero-sum"},
        "account=member:{donor}:wallet",
    ),
    (
        "a memo edited",
        ["UPDATE ledger_transactions SET memo = 'edited' WHERE txid = 'deposit:DEP-1'"],
        {"9-immutable"},
        "txid=deposit:DEP-1",
    ),
    (
        "an account in another currency",
        ["UPDATE ledger_accounts SET currency = 'SEK' WHERE code = 'income:fees'"],
        {"1-currency"},
        "account=income:fees",
    ),
    (
        "an account of the wrong kind",
        ["UPDATE ledger_accounts SET kind = 'asset' WHERE code = 'income:fees'"],
        {"accounts"},
        "account=income:fees",
    ),
    (
        "an amount beyond 2**53",
        [
            "UPDATE ledger_postings SET amount_minor = amount_minor * 9007199254740992"
            " WHERE transaction_id ="
            " (SELECT id FROM ledger_transactions WHERE txid LIKE 'payout:%\\:requested')"
        ],
        {"10-bounds", "9-immutable", "2-balance-cache", "2-no-overdraft"},
        "txid=payout:{payout}:requested",
    ),
    (
        "a credited deposit without its transaction",
        [
            "INSERT INTO deposit_requests (member_id, provider, reference, state, amount_minor,"
            " created_at) VALUES (:donor, 'manual', 'DEP-2', 'credited', 500, :now)"
        ],
        {"4-deposits"},
        "reference DEP-2",
    ),
    (
        "a deposit credited with another amount",
        ["UPDATE deposit_requests SET amount_minor = 999 WHERE reference = 'DEP-1'"],
        {"4-deposits"},
        "txid=deposit:DEP-1",
    ),
    (
        "a deposit transaction whose request is not credited",
        ["UPDATE deposit_requests SET state = 'open' WHERE reference = 'DEP-1'"],
        {"4-deposits"},
        "txid=deposit:DEP-1",
    ),
    (
        "a paid payout without its transaction",
        [
            "INSERT INTO payout_requests (member_id, amount_minor, state, created_at)"
            " VALUES (:creator, 50, 'paid', :now)"
        ],
        {"4-payouts"},
        "payout_request=",
    ),
    (
        "a payout transaction whose request is not paid",
        ["UPDATE payout_requests SET state = 'requested' WHERE id = :payout"],
        {"4-payouts"},
        "txid=payout:{payout}:paid",
    ),
    (
        "a self-flattr",
        ["UPDATE flattrs SET donor_id = :creator WHERE thing_id IS NOT NULL"],
        # Its share now traces to a flattr of another donor, too.
        {"4-no-self-flattr", "4-shares"},
        "thing={thing}",
    ),
    (
        "a frozen split that does not add up",
        ["UPDATE donor_closes SET carry_minor = 1"],
        {"3-conservation"},
        "donor_close=",
    ),
    (
        "a frozen split that adds up but is not the rule's",
        ["UPDATE donor_closes SET fee_minor = 62, share_minor = 269"],
        {"3-conservation"},
        "donor_close=",
    ),
    (
        "a share changed",
        ["UPDATE shares SET amount_minor = 271 WHERE creator_id IS NOT NULL"],
        {"3-conservation"},
        "donor_close=",
    ),
    (
        "a share missing",
        ["DELETE FROM shares WHERE creator_id IS NULL"],
        {"3-conservation"},
        "donor_close=",
    ),
    (
        "a close without its transaction",
        ["UPDATE ledger_transactions SET txid = 'renamed:1' WHERE txid LIKE 'close:%'"],
        {"3-conservation"},
        "donor_close=",
    ),
    (
        "a share of a Like undone before the cutoff",
        ["UPDATE flattrs SET undone_at = :undone WHERE thing_id IS NOT NULL"],
        {"4-shares"},
        "share=",
    ),
    (
        "a share traced to another Like",
        ["UPDATE shares SET like_uri = 'https://a.example/likes/x' WHERE creator_id IS NOT NULL"],
        {"4-shares"},
        "share=",
    ),
]


@pytest.mark.parametrize(
    ("statements", "expected", "row"),
    [pytest.param(s, e, r, id=name) for name, s, e, r in CORRUPTIONS],
)
async def test_check_finds_each_corruption(
    database: Database, statements: list[str], expected: set[str], row: str
) -> None:
    world = await populate(database)
    values = {
        "donor": world.donor,
        "creator": world.creator,
        "payout": world.payout,
        "thing": world.thing,
        "wallet": wallet(world.donor),
        "now": "2026-11-15 12:00:00.000000" if database.dialect == "sqlite" else NOW,
        "undone": (
            "2026-10-20 00:00:00.000000"
            if database.dialect == "sqlite"
            else datetime(2026, 10, 20, tzinfo=UTC)
        ),
    }
    await run_sql(database, *statements, **values)
    problems = await problems_of(database)
    assert invariants(problems) == expected, problems
    named = [r for problem in problems for r in problem.rows]
    assert any(row.format(**values) in r for r in named), problems
    assert all(problem.invariant in INVARIANTS for problem in problems)


async def test_check_finds_an_unbalanced_transaction_inserted_behind_the_ledgers_back(
    database: Database,
) -> None:
    world = await populate(database)
    async with database.transaction() as session:
        transaction = (
            await session.execute(
                insert(LedgerTransaction)
                .values(txid="forged:1", kind="forged", content_hash="0" * 64, created_at=NOW)
                .returning(LedgerTransaction.id)
            )
        ).scalar_one()
        account = await session.scalar(
            select(LedgerAccount.id).where(LedgerAccount.code == wallet(world.donor))
        )
        await session.execute(
            insert(LedgerPosting).values(
                transaction_id=transaction, account_id=account, amount_minor=-5000
            )
        )
    problems = await problems_of(database)
    assert {"1-double-entry", "9-immutable", "2-balance-cache", "7-zero-sum"} <= invariants(
        problems
    )
    (double_entry,) = [p for p in problems if p.invariant == "1-double-entry"]
    assert double_entry.rows == ["txid=forged:1"]
    assert "has 1 posting(s)" in double_entry.detail
    assert "sums to -5000" in double_entry.detail


async def test_check_finds_a_negative_wallet_even_when_everything_else_agrees(
    database: Database,
) -> None:
    world = await populate(database)
    # A balanced, correctly hashed and cached transaction that overdraws the donor's wallet,
    # written past post() (which would refuse it).
    lines = [(wallet(world.donor), 500), (CASH_BANK, -500)]
    async with database.transaction() as session:
        transaction = (
            await session.execute(
                insert(LedgerTransaction)
                .values(
                    txid="sneaky:1",
                    kind="sneaky",
                    content_hash=content_hash("sneaky", CURRENCY, lines, ""),
                    memo="",
                    created_at=NOW,
                )
                .returning(LedgerTransaction.id)
            )
        ).scalar_one()
        for code, amount in lines:
            account = await session.scalar(
                select(LedgerAccount.id).where(LedgerAccount.code == code)
            )
            await session.execute(
                insert(LedgerPosting).values(
                    transaction_id=transaction, account_id=account, amount_minor=amount
                )
            )
            await session.execute(
                text(
                    "UPDATE ledger_accounts SET balance_minor = balance_minor + :x WHERE id = :id"
                ),
                {"x": amount, "id": account},
            )
    problems = await problems_of(database)
    assert invariants(problems) == {"2-no-overdraft"}, problems
    assert problems[0].rows == [f"account={wallet(world.donor)}"]
    assert "debit balance of 100" in problems[0].detail


async def test_check_finds_a_duplicate_live_flattr(database: Database) -> None:
    world = await populate(database)
    # The unique index would refuse it; a damaged or hand-edited database might not have it.
    await run_sql(database, "DROP INDEX ix_flattrs_donor_id_target_uri_period")
    async with database.transaction() as session:
        base = {
            "donor_id": world.donor,
            "period": "2026-10",
            "target_uri": "https://a.example/things/blog",
            "payee_uri": "https://a.example/things/blog",
            "payee_host": "a.example",
            "status": "payable",
            "created_at": NOW,
        }
        await session.execute(insert(Flattr).values(**base, like_uri="https://a.example/likes/2"))
        # An undone one does not count.
        await session.execute(
            insert(Flattr).values(**base, like_uri="https://a.example/likes/3", undone_at=NOW)
        )
    problems = await problems_of(database)
    assert invariants(problems) == {"4-one-flattr"}
    assert len(problems[0].rows) == 2
    assert "2 times in 2026-10" in problems[0].detail


async def test_check_finds_an_instance_that_owes_more_than_it_holds(database: Database) -> None:
    (member,) = await add_members(database, 1)
    await deposit(database, member, 1000, "A")
    # Valid postings, but the bank fees eat into members' money.
    await post_in_own_transaction(database, "bankfee:1", [(EXTERNAL, 600), (CASH_BANK, -600)])
    problems = await problems_of(database)
    assert invariants(problems) == {"7-cash-backing"}
    assert "owes members and peers 1000 but holds and is owed only 400" in problems[0].detail


async def test_check_caps_problems_of_one_invariant(database: Database) -> None:
    (member,) = await add_members(database, 1)
    for number in range(106):
        await post_in_own_transaction(
            database, f"t:{number}", [(CASH_BANK, 1), (wallet(member), -1)], memo="x"
        )
    await run_sql(database, "UPDATE ledger_transactions SET memo = 'edited'")
    problems = await problems_of(database)
    assert len(problems) == 101
    assert problems[-1].detail == "... and 6 more"


# --- property: random valid activity keeps every invariant ---------------------------------

MEMBERS = 3
amounts = st.integers(min_value=1, max_value=5_000)
member_numbers = st.integers(min_value=0, max_value=MEMBERS - 1)
operations = st.one_of(
    st.tuples(st.just("deposit"), member_numbers, amounts),
    st.tuples(st.just("spend"), member_numbers, member_numbers, amounts, st.integers(0, 1000)),
    st.tuples(
        st.just("peer"), member_numbers, st.sampled_from(["b.example", "c.example"]), amounts
    ),
    st.tuples(st.just("settle"), member_numbers, amounts),
    st.tuples(st.just("request"), member_numbers, amounts),
    st.tuples(st.just("pay"), member_numbers, amounts),
    st.tuples(st.just("bankfee"), amounts),
    st.tuples(st.just("replay"), st.integers(min_value=0)),
)


def postings_for(operation: tuple[Any, ...], members: list[int]) -> list[tuple[str, int]]:
    name = operation[0]
    if name == "deposit":
        return [(CASH_BANK, operation[2]), (wallet(members[operation[1]]), -operation[2])]
    if name == "spend":
        _, donor, creator, amount, fee_bp = operation
        fee = amount * fee_bp // 10_000
        lines = [
            (wallet(members[donor]), amount),
            (earnings_pending(members[creator]), fee - amount),
        ]
        return [*lines, (FEES, -fee)] if fee else lines
    if name == "peer":
        return [
            (wallet(members[operation[1]]), operation[3]),
            (peer_payable(operation[2]), -operation[3]),
        ]
    if name == "bankfee":
        return [(EXTERNAL, operation[1]), (CASH_BANK, -operation[1])]
    source, target = {
        "settle": (earnings_pending, earnings_available),
        "request": (earnings_available, payouts_pending),
        "pay": (payouts_pending, None),
    }[name]
    member, amount = members[operation[1]], operation[2]
    return [(source(member), amount), (target(member) if target else CASH_BANK, -amount)]


async def empty_ledger(database: Database) -> None:
    """Back to an empty instance, so one database serves every Hypothesis example."""
    await run_sql(
        database,
        "DELETE FROM ledger_postings",
        "DELETE FROM ledger_transactions",
        "DELETE FROM ledger_accounts",
        "DELETE FROM members",
    )


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(st.lists(operations, max_size=14))
async def test_random_activity_keeps_every_invariant(
    database: Database, activity: list[tuple[Any, ...]]
) -> None:
    await empty_ledger(database)
    members = await add_members(database, MEMBERS)
    model: dict[str, int] = {}
    posted: list[tuple[str, list[tuple[str, int]]]] = []
    for number, operation in enumerate(activity):
        if operation[0] == "replay":
            if not posted:
                continue
            txid, lines = posted[operation[1] % len(posted)]
            assert await post_in_own_transaction(database, txid, lines) is False
        else:
            txid, lines = f"op:{number}", postings_for(operation, members)
            after = dict(model)
            for code, amount in lines:
                after[code] = after.get(code, 0) + amount
            overdrawn = any(
                amount > 0 and after[code] > 0 and is_member_liability(code)
                for code, amount in lines
            )
            if overdrawn:
                with pytest.raises(Overdraft):
                    await post_in_own_transaction(database, txid, lines)
            else:
                assert await post_in_own_transaction(database, txid, lines) is True
                model = after
                posted.append((txid, lines))
        problems = await problems_of(database)
        # Bank fees may leave the instance owing more than it holds: that one is reported.
        held = sum(v for c, v in model.items() if account_kind(c) == "asset")
        owed = -sum(v for c, v in model.items() if account_kind(c) == "liability")
        assert invariants(problems) == ({"7-cash-backing"} if held < owed else set()), problems
    state = await ledger_state(database)
    assert {code: value for code, value in state.balances.items() if value} == {
        code: value for code, value in model.items() if value
    }
    assert state.transactions == len(posted)
    async with database.sessions() as session:
        for member in members:
            owing = await member_balances(session, member)
            assert all(value >= 0 for value in owing.values())
            assert owing["wallet"] == -model.get(wallet(member), 0)
