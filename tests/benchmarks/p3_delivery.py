"""P3: signed deliveries to a loopback sink, against raw RSA-2048 signing of as many requests.

Setup: one of our things has F followers on H remote servers, each server with a shared inbox
(all served by one sink process on 127.0.0.1 under H host names). A posts are queued with the
product's `deliver_to_followers`, which groups followers by shared inbox, so A*H deliveries are
queued. Ours: the instance's worker (create_app's) runs them until idle in a fresh process:
per delivery it checks the host, loads the actor's key, signs draft-cavage, POSTs through the
federation client (pooled keep-alive connections) and records the outcome. The sink answers
202 at once and counts requests and TCP connections. Baseline: the same number of RSA-2048
PKCS#1 v1.5 signatures over a signing string of the same size, in another fresh process.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from sqlalchemy import func, insert, select

from flattrfed.activitypub import signatures
from flattrfed.activitypub.actors import find_local_actor
from flattrfed.activitypub.delivery import DELIVER_KIND, deliver_to_followers
from flattrfed.activitypub.documents import AS_CONTEXT
from flattrfed.app import create_app
from flattrfed.clock import SystemClock
from flattrfed.config import load_settings
from flattrfed.context import SERVICES
from flattrfed.db.models import Follow, RemoteActor
from flattrfed.db.models.work import WorkItem, WorkState
from flattrfed.db.session import Database
from flattrfed.flattring.members import create_member
from flattrfed.flattring.things import create_thing
from tests.benchmarks.common import (
    BASELINE_RUNS,
    BENCH_BASE_URL,
    BenchError,
    Databases,
    Row,
    ServerProcess,
    at_least,
    failed,
    instance_environ,
    product_logging,
    profiled,
    ratio_of,
    run_child,
    run_worker_for,
)
from tests.harness.resolver import LoopbackResolver

TARGET = 0.6
WHAT = "signed deliveries to a loopback sink (keep-alive, shared-inbox grouping)"
SCALES: dict[str, dict[str, Any]] = {
    "small": {"hosts": 4, "followers": 40, "posts": 12, "limit": 30.0},
    "full": {"hosts": 20, "followers": 2_000, "posts": 150, "limit": 60.0},
}
THING = "news"


def peer_host(index: int, port: int) -> str:
    return f"peer{index}.test:{port}"


async def _seed(url: str, port: int, config: dict[str, Any]) -> int:
    """Our thing, its followers on `hosts` servers, and `posts` posts queued for delivery."""
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
            await create_thing(session, owner=owner, handle=THING, title="News", now=now)
            actor = await find_local_actor(session, kind="thing", username=THING)
            assert actor is not None
            actor_id = actor.id
        followers = []
        for index in range(config["followers"]):
            host = peer_host(index % config["hosts"], port)
            uri = f"http://{host}/users/f{index}"
            followers.append(
                {
                    "uri": uri,
                    "host": host,
                    "type": "Person",
                    "preferred_username": f"f{index}",
                    "name": "",
                    "inbox": f"{uri}/inbox",
                    "shared_inbox": f"http://{host}/inbox",
                    "key_id": f"{uri}#main-key",
                    "public_key_pem": "-",
                    "also_known_as": [],
                    "document": {"id": uri},
                    "fetched_at": now,
                }
            )
        async with database.transaction() as session:
            await session.execute(insert(RemoteActor), followers)
            ids = (await session.scalars(select(RemoteActor.id))).all()
            await session.execute(
                insert(Follow),
                [
                    {
                        "follower_id": follower_id,
                        "target_id": actor_id,
                        "follow_uri": f"http://x.test/follows/{follower_id}",
                        "created_at": now,
                    }
                    for follower_id in ids
                ],
            )
        queued = 0
        thing_uri = f"{BENCH_BASE_URL}/things/{THING}"
        async with database.transaction() as session:
            actor = await find_local_actor(session, kind="thing", username=THING)
            assert actor is not None
            for post in range(config["posts"]):
                note = f"{thing_uri}/posts/{post + 1}"
                activity = {
                    "@context": AS_CONTEXT,
                    "id": f"{note}/activity",
                    "type": "Create",
                    "actor": thing_uri,
                    "published": "2026-11-15T12:00:00Z",
                    "to": ["https://www.w3.org/ns/activitystreams#Public"],
                    "cc": [f"{thing_uri}/followers"],
                    "object": {
                        "id": note,
                        "type": "Note",
                        "attributedTo": thing_uri,
                        "content": "<p>A new issue is out: " + "lorem ipsum " * 20 + "</p>",
                        "published": "2026-11-15T12:00:00Z",
                        "to": ["https://www.w3.org/ns/activitystreams#Public"],
                    },
                }
                queued += await deliver_to_followers(
                    session, actor=actor, activity=activity, now=now
                )
        return queued
    finally:
        await database.dispose()


async def deliver(environ: dict[str, str], hosts: list[str], limit: float) -> dict[str, Any]:
    """Ours, in a fresh process: the instance's worker runs the queued deliveries until none is
    left or `limit` seconds have passed."""
    product_logging()
    resolver = LoopbackResolver()
    for host in hosts:
        resolver.add(host)
    app = create_app(load_settings(environ), clock=SystemClock(), resolver=resolver)
    services = app[SERVICES]
    try:
        with profiled("p3-deliveries"):
            ran, seconds = await run_worker_for(services.worker, limit)
        async with services.database.sessions() as session:
            states = dict(
                (
                    await session.execute(
                        select(WorkItem.state, func.count())
                        .where(WorkItem.kind == DELIVER_KIND)
                        .group_by(WorkItem.state)
                    )
                ).all()
            )
    finally:
        await services.client.close()
        await services.database.dispose()
    return {"seconds": seconds, "ran": ran, "states": states}


def sign_baseline(count: int) -> dict[str, Any]:
    """Raw RSA-2048 signing, `count` times, of a signing string like a delivery's (best of
    BASELINE_RUNS)."""
    key = signatures.generate_rsa_key()
    assert isinstance(key, rsa.RSAPrivateKey)
    base = (
        "(request-target): post /inbox\nhost: peer0.test:40000\n"
        "date: Sun, 15 Nov 2026 12:00:00 GMT\n"
        "digest: SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=\n"
        "content-type: application/activity+json"
    )
    bases = [f"{base}\nx: {index}".encode() for index in range(count)]
    times: list[float] = []
    for _ in range(BASELINE_RUNS):
        started = time.perf_counter()
        for item in bases:
            key.sign(item, padding.PKCS1v15(), hashes.SHA256())
        times.append(time.perf_counter() - started)
    return {"seconds": min(times), "all_seconds": times}


def run(scale: str, workdir: str, postgres_url: str | None) -> dict[str, Any]:
    config = SCALES[scale]
    work = Path(workdir)
    logs = work / "logs"
    target = f">= {TARGET}x"
    databases = Databases(work / "sqlite", "sqlite", None)
    sink = ServerProcess(["sink"], log_dir=logs, name="p3-sink")
    try:
        with sink:
            hosts = [peer_host(index, sink.port).split(":")[0] for index in range(config["hosts"])]

            async def setup() -> tuple[str, int]:
                url = await databases.new("p3")
                return url, await _seed(url, sink.port, config)

            url, queued = asyncio.run(setup())
            environ = instance_environ(work / "data", url)
            ours = run_child(
                "tests.benchmarks.p3_delivery:deliver",
                {"environ": environ, "hosts": hosts, "limit": config["limit"]},
                timeout=config["limit"] + 120,
                log_dir=logs,
            )
            sink_stats = sink.stop()
        base = run_child(
            "tests.benchmarks.p3_delivery:sign_baseline",
            {"count": queued},
            timeout=300,
            log_dir=logs,
        )
    except BenchError as error:
        return {"rows": [failed("P3", "sqlite", WHAT, target, str(error)).as_dict()]}
    finally:
        asyncio.run(databases.drop_all())
    delivered = ours["states"].get(WorkState.DONE.value, 0)
    expected = config["posts"] * config["hosts"]
    ok = (
        queued == expected
        and 0 < delivered == ours["ran"] == sink_stats.get("requests")
        and ours["states"].get(WorkState.FAILED.value, 0) == 0
    )
    ours_rate = delivered / ours["seconds"]
    base_rate = queued / base["seconds"]
    ratio = ratio_of(ours_rate, base_rate)
    notes = [
        f"{config['posts']} posts x {config['followers']} followers on {config['hosts']} "
        f"servers = {queued} deliveries queued (one per shared inbox), {delivered} made "
        f"(stops at {config['limit']:.0f} s); the sink saw "
        f"{sink_stats.get('connections')} TCP connections"
    ]
    if not ok:
        notes.append(
            f"NOT ALL DELIVERED: {queued} queued (expected {expected}), states {ours['states']}, "
            f"sink got {sink_stats.get('requests')}"
        )
    row = Row(
        id="P3",
        variant="sqlite",
        what=WHAT,
        unit="deliveries/s",
        ours=ours_rate,
        baseline=base_rate,
        ratio=ratio,
        target=target,
        met=at_least(ratio, TARGET) if ok else False,
        peak_rss_mib=ours["_peak_rss_mib"],
        baseline_peak_rss_mib=base["_peak_rss_mib"],
        scale=scale,
        notes=notes,
        extra={
            "ours_s": ours["seconds"],
            "baseline_s": base["seconds"],
            "sink": sink_stats,
        },
    )
    return {"rows": [row.as_dict()]}
