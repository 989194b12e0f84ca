"""Per-host federation state: domain blocks, and delivery health that pauses dead hosts."""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Collection
from datetime import datetime

from sqlalchemy import Engine, delete, event, func, select, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession
from sqlalchemy.orm import Session

from flattrfed.db.models import DomainBlock, FederationHost
from flattrfed.db.statements import insert_ignoring_duplicates

# Like Mastodon: a host failing on this many distinct days is paused until it answers again.
FAILURE_DAYS_THRESHOLD = 7
# The table is bounded: hosts are attacker-chosen (D5), so old healthy rows are pruned.
MAX_HOST_ROWS = 10_000
# How stale the in-memory block list may get when another process (the `domain` command, a
# second server) changes the blocks; changes made through this process show at once.
BLOCKS_TTL_SECONDS = 5.0


def _block_candidates(domain: str) -> list[str]:
    parts = domain.lower().split(".")
    return [".".join(parts[index:]) for index in range(len(parts))]


async def is_blocked(session: AsyncSession, domain: str) -> bool:
    """Whether the domain or a parent of it is blocked (example.com covers a.example.com)."""
    found = await session.scalar(
        select(DomainBlock.id).where(DomainBlock.domain.in_(_block_candidates(domain))).limit(1)
    )
    return found is not None


class BlockList:
    """The blocked domains of one database, held in memory for the inbox and the deliverer.

    Reading the table on every request cost a query per delivery; the list is small and changes
    rarely. It is reloaded after a block or unblock made through the same engine commits, and
    at least every BLOCKS_TTL_SECONDS for changes made by other processes.
    """

    def __init__(self, engine: AsyncEngine, ttl: float = BLOCKS_TTL_SECONDS) -> None:
        self.engine = engine
        self.ttl = ttl
        self._domains: frozenset[str] | None = None
        self._loaded_at = 0.0
        self._generation = 0
        self._lock = asyncio.Lock()

    def invalidate(self) -> None:
        self._generation += 1
        self._domains = None

    async def is_blocked(self, domain: str) -> bool:
        """Whether the domain or a parent of it is blocked (example.com covers a.example.com)."""
        domains = await self._current()
        return any(candidate in domains for candidate in _block_candidates(domain))

    async def _current(self) -> frozenset[str]:
        domains = self._domains
        if domains is not None and time.monotonic() - self._loaded_at < self.ttl:
            return domains
        async with self._lock:
            domains = self._domains
            if domains is not None and time.monotonic() - self._loaded_at < self.ttl:
                return domains
            generation, started = self._generation, time.monotonic()
            async with self.engine.connect() as connection:
                loaded = frozenset((await connection.scalars(select(DomainBlock.domain))).all())
            # A change committed while this load ran may be missing from it: use it for this
            # call only, and load again next time.
            if generation == self._generation:
                self._domains, self._loaded_at = loaded, started
            return loaded


# One list per engine, so every part of an instance shares it and two instances in one process
# (the tests) share nothing; an engine that is gone takes its list with it.
_block_lists: weakref.WeakKeyDictionary[Engine, BlockList] = weakref.WeakKeyDictionary()


def block_list(engine: AsyncEngine) -> BlockList:
    """The in-memory block list of this engine's database."""
    found = _block_lists.get(engine.sync_engine)
    if found is None:
        found = _block_lists[engine.sync_engine] = BlockList(engine)
    return found


def _reload_blocks_after_commit(session: AsyncSession) -> None:
    bind = session.get_bind()
    engine = bind if isinstance(bind, Engine) else bind.engine

    def committed(_session: Session) -> None:
        found = _block_lists.get(engine)
        if found is not None:
            found.invalidate()

    # After the commit, not now: a reload before it would read the old blocks and keep them.
    event.listen(session.sync_session, "after_commit", committed, once=True)


async def block_domain(session: AsyncSession, domain: str, reason: str, now: datetime) -> None:
    domain = domain.lower().strip().rstrip(".")
    if not await session.scalar(select(DomainBlock.id).where(DomainBlock.domain == domain)):
        session.add(DomainBlock(domain=domain, reason=reason, created_at=now))
        await session.flush()
        _reload_blocks_after_commit(session)


async def unblock_domain(session: AsyncSession, domain: str) -> bool:
    result = await session.execute(
        delete(DomainBlock).where(DomainBlock.domain == domain.lower().strip())
    )
    _reload_blocks_after_commit(session)
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def _row(session: AsyncSession, host: str) -> FederationHost | None:
    return await session.scalar(select(FederationHost).where(FederationHost.host == host))


async def is_unavailable(session: AsyncSession, host: str) -> bool:
    row = await _row(session, host)
    return row is not None and row.unavailable_since is not None


async def record_failure(session: AsyncSession, host: str, now: datetime, error: str) -> None:
    row = await _row(session, host)
    if row is None:
        await _prune(session)
        # Two workers may fail on a new host at once: insert-or-nothing, then read the row.
        dialect = session.get_bind().dialect.name
        await session.execute(
            insert_ignoring_duplicates(dialect, FederationHost, host=host, failure_days=0)
        )
        row = await _row(session, host)
        assert row is not None
    day = now.date().isoformat()
    if row.last_failure_day != day:
        row.failure_days = (row.failure_days or 0) + 1
        row.last_failure_day = day
    row.last_failure_at = now
    row.last_error = error[:500]
    if row.failure_days >= FAILURE_DAYS_THRESHOLD and row.unavailable_since is None:
        row.unavailable_since = now
    await session.flush()


async def record_success(session: AsyncSession, host: str, now: datetime) -> None:
    row = await _row(session, host)
    if row is None:
        return
    row.failure_days = 0
    row.last_failure_day = None
    row.unavailable_since = None
    row.last_success_at = now
    await session.flush()


async def mark_hosts_alive(
    connection: AsyncConnection, hosts: Collection[str], now: datetime
) -> None:
    """Verified deliveries *from* these hosts show they are back: paused ones resume (one
    statement for a whole inbox batch)."""
    if not hosts:
        return
    await connection.execute(
        update(FederationHost)
        .where(
            FederationHost.host.in_(sorted(hosts)), FederationHost.unavailable_since.is_not(None)
        )
        .values(failure_days=0, last_failure_day=None, unavailable_since=None, last_success_at=now)
    )


async def host_states(
    session: AsyncSession | AsyncConnection, hosts: Collection[str]
) -> dict[str, tuple[int, bool]]:
    """{host: (failure days, paused)} of those hosts that have a health row (one query)."""
    if not hosts:
        return {}
    rows = await session.execute(
        select(
            FederationHost.host, FederationHost.failure_days, FederationHost.unavailable_since
        ).where(FederationHost.host.in_(sorted(hosts)))
    )
    return {host: (days or 0, since is not None) for host, days, since in rows.all()}


async def _prune(session: AsyncSession) -> None:
    count = await session.scalar(select(func.count()).select_from(FederationHost)) or 0
    if count < MAX_HOST_ROWS:
        return
    # Healthy-ish rows go first; if only paused hosts are left, the longest-silent of those go
    # too (D5: an attacker can make hosts fail on purpose, so no kind of row may grow unbounded).
    oldest = (
        select(FederationHost.id)
        .order_by(FederationHost.unavailable_since.is_not(None), FederationHost.last_failure_at)
        .limit(count - MAX_HOST_ROWS + 1)
    )
    await session.execute(delete(FederationHost).where(FederationHost.id.in_(oldest)))
