"""The web pages in a real Chromium: no JavaScript of ours, keyboard only, narrow screens.

The browser talks only to the loopback instances: its resolver maps the federation's names to
127.0.0.1 and refuses every other name, and any request elsewhere is aborted.
Screenshots go to the test's tmp path (FLATTRFED_SCREENSHOTS=DIR keeps them somewhere else).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.harness.instances import Federation, Instance

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="browser tests need Chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]


class Screens:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)

    async def shot(self, page: Any, name: str) -> Path:
        path = self.directory / f"{name}.png"
        await page.screenshot(path=str(path), full_page=True)
        return path


@pytest.fixture
def screens(tmp_path: Path) -> Screens:
    chosen = os.environ.get("FLATTRFED_SCREENSHOTS")
    return Screens(Path(chosen) if chosen else tmp_path / "screenshots")


@pytest.fixture
async def chromium(federation: Federation) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(CHROMIUM),
            headless=True,
            args=[*CHROMIUM_ARGS, "--host-resolver-rules=MAP *.test 127.0.0.1, MAP * ~NOTFOUND"],
        )
        try:
            yield browser
        finally:
            await browser.close()


async def new_page(
    browser: Any, instance: Instance, *, width: int = 1100, height: int = 800
) -> Any:
    context = await browser.new_context(
        viewport={"width": width, "height": height}, java_script_enabled=False
    )
    allowed = urlsplit(instance.base_url).hostname

    async def only_loopback(route: Any) -> None:
        host = urlsplit(route.request.url).hostname
        if host == allowed or host == "127.0.0.1":
            await route.continue_()
        else:
            await route.abort()

    await context.route("**/*", only_loopback)
    return await context.new_page()


async def no_horizontal_scroll(browser: Any, instance: Instance, path: str) -> None:
    """At phone width (375 px) the page fits: nothing sticks out sideways."""
    context = await browser.new_context(viewport={"width": 375, "height": 700})
    page = await context.new_page()
    await page.goto(instance.url(path))
    sizes = await page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    await context.close()
    assert sizes[0] <= sizes[1], (path, sizes)


async def sticking_out(page: Any) -> Any:
    """What reaches past the right edge of the viewport (to say why a page scrolls sideways)."""
    return await page.evaluate(
        """() => [...document.querySelectorAll('*')]
            .filter(el => el.getBoundingClientRect().right > window.innerWidth + 1)
            .slice(0, 8)
            .map(el => el.tagName + '.' + el.className)"""
    )


async def unlabelled_fields(page: Any) -> list[str]:
    """Form fields a screen reader could not name (JavaScript here is Playwright's, not ours)."""
    result: list[str] = await page.evaluate(
        """() => [...document.querySelectorAll('input, select, textarea')]
            .filter(el => el.type !== 'hidden')
            .filter(el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
            .map(el => el.outerHTML)"""
    )
    return result


async def test_sign_up_budget_flattr_and_undo_with_the_keyboard_alone(
    federation: Federation, chromium: Any, screens: Screens
) -> None:
    alpha = await federation.start("alpha")
    bob = await alpha.create_member("bob")
    await alpha.create_thing(bob, "zine", "Bob's bike zine")
    page = await new_page(chromium, alpha)

    await page.goto(alpha.url("/signup"))
    await screens.shot(page, "01-signup")
    assert await unlabelled_fields(page) == []
    await page.keyboard.press("Tab")  # the skip link comes first
    assert await page.evaluate("() => document.activeElement.textContent") == "Skip to content"
    await page.get_by_label("Username").fill("ann")
    await page.get_by_label("Password", exact=True).fill("a long enough password")
    await page.get_by_label("Password again").fill("a long enough password")
    await page.get_by_label("Password again").press("Enter")
    await page.wait_for_url("**/dashboard?msg=welcome")
    await screens.shot(page, "02-dashboard-new")
    assert await page.get_by_role("heading", name="Hello, ann").is_visible()
    assert await unlabelled_fields(page) == []

    await page.goto(alpha.url("/wallet"))
    await page.get_by_label("Budget in EUR").fill("10.00")
    await page.get_by_label("Budget in EUR").press("Enter")
    await page.wait_for_url("**/wallet?msg=budget#budget-heading")
    await page.get_by_role("button", name="Get a deposit reference").click()
    await page.wait_for_url("**/wallet?msg=deposit#deposit-heading")
    reference = (await page.locator("#deposit-reference").text_content() or "").strip()
    assert reference.startswith("FL-")
    await screens.shot(page, "03-wallet")
    assert await unlabelled_fields(page) == []

    # The thing page: reach the Flattr button with Tab and press it with Enter.
    await page.goto(alpha.url("/@zine"))
    await screens.shot(page, "04-thing")
    for _ in range(30):
        await page.keyboard.press("Tab")
        focused = await page.evaluate("() => document.activeElement.className")
        if focused == "flattr":
            break
    else:
        pytest.fail("the Flattr button cannot be reached with the keyboard")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/@zine?msg=flattred")
    assert (await page.locator("#flattrs-this-month").text_content()) == "1"
    await screens.shot(page, "05-thing-flattred")

    await page.goto(alpha.url("/dashboard"))
    assert await page.locator("#flattrs").get_by_role("link", name="Bob's bike zine").is_visible()
    assert (await page.locator("#split-share").text_content()) == "0.00 EUR"  # empty wallet
    await screens.shot(page, "06-dashboard-flattred")
    await page.get_by_role("button", name="Undo the flattr of Bob's bike zine").click()
    await page.wait_for_url("**/dashboard?msg=undone")
    assert await page.get_by_text("You have not flattred anything this month yet.").is_visible()

    await page.get_by_role("button", name="Log out").click()
    await page.wait_for_url("**/?msg=logged-out")

    for path in ("/", "/signup", "/login", "/@zine", "/@bob"):
        await no_horizontal_scroll(chromium, alpha, path)


async def test_admin_pages_and_phone_screens(
    federation: Federation, chromium: Any, screens: Screens
) -> None:
    alpha = await federation.start("alpha")
    beta = await federation.start("beta")
    await alpha.peer_with(beta)
    await alpha.create_member("root", admin=True)
    dave = await beta.create_member("dave")
    await beta.create_thing(dave, "pod", "Dave's podcast")
    ann = await alpha.create_donor("ann", budget=1000, deposit=2500)
    await alpha.flattr(ann, f"@pod@{beta.host}")
    await federation.step_workers()

    phone = await new_page(chromium, alpha, width=375, height=740)
    await phone.goto(alpha.url("/login"))
    await phone.get_by_label("Username").fill("ann")
    await phone.get_by_label("Password").fill("correct horse battery")
    await phone.get_by_role("button", name="Log in").click()
    await phone.wait_for_url("**/dashboard?msg=logged-in")
    await screens.shot(phone, "11-phone-dashboard")
    for path in ("/dashboard", "/wallet", "/settings", f"/flattr?uri=@pod@{beta.host}"):
        await phone.goto(alpha.url(path))
        width = await phone.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 375, (path, width, await sticking_out(phone))
        assert await unlabelled_fields(phone) == [], path
        await screens.shot(phone, "phone" + path.replace("/", "-").split("?")[0])
    await screens.shot(phone, "12-phone-flattr-page")

    desk = await new_page(chromium, alpha)
    await desk.goto(alpha.url("/login?next=/admin/deposits"))
    await desk.get_by_label("Username").fill("root")
    await desk.get_by_label("Password").fill("correct horse battery")
    await desk.get_by_role("button", name="Log in").click()
    await desk.wait_for_url("**/admin/deposits?msg=logged-in")
    await desk.get_by_label("Member's username").fill("ann")
    await desk.get_by_label("Amount received in EUR").fill("5.00")
    await desk.get_by_label("The bank's reference of the transfer").fill("BANK-77")
    await desk.get_by_role("button", name="Record deposit").click()
    await desk.wait_for_url("**/admin/deposits?msg=recorded")
    assert await desk.get_by_text("BANK-77").is_visible()
    await screens.shot(desk, "13-admin-deposits")
    for path in ("/admin", "/admin/payouts", "/admin/settlements"):
        await desk.goto(alpha.url(path))
        assert await unlabelled_fields(desk) == [], path
    await desk.goto(alpha.url("/admin"))
    await screens.shot(desk, "14-admin-members")
    await phone.goto(alpha.url("/dashboard"))
    assert (await phone.locator("#figure-wallet").text_content()) == "30.00 EUR"
