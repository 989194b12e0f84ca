"""The public pages over real HTTP: front page, thing and member profiles, Discover."""

from __future__ import annotations

import html
import re
from datetime import timedelta

from flattrfed.activitypub.outbox import publish_post
from flattrfed.db.models import Member, Thing
from flattrfed.flattring.policy import update_policy
from tests.harness.instances import Federation, Instance
from tests.integration.test_web_support import Visitors


def figure(text: str, name: str) -> str:
    match = re.search(rf'id="{name}">([^<]*)<', text)
    assert match is not None, name
    return match.group(1)


def listed(text: str, list_id: str) -> list[str]:
    """The thing handles linked in the list `list_id`, in order."""
    start = text.index(f'id="{list_id}"')
    end = text.index("</ul>", start)
    return re.findall(r'href="[^"]*/@([a-z0-9_]+)"', text[start:end])


async def post(instance: Instance, handle: str, text: str) -> None:
    async with instance.services.database.transaction() as session:
        await publish_post(
            session,
            instance.services.urls,
            await instance.actor(handle),
            text,
            instance.services.clock.now(),
        )


async def set_hidden(instance: Instance, thing: Thing, hidden: bool = True) -> None:
    async with instance.services.database.transaction() as session:
        row = await session.get(Thing, thing.id)
        assert row is not None
        row.hidden = hidden


