"""Claims: linking a remote fediverse identity to a member, proven in both directions.

The member's actor lists the remote actor in `alsoKnownAs`; the remote actor's own document
(fetched from its origin) must link back to the member's actor or profile. Either direction
alone proves nothing: anybody can write anybody's address into their own profile.
"""

from __future__ import annotations

import re
import secrets
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.actors import actor_by_uri
from flattrfed.activitypub.client import FetchError
from flattrfed.activitypub.delivery import enqueue_delivery
from flattrfed.activitypub.documents import ACTOR_TYPES, like_activity
from flattrfed.activitypub.keys import KeyUnavailable
from flattrfed.activitypub.nodeinfo import flattrfed_metadata
from flattrfed.activitypub.origins import BadUri, host_of, origin_of
from flattrfed.activitypub.reading import activity_type
from flattrfed.context import Services
from flattrfed.db.models import Flattr, IdentityClaim, Member, OutboundLike
from flattrfed.flattring.flattrs import EXPIRED, PAYABLE, PENDING
from flattrfed.periods import Period

HREF = re.compile(r"""href=["']([^"'<>\s]{1,2048})["']""")
MAX_CANDIDATES = 5


class ClaimError(ValueError):
    """A claim cannot be made or verified; the message says why, for the member."""


def linked_uris(document: dict[str, Any]) -> list[str]:
    """URIs an actor document links to from structured fields (alsoKnownAs, attachment)."""
    found: list[str] = []
    aliases = document.get("alsoKnownAs")
    if isinstance(aliases, list):
        found.extend(alias for alias in aliases[:16] if isinstance(alias, str))
    attachments = document.get("attachment")
    for item in attachments[:32] if isinstance(attachments, list) else []:
        if not isinstance(item, dict):
            continue
        if isinstance(item.get("href"), str):
            found.append(item["href"])
        value = item.get("value")
        if isinstance(value, str):
            found.extend(HREF.findall(value[:4096]))
    return list(dict.fromkeys(found))


async def add_claim(
    session: AsyncSession, services: Services, member: Member, remote_uri: str, now: datetime
) -> IdentityClaim:
    try:
        origin_of(remote_uri, allow_http=services.settings.allow_http)
    except BadUri:
        raise ClaimError("give the address (URL) of your fediverse account") from None
    if services.urls.owns(remote_uri):
        raise ClaimError("that account is on this instance already")
    existing = await session.scalar(
        select(IdentityClaim).where(IdentityClaim.remote_actor_uri == remote_uri)
    )
    if existing is not None:
        if existing.member_id != member.id:
            raise ClaimError("another member has claimed that account")
        return existing
    claim = IdentityClaim(
        member_id=member.id, remote_actor_uri=remote_uri, state="unverified", created_at=now
    )
    session.add(claim)
    await session.flush()
    return claim


async def verify_claim(services: Services, claim_id: int) -> IdentityClaim:
    """Fetch the remote actor from its origin and require a link back to the member."""
    async with services.database.sessions() as session:
        claim = await session.get(IdentityClaim, claim_id)
        if claim is None:
            raise ClaimError("no such claim")
        member = await session.get(Member, claim.member_id)
        assert member is not None
    ours = {
        services.urls.actor("person", member.username),
        services.urls.profile("person", member.username),
    }
    error: str | None = None
    try:
        # A profile page URL (…/@carol) leads to the actor by its id: refetch that id.
        document = await services.client.fetch_activitypub(
            claim.remote_actor_uri,
            signer=await services.keys.instance_signer(),
            refetch_unknown_id=True,
        )
        canonical = str(document["id"])
        if activity_type(document.get("type")) not in ACTOR_TYPES:
            error = "that address is not a fediverse account"
        elif not ours & set(linked_uris(document)):
            error = (
                "the account does not link back yet: add your actor address "
                f"{services.urls.actor('person', member.username)} to its profile "
                "(a profile field, or its alsoKnownAs)"
            )
    except FetchError as failure:
        error = f"could not fetch the account ({failure.reason})"
        canonical = claim.remote_actor_uri
    now = services.clock.now()
    async with services.database.transaction() as session:
        claim = await session.get(IdentityClaim, claim_id)
        assert claim is not None
        claim.last_check_error = error
        if error is None:
            # Pending flattrs name the actor by its id, so the claim must too.
            taken = await session.scalar(
                select(IdentityClaim.id).where(
                    IdentityClaim.remote_actor_uri == canonical, IdentityClaim.id != claim.id
                )
            )
            if taken is not None:
                error = "another member has claimed that account"
            else:
                claim.remote_actor_uri = canonical
                claim.state = "verified"
                claim.verified_at = claim.verified_at or now
    if error is not None:
        raise ClaimError(error)
    await release_pending(services, claim.remote_actor_uri)
    return claim


