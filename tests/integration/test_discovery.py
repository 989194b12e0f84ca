"""Discovery and documents as other servers see them, over real HTTP on loopback.

WebFinger, host-meta, NodeInfo, actor documents with content negotiation, collections, posts,
our JSON-LD context, and what hidden, deleted and unknown names answer (research/ap-interop.md
§1.1-§1.3, §1.9, §3.1).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote
from xml.etree import ElementTree

import pytest
from multidict import CIMultiDictProxy
from sqlalchemy import select

from flattrfed.activitypub import signatures
from flattrfed.activitypub.actors import current_key
from flattrfed.activitypub.documents import FLATTR_NS
from flattrfed.activitypub.outbox import publish_post
from flattrfed.activitypub.remote import parse_actor
from flattrfed.db.models import LocalActor, Member, Post, Thing
from tests.harness.instances import Federation, Instance

AS_CONTEXT = "https://www.w3.org/ns/activitystreams"
ACTIVITY_JSON = "application/activity+json"
LD_JSON_AS = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
NODEINFO = "http://nodeinfo.diaspora.software/ns/schema/"
APPLICATION_REL = "https://www.w3.org/ns/activitystreams#Application"
XRD_NS = "{http://docs.oasis-open.org/ns/xri/xrd-1.0}"

# Accept headers that must get ActivityStreams JSON, and ones that must get the HTML page.
AP_ACCEPTS = [
    ACTIVITY_JSON,
    LD_JSON_AS,
    "application/activity+json, application/ld+json",  # what Mastodon sends
    'application/ld+json;profile="https://www.w3.org/ns/activitystreams", */*;q=0.1',
]
ACTORS = [("alice", "person"), ("blog", "thing")]
HTML_ACCEPTS = [
    "text/html",
    "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",  # a browser
    "*/*",
]


@dataclass(frozen=True)
class Answer:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";")[0].strip()

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode()


async def get(
    federation: Federation, url: str, accept: str | None = ACTIVITY_JSON, method: str = "GET"
) -> Answer:
    """One unsigned request, redirects not followed."""
    headers = {"Accept": accept} if accept is not None else {}
    async with federation.client().request(
        method, url, headers=headers, allow_redirects=False
    ) as response:
        return Answer(response.status, response.headers, await response.read())


def webfinger_url(instance: Instance, resource: str) -> str:
    return instance.url(f"/.well-known/webfinger?resource={quote(resource, safe='')}")


@pytest.fixture
async def alpha(federation: Federation) -> Instance:
    """alice (a member) with bio, her thing blog with a description, one post by blog."""
    instance = await federation.start("alpha")
    alice = await instance.create_member("alice")
    thing = await instance.create_thing(alice, "blog", "Alice's blog")
    async with instance.services.database.transaction() as session:
        member = await session.get(Member, alice.id)
        assert member is not None
        member.display_name, member.bio = "Alice A.", "Writes <things> & more"
        stored = await session.get(Thing, thing.id)
        assert stored is not None
        stored.description = "A blog about flattring"
        blog = await session.scalar(select(LocalActor).where(LocalActor.username == "blog"))
        assert blog is not None
        await publish_post(
            session, instance.services.urls, blog, "Hello fediverse", federation.clock.now()
        )
    return instance


async def first_post(instance: Instance) -> Post:
    async with instance.services.database.sessions() as session:
        post = await session.scalar(select(Post).order_by(Post.id))
    assert post is not None
    return post


async def alpha_member(instance: Instance) -> Member:
    async with instance.services.database.sessions() as session:
        member = await session.scalar(select(Member).where(Member.username == "alice"))
    assert member is not None
    return member


async def set_thing(instance: Instance, handle: str, **values: Any) -> None:
    async with instance.services.database.transaction() as session:
        actor = await session.scalar(select(LocalActor).where(LocalActor.username == handle))
        assert actor is not None
        assert actor.thing_id is not None
        thing = await session.get(Thing, actor.thing_id)
        assert thing is not None
        for name, value in values.items():
            setattr(thing, name, value)


# --- WebFinger ---------------------------------------------------------------------------------


async def test_webfinger_acct_for_members_and_things(
    federation: Federation, alpha: Instance
) -> None:
    for name, kind in ACTORS:
        answer = await get(federation, webfinger_url(alpha, f"acct:{name}@{alpha.host}"), None)
        assert answer.status == 200
        assert answer.content_type == "application/jrd+json"
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
        jrd = answer.json()
        actor_uri = alpha.actor_uri(name, kind)
        profile = alpha.url(f"/@{name}")
        assert jrd["subject"] == f"acct:{name}@{alpha.host}"
        assert set(jrd["aliases"]) == {actor_uri, profile}
        links = {link["rel"]: link for link in jrd["links"]}
        assert links["self"] == {"rel": "self", "type": ACTIVITY_JSON, "href": actor_uri}
        assert links["http://webfinger.net/rel/profile-page"]["href"] == profile
        assert links["http://webfinger.net/rel/profile-page"]["type"] == "text/html"
        template = links["http://ostatus.org/schema/1.0/subscribe"]["template"]
        assert template.startswith(alpha.base_url + "/")
        assert "{uri}" in template

        # Handles are case-insensitive, as on Mastodon.
        upper = await get(federation, webfinger_url(alpha, f"acct:{name.upper()}@{alpha.host}"))
        assert upper.status == 200
        assert upper.json()["subject"] == jrd["subject"]


async def test_webfinger_by_actor_url_and_profile_url(
    federation: Federation, alpha: Instance
) -> None:
    """Fedify looks URL handles up by the actor URL; the profile URL is our other alias."""
    for name, kind in ACTORS:
        for resource in (alpha.actor_uri(name, kind), alpha.url(f"/@{name}")):
            answer = await get(federation, webfinger_url(alpha, resource))
            assert answer.status == 200, resource
            jrd = answer.json()
            assert jrd["subject"] == f"acct:{name}@{alpha.host}"
            [self_link] = [link for link in jrd["links"] if link["rel"] == "self"]
            assert self_link["href"] == alpha.actor_uri(name, kind)


async def test_webfinger_finds_the_instance_actor_by_base_url(
    federation: Federation, alpha: Instance
) -> None:
    """FEP-d556: the server's own URL names its application actor."""
    for resource in (alpha.base_url, alpha.base_url + "/"):
        answer = await get(federation, webfinger_url(alpha, resource))
        assert answer.status == 200, resource
        jrd = answer.json()
        [self_link] = [link for link in jrd["links"] if link["rel"] == "self"]
        assert self_link == {"rel": "self", "type": ACTIVITY_JSON, "href": alpha.url("/actor")}
        assert jrd["subject"] == f"acct:alpha.test@{alpha.host}"


