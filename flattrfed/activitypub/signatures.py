"""HTTP request signatures, draft-cavage and RFC 9421: keys, signing and a two-phase verify."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Final, Literal
from urllib.parse import urldefrag, urlsplit

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa

__all__ = [
    "MAX_AGE",
    "MAX_FUTURE_SKEW",
    "ParsedSignature",
    "PrivateKey",
    "PublicKey",
    "Reason",
    "Scheme",
    "SignatureError",
    "SignedRequest",
    "content_digest_header",
    "digest_header",
    "format_http_date",
    "generate_rsa_key",
    "key_id_without_fragment",
    "load_private_key_pem",
    "load_public_key_pem",
    "parse_signature",
    "private_key_to_pem",
    "public_key_to_pem",
    "sign_request",
    "sign_request_rfc9421",
    "verify_parsed",
]

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey = rsa.RSAPublicKey | ed25519.Ed25519PublicKey
Scheme = Literal["draft-cavage", "rfc9421"]
Algorithm = Literal["rsa-sha256", "ed25519"]
Reason = Literal[
    "missing",  # no signature at all
    "malformed",  # a signature or covered header we cannot parse, or over a size cap
    "algorithm",  # algorithm not on the allow-list, or not matching the key type
    "components",  # a required component is not covered, or a covered one is absent
    "date",  # Date / created / expires outside the accepted window, or unparseable
    "digest",  # Digest / Content-Digest absent, unparseable, of the wrong kind or not the body's
    "host",  # Host header unusable or not our origin
    "key",  # the public key is unacceptable (type, size, garbage PEM)
    "mismatch",  # the cryptographic check failed
]

# Mastodon's window (see research/ap-interop.md §1.4): created may be up to 1 h ahead of us, and
# at most created + 5 min expiry + 1 h skew old. Fixed here rather than derived from `expires`,
# so a peer cannot widen the replay window by announcing a far-away expiry.
MAX_FUTURE_SKEW: Final = timedelta(hours=1)
MAX_AGE: Final = timedelta(hours=1, minutes=5)

# Size caps. Everything below is parsed from hostile input, so every loop is bounded.
MAX_PEM_CHARS: Final = 16 * 1024
MAX_SIGNATURE_HEADER_CHARS: Final = 8 * 1024
MAX_FIELD_VALUE_CHARS: Final = 8 * 1024
MAX_HEADER_FIELDS: Final = 256
MAX_PATH_CHARS: Final = 8 * 1024
MAX_KEY_ID_CHARS: Final = 2048
MAX_PARAMS: Final = 16
# Fedify signs draft-cavage over every header it sends, so the list must allow a dozen or so.
MAX_COMPONENTS: Final = 32
MAX_SIGNATURE_BYTES: Final = 1024  # an 8192-bit RSA signature
RSA_MIN_BITS: Final = 2048
RSA_MAX_BITS: Final = 8192

_WEEKDAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)
# Only IMF-fixdate: every fediverse signer we know of emits it, and the obsolete RFC 850 and
# asctime forms would only widen what an attacker can feed the parser. [0-9], not \d, because
# \d also matches non-ASCII digits.
_IMF_FIXDATE: Final = re.compile(
    r"(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), ([0-9]{2}) "
    r"(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([0-9]{4}) "
    r"([0-9]{2}):([0-9]{2}):([0-9]{2}) GMT"
)
_TOKEN: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}")
_FIELD_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]{1,128}")
# Visible ASCII plus SP and HTAB. Refusing CR, LF and NUL in covered values is what stops a
# value from smuggling an extra "name: value" line into the signing string.
_FIELD_VALUE: Final = re.compile(r"[\t\x20-\x7e]*")
_ORIGIN_FORM: Final = re.compile(r"/[\x21-\x7e]*")
_KEY_ID: Final = re.compile(r"[\x21-\x7e]{1,2048}")
_HOST: Final = re.compile(r"(\[[0-9A-Fa-f:.]{2,64}\]|[A-Za-z0-9._~-]{1,253})(?::([0-9]{1,5}))?")
_DIGITS: Final = re.compile(r"[0-9]{1,12}")
_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# Timestamps beyond year 9999 cannot become a datetime; refuse them before trying.
_MAX_TIMESTAMP: Final = 253402300799

# Headers whose duplicates would make the request ambiguous in a way an attacker could use
# (two dates, two digests, two hosts, two signatures): refused outright instead of joined.
_SINGLETON_FIELDS: Final = frozenset(
    {"signature", "signature-input", "date", "host", "digest", "content-digest"}
)
_CAVAGE_ALGORITHMS: Final[Mapping[str, Algorithm | None]] = {
    "rsa-sha256": "rsa-sha256",
    # hs2019 says "the key decides"; like Mastodon and GoToSocial we then use PKCS#1 v1.5 +
    # SHA-256 for RSA keys and plain Ed25519 for Ed25519 keys.
    "hs2019": None,
    "ed25519": "ed25519",
}
_RFC9421_ALGORITHMS: Final[Mapping[str, Algorithm]] = {
    "rsa-v1_5-sha256": "rsa-sha256",
    "ed25519": "ed25519",
}
_CAVAGE_PSEUDO: Final = frozenset({"(request-target)", "(created)", "(expires)"})
_RFC9421_DERIVED: Final = frozenset(
    {"@method", "@target-uri", "@authority", "@scheme", "@request-target", "@path", "@query"}
)
_DIGEST_LENGTHS: Final = {"sha-256": 32, "sha-512": 64}


class SignatureError(Exception):
    """A request signature we will not accept; `reason` is a short code for logs and metrics.

    The message never echoes header values: they are attacker-chosen and end up in logs.
    """

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason: Reason = reason
        self.detail = detail


# --- keys --------------------------------------------------------------------------------------


def generate_rsa_key() -> rsa.RSAPrivateKey:
    """A fresh 2048-bit RSA key, the size every fediverse server accepts."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def private_key_to_pem(key: PrivateKey) -> str:
    """PKCS#8 PEM, unencrypted (storage encryption is the caller's concern)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode("ascii")


def public_key_to_pem(key: PublicKey) -> str:
    """SubjectPublicKeyInfo PEM ("BEGIN PUBLIC KEY"), the form Mastodon publishes."""
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def load_private_key_pem(pem: str) -> PrivateKey:
    """Load one of our own stored private keys; trusted input, so errors are ValueError."""
    key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
    if isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        return key
    raise ValueError("only RSA and Ed25519 private keys are supported")


def load_public_key_pem(pem: str) -> PublicKey:
    """Load a peer's public key from its actor document: RSA 2048..8192 bits or Ed25519 only."""
    if len(pem) > MAX_PEM_CHARS:
        raise SignatureError("key", "PEM too long")
    try:
        data = pem.encode("ascii")
    except UnicodeEncodeError:
        raise SignatureError("key", "PEM is not ASCII") from None
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise SignatureError("key", "not a PEM public key") from None
    return _acceptable_public_key(key)


