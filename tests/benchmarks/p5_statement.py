"""P5: verifying a received statement of N lines against the Likes received, against a plain
join of the lines to the Likes.

Setup (SQLite): a peer, our things, and the N Likes its donors sent us (received_likes rows,
written with executemany). The statement is built by the product's `build_paged_statement`
from the same lines (the signed document with its first page, and all its pages), before
anything is timed. Ours: `SettlementExchange._verify_against_likes` given every page, the step
of `on_statement` that checks every line once the pages are fetched (`verification`: line
ids, order, duplicates, shares, total, count, digest, then donor, object, period and undo
against received_likes in SQL, and missing Likes), in a fresh process. Baseline: the lines
loaded into a temporary table (executemany) and joined to received_likes on like_uri with the
donor and object compared, in another fresh process.

Statements travel in pages of at most 1,000 lines (`statements.PAGE_LINES`), so the inbox's
JSON limits no longer bound them; `statements.MAX_LINES` does (raised here if N is larger).
The benchmark reports what the inbox does with statements around the old limit.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select, text

from flattrfed.activitypub.documents import AS_CONTEXT
from flattrfed.activitypub.inbox import MAX_BODY_BYTES
from flattrfed.activitypub.jsonlimits import JsonLimitError, parse_json_limited
from flattrfed.app import create_app
from flattrfed.clock import ManualClock
from flattrfed.config import load_settings
from flattrfed.context import SERVICES
from flattrfed.db.models import Peer
from flattrfed.db.session import Database
from flattrfed.periods import Period
from flattrfed.settlement import statements as st
from tests.benchmarks.common import (
    BASELINE_RUNS,
    BENCH_BASE_URL,
    BenchError,
    Databases,
    Row,
    at_most,
    failed,
    instance_environ,
    profiled,
    ratio_of,
    rss_now_mib,
    run_child,
    sqlite_path,
)

TARGET = 10.0
WHAT = "verifying a received statement against the received Likes"
SCALES: dict[str, dict[str, Any]] = {
    "small": {"lines": 5_000},
    "full": {"lines": 1_000_000},
}
PEER = "peer.test"
PEER_ACTOR = f"http://{PEER}/actor"
PERIOD = Period(2026, 11)
THINGS = 1_000
LIKES_PER_DONOR = 10
RECEIVED_AT = "2026-11-10 12:00:00.000000"  # how SQLAlchemy stores a UTC datetime in SQLite


def lines(count: int) -> Iterator[st.Line]:
    """The statement's lines: each donor liked 10 things and gets one share per line."""
    for index in range(count):
        donor = index // LIKES_PER_DONOR
        yield st.Line(
            like_uri=f"http://{PEER}/users/d{donor}/likes/{index}",
            donor_uri=f"http://{PEER}/users/d{donor}",
            object_uri=f"{BENCH_BASE_URL}/things/t{index % THINGS}",
            amount_minor=10 + donor % 7,
        )


def seed(path: str, count: int) -> None:
    """Our things and the Likes the peer's donors sent us, with plain executemany."""
    connection = sqlite3.connect(path)
    now = "2026-11-01 00:00:00.000000"
    with connection:
        connection.execute(
            "INSERT INTO members (id, username, display_name, bio, password_hash, is_admin,"
            " flattrs_public, created_at) VALUES (1, 'owner', '', '', '-', 0, 1, ?)",
            (now,),
        )
        connection.executemany(
            "INSERT INTO things (id, owner_id, title, description, category, tags, hidden,"
            " created_at) VALUES (?, 1, ?, '', 'other', '[]', 0, ?)",
            [(k + 1, f"T{k}", now) for k in range(THINGS)],
        )
        connection.executemany(
            "INSERT INTO local_actors (id, kind, username, thing_id, created_at)"
            " VALUES (?, 'thing', ?, ?, ?)",
            [(k + 1, f"t{k}", k + 1, now) for k in range(THINGS)],
        )
        connection.execute(
            "INSERT INTO peers (host, clearing_actor, currency, credit_limit_minor, peered_at,"
            " note) VALUES (?, ?, 'EUR', 1000000000000, ?, '')",
            (PEER, PEER_ACTOR, now),
        )
        connection.executemany(
            "INSERT INTO received_likes (like_uri, actor_uri, target_id, object_uri,"
            " sender_host, flattr_period, clearing_actor, received_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    line.like_uri,
                    line.donor_uri,
                    index % THINGS + 1,
                    line.object_uri,
                    PEER,
                    str(PERIOD),
                    PEER_ACTOR,
                    RECEIVED_AT,
                )
                for index, line in enumerate(lines(count))
            ),
        )
    connection.execute("ANALYZE")
    connection.close()


def _document(count: int) -> tuple[dict[str, Any], list[list[dict[str, str]]]]:
    return st.build_paged_statement(
        issuer=PEER_ACTOR,
        counterparty=f"{BENCH_BASE_URL}/actor",
        statement_uri=st.statement_id(f"http://{PEER}", str(PERIOD), "bench.test", 1),
        revision=1,
        supersedes=None,
        period=str(PERIOD),
        currency="EUR",
        fee_bp=0,
        lines=lines(count),
        issued=datetime(2026, 12, 2, tzinfo=UTC),
    )


