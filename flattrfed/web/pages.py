"""Public pages that need no login: the front page and the health endpoint."""

from __future__ import annotations

from aiohttp import web
from sqlalchemy import text

from flattrfed import __version__
from flattrfed.context import SERVICES
from flattrfed.web.render import render

routes = web.RouteTableDef()


@routes.get("/health")
async def health(request: web.Request) -> web.Response:
    """Liveness and database reachability, for load balancers and `make run` users."""
    services = request.app[SERVICES]
    try:
        async with services.database.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception as error:
        body = {"status": "error", "database": type(error).__name__}
        return web.json_response(body, status=503)
    return web.json_response({"status": "ok", "version": __version__, "database": "ok"})


@routes.get("/")
async def front_page(request: web.Request) -> web.Response:
    return await render(request, "index.html", {})
