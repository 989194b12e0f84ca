"""A member's own account as a whole: what is still owed, the closing payout, deletion, export.

Deleting an account (docs/decisions/0007-deleting-an-account.md): it is refused while the
instance still owes the member money or while flattrs the member received are not yet paid,
because the ledger is append-only and a deleted member could never withdraw what arrives later.
When allowed, in one transaction: the member's open flattrs are undone (their Undo is
delivered), their things are deleted (a Delete of each thing's actor to its followers), a
Delete of the member's actor goes to followers and followed accounts, claims are released,
open deposit requests cancelled, and the member row is anonymised but kept, so the username
and actor URI are never reused. Ledger rows stay: they are the books.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.actors import find_local_actor
from flattrfed.activitypub.delivery import enqueue_delivery, follower_inboxes
from flattrfed.activitypub.documents import delete_activity
from flattrfed.activitypub.interactions import undo_like
from flattrfed.activitypub.urls import LocalUrls
from flattrfed.db.models import (
    ClearingRun,
    DepositRequest,
    Flattr,
    Follow,
    IdentityClaim,
    LedgerAccount,
    LedgerPosting,
    LedgerTransaction,
    LocalActor,
    Member,
    OutboundFollow,
    OutboundLike,
    PayoutRequest,
    Post,
    ReceivedLike,
    RemoteActor,
    Statement,
    Thing,
)
from flattrfed.flattring.members import password_matches_async
from flattrfed.flattring.things import delete_thing
from flattrfed.money import Money
from flattrfed.periods import Period
from flattrfed.settlement import ledger

EXPORT_FORMAT = "flattrfed-export/1"
# Rows fetched from the database per round trip while streaming an export.
_EXPORT_BATCH = 500


class AccountError(ValueError):
    """The account cannot be changed as asked; the message says why."""


@dataclass(frozen=True)
class Owed:
    """What the instance owes one member, by ledger account, in minor units (never negative)."""

    wallet_minor: int
    earnings_pending_minor: int
    earnings_available_minor: int
    payouts_pending_minor: int

    @property
    def withdrawable_minor(self) -> int:
        """What a closing payout would move: the wallet and the available earnings."""
        return self.wallet_minor + self.earnings_available_minor

    @property
    def total_minor(self) -> int:
        return (
            self.wallet_minor
            + self.earnings_pending_minor
            + self.earnings_available_minor
            + self.payouts_pending_minor
        )


async def owed(session: AsyncSession, member_id: int) -> Owed:
    balances = await ledger.member_balances(session, member_id)
    return Owed(
        wallet_minor=balances["wallet"],
        earnings_pending_minor=balances["earnings_pending"],
        earnings_available_minor=balances["earnings_available"],
        payouts_pending_minor=balances["payouts_pending"],
    )


async def member_actor_ids(session: AsyncSession, member: Member) -> list[int]:
    """The member's own actor and the actors of all their things (deleted ones included)."""
    thing_ids = select(Thing.id).where(Thing.owner_id == member.id)
    rows = await session.scalars(
        select(LocalActor.id).where(
            or_(LocalActor.member_id == member.id, LocalActor.thing_id.in_(thing_ids))
        )
    )
    return list(rows.all())


