"""Two real instances over loopback HTTP: WebFinger, fetch, Follow, Accept, post, Like, Undo."""

from __future__ import annotations

from sqlalchemy import select

from flattrfed.activitypub.interactions import follow, like, parse_handle, undo_like, webfinger
from flattrfed.activitypub.outbox import publish_post
from flattrfed.db.models import (
    Follow,
    InboundActivity,
    OutboundFollow,
    OutboundLike,
    ReceivedLike,
    RemoteObject,
)
from tests.harness.instances import Federation, Instance


async def inbound(instance: Instance) -> list[InboundActivity]:
    async with instance.services.database.sessions() as session:
        rows = await session.scalars(select(InboundActivity).order_by(InboundActivity.id))
        return list(rows.all())


async def test_follow_post_like_and_undo_between_two_instances(federation: Federation) -> None:
    alpha = await federation.start("alpha")
    beta = await federation.start("beta")
    alice = await alpha.create_member("alice")
    await alpha.create_thing(alice, "blog", "Alice's blog")
    await beta.create_member("bob")
    bob = await beta.actor("bob")
    now = federation.clock.now

    # WebFinger, then a signed fetch of the actor document, from beta's side.
    handle = parse_handle(f"@blog@{alpha.host}")
    assert handle is not None
    blog_uri = await webfinger(beta.services.client, handle, allow_http=True)
    assert blog_uri == alpha.actor_uri("blog", "thing")
    blog_remote = await beta.services.keys.actor(blog_uri)
    assert blog_remote.type == "Service"
    assert blog_remote.shared_inbox == alpha.url("/inbox")

    # bob follows the blog: Follow goes to alpha, Accept comes back to beta.
    async with beta.services.database.transaction() as session:
        await follow(session, beta.services.urls, bob, blog_remote, now())
    await federation.step_workers()
    alpha_seen = await inbound(alpha)
    assert [(row.type, row.outcome) for row in alpha_seen] == [
        ("Follow", "followed; Accept queued")
    ]
    async with alpha.services.database.sessions() as session:
        assert len((await session.scalars(select(Follow))).all()) == 1
    async with beta.services.database.sessions() as session:
        our_follow = await session.scalar(select(OutboundFollow))
        assert our_follow is not None
        assert our_follow.accepted_at is not None

    # The blog posts; the Create reaches bob's server, which stores the post from its origin.
    blog = await alpha.actor("blog")
    async with alpha.services.database.transaction() as session:
        post = await publish_post(session, alpha.services.urls, blog, "Episode 1 is out", now())
    await federation.step_workers()
    async with beta.services.database.sessions() as session:
        stored = await session.scalar(select(RemoteObject).where(RemoteObject.uri == post.uri))
        assert stored is not None
        assert stored.attributed_to == blog_uri
        assert "Episode 1 is out" in stored.document["content"]

    # bob likes the post (as a Mastodon favourite would): it counts as a Like of the blog.
    async with beta.services.database.transaction() as session:
        sent = await like(
            session, beta.services.urls, bob, object_uri=post.uri, author=blog_remote, now=now()
        )
    await federation.step_workers()
    async with alpha.services.database.sessions() as session:
        received = (await session.scalars(select(ReceivedLike))).all()
    assert len(received) == 1
    assert received[0].target_id == blog.id
    assert received[0].actor_uri == beta.actor_uri("bob")
    assert received[0].undone_at is None

    async with beta.services.database.transaction() as session:
        sent_row = await session.get(OutboundLike, sent.id)
        assert sent_row is not None
        await undo_like(session, sent_row, now())
    await federation.step_workers()
    async with alpha.services.database.sessions() as session:
        undone = await session.scalar(select(ReceivedLike))
    assert undone is not None
    assert undone.undone_at is not None

    types = [(row.type, row.outcome) for row in await inbound(alpha)]
    assert types == [
        ("Follow", "followed; Accept queued"),
        ("Like", "like recorded"),
        ("Undo", "like undone"),
    ]
    assert [(row.type, row.outcome) for row in await inbound(beta)] == [
        ("Accept", "our follow was accepted"),
        ("Create", "post of a followed actor stored"),
    ]
