"""Signing up, logging in and out, and changing the password."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from yarl import URL

from flattrfed.context import SERVICES
from flattrfed.db.models import Member
from flattrfed.flattring.members import (
    MIN_PASSWORD_LENGTH,
    MemberError,
    authenticate,
    change_password,
    register,
)
from flattrfed.flattring.policy import current_policy
from flattrfed.web.account import settings_page
from flattrfed.web.render import render, sentence
from flattrfed.web.security import (
    LIMITER_KEY,
    client_address,
    current_member,
    log_in,
    log_out,
    require_member,
    safe_next,
)

routes = web.RouteTableDef()


def _text(form: Any, name: str, limit: int = 1024) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def _redirect(path: str, msg: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(str(URL(path).update_query(msg=msg)))


async def _registration(request: web.Request) -> str:
    services = request.app[SERVICES]
    async with services.database.transaction() as session:
        policy = await current_policy(session, services.settings, services.clock.now())
    return policy.registration


# --- logging in and out ------------------------------------------------------------------------


@routes.get("/login")
async def login_form(request: web.Request) -> web.StreamResponse:
    next_path = safe_next(request.query.get("next"))
    if await current_member(request) is not None:
        raise web.HTTPSeeOther(next_path)
    return await render(request, "login.html", {"next": next_path, "username": ""})


@routes.post("/login")
async def login(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    form = await request.post()
    username = _text(form, "username", 100).strip().lower()
    password = _text(form, "password")
    next_path = safe_next(form.get("next"))
    limiter = request[LIMITER_KEY]
    key = (client_address(request), username)
    now = services.clock.now()
    context: dict[str, Any] = {"next": next_path, "username": username}
    if limiter.blocked(key, now):
        wait = limiter.retry_after(key, now)
        minutes = max(1, (wait + 59) // 60)
        context["error"] = (
            f"Too many failed attempts. Try again in {minutes} minute{'s' if minutes > 1 else ''}."
        )
        response = await render(request, "login.html", context, status=429)
        response.headers["Retry-After"] = str(wait)
        return response
    try:
        async with services.database.transaction() as session:
            member = await authenticate(session, username, password)
    except MemberError as error:
        limiter.failed(key, now)
        context["error"] = sentence(error)
        return await render(request, "login.html", context, status=401)
    limiter.succeeded(key)
    log_in(request, member)
    raise _redirect(next_path, "logged-in")


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    log_out(request)
    raise _redirect("/", "logged-out")


# --- signing up --------------------------------------------------------------------------------


@routes.get("/signup")
async def signup_form(request: web.Request) -> web.StreamResponse:
    if await current_member(request) is not None:
        raise web.HTTPSeeOther("/dashboard")
    registration = await _registration(request)
    return await render(
        request,
        "signup.html",
        {
            "registration": registration,
            "username": "",
            "invite": request.query.get("invite", "")[:64],
            "min_password": MIN_PASSWORD_LENGTH,
        },
        status=403 if registration == "closed" else 200,
    )


@routes.post("/signup")
async def signup(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    form = await request.post()
    username = _text(form, "username", 100).strip().lower()
    password = _text(form, "password")
    invite = _text(form, "invite", 64).strip()
    registration = await _registration(request)
    context: dict[str, Any] = {
        "registration": registration,
        "username": username,
        "invite": invite,
        "min_password": MIN_PASSWORD_LENGTH,
    }
    if registration == "closed":
        return await render(request, "signup.html", context, status=403)
    if password != _text(form, "password_again"):
        context["error"] = "The two passwords are not the same."
        return await render(request, "signup.html", context, status=400)
    try:
        async with services.database.transaction() as session:
            member = await register(
                session,
                username=username,
                password=password,
                registration=registration,
                now=services.clock.now(),
                invite_code=invite or None,
            )
    except MemberError as error:
        context["error"] = sentence(error)
        return await render(request, "signup.html", context, status=400)
    if member.approved_at is None:
        return await render(request, "signup_waiting.html", {"username": member.username})
    log_in(request, member)
    raise _redirect("/dashboard", "welcome")


# --- the password ------------------------------------------------------------------------------


@routes.post("/settings/password")
async def password_change(request: web.Request) -> web.StreamResponse:
    member = await require_member(request)
    services = request.app[SERVICES]
    form = await request.post()
    new = _text(form, "new_password")
    if new != _text(form, "new_password_again"):
        mismatch = "The two new passwords are not the same."
        return await settings_page(request, member, status=400, password_error=mismatch)
    try:
        async with services.database.transaction() as session:
            row = await session.get(Member, member.id)
            assert row is not None
            await change_password(session, row, _text(form, "current_password"), new)
    except MemberError as error:
        return await settings_page(request, member, status=400, password_error=sentence(error))
    # The session's MAC covers the password hash: this one is renewed, every other one ends.
    log_in(request, row)
    raise web.HTTPSeeOther(
        str(URL("/settings").with_query(msg="password").with_fragment("password-heading"))
    )
