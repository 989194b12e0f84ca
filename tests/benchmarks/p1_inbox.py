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
    Backend,
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
    "small": {
        "actors": 16,
        "warmup": 32,
        "requests": 150,
        "concurrency": 16,
        "limit": 30.0,
        "baseline_runs": 1,
    },
    "full": {
        "actors": 200,
        "warmup": 400,
        "requests": 12_000,
        "concurrency": 64,
        "limit": 60.0,
        "baseline_runs": 2,
    },
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
    backend: Backend,
    postgres_url: str | None,
    work: Path,
    requests_file: Path,
    config: dict[str, Any],
) -> dict[str, Any]:
    """A real instance on `backend` under the signed Likes; what it answered and stored."""
    databases = Databases(work / backend, backend, postgres_url)
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
    return {**result, "server": stats, "activities": activities, "work_rows": work_rows}


def _row(
    backend: Backend,
    result: dict[str, Any],
    config: dict[str, Any],
    baselines: list[dict[str, Any]],
) -> Row:
    accepted = result["statuses"].get("202", 0) + result["warmup_statuses"].get("202", 0)
    sent = result["sent"] + sum(result["warmup_statuses"].values())
    base_rate = max(b["rate"] for b in baselines)
    notes = [
        f"{result['sent']:,} timed requests after {config['warmup']} warm-up ones (keys cached), "
        f"{config['concurrency']} connections; worker off, so this is the inbox alone",
        "baseline: best of "
        + ", ".join(f"{b['rate']:,.0f}" for b in baselines)
        + " req/s"
        + " (measured before and after the instances)" * (len(baselines) > 1),
    ]
    activities, work_rows = result["activities"], result["work_rows"]
    ok = accepted == sent and activities == sent and work_rows == sent
    if not ok:
        notes.append(
            f"NOT ALL ACCEPTED: statuses {result['statuses']}, {activities} activities and "
            f"{work_rows} work rows stored for {sent} requests"
        )
    if result["stopped_by_time"]:
        notes.append(f"stopped by the {config['limit']:.0f} s time limit")
    ratio = ratio_of(result["rate"], base_rate)
    return Row(
        id="P1",
        variant=backend,
        what=WHAT,
        unit="req/s",
        ours=result["rate"],
        baseline=base_rate,
        ratio=ratio,
        target=f">= {TARGET}x",
        met=at_least(ratio, TARGET) if ok else False,
        peak_rss_mib=result["server"].get("peak_rss_mib"),
        baseline_peak_rss_mib=max(b["server"].get("peak_rss_mib") or 0 for b in baselines),
        notes=notes,
        extra={
            "p50_ms": result["p50_ms"],
            "p99_ms": result["p99_ms"],
            "baseline_p50_ms": baselines[0]["p50_ms"],
            "stored_activities": activities,
            "loadgen_peak_rss_mib": result["_peak_rss_mib"],
        },
    )


def _baseline(
    keys_file: Path, requests_file: Path, config: dict[str, Any], work: Path
) -> dict[str, Any]:
    bare = ServerProcess(["bare-verify", str(keys_file)], log_dir=work / "logs", name="p1-bare")
    result, stats = _load(bare, requests_file, config, work / "logs")
    if result["statuses"].get("202", 0) != result["sent"]:
        raise BenchError(f"the baseline server refused requests: {result['statuses']}")
    return {**result, "server": stats}


def run(scale: str, workdir: str, postgres_url: str | None) -> dict[str, Any]:
    config = SCALES[scale]
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    requests_file = work / "likes.jsonl"
    write_signed_likes(requests_file, config["actors"], config["warmup"] + config["requests"])
    keys_file = work / "keys.json"
    keys_file.write_text(json.dumps(public_keys(config["actors"])))
    target = f">= {TARGET}x"
    try:
        baselines = [_baseline(keys_file, requests_file, config, work)]
    except BenchError as error:
        why = f"baseline: {error}"
        return {"rows": [failed("P1", b, WHAT, target, why).as_dict() for b in BACKENDS]}

    results: dict[Backend, dict[str, Any] | str] = {}
    for backend in BACKENDS:
        if backend == "postgresql" and not postgres_url:
            results[backend] = NO_POSTGRES
            continue
        try:
            results[backend] = _ours(backend, postgres_url, work, requests_file, config)
        except BenchError as error:
            results[backend] = f"failed: {error}"
    if config["baseline_runs"] > 1:
        baselines.append(_baseline(keys_file, requests_file, config, work))

    rows: list[Row] = []
    for backend, result in results.items():
        if isinstance(result, dict):
            rows.append(_row(backend, result, config, baselines))
        elif result == NO_POSTGRES:
            rows.append(skipped("P1", backend, WHAT, target, result))
        else:
            rows.append(failed("P1", backend, WHAT, target, result))
    for row in rows:
        row.scale = scale
    return {"rows": [row.as_dict() for row in rows]}
