"""Writes the user guide's screenshots: runs the browser journey, keeps the pages the guide shows.

Usage: `python -m tests.browser.guide_screenshots [DIR]` (default docs/screenshots), or
`make screenshots`. The journey runs in Chromium against real loopback instances, so the
pictures show what the pages look like now; the addresses in them are the test's
(`alpha.test:PORT`) and the date is the test clock's (15 November 2026).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tests.browser.test_journey import GUIDE_PAGES

ROOT = Path(__file__).resolve().parents[2]
JOURNEY = "tests/browser/test_journey.py"


def write_screenshots(target: Path) -> list[Path]:
    """Run the journey with its screenshots kept, then copy the guide's pages into `target`."""
    with tempfile.TemporaryDirectory(prefix="flattrfed-screens-") as temporary:
        taken = Path(temporary)
        environ = {**os.environ, "FLATTRFED_SCREENSHOTS": str(taken)}
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", JOURNEY]
        finished = subprocess.run(command, cwd=ROOT, env=environ, check=False)
        if finished.returncode != 0:
            raise SystemExit(f"the journey failed (exit {finished.returncode}); nothing written")
        missing = [name for name in GUIDE_PAGES.values() if not (taken / f"{name}.png").exists()]
        if missing:
            raise SystemExit(f"the journey took no screenshot named {', '.join(missing)}")
        target.mkdir(parents=True, exist_ok=True)
        # Pictures the guide no longer shows go, so the directory holds exactly the guide's.
        for old in target.glob("*.png"):
            if old.stem not in GUIDE_PAGES:
                old.unlink()
        written = []
        for key, name in GUIDE_PAGES.items():
            destination = target / f"{key}.png"
            shutil.copyfile(taken / f"{name}.png", destination)
            written.append(destination)
    return written


def main(argv: list[str]) -> int:
    target = Path(argv[0]) if argv else ROOT / "docs" / "screenshots"
    written = write_screenshots(target.resolve())
    total = sum(path.stat().st_size for path in written)
    for path in written:
        print(f"{path.stat().st_size:>9,} bytes  {path}")
    print(f"{total:>9,} bytes in {len(written)} screenshots")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
