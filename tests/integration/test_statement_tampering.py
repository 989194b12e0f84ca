"""Tampered settlement statements are refused for the right reason and move no money.

alpha (the issuer) and beta (the receiver) are peered; November is closed on both. alpha owes
beta for three Likes: ann's of pod and blog (her share q = 500 each) and bob's of pod (300).
alpha's own statement is not sent at the close (alpha peers beta only after it), so each test
can send beta exactly the statement it wants: built with `statements.build_statement`, signed
with alpha's proof key and queued in alpha's outbox as an `Offer` from alpha's instance actor,
so alpha's worker signs the HTTP request and delivers it to beta's inbox as the issuer would.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import select

from flattrfed.activitypub.actors import ensure_instance_actor
from flattrfed.activitypub.delivery import enqueue_delivery
from flattrfed.activitypub.documents import AS_CONTEXT, FLATTR_TERMS
from flattrfed.db.models import InboundActivity, Member, ReceivedLike, Share, Statement
from flattrfed.flattring.flattrs import flattr
from flattrfed.flattring.peers import add_peer, discover_peer
from flattrfed.flattring.resolve import resolve_target
from flattrfed.flattring.wallets import record_deposit
from flattrfed.money import Money
from flattrfed.periods import Period
from flattrfed.settlement import ledger, proofs
from flattrfed.settlement import statements as st
from flattrfed.settlement.checks import check_ledger
from tests.harness.instances import Federation, Instance

PERIOD = "2026-11"
AFTER_CLOSE = datetime(2026, 12, 2, 1, tzinfo=UTC)


@dataclass
class Scene:
    federation: Federation
    alpha: Instance
    beta: Instance
    dave: Member  # beta: owns pod
    erin: Member  # beta: owns blog
    lines: list[st.Line]  # what alpha really owes beta for November
    sent: int = 0

    @property
    def issuer(self) -> str:
        return self.alpha.url("/actor")

    @property
    def counterparty(self) -> str:
        return self.beta.url("/actor")

    def statement_uri(self, revision: int, period: str = PERIOD) -> str:
        return st.statement_id(self.alpha.base_url, period, self.beta.host, revision)

    def build(
        self, lines: list[st.Line], *, revision: int = 1, period: str = PERIOD
    ) -> dict[str, Any]:
        return st.build_statement(
            issuer=self.issuer,
            counterparty=self.counterparty,
            statement_uri=self.statement_uri(revision, period),
            revision=revision,
            supersedes=self.statement_uri(revision - 1, period) if revision > 1 else None,
            period=period,
            currency="EUR",
            fee_bp=0,
            lines=lines,
            issued=self.federation.clock.now(),
        )

    async def sign(self, document: dict[str, Any]) -> dict[str, Any]:
        """Signed with alpha's own proof key, as `exchange._issue_one` signs."""
        async with self.alpha.services.database.transaction() as session:
            key = await self.alpha.services.exchange.proof_key(session)
        return proofs.sign_document(document, key, self.federation.clock.now())

    async def deliver(self, document: dict[str, Any]) -> str:
        """Offer `document` to beta from alpha's instance actor; beta's outcome for it."""
        self.sent += 1
        offer_id = f"{document['id']}/offer/{self.sent}"  # a fresh activity id every time
        alpha = self.alpha.services
        inbox = (await alpha.keys.actor(self.counterparty)).inbox
        async with alpha.database.transaction() as session:
            actor = await ensure_instance_actor(session, alpha.urls, alpha.clock.now())
            await enqueue_delivery(
                session,
                activity={
                    "@context": [AS_CONTEXT, FLATTR_TERMS],
                    "id": offer_id,
                    "type": "Offer",
                    "actor": self.issuer,
                    "to": [self.counterparty],
                    "object": document,
                },
                actor_id=actor.id,
                inboxes=[inbox],
                now=alpha.clock.now(),
            )
        await self.federation.step_workers()
        async with self.beta.services.database.sessions() as session:
            row = await session.scalar(
                select(InboundActivity).where(InboundActivity.activity_uri == offer_id)
            )
        assert row is not None, "beta never received the Offer"
        assert row.outcome is not None
        return row.outcome

    async def received(self, uri: str) -> Statement | None:
        async with self.beta.services.database.sessions() as session:
            return await session.scalar(
                select(Statement).where(Statement.uri == uri, Statement.direction == "in")
            )

    async def reasons(self, uri: str) -> set[str]:
        row = await self.received(uri)
        assert row is not None
        assert row.state == "rejected"
        assert row.response is not None
        assert row.response["status"] == "rejected"
        assert row.response["acceptedAmount"] == "0"
        return {entry["reason"] for entry in row.response["disputed"]}

    async def beta_money(self) -> dict[str, int]:
        """What a statement from alpha could move on beta's ledger."""
        async with self.beta.services.database.sessions() as session:
            return {
                "receivable": await ledger.balance(
                    session, ledger.peer_receivable(self.alpha.host)
                ),
                "payable": await ledger.balance(session, ledger.peer_payable(self.alpha.host)),
                "dave pending": await ledger.owed_to_member(
                    session, ledger.earnings_pending(self.dave.id)
                ),
                "erin pending": await ledger.owed_to_member(
                    session, ledger.earnings_pending(self.erin.id)
                ),
                "cash": await ledger.balance(session, ledger.CASH_BANK),
            }

    async def assert_no_money_moved(self) -> None:
        assert await self.beta_money() == {
            "receivable": 0,
            "payable": 0,
            "dave pending": 0,
            "erin pending": 0,
            "cash": 0,
        }
        await self.assert_ledgers_clean()
        async with self.alpha.services.database.sessions() as session:
            # alpha's payable is what its close booked, untouched by any answer of beta's.
            assert await ledger.owed_to_member(session, ledger.peer_payable(self.beta.host)) == (
                sum(line.amount_minor for line in self.lines)
            )

    async def assert_ledgers_clean(self) -> None:
        for instance in (self.alpha, self.beta):
            async with instance.services.database.sessions() as session:
                assert await check_ledger(session, "EUR") == []


