"""`make bench`: run the benchmarks, print a table and one JSON document.

    python -m tests.benchmarks [--scale small|full] [--only P1,P3] [--json PATH]
                               [--postgres URL] [--profile DIR] [--keep]

`--scale small` runs in seconds (CI's smoke test); `--scale full` is the real measurement
(about 20 minutes at most on 2 cores). Each benchmark runs in a fresh process. PostgreSQL
variants need --postgres or FLATTRFED_TEST_POSTGRES_URL, and are reported as skipped without.
Exit status: 0 when every benchmark produced its figures (met targets or not), 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.benchmarks.common import PROFILE_VARIABLE, BenchError, failed, run_child
from tests.harness import network_guard

# id -> (function, what, target, seconds allowed at small and at full scale)
BENCHMARKS: dict[str, tuple[str, str, str, dict[str, float]]] = {
    "P1": (
        "tests.benchmarks.p1_inbox:run",
        "signed Likes accepted by the inbox",
        ">= 0.4x",
        {"small": 90, "full": 600},
    ),
    "P2": (
        "tests.benchmarks.p2_worker:run",
        "stored inbound Likes processed by the worker",
        ">= 0.25x",
        {"small": 60, "full": 400},
    ),
    "P3": (
        "tests.benchmarks.p3_delivery:run",
        "signed deliveries to a loopback sink",
        ">= 0.6x",
        {"small": 60, "full": 300},
    ),
    "P4": (
        "tests.benchmarks.p4_close:run",
        "the monthly close",
        "<= 10x",
        {"small": 90, "full": 5400},
    ),
    "P5": (
        "tests.benchmarks.p5_statement:run",
        "verifying a received statement",
        "<= 10x",
        {"small": 60, "full": 400},
    ),
    "P6": (
        "tests.benchmarks.p6_dashboard:run",
        "the dashboard of a member with 1,000 flattrs",
        ">= 0.2x",
        {"small": 60, "full": 300},
    ),
    "P7": (
        "tests.benchmarks.p4_close:run",
        "growth of the close's cost per flattr",
        "<= 1.2x",
        {"small": 90, "full": 5400},
    ),
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tests.benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--scale", choices=("small", "full"), default="small")
    parser.add_argument("--only", default="", help="comma-separated ids, e.g. P1,P4")
    parser.add_argument("--json", dest="json_path", help="also write the JSON document here")
    parser.add_argument(
        "--postgres",
        default=os.environ.get("FLATTRFED_TEST_POSTGRES_URL") or None,
        help="PostgreSQL admin URL (default: $FLATTRFED_TEST_POSTGRES_URL)",
    )
    parser.add_argument("--profile", help="write cProfile profiles of the measured parts here")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, data)")
    args = parser.parse_args(argv)
    wanted = [part.strip().upper() for part in args.only.split(",") if part.strip()]
    unknown = [name for name in wanted if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
    args.wanted = wanted or list(BENCHMARKS)
    return args


def run_benchmarks(args: argparse.Namespace, workdir: Path) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    done: set[str] = set()
    for name in args.wanted:
        if name in done:
            continue
        function, what, target, seconds = BENCHMARKS[name]
        params: dict[str, Any] = {
            "scale": args.scale,
            "workdir": str(workdir / name),
            "postgres_url": args.postgres,
        }
        covers = [name]
        if function.endswith("p4_close:run"):
            covers = [n for n in ("P4", "P7") if n in args.wanted]
            params["want"] = covers
        done.update(covers)
        started = time.perf_counter()
        load_before = os.getloadavg()[0]
        print(f"-- {'/'.join(covers)} ({args.scale}) ...", file=sys.stderr, flush=True)
        env = {PROFILE_VARIABLE: str(Path(args.profile).resolve())} if args.profile else {}
        try:
            result = run_child(
                function,
                params,
                timeout=seconds[args.scale],
                log_dir=workdir / "logs",
                env=env,
            )
            produced = result["rows"]
        except (BenchError, KeyError) as error:
            produced = [failed(n, "-", what, target, str(error)).as_dict() for n in covers]
        elapsed = time.perf_counter() - started
        load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
        for row in produced:
            row.setdefault("extra", {}).update(wall_s=round(elapsed, 1), load_average_1m=load)
        print(f"   {elapsed:.1f} s", file=sys.stderr, flush=True)
        rows.extend(produced)
    return rows


def _number(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "NO"
    number = float(value)
    if number == 0:
        return "0"
    if abs(number) >= 100:
        return f"{number:,.0f}"
    if abs(number) >= 1:
        return f"{number:.2f}"
    return f"{number:.3g}"


def table(rows: list[dict[str, Any]]) -> str:
    header = [
        "id",
        "variant",
        "ours",
        "baseline",
        "unit",
        "ratio",
        "target",
        "met",
        "peak MiB",
        "base MiB",
        "status",
    ]
    lines = [header]
    for row in rows:
        lines.append(
            [
                row["id"],
                row["variant"],
                _number(row["ours"]),
                _number(row["baseline"]),
                row["unit"],
                _number(row["ratio"]),
                row["target"],
                "-" if row["met"] is None else ("yes" if row["met"] else "NO"),
                _number(row["peak_rss_mib"]),
                _number(row.get("baseline_peak_rss_mib")),
                row["status"],
            ]
        )
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(header))]
    out = []
    for index, line in enumerate(lines):
        out.append(
            "  ".join(str(cell).ljust(width) for cell, width in zip(line, widths, strict=True))
        )
        if index == 0:
            out.append("  ".join("-" * width for width in widths))
    out.append("")
    for row in rows:
        for note in row.get("notes", []):
            out.append(f"{row['id']} {row['variant']}: {note}")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    network_guard.install()
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="flattrfed-bench-"))
    started = datetime.now(UTC)
    clock = time.perf_counter()
    try:
        rows = run_benchmarks(args, workdir)
    finally:
        if args.keep:
            print(f"work folder kept: {workdir}", file=sys.stderr)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    document = {
        "scale": args.scale,
        "started": started.isoformat(timespec="seconds"),
        "seconds": round(time.perf_counter() - clock, 1),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "sqlite": sqlite3.sqlite_version,
            "load_average_at_end": list(os.getloadavg()),
        },
        "postgres": bool(args.postgres),
        "rows": rows,
    }
    print(table(rows))
    print()
    print(json.dumps(document, indent=2))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(document, indent=2) + "\n")
    return 1 if any(row["status"] == "failed" for row in rows) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