async def test_webfinger_unknown_resources_are_404_with_cors(
    federation: Federation, alpha: Instance
) -> None:
    for resource in (
        f"acct:nobody@{alpha.host}",
        "acct:alice@other.test",
        "acct:alice@alpha.test",  # our host without its port is another host
        f"acct:@{alpha.host}",
        alpha.url("/users/nobody"),
        alpha.url("/things/alice"),  # alice is a member, not a thing
        alpha.url("/@nobody"),
        "http://other.test/users/alice",
    ):
        answer = await get(federation, webfinger_url(alpha, resource), None)
        assert answer.status == 404, resource
        assert answer.headers["Access-Control-Allow-Origin"] == "*"
    missing = await get(federation, alpha.url("/.well-known/webfinger"), None)
    assert missing.status == 400
    assert missing.headers["Access-Control-Allow-Origin"] == "*"


# --- host-meta and NodeInfo --------------------------------------------------------------------


async def test_host_meta_points_to_webfinger(federation: Federation, alpha: Instance) -> None:
    answer = await get(federation, alpha.url("/.well-known/host-meta"), None)
    assert answer.status == 200
    assert answer.content_type == "application/xrd+xml"
    root = ElementTree.fromstring(answer.body)  # noqa: S314 - our own document
    assert root.tag == f"{XRD_NS}XRD"
    [link] = root.findall(f"{XRD_NS}Link")
    assert link.get("rel") == "lrdd"
    template = link.get("template")
    assert template == alpha.url("/.well-known/webfinger?resource={uri}")
    # Mastodon's fallback fills the template with the acct: URI.
    filled = template.replace("{uri}", quote(f"acct:blog@{alpha.host}", safe=""))
    assert (await get(federation, filled)).status == 200


