"""`flattrfed check` says ok and exits 0 on a sound ledger, names what is broken and exits 1."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text

from flattrfed.cli import main
from flattrfed.config import CONFIG_FILE_VARIABLE, SPECS
from flattrfed.db.models import Member
from flattrfed.db.session import Database
from flattrfed.settlement.ledger import CASH_BANK, post, wallet

NOW = datetime(2026, 11, 15, 12, 0, tzinfo=UTC)


@pytest.fixture
def environment(
    database: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """FLATTRFED_* settings pointing at the test database; the root logger restored after."""
    for name in [spec.env for spec in SPECS] + [CONFIG_FILE_VARIABLE]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FLATTRFED_DATABASE_URL", database.url)
    monkeypatch.setenv("FLATTRFED_DATA_DIR", str(tmp_path / "var"))
    monkeypatch.setenv("FLATTRFED_BASE_URL", "http://127.0.0.1:8080")
    monkeypatch.setenv("FLATTRFED_ALLOW_HTTP", "1")
    monkeypatch.setenv("FLATTRFED_CURRENCY", "EUR")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


async def run_check(*arguments: str) -> int:
    # main() runs its own event loop, so it runs in a thread of its own.
    return await asyncio.to_thread(main, ["check", *arguments])


async def deposit(database: Database) -> int:
    async with database.transaction() as session:
        member = Member(username="ann", password_hash="x", created_at=NOW)
        session.add(member)
        await session.flush()
        await post(
            session,
            txid="topup:1",
            kind="topup",
            postings=[(CASH_BANK, 1000), (wallet(member.id), -1000)],
            currency="EUR",
            memo="",
            now=NOW,
        )
        return member.id


@pytest.mark.usefixtures("environment")
async def test_check_says_ok_and_exits_0_on_a_clean_database(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await run_check("--json") == 0
    assert json.loads(capsys.readouterr().out) == {"ok": True, "problems": []}
    await deposit(database)
    assert await run_check() == 0
    assert capsys.readouterr().out == "ok\n"


@pytest.mark.usefixtures("environment")
async def test_check_names_the_broken_invariant_and_exits_1(
    database: Database, capsys: pytest.CaptureFixture[str]
) -> None:
    member = await deposit(database)
    async with database.transaction() as session:
        await session.execute(
            text("UPDATE ledger_accounts SET balance_minor = balance_minor + 7 WHERE code = :c"),
            {"c": wallet(member)},
        )

    assert await run_check("--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False
    cache = [p for p in report["problems"] if p["invariant"] == "2-balance-cache"]
    assert cache == [
        {
            "invariant": "2-balance-cache",
            "detail": (
                f"account {wallet(member)} caches balance -993, but its postings sum to -1000"
            ),
            "rows": [f"account={wallet(member)}"],
        }
    ]

    assert await run_check() == 1
    lines = capsys.readouterr().out.splitlines()
    assert any(
        line.startswith("2-balance-cache: ") and f"[account={wallet(member)}]" in line
        for line in lines
    )
    assert lines[-1] == f"{len(report['problems'])} problem(s) found"


@pytest.mark.usefixtures("environment")
async def test_check_refuses_a_database_that_is_not_migrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FLATTRFED_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}")
    assert await run_check() == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "run `flattrfed db upgrade`" in captured.err
