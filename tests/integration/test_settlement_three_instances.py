"""Three peered instances close a month over real HTTP, exchange statements, net, pay, confirm.

One November on alpha, beta and gamma (beta takes a 2.5 % fee), with donors and things on all
three, flattrs in every direction and the awkward cases of a month: an Undo before the cutoff,
an Undo after it, a late Like that reaches its receiver after midnight but inside the grace
window, a plain Mastodon favourite, and a pending flattr of a post on a plain ActivityPub server.
The issue's "done when" is asserted on the real rows and balances of all three databases.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import permutations

import pytest
from sqlalchemy import select

from flattrfed.activitypub.delivery import enqueue_delivery
from flattrfed.activitypub.documents import undo_activity
from flattrfed.activitypub.outbox import publish_post
from flattrfed.db.models import (
    ClearingRun,
    DonorClose,
    Flattr,
    InboundActivity,
    LedgerAccount,
    Member,
    OutboundLike,
    Post,
    ReceivedLike,
    Settlement,
    Share,
    Statement,
)
from flattrfed.flattring.flattrs import unflattr
from flattrfed.flattring.resolve import CannotFlattr
from flattrfed.settlement import ledger
from flattrfed.settlement.checks import check_ledger
from tests.fakes.mastodon import FakeMastodon
from tests.fakes.plain import PlainServer
from tests.harness.instances import Federation, Instance

PERIOD = "2026-11"
CUTOFF = datetime(2026, 12, 1, tzinfo=UTC)
GRACE = timedelta(hours=24)


# --- set-up helpers ------------------------------------------------------------------------------


@pytest.fixture
async def mastodon(federation: Federation) -> AsyncIterator[FakeMastodon]:
    fake = FakeMastodon(federation)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


async def undo(instance: Instance, member: Member, flattr_row: Flattr) -> None:
    async with instance.services.database.transaction() as session:
        row = await session.get(Member, member.id)
        assert row is not None
        await unflattr(session, row, flattr_row.id, instance.services.clock.now())


# --- reading helpers -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Books:
    """One instance's ledger by what the money is: what it holds, owes and is owed."""

    cash: int
    wallets: int
    earnings_pending: int
    earnings_available: int
    payouts_pending: int
    fees: int
    payables: int
    receivables: int
    other: int  # anything else (external, ...): nothing in this scenario

    @property
    def owed_net(self) -> int:
        """Wallets + earnings + fees + payables - receivables: what cash must cover."""
        return (
            self.wallets
            + self.earnings_pending
            + self.earnings_available
            + self.payouts_pending
            + self.fees
            + self.payables
            - self.receivables
        )


async def books(instance: Instance) -> Books:
    async with instance.services.database.sessions() as session:
        rows = (
            await session.execute(select(LedgerAccount.code, LedgerAccount.balance_minor))
        ).all()
    sums = dict.fromkeys(Books.__dataclass_fields__, 0)
    for code, balance in rows:
        if code.startswith("cash:"):
            sums["cash"] += balance
        elif code.endswith(":wallet"):
            sums["wallets"] -= balance
        elif code.endswith(":earnings:pending"):
            sums["earnings_pending"] -= balance
        elif code.endswith(":earnings:available"):
            sums["earnings_available"] -= balance
        elif code.endswith(":payouts:pending"):
            sums["payouts_pending"] -= balance
        elif code == ledger.FEES:
            sums["fees"] -= balance
        elif code.endswith(":payable"):
            sums["payables"] -= balance
        elif code.endswith(":receivable"):
            sums["receivables"] += balance
        else:
            sums["other"] += balance
    return Books(**sums)


async def all_books(instances: list[Instance]) -> dict[str, Books]:
    return {instance.name: await books(instance) for instance in instances}


def assert_cash_backed(state: dict[str, Books]) -> None:
    for name, book in state.items():
        assert book.other == 0, name
        assert book.owed_net == book.cash, (name, book)
    assert sum(book.owed_net for book in state.values()) == sum(
        book.cash for book in state.values()
    )


async def owed(instance: Instance, code: str) -> int:
    async with instance.services.database.sessions() as session:
        return await ledger.owed_to_member(session, code)


async def balance(instance: Instance, code: str) -> int:
    async with instance.services.database.sessions() as session:
        return await ledger.balance(session, code)


