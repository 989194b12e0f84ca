"""Member accounts: creating them, hashing and checking passwords."""

from __future__ import annotations

import asyncio
import re
import secrets
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.actors import create_local_actor, username_taken
from flattrfed.db.models import Invite, Member

USERNAME_PATTERN = re.compile(r"[a-z0-9_]{1,30}")
MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash("not a password of anyone")


class MemberError(ValueError):
    """A member cannot be created or changed as asked; the message says why."""


def check_username(username: str) -> str:
    if not USERNAME_PATTERN.fullmatch(username):
        raise MemberError(
            f"username {username!r} is not valid: use 1-30 lowercase letters, digits or _"
        )
    return username


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise MemberError(f"the password needs at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


# argon2 takes about a quarter of a second of CPU by design; in a thread (argon2 releases the
# GIL), the event loop keeps serving every other request meanwhile. The synchronous function
# is looked up at each call, so a test that replaces it module-wide replaces it here too.


async def hash_password_async(password: str) -> str:
    """hash_password, run in a thread so that the event loop is not blocked."""
    return await asyncio.to_thread(hash_password, password)


async def password_matches_async(password_hash: str, password: str) -> bool:
    """password_matches, run in a thread so that the event loop is not blocked."""
    return await asyncio.to_thread(password_matches, password_hash, password)


async def create_member(
    session: AsyncSession, *, username: str, password: str, is_admin: bool, now: datetime
) -> Member:
    check_username(username)
    # Members and things share the handle namespace (acct:NAME@host names exactly one actor).
    if await username_taken(session, username):
        raise MemberError(f"username {username!r} is taken")
    member = Member(
        username=username,
        display_name=username,
        password_hash=await hash_password_async(password),
        is_admin=is_admin,
        created_at=now,
        # Accounts made by an admin (CLI) need no approval; register() decides for sign-ups.
        approved_at=now,
    )
    session.add(member)
    await session.flush()
    await create_local_actor(
        session, kind="person", username=username, now=now, member_id=member.id
    )
    return member


async def register(
    session: AsyncSession,
    *,
    username: str,
    password: str,
    registration: str,
    now: datetime,
    invite_code: str | None = None,
) -> Member:
    """Sign up under the instance's registration policy (open, approval, invite or closed).

    With `approval`, the account exists but cannot log in until an admin approves it.
    """
    if registration == "closed":
        raise MemberError("this instance does not take new members")
    invite: Invite | None = None
    if registration == "invite":
        invite = await session.scalar(
            select(Invite).where(
                Invite.code == (invite_code or "").strip(), Invite.used_at.is_(None)
            )
        )
        if invite is None:
            raise MemberError("this instance needs a valid, unused invite code to sign up")
    member = await create_member(
        session, username=username, password=password, is_admin=False, now=now
    )
    member.approved_at = None if registration == "approval" else now
    if invite is not None:
        invite.used_by, invite.used_at = member.id, now
    await session.flush()
    return member


async def create_invite(session: AsyncSession, creator: Member | None, now: datetime) -> Invite:
    invite = Invite(
        code=secrets.token_urlsafe(12),
        created_by=creator.id if creator is not None else None,
        created_at=now,
    )
    session.add(invite)
    await session.flush()
    return invite


async def approve(session: AsyncSession, member: Member, now: datetime) -> None:
    member.approved_at = member.approved_at or now
    await session.flush()


async def authenticate(session: AsyncSession, username: str, password: str) -> Member:
    """The member with these credentials, or MemberError with one message for every failure
    (so the answer does not reveal which usernames exist)."""
    member = await session.scalar(select(Member).where(Member.username == username.strip().lower()))
    if member is None:
        # Hash anyway, so a missing account takes as long as a wrong password.
        await password_matches_async(_DUMMY_HASH, password)
        raise MemberError("wrong username or password")
    if not await password_matches_async(member.password_hash, password):
        raise MemberError("wrong username or password")
    if member.approved_at is None:
        raise MemberError("this account is waiting for an admin's approval")
    if _hasher.check_needs_rehash(member.password_hash):
        member.password_hash = await asyncio.to_thread(_hasher.hash, password)
    return member


async def change_password(session: AsyncSession, member: Member, old: str, new: str) -> None:
    if not await password_matches_async(member.password_hash, old):
        raise MemberError("the current password is wrong")
    member.password_hash = await hash_password_async(new)
    await session.flush()
