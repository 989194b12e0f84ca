"""CI's smoke test of the benchmarks: `--scale small` runs every one of them and each produces
its row. No timing is asserted: a loaded CI machine says nothing about performance."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.benchmarks.__main__ import BENCHMARKS
from tests.benchmarks.common import REPO, child_env


def test_every_benchmark_produces_its_row_at_small_scale(tmp_path: Path) -> None:
    report = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, "-m", "tests.benchmarks", "--scale", "small", "--json", str(report)],
        cwd=REPO,
        env=child_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert report.exists(), completed.stdout[-3000:] + completed.stderr[-3000:]
    document = json.loads(report.read_text())
    for name in BENCHMARKS:
        rows = [row for row in document["rows"] if row["id"] == name]
        assert rows, f"{name} produced no row"
        for row in rows:
            if row["variant"] == "postgresql" and not document["postgres"]:
                assert row["status"] == "skipped", row
                continue
            assert row["status"] == "ok", f"{name} {row['variant']}: {row['notes']}"
            assert row["ours"] is not None, row
            assert row["peak_rss_mib"] is not None, row
            if row["id"] != "P7":
                assert row["baseline"] is not None, row
    assert {row["variant"] for row in document["rows"]} >= {"sqlite"}
    assert completed.returncode == 0, completed.stderr[-3000:]