async def statement(instance: Instance, direction: str, peer_host: str) -> Statement:
    async with instance.services.database.sessions() as session:
        rows = (
            await session.scalars(
                select(Statement).where(
                    Statement.direction == direction,
                    Statement.period == PERIOD,
                    Statement.peer_host == peer_host,
                )
            )
        ).all()
    (row,) = rows  # exactly one revision: nothing was disputed
    return row


async def settlement(instance: Instance, peer_host: str) -> Settlement:
    async with instance.services.database.sessions() as session:
        row = await session.scalar(
            select(Settlement).where(Settlement.period == PERIOD, Settlement.peer_host == peer_host)
        )
    assert row is not None, (instance.name, peer_host)
    return row


async def shares(instance: Instance) -> list[Share]:
    async with instance.services.database.sessions() as session:
        run = await session.scalar(select(ClearingRun).where(ClearingRun.period == PERIOD))
        assert run is not None
        assert run.stage == "done"
        return list((await session.scalars(select(Share).where(Share.run_id == run.id))).all())


async def donor_closes(instance: Instance) -> dict[int, DonorClose]:
    async with instance.services.database.sessions() as session:
        run = await session.scalar(select(ClearingRun).where(ClearingRun.period == PERIOD))
        assert run is not None
        rows = await session.scalars(select(DonorClose).where(DonorClose.run_id == run.id))
        return {row.donor_id: row for row in rows}


async def received_like(instance: Instance, like_uri: str) -> ReceivedLike:
    async with instance.services.database.sessions() as session:
        row = await session.scalar(select(ReceivedLike).where(ReceivedLike.like_uri == like_uri))
    assert row is not None, like_uri
    return row


# --- the scenario --------------------------------------------------------------------------------


