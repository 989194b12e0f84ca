"""P1: signed Likes accepted by the inbox, against a bare aiohttp handler doing only the RSA verify.

Ours: a real instance (create_app, worker off so only the inbox runs) in its own process, on
SQLite and PostgreSQL. Every Like is distinct and signed draft-cavage (RSA-2048) by one of the
remote actors whose keys the instance already stored, so after a warm-up every key is cached;
each request is parsed, digest- and signature-checked, origin-checked, stored once with its
work row, and answered 202. Baseline: a bare aiohttp handler in its own process that only
verifies the same RSA signatures. The same signed requests go to both, from a load-generator
process over 127.0.0.1, with the same concurrency.
"""

from __future__ import annotations

import asyncio
import json
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from flattrfed.activitypub.inbox import INBOUND_KIND
from flattrfed.db.models import InboundActivity
from flattrfed.db.models.work import WorkItem
from flattrfed.db.session import Database
from tests.benchmarks.common import (
    BACKENDS,
    NO_POSTGRES,
    BenchError,
    Databases,
    Row,
    ServerProcess,
    at_least,
    failed,
    instance_environ,
    profiling,
    ratio_of,
    run_child,
    skipped,
)
from tests.benchmarks.likes import public_keys, store_remote_actors, write_signed_likes

TARGET = 0.4
WHAT = "signed Likes accepted by the inbox"
SCALES: dict[str, dict[str, Any]] = {
    "small": {"actors": 16, "warmup": 48, "requests": 300, "concurrency": 16, "limit": 30.0},
    "full": {"actors": 200, "warmup": 400, "requests": 12_000, "concurrency": 64, "limit": 90.0},
}


def _load(
    server: ServerProcess, requests_file: Path, config: dict[str, Any], logs: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Start `server`, send it the signed requests from a load-generator process, stop it."""
    with server:
        if profiling():
            server.signal(signal.SIGUSR1)
        result = run_child(
            "tests.benchmarks.loadgen:post_requests",
            {
                "base_url": server.url,
                "requests_file": str(requests_file),
                "warmup": config["warmup"],
                "count": config["requests"],
                "concurrency": config["concurrency"],
                "time_limit": config["limit"],
            },
            timeout=config["limit"] * 2 + 60,
            log_dir=logs,
        )
        if profiling():
            server.signal(signal.SIGUSR2)
        stats = server.stop()
    return result, stats


async def _seed(databases: Databases, actors: int) -> str:
    url = await databases.new("p1")
    database = Database(url)
    try:
        await store_remote_actors(database, actors, datetime.now(UTC))
    finally:
        await database.dispose()
    return url


async def _stored(url: str) -> tuple[int, int]:
    database = Database(url)
    try:
        async with database.sessions() as session:
            activities = await session.scalar(select(func.count()).select_from(InboundActivity))
            work = await session.scalar(
                select(func.count()).select_from(WorkItem).where(WorkItem.kind == INBOUND_KIND)
            )
    finally:
        await database.dispose()
    return int(activities or 0), int(work or 0)


def _ours(
    backend: str,
    postgres_url: str | None,
    work: Path,
    requests_file: Path,
    config: dict[str, Any],
    baseline: dict[str, Any],
    baseline_rss: float | None,
) -> Row:
    databases = Databases(work / backend, backend, postgres_url)  # type: ignore[arg-type]
    try:
        url = asyncio.run(_seed(databases, config["actors"]))
        server = ServerProcess(
            ["instance"],
            env=instance_environ(work / backend / "data", url),
            log_dir=work / "logs",
            name=f"p1-{backend}",
        )
        result, stats = _load(server, requests_file, config, work / "logs")
        activities, work_rows = asyncio.run(_stored(url))
    finally:
        asyncio.run(databases.drop_all())
    accepted = result["statuses"].get("202", 0) + result["warmup_statuses"].get("202", 0)
    sent = result["sent"] + sum(result["warmup_statuses"].values())
    notes = [
        f"{result['sent']} timed requests after {config['warmup']} warm-up ones (keys cached), "
        f"{config['concurrency']} connections; worker off, so this is the inbox alone"
    ]
    ok = accepted == sent and activities == sent and work_rows == sent
    if not ok:
        notes.append(
            f"NOT ALL ACCEPTED: statuses {result['statuses']}, {activities} activities and "
            f"{work_rows} work rows stored for {sent} requests"
        )
    if result["stopped_by_time"]:
        notes.append(f"stopped by the {config['limit']:.0f} s time limit")
    ratio = ratio_of(result["rate"], baseline["rate"])
    return Row(
        id="P1",
        variant=backend,
        what=WHAT,
        unit="req/s",
        ours=result["rate"],
        baseline=baseline["rate"],
        ratio=ratio,
        target=f">= {TARGET}x",
        met=at_least(ratio, TARGET) if ok else False,
        peak_rss_mib=stats.get("peak_rss_mib"),
        baseline_peak_rss_mib=baseline_rss,
        notes=notes,
        extra={
            "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"],
            "baseline_p50_ms": baseline["p50_ms"],
            "stored_activities": activities,
            "loadgen_peak_rss_mib": result["_peak_rss_mib"],
        },
    )


def run(scale: str, workdir: str, postgres_url: str | None) -> dict[str, Any]:
    config = SCALES[scale]
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    requests_file = work / "likes.jsonl"
    write_signed_likes(requests_file, config["actors"], config["warmup"] + config["requests"])
    keys_file = work / "keys.json"
    keys_file.write_text(json.dumps(public_keys(config["actors"])))

    target = f">= {TARGET}x"
    bare = ServerProcess(["bare-verify", str(keys_file)], log_dir=work / "logs", name="p1-bare")
    try:
        baseline, bare_stats = _load(bare, requests_file, config, work / "logs")
    except BenchError as error:
        why = f"baseline: {error}"
        return {"rows": [failed("P1", b, WHAT, target, why).as_dict() for b in BACKENDS]}
    if baseline["statuses"].get("202", 0) != baseline["sent"]:
        raise BenchError(f"the baseline server refused requests: {baseline['statuses']}")

    rows: list[Row] = []
    for backend in BACKENDS:
        if backend == "postgresql" and not postgres_url:
            rows.append(
                skipped("P1", backend, WHAT, target, NO_POSTGRES)
            )
            continue
        try:
            rows.append(
                _ours(
                    backend,
                    postgres_url,
                    work,
                    requests_file,
                    config,
                    baseline,
                    bare_stats.get("peak_rss_mib"),
                )
            )
        except BenchError as error:
            rows.append(failed("P1", backend, WHAT, target, str(error)))
    for row in rows:
        row.scale = scale
    return {"rows": [row.as_dict() for row in rows]}
