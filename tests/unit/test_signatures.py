"""HTTP signatures: signing, two-phase verification, and every attack from ap-interop.md §2.2."""

from __future__ import annotations

import base64
import contextlib
import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict

from flattrfed.activitypub.signatures import (
    MAX_AGE,
    MAX_FUTURE_SKEW,
    ParsedSignature,
    PrivateKey,
    PublicKey,
    SignatureError,
    SignedRequest,
    content_digest_header,
    digest_header,
    format_http_date,
    generate_rsa_key,
    key_id_without_fragment,
    load_private_key_pem,
    load_public_key_pem,
    parse_signature,
    private_key_to_pem,
    public_key_to_pem,
    sign_request,
    sign_request_rfc9421,
    verify_parsed,
)

NOW = datetime(2026, 11, 3, 10, 15, tzinfo=UTC)
DATE = "Tue, 03 Nov 2026 10:15:00 GMT"
CREATED = 1793700900  # NOW as a Unix timestamp
HOST = "flattr.example"
ORIGIN = "https://flattr.example"
INBOX = "/users/bob/inbox"
ALICE = "https://mastodon.example/users/alice#main-key"
MALLORY = "https://evil.example/users/mallory#main-key"
FEDIFY_BOB = "https://fedify.example/users/bob#main-key"
BODY = (
    b'{"@context":"https://www.w3.org/ns/activitystreams","id":"https://mastodon.example/likes/1",'
    b'"type":"Like","actor":"https://mastodon.example/users/alice",'
    b'"object":"https://flattr.example/things/1"}'
)
AP_JSON = "application/activity+json"


@pytest.fixture(scope="module")
def alice_key() -> rsa.RSAPrivateKey:
    return generate_rsa_key()


@pytest.fixture(scope="module")
def mallory_key() -> rsa.RSAPrivateKey:
    return generate_rsa_key()


@pytest.fixture(scope="module")
def small_key() -> rsa.RSAPrivateKey:
    # Deliberately weak: the point is to see it refused.
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)  # noqa: S505


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


# --- test-side signers, written out by hand so they check the module instead of mirroring it ---


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sha256_b64(body: bytes) -> str:
    return b64(hashlib.sha256(body).digest())


def raw_sign(key: PrivateKey, text: str) -> str:
    if isinstance(key, rsa.RSAPrivateKey):
        return b64(key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256()))
    return b64(key.sign(text.encode()))


def post_headers(body: bytes = BODY) -> dict[str, str]:
    return {
        "Host": HOST,
        "Date": DATE,
        "Digest": f"SHA-256={sha256_b64(body)}",
        "Content-Type": AP_JSON,
    }


def cavage(
    key: PrivateKey,
    covered: list[str],
    *,
    method: str = "post",
    target: str = INBOX,
    headers: Mapping[str, str] | None = None,
    key_id: str = ALICE,
    algorithm: str | None = "rsa-sha256",
    created: int | None = None,
    expires: int | None = None,
) -> dict[str, str]:
    """Headers plus a draft-cavage Signature over exactly `covered`."""
    sent = dict(post_headers() if headers is None else headers)
    lower = {name.lower(): value for name, value in sent.items()}
    lines = []
    for name in covered:
        if name == "(request-target)":
            lines.append(f"(request-target): {method} {target}")
        elif name == "(created)":
            lines.append(f"(created): {created}")
        elif name == "(expires)":
            lines.append(f"(expires): {expires}")
        else:
            lines.append(f"{name}: {lower[name]}")
    signature = raw_sign(key, "\n".join(lines))
    params = [f'keyId="{key_id}"']
    if algorithm is not None:
        params.append(f'algorithm="{algorithm}"')
    if created is not None:
        params.append(f"created={created}")
    if expires is not None:
        params.append(f"expires={expires}")
    params.append(f'headers="{" ".join(covered)}"')
    params.append(f'signature="{signature}"')
    sent["Signature"] = ",".join(params)
    return sent


MASTODON_POST = ["(request-target)", "host", "date", "digest", "content-type"]


