"""flattrfed against a fake Mastodon 4.x and a fake Fedify app, over real loopback HTTP.

The fakes (tests/fakes/) send what Mastodon and Fedify send, byte for byte where it matters
(activity shapes, signature headers), and check what we send them by Mastodon's rules
(research/ap-interop.md §1.4, §1.7). Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from flattrfed.activitypub.interactions import like, parse_handle, undo_like, webfinger
from flattrfed.activitypub.outbox import publish_post
from flattrfed.db.models import Follow, InboundActivity, OutboundLike, Post, ReceivedLike
from tests.fakes.fedify import FakeFedify
from tests.fakes.mastodon import ACTIVITY_JSON, FakeMastodon, ReceivedDelivery
from tests.harness.instances import Federation, Instance

# What Mastodon signs on a delivery, and what our signer must cover for Mastodon to accept it.
MASTODON_REQUIRED = {"(request-target)", "host", "date", "digest"}


@pytest.fixture
async def alpha(federation: Federation) -> Instance:
    """A flattrfed instance with a member alice and her thing blog."""
    instance = await federation.start("alpha")
    alice = await instance.create_member("alice")
    await instance.create_thing(alice, "blog", "Alice's blog")
    return instance


@pytest.fixture
async def mastodon(federation: Federation) -> AsyncIterator[FakeMastodon]:
    fake = FakeMastodon(federation)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


@pytest.fixture
async def fedify(federation: Federation) -> AsyncIterator[FakeFedify]:
    fake = FakeFedify(federation)
    await fake.start()
    try:
        yield fake
    finally:
        await fake.close()


async def outcomes(instance: Instance) -> list[tuple[str, str | None]]:
    async with instance.services.database.sessions() as session:
        rows = await session.scalars(select(InboundActivity).order_by(InboundActivity.id))
        return [(row.type, row.outcome) for row in rows]


async def received_likes(instance: Instance) -> list[ReceivedLike]:
    async with instance.services.database.sessions() as session:
        return list((await session.scalars(select(ReceivedLike).order_by(ReceivedLike.id))).all())


async def follows(instance: Instance) -> list[Follow]:
    async with instance.services.database.sessions() as session:
        return list((await session.scalars(select(Follow))).all())


async def publish(instance: Instance, thing: str, text: str) -> Post:
    actor = await instance.actor(thing)
    async with instance.services.database.transaction() as session:
        return await publish_post(
            session, instance.services.urls, actor, text, instance.services.clock.now()
        )


def without_context(activity: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in activity.items() if key != "@context"}


def assert_mastodon_accepts(delivery: ReceivedDelivery) -> None:
    """Mastodon's SignedRequest would accept this delivery (the fake checked it on arrival)."""
    assert delivery.verified, delivery.problems
    assert set(delivery.covered) >= MASTODON_REQUIRED
    assert delivery.headers["content-type"] == ACTIVITY_JSON
    assert delivery.signer == delivery.activity["actor"]


# --- Mastodon -> flattrfed -----------------------------------------------------------------------


async def test_mastodon_user_follows_a_thing_and_gets_a_signed_accept(
    federation: Federation, alpha: Instance, mastodon: FakeMastodon
) -> None:
    bob = mastodon.add_account("bob", name="Bob")
    # Mastodon's ResolveAccountService: WebFinger, actor fetch (signed GET), round trip.
    blog = await mastodon.resolve(f"@blog@{alpha.host}")
    assert blog["id"] == alpha.actor_uri("blog", "thing")
    assert blog["type"] == "Service"

    follow = await mastodon.follow(bob, blog)
    assert follow.status == 202, follow.body
    assert follow.id.startswith(f"{mastodon.base_url}/")  # https://HOST/<uuid>
    await federation.step_workers()

    assert await outcomes(alpha) == [("Follow", "followed; Accept queued")]
    [row] = await follows(alpha)
    assert row.follow_uri == follow.id
    # The Accept goes to bob's own inbox, from the blog, signed, with the Follow embedded.
    [delivery] = mastodon.deliveries
    assert delivery.path == "/users/bob/inbox"
    assert_mastodon_accepts(delivery)
    accept = delivery.activity
    assert accept["type"] == "Accept"
    assert accept["actor"] == blog["id"]
    assert accept["object"] == without_context(follow.activity)
    assert delivery.key_id == f"{blog['id']}#main-key"