def _acceptable_public_key(key: object) -> PublicKey:
    if isinstance(key, rsa.RSAPublicKey):
        if not RSA_MIN_BITS <= key.key_size <= RSA_MAX_BITS:
            # Small keys are forgeable; huge ones make each verification a CPU sink.
            raise SignatureError("key", "RSA key size outside 2048..8192 bits")
        exponent = key.public_numbers().e
        if exponent < 3 or exponent % 2 == 0:
            raise SignatureError("key", "RSA public exponent is unsafe")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise SignatureError("key", "only RSA and Ed25519 public keys are accepted")


def key_id_without_fragment(key_id: str) -> str:
    """The key id minus its fragment: usually the actor URL (`…/users/alice#main-key`).

    Only a hint for where to look. The caller must still fetch the key, take its owner from the
    fetched document and check that the owner's actor document lists this very key id; a key
    document's self-declared owner is not proof (GHSA-q9f8-5hc7-898f).
    """
    return urldefrag(key_id).url


# --- digests and dates -------------------------------------------------------------------------


def digest_header(body: bytes) -> str:
    """RFC 3230 `Digest` value as draft-cavage peers send it: `SHA-256=<base64>`."""
    return "SHA-256=" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii")


def content_digest_header(body: bytes) -> str:
    """RFC 9530 `Content-Digest` value as RFC 9421 peers send it: `sha-256=:<base64>:`."""
    return "sha-256=:" + base64.b64encode(hashlib.sha256(body).digest()).decode("ascii") + ":"


def format_http_date(moment: datetime) -> str:
    """IMF-fixdate in GMT, built by hand because strftime's %a and %b follow the locale."""
    _require_aware(moment)
    u = moment.astimezone(UTC)
    return (
        f"{_WEEKDAYS[u.weekday()]}, {u.day:02d} {_MONTHS[u.month - 1]} {u.year:04d} "
        f"{u.hour:02d}:{u.minute:02d}:{u.second:02d} GMT"
    )


def _parse_http_date(value: str) -> datetime:
    match = _IMF_FIXDATE.fullmatch(value)
    if match is None:
        raise SignatureError("date", "Date is not an IMF-fixdate")
    day, month, year, hour, minute, second = match.groups()
    try:
        return datetime(
            int(year),
            _MONTHS.index(month) + 1,
            int(day),
            int(hour),
            int(minute),
            int(second),
            tzinfo=UTC,
        )
    except ValueError:
        raise SignatureError("date", "Date names an impossible moment") from None


def _timestamp(value: int) -> datetime:
    if not 0 <= value <= _MAX_TIMESTAMP:
        raise SignatureError("date", "timestamp out of range")
    return datetime.fromtimestamp(value, tz=UTC)


def _check_window(moment: datetime, now: datetime, what: str) -> None:
    if moment > now + MAX_FUTURE_SKEW:
        raise SignatureError("date", f"{what} is too far in the future")
    if moment < now - MAX_AGE:
        raise SignatureError("date", f"{what} is too old")


def _check_expires(expires: datetime | None, created: datetime | None, now: datetime) -> None:
    if expires is None:
        return
    if created is not None and expires < created:
        raise SignatureError("malformed", "expires before created")
    if expires < now:
        raise SignatureError("date", "signature expired")


def _require_aware(moment: datetime) -> None:
    # A naive datetime here is a bug in our code, not hostile input, hence ValueError.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("an aware datetime is required")


# --- signing -----------------------------------------------------------------------------------


def sign_request(
    *,
    private_key: PrivateKey,
    key_id: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    now: datetime,
) -> dict[str, str]:
    """Sign draft-cavage as Mastodon does; return every header to send, Signature included.

    RSA keys sign `rsa-sha256`; Ed25519 keys sign `hs2019`, the label draft-cavage reserves for
    "look at the key". Requests with a body (or any method but GET/HEAD) cover
    `(request-target) host date digest` plus `content-type` when given; others cover
    `(request-target) host date` plus `accept` when given. `url` must already be
    percent-encoded ASCII, because the bytes we sign must be the bytes the client sends.
    """
    method_upper = _signer_method(method)
    _scheme, authority, target = _split_outgoing_url(url)
    out = _without(headers, {"host", "date", "digest", "content-digest", "signature"})
    out["Host"] = authority
    out["Date"] = format_http_date(now)
    lowered = {name.lower(): value for name, value in out.items()}
    covered = ["(request-target)", "host", "date"]
    if body is not None or method_upper not in ("GET", "HEAD"):
        out["Digest"] = lowered["digest"] = digest_header(body or b"")
        covered.append("digest")
        if "content-type" in lowered:
            covered.append("content-type")
    elif "accept" in lowered:
        covered.append("accept")
    lines = []
    for name in covered:
        if name == "(request-target)":
            lines.append(f"(request-target): {method_upper.lower()} {target}")
        else:
            lines.append(f"{name}: {_signer_value(lowered[name])}")
    base = "\n".join(lines).encode("ascii")
    algorithm = "rsa-sha256" if isinstance(private_key, rsa.RSAPrivateKey) else "hs2019"
    signature = base64.b64encode(_raw_sign(private_key, base)).decode("ascii")
    out["Signature"] = (
        f'keyId="{_signer_key_id(key_id)}",algorithm="{algorithm}",'
        f'headers="{" ".join(covered)}",signature="{signature}"'
    )
    return out


