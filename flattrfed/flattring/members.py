"""Member accounts: creating them, hashing and checking passwords."""

from __future__ import annotations

import re
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.actors import create_local_actor, username_taken
from flattrfed.db.models import Member

USERNAME_PATTERN = re.compile(r"[a-z0-9_]{1,30}")
MIN_PASSWORD_LENGTH = 10
_hasher = PasswordHasher()


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
        password_hash=hash_password(password),
        is_admin=is_admin,
        created_at=now,
    )
    session.add(member)
    await session.flush()
    await create_local_actor(
        session, kind="person", username=username, now=now, member_id=member.id
    )
    return member
