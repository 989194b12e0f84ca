"""The inbox: caps, parses, verifies and origin-checks a delivery, stores it once, answers 202."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from sqlalchemy import select

from flattrfed.activitypub import signatures
from flattrfed.activitypub.actors import is_visible
from flattrfed.activitypub.documents import has_activitystreams_context
from flattrfed.activitypub.hosts import block_list
from flattrfed.activitypub.inbox_writer import (
    INBOUND_KIND,
    INBOX_WRITER,
    Arrival,
    NotStored,
    WriterClosed,
)
from flattrfed.activitypub.jsonlimits import JsonLimitError, parse_json_limited
from flattrfed.activitypub.keys import KeyUnavailable
from flattrfed.activitypub.origins import BadUri, domain_of, host_of, origin_of
from flattrfed.activitypub.reading import activity_type, id_of
from flattrfed.context import SERVICES, Services
from flattrfed.db.models import LocalActor

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

MAX_BODY_BYTES = 1_048_576
__all__ = ["INBOUND_KIND", "MAX_BODY_BYTES", "Envelope", "Refused", "receive", "routes"]


class Refused(Exception):
    """The delivery is refused with `status`; `reason` is logged, and sent as a short code."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True)
class Envelope:
    """The few fields of an activity the inbox checks before storing it."""

    activity_id: str
    type: str
    actor_uri: str


def envelope(activity: dict[str, Any], allow_http: bool) -> Envelope:
    if not has_activitystreams_context(activity):
        raise Refused(400, "context")
    kind = activity_type(activity.get("type"))
    activity_id = activity.get("id")
    actor_uri = id_of(activity.get("actor"))
    if kind is None or not isinstance(activity_id, str) or actor_uri is None:
        raise Refused(400, "shape")
    try:
        actor_origin = origin_of(actor_uri, allow_http=allow_http)
        activity_origin = origin_of(activity_id, allow_http=allow_http)
    except BadUri:
        raise Refused(400, "uri") from None
    # FEP-fe34: an actor can only speak for ids on its own origin.
    if actor_origin != activity_origin:
        raise Refused(400, "origin")
    return Envelope(activity_id, kind, actor_uri)


async def read_capped(request: web.Request) -> bytes:
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise Refused(413, "too_large")
    chunks: list[bytes] = []
    total = 0
    while True:
        chunk = await request.content.read(65_536)
        if not chunk:
            break
        total += len(chunk)
        if total > MAX_BODY_BYTES:
            raise Refused(413, "too_large")
        chunks.append(chunk)
    return b"".join(chunks)


async def verify_request(
    services: Services, request: web.Request, body: bytes, actor_uri: str, kind: str
) -> None:
    """The signature must verify with a key whose verified owner is the activity's actor."""
    try:
        parsed = signatures.parse_signature(
            request.method,
            request.raw_path,
            request.headers,
            body,
            services.clock.now(),
            origin=services.settings.base_url,
        )
    except signatures.SignatureError as error:
        raise Refused(401, f"signature_{error.reason}") from None
    try:
        key = await services.keys.resolve(parsed.key_id)
    except KeyUnavailable as error:
        if (
            error.gone
            and kind == "Delete"
            and signatures.key_id_without_fragment(parsed.key_id) == actor_uri
        ):
            # An actor deleting itself: its key is gone with it (Mastodon answers 202 too).
            raise Refused(202, "self_delete_unverifiable") from None
        raise Refused(401, "key_unavailable") from None
    try:
        signatures.verify_parsed(parsed, key.public_key)
    except signatures.SignatureError:
        # The actor may have rotated its key: refetch once and try again.
        try:
            key = await services.keys.resolve(parsed.key_id, refresh=True)
            signatures.verify_parsed(parsed, key.public_key)
        except (KeyUnavailable, signatures.SignatureError):
            raise Refused(401, "signature_mismatch") from None
    if key.owner_uri != actor_uri:
        # The request is authentic, but its signer may not speak for this actor: 403, which
        # senders treat as final (a 401 would be retried for days by Mastodon and Fedify).
        raise Refused(403, "key_not_owned_by_actor")


async def receive(request: web.Request) -> web.Response:
    services = request.app[SERVICES]
    settings = services.settings
    try:
        body = await read_capped(request)
        try:
            activity = parse_json_limited(body, max_bytes=MAX_BODY_BYTES)
        except JsonLimitError as error:
            raise Refused(error.http_status, f"json_{error.reason}") from None
        env = envelope(activity, settings.allow_http)
        if services.urls.owns(env.actor_uri):
            raise Refused(400, "claims_local_actor")
        domain = domain_of(env.actor_uri, allow_http=settings.allow_http)
        if await block_list(services.database.engine).is_blocked(domain):
            # Accepted and dropped: a blocked server learns nothing from the answer.
            return web.Response(status=202)
        await verify_request(services, request, body, env.actor_uri, env.type)
        arrival = Arrival(
            env.activity_id,
            env.actor_uri,
            env.type,
            activity,
            host_of(env.actor_uri, allow_http=settings.allow_http),
        )
        try:
            # Group commit: answered once the batch holding this activity has committed.
            await request.app[INBOX_WRITER].store(arrival)
        except WriterClosed:
            raise Refused(503, "shutting_down") from None
        except NotStored:
            # Never 202 what is not durable: the sender retries later.
            raise Refused(500, "not_stored") from None
    except Refused as refusal:
        if refusal.status == 202:
            return web.Response(status=202)
        log.info(
            "inbox refused a delivery",
            extra={"status": refusal.status, "reason": refusal.reason, "path": request.path},
        )
        response = web.json_response({"error": refusal.reason}, status=refusal.status)
        if refusal.status == 413:
            response.force_close()
        return response
    services.worker.wake()
    return web.Response(status=202)


async def _require_actor(request: web.Request, kind: str) -> None:
    """The personal inbox of an actor that exists and is visible (hidden things have none)."""
    services = request.app[SERVICES]
    async with services.database.sessions() as session:
        found = await session.scalar(
            select(LocalActor).where(
                LocalActor.kind == kind, LocalActor.username == request.match_info["name"]
            )
        )
        if found is None or not await is_visible(session, found):
            raise web.HTTPNotFound()


@routes.post("/inbox")
@routes.post("/actor/inbox")
async def shared_inbox(request: web.Request) -> web.Response:
    return await receive(request)


@routes.post("/users/{name}/inbox")
async def member_inbox(request: web.Request) -> web.Response:
    await _require_actor(request, "person")
    return await receive(request)


@routes.post("/things/{name}/inbox")
async def thing_inbox(request: web.Request) -> web.Response:
    await _require_actor(request, "thing")
    return await receive(request)