def sign_request_rfc9421(
    *,
    private_key: PrivateKey,
    key_id: str,
    method: str,
    url: str,
    headers: Mapping[str, str],
    body: bytes | None,
    now: datetime,
) -> dict[str, str]:
    """Sign RFC 9421 (label `sig1`) the way Fedify does; return every header to send.

    Covers `"@method" "@target-uri" "@authority"`, plus `"content-digest"` when there is a body
    (or the method is not GET/HEAD), with `created`, `keyid` and `alg` (`rsa-v1_5-sha256` or
    `ed25519`, from the key type).
    """
    method_upper = _signer_method(method)
    scheme, authority, target = _split_outgoing_url(url)
    _require_aware(now)
    out = _without(headers, {"host", "digest", "content-digest", "signature", "signature-input"})
    out["Host"] = authority
    components = ["@method", "@target-uri", "@authority"]
    values = [method_upper, f"{scheme}://{authority}{target}", authority]
    if body is not None or method_upper not in ("GET", "HEAD"):
        out["Content-Digest"] = content_digest_header(body or b"")
        components.append("content-digest")
        values.append(out["Content-Digest"])
    alg = "rsa-v1_5-sha256" if isinstance(private_key, rsa.RSAPrivateKey) else "ed25519"
    created = int(now.astimezone(UTC).timestamp())
    params = f'created={created};keyid="{_sf_string(_signer_key_id(key_id))}";alg="{alg}"'
    signature_params = "(" + " ".join(f'"{c}"' for c in components) + ")" + ";" + params
    lines = [f'"{c}": {_signer_value(v)}' for c, v in zip(components, values, strict=True)]
    lines.append(f'"@signature-params": {signature_params}')
    signature = _raw_sign(private_key, "\n".join(lines).encode("ascii"))
    out["Signature-Input"] = f"sig1={signature_params}"
    out["Signature"] = "sig1=:" + base64.b64encode(signature).decode("ascii") + ":"
    return out


def _raw_sign(private_key: PrivateKey, base: bytes) -> bytes:
    if isinstance(private_key, rsa.RSAPrivateKey):
        return private_key.sign(base, padding.PKCS1v15(), hashes.SHA256())
    return private_key.sign(base)


def _signer_method(method: str) -> str:
    if _TOKEN.fullmatch(method) is None:
        raise ValueError("method is not an HTTP token")
    return method.upper()


def _signer_value(value: str) -> str:
    # Our own outgoing headers: a CR/LF here is a bug, and signing it would sign a lie.
    stripped = value.strip(" \t")
    if _FIELD_VALUE.fullmatch(stripped) is None:
        raise ValueError("header value is not printable ASCII")
    return stripped


def _signer_key_id(key_id: str) -> str:
    if _KEY_ID.fullmatch(key_id) is None or '"' in key_id or "\\" in key_id:
        raise ValueError("key id must be a URL without quotes or backslashes")
    return key_id


def _split_outgoing_url(url: str) -> tuple[str, str, str]:
    """(scheme, host[:port], path?query) of an outgoing URL, port only when non-default."""
    if not url.isascii():
        raise ValueError("URL must be percent-encoded ASCII")
    parts = urlsplit(url)
    if parts.scheme not in _DEFAULT_PORTS or not parts.netloc or "@" in parts.netloc:
        raise ValueError("URL must be http(s)://host[:port]/path without credentials")
    authority = _normalize_authority(parts.netloc, parts.scheme)
    if authority is None:
        raise ValueError("URL has an unusable host")
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, authority, target


def _without(headers: Mapping[str, str], names: set[str]) -> dict[str, str]:
    # Headers we set ourselves replace the caller's, whatever their spelling.
    return {name: value for name, value in headers.items() if name.lower() not in names}


def _normalize_authority(value: str, scheme: str) -> str | None:
    """Lowercase host, default port dropped (RFC 9421 §2.2.3); None when unusable."""
    match = _HOST.fullmatch(value)
    if match is None:
        return None
    host, port = match.group(1).lower(), match.group(2)
    if port is None:
        return host
    number = int(port)
    if not 0 < number < 65536:
        return None
    return host if number == _DEFAULT_PORTS.get(scheme) else f"{host}:{number}"


# --- verification, phase 1: everything that needs no key ---------------------------------------


@dataclass(frozen=True)
class ParsedSignature:
    """A signature that passed every key-independent check; fetch `key_id`'s key, then verify.

    `algorithm` is None when the signer left it to the key (`hs2019`, or RFC 9421 without
    `alg`). `created` is the signed creation time (RFC 9421 `created`, cavage `(created)` or
    the covered Date). `legacy_signing_base` is the draft-cavage base with the query left out of
    `(request-target)`, which older Mastodons and Fedify sign; it is None when it would not
    differ.
    """

    key_id: str
    scheme: Scheme
    algorithm: Algorithm | None
    declared_algorithm: str | None
    covered: tuple[str, ...]
    created: datetime | None
    expires: datetime | None
    signing_base: bytes
    signature: bytes
    legacy_signing_base: bytes | None = None

    @property
    def signing_bases(self) -> tuple[bytes, ...]:
        if self.legacy_signing_base is None:
            return (self.signing_base,)
        return (self.signing_base, self.legacy_signing_base)


