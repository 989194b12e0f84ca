"""`flattrfed demo --json`: three instances settle a month, and every figure adds up."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import defaultdict
from typing import Any

import pytest

from flattrfed.demo import run_demo


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    import asyncio

    lines: list[str] = []
    return asyncio.run(run_demo(lines.append))


def test_the_demo_passes_flattrfed_check_on_every_instance(report: dict[str, Any]) -> None:
    assert [row["instance"] for row in report["checks"]] == ["alpha", "beta", "gamma"]
    assert all(row["ok"] and row["problems"] == [] for row in report["checks"])


def test_every_donor_spends_exactly_their_budget_split(report: dict[str, Any]) -> None:
    fees = {row["name"]: row["fee_bp"] for row in report["instances"]}
    assert report["donors"]
    for row in report["donors"]:
        n = len(row["things"])
        assert row["fee_minor"] == row["budget_minor"] * fees[row["instance"]] // 10_000
        assert row["fee_minor"] + n * row["share_minor"] + row["carry_minor"] == row["budget_minor"]
        assert 0 <= row["carry_minor"] < n


def test_what_donors_gave_is_what_creators_earned(report: dict[str, Any]) -> None:
    given = sum(len(row["things"]) * row["share_minor"] for row in report["donors"])
    earned = sum(row["earned_minor"] for row in report["creators"])
    assert given == earned > 0


def test_pairs_net_the_two_directions_and_payments_match_them(report: dict[str, Any]) -> None:
    assert len(report["pairs"]) == 3
    owed: dict[tuple[str, str], int] = defaultdict(int)
    things = {row["id"]: row["instance"] for row in report["things"]}
    for donor in report["donors"]:
        for thing in donor["things"]:
            if things.get(thing) and things[thing] != donor["instance"]:
                owed[(donor["instance"], things[thing])] += donor["share_minor"]
    for pair in report["pairs"]:
        a, b = pair["a"], pair["b"]
        assert pair["gross_a_to_b_minor"] == owed[(a, b)]
        assert pair["gross_b_to_a_minor"] == owed[(b, a)]
        difference = pair["gross_a_to_b_minor"] - pair["gross_b_to_a_minor"]
        assert pair["net_minor"] == abs(difference)
        if difference:
            assert (pair["payer"], pair["payee"]) == ((a, b) if difference > 0 else (b, a))
            assert pair["state"] == "confirmed"


def test_the_report_names_instances_things_and_amounts_as_integers(
    report: dict[str, Any],
) -> None:
    for key in ("instances", "things", "donors", "pairs", "creators", "checks"):
        assert report[key], key
    assert {row["currency"] for row in report["instances"]} == {"EUR"}
    for row in report["donors"]:
        for key in ("budget_minor", "fee_minor", "share_minor", "carry_minor"):
            assert isinstance(row[key], int)


def test_make_demo_command_prints_the_report(tmp_path: Any) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "flattrfed", "demo", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    document = json.loads(result.stdout)
    assert all(row["ok"] for row in document["checks"])
    assert "closes November" in result.stderr  # progress is shown while it runs
