"""Small parts of the web layer on their own: redirects after forms, the log-in limiter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from flattrfed.web.render import sentence
from flattrfed.web.security import LoginLimiter, safe_next

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("/wallet", "/wallet"),
        ("/flattr?uri=https://x.example/a", "/flattr?uri=https://x.example/a"),
        ("https://evil.example/", "/dashboard"),
        ("//evil.example/", "/dashboard"),
        ("/\\evil.example", "/dashboard"),
        ("javascript:alert(1)", "/dashboard"),
        ("/ok\r\nSet-Cookie: x=y", "/dashboard"),
        ("", "/dashboard"),
        (None, "/dashboard"),
    ],
)
def test_only_local_paths_are_followed_after_a_form(given: object, expected: str) -> None:
    assert safe_next(given) == expected


def test_the_limiter_blocks_after_five_failures_for_fifteen_minutes() -> None:
    limiter = LoginLimiter()
    key = ("127.0.0.1", "ann")
    for minute in range(5):
        assert not limiter.blocked(key, NOW + timedelta(minutes=minute))
        limiter.failed(key, NOW + timedelta(minutes=minute))
    assert limiter.blocked(key, NOW + timedelta(minutes=5))
    assert limiter.retry_after(key, NOW + timedelta(minutes=5)) == 10 * 60 + 1
    assert not limiter.blocked(("127.0.0.1", "bob"), NOW)
    assert not limiter.blocked(("127.0.0.2", "ann"), NOW)
    # The oldest failure leaves the window: one more try is allowed.
    assert not limiter.blocked(key, NOW + timedelta(minutes=15, seconds=1))
    limiter.succeeded(key)
    assert not limiter.blocked(key, NOW + timedelta(minutes=5))


def test_the_limiter_forgets_old_entries_when_it_is_full() -> None:
    limiter = LoginLimiter()
    for number in range(10_000):
        limiter.failed((f"10.0.{number // 256}.{number % 256}", "ann"), NOW)
    limiter.failed(("127.0.0.1", "ann"), NOW + timedelta(minutes=16))
    assert len(limiter._failures) == 1  # every older entry had expired


def test_error_messages_become_sentences() -> None:
    assert sentence(ValueError("only 2.00 EUR of @Bob's")) == "Only 2.00 EUR of @Bob's."
    assert sentence("Done!") == "Done!"
    assert sentence("") == "Something went wrong."
