"""The member pages over real HTTP: dashboard figures, the thing page's button, Flattr anything."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select

from flattrfed.activitypub.outbox import publish_post
from flattrfed.db.models import Flattr, Member, Thing
from tests.fakes.plain import PlainServer
from tests.harness.instances import Federation
from tests.integration.test_web_support import Visitors


def figure(text: str, name: str) -> str:
    match = re.search(rf'id="{name}">([^<]*)<', text)
    assert match is not None, name
    return match.group(1)


async def flattrs_of(federation: Federation, name: str, member: Member) -> list[Flattr]:
    instance = federation.instances[name]
    async with instance.services.database.sessions() as session:
        rows = await session.scalars(
            select(Flattr).where(Flattr.donor_id == member.id).order_by(Flattr.id)
        )
        return list(rows.all())


async def test_the_dashboard_shows_money_shares_carry_and_history(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha", fee_bp=0)
    bob = await alpha.create_member("bob")
    for handle in ("one", "two", "three"):
        await alpha.create_thing(bob, handle, f"Thing {handle}")
    ann = await alpha.create_donor("ann", budget=1000, deposit=2500)
    for handle in ("one", "two", "three"):
        await alpha.flattr(ann, f"@{handle}@{alpha.host}")

    browser = visitors(alpha)
    await browser.log_in("ann")
    page = await browser.get("/dashboard")
    assert page.status == 200
    assert figure(page.text, "figure-wallet") == "25.00 EUR"
    assert figure(page.text, "figure-budget") == "10.00 EUR"
    assert figure(page.text, "figure-planned") == "10.00 EUR"  # min(budget, wallet)
    assert figure(page.text, "figure-deposited") == "25.00 EUR"
    assert figure(page.text, "figure-earnings-pending") == "0.00 EUR"
    assert figure(page.text, "figure-earnings-available") == "0.00 EUR"
    assert figure(page.text, "split-share") == "3.33 EUR"  # 10.00 / 3
    assert figure(page.text, "split-carry") == "0.01 EUR"
    assert figure(page.text, "split-fee") == "0.00 EUR"
    flattr_table = page.text[page.text.index('id="flattrs"') : page.text.index("</table>")]
    assert flattr_table.count("3.33 EUR") == 3
    for handle in ("one", "two", "three"):
        assert f'href="{alpha.url("/@" + handle)}">Thing {handle}</a>' in flattr_table
    assert flattr_table.count("/undo") == 3
    history = page.text[page.text.index('id="history"') :]
    assert "2026-11" in history

    # The same member after the month closed: November's spending is in the history.
    federation.clock.set(datetime(2026, 12, 2, 1, tzinfo=UTC))
    await federation.step_workers()
    page = await browser.get("/dashboard")
    assert figure(page.text, "figure-wallet") == "15.01 EUR"  # 25.00 - 3 x 3.33
    history = page.text[page.text.index('id="history"') :]
    start = history.index("2026-11")
    row = history[start : history.index("</tr>", start)]
    assert "9.99 EUR" in row  # spent: 3 x 3.33
    assert "3.33 EUR" in row
    assert "0.01 EUR" in row
    assert "You have not flattred anything this month yet." in page.text


async def test_the_thing_page_counts_flattrs_and_flattrs_and_undoes(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    bob = await alpha.create_member("bob")
    thing = await alpha.create_thing(bob, "zine", "Bob's zine")
    async with alpha.services.database.transaction() as session:
        row = await session.get(Thing, thing.id)
        assert row is not None
        row.description = "A zine about <bikes>."
        row.external_url = "https://zine.example/"
        post = await publish_post(
            session,
            alpha.services.urls,
            await alpha.actor("zine"),
            "Issue 1 is out",
            row.created_at,
        )
        post_uri = post.uri
    ann = await alpha.create_donor("ann", budget=500, deposit=500)

    anonymous = visitors(alpha)
    page = await anonymous.get("/@zine")
    assert page.status == 200
    assert page.has("Bob's zine")
    assert "A zine about &lt;bikes&gt;." in page.text  # the description, escaped once
    assert "<p>Issue 1 is out</p>" in page.text  # its posts
    assert 'href="https://zine.example/"' in page.text
    assert 'href="/@bob"' in page.text  # the owner
    assert figure(page.text, "flattrs-this-month") == "0"
    assert figure(page.text, "flattrs-all-time") == "0"
    assert f"@zine@{alpha.host}" in page.text  # how to follow it from Mastodon
    assert 'action="/flattr"' in page.text
    # Not logged in: the button leads to the log-in page, and back to the flattr.
    pressed = await anonymous.post(
        "/flattr",
        {"csrf_token": page.csrf(), "uri": alpha.actor_uri("zine", "thing"), "next": "/@zine"},
    )
    assert pressed.status == 303
    assert pressed.location.startswith("/login?next=")
    after_login = parse_qs(urlsplit(pressed.location).query)["next"][0]
    assert after_login == "/flattr?uri=" + alpha.actor_uri("zine", "thing")

    browser = visitors(alpha)
    await browser.log_in("ann")
    page = await browser.get("/@zine")
    pressed = await browser.post(
        "/flattr",
        {"csrf_token": page.csrf(), "uri": alpha.actor_uri("zine", "thing"), "next": "/@zine"},
    )
    assert pressed.status == 303
    assert pressed.location == "/@zine?msg=flattred"
    page = await browser.get(pressed.location)
    assert page.has("Flattred.")
    assert figure(page.text, "flattrs-this-month") == "1"
    assert figure(page.text, "flattrs-all-time") == "1"
    (flattr,) = await flattrs_of(federation, "alpha", ann)
    assert f'action="/flattrs/{flattr.id}/undo"' in page.text
    assert 'class="flattr"' not in page.text

    undone = await browser.post(
        f"/flattrs/{flattr.id}/undo", {"csrf_token": page.csrf(), "next": "/@zine"}
    )
    assert undone.status == 303
    page = await browser.get(undone.location)
    assert figure(page.text, "flattrs-this-month") == "0"
    assert 'class="flattr"' in page.text

    # A post's address flattrs its thing (one flattr per thing and month).
    page = await browser.get("/flattr", uri=post_uri)
    assert page.status == 200
    assert page.has("Bob's zine")
    pressed = await browser.post("/flattr", {"csrf_token": page.csrf(), "uri": post_uri})
    assert pressed.status == 303
    page = await browser.get("/@zine")
    assert figure(page.text, "flattrs-this-month") == "1"
    assert figure(page.text, "flattrs-all-time") == "1"  # the undone one does not count

    owner = visitors(alpha)
    await owner.log_in("bob")
    page = await owner.get("/@zine")
    assert page.has("This is your thing")
    assert 'class="flattr"' not in page.text


async def test_member_profiles_stay_as_they_were(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    await alpha.create_member("bob")
    page = await visitors(alpha).get("/@bob")
    assert page.status == 200
    assert f"@bob@{alpha.host}" in page.text
    assert 'id="flattrs-this-month"' not in page.text
    assert 'class="flattr"' not in page.text


async def test_flattr_anything_resolves_a_thing_on_another_instance(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    beta = await federation.start("beta")
    await alpha.peer_with(beta)
    dave = await beta.create_member("dave")
    await beta.create_thing(dave, "pod", "Dave's podcast")
    ann = await alpha.create_donor("ann", budget=1000, deposit=1000)
    browser = visitors(alpha)
    await browser.log_in("ann")

    page = await browser.get("/flattr", uri=f"@pod@{beta.host}")
    assert page.status == 200
    assert page.has("Dave's podcast")
    assert figure(page.text, "target-instance") == beta.host
    assert "payable" in page.text
    confirm = await browser.post(
        "/flattr", {"csrf_token": page.csrf(), "uri": f"@pod@{beta.host}", "next": "/dashboard"}
    )
    assert confirm.status == 303
    assert confirm.location == "/dashboard?msg=flattred"
    (row,) = await flattrs_of(federation, "alpha", ann)
    assert row.status == "payable"
    assert row.target_uri == beta.actor_uri("pod", "thing")
    await federation.step_workers()
    # The Like reached beta: its thing page counts it.
    thing_page = await visitors(beta).get("/@pod")
    assert figure(thing_page.text, "flattrs-this-month") == "1"

    again = await browser.get("/flattr", uri=f"@pod@{beta.host}")
    assert again.has("You flattred this in 2026-11")
    twice = await browser.post("/flattr", {"csrf_token": again.csrf(), "uri": f"@pod@{beta.host}"})
    assert twice.status == 400
    assert twice.has("You already flattred this in this month")

    dashboard = await browser.get("/dashboard")
    assert dashboard.has("Dave's podcast")
    assert figure(dashboard.text, "split-share") == "10.00 EUR"


async def test_flattr_anything_marks_a_plain_fediverse_author_pending(
    federation: Federation, visitors: Visitors, plain: PlainServer
) -> None:
    alpha = await federation.start("alpha")
    ann = await alpha.create_donor("ann", budget=1000, deposit=1000)
    browser = visitors(alpha)
    await browser.log_in("ann")
    status_uri = plain.status_uri("dave", 7)
    page = await browser.get("/flattr", uri=status_uri)
    assert page.status == 200
    assert figure(page.text, "target-author") == "Dave"
    assert figure(page.text, "target-instance") == plain.host
    assert "pending" in page.text
    confirm = await browser.post("/flattr", {"csrf_token": page.csrf(), "uri": status_uri})
    assert confirm.status == 303
    assert confirm.location == "/dashboard?msg=flattred-pending"
    (row,) = await flattrs_of(federation, "alpha", ann)
    assert row.status == "pending"
    dashboard = await browser.get(confirm.location)
    assert 'id="pending"' in dashboard.text
    assert "a post by Dave" in dashboard.text
    assert dashboard.has("It is pending until its creator joins flattrfed")


async def test_flattr_anything_explains_what_cannot_be_flattred(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    bob = await alpha.create_member("bob")
    await alpha.create_thing(bob, "zine", "Bob's zine")
    await alpha.create_member("nobudget")
    await alpha.create_donor("ann", budget=1000, deposit=1000)
    browser = visitors(alpha)
    await browser.log_in("ann")
    for text, message in [
        ("not a thing at all", "give a fediverse URL"),
        (f"@bob@{alpha.host}", "only things can be flattred here"),
        (f"@missing@{alpha.host}", "does not exist here"),
    ]:
        page = await browser.get("/flattr", uri=text)
        assert page.status == 400, text
        assert message.lower() in page.text.lower(), (text, message)
        assert 'class="flattr"' not in page.text

    owner = visitors(alpha)
    await owner.log_in("bob")
    page = await owner.get("/flattr", uri=f"@zine@{alpha.host}")
    assert page.has("This is yours")
    refused = await owner.post("/flattr", {"csrf_token": page.csrf(), "uri": f"@zine@{alpha.host}"})
    assert refused.status == 400
    assert refused.has("You cannot flattr your own thing")

    broke = visitors(alpha)
    await broke.log_in("nobudget")
    page = await broke.get("/flattr", uri=f"@zine@{alpha.host}")
    assert page.has("monthly budget")
    refused = await broke.post("/flattr", {"csrf_token": page.csrf(), "uri": f"@zine@{alpha.host}"})
    assert refused.status == 400
    assert refused.has("Set a monthly budget before flattring")


async def test_the_payment_link_leads_to_the_flattr_page(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    bob = await alpha.create_member("bob")
    await alpha.create_thing(bob, "zine", "Bob's zine")
    await alpha.create_donor("ann", budget=1000, deposit=1000)
    anonymous = visitors(alpha)
    link = await anonymous.get("/@zine/flattr", follow=False)
    assert link.status == 302
    assert link.location == "/flattr?uri=" + alpha.actor_uri("zine", "thing")
    assert (await anonymous.get("/@nobody/flattr", follow=False)).status == 404
    # Following it anonymously leads to the log-in page and then back to the flattr page.
    page = await anonymous.get("/@zine/flattr")
    assert page.url.startswith(alpha.url("/login?next="))
    login = await anonymous.post(
        "/login",
        {
            "csrf_token": page.csrf(),
            "username": "ann",
            "password": "correct horse battery",
            "next": parse_qs(urlsplit(page.url).query)["next"][0],
        },
        follow=True,
    )
    assert login.status == 200
    assert login.has("Flattr Bob's zine")
