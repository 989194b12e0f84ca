"""`flattrfed demo`: three instances on loopback live through a month of flattrs and settle it."""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web
from sqlalchemy import select

from flattrfed.activitypub import signatures
from flattrfed.activitypub.documents import ACTIVITY_JSON, AS_CONTEXT, SECURITY_CONTEXT
from flattrfed.app import create_app
from flattrfed.clock import ManualClock
from flattrfed.config import load_settings
from flattrfed.context import SERVICES, Services
from flattrfed.db import migrate
from flattrfed.db.models import DonorClose, Flattr, Member, Settlement, Statement
from flattrfed.flattring.flattrs import flattr, unflattr
from flattrfed.flattring.members import create_member
from flattrfed.flattring.peers import add_peer, discover_peer
from flattrfed.flattring.resolve import resolve_target
from flattrfed.flattring.things import create_thing
from flattrfed.flattring.wallets import record_deposit
from flattrfed.money import Money
from flattrfed.settlement import ledger
from flattrfed.settlement.checks import check_ledger

DEMO_PASSWORD = "flattr the fediverse"  # noqa: S105 (the demo's published login)
MONTH_START = datetime(2026, 11, 2, 9, tzinfo=UTC)
AFTER_CLOSE = datetime(2026, 12, 2, 9, tzinfo=UTC)

# Who lives where, what they set, and what they flattr: (instance, member, budget, deposit).
DONORS = [
    ("alpha", "ann", 1000, 2500),
    ("alpha", "amir", 500, 300),
    ("beta", "bea", 2000, 5000),
    ("gamma", "gus", 300, 1000),
]
THINGS = [
    ("alpha", "carol", "zine", "Carol's zine"),
    ("beta", "dora", "podcast", "Dora's podcast"),
    ("beta", "dora", "photos", "Dora's photos"),
    ("gamma", "emil", "code", "Emil's code"),
]
CLICKS = [
    ("ann", "podcast"),
    ("ann", "photos"),
    ("ann", "code"),
    ("amir", "zine"),
    ("amir", "podcast"),
    ("bea", "zine"),
    ("bea", "code"),
    ("gus", "podcast"),
    ("gus", "zine"),
]
UNDONE = ("ann", "photos")  # flattred, then undone while the month is open


@dataclass
class DemoInstance:
    name: str
    services: Services
    runner: web.AppRunner
    base_url: str

    @property
    def host(self) -> str:
        return self.base_url.split("://", 1)[1]


@dataclass
class Demo:
    workdir: Path
    clock: ManualClock
    say: Callable[[str], None]
    instances: dict[str, DemoInstance] = field(default_factory=dict)
    plain: PlainAuthor | None = None
    members: dict[str, tuple[str, int]] = field(default_factory=dict)  # name -> (instance, id)

    async def start(self, name: str, fee_bp: int) -> DemoInstance:
        sock = _bound_socket()
        port = sock.getsockname()[1]
        base_url = f"http://127.0.0.1:{port}"
        data_dir = self.workdir / name
        data_dir.mkdir()
        database_url = f"sqlite+aiosqlite:///{data_dir / 'flattrfed.sqlite3'}"
        settings = load_settings(
            {
                "FLATTRFED_BASE_URL": base_url,
                "FLATTRFED_ALLOW_HTTP": "1",
                "FLATTRFED_DATA_DIR": str(data_dir),
                "FLATTRFED_DATABASE_URL": database_url,
                # Loopback only: the demo's instances talk to each other on 127.0.0.1.
                "FLATTRFED_ALLOWED_PRIVATE_ADDRESSES": "127.0.0.0/8",
                "FLATTRFED_FEE_BP": str(fee_bp),
                "FLATTRFED_WORKER_IN_PROCESS": "0",
                "FLATTRFED_INSTANCE_NAME": name,
            }
        )
        app = create_app(settings, clock=self.clock)
        services = app[SERVICES]
        await migrate.upgrade(services.database.engine)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.SockSite(runner, sock).start()
        instance = DemoInstance(name, services, runner, base_url)
        self.instances[name] = instance
        self.say(f"started {name} at {base_url} (fee {fee_bp // 100}.{fee_bp % 100:02d} %)")
        return instance

    async def step(self) -> None:
        """Run every instance's worker until nothing is due anywhere."""
        for _ in range(200):
            ran = 0
            for instance in self.instances.values():
                ran += await instance.services.worker.run_until_idle()
            if ran == 0:
                return
        raise RuntimeError("the instances kept finding work to do")

    async def close(self) -> None:
        for instance in self.instances.values():
            await instance.runner.cleanup()
        if self.plain is not None:
            await self.plain.close()


