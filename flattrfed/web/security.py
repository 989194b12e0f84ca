"""Web sessions, CSRF tokens, the login rate limit and the security headers of every page.

A session is one signed cookie, with nothing stored on the server:

    <member id>.<issued at, epoch seconds>.<random session id>.<HMAC-SHA256>

The MAC is keyed with a key derived from the instance's secret key and covers the payload and
a fingerprint of the member's password hash, so changing the password ends every other session
of that member. Anonymous visitors get a session too (member id 0): it carries the CSRF token
of the sign-up and log-in forms. Logging in and out always starts a new random session id.

The CSRF token of a session is an HMAC of its random id. Every state-changing request (POST,
PUT, PATCH, DELETE) to a web route must carry it in the form field `csrf_token`; the middleware
refuses it with 403 otherwise. ActivityPub inboxes are exempt: they are authenticated by HTTP
signatures, not by cookies.

Failed log-ins are counted per (client address, username). The client address is the peer's,
or, when the peer is a proxy listed in FLATTRFED_TRUSTED_PROXIES, the one it forwarded in
X-Forwarded-For; the header of anyone else is ignored, since a visitor can write anything there.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from yarl import URL

from flattrfed.config import Network
from flattrfed.context import SERVICES, Services
from flattrfed.db.models import Member

COOKIE_NAME: Final = "flattrfed_session"
CSRF_FIELD: Final = "csrf_token"
SESSION_MAX_AGE: Final = timedelta(days=30)
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})

LOGIN_MAX_FAILURES: Final = 5
LOGIN_WINDOW: Final = timedelta(minutes=15)
_LIMITER_MAX_KEYS: Final = 10_000

CONTENT_SECURITY_POLICY: Final = (
    "default-src 'self'; img-src 'self' https: data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class LoginLimiter:
    """Counts failed log-ins per (client address, username) in a sliding window, in memory."""

    def __init__(
        self, max_failures: int = LOGIN_MAX_FAILURES, window: timedelta = LOGIN_WINDOW
    ) -> None:
        self.max_failures = max_failures
        self.window = window
        self._failures: dict[tuple[str, str], deque[datetime]] = {}

    def _recent(self, key: tuple[str, str], now: datetime) -> deque[datetime]:
        times = self._failures.get(key, deque())
        while times and times[0] <= now - self.window:
            times.popleft()
        if not times:
            self._failures.pop(key, None)
        return times

    def blocked(self, key: tuple[str, str], now: datetime) -> bool:
        return len(self._recent(key, now)) >= self.max_failures

    def retry_after(self, key: tuple[str, str], now: datetime) -> int:
        """Seconds until one more attempt is allowed (0 when not blocked)."""
        times = self._recent(key, now)
        if len(times) < self.max_failures:
            return 0
        oldest = times[len(times) - self.max_failures]
        return max(1, int((oldest + self.window - now).total_seconds()) + 1)

    def failed(self, key: tuple[str, str], now: datetime) -> None:
        if key not in self._failures and len(self._failures) >= _LIMITER_MAX_KEYS:
            self._prune(now)
        self._failures.setdefault(key, deque()).append(now)
        times = self._failures[key]
        while len(times) > self.max_failures:
            times.popleft()

    def succeeded(self, key: tuple[str, str]) -> None:
        self._failures.pop(key, None)

    def _prune(self, now: datetime) -> None:
        for key in list(self._failures):
            self._recent(key, now)
        # Still full of live entries (an attack from many addresses): forget the oldest half.
        if len(self._failures) >= _LIMITER_MAX_KEYS:
            by_age = sorted(self._failures, key=lambda item: self._failures[item][-1])
            for key in by_age[: len(by_age) // 2]:
                del self._failures[key]


LIMITER_KEY: Final = web.RequestKey("flattrfed_login_limiter", LoginLimiter)


@dataclass
class WebSession:
    """The visitor's session: anonymous (member None) or a logged-in member."""

    sid: str
    issued_at: int
    member: Member | None
    csrf_token: str
    changed: bool = False

    @property
    def member_id(self) -> int:
        return self.member.id if self.member is not None else 0