async def test_nodeinfo_links_and_documents(federation: Federation, alpha: Instance) -> None:
    links = await get(federation, alpha.url("/.well-known/nodeinfo"), None)
    assert links.status == 200
    assert links.content_type == "application/json"
    by_rel = {link["rel"]: link["href"] for link in links.json()["links"]}
    assert by_rel[f"{NODEINFO}2.0"] == alpha.url("/nodeinfo/2.0")
    assert by_rel[f"{NODEINFO}2.1"] == alpha.url("/nodeinfo/2.1")
    assert by_rel[APPLICATION_REL] == alpha.url("/actor")  # FEP-2677

    for version in ("2.0", "2.1"):
        answer = await get(federation, by_rel[f"{NODEINFO}{version}"], None)
        assert answer.status == 200
        assert answer.headers["Content-Type"] == (
            f'application/json; profile="{NODEINFO}{version}#"'
        )
        info = answer.json()
        assert info["version"] == version
        assert info["software"]["name"] == "flattrfed"
        assert isinstance(info["software"]["version"], str)
        if version == "2.0":  # the 2.0 schema allows name and version only
            assert set(info["software"]) == {"name", "version"}
        assert info["protocols"] == ["activitypub"]
        assert info["services"] == {"inbound": [], "outbound": []}
        assert isinstance(info["openRegistrations"], bool)
        assert info["usage"]["users"]["total"] == 1  # alice; things are not users
        assert info["usage"]["localPosts"] == 1
        flattrfed = info["metadata"]["flattrfed"]
        assert flattrfed["protocolVersion"] == "flattrfed/1"
        assert flattrfed["clearingActor"] == alpha.url("/actor")
        assert flattrfed["currency"] == "EUR"


# --- actor documents ---------------------------------------------------------------------------


def assert_actor_basics(document: dict[str, Any], uri: str, alpha: Instance) -> None:
    """What Mastodon needs of an actor (§1.3), checked the way a peer reads it."""
    assert AS_CONTEXT in document["@context"]
    assert "https://w3id.org/security/v1" in document["@context"]
    assert document["id"] == uri
    for name in ("inbox", "outbox", "followers", "following"):
        assert document[name] == f"{uri}/{name}"
    assert document["endpoints"] == {"sharedInbox": alpha.url("/inbox")}
    key = document["publicKey"]
    assert key["id"] == f"{uri}#main-key"
    assert key["owner"] == document["id"]
    assert isinstance(signatures.load_public_key_pem(key["publicKeyPem"]), object)
    # Our own strict reader (what another flattrfed does with it) accepts it with the key.
    info = parse_actor(document, allow_http=True)
    assert info.keys == {key["id"]: key["publicKeyPem"]}


async def published_key(alpha: Instance, username: str) -> str:
    actor = await alpha.actor(username)
    async with alpha.services.database.sessions() as session:
        return (await current_key(session, actor.id)).public_key_pem


def payment_links(document: dict[str, Any]) -> list[dict[str, Any]]:
    links = []
    for item in document.get("attachment", []):
        rel = item.get("rel")
        rels = rel if isinstance(rel, list) else [rel]
        if item.get("type") == "Link" and "payment" in rels:
            links.append(item)
    return links


