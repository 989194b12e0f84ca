"""Posting many transactions at once (`post_many`, used by the month close) keeps every rule of
posting one: the same rows and balances, idempotent txids, conflicts and overdrafts refused."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from flattrfed.db.models import LedgerTransaction
from flattrfed.db.session import Database
from flattrfed.settlement.ledger import (
    EXTERNAL,
    FEES,
    Entry,
    LedgerConflict,
    LedgerError,
    Overdraft,
    earnings_available,
    peer_payable,
    post,
    post_many,
    wallet,
)
from tests.integration.test_ledger import (
    CURRENCY,
    NOW,
    add_members,
    deposit,
    ledger_state,
    problems_of,
)


def spending(members: list[int], creator: int) -> list[Entry]:
    """Each member pays a fee, the creator and a peer, shaped like the close (whose own txids
    `flattrfed check` traces to clearing runs, so these use another kind)."""
    return [
        Entry(
            txid=f"spend:{member}",
            kind="spend",
            postings=[
                (wallet(member), 100 + index),
                (FEES, -5),
                (earnings_available(creator), -50),
                (peer_payable("beta.example"), -(45 + index)),
            ],
            memo="flattrfed-split/1 for 2026-11",
        )
        for index, member in enumerate(members)
    ]


async def batch(database: Database, entries: list[Entry]) -> int:
    async with database.transaction() as session:
        return await post_many(session, entries, currency=CURRENCY, now=NOW)


async def test_a_batch_writes_what_posting_one_by_one_writes(
    database_factory: object,
) -> None:
    states = []
    for mode in ("one by one", "batch"):
        database = Database(await database_factory.new_database("batch"))  # type: ignore[attr-defined]
        try:
            *donors, creator = await add_members(database, 4)
            for donor in donors:
                await deposit(database, donor, 1000, f"D{donor}")
            entries = spending(donors, creator)
            if mode == "batch":
                assert await batch(database, entries) == 3
            else:
                for entry in entries:
                    async with database.transaction() as session:
                        await post(
                            session,
                            txid=entry.txid,
                            kind=entry.kind,
                            postings=entry.postings,
                            currency=CURRENCY,
                            memo=entry.memo,
                            now=NOW,
                        )
            async with database.sessions() as session:
                hashes = sorted(
                    (
                        await session.execute(
                            select(LedgerTransaction.txid, LedgerTransaction.content_hash)
                        )
                    ).all()
                )
            states.append((await ledger_state(database), hashes))
            assert await problems_of(database) == []
        finally:
            await database.dispose()
    assert states[0] == states[1]


async def test_replaying_a_batch_posts_nothing_twice(database: Database) -> None:
    *donors, creator = await add_members(database, 3)
    for donor in donors:
        await deposit(database, donor, 1000, f"D{donor}")
    entries = spending(donors, creator)
    assert await batch(database, entries[:1]) == 1
    before_rest = await ledger_state(database)
    assert await batch(database, entries) == 1  # the first is already posted: skipped
    assert await batch(database, entries) == 0
    after = await ledger_state(database)
    assert after.transactions == before_rest.transactions + 1
    assert await problems_of(database) == []


async def test_a_txid_posted_with_other_content_fails_the_whole_batch(database: Database) -> None:
    *donors, creator = await add_members(database, 3)
    for donor in donors:
        await deposit(database, donor, 1000, f"D{donor}")
    entries = spending(donors, creator)
    await batch(database, entries[:1])
    before = await ledger_state(database)
    changed = Entry(entries[0].txid, "spend", entries[0].postings, memo="something else")
    with pytest.raises(LedgerConflict, match=entries[0].txid):
        await batch(database, [entries[1], changed])
    assert await ledger_state(database) == before


async def test_an_overdrawn_wallet_fails_the_whole_batch(database: Database) -> None:
    *donors, creator = await add_members(database, 3)
    await deposit(database, donors[0], 1000, "D0")
    await deposit(database, donors[1], 50, "D1")  # too little for its 101
    before = await ledger_state(database)
    with pytest.raises(Overdraft, match=wallet(donors[1])):
        await batch(database, spending(donors, creator))
    assert await ledger_state(database) == before


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ([Entry("x:1", "x", [(EXTERNAL, 5), (FEES, -4)], "")], "sum to 1"),
        (
            [
                Entry("x:1", "x", [(EXTERNAL, 5), (FEES, -5)], ""),
                Entry("x:1", "x", [(EXTERNAL, 5), (FEES, -5)], ""),
            ],
            "appears twice",
        ),
        ([Entry("x:1", "x", [(EXTERNAL, 5), ("member:999999:wallet", -5)], "")], "no member"),
    ],
)
async def test_invalid_batches_are_refused_and_write_nothing(
    database: Database, entries: list[Entry], message: str
) -> None:
    before = await ledger_state(database)
    with pytest.raises(LedgerError, match=message):
        await batch(database, entries)
    assert await ledger_state(database) == before