async def test_mastodon_favourite_and_unfavourite_of_a_things_post(
    federation: Federation, alpha: Instance, mastodon: FakeMastodon
) -> None:
    bob = mastodon.add_account("bob")
    blog = await mastodon.resolve(f"blog@{alpha.host}")
    post = await publish(alpha, "blog", "Episode 1 is out")
    thing = await alpha.actor("blog")

    favourite = await mastodon.favourite(bob, post.uri, blog)
    assert favourite.status == 202, favourite.body
    assert favourite.id == f"{bob.uri}#likes/{favourite.number}"
    await federation.step_workers()
    [received] = await received_likes(alpha)
    # A favourite of the thing's post counts as a Like of the thing; no money (no instrument).
    assert (received.target_id, received.post_id) == (thing.id, post.id)
    assert received.like_uri == favourite.id
    assert received.actor_uri == bob.uri
    assert received.object_uri == post.uri
    assert received.flattr_period is None
    assert received.undone_at is None

    federation.clock.advance(timedelta(minutes=3))
    unfavourite = await mastodon.unfavourite(bob, favourite, blog)
    assert unfavourite.status == 202, unfavourite.body
    assert unfavourite.id == f"{favourite.id}/undo"
    await federation.step_workers()
    [undone] = await received_likes(alpha)
    assert undone.undone_at == federation.clock.now()
    assert await outcomes(alpha) == [("Like", "like recorded"), ("Undo", "like undone")]
    assert mastodon.deliveries == []  # nothing is sent back for likes


async def test_mastodon_undo_follow_removes_the_follower(
    federation: Federation, alpha: Instance, mastodon: FakeMastodon
) -> None:
    bob = mastodon.add_account("bob")
    blog = await mastodon.resolve(f"blog@{alpha.host}")
    follow = await mastodon.follow(bob, blog)
    await federation.step_workers()
    assert len(await follows(alpha)) == 1

    unfollow = await mastodon.unfollow(bob, follow, blog)
    assert unfollow.status == 202, unfollow.body
    assert unfollow.id == f"{bob.uri}#follows/{follow.number}/undo"
    await federation.step_workers()
    assert await follows(alpha) == []
    assert (await outcomes(alpha))[-1] == ("Undo", "unfollowed")
    async with federation.client().get(
        f"{blog['followers']}", headers={"Accept": ACTIVITY_JSON}
    ) as response:
        assert (await response.json(content_type=None))["totalItems"] == 0


async def test_flattrfed_looks_up_a_mastodon_account_by_handle(
    alpha: Instance, mastodon: FakeMastodon
) -> None:
    bob = mastodon.add_account("bob")
    handle = parse_handle(f"@bob@{mastodon.host}")
    assert handle is not None
    assert await webfinger(alpha.services.client, handle, allow_http=True) == bob.uri
    remote = await alpha.services.keys.actor(bob.uri)
    assert (remote.type, remote.preferred_username) == ("Person", "bob")
    assert remote.inbox == bob.inbox
    assert remote.shared_inbox == f"{mastodon.base_url}/inbox"
    assert remote.key_id == bob.key_id


# --- flattrfed -> Mastodon -----------------------------------------------------------------------


