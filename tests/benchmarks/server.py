"""Servers the benchmarks load, each in a process of its own, listening on 127.0.0.1 only.

    python -m tests.benchmarks.server instance [--dashboard-route]   # a real flattrfed instance
    python -m tests.benchmarks.server bare-verify KEYS.json          # P1's baseline
    python -m tests.benchmarks.server sink                           # P3's remote inboxes

Each prints `READY <port>` once listening and, after SIGTERM, `STATS <json>` with its peak RSS.
The instance takes its settings from FLATTRFED_* like `flattrfed serve`, logs like it, and
serves the same application (create_app); `--dashboard-route` adds GET /bench/dashboard/NAME,
which exists only here: it answers with `member_dashboard()` as JSON (flattrfed has no web
dashboard page yet). With FLATTRFED_BENCH_PROFILE set, SIGUSR1 starts cProfile and SIGUSR2
stops it and writes the profile, so only the measured phase is profiled.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import dataclasses
import json
import os
import re
import signal
import socket
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.benchmarks.common import (
    LOOPBACK,
    PROFILE_VARIABLE,
    READY_PREFIX,
    STATS_PREFIX,
    peak_rss_mib,
    product_logging,
    write_profile,
)
from tests.harness import network_guard


async def _serve(app: web.Application, stats: Callable[[], dict[str, Any]], name: str) -> None:
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    site = web.SockSite(runner, sock, backlog=1024)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    folder = os.environ.get(PROFILE_VARIABLE)
    if folder:
        profile = cProfile.Profile()
        loop.add_signal_handler(signal.SIGUSR1, profile.enable)

        def dump() -> None:
            profile.disable()
            write_profile(profile, Path(folder), name)

        loop.add_signal_handler(signal.SIGUSR2, dump)
    print(f"{READY_PREFIX}{sock.getsockname()[1]}", flush=True)
    await stop.wait()
    await runner.cleanup()
    print(STATS_PREFIX + json.dumps({"peak_rss_mib": peak_rss_mib(), **stats()}), flush=True)


# --- a real instance -------------------------------------------------------------------------


async def bench_dashboard(request: web.Request) -> web.Response:
    """The figures of a member's dashboard as JSON: what the dashboard page shows."""
    from sqlalchemy import select

    from flattrfed.context import SERVICES
    from flattrfed.db.models import Member
    from flattrfed.flattring.dashboard import member_dashboard
    from flattrfed.flattring.policy import current_policy

    services = request.app[SERVICES]
    now = services.clock.now()
    async with services.database.sessions() as session:
        member = await session.scalar(
            select(Member).where(Member.username == request.match_info["name"])
        )
        if member is None:
            raise web.HTTPNotFound()
        policy = await current_policy(session, services.settings, now)
        board = await member_dashboard(session, member, policy, services.settings.currency, now)
    # Field by field, not dataclasses.asdict(): asdict deep-copies every value and would cost
    # more than the figures themselves.
    return web.json_response(board, dumps=lambda value: json.dumps(value, default=_fields))


def _fields(value: Any) -> dict[str, Any]:
    return {field.name: getattr(value, field.name) for field in dataclasses.fields(value)}


async def serve_instance(dashboard_route: bool) -> None:
    from flattrfed.app import create_app
    from flattrfed.config import load_settings

    product_logging()
    app = create_app(load_settings())
    if dashboard_route:
        app.router.add_get("/bench/dashboard/{name}", bench_dashboard)
    await _serve(app, dict, "instance")


# --- P1's baseline: a bare handler that only verifies the RSA signature ----------------------

_CAVAGE = re.compile(r'keyId="([^"]*)",algorithm="[^"]*",headers="([^"]*)",signature="([^"]*)"')


async def serve_bare_verify(keys_path: str) -> None:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    keys: dict[str, rsa.RSAPublicKey] = {}
    text = await asyncio.to_thread(Path(keys_path).read_text)
    for key_id, pem in json.loads(text).items():
        key = serialization.load_pem_public_key(pem.encode())
        assert isinstance(key, rsa.RSAPublicKey)
        keys[key_id] = key
    counts: Counter[int] = Counter()

    async def inbox(request: web.Request) -> web.Response:
        await request.read()
        match = _CAVAGE.fullmatch(request.headers.get("Signature", ""))
        if match is None:
            counts[400] += 1
            return web.Response(status=400)
        key_id, covered, signature = match.groups()
        lines = [
            f"(request-target): post {request.raw_path}"
            if name == "(request-target)"
            else f"{name}: {request.headers[name]}"
            for name in covered.split(" ")
        ]
        keys[key_id].verify(
            base64.b64decode(signature),
            "\n".join(lines).encode(),
            padding.PKCS1v15(),
            hashes.SHA256(),
        )
        counts[202] += 1
        return web.Response(status=202)

    app = web.Application(client_max_size=1_048_576)
    app.router.add_post("/{tail:.*}", inbox)
    await _serve(app, lambda: {"statuses": dict(counts)}, "bare-verify")


# --- P3's remote side: inboxes that accept everything, keeping connections alive ------------


async def serve_sink() -> None:
    requests: Counter[str] = Counter()
    connections: set[str] = set()

    async def inbox(request: web.Request) -> web.Response:
        await request.read()
        requests[request.headers.get("Host", "")] += 1
        transport = request.transport
        if transport is not None:
            connections.add(repr(transport.get_extra_info("peername")))
        return web.Response(status=202)

    app = web.Application(client_max_size=1_048_576)
    app.router.add_post("/{tail:.*}", inbox)
    await _serve(
        app,
        lambda: {
            "requests": sum(requests.values()),
            "hosts": len(requests),
            "connections": len(connections),
        },
        "sink",
    )


def main(argv: list[str]) -> int:
    network_guard.install()
    parser = argparse.ArgumentParser(prog="python -m tests.benchmarks.server")
    modes = parser.add_subparsers(dest="mode", required=True)
    instance = modes.add_parser("instance")
    instance.add_argument("--dashboard-route", action="store_true")
    bare = modes.add_parser("bare-verify")
    bare.add_argument("keys")
    modes.add_parser("sink")
    args = parser.parse_args(argv)
    if args.mode == "instance":
        asyncio.run(serve_instance(args.dashboard_route))
    elif args.mode == "bare-verify":
        asyncio.run(serve_bare_verify(args.keys))
    else:
        asyncio.run(serve_sink())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
