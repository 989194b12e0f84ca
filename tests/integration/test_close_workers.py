"""Several workers and servers share one PostgreSQL queue: a due month close, many deliveries,
inbound Likes arriving at two servers at once.

Production runs as many `flattrfed worker` processes as it likes against one PostgreSQL
database (docs/settlement.md §8.2). Here they race for one instance's queue: a due month-close
row, Creates to followers on a fake server, Likes to a peer instance and to the fake server.
Whoever claims what, the close runs once (one ClearingRun, each donor's close transaction
posted once), every delivery reaches its inbox once, and every Like is recorded once.

First with Worker objects in this process, each built by create_app() on its own Database
engine (its own connection pool and HTTP client, as a separate process has), run together with
asyncio.gather; then with two real `flattrfed worker --once` processes; then with two
`flattrfed serve` processes (each with its in-process worker) and two `flattrfed worker`
processes all running together while signed Likes arrive at both servers.

PostgreSQL only: SQLite has one writer at a time and no SKIP LOCKED, so there is no race to
lose. Set FLATTRFED_TEST_POSTGRES_URL (tests/harness/databases.py) to run them.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import socket
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from sqlalchemy import func, select

from flattrfed.activitypub import signatures
from flattrfed.activitypub.delivery import DELIVER_KIND
from flattrfed.activitypub.documents import AS_CONTEXT
from flattrfed.activitypub.outbox import publish_post
from flattrfed.app import create_app
from flattrfed.context import SERVICES
from flattrfed.db.models import (
    ClearingRun,
    DonorClose,
    Flattr,
    InboundActivity,
    LedgerTransaction,
    Member,
    ReceivedLike,
    Statement,
    WorkItem,
    WorkState,
)
from flattrfed.db.session import Database
from flattrfed.flattring import members
from flattrfed.flattring.flattrs import flattr
from flattrfed.flattring.peers import add_peer, discover_peer
from flattrfed.flattring.resolve import Target, resolve_target
from flattrfed.flattring.wallets import record_deposit
from flattrfed.money import Money
from flattrfed.settlement import ledger
from flattrfed.settlement.checks import check_ledger
from flattrfed.settlement.schedule import CLOSE_KIND
from tests.fakes.sink import FakeActor, InboxSink
from tests.harness.databases import POSTGRES_SKIP_REASON, DatabaseFactory
from tests.harness.instances import Federation, Instance

pytestmark = pytest.mark.postgres

PERIOD = "2026-11"
WORKERS = 4
DONORS = 8
POSTS = 12
PROCESS_POSTS = 40  # for the processes: they start a second or so apart
FOLLOWERS = 3  # each with its own inbox: one delivery per post and follower
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def postgres_only(database_factory: DatabaseFactory) -> None:
    if database_factory.backend != "postgresql":
        pytest.skip(POSTGRES_SKIP_REASON)


@pytest.fixture(autouse=True)
def hash_the_password_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Argon2 takes a quarter of a second per member and nobody logs in here: hash the one
    password once (the stored hash is still a real argon2 hash)."""
    monkeypatch.setattr(members, "hash_password", functools.cache(members.hash_password))


@pytest.fixture
async def sinks(federation: Federation) -> AsyncIterator[list[InboxSink]]:
    started: list[InboxSink] = []
    try:
        yield started
    finally:
        for sink in started:
            await sink.close()


@dataclass
class Queue:
    """What the setup put in alpha's queue, to compare with what came out."""

    alpha: Instance
    sink: InboxSink
    donors: list[Member] = field(default_factory=list)
    likes_to_peer: int = 0
    likes_to_sink: int = 0
    creates: int = 0


# --- building the queue ---------------------------------------------------------------------


async def peer(one: Instance, other: Instance) -> None:
    services = one.services
    actor, currency = await discover_peer(
        services.nodeinfo, other.host, services.settings.currency, services.clock.now()
    )
    async with services.database.transaction() as session:
        await add_peer(
            session,
            host=other.host,
            clearing_actor=actor,
            currency=currency,
            credit_limit_minor=1_000_000,
            now=services.clock.now(),
        )


async def donor(instance: Instance, name: str, budget: int) -> Member:
    member = await instance.create_member(name)
    async with instance.services.database.transaction() as session:
        row = await session.get(Member, member.id)
        assert row is not None
        row.monthly_budget_minor = budget
        await record_deposit(
            session,
            member=row,
            amount=Money(budget * 2, "EUR"),
            bank_reference=f"{name}-1",
            currency="EUR",
            now=instance.services.clock.now(),
        )
        return row


