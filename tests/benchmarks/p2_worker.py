"""P2: stored inbound Likes processed by the worker into recorded flattrs, against a batched
INSERT of the same rows.

Setup: N Likes of one of our things stored exactly as the inbox stores them (an
inbound_activities row and its `inbound` work row each), written in bulk. Ours: the instance's
own worker (create_app's, all handlers registered) runs them until idle in a fresh process:
claim under a lease, dispatch, record the received Like, mark the activity processed, finish
the work row. Baseline: the received_likes rows the worker wrote, deleted and inserted again
with one executemany in one transaction, in another fresh process.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, insert, select

from flattrfed.activitypub.inbox import INBOUND_KIND
from flattrfed.app import create_app
from flattrfed.clock import SystemClock
from flattrfed.config import load_settings
from flattrfed.context import SERVICES
from flattrfed.db.models import InboundActivity, ReceivedLike
from flattrfed.db.models.work import WorkItem, WorkState
from flattrfed.db.session import Database
from flattrfed.flattring.members import create_member
from flattrfed.flattring.things import create_thing
from tests.benchmarks.common import (
    BACKENDS,
    BASELINE_RUNS,
    NO_POSTGRES,
    Backend,
    BenchError,
    Databases,
    Row,
    at_least,
    failed,
    instance_environ,
    product_logging,
    profiled,
    ratio_of,
    run_child,
    run_worker_for,
    skipped,
)
from tests.benchmarks.likes import THING, RemoteSender, like

TARGET = 0.25
WHAT = "stored inbound Likes processed by the worker into recorded flattrs"
SCALES: dict[str, dict[str, Any]] = {
    "small": {"likes": 200, "actors": 16, "limit": 30.0},
    "full": {"likes": 10_000, "actors": 200, "limit": 60.0},
}


async def _seed(url: str, likes: int, actors: int) -> None:
    """A thing of ours, and `likes` Likes of it stored as the inbox stores them."""
    database = Database(url)
    now = datetime.now(UTC)
    try:
        async with database.transaction() as session:
            owner = await create_member(
                session,
                username="owner",
                password="correct horse battery",
                is_admin=False,
                now=now,
            )
            await create_thing(session, owner=owner, handle=THING, title="Zine", now=now)
        activities = []
        for serial in range(likes):
            sender = RemoteSender(serial % actors)
            activity = like(sender, serial)
            activities.append(
                {
                    "activity_uri": activity["id"],
                    "actor_uri": sender.uri,
                    "type": "Like",
                    "payload": activity,
                    "received_at": now,
                }
            )
        async with database.transaction() as session:
            await session.execute(insert(InboundActivity), activities)
            ids = await session.scalars(select(InboundActivity.id).order_by(InboundActivity.id))
            work = [
                {
                    "kind": INBOUND_KIND,
                    "payload": {"inbound_id": row_id},
                    "dedupe_key": f"inbound:{row_id}",
                    "state": WorkState.PENDING.value,
                    "attempts": 0,
                    "max_attempts": 8,
                    "run_after": now,
                    "created_at": now,
                }
                for row_id in ids.all()
            ]
            await session.execute(insert(WorkItem), work)
    finally:
        await database.dispose()


async def worker(environ: dict[str, str], limit: float) -> dict[str, Any]:
    """Ours, in a fresh process: the instance's worker runs the stored Likes until none is
    left or `limit` seconds have passed."""
    product_logging()
    settings = load_settings(environ)
    app = create_app(settings, clock=SystemClock())
    services = app[SERVICES]
    try:
        with profiled("p2-worker"):
            ran, seconds = await run_worker_for(services.worker, limit)
        async with services.database.sessions() as session:
            recorded = await session.scalar(select(func.count()).select_from(ReceivedLike))
            done = await session.scalar(
                select(func.count())
                .select_from(WorkItem)
                .where(WorkItem.state == WorkState.DONE.value)
            )
    finally:
        await services.database.dispose()
    return {"seconds": seconds, "ran": ran, "recorded": recorded, "done": done}


async def baseline(url: str) -> dict[str, Any]:
    """The same received_likes rows, deleted and inserted again in one batched INSERT (best of
    BASELINE_RUNS)."""
    database = Database(url)
    table = ReceivedLike.__table__
    try:
        async with database.connect() as connection:
            rows = [
                dict(row._mapping)
                for row in await connection.execute(select(*[c for c in table.c if c.name != "id"]))
            ]
        times: list[float] = []
        for _ in range(BASELINE_RUNS):
            async with database.connect() as connection:
                await connection.execute(delete(ReceivedLike))
            started = time.perf_counter()
            async with database.connect() as connection:
                await connection.execute(insert(ReceivedLike), rows)
            times.append(time.perf_counter() - started)
    finally:
        await database.dispose()
    return {"seconds": min(times), "all_seconds": times, "rows": len(rows)}


def _measure(backend: Backend, postgres_url: str | None, work: Path, scale: str) -> Row:
    config = SCALES[scale]
    databases = Databases(work / backend, backend, postgres_url)
    logs = work / "logs"
    try:

        async def setup() -> str:
            url = await databases.new("p2")
            await _seed(url, config["likes"], config["actors"])
            return url

        url = asyncio.run(setup())
        environ = instance_environ(work / backend / "data", url)
        ours = run_child(
            "tests.benchmarks.p2_worker:worker",
            {"environ": environ, "limit": config["limit"]},
            timeout=config["limit"] + 120,
            log_dir=logs,
        )
        base = run_child(
            "tests.benchmarks.p2_worker:baseline", {"url": url}, timeout=300, log_dir=logs
        )
    finally:
        asyncio.run(databases.drop_all())
    likes = config["likes"]
    processed = ours["ran"]
    ours_rate = processed / ours["seconds"]
    base_rate = base["rows"] / base["seconds"] if base["seconds"] else None
    ratio = ratio_of(ours_rate, base_rate)
    ok = processed > 0 and ours["recorded"] == processed == ours["done"] == base["rows"]
    notes = [
        f"{processed:,} of {likes:,} stored Likes processed (stops at {config['limit']:.0f} s), "
        f"from {config['actors']} remote actors, all of one thing"
    ]
    if not ok:
        notes.append(
            f"NOT ALL RECORDED: {processed} jobs ran, {ours['recorded']} Likes recorded, "
            f"{ours['done']} work rows done, baseline inserted {base['rows']}"
        )
    return Row(
        id="P2",
        variant=backend,
        what=WHAT,
        unit="Likes/s",
        ours=ours_rate,
        baseline=base_rate,
        ratio=ratio,
        target=f">= {TARGET}x",
        met=at_least(ratio, TARGET) if ok else False,
        peak_rss_mib=ours["_peak_rss_mib"],
        baseline_peak_rss_mib=base["_peak_rss_mib"],
        scale=scale,
        notes=notes,
        extra={"ours_s": ours["seconds"], "baseline_s": base["seconds"], "jobs_run": ours["ran"]},
    )


def run(scale: str, workdir: str, postgres_url: str | None) -> dict[str, Any]:
    work = Path(workdir)
    rows: list[Row] = []
    for backend in BACKENDS:
        if backend == "postgresql" and not postgres_url:
            rows.append(skipped("P2", backend, WHAT, f">= {TARGET}x", NO_POSTGRES))
            continue
        try:
            rows.append(_measure(backend, postgres_url, work, scale))
        except BenchError as error:
            rows.append(failed("P2", backend, WHAT, f">= {TARGET}x", str(error)))
    return {"rows": [row.as_dict() for row in rows]}
