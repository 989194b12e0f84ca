"""Remote interaction: a visitor from another server flattrs one of our things from their own.

`/@name/interact` asks for the visitor's handle, finds their server's subscribe template
(`http://ostatus.org/schema/1.0/subscribe` in its WebFinger answer, as Mastodon's "interact"
dialog does) and sends them there with the thing's actor URI. Our own WebFinger advertises
`/authorize_interaction?uri={uri}`, which leads to our Flattr page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, unquote

from aiohttp import web
from yarl import URL

from flattrfed.activitypub.client import AddressRefusedError, FetchError
from flattrfed.activitypub.hosts import is_blocked
from flattrfed.activitypub.interactions import JRD_TYPES, Handle, parse_handle
from flattrfed.activitypub.origins import BadUri, origin_of
from flattrfed.context import SERVICES, Services
from flattrfed.db.models import Thing
from flattrfed.web.flattr_pages import MAX_INPUT, flattr_url
from flattrfed.web.profiles import visible_actor
from flattrfed.web.render import render
from flattrfed.web.security import CONTENT_SECURITY_POLICY

routes = web.RouteTableDef()

SUBSCRIBE_REL: Final = "http://ostatus.org/schema/1.0/subscribe"
HANDLE_COOKIE: Final = "flattrfed_remote_handle"
HANDLE_COOKIE_MAX_AGE: Final = 365 * 24 * 3600
# A name (at most 255) and a host with port (at most 253 + 6), with the two @.
MAX_HANDLE: Final = 520


class InteractionFailed(Exception):
    """The visitor's server could not be used; `message` is for them, `status` for the page."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


@dataclass(frozen=True)
class ThingInfo:
    username: str
    title: str
    description: str
    uri: str


async def _thing(request: web.Request) -> ThingInfo:
    services = request.app[SERVICES]
    actor = await visible_actor(request)
    if actor.kind != "thing":
        raise web.HTTPNotFound()
    async with services.database.sessions() as session:
        thing = await session.get(Thing, actor.thing_id)
    assert thing is not None
    return ThingInfo(
        actor.username,
        thing.title,
        thing.description,
        services.urls.actor(actor.kind, actor.username),
    )


def _page_policy(services: Services) -> str:
    """Our page policy, except that the form may end at the visitor's own server (it redirects
    there, and Chromium checks form-action on a form's redirects too)."""
    targets = "'self' https: http:" if services.settings.allow_http else "'self' https:"
    return CONTENT_SECURITY_POLICY.replace("form-action 'self'", f"form-action {targets}")


def _remembered(request: web.Request) -> str:
    raw = request.cookies.get(HANDLE_COOKIE, "")
    handle = parse_handle(unquote(raw[: MAX_HANDLE * 3])) if raw else None
    return str(handle) if handle is not None else ""


async def _page(
    request: web.Request,
    thing: ThingInfo,
    *,
    handle: str = "",
    error: str | None = None,
    status: int = 200,
) -> web.Response:
    context: dict[str, Any] = {
        "thing": thing,
        "handle": handle or _remembered(request),
        "error": error,
        "flattr_here": flattr_url(thing.uri),
        "max_handle": MAX_HANDLE,
    }
    response = await render(request, "interact.html", context, status=status)
    response.headers["Content-Security-Policy"] = _page_policy(request.app[SERVICES])
    return response


@routes.get("/@{name}/interact")
async def interact(request: web.Request) -> web.Response:
    return await _page(request, await _thing(request))


async def subscribe_template(services: Services, handle: Handle) -> str:
    """The visitor's server's interaction URL template, from WebFinger through our SSRF guard."""
    allow_http = services.settings.allow_http
    async with services.database.sessions() as session:
        if await is_blocked(session, handle.host.rsplit(":", 1)[0]):
            raise InteractionFailed(
                f"This instance does not federate with {handle.host}.", status=400
            )
    scheme = "http" if allow_http else "https"
    resource = quote(f"acct:{handle.name}@{handle.host}", safe=":@")
    url = f"{scheme}://{handle.host}/.well-known/webfinger?resource={resource}"
    try:
        document = await services.client.fetch_json(
            url, accept=JRD_TYPES[0], allowed_types=JRD_TYPES
        )
    except AddressRefusedError:
        raise InteractionFailed(
            f"{handle.host} is a private or reserved address; this instance does not contact it.",
            status=400,
        ) from None
    except FetchError as error:
        if error.reason in {"dns", "connect"}:
            message = f"Could not reach {handle.host}. Is the domain right?"
        elif error.status == 404:
            message = f"{handle.host} does not know {handle}. Is the name right?"
        else:
            message = f"{handle.host} did not answer the lookup of {handle} ({error.reason})."
        raise InteractionFailed(message, status=502) from None
    links = document.get("links")
    for link in links if isinstance(links, list) else []:
        if not isinstance(link, dict) or link.get("rel") != SUBSCRIBE_REL:
            continue
        template = link.get("template")
        if not isinstance(template, str) or "{uri}" not in template or len(template) > 2048:
            continue
        try:
            # Only a web address: never javascript:, data: or another scheme.
            origin_of(template.replace("{uri}", "x"), allow_http=allow_http)
        except BadUri:
            continue
        return template
    raise InteractionFailed(
        f"{handle.host} does not offer interaction from other servers "
        "(its WebFinger answer has no subscribe template). "
        "Look this thing up there by its handle instead.",
        status=502,
    )


@routes.post("/@{name}/interact")
async def interact_submit(request: web.Request) -> web.StreamResponse:
    services = request.app[SERVICES]
    thing = await _thing(request)
    form = await request.post()
    raw = form.get("handle")
    text = raw.strip() if isinstance(raw, str) else ""
    if len(text) > MAX_HANDLE:
        return await _page(request, thing, error="That handle is too long to be real.", status=400)
    handle = parse_handle(text)
    if handle is None:
        return await _page(
            request,
            thing,
            handle=text,
            error="That is not a fediverse handle: write it as @you@your.instance.",
            status=400,
        )
    if handle.host == services.settings.host:
        location = flattr_url(thing.uri)
    else:
        try:
            # The network lookup; nothing is written to our database for it.
            template = await subscribe_template(services, handle)
        except InteractionFailed as failed:
            return await _page(
                request, thing, handle=str(handle), error=failed.message, status=failed.status
            )
        location = template.replace("{uri}", quote(thing.uri, safe=""))
    # Already encoded: keep the thing's URI percent-encoded as the template's {uri} expects.
    redirect = web.HTTPSeeOther(URL(location, encoded=True))
    redirect.set_cookie(
        HANDLE_COOKIE,
        quote(str(handle), safe=""),
        max_age=HANDLE_COOKIE_MAX_AGE,
        path="/",
        httponly=True,
        samesite="Lax",
        secure=services.settings.scheme == "https",
    )
    raise redirect


@routes.get("/authorize_interaction")
async def authorize_interaction(request: web.Request) -> web.StreamResponse:
    """Mastodon's path for the subscribe template: the same as our Flattr page for `uri`."""
    uri = request.query.get("uri", "").strip()[:MAX_INPUT]
    raise web.HTTPFound(flattr_url(uri) if uri else "/flattr")