def rfc9421(
    key: PrivateKey,
    components: list[str],
    params: str,
    *,
    method: str = "POST",
    target_uri: str = ORIGIN + INBOX,
    headers: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Headers plus an RFC 9421 sig1 over exactly `components` with `params` (";a=b;...")."""
    sent = (
        {"Host": HOST, "Content-Digest": content_digest_header(BODY)}
        if headers is None
        else dict(headers)
    )
    lower = {name.lower(): value for name, value in sent.items()}
    url = urlsplit(target_uri)
    derived = {
        "@method": method,
        "@target-uri": target_uri,
        "@authority": url.netloc,
        "@path": url.path,
        "@query": "?" + url.query,
    }
    lines = [f'"{c}": {derived[c] if c.startswith("@") else lower[c]}' for c in components]
    inner = "(" + " ".join(f'"{c}"' for c in components) + ")" + params
    lines.append(f'"@signature-params": {inner}')
    sent["Signature-Input"] = f"sig1={inner}"
    sent["Signature"] = f"sig1=:{raw_sign(key, chr(10).join(lines))}:"
    return sent


FEDIFY_COMPONENTS = ["@method", "@target-uri", "@authority", "content-digest"]


def fedify_params(
    created: int = CREATED, key_id: str = ALICE, alg: str | None = "rsa-v1_5-sha256"
) -> str:
    alg_part = "" if alg is None else f';alg="{alg}"'
    return f';created={created};keyid="{key_id}"{alg_part}'


def parse(
    headers: Mapping[str, str],
    *,
    method: str = "POST",
    path: str = INBOX,
    body: bytes | None = BODY,
    now: datetime = NOW,
    origin: str | None = None,
) -> ParsedSignature:
    return parse_signature(method, path, headers, body, now, origin=origin)


def refused(reason: str, headers: Mapping[str, str], **kwargs: object) -> SignatureError:
    with pytest.raises(SignatureError) as info:
        parse(headers, **kwargs)  # type: ignore[arg-type]
    assert info.value.reason == reason, info.value
    return info.value


def mismatch(parsed: ParsedSignature, key: PublicKey) -> None:
    with pytest.raises(SignatureError) as info:
        verify_parsed(parsed, key)
    assert info.value.reason == "mismatch"


# --- key helpers -------------------------------------------------------------------------------


def test_generated_rsa_key_is_2048_bits(alice_key: rsa.RSAPrivateKey) -> None:
    assert alice_key.key_size == 2048


def test_pem_round_trip_for_rsa_and_ed25519(
    alice_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    for key in (alice_key, ed_key):
        public_pem = public_key_to_pem(key.public_key())
        assert public_pem.startswith("-----BEGIN PUBLIC KEY-----")
        loaded = load_public_key_pem(public_pem)
        assert public_key_to_pem(loaded) == public_pem
        assert private_key_to_pem(load_private_key_pem(private_key_to_pem(key))) == (
            private_key_to_pem(key)
        )


def test_pkcs1_rsa_public_key_pem_is_accepted(alice_key: rsa.RSAPrivateKey) -> None:
    pkcs1 = (
        alice_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.PKCS1)
        .decode()
    )
    assert isinstance(load_public_key_pem(pkcs1), rsa.RSAPublicKey)


def test_rsa_key_below_2048_bits_is_refused(small_key: rsa.RSAPrivateKey) -> None:
    small = small_key
    with pytest.raises(SignatureError) as info:
        load_public_key_pem(public_key_to_pem(small.public_key()))
    assert info.value.reason == "key"


def test_ec_key_is_refused() -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(SignatureError) as info:
        load_public_key_pem(ec_pem)
    assert info.value.reason == "key"


@pytest.mark.parametrize(
    "pem",
    [
        "",
        "not a key",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        "-----BEGIN PUBLIC KEY-----\n" + "A" * 20_000 + "\n-----END PUBLIC KEY-----\n",
        "-----BEGIN PUBLIC KEY-----\nMIIé\n-----END PUBLIC KEY-----\n",
    ],
    ids=["empty", "text", "bad-der", "oversized", "non-ascii"],
)
def test_garbage_pem_is_refused(pem: str) -> None:
    with pytest.raises(SignatureError) as info:
        load_public_key_pem(pem)
    assert info.value.reason == "key"


def test_private_key_pem_is_not_taken_as_public_key(alice_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(SignatureError):
        load_public_key_pem(private_key_to_pem(alice_key))


def test_key_id_without_fragment_gives_the_actor_url() -> None:
    assert key_id_without_fragment(ALICE) == "https://mastodon.example/users/alice"
    assert key_id_without_fragment("https://a.example/actor") == "https://a.example/actor"


def test_digest_helpers_use_the_expected_formats() -> None:
    assert digest_header(b"") == "SHA-256=47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
    assert content_digest_header(b"") == "sha-256=:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=:"


def test_http_date_is_imf_fixdate_in_gmt() -> None:
    assert format_http_date(NOW) == DATE
    assert format_http_date(NOW.astimezone(timezone(timedelta(hours=2)))) == DATE


def test_signed_request_is_the_same_class_as_parsed_signature() -> None:
    assert SignedRequest is ParsedSignature


# --- signing and round trips -------------------------------------------------------------------


def test_sign_request_post_signs_like_mastodon(alice_key: rsa.RSAPrivateKey) -> None:
    sent = sign_request(
        private_key=alice_key,
        key_id=ALICE,
        method="POST",
        url="https://flattr.example/users/bob/inbox",
        headers={"Content-Type": AP_JSON},
        body=BODY,
        now=NOW,
    )
    assert sent["Host"] == HOST
    assert sent["Date"] == DATE
    assert sent["Digest"] == digest_header(BODY)
    assert sent["Signature"].startswith(
        f'keyId="{ALICE}",algorithm="rsa-sha256",'
        'headers="(request-target) host date digest content-type",signature="'
    )
    parsed = parse(sent, origin=ORIGIN)
    assert parsed.scheme == "draft-cavage"
    assert parsed.covered == tuple(MASTODON_POST)
    assert parsed.created == NOW
    verify_parsed(parsed, alice_key.public_key())


def test_sign_request_get_covers_accept_when_present(alice_key: rsa.RSAPrivateKey) -> None:
    sent = sign_request(
        private_key=alice_key,
        key_id=ALICE,
        method="GET",
        url="https://flattr.example/users/bob?page=2",
        headers={"Accept": AP_JSON},
        body=None,
        now=NOW,
    )
    assert "Digest" not in sent
    assert 'headers="(request-target) host date accept"' in sent["Signature"]
    parsed = parse(sent, method="GET", path="/users/bob?page=2", body=None)
    assert parsed.signing_base.startswith(b"(request-target): get /users/bob?page=2\n")
    verify_parsed(parsed, alice_key.public_key())


def test_sign_request_get_without_accept_covers_the_minimum(alice_key: rsa.RSAPrivateKey) -> None:
    sent = sign_request(
        private_key=alice_key,
        key_id=ALICE,
        method="GET",
        url="https://flattr.example/actor",
        headers={},
        body=None,
        now=NOW,
    )
    assert 'headers="(request-target) host date"' in sent["Signature"]
    verify_parsed(parse(sent, method="GET", path="/actor", body=None), alice_key.public_key())


def test_sign_request_puts_a_non_default_port_in_host(alice_key: rsa.RSAPrivateKey) -> None:
    def host_for(url: str) -> str:
        return sign_request(
            private_key=alice_key,
            key_id=ALICE,
            method="GET",
            url=url,
            headers={},
            body=None,
            now=NOW,
        )["Host"]

    assert host_for("https://Flattr.Example:8443/x") == "flattr.example:8443"
    assert host_for("https://flattr.example:443/x") == "flattr.example"
    assert host_for("http://127.0.0.1:80/x") == "127.0.0.1"
    assert host_for("http://[::1]:8002/x") == "[::1]:8002"


def test_sign_request_replaces_caller_date_and_host(alice_key: rsa.RSAPrivateKey) -> None:
    sent = sign_request(
        private_key=alice_key,
        key_id=ALICE,
        method="POST",
        url="https://flattr.example/inbox",
        headers={"date": "yesterday", "HOST": "evil.example", "Content-Type": AP_JSON},
        body=BODY,
        now=NOW,
    )
    assert {name.lower() for name in sent} == {
        "content-type",
        "host",
        "date",
        "digest",
        "signature",
    }
    assert sent["Host"] == HOST


@pytest.mark.parametrize(
    "url",
    ["ftp://flattr.example/x", "https://user:pw@flattr.example/x", "https://flattr.example/ü"],
)
def test_sign_request_refuses_unusable_urls(alice_key: rsa.RSAPrivateKey, url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        sign_request(
            private_key=alice_key,
            key_id=ALICE,
            method="GET",
            url=url,
            headers={},
            body=None,
            now=NOW,
        )


def test_cavage_post_round_trip_with_ed25519_uses_hs2019(
    ed_key: ed25519.Ed25519PrivateKey,
) -> None:
    sent = sign_request(
        private_key=ed_key,
        key_id=ALICE,
        method="POST",
        url=ORIGIN + INBOX,
        headers={"Content-Type": AP_JSON},
        body=BODY,
        now=NOW,
    )
    assert 'algorithm="hs2019"' in sent["Signature"]
    parsed = parse(sent)
    assert parsed.algorithm is None
    verify_parsed(parsed, ed_key.public_key())


def test_cavage_get_round_trip_with_ed25519(ed_key: ed25519.Ed25519PrivateKey) -> None:
    sent = sign_request(
        private_key=ed_key,
        key_id=ALICE,
        method="GET",
        url=ORIGIN + "/actor",
        headers={"Accept": AP_JSON},
        body=None,
        now=NOW,
    )
    verify_parsed(parse(sent, method="GET", path="/actor", body=None), ed_key.public_key())


def test_cavage_ed25519_label_with_ed25519_key_is_accepted(
    ed_key: ed25519.Ed25519PrivateKey,
) -> None:
    parsed = parse(cavage(ed_key, MASTODON_POST, algorithm="ed25519"))
    assert parsed.algorithm == "ed25519"
    verify_parsed(parsed, ed_key.public_key())


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [("POST", INBOX, BODY), ("GET", "/users/bob?page=1", None), ("POST", INBOX, b"")],
)
def test_rfc9421_round_trip_with_rsa(
    alice_key: rsa.RSAPrivateKey, method: str, path: str, body: bytes | None
) -> None:
    sent = sign_request_rfc9421(
        private_key=alice_key,
        key_id=ALICE,
        method=method,
        url=ORIGIN + path,
        headers={"Content-Type": AP_JSON},
        body=body,
        now=NOW,
    )
    parsed = parse(sent, method=method, path=path, body=body, origin=ORIGIN)
    assert parsed.scheme == "rfc9421"
    assert parsed.algorithm == "rsa-sha256"
    assert parsed.created == NOW
    assert parsed.key_id == ALICE
    verify_parsed(parsed, alice_key.public_key())


def test_rfc9421_post_signs_like_fedify(alice_key: rsa.RSAPrivateKey) -> None:
    sent = sign_request_rfc9421(
        private_key=alice_key,
        key_id=ALICE,
        method="POST",
        url=ORIGIN + INBOX,
        headers={},
        body=BODY,
        now=NOW,
    )
    assert sent["Content-Digest"] == f"sha-256=:{sha256_b64(BODY)}:"
    assert sent["Signature-Input"] == (
        'sig1=("@method" "@target-uri" "@authority" "content-digest")'
        f';created={CREATED};keyid="{ALICE}";alg="rsa-v1_5-sha256"'
    )
    assert sent["Signature"].startswith("sig1=:")
    assert sent["Signature"].endswith(":")


def test_rfc9421_post_round_trip_with_ed25519(ed_key: ed25519.Ed25519PrivateKey) -> None:
    sent = sign_request_rfc9421(
        private_key=ed_key,
        key_id=ALICE,
        method="POST",
        url=ORIGIN + INBOX,
        headers={},
        body=BODY,
        now=NOW,
    )
    assert sent["Signature-Input"].endswith(';alg="ed25519"')
    parsed = parse(sent)
    assert parsed.algorithm == "ed25519"
    verify_parsed(parsed, ed_key.public_key())


# --- what real peers send ----------------------------------------------------------------------


def test_mastodon_4_shaped_delivery_verifies(alice_key: rsa.RSAPrivateKey) -> None:
    digest = f"SHA-256={sha256_b64(BODY)}"
    signing_string = (
        f"(request-target): post {INBOX}\n"
        f"host: {HOST}\n"
        f"date: {DATE}\n"
        f"digest: {digest}\n"
        f"content-type: {AP_JSON}"
    )
    headers = {
        "Host": HOST,
        "User-Agent": "http.rb/5.2.0 (Mastodon/4.4.0; +https://mastodon.example/)",
        "Date": DATE,
        "Accept-Encoding": "gzip",
        "Digest": digest,
        "Content-Type": AP_JSON,
        "Signature": (
            'keyId="https://mastodon.example/users/alice#main-key",algorithm="rsa-sha256",'
            'headers="(request-target) host date digest content-type",'
            f'signature="{raw_sign(alice_key, signing_string)}"'
        ),
    }
    parsed = parse(headers, origin=ORIGIN)
    assert parsed.key_id == ALICE
    assert parsed.signing_base == signing_string.encode()
    assert parsed.declared_algorithm == "rsa-sha256"
    verify_parsed(parsed, alice_key.public_key())


def test_fedify_rfc9421_shaped_delivery_verifies(alice_key: rsa.RSAPrivateKey) -> None:
    # Fedify ≥ 1.6 first knock: default components plus host and date, params alg;keyid;created.
    content_digest = f"sha-256=:{sha256_b64(BODY)}:"
    params = f'alg="rsa-v1_5-sha256";keyid="{FEDIFY_BOB}";created={CREATED}'
    covered = '("@method" "@target-uri" "@authority" "host" "date" "content-digest")'
    base = (
        '"@method": POST\n'
        f'"@target-uri": https://flattr.example{INBOX}\n'
        '"@authority": flattr.example\n'
        '"host": flattr.example\n'
        f'"date": {DATE}\n'
        f'"content-digest": {content_digest}\n'
        f'"@signature-params": {covered};{params}'
    )
    headers = {
        "Accept": AP_JSON,
        "Content-Type": AP_JSON,
        "User-Agent": "Fedify/2.3.6 (Node.js/v20.20.2)",
        "Host": HOST,
        "Content-Digest": content_digest,
        "Date": DATE,
        "Signature-Input": f"sig1={covered};{params}",
        "Signature": f"sig1=:{raw_sign(alice_key, base)}:",
    }
    parsed = parse(headers, origin=ORIGIN)
    assert parsed.key_id == FEDIFY_BOB
    assert parsed.signing_base == base.encode()
    verify_parsed(parsed, alice_key.public_key())


def test_fedify_draft_cavage_retry_shaped_delivery_verifies(alice_key: rsa.RSAPrivateKey) -> None:
    # Fedify's second knock signs every header it sends, in its own order.
    headers = post_headers() | {"Accept": AP_JSON, "User-Agent": "Fedify/2.3.6"}
    covered = ["(request-target)", "accept", "content-type", "date", "digest", "host"]
    covered.append("user-agent")
    sent = cavage(alice_key, covered, headers=headers, key_id=FEDIFY_BOB)
    verify_parsed(parse(sent, origin=ORIGIN), alice_key.public_key())


def test_hs2019_with_rsa_key_is_accepted(alice_key: rsa.RSAPrivateKey) -> None:
    parsed = parse(cavage(alice_key, MASTODON_POST, algorithm="hs2019"))
    assert parsed.algorithm is None
    verify_parsed(parsed, alice_key.public_key())


def test_missing_algorithm_is_taken_as_hs2019(alice_key: rsa.RSAPrivateKey) -> None:
    parsed = parse(cavage(alice_key, MASTODON_POST, algorithm=None))
    assert parsed.declared_algorithm is None
    verify_parsed(parsed, alice_key.public_key())


def test_hs2019_with_signed_created_instead_of_date_is_accepted(
    alice_key: rsa.RSAPrivateKey,
) -> None:
    covered = ["(request-target)", "host", "(created)", "digest"]
    parsed = parse(cavage(alice_key, covered, algorithm="hs2019", created=CREATED))
    assert parsed.created == NOW
    verify_parsed(parsed, alice_key.public_key())


def test_rfc9421_without_alg_takes_the_algorithm_from_the_key(
    alice_key: rsa.RSAPrivateKey,
) -> None:
    parsed = parse(rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params(alg=None)))
    assert parsed.algorithm is None
    verify_parsed(parsed, alice_key.public_key())


def test_rfc9421_authority_and_path_instead_of_target_uri_is_accepted(
    alice_key: rsa.RSAPrivateKey,
) -> None:
    components = ["@method", "@authority", "@path", "content-digest"]
    verify_parsed(parse(rfc9421(alice_key, components, fedify_params())), alice_key.public_key())


def test_request_target_without_query_is_accepted_for_legacy_signers(
    alice_key: rsa.RSAPrivateKey,
) -> None:
    headers = {"Host": HOST, "Date": DATE}
    sent = cavage(
        alice_key, ["(request-target)", "host", "date"], method="get", target="/u", headers=headers
    )
    parsed = parse(sent, method="GET", path="/u?page=1", body=None)
    assert parsed.legacy_signing_base is not None
    verify_parsed(parsed, alice_key.public_key())


def test_repeated_covered_header_lines_are_joined_with_comma(alice_key: rsa.RSAPrivateKey) -> None:
    signed = cavage(
        alice_key,
        ["(request-target)", "host", "date", "accept"],
        method="get",
        target="/actor",
        headers={"Host": HOST, "Date": DATE, "Accept": f"{AP_JSON}, text/html"},
    )
    sent: CIMultiDict[str] = CIMultiDict()
    for name, value in signed.items():
        if name == "Accept":
            sent.add("Accept", f"  {AP_JSON}")
            sent.add("accept", "text/html ")
        else:
            sent.add(name, value)
    verify_parsed(parse(sent, method="GET", path="/actor", body=None), alice_key.public_key())


def test_comma_and_escaped_quote_inside_quoted_key_id_are_kept(
    alice_key: rsa.RSAPrivateKey,
) -> None:
    sent = cavage(alice_key, MASTODON_POST, key_id="https://x.example/a,b#main-key")
    assert parse(sent).key_id == "https://x.example/a,b#main-key"
    sent["Signature"] = sent["Signature"].replace("a,b", 'a\\"b')
    assert parse(sent).key_id == 'https://x.example/a"b#main-key'


# --- S1 / time ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("age", "accepted"),
    [
        (-MAX_FUTURE_SKEW, True),
        (-MAX_FUTURE_SKEW - timedelta(seconds=1), False),
        (MAX_AGE, True),
        (MAX_AGE + timedelta(seconds=1), False),
        (timedelta(minutes=55), True),
        (timedelta(minutes=70), False),
        (-timedelta(hours=2), False),
    ],
    ids=["+1h", "+1h1s", "-1h5m", "-1h5m1s", "-55min", "-70min", "+2h"],
)
def test_date_window_boundaries(
    alice_key: rsa.RSAPrivateKey, age: timedelta, accepted: bool
) -> None:
    sent = cavage(alice_key, MASTODON_POST)
    if accepted:
        verify_parsed(parse(sent, now=NOW + age), alice_key.public_key())
    else:
        refused("date", sent, now=NOW + age)


@pytest.mark.parametrize(
    ("age", "accepted"),
    [
        (-MAX_FUTURE_SKEW, True),
        (-MAX_FUTURE_SKEW - timedelta(seconds=1), False),
        (MAX_AGE, True),
        (MAX_AGE + timedelta(seconds=1), False),
    ],
    ids=["+1h", "+1h1s", "-1h5m", "-1h5m1s"],
)
def test_rfc9421_created_window_boundaries(
    alice_key: rsa.RSAPrivateKey, age: timedelta, accepted: bool
) -> None:
    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params())
    if accepted:
        verify_parsed(parse(sent, now=NOW + age), alice_key.public_key())
    else:
        refused("date", sent, now=NOW + age)


@pytest.mark.parametrize(
    "date",
    ["yesterday", "Tue, 03 Nov 2026 10:15:00 +0000", "Tue, 31 Feb 2026 10:15:00 GMT", ""],
)
def test_unparseable_date_is_refused(alice_key: rsa.RSAPrivateKey, date: str) -> None:
    refused("date", cavage(alice_key, MASTODON_POST, headers=post_headers() | {"Date": date}))


def test_created_in_the_future_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    future = CREATED + 2 * 3600
    refused("date", rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params(created=future)))
    covered = ["(request-target)", "host", "(created)", "digest"]
    refused("date", cavage(alice_key, covered, algorithm="hs2019", created=future))


def test_expired_signature_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    params = fedify_params() + f";expires={CREATED + 60}"
    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, params)
    verify_parsed(parse(sent), alice_key.public_key())
    refused("date", sent, now=NOW + timedelta(seconds=61))
    covered = ["(request-target)", "host", "(created)", "(expires)", "digest"]
    sent = cavage(alice_key, covered, algorithm="hs2019", created=CREATED, expires=CREATED + 60)
    verify_parsed(parse(sent), alice_key.public_key())
    refused("date", sent, now=NOW + timedelta(seconds=61))


def test_expires_before_created_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    params = fedify_params() + f";expires={CREATED - 1}"
    refused(
        "malformed", rfc9421(alice_key, FEDIFY_COMPONENTS, params), now=NOW - timedelta(minutes=30)
    )


def test_date_not_signed_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    refused("components", cavage(alice_key, ["(request-target)", "host", "digest"]))


def test_created_pseudo_header_with_rsa_sha256_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    covered = ["(request-target)", "host", "(created)", "digest"]
    refused("components", cavage(alice_key, covered, algorithm="rsa-sha256", created=CREATED))


def test_rfc9421_without_created_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, f';keyid="{ALICE}";alg="rsa-v1_5-sha256"')
    refused("components", sent)


def test_naive_now_is_a_programming_error(alice_key: rsa.RSAPrivateKey) -> None:
    with pytest.raises(ValueError, match="aware"):
        parse(cavage(alice_key, MASTODON_POST), now=NOW.replace(tzinfo=None))


# --- S3 / A8: digests --------------------------------------------------------------------------


def test_digest_not_matching_body_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    # A captured valid delivery replayed with another body and the same Digest (CVE-2023-49079).
    sent = cavage(alice_key, MASTODON_POST)
    refused("digest", sent, body=BODY.replace(b"Like", b"Undo"))


def test_missing_digest_header_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = cavage(alice_key, MASTODON_POST)
    del sent["Digest"]
    refused("digest", sent)


def test_post_without_digest_signed_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    refused("components", cavage(alice_key, ["(request-target)", "host", "date"]))


def test_get_with_a_body_needs_a_signed_digest(alice_key: rsa.RSAPrivateKey) -> None:
    sent = cavage(alice_key, ["(request-target)", "host", "date"], method="get", target="/actor")
    refused("components", sent, method="GET", path="/actor", body=b"surprise")


def test_digest_of_other_algorithm_only_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sha512 = b64(hashlib.sha512(BODY).digest())
    headers = post_headers() | {"Digest": f"SHA-512={sha512}"}
    refused("digest", cavage(alice_key, MASTODON_POST, headers=headers))


def test_lowercase_digest_label_is_accepted(alice_key: rsa.RSAPrivateKey) -> None:
    headers = post_headers() | {"Digest": f"sha-256={sha256_b64(BODY)}"}
    verify_parsed(parse(cavage(alice_key, MASTODON_POST, headers=headers)), alice_key.public_key())


def test_digest_with_a_wrong_secondary_sha512_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    wrong = b64(hashlib.sha512(b"other").digest())
    headers = post_headers() | {"Digest": f"SHA-256={sha256_b64(BODY)},SHA-512={wrong}"}
    refused("digest", cavage(alice_key, MASTODON_POST, headers=headers))


@pytest.mark.parametrize(
    "value",
    [
        "SHA-256=" + b64(hashlib.sha256(BODY).digest()[:31]),
        "SHA-256=not*base64",
        "SHA-256",
        "SHA-256=" + sha256_b64(BODY) + ",SHA-256=" + sha256_b64(BODY),
    ],
    ids=["31-bytes", "bad-base64", "no-value", "duplicate"],
)
def test_malformed_digest_is_refused(alice_key: rsa.RSAPrivateKey, value: str) -> None:
    headers = post_headers() | {"Digest": value}
    refused("digest", cavage(alice_key, MASTODON_POST, headers=headers))


def test_content_digest_not_matching_body_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params())
    refused("digest", sent, body=BODY + b" ")


def test_content_digest_sha512_is_accepted(alice_key: rsa.RSAPrivateKey) -> None:
    headers = {"Host": HOST, "Content-Digest": f"sha-512=:{b64(hashlib.sha512(BODY).digest())}:"}
    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params(), headers=headers)
    verify_parsed(parse(sent), alice_key.public_key())


@pytest.mark.parametrize(
    "value",
    [
        "md5=:AAAAAAAAAAAAAAAAAAAAAA==:",
        "sha-256=" + sha256_b64(BODY),
        "sha-256=:AAAA:",
        "sha-256=:" + sha256_b64(BODY) + ":, sha-256=:" + sha256_b64(BODY) + ":",
        "garbage(",
    ],
    ids=["unknown-only", "not-byte-sequence", "short", "duplicate", "garbage"],
)
def test_bad_content_digest_is_refused(alice_key: rsa.RSAPrivateKey, value: str) -> None:
    headers = {"Host": HOST, "Content-Digest": value}
    refused("digest", rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params(), headers=headers))


def test_rfc9421_post_without_content_digest_signed_is_refused(
    alice_key: rsa.RSAPrivateKey,
) -> None:
    sent = rfc9421(alice_key, ["@method", "@target-uri", "@authority"], fedify_params())
    refused("components", sent)


# --- A8 / host, and who the request was meant for ----------------------------------------------


def test_unsigned_host_header_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    refused("components", cavage(alice_key, ["(request-target)", "date", "digest"]))


def test_changed_host_header_does_not_verify(alice_key: rsa.RSAPrivateKey) -> None:
    sent = cavage(alice_key, MASTODON_POST)
    sent["Host"] = "other.example"
    mismatch(parse(sent), alice_key.public_key())


def test_request_signed_for_another_host_is_refused_with_origin(
    alice_key: rsa.RSAPrivateKey,
) -> None:
    sent = cavage(alice_key, MASTODON_POST, headers=post_headers() | {"Host": "other.example"})
    refused("host", sent, origin=ORIGIN)


def test_host_with_default_port_and_capitals_matches_origin(alice_key: rsa.RSAPrivateKey) -> None:
    sent = cavage(alice_key, MASTODON_POST, headers=post_headers() | {"Host": "Flattr.Example:443"})
    verify_parsed(parse(sent, origin=ORIGIN), alice_key.public_key())


def test_rfc9421_signed_for_another_origin_does_not_verify(alice_key: rsa.RSAPrivateKey) -> None:
    sent = rfc9421(
        alice_key, FEDIFY_COMPONENTS, fedify_params(), target_uri="https://other.example/inbox"
    )
    mismatch(parse(sent, path="/inbox", origin=ORIGIN), alice_key.public_key())


# --- S2: algorithms ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "algorithm", ["rsa-sha1", "rsa-sha512", "hmac-sha256", "ecdsa-sha256", "none", ""]
)
def test_cavage_algorithm_outside_allow_list_is_refused(
    alice_key: rsa.RSAPrivateKey, algorithm: str
) -> None:
    refused("algorithm", cavage(alice_key, MASTODON_POST, algorithm=algorithm))


@pytest.mark.parametrize(
    "alg", ["rsa-pss-sha512", "hmac-sha256", "ecdsa-p256-sha256", "none", "RSA-V1_5-SHA256"]
)
def test_rfc9421_alg_outside_allow_list_is_refused(alice_key: rsa.RSAPrivateKey, alg: str) -> None:
    refused("algorithm", rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params(alg=alg)))


def test_rfc9421_alg_as_token_instead_of_string_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    params = f';created={CREATED};keyid="{ALICE}";alg=ed25519'
    refused("algorithm", rfc9421(alice_key, FEDIFY_COMPONENTS, params))


def test_ed25519_label_with_rsa_key_is_refused(
    alice_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    for parsed in (
        parse(cavage(ed_key, MASTODON_POST, algorithm="ed25519")),
        parse(rfc9421(ed_key, FEDIFY_COMPONENTS, fedify_params(alg="ed25519"))),
    ):
        with pytest.raises(SignatureError) as info:
            verify_parsed(parsed, alice_key.public_key())
        assert info.value.reason == "algorithm"


def test_rsa_label_with_ed25519_key_is_refused(ed_key: ed25519.Ed25519PrivateKey) -> None:
    for parsed in (
        parse(cavage(ed_key, MASTODON_POST, algorithm="rsa-sha256")),
        parse(rfc9421(ed_key, FEDIFY_COMPONENTS, fedify_params(alg="rsa-v1_5-sha256"))),
    ):
        with pytest.raises(SignatureError) as info:
            verify_parsed(parsed, ed_key.public_key())
        assert info.value.reason == "algorithm"


def test_hs2019_signature_by_another_key_type_does_not_verify(
    alice_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    parsed = parse(cavage(ed_key, MASTODON_POST, algorithm="hs2019"))
    mismatch(parsed, alice_key.public_key())


def test_undersized_rsa_key_is_refused_at_verify(small_key: rsa.RSAPrivateKey) -> None:
    small = small_key
    parsed = parse(cavage(small, MASTODON_POST))
    with pytest.raises(SignatureError) as info:
        verify_parsed(parsed, small.public_key())
    assert info.value.reason == "key"


# --- S5 and structure of RFC 9421 --------------------------------------------------------------


def test_rfc9421_without_target_uri_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = rfc9421(alice_key, ["@method", "@authority", "content-digest"], fedify_params())
    refused("components", sent)


def test_rfc9421_without_method_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = rfc9421(alice_key, ["@target-uri", "content-digest"], fedify_params())
    refused("components", sent)


def test_rfc9421_path_without_query_when_there_is_a_query_is_refused(
    alice_key: rsa.RSAPrivateKey,
) -> None:
    components = ["@method", "@authority", "@path"]
    sent = rfc9421(
        alice_key, components, fedify_params(), method="GET", target_uri=ORIGIN + "/u?page=1"
    )
    refused("components", sent, method="GET", path="/u?page=1", body=None)
    components.append("@query")
    sent = rfc9421(
        alice_key, components, fedify_params(), method="GET", target_uri=ORIGIN + "/u?page=1"
    )
    verify_parsed(parse(sent, method="GET", path="/u?page=1", body=None), alice_key.public_key())


def test_two_rfc9421_signatures_are_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params())
    sent["Signature-Input"] += ", " + sent["Signature-Input"].replace("sig1=", "sig2=")
    sent["Signature"] += ", " + sent["Signature"].replace("sig1=", "sig2=")
    refused("malformed", sent)


def test_rfc9421_labels_must_agree(alice_key: rsa.RSAPrivateKey) -> None:
    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params())
    sent["Signature"] = sent["Signature"].replace("sig1=", "sig2=")
    refused("malformed", sent)


def test_duplicated_rfc9421_params_are_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params() + f';keyid="{MALLORY}"')
    refused("malformed", sent)


def test_duplicated_rfc9421_labels_are_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params())
    sent["Signature-Input"] += ", " + sent["Signature-Input"]
    refused("malformed", sent)


def test_duplicated_rfc9421_component_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = rfc9421(alice_key, [*FEDIFY_COMPONENTS, "@method"], fedify_params())
    refused("malformed", sent)


@pytest.mark.parametrize("component", ["@status", "@query-param", "@signature-params"])
def test_unknown_derived_component_is_refused(alice_key: rsa.RSAPrivateKey, component: str) -> None:
    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params())
    sent["Signature-Input"] = sent["Signature-Input"].replace(
        '"@authority"', f'"@authority" "{component}"'
    )
    refused("components", sent)


def test_rfc9421_component_with_parameters_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params())
    sent["Signature-Input"] = sent["Signature-Input"].replace(
        '"content-digest"', '"content-digest";sf'
    )
    refused("components", sent)


def test_signature_input_alongside_cavage_signature_is_refused(
    alice_key: rsa.RSAPrivateKey,
) -> None:
    # A valid cavage signature must not be rescued when Signature-Input selects RFC 9421.
    sent = cavage(alice_key, MASTODON_POST)
    sent["Signature-Input"] = rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params())[
        "Signature-Input"
    ]
    refused("malformed", sent)


def test_signature_input_without_signature_is_missing(alice_key: rsa.RSAPrivateKey) -> None:
    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params())
    del sent["Signature"]
    refused("missing", sent)


def test_rfc9421_signature_params_are_reserialised_canonically(
    alice_key: rsa.RSAPrivateKey,
) -> None:
    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params())
    sent["Signature-Input"] = (
        sent["Signature-Input"].replace('" "', '"   "').replace(";created", "; created")
    )
    verify_parsed(parse(sent), alice_key.public_key())


# --- A10 and the draft-cavage parser -----------------------------------------------------------


def test_unsigned_request_is_refused_as_missing() -> None:
    refused("missing", post_headers())


def test_duplicated_signature_params_are_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = cavage(alice_key, MASTODON_POST)
    sent["Signature"] = f'keyId="{MALLORY}",' + sent["Signature"]
    refused("malformed", sent)


def test_duplicated_signature_headers_are_refused(alice_key: rsa.RSAPrivateKey) -> None:
    signed = cavage(alice_key, MASTODON_POST)
    sent: CIMultiDict[str] = CIMultiDict(signed)
    sent.add("Signature", signed["Signature"])
    refused("malformed", sent)


def test_duplicated_date_headers_are_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent: CIMultiDict[str] = CIMultiDict(cavage(alice_key, MASTODON_POST))
    sent.add("date", DATE)
    refused("malformed", sent)


def test_empty_headers_list_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = cavage(alice_key, MASTODON_POST)
    sent["Signature"] = f'keyId="{ALICE}",algorithm="rsa-sha256",headers="",signature="AAAA"'
    refused("components", sent)


def test_signed_header_listed_twice_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    refused("malformed", cavage(alice_key, [*MASTODON_POST, "date"]))


def test_unknown_pseudo_header_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = cavage(alice_key, MASTODON_POST)
    sent["Signature"] = sent["Signature"].replace("content-type", "(content-type)")
    refused("components", sent)


def test_covered_header_absent_from_request_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = cavage(alice_key, MASTODON_POST)
    del sent["Content-Type"]
    refused("components", sent)


@pytest.mark.parametrize(
    "signature",
    [
        f'keyId="{ALICE}",algorithm="rsa-sha256",headers="date"',
        'algorithm="rsa-sha256",headers="date",signature="AAAA"',
        'keyId="",headers="date",signature="AAAA"',
        f'keyId="{ALICE}",signature="AAAA",',
        f'keyId="{ALICE}" signature="AAAA"',
        f'keyId="{ALICE},signature="AAAA"',
        'keyId=unquoted url,signature="AAAA"',
        f'keyId="{ALICE}\u0000",signature="AAAA"',
        "",
    ],
    ids=[
        "no-signature",
        "no-key-id",
        "empty-key-id",
        "trailing-comma",
        "no-comma",
        "unterminated",
        "unquoted-space",
        "nul",
        "empty",
    ],
)
def test_malformed_signature_header_is_refused(signature: str) -> None:
    refused("malformed", post_headers() | {"Signature": signature})


@pytest.mark.parametrize("value", ["!!!!", "AAA", "", "A" * 1400])
def test_malformed_signature_base64_is_refused(alice_key: rsa.RSAPrivateKey, value: str) -> None:
    sent = cavage(alice_key, MASTODON_POST)
    sent["Signature"] = sent["Signature"].rsplit('signature="', 1)[0] + f'signature="{value}"'
    refused("malformed", sent)


def test_malformed_rfc9421_signature_base64_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params())
    sent["Signature"] = "sig1=:!!!!:"
    refused("malformed", sent)
    sent["Signature"] = "sig1=::"
    refused("malformed", sent)


def test_tampered_signature_does_not_verify(alice_key: rsa.RSAPrivateKey) -> None:
    parsed = parse(cavage(alice_key, MASTODON_POST))
    flipped = bytes([parsed.signature[0] ^ 1]) + parsed.signature[1:]
    mismatch(ParsedSignature(**{**parsed.__dict__, "signature": flipped}), alice_key.public_key())


def test_swapped_key_id_does_not_verify(
    alice_key: rsa.RSAPrivateKey, mallory_key: rsa.RSAPrivateKey
) -> None:
    # The caller fetches whatever key the header names; Mallory's key cannot verify Alice's
    # signature, and in RFC 9421 the key id is itself signed.
    sent = cavage(alice_key, MASTODON_POST)
    sent["Signature"] = sent["Signature"].replace(ALICE, MALLORY)
    parsed = parse(sent)
    assert parsed.key_id == MALLORY
    mismatch(parsed, mallory_key.public_key())

    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params())
    sent["Signature-Input"] = sent["Signature-Input"].replace(ALICE, MALLORY)
    mismatch(parse(sent), alice_key.public_key())


def test_signature_over_a_different_path_does_not_verify(alice_key: rsa.RSAPrivateKey) -> None:
    mismatch(parse(cavage(alice_key, MASTODON_POST), path="/inbox"), alice_key.public_key())
    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params())
    mismatch(parse(sent, path="/inbox"), alice_key.public_key())


def test_signature_over_a_different_method_does_not_verify(alice_key: rsa.RSAPrivateKey) -> None:
    mismatch(parse(cavage(alice_key, MASTODON_POST), method="PUT"), alice_key.public_key())
    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params())
    mismatch(parse(sent, method="PUT"), alice_key.public_key())


def test_signature_over_a_different_query_does_not_verify(alice_key: rsa.RSAPrivateKey) -> None:
    headers = {"Host": HOST, "Date": DATE}
    covered = ["(request-target)", "host", "date"]
    sent = cavage(alice_key, covered, method="get", target="/u?page=1", headers=headers)
    mismatch(parse(sent, method="GET", path="/u?page=2", body=None), alice_key.public_key())
    sent = rfc9421(
        alice_key,
        ["@method", "@target-uri"],
        fedify_params(),
        method="GET",
        target_uri=ORIGIN + "/u?page=1",
        headers={"Host": HOST},
    )
    mismatch(parse(sent, method="GET", path="/u?page=2", body=None), alice_key.public_key())


def test_header_value_with_newline_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    # "content-type: x\ndigest: <forged>" would add a line to the signing string.
    injected = f"{AP_JSON}\ndigest: SHA-256={sha256_b64(b'forged')}"
    sent = cavage(alice_key, MASTODON_POST)
    sent["Content-Type"] = injected
    refused("malformed", sent)
    sent = rfc9421(
        alice_key,
        [*FEDIFY_COMPONENTS, "content-type"],
        fedify_params(),
        headers={"Host": HOST, "Content-Digest": content_digest_header(BODY), "Content-Type": "x"},
    )
    sent["Content-Type"] = injected
    refused("malformed", sent)


def test_non_ascii_covered_header_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = cavage(alice_key, MASTODON_POST)
    sent["Content-Type"] = "application/activity+jsön"
    refused("malformed", sent)


def test_oversized_signature_header_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = cavage(alice_key, MASTODON_POST)
    sent["Signature"] += "," + "x" * 9000 + '="y"'
    refused("malformed", sent)
    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params())
    sent["Signature-Input"] += ';tag="' + "x" * 9000 + '"'
    refused("malformed", sent)


def test_oversized_covered_header_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    headers = post_headers() | {"Content-Type": "a" * 9000}
    refused("malformed", cavage(alice_key, MASTODON_POST, headers=headers))


def test_too_many_header_fields_are_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = cavage(alice_key, MASTODON_POST) | {f"X-Filler-{i}": "x" for i in range(300)}
    refused("malformed", sent)


def test_too_many_signed_headers_are_refused(alice_key: rsa.RSAPrivateKey) -> None:
    extra = {f"x-{i}": "v" for i in range(40)}
    covered = MASTODON_POST + list(extra)
    refused("malformed", cavage(alice_key, covered, headers=post_headers() | extra))


@pytest.mark.parametrize("path", ["inbox", "/in box", "http://flattr.example/inbox", ""])
def test_path_that_is_not_origin_form_is_refused(alice_key: rsa.RSAPrivateKey, path: str) -> None:
    refused("malformed", cavage(alice_key, MASTODON_POST), path=path)


def test_garbage_host_is_refused(alice_key: rsa.RSAPrivateKey) -> None:
    sent = rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params())
    sent["Host"] = "evil.example/../x"
    refused("host", sent)
    del sent["Host"]
    refused("host", sent)


# --- fuzzing -----------------------------------------------------------------------------------

_INTERESTING = st.sampled_from(
    [
        "Signature",
        "signature",
        "Signature-Input",
        "Date",
        "Host",
        "Digest",
        "Content-Digest",
        "Content-Type",
    ]
)
# Characters that steer the parsers, mixed with anything at all.
_SIGNIFICANT = st.text(
    alphabet=st.sampled_from([*list('"(),;=:*?\\ \t\nabkeyIdsig1@-0123456789+/AZ'), "ü", "\x00"]),
    max_size=120,
)
_GARBAGE = st.one_of(st.text(max_size=200), _SIGNIFICANT)


@settings(max_examples=400, deadline=None)
@given(
    headers=st.dictionaries(_INTERESTING, _GARBAGE, max_size=8),
    method=st.sampled_from(["GET", "POST", "get", "PUT", "", "G ET"]),
    path=st.one_of(st.just(INBOX), st.text(max_size=40)),
    body=st.one_of(st.none(), st.binary(max_size=32)),
)
def test_garbage_headers_only_raise_signature_error(
    headers: dict[str, str], method: str, path: str, body: bytes | None
) -> None:
    with contextlib.suppress(SignatureError):
        parse_signature(method, path, headers, body, NOW)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_mutated_signatures_only_raise_signature_error(
    alice_key: rsa.RSAPrivateKey, data: st.DataObject
) -> None:
    sent = data.draw(
        st.sampled_from(
            [
                cavage(alice_key, MASTODON_POST),
                rfc9421(alice_key, FEDIFY_COMPONENTS, fedify_params()),
            ]
        )
    )
    name = data.draw(st.sampled_from(sorted(sent)))
    value = sent[name]
    at = data.draw(st.integers(0, len(value)))
    cut = data.draw(st.integers(0, 3))
    sent[name] = value[:at] + data.draw(_GARBAGE) + value[at + cut :]
    try:
        parsed = parse_signature("POST", INBOX, sent, BODY, NOW)
        verify_parsed(parsed, alice_key.public_key())
    except SignatureError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    pem=st.one_of(
        st.text(max_size=300),
        st.binary(max_size=400).map(
            lambda der: "-----BEGIN PUBLIC KEY-----\n" + b64(der) + "\n-----END PUBLIC KEY-----\n"
        ),
    )
)
def test_garbage_pem_only_raises_signature_error(pem: str) -> None:
    with contextlib.suppress(SignatureError):
        load_public_key_pem(pem)


# --- the fast parser of plain Signature headers agrees with the full one --------------------

_HEADER_PIECES = st.sampled_from(
    [
        'keyId="https://a.example/u#k"',
        "algorithm=hs2019",
        'headers="(request-target) host date"',
        'signature="YWJj+/=="',
        "a=b",
        'x="q\\"uote"',
        'x="tab\tin"',
        "=",
        ",",
        ", ",
        " ",
        "\t",
        '"',
        "\\",
        "\x01",
        "k=" + "t" * 33,
        "keyId=",
    ]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(_HEADER_PIECES, max_size=8).map("".join))
def test_plain_header_parser_gives_what_the_full_parser_gives(raw: str) -> None:
    from flattrfed.activitypub import signatures as module

    try:
        full: dict[str, str] | str = module._parse_params_fully(raw)
    except SignatureError as error:
        full = f"error: {error}"
    plain: dict[str, str] | str | None
    try:
        plain = module._parse_plain_params(raw)
    except SignatureError as error:  # duplicates and too many parameters: the same errors
        plain = f"error: {error}"
    if plain is not None:  # None: not of the plain shape, the full parser decides
        assert plain == full


def test_plain_headers_take_the_fast_path() -> None:
    from flattrfed.activitypub import signatures as module

    raw = (
        'keyId="https://a.example/users/ann#main-key",algorithm="rsa-sha256", '
        'headers="(request-target) host date digest",signature="YWJjZA=="'
    )
    assert module._parse_plain_params(raw) == module._parse_params_fully(raw)
    assert module._parse_plain_params('keyId="a\\"b"') is None  # escapes: the full parser