def _bound_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class PlainAuthor:
    """A fediverse author on a server that is not flattrfed (like a plain Mastodon account)."""

    def __init__(self) -> None:
        self.key = signatures.generate_rsa_key()
        self.runner: web.AppRunner | None = None
        self.base_url = ""

    @property
    def actor(self) -> str:
        return f"{self.base_url}/users/frida"

    def note(self, number: int) -> str:
        return f"{self.actor}/statuses/{number}"

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/users/frida", self._actor)
        app.router.add_get(r"/users/frida/statuses/{number:\d+}", self._note)
        app.router.add_post("/users/frida/inbox", self._inbox)
        app.router.add_get("/.well-known/nodeinfo", self._nodeinfo)
        sock = _bound_socket()
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.SockSite(self.runner, sock).start()

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def _actor(self, request: web.Request) -> web.Response:
        document = {
            "@context": [AS_CONTEXT, SECURITY_CONTEXT],
            "id": self.actor,
            "type": "Person",
            "preferredUsername": "frida",
            "name": "Frida (not on flattrfed)",
            "inbox": f"{self.actor}/inbox",
            "publicKey": {
                "id": f"{self.actor}#main-key",
                "owner": self.actor,
                "publicKeyPem": signatures.public_key_to_pem(self.key.public_key()),
            },
        }
        return web.Response(body=json.dumps(document).encode(), content_type=ACTIVITY_JSON)

    async def _note(self, request: web.Request) -> web.Response:
        number = int(request.match_info["number"])
        document = {
            "@context": AS_CONTEXT,
            "id": self.note(number),
            "type": "Note",
            "attributedTo": self.actor,
            "content": f"<p>Frida's post number {number}</p>",
        }
        return web.Response(body=json.dumps(document).encode(), content_type=ACTIVITY_JSON)

    async def _inbox(self, request: web.Request) -> web.Response:
        await request.read()
        return web.Response(status=202)

    async def _nodeinfo(self, request: web.Request) -> web.Response:
        return web.json_response({"links": []})

    async def favourite(self, thing_actor: str, inbox: str, now: datetime) -> None:
        """Send a plain Like (a Mastodon favourite): an appreciation, never money."""
        like = {
            "@context": AS_CONTEXT,
            "id": f"{self.actor}#likes/1",
            "type": "Like",
            "actor": self.actor,
            "object": thing_actor,
        }
        body = json.dumps(like).encode()
        headers = signatures.sign_request(
            private_key=self.key,
            key_id=f"{self.actor}#main-key",
            method="POST",
            url=inbox,
            headers={"Content-Type": ACTIVITY_JSON},
            body=body,
            now=now,
        )
        async with (
            aiohttp.ClientSession() as session,
            session.post(inbox, data=body, headers=headers) as response,
        ):
            if response.status != 202:
                raise RuntimeError(f"the plain Like was refused: {response.status}")


async def run_demo(say: Callable[[str], None], keep_running: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="flattrfed-demo-") as workdir:
        demo = Demo(Path(workdir), ManualClock(MONTH_START), say)
        try:
            report = await _month(demo)
            if keep_running:
                _print_logins(demo, say)
                await asyncio.Event().wait()
            return report
        finally:
            await demo.close()