async def test_member_actor_document(federation: Federation, alpha: Instance) -> None:
    uri = alpha.actor_uri("alice")
    answer = await get(federation, uri)
    assert answer.status == 200
    assert answer.content_type == ACTIVITY_JSON
    document = answer.json()
    assert_actor_basics(document, uri, alpha)
    assert document["type"] == "Person"
    assert document["preferredUsername"] == "alice"
    assert document["name"] == "Alice A."
    assert document["summary"] == "<p>Writes &lt;things&gt; &amp; more</p>"  # bios are text
    assert document["url"] == alpha.url("/@alice")
    assert document["publicKey"]["publicKeyPem"] == await published_key(alpha, "alice")
    # FEP-0ea0: a payment link in attachment, plus a PropertyValue Mastodon shows people.
    [payment] = payment_links(document)
    assert payment["href"].startswith(alpha.base_url + "/")
    assert f"{FLATTR_NS}flattr" in payment["rel"]
    assert any(item["type"] == "PropertyValue" for item in document["attachment"])


async def test_thing_actor_document(federation: Federation, alpha: Instance) -> None:
    uri = alpha.actor_uri("blog", "thing")
    answer = await get(federation, uri, LD_JSON_AS)
    assert answer.status == 200
    assert answer.content_type == ACTIVITY_JSON
    document = answer.json()
    assert_actor_basics(document, uri, alpha)
    assert document["type"] == "Service"
    assert document["preferredUsername"] == "blog"
    assert document["name"] == "Alice's blog"
    assert document["summary"] == "<p>A blog about flattring</p>"
    assert document["url"] == alpha.url("/@blog")
    assert document["publicKey"]["publicKeyPem"] == await published_key(alpha, "blog")
    [payment] = payment_links(document)
    assert payment["href"].startswith(alpha.base_url + "/")


async def test_instance_actor_document_answers_unsigned_gets(
    federation: Federation, alpha: Instance
) -> None:
    uri = alpha.url("/actor")
    answer = await get(federation, uri)  # no Signature header at all
    assert answer.status == 200
    assert answer.content_type == ACTIVITY_JSON
    document = answer.json()
    assert_actor_basics(document, uri, alpha)
    assert document["type"] == "Application"
    assert document["preferredUsername"] == "alpha.test"
    assert document["name"]
    assert document["url"] == alpha.url("/")
    assert payment_links(document) == []


# --- content negotiation -----------------------------------------------------------------------


async def test_activitypub_accept_gets_json_with_vary(
    federation: Federation, alpha: Instance
) -> None:
    for name, kind in ACTORS:
        for accept in AP_ACCEPTS:
            answer = await get(federation, alpha.actor_uri(name, kind), accept)
            assert answer.status == 200, accept
            assert answer.content_type == ACTIVITY_JSON
            assert "Accept" in answer.headers.getall("Vary")
            assert answer.json()["id"] == alpha.actor_uri(name, kind)


async def test_html_accept_is_redirected_to_the_profile_page(
    federation: Federation, alpha: Instance
) -> None:
    for name, kind in ACTORS:
        for accept in HTML_ACCEPTS:
            answer = await get(federation, alpha.actor_uri(name, kind), accept)
            assert answer.status in (302, 303), accept
            assert answer.headers["Location"] == alpha.url(f"/@{name}")
            # The same URL answers JSON or a redirect: a cache must keep them apart.
            assert "Accept" in answer.headers.getall("Vary")
            page = await get(federation, answer.headers["Location"], accept)
            assert page.status == 200
            assert page.content_type == "text/html"
            assert f"@{name}@{alpha.host}" in page.text


async def test_profile_url_asked_for_activitypub_redirects_to_the_actor(
    federation: Federation, alpha: Instance
) -> None:
    """Mastodon's search fetches a pasted profile URL asking for JSON, following redirects."""
    for name, kind in ACTORS:
        for accept in AP_ACCEPTS:
            answer = await get(federation, alpha.url(f"/@{name}"), accept)
            assert answer.status == 302, accept
            assert answer.headers["Location"] == alpha.actor_uri(name, kind)
            assert "Accept" in answer.headers.getall("Vary")
    async with federation.client().get(
        alpha.url("/@blog"), headers={"Accept": ACTIVITY_JSON}
    ) as response:
        assert str(response.url) == alpha.actor_uri("blog", "thing")
        assert (await response.json(content_type=None))["id"] == str(response.url)


