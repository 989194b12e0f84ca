"""The attack rows of research/ap-interop.md §2 against a real instance, one named test each.

A hostile server (tests/fakes/evil.py) plays `evil.test`, home of mallory, and an honest one
plays `victim.test`, home of bob, whom mallory tries to impersonate. Both run on loopback and
are reached through the federation's LoopbackResolver. The instance under attack is `alpha`,
where alice runs the thing `blog` that everybody likes.

Every test asserts the refusal *and* that nothing was recorded (no inbound_activities,
received_likes or follows row, no stored remote actor or object) where the attack must have
no effect. Where it matters, a control shows the same request without the attack succeeding,
so that each test would fail if its defence were removed rather than pass for an incidental
reason. SSRF tests point at loopback addresses outside the instance's allow-list (127.0.0.3,
127.0.0.9) where a CountingListener waits; nothing here ever connects beyond loopback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.abc import ResolveResult
from sqlalchemy import func, select

from flattrfed.activitypub import client as client_module
from flattrfed.activitypub import hosts, keys
from flattrfed.activitypub.addresses import parse_host_literal, refusal_reason
from flattrfed.activitypub.client import FederationClient, FetchError
from flattrfed.activitypub.delivery import DELIVER_KIND, enqueue_delivery
from flattrfed.activitypub.documents import ACTIVITY_JSON, AS_CONTEXT, LD_JSON_PROFILE
from flattrfed.activitypub.interactions import Handle, LookupFailed, follow, like, webfinger
from flattrfed.activitypub.jsonlimits import parse_json_limited
from flattrfed.activitypub.keys import KeyUnavailable
from flattrfed.activitypub.origins import BadUri, host_of, origin_of, same_origin
from flattrfed.activitypub.signatures import content_digest_header, digest_header
from flattrfed.clock import ManualClock
from flattrfed.db.models import (
    Follow,
    InboundActivity,
    ReceivedLike,
    RemoteActor,
    RemoteObject,
    WorkItem,
)
from flattrfed.db.models.federation import FederationHost
from flattrfed.flattring import members
from tests.fakes.evil import (
    Answer,
    CountingListener,
    EvilActor,
    EvilServer,
    Reply,
    rsa_key,
    sign_cavage,
    sign_rfc9421,
)
from tests.harness.instances import Federation, Instance
from tests.harness.resolver import LoopbackResolver

MIB = 1024 * 1024
# Loopback addresses the instance must treat as private: with FLATTRFED_ALLOWED_PRIVATE_ADDRESSES
# set to ONLY_LOCALHOST, anything listening on them plays a private service.
ONLY_LOCALHOST = "127.0.0.1/32"
FORBIDDEN = "127.0.0.3"
FORBIDDEN_TOO = "127.0.0.9"


# --- the scene -------------------------------------------------------------------------------


@dataclass
class Scene:
    federation: Federation
    alpha: Instance
    evil: EvilServer
    victim: EvilServer
    mallory: EvilActor
    bob: EvilActor
    blog_uri: str

    @property
    def inbox(self) -> str:
        return self.alpha.url("/inbox")

    @property
    def clock(self) -> ManualClock:
        return self.federation.clock

    def like(self, actor: EvilActor, obj: Any = None, **extra: Any) -> dict[str, Any]:
        return actor.activity("Like", self.blog_uri if obj is None else obj, **extra)


@pytest.fixture(autouse=True)
def cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    # Nobody logs in here, and argon2's deliberate ~0.4 s per member would dominate the run.
    monkeypatch.setattr(members, "hash_password", lambda password: "not-a-real-hash")


@pytest.fixture
async def stack() -> AsyncIterator[contextlib.AsyncExitStack]:
    async with contextlib.AsyncExitStack() as exits:
        yield exits


async def server(
    federation: Federation, exits: contextlib.AsyncExitStack, name: str, **options: Any
) -> EvilServer:
    evil = EvilServer(federation.resolver, federation.clock, name, **options)
    return await exits.enter_async_context(evil)


async def listener(
    exits: contextlib.AsyncExitStack, address: str, port: int = 0
) -> CountingListener:
    return await exits.enter_async_context(CountingListener(address, port))


async def build_scene(
    federation: Federation, exits: contextlib.AsyncExitStack, **settings: Any
) -> Scene:
    alpha = await federation.start("alpha", **settings)
    alice = await alpha.create_member("alice")
    await alpha.create_thing(alice, "blog", "Alice's blog")
    evil = await server(federation, exits, "evil.test")
    victim = await server(federation, exits, "victim.test")
    return Scene(
        federation=federation,
        alpha=alpha,
        evil=evil,
        victim=victim,
        mallory=evil.add_actor("mallory", key_index=0),
        bob=victim.add_actor("bob", key_index=1),
        blog_uri=alpha.actor_uri("blog", "thing"),
    )


@pytest.fixture
async def scene(federation: Federation, stack: contextlib.AsyncExitStack) -> Scene:
    return await build_scene(federation, stack)


@pytest.fixture
async def guarded(federation: Federation, stack: contextlib.AsyncExitStack) -> Scene:
    """A scene whose instance allows only 127.0.0.1: other loopback addresses are private."""
    return await build_scene(federation, stack, allowed_private_addresses=ONLY_LOCALHOST)


# --- what the instance recorded --------------------------------------------------------------


@dataclass
class Records:
    inbound: list[InboundActivity]
    likes: list[ReceivedLike]
    follows: list[Follow]
    actors: list[RemoteActor]
    objects: list[RemoteObject]


async def records(instance: Instance) -> Records:
    """What the instance holds after its worker has processed everything it stored."""
    await instance.run_worker()
    async with instance.services.database.sessions() as session:
        return Records(
            inbound=list((await session.scalars(select(InboundActivity))).all()),
            likes=list((await session.scalars(select(ReceivedLike))).all()),
            follows=list((await session.scalars(select(Follow))).all()),
            actors=list((await session.scalars(select(RemoteActor))).all()),
            objects=list((await session.scalars(select(RemoteObject))).all()),
        )


async def assert_nothing_recorded(instance: Instance) -> None:
    found = await records(instance)
    assert found.inbound == []
    assert found.likes == []
    assert found.follows == []
    async with instance.services.database.sessions() as session:
        queued = await session.scalar(
            select(func.count()).select_from(WorkItem).where(WorkItem.kind == "inbound")
        )
    assert queued == 0


async def assert_like_recorded(instance: Instance, actor_uri: str, count: int = 1) -> None:
    found = await records(instance)
    assert [like.actor_uri for like in found.likes].count(actor_uri) == count, found.likes


async def work_items(instance: Instance, kind: str) -> list[WorkItem]:
    async with instance.services.database.sessions() as session:
        return list((await session.scalars(select(WorkItem).where(WorkItem.kind == kind))).all())


def refused(answer: Answer, status: int = 401, error: str | None = None) -> None:
    assert answer.status == status, answer
    if error is not None:
        assert answer.error == error, answer


# --- §2.1 origin validation, impersonation, key/actor mismatch -------------------------------


async def test_a1_actor_document_with_foreign_id_is_refused(scene: Scene) -> None:
    # (a) mallory's server serves, at its own URL, a document claiming to be bob: bob's id and
    # inbox, and mallory's key named as bob's. Only the id check stops it from binding the key
    # to bob.
    key_id = scene.evil.url("/users/impostor#main-key")
    forged = scene.bob.document()
    forged["publicKey"] = {
        "id": key_id,
        "owner": scene.bob.uri,
        "publicKeyPem": scene.mallory.public_key_pem,
    }
    scene.evil.serve_json("/users/impostor", forged)

    answer = await scene.evil.deliver(
        scene.inbox,
        scene.like(scene.bob),
        key_id=key_id,
        private_key=scene.mallory.private_key,
    )

    refused(answer, 401, "key_unavailable")
    assert scene.evil.fetches() == ["/users/impostor"]
    await assert_nothing_recorded(scene.alpha)
    assert (await records(scene.alpha)).actors == []


async def test_a1_redirect_to_another_origin_cannot_vouch_for_the_first(scene: Scene) -> None:
    # (b) bob's server has an open redirect to mallory's; mallory's document there claims the
    # redirect URL as its id. The bytes came from evil.test, so they cannot speak for victim.test.
    claimed = scene.victim.url("/go")
    scene.victim.redirect("/go", scene.evil.url("/forged"))
    scene.evil.serve_json(
        "/forged",
        {
            "@context": [AS_CONTEXT],
            "id": claimed,
            "type": "Person",
            "preferredUsername": "go",
            "inbox": scene.victim.url("/go/inbox"),
            "publicKey": {
                "id": f"{claimed}#main-key",
                "owner": claimed,
                "publicKeyPem": scene.mallory.public_key_pem,
            },
        },
    )
    like = {
        "@context": AS_CONTEXT,
        "id": scene.victim.url("/go/likes/1"),
        "type": "Like",
        "actor": claimed,
        "object": scene.blog_uri,
    }

    answer = await scene.evil.deliver(
        scene.inbox, like, key_id=f"{claimed}#main-key", private_key=scene.mallory.private_key
    )

    refused(answer, 401, "key_unavailable")
    assert scene.victim.fetches() == ["/go"]
    assert scene.evil.fetches() == ["/forged"]
    await assert_nothing_recorded(scene.alpha)


async def test_a1_document_naming_another_id_on_its_origin_is_refused(scene: Scene) -> None:
    # (c) the key URL answers with a document whose id is some other URL: not this key's actor.
    scene.mallory.overrides["id"] = scene.evil.url("/users/someone-else")
    answer = await scene.mallory.deliver(scene.inbox, scene.like(scene.mallory))
    refused(answer, 401, "key_unavailable")
    await assert_nothing_recorded(scene.alpha)


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "text/plain",
        "image/png",
        "text/html",
        "application/ld+json",
        'application/ld+json; profile="https://example.com/not-activitystreams"',
    ],
)
async def test_a2_actor_served_without_activitystreams_type_is_refused(
    federation: Federation, stack: contextlib.AsyncExitStack, content_type: str
) -> None:
    scene = await build_scene(federation, stack)
    evil = scene.evil.add_actor("uploader", content_type=content_type)
    answer = await evil.deliver(scene.inbox, scene.like(evil))
    refused(answer, 401, "key_unavailable")
    await assert_nothing_recorded(scene.alpha)


@pytest.mark.parametrize("content_type", [ACTIVITY_JSON, LD_JSON_PROFILE])
async def test_a2_actor_served_as_activitystreams_is_accepted(
    federation: Federation, stack: contextlib.AsyncExitStack, content_type: str
) -> None:
    # The control for the row above: the same actor, served with an ActivityStreams type.
    scene = await build_scene(federation, stack)
    actor = scene.evil.add_actor("uploader", content_type=content_type)
    assert (await actor.deliver(scene.inbox, scene.like(actor))).status == 202
    await assert_like_recorded(scene.alpha, actor.uri)


async def test_a4_activity_signed_by_another_actor_records_nothing(scene: Scene) -> None:
    # Correctly signed by mallory's own key, but the activity says it is bob's.
    answer = await scene.mallory.deliver(scene.inbox, scene.like(scene.bob))
    refused(answer, 403, "key_not_owned_by_actor")
    await assert_nothing_recorded(scene.alpha)
    # Control: the very same signature setup speaking for mallory herself is accepted.
    assert (await scene.mallory.deliver(scene.inbox, scene.like(scene.mallory))).status == 202
    await assert_like_recorded(scene.alpha, scene.mallory.uri)
    assert (await records(scene.alpha)).likes[0].actor_uri == scene.mallory.uri


async def test_a4_activity_claiming_a_local_actor_is_refused(scene: Scene) -> None:
    alice = scene.alpha.actor_uri("alice")
    like = {
        "@context": AS_CONTEXT,
        "id": f"{alice}/likes/forged",
        "type": "Like",
        "actor": alice,
        "object": scene.blog_uri,
    }
    answer = await scene.mallory.deliver(scene.inbox, like)
    refused(answer, 400, "claims_local_actor")
    await assert_nothing_recorded(scene.alpha)
    assert scene.evil.requests == []


async def test_a5_key_document_claiming_victim_owner_is_refused(scene: Scene) -> None:
    # A separate key document whose self-declared owner is bob; bob's own document lists only
    # bob's key, so the claim is one-sided (GHSA-q9f8-5hc7-898f).
    key_id = scene.evil.serve_json(
        "/keys/for-bob",
        {
            "@context": [AS_CONTEXT],
            "id": scene.evil.url("/keys/for-bob"),
            "type": "Key",
            "owner": scene.bob.uri,
            "publicKeyPem": scene.mallory.public_key_pem,
        },
    )

    answer = await scene.evil.deliver(
        scene.inbox, scene.like(scene.bob), key_id=key_id, private_key=scene.mallory.private_key
    )

    refused(answer, 401, "key_unavailable")
    # The owner's document was consulted, and it did not list the key.
    assert scene.victim.fetches() == ["/users/bob"]
    await assert_nothing_recorded(scene.alpha)
    # Nothing was cached for bob either: his own key still verifies his own Like.
    assert (await scene.bob.deliver(scene.inbox, scene.like(scene.bob))).status == 202
    await assert_like_recorded(scene.alpha, scene.bob.uri)


async def test_a6_warm_cache_key_cannot_sign_for_another_actor(scene: Scene) -> None:
    # One legitimate delivery warms the cache with mallory's key (owner: mallory)...
    assert (await scene.mallory.deliver(scene.inbox, scene.like(scene.mallory))).status == 202
    await assert_like_recorded(scene.alpha, scene.mallory.uri)
    fetches = len(scene.evil.fetches())
    # ...then the cached key signs an activity claiming to be bob's.
    answer = await scene.mallory.deliver(scene.inbox, scene.like(scene.bob))
    refused(answer, 403, "key_not_owned_by_actor")
    assert len(scene.evil.fetches()) == fetches  # it really came from the cache
    # Same from the database, after the in-memory cache forgot the key.
    scene.alpha.services.keys.forget(scene.mallory.key_id)
    answer = await scene.mallory.deliver(scene.inbox, scene.like(scene.bob))
    refused(answer, 403, "key_not_owned_by_actor")
    found = await records(scene.alpha)
    assert [row.actor_uri for row in found.inbound] == [scene.mallory.uri]
    assert [like.actor_uri for like in found.likes] == [scene.mallory.uri]


async def test_a7_unsigned_post_is_401_and_records_nothing(scene: Scene) -> None:
    answer = await scene.evil.deliver(
        scene.inbox,
        scene.like(scene.mallory),
        key_id=scene.mallory.key_id,
        private_key=scene.mallory.private_key,
        scheme="none",
    )
    refused(answer, 401, "signature_missing")
    await assert_nothing_recorded(scene.alpha)
    assert scene.evil.requests == []


async def test_a8_replayed_signature_with_other_body_is_refused(scene: Scene) -> None:
    original = json.dumps(scene.like(scene.mallory)).encode()
    headers = scene.evil.signed_headers(
        scene.inbox,
        original,
        key_id=scene.mallory.key_id,
        private_key=scene.mallory.private_key,
    )
    swapped = json.dumps(scene.like(scene.mallory, scene.alpha.actor_uri("alice"))).encode()

    answer = await scene.evil.post(scene.inbox, swapped, headers)

    refused(answer, 401, "signature_digest")
    await assert_nothing_recorded(scene.alpha)
    # Control: the captured request itself is fine.
    assert (await scene.evil.post(scene.inbox, original, headers)).status == 202


async def test_a8_host_changed_is_refused(scene: Scene) -> None:
    # A request mallory signed for another server (beta), replayed to alpha: the signature is
    # genuine and covers `host: beta…`, so only alpha checking Host against itself refuses it.
    beta_inbox = "http://beta.test:1/inbox"
    answer = await scene.mallory.deliver(beta_inbox, scene.like(scene.mallory), url=scene.inbox)
    refused(answer, 401, "signature_host")
    await assert_nothing_recorded(scene.alpha)


async def test_a8_post_signature_without_digest_is_refused(scene: Scene) -> None:
    body = json.dumps(scene.like(scene.mallory)).encode()
    headers = sign_cavage(
        private_key=scene.mallory.private_key,
        key_id=scene.mallory.key_id,
        method="POST",
        url=scene.inbox,
        headers={
            "Host": scene.alpha.host,
            "Date": _http_date(scene),
            "Content-Type": ACTIVITY_JSON,
            "Digest": digest_header(body),  # sent, but not signed
        },
        covered=["(request-target)", "host", "date"],
    )
    refused(await scene.evil.post(scene.inbox, body, headers), 401, "signature_components")
    await assert_nothing_recorded(scene.alpha)


async def test_a9_actor_with_endpoints_on_another_host_is_refused(scene: Scene) -> None:
    elsewhere = scene.victim.url("/users/bob/inbox")
    spread: list[tuple[str, Any]] = [
        ("inbox", elsewhere),
        ("outbox", elsewhere),
        ("followers", elsewhere),
        ("endpoints", {"sharedInbox": scene.victim.url("/inbox")}),
    ]
    for field_name, value in spread:
        actor = scene.evil.add_actor(f"spread-{field_name}")
        actor.overrides[field_name] = value
        answer = await actor.deliver(scene.inbox, scene.like(actor))
        refused(answer, 401, "key_unavailable")
    await assert_nothing_recorded(scene.alpha)
    assert (await records(scene.alpha)).actors == []


async def _alice_follows(scene: Scene, actor: EvilActor) -> None:
    alpha = scene.alpha
    remote = await alpha.services.keys.actor(actor.uri)
    alice = await alpha.actor("alice")
    async with alpha.services.database.transaction() as session:
        await follow(session, alpha.services.urls, alice, remote, scene.clock.now())
    await alpha.run_worker()


async def test_a9_embedded_objects_are_never_stored_as_authentic(scene: Scene) -> None:
    await _alice_follows(scene, scene.mallory)
    mallory = scene.mallory

    def create(note: dict[str, Any]) -> dict[str, Any]:
        note = {"type": "Note", "attributedTo": mallory.uri, "content": "forged", **note}
        return mallory.activity("Create", note)

    # A note attributed to bob, delivered by mallory.
    bobs = create({"id": mallory.new_id("notes"), "attributedTo": scene.bob.uri})
    # A note whose id is on bob's server.
    foreign = create({"id": scene.victim.url("/users/bob/notes/1")})
    # A note of mallory's own whose embedded copy differs from what her origin serves.
    own_id = mallory.new_id("notes")
    scene.evil.serve_json(
        own_id.split(scene.evil.base_url, 1)[1],
        {
            "@context": AS_CONTEXT,
            "id": own_id,
            "type": "Note",
            "attributedTo": mallory.uri,
            "content": "as served by the origin",
        },
    )
    own = create({"id": own_id})
    for activity in (bobs, foreign, own):
        assert (await mallory.deliver(scene.inbox, activity)).status == 202

    found = await records(scene.alpha)
    outcomes = {row.activity_uri: row.outcome for row in found.inbound}
    assert (outcomes[bobs["id"]] or "").startswith("ignored: "), outcomes
    assert (outcomes[foreign["id"]] or "").startswith("ignored: "), outcomes
    assert outcomes[own["id"]] == "post of a followed actor stored"
    assert [(o.uri, o.document["content"]) for o in found.objects] == [
        (own_id, "as served by the origin")
    ]
    assert scene.victim.requests == []


@pytest.mark.parametrize(
    "mutation",
    [
        "duplicate_signature_headers",
        "empty_headers_list",
        "hmac_algorithm",
        "key_id_fragment_names_another_host",
        "empty_signature",
        "short_signature",
        "signature_input_next_to_cavage",
    ],
)
async def test_a10_malformed_signatures_are_refused(scene: Scene, mutation: str) -> None:
    mallory = scene.mallory
    body = json.dumps(scene.like(mallory)).encode()
    key_id = mallory.key_id
    if mutation == "key_id_fragment_names_another_host":
        key_id = f"{scene.bob.uri}#{mallory.uri}"
    headers = scene.evil.signed_headers(
        scene.inbox, body, key_id=key_id, private_key=mallory.private_key
    )
    signature = headers["Signature"]
    pairs = list(headers.items())
    if mutation == "duplicate_signature_headers":
        pairs.append(("Signature", signature))
    elif mutation == "empty_headers_list":
        pairs = _replace(pairs, "Signature", _param(signature, "headers", ""))
    elif mutation == "hmac_algorithm":
        pairs = _replace(pairs, "Signature", _param(signature, "algorithm", "hmac-sha256"))
    elif mutation == "empty_signature":
        pairs = _replace(pairs, "Signature", _param(signature, "signature", ""))
    elif mutation == "short_signature":
        short = base64.b64encode(b"\x01" * 17).decode()
        pairs = _replace(pairs, "Signature", _param(signature, "signature", short))
    elif mutation == "signature_input_next_to_cavage":
        pairs.append(("Signature-Input", f'sig1=("@method");keyid="{key_id}";created=1'))

    answer = await scene.evil.post(scene.inbox, body, pairs)

    refused(answer, 401)
    await assert_nothing_recorded(scene.alpha)
    if mutation == "key_id_fragment_names_another_host":
        # The part after '#' is never a place to fetch from: bob's document was asked, and it
        # does not list such a key.
        assert scene.victim.fetches() == ["/users/bob"]
        assert scene.evil.fetches() == []


async def test_a11_trailing_dot_host_never_matches(scene: Scene) -> None:
    mallory, bob = scene.mallory, scene.bob
    dotted_bob = bob.uri.replace("victim.test:", "victim.test.:")
    shouting_mallory = mallory.uri.replace("evil.test", "EVIL.TEST")

    # bob's id with a trailing dot, signed by mallory: not an origin at all.
    like = {
        "@context": AS_CONTEXT,
        "id": f"{dotted_bob}/likes/1",
        "type": "Like",
        "actor": dotted_bob,
        "object": scene.blog_uri,
    }
    refused(await mallory.deliver(scene.inbox, like), 400, "uri")
    # mallory's key under a trailing-dot key id: fetched, but the document's id (without the
    # dot) is not the URL asked for, so the key binds to nobody.
    dotted_key = mallory.key_id.replace("evil.test:", "evil.test.:")
    refused(await mallory.deliver(scene.inbox, scene.like(mallory), key_id=dotted_key), 401)
    # An upper-case spelling of mallory's own id is a different string from her key's owner.
    like = {
        "@context": AS_CONTEXT,
        "id": f"{shouting_mallory}/likes/1",
        "type": "Like",
        "actor": shouting_mallory,
        "object": scene.blog_uri,
    }
    refused(await mallory.deliver(scene.inbox, like), 403, "key_not_owned_by_actor")
    await assert_nothing_recorded(scene.alpha)

    # And the comparison function itself: a trailing dot is refused, never normalised away.
    with pytest.raises(BadUri):
        origin_of(dotted_bob, allow_http=True)
    assert not same_origin(dotted_bob, bob.uri, allow_http=True)
    assert origin_of(shouting_mallory, allow_http=True) == origin_of(mallory.uri, allow_http=True)


async def test_a12_blocked_domain_like_has_no_effect(
    scene: Scene, federation: Federation, stack: contextlib.AsyncExitStack
) -> None:
    async with scene.alpha.services.database.transaction() as session:
        await hosts.block_domain(session, "evil.test", "spam", scene.clock.now())
    sub = await server(federation, stack, "sub.evil.test")
    subactor = sub.add_actor("minion")
    shouting = scene.mallory.uri.replace("evil.test", "EVIL.test")

    deliveries = [
        (scene.mallory, scene.like(scene.mallory)),
        (scene.mallory, scene.mallory.activity("Announce", scene.mallory.new_id("notes"))),
        (scene.mallory, scene.mallory.activity("Follow", scene.blog_uri)),
        (subactor, scene.like(subactor)),
        (
            scene.mallory,
            {**scene.like(scene.mallory), "actor": shouting, "id": f"{shouting}/likes/9"},
        ),
    ]
    for actor, activity in deliveries:
        # Accepted and dropped: a blocked server learns nothing from the answer.
        assert (await actor.deliver(scene.inbox, activity)).status == 202

    await assert_nothing_recorded(scene.alpha)
    assert scene.evil.requests == []
    assert sub.requests == []


async def test_a13_cross_origin_key_is_refused_unless_listed(
    scene: Scene, federation: Federation, stack: contextlib.AsyncExitStack
) -> None:
    cdn = await server(federation, stack, "cdn.test")
    bob = scene.bob
    other_key = rsa_key(2)
    key_url = cdn.serve_json(
        "/keys/bob",
        {
            "@context": [AS_CONTEXT],
            "id": cdn.url("/keys/bob"),
            "owner": bob.uri,
            "publicKeyPem": _pem(other_key),
        },
    )
    # bob's document does not (yet) list the CDN key: refused.
    answer = await bob.deliver(scene.inbox, scene.like(bob), key_id=key_url, private_key=other_key)
    refused(answer, 401, "key_unavailable")
    await assert_nothing_recorded(scene.alpha)

    # Once bob's own document lists it (both directions agree), the key is bob's.
    bob.overrides["publicKey"] = [
        {"id": bob.key_id, "owner": bob.uri, "publicKeyPem": bob.public_key_pem},
        {"id": key_url, "owner": bob.uri, "publicKeyPem": _pem(other_key)},
    ]
    scene.clock.advance(timedelta(minutes=6))  # past the negative cache
    answer = await bob.deliver(scene.inbox, scene.like(bob), key_id=key_url, private_key=other_key)
    assert answer.status == 202
    await assert_like_recorded(scene.alpha, bob.uri)


async def test_a13_key_id_on_another_origin_claimed_only_by_the_actor_is_refused(
    scene: Scene,
) -> None:
    # mallory's document lists, as hers, a key whose id is on bob's server. bob's server never
    # agreed, so that key id must not become a way for mallory to sign, and must not shadow
    # bob's own key.
    mallory, bob = scene.mallory, scene.bob
    second = rsa_key(3)
    mallory.overrides["publicKey"] = [
        {"id": bob.key_id, "owner": mallory.uri, "publicKeyPem": _pem(second)},
        {"id": mallory.key_id, "owner": mallory.uri, "publicKeyPem": mallory.public_key_pem},
    ]
    # alpha learns about mallory (alice looked her up) and stores her document.
    await scene.alpha.services.keys.actor(mallory.uri)

    answer = await mallory.deliver(
        scene.inbox, scene.like(mallory), key_id=bob.key_id, private_key=second
    )

    refused(answer, 401)
    await assert_nothing_recorded(scene.alpha)
    resolved = await scene.alpha.services.keys.resolve(bob.key_id)
    assert resolved.owner_uri == bob.uri
    assert (await bob.deliver(scene.inbox, scene.like(bob))).status == 202
    await assert_like_recorded(scene.alpha, bob.uri)


# --- §2.2 signature, digest and time attacks -------------------------------------------------


@pytest.mark.parametrize(
    ("signed_ago", "advance", "accepted"),
    [
        (timedelta(0), timedelta(minutes=70), False),  # replayed 70 min later
        (timedelta(0), timedelta(minutes=55), True),  # 55 min in transit is still fine
        (timedelta(hours=-2), timedelta(0), False),  # dated 2 h in the future
        (timedelta(minutes=-55), timedelta(0), True),  # a clock 55 min fast
    ],
    ids=["replayed-70-min-later", "55-min-in-transit", "2-h-in-the-future", "55-min-fast"],
)
async def test_s1_date_window_end_to_end(
    scene: Scene, signed_ago: timedelta, advance: timedelta, accepted: bool
) -> None:
    body = json.dumps(scene.like(scene.mallory)).encode()
    headers = scene.evil.signed_headers(
        scene.inbox,
        body,
        key_id=scene.mallory.key_id,
        private_key=scene.mallory.private_key,
        now=scene.clock.now() - signed_ago,
    )
    scene.clock.advance(advance)
    answer = await scene.evil.post(scene.inbox, body, headers)
    if accepted:
        assert answer.status == 202
        await assert_like_recorded(scene.alpha, scene.mallory.uri)
    else:
        refused(answer, 401, "signature_date")
        await assert_nothing_recorded(scene.alpha)


async def test_s1_unparseable_date_is_refused(scene: Scene) -> None:
    def yesterday(headers: dict[str, str]) -> dict[str, str]:
        return {**headers, "Date": "yesterday"}

    answer = await scene.mallory.deliver(scene.inbox, scene.like(scene.mallory), mutate=yesterday)
    refused(answer, 401, "signature_date")
    await assert_nothing_recorded(scene.alpha)


@pytest.mark.parametrize(
    ("key", "label", "accepted"),
    [
        ("rsa", "rsa-sha1", False),
        ("rsa", "ed25519", False),
        ("rsa", "hmac-sha256", False),
        ("rsa", "hs2019", True),  # GoToSocial
        ("rsa", "rsa-sha256", True),
        ("ed25519", "rsa-sha256", False),
        ("ed25519", "hs2019", True),
        ("ed25519", "ed25519", True),
    ],
)
async def test_s2_algorithm_labels(scene: Scene, key: Any, label: str, accepted: bool) -> None:
    actor = scene.evil.add_actor(f"{key}-{label}", key=key)

    def relabel(headers: dict[str, str]) -> dict[str, str]:
        # The label is not part of what draft-cavage signs, so the signature stays genuine.
        return {**headers, "Signature": _param(headers["Signature"], "algorithm", label)}

    answer = await actor.deliver(scene.inbox, scene.like(actor), mutate=relabel)
    if accepted:
        assert answer.status == 202, answer
        await assert_like_recorded(scene.alpha, actor.uri)
    else:
        refused(answer, 401)
        await assert_nothing_recorded(scene.alpha)


@pytest.mark.parametrize(
    ("digest", "accepted"),
    [
        (lambda body: "SHA-512=" + _b64(hashlib.sha512(body).digest()), False),
        (lambda body: "sha-256=" + _b64(hashlib.sha256(body).digest()), True),
        (lambda body: "SHA-256=" + _b64(hashlib.sha256(body).digest()[:31]), False),
        (lambda body: "SHA-256=" + _b64(hashlib.sha256(body).digest()), True),
    ],
    ids=["sha512-only", "lowercase-label", "31-bytes", "control"],
)
async def test_s3_digest_forms(
    scene: Scene, digest: Callable[[bytes], str], accepted: bool
) -> None:
    body = json.dumps(scene.like(scene.mallory)).encode()
    headers = sign_cavage(
        private_key=scene.mallory.private_key,
        key_id=scene.mallory.key_id,
        method="POST",
        url=scene.inbox,
        headers={
            "Host": scene.alpha.host,
            "Date": _http_date(scene),
            "Digest": digest(body),
            "Content-Type": ACTIVITY_JSON,
        },
        covered=["(request-target)", "host", "date", "digest", "content-type"],
    )
    answer = await scene.evil.post(scene.inbox, body, headers)
    if accepted:
        assert answer.status == 202, answer
        await assert_like_recorded(scene.alpha, scene.mallory.uri)
    else:
        refused(answer, 401, "signature_digest")
        await assert_nothing_recorded(scene.alpha)


@pytest.mark.parametrize(
    ("signed_target", "accepted"),
    [("/inbox", True), ("/inbox?a=1", True), ("/inbox?b=2", False), ("/other", False)],
)
async def test_s4_request_target_with_or_without_query(
    scene: Scene, signed_target: str, accepted: bool
) -> None:
    url = scene.inbox + "?a=1"
    body = json.dumps(scene.like(scene.mallory)).encode()
    headers = sign_cavage(
        private_key=scene.mallory.private_key,
        key_id=scene.mallory.key_id,
        method="POST",
        url=url,
        headers={
            "Host": scene.alpha.host,
            "Date": _http_date(scene),
            "Digest": digest_header(body),
            "Content-Type": ACTIVITY_JSON,
        },
        covered=["(request-target)", "host", "date", "digest"],
        signed_target=signed_target,
    )
    answer = await scene.evil.post(url, body, headers)
    if accepted:
        assert answer.status == 202, answer
        await assert_like_recorded(scene.alpha, scene.mallory.uri)
    else:
        refused(answer, 401, "signature_mismatch")
        await assert_nothing_recorded(scene.alpha)


@pytest.mark.parametrize(
    "variant", ["control", "no_created", "no_target_uri", "no_content_digest", "two_signatures"]
)
async def test_s5_rfc9421_requirements(scene: Scene, variant: str) -> None:
    body = json.dumps(scene.like(scene.mallory)).encode()
    components = ["@method", "@target-uri", "@authority", "content-digest"]
    created: int | None = int(scene.clock.now().timestamp())
    labels = ["sig1"]
    if variant == "no_created":
        created = None
    elif variant == "no_target_uri":
        components.remove("@target-uri")
    elif variant == "no_content_digest":
        components.remove("content-digest")
    elif variant == "two_signatures":
        labels.append("sig2")
    headers = sign_rfc9421(
        private_key=scene.mallory.private_key,
        key_id=scene.mallory.key_id,
        method="POST",
        url=scene.inbox,
        headers={"Content-Type": ACTIVITY_JSON, "Content-Digest": content_digest_header(body)},
        components=components,
        created=created,
        labels=labels,
    )
    answer = await scene.evil.post(scene.inbox, body, headers)
    if variant == "control":
        assert answer.status == 202, answer
        await assert_like_recorded(scene.alpha, scene.mallory.uri)
    else:
        refused(answer, 401)
        assert answer.error in ("signature_components", "signature_malformed"), answer
        await assert_nothing_recorded(scene.alpha)
        assert scene.evil.requests == []


async def test_s6_same_signed_post_twice_records_one_row(scene: Scene) -> None:
    body = json.dumps(scene.like(scene.mallory)).encode()
    headers = scene.evil.signed_headers(
        scene.inbox, body, key_id=scene.mallory.key_id, private_key=scene.mallory.private_key
    )
    assert (await scene.evil.post(scene.inbox, body, headers)).status == 202
    await scene.alpha.run_worker()
    scene.clock.advance(timedelta(minutes=30))
    assert (await scene.evil.post(scene.inbox, body, headers)).status == 202
    # The same activity id again, re-signed with another object: still the first one counts.
    again = {**json.loads(body), "object": scene.alpha.actor_uri("alice")}
    assert (await scene.mallory.deliver(scene.inbox, again)).status == 202

    found = await records(scene.alpha)
    assert len(found.inbound) == 1
    assert len(found.likes) == 1
    assert found.likes[0].object_uri == scene.blog_uri


@pytest.mark.parametrize("hops", ["loop", "chain"])
async def test_s7_key_id_redirects_are_bounded(scene: Scene, hops: str) -> None:
    evil = scene.evil
    if hops == "loop":
        evil.redirect("/keys/loop", evil.url("/keys/loop"))
        key_id = evil.url("/keys/loop#main-key")
    else:
        for step in range(10):
            evil.redirect(f"/keys/chain/{step}", evil.url(f"/keys/chain/{step + 1}"))
        evil.route("/keys/chain/10", Reply.json(scene.mallory.document()))
        key_id = evil.url("/keys/chain/0#main-key")

    started = time.monotonic()
    answer = await evil.deliver(
        scene.inbox, scene.like(scene.mallory), key_id=key_id, private_key=scene.mallory.private_key
    )

    assert time.monotonic() - started < 5
    refused(answer, 401, "key_unavailable")
    assert 1 <= len(evil.fetches()) <= 6  # max 5 redirects, and a loop stops at once
    await assert_nothing_recorded(scene.alpha)


async def test_s8_ld_signature_never_accepted_relayed_activity_dropped(scene: Scene) -> None:
    # mallory relays "bob's" Like with an LD signature block naming bob's key; the HTTP
    # signature is mallory's. LD signatures are not a way in: no key of bob's is even fetched.
    relayed = scene.like(scene.bob)
    relayed["signature"] = {
        "type": "RsaSignature2017",
        "creator": scene.bob.key_id,
        "created": "2026-11-15T11:59:00Z",
        "signatureValue": _b64(b"\x00" * 256),
    }
    answer = await scene.mallory.deliver(scene.inbox, relayed)
    refused(answer, 403, "key_not_owned_by_actor")
    await assert_nothing_recorded(scene.alpha)
    assert scene.victim.requests == []


# --- §2.3 SSRF ---------------------------------------------------------------------------------


async def test_r1_webfinger_redirects_to_refused_targets(
    guarded: Scene, stack: contextlib.AsyncExitStack
) -> None:
    scene = guarded
    private = await listener(stack, FORBIDDEN)
    evil = scene.evil
    client = scene.alpha.services.client
    webfinger_path = "/.well-known/webfinger"
    targets = [
        private.url("/"),
        f"http://sneaky.test:{private.port}/",  # a name that resolves to the private address
        "file:///etc/passwd",
        "gopher://127.0.0.1:70/",
        f"https://{evil.host}/.well-known/webfinger",  # a scheme change
    ]
    scene.federation.resolver.add("sneaky.test", FORBIDDEN)
    for target in targets:
        evil.redirect(webfinger_path, target)
        with pytest.raises(LookupFailed):
            await webfinger(client, Handle("mallory", evil.host), allow_http=True)
    # 30 chained redirects on the same (allowed) host: at most 5 are followed.
    evil.redirect(webfinger_path, evil.url("/wf/0"))
    for step in range(30):
        evil.redirect(f"/wf/{step}", evil.url(f"/wf/{step + 1}"))
    before = len(evil.requests)
    with pytest.raises(LookupFailed):
        await webfinger(client, Handle("mallory", evil.host), allow_http=True)
    assert len(evil.requests) - before <= 6
    # A self link pointing at the private address: returned as a URL, refused when fetched.
    evil.serve_json(
        webfinger_path,
        {
            "subject": f"acct:mallory@{evil.host}",
            "links": [{"rel": "self", "type": ACTIVITY_JSON, "href": private.url("/users/x")}],
        },
        content_type="application/jrd+json",
    )
    href = await webfinger(client, Handle("mallory", evil.host), allow_http=True)
    with pytest.raises(KeyUnavailable):
        await scene.alpha.services.keys.actor(href)
    assert private.accepted == 0
    assert (await records(scene.alpha)).actors == []


R2_HOSTS = [
    "[::ffff:127.0.0.1]",
    "[::ffff:10.0.0.1]",
    "[::]",
    "0.0.0.0",
    "[::1]",
    "169.254.169.254",
    "100.64.0.1",
    "198.18.0.1",
    "224.0.0.1",
    "240.0.0.1",
    "[fc00::1]",
    "[fe80::1]",
    "[64:ff9b::7f00:1]",
    "[2002:7f00:1::]",
    "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
    "2130706433",
    "0177.0.0.1",
    "127.1",
    "0x7f.0.0.1",
    "10.0.0.1",
    "192.168.1.1",
    "172.16.0.1",
]


@pytest.mark.parametrize("host", R2_HOSTS)
def test_r2_r3_special_addresses_are_classified_as_refused(host: str) -> None:
    # Pure classification: these must never be connected to, not even to see them refused.
    literal = parse_host_literal(host)
    assert literal is not None, host
    assert refusal_reason(literal, ()) is not None, host


async def test_r2_r3_key_ids_on_private_spellings_never_connect(
    guarded: Scene, stack: contextlib.AsyncExitStack
) -> None:
    scene = guarded
    private = await listener(stack, FORBIDDEN)
    scene.federation.resolver.add("intranet.test", FORBIDDEN)
    port = private.port
    spellings = [
        "127.0.0.3",
        "[::ffff:127.0.0.3]",
        "[::ffff:7f00:3]",
        "2130706435",
        "127.3",
        "0x7f.0.0.3",
        "0177.0.0.3",
        "intranet.test",
    ]
    for host in spellings:
        actor = f"http://{host}:{port}/users/m"
        like = {
            "@context": AS_CONTEXT,
            "id": f"{actor}/likes/1",
            "type": "Like",
            "actor": actor,
            "object": scene.blog_uri,
        }
        answer = await scene.evil.deliver(
            scene.inbox, like, key_id=f"{actor}#main-key", private_key=scene.mallory.private_key
        )
        refused(answer, 401, "key_unavailable")
    assert private.accepted == 0
    await assert_nothing_recorded(scene.alpha)


async def test_r4_nodeinfo_link_to_refused_address(
    guarded: Scene, stack: contextlib.AsyncExitStack
) -> None:
    scene = guarded
    private = await listener(stack, FORBIDDEN)
    evil = scene.evil
    schema = "http://nodeinfo.diaspora.software/ns/schema/2.1"
    client = scene.alpha.services.client
    for href in [
        private.url("/admin"),
        'data:application/json,{"software":{"name":"mastodon"}}',
        evil.url("/redirect-to-private"),
    ]:
        evil.serve_json(
            "/.well-known/nodeinfo",
            {"links": [{"rel": schema, "href": href}]},
            content_type="application/json",
        )
        evil.redirect("/redirect-to-private", private.url("/nodeinfo"))
        links = await client.fetch_json(
            evil.url("/.well-known/nodeinfo"),
            accept="application/json",
            allowed_types=["application/json"],
        )
        # Whatever reads NodeInfo fetches the advertised link through the same client.
        link = links["links"][0]["href"]
        with pytest.raises(FetchError):
            await client.fetch_json(
                link, accept="application/json", allowed_types=["application/json"]
            )
        # The instance's own NodeInfo reader drops such links altogether.
        scene.clock.advance(timedelta(hours=2))
        assert await scene.alpha.services.nodeinfo.get(evil.host, scene.clock.now()) is None
    assert private.accepted == 0


async def test_r5_signed_fetch_redirected_to_refused_address(
    guarded: Scene, stack: contextlib.AsyncExitStack
) -> None:
    scene = guarded
    private = await listener(stack, FORBIDDEN)
    scene.evil.redirect("/keys/bounce", private.url("/users/m"))
    answer = await scene.evil.deliver(
        scene.inbox,
        scene.like(scene.mallory),
        key_id=scene.evil.url("/keys/bounce#main-key"),
        private_key=scene.mallory.private_key,
    )
    refused(answer, 401, "key_unavailable")
    assert scene.evil.fetches() == ["/keys/bounce"]
    assert private.accepted == 0
    await assert_nothing_recorded(scene.alpha)


@pytest.mark.parametrize(
    ("status", "to_private"), [(302, True), (307, True), (301, False), (308, False)]
)
async def test_r5_delivery_post_does_not_follow_redirects(
    guarded: Scene, stack: contextlib.AsyncExitStack, status: int, to_private: bool
) -> None:
    scene = guarded
    private = await listener(stack, FORBIDDEN)
    mallory = scene.mallory
    # mallory's inbox sends every POST elsewhere: to a private address, or to another path on
    # her own (allowed) server. A signed POST follows neither.
    target = private.url("/inbox") if to_private else scene.evil.url("/sink")
    scene.evil.redirect("/users/mallory/inbox", target, status)

    follow_blog = mallory.activity("Follow", scene.blog_uri)
    assert (await mallory.deliver(scene.inbox, follow_blog)).status == 202
    await scene.alpha.run_worker()  # the Follow is processed and its Accept delivered

    [delivery] = await work_items(scene.alpha, DELIVER_KIND)
    assert delivery.state == "failed"
    assert delivery.attempts == 1
    assert f"HTTP {status}" in (delivery.last_error or "")
    assert len(scene.evil.seen("/users/mallory/inbox", "POST")) == 1
    assert scene.evil.seen("/sink") == []
    assert private.accepted == 0


class RebindingResolver(LoopbackResolver):
    """Answers `name` from `answers` in turn (the last one repeating): a rebinding DNS server."""

    def __init__(self) -> None:
        super().__init__()
        self.rebinding: dict[str, list[str]] = {}

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        answers = self.rebinding.get(host.lower())
        if not answers:
            return await super().resolve(host, port, family)
        self.lookups.append(host)
        address = answers.pop(0) if len(answers) > 1 else answers[0]
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
        ]


async def test_r6_rebinding_resolver_connection_goes_to_the_checked_address(
    federation: Federation, stack: contextlib.AsyncExitStack
) -> None:
    resolver = RebindingResolver()
    federation.resolver = resolver
    scene = await build_scene(federation, stack, allowed_private_addresses=ONLY_LOCALHOST)
    servers = [await server(federation, stack, name) for name in ("rebind.test", "flip.test")]
    try:
        # The private address listens on the very same ports: only the address differs.
        private = [await listener(stack, FORBIDDEN, evil.port) for evil in servers]
    except OSError:
        pytest.skip(f"a port is taken on {FORBIDDEN}")
    first, second = (evil.add_actor("m") for evil in servers)

    # Checked as 127.0.0.1, private from then on: whatever is connected to must be what the
    # guard checked, so a second lookup (check, then connect) could never pick the private one.
    resolver.rebinding["rebind.test"] = ["127.0.0.1", FORBIDDEN]
    assert (await first.deliver(scene.inbox, scene.like(first))).status == 202
    # Private first: refused, without a connection.
    resolver.rebinding["flip.test"] = [FORBIDDEN, "127.0.0.1"]
    refused(await second.deliver(scene.inbox, scene.like(second)), 401, "key_unavailable")

    assert [listening.accepted for listening in private] == [0, 0]
    assert resolver.lookups.count("rebind.test") >= 1
    assert resolver.lookups.count("flip.test") >= 1
    assert servers[1].requests == []
    found = await records(scene.alpha)
    assert [like.actor_uri for like in found.likes] == [first.uri]


async def test_r7_localhost_inbox_is_refused_permanently_without_connecting(
    guarded: Scene, stack: contextlib.AsyncExitStack
) -> None:
    scene = guarded
    private = await listener(stack, FORBIDDEN_TOO)
    scene.federation.resolver.add("localhost", FORBIDDEN_TOO)
    alpha = scene.alpha
    # A remote actor whose inbox (however it got there: a DNS change after the actor was
    # fetched, say) is a local service.
    async with alpha.services.database.transaction() as session:
        remote = RemoteActor(
            uri=scene.evil.url("/users/db"),
            host=scene.evil.host,
            type="Person",
            preferred_username="db",
            inbox=f"http://localhost:{private.port}/",
            key_id=scene.evil.url("/users/db#main-key"),
            public_key_pem=scene.mallory.public_key_pem,
            document={},
            fetched_at=scene.clock.now(),
        )
        session.add(remote)
        await session.flush()
        alice = await alpha.actor("alice")
        await like(
            session,
            alpha.services.urls,
            alice,
            object_uri=scene.evil.url("/users/db/notes/1"),
            author=remote,
            now=scene.clock.now(),
        )
    await alpha.run_worker()

    [delivery] = await work_items(alpha, DELIVER_KIND)
    assert delivery.state == "failed"
    assert delivery.attempts == 1  # not retried: the same address would be refused again
    assert "refused address" in (delivery.last_error or "")
    assert private.accepted == 0


# --- §2.4 DoS ----------------------------------------------------------------------------------


async def _raw_post(
    instance: Instance, head: list[str], chunks: AsyncIterator[bytes]
) -> tuple[bytes, int]:
    """POST to the shared inbox with hand-made framing, sending `chunks` until an answer
    arrives; returns the status line and how many body bytes had been sent by then."""
    port = int(instance.host.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answer = asyncio.ensure_future(reader.readline())
    sent = 0
    try:
        lines = ["POST /inbox HTTP/1.1", f"Host: {instance.host}", *head]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        async with asyncio.timeout(20):
            async for chunk in chunks:
                if answer.done():
                    break
                writer.write(chunk)
                drain = asyncio.ensure_future(writer.drain())
                await asyncio.wait({drain, answer}, return_when=asyncio.FIRST_COMPLETED)
                if not drain.done() or drain.exception() is not None:
                    drain.cancel()
                    break
                sent += len(chunk)
            return await answer, sent
    finally:
        answer.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _pieces(count: int, size: int, *, chunked: bool = False) -> AsyncIterator[bytes]:
    piece = b" " * size
    for _ in range(count):
        yield f"{size:x}\r\n".encode() + piece + b"\r\n" if chunked else piece
        await asyncio.sleep(0)


async def _trickle() -> AsyncIterator[bytes]:
    for _ in range(100):
        yield b"{"
        await asyncio.sleep(0.05)


async def test_d1_huge_inbox_posts_are_413_before_being_read(scene: Scene) -> None:
    json_type = "Content-Type: application/activity+json"
    # 20 MiB announced honestly: refused on the Content-Length alone.
    status, sent = await _raw_post(
        scene.alpha, [json_type, f"Content-Length: {20 * MIB}"], _pieces(320, 65_536)
    )
    assert status.startswith(b"HTTP/1.1 413"), status
    assert sent < 20 * MIB
    # Content-Length of 10**9 and a body that trickles: answered without waiting for it.
    status, sent = await _raw_post(scene.alpha, [json_type, f"Content-Length: {10**9}"], _trickle())
    assert status.startswith(b"HTTP/1.1 413"), status
    assert sent < 100
    # 20 MiB chunked, no length at all: cut off once the cap is passed.
    status, sent = await _raw_post(
        scene.alpha,
        [json_type, "Transfer-Encoding: chunked"],
        _pieces(320, 65_536, chunked=True),
    )
    assert status.startswith(b"HTTP/1.1 413"), status
    assert sent < 20 * MIB
    await assert_nothing_recorded(scene.alpha)


async def test_d1_50_mib_actor_document_is_aborted_at_the_cap(scene: Scene) -> None:
    scene.evil.route(
        "/users/whale",
        Reply(body=b'{"id": "x", "padding": "', stream_bytes=50 * MIB),
    )
    scene.evil.route("/users/liar", Reply(announce_length=50 * MIB, stall=True))
    for name in ("whale", "liar"):
        actor = scene.evil.url(f"/users/{name}")
        like = {
            "@context": AS_CONTEXT,
            "id": f"{actor}/likes/1",
            "type": "Like",
            "actor": actor,
            "object": scene.blog_uri,
        }
        started = time.monotonic()
        answer = await scene.evil.deliver(
            scene.inbox, like, key_id=f"{actor}#main-key", private_key=scene.mallory.private_key
        )
        assert time.monotonic() - started < 10
        refused(answer, 401, "key_unavailable")
    assert scene.evil.streamed_bytes < 20 * MIB
    await assert_nothing_recorded(scene.alpha)


async def test_d2_slow_peer_hits_the_total_timeout(scene: Scene) -> None:
    # The instance's client has a 30 s deadline that settings cannot shorten, so this runs at
    # the client level: the same class, the same resolver, a 1 s deadline.
    scene.evil.route(
        "/trickle",
        Reply(announce_length=100_000, stream_bytes=100_000, chunk_size=1, interval=0.05),
    )
    scene.evil.route("/silent", Reply(delay=30, body=b"{}"))
    client = FederationClient(
        allowed_networks=scene.alpha.settings.allowed_private_addresses,
        allow_http=True,
        clock=scene.clock,
        resolver=scene.federation.resolver,
        total_timeout=1,
        connect_timeout=0.5,
    )
    try:
        for path in ("/trickle", "/silent"):
            started = time.monotonic()
            with pytest.raises(FetchError) as caught:
                await client.fetch_activitypub(scene.evil.url(path), signer=None)
            assert caught.value.reason == "timeout"
            assert time.monotonic() - started < 3
    finally:
        await client.close()


async def test_d3_html_served_as_actor_is_refused_without_parsing(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[int] = []
    real = parse_json_limited

    def spy(data: bytes, **options: Any) -> Any:
        parsed.append(len(data))
        return real(data, **options)

    monkeypatch.setattr(client_module, "parse_json_limited", spy)
    page = b"<html><head>" + b"<link " * 150_000
    scene.evil.route("/users/mallory", Reply(body=page, content_type="text/html"))

    started = time.monotonic()
    answer = await scene.mallory.deliver(scene.inbox, scene.like(scene.mallory))

    assert time.monotonic() - started < 2
    refused(answer, 401, "key_unavailable")
    assert parsed == []
    await assert_nothing_recorded(scene.alpha)


async def test_d4_key_url_redirecting_to_itself(scene: Scene) -> None:
    scene.evil.redirect("/users/mallory", scene.mallory.uri)
    refused(await scene.mallory.deliver(scene.inbox, scene.like(scene.mallory)), 401)
    assert scene.evil.fetches() == ["/users/mallory"]
    await assert_nothing_recorded(scene.alpha)


async def test_d4_unknown_key_ids_are_bounded_by_negative_cache_and_budget(scene: Scene) -> None:
    evil, mallory = scene.evil, scene.mallory
    like = json.dumps(scene.like(mallory)).encode()

    async def send(index: int) -> Answer:
        return await evil.deliver(
            scene.inbox, like, key_id=evil.url(f"/keys/{index}"), private_key=mallory.private_key
        )

    answers = [await send(index) for index in range(1000)]

    assert {answer.status for answer in answers} == {401}
    assert len(evil.fetches()) == keys.FETCH_BUDGET_PER_HOST
    # The budget is per host: another server is still served.
    assert (await scene.bob.deliver(scene.inbox, scene.like(scene.bob))).status == 202
    # A minute later the budget is back, but keys that just failed are not fetched again.
    scene.clock.advance(timedelta(minutes=2))
    before = len(evil.fetches())
    for index in range(5):
        refused(await send(index), 401)
    assert len(evil.fetches()) == before
    found = await records(scene.alpha)
    assert [row.actor_uri for row in found.inbound] == [scene.bob.uri]


async def test_d5_failing_hosts_table_stays_bounded(
    scene: Scene, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hosts, "MAX_HOST_ROWS", 5)
    alpha = scene.alpha
    blog = await alpha.actor("blog")
    # Deliveries to 20 distinct hosts that all fail (names the test resolver does not know:
    # they fail at DNS, nothing is ever connected to).
    inboxes = [f"http://failing-{index}.test:8{index:03d}/inbox" for index in range(20)]
    async with alpha.services.database.transaction() as session:
        await enqueue_delivery(
            session,
            activity={"id": f"{scene.blog_uri}/updates/1", "type": "Update"},
            actor_id=blog.id,
            inboxes=inboxes,
            now=scene.clock.now(),
        )
    await alpha.run_worker()

    async with alpha.services.database.sessions() as session:
        tracked = list((await session.scalars(select(FederationHost.host))).all())
    # Every delivery failed and was tracked, but never more than the cap at once.
    assert 1 <= len(tracked) <= 5
    assert set(tracked) <= {host_of(inbox, allow_http=True) for inbox in inboxes}


async def test_d5_paused_hosts_cannot_grow_the_table_past_its_cap(
    database: Any, clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(hosts, "MAX_HOST_ROWS", 5)
    # The table is full of paused hosts (each failed on seven distinct days).
    async with database.transaction() as session:
        for index in range(5):
            session.add(
                FederationHost(
                    host=f"paused-{index}.test",
                    failure_days=7,
                    last_failure_at=clock.now() - timedelta(days=index + 1),
                    unavailable_since=clock.now() - timedelta(days=index + 1),
                )
            )
    async with database.transaction() as session:
        await hosts.record_failure(session, "new.test", clock.now(), "down")
    async with database.sessions() as session:
        rows = {row.host for row in (await session.scalars(select(FederationHost))).all()}
    assert len(rows) <= 5
    assert "new.test" in rows
    assert "paused-4.test" not in rows  # the longest-silent paused host made room


@pytest.mark.parametrize(
    ("shape", "status"),
    [
        ("deep_nesting", 400),
        ("100k_recipients", 400),
        ("10k_tags", 400),
        ("1mb_type", 400),
        ("overlong_type", 400),
        ("over_1_mib", 413),
    ],
)
async def test_d6_structural_limits_refuse_before_any_fetch(
    scene: Scene, shape: str, status: int
) -> None:
    mallory = scene.mallory
    activity = scene.like(mallory)
    if shape == "deep_nesting":
        depth = 10_000
        text = json.dumps(activity)[:-1] + ', "result": ' + '{"object":' * depth + "1"
        body = (text + "}" * depth + "}").encode()
    else:
        if shape == "100k_recipients":
            activity["to"] = ["a"] * 100_000
        elif shape == "10k_tags":
            activity["tag"] = [{}] * 10_000
        elif shape == "1mb_type":
            activity["type"] = "L" * 1_000_000
        elif shape == "overlong_type":
            # Longer than the type column: must not reach the database at all.
            activity["type"] = "L" * 40
        elif shape == "over_1_mib":
            activity["content"] = "x" * (MIB + 1)
        body = json.dumps(activity).encode()

    answer = await mallory.deliver(scene.inbox, body)

    refused(answer, status)
    assert scene.evil.requests == []  # refused before the key was even fetched
    await assert_nothing_recorded(scene.alpha)


async def test_d7_thousands_of_unknown_recipients_cause_no_fetches(
    scene: Scene, federation: Federation, stack: contextlib.AsyncExitStack
) -> None:
    crowd = await server(federation, stack, "crowd.test")
    mallory = scene.mallory
    many = [crowd.url(f"/users/u{index}") for index in range(5000)]
    # 5000 in one list: over the list limit, refused outright.
    refused(await mallory.deliver(scene.inbox, scene.like(mallory, to=many)), 400)
    # 900 + 900 (within the limits): accepted, and none of them is looked up.
    like = scene.like(mallory, to=many[:900], cc=many[900:1800], bto=many[1800:2700])
    assert (await mallory.deliver(scene.inbox, like)).status == 202
    await scene.federation.step_workers()
    await assert_like_recorded(scene.alpha, mallory.uri)
    assert crowd.requests == []
    assert scene.evil.fetches() == ["/users/mallory"]


async def test_d8_remote_context_is_never_fetched(
    guarded: Scene, stack: contextlib.AsyncExitStack
) -> None:
    scene = guarded
    private = await listener(stack, FORBIDDEN)
    mallory = scene.mallory
    context_url = scene.evil.serve_json("/context.jsonld", {"@context": {"x": "http://x/"}})
    like = scene.like(mallory)
    like["@context"] = [AS_CONTEXT, private.url("/"), context_url, {"@import": context_url}]
    assert (await mallory.deliver(scene.inbox, like)).status == 202
    await assert_like_recorded(scene.alpha, mallory.uri)
    assert scene.evil.fetches() == ["/users/mallory"]
    assert private.accepted == 0


# --- §2.5 type confusion -----------------------------------------------------------------------


async def test_25_multi_typed_like_flattr_is_one_like(scene: Scene) -> None:
    mallory = scene.mallory
    assert (
        await mallory.deliver(scene.inbox, scene.like(mallory, type=["Like", "Flattr"]))
    ).status == 202
    found = await records(scene.alpha)
    assert [row.type for row in found.inbound] == ["Like"]
    assert len(found.likes) == 1
    # Two types we act on: ambiguous, refused.
    ambiguous = scene.like(mallory, type=["Like", "Announce"])
    refused(await mallory.deliver(scene.inbox, ambiguous), 400, "shape")
    assert len((await records(scene.alpha)).inbound) == 1


async def test_25_embedded_object_only_its_id_is_used(scene: Scene) -> None:
    mallory = scene.mallory
    embedded = {
        "id": scene.blog_uri,
        "type": "Service",
        "attributedTo": scene.bob.uri,
        "name": "Actually bob's",
    }
    assert (await mallory.deliver(scene.inbox, scene.like(mallory, embedded))).status == 202
    found = await records(scene.alpha)
    blog = await scene.alpha.actor("blog")
    assert [(row.target_id, row.object_uri) for row in found.likes] == [(blog.id, scene.blog_uri)]
    # An embedded object naming a thing we do not have is nothing, whatever it says.
    ghost = {"id": scene.alpha.actor_uri("ghost", "thing"), "attributedTo": scene.blog_uri}
    assert (await mallory.deliver(scene.inbox, scene.like(mallory, ghost))).status == 202
    assert len((await records(scene.alpha)).likes) == 1


async def test_25_embedded_actor_public_key_is_never_used(scene: Scene) -> None:
    # "bob" arrives embedded, with mallory's key as his publicKey, and the signature names
    # bob's real key id. Only the key bob's own server publishes counts.
    mallory, bob = scene.mallory, scene.bob
    like = scene.like(bob)
    like["actor"] = {
        "id": bob.uri,
        "type": "Person",
        "publicKey": {"id": bob.key_id, "owner": bob.uri, "publicKeyPem": mallory.public_key_pem},
    }
    answer = await scene.evil.deliver(
        scene.inbox, like, key_id=bob.key_id, private_key=mallory.private_key
    )
    refused(answer, 401, "signature_mismatch")
    assert scene.victim.fetches()[0] == "/users/bob"
    await assert_nothing_recorded(scene.alpha)


async def test_25_undo_of_someone_elses_like_has_no_effect(scene: Scene) -> None:
    mallory, bob = scene.mallory, scene.bob
    bobs_like = scene.like(bob)
    assert (await bob.deliver(scene.inbox, bobs_like)).status == 202
    await assert_like_recorded(scene.alpha, bob.uri)

    # mallory undoes bob's Like, naming bob as its actor...
    undo_as_bob = mallory.activity("Undo", bobs_like)
    # ...or naming herself as the actor of bob's Like id...
    undo_as_mallory = mallory.activity("Undo", {**bobs_like, "actor": mallory.uri})
    # ...or by reference.
    undo_reference = mallory.activity("Undo", bobs_like["id"])
    # And she tries to claim, before bob sends it, a Like id on bob's server.
    future_id = bob.new_id()
    squat = mallory.activity(
        "Undo",
        {"id": future_id, "type": "Like", "actor": mallory.uri, "object": scene.blog_uri},
    )
    for undo in (undo_as_bob, undo_as_mallory, undo_reference, squat):
        assert (await mallory.deliver(scene.inbox, undo)).status == 202

    found = await records(scene.alpha)
    assert [(like.actor_uri, like.undone_at) for like in found.likes] == [(bob.uri, None)]
    outcomes = [row.outcome or "" for row in found.inbound if row.actor_uri == mallory.uri]
    assert all(outcome.startswith("ignored") for outcome in outcomes), outcomes
    # bob's next Like (with the id mallory tried to claim) counts as usual.
    assert (await bob.deliver(scene.inbox, {**scene.like(bob), "id": future_id})).status == 202
    found = await records(scene.alpha)
    assert [like.like_uri for like in found.likes if like.actor_uri == bob.uri] == [
        bobs_like["id"],
        future_id,
    ]


async def test_25_like_with_foreign_money_fields_is_only_data(scene: Scene) -> None:
    # A Like from a server that is no flattrfed clearing peer, with our instrument and an
    # amount. The instrument's period and clearing actor are kept as data on the received Like;
    # an amount is not read anywhere, and nothing about money happens on receipt.
    mallory = scene.mallory
    instrument = {
        "type": "Flattr",
        "flattrPeriod": "2026-11",
        "flattrClearing": scene.evil.url("/actor"),
        "amount": {"currency": "EUR", "value": "1000000.00"},
    }
    like = scene.like(mallory, instrument=instrument)
    assert (await mallory.deliver(scene.inbox, like)).status == 202
    [received] = (await records(scene.alpha)).likes
    assert received.flattr_period == "2026-11"
    assert received.clearing_actor == scene.evil.url("/actor")
    columns = set(ReceivedLike.__table__.columns.keys())
    assert not {"amount", "amount_minor", "value", "currency"} & columns


# --- helpers -----------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _pem(private_key: Any) -> str:
    from flattrfed.activitypub.signatures import public_key_to_pem

    return public_key_to_pem(private_key.public_key())


def _http_date(scene: Scene) -> str:
    from flattrfed.activitypub.signatures import format_http_date

    return format_http_date(scene.clock.now())


def _param(signature: str, name: str, value: str) -> str:
    """A draft-cavage Signature header with one parameter's value replaced."""
    parts = []
    for part in signature.split(","):
        key, _, _ = part.partition("=")
        parts.append(f'{name}="{value}"' if key == name else part)
    return ",".join(parts)


def _replace(pairs: list[tuple[str, str]], name: str, value: str) -> list[tuple[str, str]]:
    return [(key, value if key == name else old) for key, old in pairs]