SESSION_KEY: Final = web.RequestKey("flattrfed_web_session", WebSession)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _key(settings_secret: str, purpose: bytes) -> bytes:
    return hmac.new(settings_secret.encode("utf-8"), purpose, hashlib.sha256).digest()


def _fingerprint(member: Member | None) -> str:
    if member is None:
        return ""
    return hashlib.sha256(member.password_hash.encode("utf-8")).hexdigest()[:32]


def _mac(services: Services, payload: str, member: Member | None) -> str:
    key = _key(services.settings.secret_key, b"flattrfed web session v1")
    message = f"{payload}|{_fingerprint(member)}".encode()
    return _b64(hmac.new(key, message, hashlib.sha256).digest())


def csrf_token_for(services: Services, sid: str) -> str:
    key = _key(services.settings.secret_key, b"flattrfed csrf v1")
    return _b64(hmac.new(key, sid.encode("ascii"), hashlib.sha256).digest())


def _new_session(services: Services, member: Member | None) -> WebSession:
    sid = secrets.token_urlsafe(18)
    return WebSession(
        sid=sid,
        issued_at=int(services.clock.now().timestamp()),
        member=member,
        csrf_token=csrf_token_for(services, sid),
        changed=True,
    )


def cookie_value(services: Services, session: WebSession) -> str:
    payload = f"{session.member_id}.{session.issued_at}.{session.sid}"
    return f"{payload}.{_mac(services, payload, session.member)}"


async def _from_cookie(services: Services, value: str) -> WebSession | None:
    parts = value.split(".")
    if len(parts) != 4 or len(value) > 300:
        return None
    member_text, issued_text, sid, mac = parts
    if not (member_text.isascii() and member_text.isdigit()):
        return None
    if not (issued_text.isascii() and issued_text.isdigit()) or not sid.isascii():
        return None
    issued_at, member_id = int(issued_text), int(member_text)
    now = services.clock.now().timestamp()
    if not now - SESSION_MAX_AGE.total_seconds() <= issued_at <= now + 300:
        return None
    member: Member | None = None
    if member_id:
        async with services.database.sessions() as db:
            member = await db.get(Member, member_id)
        if member is None or member.approved_at is None:
            return None
    expected = _mac(services, f"{member_text}.{issued_text}.{sid}", member)
    if not hmac.compare_digest(expected, mac):
        return None
    return WebSession(sid, issued_at, member, csrf_token_for(services, sid))


async def get_session(request: web.Request) -> WebSession:
    """The visitor's session (verified once per request); a new anonymous one if none is valid."""
    if SESSION_KEY in request:
        return request[SESSION_KEY]
    services = request.app[SERVICES]
    raw = request.cookies.get(COOKIE_NAME)
    session = await _from_cookie(services, raw) if raw else None
    if session is None:
        session = _new_session(services, None)
    request[SESSION_KEY] = session
    return session


async def current_member(request: web.Request) -> Member | None:
    return (await get_session(request)).member


def log_in(request: web.Request, member: Member) -> WebSession:
    """Start a new session (new random id: no fixation) for `member`."""
    session = _new_session(request.app[SERVICES], member)
    request[SESSION_KEY] = session
    return session


def log_out(request: web.Request) -> WebSession:
    session = _new_session(request.app[SERVICES], None)
    request[SESSION_KEY] = session
    return session


