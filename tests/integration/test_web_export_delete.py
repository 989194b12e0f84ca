"""Exporting one's data and deleting one's account, over real HTTP between real instances."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from sqlalchemy import select

from flattrfed.activitypub.interactions import follow
from flattrfed.db.models import (
    ActorKey,
    ClearingRun,
    DonorClose,
    Flattr,
    Member,
    PayoutRequest,
    RemoteActor,
    Thing,
)
from flattrfed.flattring.members import MemberError
from flattrfed.flattring.wallets import mark_payout_paid
from flattrfed.money import Money
from flattrfed.settlement import ledger
from flattrfed.settlement.checks import check_ledger
from tests.fakes.plain import PlainServer
from tests.harness.instances import Federation, Instance
from tests.integration.test_web_support import PASSWORD, Visitors

AP = {"Accept": "application/activity+json"}


@dataclass
class Scene:
    alpha: Instance
    beta: Instance
    ann: Member  # creator of "zine" and donor
    bob: Member  # donor who flattred ann's zine
    ann_flattr: Flattr  # ann's flattr of carl's pod


async def scene(federation: Federation) -> Scene:
    """alpha: ann (a thing, a wallet, a flattr given, one received), bob, carl; beta: fan,
    who follows ann and her zine."""
    alpha = await federation.start("alpha")
    beta = await federation.start("beta")
    ann = await alpha.create_donor("ann", budget=500, deposit=1000)
    bob = await alpha.create_donor("bob", budget=300, deposit=300)
    carl = await alpha.create_member("carl")
    await alpha.create_thing(ann, "zine", "Ann's zine")
    await alpha.create_thing(carl, "pod", "Carl's pod")
    await alpha.flattr(bob, alpha.actor_uri("zine", "thing"))
    ann_flattr = await alpha.flattr(ann, alpha.actor_uri("pod", "thing"))
    await beta.create_member("fan")
    fan = await beta.actor("fan")
    followed = [
        await beta.services.keys.actor(uri)
        for uri in (alpha.actor_uri("ann"), alpha.actor_uri("zine", "thing"))
    ]
    async with beta.services.database.transaction() as session:
        for remote in followed:
            await follow(session, beta.services.urls, fan, remote, federation.clock.now())
    await federation.step_workers()
    return Scene(alpha, beta, ann, bob, ann_flattr)


async def export_of(
    federation: Federation, cookie: str | None, instance: Instance
) -> tuple[int, dict[str, str], str]:
    headers = {"Cookie": f"flattrfed_session={cookie}"} if cookie else {}
    async with federation.client().get(
        instance.url("/settings/export"), headers=headers, allow_redirects=False
    ) as response:
        return response.status, dict(response.headers), await response.text()


async def test_the_export_holds_the_members_data_and_no_secrets(
    federation: Federation, visitors: Visitors
) -> None:
    s = await scene(federation)
    ann = visitors(s.alpha)
    await ann.log_in("ann")
    cookie = ann.cookie()
    assert cookie is not None
    settings = await ann.get("/settings")
    assert 'href="/settings/export"' in settings.text
    assert 'href="/settings/delete"' in settings.text
    assert 'href="/things"' in settings.text

    status, headers, body = await export_of(federation, cookie, s.alpha)
    assert status == 200
    assert headers["Content-Type"].startswith("application/json")
    assert headers["Content-Disposition"] == 'attachment; filename="flattrfed-ann-2026-11-15.json"'
    data = json.loads(body)
    assert data["format"] == "flattrfed-export/1"
    assert data["currency"] == "EUR"
    assert data["profile"]["username"] == "ann"
    assert data["profile"]["actor"] == s.alpha.actor_uri("ann")
    assert data["budget"] == {"monthly_budget_minor": 500, "currency": "EUR"}
    assert data["balances"]["wallet_minor"] == 1000
    assert [thing["handle"] for thing in data["things"]] == ["zine"]
    (given,) = data["flattrs_given"]
    assert given["like_uri"] == s.ann_flattr.like_uri
    assert given["target"] == s.alpha.actor_uri("pod", "thing")
    assert (given["period"], given["status"], given["undone"]) == ("2026-11", "payable", False)
    (received,) = data["likes_received"]
    assert received["from"] == s.alpha.actor_uri("bob")
    assert received["to"] == s.alpha.actor_uri("zine", "thing")
    assert (received["flattr"], received["period"]) == (True, "2026-11")
    (posting,) = data["ledger_postings"]
    assert posting["account"] == ledger.wallet(s.ann.id)
    assert (posting["amount_minor"], posting["currency"]) == (-1000, "EUR")
    assert posting["txid"].startswith("deposit:")
    (deposit,) = data["deposits"]
    assert (deposit["amount_minor"], deposit["bank_reference"]) == (1000, "alpha-ann-1")
    assert {(row["follower"], row["follows"]) for row in data["followers"]} == {
        (s.beta.actor_uri("fan"), s.alpha.actor_uri("ann")),
        (s.beta.actor_uri("fan"), s.alpha.actor_uri("zine", "thing")),
    }
    assert data["claims"] == []
    assert data["payouts"] == []
    assert data["following"] == []

    # Never a secret: no password hash, no private key, no session, nobody else's money.
    async with s.alpha.services.database.sessions() as session:
        row = await session.get(Member, s.ann.id)
        assert row is not None
        keys = (await session.scalars(select(ActorKey))).all()
    for secret in [row.password_hash, "$argon2", "PRIVATE KEY", cookie, cookie.split(".")[2]]:
        assert secret not in body
    for key in keys:
        assert key.private_key_pem.splitlines()[1] not in body
    assert "alpha-bob-1" not in body  # bob's deposit
    assert "password" not in body.lower()

    # bob's own export is bob's: none of ann's rows.
    bob = visitors(s.alpha)
    await bob.log_in("bob")
    status, _headers, bob_body = await export_of(federation, bob.cookie(), s.alpha)
    assert status == 200
    bob_data = json.loads(bob_body)
    assert bob_data["profile"]["username"] == "bob"
    assert "alpha-ann-1" not in bob_body
    assert bob_data["things"] == []
    # Anonymous visitors (and forged cookies) are sent to log in.
    status, headers, _ = await export_of(federation, None, s.alpha)
    assert status == 303
    assert headers["Location"].startswith("/login")
    forged = cookie.replace(f"{s.ann.id}.", f"{s.bob.id}.", 1)
    status, headers, _ = await export_of(federation, forged, s.alpha)
    assert status == 303


async def dashboard_status(federation: Federation, instance: Instance, cookie: str) -> int:
    async with federation.client().get(
        instance.url("/dashboard"),
        headers={"Cookie": f"flattrfed_session={cookie}"},
        allow_redirects=False,
    ) as response:
        return response.status


async def test_deleting_an_account_waits_for_the_money_then_tells_the_fediverse(
    federation: Federation, visitors: Visitors
) -> None:
    s = await scene(federation)
    alpha, clock = s.alpha, federation.clock
    currency = alpha.services.settings.currency
    ann = visitors(alpha)
    await ann.log_in("ann")
    page = await ann.get("/settings/delete")
    assert page.status == 200
    token = page.csrf()
    wallet_text = Money(1000, currency).format()
    assert page.has(f"Your wallet holds {wallet_text}")
    assert page.has("1 flattr of your things is not paid yet")
    assert 'action="/settings/delete"' not in page.text  # no delete form while blocked
    refused = await ann.post(
        "/settings/delete", {"csrf_token": token, "password": PASSWORD, "confirm": "yes"}
    )
    assert refused.status == 400
    assert refused.has(f"Your wallet holds {wallet_text}")
    async with alpha.services.database.sessions() as session:
        assert (await session.get(Member, s.ann.id)).deleted_at is None  # type: ignore[union-attr]

    # November closes: bob's flattr pays ann's zine, ann's flattr is paid from her wallet.
    clock.set(datetime(2026, 12, 2, 12, 0, tzinfo=UTC))
    await alpha.run_worker()
    async with alpha.services.database.sessions() as session:
        money = await ledger.member_balances(session, s.ann.id)
    assert money["wallet"] == 500
    assert money["earnings_available"] == 300
    # A December flattr by ann: open when she deletes, so it is undone.
    december = await alpha.flattr(s.ann, alpha.actor_uri("pod", "thing"))

    page = await ann.get("/settings/delete")
    assert not page.has("flattr of your things")
    closing = Money(800, currency).format()
    assert page.has(f"Request a closing payout of {closing}")
    payout = await ann.post("/settings/delete/payout", {"csrf_token": token})
    assert payout.status == 303
    async with alpha.services.database.sessions() as session:
        (request,) = (await session.scalars(select(PayoutRequest))).all()
        money = await ledger.member_balances(session, s.ann.id)
    assert (request.amount_minor, request.state) == (800, "requested")
    assert money == {
        "wallet": 0,
        "earnings_pending": 0,
        "earnings_available": 0,
        "payouts_pending": 800,
    }
    page = await ann.get("/settings/delete")
    assert page.has(f"A payout of {closing} is requested but not paid yet")
    still = await ann.post(
        "/settings/delete", {"csrf_token": token, "password": PASSWORD, "confirm": "yes"}
    )
    assert still.status == 400

    async with alpha.services.database.transaction() as session:
        row = await session.get(PayoutRequest, request.id)
        assert row is not None
        await mark_payout_paid(session, row, "BANK-OUT-1", currency, clock.now())

    old_cookie = ann.cookie()
    assert old_cookie is not None
    assert await dashboard_status(federation, alpha, old_cookie) == 200
    page = await ann.get("/settings/delete")
    assert page.has("What deleting means")
    wrong = await ann.post(
        "/settings/delete", {"csrf_token": token, "password": "not her password", "confirm": "yes"}
    )
    assert wrong.status == 400
    assert wrong.has("The password is wrong")
    unconfirmed = await ann.post("/settings/delete", {"csrf_token": token, "password": PASSWORD})
    assert unconfirmed.status == 400
    deleted = await ann.post(
        "/settings/delete", {"csrf_token": token, "password": PASSWORD, "confirm": "yes"}
    )
    assert deleted.status == 303, deleted.text[:500]
    assert deleted.location == "/?msg=account-deleted"
    assert ann.cookie() != old_cookie  # logged out: a new anonymous session

    # The old session cookie is dead; logging in again fails; the actor and pages are gone.
    assert await dashboard_status(federation, alpha, old_cookie) == 303
    again = visitors(alpha)
    login = await again.submit("/login", {"username": "ann", "password": PASSWORD})
    assert login.status == 401
    client = federation.client()
    for url in (alpha.actor_uri("ann"), alpha.actor_uri("zine", "thing")):
        async with client.get(url, headers=AP) as response:
            assert response.status in {404, 410}, url
    async with client.get(alpha.url("/@ann")) as response:
        assert response.status == 404
    async with client.get(
        alpha.url("/.well-known/webfinger"), params={"resource": f"acct:ann@{alpha.host}"}
    ) as response:
        assert response.status == 404
    with pytest.raises(MemberError, match="taken"):
        await alpha.create_member("ann")  # the username stays reserved

    async with alpha.services.database.sessions() as session:
        member = await session.get(Member, s.ann.id)
        assert member is not None
        assert (member.username, member.display_name, member.bio) == ("ann", "", "")
        assert member.deleted_at is not None
        assert member.monthly_budget_minor is None
        flattr = await session.get(Flattr, december.id)
        assert flattr is not None
        assert flattr.undone_at is not None
        things = (await session.scalars(select(Thing).where(Thing.owner_id == s.ann.id))).all()
        assert all(thing.deleted_at is not None for thing in things)

    # The Delete of ann (and of her zine) reaches the follower's server on beta.
    await federation.step_workers()
    async with s.beta.services.database.sessions() as session:
        gone = {
            row.uri: row.deleted_at for row in (await session.scalars(select(RemoteActor))).all()
        }
    assert gone[alpha.actor_uri("ann")] is not None
    assert gone[alpha.actor_uri("zine", "thing")] is not None

    # December closes without ann (her flattr was undone); the books still balance.
    clock.set(datetime(2027, 1, 2, 12, 0, tzinfo=UTC))
    await alpha.run_worker()
    async with alpha.services.database.sessions() as session:
        run = await session.scalar(select(ClearingRun).where(ClearingRun.period == "2026-12"))
        assert run is not None
        assert run.stage == "done"
        donors = (
            await session.scalars(select(DonorClose.donor_id).where(DonorClose.run_id == run.id))
        ).all()
        assert s.ann.id not in donors
        assert await check_ledger(session, currency) == []
        assert await ledger.member_balances(session, s.ann.id) == dict.fromkeys(
            ("wallet", "earnings_pending", "earnings_available", "payouts_pending"), 0
        )


async def test_a_deleted_members_pending_flattr_is_undone_on_the_authors_server(
    federation: Federation, visitors: Visitors, plain: PlainServer
) -> None:
    alpha = await federation.start("alpha")
    member = await alpha.create_member("ann")
    async with alpha.services.database.transaction() as session:
        row = await session.get(Member, member.id)
        assert row is not None
        row.monthly_budget_minor = 500  # a budget, but nothing in the wallet
    pending = await alpha.flattr(member, plain.status_uri("dave", 7))
    assert pending.status == "pending"
    await alpha.run_deliveries()
    assert [activity["type"] for activity in plain.received] == ["Like"]

    ann = visitors(alpha)
    await ann.log_in("ann")
    page = await ann.get("/settings/delete")
    assert 'id="blockers"' not in page.text  # nothing owed: the form is offered
    deleted = await ann.post(
        "/settings/delete", {"csrf_token": page.csrf(), "password": PASSWORD, "confirm": "yes"}
    )
    assert deleted.status == 303
    await alpha.run_deliveries()
    undo = plain.received[-1]
    assert undo["type"] == "Undo"
    assert undo["object"]["id"] == pending.like_uri
    assert undo["actor"] == alpha.actor_uri("ann")
    async with alpha.services.database.sessions() as session:
        flattr = await session.get(Flattr, pending.id)
        assert flattr is not None
        assert flattr.undone_at is not None
        assert await check_ledger(session, alpha.services.settings.currency) == []
