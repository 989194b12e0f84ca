"""The whole month in Chromium across two instances, from sign-up to the creator's earnings.

A visitor signs up on alpha, alpha's admin credits her deposit, she sets a budget, flattrs a
thing on alpha from its page and one on beta through its button embedded in a blog (beta's
interact page sends her home to alpha), her dashboard shows the projected shares, alpha's
admin closes the month, the instances exchange statements, the admins reconcile the
settlement, and beta's creator sees the earnings. Every page visited is photographed;
`GUIDE_PAGES` names the ones the user guide shows (tests/browser/guide_screenshots.py copies
them to docs/screenshots/).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from flattrfed.money import Money, split_budget
from tests.browser.test_pages import (
    CHROMIUM,
    Screens,
    chromium,
    screens,
    sticking_out,
    unlabelled_fields,
)
from tests.browser.test_widget_remote import Blog, RemoteFlattr, blog_server, page_for
from tests.harness.instances import Federation, Instance

__all__ = ["GUIDE_PAGES", "blog_server", "chromium", "screens"]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="browser tests need Chromium at /usr/bin/chromium (apt-get install -y chromium)",
    ),
]

# The user guide's picture (docs/screenshots/KEY.png) and the screenshot of the journey it is.
GUIDE_PAGES = {
    "front-page": "j02-front-page",
    "signup": "j03-signup",
    "wallet": "j06-wallet-credited",
    "thing-page": "j07-thing-page",
    "blog-widget": "21-blog-with-button",  # taken by RemoteFlattr
    "interact": "22-interact",  # taken by RemoteFlattr
    "flattr-page": "23-home-flattr-page",  # taken by RemoteFlattr
    "dashboard": "j08-dashboard-projected",
    "settings": "j09-settings",
    "admin-deposits": "j05-admin-deposits",
    "admin-clearing": "j10-admin-clearing-closed",
    "admin-settlements": "j11-admin-settlements-alpha",
    "creator-dashboard": "j14-creator-earnings",
}

DOCS = Path(__file__).resolve().parents[2] / "docs"

# Dave's own site, somewhere else on the web, with the snippets from his thing's page pasted in.
DAVES_BLOG = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Dave's podcast</title></head>
<body style="font-family: Georgia, serif; max-width: 40rem; margin: 2rem auto; padding: 0 1rem">
<h1>Dave's podcast</h1>
<h2>Episode 12: truing a wheel in the rain</h2>
<p>This week Mia shows how she trues a wheel at the roadside, and we answer your letters.</p>
<p>If you like the show, flattr it:</p>
{iframe}
<p>No frames where you read this? Use the badge: {image}</p>
</body></html>
"""

PASSWORD = "correct horse battery"
FEE_BP = 250
BUDGET = 1000  # 10.00 EUR a month
DEPOSIT = 2500  # 25.00 EUR transferred
SETTLED_AT = datetime(2026, 12, 2, 1, 0, tzinfo=UTC)  # November's cutoff + 24 h grace is past


def eur(minor: int) -> str:
    return Money(minor, "EUR").format()


async def text_of(page: Any, selector: str) -> str:
    return (await page.locator(selector).text_content() or "").strip()


def november_settlement(page: Any) -> Any:
    """November's row on /admin/settlements (October's, empty, is there too)."""
    return page.locator("#settlements tr[id^='settlement-']", has_text="2026-11")


class Journey:
    """The journey's screenshots, each taken after checking the page is usable."""

    def __init__(self, screens: Screens) -> None:
        self.screens = screens

    async def shot(self, page: Any, name: str) -> None:
        """Photograph the page after checking it is usable: named fields, nothing sideways."""
        assert await unlabelled_fields(page) == [], name
        width = await page.evaluate("() => document.documentElement.scrollWidth")
        viewport = await page.evaluate("() => window.innerWidth")
        assert width <= viewport, (name, width, await sticking_out(page))
        await self.screens.shot(page, name)

    async def log_in(self, page: Any, instance: Instance, username: str, then: str) -> None:
        await page.goto(instance.url(f"/login?next={then}"))
        await self.shot(page, f"login-{instance.name}-{username}")
        await page.get_by_label("Username").fill(username)
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Log in").click()
        await page.wait_for_url(f"**{then}?msg=logged-in")