async def test_the_front_page_shows_the_live_fee_and_lists_things_by_this_months_flattrs(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha", fee_bp=250, instance_name="Bike Commons")
    bob = await alpha.create_member("bob")
    things = {}
    for handle in ("hot", "warm", "cold", "hidden"):
        things[handle] = await alpha.create_thing(bob, handle, f"Thing {handle}")
    await set_hidden(alpha, things["hidden"])
    donors = [await alpha.create_donor(f"d{i}", budget=500, deposit=500) for i in range(4)]
    for donor in donors:
        await alpha.flattr(donor, f"@hot@{alpha.host}")
    for donor in donors[:2]:
        await alpha.flattr(donor, f"@warm@{alpha.host}")
    # An admin changes the fee after the instance started: the page shows the live policy.
    async with alpha.services.database.transaction() as session:
        await update_policy(
            session, alpha.services.settings, alpha.services.clock.now(), fee_bp=375
        )

    page = await visitors(alpha).get("/")
    assert page.status == 200
    assert "<h1>Bike Commons</h1>" in page.text
    assert figure(page.text, "instance-fee") == "3.75 %"
    assert figure(page.text, "instance-currency") == "EUR"
    assert listed(page.text, "popular") == ["hot", "warm"]
    assert "4 flattrs this month" in page.text
    # Fewer than three this month, newest first; the hidden thing is nowhere.
    assert listed(page.text, "needing-support") == ["cold", "warm"]
    assert "hidden" not in listed(page.text, "popular") + listed(page.text, "needing-support")
    assert 'href="/signup"' in page.text
    assert 'href="/login"' in page.text

    # Next month the counts start again: nothing is popular, everything needs support.
    federation.clock.advance(timedelta(days=20))
    later = await visitors(alpha).get("/")
    assert 'id="popular"' not in later.text
    assert later.has("Nothing has been flattred this month yet.")
    assert listed(later.text, "needing-support") == ["cold", "warm", "hot"]


async def test_the_thing_page_offers_copy_ready_embeds_and_remote_flattring(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    bob = await alpha.create_member("bob")
    await alpha.create_thing(bob, "zine", 'Bob\'s "bike" <zine>')
    page = await visitors(alpha).get("/@zine")
    assert page.status == 200
    assert '<label for="embed-iframe">' in page.text
    assert '<label for="embed-image">' in page.text
    iframe = re.search(r'<textarea id="embed-iframe"[^>]*>([^<]*)</textarea>', page.text)
    image = re.search(r'<textarea id="embed-image"[^>]*>([^<]*)</textarea>', page.text)
    assert iframe is not None
    assert image is not None
    # What a visitor copies (the textarea's text) is working HTML for their page.
    assert html.unescape(iframe.group(1)) == (
        f'<iframe src="{alpha.url("/@zine/widget")}" '
        'title="Flattr Bob\'s &quot;bike&quot; &lt;zine&gt;" width="220" height="64" '
        'style="border:0"></iframe>'
    )
    assert html.unescape(image.group(1)) == (
        f'<a href="{alpha.url("/@zine/interact")}">'
        f'<img src="{alpha.url("/@zine/button.svg")}" alt="Flattr this"></a>'
    )
    assert "readonly" in page.text
    assert 'href="/@zine/interact"' in page.text  # anonymous: flattr from your own instance
    assert figure(page.text, "flattrs-this-month") == "0"
    assert figure(page.text, "flattrs-all-time") == "0"


async def test_counts_on_the_thing_page_split_this_month_from_all_time_and_skip_undone(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    bob = await alpha.create_member("bob")
    await alpha.create_thing(bob, "zine", "Zine")
    ann = await alpha.create_donor("ann", budget=500, deposit=500)
    cat = await alpha.create_donor("cat", budget=500, deposit=500)
    await alpha.flattr(ann, f"@zine@{alpha.host}")
    federation.clock.advance(timedelta(days=20))  # into December
    await alpha.flattr(ann, f"@zine@{alpha.host}")
    undone = await alpha.flattr(cat, f"@zine@{alpha.host}")
    browser = visitors(alpha)
    await browser.log_in("cat")
    form = await browser.get("/@zine")
    assert figure(form.text, "flattrs-this-month") == "2"
    undo = await browser.post(
        f"/flattrs/{undone.id}/undo", {"csrf_token": form.csrf(), "next": "/@zine"}
    )
    assert undo.status == 303
    page = await browser.get("/@zine")
    assert figure(page.text, "flattrs-this-month") == "1"
    assert figure(page.text, "flattrs-all-time") == "2"


async def test_a_member_page_lists_their_things_and_public_flattrs_unless_private(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    bob = await alpha.create_member("bob")
    await alpha.create_thing(bob, "zine", "Bob's zine")
    gone = await alpha.create_thing(bob, "old", "Old hidden zine")
    ann = await alpha.create_donor("ann", budget=500, deposit=500)
    await alpha.create_thing(ann, "annpod", "Ann's podcast")
    await alpha.flattr(ann, f"@zine@{alpha.host}")
    await alpha.flattr(ann, f"@old@{alpha.host}")
    await set_hidden(alpha, gone)

    page = await visitors(alpha).get("/@ann")
    assert page.status == 200
    assert listed(page.text, "member-things") == ["annpod"]
    assert listed(page.text, "public-flattrs") == ["zine"]
    assert "Old hidden zine" not in page.text
    bob_page = await visitors(alpha).get("/@bob")
    assert listed(bob_page.text, "member-things") == ["zine"]  # the hidden one is not shown

    async with alpha.services.database.transaction() as session:
        row = await session.get(Member, ann.id)
        assert row is not None
        row.flattrs_public = False
    private = await visitors(alpha).get("/@ann")
    assert 'id="public-flattrs"' not in private.text
    assert 'id="flattrs-private"' in private.text
    assert "Bob's zine" not in private.text


async def test_a_member_can_make_their_flattrs_private_in_settings(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    bob = await alpha.create_member("bob")
    await alpha.create_thing(bob, "zine", "Bob's zine")
    ann = await alpha.create_donor("ann", budget=500, deposit=500)
    await alpha.flattr(ann, f"@zine@{alpha.host}")
    browser = visitors(alpha)
    await browser.log_in("ann")
    settings = await browser.get("/settings")
    assert 'name="flattrs_public"' in settings.text
    saved = await browser.post(
        "/settings/profile",
        {
            "csrf_token": settings.csrf(),
            "display_name": "Ann",
            "bio": "",
            "flattrs_public_shown": "1",
        },
    )
    assert saved.status == 303
    assert 'id="flattrs-private"' in (await visitors(alpha).get("/@ann")).text
    again = await browser.get("/settings")
    saved = await browser.post(
        "/settings/profile",
        {
            "csrf_token": again.csrf(),
            "display_name": "Ann",
            "bio": "",
            "flattrs_public_shown": "1",
            "flattrs_public": "on",
        },
    )
    assert saved.status == 303
    assert listed((await visitors(alpha).get("/@ann")).text, "public-flattrs") == ["zine"]


async def test_discover_shows_posts_of_flattred_things_to_members_and_the_public_part_to_all(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    bob = await alpha.create_member("bob")
    await alpha.create_thing(bob, "zine", "Bob's zine")
    await alpha.create_thing(bob, "pod", "Bob's podcast")
    hidden = await alpha.create_thing(bob, "secret", "Secret thing")
    await post(alpha, "zine", "Zine issue 2 is out")
    await post(alpha, "pod", "Podcast episode 9")
    await post(alpha, "secret", "Nobody should see this")
    await set_hidden(alpha, hidden)
    ann = await alpha.create_donor("ann", budget=500, deposit=500)
    await alpha.flattr(ann, f"@zine@{alpha.host}")

    anonymous = await visitors(alpha).get("/discover")
    assert anonymous.status == 200
    assert 'id="my-feed' not in anonymous.text
    assert listed(anonymous.text, "new-things") == ["pod", "zine"]
    assert "Zine issue 2 is out" in anonymous.text
    assert "Podcast episode 9" in anonymous.text
    assert "Nobody should see this" not in anonymous.text
    assert 'href="/discover" aria-current="page"' in anonymous.text

    browser = visitors(alpha)
    await browser.log_in("ann")
    page = await browser.get("/discover")
    start = page.text.index('id="my-feed"')
    feed = page.text[start : page.text.index("</section>", start)]
    assert "Zine issue 2 is out" in feed
    assert "Podcast episode 9" not in feed
    assert "Nobody should see this" not in page.text

    cat = visitors(alpha)
    await alpha.create_member("cat")
    await cat.log_in("cat")
    empty = await cat.get("/discover")
    assert 'id="my-feed-empty"' in empty.text


async def test_members_follow_local_members_and_things_and_see_them_in_discover(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    bob = await alpha.create_member("bob")
    carol = await alpha.create_member("carol")
    await alpha.create_thing(bob, "pod", "Bob's podcast")
    await alpha.create_thing(carol, "comic", "Carol's comic")
    hidden = await alpha.create_thing(bob, "secret", "Secret thing")
    await set_hidden(alpha, hidden)
    await post(alpha, "pod", "Podcast episode 9")
    await post(alpha, "comic", "A new strip")
    await alpha.create_member("ann")
    browser = visitors(alpha)
    await browser.log_in("ann")

    page = await browser.get("/@pod")
    assert 'action="/@pod/follow"' in page.text
    followed = await browser.post("/@pod/follow", {"csrf_token": page.csrf()})
    assert followed.status == 303
    assert followed.location == "/@pod?msg=followed"
    again = await browser.post("/@pod/follow", {"csrf_token": page.csrf()})  # idempotent
    assert again.status == 303
    now = await browser.get("/@pod")
    assert 'action="/@pod/unfollow"' in now.text
    assert "1 follower across the fediverse" in now.text
    carol_page = await browser.get("/@carol")
    assert (await browser.post("/@carol/follow", {"csrf_token": carol_page.csrf()})).status == 303

    feed = await browser.get("/discover")
    start = feed.text.index('id="my-feed"')
    mine = feed.text[start : feed.text.index("</div>", start)]
    assert "Podcast episode 9" in mine
    assert "A new strip" not in mine  # carol posted as her thing, which ann does not follow
    assert listed(feed.text, "followed-things") == ["comic"]

    unfollowed = await browser.post("/@pod/unfollow", {"csrf_token": now.csrf()})
    assert unfollowed.location == "/@pod?msg=unfollowed"
    after = await browser.get("/discover")
    assert 'id="my-feed-empty"' in after.text

    # Not yourself, not hidden things, and not without logging in.
    own = await browser.get("/@ann")
    assert 'id="follow-form"' not in own.text
    assert (await browser.post("/@ann/follow", {"csrf_token": own.csrf()})).status == 400
    assert (await browser.post("/@secret/follow", {"csrf_token": own.csrf()})).status == 404
    stranger = visitors(alpha)
    anonymous = await stranger.get("/@pod")
    assert 'id="follow-form"' not in anonymous.text
    refused = await stranger.post("/@pod/follow", {"csrf_token": anonymous.csrf()})
    assert refused.status == 303
    assert refused.location.startswith("/login?next=")
