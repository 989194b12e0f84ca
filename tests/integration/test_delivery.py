"""Outbound delivery against a fake remote server on loopback, and between two real instances.

Covers shared-inbox grouping, the signature on the wire, the retry schedule (stepped with the
ManualClock, never slept), which answers are permanent, per-host failure tracking, the
transactional outbox, key rotation, and that the instance keeps serving while a delivery hangs.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import itertools
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import pytest
from sqlalchemy import func, select

from flattrfed import cli
from flattrfed.activitypub import signatures
from flattrfed.activitypub.actors import rotate_key
from flattrfed.activitypub.client import FederationClient
from flattrfed.activitypub.delivery import DELIVER_KIND, MAX_ATTEMPTS, Deliverer
from flattrfed.activitypub.interactions import follow
from flattrfed.activitypub.outbox import publish_post, rotate_actor_key
from flattrfed.clock import ManualClock
from flattrfed.db.models import (
    ActorKey,
    FederationHost,
    InboundActivity,
    Post,
    RemoteActor,
    RemoteObject,
    WorkItem,
    WorkState,
)
from flattrfed.db.session import Database
from flattrfed.flattring.members import create_member
from flattrfed.flattring.things import create_thing
from flattrfed.worker import Worker
from tests.fakes.sink import DROP, STALL, FakeActor, InboxSink, Reply
from tests.harness.databases import DatabaseFactory
from tests.harness.instances import Federation, Instance

MINUTE = timedelta(minutes=1)
DAY = timedelta(days=1)


class SinkFactory(Protocol):
    def __call__(self, name: str = "sink") -> Awaitable[InboxSink]: ...


@pytest.fixture
async def make_sink(federation: Federation) -> AsyncIterator[SinkFactory]:
    """Starts fake remote servers named NAME.test; all are closed after the test."""
    sinks: list[InboxSink] = []

    async def make(name: str = "sink") -> InboxSink:
        sink = await InboxSink(federation.resolver, federation.clock, f"{name}.test").start()
        sinks.append(sink)
        return sink

    try:
        yield make
    finally:
        for sink in sinks:
            await sink.close()


# --- helpers -----------------------------------------------------------------------------------


async def start_blog(federation: Federation) -> tuple[Instance, str]:
    """Instance alpha with a thing `blog` (owned by alice); returns it and the blog's actor id."""
    alpha = await federation.start("alpha")
    alice = await alpha.create_member("alice")
    await alpha.create_thing(alice, "blog", "Alice's blog")
    return alpha, alpha.actor_uri("blog", "thing")


async def follow_blog(alpha: Instance, sink: InboxSink, *actors: FakeActor) -> None:
    """Each actor follows the blog with a signed Follow, as a Mastodon account would."""
    blog_uri = alpha.actor_uri("blog", "thing")
    accepted = len(sink.deliveries("Accept"))
    for actor in actors:
        assert await sink.follow(actor, blog_uri, alpha.url("/inbox")) == 202
    await alpha.run_worker()  # the Follows are processed and the Accepts delivered
    assert len(sink.deliveries("Accept")) == accepted + len(actors)


async def post(alpha: Instance, text: str) -> Post:
    blog = await alpha.actor("blog")
    async with alpha.services.database.transaction() as session:
        return await publish_post(
            session, alpha.services.urls, blog, text, alpha.services.clock.now()
        )


async def delivery_rows(instance: Instance) -> list[WorkItem]:
    async with instance.services.database.sessions() as session:
        query = select(WorkItem).where(WorkItem.kind == DELIVER_KIND).order_by(WorkItem.id)
        return list((await session.scalars(query)).all())


async def row_for(instance: Instance, activity_id: str) -> WorkItem:
    rows = [row for row in await delivery_rows(instance) if activity_of(row) == activity_id]
    assert len(rows) == 1, rows
    return rows[0]


def activity_of(row: WorkItem) -> str:
    return str(row.payload["activity"]["id"])


def create_id(item: Post) -> str:
    return f"{item.uri}/activity"


async def step_until_settled(instance: Instance, clock: ManualClock, max_steps: int = 40) -> None:
    """Run due work; while a delivery is pending, jump the clock to its next attempt."""
    for _ in range(max_steps):
        await instance.run_worker()
        due = [row.run_after for row in await delivery_rows(instance) if row.state == "pending"]
        if not due:
            return
        clock.set(max(clock.now(), min(due)))
    raise AssertionError("deliveries still pending")


async def settle(federation: Federation, max_steps: int = 40) -> None:
    """step_until_settled for every instance of the federation at once."""
    for _ in range(max_steps):
        await federation.step_workers()
        due = [
            row.run_after
            for instance in federation.instances.values()
            for row in await delivery_rows(instance)
            if row.state == "pending"
        ]
        if not due:
            return
        federation.clock.set(max(federation.clock.now(), min(due)))
    raise AssertionError("deliveries still pending")


def clock_now(instance: Instance) -> datetime:
    return instance.services.clock.now()