async def test_three_instances_close_exchange_net_pay_and_confirm(
    federation: Federation, plain: PlainServer, mastodon: FakeMastodon
) -> None:
    clock = federation.clock
    alpha = await federation.start("alpha", fee_bp=0)
    beta = await federation.start("beta", fee_bp=250)
    gamma = await federation.start("gamma", fee_bp=0)
    instances = [alpha, beta, gamma]
    for one, other in permutations(instances, 2):
        await one.peer_with(other)

    # Six things, two per instance, each with its own creator.
    creators: dict[str, tuple[Instance, Member]] = {}
    for instance, owner, handle in [
        (alpha, "carol", "zine"),
        (alpha, "ian", "comic"),
        (beta, "dave", "pod"),
        (beta, "erin", "blog"),
        (gamma, "fay", "film"),
        (gamma, "gus", "game"),
    ]:
        member = await instance.create_member(owner)
        await instance.create_thing(member, handle, f"{owner}'s {handle}")
        creators[handle] = (instance, member)

    def thing(handle: str) -> str:
        return f"@{handle}@{creators[handle][0].host}"

    # Six donors, two per instance: B = min(budget, wallet) with non-trivial shares and carries.
    ann = await alpha.create_donor("ann", budget=1001, deposit=2500)  # 4 things: q 250, carry 1
    abe = await alpha.create_donor(
        "abe", budget=700, deposit=500
    )  # B 500, 3 things: q 166, carry 2
    bob = await beta.create_donor("bob", budget=1001, deposit=1001)  # fee 25, 3 things: q 325, c 1
    bea = await beta.create_donor("bea", budget=333, deposit=400)  # fee 8, 2 things: q 162, c 1
    gil = await gamma.create_donor("gil", budget=901, deposit=1000)  # 4 things: q 225, carry 1
    gwen = await gamma.create_donor("gwen", budget=250, deposit=1000)  # 1 thing (one undone): 250
    deposits = 2500 + 500 + 1001 + 400 + 1000 + 1000
    await federation.step_workers()  # October's (empty) close and statements

    before_clicks = await all_books(instances)
    assert sum(book.cash for book in before_clicks.values()) == deposits
    assert_cash_backed(before_clicks)

    # Mid-November: flattrs in every direction between the three instances.
    await alpha.flattr(ann, thing("zine"))  # local
    await alpha.flattr(ann, thing("pod"))  # alpha → beta
    await alpha.flattr(ann, thing("film"))  # alpha → gamma
    await alpha.flattr(abe, thing("game"))  # alpha → gamma
    await alpha.flattr(abe, thing("pod"))  # alpha → beta
    await alpha.flattr(abe, thing("blog"))  # alpha → beta
    await beta.flattr(bob, thing("zine"))  # beta → alpha
    await beta.flattr(bob, thing("comic"))  # beta → alpha
    await beta.flattr(bob, thing("film"))  # beta → gamma
    await beta.flattr(bea, thing("game"))  # beta → gamma
    await beta.flattr(bea, thing("blog"))  # local
    await gamma.flattr(gil, thing("pod"))  # gamma → beta
    gil_zine = await gamma.flattr(gil, thing("zine"))  # gamma → alpha (Undo after the cutoff)
    await gamma.flattr(gil, thing("comic"))  # gamma → alpha
    await gamma.flattr(gil, thing("film"))  # local
    await gamma.flattr(gwen, thing("blog"))  # gamma → beta
    gwen_comic = await gamma.flattr(gwen, thing("comic"))  # gamma → alpha, undone below
    await federation.step_workers()

    # An Undo before the cutoff: counted nowhere.
    clock.set(datetime(2026, 11, 20, 9, tzinfo=UTC))
    await undo(gamma, gwen, gwen_comic)
    await federation.step_workers()
    undone = await received_like(alpha, gwen_comic.like_uri)
    assert undone.undone_at == datetime(2026, 11, 20, 9, tzinfo=UTC)

    # A pending flattr of a post on a plain ActivityPub server: a Like goes out, no money moves.
    pending = await alpha.flattr(abe, plain.status_uri("paula", 3))
    assert pending.status == "pending"

    # A plain Mastodon favourite of pod's post: an appreciation, recorded, never paid.
    post_actor = await beta.actor("pod")
    async with beta.services.database.transaction() as session:
        post: Post = await publish_post(
            session, beta.services.urls, post_actor, "Episode 12", clock.now()
        )
    moe = mastodon.add_account("moe")
    pod_document = await mastodon.resolve(thing("pod"))
    favourite = await mastodon.favourite(moe, post.uri, pod_document)
    assert favourite.status == 202, favourite.body
    await federation.step_workers()
    assert [like["object"] for like in plain.received] == [plain.status_uri("paula", 3)]
    appreciation = await received_like(beta, favourite.id)
    assert appreciation.flattr_period is None
    assert appreciation.sender_host == mastodon.host

    # A late Like: ann flattrs blog a minute before midnight; beta gets it after midnight.
    clock.set(datetime(2026, 11, 30, 23, 59, tzinfo=UTC))
    late = await alpha.flattr(ann, thing("blog"))
    assert late.period == PERIOD
    clock.set(datetime(2026, 12, 1, 0, 30, tzinfo=UTC))
    await federation.step_workers()
    late_received = await received_like(beta, late.like_uri)
    assert late_received.received_at == datetime(2026, 12, 1, 0, 30, tzinfo=UTC)
    assert late_received.received_at >= CUTOFF
    assert late_received.flattr_period == PERIOD

    # After the cutoff a member can no longer undo a November flattr...
    with pytest.raises(CannotFlattr, match="closed month"):
        await undo(gamma, gil, gil_zine)

    before_close = await all_books(instances)
    assert before_close == before_clicks  # flattring alone moves no money
    assert_cash_backed(before_close)

    # ...and an Undo that reaches the receiver after cutoff + grace changes nothing either: the
    # Like still counts on both sides. (Queued on gamma before the closes, so alpha records it
    # before it verifies gamma's statement.)
    clock.set(CUTOFF + GRACE + timedelta(seconds=1))
    async with gamma.services.database.transaction() as session:
        sent = await session.scalar(
            select(OutboundLike).where(OutboundLike.like_uri == gil_zine.like_uri)
        )
        assert sent is not None
        await enqueue_delivery(
            session,
            activity=undo_activity(sent.activity, undo_uri=f"{sent.like_uri}/undo-late"),
            actor_id=sent.actor_id,
            inboxes=[sent.inbox],
            now=clock.now(),
        )

    # Closes, statements, responses and settlements, everywhere.
    await federation.step_workers()
    late_undo = await received_like(alpha, gil_zine.like_uri)
    assert late_undo.undone_at is not None
    assert late_undo.undone_at >= CUTOFF + GRACE
    async with alpha.services.database.sessions() as session:
        arrived = {
            (row.type, row.actor_uri): row.id
            for row in await session.scalars(
                select(InboundActivity).where(InboundActivity.received_at >= CUTOFF + GRACE)
            )
        }
    # The Undo was in alpha's inbox before gamma's statement, so it was judged with it.
    assert arrived["Undo", gamma.actor_uri("gil")] < arrived["Offer", gamma.url("/actor")]

    after_close = await all_books(instances)
    assert_cash_backed(after_close)
    # Money changed accounts (wallets → fees, earnings, payables / receivables) but the
    # federation's obligations net of what it is owed are the same, and equal to its cash.
    assert sum(book.owed_net for book in after_close.values()) == sum(
        book.owed_net for book in before_close.values()
    )
    # The close and the statements move no cash anywhere.
    assert {name: book.cash for name, book in after_close.items()} == {
        name: book.cash for name, book in before_close.items()
    }
    assert sum(book.cash for book in after_close.values()) == deposits
    for instance in instances:
        async with instance.services.database.sessions() as session:
            assert await check_ledger(session, "EUR") == [], instance.name

    # --- per-donor conservation: fee + n·q + carry == B, and the wallet paid fee + n·q ---
    # (instance, donor) → (budget, deposit, distinct things counted)
    counted = {
        ("alpha", ann.id): (1001, 2500, 4),  # zine, pod, film, blog (the late Like)
        ("alpha", abe.id): (700, 500, 3),  # game, pod, blog; the pending plain post is not one
        ("beta", bob.id): (1001, 1001, 3),
        ("beta", bea.id): (333, 400, 2),
        ("gamma", gil.id): (901, 1000, 4),  # pod, zine (undone after the cutoff), comic, film
        ("gamma", gwen.id): (250, 1000, 1),  # blog; comic was undone before the cutoff
    }
    fees_expected = {"alpha": 0, "beta": 0, "gamma": 0}
    carries = 0
    for instance in instances:
        closes = await donor_closes(instance)
        assert {(instance.name, donor_id) for donor_id in closes} == {
            key for key in counted if key[0] == instance.name
        }
        fee_bp = 250 if instance is beta else 0
        for donor_id, close in closes.items():
            budget, deposit, things = counted[instance.name, donor_id]
            spent = min(budget, deposit)
            assert close.spent_minor == spent
            assert close.things == things
            assert close.fee_minor == spent * fee_bp // 10_000
            assert close.fee_minor + close.things * close.share_minor + close.carry_minor == spent
            assert 0 <= close.carry_minor < close.things
            assert close.share_minor > 0
            debited = close.fee_minor + close.things * close.share_minor
            assert await owed(instance, ledger.wallet(donor_id)) == deposit - debited
            fees_expected[instance.name] += close.fee_minor
            carries += close.carry_minor > 0
    assert fees_expected == {"alpha": 0, "beta": 25 + 8, "gamma": 0}
    assert {name: book.fees for name, book in after_close.items()} == fees_expected
    assert carries == 5  # all but gwen's (one thing) leave a carry in the wallet

    # The late Like is counted on both sides; the undone one and the pending one nowhere.
    alpha_shares = await shares(alpha)
    gamma_shares = await shares(gamma)
    assert late.like_uri in {share.like_uri for share in alpha_shares}
    assert gil_zine.like_uri in {share.like_uri for share in gamma_shares}
    assert gwen_comic.like_uri not in {share.like_uri for share in gamma_shares}
    assert pending.like_uri not in {share.like_uri for share in alpha_shares}
    async with alpha.services.database.sessions() as session:
        still_pending = await session.get(Flattr, pending.id)
    assert still_pending is not None
    assert still_pending.status == "pending"

    # --- bilateral symmetry: statements, payables and receivables ---
    share_rows = {instance.name: await shares(instance) for instance in instances}
    for one, other in permutations(instances, 2):
        out = await statement(one, "out", other.host)
        incoming = await statement(other, "in", one.host)
        assert (out.state, incoming.state) == ("accepted", "accepted"), (one.name, other.name)
        assert out.uri == incoming.uri
        assert out.digest == incoming.digest
        owed_by_shares = sum(
            share.amount_minor for share in share_rows[one.name] if share.payee_host == other.host
        )
        assert owed_by_shares > 0
        assert out.total_minor == incoming.total_minor == owed_by_shares
        assert await owed(one, ledger.peer_payable(other.host)) == owed_by_shares
        assert await balance(other, ledger.peer_receivable(one.host)) == owed_by_shares
        lines = {line["like"] for line in incoming.document["lines"]}
        if (one, other) == (alpha, beta):
            assert late.like_uri in lines
        if (one, other) == (gamma, alpha):
            assert gil_zine.like_uri in lines
            assert gwen_comic.like_uri not in lines
        assert favourite.id not in lines

    # The favourite and the late Like: what beta's creators earn is exactly their shares.
    erin = creators["blog"][1]
    dave = creators["pod"][1]
    blog_uri = beta.actor_uri("blog", "thing")
    pod_uri = beta.actor_uri("pod", "thing")
    for creator, uri in ((erin, blog_uri), (dave, pod_uri)):
        remote = sum(
            share.amount_minor
            for name in ("alpha", "gamma")
            for share in share_rows[name]
            if share.target_uri == uri
        )
        local = sum(share.amount_minor for share in share_rows["beta"] if share.target_uri == uri)
        assert await owed(beta, ledger.earnings_pending(creator.id)) == remote
        assert await owed(beta, ledger.earnings_available(creator.id)) == local

    # --- netting: each pair's settlement is equal and opposite and nets the two statements ---
    pairs = [(alpha, beta), (alpha, gamma), (beta, gamma)]
    for one, other in pairs:
        here = await settlement(one, other.host)
        there = await settlement(other, one.host)
        out_total = (await statement(one, "out", other.host)).total_minor
        in_total = (await statement(one, "in", other.host)).total_minor
        assert (here.payable_minor, here.receivable_minor) == (out_total, in_total)
        assert (there.payable_minor, there.receivable_minor) == (in_total, out_total)
        assert here.net_minor == out_total - in_total == -there.net_minor
        assert here.net_minor != 0
        assert (here.action, there.action) == ("pay", "pay")
        assert (here.state, there.state) == ("agreed", "agreed")
        assert here.payment_reference == there.payment_reference
        assert here.document["net"] == there.document["net"]
        assert here.document["net"]["amount"] == str(abs(here.net_minor))

    # --- payment: the payer marks it paid, the payee confirms ---
    for one, other in pairs:
        cash_before = {name: book.cash for name, book in (await all_books(instances)).items()}
        here = await settlement(one, other.host)
        payer, payee = (one, other) if here.net_minor > 0 else (other, one)
        to_pay = await settlement(payer, payee.host)
        await payer.services.exchange.mark_paid(to_pay.id, f"SEPA-{payer.name}", "admin")
        await federation.step_workers()
        # In flight: the payer's cash left, the payee has not booked it yet.
        in_flight = await all_books(instances)
        assert_cash_backed(in_flight)
        net = to_pay.net_minor
        assert in_flight[payer.name].cash == cash_before[payer.name] - net
        assert in_flight[payee.name].cash == cash_before[payee.name]
        to_confirm = await settlement(payee, payer.host)
        await payee.services.exchange.confirm(to_confirm.id, "admin")
        await federation.step_workers()
        confirmed = await all_books(instances)
        assert_cash_backed(confirmed)
        assert confirmed[payee.name].cash == cash_before[payee.name] + net
        assert sum(book.cash for book in confirmed.values()) == deposits
        for row in (await settlement(payer, payee.host), await settlement(payee, payer.host)):
            assert row.state == "confirmed"

    paid = await all_books(instances)
    assert_cash_backed(paid)
    assert sum(book.cash for book in paid.values()) == deposits
    for instance in instances:
        book = paid[instance.name]
        assert (book.payables, book.receivables, book.earnings_pending) == (0, 0, 0)
        for other in instances:
            if other is not instance:
                assert await balance(instance, ledger.peer_payable(other.host)) == 0
                assert await balance(instance, ledger.peer_receivable(other.host)) == 0
        # Each instance's cash moved by exactly what the statements said, net.
        moved = 0
        for other in instances:
            if other is not instance:
                moved += (await settlement(instance, other.host)).net_minor
        assert book.cash == before_close[instance.name].cash - moved
        async with instance.services.database.sessions() as session:
            assert await check_ledger(session, "EUR") == []

    # Every creator's earnings are now available: exactly the shares for their things.
    all_shares = [share for rows in share_rows.values() for share in rows]
    for handle, (instance, creator) in creators.items():
        uri = instance.actor_uri(handle, "thing")
        expected = sum(share.amount_minor for share in all_shares if share.target_uri == uri)
        assert expected > 0, handle
        assert await owed(instance, ledger.earnings_pending(creator.id)) == 0
        assert await owed(instance, ledger.earnings_available(creator.id)) == expected
