"""Export my data: the member's own data as a streamed JSON download (GET /settings/export)."""

from __future__ import annotations

from aiohttp import web

from flattrfed.context import SERVICES
from flattrfed.db.models import Member
from flattrfed.flattring.accounts import export_chunks
from flattrfed.web.security import require_member

routes = web.RouteTableDef()


@routes.get("/settings/export")
async def export(request: web.Request) -> web.StreamResponse:
    # Only ever the logged-in member's own data: there is no id in the URL to tamper with.
    member = await require_member(request)
    services = request.app[SERVICES]
    now = services.clock.now()
    filename = f"flattrfed-{member.username}-{now.strftime('%Y-%m-%d')}.json"
    response = web.StreamResponse(
        headers={
            "Content-Type": "application/json; charset=utf-8",
            "Content-Disposition": f'attachment; filename="{filename}"',
            "Cache-Control": "private, no-store",
            "X-Content-Type-Options": "nosniff",
        }
    )
    async with services.database.sessions() as session:
        row = await session.get(Member, member.id)
        assert row is not None
        await response.prepare(request)
        async for chunk in export_chunks(
            session, services.urls, row, currency=services.settings.currency, now=now
        ):
            await response.write(chunk.encode("utf-8"))
    await response.write_eof()
    return response