# The name the design discussion used; same class.
SignedRequest = ParsedSignature


@dataclass(frozen=True)
class _Request:
    method: str
    path: str
    fields: dict[str, list[str]]
    body: bytes
    now: datetime
    scheme: str
    origin_authority: str | None

    @property
    def query(self) -> str | None:
        _, sep, query = self.path.partition("?")
        return query if sep else None

    @property
    def path_only(self) -> str:
        return self.path.partition("?")[0]

    @property
    def needs_digest(self) -> bool:
        # A body that is not covered by a signed digest could be swapped freely (CVE-2023-49079).
        return self.method not in ("GET", "HEAD") or bool(self.body)

    def single(self, name: str) -> str | None:
        values = self.fields.get(name)
        if values is None:
            return None
        if len(values) != 1:
            raise SignatureError("malformed", f"duplicate {name} header")
        return values[0]

    def covered_value(self, name: str) -> str:
        """A covered header's value: each line trimmed, repeated lines joined by ', '."""
        values = self.fields.get(name)
        if values is None:
            raise SignatureError("components", f"covered header {name} is absent")
        if name in _SINGLETON_FIELDS and len(values) != 1:
            raise SignatureError("malformed", f"duplicate {name} header")
        parts = []
        for value in values:
            if len(value) > MAX_FIELD_VALUE_CHARS:
                raise SignatureError("malformed", f"header {name} too long")
            if _FIELD_VALUE.fullmatch(value) is None:
                raise SignatureError("malformed", f"header {name} has forbidden characters")
            parts.append(value.strip(" \t"))
        joined = ", ".join(parts)
        if len(joined) > MAX_FIELD_VALUE_CHARS:
            raise SignatureError("malformed", f"header {name} too long")
        return joined

    def authority(self) -> str:
        """Our authority for RFC 9421 @authority/@target-uri: the origin's, else the Host's."""
        if self.origin_authority is not None:
            return self.origin_authority
        host = self.single("host")
        if host is None:
            raise SignatureError("host", "no Host header")
        authority = _normalize_authority(host.strip(" \t"), self.scheme)
        if authority is None:
            raise SignatureError("host", "unusable Host header")
        return authority


def parse_signature(
    method: str,
    path: str,
    headers: Mapping[str, str],
    body: bytes | None,
    now: datetime,
    *,
    origin: str | None = None,
) -> ParsedSignature:
    """Check a request's signature as far as possible without the key; raise SignatureError.

    `path` is the raw request target as received (path plus `?query`, still percent-encoded).
    `headers` may be a plain dict or a multi-dict; names are matched case-insensitively and
    repeated names are seen through `.items()`. `origin` (e.g. "https://flattr.example") is
    our public origin: when given, a Host header naming anything else is refused, so a request
    signed for another server cannot be replayed to us, and RFC 9421 @authority/@target-uri are
    derived from it. Without it, the scheme is taken as https and the authority from Host.

    Scheme choice: a `Signature-Input` header means RFC 9421 and nothing else — the `Signature`
    header is then read only as RFC 9421 and never falls back to draft-cavage, so an attacker
    cannot pick the weaker parser (Mastodon and Fedify select the same way). A peer whose
    RFC 9421 we refuse gets 401 and, if it double-knocks like Fedify, retries with cavage.
    """
    _require_aware(now)
    if _TOKEN.fullmatch(method) is None:
        raise SignatureError("malformed", "method is not an HTTP token")
    if len(path) > MAX_PATH_CHARS or _ORIGIN_FORM.fullmatch(path) is None:
        raise SignatureError("malformed", "path is not an origin-form request target")
    fields = _collect_fields(headers)
    scheme, origin_authority = ("https", None) if origin is None else _parse_origin(origin)
    request = _Request(
        method=method.upper(),
        path=path,
        fields=fields,
        body=b"" if body is None else body,
        now=now.astimezone(UTC),
        scheme=scheme,
        origin_authority=origin_authority,
    )
    if "signature" not in fields:
        raise SignatureError("missing", "no Signature header")
    if origin_authority is not None:
        host = request.single("host")
        if host is not None and _normalize_authority(host.strip(" \t"), scheme) != (
            origin_authority
        ):
            raise SignatureError("host", "Host is not our origin")
    if "signature-input" in fields:
        return _parse_rfc9421(request)
    return _parse_cavage(request)


def _collect_fields(headers: Mapping[str, str]) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for count, (name, value) in enumerate(headers.items(), start=1):
        if count > MAX_HEADER_FIELDS:
            raise SignatureError("malformed", "too many header fields")
        fields.setdefault(name.lower(), []).append(value)
    return fields


def _parse_origin(origin: str) -> tuple[str, str]:
    # Our own configuration, so a bad value is a ValueError, not a SignatureError.
    parts = urlsplit(origin)
    authority = (
        _normalize_authority(parts.netloc, parts.scheme) if parts.scheme in _DEFAULT_PORTS else None
    )
    if authority is None or parts.path not in ("", "/") or parts.query or "@" in parts.netloc:
        raise ValueError("origin must look like https://host[:port]")
    return parts.scheme, authority


