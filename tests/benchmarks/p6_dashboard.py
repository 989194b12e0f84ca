"""P6: the dashboard of a member with 1,000 flattrs this month, against the health endpoint.

Two figures, both from a real instance (create_app) in its own process on SQLite, both against
the same instance's real GET /health (one `SELECT 1`), with the same load from a
load-generator process over 127.0.0.1:

- `page`: the real dashboard page, GET /dashboard, logged in as the member (the benchmark logs
  in through GET and POST /login like a browser and sends the session cookie);
- `figures`: `flattrfed.flattring.dashboard.member_dashboard()` alone, answered as JSON by
  GET /bench/dashboard/NAME, a route that exists only in the benchmark's server process.

The member has 1,000 payable flattrs this month and 1,000 in each of the five months before;
200 other donors have 100 each. Both show the first page of this month's flattrs (PER_PAGE
lines) and the count of all 1,000; each answer is checked for both.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import signal
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, update

from flattrfed.db.models import Flattr, Member
from flattrfed.db.session import Database
from flattrfed.flattring.dashboard import PER_PAGE
from flattrfed.flattring.members import create_member
from flattrfed.flattring.policy import current_policy
from flattrfed.periods import Period
from flattrfed.settlement import ledger
from tests.benchmarks.common import (
    BENCH_HOST,
    LOOPBACK,
    BenchError,
    Databases,
    Row,
    ServerProcess,
    at_least,
    failed,
    instance_environ,
    profiling,
    ratio_of,
    run_child,
)

TARGET = 0.2
WHAT = "the dashboard of a member with 1,000 flattrs this month"
SCALES: dict[str, dict[str, Any]] = {
    "small": {"dashboards": 16, "healths": 200, "concurrency": 16, "limit": 20.0},
    "full": {"dashboards": 4_000, "healths": 30_000, "concurrency": 64, "limit": 20.0},
}
MEMBER = "donor"
PASSWORD = "correct horse battery"
THIS_MONTH = 1_000
EARLIER_MONTHS = 5
OTHER_DONORS = 200
OTHER_FLATTRS = 100
VARIANTS = ("page", "figures")


def _flattrs(donor_id: int, period: str, count: int, now: datetime) -> list[dict[str, Any]]:
    return [
        {
            "donor_id": donor_id,
            "period": period,
            "target_uri": f"http://peer{k % 50}.test/things/t{k}",
            "payee_uri": f"http://peer{k % 50}.test/things/t{k}",
            "payee_host": f"peer{k % 50}.test",
            "thing_id": None,
            "like_uri": f"http://bench.test/users/m{donor_id}/likes/{period}/{k}",
            "status": "payable",
            "created_at": now,
            "undone_at": None,
            "counts_in_period": None,
        }
        for k in range(count)
    ]


async def _seed(url: str, environ: dict[str, str]) -> None:
    from flattrfed.config import load_settings

    settings = load_settings(environ)
    database = Database(url)
    now = datetime.now(UTC)
    period = Period.of(now)
    try:
        async with database.transaction() as session:
            member = await create_member(
                session,
                username=MEMBER,
                password="correct horse battery",
                is_admin=False,
                now=now,
            )
            await session.execute(
                update(Member).where(Member.id == member.id).values(monthly_budget_minor=1_000)
            )
            await ledger.post(
                session,
                txid=ledger.deposit_txid("bench-1"),
                kind="deposit",
                postings=[(ledger.CASH_BANK, 5_000), (ledger.wallet(member.id), -5_000)],
                currency=settings.currency,
                memo="",
                now=now,
            )
            await current_policy(session, settings, now)
            member_id = member.id
        rows = _flattrs(member_id, str(period), THIS_MONTH, now)
        earlier = period
        for _ in range(EARLIER_MONTHS):
            earlier = earlier.previous()
            rows += _flattrs(member_id, str(earlier), THIS_MONTH, now)
        others = [
            {
                "username": f"other{index}",
                "display_name": "",
                "bio": "",
                "password_hash": "-",
                "is_admin": False,
                "flattrs_public": True,
                "monthly_budget_minor": 500,
                "created_at": now,
            }
            for index in range(OTHER_DONORS)
        ]
        async with database.transaction() as session:
            await session.execute(insert(Member), others)
            first = member_id + 1
            for donor_id in range(first, first + OTHER_DONORS):
                rows += _flattrs(donor_id, str(period), OTHER_FLATTRS, now)
            await session.execute(insert(Flattr), rows)
    finally:
        await database.dispose()


def _load(
    server: ServerProcess,
    path: str,
    count: int,
    config: dict[str, Any],
    logs: Path,
    cookie: str | None = None,
) -> dict[str, Any]:
    return run_child(
        "tests.benchmarks.loadgen:get_path",
        {
            "base_url": server.url,
            "host": BENCH_HOST,
            "path": path,
            "warmup": 10,
            "count": count,
            "concurrency": config["concurrency"],
            "time_limit": config["limit"],
            "headers": {"Cookie": cookie} if cookie else {},
        },
        timeout=config["limit"] * 2 + 60,
        log_dir=logs,
    )


def _session_cookie(response: http.client.HTTPResponse) -> str:
    for header in response.headers.get_all("Set-Cookie") or []:
        if header.startswith("flattrfed_session="):
            return header.split(";", 1)[0]
    raise BenchError(f"no session cookie in the answer to {response.status}")


def _log_in(server: ServerProcess) -> tuple[str, int]:
    """Log in as the member like a browser; return the session cookie and how many flattr
    lines the dashboard page shows (-1 when it does not say it counts THIS_MONTH flattrs)."""
    connection = http.client.HTTPConnection(LOOPBACK, server.port, timeout=30)
    try:
        connection.request("GET", "/login", headers={"Host": BENCH_HOST})
        response = connection.getresponse()
        page = response.read().decode()
        anonymous = _session_cookie(response)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page)
        if token is None:
            raise BenchError("the login page has no csrf_token field")
        form = urllib.parse.urlencode(
            {
                "csrf_token": token.group(1),
                "next": "/dashboard",
                "username": MEMBER,
                "password": PASSWORD,
            }
        )
        connection.request(
            "POST",
            "/login",
            body=form,
            headers={
                "Host": BENCH_HOST,
                "Cookie": anonymous,
                "Content-Type": "application/x-www-form-urlencoded",
            },
        )
        response = connection.getresponse()
        response.read()
        if response.status != 303:
            raise BenchError(f"logging in answered {response.status}, not 303")
        cookie = _session_cookie(response)
        connection.request("GET", "/dashboard", headers={"Host": BENCH_HOST, "Cookie": cookie})
        response = connection.getresponse()
        page = response.read().decode()
        if response.status != 200:
            raise BenchError(f"GET /dashboard answered {response.status}")
    finally:
        connection.close()
    counted = re.search(r'id="flattr-count">You flattred <strong>([0-9,]+)</strong>', page)
    if counted is None or int(counted.group(1).replace(",", "")) != THIS_MONTH:
        return cookie, -1
    return cookie, page.count("/undo")


def _figure_lines(server: ServerProcess) -> int:
    connection = http.client.HTTPConnection(LOOPBACK, server.port, timeout=30)
    try:
        connection.request("GET", f"/bench/dashboard/{MEMBER}", headers={"Host": BENCH_HOST})
        response = connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise BenchError(f"GET /bench/dashboard answered {response.status}")
        board = json.loads(body)
    finally:
        connection.close()
    if board["flattr_count"] != THIS_MONTH:
        return -1
    return len(board["flattrs"])


def _row(
    variant: str,
    result: dict[str, Any],
    health: dict[str, Any],
    lines: int,
    config: dict[str, Any],
    peak: float | None,
    note: str,
    scale: str,
) -> Row:
    ok = (
        lines == min(THIS_MONTH, PER_PAGE)
        and result["statuses"] == {"200": result["sent"]}
        and health["statuses"] == {"200": health["sent"]}
    )
    ratio = ratio_of(result["rate"], health["rate"])
    notes = [
        f"{note}; baseline: the real GET /health; SQLite; {config['concurrency']} connections, "
        f"{result['response_bytes']:,}-byte answers"
    ]
    if not ok:
        notes.append(
            f"WRONG ANSWERS: {lines} flattr lines shown (-1: not counted as {THIS_MONTH}); "
            f"statuses {result['statuses']} and "
            f"{health['statuses']}"
        )
    if result["stopped_by_time"]:
        notes.append(f"{result['sent']} dashboards in the {config['limit']:.0f} s limit")
    return Row(
        id="P6",
        variant=variant,
        what=WHAT,
        unit="req/s",
        ours=result["rate"],
        baseline=health["rate"],
        ratio=ratio,
        target=f">= {TARGET}x",
        met=at_least(ratio, TARGET) if ok else False,
        peak_rss_mib=peak,
        scale=scale,
        notes=notes,
        extra={
            "dashboard_p50_ms": result["p50_ms"],
            "health_p50_ms": health["p50_ms"],
            "dashboards": result["sent"],
            "healths": health["sent"],
        },
    )


def run(scale: str, workdir: str, postgres_url: str | None) -> dict[str, Any]:
    config = SCALES[scale]
    work = Path(workdir)
    logs = work / "logs"
    target = f">= {TARGET}x"
    databases = Databases(work / "sqlite", "sqlite", None)
    results: dict[str, tuple[dict[str, Any], int]] = {}
    healths: list[float] = []
    try:
        url = asyncio.run(databases.new("p6"))
        environ = instance_environ(work / "data", url)
        asyncio.run(_seed(url, environ))
        server = ServerProcess(
            ["instance", "--dashboard-route"], env=environ, log_dir=logs, name="p6-instance"
        )
        with server:
            health = _load(server, "/health", config["healths"], config, logs)
            if profiling():
                server.signal(signal.SIGUSR1)
            cookie, page_lines = _log_in(server)
            results["page"] = (
                _load(server, "/dashboard", config["dashboards"], config, logs, cookie),
                page_lines,
            )
            results["figures"] = (
                _load(server, f"/bench/dashboard/{MEMBER}", config["dashboards"], config, logs),
                _figure_lines(server),
            )
            if profiling():
                server.signal(signal.SIGUSR2)
            again = _load(server, "/health", config["healths"], config, logs)
            healths = [health["rate"], again["rate"]]
            health = max(health, again, key=lambda result: float(result["rate"]))
            stats = server.stop()
    except BenchError as error:
        return {"rows": [failed("P6", v, WHAT, target, str(error)).as_dict() for v in VARIANTS]}
    notes = {
        "page": "ours: the real GET /dashboard page, logged in",
        "figures": "ours: member_dashboard() as JSON behind GET /bench/dashboard/NAME, a route "
        "added only in the benchmark's server process",
    }
    notes = {
        variant: f"{note}; health best of {', '.join(f'{r:,.0f}' for r in healths)} req/s "
        "(before and after the dashboards)"
        for variant, note in notes.items()
    }
    rows = [
        _row(
            v,
            results[v][0],
            health,
            results[v][1],
            config,
            stats.get("peak_rss_mib"),
            notes[v],
            scale,
        )
        for v in VARIANTS
    ]
    return {"rows": [row.as_dict() for row in rows]}
