"""Creator pages over real HTTP: a member's things (create, edit, hide, delete) and posts."""

from __future__ import annotations

from sqlalchemy import select

from flattrfed.activitypub.interactions import follow
from flattrfed.db.models import (
    LocalActor,
    Post,
    RemoteActor,
    RemoteObject,
    Thing,
    WorkItem,
)
from tests.harness.instances import Federation, Instance
from tests.integration.test_web_support import Visitors

AP = {"Accept": "application/activity+json"}


def thing_form(**changes: str) -> dict[str, str]:
    fields = {
        "handle": "zine",
        "title": "Ann's zine",
        "description": "A zine about <bikes>.",
        "external_url": "https://zine.example/",
        "category": "text",
        "tags": "Bikes, diy, bikes",
        "language": "en",
        "image_url": "https://img.example/zine.png",
    }
    fields.update(changes)
    return fields


async def thing_named(instance: Instance, handle: str) -> Thing:
    async with instance.services.database.sessions() as session:
        thing = await session.scalar(
            select(Thing)
            .join(LocalActor, LocalActor.thing_id == Thing.id)
            .where(LocalActor.username == handle)
        )
    assert thing is not None, handle
    return thing


async def actor_status(federation: Federation, url: str) -> int:
    async with federation.client().get(url, headers=AP) as response:
        return response.status