async def host_row(instance: Instance, host: str) -> FederationHost | None:
    async with instance.services.database.sessions() as session:
        return await session.scalar(select(FederationHost).where(FederationHost.host == host))


async def public_key_of(federation: Federation, actor_uri: str) -> signatures.PublicKey:
    """The key an actor document publishes, fetched over HTTP as any peer would."""
    headers = {"Accept": "application/activity+json"}
    async with federation.client().get(actor_uri, headers=headers) as response:
        assert response.status == 200
        document = await response.json(content_type=None)
    return signatures.load_public_key_pem(document["publicKey"]["publicKeyPem"])


def short_client(instance: Instance, federation: Federation, seconds: float) -> FederationClient:
    return FederationClient(
        allowed_networks=instance.settings.allowed_private_addresses,
        allow_http=True,
        clock=federation.clock,
        resolver=federation.resolver,
        connect_timeout=seconds,
        total_timeout=seconds,
    )


def delivery_worker(instance: Instance, client: FederationClient, **options: Any) -> Worker:
    """A second delivery worker on the instance's database (another process, in real life)."""
    services = instance.services
    deliverer = Deliverer(services.database, client, services.clock, services.urls, allow_http=True)
    return Worker(services.database, services.clock, {DELIVER_KIND: deliverer.handle}, **options)


@pytest.fixture
def cli_logging() -> Iterator[None]:
    """cli.main() installs its own root log handler; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    alembic_level = logging.getLogger("alembic").level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("alembic").setLevel(alembic_level)


def use_instance_settings(monkeypatch: pytest.MonkeyPatch, instance: Instance) -> None:
    """Point FLATTRFED_* at the instance, as an admin's shell on that server would be."""
    monkeypatch.delenv("FLATTRFED_CONFIG", raising=False)
    monkeypatch.setenv("FLATTRFED_BASE_URL", instance.base_url)
    monkeypatch.setenv("FLATTRFED_ALLOW_HTTP", "1")
    monkeypatch.setenv("FLATTRFED_DATA_DIR", str(instance.settings.data_dir))
    monkeypatch.setenv("FLATTRFED_DATABASE_URL", instance.settings.database_url)
    monkeypatch.setenv("FLATTRFED_LOG_LEVEL", "warning")


# --- shared inbox ------------------------------------------------------------------------------


async def test_followers_on_one_server_with_a_shared_inbox_get_one_delivery_per_post(
    federation: Federation, make_sink: SinkFactory
) -> None:
    alpha, _blog_uri = await start_blog(federation)
    sink = await make_sink("sink")
    other = await make_sink("other")
    shared = [sink.add_actor(name) for name in ("ann", "ben", "cat")]
    personal = [sink.add_actor(name, shared_inbox=False) for name in ("dan", "eve")]
    elsewhere = other.add_actor("fay")
    await follow_blog(alpha, sink, *shared, *personal)
    await follow_blog(alpha, other, elsewhere)
    # Accepts go to each follower's own inbox, never the shared one.
    assert sorted(d.path for d in sink.deliveries("Accept")) == sorted(
        f"/users/{name}/inbox" for name in ("ann", "ben", "cat", "dan", "eve")
    )

    for number in (1, 2):
        item = await post(alpha, f"Episode {number}")
        await alpha.run_worker()
        creates = [d for d in sink.deliveries("Create") if d.activity["object"]["id"] == item.uri]
        assert sorted(d.path for d in creates) == ["/inbox", "/users/dan/inbox", "/users/eve/inbox"]
        assert [d.path for d in other.deliveries("Create")][-1] == "/inbox"
        assert len(other.deliveries("Create")) == number
        rows = [row for row in await delivery_rows(alpha) if activity_of(row) == create_id(item)]
        assert sorted(row.payload["inbox"] for row in rows) == sorted(
            [sink.shared_inbox, other.shared_inbox, personal[0].inbox, personal[1].inbox]
        )
        assert {row.state for row in rows} == {WorkState.DONE}


async def test_followers_whose_inbox_urls_share_a_long_prefix_each_get_the_post(
    federation: Federation, make_sink: SinkFactory
) -> None:
    # The outbox deduplicates rows by (activity, inbox); a key cut to its column width made
    # two long inbox URLs one key, so the second follower silently got nothing.
    alpha, _blog_uri = await start_blog(federation)
    sink = await make_sink()
    stem = "x" * 600
    first = sink.add_actor("first", shared_inbox=False, path=f"{stem}1")
    second = sink.add_actor("second", shared_inbox=False, path=f"{stem}2")
    await follow_blog(alpha, sink, first, second)
    await post(alpha, "For both")
    await alpha.run_worker()
    assert sorted(d.path for d in sink.deliveries("Create")) == [
        f"/users/{stem}1/inbox",
        f"/users/{stem}2/inbox",
    ]


# --- the signature on the wire -----------------------------------------------------------------


