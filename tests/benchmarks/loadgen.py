"""The load generator: runs in its own process and sends to 127.0.0.1 only, bounded in count
and in time (it stops at whichever limit comes first)."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from tests.benchmarks.common import LOOPBACK


def _check_loopback(base_url: str) -> None:
    if not base_url.startswith(f"http://{LOOPBACK}:"):
        raise ValueError(f"load goes to http://{LOOPBACK}:PORT only, not {base_url}")


async def _drive(
    send: Callable[[int], Awaitable[int]], first: int, count: int, concurrency: int, limit: float
) -> dict[str, Any]:
    """Send requests first..first+count-1 from `concurrency` tasks; stop early at `limit` s."""
    statuses: Counter[str] = Counter()
    latencies: list[float] = []
    position = first
    end = first + count
    started = time.perf_counter()
    deadline = started + limit

    async def loop() -> None:
        nonlocal position
        while position < end and time.perf_counter() < deadline:
            index = position
            position += 1
            sent = time.perf_counter()
            try:
                status = str(await send(index))
            except (aiohttp.ClientError, OSError) as error:
                status = type(error).__name__
            latencies.append(time.perf_counter() - sent)
            statuses[status] += 1

    await asyncio.gather(*(loop() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    done = len(latencies)
    return {
        "sent": done,
        "elapsed_s": elapsed,
        "rate": done / elapsed if elapsed > 0 else 0.0,
        "statuses": dict(statuses),
        "p50_ms": latencies[done // 2] * 1000 if done else None,
        "p99_ms": latencies[min(done - 1, int(done * 0.99))] * 1000 if done else None,
        "stopped_by_time": done < count,
    }


def _session(concurrency: int) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))


async def post_requests(
    base_url: str,
    requests_file: str,
    warmup: int,
    count: int,
    concurrency: int,
    time_limit: float,
) -> dict[str, Any]:
    """POST prepared (already signed) requests: `warmup` untimed ones, then `count` timed."""
    _check_loopback(base_url)
    text = await asyncio.to_thread(Path(requests_file).read_text)
    prepared = [json.loads(line) for line in text.splitlines()]
    if warmup + count > len(prepared):
        raise ValueError(f"{requests_file} holds {len(prepared)} requests, not {warmup + count}")
    bodies = [item["body"].encode() for item in prepared]
    async with _session(concurrency) as session:

        async def send(index: int) -> int:
            item = prepared[index]
            async with session.post(
                base_url + item["path"], data=bodies[index], headers=item["headers"]
            ) as response:
                await response.read()
                return response.status

        warm = await _drive(send, 0, warmup, min(concurrency, 8), time_limit)
        measured = await _drive(send, warmup, count, concurrency, time_limit)
    measured["warmup_statuses"] = warm["statuses"]
    return measured


async def get_path(
    base_url: str,
    host: str,
    path: str,
    warmup: int,
    count: int,
    concurrency: int,
    time_limit: float,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """GET one path repeatedly: `warmup` untimed requests, then `count` timed."""
    _check_loopback(base_url)
    headers = {"Host": host, **(headers or {})}
    size = 0
    async with _session(concurrency) as session:

        async def send(_index: int) -> int:
            nonlocal size
            async with session.get(base_url + path, headers=headers) as response:
                size = len(await response.read())
                return response.status

        warm = await _drive(send, 0, warmup, min(concurrency, 8), time_limit)
        measured = await _drive(send, 0, count, concurrency, time_limit)
    measured["warmup_statuses"] = warm["statuses"]
    measured["response_bytes"] = size
    return measured
