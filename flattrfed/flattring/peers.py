"""Peering: the flattrfed instances we clear with, each with a credit limit."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.nodeinfo import NodeInfoCache, flattrfed_metadata
from flattrfed.activitypub.origins import BadUri, host_of
from flattrfed.db.models import Peer


class PeeringError(ValueError):
    """An instance cannot be peered as asked; the message says why."""


async def discover_peer(
    nodeinfo: NodeInfoCache, host: str, our_currency: str, now: datetime
) -> tuple[str, str]:
    """(clearing actor, currency) `host` advertises; refuses non-flattrfed and other currencies.

    Done before the database transaction that records the peer (no network inside it).
    """
    advertised = flattrfed_metadata(await nodeinfo.get(host, now))
    if advertised is None:
        raise PeeringError(f"{host} does not advertise flattrfed in its NodeInfo")
    currency = str(advertised["currency"])
    if currency != our_currency:
        raise PeeringError(
            f"{host} clears in {currency} and this instance in {our_currency}; "
            "clearing is only possible between instances of the same currency"
        )
    clearing_actor = str(advertised["clearingActor"])
    try:
        if host_of(clearing_actor, allow_http=nodeinfo.allow_http) != host:
            raise PeeringError(f"{host} names a clearing actor on another host")
    except BadUri:
        raise PeeringError(f"{host} advertises an unusable clearing actor") from None
    return clearing_actor, currency


async def add_peer(
    session: AsyncSession,
    *,
    host: str,
    clearing_actor: str,
    currency: str,
    credit_limit_minor: int,
    now: datetime,
    note: str = "",
) -> Peer:
    if credit_limit_minor < 0:
        raise PeeringError("a credit limit cannot be negative")
    peer = await session.scalar(select(Peer).where(Peer.host == host))
    if peer is None:
        peer = Peer(host=host, peered_at=now)
        session.add(peer)
    peer.clearing_actor = clearing_actor
    peer.currency = currency
    peer.credit_limit_minor = credit_limit_minor
    peer.note = note
    await session.flush()
    return peer


async def peer_for_host(session: AsyncSession, host: str) -> Peer | None:
    return await session.scalar(select(Peer).where(Peer.host == host))
