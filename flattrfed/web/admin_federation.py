"""Admin screens of the federation: peers and credit limits, domain blocks, outbound deliveries.

Every handler starts with require_admin. Peering goes through flattring.peers (NodeInfo read
with the SSRF-guarded client before any transaction), blocks through activitypub.hosts.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aiohttp import web
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from flattrfed.activitypub.delivery import DELIVER_KIND
from flattrfed.activitypub.hosts import block_domain, unblock_domain
from flattrfed.activitypub.origins import BadUri, host_of, origin_of
from flattrfed.context import SERVICES
from flattrfed.db.models import (
    DomainBlock,
    FederationHost,
    InboundActivity,
    Peer,
    Statement,
    WorkItem,
    WorkState,
)
from flattrfed.flattring.peers import PeeringError, add_peer, discover_peer
from flattrfed.money import Money
from flattrfed.settlement import ledger
from flattrfed.settlement.exchange import WAITING
from flattrfed.web.admin import PAGE_SIZE, form_text, page_number, redirect_with
from flattrfed.web.render import render, require_admin, sentence
from flattrfed.worker import RetryLater

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

MAX_REASON = 500
# Hosts shown on the deliveries page: the busiest ones (the table of hosts is bounded anyway).
MAX_HOST_ROWS = 200
# Distinct inboxes read to count deliveries per host; past this the page says counts are partial.
MAX_INBOX_GROUPS = 2_000

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


def domain_syntax_error(domain: str) -> str | None:
    """Why `domain` is not a domain name to block (None when it is one): no scheme, port, path."""
    if not domain:
        return "give a domain name, like spam.example"
    if len(domain) > 253:
        return "a domain name has at most 253 characters"
    labels = domain.split(".")
    if len(labels) < 2:
        return f"{domain!r} is not a domain name with a dot, like spam.example"
    if not all(_LABEL.fullmatch(label) for label in labels):
        return (
            f"{domain!r} is not a domain name: use letters, digits, hyphens and dots only "
            "(no scheme, port, path or spaces)"
        )
    return None


def normalise_domain(text: str) -> str:
    """The block form's text as a domain: lower case, IDNA-encoded, no trailing dot."""
    text = text.strip().lower().rstrip(".")
    try:
        return text.encode("idna").decode("ascii") if not text.isascii() else text
    except UnicodeError:
        return text


def peer_host(text: str, allow_http: bool) -> str:
    """The host[:port] an admin typed, exactly as flattrfed keys hosts, or PeeringError."""
    text = text.strip().lower()
    scheme = "http" if allow_http else "https"
    try:
        host = host_of(f"{scheme}://{text}/", allow_http=allow_http)
    except BadUri:
        raise PeeringError(f"{text!r} is not a host name (like flattr.example)") from None
    # Anything that is not just a host (a path, userinfo, a query) would change the URL.
    if host != text or origin_of(f"{scheme}://{text}/", allow_http=allow_http) != (
        f"{scheme}://{text}"
    ):
        raise PeeringError(f"{text!r} is not a host name (like flattr.example)")
    return host


# --- instances and peering ---------------------------------------------------------------------


@dataclass
class PeerView:
    peer: Peer
    we_owe_minor: int
    they_owe_minor: int
    last_out: Statement | None
    last_in: Statement | None
    health: FederationHost | None


async def _latest_statement(session: AsyncSession, host: str, direction: str) -> Statement | None:
    return await session.scalar(
        select(Statement)
        .where(Statement.peer_host == host, Statement.direction == direction)
        .order_by(Statement.id.desc())
        .limit(1)
    )


