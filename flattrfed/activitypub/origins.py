"""Parses and compares the origins of ActivityPub URIs strictly, so look-alike hosts never match."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

MAX_URI_LENGTH = 2048
_SPACE_OR_CONTROL = re.compile(r"[\x00-\x20\x7f]")
DEFAULT_PORTS = {"http": 80, "https": 443}


class BadUri(ValueError):
    """A URI we refuse to treat as an ActivityPub id."""


def origin_of(uri: str, *, allow_http: bool = False) -> str:
    """`scheme://host[:port]` of an absolute http(s) URI, normalised, or BadUri.

    Hosts are compared after lowercasing and IDNA encoding; a trailing dot, userinfo, an
    empty host or an explicit default port are refused rather than normalised, so two
    spellings of one host can never be used to impersonate each other.
    """
    if not isinstance(uri, str) or not uri or len(uri) > MAX_URI_LENGTH:
        raise BadUri("not a URI string of acceptable length")
    if _SPACE_OR_CONTROL.search(uri):
        raise BadUri("whitespace or control characters in URI")
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme != "https" and not (allow_http and scheme == "http"):
        raise BadUri(f"scheme {parts.scheme!r} not allowed")
    if parts.username is not None or parts.password is not None:
        raise BadUri("userinfo in URI")
    hostname = parts.hostname
    if not hostname or hostname.endswith("."):
        raise BadUri("missing host or trailing dot")
    try:
        port = parts.port
    except ValueError:
        raise BadUri("bad port") from None
    if port is not None and port == DEFAULT_PORTS[scheme] and f":{port}" in parts.netloc:
        raise BadUri("explicit default port")
    if hostname.startswith("["):
        host = hostname
    else:
        try:
            host = hostname.encode("idna").decode("ascii").lower()
        except UnicodeError:
            raise BadUri("host is not a valid IDNA name") from None
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def host_of(uri: str, *, allow_http: bool = False) -> str:
    """The normalised host[:port] of a URI (what blocks and failure tracking are keyed by)."""
    return origin_of(uri, allow_http=allow_http).split("://", 1)[1]


def domain_of(uri: str, *, allow_http: bool = False) -> str:
    """The host without a port."""
    host = host_of(uri, allow_http=allow_http)
    if host.startswith("["):
        return host[: host.index("]") + 1]
    return host.rsplit(":", 1)[0] if ":" in host else host


def same_origin(first: str, second: str, *, allow_http: bool = False) -> bool:
    try:
        return origin_of(first, allow_http=allow_http) == origin_of(second, allow_http=allow_http)
    except BadUri:
        return False
