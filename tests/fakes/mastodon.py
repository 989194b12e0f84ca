"""A fake Mastodon 4.x server on loopback, shaped after Mastodon's serializers and its signer.

What it serves, as Mastodon does:

- WebFinger for its accounts (`acct:NAME@HOST` and the actor URL), and NodeInfo 2.0;
- actor documents built from `tests/fixtures/mastodon_actor.json` (a Person with the security
  and toot context terms, `publicKey` `#main-key`, `featured`, `endpoints.sharedInbox`,
  PropertyValue `attachment`s) and the instance actor `/actor` (an Application), served as
  `application/activity+json; charset=utf-8`;
- personal inboxes `/users/NAME/inbox` and the shared inbox `/inbox`. Every POST is recorded and
  checked against Mastodon's `SignedRequest` rules (see `FakePeer.check_delivery`); one that
  passes gets 202, one that does not gets 401 with `{"error": …}`, as Mastodon answers.

What it sends, as Mastodon does (`tests/fixtures/mastodon_activities.json`):

- Follow with id `https://HOST/<uuid>`, Like with the fragment id `…/users/NAME#likes/N`,
  Undo(Like) `…#likes/N/undo` and Undo(Follow) `…#follows/N/undo`, each embedding the whole
  activity it undoes, with `@context` the bare ActivityStreams string;
- POSTs signed draft-cavage `rsa-sha256` over `(request-target) host date digest content-type`,
  with `Digest: SHA-256=…`; `User-Agent` and `Accept-Encoding` are sent but not signed;
- GETs signed by the instance actor over `(request-target) host date accept`, with
  `Accept: application/activity+json, application/ld+json`.

The signers here are written from the wire formats, independently of
`flattrfed.activitypub.signatures`, so that a mistake shared by our signer and our verifier
cannot hide. The check of *our* deliveries uses our signatures module plus independent checks of
the covered headers, the Date window and the Digest.

Where this differs from a real Mastodon, the loopback test setup forces it: plain `http`
(Mastodon only ever uses https, and refuses loopback addresses unless allowed), and hosts that
carry a port (Mastodon would drop the port from the WebFinger round trip).
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import socket
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
from aiohttp import web
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

from flattrfed.activitypub import signatures
from tests.harness.instances import Federation

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

AS_CONTEXT = "https://www.w3.org/ns/activitystreams"
ACTIVITY_JSON = "application/activity+json"
SERVED_TYPE = f"{ACTIVITY_JSON}; charset=utf-8"
JRD_TYPE = "application/jrd+json; charset=utf-8"
FETCH_ACCEPT = "application/activity+json, application/ld+json"
SELF_LINK_TYPES = (
    ACTIVITY_JSON,
    'application/ld+json; profile="https://www.w3.org/ns/activitystreams"',
)
ACTOR_TYPES = frozenset({"Application", "Group", "Organization", "Person", "Service"})
NODEINFO_20 = "http://nodeinfo.diaspora.software/ns/schema/2.0"
NODEINFO_21 = "http://nodeinfo.diaspora.software/ns/schema/2.1"

# Mastodon's SignedRequest time window (app/lib/signed_request.rb): the signed moment may be up
# to CLOCK_SKEW_MARGIN ahead; it expires EXPIRATION_WINDOW after it, plus the same margin.
CLOCK_SKEW_MARGIN = timedelta(hours=1)
EXPIRATION_WINDOW = timedelta(minutes=5)
MASTODON_DELIVERY_HEADERS = ("(request-target)", "host", "date", "digest", "content-type")
MASTODON_FETCH_HEADERS = ("(request-target)", "host", "date", "accept")


class PeerCheckFailed(Exception):
    """What a fake peer fetched or received breaks a rule the real software enforces."""


# --- fixtures, keys and wire formats -----------------------------------------------------------


def fill(value: Any, values: Mapping[str, str]) -> Any:
    """`value` with every `{{name}}` in its strings replaced by `values[name]`."""
    if isinstance(value, str):
        for name, replacement in values.items():
            value = value.replace("{{" + name + "}}", replacement)
        return value
    if isinstance(value, list):
        return [fill(item, values) for item in value]
    if isinstance(value, dict):
        return {key: fill(item, values) for key, item in value.items()}
    return value


def load_fixture(fixture: str, /, **values: str) -> Any:
    """A JSON fixture from tests/fixtures with its placeholders filled (all of them)."""
    document = fill(json.loads((FIXTURES / fixture).read_text(encoding="utf-8")), values)
    assert "{{" not in json.dumps(document), f"unfilled placeholder in {fixture}"
    return document


@cache
def rsa_key(label: str) -> rsa.RSAPrivateKey:
    """One RSA-2048 key per label for the whole run (generating one costs ~0.1 s)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def ed25519_key(label: str) -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


