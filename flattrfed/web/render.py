"""Rendering pages: the context every page shares (who is logged in, the CSRF token, amounts)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import aiohttp_jinja2
from aiohttp import web

from flattrfed.context import SERVICES
from flattrfed.db.models import Member
from flattrfed.money import Money
from flattrfed.web.security import get_session, require_member

# Notices shown after a form redirected (?msg=CODE): fixed texts, never text from the URL.
NOTICES: Final[Mapping[str, str]] = {
    "welcome": "Welcome! Set a monthly budget and top up your wallet to start flattring.",
    "logged-in": "You are logged in.",
    "logged-out": "You are logged out.",
    "password": "Your password was changed. Other sessions of yours were logged out.",
    "profile": "Your profile was saved.",
    "claim-verified": "The identity is verified as yours. Flattrs waiting for it are released.",
    "flattred": "Flattred. It counts in this month's split.",
    "flattred-pending": "Flattred. It is pending until its creator joins flattrfed.",
    "undone": "The flattr was undone.",
    "followed": "Followed. Their posts and new things show up in Discover.",
    "unfollowed": "You no longer follow this.",
    "budget": "Your monthly budget was saved.",
    "budget-removed": "Your monthly budget was removed: you cannot flattr until you set one.",
    "deposit": "Here is your deposit reference. Use it for one transfer.",
    "payout": "Your payout was requested. An admin pays it by bank transfer.",
    "recorded": "The deposit was recorded and the wallet credited.",
    "approved": "The member was approved.",
    "payout-paid": "The payout was marked paid.",
    "settlement-paid": "The settlement was marked paid and the peer was told.",
    "settlement-confirmed": "The settlement was confirmed and the peer was told.",
    "settlement-disputed": "The settlement is under investigation and the peer was told.",
    "policy-saved": "The policy was saved. It applies from now on.",
    "peer-added": "The instance is a peer now. Statements it sent before were checked.",
    "credit-limit": "The credit limit was saved.",
    "resumed": "Delivery to that host is resumed.",
    "retrying": "That host's waiting deliveries are due now; the worker sends them next.",
    "blocked": "The domain is blocked: its activities are dropped and nothing is sent to it.",
    "unblocked": "The domain is no longer blocked.",
    "closed": "The month is closed. Its statements go out with the worker's close job.",
    "thing-created": "Your thing was created. People can now follow and flattr it.",
    "thing-saved": "Your thing was saved and its followers were told.",
    "thing-hidden": "The thing is hidden: it cannot be found, followed or flattred.",
    "thing-shown": "The thing is shown again.",
    "thing-deleted": "The thing was deleted and its followers were told.",
    "posted": "Your post was published to your followers.",
    "closing-payout": "Your closing payout was requested. An admin pays it by bank transfer.",
    "account-deleted": "Your account was deleted. Its username stays reserved.",
}


def money_formatter(currency: str) -> Callable[[int | None], str]:
    def money(minor: int | None) -> str:
        return "—" if minor is None else Money(int(minor), currency).format()

    return money


async def base_context(request: web.Request) -> dict[str, Any]:
    services = request.app[SERVICES]
    session = await get_session(request)
    return {
        "settings": services.settings,
        "me": session.member,
        "csrf_token": session.csrf_token,
        "money": money_formatter(services.settings.currency),
        "notice": NOTICES.get(request.query.get("msg", "")),
        "current_path": request.path,
    }


async def render(
    request: web.Request, template: str, context: Mapping[str, Any], *, status: int = 200
) -> web.Response:
    full = await base_context(request)
    full.update(context)
    return aiohttp_jinja2.render_template(template, request, full, status=status)


async def message_page(
    request: web.Request, title: str, message: str, *, status: int = 400, back: str | None = None
) -> web.Response:
    """A short page that says what went wrong (or what happened), with a way back."""
    return await render(
        request,
        "message.html",
        {"title": title, "message": message, "back": back},
        status=status,
    )


async def forbidden(request: web.Request, message: str) -> web.HTTPForbidden:
    context = await base_context(request)
    context.update({"title": "Not allowed", "message": message, "back": "/"})
    html = aiohttp_jinja2.render_string("message.html", request, context)
    return web.HTTPForbidden(text=html, content_type="text/html")


async def require_admin(request: web.Request) -> Member:
    """The logged-in admin; other members get 403, anonymous visitors the log-in page."""
    member = await require_member(request)
    if not member.is_admin:
        raise await forbidden(request, "This page is for the instance's admins.")
    return member


def sentence(error: Exception | str) -> str:
    """An error message as a sentence: first letter up, a full stop (the rest untouched)."""
    text = str(error).strip()
    if not text:
        return "Something went wrong."
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."
