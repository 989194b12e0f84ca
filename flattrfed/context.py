"""The services one instance shares between its handlers, stored on the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web

from flattrfed.activitypub.client import FederationClient
from flattrfed.activitypub.dispatch import Dispatcher
from flattrfed.activitypub.keys import KeyResolver
from flattrfed.activitypub.nodeinfo import NodeInfoCache
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.clock import Clock
from flattrfed.config import Settings
from flattrfed.db.session import Database
from flattrfed.settlement.exchange import SettlementExchange
from flattrfed.worker import Worker


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


SERVICES = web.AppKey("services", Services)
