"""The services one instance shares between its handlers, stored on the aiohttp application."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import web
from aiohttp.abc import AbstractResolver

from flattrfed.clock import Clock
from flattrfed.config import Settings
from flattrfed.db.session import Database
from flattrfed.worker import Worker


@dataclass
class Services:
    """Everything a request handler may need; built once by app.create_app()."""

    settings: Settings
    database: Database
    clock: Clock
    worker: Worker
    # Tests inject a resolver that maps their *.test names to loopback; None = the system's.
    resolver: AbstractResolver | None = None


SERVICES = web.AppKey("services", Services)