async def test_a_delivered_post_is_signed_draft_cavage_and_verifies_with_the_things_key(
    federation: Federation, make_sink: SinkFactory
) -> None:
    alpha, blog_uri = await start_blog(federation)
    sink = await make_sink()
    await follow_blog(alpha, sink, sink.add_actor("ann"))
    item = await post(alpha, "Signed and sealed")
    await alpha.run_worker()

    [delivery] = sink.deliveries("Create")
    activity = delivery.activity
    assert activity["id"] == create_id(item)
    assert activity["actor"] == blog_uri
    assert activity["object"]["attributedTo"] == blog_uri
    assert delivery.verified, delivery.signature_error  # the sink's Mastodon-style check

    headers = delivery.headers
    assert headers["Content-Type"] == "application/activity+json"
    assert headers["Host"] == sink.host
    digest = base64.b64encode(hashlib.sha256(delivery.body).digest()).decode()
    assert headers["Digest"] == f"SHA-256={digest}"
    params = dict(part.split("=", 1) for part in headers["Signature"].replace('"', "").split(","))
    assert params["keyId"] == f"{blog_uri}#main-key"
    assert params["algorithm"] == "rsa-sha256"
    assert params["headers"] == "(request-target) host date digest content-type"
    assert delivery.signature is not None
    assert delivery.signature.covered == (
        "(request-target)",
        "host",
        "date",
        "digest",
        "content-type",
    )
    assert delivery.signature.created == federation.clock.now().replace(microsecond=0)

    # It verifies with the key the thing publishes, and with no other.
    delivery.verify_with(await public_key_of(federation, blog_uri))
    stranger = sink.add_actor("stranger").private_key.public_key()
    with pytest.raises(signatures.SignatureError):
        delivery.verify_with(stranger)


# --- retries -----------------------------------------------------------------------------------


async def test_server_errors_are_retried_on_a_growing_schedule_of_about_three_days(
    federation: Federation, make_sink: SinkFactory
) -> None:
    alpha, _blog_uri = await start_blog(federation)
    sink = await make_sink()
    await follow_blog(alpha, sink, sink.add_actor("ann"))
    sink.answer_always(500)
    item = await post(alpha, "Into the void")
    started = federation.clock.now()
    await step_until_settled(alpha, federation.clock)

    times = [delivery.at for delivery in sink.deliveries("Create")]
    assert len(times) == MAX_ATTEMPTS == 17
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    assert gaps[0] == MINUTE
    assert all(later >= earlier for earlier, later in itertools.pairwise(gaps))
    assert gaps[-1] > gaps[0] * 100
    assert timedelta(days=2) < times[-1] - started < timedelta(days=3, hours=12)

    row = await row_for(alpha, create_id(item))
    assert row.state == WorkState.FAILED
    assert row.attempts == MAX_ATTEMPTS
    assert row.last_error is not None
    assert "HTTP 500" in row.last_error
    assert row.finished_at == times[-1]


async def test_a_delivery_succeeds_on_a_later_attempt_after_server_errors(
    federation: Federation, make_sink: SinkFactory
) -> None:
    alpha, _blog_uri = await start_blog(federation)
    sink = await make_sink()
    await follow_blog(alpha, sink, sink.add_actor("ann"))
    sink.answer(500, 503, 202)
    item = await post(alpha, "Third time lucky")
    await step_until_settled(alpha, federation.clock)

    times = [delivery.at for delivery in sink.deliveries("Create")]
    assert [later - earlier for earlier, later in itertools.pairwise(times)] == [
        MINUTE,
        2 * MINUTE,
    ]
    row = await row_for(alpha, create_id(item))
    assert (row.state, row.attempts, row.last_error) == (WorkState.DONE, 3, None)
    host = await host_row(alpha, sink.host)
    assert host is not None
    assert host.failure_days == 0
    assert host.last_success_at is not None


async def test_a_refused_connection_is_retried_until_the_server_is_back(
    federation: Federation, make_sink: SinkFactory
) -> None:
    alpha, _blog_uri = await start_blog(federation)
    sink = await make_sink()
    await follow_blog(alpha, sink, sink.add_actor("ann"))
    item = await post(alpha, "Anyone home?")
    await sink.go_down()
    await alpha.run_worker()
    row = await row_for(alpha, create_id(item))
    assert row.state == WorkState.PENDING
    assert row.last_error is not None
    assert "connect" in row.last_error
    assert row.run_after == federation.clock.now() + MINUTE

    await sink.come_up()
    await step_until_settled(alpha, federation.clock)
    assert len(sink.deliveries("Create")) == 1
    assert (await row_for(alpha, create_id(item))).state == WorkState.DONE


