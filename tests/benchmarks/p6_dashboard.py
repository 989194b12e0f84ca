"""P6: the dashboard of a member with 1,000 flattrs this month, against the health endpoint.

flattrfed has no web dashboard page yet, so the instance under test (a real create_app
instance in its own process) gets one extra route, added only in the benchmark's server
process: GET /bench/dashboard/NAME loads the member, the policy and
`flattrfed.flattring.dashboard.member_dashboard()` and answers its figures as JSON (every
flattr line included), which is what a dashboard page would have to compute. The baseline is
the same instance's real GET /health (one `SELECT 1`). The member has 1,000 payable flattrs
this month and 1,000 in each of the five months before; 200 other donors have 100 each. Both
endpoints get the same load from a load-generator process over 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import json
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import insert, update

from flattrfed.db.models import Flattr, Member
from flattrfed.db.session import Database
from flattrfed.flattring.members import create_member
from flattrfed.flattring.policy import current_policy
from flattrfed.periods import Period
from flattrfed.settlement import ledger
from tests.benchmarks.common import (
    BENCH_HOST,
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
    "small": {"dashboards": 60, "healths": 300, "concurrency": 16, "limit": 20.0},
    "full": {"dashboards": 4_000, "healths": 30_000, "concurrency": 64, "limit": 30.0},
}
MEMBER = "donor"
THIS_MONTH = 1_000
EARLIER_MONTHS = 5
OTHER_DONORS = 200
OTHER_FLATTRS = 100


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
    server: ServerProcess, path: str, count: int, config: dict[str, Any], logs: Path
) -> dict[str, Any]:
    return run_child(
        "tests.benchmarks.loadgen:get_path",
        {
            "base_url": server.url,
            "host": BENCH_HOST,
            "path": path,
            "warmup": 20,
            "count": count,
            "concurrency": config["concurrency"],
            "time_limit": config["limit"],
        },
        timeout=config["limit"] * 2 + 60,
        log_dir=logs,
    )


def _flattr_lines(server: ServerProcess) -> int:
    request = urllib.request.Request(  # noqa: S310 (loopback, built here)
        f"{server.url}/bench/dashboard/{MEMBER}", headers={"Host": BENCH_HOST}
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        board = json.loads(response.read())
    return len(board["flattrs"])


def run(scale: str, workdir: str, postgres_url: str | None) -> dict[str, Any]:
    import signal

    config = SCALES[scale]
    work = Path(workdir)
    logs = work / "logs"
    target = f">= {TARGET}x"
    databases = Databases(work / "sqlite", "sqlite", None)
    try:
        url = asyncio.run(databases.new("p6"))
        environ = instance_environ(work / "data", url)
        asyncio.run(_seed(url, environ))
        server = ServerProcess(
            ["instance", "--dashboard-route"], env=environ, log_dir=logs, name="p6-instance"
        )
        with server:
            lines = _flattr_lines(server)
            health = _load(server, "/health", config["healths"], config, logs)
            if profiling():
                server.signal(signal.SIGUSR1)
            dashboard = _load(
                server, f"/bench/dashboard/{MEMBER}", config["dashboards"], config, logs
            )
            if profiling():
                server.signal(signal.SIGUSR2)
            stats = server.stop()
    except BenchError as error:
        return {"rows": [failed("P6", "sqlite", WHAT, target, str(error)).as_dict()]}
    ok = (
        lines == THIS_MONTH
        and dashboard["statuses"] == {"200": dashboard["sent"]}
        and health["statuses"] == {"200": health["sent"]}
    )
    ratio = ratio_of(dashboard["rate"], health["rate"])
    notes = [
        "ours: member_dashboard() behind GET /bench/dashboard/NAME, a route added only in the "
        "benchmark's server process (no dashboard page exists); baseline: the real GET /health; "
        f"{config['concurrency']} connections, {dashboard['response_bytes']:,}-byte answers"
    ]
    if not ok:
        notes.append(
            f"WRONG ANSWERS: {lines} flattr lines; statuses {dashboard['statuses']} and "
            f"{health['statuses']}"
        )
    for result, name in ((dashboard, "dashboard"), (health, "health")):
        if result["stopped_by_time"]:
            notes.append(f"{name}: {result['sent']} requests in the {config['limit']:.0f} s limit")
    row = Row(
        id="P6",
        variant="sqlite",
        what=WHAT,
        unit="req/s",
        ours=dashboard["rate"],
        baseline=health["rate"],
        ratio=ratio,
        target=target,
        met=at_least(ratio, TARGET) if ok else False,
        peak_rss_mib=stats.get("peak_rss_mib"),
        baseline_peak_rss_mib=None,
        scale=scale,
        notes=notes,
        extra={
            "dashboard_p50_ms": dashboard["p50_ms"],
            "health_p50_ms": health["p50_ms"],
            "dashboards": dashboard["sent"],
            "healths": health["sent"],
        },
    )
    return {"rows": [row.as_dict()]}
