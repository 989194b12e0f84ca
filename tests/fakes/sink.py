"""A fake remote server on loopback: Mastodon-shaped actors, inboxes that record and answer on cue.

The sink plays "another fediverse server" for delivery tests. It serves actor documents for
any number of fake actors (each with its own RSA key, an inbox and, optionally, the server's
shared inbox), records every POST it receives (headers, body, the test clock's time, what it
answered), checks each one's draft-cavage signature against the sender's published key, and
answers from a script of replies: statuses with headers (Retry-After, Location), a stall that
holds the request until released, or a dropped connection. It can also stop listening
(connection refused) and come back on the same port.

Its actors can sign activities to a real instance (a Follow, say), so an instance learns
about them the way it would learn about a Mastodon account. Everything listens on loopback and
is reached by a name (`sink.test`) that the federation's LoopbackResolver maps to it.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from flattrfed.activitypub import signatures
from flattrfed.activitypub.documents import ACTIVITY_JSON, AS_CONTEXT, SECURITY_CONTEXT
from flattrfed.clock import Clock
from tests.harness.resolver import LoopbackResolver

ACTIVITY_JSON_UTF8 = f"{ACTIVITY_JSON}; charset=utf-8"


@cache
def _private_key(index: int) -> signatures.PrivateKey:
    # RSA key generation costs ~0.1 s; the same few keys serve every sink of the run.
    return signatures.generate_rsa_key()


@dataclass(frozen=True)
class Reply:
    """One scripted answer to a POST: a status with headers, a stall, or a dropped connection."""

    status: int = 202
    headers: Mapping[str, str] = field(default_factory=dict)
    stall: bool = False  # hold the request until `InboxSink.release()` (or the sink closes)
    drop: bool = False  # close the connection without answering

    @classmethod
    def of(cls, value: Reply | int) -> Reply:
        return value if isinstance(value, Reply) else cls(value)


STALL = Reply(stall=True)
DROP = Reply(drop=True)


@dataclass
class Delivery:
    """A POST the sink received, as it arrived, with what the sink made of its signature."""

    method: str
    path: str
    headers: CIMultiDict[str]
    body: bytes
    at: datetime
    answer: Reply
    signature: signatures.ParsedSignature | None = None
    # None when the signature verified against the key its keyId names (fetched from the
    # sender); otherwise why not.
    signature_error: str | None = "not checked"
    key_pem: str | None = None  # the public key that verified it

    @property
    def activity(self) -> dict[str, Any]:
        document = json.loads(self.body)
        assert isinstance(document, dict)
        return document

    @property
    def type(self) -> str | None:
        kind = self.activity.get("type")
        return kind if isinstance(kind, str) else None

    @property
    def verified(self) -> bool:
        return self.signature_error is None

    def verify_with(self, public_key: signatures.PublicKey) -> None:
        """Raise SignatureError unless the signature verifies with `public_key`."""
        assert self.signature is not None, self.signature_error
        signatures.verify_parsed(self.signature, public_key)


@dataclass(frozen=True)
class FakeActor:
    """A Mastodon-style account on the sink, with its own key."""

    username: str
    uri: str
    inbox: str
    shared_inbox: str | None
    private_key: signatures.PrivateKey

    @property
    def key_id(self) -> str:
        return f"{self.uri}#main-key"

    @property
    def public_key_pem(self) -> str:
        return signatures.public_key_to_pem(self.private_key.public_key())

    def document(self) -> dict[str, Any]:
        """The actor document, shaped like Mastodon's (publicKey, inbox, endpoints)."""
        base = self.uri.split("/users/", 1)[0]
        document: dict[str, Any] = {
            "@context": [
                AS_CONTEXT,
                SECURITY_CONTEXT,
                {"toot": "http://joinmastodon.org/ns#", "discoverable": "toot:discoverable"},
            ],
            "id": self.uri,
            "type": "Person",
            "preferredUsername": self.username,
            "name": self.username.title(),
            "summary": "",
            "url": f"{base}/@{self.username}",
            "inbox": self.inbox,
            "outbox": f"{self.uri}/outbox",
            "followers": f"{self.uri}/followers",
            "following": f"{self.uri}/following",
            "manuallyApprovesFollowers": False,
            "discoverable": True,
            "publicKey": {
                "id": self.key_id,
                "owner": self.uri,
                "publicKeyPem": self.public_key_pem,
            },
        }
        if self.shared_inbox is not None:
            document["endpoints"] = {"sharedInbox": self.shared_inbox}
        return document