async def verify(environ: dict[str, str], count: int) -> dict[str, Any]:
    """Ours, in a fresh process: the exchange verifies the statement against the Likes."""
    st.MAX_LINES = max(st.MAX_LINES, count)  # see the module docstring
    document, pages = _document(count)
    clock = ManualClock(datetime(2026, 12, 2, 12, tzinfo=UTC))
    app = create_app(load_settings(environ), clock=clock)
    services = app[SERVICES]
    try:
        async with services.database.sessions() as session:
            peer = await session.scalar(select(Peer).where(Peer.host == PEER))
        assert peer is not None
        before = rss_now_mib()
        with profiled("p5-verify"):
            started = time.perf_counter()
            verdict = await services.exchange._verify_against_likes(document, peer, PERIOD, pages)
            seconds = time.perf_counter() - started
    finally:
        await services.database.dispose()
    return {
        "seconds": seconds,
        "accepted": verdict.accepted,
        "accepted_minor": verdict.accepted_minor,
        "disputes": len(verdict.disputes),
        "first_disputes": [d.reason for d in verdict.disputes[:3]],
        "rss_before_mib": before,
    }


async def baseline(url: str, count: int) -> dict[str, Any]:
    """The lines into a temporary table, joined to received_likes (like, donor, object); best
    of BASELINE_RUNS."""
    rows = [
        {
            "like_uri": x.like_uri,
            "donor": x.donor_uri,
            "object": x.object_uri,
            "amount": x.amount_minor,
        }
        for x in lines(count)
    ]
    database = Database(url)
    times: list[float] = []
    try:
        for _ in range(BASELINE_RUNS):
            matched, total, seconds = await _join(database, rows)
            times.append(seconds)
    finally:
        await database.dispose()
    return {"seconds": min(times), "all_seconds": times, "matched": matched, "total": total}


async def _join(database: Database, rows: list[dict[str, Any]]) -> tuple[int, int, float]:
    started = time.perf_counter()
    async with database.connect() as connection:
        await connection.execute(
            text(
                "CREATE TEMP TABLE statement_lines"
                " (like_uri TEXT, donor TEXT, object TEXT, amount INTEGER)"
            )
        )
        await connection.execute(
            text("INSERT INTO statement_lines VALUES (:like_uri, :donor, :object, :amount)"),
            rows,
        )
        matched, total = (
            await connection.execute(
                text(
                    "SELECT count(*), sum(l.amount) FROM statement_lines l"
                    " JOIN received_likes r ON r.like_uri = l.like_uri"
                    " WHERE r.actor_uri = l.donor AND r.object_uri = l.object"
                )
            )
        ).one()
        seconds = time.perf_counter() - started
        await connection.execute(text("DROP TABLE statement_lines"))
    return int(matched), int(total), seconds


def receiving_limits() -> list[str]:
    """What flattrfed does today with statements too long to verify (checked, not assumed)."""
    found = [f"statements.MAX_LINES = {st.MAX_LINES:,} (longer statements are refused)"]
    for count in (1_000, 1_001, 2_000):
        offer = {"@context": AS_CONTEXT, "type": "Offer", "object": _document(count)[0]}
        body = json.dumps(offer).encode()
        try:
            parse_json_limited(body, max_bytes=MAX_BODY_BYTES)
            found.append(
                f"the inbox parses the Offer of a {count:,}-line statement ({len(body):,} bytes,"
                " first page only)"
            )
        except JsonLimitError as error:
            found.append(
                f"the inbox refuses a {count:,}-line statement ({len(body):,} bytes): "
                f"{error.reason} (HTTP {error.http_status})"
            )
            break
    return found


def run(scale: str, workdir: str, postgres_url: str | None) -> dict[str, Any]:
    count = SCALES[scale]["lines"]
    work = Path(workdir)
    logs = work / "logs"
    target = f"<= {TARGET:g}x"
    databases = Databases(work / "sqlite", "sqlite", None)
    try:
        url = asyncio.run(databases.new("p5"))
        started = time.perf_counter()
        seed(sqlite_path(url), count)
        seeded = time.perf_counter() - started
        environ = instance_environ(work / "data", url)
        ours = run_child(
            "tests.benchmarks.p5_statement:verify",
            {"environ": environ, "count": count},
            timeout=900,
            log_dir=logs,
        )
        base = run_child(
            "tests.benchmarks.p5_statement:baseline",
            {"url": url, "count": count},
            timeout=600,
            log_dir=logs,
        )
    except BenchError as error:
        return {"rows": [failed("P5", "sqlite", WHAT, target, str(error)).as_dict()]}
    ratio = ratio_of(ours["seconds"], base["seconds"])
    ok = ours["accepted"] and ours["disputes"] == 0 and base["matched"] == count
    notes = [
        f"{count:,} lines from {count // LIKES_PER_DONOR:,} donors for {THINGS:,} things; "
        "MAX_LINES raised in the measuring process",
        f"peak RSS includes the statement document itself: {ours['rss_before_mib']:.0f} MiB "
        "were resident before the verification started",
        *receiving_limits(),
    ]
    if not ok:
        notes.append(
            f"VERDICT WRONG: accepted={ours['accepted']}, {ours['disputes']} disputes "
            f"{ours['first_disputes']}; baseline matched {base['matched']}"
        )
    row = Row(
        id="P5",
        variant="sqlite",
        what=WHAT,
        unit="s",
        ours=ours["seconds"],
        baseline=base["seconds"],
        ratio=ratio,
        target=target,
        met=at_most(ratio, TARGET) if ok else False,
        peak_rss_mib=ours["_peak_rss_mib"],
        baseline_peak_rss_mib=base["_peak_rss_mib"],
        scale=scale,
        notes=notes,
        extra={"lines": count, "seed_s": seeded, "rss_before_verify_mib": ours["rss_before_mib"]},
    )
    return {"rows": [row.as_dict()]}
