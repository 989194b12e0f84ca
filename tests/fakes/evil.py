"""A hostile fake fediverse server for attack tests, and a listener that only counts connections.

`EvilServer` is an aiohttp app on a loopback address (127.0.0.1 unless told otherwise),
reached by a name such as `evil.test` through the federation's LoopbackResolver. Every path
answers whatever the test scripted for it: any JSON with any content type and status,
redirects, bodies that are huge, announced but never sent, or trickled a byte at a time, or a
handler of the test's own. Every request it receives is recorded, so a test can assert that
an instance never fetched anything. Unscripted POSTs are answered 202 (an accepting inbox),
unscripted GETs 404.

It hosts actors (`add_actor`) with their own RSA or Ed25519 keys, and sends activities to an
instance's inbox as them: signed correctly with our own signatures module, or signed wrongly
on purpose (another key, another label, a chosen Digest, chosen covered headers or RFC 9421
components, see `sign_cavage` and `sign_rfc9421`), or not signed at all.

`CountingListener` plays an address the instance must never reach: a raw TCP listener that
counts accepted connections and answers like a real peer would, so a connection the SSRF
guard let through shows up as a count rather than as some incidental error.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cache
from typing import Any, Literal
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from multidict import CIMultiDict

from flattrfed.activitypub import signatures
from flattrfed.activitypub.documents import ACTIVITY_JSON, AS_CONTEXT, SECURITY_CONTEXT
from flattrfed.clock import Clock
from tests.harness.resolver import LoopbackResolver

__all__ = [
    "Answer",
    "CountingListener",
    "EvilActor",
    "EvilServer",
    "KeyKind",
    "Reply",
    "Seen",
    "ed25519_key",
    "rsa_key",
    "sign_cavage",
    "sign_rfc9421",
]

KeyKind = Literal["rsa", "ed25519"]
Scheme = Literal["cavage", "rfc9421", "none"]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_CHUNK = 65_536


@cache
def rsa_key(index: int = 0) -> rsa.RSAPrivateKey:
    """A 2048-bit RSA key; generation costs ~0.1 s, so each index is made once per run."""
    return signatures.generate_rsa_key()


@cache
def ed25519_key(index: int = 0) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _key(kind: KeyKind, index: int) -> signatures.PrivateKey:
    return rsa_key(index) if kind == "rsa" else ed25519_key(index)


def public_pem(private_key: signatures.PrivateKey) -> str:
    return signatures.public_key_to_pem(private_key.public_key())


def raw_sign(private_key: signatures.PrivateKey, base: bytes) -> bytes:
    """RSASSA-PKCS1-v1_5 with SHA-256 for RSA keys, plain Ed25519 otherwise."""
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(base, padding.PKCS1v15(), hashes.SHA256())
    return private_key.sign(base)


# --- scripted answers ------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """What the server answers on one path.

    `body` goes first. Then `stream_bytes` filler bytes (spaces, valid JSON whitespace) in
    chunks of `chunk_size`, sleeping `interval` seconds between chunks: a huge body with
    chunk_size=65536, a trickle with chunk_size=1 and interval=0.05. `announce_length` sends
    that Content-Length whatever follows (otherwise the body is chunked when streaming), and
    `stall` then holds the connection open until the server closes.
    """

    status: int = 200
    body: bytes = b""
    content_type: str | None = ACTIVITY_JSON
    headers: Mapping[str, str] = field(default_factory=dict)
    delay: float = 0.0
    stream_bytes: int = 0
    chunk_size: int = _CHUNK
    interval: float = 0.0
    announce_length: int | None = None
    stall: bool = False

    @classmethod
    def json(
        cls,
        document: Any,
        *,
        status: int = 200,
        content_type: str | None = ACTIVITY_JSON,
        headers: Mapping[str, str] | None = None,
    ) -> Reply:
        return cls(
            status=status,
            body=json.dumps(document).encode(),
            content_type=content_type,
            headers=dict(headers or {}),
        )

    @classmethod
    def redirect(cls, location: str, status: int = 302) -> Reply:
        return cls(status=status, content_type=None, headers={"Location": location})

    @property
    def streams(self) -> bool:
        return bool(self.stream_bytes or self.announce_length is not None or self.stall)


Route = Reply | Handler


@dataclass(frozen=True)
class Seen:
    """A request the server received (the body only if it was read: POSTs, not GETs)."""

    method: str
    path: str
    query_string: str
    headers: Mapping[str, str]
    body: bytes


@dataclass(frozen=True)
class Answer:
    """What an instance answered to a POST we sent."""

    status: int
    body: bytes

    @property
    def error(self) -> str | None:
        """The inbox's short refusal code, if it answered one."""
        try:
            document = json.loads(self.body)
        except ValueError:
            return None
        return str(document.get("error")) if isinstance(document, dict) else None