async def _month(demo: Demo) -> dict[str, Any]:
    now = demo.clock.now
    for name, fee in [("alpha", 250), ("beta", 500), ("gamma", 0)]:
        await demo.start(name, fee)
    demo.plain = PlainAuthor()
    await demo.plain.start()
    demo.say(f"started a plain fediverse server (not flattrfed) at {demo.plain.base_url}")

    things: dict[str, str] = {}
    for where, owner, handle, title in THINGS:
        instance = demo.instances[where]
        async with instance.services.database.transaction() as session:
            member = await session.scalar(select(Member).where(Member.username == owner))
            if member is None:
                member = await create_member(
                    session, username=owner, password=DEMO_PASSWORD, is_admin=False, now=now()
                )
                demo.members[owner] = (where, member.id)
            await create_thing(session, owner=member, handle=handle, title=title, now=now())
        things[handle] = instance.services.urls.actor("thing", handle)
        demo.say(f"{where}: {owner} created the thing {title!r}")
    for where, name, budget, deposit in DONORS:
        instance = demo.instances[where]
        async with instance.services.database.transaction() as session:
            member = await create_member(
                session, username=name, password=DEMO_PASSWORD, is_admin=name == "ann", now=now()
            )
            member.monthly_budget_minor = budget
            await record_deposit(
                session,
                member=member,
                amount=Money(deposit, instance.services.settings.currency),
                bank_reference=f"demo-transfer-{name}",
                currency=instance.services.settings.currency,
                now=now(),
            )
            demo.members[name] = (where, member.id)
        demo.say(
            f"{where}: {name} deposited {Money(deposit, 'EUR')} and set a budget of "
            f"{Money(budget, 'EUR')}"
        )

    for first in demo.instances.values():
        for second in demo.instances.values():
            if first is not second:
                actor, currency = await discover_peer(
                    first.services.nodeinfo, second.host, "EUR", now()
                )
                async with first.services.database.transaction() as session:
                    await add_peer(
                        session,
                        host=second.host,
                        clearing_actor=actor,
                        currency=currency,
                        credit_limit_minor=1_000_000,
                        now=now(),
                    )
    demo.say("every instance peered with the other two (credit limit 10,000.00 EUR each)")

    for donor, handle in CLICKS:
        await _click(demo, donor, things[handle])
    pending = await _click(demo, "bea", demo.plain.note(1))
    demo.say(f"bea flattred Frida's post: pending ({pending}) until Frida claims it")
    await _undo(demo, *UNDONE)
    beta = demo.instances["beta"]
    await demo.plain.favourite(things["podcast"], f"{things['podcast']}/inbox", demo.clock.now())
    demo.say("Frida favourited Dora's podcast from her server: an appreciation, no money")
    await demo.step()

    demo.clock.set(AFTER_CLOSE)
    demo.say("a month later: every instance closes November and exchanges statements")
    await demo.step()
    await _pay(demo)
    return await _report(demo, things, beta)


async def _click(demo: Demo, donor: str, target_text: str) -> str:
    where, member_id = demo.members[donor]
    services = demo.instances[where].services
    target = await resolve_target(services, target_text)
    async with services.database.transaction() as session:
        member = await session.get(Member, member_id)
        assert member is not None
        row = await flattr(session, services.urls, member, target, demo.clock.now())
        status = row.status
    demo.say(f"{where}: {donor} flattred {target.title!r}")
    return status


async def _undo(demo: Demo, donor: str, handle: str) -> None:
    where, member_id = demo.members[donor]
    services = demo.instances[where].services
    async with services.database.transaction() as session:
        member = await session.get(Member, member_id)
        assert member is not None
        row = await session.scalar(
            select(Flattr).where(Flattr.donor_id == member_id, Flattr.target_uri.endswith(handle))
        )
        assert row is not None
        await unflattr(session, member, row.id, demo.clock.now())
    demo.say(f"{where}: {donor} undid the flattr of {handle}")


async def _pay(demo: Demo) -> None:
    for instance in demo.instances.values():
        async with instance.services.database.sessions() as session:
            owed = (
                await session.scalars(
                    select(Settlement).where(Settlement.state == "agreed", Settlement.net_minor > 0)
                )
            ).all()
        for row in owed:
            await instance.services.exchange.mark_paid(row.id, f"DEMO-{row.id}", "demo-admin")
            demo.say(f"{instance.name}: paid {Money(row.net_minor, 'EUR')} to {row.peer_host}")
    await demo.step()
    for instance in demo.instances.values():
        async with instance.services.database.sessions() as session:
            due = (
                await session.scalars(
                    select(Settlement).where(
                        Settlement.net_minor < 0, Settlement.state.in_(["agreed", "payment_sent"])
                    )
                )
            ).all()
        for row in due:
            await instance.services.exchange.confirm(row.id, "demo-admin")
            demo.say(f"{instance.name}: confirmed receipt of {Money(-row.net_minor, 'EUR')}")
    await demo.step()


