"""Runs one benchmark function in this fresh process and prints its result as one JSON line.

    python -m tests.benchmarks.child MODULE:FUNCTION '{"arg": ...}'

The function may be sync or async and returns a JSON-able dict; this process's peak RSS is
added as `_peak_rss_mib`, so memory figures belong to exactly one piece of work.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import json
import sys
from typing import Any

from tests.benchmarks.common import RESULT_PREFIX, peak_rss_mib
from tests.harness import network_guard


def main(argv: list[str]) -> int:
    network_guard.install()  # this process may connect to loopback only
    target, raw = argv[1], argv[2]
    module_name, function_name = target.split(":")
    function = getattr(importlib.import_module(module_name), function_name)
    outcome = function(**json.loads(raw))
    result: dict[str, Any] = asyncio.run(outcome) if inspect.iscoroutine(outcome) else outcome
    result["_peak_rss_mib"] = peak_rss_mib()
    print(RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