async def _peer(one: Instance, other: Instance) -> None:
    services = one.services
    actor, currency = await discover_peer(
        services.nodeinfo, other.host, services.settings.currency, services.clock.now()
    )
    async with services.database.transaction() as session:
        await add_peer(
            session,
            host=other.host,
            clearing_actor=actor,
            currency=currency,
            credit_limit_minor=1_000_000,
            now=services.clock.now(),
        )


async def _donor(instance: Instance, name: str, budget: int) -> Member:
    member = await instance.create_member(name)
    async with instance.services.database.transaction() as session:
        row = await session.get(Member, member.id)
        assert row is not None
        row.monthly_budget_minor = budget
        await record_deposit(
            session,
            member=row,
            amount=Money(budget, "EUR"),
            bank_reference=f"{name}-1",
            currency="EUR",
            now=instance.services.clock.now(),
        )
    return member


async def _click(instance: Instance, member: Member, text: str) -> None:
    services = instance.services
    target = await resolve_target(services, text)
    async with services.database.transaction() as session:
        row = await session.get(Member, member.id)
        assert row is not None
        await flattr(session, services.urls, row, target, services.clock.now())


async def build_scene(federation: Federation, *, too_late: bool = False) -> Scene:
    """The closed November; with `too_late`, carl's Like of blog, clicked a minute before
    midnight, reaches beta only after cutoff + grace (alpha counts it, beta cannot)."""
    alpha = await federation.start("alpha", fee_bp=0)
    beta = await federation.start("beta", fee_bp=0)
    await _peer(beta, alpha)  # alpha peers beta only after its close: it sends nothing itself
    dave = await beta.create_member("dave")
    await beta.create_thing(dave, "pod", "Dave's podcast")
    erin = await beta.create_member("erin")
    await beta.create_thing(erin, "blog", "Erin's blog")
    ann = await _donor(alpha, "ann", 1000)  # two things: 500 each
    bob = await _donor(alpha, "bob", 300)  # one thing: 300
    await _click(alpha, ann, f"@pod@{beta.host}")
    await _click(alpha, ann, f"@blog@{beta.host}")
    await _click(alpha, bob, f"@pod@{beta.host}")
    await federation.step_workers()
    if too_late:
        carl = await _donor(alpha, "carl", 200)
        federation.clock.set(datetime(2026, 11, 30, 23, 59, tzinfo=UTC))
        await _click(alpha, carl, f"@blog@{beta.host}")

    federation.clock.set(AFTER_CLOSE)
    await federation.step_workers()  # both close November; alpha has no peer to send to
    await _peer(alpha, beta)
    async with alpha.services.database.sessions() as session:
        rows = (
            await session.execute(
                select(Share, Member.username)
                .join(Member, Member.id == Share.donor_id)
                .where(Share.payee_host == beta.host)
                .order_by(Share.like_uri)
            )
        ).all()
        outgoing = await session.scalars(select(Statement).where(Statement.direction == "out"))
        assert outgoing.all() == []
    lines = [
        st.Line(share.like_uri, alpha.actor_uri(name), share.target_uri, share.amount_minor)
        for share, name in rows
    ]
    owed = [300, 500, 500] if not too_late else [200, 300, 500, 500]
    assert sorted(line.amount_minor for line in lines) == owed
    async with alpha.services.database.transaction() as session:
        await alpha.services.exchange.proof_key(session)  # published in alpha's actor from now
    result = Scene(federation, alpha, beta, dave, erin, lines)
    await result.assert_no_money_moved()
    return result


