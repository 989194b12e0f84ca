"""The federation client's pure parts: the resolver guard, URL and redirect checks, Retry-After.

Nothing here opens a socket: the resolver guard is fed by a fake inner resolver, and URL checks
run before any session exists.
"""

from __future__ import annotations

import pickle
import socket
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Network

import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import given
from hypothesis import strategies as st
from yarl import URL

from flattrfed.activitypub.client import (
    MAX_RETRY_AFTER,
    AddressRefusedError,
    FederationClient,
    FetchError,
    GuardedResolver,
    GuardRefusal,
    parse_retry_after,
)
from flattrfed.activitypub.signatures import format_http_date
from flattrfed.clock import ManualClock

ALLOWED = (IPv4Network("127.0.0.2/32"),)
NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


class FakeResolver(AbstractResolver):
    """Answers every name with `answers` and records what it was asked."""

    def __init__(self, *answers: str) -> None:
        self.answers = answers
        self.lookups: list[str] = []
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.lookups.append(host)
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.answers
        ]

    async def close(self) -> None:
        self.closed = True


# --- GuardedResolver ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "host",
    ["2130706435", "127.3", "0x7f.0.0.3", "0177.0.0.3", "0x7f000003", "127.0.0.3", "::ffff:7f00:3"],
)
async def test_literal_hosts_are_classified_without_the_inner_resolver(host: str) -> None:
    # libc would read all of these as 127.0.0.3; the guard must never let it.
    inner = FakeResolver("127.0.0.2")
    guard = GuardedResolver(ALLOWED, inner)
    with pytest.raises(GuardRefusal) as caught:
        await guard.resolve(host, 80)
    assert caught.value.refused.host == host
    assert inner.lookups == []


async def test_an_allowed_literal_resolves_to_its_canonical_form() -> None:
    inner = FakeResolver()
    guard = GuardedResolver(ALLOWED, inner)
    [answer] = await guard.resolve("0x7f.0.0.2", 443)
    assert (answer["host"], answer["port"], answer["family"]) == ("127.0.0.2", 443, socket.AF_INET)
    assert inner.lookups == []


async def test_refused_answers_are_dropped_and_the_rest_kept() -> None:
    inner = FakeResolver("127.0.0.3", "127.0.0.2", "::1", "not-an-address")
    guard = GuardedResolver(ALLOWED, inner)
    answers = await guard.resolve("mixed.test", 80)
    assert [answer["host"] for answer in answers] == ["127.0.0.2"]
    assert inner.lookups == ["mixed.test"]


@pytest.mark.parametrize("answers", [("127.0.0.3",), ("127.0.0.3", "::1", "::ffff:127.0.0.3"), ()])
async def test_a_name_with_only_refused_answers_is_refused(answers: tuple[str, ...]) -> None:
    guard = GuardedResolver(ALLOWED, FakeResolver(*answers))
    with pytest.raises(GuardRefusal) as caught:
        await guard.resolve("private.test", 80)
    assert isinstance(caught.value, OSError)  # what aiohttp expects from a resolver
    assert caught.value.refused.host == "private.test"


@pytest.mark.parametrize("host", ["1.2.3.4.5", "256.1.1.1", "a b.test", "08.0.0.1"])
async def test_unusable_hosts_are_refused(host: str) -> None:
    inner = FakeResolver("127.0.0.2")
    with pytest.raises(GuardRefusal):
        await GuardedResolver(ALLOWED, inner).resolve(host, 80)
    assert inner.lookups == []


async def test_a_given_inner_resolver_is_left_open() -> None:
    inner = FakeResolver()
    guard = GuardedResolver(ALLOWED, inner)
    await guard.close()
    assert not inner.closed
    await GuardedResolver(ALLOWED).close()  # owns nothing yet: nothing to close


# --- URL and redirect checks -------------------------------------------------------------------


def client(*, allow_http: bool = True) -> FederationClient:
    # Never used for a request: the session is only created on the first one.
    return FederationClient(allowed_networks=ALLOWED, allow_http=allow_http, clock=ManualClock(NOW))


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/",
        "http://127.0.0.3:8080/",
        "http://[::1]/",
        "http://[::]/",
        "http://[::ffff:127.0.0.3]/",
        "http://0/",
        "http://2130706433/",
        "http://0x7f.1/",
    ],
)
def test_refused_literals_are_caught_before_any_connection(url: str) -> None:
    with pytest.raises(AddressRefusedError) as caught:
        client()._checked_url(url)
    assert caught.value.permanent
    assert caught.value.reason == "address_refused"