async def _instances_page(
    request: web.Request, *, status: int = 200, error: str | None = None, entered: Any = None
) -> web.Response:
    services = request.app[SERVICES]
    allow_http = services.settings.allow_http
    page = page_number(request)
    async with services.database.sessions() as session:
        peers = (
            await session.scalars(
                select(Peer).order_by(Peer.host).offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)
            )
        ).all()
        views = []
        for peer in peers[:PAGE_SIZE]:
            views.append(
                PeerView(
                    peer=peer,
                    # A payable's credit balance is owed by us; a receivable's debit, by them.
                    we_owe_minor=-await ledger.balance(session, ledger.peer_payable(peer.host)),
                    they_owe_minor=await ledger.balance(session, ledger.peer_receivable(peer.host)),
                    last_out=await _latest_statement(session, peer.host, "out"),
                    last_in=await _latest_statement(session, peer.host, "in"),
                    health=await session.scalar(
                        select(FederationHost).where(FederationHost.host == peer.host)
                    ),
                )
            )
        paused = (
            await session.scalars(
                select(FederationHost)
                .where(
                    FederationHost.unavailable_since.is_not(None),
                    FederationHost.host.not_in(select(Peer.host)),
                )
                .order_by(FederationHost.unavailable_since.desc())
                .limit(MAX_HOST_ROWS)
            )
        ).all()
        # Instances that sent us statements before we peered with them: kept, not answered.
        waiting_rows = (
            await session.execute(
                select(
                    InboundActivity.actor_uri, func.count(), func.max(InboundActivity.received_at)
                )
                .where(
                    InboundActivity.type == "Offer",
                    InboundActivity.outcome.like(f"{WAITING}%"),
                )
                .group_by(InboundActivity.actor_uri)
                .order_by(func.max(InboundActivity.received_at).desc())
                .limit(MAX_HOST_ROWS)
            )
        ).all()
    waiting = [
        {"host": _host_or_none(actor, allow_http) or actor, "count": int(number), "last": last}
        for actor, number, last in waiting_rows
    ]
    return await render(
        request,
        "admin/instances.html",
        {
            "peers": views,
            "paused": paused,
            "waiting": waiting,
            "pager": {
                "page": page,
                "has_next": len(peers) > PAGE_SIZE,
                "path": "/admin/instances",
                "label": "peers",
                "fragment": "",
            },
            "error": error,
            "form": {key: form_text(entered, key) for key in ("host", "credit_limit", "note")}
            if entered is not None
            else {},
        },
        status=status,
    )