@pytest.fixture
async def scene(federation: Federation) -> Scene:
    return await build_scene(federation)


def _inflated(lines: list[st.Line], donor: str, amount: int) -> list[st.Line]:
    """`lines` with the first line of `donor` raised to `amount`."""
    out, done = [], False
    for line in lines:
        if line.donor_uri == donor and not done:
            line = st.Line(line.like_uri, line.donor_uri, line.object_uri, amount)
            done = True
        out.append(line)
    assert done
    return out


# --- (a) inflated lines -------------------------------------------------------------------------


async def test_inflated_lines_are_rejected_with_the_right_reason(scene: Scene) -> None:
    ann, bob = scene.alpha.actor_uri("ann"), scene.alpha.actor_uri("bob")

    # r1, built consistently (totals and digest match): ann's two unequal lines give it away.
    first = await scene.sign(scene.build(_inflated(scene.lines, ann, 900), revision=1))
    assert await scene.deliver(first) == "statement rejected"
    assert await scene.reasons(first["id"]) == {st.SHARE_INCONSISTENT}
    row = await scene.received(first["id"])
    assert row is not None
    disputed = {entry["like"] for entry in (row.response or {})["disputed"]}
    assert disputed == {line.like_uri for line in scene.lines if line.donor_uri == ann}

    # r2, bob's only line raised after building: the signed totals and digest disagree.
    second = scene.build(scene.lines, revision=2)
    (line,) = [line for line in second["lines"] if line["donor"] == bob]
    line["amount"] = "3000"
    second = await scene.sign(second)
    assert await scene.deliver(second) == "statement rejected"
    assert await scene.reasons(second["id"]) == {st.TOTAL_MISMATCH}

    # r3, bob's line raised by 200 and offset by a made-up line of -200: the total beta
    # expects, but a statement never owes money backwards.
    lines = _inflated(scene.lines, bob, 500)
    lines.append(st.Line(f"{bob}/flattrs/00000000c0ffee00", bob, lines[0].object_uri, -200))
    third = await scene.sign(scene.build(lines, revision=3))
    assert third["totals"]["amount"] == "1300"
    assert await scene.deliver(third) == "statement rejected"
    (reason,) = await scene.reasons(third["id"])
    assert reason.startswith("UNREADABLE:")

    await scene.assert_no_money_moved()


# --- (b) a phantom Like -------------------------------------------------------------------------


