"""The one outbound HTTP client: signs requests, refuses non-public addresses, caps sizes and time."""  # noqa: E501

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from ipaddress import IPv4Address
from typing import Any, Final
from urllib.parse import urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from yarl import URL

from flattrfed.activitypub.addresses import (
    AddressRefused,
    IPNetwork,
    parse_host_literal,
    refusal_reason,
)
from flattrfed.activitypub.documents import (
    ACCEPT_ACTIVITYPUB,
    ACTIVITY_JSON,
    is_activitypub_content_type,
    media_type,
)
from flattrfed.activitypub.jsonlimits import JsonLimitError, parse_json_limited
from flattrfed.activitypub.origins import same_origin
from flattrfed.activitypub.signatures import PrivateKey, sign_request
from flattrfed.clock import Clock

__all__ = [
    "MAX_RETRY_AFTER",
    "REDIRECT_STATUSES",
    "AddressRefusedError",
    "FederationClient",
    "FetchError",
    "FetchedResponse",
    "GuardRefusal",
    "GuardedResolver",
    "PostResult",
    "Signer",
    "parse_retry_after",
]

REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
# A peer asking for more than a day is either broken or hostile; the caller's own back-off
# schedule takes over beyond that.
MAX_RETRY_AFTER: Final = timedelta(hours=24)
# Longer than any id we would accept (origins.MAX_URI_LENGTH) with room for queries, and short
# enough that a hostile Location header cannot make us build huge strings.
MAX_URL_CHARS: Final = 8192
# Error and delivery responses are only ever logged, so only their beginning is read.
ERROR_BODY_BYTES: Final = 4096
EXCERPT_CHARS: Final = 200
_CHUNK_BYTES: Final = 65_536
_DNS_CACHE_SECONDS: Final = 10
# Deliveries to one busy peer queue for a pooled connection, and that wait counts against the
# connect timeout; eight keeps the queue short without hammering small servers.
_CONNECTIONS_PER_HOST: Final = 8
_SCHEMES: Final = ("http", "https")

_TypeCheck = Callable[[str | None], bool]


# --- results and errors ------------------------------------------------------------------------


@dataclass(frozen=True)
class Signer:
    """Whose key signs a request: the key id published in an actor document and its private key."""

    key_id: str
    private_key: PrivateKey


@dataclass(frozen=True)
class FetchedResponse:
    """The last response of a GET after following redirects.

    `url` is what the caller asked for, `final_url` the (normalised) URL that answered. `body`
    is complete for a 2xx answer and at most ERROR_BODY_BYTES otherwise.
    """

    url: str
    final_url: str
    status: int
    content_type: str | None
    body: bytes
    redirects: int = 0
    retry_after: timedelta | None = None


@dataclass(frozen=True)
class PostResult:
    """What a peer answered to a delivery. A 3xx is returned as is, never followed."""

    status: int
    retry_after: timedelta | None
    excerpt: str

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class FetchError(Exception):
    """A request failed; `reason` is a short stable code for logs, metrics and retry decisions.

    `url` is the URL being requested when it failed (a redirect hop, if one was followed).
    `permanent` says whether trying the same request again later could succeed.
    """

    def __init__(
        self,
        url: str,
        reason: str,
        *,
        permanent: bool,
        status: int | None = None,
        retry_after: timedelta | None = None,
        detail: str = "",
    ) -> None:
        super().__init__(url, reason)
        self.url = url
        self.reason = reason
        self.permanent = permanent
        self.status = status
        self.retry_after = retry_after
        self.detail = detail

    def __str__(self) -> str:
        shown = self.url if len(self.url) <= 200 else self.url[:200] + "…"
        status = f" (HTTP {self.status})" if self.status is not None else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"{self.reason}{status} for {shown}{detail}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments do not survive the default Exception pickling, and these
        # errors cross the worker boundary.
        return (
            _rebuild_fetch_error,
            (self.url, self.reason, self.permanent, self.status, self.retry_after, self.detail),
        )


def _rebuild_fetch_error(
    url: str,
    reason: str,
    permanent: bool,
    status: int | None,
    retry_after: timedelta | None,
    detail: str,
) -> FetchError:
    return FetchError(
        url, reason, permanent=permanent, status=status, retry_after=retry_after, detail=detail
    )


