"""Checking a received statement of any size against the Likes received, set-based in SQL.

The rules are those of `statements.verify_lines` (the in-memory reference). Lines stream in a
page at a time; their ids, order, duplicates, shares and digest are checked in Python as they
pass, and they go into a temporary table in chunks, so memory stays bounded by a chunk (plus
one amount per donor). The table is then compared with `received_likes` in one join that
counts; the lines at fault are only read back when there are some.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    and_,
    case,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.ext.asyncio import AsyncConnection

from flattrfed.db.models import ReceivedLike
from flattrfed.db.session import Database
from flattrfed.db.statements import table_of
from flattrfed.settlement import statements as st

CHUNK = 10_000
# Why a line is set aside before the join (the join looks at CHECKED lines only).
CHECKED, BAD_ID, DUPLICATE = 0, 1, 2

_metadata = MetaData()
_lines = Table(
    "statement_check",
    _metadata,
    Column("position", Integer, nullable=False),
    Column("skip", Integer, nullable=False),
    Column("like_uri", String, nullable=False),
    Column("donor", String, nullable=False),
    Column("object", String, nullable=False),
    Column("amount", BigInteger, nullable=False),
    prefixes=["TEMPORARY"],
)


# The insert in each driver's own parameter style (SQLite: qmark; asyncpg: numeric_dollar).
_INSERT = "INSERT INTO statement_check (position, skip, like_uri, donor, object, amount) VALUES"
_DRIVER_INSERTS = {
    "qmark": _INSERT + " (?, ?, ?, ?, ?, ?)",
    "numeric_dollar": _INSERT + " ($1, $2, $3, $4, $5, $6)",
    "format": _INSERT + " (%s, %s, %s, %s, %s, %s)",
}


@dataclass
class _Stream:
    """What is learnt from the lines as they stream past."""

    count: int = 0
    total: int = 0
    pages: int = 0
    previous: str | None = None


async def verify_statement(
    database: Database,
    document: dict[str, Any],
    pages: AsyncIterable[list[Any]] | Iterable[list[Any]],
    *,
    currency: str,
    period: str,
    cutoff: datetime,
    sender_host: str,
) -> st.Verdict:
    """The verdict on a statement whose lines come as `pages` (all of them, the first one
    included), against the Likes `sender_host` sent us; StatementError if it cannot be read."""
    header = st.read_header(document, currency=currency)
    async with database.connect() as connection:
        await connection.execute(text("DROP TABLE IF EXISTS statement_check"))
        await connection.run_sync(_lines.create)
        try:
            return await _verify(connection, header, pages, period, cutoff, sender_host)
        finally:
            await connection.execute(text("DROP TABLE IF EXISTS statement_check"))


async def _verify(
    connection: AsyncConnection,
    header: st.Header,
    pages: AsyncIterable[list[Any]] | Iterable[list[Any]],
    period: str,
    cutoff: datetime,
    sender_host: str,
) -> st.Verdict:
    disputes: list[tuple[int, st.Dispute]] = []
    shares: dict[str, int] = {}
    inconsistent: set[str] = set()
    digest = st.LinesDigest()
    stream = _Stream()
    rows: list[tuple[int, int, str, str, str, int]] = []
    async for page in _pages(pages):
        stream.pages += 1
        if not isinstance(page, list) or len(page) > st.PAGE_LINES:
            raise st.StatementError(f"a page is not a list of at most {st.PAGE_LINES} lines")
        if stream.count + len(page) > st.MAX_LINES:
            raise st.StatementError(f"more than {st.MAX_LINES:,} lines")
        parsed = [st.parse_line(item) for item in page]
        digest.add_page(page)
        for given_id, line in parsed:
            position = stream.count
            stream.count += 1
            stream.total += line.amount_minor
            if stream.previous is not None and line.like_uri < stream.previous:
                raise st.StatementError("the lines are not in the order of their Likes")
            skip = CHECKED
            if given_id != st.line_id(line.like_uri):
                skip = BAD_ID
                disputes.append((position, st.Dispute(given_id, st.BAD_LINE_ID, line.like_uri)))
            elif line.like_uri == stream.previous:
                skip = DUPLICATE
                dispute = st.Dispute(given_id, st.DUPLICATE_LINE, line.like_uri)
                disputes.append((position, dispute))
            stream.previous = line.like_uri
            if shares.setdefault(line.donor_uri, line.amount_minor) != line.amount_minor:
                inconsistent.add(line.donor_uri)
            rows.append(
                (position, skip, line.like_uri, line.donor_uri, line.object_uri, line.amount_minor)
            )
        if len(rows) >= CHUNK:
            await _insert(connection, rows)
            rows = []
    if rows:
        await _insert(connection, rows)
    del rows
    found, counted = await _line_disputes(connection, period, cutoff, sender_host)
    disputes += found
    listed: int | None = counted
    if any(dispute.reason == st.BAD_LINE_ID for _position, dispute in disputes):
        listed = None  # lines with bad ids were left out of the join: count them all again
    disputes += await _share_disputes(connection, inconsistent)
    disputes.sort(key=lambda item: item[0])
    ordered = [dispute for _position, dispute in disputes]
    if (
        stream.total != header.amount_minor
        or stream.count != header.lines
        or stream.pages != header.pages
        or digest.hexdigest() != header.digest
    ):
        ordered.append(st.Dispute("totals", st.TOTAL_MISMATCH))
    ordered += await _missing(connection, period, cutoff, sender_host, listed)
    return st.verdict_of(ordered, stream.total)


async def _insert(
    connection: AsyncConnection, rows: list[tuple[int, int, str, str, str, int]]
) -> None:
    """Rows into the temporary table: straight to the driver's executemany where its
    parameter style is known (the per-row work of a Core insert costs more than the insert)."""
    sql = _DRIVER_INSERTS.get(connection.dialect.paramstyle)
    if sql is None:
        names = [column.name for column in _lines.columns]
        await connection.execute(
            insert(_lines), [dict(zip(names, row, strict=True)) for row in rows]
        )
        return
    await connection.exec_driver_sql(sql, rows)


async def _pages(
    pages: AsyncIterable[list[Any]] | Iterable[list[Any]],
) -> AsyncIterator[list[Any]]:
    if isinstance(pages, AsyncIterable):
        async for page in pages:
            yield page
    else:
        for page in pages:
            yield page


def _expected(period: str, cutoff: datetime) -> Any:
    """A received Like of `period` that a statement of the sender must list."""
    likes = table_of(ReceivedLike)
    return and_(
        likes.c.flattr_period == period,
        likes.c.received_at < cutoff,
        or_(likes.c.undone_at.is_(None), likes.c.undone_at >= cutoff),
    )


async def _line_disputes(
    connection: AsyncConnection, period: str, cutoff: datetime, sender_host: str
) -> tuple[list[tuple[int, st.Dispute]], int]:
    """One join of the checked lines with the Likes: count the faulty ones, and the Likes a
    statement must list that these lines do list; read the faulty lines (with their reason,
    in `line_problem`'s order) only if there are any."""
    likes = table_of(ReceivedLike)
    joined = _lines.outerjoin(
        likes, (likes.c.like_uri == _lines.c.like_uri) & (likes.c.sender_host == sender_host)
    )
    reason = case(
        (likes.c.id.is_(None), literal(st.LIKE_NOT_RECEIVED)),
        (likes.c.actor_uri != _lines.c.donor, literal(st.WRONG_DONOR)),
        (likes.c.object_uri != _lines.c.object, literal(st.UNKNOWN_OBJECT)),
        (
            or_(
                likes.c.flattr_period.is_(None),
                likes.c.flattr_period != period,
                likes.c.received_at >= cutoff,
            ),
            literal(st.OUT_OF_PERIOD),
        ),
        (
            and_(likes.c.undone_at.is_not(None), likes.c.undone_at < cutoff),
            literal(st.LIKE_UNDONE),
        ),
        else_=None,
    )
    faulty, listed = (
        await connection.execute(
            select(func.count(reason), func.count(case((_expected(period, cutoff), 1))))
            .select_from(joined)
            .where(_lines.c.skip == CHECKED)
        )
    ).one()
    if not faulty:
        return [], int(listed)
    found = await connection.execute(
        select(_lines.c.position, _lines.c.like_uri, reason)
        .select_from(joined)
        .where(_lines.c.skip == CHECKED, reason.is_not(None))
        .order_by(_lines.c.position)
    )
    return [
        (position, st.Dispute(st.line_id(like_uri), str(why), like_uri))
        for position, like_uri, why in found
    ], int(listed)


async def _share_disputes(
    connection: AsyncConnection, donors: set[str]
) -> list[tuple[int, st.Dispute]]:
    """Every line of a donor whose lines do not all carry the same amount."""
    found: list[tuple[int, st.Dispute]] = []
    listed = sorted(donors)
    for start in range(0, len(listed), 500):
        rows = await connection.execute(
            select(_lines.c.position, _lines.c.like_uri).where(
                _lines.c.donor.in_(listed[start : start + 500])
            )
        )
        found += [
            (position, st.Dispute(st.line_id(like), st.SHARE_INCONSISTENT, like))
            for position, like in rows
        ]
    # After every line's own dispute, as the reference puts them.
    return [(position + st.MAX_LINES, dispute) for position, dispute in found]


async def _missing(
    connection: AsyncConnection,
    period: str,
    cutoff: datetime,
    sender_host: str,
    listed: int | None,
) -> list[st.Dispute]:
    """Likes of the period the sender's donors sent us that no line lists (reported only).

    `listed`: how many of those Likes the lines list, when the join already counted it."""
    likes = table_of(ReceivedLike)
    mine = (likes.c.sender_host == sender_host) & _expected(period, cutoff)
    expected = await connection.scalar(select(func.count()).select_from(likes).where(mine))
    if not expected:
        return []
    if listed is None:
        listed = await connection.scalar(
            select(func.count())
            .select_from(_lines.join(likes, likes.c.like_uri == _lines.c.like_uri))
            .where(_lines.c.skip != DUPLICATE, mine)
        )
    if listed == expected:
        return []
    await connection.execute(
        text("CREATE INDEX statement_check_like ON statement_check (like_uri)")
    )
    rows = await connection.scalars(
        select(likes.c.like_uri)
        .where(mine, ~exists().where(_lines.c.like_uri == likes.c.like_uri))
        .order_by(likes.c.like_uri)
    )
    return [st.Dispute(st.line_id(like), st.LIKE_NOT_IN_STATEMENT, like) for like in rows]