async def find_claimant(services: Services, payee_uri: str) -> str | None:
    """The flattrfed actor that verifiably claims `payee_uri`, looked up from the donor's side."""
    async with services.database.sessions() as session:
        local = await session.scalar(
            select(IdentityClaim).where(
                IdentityClaim.remote_actor_uri == payee_uri, IdentityClaim.state == "verified"
            )
        )
        if local is not None:
            member = await session.get(Member, local.member_id)
            assert member is not None
            return services.urls.actor("person", member.username)
    signer = await services.keys.instance_signer()
    allow_http = services.settings.allow_http
    try:
        payee = await services.client.fetch_activitypub(payee_uri, signer=signer)
    except FetchError:
        return None
    for candidate in linked_uris(payee)[:MAX_CANDIDATES]:
        if candidate == payee_uri or services.urls.owns(candidate):
            continue
        try:
            host = host_of(candidate, allow_http=allow_http)
            document = await services.client.fetch_activitypub(
                candidate, signer=signer, refetch_unknown_id=True
            )
        except (BadUri, FetchError):
            continue
        aliases = document.get("alsoKnownAs")
        if not isinstance(aliases, list) or payee_uri not in aliases:
            continue  # one direction only: a forged claim
        advertised = flattrfed_metadata(await services.nodeinfo.get(host, services.clock.now()))
        if advertised is None or advertised.get("currency") != services.settings.currency:
            continue
        return str(document["id"])
    return None


async def release_pending(services: Services, payee_uri: str) -> int:
    """Pending flattrs of a now-claimed identity become payable, counting in this month."""
    claimant = await find_claimant(services, payee_uri)
    if claimant is None:
        return 0
    now = services.clock.now()
    period = str(Period.of(now))
    host = host_of(claimant, allow_http=services.settings.allow_http)
    remote_inbox: str | None = None
    if not services.urls.owns(claimant):
        # The claimant's instance must receive a flattr Like for its member, or the statement
        # line we send it later names a Like it never saw (fetched before the transaction).
        try:
            remote_inbox = (await services.keys.actor(claimant)).inbox
        except KeyUnavailable:
            return 0
    async with services.database.transaction() as session:
        claimant_actor = await actor_by_uri(session, services.urls, claimant)
        if claimant_actor is not None and claimant_actor.member_id is not None:
            # A donor who turns out to be the author flattred themselves: no money moves.
            await session.execute(
                update(Flattr)
                .where(
                    Flattr.payee_uri == payee_uri,
                    Flattr.status == PENDING,
                    Flattr.donor_id == claimant_actor.member_id,
                )
                .values(status=EXPIRED)
            )
        rows = (
            await session.scalars(
                select(Flattr).where(
                    Flattr.payee_uri == payee_uri,
                    Flattr.status == PENDING,
                    Flattr.undone_at.is_(None),
                )
            )
        ).all()
        for row in rows:
            row.status, row.payee_uri, row.payee_host = PAYABLE, claimant, host
            row.counts_in_period = period
            if remote_inbox is not None:
                await _announce_to_claimant(session, services, row, claimant, remote_inbox, now)
    return len(rows)


async def _announce_to_claimant(
    session: AsyncSession,
    services: Services,
    row: Flattr,
    claimant: str,
    inbox: str,
    now: datetime,
) -> None:
    """A new flattr Like of the claimant's actor, replacing the one the plain author got."""
    donor = await session.get(Member, row.donor_id)
    assert donor is not None
    donor_actor = await actor_by_uri(
        session, services.urls, services.urls.actor("person", donor.username)
    )
    assert donor_actor is not None
    donor_uri = services.urls.actor("person", donor.username)
    like_uri = f"{donor_uri}/flattrs/{secrets.token_hex(8)}"
    assert row.counts_in_period is not None
    like = like_activity(
        like_uri=like_uri,
        actor_uri=donor_uri,
        object_uri=claimant,
        recipient=claimant,
        published=now,
        flattr_period=row.counts_in_period,
        clearing_actor=services.urls.actor("instance", ""),
    )
    row.like_uri = like_uri
    session.add(
        OutboundLike(
            actor_id=donor_actor.id,
            object_uri=claimant,
            like_uri=like_uri,
            activity=like,
            inbox=inbox,
            created_at=now,
        )
    )
    await enqueue_delivery(
        session, activity=like, actor_id=donor_actor.id, inboxes=[inbox], now=now
    )


async def refresh_pending(services: Services) -> int:
    """Check every identity with pending flattrs for a claim; returns flattrs released."""
    async with services.database.sessions() as session:
        payees = (
            await session.scalars(
                select(Flattr.payee_uri)
                .where(Flattr.status == PENDING, Flattr.undone_at.is_(None))
                .distinct()
            )
        ).all()
    released = 0
    for payee in payees:
        released += await release_pending(services, payee)
    return released


async def expire_pending(session: AsyncSession, now: datetime, months: int) -> int:
    """Pending flattrs older than `months` expire (they never moved money)."""
    cutoff = str(Period.of(now).plus_months(-months))
    result = await session.execute(
        update(Flattr)
        .where(Flattr.status == PENDING, Flattr.period <= cutoff)
        .values(status=EXPIRED)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]
