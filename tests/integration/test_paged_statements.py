"""Statements longer than a page travel between real instances and are refused when a page lies.

alpha's 1,250 donors each flattred beta's two things in November: 2,500 Likes, so alpha's
statement to beta has three pages (1,000 + 1,000 + 500 lines). The donors, their deposits and
flattrs on alpha, and the Likes beta received, are written in bulk (sending 2,500 Likes one by
one would only test the Like path again); everything after that is the product's own code:
the close, the signed Offer, beta fetching pages 2 and 3 from alpha with signed GETs through
its SSRF-guarded client, the set-based verification, the booking and the settlement.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, insert, select, update

from flattrfed.activitypub.actors import ensure_instance_actor
from flattrfed.activitypub.delivery import enqueue_delivery
from flattrfed.activitypub.documents import AS_CONTEXT, FLATTR_TERMS
from flattrfed.db.models import (
    Flattr,
    InboundActivity,
    LocalActor,
    Member,
    ReceivedLike,
    Settlement,
    Statement,
    StatementLine,
    Thing,
    WorkItem,
)
from flattrfed.db.session import Database
from flattrfed.periods import Period
from flattrfed.settlement import ledger, proofs
from flattrfed.settlement import statements as st
from flattrfed.settlement.checks import check_ledger
from flattrfed.settlement.exchange import store_statement_lines
from flattrfed.settlement.verification import verify_statement
from tests.harness.instances import Federation, Instance

PERIOD = "2026-11"
DONORS = 1_250
BUDGET = 1_000  # each donor flattred two things: 500 each
AFTER_CLOSE = datetime(2026, 12, 2, 1, tzinfo=UTC)
DURING = datetime(2026, 11, 20, tzinfo=UTC)


@dataclass
class Scene:
    federation: Federation
    alpha: Instance
    beta: Instance
    owner: Member  # beta: owns both things
    lines: list[st.Line]
    sent: int = 0

    def statement_uri(self, revision: int) -> str:
        return st.statement_id(self.alpha.base_url, PERIOD, self.beta.host, revision)

    async def issue(
        self, revision: int, served: list[list[dict[str, str]]] | None = None, **changes: Any
    ) -> dict[str, Any]:
        """alpha's honest statement, signed by alpha and stored as issued, so alpha serves its
        pages; `served` replaces the pages alpha serves, `changes` the document's fields.

        Stored under another peer host, so alpha's exchange ignores beta's answers to it (it
        would otherwise issue an honest revision of its own at once)."""
        document, line_pages = st.build_paged_statement(
            issuer=self.alpha.url("/actor"),
            counterparty=self.beta.url("/actor"),
            statement_uri=self.statement_uri(revision),
            revision=revision,
            supersedes=None,
            period=PERIOD,
            currency="EUR",
            fee_bp=0,
            lines=self.lines,
            issued=self.federation.clock.now(),
        )
        document.update(changes)
        services = self.alpha.services
        async with services.database.transaction() as session:
            signed = proofs.sign_document(
                document, await services.exchange.proof_key(session), services.clock.now()
            )
            row = Statement(
                uri=signed["id"],
                direction="out",
                period=PERIOD,
                peer_host="test-only.invalid",
                revision=revision,
                digest=st.statement_digest(signed),
                document=signed,
                total_minor=sum(line.amount_minor for line in self.lines),
                line_count=len(self.lines),
                state="issued",
                created_at=services.clock.now(),
            )
            session.add(row)
            await session.flush()
            await store_statement_lines(session, row.id, served or line_pages)
        return signed

    async def deliver(self, document: dict[str, Any]) -> str | None:
        """Offer `document` to beta from alpha's instance actor; beta's outcome (None while it
        is to be retried)."""
        self.sent += 1
        offer_id = f"{document['id']}/offer/{self.sent}"
        alpha = self.alpha.services
        inbox = (await alpha.keys.actor(self.beta.url("/actor"))).inbox
        async with alpha.database.transaction() as session:
            actor = await ensure_instance_actor(session, alpha.urls, alpha.clock.now())
            await enqueue_delivery(
                session,
                activity={
                    "@context": [AS_CONTEXT, FLATTR_TERMS],
                    "id": offer_id,
                    "type": "Offer",
                    "actor": self.alpha.url("/actor"),
                    "to": [self.beta.url("/actor")],
                    "object": document,
                },
                actor_id=actor.id,
                inboxes=[inbox],
                now=alpha.clock.now(),
            )
        await self.federation.step_workers()
        return await self.outcome(offer_id)

    async def outcome(self, offer_id: str) -> str | None:
        async with self.beta.services.database.sessions() as session:
            row = await session.scalar(
                select(InboundActivity).where(InboundActivity.activity_uri == offer_id)
            )
        assert row is not None, "beta never received the Offer"
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
        return {entry["reason"] for entry in row.response["disputed"]}

    async def beta_money(self) -> dict[str, int]:
        async with self.beta.services.database.sessions() as session:
            return {
                "receivable": await ledger.balance(
                    session, ledger.peer_receivable(self.alpha.host)
                ),
                "owner pending": await ledger.owed_to_member(
                    session, ledger.earnings_pending(self.owner.id)
                ),
            }

    async def assert_ledgers_clean(self) -> None:
        for instance in (self.alpha, self.beta):
            async with instance.services.database.sessions() as session:
                problems = await check_ledger(session, "EUR")
            # The donors' money was posted in bulk, without a deposit request each.
            assert [p for p in problems if p.rows != ["txid=deposit:bulk"]] == []


async def _likes_of(alpha: Instance, beta: Instance, things: list[str]) -> list[st.Line]:
    """alpha's donors d0..d1249 with a budget and a deposit, and their flattrs of `things`."""
    services = alpha.services
    now = services.clock.now()
    async with services.database.transaction() as session:
        await session.execute(
            insert(Member),
            [
                {
                    "username": f"d{n}",
                    "display_name": "",
                    "bio": "",
                    "password_hash": "-",
                    "is_admin": False,
                    "flattrs_public": True,
                    "monthly_budget_minor": BUDGET,
                    "created_at": now,
                }
                for n in range(DONORS)
            ],
        )
        donors = dict(
            (await session.execute(select(Member.username, Member.id).where(Member.id > 0))).all()
        )
        await ledger.post(
            session,
            txid=ledger.deposit_txid("bulk"),
            kind="deposit",
            postings=[
                (ledger.CASH_BANK, BUDGET * DONORS),
                *((ledger.wallet(donors[f"d{n}"]), -BUDGET) for n in range(DONORS)),
            ],
            currency="EUR",
            memo="the donors' deposits",
            now=now,
        )
        lines: list[st.Line] = []
        rows = []
        for n in range(DONORS):
            for thing in things:
                like = alpha.url(f"/users/d{n}/likes/{thing.rsplit('/', 1)[1]}")
                lines.append(st.Line(like, alpha.actor_uri(f"d{n}"), thing, BUDGET // 2))
                rows.append(
                    {
                        "donor_id": donors[f"d{n}"],
                        "period": PERIOD,
                        "target_uri": thing,
                        "payee_uri": thing,
                        "payee_host": beta.host,
                        "thing_id": None,
                        "like_uri": like,
                        "status": "payable",
                        "created_at": DURING,
                    }
                )
        await session.execute(insert(Flattr), rows)
    return lines


async def _received(alpha: Instance, beta: Instance, lines: list[st.Line]) -> None:
    """What beta recorded of those Likes, as its inbox would have."""
    async with beta.services.database.transaction() as session:
        actors = dict(
            (
                await session.execute(
                    select(LocalActor.username, LocalActor.id).where(LocalActor.kind == "thing")
                )
            ).all()
        )
        await session.execute(
            insert(ReceivedLike),
            [
                {
                    "like_uri": line.like_uri,
                    "actor_uri": line.donor_uri,
                    "target_id": actors[line.object_uri.rsplit("/", 1)[1]],
                    "object_uri": line.object_uri,
                    "sender_host": alpha.host,
                    "flattr_period": PERIOD,
                    "clearing_actor": alpha.url("/actor"),
                    "received_at": DURING,
                }
                for line in lines
            ],
        )


async def build_scene(federation: Federation, *, alpha_peers_first: bool) -> Scene:
    """With `alpha_peers_first`, alpha's close sends its statement itself; otherwise alpha
    peers beta only after its close, and each test sends the statement it wants."""
    alpha = await federation.start("alpha", fee_bp=0)
    beta = await federation.start("beta", fee_bp=0)
    await beta.peer_with(alpha, credit_limit_minor=10**9)
    if alpha_peers_first:
        await alpha.peer_with(beta, credit_limit_minor=10**9)
    owner = await beta.create_member("dave")
    await beta.create_thing(owner, "pod", "Dave's podcast")
    await beta.create_thing(owner, "zine", "Dave's zine")
    things = [beta.actor_uri("pod", "thing"), beta.actor_uri("zine", "thing")]
    lines = await _likes_of(alpha, beta, things)
    await _received(alpha, beta, lines)
    async with alpha.services.database.transaction() as session:
        await alpha.services.exchange.proof_key(session)  # published in alpha's actor from now
    federation.clock.set(AFTER_CLOSE)
    await federation.step_workers()
    if not alpha_peers_first:
        await alpha.peer_with(beta, credit_limit_minor=10**9)
    return Scene(federation, alpha, beta, owner, lines)


async def test_a_statement_of_2500_lines_travels_in_three_pages_and_is_accepted(
    federation: Federation,
) -> None:
    scene = await build_scene(federation, alpha_peers_first=True)
    uri = scene.statement_uri(1)
    async with scene.alpha.services.database.sessions() as session:
        issued = await session.scalar(select(Statement).where(Statement.uri == uri))
        assert issued is not None
        assert issued.document["totals"] == {"lines": 2_500, "amount": "1250000", "pages": 3}
        assert len(issued.document["lines"]) == 1_000  # only the first page is in the Offer
        served = await session.scalar(
            select(func.count()).where(StatementLine.statement_id == issued.id)
        )
        assert served == 2_500
    row = await scene.received(uri)
    assert row is not None
    assert (row.state, row.line_count, row.total_minor) == ("accepted", 2_500, 1_250_000)
    assert issued.state in {"issued", "accepted"}
    async with scene.beta.services.database.sessions() as session:
        kept = (
            await session.execute(
                select(StatementLine.like_uri, StatementLine.page, StatementLine.amount_minor)
                .where(StatementLine.statement_id == row.id)
                .order_by(StatementLine.position)
            )
        ).all()
    assert [like for like, _page, _amount in kept] == sorted(x.like_uri for x in scene.lines)
    assert [page for _like, page, _amount in kept] == [1] * 1_000 + [2] * 1_000 + [3] * 500
    assert await scene.beta_money() == {"receivable": 1_250_000, "owner pending": 1_250_000}
    async with scene.alpha.services.database.sessions() as session:
        answered = await session.scalar(select(Statement).where(Statement.uri == uri))
        assert answered is not None
        assert answered.state == "accepted"
        settlement = await session.scalar(select(Settlement).where(Settlement.period == PERIOD))
        assert settlement is not None
        assert (settlement.net_minor, settlement.action) == (1_250_000, "pay")
    await scene.assert_ledgers_clean()


async def test_pages_are_served_only_to_the_counterparty(federation: Federation) -> None:
    scene = await build_scene(federation, alpha_peers_first=True)
    url = st.lines_url(scene.statement_uri(1)) + "?page=2"
    client = scene.beta.services.client
    # Signed by beta's instance actor: the page; unsigned: refused.
    page = await client.fetch_activitypub(
        url, signer=await scene.beta.services.keys.instance_signer()
    )
    assert page["type"] == "OrderedCollectionPage"
    assert len(page["orderedItems"]) == 1_000
    answer = await client.get(url, signer=None, accept="application/activity+json")
    assert answer.status == 401
    # A third instance, even a signed one, may not read what beta's donors... alpha's donors
    # liked on beta.
    gamma = await federation.start("gamma", fee_bp=0)
    other = await gamma.services.client.get(
        url,
        signer=await gamma.services.keys.instance_signer(),
        accept="application/activity+json",
    )
    assert other.status == 403
    missing = await client.get(
        st.lines_url(scene.statement_uri(1)) + "?page=4",
        signer=await scene.beta.services.keys.instance_signer(),
        accept="application/activity+json",
    )
    assert missing.status == 404


@pytest.fixture
async def scene(federation: Federation) -> Scene:
    return await build_scene(federation, alpha_peers_first=False)


async def test_tampered_pages_are_refused_and_move_no_money(scene: Scene) -> None:
    ordered = sorted(scene.lines, key=lambda line: line.like_uri)
    honest = [[st.line_document(x) for x in ordered[i : i + 1_000]] for i in (0, 1_000, 2_000)]

    # r1: an amount on page 2 raised (the signed header is honest, the served page is not).
    changed = [list(page) for page in honest]
    changed[1] = [dict(line) for line in changed[1]]
    changed[1][5]["amount"] = "900"
    first = await scene.issue(1, changed)
    assert await scene.deliver(first) == "statement rejected"
    # The donor's two lines now differ too.
    assert await scene.reasons(first["id"]) == {st.SHARE_INCONSISTENT, st.TOTAL_MISMATCH}

    # r2: a line dropped from page 3.
    dropped = [honest[0], honest[1], honest[2][:-1]]
    second = await scene.issue(2, dropped)
    assert await scene.deliver(second) == "statement rejected"
    assert await scene.reasons(second["id"]) == {st.TOTAL_MISMATCH, st.LIKE_NOT_IN_STATEMENT}
    row = await scene.received(second["id"])
    assert row is not None
    assert row.response is not None
    missing = [d["like"] for d in row.response["disputed"] if d["reason"] != st.TOTAL_MISMATCH]
    assert missing == [honest[2][-1]["like"]]

    # r3: a line of page 3 served twice.
    doubled = [honest[0], honest[1], [*honest[2][:8], honest[2][7], *honest[2][8:]]]
    third = await scene.issue(3, doubled)
    assert await scene.deliver(third) == "statement rejected"
    assert await scene.reasons(third["id"]) == {st.DUPLICATE_LINE, st.TOTAL_MISMATCH}

    # r4: pages said to be on another origin (beta's own, here): not fetched, not stored.
    elsewhere = await scene.issue(4, linePages=scene.beta.url("/settlement/lines"))
    outcome = await scene.deliver(elsewhere)
    assert outcome == "ignored: statement pages: linePages is not on the issuer's origin"
    assert await scene.received(elsewhere["id"]) is None

    assert await scene.beta_money() == {"receivable": 0, "owner pending": 0}
    async with scene.beta.services.database.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(StatementLine)) == 0
    await scene.assert_ledgers_clean()


async def test_a_missing_page_means_retry_later_then_acceptance(scene: Scene) -> None:
    # alpha serves pages 1 and 2 only: page 3 answers 404.
    ordered = sorted(scene.lines, key=lambda line: line.like_uri)
    honest = [[st.line_document(x) for x in ordered[i : i + 1_000]] for i in (0, 1_000, 2_000)]
    document = await scene.issue(1, honest[:2])
    assert await scene.deliver(document) is None  # to be retried: nothing decided, nothing kept
    assert await scene.received(document["id"]) is None
    assert await scene.beta_money() == {"receivable": 0, "owner pending": 0}
    async with scene.beta.services.database.sessions() as session:
        waiting = (await session.scalars(select(WorkItem).where(WorkItem.state == "pending"))).all()
    retried = [row for row in waiting if "statement pages" in (row.last_error or "")]
    assert len(retried) == 1
    assert "page 3" in (retried[0].last_error or "")
    assert retried[0].run_after >= scene.federation.clock.now() + timedelta(minutes=59)

    # alpha's missing page is back; an hour later beta tries again and accepts in full.
    async with scene.alpha.services.database.transaction() as session:
        statement = await session.scalar(select(Statement).where(Statement.uri == document["id"]))
        assert statement is not None
        await session.execute(
            delete(StatementLine).where(StatementLine.statement_id == statement.id)
        )
        await store_statement_lines(session, statement.id, honest)
    scene.federation.clock.advance(timedelta(hours=1, minutes=1))
    await scene.federation.step_workers()
    row = await scene.received(document["id"])
    assert row is not None
    assert row.state == "accepted"
    assert await scene.beta_money() == {"receivable": 1_250_000, "owner pending": 1_250_000}
    await scene.assert_ledgers_clean()


async def test_a_bad_page_shape_is_retried_and_never_half_accepted(scene: Scene) -> None:
    ordered = sorted(scene.lines, key=lambda line: line.like_uri)
    honest = [[st.line_document(x) for x in ordered[i : i + 1_000]] for i in (0, 1_000, 2_000)]
    document = await scene.issue(1, honest)
    async with scene.alpha.services.database.transaction() as session:
        # Page 2 grows past a page's 1,000 lines: the receiver must not take it.
        statement = await session.scalar(select(Statement).where(Statement.uri == document["id"]))
        assert statement is not None
        await session.execute(
            update(StatementLine)
            .where(StatementLine.statement_id == statement.id, StatementLine.page == 3)
            .values(page=2)
        )
    assert await scene.deliver(document) is None
    assert await scene.received(document["id"]) is None
    assert await scene.beta_money() == {"receivable": 0, "owner pending": 0}


# --- the set-based verification agrees with the in-memory rules ------------------------------

PEER = "peer.example"
THING_URI = "https://here.example/things/t"


def _peer_lines(count: int) -> list[st.Line]:
    return [
        st.Line(
            f"https://{PEER}/likes/{n:05d}",
            f"https://{PEER}/users/d{n // 3}",
            THING_URI,
            100 + n // 3,
        )
        for n in range(count)
    ]


def _with_phantom(lines: list[st.Line]) -> list[st.Line]:
    phantom = st.Line(f"https://{PEER}/likes/zz", lines[0].donor_uri, THING_URI, 100)
    return [*lines, phantom]


def _mutations() -> dict[str, Any]:
    """How a case changes (the statement's lines, beta's received Likes, the served pages)."""

    def line(n: int, **changes: Any) -> Any:
        def apply(lines: list[st.Line]) -> list[st.Line]:
            lines = list(lines)
            fields = {**lines[n].__dict__, **changes}
            lines[n] = st.Line(**fields)
            return lines

        return apply

    return {
        "honest": {},
        "phantom": {"lines": _with_phantom},
        "wrong donor": {"lines": line(4, donor_uri=f"https://{PEER}/users/d9")},
        "other object": {"lines": line(2, object_uri=THING_URI + "x")},
        "uneven share": {"lines": line(1, amount_minor=5)},
        "missing like": {"lines": lambda x: x[:-1]},
        "undone": {"likes": {7: {"undone_at": DURING}}},
        "late": {"likes": {8: {"received_at": datetime(2026, 12, 1, 12, tzinfo=UTC)}}},
        "other month": {"likes": {9: {"flattr_period": "2026-10"}}},
        "other sender": {"likes": {10: {"sender_host": "else.example"}}},
        "duplicate": {"pages": lambda p: [[*p[0][:3], p[0][2], *p[0][3:]]]},
        "bad id": {"pages": lambda p: [[{**p[0][0], "line": "sha256:" + "0" * 64}, *p[0][1:]]]},
        "changed amount": {"pages": lambda p: [[{**p[0][0], "amount": "1"}, *p[0][1:]]]},
    }


@pytest.mark.parametrize("case", list(_mutations()))
async def test_the_sql_verification_agrees_with_the_reference_rules(
    database: Database, case: str
) -> None:
    change = _mutations()[case]
    received = _peer_lines(30)
    async with database.transaction() as session:
        await session.execute(
            insert(Member),
            [
                {
                    "id": 1,
                    "username": "owner",
                    "display_name": "",
                    "bio": "",
                    "password_hash": "-",
                    "is_admin": False,
                    "flattrs_public": True,
                    "created_at": DURING,
                }
            ],
        )
        await session.execute(
            insert(Thing),
            [
                {
                    "id": 1,
                    "owner_id": 1,
                    "title": "T",
                    "description": "",
                    "category": "other",
                    "tags": [],
                    "hidden": False,
                    "created_at": DURING,
                }
            ],
        )
        await session.execute(
            insert(LocalActor),
            [{"id": 1, "kind": "thing", "username": "t", "thing_id": 1, "created_at": DURING}],
        )
        rows = []
        for n, line in enumerate(received):
            row = {
                "like_uri": line.like_uri,
                "actor_uri": line.donor_uri,
                "target_id": 1,
                "object_uri": THING_URI,
                "sender_host": PEER,
                "flattr_period": PERIOD,
                "clearing_actor": f"https://{PEER}/actor",
                "received_at": DURING,
                "undone_at": None,
            }
            row.update(change.get("likes", {}).get(n, {}))
            rows.append(row)
        await session.execute(insert(ReceivedLike), rows)
    lines = change.get("lines", lambda x: x)(received)
    document, pages = st.build_paged_statement(
        issuer=f"https://{PEER}/actor",
        counterparty="https://here.example/actor",
        statement_uri=st.statement_id(f"https://{PEER}", PERIOD, "here.example", 1),
        revision=1,
        supersedes=None,
        period=PERIOD,
        currency="EUR",
        fee_bp=0,
        lines=lines,
        issued=AFTER_CLOSE,
    )
    pages = change.get("pages", lambda p: p)(pages)
    cutoff = Period.parse(PERIOD).end + timedelta(hours=1)
    async with database.sessions() as session:
        likes = (await session.scalars(select(ReceivedLike))).all()
    reference = st.verify_lines(
        document,
        currency="EUR",
        period=PERIOD,
        cutoff=cutoff,
        received={
            like.like_uri: st.ReceivedFlattr(
                like.like_uri,
                like.actor_uri,
                like.object_uri,
                like.flattr_period,
                like.received_at,
                like.undone_at,
                True,
            )
            for like in likes
            if like.sender_host == PEER
        },
        expected_from_issuer=[
            like.like_uri
            for like in likes
            if like.sender_host == PEER
            and like.flattr_period == PERIOD
            and like.received_at < cutoff
            and (like.undone_at is None or like.undone_at >= cutoff)
        ],
        pages=pages,
    )
    verdict = await verify_statement(
        database, document, pages, currency="EUR", period=PERIOD, cutoff=cutoff, sender_host=PEER
    )
    assert sorted(verdict.disputes, key=repr) == sorted(reference.disputes, key=repr)
    assert (verdict.accepted, verdict.accepted_minor) == (
        reference.accepted,
        reference.accepted_minor,
    )
    assert verdict.accepted == (case in {"honest", "missing like"})
