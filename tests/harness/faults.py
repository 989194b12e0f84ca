"""Faults for multi-instance simulations, injected around flattrfed's code rather than into it.

Nothing of flattrfed's protocol code is mocked. The faults are made from the outside:

* `FaultyResolver` is the federation's LoopbackResolver with a switchboard in front of it: the
  names of an instance that is offline, or across a partition from the instance making the
  request, are refused. Every instance's FederationClient resolves through it, so a refusal is
  a real failed connection (a DNS error, or with `refuse_with="connect"` a TCP connection to a
  loopback address where nothing listens), which the delivery code classifies and retries as
  it would in production.
* `acting_as(name)` says which instance is making the requests in a block. The simulation wraps
  an instance's worker runs in it, and starts the instance inside it: an aiohttp server serves
  every request in the context it was started in, so the key fetches an instance makes while
  verifying a delivery are attributed to it too. Requests outside any instance (the test's own
  client) are only subject to "offline".
* `Faults` drives the rest with one seeded `random.Random`: it runs the instances' workers in
  random order and each claimed batch in shuffled order, duplicates deliveries (an already sent
  activity queued again under another dedupe key, so the same signed activity arrives twice),
  crashes a worker between the commit and the send (a batch claimed and abandoned: its lease
  must lapse before another worker sends it), crashes a worker between the send and the commit
  (a job's handler run, its row never marked done: it is run again after the lease), and takes
  an instance offline for days while the clock moves.

Every fault goes into `Faults.log`, with the simulated time, so a failing seed can be read.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

import aiohttp
from aiohttp.abc import ResolveResult
from sqlalchemy import select

from flattrfed.activitypub.delivery import DELIVER_KIND, MAX_ATTEMPTS
from flattrfed.db.models import WorkItem, WorkState
from flattrfed.worker import Worker, enqueue
from tests.harness.instances import Federation, Instance
from tests.harness.resolver import LoopbackResolver

# The instance whose code is making the current requests (None: the test itself).
SOURCE: ContextVar[str | None] = ContextVar("flattrfed_fault_source", default=None)

# Where a refused name points with refuse_with="connect": a loopback address nothing listens on
# (instances listen on 127.0.0.1 only), so the connection attempt itself is refused.
UNREACHABLE_ADDRESS = "127.0.0.2"


@contextmanager
def acting_as(name: str | None) -> Iterator[None]:
    """Requests made inside the block are made by instance `name` (see FaultyResolver)."""
    token = SOURCE.set(name)
    try:
        yield
    finally:
        SOURCE.reset(token)


def node_of(host: str) -> str:
    """`alpha.test` -> `alpha`: the instance a federation host name belongs to."""
    return host.lower().rstrip(".").split(".", 1)[0]


class FaultyResolver(LoopbackResolver):
    """A LoopbackResolver that refuses the names of offline and partitioned-off instances."""

    def __init__(self, *, refuse_with: Literal["dns", "connect"] = "dns") -> None:
        super().__init__()
        self.refuse_with = refuse_with
        self.offline: set[str] = set()
        self.cuts: set[frozenset[str]] = set()
        self.refusals: list[tuple[str | None, str]] = []  # (requesting instance, host)

    def reachable(self, source: str | None, target: str) -> bool:
        if target in self.offline or (source is not None and source in self.offline):
            return False
        return source is None or frozenset((source, target)) not in self.cuts

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        source = SOURCE.get()
        if self.reachable(source, node_of(host)):
            return await super().resolve(host, port, family)
        self.lookups.append(host)
        self.refusals.append((source, host))
        if self.refuse_with == "dns":
            raise OSError(f"{host} is unreachable from {source or 'the test'} (simulated fault)")
        return [
            ResolveResult(
                hostname=host,
                host=UNREACHABLE_ADDRESS,
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]


@dataclass
class Faults:
    """The fault schedule's hands: one seeded random source, the federation, and a log."""

    federation: Federation
    rng: random.Random
    log: list[str] = field(default_factory=list)
    duplicates: int = 0
    crashes: int = 0
    _serial: Iterator[int] = field(default_factory=itertools.count)
    _heal_at: dict[frozenset[str], datetime] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.federation.resolver, FaultyResolver):
            raise TypeError("create the Federation with resolver=FaultyResolver(...)")
        self.resolver: FaultyResolver = self.federation.resolver

    @property
    def clock_now(self) -> datetime:
        return self.federation.clock.now()

    def note(self, text: str) -> None:
        self.log.append(f"{self.clock_now:%m-%d %H:%M} {text}")

    def online(self) -> list[Instance]:
        return [
            i for i in self.federation.instances.values() if i.name not in self.resolver.offline
        ]

    # --- the network ---------------------------------------------------------------------------

    async def sever_connections(self) -> None:
        """Make the next request of every instance look its peer up and connect afresh.

        The clients keep idle keep-alive connections and cache lookups for some real seconds;
        both would carry requests past a partition that starts now. Each server closes its idle
        connections, and each client forgets its cached lookups (the client's session is
        private to FederationClient: this reaches in, read-only but for the DNS cache).
        Nothing is in flight between the simulation's steps, so only idle connections close.
        """
        for instance in self.federation.instances.values():
            server = instance.runner.server
            for connection in server.connections if server is not None else []:
                # force_close, not close: close() only cancels the keep-alive wait and leaves
                # the socket open with nobody reading it, so the next request would hang.
                connection.force_close()
            http = instance.services.client._http
            if http is not None and isinstance(http.connector, aiohttp.TCPConnector):
                http.connector.clear_dns_cache()
        for _ in range(5):  # let both ends see the connections close
            await asyncio.sleep(0)

    async def partition(self, first: str, second: str, duration: timedelta) -> None:
        """Neither instance can reach the other until `duration` has passed (see `tick`)."""
        pair = frozenset((first, second))
        self.resolver.cuts.add(pair)
        self._heal_at[pair] = self.clock_now + duration
        self.note(f"partition {first} | {second} for {duration}")
        await self.sever_connections()

    async def heal(self, first: str, second: str) -> None:
        pair = frozenset((first, second))
        self.resolver.cuts.discard(pair)
        self._heal_at.pop(pair, None)
        self.note(f"heal {first} - {second}")
        await self.sever_connections()

    async def random_partition(self, longest: timedelta = timedelta(hours=20)) -> None:
        """Cut a random pair that is still connected, for up to `longest`.

        Partitions are kept well inside the delivery retry window (about 3.2 days): a delivery
        still failing after that is given up by design, and that is not what this tests.
        """
        names = sorted(self.federation.instances)
        pairs = [
            (first, second)
            for index, first in enumerate(names)
            for second in names[index + 1 :]
            if frozenset((first, second)) not in self.resolver.cuts
        ]
        if pairs:
            first, second = self.rng.choice(pairs)
            minutes = self.rng.randint(10, max(10, int(longest.total_seconds() // 60)))
            await self.partition(first, second, timedelta(minutes=minutes))

    async def tick(self) -> None:
        """Heal the partitions whose time is up."""
        for pair, heal_at in sorted(self._heal_at.items(), key=lambda item: item[1]):
            if heal_at <= self.clock_now:
                first, second = sorted(pair)
                await self.heal(first, second)

    async def take_offline(self, name: str) -> None:
        self.resolver.offline.add(name)
        self.note(f"{name} goes offline")
        await self.sever_connections()

    async def bring_online(self, name: str) -> None:
        self.resolver.offline.discard(name)
        self.note(f"{name} is back online")
        await self.sever_connections()

    async def heal_all(self) -> None:
        self.resolver.cuts.clear()
        self._heal_at.clear()
        self.resolver.offline.clear()
        self.note("network healed")
        await self.sever_connections()

    # --- workers -------------------------------------------------------------------------------

    async def run_batch(self, instance: Instance) -> int:
        """Claim one batch with the instance's own worker and run it in shuffled order."""
        worker = instance.services.worker
        with acting_as(instance.name):
            jobs = await worker.claim()
            self.rng.shuffle(jobs)
            for job in jobs:
                await worker.run_job(job)
        return len(jobs)

    async def run_until_idle(self, instance: Instance, max_batches: int = 200) -> int:
        total = 0
        for _ in range(max_batches):
            ran = await self.run_batch(instance)
            if ran == 0:
                return total
            total += ran
        raise RuntimeError(f"{instance.name}'s worker still busy after {max_batches} batches")

    async def step_workers(self, *, batches: int | None = None, max_rounds: int = 100) -> int:
        """Run the online instances' workers in random order, round after round, until a round
        finds nothing due (or, with `batches`, for that many random single batches)."""
        total = 0
        if batches is not None:
            for _ in range(batches):
                candidates = self.online()
                if candidates:
                    total += await self.run_batch(self.rng.choice(candidates))
            return total
        for _ in range(max_rounds):
            instances = self.online()
            self.rng.shuffle(instances)
            ran = 0
            for instance in instances:
                ran += await self.run_until_idle(instance)
            if ran == 0:
                return total
            total += ran
        raise RuntimeError(f"workers still busy after {max_rounds} rounds")

    def crashing_worker(self, instance: Instance) -> Worker:
        """A second worker process on the instance's database, with the same handlers."""
        services = instance.services
        return Worker(
            services.database,
            services.clock,
            services.worker.handlers,
            worker_id=f"doomed-{instance.name}-{next(self._serial)}",
            batch_size=self.rng.randint(1, 8),
        )

    async def crash_after_commit(self, instance: Instance) -> int:
        """A worker claims a batch and dies before sending anything: the rows wait for its lease
        to lapse, then the instance's own worker runs them."""
        jobs = await self.crashing_worker(instance).claim()
        if jobs:
            self.crashes += 1
            self.note(f"{instance.name}: worker died holding {[job.kind for job in jobs]}")
        return len(jobs)

    async def crash_after_send(self, instance: Instance) -> int:
        """A worker runs a batch's handlers (deliveries are sent) and dies before recording the
        outcome: after the lease, the rows run again and the receivers see them twice."""
        worker = self.crashing_worker(instance)
        with acting_as(instance.name):
            jobs = await worker.claim()
            for job in jobs:
                try:
                    await worker.handlers[job.kind](job)
                except Exception as error:  # the process dies whatever happened
                    self.note(f"{instance.name}: doomed job {job.kind} raised {error!r:.80}")
        if jobs:
            self.crashes += 1
            self.note(f"{instance.name}: worker died after running {[job.kind for job in jobs]}")
        return len(jobs)

    # --- duplicates ----------------------------------------------------------------------------

    async def duplicate_delivery(
        self, instance: Instance, *, delay: timedelta | None = None
    ) -> bool:
        """Queue an already sent delivery again under another dedupe key: the same activity
        (same id, same body) is signed and POSTed a second time, after `delay` (by default a
        random delay of up to ten hours)."""
        database = instance.services.database
        async with database.sessions() as session:
            rows = (
                await session.scalars(
                    select(WorkItem)
                    .where(WorkItem.kind == DELIVER_KIND, WorkItem.state == WorkState.DONE)
                    .order_by(WorkItem.id)
                )
            ).all()
        if not rows:
            return False
        row = self.rng.choice(rows)
        async with database.transaction() as session:
            await enqueue(
                session,
                kind=DELIVER_KIND,
                payload=row.payload,
                now=self.clock_now,
                run_after=self.clock_now
                + (delay if delay is not None else timedelta(minutes=self.rng.randint(0, 600))),
                dedupe_key=f"fault-duplicate:{next(self._serial)}:{row.id}",
                max_attempts=MAX_ATTEMPTS,
            )
        self.duplicates += 1
        activity = row.payload.get("activity", {})
        self.note(f"{instance.name}: duplicate {activity.get('type')} {activity.get('id')}")
        return True

    # --- time ----------------------------------------------------------------------------------

    async def pass_time(self, duration: timedelta, *, step: timedelta) -> None:
        """Move the clock by `duration` in steps, running the online workers after each."""
        end = self.clock_now + duration
        while self.clock_now < end:
            self.federation.clock.set(min(end, self.clock_now + step))
            await self.tick()
            await self.step_workers()

    async def offline_for(
        self, name: str, duration: timedelta, *, step: timedelta = timedelta(hours=2)
    ) -> None:
        """`name` is down (unreachable, its worker stopped) while the clock moves `duration`."""
        await self.take_offline(name)
        await self.pass_time(duration, step=step)
        await self.bring_online(name)