async def test_profile_pages_render(federation: Federation, alpha: Instance) -> None:
    page = await get(federation, alpha.url("/@blog"), "text/html")
    assert page.status == 200
    assert "Accept" in page.headers.getall("Vary")
    assert "Alice&#39;s blog" in page.text
    assert "A blog about flattring" in page.text
    assert "Hello fediverse" in page.text
    member = await get(federation, alpha.url("/@alice"), "text/html")
    assert member.status == 200
    assert "Writes &lt;things&gt; &amp; more" in member.text  # escaped, never raw HTML


# --- collections and posts ---------------------------------------------------------------------


@pytest.mark.parametrize(("name", "kind"), ACTORS)
async def test_collections_are_ordered_collections(
    federation: Federation, alpha: Instance, name: str, kind: str
) -> None:
    actor = (await get(federation, alpha.actor_uri(name, kind))).json()
    for collection in ("followers", "following", "outbox"):
        answer = await get(federation, actor[collection])
        assert answer.status == 200, collection
        assert answer.content_type == ACTIVITY_JSON
        document = answer.json()
        assert AS_CONTEXT in document["@context"]
        assert document["id"] == actor[collection]
        assert document["type"] == "OrderedCollection"
        assert isinstance(document["totalItems"], int)
    outbox = (await get(federation, actor["outbox"])).json()
    if name == "blog":
        post = await first_post(alpha)
        assert outbox["totalItems"] == 1
        [create] = outbox["orderedItems"]
        assert (create["type"], create["actor"], create["object"]) == (
            "Create",
            actor["id"],
            post.uri,
        )
    else:
        assert outbox["totalItems"] == 0


async def test_collection_ids_are_canonical_whatever_the_request_host(
    federation: Federation, alpha: Instance
) -> None:
    """Behind a proxy the request URL is not the public one; ids come from the base URL only."""
    port = alpha.host.rsplit(":", 1)[1]
    for collection in ("followers", "following", "outbox"):
        answer = await get(federation, f"http://127.0.0.1:{port}/things/blog/{collection}")
        assert answer.status == 200
        assert answer.json()["id"] == f"{alpha.actor_uri('blog', 'thing')}/{collection}"


async def test_a_post_url_serves_a_note(federation: Federation, alpha: Instance) -> None:
    post = await first_post(alpha)
    blog_uri = alpha.actor_uri("blog", "thing")
    answer = await get(federation, post.uri)
    assert answer.status == 200
    assert answer.content_type == ACTIVITY_JSON
    assert "Accept" in answer.headers.getall("Vary")
    note = answer.json()
    assert AS_CONTEXT in note["@context"]
    assert note["id"] == post.uri
    assert note["type"] == "Note"
    assert note["attributedTo"] == blog_uri
    assert note["content"] == "<p>Hello fediverse</p>"
    assert note["to"] == [PUBLIC]
    assert note["cc"] == [f"{blog_uri}/followers"]
    html = await get(federation, post.uri, "text/html")
    assert html.status == 302
    assert html.headers["Location"].startswith(alpha.url("/@blog"))
    assert "Accept" in html.headers.getall("Vary")


# --- our context -------------------------------------------------------------------------------


async def test_ns_serves_our_json_ld_context(federation: Federation, alpha: Instance) -> None:
    answer = await get(federation, alpha.url("/ns"), "application/ld+json")
    assert answer.status == 200
    assert answer.content_type == "application/ld+json"
    assert answer.headers["Access-Control-Allow-Origin"] == "*"
    context = answer.json()["@context"]
    assert context["flattr"] == FLATTR_NS
    assert context["Flattr"] == "flattr:Flattr"
    assert context["flattrPeriod"] == "flattr:period"
    assert context["flattrClearing"] == {"@id": "flattr:clearing", "@type": "@id"}
    # Served alone, the context must define every prefix its compact IRIs use.
    for term, definition in context.items():
        iri = definition["@id"] if isinstance(definition, dict) else definition
        prefix = iri.split(":", 1)[0]
        assert prefix in ("http", "https") or prefix in context, (term, iri)


