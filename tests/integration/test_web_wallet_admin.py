"""Wallet and admin pages over real HTTP, and who may see and change what."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from sqlalchemy import func, select

from flattrfed.db.models import DepositRequest, Flattr, Member, PayoutRequest, Settlement
from flattrfed.flattring.wallets import reference_is_well_formed
from flattrfed.settlement import ledger
from tests.harness.instances import Federation, Instance
from tests.integration.test_web_support import Visitors


def figure(text: str, name: str) -> str:
    match = re.search(rf'id="{name}">([^<]*)<', text)
    assert match is not None, name
    return match.group(1)


async def give_earnings(instance: Instance, member: Member, amount_minor: int) -> None:
    """Earnings made available as a confirmed settlement would (test setup only)."""
    services = instance.services
    async with services.database.transaction() as session:
        await ledger.post(
            session,
            txid=f"test-earnings:{member.id}",
            kind="test",
            postings=[
                (ledger.CASH_BANK, amount_minor),
                (ledger.earnings_available(member.id), -amount_minor),
            ],
            currency=services.settings.currency,
            memo="test setup",
            now=services.clock.now(),
        )


async def count(instance: Instance, model: type[DepositRequest] | type[PayoutRequest]) -> int:
    async with instance.services.database.sessions() as session:
        return int(await session.scalar(select(func.count()).select_from(model)) or 0)


async def test_deposit_reference_recorded_by_an_admin_credits_the_wallet(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    await alpha.create_member("ann")
    await alpha.create_member("root", admin=True)
    ann, root = visitors(alpha), visitors(alpha)
    await ann.log_in("ann")
    await root.log_in("root")

    wallet = await ann.get("/wallet")
    assert wallet.status == 200
    assert figure(wallet.text, "figure-wallet") == "0.00 EUR"
    asked = await ann.post("/wallet/deposit", {"csrf_token": wallet.csrf()})
    assert asked.status == 303
    wallet = await ann.get(asked.location)
    reference = figure(wallet.text, "deposit-reference")
    assert reference_is_well_formed(reference)
    assert wallet.has(
        f"Transfer any amount in EUR to the instance's bank account and write {reference}"
    )
    assert wallet.has("waiting for the transfer")

    deposits = await root.get("/admin/deposits")
    assert reference in deposits.text  # listed as waiting
    fields = {
        "csrf_token": deposits.csrf(),
        "member": "ann",
        "amount": "25.00",
        "bank_reference": "BANK-2026-11-0042",
        "request": reference.lower(),
    }
    recorded = await root.post("/admin/deposits", fields)
    assert recorded.status == 303, recorded.text
    assert recorded.location == "/admin/deposits?msg=recorded"

    wallet = await ann.get("/wallet")
    assert figure(wallet.text, "figure-wallet") == "25.00 EUR"
    assert "credited" in wallet.text
    assert "25.00 EUR" in wallet.text[wallet.text.index('id="deposits"') :]
    dashboard = await ann.get("/dashboard")
    assert figure(dashboard.text, "figure-deposited") == "25.00 EUR"

    # One bank transfer is credited once; a mistyped reference or amount is refused.
    mistyped = reference[:-1] + ("Z" if reference[-1] != "Z" else "Y")
    for changes, message in [
        ({}, "was already recorded"),
        ({"bank_reference": "BANK-2", "request": mistyped}, "not a deposit reference"),
        ({"bank_reference": "BANK-3", "amount": "12.345"}, "has 3 decimal places"),
        ({"bank_reference": "BANK-4", "member": "nobody"}, "No member named 'nobody'"),
        ({"bank_reference": "BANK-5", "amount": "-5"}, "must be a positive amount"),
    ]:
        page = await root.post("/admin/deposits", {**fields, **changes})
        assert page.status == 400, changes
        assert page.has(message), (message, page.text[-3000:])
    wallet = await ann.get("/wallet")
    assert figure(wallet.text, "figure-wallet") == "25.00 EUR"


async def test_the_budget_form_sets_checks_and_removes_the_budget(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    await alpha.create_donor("ann", budget=1000, deposit=700)
    ann = visitors(alpha)
    await ann.log_in("ann")
    wallet = await ann.get("/wallet")
    assert 'value="10.00"' in wallet.text
    assert figure(wallet.text, "figure-planned") == "7.00 EUR"  # min(10.00, 7.00)

    for amount, message in [
        ("1.00", "between 2.00 EUR and 100.00 EUR"),
        ("100.01", "between 2.00 EUR and 100.00 EUR"),
        ("ten", "Give an amount in EUR"),
        ("5,00", "Give an amount in EUR"),
    ]:
        page = await ann.post("/wallet/budget", {"csrf_token": wallet.csrf(), "budget": amount})
        assert page.status == 400, amount
        assert page.has(message), (amount, message)
    saved = await ann.post("/wallet/budget", {"csrf_token": wallet.csrf(), "budget": "5"})
    assert saved.status == 303
    wallet = await ann.get(saved.location)
    assert wallet.has("Your monthly budget was saved.")
    assert figure(wallet.text, "figure-budget") == "5.00 EUR"
    assert figure(wallet.text, "figure-planned") == "5.00 EUR"

    removed = await ann.post("/wallet/budget", {"csrf_token": wallet.csrf(), "remove": "1"})
    assert removed.status == 303
    dashboard = await ann.get("/dashboard")
    assert figure(dashboard.text, "figure-budget") == "not set"
    assert dashboard.has("You have no monthly budget")


async def test_payouts_are_requested_by_members_and_marked_paid_by_admins(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    carol_member = await alpha.create_member("carol")
    await alpha.create_member("root", admin=True)
    carol, root = visitors(alpha), visitors(alpha)
    await carol.log_in("carol")
    await root.log_in("root")

    wallet = await carol.get("/wallet")
    refused = await carol.post("/wallet/payout", {"csrf_token": wallet.csrf(), "amount": "15.00"})
    assert refused.status == 400
    assert refused.has("Only 0.00 EUR of earnings are available to pay out")

    await give_earnings(alpha, carol_member, 2000)
    for amount, message in [("5.00", "minimum payout is 10.00 EUR"), ("20.01", "Only 20.00 EUR")]:
        page = await carol.post("/wallet/payout", {"csrf_token": wallet.csrf(), "amount": amount})
        assert page.status == 400
        assert page.has(message)
    asked = await carol.post("/wallet/payout", {"csrf_token": wallet.csrf(), "amount": "15.00"})
    assert asked.status == 303
    wallet = await carol.get(asked.location)
    assert figure(wallet.text, "figure-earnings-available") == "5.00 EUR"
    assert "requested" in wallet.text[wallet.text.index('id="payouts"') :]

    async with alpha.services.database.sessions() as session:
        (payout,) = (await session.scalars(select(PayoutRequest))).all()
    payouts = await root.get("/admin/payouts")
    assert f'action="/admin/payouts/{payout.id}/paid"' in payouts.text
    missing = await root.post(
        f"/admin/payouts/{payout.id}/paid", {"csrf_token": payouts.csrf(), "bank_reference": " "}
    )
    assert missing.status == 400
    assert missing.has("The bank reference of the payment is required")
    paid = await root.post(
        f"/admin/payouts/{payout.id}/paid",
        {"csrf_token": payouts.csrf(), "bank_reference": "SEPA-OUT-1"},
    )
    assert paid.status == 303
    again = await root.post(
        f"/admin/payouts/{payout.id}/paid",
        {"csrf_token": payouts.csrf(), "bank_reference": "SEPA-OUT-2"},
    )
    assert again.status == 400
    assert again.has("is paid, not requested")
    wallet = await carol.get("/wallet")
    assert "paid" in wallet.text[wallet.text.index('id="payouts"') :]
    async with alpha.services.database.sessions() as session:
        assert await ledger.owed_to_member(session, ledger.payouts_pending(carol_member.id)) == 0
        assert await ledger.balance(session, ledger.CASH_BANK) == 2000 - 1500


async def test_one_member_cannot_see_or_change_another_members_things(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    owner = await alpha.create_member("owner")
    await alpha.create_thing(owner, "zine", "The zine")
    ann_member = await alpha.create_donor("ann", budget=1000, deposit=1000)
    await alpha.create_donor("bob", budget=1000, deposit=300)
    await alpha.flattr(ann_member, f"@zine@{alpha.host}")
    ann, bob = visitors(alpha), visitors(alpha)
    await ann.log_in("ann")
    await bob.log_in("bob")

    wallet = await ann.get("/wallet")
    made = await ann.post("/wallet/deposit", {"csrf_token": wallet.csrf()})
    ann_reference = figure((await ann.get(made.location)).text, "deposit-reference")

    # bob's pages are bob's: none of ann's figures, references or flattrs show there.
    bob_wallet = await bob.get("/wallet")
    assert ann_reference not in bob_wallet.text
    assert figure(bob_wallet.text, "figure-wallet") == "3.00 EUR"
    bob_dashboard = await bob.get("/dashboard")
    assert "The zine" not in bob_dashboard.text
    assert figure(bob_dashboard.text, "figure-wallet") == "3.00 EUR"

    async with alpha.services.database.sessions() as session:
        (flattr,) = (await session.scalars(select(Flattr))).all()
    refused = await bob.post(
        f"/flattrs/{flattr.id}/undo", {"csrf_token": bob_dashboard.csrf(), "next": "/dashboard"}
    )
    assert refused.status == 400
    assert refused.has("No such flattr of yours")
    async with alpha.services.database.sessions() as session:
        row = await session.get(Flattr, flattr.id)
        assert row is not None
        assert row.undone_at is None

    # bob's budget form changes bob's budget only.
    await bob.post("/wallet/budget", {"csrf_token": bob_wallet.csrf(), "budget": "3.00"})
    async with alpha.services.database.sessions() as session:
        budgets = {
            m.username: m.monthly_budget_minor for m in (await session.scalars(select(Member)))
        }
    assert budgets["ann"] == 1000
    assert budgets["bob"] == 300

    # Member pages need a log-in.
    anonymous = visitors(alpha)
    for path in ("/dashboard", "/wallet", "/settings", "/flattr", "/admin"):
        page = await anonymous.get(path, follow=False)
        assert page.status == 303, path
        assert page.location.startswith("/login?next="), path


async def test_admin_pages_refuse_members_who_are_not_admins(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    carol_member = await alpha.create_member("carol")
    await alpha.create_member("root", admin=True)
    await alpha.create_member("waiting")
    await give_earnings(alpha, carol_member, 2000)
    carol = visitors(alpha)
    await carol.log_in("carol")
    wallet = await carol.get("/wallet")
    await carol.post("/wallet/payout", {"csrf_token": wallet.csrf(), "amount": "15.00"})
    async with alpha.services.database.sessions() as session:
        (payout,) = (await session.scalars(select(PayoutRequest))).all()
    deposits_before = await count(alpha, DepositRequest)

    for path in ("/admin", "/admin/deposits", "/admin/payouts", "/admin/settlements"):
        page = await carol.get(path)
        assert page.status == 403, path
        assert page.has("This page is for the instance's admins")
    token = wallet.csrf()  # carol's own valid token: the refusal is about who she is
    for path, fields in [
        ("/admin/deposits", {"member": "carol", "amount": "50.00", "bank_reference": "X-1"}),
        (f"/admin/payouts/{payout.id}/paid", {"bank_reference": "X-2"}),
        ("/admin/settlements/1/paid", {"bank_reference": "X-3"}),
        ("/admin/settlements/1/confirm", {}),
        (f"/admin/members/{carol_member.id}/approve", {}),
    ]:
        page = await carol.post(path, {"csrf_token": token, **fields})
        assert page.status == 403, path
    assert await count(alpha, DepositRequest) == deposits_before
    async with alpha.services.database.sessions() as session:
        row = await session.get(PayoutRequest, payout.id)
        assert row is not None
        assert row.state == "requested"

    root = visitors(alpha)
    await root.log_in("root")
    for path in ("/admin", "/admin/deposits", "/admin/payouts", "/admin/settlements"):
        page = await root.get(path)
        assert page.status == 200, path
    members = await root.get("/admin")
    for name in ("carol", "root", "waiting"):
        assert f'href="/@{name}"' in members.text


async def test_admins_mark_settlements_paid_and_confirm_them(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha", fee_bp=0)
    beta = await federation.start("beta", fee_bp=0)
    await alpha.peer_with(beta)
    await beta.peer_with(alpha)
    await alpha.create_member("alice", admin=True)
    await beta.create_member("bea", admin=True)
    dave = await beta.create_member("dave")
    await beta.create_thing(dave, "pod", "Dave's podcast")
    ann = await alpha.create_donor("ann", budget=500, deposit=500)
    await alpha.flattr(ann, f"@pod@{beta.host}")
    await federation.step_workers()
    federation.clock.set(datetime(2026, 12, 2, 1, tzinfo=UTC))
    await federation.step_workers()

    november = select(Settlement).where(Settlement.period == "2026-11")
    async with alpha.services.database.sessions() as session:
        (ours,) = (await session.scalars(november)).all()
    async with beta.services.database.sessions() as session:
        (theirs,) = (await session.scalars(november)).all()
    assert ours.net_minor == 500

    alice, bea = visitors(alpha), visitors(beta)
    await alice.log_in("alice")
    await bea.log_in("bea")
    listing = await alice.get("/admin/settlements")
    assert ours.payment_reference in listing.text
    assert "we pay" in listing.text
    assert "5.00 EUR" in listing.text
    assert f'action="/admin/settlements/{ours.id}/paid"' in listing.text
    assert f'action="/admin/settlements/{ours.id}/confirm"' not in listing.text
    # The payee cannot mark paid; the payer cannot confirm: the service refuses.
    beta_listing = await bea.get("/admin/settlements")
    assert "they pay" in beta_listing.text
    wrong = await bea.post(
        f"/admin/settlements/{theirs.id}/paid",
        {"csrf_token": beta_listing.csrf(), "bank_reference": "NOPE"},
    )
    assert wrong.status == 400
    assert wrong.has("This instance is not the payer")

    paid = await alice.post(
        f"/admin/settlements/{ours.id}/paid",
        {"csrf_token": listing.csrf(), "bank_reference": "SEPA-123"},
    )
    assert paid.status == 303
    await federation.step_workers()
    beta_listing = await bea.get("/admin/settlements")
    assert f'action="/admin/settlements/{theirs.id}/confirm"' in beta_listing.text
    confirmed = await bea.post(
        f"/admin/settlements/{theirs.id}/confirm", {"csrf_token": beta_listing.csrf()}
    )
    assert confirmed.status == 303
    await federation.step_workers()

    for instance in (alpha, beta):
        async with instance.services.database.sessions() as session:
            (row,) = (await session.scalars(november)).all()
            assert row.state == "confirmed", instance.name
    creator = visitors(beta)
    await creator.log_in("dave")
    dashboard = await creator.get("/dashboard")
    assert figure(dashboard.text, "figure-earnings-available") == "5.00 EUR"
