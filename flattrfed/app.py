"""The composition root: create_app() builds one instance and wires every part together."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp_jinja2
import jinja2
from aiohttp import web
from aiohttp.abc import AbstractResolver

from flattrfed import __version__
from flattrfed.activitypub import endpoints, inbox, signatures
from flattrfed.activitypub.actors import ensure_instance_actor, signing_key
from flattrfed.activitypub.client import FederationClient, Signer
from flattrfed.activitypub.delivery import DELIVER_KIND, Deliverer
from flattrfed.activitypub.dispatch import Dispatcher
from flattrfed.activitypub.handlers import ProtocolHandlers
from flattrfed.activitypub.inbox_writer import INBOX_WRITER, InboxWriter
from flattrfed.activitypub.keys import KeyResolver
from flattrfed.activitypub.nodeinfo import NodeInfoCache
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.clock import Clock, SystemClock
from flattrfed.config import Settings
from flattrfed.context import SERVICES, Services
from flattrfed.db.migrate import ensure_schema_current
from flattrfed.db.session import Database
from flattrfed.flattring.claims import expire_pending, refresh_pending
from flattrfed.flattring.receiving import LikeReceiver
from flattrfed.paths import STATIC_DIR, TEMPLATES_DIR
from flattrfed.settlement.exchange import SettlementExchange
from flattrfed.settlement.schedule import (
    CLOSE_KIND,
    WATCH_KIND,
    CloseScheduler,
    SettlementWatch,
)
from flattrfed.web import (
    account,
    admin,
    admin_federation,
    admin_settlement,
    auth,
    creator,
    dashboard,
    discover,
    export,
    flattr_pages,
    pages,
    profiles,
    remote,
    security,
    wallet,
    widget,
)
from flattrfed.worker import Worker

log = logging.getLogger(__name__)


class InstanceSigner:
    """The instance actor's key, loaded once: it signs our fetches (authorized-fetch peers)."""

    def __init__(self, database: Database, urls: LocalUrls, clock: Clock) -> None:
        self.database = database
        self.urls = urls
        self.clock = clock
        self._signer: Signer | None = None

    async def __call__(self) -> Signer:
        if self._signer is None:
            async with self.database.transaction() as session:
                actor = await ensure_instance_actor(session, self.urls, self.clock.now())
                key = await signing_key(session, self.urls, actor)
            private_key = signatures.load_private_key_pem(key.private_key_pem)
            self._signer = Signer(key.key_id, private_key)
        return self._signer

    def forget(self) -> None:
        self._signer = None


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
    urls = LocalUrls(settings.base_url)
    client = FederationClient(
        allowed_networks=settings.allowed_private_addresses,
        allow_http=settings.allow_http,
        clock=clock,
        resolver=resolver,
        user_agent=f"flattrfed/{__version__} (+{settings.base_url}/)",
    )
    instance_signer = InstanceSigner(database, urls, clock)
    keys = KeyResolver(database, client, instance_signer, clock, allow_http=settings.allow_http)
    dispatcher = Dispatcher(database, clock)
    protocol = ProtocolHandlers(database, clock, urls, keys, allow_http=settings.allow_http)
    protocol.register(dispatcher)
    likes = LikeReceiver(database, clock, urls)
    likes.register(dispatcher)
    protocol.undo_reference_fallback = likes.on_undo_reference
    deliverer = Deliverer(database, client, clock, urls, allow_http=settings.allow_http)

    async def before_close() -> None:
        """Claims made since the last look release their pending flattrs; old ones expire."""
        try:
            await refresh_pending(services)
        except Exception:
            log.exception("checking claims before the close failed; closing anyway")
        async with database.transaction() as session:
            await expire_pending(session, clock.now(), settings.pending_expiry_months)

    exchange = SettlementExchange(database, clock, settings, urls, client, keys)
    exchange.register(dispatcher)
    scheduler = CloseScheduler(database, clock, settings, before_close, exchange.issue_statements)
    watch = SettlementWatch(database, clock, exchange.daily)
    worker = Worker(
        database,
        clock,
        {
            inbox.INBOUND_KIND: dispatcher.handle,
            DELIVER_KIND: deliverer.handle,
            CLOSE_KIND: scheduler.handle,
            WATCH_KIND: watch.handle,
        },
        # A batch's Likes in one transaction; its deliveries concurrently.
        batch_handlers={
            inbox.INBOUND_KIND: dispatcher.handle_batch,
            DELIVER_KIND: deliverer.handle_batch,
        },
    )

    async def prepare() -> None:
        await ensure_schema_current(database.engine)
        async with database.transaction() as session:
            await ensure_instance_actor(session, urls, clock.now())
        await scheduler.schedule_open_periods()
        await watch.schedule()

    services = Services(
        settings=settings,
        database=database,
        clock=clock,
        worker=worker,
        urls=urls,
        client=client,
        keys=keys,
        dispatcher=dispatcher,
        nodeinfo=NodeInfoCache(client, allow_http=settings.allow_http),
        exchange=exchange,
        prepare=prepare,
    )

    app = web.Application(client_max_size=inbox.MAX_BODY_BYTES)
    app[SERVICES] = services
    inbox_writer = InboxWriter(database, clock)
    app[INBOX_WRITER] = inbox_writer
    app.middlewares.append(security.middleware())
    aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(str(TEMPLATES_DIR)),
        autoescape=jinja2.select_autoescape(default=True),
    )
    app.router.add_routes(pages.routes)
    app.router.add_routes(profiles.routes)
    app.router.add_routes(widget.routes)
    app.router.add_routes(remote.routes)
    app.router.add_routes(discover.routes)
    app.router.add_routes(auth.routes)
    app.router.add_routes(account.routes)
    app.router.add_routes(export.routes)
    app.router.add_routes(creator.routes)
    app.router.add_routes(dashboard.routes)
    app.router.add_routes(flattr_pages.routes)
    app.router.add_routes(wallet.routes)
    app.router.add_routes(admin.routes)
    app.router.add_routes(admin_federation.routes)
    app.router.add_routes(admin_settlement.routes)
    app.router.add_routes(endpoints.routes)
    app.router.add_routes(inbox.routes)
    if STATIC_DIR.is_dir():
        app.router.add_static("/static/", STATIC_DIR, name="static")

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await prepare()
        stop = asyncio.Event()
        task: asyncio.Task[None] | None = None
        if settings.worker_in_process:
            task = asyncio.create_task(worker.run_forever(stop), name="flattrfed-worker")
        log.info("instance started", extra={"base_url": settings.base_url})
        yield
        stop.set()
        if task is not None:
            await task
        await inbox_writer.close()  # the server has stopped taking requests: write what is queued
        await client.close()
        await database.dispose()

    app.cleanup_ctx.append(lifecycle)
    return app