async def click(instance: Instance, member: Member, target: Target) -> None:
    services = instance.services
    async with services.database.transaction() as session:
        row = await session.get(Member, member.id)
        assert row is not None
        await flattr(session, services.urls, row, target, services.clock.now())


async def followers_of_the_blog(alpha: Instance, sink: InboxSink) -> list[FakeActor]:
    blog_uri = alpha.actor_uri("blog", "thing")
    actors = [sink.add_actor(f"reader{n}", shared_inbox=False) for n in range(FOLLOWERS)]
    for actor in actors:
        assert await sink.follow(actor, blog_uri, alpha.url("/inbox")) == 202
    await alpha.run_worker()  # the Follows are processed and the Accepts delivered
    return actors


async def fill_the_queue(
    federation: Federation, sink: InboxSink, *, peer_instance: Instance | None
) -> Queue:
    """Donors on alpha flattr a local thing, a sink account (a pending flattr: its Like goes to
    the sink) and, with a peer, two of the peer's things; the blog posts to its followers."""
    alpha = federation.instances["alpha"]
    alice = await alpha.create_member("alice")
    await alpha.create_thing(alice, "blog", "Alice's blog")
    readers = await followers_of_the_blog(alpha, sink)
    queue = Queue(alpha, sink)
    texts = [f"@blog@{alpha.host}", readers[0].uri]
    if peer_instance is not None:
        dave = await peer_instance.create_member("dave")
        for handle in ("pod", "zine"):
            await peer_instance.create_thing(dave, handle, f"Dave's {handle}")
            texts.append(f"@{handle}@{peer_instance.host}")
    targets = [await resolve_target(alpha.services, text) for text in texts]
    for index in range(DONORS):
        member = await donor(alpha, f"donor{index}", budget=300 + 70 * index)
        queue.donors.append(member)
        for target in targets:
            await click(alpha, member, target)
            if target.payee_host == sink.host:
                queue.likes_to_sink += 1
            elif not target.is_local:
                queue.likes_to_peer += 1
    await publish(queue, POSTS // 2)
    return queue


async def publish(queue: Queue, posts: int) -> None:
    alpha = queue.alpha
    blog = await alpha.actor("blog")
    for _ in range(posts):
        async with alpha.services.database.transaction() as session:
            await publish_post(
                session,
                alpha.services.urls,
                blog,
                f"Post {queue.creates // FOLLOWERS}",
                alpha.services.clock.now(),
            )
        queue.creates += FOLLOWERS


# --- what came out --------------------------------------------------------------------------


async def check_ran_once(queue: Queue) -> None:
    alpha, sink = queue.alpha, queue.sink
    async with alpha.services.database.sessions() as session:
        runs = (
            await session.scalars(select(ClearingRun).where(ClearingRun.period == PERIOD))
        ).all()
        assert [run.stage for run in runs] == ["done"]
        closes = (
            await session.scalars(select(DonorClose).where(DonorClose.run_id == runs[0].id))
        ).all()
        assert sorted(close.donor_id for close in closes) == sorted(d.id for d in queue.donors)
        for close in closes:
            txids = (
                await session.scalars(
                    select(LedgerTransaction.txid).where(
                        LedgerTransaction.txid == ledger.close_txid(PERIOD, close.donor_id)
                    )
                )
            ).all()
            assert len(txids) == 1, close.donor_id
        close_transactions = await session.scalar(
            select(func.count())
            .select_from(LedgerTransaction)
            .where(LedgerTransaction.kind == "close")
        )
        assert close_transactions == len(closes)

        work = (await session.scalars(select(WorkItem).order_by(WorkItem.id))).all()
        [close_row] = [
            row for row in work if row.kind == CLOSE_KIND and row.payload == {"period": PERIOD}
        ]
        assert (close_row.state, close_row.attempts) == (WorkState.DONE, 1)
        deliveries = [row for row in work if row.kind == DELIVER_KIND]
        assert deliveries
        # Each row was claimed once (a claim counts an attempt) and sent once.
        assert {(row.state, row.attempts) for row in deliveries} == {(WorkState.DONE, 1)}, [
            (row.id, row.state, row.attempts, row.lease_owner, row.last_error)
            for row in deliveries
            if (row.state, row.attempts) != (WorkState.DONE, 1)
        ]
        assert await check_ledger(session, "EUR") == []

    arrived = Counter((delivery.path, delivery.activity["id"]) for delivery in sink.received)
    assert [key for key, count in arrived.items() if count > 1] == []
    creates = sink.deliveries("Create")
    assert len(creates) == queue.creates
    assert len(sink.deliveries("Like")) == queue.likes_to_sink
    async with alpha.services.database.sessions() as session:
        likes = (await session.scalars(select(Flattr.like_uri))).all()
    assert len(likes) == len(set(likes))


async def check_the_peer_recorded_each_like_once(queue: Queue, beta: Instance) -> None:
    async with beta.services.database.sessions() as session:
        received = (
            await session.scalars(
                select(ReceivedLike.like_uri).where(ReceivedLike.sender_host == queue.alpha.host)
            )
        ).all()
        inbound = (
            await session.scalars(
                select(InboundActivity.activity_uri).where(InboundActivity.type == "Like")
            )
        ).all()
        offers = (
            await session.scalars(
                select(InboundActivity.outcome).where(InboundActivity.type == "Offer")
            )
        ).all()
    assert len(received) == len(set(received)) == queue.likes_to_peer
    assert len(inbound) == len(set(inbound)) == queue.likes_to_peer
    assert offers == ["statement accepted"]  # peered after October: November's only
    async with queue.alpha.services.database.sessions() as session:
        states = (
            await session.scalars(
                select(Statement.state).where(
                    Statement.period == PERIOD, Statement.direction == "out"
                )
            )
        ).all()
    assert states == ["accepted"]


# --- the tests ------------------------------------------------------------------------------


async def race(alpha: Instance, federation: Federation) -> list[int]:
    """WORKERS workers, each on its own engine and HTTP client, run alpha's queue together."""
    apps = [
        create_app(
            alpha.settings,
            clock=federation.clock,
            database=Database(alpha.settings.database_url),
            resolver=federation.resolver,
        )
        for _ in range(WORKERS)
    ]
    workers = [app[SERVICES].worker for app in apps]
    for index, worker in enumerate(workers):
        worker.worker_id = f"racer-{index}"
        worker.batch_size = 3  # small batches: the workers keep coming back to the queue
    try:
        ran = await asyncio.gather(*(worker.run_until_idle() for worker in workers))
    finally:
        for app in apps:
            await app[SERVICES].client.close()
            await app[SERVICES].database.dispose()
    assert sum(1 for count in ran if count) > 1, f"one worker did everything: {ran}"
    return ran


async def test_workers_on_separate_engines_race_for_the_close_and_the_deliveries(
    federation: Federation, sinks: list[InboxSink]
) -> None:
    alpha = await federation.start("alpha", fee_bp=100)
    beta = await federation.start("beta")
    await federation.step_workers()  # October closes before any peering: nothing to send
    await peer(alpha, beta)
    await peer(beta, alpha)
    sink = await InboxSink(federation.resolver, federation.clock, "sink.test").start()
    sinks.append(sink)
    queue = await fill_the_queue(federation, sink, peer_instance=beta)
    await race(alpha, federation)  # the Likes and the first posts go out in November
    await federation.step_workers()  # beta verifies and records the Likes
    federation.clock.set(datetime(2026, 12, 2, 1, tzinfo=UTC))  # the close is due
    await publish(queue, POSTS - POSTS // 2)
    await race(alpha, federation)

    # beta verifies the Likes and the statement; its answer and statement come back to alpha.
    await federation.step_workers()
    federation.clock.advance(timedelta(hours=1))
    await federation.step_workers()
    await check_ran_once(queue)
    await check_the_peer_recorded_each_like_once(queue, beta)


async def test_two_worker_processes_race_for_the_close_and_the_deliveries(
    federation: Federation, sinks: list[InboxSink], tmp_path: Path
) -> None:
    # The processes run on the wall clock and resolve no test names: everything they reach
    # is this process's loopback sink, by address. It is 2026-11 on the test clock, and the
    # month's close is due on the wall clock (any time after 2026-12-02).
    if datetime.now(UTC) < datetime(2026, 12, 2, 0, 5, tzinfo=UTC):
        pytest.skip("the wall clock has not reached the close of 2026-11")
    alpha = await federation.start("alpha", fee_bp=100)
    await federation.step_workers()
    sink = await InboxSink(
        federation.resolver, federation.clock, "127.0.0.1", verify_signatures=False
    ).start()
    sinks.append(sink)
    queue = await fill_the_queue(federation, sink, peer_instance=None)
    await publish(queue, PROCESS_POSTS - POSTS // 2)  # enough work for both to get some

    settings = alpha.settings
    environ = {
        **{key: value for key, value in os.environ.items() if not key.startswith("FLATTRFED_")},
        "FLATTRFED_BASE_URL": settings.base_url,
        "FLATTRFED_ALLOW_HTTP": "1",
        "FLATTRFED_DATA_DIR": str(settings.data_dir),
        "FLATTRFED_DATABASE_URL": settings.database_url,
        "FLATTRFED_ALLOWED_PRIVATE_ADDRESSES": "127.0.0.0/8",
        "FLATTRFED_WORKER_IN_PROCESS": "0",
        "FLATTRFED_INSTANCE_NAME": "alpha",
        "FLATTRFED_FEE_BP": "100",
    }
    # The worker, behind the same loopback-only guard as the tests.
    program = (
        "import sys\n"
        "from tests.harness import network_guard\n"
        "network_guard.install()\n"
        "from flattrfed.cli import main\n"
        "sys.exit(main(['worker', '--once']))\n"
    )
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            program,
            cwd=ROOT,
            env=environ,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    done = asyncio.Event()
    owners = asyncio.create_task(lease_owners(alpha.services.database, done))
    try:
        outputs = await asyncio.wait_for(
            asyncio.gather(*(process.communicate() for process in processes)), timeout=120
        )
    finally:
        done.set()
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
    for process, (_stdout, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr.decode()[-3000:]
    # A worker id is host:pid:random; seen holding leases, both processes claimed work.
    pids = {owner.split(":")[1] for owner in await owners}
    assert pids == {str(process.pid) for process in processes}, await owners
    await check_ran_once(queue)


async def lease_owners(database: Database, done: asyncio.Event) -> set[str]:
    """The workers seen holding a lease on alpha's queue until `done` (polled in real time)."""
    seen: set[str] = set()
    while not done.is_set():
        async with database.sessions() as session:
            found = await session.scalars(
                select(WorkItem.lease_owner).where(WorkItem.lease_owner.is_not(None)).distinct()
            )
            seen.update(owner for owner in found.all() if owner is not None)
        await asyncio.sleep(0.005)
    return seen


# --- two servers and two workers, all at once -----------------------------------------------

INBOUND_LIKES = 40


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_until_healthy(client: aiohttp.ClientSession, url: str, process: Any) -> None:
    deadline = time.monotonic() + 120  # start-up is slow on a loaded machine
    while time.monotonic() < deadline:
        if process.returncode is not None:
            raise AssertionError(f"{url} exited with {process.returncode}")
        try:
            async with client.get(url) as response:
                if response.status == 200:
                    return
        except aiohttp.ClientConnectionError:
            pass
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} never answered")


async def unsettled(database: Database, likes: int, sender: str) -> str:
    """What is left: Likes from `sender` not recorded, work due now, November's close; ""
    when nothing. (Work due later — next month's close, the daily watch — does not count.)"""
    async with database.sessions() as session:
        recorded = await session.scalar(
            select(func.count())
            .select_from(ReceivedLike)
            .where(ReceivedLike.like_uri.startswith(sender + "/"))
        )
        due = (
            await session.execute(
                select(WorkItem.kind, WorkItem.attempts, WorkItem.last_error)
                .where(
                    WorkItem.state == WorkState.PENDING,
                    WorkItem.run_after <= datetime.now(UTC),
                )
                .limit(5)
            )
        ).all()
        closed = await session.scalar(select(ClearingRun.stage).where(ClearingRun.period == PERIOD))
    if recorded == likes and not due and closed == "done":
        return ""
    return f"{recorded}/{likes} Likes recorded; work due: {due}; close of {PERIOD}: {closed}"


async def test_two_servers_and_two_workers_at_once_do_everything_once(
    federation: Federation, sinks: list[InboxSink], tmp_path: Path
) -> None:
    """Two `flattrfed serve` processes (each with its in-process worker) and two
    `flattrfed worker` processes on one PostgreSQL, all running together: every Like that
    arrives at both servers at the same moment is stored and recorded once, every delivery
    is sent once, and November's close runs once."""
    if datetime.now(UTC) < datetime(2026, 12, 2, 0, 5, tzinfo=UTC):
        pytest.skip("the wall clock has not reached the close of 2026-11")
    alpha = await federation.start("alpha", fee_bp=100)
    await federation.step_workers()
    sink = await InboxSink(
        federation.resolver, federation.clock, "127.0.0.1", verify_signatures=False
    ).start()
    sinks.append(sink)
    queue = await fill_the_queue(federation, sink, peer_instance=None)
    await publish(queue, PROCESS_POSTS - POSTS // 2)
    # The fans' actors, fetched by the servers when they check the Likes' signatures.
    fans = await InboxSink(federation.resolver, federation.clock, "127.0.0.1").start()
    sinks.append(fans)

    settings = alpha.settings
    environ = {
        **{key: value for key, value in os.environ.items() if not key.startswith("FLATTRFED_")},
        "FLATTRFED_BASE_URL": settings.base_url,
        "FLATTRFED_ALLOW_HTTP": "1",
        "FLATTRFED_DATA_DIR": str(settings.data_dir),
        "FLATTRFED_DATABASE_URL": settings.database_url,
        "FLATTRFED_ALLOWED_PRIVATE_ADDRESSES": "127.0.0.0/8",
        "FLATTRFED_INSTANCE_NAME": "alpha",
        "FLATTRFED_FEE_BP": "100",
    }

    def program(argv: list[str]) -> str:
        return (
            "import sys\n"
            "from tests.harness import network_guard\n"
            "network_guard.install()\n"
            "from flattrfed.cli import main\n"
            f"sys.exit(main({argv!r}))\n"
        )

    ports = [free_port(), free_port()]
    commands = [(["serve", "--host", "127.0.0.1", "--port", str(port)], "1") for port in ports] + [
        (["worker", "--poll-interval", "0.2"], "0")
    ] * 2
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            program(argv),
            cwd=ROOT,
            env={**environ, "FLATTRFED_WORKER_IN_PROCESS": in_process},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=(tmp_path / f"process-{index}.log").open("wb"),
        )
        for index, (argv, in_process) in enumerate(commands)
    ]
    done = asyncio.Event()
    owners = asyncio.create_task(lease_owners(alpha.services.database, done))
    try:
        async with aiohttp.ClientSession() as client:
            for port, process in zip(ports, processes, strict=False):
                await wait_until_healthy(client, f"http://127.0.0.1:{port}/health", process)
        blog_uri = alpha.actor_uri("blog", "thing")
        senders = [fans.add_actor(f"fan{n}") for n in range(4)]
        likes = [
            {
                "@context": AS_CONTEXT,
                "id": f"{senders[n % 4].uri}#likes/{n}",
                "type": "Like",
                "actor": senders[n % 4].uri,
                "object": blog_uri,
            }
            for n in range(INBOUND_LIKES)
        ]

        async def deliver(sender: FakeActor, like: dict[str, Any], port: int) -> int:
            """POST signed for alpha's public inbox URL to one server, as a proxy in front
            of both would pass it on (with the public Host)."""
            body = json.dumps(like).encode()
            headers = signatures.sign_request(
                private_key=sender.private_key,
                key_id=sender.key_id,
                method="POST",
                url=alpha.url("/inbox"),
                headers={"Content-Type": "application/activity+json"},
                body=body,
                now=datetime.now(UTC),
            )
            async with client.post(
                f"http://127.0.0.1:{port}/inbox", data=body, headers=headers
            ) as response:
                return response.status

        async with aiohttp.ClientSession() as client:
            # Each server fetches each fan's key once (a burst of first contacts from one host
            # is answered 401 key_unavailable beyond the per-host fetch budget, by design).
            statuses = [
                await deliver(senders[n], likes[n], port) for n in range(4) for port in ports
            ]
            # Then each Like arrives at both servers at once, as a retried delivery can.
            statuses += await asyncio.gather(
                *(
                    deliver(senders[n % 4], like, port)
                    for n, like in enumerate(likes[4:], start=4)
                    for port in ports
                )
            )
        assert set(statuses) == {202}, Counter(statuses)
        deadline = time.monotonic() + 240
        while left := await unsettled(alpha.services.database, INBOUND_LIKES, fans.base_url):
            assert all(process.returncode is None for process in processes)
            assert time.monotonic() < deadline, f"the processes did not finish: {left}"
            await asyncio.sleep(0.1)
    finally:
        done.set()
        for process in processes:
            if process.returncode is None:
                process.terminate()
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), timeout=30)
            except TimeoutError:
                process.kill()
                await process.wait()
    for index, process in enumerate(processes):
        log = (tmp_path / f"process-{index}.log").read_text(errors="replace")
        assert process.returncode == 0, log[-3000:]
    pids = {owner.split(":")[1] for owner in await owners}
    assert len(pids & {str(process.pid) for process in processes}) >= 2, await owners

    await check_ran_once(queue)
    async with alpha.services.database.sessions() as session:
        stored = (
            await session.scalars(
                select(InboundActivity.activity_uri).where(
                    InboundActivity.type == "Like",
                    InboundActivity.activity_uri.startswith(fans.base_url + "/"),
                )
            )
        ).all()
        recorded = (
            await session.scalars(
                select(ReceivedLike.like_uri).where(
                    ReceivedLike.like_uri.startswith(fans.base_url + "/")
                )
            )
        ).all()
    assert sorted(stored) == sorted(set(stored)) == sorted(like["id"] for like in likes)
    assert sorted(recorded) == sorted(like["id"] for like in likes)