async def unpaid_received_flattrs(
    session: AsyncSession, urls: LocalUrls, member: Member, now: datetime
) -> int:
    """Flattrs of the member's things (or own actor) whose money has not reached the ledger.

    A flattr by a donor here waits for this instance's month close; one from another
    instance waits for that instance's statement to be accepted. Only this month and the
    last can still be waiting (older statements are past the settlement watch).
    """
    current = Period.of(now)
    recent = (str(current), str(current.previous()))
    actor_ids = await member_actor_ids(session, member)
    closed = set(
        (
            await session.scalars(
                select(ClearingRun.period).where(
                    ClearingRun.period.in_(recent), ClearingRun.stage == "done"
                )
            )
        ).all()
    )
    settled = {
        (row.period, row.peer_host)
        for row in await session.execute(
            select(Statement.period, Statement.peer_host).where(
                Statement.direction == "in",
                Statement.period.in_(recent),
                Statement.state == "accepted",
            )
        )
    }
    here = urls.actor("instance", "")
    waiting = 0
    rows = await session.execute(
        select(
            ReceivedLike.flattr_period,
            ReceivedLike.sender_host,
            ReceivedLike.clearing_actor,
            func.count(),
        )
        .where(
            ReceivedLike.target_id.in_(actor_ids),
            ReceivedLike.flattr_period.in_(recent),
            ReceivedLike.undone_at.is_(None),
        )
        .group_by(
            ReceivedLike.flattr_period,
            ReceivedLike.sender_host,
            ReceivedLike.clearing_actor,
        )
    )
    for period, sender_host, clearing_actor, count in rows:
        if period == str(current):
            unpaid = True
        elif clearing_actor == here:
            unpaid = period not in closed
        else:
            unpaid = (period, sender_host) not in settled
        waiting += int(count) if unpaid else 0
    return waiting


async def deletion_blockers(
    session: AsyncSession, urls: LocalUrls, member: Member, currency: str, now: datetime
) -> list[str]:
    """Why the account cannot be deleted now, one sentence each; empty when it can."""
    money = await owed(session, member.id)

    def fmt(minor: int) -> str:
        return Money(minor, currency).format()

    reasons: list[str] = []
    if money.withdrawable_minor:
        reasons.append(
            f"Your wallet holds {fmt(money.wallet_minor)} and {fmt(money.earnings_available_minor)}"
            " of your earnings are available: request a closing payout of "
            f"{fmt(money.withdrawable_minor)} first."
        )
    if money.payouts_pending_minor:
        reasons.append(
            f"A payout of {fmt(money.payouts_pending_minor)} is requested but not paid yet: "
            "an admin pays it by bank transfer; you can delete your account once it is paid."
        )
    if money.earnings_pending_minor:
        reasons.append(
            f"{fmt(money.earnings_pending_minor)} of earnings are still being settled with other "
            "instances; once they are available, request a payout."
        )
    waiting = await unpaid_received_flattrs(session, urls, member, now)
    if waiting:
        reasons.append(
            f"{waiting} flattr{'s' if waiting != 1 else ''} of your things "
            f"{'are' if waiting != 1 else 'is'} not paid yet: they are paid when the month "
            "closes (and, from other instances, when their statements are settled). Hide your "
            "things so no new flattrs arrive, then come back after the close."
        )
    return reasons


async def request_closing_payout(
    session: AsyncSession, member: Member, currency: str, now: datetime
) -> PayoutRequest:
    """Everything withdrawable (wallet and available earnings) in one payout request.

    The instance's minimum payout does not apply: the account is closing, so the money
    could otherwise never leave. The request is an ordinary payout an admin pays by bank
    transfer; its `requested` transaction debits the wallet and the available earnings.
    """
    money = await owed(session, member.id)
    if money.withdrawable_minor <= 0:
        raise AccountError("there is nothing in your wallet or available earnings to pay out")
    payout = PayoutRequest(
        member_id=member.id,
        amount_minor=money.withdrawable_minor,
        state="requested",
        created_at=now,
    )
    session.add(payout)
    await session.flush()
    postings: list[tuple[str, int]] = [
        (ledger.payouts_pending(member.id), -money.withdrawable_minor)
    ]
    if money.wallet_minor:
        postings.append((ledger.wallet(member.id), money.wallet_minor))
    if money.earnings_available_minor:
        postings.append((ledger.earnings_available(member.id), money.earnings_available_minor))
    await ledger.post(
        session,
        txid=ledger.payout_txid(payout.id, "requested"),
        kind="payout_request",
        postings=postings,
        currency=currency,
        memo="closing payout: wallet and available earnings",
        now=now,
    )
    return payout