async def test_sign_up_deposit_budget_flattr_close_reconcile_and_earn_across_two_instances(
    federation: Federation, chromium: Any, screens: Screens, blog_server: list[Blog]
) -> None:
    alpha = await federation.start("alpha", fee_bp=FEE_BP)
    beta = await federation.start("beta", fee_bp=FEE_BP)
    await alpha.peer_with(beta)
    await beta.peer_with(alpha)
    await alpha.create_member("root", admin=True)
    await beta.create_member("bea", admin=True)
    carol = await alpha.create_member("carol")
    await alpha.create_thing(carol, "zine", "Carol's bike zine")
    await beta.create_member("dave")
    journey = Journey(screens)

    # Beta's creator adds his podcast on the web.
    creator = await page_for(chromium, [beta], width=1000)
    await journey.log_in(creator, beta, "dave", "/things/new")
    await journey.shot(creator, "j01a-creator-new-thing")
    await creator.get_by_label("Handle").fill("pod")
    await creator.get_by_label("Title").fill("Dave's podcast")
    await creator.get_by_label("Description").fill(
        "Weekly talk about bicycles and the people who fix them."
    )
    await creator.get_by_label("Web address").fill("https://dave.example/podcast")
    await creator.get_by_role("button", name="Create the thing").click()
    await creator.wait_for_url("**/things/*/edit?msg=thing-created")
    await journey.shot(creator, "j01b-creator-thing-created")

    # A visitor signs up on alpha.
    ann = await page_for(chromium, [alpha, beta], width=1000)
    await ann.goto(alpha.url("/"))
    await journey.shot(ann, "j02-front-page")
    await ann.get_by_role("link", name="Sign up").first.click()
    await ann.wait_for_url("**/signup")
    await journey.shot(ann, "j03-signup")
    await ann.get_by_label("Username").fill("ann")
    await ann.get_by_label("Password", exact=True).fill(PASSWORD)
    await ann.get_by_label("Password again").fill(PASSWORD)
    await ann.get_by_role("button", name="Sign up").click()
    await ann.wait_for_url("**/dashboard?msg=welcome")
    await journey.shot(ann, "j03b-dashboard-welcome")

    # She asks for a deposit reference to write on her bank transfer.
    await ann.get_by_role("link", name="Wallet").click()
    await ann.wait_for_url("**/wallet")
    await ann.get_by_role("button", name="Get a deposit reference").click()
    await ann.wait_for_url("**/wallet?msg=deposit#deposit-heading")
    reference = await text_of(ann, "#deposit-reference")
    assert reference.startswith("FL-")
    assert await text_of(ann, "#figure-wallet") == eur(0)
    await journey.shot(ann, "j04-wallet-reference")

    # The transfer arrives: alpha's admin records it against her reference.
    admin = await page_for(chromium, [alpha], width=1200)
    await journey.log_in(admin, alpha, "root", "/admin/deposits")
    assert reference in await text_of(admin, "#open-requests")
    await admin.get_by_label("Member's username").fill("ann")
    await admin.get_by_label("Amount received in EUR").fill(
        Money(DEPOSIT, "EUR").format().split()[0]
    )
    await admin.get_by_label("The bank's reference of the transfer").fill("SEPA-2026-11-0042")
    await admin.get_by_label("Deposit reference the member quoted").fill(reference)
    await admin.get_by_role("button", name="Record deposit").click()
    await admin.wait_for_url("**/admin/deposits?msg=recorded")
    credited = admin.locator("#credited")
    assert reference in (await credited.text_content() or "")
    assert "SEPA-2026-11-0042" in (await credited.text_content() or "")
    await journey.shot(admin, "j05-admin-deposits")

    # Her wallet is credited; she sets her monthly budget.
    await ann.goto(alpha.url("/wallet"))
    assert await text_of(ann, "#figure-wallet") == eur(DEPOSIT)
    assert await text_of(ann, "#figure-budget") == "not set"
    await ann.get_by_label("Budget in EUR").fill(Money(BUDGET, "EUR").format().split()[0])
    await ann.get_by_role("button", name="Save budget").click()
    await ann.wait_for_url("**/wallet?msg=budget#budget-heading")
    assert await text_of(ann, "#figure-budget") == eur(BUDGET)
    assert await text_of(ann, "#figure-planned") == eur(BUDGET)
    await journey.shot(ann, "j06-wallet-credited")

    # A thing on her own instance: the Flattr button on its page.
    await ann.goto(alpha.url("/@zine"))
    await journey.shot(ann, "j07-thing-page")
    await ann.get_by_role("button", name="Flattr Carol's bike zine").click()
    await ann.wait_for_url("**/@zine?msg=flattred")
    await journey.shot(ann, "j07b-thing-flattred")
    assert await text_of(ann, "#flattrs-this-month") == "1"

    # A thing on beta, through its button on a blog: beta asks for her handle, sends her home.
    steps = RemoteFlattr(ann, screens)
    iframe, image = await steps.copy_snippets(beta, "pod")
    blog = await Blog.serve(DAVES_BLOG.format(iframe=iframe, image=image))
    blog_server.append(blog)
    await steps.press_the_embedded_button(blog, beta)
    await steps.go_home_with_handle(f"@ann@{alpha.host}", alpha)
    assert await text_of(ann, "#target-instance") == beta.host
    await steps.flattr_it("Dave's podcast")
    await federation.step_workers()  # the Like reaches beta
    assert await steps.widget_count(blog) == "1"

    # Her dashboard: both flattrs, each with its projected share of the budget.
    split = split_budget(BUDGET, DEPOSIT, FEE_BP, 2)
    # 10.00 EUR less the 2.5 % fee is 9.75 EUR: 4.87 EUR to each thing, 0.01 EUR stays.
    assert (split.fee_minor, split.share_minor, split.carry_minor) == (25, 487, 1)
    await ann.goto(alpha.url("/dashboard"))
    assert await text_of(ann, "#split-fee") == eur(split.fee_minor)
    assert await text_of(ann, "#split-share") == eur(split.share_minor)
    assert await text_of(ann, "#split-carry") == eur(split.carry_minor)
    rows = ann.locator("#flattrs tbody tr")
    assert await rows.count() == 2
    shares = {
        (await row.locator("td").nth(0).text_content() or "").strip(): (
            await row.locator("td").nth(2).text_content() or ""
        ).strip()
        for row in await rows.all()
    }
    share = eur(split.share_minor)
    assert shares == {"Carol's bike zine": share, "Dave's podcast": share}
    await journey.shot(ann, "j08-dashboard-projected")
    await ann.get_by_role("link", name="Settings").click()
    await ann.wait_for_url("**/settings")
    await journey.shot(ann, "j09-settings")

    # December: alpha's admin closes November by hand; the workers exchange the statements.
    federation.clock.set(SETTLED_AT)
    await admin.goto(alpha.url("/admin/clearing"))
    assert await admin.get_by_label("Month (YYYY-MM)").input_value() == "2026-11"
    await admin.get_by_role("button", name="Close this month now").click()
    await admin.wait_for_url("**/admin/clearing?msg=closed")
    november = admin.locator("#run-2026-11")
    assert "done" in (await november.text_content() or "")
    await journey.shot(admin, "j10-admin-clearing-closed")
    await federation.step_workers()

    # Alpha owes beta Dave's share: its admin transfers it and marks the settlement paid.
    await admin.goto(alpha.url("/admin/settlements"))
    row = november_settlement(admin)
    assert share in (await row.text_content() or "")
    assert "we pay" in (await row.text_content() or "")
    await journey.shot(admin, "j11-admin-settlements-alpha")
    await row.get_by_label("Bank reference").fill("SEPA-2026-12-0007")
    await row.get_by_role("button", name="Mark paid").click()
    await admin.wait_for_url("**/admin/settlements?msg=settlement-paid")
    await journey.shot(admin, "j11b-admin-settlements-paid")
    await federation.step_workers()  # the payment notice reaches beta

    # Beta's admin sees the money arrive and confirms.
    beta_admin = await page_for(chromium, [beta], width=1200)
    await journey.log_in(beta_admin, beta, "bea", "/admin/settlements")
    row = november_settlement(beta_admin)
    assert "they pay" in (await row.text_content() or "")
    # The payer's notice is in the settlement's history and shown on its row; the state stays
    # "agreed" until the payee's admin sees the money on the bank account.
    assert "they say it is paid" in (await row.text_content() or "")
    assert "payment_notice_received" in await text_of(beta_admin, "#settlements")
    await journey.shot(beta_admin, "j12-admin-settlements-beta")
    await row.get_by_role("button", name="Confirm received").click()
    await beta_admin.wait_for_url("**/admin/settlements?msg=settlement-confirmed")
    await federation.step_workers()
    assert "confirmed" in (await november_settlement(beta_admin).text_content() or "")
    await admin.goto(alpha.url("/admin/settlements"))
    assert "confirmed" in (await november_settlement(admin).text_content() or "")
    await journey.shot(beta_admin, "j13-admin-settlements-confirmed")

    # The creator's earnings are available to pay out; the donor's month is booked.
    await creator.goto(beta.url("/dashboard"))
    assert await text_of(creator, "#figure-earnings-available") == share
    assert await text_of(creator, "#figure-earnings-pending") == eur(0)
    await journey.shot(creator, "j14-creator-earnings")
    await ann.goto(alpha.url("/dashboard"))
    november_line = ann.locator("#history tr", has_text="2026-11")
    assert eur(split.share_minor) in (await november_line.text_content() or "")
    assert await text_of(ann, "#figure-wallet") == eur(DEPOSIT - BUDGET + split.carry_minor)
    await journey.shot(ann, "j15-dashboard-after-close")
    # Every page the user guide shows was photographed (some by RemoteFlattr's steps).
    taken = {path.stem for path in screens.directory.glob("*.png")}
    assert set(GUIDE_PAGES.values()) <= taken, set(GUIDE_PAGES.values()) - taken


def test_the_user_guide_shows_each_journey_screenshot_and_each_is_there() -> None:
    guide = (DOCS / "user-guide.md").read_text(encoding="utf-8")
    shown = re.findall(r"!\[[^\]]+\]\(screenshots/([a-z0-9-]+)\.png\)", guide)
    assert sorted(shown) == sorted(GUIDE_PAGES)
    on_disk = {path.stem for path in (DOCS / "screenshots").glob("*.png")}
    assert on_disk == set(GUIDE_PAGES)
