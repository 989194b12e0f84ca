"""Members sign up under the instance's policy and log in; things are edited, hidden, deleted."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.urls import LocalUrls
from flattrfed.clock import ManualClock
from flattrfed.db.models import ActorKey, LocalActor, Member, Thing, WorkItem
from flattrfed.db.session import Database
from flattrfed.flattring.members import (
    MemberError,
    approve,
    authenticate,
    change_password,
    create_invite,
    create_member,
    register,
)
from flattrfed.flattring.things import (
    ThingError,
    create_thing,
    delete_thing,
    edit_thing,
    set_hidden,
)
from tests.harness.instances import Federation

PASSWORD = "correct horse battery"


async def new_member(session: AsyncSession, name: str, clock: ManualClock) -> Member:
    return await create_member(
        session, username=name, password=PASSWORD, is_admin=False, now=clock.now()
    )


async def test_open_registration_makes_a_member_with_an_actor_and_keys(
    database: Database, clock: ManualClock
) -> None:
    async with database.transaction() as session:
        member = await register(
            session, username="ada", password=PASSWORD, registration="open", now=clock.now()
        )
    async with database.sessions() as session:
        actor = await session.scalar(select(LocalActor).where(LocalActor.member_id == member.id))
        assert actor is not None
        assert actor.kind == "person"
        key = await session.scalar(select(ActorKey).where(ActorKey.actor_id == actor.id))
        assert key is not None
        assert "BEGIN PUBLIC KEY" in key.public_key_pem
        logged_in = await authenticate(session, "ada", PASSWORD)
        assert logged_in.id == member.id
        assert logged_in.password_hash != PASSWORD


async def test_wrong_password_and_unknown_user_get_the_same_answer(
    database: Database, clock: ManualClock
) -> None:
    async with database.transaction() as session:
        await create_member(
            session, username="ada", password=PASSWORD, is_admin=False, now=clock.now()
        )
    async with database.sessions() as session:
        with pytest.raises(MemberError) as wrong:
            await authenticate(session, "ada", "wrong password!")
        with pytest.raises(MemberError) as unknown:
            await authenticate(session, "nobody", PASSWORD)
    assert str(wrong.value) == str(unknown.value) == "wrong username or password"


async def test_approval_registration_waits_for_an_admin(
    database: Database, clock: ManualClock
) -> None:
    async with database.transaction() as session:
        member = await register(
            session, username="ada", password=PASSWORD, registration="approval", now=clock.now()
        )
    async with database.transaction() as session:
        with pytest.raises(MemberError, match="approval"):
            await authenticate(session, "ada", PASSWORD)
        row = await session.get(Member, member.id)
        assert row is not None
        await approve(session, row, clock.now())
    async with database.sessions() as session:
        assert (await authenticate(session, "ada", PASSWORD)).id == member.id


async def test_invite_registration_needs_an_unused_code(
    database: Database, clock: ManualClock
) -> None:
    async with database.transaction() as session:
        with pytest.raises(MemberError, match="invite"):
            await register(
                session, username="ada", password=PASSWORD, registration="invite", now=clock.now()
            )
    async with database.transaction() as session:
        invite = await create_invite(session, None, clock.now())
        code = invite.code
    async with database.transaction() as session:
        await register(
            session,
            username="ada",
            password=PASSWORD,
            registration="invite",
            invite_code=code,
            now=clock.now(),
        )
    async with database.transaction() as session:
        with pytest.raises(MemberError, match="invite"):
            await register(
                session,
                username="bea",
                password=PASSWORD,
                registration="invite",
                invite_code=code,
                now=clock.now(),
            )


async def test_closed_registration_and_bad_usernames_are_refused(
    database: Database, clock: ManualClock
) -> None:
    async with database.transaction() as session:
        with pytest.raises(MemberError, match="does not take new members"):
            await register(
                session, username="ada", password=PASSWORD, registration="closed", now=clock.now()
            )
        for name in ["Ada", "a d a", "", "x" * 31, "ada@host"]:
            with pytest.raises(MemberError, match="not valid"):
                await register(
                    session, username=name, password=PASSWORD, registration="open", now=clock.now()
                )
        with pytest.raises(MemberError, match="at least"):
            await register(
                session, username="ada", password="short", registration="open", now=clock.now()
            )


async def test_members_and_things_share_one_handle_namespace(
    database: Database, clock: ManualClock
) -> None:
    async with database.transaction() as session:
        ada = await create_member(
            session, username="ada", password=PASSWORD, is_admin=False, now=clock.now()
        )
        await create_thing(session, owner=ada, handle="blog", title="Blog", now=clock.now())
        with pytest.raises(MemberError, match="taken"):
            await create_member(
                session, username="blog", password=PASSWORD, is_admin=False, now=clock.now()
            )
        with pytest.raises(ThingError, match="taken"):
            await create_thing(session, owner=ada, handle="ada", title="Me", now=clock.now())


async def test_password_change_needs_the_current_password(
    database: Database, clock: ManualClock
) -> None:
    async with database.transaction() as session:
        ada = await create_member(
            session, username="ada", password=PASSWORD, is_admin=False, now=clock.now()
        )
        with pytest.raises(MemberError, match="current password"):
            await change_password(session, ada, "not it at all", "a new long password")
        await change_password(session, ada, PASSWORD, "a new long password")
    async with database.sessions() as session:
        assert (await authenticate(session, "ada", "a new long password")).id == ada.id


async def test_thing_fields_are_validated_and_edits_reach_followers(
    database: Database, clock: ManualClock
) -> None:
    urls = LocalUrls("https://flattr.example")
    async with database.transaction() as session:
        ada = await create_member(
            session, username="ada", password=PASSWORD, is_admin=False, now=clock.now()
        )
        thing = await create_thing(
            session,
            owner=ada,
            handle="pod",
            title="Pod",
            now=clock.now(),
            category="audio",
            tags=["Music", "music", "jazz"],
            language="en",
            image_url="https://img.example/pod.png",
        )
        assert thing.tags == ["music", "jazz"]
        bad_edits: list[dict[str, Any]] = [
            {"category": "weapons"},
            {"image_url": "javascript:alert(1)"},
            {"external_url": "ftp://x.example/"},
            {"title": ""},
            {"tags": [str(n) for n in range(11)]},
            {"language": "not a language"},
        ]
        for bad in bad_edits:
            with pytest.raises(ThingError):
                await edit_thing(session, urls, ada, thing.id, clock.now(), **bad)
        await edit_thing(session, urls, ada, thing.id, clock.now(), title="Pod 2")
        assert thing.title == "Pod 2"


async def test_hidden_and_deleted_things_disappear_from_federation(federation: Federation) -> None:
    alpha = await federation.start("alpha")
    ada = await alpha.create_member("ada")
    thing = await alpha.create_thing(ada, "pod", "Pod")
    client = federation.client()
    headers = {"Accept": "application/activity+json"}
    url = alpha.actor_uri("pod", "thing")
    async with client.get(url, headers=headers) as response:
        assert response.status == 200
    async with alpha.services.database.transaction() as session:
        owner = await session.get(Member, ada.id)
        assert owner is not None
        await set_hidden(session, owner, thing.id, True)
    async with client.get(url, headers=headers) as response:
        assert response.status == 404
    async with alpha.services.database.transaction() as session:
        owner = await session.get(Member, ada.id)
        assert owner is not None
        await set_hidden(session, owner, thing.id, False)
        await delete_thing(session, alpha.services.urls, owner, thing.id, federation.clock.now())
    async with client.get(url, headers=headers) as response:
        assert response.status in {404, 410}
    async with alpha.services.database.sessions() as session:
        row = await session.get(Thing, thing.id)
        assert row is not None
        assert row.deleted_at is not None
        owner = await session.get(Member, ada.id)
        assert owner is not None
        with pytest.raises(ThingError):
            await set_hidden(session, owner, thing.id, True)
    federation.clock.advance(timedelta(seconds=1))
    async with alpha.services.database.sessions() as session:
        deliveries = select(WorkItem).where(WorkItem.kind == "deliver")
        assert (await session.scalars(deliveries)).all() == []  # no followers, nothing sent