# --- request signing, right and wrong --------------------------------------------------------


def _target(url: str) -> tuple[str, str, str]:
    parts = urlsplit(url)
    return (
        parts.scheme,
        parts.netloc.lower(),
        (parts.path or "/") + (f"?{parts.query}" if parts.query else ""),
    )


def sign_cavage(
    *,
    private_key: signatures.PrivateKey,
    key_id: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    covered: Sequence[str],
    algorithm: str | None = "rsa-sha256",
    created: int | None = None,
    expires: int | None = None,
    signed_target: str | None = None,
) -> dict[str, str]:
    """A draft-cavage signature over exactly `covered`, taken from `headers` as given.

    Unlike signatures.sign_request this computes nothing for the caller: Digest, Date and Host
    are whatever `headers` holds, the label is `algorithm` (None leaves it out), and
    `(request-target)` signs `signed_target` when given instead of the URL's path and query.
    The signature itself is always genuine for the key.
    """
    _scheme, _authority, target = _target(url)
    lowered = {name.lower(): value for name, value in headers.items()}
    lines = []
    for name in covered:
        if name == "(request-target)":
            value = f"{method.lower()} {signed_target if signed_target is not None else target}"
        elif name == "(created)":
            value = str(created)
        elif name == "(expires)":
            value = str(expires)
        else:
            value = lowered[name]
        lines.append(f"{name}: {value}")
    signature = base64.b64encode(raw_sign(private_key, "\n".join(lines).encode())).decode()
    params = [f'keyId="{key_id}"']
    if algorithm is not None:
        params.append(f'algorithm="{algorithm}"')
    if created is not None:
        params.append(f"created={created}")
    if expires is not None:
        params.append(f"expires={expires}")
    params.append(f'headers="{" ".join(covered)}"')
    params.append(f'signature="{signature}"')
    out = dict(headers)
    out["Signature"] = ",".join(params)
    return out


def sign_rfc9421(
    *,
    private_key: signatures.PrivateKey,
    key_id: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    components: Sequence[str],
    created: int | None,
    alg: str | None = "rsa-v1_5-sha256",
    labels: Sequence[str] = ("sig1",),
) -> dict[str, str]:
    """An RFC 9421 signature over exactly `components` (values from `headers` and the URL).

    `created=None` leaves the parameter out. Several `labels` repeat the same signature under
    each label, for "more than one signature" tests.
    """
    scheme, authority, target = _target(url)
    lowered = {name.lower(): value for name, value in headers.items()}
    derived = {
        "@method": method.upper(),
        "@target-uri": f"{scheme}://{authority}{target}",
        "@authority": authority,
        "@request-target": target,
        "@path": target.partition("?")[0],
    }
    params = ""
    if created is not None:
        params += f";created={created}"
    params += f';keyid="{key_id}"'
    if alg is not None:
        params += f';alg="{alg}"'
    signature_params = "(" + " ".join(f'"{name}"' for name in components) + ")" + params
    lines = [f'"{name}": {derived.get(name) or lowered[name]}' for name in components]
    lines.append(f'"@signature-params": {signature_params}')
    signature = base64.b64encode(raw_sign(private_key, "\n".join(lines).encode())).decode()
    out = dict(headers)
    out["Host"] = authority
    out["Signature-Input"] = ", ".join(f"{label}={signature_params}" for label in labels)
    out["Signature"] = ", ".join(f"{label}=:{signature}:" for label in labels)
    return out


# --- actors ----------------------------------------------------------------------------------


