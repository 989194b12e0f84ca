"""Helpers of the web tests: a cookie-keeping client per visitor of a harness instance.

(No tests here; the name keeps the helpers next to the web tests that import them.)
"""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import aiohttp.abc
import markupsafe
from multidict import CIMultiDictProxy

from tests.harness.instances import Federation, Instance

PASSWORD = "correct horse battery"  # what Instance.create_member gives everyone
_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Page:
    status: int
    text: str
    headers: CIMultiDictProxy[str]
    url: str

    @property
    def location(self) -> str:
        return self.headers.get("Location", "")

    def csrf(self) -> str:
        match = _CSRF.search(self.text)
        assert match is not None, "the page has no form with a CSRF token"
        return html.unescape(match.group(1))

    def has(self, text: str) -> bool:
        # As written, or as Jinja escapes it (' becomes &#39;, < becomes &lt;, ...).
        return text in self.text or str(markupsafe.escape(text)) in self.text


class Visitor:
    """One browser: its own cookie jar, talking to one instance over loopback."""

    def __init__(
        self, federation: Federation, instance: Instance, *, keep_cookies: bool = True
    ) -> None:
        self.instance = instance
        connector = aiohttp.TCPConnector(resolver=federation.resolver, force_close=True)
        jar: aiohttp.abc.AbstractCookieJar = (
            aiohttp.CookieJar(unsafe=True) if keep_cookies else aiohttp.DummyCookieJar()
        )
        self.session = aiohttp.ClientSession(connector=connector, cookie_jar=jar)

    async def close(self) -> None:
        await self.session.close()

    async def get(self, path: str, *, follow: bool = True, **params: str) -> Page:
        async with self.session.get(
            self.instance.url(path), params=params or None, allow_redirects=follow
        ) as response:
            return Page(response.status, await response.text(), response.headers, str(response.url))

    async def post(
        self, path: str, data: dict[str, str] | None = None, *, follow: bool = False
    ) -> Page:
        async with self.session.post(
            self.instance.url(path), data=data or {}, allow_redirects=follow
        ) as response:
            return Page(response.status, await response.text(), response.headers, str(response.url))

    async def token(self, path: str = "/login") -> str:
        """A CSRF token of this visitor's session, read from a page's form."""
        page = await self.get(path)
        return page.csrf()

    async def submit(
        self, path: str, data: dict[str, str] | None = None, *, form_page: str = "/login"
    ) -> Page:
        """POST like a browser would: with the CSRF token of the page the form is on."""
        fields = {"csrf_token": await self.token(form_page), **(data or {})}
        return await self.post(path, fields)

    async def log_in(self, username: str, password: str = PASSWORD) -> Page:
        page = await self.submit("/login", {"username": username, "password": password})
        assert page.status == 303, (page.status, page.text[:500])
        return page

    def cookie(self) -> str | None:
        for cookie in self.session.cookie_jar:
            if cookie.key == "flattrfed_session":
                return cookie.value
        return None


class Visitors:
    def __init__(self, federation: Federation) -> None:
        self.federation = federation
        self.open: list[Visitor] = []

    def __call__(self, instance: Instance, *, keep_cookies: bool = True) -> Visitor:
        visitor = Visitor(self.federation, instance, keep_cookies=keep_cookies)
        self.open.append(visitor)
        return visitor

    async def close(self) -> None:
        for visitor in self.open:
            await visitor.close()


async def visitors_of(federation: Federation) -> AsyncIterator[Visitors]:
    """The body of each web test module's `visitors` fixture."""
    made = Visitors(federation)
    try:
        yield made
    finally:
        await made.close()


def form_fields(**fields: Any) -> dict[str, str]:
    return {key: str(value) for key, value in fields.items()}