async def test_our_deliveries_verify_under_mastodons_rules(
    federation: Federation, alpha: Instance, mastodon: FakeMastodon
) -> None:
    bob = mastodon.add_account("bob")
    blog = await mastodon.resolve(f"blog@{alpha.host}")
    await mastodon.follow(bob, blog)
    await federation.step_workers()  # the Accept

    # The blog's post reaches bob's server through its shared inbox.
    post = await publish(alpha, "blog", "Episode 2")
    await federation.step_workers()
    create = mastodon.deliveries[-1]
    assert create.path == "/inbox"
    assert create.activity["type"] == "Create"
    assert create.activity["object"]["id"] == post.uri
    assert create.activity["object"]["attributedTo"] == blog["id"]

    # alice flattrs bob's status: a plain Like (type a string, no content, no LD signature) to
    # bob's own inbox, the money intent only in the Flattr instrument.
    status_uri = f"{bob.uri}/statuses/1133"
    author = await alpha.services.keys.actor(bob.uri)
    alice = await alpha.actor("alice")
    async with alpha.services.database.transaction() as session:
        sent = await like(
            session,
            alpha.services.urls,
            alice,
            object_uri=status_uri,
            author=author,
            now=federation.clock.now(),
            flattr_period="2026-11",
        )
        sent_id = sent.id
    await federation.step_workers()
    flattr = mastodon.deliveries[-1]
    assert flattr.path == "/users/bob/inbox"
    activity = flattr.activity
    assert activity["type"] == "Like"
    assert activity["object"] == status_uri
    assert not {"content", "_misskey_reaction", "signature"} & activity.keys()
    assert activity["instrument"]["type"] == "Flattr"
    assert activity["instrument"]["flattrPeriod"] == "2026-11"

    async with alpha.services.database.transaction() as session:
        row = await session.get(OutboundLike, sent_id)
        assert row is not None
        await undo_like(session, row, federation.clock.now())
    await federation.step_workers()
    undo = mastodon.deliveries[-1]
    assert undo.path == "/users/bob/inbox"
    assert undo.activity["type"] == "Undo"
    # Mastodon dispatches an Undo on the embedded object's type: the whole Like must be there.
    assert undo.activity["object"] == without_context(activity)

    assert [delivery.activity["type"] for delivery in mastodon.deliveries] == [
        "Accept",
        "Create",
        "Like",
        "Undo",
    ]
    for delivery in mastodon.deliveries:
        assert_mastodon_accepts(delivery)


async def test_a_retried_delivery_is_signed_afresh(
    federation: Federation, alpha: Instance, mastodon: FakeMastodon
) -> None:
    """Mastodon refuses a Date over 1 h 5 min old: a retry hours later must carry a new one."""
    bob = mastodon.add_account("bob")
    blog = await mastodon.resolve(f"blog@{alpha.host}")
    mastodon.scripted_answers = [503]
    await mastodon.follow(bob, blog)
    await federation.step_workers()
    assert len(mastodon.deliveries) == 1  # answered 503: retried later
    federation.clock.advance(timedelta(hours=3))
    await federation.step_workers()
    first, retried = mastodon.deliveries
    assert retried.activity == first.activity
    assert retried.headers["date"] != first.headers["date"]
    assert_mastodon_accepts(retried)


# --- Fedify -> flattrfed -------------------------------------------------------------------------


async def test_fedify_rfc9421_signed_like_is_accepted_and_recorded(
    federation: Federation, alpha: Instance, fedify: FakeFedify
) -> None:
    carol = fedify.add_account("carol")
    blog_uri = alpha.actor_uri("blog", "thing")
    inbox = f"{blog_uri}/inbox"

    sent = await fedify.like(carol, blog_uri, inbox)
    assert sent.status == 202, sent.body
    # One knock: our inbox verified the RFC 9421 signature, and ignored proof and LD signature.
    assert [(knock.spec, knock.status) for knock in fedify.knocks] == [("rfc9421", 202)]
    assert {"proof", "signature"} <= sent.activity.keys()
    await federation.step_workers()
    [received] = await received_likes(alpha)
    thing = await alpha.actor("blog")
    assert (received.target_id, received.post_id) == (thing.id, None)
    assert (received.actor_uri, received.like_uri) == (carol.uri, sent.id)


async def test_fedify_double_knock_when_the_first_knock_is_refused(
    federation: Federation, alpha: Instance, fedify: FakeFedify
) -> None:
    carol = fedify.add_account("carol")
    blog_uri = alpha.actor_uri("blog", "thing")
    inbox = f"{blog_uri}/inbox"
    post = await publish(alpha, "blog", "Episode 3")
    fedify.first_knock_broken = True  # every RFC 9421 signature from carol fails to verify

    first = await fedify.like(carol, blog_uri, inbox)
    assert first.status == 202, first.body
    refused, accepted = fedify.knocks
    assert (refused.spec, refused.status) == ("rfc9421", 401)
    assert json.loads(refused.answer) == {"error": "signature_mismatch"}
    assert (accepted.spec, accepted.status) == ("draft-cavage", 202)

    # Fedify remembers that draft-cavage works for this origin and starts with it next time.
    second = await fedify.like(carol, post.uri, inbox)
    assert second.status == 202, second.body
    assert [(knock.spec, knock.status) for knock in fedify.knocks[2:]] == [("draft-cavage", 202)]

    await federation.step_workers()
    likes = await received_likes(alpha)
    assert [(row.like_uri, row.post_id) for row in likes] == [
        (first.id, None),
        (second.id, post.id),
    ]
    assert await outcomes(alpha) == [("Like", "like recorded"), ("Like", "like recorded")]