@dataclass
class EvilActor:
    """An account on an EvilServer with its own key; `overrides` change its served document."""

    server: EvilServer
    username: str
    uri: str
    private_key: signatures.PrivateKey
    key_id: str
    overrides: dict[str, Any] = field(default_factory=dict)
    _serial: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def public_key_pem(self) -> str:
        return public_pem(self.private_key)

    @property
    def inbox(self) -> str:
        return f"{self.uri}/inbox"

    def document(self) -> dict[str, Any]:
        """A valid Mastodon-shaped actor document, then `overrides` (None deletes a key)."""
        document: dict[str, Any] = {
            "@context": [AS_CONTEXT, SECURITY_CONTEXT],
            "id": self.uri,
            "type": "Person",
            "preferredUsername": self.username,
            "name": self.username.title(),
            "inbox": self.inbox,
            "outbox": f"{self.uri}/outbox",
            "followers": f"{self.uri}/followers",
            "endpoints": {"sharedInbox": self.server.url("/inbox")},
            "publicKey": {
                "id": self.key_id,
                "owner": self.uri,
                "publicKeyPem": self.public_key_pem,
            },
        }
        for name, value in self.overrides.items():
            if value is None:
                document.pop(name, None)
            else:
                document[name] = value
        return document

    def new_id(self, what: str = "activities") -> str:
        return f"{self.uri}/{what}/{next(self._serial)}"

    def activity(self, kind: Any, obj: Any, **extra: Any) -> dict[str, Any]:
        """An activity by this actor with a fresh id on its own origin."""
        activity: dict[str, Any] = {
            "@context": AS_CONTEXT,
            "id": self.new_id(),
            "type": kind,
            "actor": self.uri,
            "object": obj,
        }
        activity.update(extra)
        return activity

    async def deliver(self, inbox: str, activity: dict[str, Any] | bytes, **options: Any) -> Answer:
        """POST `activity` to `inbox`, signed with this actor's key (see EvilServer.deliver)."""
        options.setdefault("key_id", self.key_id)
        options.setdefault("private_key", self.private_key)
        return await self.server.deliver(inbox, activity, **options)


# --- the server ------------------------------------------------------------------------------