class InboxSink:
    """One fake remote server, reachable as http://NAME:PORT through the test resolver."""

    def __init__(
        self,
        resolver: LoopbackResolver,
        clock: Clock,
        name: str = "sink.test",
        *,
        verify_signatures: bool = True,
    ) -> None:
        self.resolver = resolver
        self.clock = clock
        self.name = name
        self.verify_signatures = verify_signatures
        self.actors: dict[str, FakeActor] = {}  # by the path segment after /users/
        self.received: list[Delivery] = []
        self.fetches: list[str] = []  # paths of GETs, in order
        self.default = Reply(202)
        self._script: deque[Reply] = deque()
        self._release = asyncio.Event()
        self._arrived = asyncio.Condition()
        self._keys: dict[str, tuple[signatures.PublicKey, str]] = {}
        self._port = 0
        self._runner: web.AppRunner | None = None
        self._site: web.SockSite | None = None
        self._http: aiohttp.ClientSession | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> InboxSink:
        app = web.Application()
        app.router.add_get("/users/{name}", self._actor)
        app.router.add_post("/{tail:.*}", self._inbox)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        await self._listen()
        self.resolver.add(self.name)
        connector = aiohttp.TCPConnector(resolver=self.resolver, force_close=True)
        self._http = aiohttp.ClientSession(connector=connector)
        return self

    async def _listen(self) -> None:
        assert self._runner is not None
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self._port))
        self._port = sock.getsockname()[1]
        self._site = web.SockSite(self._runner, sock)
        await self._site.start()

    async def go_down(self) -> None:
        """Stop listening: new connections are refused until `come_up()`."""
        if self._site is not None:
            await self._site.stop()
            self._site = None

    async def come_up(self) -> None:
        """Listen again on the same port."""
        if self._site is None:
            await self._listen()

    async def close(self) -> None:
        self._release.set()  # let stalled handlers finish so the runner can shut down
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    # --- addresses and actors ------------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"{self.name}:{self._port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    @property
    def shared_inbox(self) -> str:
        return f"{self.base_url}/inbox"

    def add_actor(
        self, username: str, *, shared_inbox: bool = True, path: str | None = None
    ) -> FakeActor:
        """A new account at /users/PATH (PATH defaults to the username).

        With shared_inbox=False its document has no endpoints.sharedInbox, so it is delivered
        to at its own inbox.
        """
        path = path or username
        uri = f"{self.base_url}/users/{path}"
        actor = FakeActor(
            username=username,
            uri=uri,
            inbox=f"{uri}/inbox",
            shared_inbox=self.shared_inbox if shared_inbox else None,
            private_key=_private_key(len(self.actors) % 8),
        )
        self.actors[path] = actor
        return actor

    # --- scripting answers ---------------------------------------------------------------------

    def answer(self, *replies: Reply | int) -> None:
        """Answer the next POSTs with these, in order; afterwards with `default`."""
        self._script.extend(Reply.of(reply) for reply in replies)

    def answer_always(self, reply: Reply | int) -> None:
        """Drop the script and answer every POST from now on with `reply`."""
        self._script.clear()
        self.default = Reply.of(reply)

    def release(self) -> None:
        """Let every stalled request (and any later stall) finish with a 202."""
        self._release.set()

    # --- what arrived --------------------------------------------------------------------------

    def deliveries(self, type: str | None = None, path: str | None = None) -> list[Delivery]:
        return [
            delivery
            for delivery in self.received
            if (type is None or delivery.type == type) and (path is None or delivery.path == path)
        ]

    async def wait_for_requests(self, count: int, seconds: float = 30.0) -> None:
        """Wait (in real time, briefly) until `count` POSTs have arrived in all."""
        async with asyncio.timeout(seconds), self._arrived:
            await self._arrived.wait_for(lambda: len(self.received) >= count)

    # --- sending as one of our actors ----------------------------------------------------------

    async def send(self, actor: FakeActor, inbox: str, activity: dict[str, Any]) -> int:
        """POST `activity` to `inbox` signed by `actor` as Mastodon signs; returns the status."""
        assert self._http is not None, "start() first"
        body = json.dumps(activity).encode()
        headers = signatures.sign_request(
            private_key=actor.private_key,
            key_id=actor.key_id,
            method="POST",
            url=inbox,
            headers={"Content-Type": ACTIVITY_JSON},
            body=body,
            now=self.clock.now(),
        )
        async with self._http.post(inbox, data=body, headers=headers) as response:
            await response.read()
            return response.status

    async def follow(self, actor: FakeActor, target_uri: str, inbox: str, serial: int = 1) -> int:
        """`actor` follows `target_uri` (delivered to `inbox`); returns the inbox's status."""
        activity = {
            "@context": AS_CONTEXT,
            "id": f"{actor.uri}#follows/{serial}",
            "type": "Follow",
            "actor": actor.uri,
            "object": target_uri,
        }
        return await self.send(actor, inbox, activity)

    # --- the handlers --------------------------------------------------------------------------

    async def _actor(self, request: web.Request) -> web.Response:
        self.fetches.append(request.path)
        actor = self.actors.get(request.match_info["name"])
        if actor is None:
            raise web.HTTPNotFound()
        return web.Response(
            body=json.dumps(actor.document()).encode(),
            headers={"Content-Type": ACTIVITY_JSON_UTF8},
        )

    async def _inbox(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        reply = self._script.popleft() if self._script else self.default
        delivery = Delivery(
            method=request.method,
            path=request.path,
            headers=CIMultiDict(request.headers),
            body=body,
            at=self.clock.now(),
            answer=reply,
        )
        if self.verify_signatures:
            await self._check_signature(request, delivery)
        async with self._arrived:
            self.received.append(delivery)
            self._arrived.notify_all()
        if reply.stall:
            await self._release.wait()
            return web.Response(status=202)
        if reply.drop:
            assert request.transport is not None
            request.transport.abort()
        response = web.Response(status=reply.status, headers=dict(reply.headers))
        # No keep-alive: after go_down(), a pooled connection must not keep the sink reachable.
        response.force_close()
        return response

    async def _check_signature(self, request: web.Request, delivery: Delivery) -> None:
        """Verify like Mastodon: parse, fetch the keyId's key, and refetch once on a mismatch."""
        try:
            parsed = signatures.parse_signature(
                request.method,
                request.raw_path,
                request.headers,
                delivery.body,
                self.clock.now(),
                origin=self.base_url,
            )
        except signatures.SignatureError as error:
            delivery.signature_error = f"parse: {error}"
            return
        delivery.signature = parsed
        for refresh in (False, True):
            try:
                public_key, pem = await self._key(parsed.key_id, refresh=refresh)
                signatures.verify_parsed(parsed, public_key)
            except (signatures.SignatureError, LookupError, aiohttp.ClientError) as error:
                delivery.signature_error = f"{type(error).__name__}: {error}"
                continue
            delivery.signature_error = None
            delivery.key_pem = pem
            return

    async def _key(self, key_id: str, *, refresh: bool) -> tuple[signatures.PublicKey, str]:
        if not refresh and key_id in self._keys:
            return self._keys[key_id]
        assert self._http is not None
        url = signatures.key_id_without_fragment(key_id)
        async with self._http.get(url, headers={"Accept": ACTIVITY_JSON}) as response:
            if response.status != 200:
                raise LookupError(f"key fetch answered {response.status}")
            document = await response.json(content_type=None)
        key = document.get("publicKey") if isinstance(document, dict) else None
        if not isinstance(key, dict) or key.get("id") != key_id:
            raise LookupError("the actor document does not list that key")
        pem = str(key["publicKeyPem"])
        found = (signatures.load_public_key_pem(pem), pem)
        self._keys[key_id] = found
        return found