async def _undo_open_flattrs(session: AsyncSession, member: Member, now: datetime) -> int:
    """This month's flattrs and every still-pending one are undone, their Undo delivered.

    With the wallet empty (deletion requires it) they would pay nothing at the close; undoing
    them also removes the favourites the deleted actor left on other servers.
    """
    current = str(Period.of(now))
    rows = (
        await session.scalars(
            select(Flattr).where(
                Flattr.donor_id == member.id,
                Flattr.undone_at.is_(None),
                or_(Flattr.period == current, Flattr.status == "pending"),
            )
        )
    ).all()
    for row in rows:
        row.undone_at = now
        sent = await session.scalar(
            select(OutboundLike).where(OutboundLike.like_uri == row.like_uri)
        )
        if sent is not None and sent.undone_at is None:
            await undo_like(session, sent, now)
        received = await session.scalar(
            select(ReceivedLike).where(ReceivedLike.like_uri == row.like_uri)
        )
        if received is not None and received.undone_at is None:
            received.undone_at = now
    return len(rows)


async def delete_account(
    session: AsyncSession,
    urls: LocalUrls,
    member: Member,
    *,
    password: str,
    currency: str,
    now: datetime,
) -> None:
    """Delete the member's account (see the module docstring), or AccountError saying why not."""
    if member.deleted_at is not None:
        raise AccountError("this account is already deleted")
    if not await password_matches_async(member.password_hash, password):
        raise AccountError("the password is wrong")
    reasons = await deletion_blockers(session, urls, member, currency, now)
    if reasons:
        raise AccountError(" ".join(reasons))
    await _undo_open_flattrs(session, member, now)

    things = (
        await session.scalars(
            select(Thing).where(Thing.owner_id == member.id, Thing.deleted_at.is_(None))
        )
    ).all()
    for thing in things:
        await delete_thing(session, urls, member, thing.id, now)
        thing.hidden = True

    actor = await find_local_actor(session, kind="person", username=member.username)
    assert actor is not None
    actor_uri = urls.actor("person", member.username)
    followed = (
        await session.execute(
            select(RemoteActor.inbox, RemoteActor.shared_inbox)
            .join(OutboundFollow, OutboundFollow.remote_actor_id == RemoteActor.id)
            .where(OutboundFollow.actor_id == actor.id, RemoteActor.deleted_at.is_(None))
        )
    ).all()
    inboxes = set(await follower_inboxes(session, actor.id))
    inboxes.update(shared or inbox for inbox, shared in followed)
    await enqueue_delivery(
        session,
        activity=delete_activity(
            actor_uri=actor_uri, object_uri=actor_uri, activity_uri=f"{actor_uri}#delete"
        ),
        actor_id=actor.id,
        inboxes=inboxes,
        now=now,
    )
    actor_ids = await member_actor_ids(session, member)
    await session.execute(delete(Follow).where(Follow.target_id.in_(actor_ids)))
    await session.execute(delete(OutboundFollow).where(OutboundFollow.actor_id == actor.id))
    await session.execute(
        update(Post)
        .where(Post.actor_id.in_(actor_ids), Post.deleted_at.is_(None))
        .values(deleted_at=now)
    )
    # Released, so the remote identity can be claimed again (by its real owner, later).
    await session.execute(delete(IdentityClaim).where(IdentityClaim.member_id == member.id))
    await session.execute(
        update(DepositRequest)
        .where(DepositRequest.member_id == member.id, DepositRequest.state == "open")
        .values(state="cancelled")
    )
    # The row stays with its username (the actor URI must never name someone else); all it
    # said about the person goes. An unusable hash: no log-in, and every session cookie's
    # fingerprint changes, so old cookies stop working at once.
    member.display_name = ""
    member.bio = ""
    member.password_hash = f"!deleted:{secrets.token_hex(16)}"
    member.monthly_budget_minor = None
    member.flattrs_public = False
    member.is_admin = False
    member.deleted_at = now
    await session.flush()


# --- export -------------------------------------------------------------------------------


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