class AddressRefusedError(FetchError):
    """The SSRF guard refused the address `host` (a literal or what its name resolved to).

    Always permanent: the same URL will be refused again, so retrying only wastes work.
    """

    def __init__(self, url: str, host: str, why: str) -> None:
        super().__init__(url, "address_refused", permanent=True, detail=f"{host}: {why}")
        self.host = host
        self.why = why

    def __reduce__(self) -> tuple[Any, ...]:
        return (AddressRefusedError, (self.url, self.host, self.why))


def parse_retry_after(value: str | None, now: datetime) -> timedelta | None:
    """The wait a `Retry-After` header asks for, clamped to 0..MAX_RETRY_AFTER; None if unusable.

    Accepts delay-seconds and HTTP-dates (all three RFC 9110 forms, as servers still send them).
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isascii() and text.isdigit():
        # Compare before building the timedelta: a 400-digit number would overflow it.
        seconds = int(text[:12]) if len(text) <= 12 else None
        if seconds is None or seconds > MAX_RETRY_AFTER.total_seconds():
            return MAX_RETRY_AFTER
        return timedelta(seconds=seconds)
    if len(text) > 64:
        return None
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # "-0000" means UTC with unknown local time
    return min(max(moment - now, timedelta(0)), MAX_RETRY_AFTER)


# --- the resolver guard ------------------------------------------------------------------------


class GuardRefusal(OSError):
    """Raised by GuardedResolver. aiohttp wraps any OSError from a resolver into a
    ClientConnectorDNSError, so the refusal travels inside it as `os_error`."""

    def __init__(self, refused: AddressRefused) -> None:
        super().__init__(str(refused))
        self.refused = refused


def _resolve_result(host: str, address: str, port: int, *, v6: bool) -> ResolveResult:
    return ResolveResult(
        hostname=host,
        host=address,
        port=port,
        family=socket.AF_INET6 if v6 else socket.AF_INET,
        proto=0,
        flags=socket.AI_NUMERICHOST,
    )


class GuardedResolver(AbstractResolver):
    """Resolves through `inner`, then keeps only the addresses the SSRF guard allows.

    This is where the DNS-rebinding defence lives: aiohttp's TCPConnector connects to exactly
    the addresses its resolver returned, so the address checked here is the address connected
    to; there is no second lookup an attacker's DNS server could answer differently. The
    connector's DNS cache stores what this resolver returned, i.e. already-filtered answers.
    """

    def __init__(
        self, allowed_networks: Sequence[IPNetwork], inner: AbstractResolver | None = None
    ) -> None:
        self._allowed = tuple(allowed_networks)
        self._inner = inner
        # DefaultResolver() needs a running loop, so one we own is created on first use.
        self._owns_inner = inner is None

    def _inner_resolver(self) -> AbstractResolver:
        if self._inner is None:
            self._inner = aiohttp.DefaultResolver()
        return self._inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        try:
            literal = parse_host_literal(host)
        except ValueError as exc:
            raise GuardRefusal(AddressRefused(host, f"unusable host name: {exc}")) from None
        if literal is not None:
            # Classified here and never handed to libc: getaddrinfo() reads "2130706435",
            # "127.3" and "0x7f.0.0.3" as 127.0.0.x, which a check of the name would miss.
            why = refusal_reason(literal, self._allowed)
            if why is not None:
                refused = AddressRefused(host, why)
                raise GuardRefusal(refused) from refused
            return [_resolve_result(host, str(literal), port, v6=literal.version == 6)]
        answers = await self._inner_resolver().resolve(host, port, family)
        kept: list[ResolveResult] = []
        first_refusal: str | None = None
        for answer in answers:
            why = self._refusal(answer["host"])
            if why is None:
                kept.append(answer)
            elif first_refusal is None:
                first_refusal = f"{answer['host']} is {why}"
        if not kept:
            refused = AddressRefused(host, first_refusal or "the name has no addresses")
            raise GuardRefusal(refused) from refused
        return kept

    def _refusal(self, address: str) -> str | None:
        try:
            return refusal_reason(address, self._allowed)
        except ValueError:
            return "not an IP address"

    async def close(self) -> None:
        if self._owns_inner and self._inner is not None:
            await self._inner.close()


def _guard_refusal(exc: BaseException) -> AddressRefused | None:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, GuardRefusal):
            return current.refused
        os_error = getattr(current, "os_error", None)
        if isinstance(os_error, GuardRefusal):
            return os_error.refused
        current = current.__cause__ or current.__context__
    return None


# --- the client --------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Reply:
    status: int
    location: str | None
    content_type: str | None
    retry_after: timedelta | None
    body: bytes


class FederationClient:
    """Every request flattrfed makes to another server goes through one of these.

    One aiohttp session (and so one connection pool) per client, created on first use;
    call `close()` when done.
    """

    def __init__(
        self,
        *,
        allowed_networks: Sequence[IPNetwork],
        allow_http: bool,
        clock: Clock,
        resolver: AbstractResolver | None = None,
        user_agent: str = "flattrfed/0.1",
        max_bytes: int = 1_048_576,
        connect_timeout: float = 10,
        total_timeout: float = 30,
        max_redirects: int = 5,
    ) -> None:
        self._allowed = tuple(allowed_networks)
        self._allow_http = allow_http
        self._clock = clock
        self._resolver = GuardedResolver(self._allowed, resolver)
        self._user_agent = user_agent
        self._max_bytes = max_bytes
        self._connect_timeout = connect_timeout
        self._total_timeout = total_timeout
        self._max_redirects = max_redirects
        self._http: aiohttp.ClientSession | None = None
        self._closed = False

    def _session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("FederationClient is closed")
        if self._http is None:
            connector = aiohttp.TCPConnector(
                resolver=self._resolver,
                limit_per_host=_CONNECTIONS_PER_HOST,
                ttl_dns_cache=_DNS_CACHE_SECONDS,
            )
            self._http = aiohttp.ClientSession(
                connector=connector,
                # sock_read bounds each silent stretch like Mastodon's per-phase timeouts; the
                # overall deadline in get()/post() is what stops a peer trickling bytes (D2).
                timeout=aiohttp.ClientTimeout(
                    total=self._total_timeout,
                    connect=self._connect_timeout,
                    sock_read=self._connect_timeout,
                ),
                auto_decompress=True,
                # A proxy from HTTP(S)_PROXY would connect wherever it is told, past the
                # resolver guard; and .netrc credentials must never reach a peer.
                trust_env=False,
                # Fetches are stateless: a cookie set by one peer has no business in any
                # later request.
                cookie_jar=aiohttp.DummyCookieJar(),
                headers={"User-Agent": self._user_agent},
            )
        return self._http

    async def close(self) -> None:
        self._closed = True
        if self._http is not None:
            session, self._http = self._http, None
            await session.close()
        await self._resolver.close()

    # --- URL checks ----------------------------------------------------------------------------

    def _checked_url(self, raw: str) -> URL:
        """The URL to request, or FetchError/AddressRefusedError before any connection.

        aiohttp connects to an IP-literal host (a canonical dotted quad, or anything with a
        colon, such as [::ffff:127.0.0.3]) without asking the resolver, so literals are
        classified here; names are left to GuardedResolver. The yarl URL returned is the very
        object handed to aiohttp, so the host checked is the host it uses.
        """
        if len(raw) > MAX_URL_CHARS:
            raise FetchError(raw[:200], "bad_url", permanent=True, detail="URL too long")
        if any(ord(char) <= 0x20 or ord(char) == 0x7F for char in raw):
            raise FetchError(raw, "bad_url", permanent=True, detail="whitespace or control char")
        try:
            url = URL(raw)
            scheme = url.scheme
            host = url.raw_host
            url.port  # noqa: B018 - an out-of-range port raises here
        except (ValueError, TypeError) as exc:
            raise FetchError(raw, "bad_url", permanent=True, detail=str(exc)) from None
        if scheme not in _SCHEMES or (scheme == "http" and not self._allow_http):
            # file:, gopher:, data: and friends never reach the network stack; plain http
            # only in test and development federations.
            raise FetchError(raw, "scheme", permanent=True, detail=f"scheme {scheme!r}")
        if "@" in urlsplit(raw).netloc:
            # Even an empty userinfo: it only exists to make a URL mean different hosts to
            # different parsers.
            raise FetchError(raw, "userinfo", permanent=True)
        if not host:
            raise FetchError(raw, "bad_url", permanent=True, detail="no host")
        try:
            literal = parse_host_literal(host)
        except ValueError as exc:
            raise FetchError(raw, "bad_host", permanent=True, detail=str(exc)) from None
        if literal is not None:
            why = refusal_reason(literal, self._allowed)
            if why is not None:
                raise AddressRefusedError(raw, host, why)
            if isinstance(literal, IPv4Address) and host != str(literal):
                # An allowed address in a legacy spelling: no real peer writes URLs like that,
                # and libc and aiohttp disagree about them, so it is not worth supporting.
                raise FetchError(raw, "bad_host", permanent=True, detail="non-canonical IPv4")
        return url.with_fragment(None)

    def _redirect_target(self, current: URL, location: str) -> URL:
        try:
            joined = str(current.join(URL(location)))
        except (ValueError, TypeError) as exc:
            raise FetchError(
                str(current), "bad_redirect", permanent=True, detail=str(exc)
            ) from None
        target = self._checked_url(joined)
        if target.scheme != current.scheme:
            # https -> http would send the (signed) request and the answer in clear text.
            # http -> https is refused too: http is only allowed in test federations, where a
            # scheme switch means a confused peer, and one "same scheme only" rule is what the
            # WebFinger SSRF advisory (CVE-2025-23221) asks for and easy to audit.
            raise FetchError(
                joined,
                "scheme_change",
                permanent=True,
                detail=f"{current.scheme} -> {target.scheme}",
            )
        return target

    # --- one request ---------------------------------------------------------------------------

    async def _exchange(
        self,
        method: str,
        target: URL,
        *,
        signer: Signer | None,
        headers: dict[str, str],
        body: bytes | None,
        read_full: bool,
    ) -> _Reply:
        """One request, no redirects. read_full: a 2xx body must fit max_bytes or it is an error;
        otherwise (and always for error answers) only the first ERROR_BODY_BYTES are kept."""
        url = str(target)
        send = dict(headers)
        if signer is not None:
            # Signed over the exact URL string aiohttp sends (yarl-encoded), with our clock.
            send = sign_request(
                private_key=signer.private_key,
                key_id=signer.key_id,
                method=method,
                url=url,
                headers=send,
                body=body,
                now=self._clock.now(),
            )
        try:
            async with self._session().request(
                method, target, headers=send, data=body, allow_redirects=False
            ) as response:
                location = response.headers.get("Location")
                if response.status in REDIRECT_STATUSES and location is not None:
                    content = b""  # never read: the redirect is followed or refused
                elif read_full and 200 <= response.status < 300:
                    content = await self._read_capped(response, url)
                else:
                    content = await _read_prefix(response, min(ERROR_BODY_BYTES, self._max_bytes))
                return _Reply(
                    status=response.status,
                    location=location,
                    content_type=response.headers.get("Content-Type"),
                    retry_after=parse_retry_after(
                        response.headers.get("Retry-After"), self._clock.now()
                    ),
                    body=content,
                )
        except FetchError:
            raise
        except TimeoutError:
            # aiohttp's connect and sock_read timeouts; the overall deadline is the caller's.
            raise FetchError(url, "timeout", permanent=False) from None
        except aiohttp.ClientConnectorDNSError as exc:
            refused = _guard_refusal(exc)
            if refused is not None:
                raise AddressRefusedError(url, refused.host, refused.reason) from None
            raise FetchError(url, "dns", permanent=False, detail=str(exc.os_error)) from None
        except aiohttp.ClientConnectorError as exc:
            raise FetchError(url, "connect", permanent=False, detail=str(exc.os_error)) from None
        except aiohttp.InvalidURL as exc:
            raise FetchError(url, "bad_url", permanent=True, detail=str(exc)) from None
        except aiohttp.ClientError as exc:
            raise FetchError(url, "network", permanent=False, detail=type(exc).__name__) from None
        except OSError as exc:
            raise FetchError(url, "network", permanent=False, detail=type(exc).__name__) from None

    async def _read_capped(self, response: aiohttp.ClientResponse, url: str) -> bytes:
        # Content-Length first, so an announced 1 GB body costs nothing; then chunk by chunk,
        # stopping as soon as the cap is passed (a chunked or lying peer). The count is of
        # decompressed bytes, so a gzip bomb is stopped too.
        length = response.content_length
        if length is not None and length > self._max_bytes:
            raise FetchError(url, "too_large", permanent=True, detail=f"Content-Length {length}")
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
            total += len(chunk)
            if total > self._max_bytes:
                raise FetchError(
                    url, "too_large", permanent=True, detail=f"over {self._max_bytes} bytes"
                )
            chunks.append(chunk)
        return b"".join(chunks)

    # --- GET -----------------------------------------------------------------------------------

    async def get(self, url: str, *, signer: Signer | None, accept: str) -> FetchedResponse:
        """GET `url`, following at most max_redirects same-scheme redirects, each hop guarded
        and (with a signer) signed afresh. Any final status is returned; see FetchedResponse."""
        target = self._checked_url(url)
        seen = {str(target)}
        redirects = 0
        try:
            # One deadline over every hop and every byte: per-read timeouts alone never fire
            # for a peer that trickles a byte at a time (D2).
            async with asyncio.timeout(self._total_timeout):
                while True:
                    reply = await self._exchange(
                        "GET",
                        target,
                        signer=signer,
                        headers={"Accept": accept},
                        body=None,
                        read_full=True,
                    )
                    if reply.status not in REDIRECT_STATUSES or reply.location is None:
                        return FetchedResponse(
                            url=url,
                            final_url=str(target),
                            status=reply.status,
                            content_type=reply.content_type,
                            body=reply.body,
                            redirects=redirects,
                            retry_after=reply.retry_after,
                        )
                    redirects += 1
                    if redirects > self._max_redirects:
                        raise FetchError(
                            str(target),
                            "too_many_redirects",
                            permanent=True,
                            status=reply.status,
                            detail=f"more than {self._max_redirects}",
                        )
                    target = self._redirect_target(target, reply.location)
                    if str(target) in seen:
                        raise FetchError(
                            str(target), "redirect_loop", permanent=True, status=reply.status
                        )
                    seen.add(str(target))
        except TimeoutError:
            raise FetchError(
                str(target), "timeout", permanent=False, detail=f"over {self._total_timeout} s"
            ) from None

    async def _get_json(
        self, url: str, *, signer: Signer | None, accept: str, type_ok: _TypeCheck
    ) -> tuple[dict[str, Any], FetchedResponse]:
        response = await self.get(url, signer=signer, accept=accept)
        if not 200 <= response.status < 300:
            raise _status_error(response)
        if not type_ok(response.content_type):
            raise FetchError(
                response.final_url,
                "content_type",
                permanent=True,
                status=response.status,
                detail=repr((response.content_type or "")[:100]),
            )
        try:
            document = parse_json_limited(
                response.body, max_bytes=self._max_bytes, require_object=True
            )
        except JsonLimitError as exc:
            raise FetchError(
                response.final_url, "bad_json", permanent=True, detail=str(exc.reason)
            ) from exc
        assert isinstance(document, dict)  # require_object=True
        return document, response

    async def fetch_activitypub(
        self, url: str, *, signer: Signer | None, refetch_unknown_id: bool = False
    ) -> dict[str, Any]:
        """Fetch an ActivityStreams document whose `id` proves where it came from.

        `url` must be the id you expect, without a fragment (strip a key id's `#main-key`).
        Accepted when the document's `id` equals `url` exactly; after redirects it may instead
        equal the final URL, and in both cases the final URL must have the id's origin (A1b).
        With refetch_unknown_id, a document with another id is refetched from that id once,
        and the second answer must carry exactly that id (A1c). Otherwise FetchError
        "id_mismatch".
        """
        document, response = await self._get_json(
            url, signer=signer, accept=ACCEPT_ACTIVITYPUB, type_ok=is_activitypub_content_type
        )
        claimed = document.get("id")
        if self._id_proven(claimed, url, response):
            return document
        # Refetching the URL we just asked for would only repeat the same answer.
        if refetch_unknown_id and isinstance(claimed, str) and claimed != url:
            second, again = await self._get_json(
                claimed,
                signer=signer,
                accept=ACCEPT_ACTIVITYPUB,
                type_ok=is_activitypub_content_type,
            )
            second_id = second.get("id")
            if second_id == claimed and self._id_proven(second_id, claimed, again):
                return second
            claimed = second_id
        raise FetchError(
            url,
            "id_mismatch",
            permanent=True,
            status=response.status,
            detail=f"document id {str(claimed)[:200]!r}",
        )

    def _id_proven(self, claimed: object, requested: str, response: FetchedResponse) -> bool:
        if not isinstance(claimed, str):
            return False
        if response.redirects == 0:
            return claimed == requested
        if claimed not in (requested, response.final_url):
            return False
        # The bytes came from the final URL's server, so only that origin can vouch for the
        # id, even when the id is the URL we first asked for (an open redirect on a victim's
        # server must not let an attacker's server speak for the victim).
        return same_origin(claimed, response.final_url, allow_http=self._allow_http)

    async def fetch_json(
        self, url: str, *, accept: str, allowed_types: Collection[str]
    ) -> dict[str, Any]:
        """GET a JSON object such as a WebFinger JRD or a NodeInfo document, unsigned.

        The response's media type must be one of `allowed_types`; parameters written in an
        allowed type (such as NodeInfo's `profile`) must then match as well.
        """
        wanted = [media_type(kind) for kind in allowed_types]

        def type_ok(content_type: str | None) -> bool:
            if not content_type:
                return False
            main, params = media_type(content_type)
            return any(
                main == kind and all(params.get(key) == value for key, value in need.items())
                for kind, need in wanted
            )

        document, _response = await self._get_json(url, signer=None, accept=accept, type_ok=type_ok)
        return document

    # --- POST ----------------------------------------------------------------------------------

    async def post(
        self, url: str, body: bytes, *, signer: Signer, content_type: str = ACTIVITY_JSON
    ) -> PostResult:
        """Deliver `body` signed (draft-cavage with Digest and Content-Type) to `url`.

        Never follows redirects: a signed POST replayed to wherever a peer points would be an
        SSRF primitive with our signature on it (GHSA-f59r-8gcj-68f2), so a 3xx comes back
        as the result and the caller treats it as a failure.
        """
        target = self._checked_url(url)
        try:
            async with asyncio.timeout(self._total_timeout):
                reply = await self._exchange(
                    "POST",
                    target,
                    signer=signer,
                    headers={"Content-Type": content_type},
                    body=body,
                    read_full=False,
                )
        except TimeoutError:
            raise FetchError(
                str(target), "timeout", permanent=False, detail=f"over {self._total_timeout} s"
            ) from None
        return PostResult(
            status=reply.status, retry_after=reply.retry_after, excerpt=_excerpt(reply.body)
        )


_STATUS_REASONS: Final = {
    # Permanent for this fetch: repeating the same request gets the same answer. (A caller
    # may still decide to retry a 401/403 signed, or after refreshing its own key.)
    401: ("unauthorized", True),
    403: ("forbidden", True),
    404: ("not_found", True),
    410: ("gone", True),
    # The peer asks us to come back later.
    408: ("request_timeout", False),
    429: ("rate_limited", False),
}


def _status_error(response: FetchedResponse) -> FetchError:
    status = response.status
    if status in _STATUS_REASONS:
        reason, permanent = _STATUS_REASONS[status]
    elif status >= 500:
        reason, permanent = "server_error", False
    else:
        # Any other 4xx, a 3xx without Location, 1xx oddities: nothing a retry would fix.
        reason, permanent = "http_status", True
    return FetchError(
        response.final_url,
        reason,
        permanent=permanent,
        status=status,
        retry_after=None if permanent else response.retry_after,
    )


async def _read_prefix(response: aiohttp.ClientResponse, limit: int) -> bytes:
    # Stops reading at `limit`; aiohttp then closes the connection instead of reusing it,
    # which is the price of not downloading a peer's 1 GB error page.
    chunks: list[bytes] = []
    total = 0
    async for chunk in response.content.iter_chunked(_CHUNK_BYTES):
        chunks.append(chunk[: limit - total])
        total += len(chunk)
        if total >= limit:
            break
    return b"".join(chunks)


def _excerpt(body: bytes) -> str:
    text = body.decode("utf-8", "replace")
    # Peer-chosen text ends up in logs: no control characters, no line breaks.
    cleaned = "".join(char if char.isprintable() else " " for char in text)
    return " ".join(cleaned.split())[:EXCERPT_CHARS]