@routes.get("/admin/instances")
async def instances(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    return await _instances_page(request)


@routes.post("/admin/instances")
async def peer_add(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    services = request.app[SERVICES]
    settings = services.settings
    form = await request.post()
    now = services.clock.now()
    try:
        host = peer_host(form_text(form, "host", 300), settings.allow_http)
        if host == settings.host:
            raise PeeringError("that is this instance itself")
        try:
            limit = Money.parse(form_text(form, "credit_limit", 40), settings.currency)
        except ValueError as error:
            raise PeeringError(f"give the credit limit in {settings.currency}: {error}") from None
        # Network first (NodeInfo through the guarded client), then one short transaction.
        actor, currency = await discover_peer(services.nodeinfo, host, settings.currency, now)
        async with services.database.transaction() as session:
            await add_peer(
                session,
                host=host,
                clearing_actor=actor,
                currency=currency,
                credit_limit_minor=limit.amount_minor,
                now=now,
                note=form_text(form, "note", 500),
            )
    except PeeringError as error:
        return await _instances_page(request, status=400, error=sentence(error), entered=form)
    # Statements this instance sent before we peered were kept: verify them now (as the CLI).
    try:
        await services.exchange.process_waiting(host)
    except RetryLater as why:
        # The new peer's key could not be fetched just now: its statements stay waiting.
        log.warning("waiting statements not checked yet", extra={"peer": host, "why": str(why)})
    raise redirect_with("/admin/instances", "peer-added")


@routes.post("/admin/instances/credit-limit")
async def credit_limit(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    services = request.app[SERVICES]
    currency = services.settings.currency
    form = await request.post()
    try:
        limit = Money.parse(form_text(form, "credit_limit", 40), currency).amount_minor
    except ValueError as error:
        return await _instances_page(
            request, status=400, error=f"Give the credit limit in {currency}: {error}."
        )
    if limit < 0:
        return await _instances_page(
            request, status=400, error="A credit limit cannot be negative."
        )
    async with services.database.transaction() as session:
        peer = await session.scalar(select(Peer).where(Peer.host == form_text(form, "host", 300)))
        if peer is None:
            raise web.HTTPNotFound(text="No such peer.")
        peer.credit_limit_minor = limit
    raise redirect_with("/admin/instances", "credit-limit")


async def _resume(session: AsyncSession, host: str) -> bool:
    """Un-pause delivery to `host` (it stays known; its failure count starts again)."""
    result = await session.execute(
        update(FederationHost)
        .where(FederationHost.host == host)
        .values(failure_days=0, last_failure_day=None, unavailable_since=None)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


@routes.post("/admin/hosts/resume")
async def host_resume(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    services = request.app[SERVICES]
    form = await request.post()
    async with services.database.transaction() as session:
        if not await _resume(session, form_text(form, "host", 300)):
            raise web.HTTPNotFound(text="No such host.")
    back = form_text(form, "back", 40)
    raise redirect_with(
        "/admin/deliveries" if back == "deliveries" else "/admin/instances", "resumed"
    )


# --- domain blocks -----------------------------------------------------------------------------


async def _blocks_page(
    request: web.Request, *, status: int = 200, error: str | None = None, entered: Any = None
) -> web.Response:
    services = request.app[SERVICES]
    page = page_number(request)
    async with services.database.sessions() as session:
        rows = (
            await session.scalars(
                select(DomainBlock)
                .order_by(DomainBlock.domain)
                .offset((page - 1) * PAGE_SIZE)
                .limit(PAGE_SIZE + 1)
            )
        ).all()
        total = await session.scalar(select(func.count()).select_from(DomainBlock))
    return await render(
        request,
        "admin/blocks.html",
        {
            "blocks": rows[:PAGE_SIZE],
            "total": int(total or 0),
            "pager": {
                "page": page,
                "has_next": len(rows) > PAGE_SIZE,
                "path": "/admin/blocks",
                "label": "blocked domains",
                "fragment": "",
            },
            "error": error,
            "form": {
                "domain": form_text(entered, "domain", 300),
                "reason": form_text(entered, "reason", MAX_REASON),
            }
            if entered is not None
            else {},
        },
        status=status,
    )


@routes.get("/admin/blocks")
async def blocks(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    return await _blocks_page(request)


@routes.post("/admin/blocks")
async def block_add(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    services = request.app[SERVICES]
    form = await request.post()
    domain = normalise_domain(form_text(form, "domain", 300))
    problem = domain_syntax_error(domain)
    if problem is not None:
        return await _blocks_page(request, status=400, error=sentence(problem), entered=form)
    if domain == services.settings.host.split(":")[0]:
        return await _blocks_page(
            request, status=400, error="That is this instance's own domain.", entered=form
        )
    async with services.database.transaction() as session:
        await block_domain(
            session, domain, form_text(form, "reason", MAX_REASON), services.clock.now()
        )
    raise redirect_with("/admin/blocks", "blocked")


@routes.post("/admin/blocks/remove")
async def block_remove(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    services = request.app[SERVICES]
    form = await request.post()
    async with services.database.transaction() as session:
        if not await unblock_domain(session, form_text(form, "domain", 300)):
            raise web.HTTPNotFound(text="That domain is not blocked.")
    raise redirect_with("/admin/blocks", "unblocked")


# --- deliveries --------------------------------------------------------------------------------


@dataclass
class HostDeliveries:
    host: str
    pending: int = 0
    failed: int = 0
    health: FederationHost | None = None


def _inbox() -> Any:
    return WorkItem.payload["inbox"].as_string()


def _host_or_none(uri: str | None, allow_http: bool) -> str | None:
    try:
        return host_of(uri or "", allow_http=allow_http)
    except BadUri:
        return None


@routes.get("/admin/deliveries")
async def deliveries(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    services = request.app[SERVICES]
    allow_http = services.settings.allow_http
    page = page_number(request)
    async with services.database.sessions() as session:
        # Grouped by inbox in SQL (a peer has few inboxes), then by host here. The inbox is
        # taken out in a subquery: PostgreSQL would not see two JSON extractions with separate
        # bound keys as the same GROUP BY expression.
        waiting = (
            select(_inbox().label("inbox"), WorkItem.state.label("state"))
            .where(
                WorkItem.kind == DELIVER_KIND,
                WorkItem.state.in_([WorkState.PENDING, WorkState.FAILED]),
            )
            .subquery()
        )
        groups = (
            await session.execute(
                select(waiting.c.inbox, waiting.c.state, func.count())
                .group_by(waiting.c.inbox, waiting.c.state)
                .limit(MAX_INBOX_GROUPS + 1)
            )
        ).all()
        by_host: dict[str, HostDeliveries] = {}
        for inbox, state, count in groups[:MAX_INBOX_GROUPS]:
            host = _host_or_none(inbox, allow_http) or "(bad inbox URL)"
            entry = by_host.setdefault(host, HostDeliveries(host))
            if state == WorkState.PENDING:
                entry.pending += int(count)
            else:
                entry.failed += int(count)
        health_rows = (
            await session.scalars(
                select(FederationHost)
                .where(
                    or_(
                        FederationHost.unavailable_since.is_not(None),
                        FederationHost.failure_days > 0,
                        FederationHost.host.in_(list(by_host)[:MAX_HOST_ROWS]),
                    )
                )
                .order_by(FederationHost.last_failure_at.desc())
                .limit(MAX_HOST_ROWS)
            )
        ).all()
        for row in health_rows:
            by_host.setdefault(row.host, HostDeliveries(row.host)).health = row
        failures = (
            await session.scalars(
                select(WorkItem)
                .where(WorkItem.kind == DELIVER_KIND, WorkItem.last_error.is_not(None))
                .order_by(WorkItem.id.desc())
                .offset((page - 1) * PAGE_SIZE)
                .limit(PAGE_SIZE + 1)
            )
        ).all()
    hosts = sorted(
        by_host.values(),
        key=lambda entry: (
            entry.health is None or entry.health.unavailable_since is None,
            -(entry.pending + entry.failed),
            entry.host,
        ),
    )[:MAX_HOST_ROWS]
    return await render(
        request,
        "admin/deliveries.html",
        {
            "hosts": hosts,
            "counts_capped": len(groups) > MAX_INBOX_GROUPS,
            "failures": [
                {
                    "item": item,
                    "host": _host_or_none(item.payload.get("inbox"), allow_http) or "?",
                    "type": _activity_type(item.payload.get("activity")),
                }
                for item in failures[:PAGE_SIZE]
            ],
            "pager": {
                "page": page,
                "has_next": len(failures) > PAGE_SIZE,
                "path": "/admin/deliveries",
                "label": "recent failures",
                "fragment": "#failures-heading",
            },
        },
    )


def _activity_type(activity: Any) -> str:
    if not isinstance(activity, dict):
        return "?"
    kind = activity.get("type")
    embedded = activity.get("object")
    inner = embedded.get("type") if isinstance(embedded, dict) else None
    text = f"{kind}" + (f" of {inner}" if isinstance(inner, str) else "")
    return text[:80]


async def retry_host_now(session: AsyncSession, host: str, now: datetime) -> int:
    """Un-pause `host` and make its waiting deliveries due now; how many were waiting."""
    await _resume(session, host)
    prefixes = [f"https://{host}/", f"http://{host}/"]
    result = await session.execute(
        update(WorkItem)
        .where(
            WorkItem.kind == DELIVER_KIND,
            WorkItem.state == WorkState.PENDING,
            or_(*(_inbox().startswith(prefix, autoescape=True) for prefix in prefixes)),
        )
        .values(run_after=now)
        .execution_options(synchronize_session=False)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


@routes.post("/admin/deliveries/retry")
async def deliveries_retry(request: web.Request) -> web.StreamResponse:
    await require_admin(request)
    services = request.app[SERVICES]
    form = await request.post()
    host = form_text(form, "host", 300)
    try:
        peer_host(host, services.settings.allow_http)
    except PeeringError:
        raise web.HTTPBadRequest(text="Not a host name.") from None
    async with services.database.transaction() as session:
        await retry_host_now(session, host, services.clock.now())
    services.worker.wake()
    raise redirect_with("/admin/deliveries", "retrying")
