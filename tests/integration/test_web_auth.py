"""Web sessions over real HTTP: sign-up by policy, log in and out, passwords, CSRF, rate limit."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select

from flattrfed.db.models import Member
from flattrfed.flattring.members import create_invite
from flattrfed.flattring.policy import update_policy
from flattrfed.web.security import COOKIE_NAME
from tests.harness.instances import Federation, Instance
from tests.integration.test_web_support import PASSWORD, Visitors


async def set_registration(instance: Instance, mode: str) -> None:
    services = instance.services
    async with services.database.transaction() as session:
        await update_policy(session, services.settings, services.clock.now(), registration=mode)


async def member_named(instance: Instance, username: str) -> Member | None:
    async with instance.services.database.sessions() as session:
        return await session.scalar(select(Member).where(Member.username == username))


NEW_PASSWORD = "a long enough password"


def signup_form(username: str, password: str = NEW_PASSWORD) -> dict[str, str]:
    return {"username": username, "password": password, "password_again": password}


async def test_open_sign_up_logs_in_with_a_safe_session_cookie(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    ann = visitors(alpha)
    form = await ann.get("/signup")
    assert form.status == 200
    assert 'for="username"' in form.text
    assert 'id="username"' in form.text
    response = await ann.post("/signup", {"csrf_token": form.csrf(), **signup_form("Ann")})
    assert response.status == 303
    assert response.location == "/dashboard?msg=welcome"
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith(f"{COOKIE_NAME}=")
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Path=/" in cookie
    assert "Secure" not in cookie  # http://alpha.test: a Secure cookie would never come back
    member = await member_named(alpha, "ann")
    assert member is not None
    assert member.approved_at is not None

    dashboard = await ann.get("/dashboard", follow=False)
    assert dashboard.status == 200
    assert dashboard.has("Hello, ann")
    assert dashboard.headers["Cache-Control"] == "private, no-store"
    assert "frame-ancestors 'none'" in dashboard.headers["Content-Security-Policy"]


async def test_the_cookie_is_secure_when_the_instance_is_served_over_https(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha", base_url="https://alpha.test")
    # The instance believes it is behind https (a TLS proxy); we talk to its port directly.
    async with visitors(alpha).session.get(f"http://{alpha.host}/login") as response:
        assert response.status == 200
        cookie = response.headers["Set-Cookie"]
    assert "Secure" in cookie
    assert "HttpOnly" in cookie


async def test_sign_up_problems_are_shown_on_the_form(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    await alpha.create_member("taken")
    ann = visitors(alpha)
    for fields, message in [
        (signup_form("taken"), "is taken"),
        (signup_form("ann", "short"), "at least 10 characters"),
        (signup_form("no spaces"), "is not valid"),
        ({**signup_form("ann"), "password_again": "something else"}, "not the same"),
    ]:
        page = await ann.submit("/signup", fields, form_page="/signup")
        assert page.status == 400, fields
        assert page.has(message), (message, page.text)
    assert await member_named(alpha, "ann") is None


async def test_approval_mode_waits_for_an_admin_to_approve(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    await set_registration(alpha, "approval")
    await alpha.create_member("root", admin=True)
    ann = visitors(alpha)
    page = await ann.submit("/signup", signup_form("ann"), form_page="/signup")
    assert page.status == 200
    assert page.has("approves new accounts")
    assert ann.cookie() is not None
    assert (await ann.get("/dashboard", follow=False)).status == 303  # not logged in

    refused = await ann.submit("/login", {"username": "ann", "password": "a long enough password"})
    assert refused.status == 401
    assert refused.has("waiting for an admin")

    root = visitors(alpha)
    await root.log_in("root")
    admin_page = await root.get("/admin")
    member = await member_named(alpha, "ann")
    assert member is not None
    assert f"/admin/members/{member.id}/approve" in admin_page.text
    approved = await root.post(
        f"/admin/members/{member.id}/approve", {"csrf_token": admin_page.csrf()}
    )
    assert approved.status == 303
    await ann.log_in("ann", "a long enough password")
    assert (await ann.get("/dashboard", follow=False)).status == 200


async def test_invite_mode_needs_an_unused_code_and_closed_mode_takes_nobody(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    await set_registration(alpha, "invite")
    async with alpha.services.database.transaction() as session:
        invite = await create_invite(session, None, alpha.services.clock.now())
        code = invite.code
    ann = visitors(alpha)
    form = await ann.get("/signup")
    assert 'id="invite"' in form.text
    page = await ann.submit(
        "/signup", {**signup_form("ann"), "invite": "wrong"}, form_page="/signup"
    )
    assert page.status == 400
    assert page.has("valid, unused invite code")
    page = await ann.submit("/signup", {**signup_form("ann"), "invite": code}, form_page="/signup")
    assert page.status == 303
    bob = visitors(alpha)
    page = await bob.submit("/signup", {**signup_form("bob"), "invite": code}, form_page="/signup")
    assert page.status == 400  # used up

    # Admins make codes on the members page; the sign-up link carries the code.
    await alpha.create_member("root", admin=True)
    root = visitors(alpha)
    await root.log_in("root")
    members = await root.get("/admin")
    assert members.has("Registration on this instance: <strong>invite</strong>")
    made = await root.post("/admin/invites", {"csrf_token": members.csrf()})
    assert made.status == 200
    match = re.search(r'id="invite-code">([^<]+)<', made.text)
    assert match is not None
    dora = visitors(alpha)
    form = await dora.get("/signup", invite=match.group(1))
    assert f'value="{match.group(1)}"' in form.text
    page = await dora.post(
        "/signup", {"csrf_token": form.csrf(), "invite": match.group(1), **signup_form("dora")}
    )
    assert page.status == 303

    await set_registration(alpha, "closed")
    carol = visitors(alpha)
    form = await carol.get("/signup")
    assert form.status == 403
    assert form.has("does not take new members")
    assert 'id="password"' not in form.text
    page = await carol.submit("/signup", signup_form("carol"))
    assert page.status == 403
    assert await member_named(alpha, "carol") is None


async def test_log_in_and_log_out(federation: Federation, visitors: Visitors) -> None:
    alpha = await federation.start("alpha")
    await alpha.create_member("ann")
    ann = visitors(alpha)
    anonymous = await ann.get("/dashboard", follow=False)
    assert anonymous.status == 303
    assert anonymous.location == "/login?next=/dashboard"

    wrong = await ann.submit("/login", {"username": "ann", "password": "not it at all"})
    assert wrong.status == 401
    assert wrong.has("Wrong username or password")
    missing = await ann.submit("/login", {"username": "nobody", "password": "not it at all"})
    assert missing.status == 401
    assert missing.has("Wrong username or password")  # the same answer: no user enumeration

    anonymous_cookie = ann.cookie()
    page = await ann.submit("/login", {"username": "ANN", "password": PASSWORD, "next": "/wallet"})
    assert page.status == 303
    assert page.location == "/wallet?msg=logged-in"
    assert ann.cookie() != anonymous_cookie  # a new session id on log-in: no fixation
    assert (await ann.get("/wallet", follow=False)).status == 200

    dashboard = await ann.get("/dashboard")
    out = await ann.post("/logout", {"csrf_token": dashboard.csrf()})
    assert out.status == 303
    assert (await ann.get("/dashboard", follow=False)).status == 303


async def test_log_in_never_redirects_to_another_site(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    await alpha.create_member("ann")
    for target in ["https://evil.example/", "//evil.example/x", "/\\evil.example", "javascript:x"]:
        ann = visitors(alpha)
        page = await ann.submit("/login", {"username": "ann", "password": PASSWORD, "next": target})
        assert page.status == 303
        assert page.location == "/dashboard?msg=logged-in", target


async def test_a_tampered_or_foreign_cookie_is_an_anonymous_visitor(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    beta = await federation.start("beta")
    ann_member = await alpha.create_member("ann")
    await alpha.create_member("bob")
    ann = visitors(alpha)
    await ann.log_in("ann")
    value = ann.cookie()
    assert value is not None
    member_id, issued, sid, mac = value.split(".")
    assert member_id == str(ann_member.id)

    mallory = visitors(alpha, keep_cookies=False)  # sends only the Cookie headers below
    forged = f"{int(member_id) + 1}.{issued}.{sid}.{mac}"  # bob's id under ann's MAC
    async with mallory.session.get(
        alpha.url("/dashboard"),
        headers={"Cookie": f"{COOKIE_NAME}={forged}"},
        allow_redirects=False,
    ) as response:
        assert response.status == 303
    # beta has another secret key: ann's cookie from alpha means nothing there.
    await beta.create_member("ann")
    async with mallory.session.get(
        beta.url("/dashboard"), headers={"Cookie": f"{COOKIE_NAME}={value}"}, allow_redirects=False
    ) as response:
        assert response.status == 303
    # The genuine cookie works, and sessions expire after 30 days.
    async with mallory.session.get(
        alpha.url("/dashboard"), headers={"Cookie": f"{COOKIE_NAME}={value}"}, allow_redirects=False
    ) as response:
        assert response.status == 200
    federation.clock.advance(timedelta(days=31))
    async with mallory.session.get(
        alpha.url("/dashboard"), headers={"Cookie": f"{COOKIE_NAME}={value}"}, allow_redirects=False
    ) as response:
        assert response.status == 303


async def test_a_password_change_ends_the_other_sessions(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    await alpha.create_member("ann")
    laptop, phone = visitors(alpha), visitors(alpha)
    await laptop.log_in("ann")
    await phone.log_in("ann")

    settings = await laptop.get("/settings")
    assert settings.status == 200
    wrong = await laptop.post(
        "/settings/password",
        {
            "csrf_token": settings.csrf(),
            "current_password": "not my password",
            "new_password": "a brand new password",
            "new_password_again": "a brand new password",
        },
    )
    assert wrong.status == 400
    assert wrong.has("The current password is wrong")
    changed = await laptop.post(
        "/settings/password",
        {
            "csrf_token": settings.csrf(),
            "current_password": PASSWORD,
            "new_password": "a brand new password",
            "new_password_again": "a brand new password",
        },
    )
    assert changed.status == 303
    assert (await laptop.get("/settings", follow=False)).status == 200  # this session lives on
    assert (await phone.get("/settings", follow=False)).status == 303  # the other one ended

    again = visitors(alpha)
    assert (await again.submit("/login", {"username": "ann", "password": PASSWORD})).status == 401
    await again.log_in("ann", "a brand new password")


async def test_log_in_is_rate_limited_per_address_and_username(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    await alpha.create_member("ann")
    await alpha.create_member("bob")
    mallory = visitors(alpha)
    for _ in range(5):
        page = await mallory.submit("/login", {"username": "ann", "password": "guess guess guess"})
        assert page.status == 401
    blocked = await mallory.submit("/login", {"username": "ann", "password": PASSWORD})
    assert blocked.status == 429  # even the right password is not tried now
    assert blocked.has("Too many failed attempts")
    assert int(blocked.headers["Retry-After"]) > 0
    assert (await mallory.get("/dashboard", follow=False)).status == 303

    # Another username from the same address is not blocked by ann's failures.
    await visitors(alpha).log_in("bob")

    federation.clock.advance(timedelta(minutes=15, seconds=1))
    await mallory.log_in("ann")
    assert (await mallory.get("/dashboard", follow=False)).status == 200


async def test_no_form_works_without_its_csrf_token(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    await alpha.create_member("root", admin=True)
    root = visitors(alpha)
    await root.log_in("root")
    other = visitors(alpha)
    foreign_token = await other.token()  # a valid token, of somebody else's session

    post_routes = sorted(
        {
            route.resource.canonical
            for route in alpha.app.router.routes()
            if route.method == "POST"
            and route.resource is not None
            and not route.resource.canonical.endswith("/inbox")
        }
    )
    assert "/login" in post_routes
    assert "/admin/deposits" in post_routes
    assert "/flattr" in post_routes
    assert len(post_routes) >= 14
    for canonical in post_routes:
        path = (
            canonical.replace("{flattr_id}", "1")
            .replace("{member_id}", "1")
            .replace("{payout_id}", "1")
            .replace("{settlement_id}", "1")
            .replace("{claim_id}", "1")
            .replace("{thing_id}", "1")
            .replace("{name}", "root")
        )
        assert "{" not in path, canonical
        for fields in (
            {},
            {"csrf_token": ""},
            {"csrf_token": "forged"},
            {"csrf_token": foreign_token},
        ):
            page = await root.post(path, fields)
            assert page.status == 403, (path, fields, page.status)
            assert page.has("security token")

    # With its own token the same session gets through (here: logging out works).
    dashboard = await root.get("/dashboard")
    assert (await root.post("/logout", {"csrf_token": dashboard.csrf()})).status == 303


async def test_inboxes_do_not_ask_for_csrf_tokens(federation: Federation) -> None:
    alpha = await federation.start("alpha")
    client = federation.client()
    async with client.post(
        alpha.url("/inbox"),
        data=b"{}",
        headers={"Content-Type": "application/activity+json"},
    ) as response:
        assert response.status != 403
        assert response.status in {400, 401}  # refused as an activity, not for a CSRF token
