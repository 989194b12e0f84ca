"""The embeddable Flattr button: an iframe page any site may frame, and an SVG badge."""

from __future__ import annotations

from typing import Final
from xml.sax.saxutils import escape, quoteattr

import aiohttp_jinja2
from aiohttp import web
from sqlalchemy import select

from flattrfed.context import SERVICES
from flattrfed.db.models import LocalActor, Thing
from flattrfed.periods import Period
from flattrfed.web.profiles import Counts, flattr_counts

routes = web.RouteTableDef()

# Framable by any site, and nothing else: no scripts, no forms, styles and images only from us.
WIDGET_POLICY: Final = (
    "default-src 'none'; style-src 'self'; img-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors *"
)
# Counts change with every flattr, but a few minutes old is fine for a badge on a blog.
CACHE_SECONDS: Final = 300
SVG_TYPE: Final = "image/svg+xml"


async def _thing_and_counts(request: web.Request) -> tuple[LocalActor, Thing, Counts]:
    """The visible thing named in the URL and its counts; 404 for members and hidden things."""
    services = request.app[SERVICES]
    name = request.match_info["name"]
    async with services.database.sessions() as session:
        row = await session.scalar(
            select(LocalActor).where(LocalActor.username == name, LocalActor.kind == "thing")
        )
        thing = await session.get(Thing, row.thing_id) if row is not None else None
        if row is None or thing is None or thing.hidden or thing.deleted_at is not None:
            raise web.HTTPNotFound()
        counts = await flattr_counts(session, row.id, str(Period.of(services.clock.now())))
    return row, thing, counts


def _cacheable(response: web.StreamResponse) -> None:
    # Public: these answers are the same for every visitor and carry no session.
    response.headers["Cache-Control"] = f"public, max-age={CACHE_SECONDS}"


@routes.get("/@{name}/widget")
async def widget(request: web.Request) -> web.Response:
    """A tiny page for an iframe: the count and a button that opens the interaction page."""
    services = request.app[SERVICES]
    actor, thing, counts = await _thing_and_counts(request)
    base = services.settings.base_url
    response = aiohttp_jinja2.render_template(
        "widget.html",
        request,
        {
            "title": thing.title,
            "count": counts.this_month,
            "interact": f"{base}/@{actor.username}/interact",
            "stylesheet": f"{base}/static/widget.css",
        },
    )
    response.headers["Content-Security-Policy"] = WIDGET_POLICY
    _cacheable(response)
    return response


def badge_svg(title: str, count: int) -> str:
    """A "Flattr · N" badge: self-contained SVG, every text escaped, no external references."""
    label, number = "Flattr", str(count)
    # Widths from a rough 7 px per character of 12 px sans-serif, plus padding.
    left = 10 + 7 * len(label) + 8
    right = 10 + 7 * len(number) + 8
    width = left + right
    accessible = f"Flattr {title}: {count} flattr{'' if count == 1 else 's'} this month"
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="24" '
        f'viewBox="0 0 {width} 24" role="img" aria-label={quoteattr(accessible)}>'
        f"<title>{escape(accessible)}</title>"
        f'<rect width="{width}" height="24" rx="4" fill="#1a5e39"/>'
        f'<rect x="{left}" width="{right}" height="24" rx="4" fill="#ffffff" '
        f'stroke="#1a5e39" stroke-width="2"/>'
        f'<g font-family="Verdana, DejaVu Sans, sans-serif" font-size="12" font-weight="bold">'
        f'<text x="{left // 2}" y="16" fill="#ffffff" text-anchor="middle">{escape(label)}</text>'
        f'<text x="{left + right // 2}" y="16" fill="#1b1b1b" text-anchor="middle">'
        f"{escape(number)}</text></g></svg>"
    )


@routes.get("/@{name}/button.svg")
async def button_svg(request: web.Request) -> web.Response:
    """The no-JavaScript, no-iframe badge: flattrs this month, as an image."""
    _actor, thing, counts = await _thing_and_counts(request)
    response = web.Response(text=badge_svg(thing.title, counts.this_month), content_type=SVG_TYPE)
    # An SVG opened directly is a document: forbid scripts and embedding anything, just in case.
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    response.headers["X-Content-Type-Options"] = "nosniff"
    _cacheable(response)
    return response