async def test_timeouts_and_dropped_connections_are_retried(
    federation: Federation, make_sink: SinkFactory
) -> None:
    alpha, _blog_uri = await start_blog(federation)
    sink = await make_sink()
    await follow_blog(alpha, sink, sink.add_actor("ann"))
    sink.answer(STALL, DROP, 202)
    item = await post(alpha, "Slowly")

    # A peer that never answers: a worker whose client gives up after half a second.
    impatient = short_client(alpha, federation, seconds=0.5)
    try:
        assert await delivery_worker(alpha, impatient).run_once() == 1
    finally:
        await impatient.close()
    assert len(sink.deliveries("Create")) == 1  # it did reach the peer, which then hung
    row = await row_for(alpha, create_id(item))
    assert (row.state, row.last_error) == (WorkState.PENDING, "RetryLater: timeout")

    # A peer that hangs up without answering; then one that answers.
    federation.clock.set(row.run_after)
    await alpha.run_worker()
    row = await row_for(alpha, create_id(item))
    assert (row.state, row.last_error) == (WorkState.PENDING, "RetryLater: network")
    assert row.run_after == federation.clock.now() + 2 * MINUTE
    federation.clock.set(row.run_after)
    await alpha.run_worker()
    row = await row_for(alpha, create_id(item))
    assert (row.state, row.attempts, row.last_error) == (WorkState.DONE, 3, None)
    assert len(sink.deliveries("Create")) == 3


async def test_client_errors_are_permanent_after_one_attempt(
    federation: Federation, make_sink: SinkFactory
) -> None:
    alpha, _blog_uri = await start_blog(federation)
    sink = await make_sink()
    await follow_blog(alpha, sink, sink.add_actor("ann"))
    for status in (400, 403, 404, 410, 422, 501):
        sink.answer(status)
        item = await post(alpha, f"Answered {status}")
        await alpha.run_worker()
        federation.clock.advance(timedelta(hours=1))  # well past the first retry's time
        await alpha.run_worker()
        row = await row_for(alpha, create_id(item))
        assert (row.state, row.attempts) == (WorkState.FAILED, 1), status
        assert row.last_error is not None
        assert f"HTTP {status}" in row.last_error
        arrived = [d for d in sink.deliveries("Create") if d.activity["id"] == create_id(item)]
        assert len(arrived) == 1, status


async def test_a_redirect_is_not_followed_and_counts_as_a_failure(
    federation: Federation, make_sink: SinkFactory
) -> None:
    alpha, _blog_uri = await start_blog(federation)
    sink = await make_sink()
    await follow_blog(alpha, sink, sink.add_actor("ann"))
    sink.answer(Reply(302, {"Location": f"{sink.base_url}/elsewhere"}))
    item = await post(alpha, "Moved?")
    await step_until_settled(alpha, federation.clock)
    assert [d.path for d in sink.received if d.type == "Create"] == ["/inbox"]
    row = await row_for(alpha, create_id(item))
    assert row.state == WorkState.FAILED
    assert row.last_error is not None
    assert "HTTP 302" in row.last_error
    host = await host_row(alpha, sink.host)
    assert host is not None
    assert host.failure_days == 1
    assert "302" in (host.last_error or "")


async def test_401_408_429_and_server_errors_are_retried(
    federation: Federation, make_sink: SinkFactory
) -> None:
    alpha, _blog_uri = await start_blog(federation)
    sink = await make_sink()
    await follow_blog(alpha, sink, sink.add_actor("ann"))
    statuses = (401, 408, 429, 500, 502, 503, 504)
    sink.answer(*statuses)
    items = [await post(alpha, f"Answered {status}") for status in statuses]
    await alpha.run_worker()
    for status, item in zip(statuses, items, strict=True):
        row = await row_for(alpha, create_id(item))
        assert (row.state, row.attempts) == (WorkState.PENDING, 1), status
        assert row.run_after == federation.clock.now() + MINUTE, status
        assert row.last_error is not None
        assert f"HTTP {status}" in row.last_error
    federation.clock.advance(MINUTE)
    await alpha.run_worker()
    assert {row.state for row in await delivery_rows(alpha)} == {WorkState.DONE}
    assert len(sink.deliveries("Create")) == 2 * len(statuses)


async def test_retry_after_is_honoured_when_longer_than_the_schedule(
    federation: Federation, make_sink: SinkFactory
) -> None:
    alpha, _blog_uri = await start_blog(federation)
    sink = await make_sink()
    await follow_blog(alpha, sink, sink.add_actor("ann"))
    now = federation.clock.now()
    in_three_hours = signatures.format_http_date(now + timedelta(hours=3))
    answers = {
        "seconds, longer": (Reply(429, {"Retry-After": "7200"}), timedelta(hours=2)),
        "seconds, shorter": (Reply(503, {"Retry-After": "5"}), MINUTE),
        "HTTP date": (Reply(503, {"Retry-After": in_three_hours}), timedelta(hours=3)),
    }
    sink.answer(*(reply for reply, _wait in answers.values()))
    items = {label: await post(alpha, label) for label in answers}
    await alpha.run_worker()
    for label, (_reply, wait) in answers.items():
        row = await row_for(alpha, create_id(items[label]))
        assert row.state == WorkState.PENDING, label
        assert row.run_after == now + wait, label


# --- per-host failure tracking -----------------------------------------------------------------