# --- hidden, deleted and unknown ---------------------------------------------------------------


def thing_urls(alpha: Instance, handle: str, post_id: int) -> list[str]:
    uri = alpha.actor_uri(handle, "thing")
    return [
        uri,
        f"{uri}/followers",
        f"{uri}/following",
        f"{uri}/outbox",
        f"{uri}/posts/{post_id}",
        alpha.url(f"/@{handle}"),
    ]


@pytest.mark.parametrize("state", ["hidden", "deleted"])
async def test_hidden_and_deleted_things_are_404_everywhere(
    federation: Federation, alpha: Instance, state: str
) -> None:
    post = await first_post(alpha)
    if state == "hidden":
        await set_thing(alpha, "blog", hidden=True)
    else:
        await set_thing(alpha, "blog", deleted_at=federation.clock.now())
    for resource in (f"acct:blog@{alpha.host}", alpha.actor_uri("blog", "thing")):
        assert (await get(federation, webfinger_url(alpha, resource))).status == 404, resource
    for url in thing_urls(alpha, "blog", post.id):
        for accept in (ACTIVITY_JSON, "text/html"):
            # 404, never 410: Mastodon deletes its copy of an actor that answers 410.
            assert (await get(federation, url, accept)).status == 404, (url, accept)
    # The member and the instance are unaffected.
    assert (await get(federation, alpha.actor_uri("alice"))).status == 200


async def test_hidden_and_deleted_things_inboxes_are_404(
    federation: Federation, alpha: Instance
) -> None:
    await alpha.create_thing(await alpha_member(alpha), "old", "An old thing")
    await set_thing(alpha, "blog", hidden=True)
    await set_thing(alpha, "old", deleted_at=federation.clock.now())
    for handle in ("blog", "old"):
        async with federation.client().post(
            f"{alpha.actor_uri(handle, 'thing')}/inbox",
            data=b"{}",
            headers={"Content-Type": ACTIVITY_JSON},
        ) as response:
            assert response.status == 404, handle


async def test_unknown_names_are_404_everywhere(federation: Federation, alpha: Instance) -> None:
    base = alpha.base_url
    for url in [
        webfinger_url(alpha, f"acct:ghost@{alpha.host}"),
        f"{base}/users/ghost",
        f"{base}/things/ghost",
        f"{base}/users/blog",  # a thing under the members' path
        f"{base}/things/alice",  # a member under the things' path
        f"{base}/users/ghost/followers",
        f"{base}/things/ghost/outbox",
        f"{base}/things/ghost/posts/1",
        f"{base}/things/blog/posts/999",
        f"{base}/@ghost",
        f"{base}/@alpha.test",  # the instance actor has no profile page
    ]:
        for accept in (ACTIVITY_JSON, "text/html"):
            assert (await get(federation, url, accept)).status == 404, (url, accept)
    for inbox in (f"{base}/users/ghost/inbox", f"{base}/things/ghost/inbox"):
        async with federation.client().post(
            inbox, data=b"{}", headers={"Content-Type": ACTIVITY_JSON}
        ) as response:
            assert response.status == 404, inbox


