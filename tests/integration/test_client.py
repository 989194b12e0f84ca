"""The federation client against real servers on loopback: guard, redirects, ids, caps, timeouts.

Everything listens on 127.0.0.2 and 127.0.0.3 only. The client allows 127.0.0.2/32, so
127.0.0.3 plays a private address; the listener there counts accepted connections, and
every SSRF test asserts it saw none.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import cache
from ipaddress import IPv4Network
from typing import Any

import pytest
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from cryptography.hazmat.primitives.asymmetric import rsa
from yarl import URL

from flattrfed.activitypub.client import (
    AddressRefusedError,
    FederationClient,
    FetchError,
    Signer,
)
from flattrfed.activitypub.documents import ACCEPT_ACTIVITYPUB, LD_JSON_PROFILE
from flattrfed.activitypub.jsonlimits import JsonLimitError, JsonLimitReason
from flattrfed.activitypub.signatures import (
    SignatureError,
    format_http_date,
    generate_rsa_key,
    parse_signature,
    verify_parsed,
)
from flattrfed.clock import ManualClock
from tests.harness.resolver import LoopbackResolver

GOOD_ADDRESS = "127.0.0.2"
EVIL_ADDRESS = "127.0.0.3"
ALLOWED = (IPv4Network(f"{GOOD_ADDRESS}/32"),)
KEY_ID = "http://alpha.test/actor#main-key"
MIB = 1024 * 1024
NODEINFO_21 = 'application/json; profile="http://nodeinfo.diaspora.software/ns/schema/2.1#"'
NODEINFO_20 = 'application/json; profile="http://nodeinfo.diaspora.software/ns/schema/2.0#"'

CONTENT_TYPES = {
    "activity": "application/activity+json",
    "activity-charset": "application/activity+json; charset=utf-8",
    "ld-profile": LD_JSON_PROFILE,
    "ld": "application/ld+json",
    "ld-other-profile": 'application/ld+json; profile="http://alpha.test/ns"',
    "json": "application/json",
    "html": "text/html",
    "text": "text/plain",
    "png": "image/png",
}


@cache
def signing_key() -> rsa.RSAPrivateKey:
    return generate_rsa_key()


def signer() -> Signer:
    return Signer(key_id=KEY_ID, private_key=signing_key())


# --- the well-behaved (and sometimes tricky) peer on 127.0.0.2 ---------------------------------


@dataclass(frozen=True)
class Hit:
    method: str
    host: str
    path: str
    accept: str | None
    client_port: int


@dataclass
class Peer:
    """An aiohttp app answering as good.test and other.test on 127.0.0.2."""

    clock: ManualClock
    port: int = 0
    hits: list[Hit] = field(default_factory=list)
    # (path, covered components, key id) for each verified signature; (path, None, error) else.
    signatures: list[tuple[str, tuple[str, ...] | None, str]] = field(default_factory=list)
    bodies: list[bytes] = field(default_factory=list)

    def url(self, path: str, host: str = "good.test") -> str:
        return f"http://{host}:{self.port}{path}"

    def paths(self) -> list[str]:
        return [hit.path for hit in self.hits]


def _document(request: web.Request, content_type: str = CONTENT_TYPES["activity"]) -> web.Response:
    # The id is the URL the document was requested at, as a well-behaved server does.
    document = {
        "@context": "https://www.w3.org/ns/activitystreams",
        "id": f"http://{request.host}{request.path_qs}",
        "type": "Note",
        "content": "hello",
    }
    return web.Response(body=json.dumps(document).encode(), headers={"Content-Type": content_type})


def _as_json(
    document: dict[str, Any], content_type: str = CONTENT_TYPES["activity"]
) -> web.Response:
    return web.Response(body=json.dumps(document).encode(), headers={"Content-Type": content_type})


def build_app(peer: Peer) -> web.Application:
    @web.middleware
    async def record(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        body = await request.read()
        peername = request.transport.get_extra_info("peername") if request.transport else None
        peer.hits.append(
            Hit(
                request.method,
                request.host,
                request.path,
                request.headers.get("Accept"),
                peername[1] if peername else 0,
            )
        )
        peer.bodies.append(body)
        if "Signature" in request.headers:
            try:
                parsed = parse_signature(
                    request.method,
                    request.raw_path,
                    request.headers,
                    body or None,
                    peer.clock.now(),
                )
                verify_parsed(parsed, signing_key().public_key())
            except SignatureError as exc:
                peer.signatures.append((request.path, None, str(exc)))
            else:
                peer.signatures.append((request.path, parsed.covered, parsed.key_id))
        return await handler(request)

    async def doc(request: web.Request) -> web.Response:
        return _document(request)

    async def typed(request: web.Request) -> web.Response:
        return _document(request, CONTENT_TYPES[request.match_info["kind"]])

    async def redirect(request: web.Request) -> web.Response:
        status = int(request.query.get("status", "302"))
        return web.Response(status=status, headers={"Location": request.query["to"]})

    async def chain(request: web.Request) -> web.Response:
        left = int(request.match_info["n"])
        if left == 0:
            return _document(request)
        return web.Response(status=302, headers={"Location": f"/chain/{left - 1}"})

    async def loop(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/loop"})

    async def hop_away(request: web.Request) -> web.Response:
        # good.test sends the client to other.test, which then claims to be good.test's URL.
        name = request.match_info["name"]
        if request.host.startswith("good.test"):
            return web.Response(
                status=302, headers={"Location": peer.url(f"/hop-away/{name}", "other.test")}
            )
        return _as_json({"id": peer.url(f"/hop-away/{name}"), "type": "Person"})

    async def impostor(request: web.Request) -> web.Response:
        # A1a: served at /impostor, claims to be somebody else's actor.
        return _as_json({"id": peer.url("/users/victim"), "type": "Person", "inbox": "x"})

    async def pointer(request: web.Request) -> web.Response:
        # A1c: an embedded-looking copy whose id names its real home.
        return _as_json({"id": peer.url("/doc/real"), "type": "Note", "content": "stale copy"})

    async def pointer_to_liar(request: web.Request) -> web.Response:
        return _as_json({"id": peer.url("/liar"), "type": "Note"})

    async def liar(request: web.Request) -> web.Response:
        return _as_json({"id": peer.url("/doc/somewhere-else"), "type": "Note"})

    async def claims(request: web.Request) -> web.Response:
        return _as_json({"id": request.query["id"], "type": "Note"})

    async def no_id(request: web.Request) -> web.Response:
        return _as_json({"type": "Note"})

    async def status(request: web.Request) -> web.Response:
        headers = {}
        if "retry" in request.query:
            headers["Retry-After"] = request.query["retry"]
        return web.Response(status=int(request.match_info["code"]), text="nope", headers=headers)

    async def big(request: web.Request) -> web.Response:
        return web.Response(
            body=b" " * (2 * MIB), headers={"Content-Type": CONTENT_TYPES["activity"]}
        )

    async def endless(request: web.Request) -> web.StreamResponse:
        # Chunked, no Content-Length, and far more than the cap: only counting stops the client.
        response = web.StreamResponse(headers={"Content-Type": CONTENT_TYPES["activity"]})
        response.enable_chunked_encoding()
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            for _ in range(1024):  # 64 MiB at most, should the client never hang up
                await response.write(b" " * 65536)
        return response

    async def bomb(request: web.Request) -> web.Response:
        # 2 MiB of spaces gzipped to a few kB: the cap counts decompressed bytes.
        return web.Response(
            body=gzip.compress(b" " * (2 * MIB)),
            headers={"Content-Type": CONTENT_TYPES["activity"], "Content-Encoding": "gzip"},
        )

    async def deep(request: web.Request) -> web.Response:
        depth = int(request.match_info["depth"])
        body = '{"object":' * depth + "1" + "}" * depth
        return web.Response(body=body.encode(), headers={"Content-Type": CONTENT_TYPES["activity"]})

    async def jrd(request: web.Request) -> web.Response:
        return _as_json({"subject": "acct:bob@good.test", "links": []}, "application/jrd+json")

    async def nodeinfo(request: web.Request) -> web.Response:
        content_type = NODEINFO_21 if request.match_info["version"] == "2.1" else NODEINFO_20
        return _as_json({"version": request.match_info["version"]}, content_type)

    async def inbox(request: web.Request) -> web.Response:
        return web.Response(status=202)

    async def inbox_redirect(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "/inbox"})

    async def inbox_busy(request: web.Request) -> web.Response:
        return web.Response(
            status=429,
            text="slow\r\ndown\x00 please" + "!" * 10_000,
            headers={"Retry-After": "120"},
        )

    app = web.Application(middlewares=[record])
    app.router.add_get("/doc/{name}", doc)
    app.router.add_get("/typed/{kind}", typed)
    app.router.add_get("/redirect", redirect)
    app.router.add_get("/chain/{n}", chain)
    app.router.add_get("/loop", loop)
    app.router.add_get("/hop-away/{name}", hop_away)
    app.router.add_get("/impostor", impostor)
    app.router.add_get("/pointer", pointer)
    app.router.add_get("/pointer-to-liar", pointer_to_liar)
    app.router.add_get("/liar", liar)
    app.router.add_get("/claims", claims)
    app.router.add_get("/no-id", no_id)
    app.router.add_get("/status/{code}", status)
    app.router.add_post("/status/{code}", status)
    app.router.add_get("/big", big)
    app.router.add_get("/endless", endless)
    app.router.add_get("/bomb", bomb)
    app.router.add_get("/deep/{depth}", deep)
    app.router.add_get("/jrd", jrd)
    app.router.add_get("/nodeinfo/{version}", nodeinfo)
    app.router.add_post("/inbox", inbox)
    app.router.add_post("/inbox-redirect", inbox_redirect)
    app.router.add_post("/inbox-busy", inbox_busy)
    return app


# --- raw listeners: the "private" host, and peers that misbehave below HTTP --------------------

Responder = Callable[[asyncio.StreamReader, asyncio.StreamWriter, asyncio.Event], Awaitable[None]]


class RawServer:
    """A TCP listener that counts accepted connections and answers with `respond`."""

    def __init__(self, host: str, respond: Responder, port: int = 0) -> None:
        self.host = host
        self.port = port
        self.accepted = 0
        self._respond = respond
        self._released = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._on_connect, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _on_connect(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            await self._respond(reader, writer, self._released)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            if task is not None:
                self._tasks.discard(task)

    async def close(self) -> None:
        self._released.set()
        if self._server is not None:
            self._server.close()
        pending = list(self._tasks)
        if pending:
            _done, still = await asyncio.wait(pending, timeout=5)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


async def _read_head(reader: asyncio.StreamReader) -> None:
    await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5)


def _head(*lines: str) -> bytes:
    return ("\r\n".join(["HTTP/1.1 200 OK", *lines]) + "\r\n\r\n").encode()


async def answer_ok(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, released: asyncio.Event
) -> None:
    # Answers like a real peer would, so a connection the guard let through would show up as a
    # success in the test rather than as some incidental error.
    await _read_head(reader)
    body = json.dumps({"id": "http://evil.test/", "type": "Person"}).encode()
    writer.write(
        _head(
            "Content-Type: application/activity+json",
            f"Content-Length: {len(body)}",
            "Connection: close",
        )
        + body
    )
    await writer.drain()


async def announce_huge_then_stall(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, released: asyncio.Event
) -> None:
    await _read_head(reader)
    writer.write(_head("Content-Type: application/activity+json", f"Content-Length: {1000 * MIB}"))
    await writer.drain()
    await asyncio.wait_for(released.wait(), timeout=30)


async def one_byte_then_stall(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, released: asyncio.Event
) -> None:
    await _read_head(reader)
    writer.write(_head("Content-Type: application/activity+json", "Content-Length: 1000") + b"{")
    await writer.drain()
    await asyncio.wait_for(released.wait(), timeout=30)


async def trickle(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, released: asyncio.Event
) -> None:
    # One byte every 50 ms: never silent long enough for a per-read timeout (D2).
    await _read_head(reader)
    writer.write(_head("Content-Type: application/activity+json", "Content-Length: 100000"))
    for _ in range(600):
        if released.is_set() or reader.at_eof():
            return
        writer.write(b" ")
        await writer.drain()
        await asyncio.sleep(0.05)


# --- fixtures ----------------------------------------------------------------------------------


def loopback_resolver() -> LoopbackResolver:
    resolver = LoopbackResolver()
    resolver.add("good.test", GOOD_ADDRESS)
    resolver.add("other.test", GOOD_ADDRESS)
    resolver.add("evil.test", EVIL_ADDRESS)
    return resolver


def make_client(
    clock: ManualClock,
    resolver: AbstractResolver | None = None,
    *,
    allow_http: bool = True,
    total_timeout: float = 5,
    connect_timeout: float = 2,
) -> FederationClient:
    return FederationClient(
        allowed_networks=ALLOWED,
        allow_http=allow_http,
        clock=clock,
        resolver=resolver if resolver is not None else loopback_resolver(),
        total_timeout=total_timeout,
        connect_timeout=connect_timeout,
    )


@pytest.fixture
async def client(clock: ManualClock) -> AsyncIterator[FederationClient]:
    federation_client = make_client(clock)
    try:
        yield federation_client
    finally:
        await federation_client.close()


@pytest.fixture
async def peer(clock: ManualClock) -> AsyncIterator[Peer]:
    state = Peer(clock=clock)
    runner = web.AppRunner(build_app(state), access_log=None, shutdown_timeout=1)
    await runner.setup()
    try:
        site = web.TCPSite(runner, GOOD_ADDRESS, 0)
        await site.start()
        state.port = runner.addresses[0][1]
        yield state
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def raw_server(respond: Responder, host: str = GOOD_ADDRESS) -> AsyncIterator[RawServer]:
    server = RawServer(host, respond)
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.fixture
async def evil() -> AsyncIterator[RawServer]:
    async with raw_server(answer_ok, EVIL_ADDRESS) as server:
        yield server


# --- fetching ----------------------------------------------------------------------------------


async def test_fetches_an_activitystreams_document(client: FederationClient, peer: Peer) -> None:
    url = peer.url("/doc/hello")
    document = await client.fetch_activitypub(url, signer=None)
    assert document["id"] == url
    assert peer.hits[-1].accept == ACCEPT_ACTIVITYPUB
    assert peer.signatures == []


async def test_signed_get_carries_a_verifying_signature(
    client: FederationClient, peer: Peer
) -> None:
    url = peer.url("/doc/signed?page=1")
    document = await client.fetch_activitypub(url, signer=signer())
    assert document["id"] == url
    assert peer.signatures == [
        ("/doc/signed", ("(request-target)", "host", "date", "accept"), KEY_ID)
    ]


async def test_each_redirect_hop_is_signed_afresh(client: FederationClient, peer: Peer) -> None:
    url = str(URL(peer.url("/redirect")).with_query(to="/doc/after-hop"))
    document = await client.fetch_activitypub(url, signer=signer())
    assert document["id"] == peer.url("/doc/after-hop")
    assert [(path, covered is not None) for path, covered, _ in peer.signatures] == [
        ("/redirect", True),
        ("/doc/after-hop", True),
    ]


async def test_an_allowed_ip_literal_is_fetched(client: FederationClient, peer: Peer) -> None:
    url = peer.url("/doc/literal", host=GOOD_ADDRESS)
    assert (await client.fetch_activitypub(url, signer=None))["id"] == url


async def test_get_returns_any_final_status(client: FederationClient, peer: Peer) -> None:
    response = await client.get(peer.url("/status/404"), signer=None, accept="*/*")
    assert response.status == 404
    assert response.body == b"nope"
    assert response.redirects == 0


# --- SSRF --------------------------------------------------------------------------------------


async def test_private_targets_are_refused_without_a_connection(
    client: FederationClient, evil: RawServer
) -> None:
    port = evil.port
    for url in [
        f"http://evil.test:{port}/",
        f"http://EVIL.test.:{port}/",
        f"http://{EVIL_ADDRESS}:{port}/",
        f"http://[::ffff:{EVIL_ADDRESS}]:{port}/",
        f"http://[::ffff:7f00:3]:{port}/",
        f"http://2130706435:{port}/",
        f"http://127.3:{port}/",
        f"http://0x7f.0.0.3:{port}/",
        f"http://0177.0.0.3:{port}/",
        f"http://0x7f000003:{port}/",
    ]:
        with pytest.raises(AddressRefusedError) as caught:
            await client.fetch_activitypub(url, signer=signer())
        assert caught.value.permanent, url
        assert caught.value.reason == "address_refused"
    assert evil.accepted == 0


async def test_post_to_a_private_target_is_refused(
    client: FederationClient, evil: RawServer
) -> None:
    for url in [f"http://evil.test:{evil.port}/inbox", f"http://{EVIL_ADDRESS}:{evil.port}/inbox"]:
        with pytest.raises(AddressRefusedError):
            await client.post(url, b"{}", signer=signer())
    assert evil.accepted == 0


async def test_only_the_checked_address_is_connected_to(clock: ManualClock, peer: Peer) -> None:
    # R6: a name answering with a private and a public address. aiohttp connects to what the
    # resolver returned, and the guard dropped the private one, so only 127.0.0.2 is reached,
    # although 127.0.0.3 came first and listens on the same port.
    class TwoFaced(AbstractResolver):
        async def resolve(
            self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
        ) -> list[ResolveResult]:
            return [
                ResolveResult(
                    hostname=host,
                    host=address,
                    port=port,
                    family=socket.AF_INET,
                    proto=0,
                    flags=socket.AI_NUMERICHOST,
                )
                for address in (EVIL_ADDRESS, GOOD_ADDRESS)
            ]

        async def close(self) -> None:
            return None

    server = RawServer(EVIL_ADDRESS, answer_ok, port=peer.port)
    try:
        await server.start()
    except OSError:
        pytest.skip(f"port {peer.port} is taken on {EVIL_ADDRESS}")
    federation_client = make_client(clock, TwoFaced())
    try:
        url = f"http://two-faced.test:{peer.port}/doc/x"
        assert (await federation_client.fetch_activitypub(url, signer=None))["id"] == url
        assert server.accepted == 0
        assert peer.paths() == ["/doc/x"]
    finally:
        await federation_client.close()
        await server.close()


async def test_redirects_to_private_targets_are_refused(
    client: FederationClient, peer: Peer, evil: RawServer
) -> None:
    for target in [
        f"http://evil.test:{evil.port}/inbox",
        f"http://{EVIL_ADDRESS}:{evil.port}/",
        f"http://[::ffff:{EVIL_ADDRESS}]:{evil.port}/",
        f"http://2130706435:{evil.port}/",
    ]:
        url = str(URL(peer.url("/redirect")).with_query(to=target))
        with pytest.raises(AddressRefusedError):
            await client.fetch_activitypub(url, signer=signer())
    # Also for WebFinger-style fetches (R1).
    url = str(URL(peer.url("/redirect")).with_query(to=f"http://evil.test:{evil.port}/"))
    with pytest.raises(AddressRefusedError):
        await client.fetch_json(
            url, accept="application/jrd+json", allowed_types=["application/jrd+json"]
        )
    assert evil.accepted == 0


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("file:///etc/passwd", "scheme"),
        ("gopher://good.test:70/_GET", "scheme"),
        ("data:application/json,{}", "scheme"),
        ("ftp://good.test/x", "scheme"),
        ("https://good.test/doc/x", "scheme_change"),
        ("http://user:secret@good.test/doc/x", "userinfo"),
        ("http://2130706434/doc/x", "bad_host"),  # 127.0.0.2, allowed, but a legacy spelling
    ],
)
async def test_bad_redirect_targets_are_refused(
    client: FederationClient, peer: Peer, target: str, reason: str
) -> None:
    url = str(URL(peer.url("/redirect")).with_query(to=target))
    with pytest.raises(FetchError) as caught:
        await client.fetch_activitypub(url, signer=None)
    assert caught.value.reason == reason
    assert caught.value.permanent
    assert peer.paths() == ["/redirect"]


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "scheme"),
        ("gopher://good.test/", "scheme"),
        ("data:application/json,{}", "scheme"),
        ("http://user:pw@good.test:{port}/doc/x", "userinfo"),
        ("http://@good.test:{port}/doc/x", "userinfo"),
        ("http://2130706434:{port}/doc/x", "bad_host"),
        ("http:///doc/x", "bad_url"),
        ("/doc/x", "scheme"),
        ("http://good.test:{port}/doc/a b", "bad_url"),
    ],
)
async def test_bad_urls_are_refused_before_connecting(
    client: FederationClient, peer: Peer, url: str, reason: str
) -> None:
    with pytest.raises(FetchError) as caught:
        await client.get(url.replace("{port}", str(peer.port)), signer=None, accept="*/*")
    assert caught.value.reason == reason
    assert caught.value.permanent
    assert peer.hits == []


async def test_plain_http_is_refused_unless_allowed(clock: ManualClock, peer: Peer) -> None:
    strict = make_client(clock, allow_http=False)
    try:
        with pytest.raises(FetchError) as caught:
            await strict.fetch_activitypub(peer.url("/doc/x"), signer=None)
        assert caught.value.reason == "scheme"
        with pytest.raises(FetchError):
            await strict.post(peer.url("/inbox"), b"{}", signer=signer())
    finally:
        await strict.close()
    assert peer.hits == []


# --- redirects ---------------------------------------------------------------------------------


async def test_five_redirects_are_followed_six_are_not(
    client: FederationClient, peer: Peer
) -> None:
    document = await client.fetch_activitypub(peer.url("/chain/5"), signer=None)
    assert document["id"] == peer.url("/chain/0")
    peer.hits.clear()
    with pytest.raises(FetchError) as caught:
        await client.fetch_activitypub(peer.url("/chain/6"), signer=None)
    assert caught.value.reason == "too_many_redirects"
    assert peer.paths() == [f"/chain/{n}" for n in range(6, 0, -1)]


async def test_a_redirect_loop_stops_at_once(client: FederationClient, peer: Peer) -> None:
    # D4 / S7: a URL that redirects to itself.
    with pytest.raises(FetchError) as caught:
        await client.fetch_activitypub(peer.url("/loop"), signer=None)
    assert caught.value.reason == "redirect_loop"
    assert peer.paths() == ["/loop"]


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_relative_redirects_are_followed_as_get(
    client: FederationClient, peer: Peer, status: int
) -> None:
    url = str(URL(peer.url("/redirect")).with_query(to="../doc/moved", status=str(status)))
    response = await client.get(url, signer=None, accept=ACCEPT_ACTIVITYPUB)
    assert response.status == 200
    assert response.final_url == peer.url("/doc/moved")
    assert response.redirects == 1
    assert [hit.method for hit in peer.hits] == ["GET", "GET"]


async def test_a_post_answered_with_a_redirect_is_not_followed(
    client: FederationClient, peer: Peer
) -> None:
    result = await client.post(peer.url("/inbox-redirect"), b"{}", signer=signer())
    assert result.status == 302
    assert not result.ok
    assert peer.paths() == ["/inbox-redirect"]


# --- A1: the document's id must be where it came from --------------------------------------------


async def test_a_document_claiming_another_id_is_refused(
    client: FederationClient, peer: Peer
) -> None:
    with pytest.raises(FetchError) as caught:
        await client.fetch_activitypub(peer.url("/impostor"), signer=None)
    assert caught.value.reason == "id_mismatch"
    assert caught.value.permanent


async def test_a_document_without_id_is_refused(client: FederationClient, peer: Peer) -> None:
    with pytest.raises(FetchError) as caught:
        await client.fetch_activitypub(peer.url("/no-id"), signer=None)
    assert caught.value.reason == "id_mismatch"


async def test_a_same_origin_redirect_may_name_the_final_url(
    client: FederationClient, peer: Peer
) -> None:
    url = str(URL(peer.url("/redirect")).with_query(to="/doc/final"))
    assert (await client.fetch_activitypub(url, signer=None))["id"] == peer.url("/doc/final")


async def test_a_cross_origin_redirect_may_name_only_its_own_origin(
    client: FederationClient, peer: Peer
) -> None:
    # A1b: other.test answering with an other.test id is fine, as other.test vouches for it...
    elsewhere = peer.url("/doc/elsewhere", "other.test")
    url = str(URL(peer.url("/redirect")).with_query(to=elsewhere))
    assert (await client.fetch_activitypub(url, signer=None))["id"] == elsewhere
    # ...but other.test cannot speak for good.test, even when it repeats the URL we asked for.
    with pytest.raises(FetchError) as caught:
        await client.fetch_activitypub(peer.url("/hop-away/bob"), signer=None)
    assert caught.value.reason == "id_mismatch"


async def test_unknown_id_is_refetched_from_its_own_url(
    client: FederationClient, peer: Peer
) -> None:
    # A1c: without the flag the copy is refused; with it, the id's own URL is fetched.
    with pytest.raises(FetchError):
        await client.fetch_activitypub(peer.url("/pointer"), signer=None)
    peer.hits.clear()
    document = await client.fetch_activitypub(
        peer.url("/pointer"), signer=signer(), refetch_unknown_id=True
    )
    assert document["id"] == peer.url("/doc/real")
    assert "content" not in document or document["content"] == "hello"
    assert peer.paths() == ["/pointer", "/doc/real"]
    assert len(peer.signatures) == 2


async def test_a_refetched_id_must_match_exactly(client: FederationClient, peer: Peer) -> None:
    with pytest.raises(FetchError) as caught:
        await client.fetch_activitypub(
            peer.url("/pointer-to-liar"), signer=None, refetch_unknown_id=True
        )
    assert caught.value.reason == "id_mismatch"
    # Refetched once, never chased further.
    assert peer.paths() == ["/pointer-to-liar", "/liar"]


async def test_a_refetch_goes_through_the_guard(
    client: FederationClient, peer: Peer, evil: RawServer
) -> None:
    # A document pointing its id at a private address must not become an SSRF primitive.
    for host in ("evil.test", EVIL_ADDRESS):
        url = str(URL(peer.url("/claims")).with_query(id=f"http://{host}:{evil.port}/x"))
        with pytest.raises(AddressRefusedError):
            await client.fetch_activitypub(url, signer=signer(), refetch_unknown_id=True)
    assert evil.accepted == 0
    assert peer.paths() == ["/claims", "/claims"]


# --- A2: content types -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["activity", "activity-charset", "ld-profile"])
async def test_activitystreams_content_types_are_accepted(
    client: FederationClient, peer: Peer, kind: str
) -> None:
    url = peer.url(f"/typed/{kind}")
    assert (await client.fetch_activitypub(url, signer=None))["id"] == url


@pytest.mark.parametrize("kind", ["json", "html", "text", "png", "ld", "ld-other-profile"])
async def test_other_content_types_are_refused(
    client: FederationClient, peer: Peer, kind: str
) -> None:
    with pytest.raises(FetchError) as caught:
        await client.fetch_activitypub(peer.url(f"/typed/{kind}"), signer=None)
    assert caught.value.reason == "content_type"
    assert caught.value.permanent


# --- status codes ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "reason", "permanent"),
    [
        (404, "not_found", True),
        (410, "gone", True),
        (401, "unauthorized", True),
        (403, "forbidden", True),
        (400, "http_status", True),
        (500, "server_error", False),
        (502, "server_error", False),
        (429, "rate_limited", False),
    ],
)
async def test_error_statuses_map_to_fetch_errors(
    client: FederationClient, peer: Peer, code: int, reason: str, permanent: bool
) -> None:
    with pytest.raises(FetchError) as caught:
        await client.fetch_activitypub(peer.url(f"/status/{code}"), signer=None)
    assert (caught.value.reason, caught.value.status, caught.value.permanent) == (
        reason,
        code,
        permanent,
    )


async def test_retry_after_is_reported_in_seconds_and_as_a_date(
    client: FederationClient, peer: Peer, clock: ManualClock
) -> None:
    with pytest.raises(FetchError) as caught:
        await client.fetch_activitypub(peer.url("/status/429?retry=120"), signer=None)
    assert caught.value.retry_after == timedelta(seconds=120)
    later = format_http_date(clock.now() + timedelta(minutes=5))
    url = str(URL(peer.url("/status/503")).with_query(retry=later))
    with pytest.raises(FetchError) as caught:
        await client.fetch_activitypub(url, signer=None)
    assert caught.value.retry_after == timedelta(minutes=5)
    assert not caught.value.permanent


# --- D1, D6: sizes and structure ---------------------------------------------------------------


@pytest.mark.parametrize("path", ["/big", "/endless", "/bomb"])
async def test_oversized_bodies_are_refused(
    client: FederationClient, peer: Peer, path: str
) -> None:
    with pytest.raises(FetchError) as caught:
        await client.fetch_activitypub(peer.url(path), signer=None)
    assert caught.value.reason == "too_large"
    assert caught.value.permanent


async def test_an_announced_huge_body_is_refused_before_reading(clock: ManualClock) -> None:
    # The body never comes: only the Content-Length check can answer "too_large" here.
    async with raw_server(announce_huge_then_stall) as server:
        federation_client = make_client(clock)
        try:
            with pytest.raises(FetchError) as caught:
                await federation_client.fetch_activitypub(
                    f"http://good.test:{server.port}/doc", signer=None
                )
            assert caught.value.reason == "too_large"
        finally:
            await federation_client.close()


@pytest.mark.parametrize("depth", [33, 100, 10_000])
async def test_deeply_nested_json_is_refused(
    client: FederationClient, peer: Peer, depth: int
) -> None:
    with pytest.raises(FetchError) as caught:
        await client.fetch_activitypub(peer.url(f"/deep/{depth}"), signer=None)
    assert caught.value.reason == "bad_json"
    assert isinstance(caught.value.__cause__, JsonLimitError)
    assert caught.value.__cause__.reason is JsonLimitReason.TOO_DEEP


# --- D2: time ----------------------------------------------------------------------------------


@pytest.mark.parametrize("respond", [one_byte_then_stall, trickle])
async def test_slow_peers_hit_the_deadline(clock: ManualClock, respond: Responder) -> None:
    async with raw_server(respond) as server:
        federation_client = make_client(clock, total_timeout=1, connect_timeout=0.5)
        try:
            with pytest.raises(FetchError) as caught:
                await federation_client.fetch_activitypub(
                    f"http://good.test:{server.port}/doc", signer=None
                )
            assert caught.value.reason == "timeout"
            assert not caught.value.permanent
        finally:
            await federation_client.close()


async def test_a_slow_inbox_hits_the_deadline(clock: ManualClock) -> None:
    async with raw_server(trickle) as server:
        federation_client = make_client(clock, total_timeout=1, connect_timeout=0.5)
        try:
            with pytest.raises(FetchError) as caught:
                await federation_client.post(
                    f"http://good.test:{server.port}/inbox", b"{}", signer=signer()
                )
            # The inbox answered 200 at once and then trickled: reading even the excerpt is
            # bounded by the deadline.
            assert caught.value.reason == "timeout"
        finally:
            await federation_client.close()


# --- WebFinger and NodeInfo --------------------------------------------------------------------


async def test_fetch_json_checks_the_media_type(client: FederationClient, peer: Peer) -> None:
    jrd_types = ["application/jrd+json", "application/json"]
    document = await client.fetch_json(
        peer.url("/jrd"), accept="application/jrd+json", allowed_types=jrd_types
    )
    assert document["subject"] == "acct:bob@good.test"
    with pytest.raises(FetchError) as caught:
        await client.fetch_json(
            peer.url("/typed/html"), accept="application/jrd+json", allowed_types=jrd_types
        )
    assert caught.value.reason == "content_type"
    assert peer.signatures == []  # WebFinger and NodeInfo are fetched unsigned


async def test_fetch_json_matches_a_nodeinfo_profile(client: FederationClient, peer: Peer) -> None:
    document = await client.fetch_json(
        peer.url("/nodeinfo/2.1"), accept=NODEINFO_21, allowed_types=[NODEINFO_21]
    )
    assert document == {"version": "2.1"}
    with pytest.raises(FetchError):
        await client.fetch_json(
            peer.url("/nodeinfo/2.0"), accept=NODEINFO_21, allowed_types=[NODEINFO_21]
        )


# --- POST --------------------------------------------------------------------------------------


async def test_post_is_signed_with_digest_and_content_type(
    client: FederationClient, peer: Peer
) -> None:
    body = json.dumps({"type": "Like", "id": "http://alpha.test/likes/1"}).encode()
    result = await client.post(peer.url("/inbox"), body, signer=signer())
    assert result.status == 202
    assert result.ok
    assert result.retry_after is None
    assert peer.bodies == [body]
    assert peer.signatures == [
        ("/inbox", ("(request-target)", "host", "date", "digest", "content-type"), KEY_ID)
    ]


async def test_a_busy_inbox_reports_retry_after(client: FederationClient, peer: Peer) -> None:
    result = await client.post(peer.url("/inbox-busy"), b"{}", signer=signer())
    assert result.status == 429
    assert result.retry_after == timedelta(seconds=120)
    # A short, single-line excerpt, whatever the peer sent.
    assert result.excerpt.startswith("slow down")
    assert len(result.excerpt) <= 200
    assert "\n" not in result.excerpt
    assert "\x00" not in result.excerpt


async def test_a_refused_connection_is_a_temporary_failure(client: FederationClient) -> None:
    # Take a free port on the allowed address and give it back: nothing listens there now.
    with socket.socket() as probe:
        probe.bind((GOOD_ADDRESS, 0))
        port = probe.getsockname()[1]
    with pytest.raises(FetchError) as caught:
        await client.post(f"http://good.test:{port}/inbox", b"{}", signer=signer())
    assert caught.value.reason == "connect"
    assert not caught.value.permanent
    assert not isinstance(caught.value, AddressRefusedError)


async def test_an_unknown_name_is_a_temporary_failure(client: FederationClient) -> None:
    with pytest.raises(FetchError) as caught:
        await client.fetch_activitypub("http://nowhere.test/x", signer=None)
    assert caught.value.reason == "dns"
    assert not caught.value.permanent


async def test_connections_are_reused(client: FederationClient, peer: Peer) -> None:
    for name in ("a", "b", "c"):
        await client.fetch_activitypub(peer.url(f"/doc/{name}"), signer=None)
    # Three requests over one keep-alive connection: one client port seen by the server.
    assert len(peer.hits) == 3
    assert len({hit.client_port for hit in peer.hits}) == 1


async def test_close_is_idempotent_and_final(clock: ManualClock, peer: Peer) -> None:
    federation_client = make_client(clock)
    try:
        await federation_client.fetch_activitypub(peer.url("/doc/x"), signer=None)
    finally:
        await federation_client.close()
    await federation_client.close()
    with pytest.raises(RuntimeError):
        await federation_client.fetch_activitypub(peer.url("/doc/x"), signer=None)