async def fail_on_days(
    alpha: Instance, sink: InboxSink, clock: ManualClock, days: int, text: str
) -> Post:
    """A post whose delivery fails (HTTP 500) once on each of `days` distinct days."""
    sink.answer_always(500)
    item = await post(alpha, text)
    for day in range(days):
        if day:
            clock.advance(DAY)
        assert await alpha.run_deliveries() == 1
    return item


async def test_a_host_failing_on_seven_distinct_days_is_paused_and_shown_to_admins(
    federation: Federation,
    make_sink: SinkFactory,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cli_logging: None,
) -> None:
    alpha, _blog_uri = await start_blog(federation)
    sink = await make_sink()
    await follow_blog(alpha, sink, sink.add_actor("ann"))
    clock = federation.clock
    first = await fail_on_days(alpha, sink, clock, 6, "Day after day")
    host = await host_row(alpha, sink.host)
    assert host is not None
    assert host.failure_days == 6
    assert host.unavailable_since is None

    clock.advance(DAY)
    assert await alpha.run_deliveries() == 1  # the seventh distinct day
    host = await host_row(alpha, sink.host)
    assert host is not None
    assert host.failure_days == 7
    assert host.unavailable_since == clock.now()
    assert len(sink.deliveries("Create")) == 7

    # From now on nothing is sent to it: the pending row and a new post fail at once.
    clock.advance(DAY)
    second = await post(alpha, "Still there?")
    await alpha.run_worker()
    assert len(sink.deliveries("Create")) == 7
    for item in (first, second):
        row = await row_for(alpha, create_id(item))
        assert row.state == WorkState.FAILED
        assert row.last_error == f"{sink.host} is marked unavailable; not delivering"

    # The admin sees both failed rows and the paused host.
    use_instance_settings(monkeypatch, alpha)
    capsys.readouterr()
    assert await asyncio.to_thread(cli.main, ["deliveries", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert [item["host"] for item in shown["hosts"]] == [sink.host]
    [paused] = shown["hosts"]
    assert paused["failure_days"] == 7
    assert paused["unavailable_since"] is not None
    assert "HTTP 500" in paused["last_error"]
    by_activity = {item["activity"]: item for item in shown["deliveries"]}
    for item in (first, second):
        assert by_activity[create_id(item)]["state"] == "failed"
        assert "marked unavailable" in by_activity[create_id(item)]["last_error"]


async def test_a_verified_activity_from_a_paused_host_resumes_delivery_to_it(
    federation: Federation, make_sink: SinkFactory
) -> None:
    alpha, blog_uri = await start_blog(federation)
    sink = await make_sink()
    ann = sink.add_actor("ann")
    await follow_blog(alpha, sink, ann)
    clock = federation.clock
    await fail_on_days(alpha, sink, clock, 7, "Down all week")
    host = await host_row(alpha, sink.host)
    assert host is not None
    assert host.unavailable_since is not None

    # An unverifiable request from the host proves nothing and changes nothing.
    sink.answer_always(202)
    forged = {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"{ann.uri}#forged",
        "type": "Follow",
        "actor": ann.uri,
        "object": blog_uri,
    }
    impostor = dataclasses.replace(ann, private_key=sink.add_actor("x").private_key)
    assert await sink.send(impostor, alpha.url("/inbox"), forged) == 401
    host = await host_row(alpha, sink.host)
    assert host is not None
    assert host.unavailable_since is not None

    # A verified one shows the host is back.
    assert await sink.follow(ann, blog_uri, alpha.url("/inbox"), serial=2) == 202
    host = await host_row(alpha, sink.host)
    assert host is not None
    assert host.unavailable_since is None
    assert host.failure_days == 0
    item = await post(alpha, "Welcome back")
    await alpha.run_worker()
    assert (await row_for(alpha, create_id(item))).state == WorkState.DONE
    assert sink.deliveries("Create")[-1].activity["id"] == create_id(item)


async def test_a_success_resets_the_count_of_failure_days(
    federation: Federation, make_sink: SinkFactory
) -> None:
    alpha, _blog_uri = await start_blog(federation)
    sink = await make_sink()
    await follow_blog(alpha, sink, sink.add_actor("ann"))
    clock = federation.clock
    item = await fail_on_days(alpha, sink, clock, 6, "Nearly paused")
    sink.answer_always(202)
    clock.advance(DAY)
    await alpha.run_worker()
    assert (await row_for(alpha, create_id(item))).state == WorkState.DONE
    host = await host_row(alpha, sink.host)
    assert host is not None
    assert host.failure_days == 0
    assert host.last_success_at == clock.now()

    clock.advance(DAY)
    await fail_on_days(alpha, sink, clock, 1, "One bad day")
    host = await host_row(alpha, sink.host)
    assert host is not None
    assert host.failure_days == 1
    assert host.unavailable_since is None


# --- the transactional outbox ------------------------------------------------------------------


class Abort(Exception):
    pass


async def test_a_post_whose_transaction_rolls_back_leaves_no_delivery_row(
    federation: Federation, make_sink: SinkFactory
) -> None:
    alpha, _blog_uri = await start_blog(federation)
    sink = await make_sink()
    await follow_blog(alpha, sink, sink.add_actor("ann"))
    before = len(await delivery_rows(alpha))
    blog = await alpha.actor("blog")
    queued: list[int | None] = []

    async def post_then_fail() -> None:
        async with alpha.services.database.transaction() as session:
            await publish_post(session, alpha.services.urls, blog, "Never mind", clock_now(alpha))
            count = select(func.count()).select_from(WorkItem).where(WorkItem.kind == DELIVER_KIND)
            queued.append(await session.scalar(count))
            raise Abort

    with pytest.raises(Abort):
        await post_then_fail()
    assert queued == [before + 1]  # queued inside the transaction...
    assert len(await delivery_rows(alpha)) == before  # ...and gone with it
    async with alpha.services.database.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(Post)) == 0
    await step_until_settled(alpha, federation.clock)
    assert sink.deliveries("Create") == []


async def test_posts_in_concurrent_transactions_do_not_wait_for_each_other(
    federation: Federation, make_sink: SinkFactory
) -> None:
    alpha, _blog_uri = await start_blog(federation)
    if alpha.services.database.dialect != "postgresql":
        pytest.skip("SQLite has one writer at a time by design; this is about PostgreSQL")
    sink = await make_sink()
    await follow_blog(alpha, sink, sink.add_actor("ann"))
    blog = await alpha.actor("blog")
    database, urls = alpha.services.database, alpha.services.urls

    async def publish(text: str) -> Post:
        async with database.transaction() as session:
            return await publish_post(session, urls, blog, text, clock_now(alpha))

    async with database.transaction() as session:
        first = await publish_post(session, urls, blog, "Slow to commit", clock_now(alpha))
        # Before the placeholder uri was unique, this waited on the first transaction.
        second = await asyncio.wait_for(publish("Meanwhile"), 10)
    await alpha.run_worker()
    assert sorted(d.activity["id"] for d in sink.deliveries("Create")) == sorted(
        [create_id(first), create_id(second)]
    )


async def test_a_delivery_claimed_by_a_worker_that_crashed_is_sent_once_after_the_lease(
    federation: Federation, make_sink: SinkFactory
) -> None:
    alpha, _blog_uri = await start_blog(federation)
    sink = await make_sink()
    await follow_blog(alpha, sink, sink.add_actor("ann"))
    item = await post(alpha, "Survives a crash")
    crashed = Worker(
        alpha.services.database, federation.clock, {DELIVER_KIND: _never}, worker_id="crashed"
    )
    [job] = await crashed.claim()  # claimed after the commit, then the process died
    assert job.payload["activity"]["id"] == create_id(item)

    assert await alpha.run_deliveries() == 0  # the lease still holds
    federation.clock.advance(crashed.lease - timedelta(seconds=1))
    assert await alpha.run_deliveries() == 0
    federation.clock.advance(timedelta(seconds=2))
    assert await alpha.run_deliveries() == 1
    federation.clock.advance(DAY)
    assert await alpha.run_deliveries() == 0
    assert [d.activity["id"] for d in sink.deliveries("Create")] == [create_id(item)]
    row = await row_for(alpha, create_id(item))
    assert (row.state, row.attempts, row.lease_owner) == (WorkState.DONE, 2, None)


async def _never(job: Any) -> None:
    raise AssertionError("the crashed worker never runs anything")


async def test_a_worker_does_not_start_jobs_whose_lease_ran_out_while_it_was_busy(
    federation: Federation, make_sink: SinkFactory
) -> None:
    # A batch is claimed at once but run one job at a time. When earlier jobs hang long enough
    # for the later ones' leases to lapse, another worker takes those over; starting them
    # anyway would deliver them twice.
    alpha, _blog_uri = await start_blog(federation)
    sink = await make_sink("first")  # its row runs first (rows are queued in inbox order)
    await follow_blog(alpha, sink, sink.add_actor("ann"))
    other = await make_sink("second")
    await follow_blog(alpha, other, other.add_actor("bob"))
    slow = delivery_worker(alpha, alpha.services.client, worker_id="slow")
    sink.answer(STALL)
    item = await post(alpha, "Who delivers me?")
    busy = asyncio.create_task(slow.run_once())
    try:
        await sink.wait_for_requests(len(sink.received) + 1)
        federation.clock.advance(slow.lease + MINUTE)
        assert await alpha.run_worker() == 2  # both rows taken over
        sink.release()
        assert await busy == 1  # it finished the hung job, and left the lapsed one alone
    finally:
        sink.release()
        await busy
    assert len(other.deliveries("Create")) == 1
    rows = [row for row in await delivery_rows(alpha) if activity_of(row) == create_id(item)]
    assert [(row.state, row.lease_owner) for row in rows] == [(WorkState.DONE, None)] * 2


async def test_a_hung_peer_does_not_hold_up_the_other_deliveries_of_its_batch(
    federation: Federation, make_sink: SinkFactory
) -> None:
    # The instance's worker sends a batch's deliveries concurrently: while one peer hangs, the
    # others are delivered and their rows finished.
    alpha, _blog_uri = await start_blog(federation)
    hung = await make_sink("hung")
    await follow_blog(alpha, hung, hung.add_actor("ann"))
    others = [await make_sink(f"quick{index}") for index in range(3)]
    for index, other in enumerate(others):
        await follow_blog(alpha, other, other.add_actor(f"fan{index}"))
    hung.answer(STALL)
    item = await post(alpha, "Not waiting for anyone")
    before = [len(other.received) for other in others]
    delivering = asyncio.create_task(alpha.run_worker())
    try:
        for other, count in zip(others, before, strict=True):
            await other.wait_for_requests(count + 1)
        for _ in range(3000):  # the finished rows are written while the hung one still waits
            states = sorted(row.state for row in await delivery_rows(alpha))
            if states.count(WorkState.PENDING) == 1:
                break
            await asyncio.sleep(0.01)
        assert not delivering.done()
        assert [len(other.deliveries("Create")) for other in others] == [1, 1, 1]
        pending = [row for row in await delivery_rows(alpha) if row.state == "pending"]
        assert [row.payload["inbox"] for row in pending] == [hung.shared_inbox]
    finally:
        hung.release()
        await delivering
    rows = [row for row in await delivery_rows(alpha) if activity_of(row) == create_id(item)]
    assert [row.state for row in rows] == [WorkState.DONE] * 4


async def test_deliveries_still_waiting_for_their_host_when_the_leases_lapse_are_handed_back(
    federation: Federation, make_sink: SinkFactory
) -> None:
    # One connection per host: the second post to the hung peer waits for the first. When
    # the batch's leases run out meanwhile, another worker may own it: it is handed back unrun.
    alpha, _blog_uri = await start_blog(federation)
    sink = await make_sink()
    await follow_blog(alpha, sink, sink.add_actor("ann"))
    services = alpha.services
    deliverer = Deliverer(
        services.database,
        services.client,
        services.clock,
        services.urls,
        allow_http=True,
        per_host=1,
    )
    slow = Worker(
        services.database,
        services.clock,
        {DELIVER_KIND: deliverer.handle},
        batch_handlers={DELIVER_KIND: deliverer.handle_batch},
        worker_id="slow",
    )
    sink.answer(STALL)
    first = await post(alpha, "First")
    second = await post(alpha, "Second")
    busy = asyncio.create_task(slow.run_once())
    try:
        await sink.wait_for_requests(len(sink.received) + 1)
        federation.clock.advance(slow.lease + MINUTE)
        sink.release()
        assert await busy == 1
    finally:
        sink.release()
        await busy
    assert [d.activity["id"] for d in sink.deliveries("Create")] == [create_id(first)]
    done, back = await row_for(alpha, create_id(first)), await row_for(alpha, create_id(second))
    assert (done.state, done.attempts) == (WorkState.DONE, 1)
    assert (back.state, back.attempts, back.lease_owner) == (WorkState.PENDING, 0, None)
    await alpha.run_worker()
    assert [d.activity["id"] for d in sink.deliveries("Create")] == [
        create_id(first),
        create_id(second),
    ]


# --- key rotation ------------------------------------------------------------------------------


async def test_rotating_a_key_queues_an_update_and_later_posts_verify_with_the_new_key(
    federation: Federation, make_sink: SinkFactory
) -> None:
    alpha, blog_uri = await start_blog(federation)
    sink = await make_sink()
    await follow_blog(alpha, sink, sink.add_actor("ann"), sink.add_actor("bob"))
    old_key = await public_key_of(federation, blog_uri)
    blog = await alpha.actor("blog")
    async with alpha.services.database.transaction() as session:
        queued = await rotate_actor_key(session, alpha.services.urls, blog, clock_now(alpha))
    assert queued == 1  # both followers share the sink's inbox
    new_key = await public_key_of(federation, blog_uri)
    assert signatures.public_key_to_pem(new_key) != signatures.public_key_to_pem(old_key)

    item = await post(alpha, "Fresh key")
    await alpha.run_worker()
    [update] = sink.deliveries("Update")
    assert update.activity["object"]["id"] == blog_uri
    published = update.activity["object"]["publicKey"]["publicKeyPem"]
    assert published == signatures.public_key_to_pem(new_key)
    [create] = sink.deliveries("Create")
    assert create.activity["id"] == create_id(item)
    for delivery in (update, create):
        # The sink had the old key cached; it refetched and verified with the new one.
        assert delivery.verified, delivery.signature_error
        assert delivery.key_pem == published
        delivery.verify_with(new_key)
        with pytest.raises(signatures.SignatureError):
            delivery.verify_with(old_key)
    async with alpha.services.database.sessions() as session:
        query = select(ActorKey).where(ActorKey.actor_id == blog.id).order_by(ActorKey.id)
        keys = (await session.scalars(query)).all()
    assert [key.retired_at is not None for key in keys] == [True, False]


async def test_a_remote_instance_accepts_posts_signed_with_a_rotated_key(
    federation: Federation,
) -> None:
    alpha, blog_uri = await start_blog(federation)
    beta = await federation.start("beta")
    await beta.create_member("bob")
    bob = await beta.actor("bob")
    blog_remote = await beta.services.keys.actor(blog_uri)
    async with beta.services.database.transaction() as session:
        await follow(session, beta.services.urls, bob, blog_remote, clock_now(beta))
    await federation.step_workers()

    # Rotation as documented: the Update goes out, then a post.
    blog = await alpha.actor("blog")
    async with alpha.services.database.transaction() as session:
        assert await rotate_actor_key(session, alpha.services.urls, blog, clock_now(alpha)) == 1
    first = await post(alpha, "After the rotation")
    await federation.step_workers()

    # Rotation whose Update never arrives (lost, or the peer was down): beta holds the old key
    # and must refetch when the Create does not verify with it. Beta refetches one key only
    # every few minutes, so right after the last refetch it answers 401 and alpha retries.
    async with alpha.services.database.transaction() as session:
        await rotate_key(session, blog, clock_now(alpha))
    second = await post(alpha, "Nobody told you")
    await settle(federation)

    async with beta.services.database.sessions() as session:
        seen = (await session.scalars(select(InboundActivity).order_by(InboundActivity.id))).all()
        stored = set((await session.scalars(select(RemoteObject.uri))).all())
        remote = await session.scalar(select(RemoteActor).where(RemoteActor.uri == blog_uri))
    assert [(row.type, row.outcome) for row in seen] == [
        ("Accept", "our follow was accepted"),
        ("Update", "actor refreshed"),
        ("Create", "post of a followed actor stored"),
        ("Create", "post of a followed actor stored"),
    ]
    assert {first.uri, second.uri} <= stored
    current = await public_key_of(federation, blog_uri)
    assert remote is not None
    assert remote.public_key_pem == signatures.public_key_to_pem(current)
    assert {row.state for row in await delivery_rows(alpha)} == {WorkState.DONE}


# --- the event loop stays free -----------------------------------------------------------------


async def test_the_instance_keeps_answering_while_a_delivery_hangs(
    federation: Federation, make_sink: SinkFactory
) -> None:
    alpha, blog_uri = await start_blog(federation)
    sink = await make_sink()
    await follow_blog(alpha, sink, sink.add_actor("ann"))
    sink.answer(STALL)
    item = await post(alpha, "Hold the line")
    delivering = asyncio.create_task(alpha.run_worker())
    try:
        await sink.wait_for_requests(len(sink.received) + 1)
        assert not delivering.done()
        # Served while the worker waits on the peer: the actor document and its key.
        async with asyncio.timeout(30):
            key = await public_key_of(federation, blog_uri)
            async with federation.client().get(alpha.url("/health")) as health:
                assert health.status == 200
        assert not delivering.done()
        sink.deliveries("Create")[-1].verify_with(key)
        sink.release()
        assert await delivering == 1
    finally:
        sink.release()
        await delivering
    assert (await row_for(alpha, create_id(item))).state == WorkState.DONE


# --- the command line --------------------------------------------------------------------------


def test_cli_thing_post_prints_the_post_id(
    database_factory: DatabaseFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    cli_logging: None,
) -> None:
    url = asyncio.run(database_factory.new_database("cli"))  # migrated, empty

    async def make_blog() -> None:
        database = Database(url)
        try:
            async with database.transaction() as session:
                now = datetime.now(UTC)
                alice = await create_member(
                    session, username="alice", password="correct horse", is_admin=False, now=now
                )
                await create_thing(session, owner=alice, handle="blog", title="Blog", now=now)
        finally:
            await database.dispose()

    asyncio.run(make_blog())
    monkeypatch.delenv("FLATTRFED_CONFIG", raising=False)
    monkeypatch.setenv("FLATTRFED_BASE_URL", "http://cli.test:8080")
    monkeypatch.setenv("FLATTRFED_ALLOW_HTTP", "1")
    monkeypatch.setenv("FLATTRFED_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("FLATTRFED_DATABASE_URL", url)
    monkeypatch.setenv("FLATTRFED_LOG_LEVEL", "warning")

    capsys.readouterr()
    assert cli.main(["thing", "post", "blog", "--text", "Hello from the shell", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == "http://cli.test:8080/things/blog/posts/1"

    assert cli.main(["thing", "post", "blog", "--text", "And again"]) == 0
    assert capsys.readouterr().out.strip() == "http://cli.test:8080/things/blog/posts/2"

    assert cli.main(["thing", "post", "nosuch", "--text", "x", "--json"]) == 1
    assert "no thing" in capsys.readouterr().err