def _decode_base64(value: str, reason: Reason) -> bytes:
    try:
        return base64.b64decode(value.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise SignatureError(reason, "invalid base64") from None


def _checked_signature_bytes(signature: bytes) -> bytes:
    if not 0 < len(signature) <= MAX_SIGNATURE_BYTES:
        raise SignatureError("malformed", "signature length implausible")
    return signature


def _checked_key_id(key_id: str) -> str:
    # Printable ASCII without spaces: the caller will fetch it, and log it.
    if _KEY_ID.fullmatch(key_id) is None:
        raise SignatureError("malformed", "key id is empty, too long or not printable ASCII")
    return key_id


# draft-cavage -------------------------------------------------------------------------------


def _parse_cavage(request: _Request) -> ParsedSignature:
    raw = request.single("signature")
    assert raw is not None  # parse_signature checked presence
    params = _parse_cavage_params(raw)
    key_id = params.get("keyId")
    signature_b64 = params.get("signature")
    if not key_id or not signature_b64:
        raise SignatureError("malformed", "keyId and signature are required")
    key_id = _checked_key_id(key_id)
    signature = _checked_signature_bytes(_decode_base64(signature_b64, "malformed"))

    declared = params.get("algorithm")
    label = "hs2019" if declared is None else declared.lower()
    if label not in _CAVAGE_ALGORITHMS:
        raise SignatureError("algorithm", "algorithm not accepted")
    algorithm = _CAVAGE_ALGORITHMS[label]

    # Mastodon's defaults when `headers` is absent; neither satisfies the rules below.
    covered_text = params.get("headers", "(created)" if label == "hs2019" else "date")
    covered = tuple(covered_text.lower().split())
    _check_cavage_names(covered, label)

    required = ["(request-target)", "host"]
    if request.needs_digest:
        required.append("digest")
    if any(name not in covered for name in required) or (
        "date" not in covered and "(created)" not in covered
    ):
        raise SignatureError("components", "required headers are not signed")

    created = _cavage_time(params, "created")
    expires = _cavage_time(params, "expires")
    if "(created)" in covered:
        if created is None:
            raise SignatureError("malformed", "(created) signed but no created parameter")
        _check_window(created, request.now, "created")
    if "(expires)" in covered and expires is None:
        raise SignatureError("malformed", "(expires) signed but no expires parameter")
    _check_expires(expires, created, request.now)
    signed_time = created if "(created)" in covered else None
    if "date" in covered:
        date = _parse_http_date(request.covered_value("date"))
        _check_window(date, request.now, "Date")
        signed_time = signed_time or date

    _check_covered_digests(request, covered)

    def base(target: str) -> bytes:
        lines = []
        for name in covered:
            if name == "(request-target)":
                value = f"{request.method.lower()} {target}"
            elif name in ("(created)", "(expires)"):
                value = params[name[1:-1]]
            else:
                value = request.covered_value(name)
            lines.append(f"{name}: {value}")
        return "\n".join(lines).encode("ascii")

    signing_base = base(request.path)
    legacy = None
    if "(request-target)" in covered and request.query is not None:
        # Older Mastodons and Fedify leave the query out of (request-target); Mastodon's own
        # verifier accepts both forms, so we do too. Only the query is left unauthenticated
        # this way; method, path, host, date and digest are covered in both forms.
        legacy = base(request.path_only)
    return ParsedSignature(
        key_id=key_id,
        scheme="draft-cavage",
        algorithm=algorithm,
        declared_algorithm=declared,
        covered=covered,
        created=signed_time,
        expires=expires,
        signing_base=signing_base,
        signature=signature,
        legacy_signing_base=legacy,
    )


# One parameter of the common shape, with its separator: quoted values without escapes, or
# tokens. Headers of that shape are parsed with it (the character-by-character parser below
# costs about 0.4 ms a header, most of the inbox's own time); anything else goes to the full
# parser, which accepts a superset and gives the precise error.
_PLAIN_PARAM: Final = re.compile(
    r"[ \t]*([A-Za-z0-9_-]+)="
    r'(?:"([\t\x20\x21\x23-\x5b\x5d-\x7e]*)"|'
    r"([!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}))"
    r"[ \t]*(,|\Z)"
)


def _parse_cavage_params(raw: str) -> dict[str, str]:
    """`name="quoted",name=token` with quoted-pair escapes; duplicates refused."""
    if len(raw) > MAX_SIGNATURE_HEADER_CHARS:
        raise SignatureError("malformed", "Signature header too long")
    if not raw.isascii():
        raise SignatureError("malformed", "Signature header is not ASCII")
    plain = _parse_plain_params(raw)
    return plain if plain is not None else _parse_params_fully(raw)


def _add_param(params: dict[str, str], name: str, value: str) -> None:
    if name in params:
        # Two keyIds or two signatures: which one would the key fetcher and the verifier
        # each pick? Refuse rather than find out.
        raise SignatureError("malformed", "duplicate Signature parameter")
    params[name] = value
    if len(params) > MAX_PARAMS:
        raise SignatureError("malformed", "too many Signature parameters")


def _parse_plain_params(raw: str) -> dict[str, str] | None:
    """The parameters of a header made only of plain parameters, else None."""
    params: dict[str, str] = {}
    position, end = 0, len(raw)
    while True:
        match = _PLAIN_PARAM.match(raw, position)
        if match is None:
            return None
        name, quoted, token, separator = match.groups()
        _add_param(params, name, quoted if quoted is not None else token)
        position = match.end()
        if not separator:
            return params if position == end else None


def _parse_params_fully(raw: str) -> dict[str, str]:
    params: dict[str, str] = {}
    i, n = 0, len(raw)
    while True:
        while i < n and raw[i] in " \t":
            i += 1
        start = i
        while i < n and (raw[i].isalnum() or raw[i] in "-_"):
            i += 1
        name = raw[start:i]
        if not name or i >= n or raw[i] != "=":
            raise SignatureError("malformed", "expected name=value in Signature header")
        i += 1
        if i < n and raw[i] == '"':
            i += 1
            chars = []
            while True:
                if i >= n:
                    raise SignatureError("malformed", "unterminated quoted string")
                c = raw[i]
                if c == "\\":
                    if i + 1 >= n:
                        raise SignatureError("malformed", "dangling escape")
                    c = raw[i + 1]
                    i += 1
                elif c == '"':
                    i += 1
                    break
                if not " " <= c <= "~" and c != "\t":
                    raise SignatureError("malformed", "control character in Signature header")
                chars.append(c)
                i += 1
            value = "".join(chars)
        else:
            start = i
            while i < n and raw[i] not in ", \t":
                i += 1
            value = raw[start:i]
            if _TOKEN.fullmatch(value) is None:
                raise SignatureError("malformed", "bad unquoted value in Signature header")
        _add_param(params, name, value)
        while i < n and raw[i] in " \t":
            i += 1
        if i == n:
            return params
        if raw[i] != ",":
            raise SignatureError("malformed", "expected ',' between Signature parameters")
        i += 1


def _check_cavage_names(covered: tuple[str, ...], label: str) -> None:
    if not covered:
        raise SignatureError("components", "nothing is signed")
    if len(covered) > MAX_COMPONENTS:
        raise SignatureError("malformed", "too many signed headers")
    if len(set(covered)) != len(covered):
        raise SignatureError("malformed", "a signed header is listed twice")
    for name in covered:
        if name.startswith("("):
            if name not in _CAVAGE_PSEUDO:
                raise SignatureError("components", "unknown pseudo-header")
            if name in ("(created)", "(expires)") and label != "hs2019":
                # draft-cavage-12 ties these to hs2019; Mastodon refuses them otherwise.
                raise SignatureError("components", f"{name} needs algorithm hs2019")
        elif _FIELD_NAME.fullmatch(name) is None or name in ("signature", "signature-input"):
            raise SignatureError("components", "unusable signed header name")


def _cavage_time(params: Mapping[str, str], name: str) -> datetime | None:
    value = params.get(name)
    if value is None:
        return None
    if _DIGITS.fullmatch(value) is None:
        raise SignatureError("malformed", f"{name} is not an integer")
    return _timestamp(int(value))


def _check_covered_digests(request: _Request, covered: tuple[str, ...]) -> None:
    """Every covered digest header must be present and describe this very body."""
    for name, check in (("digest", _check_digest), ("content-digest", _check_content_digest)):
        if name in covered:
            if name not in request.fields:
                raise SignatureError("digest", f"{name} is signed but absent")
            check(request.covered_value(name), request.body)


def _check_digest(value: str, body: bytes) -> None:
    """RFC 3230 Digest: SHA-256 required and matching; SHA-512 checked if also given."""
    entries: dict[str, str] = {}
    for entry in value.split(",")[: MAX_PARAMS + 1]:
        algo, sep, encoded = entry.strip(" \t").partition("=")
        algo = algo.lower()
        if not sep or algo in entries:
            raise SignatureError("digest", "malformed Digest header")
        entries[algo] = encoded.strip(" \t")
    if len(entries) > MAX_PARAMS:
        raise SignatureError("digest", "too many Digest entries")
    if "sha-256" not in entries:
        # A digest we cannot recompute is no digest at all (research §2.2 S3).
        raise SignatureError("digest", "Digest has no SHA-256")
    for algo, length in _DIGEST_LENGTHS.items():
        if algo in entries:
            _compare_digest(algo, _decode_base64(entries[algo], "digest"), length, body)


def _check_content_digest(value: str, body: bytes) -> None:
    """RFC 9530 Content-Digest: sha-256 and/or sha-512, every one given must match."""
    if len(value) > MAX_FIELD_VALUE_CHARS:
        raise SignatureError("digest", "Content-Digest too long")
    members = _SfParser(value, "digest").dictionary()
    found = False
    for algo, member in members:
        length = _DIGEST_LENGTHS.get(algo)
        if length is None:
            continue  # other algorithms are allowed alongside, but never count
        if not isinstance(member, _SfItem) or not isinstance(member.value, bytes):
            raise SignatureError("digest", "Content-Digest value is not a byte sequence")
        _compare_digest(algo, member.value, length, body)
        found = True
    if not found:
        raise SignatureError("digest", "Content-Digest has no sha-256 or sha-512")


def _compare_digest(algo: str, given: bytes, length: int, body: bytes) -> None:
    if len(given) != length:
        raise SignatureError("digest", f"{algo} digest has the wrong length")
    actual = hashlib.sha256(body).digest() if algo == "sha-256" else hashlib.sha512(body).digest()
    # Bodies are not secret, so timing hardly matters; compare_digest just removes the question.
    if not hmac.compare_digest(given, actual):
        raise SignatureError("digest", f"{algo} digest does not match the body")


# RFC 9421 -----------------------------------------------------------------------------------


def _parse_rfc9421(request: _Request) -> ParsedSignature:
    input_raw = request.single("signature-input")
    signature_raw = request.single("signature")
    assert input_raw is not None
    assert signature_raw is not None
    for raw in (input_raw, signature_raw):
        if len(raw) > MAX_SIGNATURE_HEADER_CHARS:
            raise SignatureError("malformed", "signature header too long")
    inputs = _SfParser(input_raw, "malformed").dictionary()
    signatures = _SfParser(signature_raw, "malformed").dictionary()
    if len(inputs) != 1 or len(signatures) != 1:
        # Like Mastodon: exactly one signature, so there is no question which one was checked.
        raise SignatureError("malformed", "exactly one signature is accepted")
    (label, spec), (sig_label, sig_member) = inputs[0], signatures[0]
    if label != sig_label:
        raise SignatureError("malformed", "Signature and Signature-Input labels differ")
    if not isinstance(spec, _SfInnerList):
        raise SignatureError("malformed", "Signature-Input member is not an inner list")
    if not isinstance(sig_member, _SfItem) or not isinstance(sig_member.value, bytes):
        raise SignatureError("malformed", "Signature member is not a byte sequence")
    signature = _checked_signature_bytes(sig_member.value)

    components = _rfc9421_components(spec)
    params = dict(spec.params)
    key_id = params.get("keyid")
    if not isinstance(key_id, str) or isinstance(key_id, _Token):
        raise SignatureError("malformed", "keyid must be a string")
    key_id = _checked_key_id(key_id)
    alg = params.get("alg")
    algorithm: Algorithm | None = None
    if alg is not None:
        if not isinstance(alg, str) or isinstance(alg, _Token) or alg not in _RFC9421_ALGORITHMS:
            raise SignatureError("algorithm", "alg not accepted")
        algorithm = _RFC9421_ALGORITHMS[alg]
    for name in ("nonce", "tag"):
        if name in params and not isinstance(params[name], str):
            raise SignatureError("malformed", f"{name} must be a string")

    target_covered = "@target-uri" in components or (
        "@authority" in components
        and (
            "@request-target" in components
            or ("@path" in components and (request.query is None or "@query" in components))
        )
    )
    if "@method" not in components or not target_covered:
        raise SignatureError("components", "method and target must be signed")
    if request.needs_digest and "content-digest" not in components:
        raise SignatureError("components", "content-digest must be signed")
    if "created" not in params:
        raise SignatureError("components", "created is required")

    created = _rfc9421_time(params, "created")
    expires = _rfc9421_time(params, "expires")
    assert created is not None
    _check_window(created, request.now, "created")
    _check_expires(expires, created, request.now)
    if "date" in components:
        _check_window(_parse_http_date(request.covered_value("date")), request.now, "Date")
    _check_covered_digests(request, components)

    lines = [f'"{name}": {_rfc9421_value(request, name)}' for name in components]
    lines.append(f'"@signature-params": {_sf_serialize_inner_list(spec)}')
    return ParsedSignature(
        key_id=key_id,
        scheme="rfc9421",
        algorithm=algorithm,
        declared_algorithm=alg if isinstance(alg, str) else None,
        covered=components,
        created=created,
        expires=expires,
        signing_base="\n".join(lines).encode("ascii"),
        signature=signature,
    )


def _rfc9421_components(spec: _SfInnerList) -> tuple[str, ...]:
    names = []
    for item in spec.items:
        if not isinstance(item.value, str) or isinstance(item.value, _Token):
            raise SignatureError("malformed", "component identifiers are strings")
        if item.params:
            # ;sf, ;bs, ;req, ;key, ;name change how a value is derived; none is needed by
            # the peers we talk to, and each would be more parser to get wrong.
            raise SignatureError("components", "component parameters are not supported")
        name = item.value
        if name.startswith("@"):
            if name not in _RFC9421_DERIVED:
                raise SignatureError("components", "unsupported derived component")
        elif _FIELD_NAME.fullmatch(name) is None or name in ("signature", "signature-input"):
            raise SignatureError("components", "unusable component name")
        names.append(name)
    if len(set(names)) != len(names):
        raise SignatureError("malformed", "a component is listed twice")
    return tuple(names)


def _rfc9421_time(params: Mapping[str, _Bare], name: str) -> datetime | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise SignatureError("malformed", f"{name} must be an integer")
    return _timestamp(value)


def _rfc9421_value(request: _Request, name: str) -> str:
    match name:
        case "@method":
            return request.method
        case "@target-uri":
            return f"{request.scheme}://{request.authority()}{request.path}"
        case "@authority":
            return request.authority()
        case "@scheme":
            return request.scheme
        case "@request-target":
            return request.path
        case "@path":
            return request.path_only
        case "@query":
            # RFC 9421 §2.2.7: the leading "?" is part of the value, alone when there is none.
            return "?" + (request.query or "")
        case _:
            return request.covered_value(name)


# Structured fields (RFC 8941), only as much as signatures and digests need --------------------


class _Token(str):
    """An sf-token, kept apart from sf-string so re-serialisation is exact."""

    __slots__ = ()


_Bare = int | bool | str | bytes
_Params = tuple[tuple[str, _Bare], ...]


@dataclass(frozen=True)
class _SfItem:
    value: _Bare
    params: _Params


@dataclass(frozen=True)
class _SfInnerList:
    items: tuple[_SfItem, ...]
    params: _Params


_SF_KEY: Final = re.compile(r"[a-z*][a-z0-9_\-.*]{0,63}")
_SF_TOKEN: Final = re.compile(r"[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]{0,255}")
_SF_INTEGER: Final = re.compile(r"-?[0-9]{1,15}")
_SF_BASE64: Final = re.compile(r"[A-Za-z0-9+/=]{0,8192}")


class _SfParser:
    """A strict RFC 8941 dictionary parser; decimals are refused, duplicate keys too."""

    def __init__(self, text: str, reason: Reason) -> None:
        self._text = text.strip(" \t")
        self._pos = 0
        self._reason: Reason = reason

    def _fail(self, detail: str) -> SignatureError:
        return SignatureError(self._reason, f"structured field: {detail}")

    def _peek(self) -> str:
        return self._text[self._pos] if self._pos < len(self._text) else ""

    def _skip(self, chars: str) -> None:
        while self._pos < len(self._text) and self._text[self._pos] in chars:
            self._pos += 1

    def _match(self, pattern: re.Pattern[str]) -> str:
        match = pattern.match(self._text, self._pos)
        if match is None:
            raise self._fail("unexpected character")
        self._pos = match.end()
        return match.group()

    def dictionary(self) -> list[tuple[str, _SfItem | _SfInnerList]]:
        if not self._text.isascii():
            raise self._fail("not ASCII")
        if not self._text:
            raise self._fail("empty")
        members: list[tuple[str, _SfItem | _SfInnerList]] = []
        seen: set[str] = set()
        while True:
            key = self._match(_SF_KEY)
            if key in seen:
                # RFC 8941 lets the last one win; for signatures that is a confusion vector.
                raise self._fail("duplicate key")
            seen.add(key)
            member: _SfItem | _SfInnerList
            if self._peek() == "=":
                self._pos += 1
                if self._peek() == "(":
                    member = self._inner_list()
                else:
                    member = _SfItem(self._bare_item(), self._params())
            else:
                member = _SfItem(True, self._params())
            members.append((key, member))
            if len(members) > MAX_PARAMS:
                raise self._fail("too many members")
            self._skip(" \t")
            if self._pos == len(self._text):
                return members
            if self._peek() != ",":
                raise self._fail("expected ','")
            self._pos += 1
            self._skip(" \t")
            if self._pos == len(self._text):
                raise self._fail("trailing comma")

    def _inner_list(self) -> _SfInnerList:
        self._pos += 1  # "("
        items: list[_SfItem] = []
        while True:
            self._skip(" ")
            if self._peek() == ")":
                self._pos += 1
                return _SfInnerList(tuple(items), self._params())
            items.append(_SfItem(self._bare_item(), self._params()))
            if len(items) > MAX_COMPONENTS:
                raise self._fail("too many inner-list items")
            if self._peek() not in (" ", ")"):
                raise self._fail("expected ' ' or ')'")

    def _params(self) -> _Params:
        params: list[tuple[str, _Bare]] = []
        seen: set[str] = set()
        while self._peek() == ";":
            self._pos += 1
            self._skip(" ")
            key = self._match(_SF_KEY)
            if key in seen:
                raise self._fail("duplicate parameter")
            seen.add(key)
            value: _Bare = True
            if self._peek() == "=":
                self._pos += 1
                value = self._bare_item()
            params.append((key, value))
            if len(params) > MAX_PARAMS:
                raise self._fail("too many parameters")
        return tuple(params)

    def _bare_item(self) -> _Bare:
        c = self._peek()
        if c == "-" or "0" <= c <= "9":
            number = self._match(_SF_INTEGER)
            if self._peek() == ".":
                raise self._fail("decimals are not supported")
            return int(number)
        if c == '"':
            return self._string()
        if c == ":":
            self._pos += 1
            encoded = self._match(_SF_BASE64)
            if self._peek() != ":":
                raise self._fail("unterminated byte sequence")
            self._pos += 1
            return _decode_base64(encoded, self._reason)
        if c == "?":
            flag = self._text[self._pos : self._pos + 2]
            if flag not in ("?0", "?1"):
                raise self._fail("bad boolean")
            self._pos += 2
            return flag == "?1"
        if c == "*" or c.isalpha():
            return _Token(self._match(_SF_TOKEN))
        raise self._fail("unexpected character")

    def _string(self) -> str:
        self._pos += 1  # opening quote
        chars: list[str] = []
        while self._pos < len(self._text):
            c = self._text[self._pos]
            self._pos += 1
            if c == "\\":
                escaped = self._peek()
                if escaped not in ('"', "\\") or not escaped:
                    raise self._fail("bad escape")
                chars.append(escaped)
                self._pos += 1
            elif c == '"':
                return "".join(chars)
            elif not " " <= c <= "~":
                raise self._fail("control character in string")
            else:
                chars.append(c)
        raise self._fail("unterminated string")


def _sf_string(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def _sf_serialize_bare(value: _Bare) -> str:
    if isinstance(value, bool):
        return "?1" if value else "?0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, bytes):
        return ":" + base64.b64encode(value).decode("ascii") + ":"
    if isinstance(value, _Token):
        return str.__str__(value)
    return f'"{_sf_string(value)}"'


def _sf_serialize_params(params: _Params) -> str:
    return "".join(
        f";{key}" if value is True else f";{key}={_sf_serialize_bare(value)}"
        for key, value in params
    )


def _sf_serialize_inner_list(inner: _SfInnerList) -> str:
    # The @signature-params line is the canonical serialisation of what we parsed (RFC 9421
    # §2.3), so odd spacing in the received header cannot change what gets verified.
    items = " ".join(
        _sf_serialize_bare(item.value) + _sf_serialize_params(item.params) for item in inner.items
    )
    return f"({items}){_sf_serialize_params(inner.params)}"


# --- verification, phase 2: with the key -------------------------------------------------------


def verify_parsed(parsed: ParsedSignature, public_key: PublicKey) -> None:
    """Check the signature with the key fetched for `parsed.key_id`; raise SignatureError.

    The caller still has to check that the key's verified owner is the activity's actor.
    """
    key = _acceptable_public_key(public_key)
    if isinstance(key, rsa.RSAPublicKey):
        # An Ed25519 label on an RSA key (or the reverse) is refused outright: the label is
        # signed in RFC 9421, and silently following the key would hide a confused signer.
        if parsed.algorithm == "ed25519":
            raise SignatureError("algorithm", "ed25519 signature with an RSA key")
        verified = any(_rsa_ok(key, parsed.signature, base) for base in parsed.signing_bases)
    else:
        if parsed.algorithm == "rsa-sha256":
            raise SignatureError("algorithm", "RSA signature with an Ed25519 key")
        verified = any(_ed25519_ok(key, parsed.signature, base) for base in parsed.signing_bases)
    if not verified:
        raise SignatureError("mismatch", "signature does not verify")


def _rsa_ok(key: rsa.RSAPublicKey, signature: bytes, base: bytes) -> bool:
    try:
        key.verify(signature, base, padding.PKCS1v15(), hashes.SHA256())
    except (InvalidSignature, ValueError):
        return False
    return True


def _ed25519_ok(key: ed25519.Ed25519PublicKey, signature: bytes, base: bytes) -> bool:
    try:
        key.verify(signature, base)
    except (InvalidSignature, ValueError):
        return False
    return True
