"""Per-host federation state: domain blocks, and delivery health that pauses dead hosts."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.db.models import DomainBlock, FederationHost
from flattrfed.db.statements import insert_ignoring_duplicates

# Like Mastodon: a host failing on this many distinct days is paused until it answers again.
FAILURE_DAYS_THRESHOLD = 7
# The table is bounded: hosts are attacker-chosen (D5), so old healthy rows are pruned.
MAX_HOST_ROWS = 10_000


async def is_blocked(session: AsyncSession, domain: str) -> bool:
    """Whether the domain or a parent of it is blocked (example.com covers a.example.com)."""
    parts = domain.lower().split(".")
    candidates = [".".join(parts[index:]) for index in range(len(parts))]
    found = await session.scalar(
        select(DomainBlock.id).where(DomainBlock.domain.in_(candidates)).limit(1)
    )
    return found is not None


async def block_domain(session: AsyncSession, domain: str, reason: str, now: datetime) -> None:
    domain = domain.lower().strip().rstrip(".")
    if not await session.scalar(select(DomainBlock.id).where(DomainBlock.domain == domain)):
        session.add(DomainBlock(domain=domain, reason=reason, created_at=now))
        await session.flush()


async def unblock_domain(session: AsyncSession, domain: str) -> bool:
    result = await session.execute(
        delete(DomainBlock).where(DomainBlock.domain == domain.lower().strip())
    )
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


async def mark_alive(session: AsyncSession, host: str, now: datetime) -> None:
    """A verified delivery *from* a host shows it is back: resume delivering to it."""
    row = await _row(session, host)
    if row is not None and row.unavailable_since is not None:
        await record_success(session, host, now)


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
