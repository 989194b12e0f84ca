"""Two peered instances close a month, exchange signed statements, net them, pay and confirm."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from flattrfed.db.models import Settlement, Statement
from flattrfed.settlement import ledger
from flattrfed.settlement.checks import check_ledger
from tests.harness.instances import Federation, Instance


async def settlements(instance: Instance, period: str) -> list[Settlement]:
    async with instance.services.database.sessions() as session:
        rows = await session.scalars(select(Settlement).where(Settlement.period == period))
        return list(rows.all())


async def test_statements_are_exchanged_netted_paid_and_confirmed(federation: Federation) -> None:
    alpha = await federation.start("alpha", fee_bp=0)
    beta = await federation.start("beta", fee_bp=0)
    await alpha.peer_with(beta)
    await beta.peer_with(alpha)
    carol = await alpha.create_member("carol")
    await alpha.create_thing(carol, "zine", "Carol's zine")
    dave = await beta.create_member("dave")
    await beta.create_thing(dave, "pod", "Dave's podcast")
    ann = await alpha.create_donor("ann", budget=1000, deposit=2000)  # 2 things: 500 each
    bob = await beta.create_donor("bob", budget=300, deposit=300)  # 1 thing: 300
    await alpha.flattr(ann, f"@pod@{beta.host}")
    await alpha.flattr(ann, f"@zine@{alpha.host}")
    await beta.flattr(bob, f"@zine@{alpha.host}")
    await federation.step_workers()

    federation.clock.set(datetime(2026, 12, 2, 1, tzinfo=UTC))
    await federation.step_workers()

    for instance in (alpha, beta):
        async with instance.services.database.sessions() as session:
            states = {
                (row.direction, row.period): row.state
                for row in (await session.scalars(select(Statement))).all()
            }
        assert states[("out", "2026-11")] == "accepted"
        assert states[("in", "2026-11")] == "accepted"

    (at_alpha,) = await settlements(alpha, "2026-11")
    (at_beta,) = await settlements(beta, "2026-11")
    # alpha owes beta 500 (ann → pod); beta owes alpha 300 (bob → zine): alpha pays 200.
    assert (at_alpha.payable_minor, at_alpha.receivable_minor, at_alpha.net_minor) == (
        500,
        300,
        200,
    )
    assert (at_beta.payable_minor, at_beta.receivable_minor, at_beta.net_minor) == (300, 500, -200)
    assert at_alpha.payment_reference == at_beta.payment_reference
    assert at_alpha.document["net"] == at_beta.document["net"]

    async with beta.services.database.sessions() as session:
        assert await ledger.owed_to_member(session, ledger.earnings_pending(dave.id)) == 500
        assert await ledger.owed_to_member(session, ledger.earnings_available(dave.id)) == 0

    await alpha.services.exchange.mark_paid(at_alpha.id, "SEPA-123", "alice-admin")
    await federation.step_workers()
    await beta.services.exchange.confirm(at_beta.id, "bea-admin")
    await federation.step_workers()

    (at_alpha,) = await settlements(alpha, "2026-11")
    (at_beta,) = await settlements(beta, "2026-11")
    assert (at_alpha.state, at_beta.state) == ("confirmed", "confirmed")
    async with beta.services.database.sessions() as session:
        assert await ledger.owed_to_member(session, ledger.earnings_available(dave.id)) == 500
        assert await ledger.balance(session, ledger.peer_receivable(alpha.host)) == 0
        assert await ledger.balance(session, ledger.peer_payable(alpha.host)) == 0
        assert await check_ledger(session, "EUR") == []
    async with alpha.services.database.sessions() as session:
        assert (
            await ledger.owed_to_member(session, ledger.earnings_available(carol.id)) == 500 + 300
        )
        assert await ledger.balance(session, ledger.peer_payable(beta.host)) == 0
        # Cash: ann's 2000 in, 200 out to beta.
        assert await ledger.balance(session, ledger.CASH_BANK) == 2000 - 200
        assert await check_ledger(session, "EUR") == []
    async with beta.services.database.sessions() as session:
        assert await ledger.balance(session, ledger.CASH_BANK) == 300 + 200


async def test_a_statement_from_an_unpeered_instance_waits_for_peering(
    federation: Federation,
) -> None:
    alpha = await federation.start("alpha", fee_bp=0)
    beta = await federation.start("beta", fee_bp=0)
    await alpha.peer_with(beta)  # beta has not peered alpha yet
    dave = await beta.create_member("dave")
    await beta.create_thing(dave, "pod", "Dave's podcast")
    ann = await alpha.create_donor("ann", budget=400, deposit=400)
    await alpha.flattr(ann, f"@pod@{beta.host}")
    await federation.step_workers()
    federation.clock.set(datetime(2026, 12, 2, 1, tzinfo=UTC))
    await federation.step_workers()

    async with beta.services.database.sessions() as session:
        assert (await session.scalars(select(Statement))).all() == []
        assert await ledger.owed_to_member(session, ledger.earnings_pending(dave.id)) == 0

    await beta.peer_with(alpha)
    outcomes = await beta.services.exchange.process_waiting(alpha.host)
    assert outcomes == ["statement accepted", "statement accepted"]  # October (empty), November
    await federation.step_workers()
    async with beta.services.database.sessions() as session:
        assert await ledger.owed_to_member(session, ledger.earnings_pending(dave.id)) == 400
    async with alpha.services.database.sessions() as session:
        out = await session.scalar(
            select(Statement).where(Statement.direction == "out", Statement.period == "2026-11")
        )
        assert out is not None
        assert out.state == "accepted"


async def test_over_the_credit_limit_the_lines_are_rejected_and_the_donors_repaid(
    federation: Federation,
) -> None:
    alpha = await federation.start("alpha", fee_bp=0)
    beta = await federation.start("beta", fee_bp=0)
    await alpha.peer_with(beta)
    await beta.peer_with(alpha, credit_limit_minor=100)
    dave = await beta.create_member("dave")
    await beta.create_thing(dave, "pod", "Dave's podcast")
    ann = await alpha.create_donor("ann", budget=400, deposit=400)
    await alpha.flattr(ann, f"@pod@{beta.host}")
    await federation.step_workers()
    federation.clock.set(datetime(2026, 12, 2, 1, tzinfo=UTC))
    await federation.step_workers()

    async with alpha.services.database.sessions() as session:
        rows = (
            await session.scalars(
                select(Statement)
                .where(Statement.direction == "out", Statement.period == "2026-11")
                .order_by(Statement.revision)
            )
        ).all()
        assert [(row.revision, row.state, row.line_count) for row in rows] == [
            (1, "rejected", 1),
            (2, "accepted", 0),
        ]
        assert rows[0].response is not None
        assert {d["reason"] for d in rows[0].response["disputed"]} == {"CREDIT_LIMIT_EXCEEDED"}
        # ann's share came back: the close took 400, the dispute returned it.
        assert await ledger.owed_to_member(session, ledger.wallet(ann.id)) == 400
        assert await ledger.balance(session, ledger.peer_payable(beta.host)) == 0
        assert await check_ledger(session, "EUR") == []
    async with beta.services.database.sessions() as session:
        assert await ledger.owed_to_member(session, ledger.earnings_pending(dave.id)) == 0
        assert await check_ledger(session, "EUR") == []


async def test_a_net_below_the_threshold_carries_into_next_month(federation: Federation) -> None:
    alpha = await federation.start("alpha", fee_bp=0, settlement_threshold_minor=500)
    beta = await federation.start("beta", fee_bp=0, settlement_threshold_minor=100)
    await alpha.peer_with(beta)
    await beta.peer_with(alpha)
    dave = await beta.create_member("dave")
    await beta.create_thing(dave, "pod", "Dave's podcast")
    ann = await alpha.create_donor("ann", budget=300, deposit=1000)
    await alpha.flattr(ann, f"@pod@{beta.host}")
    await federation.step_workers()
    federation.clock.set(datetime(2026, 12, 2, 1, tzinfo=UTC))
    await federation.step_workers()

    (november,) = await settlements(alpha, "2026-11")
    # 300 < the larger threshold (500): carried, nothing to pay yet, on both sides.
    assert (november.net_minor, november.action, november.state) == (300, "carry", "carried")
    (at_beta,) = await settlements(beta, "2026-11")
    assert (at_beta.net_minor, at_beta.state) == (-300, "carried")

    await alpha.flattr(ann, f"@pod@{beta.host}")  # December
    await federation.step_workers()
    federation.clock.set(datetime(2027, 1, 2, 1, tzinfo=UTC))
    await federation.step_workers()
    (december,) = await settlements(alpha, "2026-12")
    assert (december.net_minor, december.action, december.carried_in_minor) == (600, "pay", 300)
    assert december.document["periods"] == ["2026-11", "2026-12"]
    (beta_december,) = await settlements(beta, "2026-12")
    await alpha.services.exchange.mark_paid(december.id, "SEPA-9", "admin")
    await federation.step_workers()
    await beta.services.exchange.confirm(beta_december.id, "admin")
    async with beta.services.database.sessions() as session:
        assert await ledger.owed_to_member(session, ledger.earnings_available(dave.id)) == 600
        assert await ledger.balance(session, ledger.peer_receivable(alpha.host)) == 0
        assert await check_ledger(session, "EUR") == []
    async with alpha.services.database.sessions() as session:
        assert await ledger.balance(session, ledger.peer_payable(beta.host)) == 0
        assert await check_ledger(session, "EUR") == []


async def test_an_unconfirmed_payment_opens_an_investigation_after_the_deadline(
    federation: Federation,
) -> None:
    alpha = await federation.start("alpha", fee_bp=0)
    beta = await federation.start("beta", fee_bp=0)
    await alpha.peer_with(beta)
    await beta.peer_with(alpha)
    dave = await beta.create_member("dave")
    await beta.create_thing(dave, "pod", "Dave's podcast")
    ann = await alpha.create_donor("ann", budget=300, deposit=300)
    await alpha.flattr(ann, f"@pod@{beta.host}")
    await federation.step_workers()
    federation.clock.set(datetime(2026, 12, 2, 1, tzinfo=UTC))
    await federation.step_workers()
    (at_alpha,) = await settlements(alpha, "2026-11")
    await alpha.services.exchange.mark_paid(at_alpha.id, "SEPA-1", "admin")
    await federation.step_workers()

    federation.clock.set(datetime(2026, 12, 17, 7, tzinfo=UTC))  # past the 14-day deadline
    await federation.step_workers()
    (at_alpha,) = await settlements(alpha, "2026-11")
    (at_beta,) = await settlements(beta, "2026-11")
    assert at_alpha.state == "investigating"
    assert at_beta.state == "investigating"
    # The payee's admin finds the money after all: confirming closes the investigation.
    await beta.services.exchange.confirm(at_beta.id, "admin")
    async with beta.services.database.sessions() as session:
        assert await ledger.owed_to_member(session, ledger.earnings_available(dave.id)) == 300
        assert await check_ledger(session, "EUR") == []


async def test_an_admin_can_dispute_an_agreed_settlement(federation: Federation) -> None:
    alpha = await federation.start("alpha", fee_bp=0)
    beta = await federation.start("beta", fee_bp=0)
    await alpha.peer_with(beta)
    await beta.peer_with(alpha)
    dave = await beta.create_member("dave")
    await beta.create_thing(dave, "pod", "Dave's podcast")
    ann = await alpha.create_donor("ann", budget=300, deposit=300)
    await alpha.flattr(ann, f"@pod@{beta.host}")
    await federation.step_workers()
    federation.clock.set(datetime(2026, 12, 2, 1, tzinfo=UTC))
    await federation.step_workers()
    (at_beta,) = await settlements(beta, "2026-11")
    disputed = await beta.services.exchange.dispute(at_beta.id, "amount differs", "bea")
    assert disputed.state == "investigating"
    from flattrfed.db.models import SettlementEvent

    async with beta.services.database.sessions() as session:
        events = (
            await session.scalars(
                select(SettlementEvent).where(SettlementEvent.settlement_id == at_beta.id)
            )
        ).all()
    assert [(e.action, e.actor) for e in events] == [("agreed", "system"), ("disputed", "bea")]


async def test_flattrs_released_to_a_claimant_on_another_instance_are_paid_there(
    federation: Federation,
) -> None:
    from flattrfed.db.models import IdentityClaim, ReceivedLike
    from flattrfed.flattring.claims import refresh_pending
    from tests.fakes.plain import PlainServer

    plain = PlainServer()
    await plain.start("plain.test")
    federation.resolver.add("plain.test")
    try:
        alpha = await federation.start("alpha", fee_bp=0)
        beta = await federation.start("beta", fee_bp=0)
        await alpha.peer_with(beta)
        await beta.peer_with(alpha)
        carol = await beta.create_member("carol")
        ann = await alpha.create_donor("ann", budget=500, deposit=500)
        await alpha.flattr(ann, plain.status_uri("dave", 1))  # pending: dave is not on flattrfed

        # dave turns out to be carol: both directions of the claim are in place.
        plain.also_known_as["dave"] = [beta.actor_uri("carol")]
        async with beta.services.database.transaction() as session:
            session.add(
                IdentityClaim(
                    member_id=carol.id,
                    remote_actor_uri=plain.actor_uri("dave"),
                    state="verified",
                    created_at=federation.clock.now(),
                    verified_at=federation.clock.now(),
                )
            )
        assert await refresh_pending(alpha.services) == 1
        await federation.step_workers()
        async with beta.services.database.sessions() as session:
            (received,) = (await session.scalars(select(ReceivedLike))).all()
        assert received.object_uri == beta.actor_uri("carol")
        assert received.flattr_period == "2026-11"

        federation.clock.set(datetime(2026, 12, 2, 1, tzinfo=UTC))
        await federation.step_workers()
        (at_alpha,) = await settlements(alpha, "2026-11")
        assert (at_alpha.payable_minor, at_alpha.net_minor) == (500, 500)
        await alpha.services.exchange.mark_paid(at_alpha.id, "SEPA-7", "admin")
        await federation.step_workers()
        (at_beta,) = await settlements(beta, "2026-11")
        await beta.services.exchange.confirm(at_beta.id, "admin")
        async with beta.services.database.sessions() as session:
            assert await ledger.owed_to_member(session, ledger.earnings_available(carol.id)) == 500
            assert await check_ledger(session, "EUR") == []
    finally:
        await plain.close()


async def test_statements_and_settlements_export_as_csv(
    federation: Federation, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio
    import csv
    import io

    from flattrfed.cli import main

    alpha = await federation.start("alpha", fee_bp=0)
    beta = await federation.start("beta", fee_bp=0)
    await alpha.peer_with(beta)
    await beta.peer_with(alpha)
    dave = await beta.create_member("dave")
    await beta.create_thing(dave, "pod", "Dave's podcast")
    ann = await alpha.create_donor("ann", budget=300, deposit=300)
    await alpha.flattr(ann, f"@pod@{beta.host}")
    await federation.step_workers()
    federation.clock.set(datetime(2026, 12, 2, 1, tzinfo=UTC))
    await federation.step_workers()

    settings = alpha.settings
    for key, value in {
        "FLATTRFED_BASE_URL": settings.base_url,
        "FLATTRFED_ALLOW_HTTP": "1",
        "FLATTRFED_DATA_DIR": str(settings.data_dir),
        "FLATTRFED_DATABASE_URL": settings.database_url,
    }.items():
        monkeypatch.setenv(key, value)
    capsys.readouterr()
    args = ["settlement", "statements", "2026-11", "--csv"]
    assert await asyncio.to_thread(main, args) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [(row["direction"], row["state"], row["amount"]) for row in rows] == [
        ("out", "accepted", "300")
    ]
    assert await asyncio.to_thread(main, ["settlement", "list", "--csv"]) == 0
    listed = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    (settlement,) = [row for row in listed if row["period"] == "2026-11"]
    assert (settlement["net_minor"], settlement["we_pay"], settlement["state"]) == (
        "300",
        "True",
        "agreed",
    )