async def test_fedify_like_with_a_flattr_instrument_records_the_period(
    federation: Federation, alpha: Instance, fedify: FakeFedify
) -> None:
    """A flattrfed-aware Fedify app sends the §3.2 encoding: a plain Like plus an instrument."""
    carol = fedify.add_account("carol")
    blog_uri = alpha.actor_uri("blog", "thing")
    instrument = {
        "type": "Flattr",
        "flattrPeriod": "2026-11",
        "flattrBudgetOwner": carol.uri,
        "flattrClearing": f"{fedify.base_url}/actor",
    }
    sent = await fedify.like(carol, blog_uri, f"{blog_uri}/inbox", extra={"instrument": instrument})
    assert sent.status == 202, sent.body
    await federation.step_workers()
    [received] = await received_likes(alpha)
    assert received.flattr_period == "2026-11"
    assert received.clearing_actor == f"{fedify.base_url}/actor"


async def test_fedify_follow_gets_an_accept_fedify_verifies(
    federation: Federation, alpha: Instance, fedify: FakeFedify
) -> None:
    carol = fedify.add_account("carol")
    blog = await fedify.resolve(f"blog@{alpha.host}")  # Fedify fetches unsigned
    follow = await fedify.follow(carol, blog)
    assert follow.status == 202, follow.body
    await federation.step_workers()
    [delivery] = fedify.deliveries
    assert delivery.path == "/users/carol/inbox"
    assert delivery.verified, delivery.problems
    accept = delivery.activity
    assert accept["type"] == "Accept"
    assert accept["to"] == [carol.uri]
    # The Follow comes back rebuilt from its references: the proof and LD signature Fedify
    # attached (or anything else a sender adds) are not echoed under our signature.
    assert accept["object"] == {
        "id": follow.id,
        "type": "Follow",
        "actor": carol.uri,
        "object": blog["id"],
    }
    assert {"proof", "signature"} <= follow.activity.keys()


# --- relayed activities ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["Create", "Undo Like"])
async def test_an_ld_signed_relayed_activity_is_not_accepted_on_its_ld_signature(
    federation: Federation,
    alpha: Instance,
    mastodon: FakeMastodon,
    fedify: FakeFedify,
    kind: str,
) -> None:
    """Mastodon would accept these if the RsaSignature2017 verified; we never look at it.

    A relay signs the HTTP request with its own key, so the signer is not the activity's actor,
    and the request is refused however good the embedded LD signature is.
    """
    bob = mastodon.add_account("bob")
    relay = fedify.add_account("relay", type="Application")
    blog = await mastodon.resolve(f"blog@{alpha.host}")
    post = await publish(alpha, "blog", "Episode 4")
    favourite = await mastodon.favourite(bob, post.uri, blog)
    await federation.step_workers()
    before = await outcomes(alpha)

    if kind == "Create":
        note = {
            "id": f"{bob.uri}/statuses/77",
            "type": "Note",
            "attributedTo": bob.uri,
            "content": "<p>hello</p>",
            "to": ["https://www.w3.org/ns/activitystreams#Public"],
        }
        activity = {
            "@context": "https://www.w3.org/ns/activitystreams",
            "id": f"{bob.uri}/statuses/77/activity",
            "type": "Create",
            "actor": bob.uri,
            "object": note,
        }
    else:
        activity = mastodon.activity(
            "Undo Like", actor=bob.uri, number=str(favourite.number), object=post.uri
        )
    signed = mastodon.ld_signed(bob, activity)
    inbox = str(blog["inbox"])

    relayed = await fedify.deliver(relay, inbox, signed)
    assert relayed.status == 403
    assert [json.loads(knock.answer) for knock in fedify.knocks] == [
        {"error": "key_not_owned_by_actor"},
        {"error": "key_not_owned_by_actor"},
    ]
    status, _ = await mastodon.post_raw(
        inbox, json.dumps(signed).encode(), {"Content-Type": ACTIVITY_JSON}
    )
    assert status == 401  # no HTTP signature at all: the LD signature alone counts for nothing

    await federation.step_workers()
    assert await outcomes(alpha) == before
    async with alpha.services.database.sessions() as session:
        assert await session.scalar(select(func.count()).select_from(InboundActivity)) == 1
    [still] = await received_likes(alpha)
    assert still.undone_at is None
