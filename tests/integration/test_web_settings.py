"""The settings page over real HTTP: profile, and claiming another fediverse account."""

from __future__ import annotations

from sqlalchemy import select

from flattrfed.db.models import IdentityClaim, Member
from tests.fakes.plain import PlainServer
from tests.harness.instances import Federation
from tests.integration.test_web_support import Visitors


async def test_the_profile_shows_on_the_public_page(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha")
    await alpha.create_member("ann")
    ann = visitors(alpha)
    await ann.log_in("ann")
    page = await ann.get("/settings")
    assert page.status == 200
    saved = await ann.post(
        "/settings/profile",
        {"csrf_token": page.csrf(), "display_name": "  Ann  Example ", "bio": "I <3 zines"},
    )
    assert saved.status == 303
    assert saved.location == "/settings?msg=profile#profile-heading"
    public = await visitors(alpha).get("/@ann")
    assert public.has("Ann Example")
    assert "I &lt;3 zines" in public.text  # plain text, escaped

    too_long = await ann.post(
        "/settings/profile", {"csrf_token": page.csrf(), "display_name": "x" * 101, "bio": ""}
    )
    assert too_long.status == 400
    assert too_long.has("The name has at most 100 characters")
    async with alpha.services.database.sessions() as session:
        member = await session.scalar(select(Member).where(Member.username == "ann"))
        assert member is not None
        assert member.display_name == "Ann Example"


async def test_a_claim_is_verified_only_when_the_account_links_back(
    federation: Federation, visitors: Visitors, plain: PlainServer
) -> None:
    alpha = await federation.start("alpha")
    carol_member = await alpha.create_member("carol")
    await alpha.create_member("mallory")
    carol = visitors(alpha)
    await carol.log_in("carol")
    page = await carol.get("/settings")
    assert page.has(alpha.actor_uri("carol"))  # what to link from the other account

    refused = await carol.post(
        "/settings/claims", {"csrf_token": page.csrf(), "remote": plain.actor_uri("dave")}
    )
    assert refused.status == 400
    assert refused.has("does not link back yet")
    assert refused.has("not verified yet")
    async with alpha.services.database.sessions() as session:
        (claim,) = (await session.scalars(select(IdentityClaim))).all()
    assert claim.member_id == carol_member.id
    assert claim.state == "unverified"

    # Someone else cannot check (or learn about) carol's claim.
    mallory = visitors(alpha)
    await mallory.log_in("mallory")
    theirs = await mallory.get("/settings")
    assert plain.actor_uri("dave") not in theirs.text
    other = await mallory.post(f"/settings/claims/{claim.id}/verify", {"csrf_token": theirs.csrf()})
    assert other.status == 404
    assert other.has("No such claim of yours")

    plain.attachments["dave"] = [
        {
            "type": "PropertyValue",
            "name": "flattr",
            "value": f'<a href="{alpha.url("/@carol")}">me</a>',
        }
    ]
    checked = await carol.post(f"/settings/claims/{claim.id}/verify", {"csrf_token": page.csrf()})
    assert checked.status == 303
    assert checked.location == "/settings?msg=claim-verified#claims-heading"
    page = await carol.get(checked.location)
    assert "verified</span>" in page.text
    async with alpha.services.database.sessions() as session:
        row = await session.get(IdentityClaim, claim.id)
        assert row is not None
        assert row.state == "verified"

    taken = await mallory.post(
        "/settings/claims", {"csrf_token": theirs.csrf(), "remote": plain.actor_uri("dave")}
    )
    assert taken.status == 400
    assert taken.has("Another member has claimed that account")
    bad = await mallory.post("/settings/claims", {"csrf_token": theirs.csrf(), "remote": "dave"})
    assert bad.status == 400
    assert bad.has("Give the address (URL) of your fediverse account")
