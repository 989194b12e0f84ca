"""A plain ActivityPub server (not flattrfed) on loopback: actors, posts, a recording inbox."""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from flattrfed.activitypub import signatures
from flattrfed.activitypub.documents import ACTIVITY_JSON, AS_CONTEXT, SECURITY_CONTEXT


@dataclass
class PlainServer:
    """Serves `/users/NAME` actors and their notes; NodeInfo without flattrfed."""

    host: str = ""
    runner: web.AppRunner | None = None
    received: list[dict[str, Any]] = field(default_factory=list)
    attachments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    also_known_as: dict[str, list[str]] = field(default_factory=dict)
    keys: dict[str, signatures.PrivateKey] = field(default_factory=dict)

    def actor_uri(self, name: str) -> str:
        return f"http://{self.host}/users/{name}"

    def status_uri(self, name: str, number: int) -> str:
        return f"{self.actor_uri(name)}/statuses/{number}"

    def _key(self, name: str) -> signatures.PrivateKey:
        if name not in self.keys:
            self.keys[name] = signatures.generate_rsa_key()
        return self.keys[name]

    def actor_document(self, name: str) -> dict[str, Any]:
        uri = self.actor_uri(name)
        public = signatures.public_key_to_pem(self._key(name).public_key())
        document: dict[str, Any] = {
            "@context": [AS_CONTEXT, SECURITY_CONTEXT],
            "id": uri,
            "type": "Person",
            "preferredUsername": name,
            "name": name.capitalize(),
            "inbox": f"{uri}/inbox",
            "outbox": f"{uri}/outbox",
            "followers": f"{uri}/followers",
            "endpoints": {"sharedInbox": f"http://{self.host}/inbox"},
            "publicKey": {"id": f"{uri}#main-key", "owner": uri, "publicKeyPem": public},
            "attachment": self.attachments.get(name, []),
        }
        if name in self.also_known_as:
            document["alsoKnownAs"] = self.also_known_as[name]
        return document

    def app(self) -> web.Application:
        app = web.Application()

        def as_json(document: dict[str, Any]) -> web.Response:
            return web.Response(body=json.dumps(document).encode(), content_type=ACTIVITY_JSON)

        async def actor(request: web.Request) -> web.Response:
            return as_json(self.actor_document(request.match_info["name"]))

        async def status(request: web.Request) -> web.Response:
            name, number = request.match_info["name"], int(request.match_info["number"])
            return as_json(
                {
                    "@context": AS_CONTEXT,
                    "id": self.status_uri(name, number),
                    "type": "Note",
                    "attributedTo": self.actor_uri(name),
                    "content": f"<p>post {number}</p>",
                    "to": ["https://www.w3.org/ns/activitystreams#Public"],
                }
            )

        async def inbox(request: web.Request) -> web.Response:
            self.received.append(json.loads(await request.read()))
            return web.Response(status=202)

        async def webfinger(request: web.Request) -> web.Response:
            name = request.query["resource"].removeprefix("acct:").split("@", 1)[0]
            links = [{"rel": "self", "type": ACTIVITY_JSON, "href": self.actor_uri(name)}]
            return web.json_response({"subject": f"acct:{name}@{self.host}", "links": links})

        async def nodeinfo_links(request: web.Request) -> web.Response:
            href = f"http://{self.host}/nodeinfo/2.0"
            rel = "http://nodeinfo.diaspora.software/ns/schema/2.0"
            return web.json_response({"links": [{"rel": rel, "href": href}]})

        async def nodeinfo(request: web.Request) -> web.Response:
            return web.json_response(
                {"version": "2.0", "software": {"name": "plainpub"}, "metadata": {}}
            )

        app.router.add_get("/users/{name}", actor)
        app.router.add_get(r"/users/{name}/statuses/{number:\d+}", status)
        app.router.add_post("/users/{name}/inbox", inbox)
        app.router.add_post("/inbox", inbox)
        app.router.add_get("/.well-known/webfinger", webfinger)
        app.router.add_get("/.well-known/nodeinfo", nodeinfo_links)
        app.router.add_get("/nodeinfo/2.0", nodeinfo)
        return app

    async def start(self, name: str) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.host = f"{name}:{sock.getsockname()[1]}"
        self.runner = web.AppRunner(self.app(), access_log=None)
        await self.runner.setup()
        await web.SockSite(self.runner, sock).start()

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()
