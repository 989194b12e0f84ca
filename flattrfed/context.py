"""The services one instance shares between its handlers, stored on the aiohttp application."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from flattrfed.activitypub.client import FederationClient
from flattrfed.activitypub.dispatch import Dispatcher
from flattrfed.activitypub.keys import KeyResolver
from flattrfed.activitypub.nodeinfo import NodeInfoCache
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.clock import Clock
from flattrfed.config import Settings
from flattrfed.db.session import Database
from flattrfed.worker import Worker

if TYPE_CHECKING:
    # Only for the annotation: activitypub/ reads SERVICES, and importing settlement at run
    # time from here would make the protocol layer load the money code (DESIGN §5).
    from flattrfed.settlement.exchange import SettlementExchange


@dataclass
class Services:
    """Everything a request handler may need; built once by app.create_app()."""

    settings: Settings
    database: Database
    clock: Clock
    worker: Worker
    urls: LocalUrls
    client: FederationClient
    keys: KeyResolver
    dispatcher: Dispatcher
    nodeinfo: NodeInfoCache
    exchange: SettlementExchange
    # Schema check, instance actor, and the periodic jobs queued: `serve` and `worker` both.
    prepare: Callable[[], Awaitable[None]]


SERVICES = web.AppKey("services", Services)
