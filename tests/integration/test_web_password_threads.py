"""Password hashing runs in a thread: the instance answers other requests while argon2 works."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from flattrfed.flattring import members
from tests.harness.instances import Federation
from tests.integration.test_web_support import PASSWORD, Visitors, visitors_of

NEW_PASSWORD = "a long enough password"


@pytest.fixture
async def visitors(federation: Federation) -> AsyncIterator[Visitors]:
    async for made in visitors_of(federation):
        yield made


class Held:
    """Replaces a password function of `members` by one that waits, in its thread, for a go.

    It tells the loop it has started, then blocks until `go` is set. Run on the event loop's
    own thread, it would block the loop, nothing else could be answered, and the wait would
    end only by its (failure) timeout, with the function then refusing to run at all.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
        self.loop = asyncio.get_running_loop()
        self.started = asyncio.Event()
        self.go = threading.Event()
        self.real: Callable[..., Any] = getattr(members, name)
        monkeypatch.setattr(members, name, self)

    def __call__(self, *args: Any) -> Any:
        self.loop.call_soon_threadsafe(self.started.set)
        if not self.go.wait(timeout=30):
            raise AssertionError("the password function blocked the event loop")
        return self.real(*args)


async def test_health_is_answered_while_a_login_password_is_being_verified(
    federation: Federation, visitors: Visitors, monkeypatch: pytest.MonkeyPatch
) -> None:
    alpha = await federation.start("alpha")
    await alpha.create_member("ann")
    held = Held(monkeypatch, "password_matches")
    ann = visitors(alpha)
    token = await ann.token()
    login = asyncio.create_task(
        ann.post("/login", {"csrf_token": token, "username": "ann", "password": PASSWORD})
    )
    await held.started.wait()

    health = await visitors(alpha).get("/health")
    assert health.status == 200
    assert not login.done()  # /health came back while the password was still being verified
    held.go.set()
    assert (await login).status == 303


async def test_health_is_answered_while_a_new_members_password_is_being_hashed(
    federation: Federation, visitors: Visitors, monkeypatch: pytest.MonkeyPatch
) -> None:
    alpha = await federation.start("alpha")
    held = Held(monkeypatch, "hash_password")
    bob = visitors(alpha)
    fields = {"username": "bob", "password": NEW_PASSWORD, "password_again": NEW_PASSWORD}
    token = await bob.token("/signup")
    signup = asyncio.create_task(bob.post("/signup", {"csrf_token": token, **fields}))
    await held.started.wait()

    health = await visitors(alpha).get("/health")
    assert health.status == 200
    assert not signup.done()
    held.go.set()
    assert (await signup).status == 303
    await visitors(alpha).log_in("bob", NEW_PASSWORD)
