"""The admin screens over real HTTP: who may use them, and that each shows and changes real data."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select, update

from flattrfed.activitypub.actors import ensure_instance_actor
from flattrfed.activitypub.delivery import enqueue_delivery
from flattrfed.db.models import (
    ClearingRun,
    DomainBlock,
    FederationHost,
    InboundActivity,
    LedgerAccount,
    LedgerPosting,
    Peer,
    PolicyChange,
    ReceivedLike,
    Settlement,
    SettlementEvent,
    Statement,
    StatementLine,
    WorkItem,
)
from flattrfed.flattring.policy import current_policy
from flattrfed.settlement import ledger
from flattrfed.settlement import statements as st
from tests.harness.instances import Federation, Instance
from tests.integration.test_web_support import Visitor, Visitors

NOVEMBER = select(Settlement).where(Settlement.period == "2026-11")
NOVEMBER_STATE = select(Settlement.state).where(Settlement.period == "2026-11")


def november_statement(direction: str) -> Any:
    return select(Statement).where(Statement.direction == direction, Statement.period == "2026-11")


ADMIN_PAGES = [
    "/admin/policy",
    "/admin/instances",
    "/admin/blocks",
    "/admin/deliveries",
    "/admin/clearing",
    "/admin/settlements",
    "/admin/statements/1",
    "/admin/check",
]
ADMIN_FORMS: list[tuple[str, dict[str, str]]] = [
    (
        "/admin/policy",
        {
            "registration": "closed",
            "fee_bp": "900",
            "budget_min": "1.00",
            "budget_max": "50.00",
            "min_payout": "5.00",
        },
    ),
    ("/admin/instances", {"host": "beta.test", "credit_limit": "10.00"}),
    ("/admin/instances/credit-limit", {"host": "beta.test", "credit_limit": "0"}),
    ("/admin/hosts/resume", {"host": "down.test"}),
    ("/admin/blocks", {"domain": "spam.example", "reason": "spam"}),
    ("/admin/blocks/remove", {"domain": "kept.example"}),
    ("/admin/deliveries/retry", {"host": "down.test"}),
    ("/admin/clearing/close", {"period": "2026-10"}),
    ("/admin/settlements/1/dispute", {"reason": "no transfer"}),
    ("/admin/settlements/1/paid", {"bank_reference": "X"}),
    ("/admin/settlements/1/confirm", {}),
]


async def admin_of(instance: Instance, visitors: Visitors, name: str = "root") -> Visitor:
    await instance.create_member(name, admin=True)
    visitor = visitors(instance)
    await visitor.log_in(name)
    return visitor


async def scalar(instance: Instance, query: Any) -> Any:
    async with instance.services.database.sessions() as session:
        return await session.scalar(query)


async def count(instance: Instance, model: type[Any]) -> int:
    return int(await scalar(instance, select(func.count()).select_from(model)) or 0)


async def closed_month_between(federation: Federation) -> tuple[Instance, Instance]:
    """alpha's donor flattrs three of beta's things in November; both close and settle."""
    alpha = await federation.start("alpha", fee_bp=0)
    beta = await federation.start("beta", fee_bp=0)
    await alpha.peer_with(beta)
    await beta.peer_with(alpha)
    dave = await beta.create_member("dave")
    ann = await alpha.create_donor("ann", budget=900, deposit=900)
    for handle in ("pod", "zine", "song"):
        await beta.create_thing(dave, handle, f"Dave's {handle}")
        await alpha.flattr(ann, f"@{handle}@{beta.host}")
    await federation.step_workers()
    federation.clock.set(datetime(2026, 12, 2, 1, tzinfo=UTC))
    await federation.step_workers()
    return alpha, beta


# --- who may use the screens -------------------------------------------------------------------


async def test_every_admin_screen_sends_anonymous_visitors_to_log_in_and_refuses_members(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    await alpha.create_member("carol")
    async with alpha.services.database.transaction() as session:
        session.add(
            DomainBlock(domain="kept.example", reason="", created_at=alpha.services.clock.now())
        )
    anonymous = visitors(alpha)
    for path in ADMIN_PAGES:
        page = await anonymous.get(path, follow=False)
        assert page.status == 303, path
        assert page.location.startswith("/login?next="), path
    anonymous_token = await anonymous.token("/login")
    for path, fields in ADMIN_FORMS:
        page = await anonymous.post(path, {"csrf_token": anonymous_token, **fields})
        assert page.status == 303, path
        assert page.location.startswith("/login?next="), path

    carol = visitors(alpha)
    await carol.log_in("carol")
    for path in ADMIN_PAGES:
        page = await carol.get(path)
        assert page.status == 403, path
        assert page.has("This page is for the instance's admins"), path
    token = await carol.token("/wallet")  # carol's own valid token: the refusal is about who she is
    for path, fields in ADMIN_FORMS:
        page = await carol.post(path, {"csrf_token": token, **fields})
        assert page.status == 403, path

    # Nothing changed: the policy, the blocks, the peers, the clearing runs.
    async with alpha.services.database.transaction() as session:
        policy = await current_policy(session, alpha.settings, alpha.services.clock.now())
    assert (policy.registration, policy.fee_bp) == (
        alpha.settings.registration,
        alpha.settings.fee_bp,
    )
    assert [row for row in await all_blocks(alpha)] == ["kept.example"]
    assert await count(alpha, PolicyChange) == 0
    assert await count(alpha, Peer) == 0
    assert await count(alpha, ClearingRun) == 0


async def all_blocks(instance: Instance) -> list[str]:
    async with instance.services.database.sessions() as session:
        return list(await session.scalars(select(DomainBlock.domain).order_by(DomainBlock.domain)))


async def test_every_admin_form_refuses_a_missing_or_wrong_csrf_token(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    root = await admin_of(alpha, visitors)
    async with alpha.services.database.transaction() as session:
        session.add(
            DomainBlock(domain="kept.example", reason="", created_at=alpha.services.clock.now())
        )
    other = visitors(alpha)
    other_token = await other.token("/login")  # a real token, of another session
    for path, fields in ADMIN_FORMS:
        for token in (None, "", "forged", other_token):
            data = dict(fields) if token is None else {"csrf_token": token, **fields}
            page = await root.post(path, data)
            assert page.status == 403, (path, token)
            assert "security token is missing or out of date" in page.text
    assert await all_blocks(alpha) == ["kept.example"]
    assert await count(alpha, ClearingRun) == 0
    async with alpha.services.database.transaction() as session:
        policy = await current_policy(session, alpha.settings, alpha.services.clock.now())
    assert policy.fee_bp == alpha.settings.fee_bp
    assert await count(alpha, PolicyChange) == 0

    # The nav links every screen, and each answers an admin.
    for path in [*ADMIN_PAGES[:-2], "/admin/check"]:
        page = await root.get(path)
        assert page.status == 200, path
        for linked in ("/admin", *[p for p in ADMIN_PAGES if "/statements/" not in p]):
            assert f'href="{linked}"' in page.text, (path, linked)
    assert (await root.get("/admin/statements/999")).status == 404


# --- policy ------------------------------------------------------------------------------------


async def test_the_policy_form_saves_every_setting_and_refuses_bad_values_with_a_message(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha", fee_bp=250)
    root = await admin_of(alpha, visitors)
    page = await root.get("/admin/policy")
    assert page.status == 200
    assert 'id="policy-fee">2.50 % (250 bp)' in page.text
    good = {
        "csrf_token": page.csrf(),
        "registration": "invite",
        "fee_bp": "125",
        "budget_min": "3.00",
        "budget_max": "40.00",
        "min_payout": "15.50",
        "receiving_needs_budget": "1",
    }
    saved = await root.post("/admin/policy", good)
    assert saved.status == 303
    assert saved.location == "/admin/policy?msg=policy-saved"
    async with alpha.services.database.transaction() as session:
        policy = await current_policy(session, alpha.settings, alpha.services.clock.now())
    assert policy.registration == "invite"
    assert policy.fee_bp == 125
    assert (policy.budget_min_minor, policy.budget_max_minor) == (300, 4000)
    assert policy.min_payout_minor == 1550
    assert policy.receiving_needs_budget is True
    page = await root.get(saved.location)
    assert page.has("The policy was saved.")
    assert 'id="policy-fee">1.25 % (125 bp)' in page.text
    assert "3.00 EUR to 40.00 EUR" in page.text
    # Each setting that changed is in the history, with when and by whom.
    history = page.text[page.text.index('id="policy-changes"') :]
    history = history[: history.index("</table>")]
    assert "<td>2.50 %</td><td>1.25 %</td><td>root</td>" in history
    assert "<td>15.50 EUR</td><td>root</td>" in history
    assert "<code>registration</code>" in history
    assert "2026-11-15 12:00 UTC" in history
    async with alpha.services.database.sessions() as session:
        settings_changed = set(await session.scalars(select(PolicyChange.setting)))
    assert settings_changed == {
        "registration",
        "fee_bp",
        "budget_min_minor",
        "budget_max_minor",
        "min_payout_minor",
        "receiving_needs_budget",
    }
    changes_before = await count(alpha, PolicyChange)

    for changes, message in [
        ({"fee_bp": "10001"}, "Give the fee as a whole number of basis points from 0 to 10000"),
        ({"fee_bp": "2.5"}, "Give the fee as a whole number of basis points"),
        ({"registration": "everyone"}, "Registration must be one of open, approval"),
        ({"budget_min": "50.00"}, "The budget minimum must not be above the maximum"),
        ({"budget_max": "ten"}, "Give the largest monthly budget in EUR"),
        ({"min_payout": "0"}, "The minimum payout must be more than zero"),
        ({"min_payout": "-3"}, "The minimum payout must be more than zero"),
        ({"budget_min": "1.005"}, "Give the smallest monthly budget in EUR"),
    ]:
        refused = await root.post("/admin/policy", {**good, **changes})
        assert refused.status == 400, changes
        assert refused.has(message), (message, refused.text[-3000:])
        # What was typed is shown again, to be corrected.
        for field, value in changes.items():
            if field != "registration":  # a select offers only the real modes
                assert f'value="{value}"' in refused.text, (field, value)
    assert await count(alpha, PolicyChange) == changes_before  # nothing refused was kept
    # Unticking the box is saved as "no", and is the one new change.
    saved = await root.post(
        "/admin/policy", {k: v for k, v in good.items() if k != "receiving_needs_budget"}
    )
    assert saved.status == 303
    async with alpha.services.database.transaction() as session:
        policy = await current_policy(session, alpha.settings, alpha.services.clock.now())
    assert policy.receiving_needs_budget is False
    assert policy.fee_bp == 125
    assert await count(alpha, PolicyChange) == changes_before + 1


# --- domain blocks -----------------------------------------------------------------------------


async def test_a_domain_blocked_on_the_web_makes_the_inbox_drop_that_domains_activities(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    beta = await federation.start("beta")
    owner = await alpha.create_member("owner")
    for handle in ("zine", "film"):
        await alpha.create_thing(owner, handle, f"The {handle}")
    bob = await beta.create_donor("bob", budget=1000, deposit=1000)
    await beta.flattr(bob, f"@zine@{alpha.host}")
    await federation.step_workers()
    assert await count(alpha, ReceivedLike) == 1

    root = await admin_of(alpha, visitors)
    page = await root.get("/admin/blocks")
    for domain, message in [
        ("http://beta.test", "is not a domain name"),
        ("beta.test:8080", "is not a domain name"),
        ("beta test", "is not a domain name"),
        ("-beta.test", "is not a domain name"),
        ("localhost", "is not a domain name with a dot"),
        ("", "Give a domain name"),
    ]:
        refused = await root.post(
            "/admin/blocks", {"csrf_token": page.csrf(), "domain": domain, "reason": "r"}
        )
        assert refused.status == 400, domain
        assert refused.has(message), (domain, message)
    assert await all_blocks(alpha) == []

    blocked = await root.post(
        "/admin/blocks",
        {"csrf_token": page.csrf(), "domain": " Beta.TEST. ", "reason": "<b>spam</b> & abuse"},
    )
    assert blocked.status == 303
    assert await all_blocks(alpha) == ["beta.test"]
    page = await root.get("/admin/blocks")
    assert "beta.test" in page.text
    assert "&lt;b&gt;spam&lt;/b&gt; &amp; abuse" in page.text  # escaped, never markup
    assert "<b>spam</b>" not in page.text

    # beta's next flattr reaches alpha's inbox over HTTP, is answered, and dropped.
    inbound_before = await count(alpha, InboundActivity)
    await beta.flattr(bob, f"@film@{alpha.host}")
    await federation.step_workers()
    assert await count(alpha, ReceivedLike) == 1
    assert await count(alpha, InboundActivity) == inbound_before
    delivered = await scalar(
        beta,
        select(WorkItem.state).where(WorkItem.kind == "deliver").order_by(WorkItem.id.desc()),
    )
    assert delivered == "done"  # beta learns nothing: its delivery was accepted

    unblocked = await root.post(
        "/admin/blocks/remove", {"csrf_token": page.csrf(), "domain": "beta.test"}
    )
    assert unblocked.status == 303
    assert await all_blocks(alpha) == []
    assert (
        await root.post("/admin/blocks/remove", {"csrf_token": page.csrf(), "domain": "beta.test"})
    ).status == 404


# --- instances and peering ---------------------------------------------------------------------


async def test_peering_by_domain_on_the_web_reads_the_peers_nodeinfo_and_sets_its_credit_limit(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    beta = await federation.start("beta")
    other_currency = await federation.start("gamma", currency="USD")
    root = await admin_of(alpha, visitors)
    page = await root.get("/admin/instances")
    assert page.has("No peers yet.")
    for host, message in [
        (f"{beta.host}/path", "is not a host name"),
        (f"user@{beta.host}", "is not a host name"),
        (f"http://{beta.host}", "is not a host name"),
        ("nowhere.test", "does not advertise flattrfed"),
        (other_currency.host, "clears in USD and this instance in EUR"),
        (alpha.host, "That is this instance itself"),
    ]:
        refused = await root.post(
            "/admin/instances",
            {"csrf_token": page.csrf(), "host": host, "credit_limit": "100.00"},
        )
        assert refused.status == 400, host
        assert refused.has(message), (host, message, refused.text[-2000:])
    refused = await root.post(
        "/admin/instances", {"csrf_token": page.csrf(), "host": beta.host, "credit_limit": "-1"}
    )
    assert refused.status == 400
    assert await count(alpha, Peer) == 0

    added = await root.post(
        "/admin/instances",
        {"csrf_token": page.csrf(), "host": beta.host, "credit_limit": "100.00", "note": "Bea"},
    )
    assert added.status == 303, added.text
    peer = await scalar(alpha, select(Peer))
    assert isinstance(peer, Peer)
    assert (peer.host, peer.clearing_actor) == (beta.host, beta.actor_uri("", "instance"))
    assert peer.credit_limit_minor == 10_000
    assert added.location == "/admin/instances?msg=peer-added"
    page = await root.get(added.location)
    assert page.has("The instance is a peer now.")
    assert beta.host in page.text
    assert 'value="100.00"' in page.text

    changed = await root.post(
        "/admin/instances/credit-limit",
        {"csrf_token": page.csrf(), "host": beta.host, "credit_limit": "250.50"},
    )
    assert changed.status == 303
    assert await scalar(alpha, select(Peer.credit_limit_minor)) == 25_050
    for limit, message in [("-5", "cannot be negative"), ("lots", "Give the credit limit in EUR")]:
        refused = await root.post(
            "/admin/instances/credit-limit",
            {"csrf_token": page.csrf(), "host": beta.host, "credit_limit": limit},
        )
        assert refused.status == 400
        assert refused.has(message)
    assert await scalar(alpha, select(Peer.credit_limit_minor)) == 25_050


async def test_statements_from_an_unpeered_instance_wait_and_are_answered_when_peered_on_the_web(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha", fee_bp=0)
    beta = await federation.start("beta", fee_bp=0)
    await beta.peer_with(alpha)  # alpha has not peered with beta yet
    owner = await alpha.create_member("owner")
    await alpha.create_thing(owner, "zine", "The zine")
    bob = await beta.create_donor("bob", budget=500, deposit=500)
    await beta.flattr(bob, f"@zine@{alpha.host}")
    await federation.step_workers()
    federation.clock.set(datetime(2026, 12, 2, 1, tzinfo=UTC))
    await federation.step_workers()
    november_in = november_statement("in")
    assert await scalar(alpha, november_in) is None

    root = await admin_of(alpha, visitors)
    page = await root.get("/admin/instances")
    waiting = page.text[page.text.index('id="waiting"') :]
    waiting = waiting[: waiting.index("</table>")]
    assert beta.host in waiting

    added = await root.post(
        "/admin/instances",
        {"csrf_token": page.csrf(), "host": beta.host, "credit_limit": "50.00"},
    )
    assert added.status == 303
    statement = await scalar(alpha, november_in)
    assert isinstance(statement, Statement)
    assert (statement.state, statement.total_minor) == ("accepted", 500)
    page = await root.get("/admin/instances")
    assert 'id="waiting"' not in page.text
    await federation.step_workers()  # alpha's Accept reaches beta
    assert await scalar(beta, november_statement("out").with_only_columns(Statement.state)) == (
        "accepted"
    )


async def test_the_instances_page_shows_what_each_side_owes_the_last_statements_and_pauses(
    federation: Federation, visitors: Visitors
) -> None:
    alpha, beta = await closed_month_between(federation)
    root = await admin_of(alpha, visitors)
    page = await root.get("/admin/instances")
    row = page.text[page.text.index(f'id="peer-{beta.host}"') :]
    row = row[: row.index("</tr>")]
    # 9.00 EUR over three things: alpha owes beta 3 x 3.00 until the settlement is paid.
    assert "9.00 EUR" in row
    assert "0.00 EUR" in row
    assert "sent 2026-11 r1</a>: accepted" in row
    assert "received 2026-11 r1</a>: accepted" in row  # beta's statement, with no lines
    assert "delivering" in row

    async with alpha.services.database.transaction() as session:
        session.add(
            FederationHost(
                host=beta.host,
                failure_days=7,
                last_failure_day="2026-12-01",
                last_error="HTTP 500",
                unavailable_since=federation.clock.now(),
            )
        )
    page = await root.get("/admin/instances")
    assert "<strong>paused</strong>" in page.text
    resumed = await root.post("/admin/hosts/resume", {"csrf_token": page.csrf(), "host": beta.host})
    assert resumed.status == 303
    host = await scalar(alpha, select(FederationHost).where(FederationHost.host == beta.host))
    assert isinstance(host, FederationHost)
    assert host.unavailable_since is None
    assert host.failure_days == 0
    page = await root.get(resumed.location)
    assert page.has("Delivery to that host is resumed.")
    assert "<strong>paused</strong>" not in page.text


# --- deliveries --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_the_deliveries_page_counts_failures_per_host_and_retry_now_makes_them_due(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    federation.resolver.add("down.test")  # a loopback name with nothing listening
    down = f"down.test:{free_port()}"
    services = alpha.services
    async with services.database.transaction() as session:
        actor = await ensure_instance_actor(session, services.urls, services.clock.now())
        for number in (1, 2):
            await enqueue_delivery(
                session,
                activity={"id": f"{alpha.base_url}/test/{number}", "type": "Announce"},
                actor_id=actor.id,
                inboxes=[f"http://{down}/inbox"],
                now=services.clock.now(),
            )
    assert await alpha.run_deliveries() == 2
    assert await alpha.run_deliveries() == 0  # both wait for their retry
    async with services.database.transaction() as session:
        await session.execute(
            update(WorkItem)
            .where(WorkItem.id == select(func.max(WorkItem.id)).scalar_subquery())
            .values(last_error="<script>alert(1)</script>")
        )

    root = await admin_of(alpha, visitors)
    page = await root.get("/admin/deliveries")
    row = page.text[page.text.index(f'id="host-{down}"') :]
    row = row[: row.index("</tr>")]
    assert '<td class="amount">2</td>' in row  # two waiting
    assert "failing on 1 day(s)" in row
    assert "connect" in row.lower()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text
    assert "<script>alert(1)" not in page.text
    assert "Announce" in page.text

    retried = await root.post("/admin/deliveries/retry", {"csrf_token": page.csrf(), "host": down})
    assert retried.status == 303
    assert await alpha.run_deliveries() == 2  # due at once, tried again
    attempts = await scalar(
        alpha, select(func.min(WorkItem.attempts)).where(WorkItem.kind == "deliver")
    )
    assert attempts == 2
    bad = await root.post(
        "/admin/deliveries/retry", {"csrf_token": page.csrf(), "host": "down.test/../x"}
    )
    assert bad.status == 400


# --- clearing and the check --------------------------------------------------------------------


async def test_closing_a_month_on_the_web_books_a_balanced_close_and_the_check_passes(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha", fee_bp=1000)
    owner = await alpha.create_member("owner")
    for handle in ("zine", "film"):
        await alpha.create_thing(owner, handle, f"The {handle}")
    ann = await alpha.create_donor("ann", budget=1001, deposit=2000)
    for handle in ("zine", "film"):
        await alpha.flattr(ann, f"@{handle}@{alpha.host}")
    root = await admin_of(alpha, visitors)

    page = await root.get("/admin/clearing")
    assert page.has("No month has been closed yet.")
    for period, status, message in [
        ("2026-11", 409, "2026-11 can be closed from 2026-12-0"),
        ("2026-13", 400, "is not a month like 2026-11"),
        ("soon", 400, "is not a month like 2026-11"),
    ]:
        refused = await root.post(
            "/admin/clearing/close", {"csrf_token": page.csrf(), "period": period}
        )
        assert refused.status == status, period
        assert refused.has(message), (period, refused.text[-2000:])
    assert await count(alpha, ClearingRun) == 0

    federation.clock.set(datetime(2026, 12, 3, tzinfo=UTC))
    page = await root.get("/admin/clearing")
    assert 'value="2026-11"' in page.text  # the month that can be closed is proposed
    closed = await root.post(
        "/admin/clearing/close", {"csrf_token": page.csrf(), "period": "2026-11"}
    )
    assert closed.status == 303, closed.text[-2000:]
    run = await scalar(alpha, select(ClearingRun))
    assert isinstance(run, ClearingRun)
    assert (run.period, run.stage, run.fee_bp) == ("2026-11", "done", 1000)
    async with alpha.services.database.sessions() as session:
        assert (
            await ledger.owed_to_member(session, ledger.wallet(ann.id)) == 1000
        )  # fee 1.00 + 2 x 4.50; the cent of carry stays
        assert await ledger.owed_to_member(session, ledger.earnings_available(owner.id)) == 900
        total = await session.scalar(select(func.sum(LedgerPosting.amount_minor)))
        assert int(total or 0) == 0
    page = await root.get("/admin/clearing")
    row = page.text[page.text.index('id="run-2026-11"') :]
    row = row[: row.index("</tr>")]
    # Debited 10.00 = fee 1.00 + shared out 9.00; the carried cent stayed in the wallet.
    for figure in ("done", ">10.00 EUR<", "1.00 EUR", "0.01 EUR", "9.00 EUR", "10.00 %"):
        assert figure in row, figure
    again = await root.post(
        "/admin/clearing/close", {"csrf_token": page.csrf(), "period": "2026-11"}
    )
    assert again.status == 409
    assert again.has("2026-11 is already closed")

    check = await root.get("/admin/check")
    assert check.status == 200
    assert check.has("Every check passed.")
    assert check.text.count(">passed<") >= 15
    assert ">failed<" not in check.text

    # A tampered cached balance shows as a failed check, naming the account.
    async with alpha.services.database.transaction() as session:
        await session.execute(
            update(LedgerAccount)
            .where(LedgerAccount.code == ledger.wallet(ann.id))
            .values(balance_minor=LedgerAccount.balance_minor - 1)
        )
    check = await root.get("/admin/check")
    assert check.has("check(s) failed")
    row = check.text[check.text.index('id="check-2-balance-cache"') :]
    row = row[: row.index("</tr>")]
    assert "<strong>failed</strong>" in row
    assert ledger.wallet(ann.id) in row


async def test_closing_refuses_clearly_while_another_runner_holds_the_close(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    root = await admin_of(alpha, visitors)
    federation.clock.set(datetime(2026, 12, 3, tzinfo=UTC))
    now = federation.clock.now()
    async with alpha.services.database.transaction() as session:
        session.add(
            ClearingRun(
                period="2026-11",
                stage="snapshot",
                cutoff=datetime(2026, 12, 1, tzinfo=UTC),
                fee_bp=0,
                currency="EUR",
                lease_owner="worker-job-7",
                lease_expires=now + timedelta(minutes=20),
                started_at=now,
            )
        )
    page = await root.get("/admin/clearing")
    assert "running (worker-job-7)" in page.text
    refused = await root.post(
        "/admin/clearing/close", {"csrf_token": page.csrf(), "period": "2026-11"}
    )
    assert refused.status == 409
    assert refused.has("The close of 2026-11 is running elsewhere (worker-job-7)")
    assert await scalar(alpha, select(ClearingRun.stage)) == "snapshot"


# --- statements and settlements ----------------------------------------------------------------


async def test_a_settlement_disputed_on_the_web_is_investigated_on_the_peer_instance_too(
    federation: Federation, visitors: Visitors
) -> None:
    alpha, beta = await closed_month_between(federation)
    async with beta.services.database.sessions() as session:
        (theirs,) = (await session.scalars(NOVEMBER)).all()
    assert theirs.state == "agreed"
    bea = await admin_of(beta, visitors, "bea")
    listing = await bea.get("/admin/settlements")
    assert f'action="/admin/settlements/{theirs.id}/dispute"' in listing.text
    empty = await bea.post(
        f"/admin/settlements/{theirs.id}/dispute", {"csrf_token": listing.csrf(), "reason": "  "}
    )
    assert empty.status == 400
    assert empty.has("Say what is wrong")

    reason = "No transfer by 16 Dec <script>"
    disputed = await bea.post(
        f"/admin/settlements/{theirs.id}/dispute", {"csrf_token": listing.csrf(), "reason": reason}
    )
    assert disputed.status == 303
    assert await scalar(beta, NOVEMBER_STATE) == "investigating"
    assert await scalar(alpha, NOVEMBER_STATE) == "agreed"
    await federation.step_workers()  # the PaymentDispute goes to alpha over HTTP
    async with alpha.services.database.sessions() as session:
        (ours,) = (await session.scalars(NOVEMBER)).all()
        events = (
            await session.scalars(
                select(SettlementEvent).where(SettlementEvent.settlement_id == ours.id)
            )
        ).all()
    assert ours.state == "investigating"
    [told] = [event for event in events if event.action == "disputed_by_peer"]
    assert told.actor == beta.actor_uri("", "instance")
    assert told.detail == {"reason": reason}

    alice = await admin_of(alpha, visitors, "alice")
    page = await alice.get("/admin/settlements")
    assert "disputed_by_peer by" in page.text
    assert "No transfer by 16 Dec &lt;script&gt;" in page.text
    # The payer can still pay an investigated settlement; a second dispute is refused.
    assert f'action="/admin/settlements/{ours.id}/paid"' in page.text
    again = await bea.post(
        f"/admin/settlements/{theirs.id}/dispute", {"csrf_token": listing.csrf(), "reason": "x"}
    )
    assert again.status == 400
    assert again.has("The settlement is investigating; nothing to dispute")


async def test_the_statement_page_shows_its_lines_totals_and_verification(
    federation: Federation, visitors: Visitors
) -> None:
    alpha, beta = await closed_month_between(federation)
    async with alpha.services.database.sessions() as session:
        sent = await session.scalar(november_statement("out"))
    async with beta.services.database.sessions() as session:
        received = await session.scalar(november_statement("in"))
    assert sent is not None
    assert received is not None
    alice = await admin_of(alpha, visitors, "alice")
    listing = await alice.get("/admin/settlements")
    assert f'href="/admin/statements/{sent.id}"' in listing.text

    page = await alice.get(f"/admin/statements/{sent.id}")
    assert page.status == 200
    assert 'id="statement-total">9.00 EUR' in page.text
    assert "<strong>matches</strong>" in page.text
    assert "<strong>agree</strong> — 3 lines summing to 9.00 EUR" in page.text
    assert 'id="verdict">accepted</strong>, accepting 9.00 EUR' in page.text
    for handle in ("pod", "zine", "song"):
        assert beta.actor_uri(handle, "thing") in page.text
    assert page.text.count("3.00 EUR</td>") == 3

    bea = await admin_of(beta, visitors, "bea")
    page = await bea.get(f"/admin/statements/{received.id}")
    assert "received from the peer" in page.text
    assert "<strong>matches</strong>" in page.text
    assert (await bea.get(f"/admin/statements/{received.id}", page="2")).has(
        "No lines on this page."
    )

    # A stored statement changed afterwards no longer matches its digest, and its totals disagree.
    document = dict(received.document)
    document["totals"] = {**document["totals"], "amount": "1000"}
    async with beta.services.database.transaction() as session:
        await session.execute(
            update(Statement).where(Statement.id == received.id).values(document=document)
        )
    page = await bea.get(f"/admin/statements/{received.id}")
    assert "does not match</strong> the stored document" in page.text
    assert '<strong class="error">disagree</strong> — the lines sum to 9.00 EUR' in page.text
    assert "the statement declares 10.00 EUR over 3" in page.text


async def test_statement_lines_are_shown_fifty_to_a_page(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    now = federation.clock.now()
    lines = [
        {
            "like": f"http://beta.test/likes/{number:02d}",
            "donor": f"http://beta.test/users/d{number:02d}",
            "object": f"{alpha.base_url}/things/pod",
            "amount": "100",
        }
        for number in range(51)
    ]
    # As stored for a statement this instance accepted: every line in statement_lines.
    document = {
        "id": "http://beta.test/settlement/2026-11/alpha/r1",
        "type": "SettlementStatement",
        "period": "2026-11",
        "lines": lines[:50],
        "totals": {"lines": 51, "amount": "5100", "pages": 2},
    }
    async with alpha.services.database.transaction() as session:
        statement = Statement(
            uri=str(document["id"]),
            direction="in",
            period="2026-11",
            peer_host="beta.test",
            revision=1,
            digest=st.statement_digest(document),
            document=document,
            total_minor=5100,
            line_count=51,
            state="accepted",
            response={"acceptedAmount": "5100", "disputed": []},
            created_at=now,
            responded_at=now,
        )
        session.add(statement)
        await session.flush()
        for position, line in enumerate(lines):
            session.add(
                StatementLine(
                    statement_id=statement.id,
                    position=position,
                    page=1 + position // 50,
                    like_uri=line["like"],
                    donor_uri=line["donor"],
                    object_uri=line["object"],
                    amount_minor=100,
                )
            )
    root = await admin_of(alpha, visitors)
    first = await root.get(f"/admin/statements/{statement.id}")
    assert first.text.count("1.00 EUR</td>") == 50
    assert f'href="/admin/statements/{statement.id}?page=2#lines-heading"' in first.text
    assert "<strong>agree</strong> — 51 lines summing to 51.00 EUR" in first.text
    assert "http://beta.test/likes/49" in first.text
    assert "http://beta.test/likes/50" not in first.text
    second = await root.get(f"/admin/statements/{statement.id}", page="2")
    assert second.text.count("1.00 EUR</td>") == 1
    assert "<td>51</td>" in second.text
    assert "http://beta.test/likes/50" in second.text
    assert "?page=3" not in second.text

    # A statement with only the lines of its document (not accepted) says so.
    async with alpha.services.database.transaction() as session:
        await session.execute(delete(StatementLine))
        await session.execute(
            update(Statement).where(Statement.id == statement.id).values(state="rejected")
        )
    page = await root.get(f"/admin/statements/{statement.id}")
    assert "Only the 50 lines inside the signed document are stored" in page.text
    assert "disagree" in page.text
    # A peer's document of any shape is shown, never a server error.
    async with alpha.services.database.transaction() as session:
        await session.execute(
            update(Statement)
            .where(Statement.id == statement.id)
            .values(document={"totals": "x", "lines": ["<b>", 3, {"amount": "-1"}]})
        )
    page = await root.get(f"/admin/statements/{statement.id}")
    assert page.status == 200
    assert "does not match</strong>" in page.text
    assert "<b>" not in page.text.split('id="lines"')[-1]