def http_date(moment: datetime) -> str:
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def sha256_base64(body: bytes) -> str:
    return base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def rsa_sign(key: rsa.RSAPrivateKey, data: bytes) -> bytes:
    return key.sign(data, padding.PKCS1v15(), hashes.SHA256())


def request_target(url: str) -> str:
    parts = urlsplit(url)
    return (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


def cavage_signature(
    *,
    key: rsa.RSAPrivateKey,
    key_id: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    covered: Sequence[str],
) -> str:
    """A draft-cavage `Signature` header value over `covered`, in that order."""
    lowered = {name.lower(): value for name, value in headers.items()}
    lines = []
    for name in covered:
        if name == "(request-target)":
            lines.append(f"(request-target): {method.lower()} {request_target(url)}")
        else:
            lines.append(f"{name}: {lowered[name]}")
    signature = base64.b64encode(rsa_sign(key, "\n".join(lines).encode("ascii"))).decode()
    return (
        f'keyId="{key_id}",algorithm="rsa-sha256",headers="{" ".join(covered)}",'
        f'signature="{signature}"'
    )


def is_activitypub_type(content_type: str) -> bool:
    """Mastodon's `valid_activitypub_content_type?`: activity+json, or AS-profiled ld+json."""
    main, _, parameters = content_type.partition(";")
    main = main.strip().lower()
    if main == ACTIVITY_JSON:
        return True
    return main == "application/ld+json" and AS_CONTEXT in parameters


def has_as_context(document: Mapping[str, Any]) -> bool:
    context = document.get("@context")
    return context == AS_CONTEXT or (isinstance(context, list) and AS_CONTEXT in context)


# --- records -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """An account on a fake peer, with its RSA key (and, on Fedify, an Ed25519 key)."""

    username: str
    base_url: str
    key: rsa.RSAPrivateKey
    type: str = "Person"
    name: str = ""
    ed25519: ed25519.Ed25519PrivateKey | None = None

    @property
    def uri(self) -> str:
        return f"{self.base_url}/users/{self.username}"

    @property
    def key_id(self) -> str:
        return f"{self.uri}#main-key"

    @property
    def inbox(self) -> str:
        return f"{self.uri}/inbox"


@dataclass(frozen=True)
class Sent:
    """An activity a fake peer sent, and what the receiving server answered."""

    activity: dict[str, Any]
    status: int
    body: str
    # The numbers Mastodon would take from its database rows (favourite/follow ids).
    number: int = 0

    @property
    def id(self) -> str:
        return str(self.activity["id"])


@dataclass
class ReceivedDelivery:
    """A POST a fake peer received, with everything its checks found wrong (nothing: verified)."""

    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    problems: list[str] = field(default_factory=list)
    covered: tuple[str, ...] = ()
    key_id: str | None = None
    signer: str | None = None

    @property
    def verified(self) -> bool:
        return not self.problems

    @property
    def activity(self) -> dict[str, Any]:
        document = json.loads(self.body)
        assert isinstance(document, dict)
        return document


# --- what the fakes share ----------------------------------------------------------------------


class FakePeer:
    """A listening aiohttp app named NAME.test: accounts, WebFinger, NodeInfo, checked inboxes."""

    software = "fake"
    software_version = "1.0.0"
    # Whether GETs of remote actors are signed by our instance actor (Mastodon: always).
    sign_fetches = True

    def __init__(self, federation: Federation, name: str) -> None:
        self.federation = federation
        self.name = name
        self.domain = f"{name}.test"
        self.host = ""
        self.accounts: dict[str, Account] = {}
        self.deliveries: list[ReceivedDelivery] = []
        # Statuses to answer the next deliveries with, whatever their checks found (503, …).
        self.scripted_answers: list[int] = []
        self.instance_key = rsa_key(f"{name}:instance-actor")
        self._runner: web.AppRunner | None = None
        self._http: aiohttp.ClientSession | None = None

    # --- lifecycle ---

    @property
    def base_url(self) -> str:
        assert self.host, "start() the fake first"
        return f"http://{self.host}"

    @property
    def instance_actor_uri(self) -> str:
        return f"{self.base_url}/actor"

    async def start(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.host = f"{self.domain}:{sock.getsockname()[1]}"
        self.federation.resolver.add(self.domain, "127.0.0.1")
        app = web.Application()
        self.add_routes(app.router)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        self._runner = runner

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def http(self) -> aiohttp.ClientSession:
        """A client resolving the federation's names (closed with the federation)."""
        if self._http is None:
            self._http = self.federation.client()
        return self._http

    def now(self) -> datetime:
        return self.federation.clock.now()

    def user_agent(self) -> str:
        return f"{self.software}/{self.software_version} (+{self.base_url}/)"

    def add_account(self, username: str, *, name: str = "", type: str = "Person") -> Account:
        account = Account(
            username=username,
            base_url=self.base_url,
            key=rsa_key(f"{self.name}:{username}"),
            type=type,
            name=name or username.capitalize(),
            ed25519=ed25519_key(f"{self.name}:{username}"),
        )
        self.accounts[username] = account
        return account

    # --- documents (overridden per software) ---

    def actor_document(self, account: Account) -> dict[str, Any]:
        raise NotImplementedError

    def instance_actor_document(self) -> dict[str, Any]:
        document = load_fixture(
            "mastodon_instance_actor.json",
            base=self.base_url,
            domain=self.domain,
            pem=public_pem(self.instance_key),
        )
        assert isinstance(document, dict)
        return document

    def nodeinfo(self, version: str) -> dict[str, Any]:
        return {
            "version": version,
            "software": {"name": self.software, "version": self.software_version},
            "protocols": ["activitypub"],
            "services": {"outbound": [], "inbound": []},
            "usage": {
                "users": {
                    "total": len(self.accounts),
                    "activeMonth": len(self.accounts),
                    "activeHalfyear": len(self.accounts),
                },
                "localPosts": 0,
            },
            "openRegistrations": False,
            "metadata": {"nodeName": self.domain, "nodeDescription": ""},
        }

    nodeinfo_versions: tuple[str, ...] = ("2.0",)

    # --- routes ---

    def add_routes(self, router: web.UrlDispatcher) -> None:
        router.add_get("/.well-known/webfinger", self._webfinger)
        router.add_get("/.well-known/nodeinfo", self._nodeinfo_links)
        router.add_get("/nodeinfo/{version}", self._nodeinfo)
        router.add_get("/actor", self._instance_actor)
        router.add_get("/users/{name}", self._actor)
        router.add_post("/users/{name}/inbox", self._inbox)
        router.add_post("/actor/inbox", self._inbox)
        router.add_post("/inbox", self._inbox)

    def _account_for(self, resource: str) -> Account | None:
        if resource.startswith("acct:"):
            name, _, host = resource[5:].rpartition("@")
            return self.accounts.get(name) if host == self.host else None
        for account in self.accounts.values():
            if resource in (account.uri, f"{self.base_url}/@{account.username}"):
                return account
        return None

    async def _webfinger(self, request: web.Request) -> web.Response:
        account = self._account_for(request.query.get("resource", ""))
        if account is None:
            return web.Response(status=404)
        document = {
            "subject": f"acct:{account.username}@{self.host}",
            "aliases": [f"{self.base_url}/@{account.username}", account.uri],
            "links": [
                {
                    "rel": "http://webfinger.net/rel/profile-page",
                    "type": "text/html",
                    "href": f"{self.base_url}/@{account.username}",
                },
                {"rel": "self", "type": ACTIVITY_JSON, "href": account.uri},
                {
                    "rel": "http://ostatus.org/schema/1.0/subscribe",
                    "template": f"{self.base_url}/authorize_interaction?uri={{uri}}",
                },
            ],
        }
        return web.Response(text=json.dumps(document), headers={"Content-Type": JRD_TYPE})

    async def _nodeinfo_links(self, request: web.Request) -> web.Response:
        schemas = {"2.0": NODEINFO_20, "2.1": NODEINFO_21}
        links = [
            {"rel": schemas[version], "href": f"{self.base_url}/nodeinfo/{version}"}
            for version in self.nodeinfo_versions
        ]
        return web.json_response({"links": links})

    async def _nodeinfo(self, request: web.Request) -> web.Response:
        version = request.match_info["version"]
        if version not in self.nodeinfo_versions:
            return web.Response(status=404)
        schema = NODEINFO_20 if version == "2.0" else NODEINFO_21
        return web.Response(
            text=json.dumps(self.nodeinfo(version)),
            headers={"Content-Type": f'application/json; profile="{schema}#"'},
        )

    async def _instance_actor(self, request: web.Request) -> web.Response:
        return self._activity_json(self.instance_actor_document())

    async def _actor(self, request: web.Request) -> web.Response:
        account = self.accounts.get(request.match_info["name"])
        if account is None:
            return web.Response(status=404)
        return self._activity_json(self.actor_document(account))

    @staticmethod
    def _activity_json(document: dict[str, Any]) -> web.Response:
        return web.Response(
            text=json.dumps(document), headers={"Content-Type": SERVED_TYPE, "Vary": "Accept"}
        )

    async def _inbox(self, request: web.Request) -> web.Response:
        body = await request.read()
        delivery = ReceivedDelivery(
            path=request.path,
            headers={name.lower(): value for name, value in request.headers.items()},
            body=body,
        )
        await self.check_delivery(request, body, delivery)
        self.deliveries.append(delivery)
        if self.scripted_answers:
            return web.Response(status=self.scripted_answers.pop(0))
        if delivery.problems:
            return web.json_response({"error": "; ".join(delivery.problems)}, status=401)
        return web.Response(status=202)

    # --- checking deliveries the way Mastodon does ---

    async def check_delivery(
        self, request: web.Request, body: bytes, delivery: ReceivedDelivery
    ) -> None:
        """Mastodon's rules for an inbound POST; appends what fails to `delivery.problems`."""
        problems = delivery.problems
        now = self.now()
        # Independent of our signatures module first, so a shared mistake still shows.
        problems.extend(self._date_problems(delivery.headers.get("date"), now))
        digest = delivery.headers.get("digest", "")
        if digest != f"SHA-256={sha256_base64(body)}":
            problems.append(f"Digest {digest!r} is not SHA-256 of the body")
        if delivery.headers.get("host") != self.host:
            problems.append(f"Host {delivery.headers.get('host')!r} is not {self.host}")
        if not is_activitypub_type(delivery.headers.get("content-type", "")):
            problems.append(f"Content-Type {delivery.headers.get('content-type')!r}")
        try:
            parsed = signatures.parse_signature(
                request.method, request.raw_path, request.headers, body, now, origin=self.base_url
            )
        except signatures.SignatureError as error:
            problems.append(f"signature refused: {error}")
            return
        delivery.covered, delivery.key_id = parsed.covered, parsed.key_id
        if parsed.scheme != "draft-cavage":
            problems.append(f"signed {parsed.scheme}; Mastodon's deliveries and ours are cavage")
        if (parsed.declared_algorithm or "hs2019").lower() not in ("rsa-sha256", "hs2019"):
            problems.append(f"algorithm {parsed.declared_algorithm!r} is not accepted")
        missing = {"(request-target)", "host", "date", "digest"} - set(parsed.covered)
        if missing:
            problems.append(f"not signed: {sorted(missing)}")
        try:
            activity = json.loads(body)
        except ValueError:
            problems.append("body is not JSON")
            return
        if not isinstance(activity, dict) or not has_as_context(activity):
            problems.append("no ActivityStreams @context")
            return
        if not isinstance(activity.get("type"), str):
            problems.append("type is not one string (Mastodon's factory would ignore it)")
        try:
            owner, key = await self.fetch_key(parsed.key_id)
        except PeerCheckFailed as error:
            problems.append(f"key: {error}")
            return
        delivery.signer = owner
        try:
            signatures.verify_parsed(parsed, key)
        except signatures.SignatureError as error:
            problems.append(f"signature does not verify: {error}")
        if activity.get("actor") != owner:
            problems.append(f"actor {activity.get('actor')!r} is not the signer {owner}")

    @staticmethod
    def _date_problems(value: str | None, now: datetime) -> list[str]:
        if value is None:
            return ["no Date header"]
        try:
            signed_at = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return [f"Date {value!r} does not parse"]
        if signed_at.tzinfo is None:
            return [f"Date {value!r} has no zone"]
        if signed_at > now + CLOCK_SKEW_MARGIN:
            return [f"Date {value} is more than an hour ahead of {now}"]
        if now > signed_at + EXPIRATION_WINDOW + CLOCK_SKEW_MARGIN:
            return [f"Date {value} has expired at {now}"]
        return []

    async def fetch_key(self, key_id: str) -> tuple[str, signatures.PublicKey]:
        """The key `key_id` names and its owner, taken only from the owner's own document."""
        actor = await self.fetch_actor(signatures.key_id_without_fragment(key_id))
        entries = actor.get("publicKey")
        for entry in entries if isinstance(entries, list) else [entries]:
            if isinstance(entry, dict) and entry.get("id") == key_id:
                if entry.get("owner") != actor["id"]:
                    raise PeerCheckFailed(f"{key_id} is owned by {entry.get('owner')!r}")
                pem = entry.get("publicKeyPem")
                if not isinstance(pem, str):
                    raise PeerCheckFailed(f"{key_id} has no publicKeyPem")
                return str(actor["id"]), signatures.load_public_key_pem(pem)
        raise PeerCheckFailed(f"{actor['id']} does not list {key_id}")

    def signed_get_headers(self, url: str) -> dict[str, str]:
        headers = {
            "Host": urlsplit(url).netloc,
            "Date": http_date(self.now()),
            "Accept": FETCH_ACCEPT,
            "User-Agent": self.user_agent(),
        }
        if self.sign_fetches:
            headers["Signature"] = cavage_signature(
                key=self.instance_key,
                key_id=f"{self.instance_actor_uri}#main-key",
                method="GET",
                url=url,
                headers=headers,
                covered=MASTODON_FETCH_HEADERS,
            )
        return headers

    async def fetch_actor(self, url: str) -> dict[str, Any]:
        """GET an actor as Mastodon's fetch_resource does: the type, content type and id checked."""
        async with self.http.get(
            url, headers=self.signed_get_headers(url), allow_redirects=False
        ) as response:
            if response.status != 200:
                raise PeerCheckFailed(f"GET {url}: HTTP {response.status}")
            content_type = response.headers.get("Content-Type", "")
            if not is_activitypub_type(content_type):
                raise PeerCheckFailed(f"GET {url}: Content-Type {content_type!r}")
            document = await response.json(content_type=None)
        if not isinstance(document, dict) or document.get("id") != url:
            raise PeerCheckFailed(f"GET {url}: the document's id is not the URL fetched")
        if not has_as_context(document):
            raise PeerCheckFailed(f"GET {url}: unsupported JSON-LD context")
        if document.get("type") not in ACTOR_TYPES:
            raise PeerCheckFailed(f"GET {url}: type {document.get('type')!r} is not an actor")
        if not isinstance(document.get("preferredUsername"), str):
            raise PeerCheckFailed(f"GET {url}: no preferredUsername")
        if not isinstance(document.get("inbox"), str):
            raise PeerCheckFailed(f"GET {url}: no inbox")
        return document

    async def webfinger(self, handle: str) -> dict[str, Any]:
        """The JRD for `name@host` (plain http: test instances have no TLS)."""
        name, _, host = handle.removeprefix("@").rpartition("@")
        resource = quote(f"acct:{name}@{host}", safe=":@")
        url = f"http://{host}/.well-known/webfinger?resource={resource}"
        async with self.http.get(url, headers={"Accept": "application/jrd+json"}) as response:
            if response.status != 200:
                raise PeerCheckFailed(f"WebFinger {handle}: HTTP {response.status}")
            document = await response.json(content_type=None)
        if not isinstance(document, dict) or not isinstance(document.get("subject"), str):
            raise PeerCheckFailed(f"WebFinger {handle}: no subject")
        return document

    async def resolve(self, handle: str) -> dict[str, Any]:
        """Mastodon's ResolveAccountService: WebFinger, the self link, the actor, the round trip."""
        jrd = await self.webfinger(handle)
        links = jrd.get("links")
        hrefs = [
            link["href"]
            for link in (links if isinstance(links, list) else [])
            if isinstance(link, dict)
            and link.get("rel") == "self"
            and link.get("type") in SELF_LINK_TYPES
            and isinstance(link.get("href"), str)
        ]
        if not hrefs:
            raise PeerCheckFailed(f"WebFinger {handle}: no self link of an ActivityPub type")
        actor = await self.fetch_actor(hrefs[0])
        # The round trip: preferredUsername@actor-host must WebFinger back to the same actor.
        again = await self.webfinger(f"{actor['preferredUsername']}@{urlsplit(actor['id']).netloc}")
        if again["subject"] != jrd["subject"]:
            raise PeerCheckFailed(f"round trip gave {again['subject']}, not {jrd['subject']}")
        return actor

    # --- sending ---

    async def post_signed(
        self,
        account: Account,
        inbox: str,
        activity: dict[str, Any],
        *,
        covered: Sequence[str] = MASTODON_DELIVERY_HEADERS,
        extra_headers: Mapping[str, str] | None = None,
    ) -> tuple[int, str]:
        """POST `activity` signed draft-cavage by `account`; returns (status, body)."""
        body = json.dumps(activity).encode()
        headers = {
            "Host": urlsplit(inbox).netloc,
            "Date": http_date(self.now()),
            "Digest": f"SHA-256={sha256_base64(body)}",
            "Content-Type": ACTIVITY_JSON,
            "User-Agent": self.user_agent(),
            "Accept-Encoding": "gzip",
            **(extra_headers or {}),
        }
        headers["Signature"] = cavage_signature(
            key=account.key,
            key_id=account.key_id,
            method="POST",
            url=inbox,
            headers=headers,
            covered=covered,
        )
        return await self.post_raw(inbox, body, headers)

    async def post_raw(self, url: str, body: bytes, headers: Mapping[str, str]) -> tuple[int, str]:
        async with self.http.post(
            url, data=body, headers=dict(headers), allow_redirects=False
        ) as response:
            return response.status, await response.text()


class FakeMastodon(FakePeer):
    """Mastodon 4.3: its actor JSON, its activity shapes and its draft-cavage signatures."""

    software = "mastodon"
    software_version = "4.3.2"
    nodeinfo_versions = ("2.0",)

    def __init__(self, federation: Federation, name: str = "mastodon") -> None:
        super().__init__(federation, name)
        self._numbers = itertools.count(101)

    def user_agent(self) -> str:
        return f"http.rb/5.2.0 (Mastodon/{self.software_version}; +{self.base_url}/)"

    def actor_document(self, account: Account) -> dict[str, Any]:
        document = load_fixture(
            "mastodon_actor.json",
            base=self.base_url,
            host=self.host,
            username=account.username,
            name=account.name,
            pem=public_pem(account.key),
        )
        assert isinstance(document, dict)
        return document

    def activity(self, kind: str, **values: str) -> dict[str, Any]:
        """The activity `kind` from tests/fixtures/mastodon_activities.json, filled in."""
        shapes = json.loads((FIXTURES / "mastodon_activities.json").read_text(encoding="utf-8"))
        document = fill(shapes[kind], {"base": self.base_url, **values})
        assert "{{" not in json.dumps(document), kind
        assert isinstance(document, dict)
        return document

    async def _send(
        self, account: Account, inbox: str, activity: dict[str, Any], number: int = 0
    ) -> Sent:
        status, body = await self.post_signed(account, inbox, activity)
        return Sent(activity, status, body, number)

    async def follow(self, account: Account, target: Mapping[str, Any]) -> Sent:
        """Follow `target` (an actor document): to its personal inbox, id `https://HOST/<uuid>`."""
        number = next(self._numbers)
        follow = self.activity(
            "Follow", uuid=str(uuid.uuid4()), actor=account.uri, object=str(target["id"])
        )
        return await self._send(account, str(target["inbox"]), follow, number)

    async def unfollow(self, account: Account, follow: Sent, target: Mapping[str, Any]) -> Sent:
        """Undo(Follow) embedding the Follow, with Mastodon's `#follows/N/undo` id."""
        undo = self.activity(
            "Undo Follow",
            actor=account.uri,
            number=str(follow.number),
            uuid=follow.id.rsplit("/", 1)[1],
            object=str(target["id"]),
        )
        assert undo["object"] == {k: v for k, v in follow.activity.items() if k != "@context"}
        return await self._send(account, str(target["inbox"]), undo)

    async def favourite(self, account: Account, status_uri: str, author: Mapping[str, Any]) -> Sent:
        """Like a status: only to its author's personal inbox (FavouriteService)."""
        number = next(self._numbers)
        like = self.activity("Like", actor=account.uri, number=str(number), object=status_uri)
        return await self._send(account, str(author["inbox"]), like, number)

    async def unfavourite(self, account: Account, like: Sent, author: Mapping[str, Any]) -> Sent:
        """Undo(Like) embedding the Like (UndoLikeSerializer), to the same inbox."""
        undo = self.activity(
            "Undo Like",
            actor=account.uri,
            number=str(like.number),
            object=str(like.activity["object"]),
        )
        assert undo["object"] == {k: v for k, v in like.activity.items() if k != "@context"}
        return await self._send(account, str(author["inbox"]), undo)

    def ld_signed(self, account: Account, activity: dict[str, Any]) -> dict[str, Any]:
        """`activity` with an RsaSignature2017 `signature` block by `account`, as relays pass on.

        Shaped like Mastodon's LinkedDataSignature (creator, created, signatureValue). The value
        is an RSA signature over a JSON canonical form, not over URDNA2015 RDF as the real one
        is; flattrfed must not look at it at all, so its exact bytes do not matter here.
        """
        options = {
            "type": "RsaSignature2017",
            "creator": account.key_id,
            "created": self.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        canonical = json.dumps(activity, sort_keys=True, separators=(",", ":")).encode()
        options_hash = hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()
        to_sign = options_hash.encode() + hashlib.sha256(canonical).hexdigest().encode()
        value = base64.b64encode(rsa_sign(account.key, to_sign)).decode()
        return {**activity, "signature": {**options, "signatureValue": value}}