class EvilServer:
    """A scriptable hostile server at http://NAME:PORT (see the module docstring)."""

    def __init__(
        self,
        resolver: LoopbackResolver,
        clock: Clock,
        name: str = "evil.test",
        *,
        address: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.resolver = resolver
        self.clock = clock
        self.name = name
        self.address = address
        self.port = port
        self.routes: dict[str, Route] = {}
        self.requests: list[Seen] = []
        self.actors: dict[str, EvilActor] = {}
        self.streamed_bytes = 0
        self._released = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> EvilServer:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.address, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.resolver.add(self.name, self.address)
        connector = aiohttp.TCPConnector(resolver=self.resolver, force_close=True)
        self._http = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=30)
        )
        return self

    async def close(self) -> None:
        self._released.set()  # stalled and streaming handlers stop
        if self._http is not None:
            await self._http.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def __aenter__(self) -> EvilServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- addresses, routes, actors -------------------------------------------------------------

    @property
    def host(self) -> str:
        return f"{self.name}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}"

    def url(self, path: str, *, host: str | None = None) -> str:
        return f"http://{host or self.name}:{self.port}{path}"

    def route(self, path: str, route: Route) -> str:
        """Answer `path` (exact, without query) with `route`; returns its URL."""
        self.routes[path] = route
        return self.url(path)

    def serve_json(
        self,
        path: str,
        document: Any,
        *,
        status: int = 200,
        content_type: str | None = ACTIVITY_JSON,
    ) -> str:
        return self.route(path, Reply.json(document, status=status, content_type=content_type))

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        return self.route(path, Reply.redirect(location, status))

    def add_actor(
        self,
        username: str,
        *,
        key: KeyKind = "rsa",
        key_index: int = 0,
        key_id: str | None = None,
        content_type: str = ACTIVITY_JSON,
        **overrides: Any,
    ) -> EvilActor:
        """An actor at /users/NAME, its document served live (edit `overrides` at will)."""
        uri = self.url(f"/users/{username}")
        actor = EvilActor(
            server=self,
            username=username,
            uri=uri,
            private_key=_key(key, key_index),
            key_id=key_id or f"{uri}#main-key",
            overrides=dict(overrides),
        )
        self.actors[username] = actor

        async def serve(request: web.Request) -> web.Response:
            return web.Response(
                body=json.dumps(actor.document()).encode(), headers={"Content-Type": content_type}
            )

        self.route(f"/users/{username}", serve)
        return actor

    def seen(self, path: str | None = None, method: str | None = None) -> list[Seen]:
        return [
            request
            for request in self.requests
            if (path is None or request.path == path)
            and (method is None or request.method == method)
        ]

    def fetches(self) -> list[str]:
        """Paths of every GET received, in order."""
        return [request.path for request in self.requests if request.method == "GET"]

    # --- sending -------------------------------------------------------------------------------

    def signed_headers(
        self,
        url: str,
        body: bytes,
        *,
        key_id: str,
        private_key: signatures.PrivateKey,
        now: datetime | None = None,
        scheme: Scheme = "cavage",
        content_type: str = ACTIVITY_JSON,
    ) -> dict[str, str]:
        """Headers for a POST of `body` to `url`, signed as Mastodon (or Fedify) would."""
        headers = {"Content-Type": content_type}
        if scheme == "none":
            return headers
        sign = signatures.sign_request if scheme == "cavage" else signatures.sign_request_rfc9421
        return sign(
            private_key=private_key,
            key_id=key_id,
            method="POST",
            url=url,
            headers=headers,
            body=body,
            now=now or self.clock.now(),
        )

    async def deliver(
        self,
        inbox: str,
        activity: dict[str, Any] | bytes,
        *,
        key_id: str,
        private_key: signatures.PrivateKey,
        now: datetime | None = None,
        scheme: Scheme = "cavage",
        body: bytes | None = None,
        mutate: Callable[[dict[str, str]], dict[str, str]] | None = None,
        url: str | None = None,
    ) -> Answer:
        """POST `activity` to `inbox` signed with `private_key` under `key_id`.

        `body` replaces what is sent after signing (a swapped body), `mutate` rewrites the
        signed headers, and `url` sends the request somewhere other than the URL signed for.
        """
        signed_body = activity if isinstance(activity, bytes) else json.dumps(activity).encode()
        headers = self.signed_headers(
            inbox, signed_body, key_id=key_id, private_key=private_key, now=now, scheme=scheme
        )
        if mutate is not None:
            headers = mutate(headers)
        return await self.post(url or inbox, signed_body if body is None else body, headers)

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str] | Sequence[tuple[str, str]]
    ) -> Answer:
        """A raw POST: exactly these headers (a list of pairs may repeat a name)."""
        assert self._http is not None, "start() first"
        async with self._http.post(
            url, data=body, headers=_multi(headers), allow_redirects=False
        ) as response:
            return Answer(response.status, await response.read())

    # --- the handler ---------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read() if request.method == "POST" else b""
        self.requests.append(
            Seen(
                request.method,
                request.path,
                request.query_string,
                dict(request.headers),
                body,
            )
        )
        route = self.routes.get(request.path)
        if route is None:
            return web.Response(status=202 if request.method == "POST" else 404)
        if not isinstance(route, Reply):
            return await route(request)
        return await self._reply(request, route)

    async def _reply(self, request: web.Request, reply: Reply) -> web.StreamResponse:
        if reply.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._released.wait(), timeout=reply.delay)
        headers = dict(reply.headers)
        if reply.content_type is not None:
            headers["Content-Type"] = reply.content_type
        if not reply.streams:
            return web.Response(status=reply.status, body=reply.body, headers=headers)
        response = web.StreamResponse(status=reply.status, headers=headers)
        if reply.announce_length is not None:
            response.content_length = reply.announce_length
        else:
            response.enable_chunked_encoding()
        try:
            await response.prepare(request)
            await response.write(reply.body)
            left = reply.stream_bytes
            while left > 0 and not self._released.is_set():
                chunk = min(left, reply.chunk_size)
                await response.write(b" " * chunk)
                self.streamed_bytes += chunk
                left -= chunk
                if reply.interval:
                    await asyncio.sleep(reply.interval)
            if reply.stall:
                await self._released.wait()
        except (ConnectionError, RuntimeError):
            # The instance hung up (which is what these replies are for).
            pass
        return response


def _multi(headers: Mapping[str, str] | Sequence[tuple[str, str]]) -> CIMultiDict[str]:
    pairs = headers.items() if isinstance(headers, Mapping) else headers
    return CIMultiDict(pairs)


# --- the address nobody may reach ------------------------------------------------------------


class CountingListener:
    """A TCP listener on `address` that counts connections and answers a plausible 200."""

    def __init__(self, address: str, port: int = 0) -> None:
        self.address = address
        self.port = port
        self.accepted = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> CountingListener:
        self._server = await asyncio.start_server(self._on_connect, self.address, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, path: str = "/") -> str:
        return f"http://{self.address}:{self.port}{path}"

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)
            body = json.dumps({"id": self.url(), "type": "Person"}).encode()
            writer.write(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/activity+json\r\n"
                + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self) -> CountingListener:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