async def test_a_phantom_like_is_rejected_as_not_received(scene: Scene) -> None:
    bob = scene.alpha.actor_uri("bob")
    phantom = st.Line(
        f"{bob}/flattrs/00000000deadbeef", bob, scene.beta.actor_uri("blog", "thing"), 300
    )
    document = await scene.sign(scene.build([*scene.lines, phantom]))
    assert await scene.deliver(document) == "statement rejected"
    row = await scene.received(document["id"])
    assert row is not None
    assert await scene.reasons(document["id"]) == {st.LIKE_NOT_RECEIVED}
    assert [(d["reason"], d["like"]) for d in (row.response or {})["disputed"]] == [
        (st.LIKE_NOT_RECEIVED, phantom.like_uri)
    ]
    await scene.assert_no_money_moved()


# --- (c) wrong signatures -----------------------------------------------------------------------


async def test_statements_with_a_wrong_proof_are_ignored_and_not_stored(scene: Scene) -> None:
    genuine = scene.build(scene.lines)
    now = scene.federation.clock.now()
    # 1. Signed by another key that claims to be alpha's.
    impostor = proofs.ProofKey(f"{scene.issuer}#ed25519-key", proofs.generate_ed25519_key())
    forged = proofs.sign_document(genuine, impostor, now)
    assert await scene.deliver(forged) == "ignored: statement proof does not verify: mismatch"
    # 2. Signed by alpha, then a line raised (the proof no longer covers the content).
    edited = await scene.sign(genuine)
    edited["lines"][0]["amount"] = str(int(edited["lines"][0]["amount"]) + 100)
    edited["totals"]["amount"] = str(int(edited["totals"]["amount"]) + 100)
    assert await scene.deliver(edited) == "ignored: statement proof does not verify: mismatch"
    # 3. Signed with a key of another actor (beta's own proof key, as it happens).
    async with scene.beta.services.database.transaction() as session:
        beta_key = await scene.beta.services.exchange.proof_key(session)
    other = proofs.sign_document(genuine, beta_key, now)
    assert await scene.deliver(other) == "ignored: statement proof does not verify: unknown_key"
    # 4. No proof at all.
    assert await scene.deliver(genuine) == "ignored: statement proof does not verify: missing"

    assert await scene.received(genuine["id"]) is None
    async with scene.beta.services.database.sessions() as session:
        stored = await session.scalars(select(Statement).where(Statement.direction == "in"))
        assert stored.all() == []  # nothing stored, let alone accepted
    await scene.assert_no_money_moved()

    # The forgeries spoiled nothing: alpha's own statement under the same id is accepted.
    assert await scene.alpha.services.exchange.issue_statements(Period.parse(PERIOD)) == [
        genuine["id"]
    ]
    await scene.federation.step_workers()
    row = await scene.received(genuine["id"])
    assert row is not None
    assert row.state == "accepted"
    assert (await scene.beta_money())["receivable"] == 1300
    await scene.assert_ledgers_clean()


# --- (d) equivocation and replays ---------------------------------------------------------------


async def test_the_same_statement_id_with_other_content_is_equivocation(scene: Scene) -> None:
    issued = await scene.alpha.services.exchange.issue_statements(Period.parse(PERIOD))
    assert issued == [scene.statement_uri(1)]
    await scene.federation.step_workers()
    accepted = await scene.received(scene.statement_uri(1))
    assert accepted is not None
    assert accepted.state == "accepted"
    settled = await scene.beta_money()
    assert settled["receivable"] == 1300
    assert (settled["dave pending"], settled["erin pending"]) == (800, 500)

    # r1 again, with bob's line dropped and signed properly by alpha: equivocation.
    bob = scene.alpha.actor_uri("bob")
    other = await scene.sign(scene.build([x for x in scene.lines if x.donor_uri != bob]))
    assert other["id"] == accepted.uri
    assert await scene.deliver(other) == "ignored: equivocation (same statement id, other content)"
    # r1 replayed exactly as alpha sent it: a duplicate, changing nothing.
    assert await scene.deliver(accepted.document) == "ignored: statement already received"

    kept = await scene.received(scene.statement_uri(1))
    assert kept is not None
    assert (kept.state, kept.digest, kept.total_minor) == ("accepted", accepted.digest, 1300)
    assert await scene.beta_money() == settled
    await scene.assert_ledgers_clean()


