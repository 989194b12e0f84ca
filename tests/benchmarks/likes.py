"""Remote actors with RSA keys and the signed Like deliveries they send (P1, P2)."""

from __future__ import annotations

import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from sqlalchemy import insert

from flattrfed.activitypub import signatures
from flattrfed.activitypub.documents import ACTIVITY_JSON, AS_CONTEXT
from flattrfed.db.models import RemoteActor
from flattrfed.db.session import Database
from tests.benchmarks.common import BENCH_BASE_URL

KEYS = 4  # distinct RSA keys; actors share them (key generation costs ~0.1 s each)
REMOTE_HOSTS = 8
THING = "zine"  # the local thing every Like is for
PERIOD = "2026-11"


@cache
def key_pem(index: int) -> str:
    return signatures.private_key_to_pem(signatures.generate_rsa_key())


@dataclass(frozen=True)
class RemoteSender:
    index: int

    @property
    def host(self) -> str:
        return f"remote{self.index % REMOTE_HOSTS}.test"

    @property
    def uri(self) -> str:
        return f"http://{self.host}/users/u{self.index}"

    @property
    def key_id(self) -> str:
        return f"{self.uri}#main-key"

    @property
    def key_index(self) -> int:
        return self.index % KEYS


def like(sender: RemoteSender, serial: int) -> dict[str, Any]:
    """A Like carrying the Flattr instrument, of our thing, as a remote flattrfed sends it."""
    return {
        "@context": AS_CONTEXT,
        "id": f"{sender.uri}/likes/{serial}",
        "type": "Like",
        "actor": sender.uri,
        "object": f"{BENCH_BASE_URL}/things/{THING}",
        "instrument": {
            "type": "Flattr",
            "flattrPeriod": PERIOD,
            "flattrClearing": f"http://{sender.host}/actor",
        },
    }


def _sign_chunk(pems: list[str], actors: int, first: int, count: int, now: datetime) -> list[str]:
    keys = [signatures.load_private_key_pem(pem) for pem in pems]
    out = []
    for serial in range(first, first + count):
        sender = RemoteSender(serial % actors)
        body = json.dumps(like(sender, serial)).encode()
        headers = signatures.sign_request(
            private_key=keys[sender.key_index],
            key_id=sender.key_id,
            method="POST",
            url=f"{BENCH_BASE_URL}/inbox",
            headers={"Content-Type": ACTIVITY_JSON},
            body=body,
            now=now,
        )
        out.append(json.dumps({"path": "/inbox", "headers": headers, "body": body.decode()}))
    return out


def write_signed_likes(path: Path, actors: int, total: int) -> None:
    """`total` distinct signed POSTs to our shared inbox, written as JSON lines (two processes
    sign, before anything is timed)."""
    pems = [key_pem(index) for index in range(KEYS)]
    now = datetime.now(UTC)
    half = total // 2
    with ProcessPoolExecutor(max_workers=2, mp_context=get_context("fork")) as pool:
        parts = [
            pool.submit(_sign_chunk, pems, actors, 0, half, now),
            pool.submit(_sign_chunk, pems, actors, half, total - half, now),
        ]
        lines = [line for part in parts for line in part.result()]
    path.write_text("\n".join(lines) + "\n")


def public_keys(actors: int) -> dict[str, str]:
    """key id -> public key PEM, for the baseline server."""
    publics = [
        signatures.public_key_to_pem(signatures.load_private_key_pem(key_pem(i)).public_key())
        for i in range(KEYS)
    ]
    return {RemoteSender(i).key_id: publics[RemoteSender(i).key_index] for i in range(actors)}


async def store_remote_actors(database: Database, actors: int, now: datetime) -> None:
    """What the instance would have stored after fetching each sender once (keys are known)."""
    publics = public_keys(actors)
    rows: list[dict[str, Any]] = []
    for index in range(actors):
        sender = RemoteSender(index)
        rows.append(
            {
                "uri": sender.uri,
                "host": sender.host,
                "type": "Person",
                "preferred_username": f"u{index}",
                "name": f"U{index}",
                "profile_url": None,
                "inbox": f"{sender.uri}/inbox",
                "shared_inbox": f"http://{sender.host}/inbox",
                "followers_url": None,
                "key_id": sender.key_id,
                "public_key_pem": publics[sender.key_id],
                "also_known_as": [],
                "document": {"id": sender.uri},
                "fetched_at": now,
                "deleted_at": None,
            }
        )
    async with database.transaction() as session:
        await session.execute(insert(RemoteActor), rows)