def test_a_checked_url_loses_its_fragment_and_keeps_its_query() -> None:
    checked = client()._checked_url("http://good.test:8080/a?b=1#main-key")
    assert str(checked) == "http://good.test:8080/a?b=1"


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        ("b", "https://good.test/dir/b"),
        ("/c?d=1", "https://good.test/c?d=1"),
        ("//other.test/x", "https://other.test/x"),
        ("https://other.test/y", "https://other.test/y"),
    ],
)
def test_redirect_targets_resolve_relative_locations(location: str, expected: str) -> None:
    current = URL("https://good.test/dir/a")
    assert str(client()._redirect_target(current, location)) == expected


@pytest.mark.parametrize(
    ("current", "location", "reason"),
    [
        ("https://good.test/a", "http://good.test/a", "scheme_change"),
        ("http://good.test/a", "https://good.test/a", "scheme_change"),
        ("https://good.test/a", "file:///etc/passwd", "scheme"),
        ("https://good.test/a", "gopher://good.test/", "scheme"),
        ("https://good.test/a", "data:application/json,{}", "scheme"),
        ("https://good.test/a", "https://user@good.test/", "userinfo"),
        ("https://good.test/a", "https://[::1]/", "address_refused"),
        ("https://good.test/a", "https://good.test:99999/", "bad_redirect"),
    ],
)
def test_bad_redirect_targets_are_refused(current: str, location: str, reason: str) -> None:
    with pytest.raises(FetchError) as caught:
        client()._redirect_target(URL(current), location)
    assert caught.value.reason == reason
    assert caught.value.permanent


def test_https_to_http_is_refused_even_without_allow_http() -> None:
    with pytest.raises(FetchError) as caught:
        client(allow_http=False)._redirect_target(URL("https://good.test/"), "http://good.test/")
    assert caught.value.reason == "scheme"


# --- errors ------------------------------------------------------------------------------------


def test_errors_survive_pickling() -> None:
    error = FetchError(
        "https://good.test/x",
        "rate_limited",
        permanent=False,
        status=429,
        retry_after=timedelta(seconds=5),
        detail="busy",
    )
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own object
    assert (copy.url, copy.reason, copy.permanent, copy.status, copy.retry_after, copy.detail) == (
        error.url,
        error.reason,
        error.permanent,
        error.status,
        error.retry_after,
        error.detail,
    )
    refused = AddressRefusedError("http://x.test/", "x.test", "loopback")
    refused_copy = pickle.loads(pickle.dumps(refused))  # noqa: S301 - our own object
    assert isinstance(refused_copy, AddressRefusedError)
    assert (refused_copy.host, refused_copy.why, refused_copy.permanent) == (
        "x.test",
        "loopback",
        True,
    )
    assert "loopback" in str(refused_copy)


# --- Retry-After -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("120", timedelta(seconds=120)),
        (" 0 ", timedelta(0)),
        ("86400", timedelta(hours=24)),
        ("86401", MAX_RETRY_AFTER),
        ("9" * 400, MAX_RETRY_AFTER),
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("\u0661\u0662", None),  # Arabic-Indic digits are not delay-seconds
        (format_http_date(NOW + timedelta(minutes=5)), timedelta(minutes=5)),
        (format_http_date(NOW - timedelta(minutes=5)), timedelta(0)),
        (format_http_date(NOW + timedelta(days=30)), MAX_RETRY_AFTER),
        ("Sunday, 15-Nov-26 12:01:00 GMT", timedelta(minutes=1)),  # RFC 850
        ("Sun Nov 15 12:02:00 2026", timedelta(minutes=2)),  # asctime
        ("Sun, 31 Feb 2026 12:00:00 GMT", None),
    ],
)
def test_retry_after(value: str | None, expected: timedelta | None) -> None:
    assert parse_retry_after(value, NOW) == expected


@given(st.text(max_size=80))
def test_retry_after_never_raises_and_stays_in_range(value: str) -> None:
    result = parse_retry_after(value, NOW)
    assert result is None or timedelta(0) <= result <= MAX_RETRY_AFTER