async def test_a_rejected_statement_cannot_be_swapped_for_other_content(scene: Scene) -> None:
    bob = scene.alpha.actor_uri("bob")
    phantom = st.Line(f"{bob}/flattrs/00000000feedface", bob, scene.lines[0].object_uri, 300)
    first = await scene.sign(scene.build([*scene.lines, phantom]))
    assert await scene.deliver(first) == "statement rejected"
    # The same id, now without the phantom: still the id of the rejected statement.
    second = await scene.sign(scene.build(scene.lines))
    assert second["id"] == first["id"]
    assert await scene.deliver(second) == (
        "ignored: equivocation (same statement id, other content)"
    )
    row = await scene.received(first["id"])
    assert row is not None
    assert (row.state, row.digest) == ("rejected", st.statement_digest(first))
    await scene.assert_no_money_moved()


@pytest.mark.parametrize(("first", "second"), [(1, 2), (2, 1)], ids=["newer", "older"])
async def test_a_revision_repeating_accepted_lines_is_not_booked_twice(
    scene: Scene, first: int, second: int
) -> None:
    accepted = await scene.sign(scene.build(scene.lines, revision=first))
    assert await scene.deliver(accepted) == "statement accepted"
    settled = await scene.beta_money()
    assert settled["receivable"] == 1300

    # Another revision with the very same lines (a newer one, or an older one replayed after
    # the newer was accepted): the Likes are paid for once, the month is booked once.
    again = await scene.sign(scene.build(scene.lines, revision=second))
    assert await scene.deliver(again) == (
        f"ignored: {accepted['id']} was already accepted for {PERIOD}"
    )
    assert await scene.received(again["id"]) is None
    assert await scene.beta_money() == settled
    await scene.assert_ledgers_clean()


# --- (e) out of period --------------------------------------------------------------------------


async def test_likes_of_another_period_are_out_of_period(scene: Scene) -> None:
    # November's Likes billed as October's: every line is out of period.
    october = await scene.sign(scene.build(scene.lines, period="2026-10"))
    assert await scene.deliver(october) == "statement rejected"
    row = await scene.received(october["id"])
    assert row is not None
    assert row.period == "2026-10"
    assert await scene.reasons(october["id"]) == {st.OUT_OF_PERIOD}
    disputed = [entry["like"] for entry in (row.response or {})["disputed"]]
    assert sorted(disputed) == sorted(line.like_uri for line in scene.lines)

    # ...or as December's, a month that has not even ended: not looked at, not stored.
    december = await scene.sign(scene.build(scene.lines, period="2026-12"))
    assert await scene.deliver(december) == "ignored: a statement for a month that has not ended"
    assert await scene.received(december["id"]) is None
    await scene.assert_no_money_moved()


async def test_a_like_received_after_cutoff_and_grace_is_out_of_period(
    federation: Federation,
) -> None:
    scene = await build_scene(federation, too_late=True)
    carl = scene.alpha.actor_uri("carl")
    (late,) = [line for line in scene.lines if line.donor_uri == carl]
    async with scene.beta.services.database.sessions() as session:
        received = await session.scalar(
            select(ReceivedLike).where(ReceivedLike.like_uri == late.like_uri)
        )
    assert received is not None
    assert received.flattr_period == PERIOD  # a November flattr...
    assert received.received_at == AFTER_CLOSE  # ...that arrived after cutoff + grace

    document = await scene.sign(scene.build(scene.lines))
    assert await scene.deliver(document) == "statement rejected"
    row = await scene.received(document["id"])
    assert row is not None
    assert [(d["reason"], d["like"]) for d in (row.response or {})["disputed"]] == [
        (st.OUT_OF_PERIOD, late.like_uri)
    ]
    await scene.assert_no_money_moved()