async def test_a_member_creates_edits_hides_and_deletes_a_thing_through_the_forms(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    await alpha.create_member("ann")
    ann = visitors(alpha)
    await ann.log_in("ann")
    listing = await ann.get("/things")
    assert listing.status == 200
    assert listing.has("You have no things yet")
    dashboard = await ann.get("/dashboard")
    assert 'href="/things"' in dashboard.text
    form = await ann.get("/things/new")
    assert form.status == 200
    token = form.csrf()

    # No CSRF token: refused before anything is written.
    forged = await ann.post("/things/new", thing_form())
    assert forged.status == 403

    # A bad handle re-renders the form with what was typed and says why.
    bad = await ann.post("/things/new", {"csrf_token": token, **thing_form(handle="Bad Handle!")})
    assert bad.status == 400
    assert bad.has("Handle 'bad handle!' is not valid")
    assert bad.has("A zine about <bikes>.")  # the entered values are kept (escaped)
    assert "<bikes>" not in bad.text
    reserved = await ann.post("/things/new", {"csrf_token": token, **thing_form(handle="new")})
    assert reserved.status == 400
    assert reserved.has("is reserved")
    bad_url = await ann.post(
        "/things/new", {"csrf_token": token, **thing_form(external_url="javascript:alert(1)")}
    )
    assert bad_url.status == 400
    assert bad_url.has("The web address must be an https:// address")

    created = await ann.post("/things/new", {"csrf_token": token, **thing_form()})
    assert created.status == 303, created.text[:400]
    thing = await thing_named(alpha, "zine")
    assert created.location == f"/things/{thing.id}/edit?msg=thing-created"
    assert (thing.title, thing.category, thing.language) == ("Ann's zine", "text", "en")
    assert thing.tags == ["bikes", "diy"]
    assert thing.external_url == "https://zine.example/"
    assert await actor_status(federation, alpha.actor_uri("zine", "thing")) == 200

    listing = await ann.get("/things")
    assert listing.has("Ann's zine")
    assert f"/things/{thing.id}/edit" in listing.text

    edit_page = await ann.get(f"/things/{thing.id}/edit")
    assert edit_page.status == 200
    assert 'value="bikes, diy"' in edit_page.text
    saved = await ann.post(
        f"/things/{thing.id}/edit",
        {"csrf_token": token, **thing_form(title="Ann's bike zine", tags="bikes")},
    )
    assert saved.status == 303
    assert saved.location == f"/things/{thing.id}/edit?msg=thing-saved"
    thing = await thing_named(alpha, "zine")
    assert thing.title == "Ann's bike zine"
    assert thing.tags == ["bikes"]
    refused_edit = await ann.post(
        f"/things/{thing.id}/edit",
        {"csrf_token": token, **thing_form(image_url="javascript:alert(1)", title="Changed")},
    )
    assert refused_edit.status == 400
    assert refused_edit.has("The image address must be an https:// address")
    assert 'value="Changed"' in refused_edit.text
    assert (await thing_named(alpha, "zine")).title == "Ann's bike zine"

    hidden = await ann.post(f"/things/{thing.id}/hide", {"csrf_token": token})
    assert hidden.status == 303
    assert (await thing_named(alpha, "zine")).hidden
    assert await actor_status(federation, alpha.actor_uri("zine", "thing")) == 404
    assert (await ann.get("/things")).has("hidden")
    shown = await ann.post(f"/things/{thing.id}/unhide", {"csrf_token": token})
    assert shown.status == 303
    assert not (await thing_named(alpha, "zine")).hidden
    assert await actor_status(federation, alpha.actor_uri("zine", "thing")) == 200

    confirm = await ann.get(f"/things/{thing.id}/delete")
    assert confirm.status == 200
    assert confirm.has("Flattrs it already received are still paid")
    assert confirm.has("are sent a Delete")
    unconfirmed = await ann.post(f"/things/{thing.id}/delete", {"csrf_token": token})
    assert unconfirmed.status == 400
    assert unconfirmed.has("Tick the box to confirm")
    assert (await thing_named(alpha, "zine")).deleted_at is None
    deleted = await ann.post(f"/things/{thing.id}/delete", {"csrf_token": token, "confirm": "yes"})
    assert deleted.status == 303
    assert deleted.location == "/things?msg=thing-deleted"
    assert (await thing_named(alpha, "zine")).deleted_at is not None
    assert await actor_status(federation, alpha.actor_uri("zine", "thing")) in {404, 410}
    assert not (await ann.get("/things")).has("Ann's bike zine")
    again = await ann.get(f"/things/{thing.id}/edit")
    assert again.status == 404


async def test_nobody_else_can_touch_a_members_thing(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    owner = await alpha.create_member("ann")
    await alpha.create_member("mallory")
    thing = await alpha.create_thing(owner, "zine", "Ann's zine")
    mallory = visitors(alpha)
    await mallory.log_in("mallory")
    token = (await mallory.get("/things")).csrf()
    gets = [f"/things/{thing.id}/edit", f"/things/{thing.id}/delete"]
    posts: dict[str, dict[str, str]] = {
        f"/things/{thing.id}/edit": thing_form(title="Owned"),
        f"/things/{thing.id}/hide": {},
        f"/things/{thing.id}/unhide": {},
        f"/things/{thing.id}/delete": {"confirm": "yes"},
        f"/things/{thing.id}/posts": {"text": "spam from mallory"},
    }
    for path in gets:
        page = await mallory.get(path)
        assert page.status == 404, path
        assert page.has("No such thing of yours")
    for path, data in posts.items():
        page = await mallory.post(path, {"csrf_token": token, **data})
        assert page.status == 404, path
    # An id that does not exist answers the same as someone else's thing.
    assert (await mallory.get("/things/999999/edit")).status == 404
    row = await thing_named(alpha, "zine")
    assert (row.title, row.hidden, row.deleted_at) == ("Ann's zine", False, None)
    async with alpha.services.database.sessions() as session:
        assert (await session.scalars(select(Post))).all() == []
    assert "Ann's zine" not in (await mallory.get("/things")).text

    # Anonymous visitors are sent to log in, for every page and form.
    anonymous = visitors(alpha)
    for path in ["/things", "/things/new", *gets]:
        page = await anonymous.get(path, follow=False)
        assert page.status == 303, path
        assert page.location.startswith("/login?next=")
    anon_token = await anonymous.token()
    for path, data in posts.items():
        page = await anonymous.post(path, {"csrf_token": anon_token, **data})
        assert page.status == 303, path
        assert page.location.startswith("/login?next=")


async def test_posts_and_edits_reach_a_follower_on_another_instance(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    beta = await federation.start("beta")
    owner = await alpha.create_member("ann")
    thing = await alpha.create_thing(owner, "zine", "Ann's zine")
    await beta.create_member("bob")
    bob = await beta.actor("bob")
    now = federation.clock.now
    zine_remote = await beta.services.keys.actor(alpha.actor_uri("zine", "thing"))
    ann_remote = await beta.services.keys.actor(alpha.actor_uri("ann"))
    async with beta.services.database.transaction() as session:
        await follow(session, beta.services.urls, bob, zine_remote, now())
        await follow(session, beta.services.urls, bob, ann_remote, now())
    await federation.step_workers()

    ann = visitors(alpha)
    await ann.log_in("ann")
    token = (await ann.get(f"/things/{thing.id}/edit")).csrf()

    # Editing delivers an Update of the thing's actor; beta refetches it.
    saved = await ann.post(
        f"/things/{thing.id}/edit",
        {"csrf_token": token, **thing_form(handle="ignored", title="Ann's bike zine")},
    )
    assert saved.status == 303
    await federation.step_workers()
    async with beta.services.database.sessions() as session:
        remote = await session.scalar(
            select(RemoteActor).where(RemoteActor.uri == alpha.actor_uri("zine", "thing"))
        )
        assert remote is not None
        assert remote.name == "Ann's bike zine"

    too_long = await ann.post(
        f"/things/{thing.id}/posts", {"csrf_token": token, "text": "x" * 5001}
    )
    assert too_long.status == 400
    assert too_long.has("A post has at most 5000 characters")
    empty = await ann.post(f"/things/{thing.id}/posts", {"csrf_token": token, "text": "  "})
    assert empty.status == 400

    posted = await ann.post(
        f"/things/{thing.id}/posts", {"csrf_token": token, "text": "Issue 2 is <out>!"}
    )
    assert posted.status == 303
    assert posted.location == f"/things/{thing.id}/edit?msg=posted#posts-heading"
    edit_page = await ann.get(f"/things/{thing.id}/edit")
    assert "Issue 2 is &lt;out&gt;!" in edit_page.text  # recent posts, escaped
    as_member = await ann.post("/posts", {"csrf_token": token, "text": "Hello from ann"})
    assert as_member.status == 303
    async with alpha.services.database.sessions() as session:
        queued = (await session.scalars(select(WorkItem).where(WorkItem.kind == "deliver"))).all()
        assert {item.payload["activity"]["type"] for item in queued} >= {"Create"}
        post_uris = [post.uri for post in (await session.scalars(select(Post))).all()]
    await federation.step_workers()
    async with beta.services.database.sessions() as session:
        stored = {
            row.uri: row
            for row in (
                await session.scalars(select(RemoteObject).where(RemoteObject.uri.in_(post_uris)))
            ).all()
        }
    assert set(stored) == set(post_uris)
    thing_post = next(row for row in stored.values() if "Issue 2" in row.document["content"])
    assert thing_post.attributed_to == alpha.actor_uri("zine", "thing")
    member_post = next(
        row for row in stored.values() if "Hello from ann" in row.document["content"]
    )
    assert member_post.attributed_to == alpha.actor_uri("ann")
