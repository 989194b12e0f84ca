"""A blog embeds the Flattr button; a visitor from another instance flattrs through it, in Chromium.

The blog is a static page served by a tiny aiohttp server on 127.0.0.1. Nothing runs
JavaScript of ours: the iframe's button is a link (target=_top), the rest are plain forms.
`RemoteFlattr` holds the steps, so other browser tests can reuse them.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp import web

from tests.browser.test_pages import CHROMIUM, Screens, chromium, screens, unlabelled_fields
from tests.harness.instances import Federation, Instance

__all__ = ["Blog", "RemoteFlattr", "chromium", "screens"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="browser tests need Chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]

BLOG_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Bob's blog</title></head>
<body>
<h1>Bob's blog</h1>
<p>I write a bike zine. If you like it, flattr it:</p>
{iframe}
<p>Or with the badge:</p>
{image}
</body></html>
"""


@dataclass
class Blog:
    """A static page on 127.0.0.1 that carries the embed snippets copied from a thing's page."""

    runner: web.AppRunner
    url: str

    @classmethod
    async def serve(cls, html: str) -> Blog:
        async def page(request: web.Request) -> web.Response:
            return web.Response(text=html, content_type="text/html")

        app = web.Application()
        app.router.add_get("/", page)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        await web.SockSite(runner, sock).start()
        # Chromium here resolves only *.test names (to 127.0.0.1): the blog gets one too.
        return cls(runner, f"http://blog.test:{sock.getsockname()[1]}/")

    async def close(self) -> None:
        await self.runner.cleanup()


async def page_for(browser: Any, instances: list[Instance], *, width: int = 1100) -> Any:
    """A JavaScript-free page that may reach the given instances and the blog, nothing else."""
    context = await browser.new_context(
        viewport={"width": width, "height": 800}, java_script_enabled=False
    )
    allowed = {urlsplit(instance.base_url).hostname for instance in instances} | {"blog.test"}

    async def only_loopback(route: Any) -> None:
        if urlsplit(route.request.url).hostname in allowed:
            await route.continue_()
        else:
            await route.abort()

    await context.route("**/*", only_loopback)
    return await context.new_page()


class RemoteFlattr:
    """The steps of flattring an embedded thing from one's own instance."""

    def __init__(self, page: Any, screens: Screens) -> None:
        self.page = page
        self.screens = screens

    async def copy_snippets(self, instance: Instance, handle: str) -> tuple[str, str]:
        """What the thing's page offers to copy: the iframe and the image embed."""
        await self.page.goto(instance.url(f"/@{handle}"))
        await self.screens.shot(self.page, "20-thing-embed-section")
        iframe = await self.page.get_by_label("A button with the count").input_value()
        image = await self.page.get_by_label("A plain link with an image badge").input_value()
        return iframe, image

    async def log_in(self, instance: Instance, username: str) -> None:
        await self.page.goto(instance.url("/login"))
        await self.page.get_by_label("Username").fill(username)
        await self.page.get_by_label("Password").fill("correct horse battery")
        await self.page.get_by_role("button", name="Log in").click()
        await self.page.wait_for_url("**/dashboard?msg=logged-in")

    async def widget_count(self, blog: Blog) -> str:
        await self.page.goto(blog.url)
        frame = self.page.frame_locator("iframe")
        return (await frame.locator("#widget-count").text_content() or "").strip()

    async def press_the_embedded_button(self, blog: Blog, owner: Instance) -> None:
        await self.page.goto(blog.url)
        await self.screens.shot(self.page, "21-blog-with-button")
        await self.page.frame_locator("iframe").get_by_role("link", name="Flattr").click()
        await self.page.wait_for_url(
            lambda url: url.startswith(owner.base_url) and url.endswith("/interact")
        )
        await self.screens.shot(self.page, "22-interact")

    async def go_home_with_handle(self, handle: str, home: Instance) -> None:
        await self.page.get_by_label("Your fediverse handle").fill(handle)
        await self.page.get_by_role("button", name="Go to my instance").click()
        landing = f"{home.base_url}/flattr?uri="
        await self.page.wait_for_url(lambda url: url.startswith(landing), timeout=10_000)
        await self.screens.shot(self.page, "23-home-flattr-page")

    async def flattr_it(self, title: str) -> None:
        await self.page.get_by_role("button", name=f"Flattr {title}").click()
        await self.page.wait_for_url("**/dashboard?msg=flattred")
        await self.screens.shot(self.page, "24-flattred-at-home")


@pytest.fixture
async def blog_server() -> AsyncIterator[list[Blog]]:
    blogs: list[Blog] = []
    try:
        yield blogs
    finally:
        for blog in blogs:
            await blog.close()


async def test_a_blog_visitor_flattrs_through_the_iframe_from_their_own_instance(
    federation: Federation, chromium: Any, screens: Screens, blog_server: list[Blog]
) -> None:
    alpha = await federation.start("alpha")
    beta = await federation.start("beta")
    await alpha.peer_with(beta)
    await beta.peer_with(alpha)
    bob = await alpha.create_member("bob")
    await alpha.create_thing(bob, "zine", "Bob's bike zine")
    await beta.create_donor("bobby", budget=1000, deposit=2000)

    page = await page_for(chromium, [alpha, beta])
    steps = RemoteFlattr(page, screens)
    iframe, image = await steps.copy_snippets(alpha, "zine")
    assert await unlabelled_fields(page) == []
    blog = await Blog.serve(BLOG_PAGE.format(iframe=iframe, image=image))
    blog_server.append(blog)
    assert await steps.widget_count(blog) == "0"
    badge = page.get_by_role("img", name="Flattr this")
    assert await badge.evaluate("img => img.complete && img.naturalWidth > 0")

    await steps.log_in(beta, "bobby")
    await steps.press_the_embedded_button(blog, alpha)
    assert await unlabelled_fields(page) == []
    await steps.go_home_with_handle(f"@bobby@{beta.host}", beta)
    await steps.flattr_it("Bob's bike zine")

    await federation.step_workers()
    assert await steps.widget_count(blog) == "1"
    await screens.shot(page, "25-blog-counted")
    await page.goto(alpha.url("/@zine"))
    assert (await page.locator("#flattrs-this-month").text_content()) == "1"

    # The handle is remembered on alpha for next time.
    await page.goto(alpha.url("/@zine/interact"))
    assert await page.get_by_label("Your fediverse handle").input_value() == f"@bobby@{beta.host}"


async def test_an_unknown_instance_gives_a_readable_error_in_the_browser(
    federation: Federation, chromium: Any, screens: Screens
) -> None:
    alpha = await federation.start("alpha")
    bob = await alpha.create_member("bob")
    await alpha.create_thing(bob, "zine", "Bob's bike zine")
    page = await page_for(chromium, [alpha], width=375)
    await page.goto(alpha.url("/@zine/interact"))
    await page.get_by_label("Your fediverse handle").fill("@me@nowhere.test")
    await page.get_by_role("button", name="Go to my instance").click()
    alert = page.get_by_role("alert")
    assert "Could not reach nowhere.test" in (await alert.text_content() or "")
    width = await page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 375
    await screens.shot(page, "26-interact-error-phone")