async def test_live_actors_never_answer_410(federation: Federation, alpha: Instance) -> None:
    """On a 410 for an actor, Mastodon suspends and deletes its copy (and its follows)."""
    actors = [alpha.actor_uri("alice"), alpha.actor_uri("blog", "thing"), alpha.url("/actor")]
    urls = actors + [f"{uri}/{name}" for uri in actors[:2] for name in ("followers", "outbox")]
    for url in urls:
        for accept in [*AP_ACCEPTS, *HTML_ACCEPTS, None]:
            for method in ("GET", "HEAD"):
                answer = await get(federation, url, accept, method)
                assert answer.status in (200, 302), (url, accept, method, answer.status)
    # A thing hidden for a while is not gone: 404 while hidden, back to 200 afterwards.
    await set_thing(alpha, "blog", hidden=True)
    assert (await get(federation, actors[1])).status == 404
    federation.clock.advance(timedelta(days=1))
    await set_thing(alpha, "blog", hidden=False)
    assert (await get(federation, actors[1])).status == 200


async def test_the_instance_actors_collections_answer(
    federation: Federation, alpha: Instance
) -> None:
    for name in ("outbox", "followers", "following"):
        answer = await get(federation, alpha.url(f"/actor/{name}"))
        assert answer.status == 200, name
        assert answer.json()["id"] == alpha.url(f"/actor/{name}")


async def test_a_thing_shows_its_public_like_count(federation: Federation, alpha: Instance) -> None:
    from flattrfed.db.models import ReceivedLike

    thing_uri = alpha.actor_uri("blog", "thing")
    assert (await get(federation, thing_uri)).json()["likes"]["totalItems"] == 0
    async with alpha.services.database.transaction() as session:
        blog = await session.scalar(select(LocalActor).where(LocalActor.username == "blog"))
        assert blog is not None
        for number, undone in [(1, None), (2, federation.clock.now())]:
            session.add(
                ReceivedLike(
                    like_uri=f"https://m.example/users/x#likes/{number}",
                    actor_uri="https://m.example/users/x",
                    target_id=blog.id,
                    object_uri=thing_uri,
                    sender_host="m.example",
                    received_at=federation.clock.now(),
                    undone_at=undone,
                )
            )
    document = (await get(federation, thing_uri)).json()
    assert document["likes"] == {
        "id": f"{thing_uri}/likes",
        "type": "Collection",
        "totalItems": 1,
    }
    assert (await get(federation, f"{thing_uri}/likes")).json()["totalItems"] == 1
    assert "likes" not in (await get(federation, alpha.actor_uri("alice"))).json()


async def test_nodeinfo_follows_the_policy_an_admin_sets(
    federation: Federation, alpha: Instance
) -> None:
    from flattrfed.flattring.policy import update_policy

    async with alpha.services.database.transaction() as session:
        await update_policy(
            session,
            alpha.settings,
            federation.clock.now(),
            fee_bp=750,
            registration="closed",
            budget_min_minor=300,
            receiving_needs_budget=True,
        )
    document = (await get(federation, alpha.url("/nodeinfo/2.1"), accept=None)).json()
    advertised = document["metadata"]["flattrfed"]
    assert advertised["feeBasisPoints"] == 750
    assert advertised["registration"] == "closed"
    assert advertised["budgetMinMinor"] == "300"
    assert advertised["receivingNeedsBudget"] is True
    assert document["openRegistrations"] is False


async def test_the_instance_actor_publishes_its_proof_key_with_its_context(
    federation: Federation, alpha: Instance
) -> None:
    from flattrfed.settlement import proofs

    async with alpha.services.database.transaction() as session:
        key = await alpha.services.exchange.proof_key(session)
    document = (await get(federation, alpha.url("/actor"))).json()
    (method,) = document["assertionMethod"]
    assert method["id"] == key.verification_method
    assert method["controller"] == alpha.url("/actor")
    assert proofs.public_from_multikey(method["publicKeyMultibase"]).public_bytes_raw() == (
        key.private_key.public_key().public_bytes_raw()
    )
    assert "https://w3id.org/security/multikey/v1" in document["@context"]


async def test_a_things_image_is_its_actor_icon(federation: Federation, alpha: Instance) -> None:
    await set_thing(alpha, "blog", image_url="https://img.example/blog.png")
    document = (await get(federation, alpha.actor_uri("blog", "thing"))).json()
    assert document["icon"] == {"type": "Image", "url": "https://img.example/blog.png"}