async def _stream_rows(
    session: AsyncSession, query: Any, shape: Callable[[Any], dict[str, Any]]
) -> AsyncIterator[dict[str, Any]]:
    result = await session.stream(query.execution_options(yield_per=_EXPORT_BATCH))
    async for row in result:
        yield shape(row)


async def export_chunks(
    session: AsyncSession, urls: LocalUrls, member: Member, *, currency: str, now: datetime
) -> AsyncIterator[str]:
    """The member's data as one JSON object, in pieces (rows are streamed, never all held).

    Never included: the password hash, private keys, session data, other members' rows.
    """
    actor_ids = await member_actor_ids(session, member)
    handles = {
        row.id: (row.kind, row.username)
        for row in (
            await session.scalars(select(LocalActor).where(LocalActor.id.in_(actor_ids)))
        ).all()
    }
    money = await owed(session, member.id)
    head = {
        "format": EXPORT_FORMAT,
        "exported_at": now.isoformat(),
        "instance": urls.base_url,
        "currency": currency,
        "profile": {
            "username": member.username,
            "actor": urls.actor("person", member.username),
            "display_name": member.display_name,
            "bio": member.bio,
            "is_admin": member.is_admin,
            "flattrs_public": member.flattrs_public,
            "created_at": _iso(member.created_at),
            "approved_at": _iso(member.approved_at),
        },
        "budget": {"monthly_budget_minor": member.monthly_budget_minor, "currency": currency},
        "balances": {
            "currency": currency,
            "wallet_minor": money.wallet_minor,
            "earnings_pending_minor": money.earnings_pending_minor,
            "earnings_available_minor": money.earnings_available_minor,
            "payouts_pending_minor": money.payouts_pending_minor,
        },
    }
    yield json.dumps(head)[:-1]

    def actor_uri(actor_id: int) -> str:
        kind, username = handles[actor_id]
        return urls.actor(kind, username)

    thing_handles = {
        row.thing_id: row.username
        for row in (
            await session.scalars(
                select(LocalActor).where(
                    LocalActor.id.in_(actor_ids), LocalActor.thing_id.is_not(None)
                )
            )
        ).all()
    }

    sections: Sequence[tuple[str, Any, Callable[[Any], dict[str, Any]]]] = (
        (
            "things",
            select(Thing).where(Thing.owner_id == member.id).order_by(Thing.id),
            lambda row: {
                "id": row[0].id,
                "handle": thing_handles.get(row[0].id),
                "actor": urls.actor("thing", thing_handles.get(row[0].id, "")),
                "title": row[0].title,
                "description": row[0].description,
                "external_url": row[0].external_url,
                "category": row[0].category,
                "tags": row[0].tags,
                "language": row[0].language,
                "image_url": row[0].image_url,
                "hidden": row[0].hidden,
                "created_at": _iso(row[0].created_at),
                "deleted_at": _iso(row[0].deleted_at),
            },
        ),
        (
            "posts",
            select(Post).where(Post.actor_id.in_(actor_ids)).order_by(Post.id),
            lambda row: {
                "uri": row[0].uri,
                "actor": actor_uri(row[0].actor_id),
                "content_html": row[0].content,
                "published_at": _iso(row[0].published_at),
                "deleted_at": _iso(row[0].deleted_at),
            },
        ),
        (
            "flattrs_given",
            select(Flattr).where(Flattr.donor_id == member.id).order_by(Flattr.id),
            lambda row: {
                "like_uri": row[0].like_uri,
                "target": row[0].target_uri,
                "payee": row[0].payee_uri,
                "period": row[0].period,
                "counts_in_period": row[0].counts_in_period,
                "status": row[0].status,
                "created_at": _iso(row[0].created_at),
                "undone": row[0].undone_at is not None,
                "undone_at": _iso(row[0].undone_at),
            },
        ),
        (
            "likes_received",
            select(ReceivedLike)
            .where(ReceivedLike.target_id.in_(actor_ids))
            .order_by(ReceivedLike.id),
            lambda row: {
                "like_uri": row[0].like_uri,
                "from": row[0].actor_uri,
                "to": actor_uri(row[0].target_id),
                "object": row[0].object_uri,
                "flattr": row[0].flattr_period is not None,
                "period": row[0].flattr_period,
                "received_at": _iso(row[0].received_at),
                "undone": row[0].undone_at is not None,
                "undone_at": _iso(row[0].undone_at),
            },
        ),
        (
            "ledger_postings",
            select(
                LedgerTransaction.txid,
                LedgerTransaction.kind,
                LedgerTransaction.memo,
                LedgerTransaction.created_at,
                LedgerAccount.code,
                LedgerAccount.currency,
                LedgerPosting.amount_minor,
            )
            .join(LedgerPosting, LedgerPosting.transaction_id == LedgerTransaction.id)
            .join(LedgerAccount, LedgerAccount.id == LedgerPosting.account_id)
            .where(LedgerAccount.member_id == member.id)
            .order_by(LedgerPosting.id),
            lambda row: {
                "txid": row.txid,
                "kind": row.kind,
                "memo": row.memo,
                "at": _iso(row.created_at),
                "account": row.code,
                # Debit-positive, as the ledger stores it: a credit to your wallet is negative.
                "amount_minor": int(row.amount_minor),
                "currency": row.currency,
            },
        ),
        (
            "deposits",
            select(DepositRequest)
            .where(DepositRequest.member_id == member.id)
            .order_by(DepositRequest.id),
            lambda row: {
                "reference": row[0].reference,
                "provider": row[0].provider,
                "state": row[0].state,
                "amount_minor": row[0].amount_minor,
                "currency": currency,
                "bank_reference": row[0].bank_reference,
                "created_at": _iso(row[0].created_at),
                "credited_at": _iso(row[0].credited_at),
            },
        ),
        (
            "payouts",
            select(PayoutRequest)
            .where(PayoutRequest.member_id == member.id)
            .order_by(PayoutRequest.id),
            lambda row: {
                "id": row[0].id,
                "amount_minor": row[0].amount_minor,
                "currency": currency,
                "state": row[0].state,
                "bank_reference": row[0].bank_reference,
                "created_at": _iso(row[0].created_at),
                "paid_at": _iso(row[0].paid_at),
            },
        ),
        (
            "claims",
            select(IdentityClaim)
            .where(IdentityClaim.member_id == member.id)
            .order_by(IdentityClaim.id),
            lambda row: {
                "remote_actor": row[0].remote_actor_uri,
                "state": row[0].state,
                "created_at": _iso(row[0].created_at),
                "verified_at": _iso(row[0].verified_at),
            },
        ),
        (
            "followers",
            select(Follow.target_id, Follow.created_at, RemoteActor.uri)
            .join(RemoteActor, RemoteActor.id == Follow.follower_id)
            .where(Follow.target_id.in_(actor_ids))
            .order_by(Follow.id),
            lambda row: {
                "follower": row.uri,
                "follows": actor_uri(row.target_id),
                "since": _iso(row.created_at),
            },
        ),
        (
            "following",
            select(
                OutboundFollow.actor_id,
                OutboundFollow.created_at,
                OutboundFollow.accepted_at,
                RemoteActor.uri,
            )
            .join(RemoteActor, RemoteActor.id == OutboundFollow.remote_actor_id)
            .where(OutboundFollow.actor_id.in_(actor_ids))
            .order_by(OutboundFollow.id),
            lambda row: {
                "follower": actor_uri(row.actor_id),
                "follows": row.uri,
                "since": _iso(row.created_at),
                "accepted": row.accepted_at is not None,
            },
        ),
    )
    for name, query, shape in sections:
        yield f", {json.dumps(name)}: ["
        first = True
        async for item in _stream_rows(session, query, shape):
            yield ("" if first else ", ") + json.dumps(item)
            first = False
        yield "]"
    yield "}\n"
