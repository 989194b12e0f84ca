"""Flattring over real HTTP: a thing on another instance, a plain ActivityPub author, claims."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from flattrfed.db.models import Flattr, Member, ReceivedLike, WorkItem
from flattrfed.flattring.claims import ClaimError, add_claim, refresh_pending, verify_claim
from flattrfed.flattring.flattrs import flattr, unflattr
from flattrfed.flattring.resolve import CannotFlattr, resolve_target
from flattrfed.periods import Period
from tests.fakes.plain import PlainServer
from tests.harness.instances import Federation, Instance


async def donor_with_budget(instance: Instance, name: str, budget_minor: int = 1000) -> Member:
    member = await instance.create_member(name)
    async with instance.services.database.transaction() as session:
        row = await session.get(Member, member.id)
        assert row is not None
        row.monthly_budget_minor = budget_minor
    return member


async def do_flattr(instance: Instance, member: Member, text: str) -> Flattr:
    services = instance.services
    target = await resolve_target(services, text)
    async with services.database.transaction() as session:
        donor = await session.get(Member, member.id)
        assert donor is not None
        return await flattr(session, services.urls, donor, target, services.clock.now())


async def received(instance: Instance) -> list[ReceivedLike]:
    async with instance.services.database.sessions() as session:
        return list((await session.scalars(select(ReceivedLike).order_by(ReceivedLike.id))).all())


async def test_member_flattrs_a_thing_on_another_instance_and_undoes_it(
    federation: Federation,
) -> None:
    alpha = await federation.start("alpha")
    beta = await federation.start("beta")
    bob = await donor_with_budget(alpha, "bob")
    carol = await beta.create_member("carol")
    await beta.create_thing(carol, "podcast", "Carol's podcast")

    row = await do_flattr(alpha, bob, f"@podcast@{beta.host}")
    assert row.status == "payable"
    assert row.period == str(Period.of(federation.clock.now()))
    await federation.step_workers()
    (like,) = await received(beta)
    assert like.flattr_period == row.period
    assert like.sender_host == alpha.host
    assert like.like_uri == row.like_uri
    assert like.clearing_actor == alpha.url("/actor")

    with pytest.raises(CannotFlattr, match="already flattred"):
        await do_flattr(alpha, bob, beta.actor_uri("podcast", "thing"))

    async with alpha.services.database.transaction() as session:
        donor = await session.get(Member, bob.id)
        assert donor is not None
        await unflattr(session, donor, row.id, federation.clock.now())
    await federation.step_workers()
    (like,) = await received(beta)
    assert like.undone_at is not None

    # Flattring again in the same month after an Undo is a new Like for the same click.
    again = await do_flattr(alpha, bob, f"@podcast@{beta.host}")
    assert again.id == row.id
    await federation.step_workers()
    likes = await received(beta)
    assert [like.undone_at is None for like in likes] == [False, True]

    # A replayed delivery changes nothing: the worker re-runs nothing already recorded.
    assert await federation.step_workers() == 0
    assert len(await received(beta)) == 2


async def test_flattr_of_a_plain_activitypub_post_is_pending_and_delivered_as_a_like(
    federation: Federation, plain: PlainServer
) -> None:
    alpha = await federation.start("alpha")
    bob = await donor_with_budget(alpha, "bob")
    row = await do_flattr(alpha, bob, plain.status_uri("dave", 7))
    assert row.status == "pending"
    assert row.payee_uri == plain.actor_uri("dave")
    await federation.step_workers()
    (like,) = plain.received
    assert like["type"] == "Like"
    assert like["object"] == plain.status_uri("dave", 7)
    assert like["instrument"]["type"] == "Flattr"
    assert "content" not in like


async def test_flattr_needs_a_budget_and_refuses_own_things(federation: Federation) -> None:
    alpha = await federation.start("alpha")
    carol = await alpha.create_member("carol")
    await alpha.create_thing(carol, "zine", "Carol's zine")
    with pytest.raises(CannotFlattr, match="budget"):
        await do_flattr(alpha, carol, f"@zine@{alpha.host}")
    async with alpha.services.database.transaction() as session:
        row = await session.get(Member, carol.id)
        assert row is not None
        row.monthly_budget_minor = 500
    with pytest.raises(CannotFlattr, match="your own thing"):
        await do_flattr(alpha, carol, f"@zine@{alpha.host}")


async def test_flattr_of_a_local_thing_is_received_without_http(federation: Federation) -> None:
    alpha = await federation.start("alpha")
    carol = await alpha.create_member("carol")
    await alpha.create_thing(carol, "zine", "Carol's zine")
    bob = await donor_with_budget(alpha, "bob")
    row = await do_flattr(alpha, bob, alpha.actor_uri("zine", "thing"))
    assert row.status == "payable"
    assert row.thing_id is not None
    (like,) = await received(alpha)
    assert like.flattr_period == row.period
    async with alpha.services.database.sessions() as session:
        kinds = (await session.scalars(select(WorkItem.kind))).all()
    assert "deliver" not in kinds


async def test_claimed_identity_releases_pending_flattrs_to_the_claimant(
    federation: Federation, plain: PlainServer
) -> None:
    alpha = await federation.start("alpha")
    beta = await federation.start("beta")
    bob = await donor_with_budget(alpha, "bob")
    carol = await beta.create_member("carol")
    row = await do_flattr(alpha, bob, plain.status_uri("dave", 1))
    assert row.status == "pending"

    # dave's profile on the plain server links to carol on beta...
    plain.attachments["dave"] = [
        {
            "type": "PropertyValue",
            "name": "flattr",
            "value": f'<a href="{beta.url("/@carol")}">me</a>',
        }
    ]
    # ...and carol claims dave on beta (her actor lists dave in alsoKnownAs).
    async with beta.services.database.transaction() as session:
        member = await session.get(Member, carol.id)
        assert member is not None
        claim = await add_claim(
            session, beta.services, member, plain.actor_uri("dave"), federation.clock.now()
        )
    plain.also_known_as["dave"] = [beta.actor_uri("carol")]
    verified = await verify_claim(beta.services, claim.id)
    assert verified.state == "verified"

    assert await refresh_pending(alpha.services) == 1
    async with alpha.services.database.sessions() as session:
        released = await session.get(Flattr, row.id)
    assert released is not None
    assert released.status == "payable"
    assert released.payee_uri == beta.actor_uri("carol")
    assert released.counts_in_period == str(Period.of(federation.clock.now()))


async def test_one_sided_claims_release_nothing(federation: Federation, plain: PlainServer) -> None:
    alpha = await federation.start("alpha")
    beta = await federation.start("beta")
    bob = await donor_with_budget(alpha, "bob")
    carol = await beta.create_member("carol")
    row = await do_flattr(alpha, bob, plain.status_uri("dave", 1))

    # Forgery one way: dave's profile points at carol, but carol never claimed dave.
    plain.also_known_as["dave"] = [beta.actor_uri("carol")]
    assert await refresh_pending(alpha.services) == 0

    # The other way: carol claims dave, but dave's profile does not link back.
    plain.also_known_as.pop("dave")
    async with beta.services.database.transaction() as session:
        member = await session.get(Member, carol.id)
        assert member is not None
        claim = await add_claim(
            session, beta.services, member, plain.actor_uri("dave"), federation.clock.now()
        )
    with pytest.raises(ClaimError, match="does not link back"):
        await verify_claim(beta.services, claim.id)
    assert await refresh_pending(alpha.services) == 0
    async with alpha.services.database.sessions() as session:
        still = await session.get(Flattr, row.id)
    assert still is not None
    assert still.status == "pending"


async def test_members_of_flattrfed_instances_are_flattred_through_their_things(
    federation: Federation,
) -> None:
    alpha = await federation.start("alpha")
    beta = await federation.start("beta")
    bob = await donor_with_budget(alpha, "bob")
    await beta.create_member("carol")
    with pytest.raises(CannotFlattr, match="flattr one of their things"):
        await do_flattr(alpha, bob, f"@carol@{beta.host}")
    with pytest.raises(CannotFlattr, match="only things"):
        await do_flattr(beta, await donor_with_budget(beta, "dan"), f"@carol@{beta.host}")
