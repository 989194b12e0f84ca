"""The embeddable button (iframe page, SVG badge) and remote interaction across real instances."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from urllib.parse import quote, unquote

import pytest

from tests.fakes.plain import PlainServer
from tests.harness.instances import Federation, Instance
from tests.integration.test_web_support import Visitors


def figure(text: str, name: str) -> str:
    match = re.search(rf'id="{name}">([^<]*)<', text)
    assert match is not None, name
    return match.group(1)


async def zine_on(instance: Instance, title: str = "Bob's bike zine") -> None:
    bob = await instance.create_member("bob")
    await instance.create_thing(bob, "zine", title)


async def test_the_widget_is_framable_and_every_other_page_is_not(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    await zine_on(alpha)
    browser = visitors(alpha)

    widget = await browser.get("/@zine/widget")
    assert widget.status == 200
    policy = widget.headers["Content-Security-Policy"]
    assert "frame-ancestors *" in policy
    assert "script-src" not in policy
    assert "default-src 'none'" in policy
    assert "X-Frame-Options" not in widget.headers
    assert widget.headers["Cache-Control"] == "public, max-age=300"
    assert "Set-Cookie" not in widget.headers  # no session: nothing to leak to the framing site
    assert "<form" not in widget.text
    assert "<script" not in widget.text
    assert f'href="{alpha.url("/@zine/interact")}" target="_top"' in widget.text
    assert figure(widget.text, "widget-count") == "0"

    for path in ("/", "/@zine", "/@bob", "/@zine/interact", "/discover", "/login"):
        page = await browser.get(path)
        assert page.status == 200, path
        assert page.headers["X-Frame-Options"] == "DENY", path
        assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"], path


async def test_the_svg_badge_counts_this_month_escapes_the_title_and_references_nothing(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    await zine_on(alpha, title='Zine </title><script>alert(1)</script> & "co"')
    ann = await alpha.create_donor("ann", budget=1000, deposit=1000)
    await alpha.flattr(ann, f"@zine@{alpha.host}")
    async with federation.client().get(alpha.url("/@zine/button.svg")) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("image/svg+xml")
        assert response.headers["Cache-Control"] == "public, max-age=300"
        assert "Set-Cookie" not in response.headers
        body = await response.text()
    # Our own answer, over loopback: parsing it proves the title cannot break out of <title>.
    root = ET.fromstring(body)  # noqa: S314
    assert "<script" not in body
    texts = [element.text for element in root.iter("{http://www.w3.org/2000/svg}text")]
    assert texts == ["Flattr", "1"]
    title = root.find("{http://www.w3.org/2000/svg}title")
    assert title is not None
    assert title.text is not None
    assert 'Zine </title><script>alert(1)</script> & "co"' in title.text
    assert "1 flattr this month" in title.text
    assert "href" not in body
    assert "url(" not in body
    assert "<image" not in body


@pytest.mark.parametrize("path", ["/@{}/widget", "/@{}/button.svg", "/@{}/interact"])
async def test_embeds_of_unknown_hidden_or_person_handles_are_not_found(
    federation: Federation, visitors: Visitors, path: str
) -> None:
    alpha = await federation.start("alpha")
    await zine_on(alpha)
    bob = await alpha.create_member("carol")
    hidden = await alpha.create_thing(bob, "secret", "Hidden thing")
    async with alpha.services.database.transaction() as session:
        row = await session.merge(hidden)
        row.hidden = True
    browser = visitors(alpha)
    assert (await browser.get(path.format("zine"))).status == 200
    for name in ("nobody", "secret", "bob"):
        assert (await browser.get(path.format(name))).status == 404, name


async def test_a_visitor_from_another_instance_flattrs_through_their_own_instance(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    beta = await federation.start("beta")
    await beta.peer_with(alpha)
    await alpha.peer_with(beta)
    await zine_on(alpha)
    await beta.create_donor("bobby", budget=1000, deposit=2000)
    thing_uri = alpha.actor_uri("zine", "thing")

    # Anonymous on alpha: the interact page gives a CSRF token to the anonymous session.
    stranger = visitors(alpha)
    page = await stranger.get("/@zine/interact")
    assert page.status == 200
    assert page.has("Bob's bike zine")
    assert 'href="/flattr?uri=' in page.text  # "Flattr on this instance"
    sent = await stranger.post(
        "/@zine/interact", {"csrf_token": page.csrf(), "handle": f"@bobby@{beta.host}"}
    )
    assert sent.status == 303
    expected = beta.url(f"/authorize_interaction?uri={quote(thing_uri, safe='')}")
    assert sent.location == expected
    cookie = sent.headers["Set-Cookie"]
    assert "flattrfed_remote_handle=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain http in the test federation
    # Next time the field is filled in.
    again = await stranger.get("/@zine/interact")
    assert f'value="@bobby@{beta.host}"' in again.text

    # On beta, logged in: Mastodon's path leads to the Flattr page, where one POST flattrs.
    home = visitors(beta)
    await home.log_in("bobby")
    landing = await home.get(sent.location[len(beta.base_url) :])
    assert landing.status == 200
    assert landing.url == beta.url(f"/flattr?uri={quote(thing_uri, safe='')}") or unquote(
        landing.url
    ) == beta.url(f"/flattr?uri={thing_uri}")
    assert landing.has("Bob's bike zine")
    assert figure(landing.text, "target-instance") == alpha.host
    done = await home.post("/flattr", {"csrf_token": landing.csrf(), "uri": thing_uri})
    assert done.status == 303
    assert done.location == "/dashboard?msg=flattred"

    await federation.step_workers()
    thing_page = await visitors(alpha).get("/@zine")
    assert figure(thing_page.text, "flattrs-this-month") == "1"
    assert figure(thing_page.text, "flattrs-all-time") == "1"
    widget = await visitors(alpha).get("/@zine/widget")
    assert figure(widget.text, "widget-count") == "1"


async def test_our_webfinger_advertises_the_interaction_template_and_the_alias_works(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    await zine_on(alpha)
    async with federation.client().get(
        alpha.url("/.well-known/webfinger"), params={"resource": f"acct:zine@{alpha.host}"}
    ) as response:
        document = await response.json(content_type=None)
    (link,) = [
        item
        for item in document["links"]
        if item["rel"] == "http://ostatus.org/schema/1.0/subscribe"
    ]
    assert link["template"] == alpha.url("/authorize_interaction?uri={uri}")
    alias = await visitors(alpha).get("/authorize_interaction?uri=x%26y", follow=False)
    assert alias.status == 302
    assert alias.location == "/flattr?uri=x%26y"
    bare = await visitors(alpha).get("/authorize_interaction", follow=False)
    assert bare.location == "/flattr"


async def test_a_handle_on_this_instance_goes_straight_to_the_flattr_page(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    await zine_on(alpha)
    browser = visitors(alpha)
    page = await browser.get("/@zine/interact")
    sent = await browser.post(
        "/@zine/interact", {"csrf_token": page.csrf(), "handle": f"ann@{alpha.host}"}
    )
    assert sent.status == 303
    thing_uri = alpha.actor_uri("zine", "thing")
    assert (
        sent.location == f"/flattr?uri={quote(thing_uri, safe=':/')}"
        or unquote(sent.location) == f"/flattr?uri={thing_uri}"
    )


@pytest.mark.parametrize(
    ("handle", "status", "message"),
    [
        ("not a handle", 400, "That is not a fediverse handle"),
        ("@a@" + "b" * 600, 400, "That handle is too long"),
        ("@x@10.0.0.7", 400, "is a private or reserved address"),
        ("@x@private.test", 400, "is a private or reserved address"),
        ("@x@nowhere.test", 502, "Could not reach nowhere.test"),
        ("@nobody@{beta}", 502, "does not know @nobody@"),
        ("@dave@{plain}", 502, "does not offer interaction from other servers"),
    ],
)
async def test_interaction_errors_are_readable_pages(
    federation: Federation,
    visitors: Visitors,
    plain: PlainServer,
    handle: str,
    status: int,
    message: str,
) -> None:
    alpha = await federation.start("alpha")
    beta = await federation.start("beta")
    federation.resolver.add("private.test", "192.168.7.7")
    await zine_on(alpha)
    browser = visitors(alpha)
    page = await browser.get("/@zine/interact")
    answer = await browser.post(
        "/@zine/interact",
        {"csrf_token": page.csrf(), "handle": handle.format(beta=beta.host, plain=plain.host)},
    )
    assert answer.status == status, answer.text[:400]
    assert answer.headers["Content-Type"].startswith("text/html")
    assert answer.has(message), answer.text
    assert 'role="alert"' in answer.text
    assert "Traceback" not in answer.text
    assert "Set-Cookie" not in answer.headers or "flattrfed_remote_handle" not in str(
        answer.headers.getall("Set-Cookie", [])
    )


async def test_the_interaction_form_needs_its_csrf_token(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    await zine_on(alpha)
    browser = visitors(alpha)
    await browser.get("/@zine/interact")
    refused = await browser.post("/@zine/interact", {"handle": "@bob@beta.test"})
    assert refused.status == 403


async def test_a_blocked_domain_is_refused_without_contacting_it(
    federation: Federation, visitors: Visitors
) -> None:
    from flattrfed.activitypub.hosts import block_domain

    alpha = await federation.start("alpha")
    beta = await federation.start("beta")
    await zine_on(alpha)
    async with alpha.services.database.transaction() as session:
        await block_domain(session, "beta.test", "spam", alpha.services.clock.now())
    browser = visitors(alpha)
    page = await browser.get("/@zine/interact")
    before = len(federation.resolver.lookups)
    answer = await browser.post(
        "/@zine/interact", {"csrf_token": page.csrf(), "handle": f"@x@{beta.host}"}
    )
    assert answer.status == 400
    assert answer.has(f"does not federate with {beta.host}")
    assert "beta.test" not in federation.resolver.lookups[before:]
