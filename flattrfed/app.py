"""The composition root: create_app() builds one instance and wires every part together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.abc import AbstractResolver

from flattrfed.clock import Clock, SystemClock
from flattrfed.config import Settings
from flattrfed.context import SERVICES, Services
from flattrfed.db.migrate import ensure_schema_current
from flattrfed.db.session import Database
from flattrfed.paths import STATIC_DIR, TEMPLATES_DIR
from flattrfed.web import pages
from flattrfed.worker import Worker

log = logging.getLogger(__name__)


def create_app(
    settings: Settings,
    *,
    clock: Clock | None = None,
    database: Database | None = None,
    resolver: AbstractResolver | None = None,
) -> web.Application:
    """One flattrfed instance as an aiohttp application (not yet listening)."""
    clock = clock or SystemClock()
    database = database or Database(settings.database_url)
    worker = Worker(database, clock, {})
    services = Services(
        settings=settings, database=database, clock=clock, worker=worker, resolver=resolver
    )

    app = web.Application(client_max_size=1024 * 1024)
    app[SERVICES] = services
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=jinja2.select_autoescape(default=True),
    )
    app.router.add_routes(pages.routes)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR, name="static")

    app.cleanup_ctx.append(_lifecycle)
    return app


async def _lifecycle(app: web.Application) -> AsyncIterator[None]:
    services = app[SERVICES]
    await ensure_schema_current(services.database.engine)
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    if services.settings.worker_in_process:
        task = asyncio.create_task(services.worker.run_forever(stop), name="flattrfed-worker")
    log.info("instance started", extra={"base_url": services.settings.base_url})
    yield
    stop.set()
    if task is not None:
        await task
    await services.database.dispose()