def safe_next(value: object, default: str = "/dashboard") -> str:
    """A local path to go to after a form (never another site: no open redirects)."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        return default
    if "\\" in value or any(ord(char) < 0x20 for char in value) or len(value) > 2048:
        return default
    url = URL(value)
    if url.is_absolute() or url.scheme or url.host:
        return default
    return value


def login_url(request: web.Request, next_path: str | None = None) -> str:
    return str(URL("/login").with_query(next=next_path or request.path_qs))


async def require_member(request: web.Request) -> Member:
    """The logged-in member; anonymous visitors are sent to the log-in page (303)."""
    member = await current_member(request)
    if member is None:
        raise web.HTTPSeeOther(login_url(request))
    return member


def _address(text: str) -> IPAddress | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # A dual-stack socket shows an IPv4 peer as ::ffff:a.b.c.d; the IPv4 networks must match it.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def forwarded_client(peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """The visitor's address, given the peer's, the X-Forwarded-For headers and trusted proxies.

    Only a trusted peer's header counts. Each proxy appends the address it got the request
    from, so walking from the right, past the trusted proxies, the first other address is the
    last one a trusted proxy vouched for; everything left of it the visitor may have forged.
    """
    peer_address = _address(peer)
    if peer_address is None or not any(peer_address in network for network in trusted):
        return peer
    entries = [entry for entry in ",".join(forwarded_for).split(",") if entry.strip()]
    if not entries:
        return peer
    hop = peer_address
    for entry in reversed(entries):
        address = _address(entry)
        if address is None:
            return peer  # a proxy we trust wrote nonsense: use what we know for sure
        hop = address
        if not any(address in network for network in trusted):
            return str(address)
    return str(hop)  # proxies all the way: the furthest one named


def client_address(request: web.Request) -> str:
    """The visitor's address, for rate limits: the peer's, or what a trusted proxy forwarded."""
    peer = request.remote or "unknown"
    trusted = request.app[SERVICES].settings.trusted_proxies
    if not trusted:
        return peer
    return forwarded_client(peer, request.headers.getall("X-Forwarded-For", []), trusted)


def _csrf_exempt(request: web.Request) -> bool:
    if request.method in SAFE_METHODS:
        return True
    if request.match_info.http_exception is not None:
        return True  # no such route (404/405): nothing will be changed
    resource = request.match_info.route.resource
    canonical = resource.canonical if resource is not None else ""
    # ActivityPub inboxes are authenticated by HTTP signatures, never by cookies.
    return canonical == "/inbox" or canonical.endswith("/inbox")


def _finish(request: web.Request, response: web.StreamResponse) -> None:
    session: WebSession | None = request.get(SESSION_KEY)
    if session is not None and session.changed and not response.prepared:
        services = request.app[SERVICES]
        response.set_cookie(
            COOKIE_NAME,
            cookie_value(services, session),
            max_age=int(SESSION_MAX_AGE.total_seconds()) if session.member else None,
            path="/",
            httponly=True,
            samesite="Lax",
            secure=services.settings.scheme == "https",
        )
    if response.prepared:
        return
    content_type = response.headers.get("Content-Type", "")
    if content_type.startswith("text/html"):
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        if "frame-ancestors *" not in response.headers["Content-Security-Policy"]:
            # Only a handler that chose to be embedded (the Flattr widget) may be framed.
            response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if session is not None:
            # The page carries this visitor's CSRF token (and maybe their figures): never shared.
            response.headers["Cache-Control"] = "private, no-store"


def middleware() -> Middleware:
    """The web security middleware of one application (it owns that app's login limiter)."""
    limiter = LoginLimiter()

    @web.middleware
    async def web_security(request: web.Request, handler: Handler) -> web.StreamResponse:
        request[LIMITER_KEY] = limiter
        if not _csrf_exempt(request):
            session = await get_session(request)
            form = await request.post()
            token = form.get(CSRF_FIELD)
            if not isinstance(token, str) or not hmac.compare_digest(
                token.encode("utf-8"), session.csrf_token.encode("ascii")
            ):
                refused = web.HTTPForbidden(
                    text="403 Forbidden: the form's security token is missing or out of date. "
                    "Go back, reload the page and try again.",
                    content_type="text/plain",
                )
                _finish(request, refused)
                raise refused
        try:
            response = await handler(request)
        except web.HTTPException as error:
            _finish(request, error)
            raise
        _finish(request, response)
        return response

    return web_security
