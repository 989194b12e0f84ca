"""Starts real flattrfed instances on loopback ports, named like alpha.test, for one test."""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from flattrfed.activitypub.actors import find_local_actor
from flattrfed.app import create_app
from flattrfed.clock import ManualClock
from flattrfed.config import Settings, load_settings
from flattrfed.context import SERVICES, Services
from flattrfed.db.models import Flattr, LocalActor, Member, Thing
from flattrfed.flattring.flattrs import flattr
from flattrfed.flattring.members import create_member
from flattrfed.flattring.peers import add_peer, discover_peer
from flattrfed.flattring.resolve import resolve_target
from flattrfed.flattring.things import create_thing
from flattrfed.flattring.wallets import record_deposit
from flattrfed.money import Money
from tests.harness.databases import DatabaseFactory
from tests.harness.resolver import LoopbackResolver


@dataclass
class Instance:
    """One running instance: its app, its settings and services, and where it listens."""

    name: str
    host: str
    settings: Settings
    app: web.Application
    runner: web.AppRunner

    @property
    def base_url(self) -> str:
        return self.settings.base_url

    @property
    def services(self) -> Services:
        return self.app[SERVICES]

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    async def create_member(self, username: str, *, admin: bool = False) -> Member:
        async with self.services.database.transaction() as session:
            return await create_member(
                session,
                username=username,
                password="correct horse battery",
                is_admin=admin,
                now=self.services.clock.now(),
            )

    async def create_thing(self, owner: Member, handle: str, title: str) -> Thing:
        async with self.services.database.transaction() as session:
            owner = await session.merge(owner)
            return await create_thing(
                session, owner=owner, handle=handle, title=title, now=self.services.clock.now()
            )

    async def actor(self, username: str) -> LocalActor:
        async with self.services.database.sessions() as session:
            actor = await find_local_actor(session, username=username)
        assert actor is not None, username
        return actor

    def actor_uri(self, username: str, kind: str = "person") -> str:
        return self.services.urls.actor(kind, username)

    async def peer_with(self, other: Instance, *, credit_limit_minor: int = 1_000_000) -> None:
        """Peer with `other` as an admin would: read its NodeInfo, record the credit limit."""
        services = self.services
        actor, currency = await discover_peer(
            services.nodeinfo, other.host, services.settings.currency, services.clock.now()
        )
        async with services.database.transaction() as session:
            await add_peer(
                session,
                host=other.host,
                clearing_actor=actor,
                currency=currency,
                credit_limit_minor=credit_limit_minor,
                now=services.clock.now(),
            )

    async def create_donor(self, name: str, *, budget: int, deposit: int) -> Member:
        """A member with a monthly budget and a recorded bank deposit."""
        member = await self.create_member(name)
        async with self.services.database.transaction() as session:
            row = await session.get(Member, member.id)
            assert row is not None
            row.monthly_budget_minor = budget
            await record_deposit(
                session,
                member=row,
                amount=Money(deposit, self.services.settings.currency),
                bank_reference=f"{self.name}-{name}-1",
                currency=self.services.settings.currency,
                now=self.services.clock.now(),
            )
        return member

    async def flattr(self, member: Member, text: str) -> Flattr:
        """`member` flattrs a URL or handle, resolving it first as the command line does."""
        services = self.services
        target = await resolve_target(services, text)
        async with services.database.transaction() as session:
            row = await session.get(Member, member.id)
            assert row is not None
            return await flattr(session, services.urls, row, target, services.clock.now())

    async def run_deliveries(self) -> int:
        """Run only due deliveries (not the daily and monthly jobs); returns how many ran."""
        from flattrfed.activitypub.delivery import DELIVER_KIND
        from flattrfed.worker import Worker

        worker = self.services.worker
        only = Worker(
            self.services.database,
            self.services.clock,
            {DELIVER_KIND: worker.handlers[DELIVER_KIND]},
            worker_id=worker.worker_id,
        )
        return await only.run_until_idle()

    async def run_worker(self) -> int:
        """Run this instance's due work until none is left; returns how many rows ran."""
        return await self.services.worker.run_until_idle()


@dataclass
class Federation:
    """The instances of one test, sharing one clock and one resolver."""

    clock: ManualClock
    databases: DatabaseFactory
    workdir: Path
    resolver: LoopbackResolver = field(default_factory=LoopbackResolver)
    instances: dict[str, Instance] = field(default_factory=dict)
    _clients: list[aiohttp.ClientSession] = field(default_factory=list)

    async def start(self, name: str, **overrides: Any) -> Instance:
        """Start instance `name` (reachable as http://NAME.test:PORT) with setting overrides."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        host_name = f"{name}.test"
        self.resolver.add(host_name)
        data_dir = self.workdir / name
        data_dir.mkdir(parents=True, exist_ok=True)
        environ: dict[str, str] = {
            "FLATTRFED_BASE_URL": f"http://{host_name}:{port}",
            "FLATTRFED_ALLOW_HTTP": "1",
            "FLATTRFED_DATA_DIR": str(data_dir),
            "FLATTRFED_DATABASE_URL": await self.databases.new_database(name),
            "FLATTRFED_ALLOWED_PRIVATE_ADDRESSES": "127.0.0.0/8",
            "FLATTRFED_WORKER_IN_PROCESS": "0",
            "FLATTRFED_INSTANCE_NAME": name,
        }
        environ.update(_environ_overrides(overrides))
        settings = load_settings(environ)
        app = create_app(settings, clock=self.clock, resolver=self.resolver)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        instance = Instance(name, f"{host_name}:{port}", settings, app, runner)
        self.instances[name] = instance
        return instance

    def client(self) -> aiohttp.ClientSession:
        """A plain HTTP client that resolves the federation's names (closed with the federation)."""
        connector = aiohttp.TCPConnector(resolver=self.resolver, force_close=True)
        session = aiohttp.ClientSession(connector=connector)
        self._clients.append(session)
        return session

    async def step_workers(self, max_rounds: int = 100) -> int:
        """Run every instance's worker until a whole round finds nothing due anywhere."""
        total = 0
        for _ in range(max_rounds):
            ran = 0
            for instance in self.instances.values():
                ran += await instance.run_worker()
            if ran == 0:
                return total
            total += ran
        raise RuntimeError(f"workers still busy after {max_rounds} rounds")

    async def close(self) -> None:
        for session in self._clients:
            await session.close()
        for instance in self.instances.values():
            await instance.runner.cleanup()


def _environ_overrides(overrides: Mapping[str, Any]) -> dict[str, str]:
    result: dict[str, str] = {}
    for key, value in overrides.items():
        name = key if key.startswith("FLATTRFED_") else f"FLATTRFED_{key.upper()}"
        if isinstance(value, bool):
            result[name] = "1" if value else "0"
        else:
            result[name] = str(value)
    return result
