"""A dashboard of many flattrs: paged lists, figures from SQL, a bounded number of queries.

ann has 120 payable flattrs this month, 60 pending ones (of authors not on flattrfed) and 30
flattrs in October, written in bulk (resolving 210 targets one by one would test resolving, not
the dashboard). The page is fetched over real HTTP, logged in like a browser.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event, insert

from flattrfed.db.models import Flattr, Member
from flattrfed.flattring.dashboard import PER_PAGE
from tests.harness.instances import Federation, Instance
from tests.integration.test_web_support import Visitor, Visitors

THIS_MONTH = "2026-11"
NOW = datetime(2026, 11, 15, 12, tzinfo=UTC)


def _rows(donor: int, period: str, count: int, status: str, tag: str) -> list[dict[str, Any]]:
    return [
        {
            "donor_id": donor,
            "period": period,
            "target_uri": f"https://remote{k % 7}.example/things/{tag}{k:03d}",
            "payee_uri": f"https://remote{k % 7}.example/things/{tag}{k:03d}",
            "payee_host": f"remote{k % 7}.example",
            "thing_id": None,
            "like_uri": f"https://alpha.example/likes/{tag}/{period}/{k}",
            "status": status,
            "created_at": NOW,
        }
        for k in range(count)
    ]


async def _ann(instance: Instance, *, payable: int, pending: int, october: int) -> Member:
    ann = await instance.create_donor("ann", budget=1_000, deposit=5_000)
    rows = _rows(ann.id, THIS_MONTH, payable, "payable", "t")
    rows += _rows(ann.id, THIS_MONTH, pending, "pending", "p")
    rows += _rows(ann.id, "2026-10", october, "payable", "o")
    if rows:
        async with instance.services.database.transaction() as session:
            await session.execute(insert(Flattr), rows)
    return ann


def _table(text: str, table_id: str) -> str:
    start = text.index(f'id="{table_id}"')
    return text[start : text.index("</table>", start)]


async def _logged_in(visitors: Visitors, instance: Instance) -> Visitor:
    browser = visitors(instance)
    await browser.log_in("ann")
    return browser


async def test_this_months_flattrs_come_fifty_to_a_page_with_the_true_count_and_share(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha", fee_bp=0)
    await _ann(alpha, payable=120, pending=60, october=30)
    browser = await _logged_in(visitors, alpha)

    first = await browser.get("/dashboard")
    assert first.status == 200
    assert re.search(r'id="flattr-count">You flattred <strong>120</strong> things', first.text)
    # The share is the budget over all 120, not over the 50 shown: 10.00 / 120 = 0.08.
    assert re.search(r'id="split-share">0\.08 EUR<', first.text)
    assert re.search(r'id="split-carry">0\.40 EUR<', first.text)
    table = _table(first.text, "flattrs")
    assert table.count("/undo") == PER_PAGE
    assert "page 1 of 3" in table
    assert "things/t000" in table
    assert "things/t049" in table
    assert "things/t050" not in table
    assert 'href="?page=2" rel="next"' in first.text
    assert 'rel="prev"' not in first.text[: first.text.index('id="pending"')]

    last = await browser.get("/dashboard", page="3")
    table = _table(last.text, "flattrs")
    assert table.count("/undo") == 20
    assert "things/t100" in table
    assert "things/t119" in table
    assert 'href="?page=2" rel="prev"' in last.text
    # Undoing from page 3 comes back to page 3.
    assert 'name="next" value="/dashboard?page=3"' in table

    # Out of range or not a number: the nearest page that exists.
    assert _table((await browser.get("/dashboard", page="999")).text, "flattrs") == table
    odd = await browser.get("/dashboard", page="-1x")
    assert _table(odd.text, "flattrs") == _table(first.text, "flattrs")

    # The pending list is paged on its own, 60 = 50 + 10.
    pending = _table(first.text, "pending")
    assert "(60)" in pending
    assert "page 1 of 2" in pending
    assert pending.count("/undo") == PER_PAGE
    second = _table((await browser.get("/dashboard", pending_page="2")).text, "pending")
    assert second.count("/undo") == 10
    assert "things/p059" in second

    # History: one row per month, counted in SQL (pending flattrs count in their month too).
    history = _table(first.text, "history")
    assert re.search(r"2026-11</th>\s*<td class=\"amount\">180<", history)
    assert re.search(r"2026-10</th>\s*<td class=\"amount\">30<", history)


async def test_undo_from_a_later_page_returns_there_and_the_count_drops(
    federation: Federation, visitors: Visitors
) -> None:
    alpha = await federation.start("alpha", fee_bp=0)
    await _ann(alpha, payable=60, pending=0, october=0)
    browser = await _logged_in(visitors, alpha)
    page = await browser.get("/dashboard", page="2")
    match = re.search(r'action="/flattrs/(\d+)/undo"', _table(page.text, "flattrs"))
    assert match is not None
    answer = await browser.post(
        f"/flattrs/{match.group(1)}/undo",
        {"csrf_token": page.csrf(), "next": "/dashboard?page=2"},
    )
    assert answer.status == 303
    assert answer.location == "/dashboard?page=2&msg=undone"
    after = await browser.get(answer.location)
    assert re.search(r'id="flattr-count">You flattred <strong>59</strong>', after.text)
    assert _table(after.text, "flattrs").count("/undo") == 9


async def test_the_dashboard_makes_as_many_queries_for_500_flattrs_as_for_5(
    federation: Federation, visitors: Visitors
) -> None:
    counts = []
    for size, name in ((5, "alpha"), (500, "beta")):
        instance = await federation.start(name, fee_bp=0)
        await _ann(instance, payable=size, pending=size // 5, october=size)
        browser = await _logged_in(visitors, instance)
        await browser.get("/dashboard")  # warm: sessions, policy row
        statements: list[str] = []

        def count(*args: Any, into: list[str] = statements) -> None:
            into.append(str(args[2]))

        engine = instance.services.database.engine.sync_engine
        event.listen(engine, "before_cursor_execute", count)
        try:
            page = await browser.get("/dashboard")
        finally:
            event.remove(engine, "before_cursor_execute", count)
        assert page.status == 200
        counts.append(len(statements))
    assert counts[0] == counts[1]
    assert counts[1] <= 12