async def _report(demo: Demo, things: dict[str, str], _beta: DemoInstance) -> dict[str, Any]:
    by_host = {instance.host: name for name, instance in demo.instances.items()}
    report: dict[str, Any] = {
        "period": "2026-11",
        "instances": [],
        "things": [],
        "donors": [],
        "pairs": [],
        "creators": [],
        "checks": [],
    }
    for name, instance in demo.instances.items():
        settings = instance.services.settings
        report["instances"].append(
            {
                "name": name,
                "base_url": settings.base_url,
                "currency": settings.currency,
                "fee_bp": settings.fee_bp,
            }
        )
    for where, owner, handle, _title in THINGS:
        report["things"].append({"id": things[handle], "instance": where, "owner": owner})
    for name, instance in demo.instances.items():
        async with instance.services.database.sessions() as session:
            for close in (await session.scalars(select(DonorClose))).all():
                member = await session.get(Member, close.donor_id)
                assert member is not None
                paid = (
                    await session.scalars(
                        select(Flattr.target_uri).where(
                            Flattr.donor_id == close.donor_id,
                            Flattr.status == "payable",
                            Flattr.undone_at.is_(None),
                        )
                    )
                ).all()
                report["donors"].append(
                    {
                        "instance": name,
                        "donor": member.username,
                        "budget_minor": close.spent_minor,
                        "fee_minor": close.fee_minor,
                        "share_minor": close.share_minor,
                        "carry_minor": close.carry_minor,
                        "things": sorted(paid),
                    }
                )
            for settlement in (await session.scalars(select(Settlement))).all():
                if settlement.period != "2026-11":
                    continue
                peer = by_host[settlement.peer_host]
                if name > peer:
                    continue  # one row per pair, from the alphabetically first side
                out = await session.scalar(
                    select(Statement.total_minor).where(
                        Statement.direction == "out",
                        Statement.period == "2026-11",
                        Statement.peer_host == settlement.peer_host,
                        Statement.state == "accepted",
                    )
                )
                incoming = await session.scalar(
                    select(Statement.total_minor).where(
                        Statement.direction == "in",
                        Statement.period == "2026-11",
                        Statement.peer_host == settlement.peer_host,
                        Statement.state == "accepted",
                    )
                )
                net = settlement.net_minor
                report["pairs"].append(
                    {
                        "a": name,
                        "b": peer,
                        "gross_a_to_b_minor": int(out or 0),
                        "gross_b_to_a_minor": int(incoming or 0),
                        "net_minor": abs(net),
                        "payer": name if net > 0 else peer if net < 0 else None,
                        "payee": peer if net > 0 else name if net < 0 else None,
                        "state": settlement.state,
                    }
                )
            for where, owner, _handle, _title in THINGS:
                if where != name:
                    continue
                member_id = demo.members[owner][1]
                balances = await ledger.member_balances(session, member_id)
                earned = balances["earnings_available"] + balances["earnings_pending"]
                entry = {"instance": name, "creator": owner, "earned_minor": earned}
                if entry not in report["creators"]:
                    report["creators"].append(entry)
            problems = await check_ledger(session, instance.services.settings.currency)
        report["checks"].append(
            {
                "instance": name,
                "ok": not problems,
                "problems": [f"{p.invariant}: {p.detail}" for p in problems],
            }
        )
    return report


def _print_logins(demo: Demo, say: Callable[[str], None]) -> None:
    say("the instances stay up until you press Ctrl-C:")
    for name, instance in demo.instances.items():
        say(f"  {name}: {instance.base_url}/")
    say(f"  members ann, amir, bea, gus, carol, dora, emil; password: {DEMO_PASSWORD!r}")


def format_report(report: dict[str, Any]) -> str:
    def money(amount: int) -> str:
        return Money(amount, "EUR").format()

    lines = [f"flattrfed demo — the month {report['period']}", "", "Donors:"]
    for row in report["donors"]:
        lines.append(
            f"  {row['donor']}@{row['instance']}: spent {money(row['budget_minor'])}, "
            f"fee {money(row['fee_minor'])}, {len(row['things'])} things x "
            f"{money(row['share_minor'])}, carry {money(row['carry_minor'])}"
        )
    lines += ["", "Between instances:"]
    for row in report["pairs"]:
        who = (
            f"{row['payer']} pays {row['payee']} {money(row['net_minor'])}"
            if row["payer"]
            else "nothing to pay"
        )
        lines.append(
            f"  {row['a']} → {row['b']} {money(row['gross_a_to_b_minor'])}, "
            f"{row['b']} → {row['a']} {money(row['gross_b_to_a_minor'])}: {who} ({row['state']})"
        )
    lines += ["", "Creators:"]
    for row in report["creators"]:
        lines.append(f"  {row['creator']}@{row['instance']} earned {money(row['earned_minor'])}")
    lines += ["", "flattrfed check:"]
    for row in report["checks"]:
        lines.append(f"  {row['instance']}: {'ok' if row['ok'] else row['problems']}")
    return "\n".join(lines)


def main(as_json: bool, keep_running: bool) -> int:
    def say(text: str) -> None:
        print(f"· {text}", file=sys.stderr, flush=True)

    report = asyncio.run(run_demo(say, keep_running))
    print(json.dumps(report, indent=2) if as_json else format_report(report))
    return 0 if all(row["ok"] for row in report["checks"]) else 1
