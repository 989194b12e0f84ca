"""Reads another server's NodeInfo: which software it runs and what it advertises in metadata."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from flattrfed.activitypub.client import FederationClient, FetchError
from flattrfed.activitypub.origins import BadUri, origin_of

SCHEMA_PREFIX = "http://nodeinfo.diaspora.software/ns/schema/"
NODEINFO_TYPES = ("application/json", "application/jrd+json")
CACHE_TTL = timedelta(hours=1)


class NodeInfoCache:
    """NodeInfo documents by host, fetched at most once an hour (negative answers too)."""

    def __init__(self, client: FederationClient, *, allow_http: bool) -> None:
        self.client = client
        self.allow_http = allow_http
        self._cache: dict[str, tuple[datetime, dict[str, Any] | None]] = {}

    async def get(self, host: str, now: datetime) -> dict[str, Any] | None:
        cached = self._cache.get(host)
        if cached is not None and cached[0] > now:
            return cached[1]
        document = await self._fetch(host)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[host] = (now + CACHE_TTL, document)
        return document

    async def _fetch(self, host: str) -> dict[str, Any] | None:
        scheme = "http" if self.allow_http else "https"
        base = f"{scheme}://{host}"
        try:
            links = await self.client.fetch_json(
                f"{base}/.well-known/nodeinfo",
                accept="application/json",
                allowed_types=NODEINFO_TYPES,
            )
        except FetchError:
            return None
        hrefs: dict[str, str] = {}
        for link in links.get("links", []) if isinstance(links.get("links"), list) else []:
            if not isinstance(link, dict):
                continue
            rel, href = link.get("rel"), link.get("href")
            if isinstance(rel, str) and rel.startswith(SCHEMA_PREFIX) and isinstance(href, str):
                # The document must live on the host it describes: a link elsewhere (another
                # host, a data: URL) is how NodeInfo was used for SSRF (Fedify CVE-2026-62857).
                try:
                    if origin_of(href, allow_http=self.allow_http) != base:
                        continue
                except BadUri:
                    continue
                hrefs[rel[len(SCHEMA_PREFIX) :]] = href
        for version in ("2.1", "2.0"):
            if version in hrefs:
                try:
                    return await self.client.fetch_json(
                        hrefs[version], accept="application/json", allowed_types=NODEINFO_TYPES
                    )
                except FetchError:
                    return None
        return None


def flattrfed_metadata(nodeinfo: dict[str, Any] | None) -> dict[str, Any] | None:
    """The `metadata.flattrfed` object a flattrfed instance advertises, if well-formed."""
    if nodeinfo is None:
        return None
    metadata = nodeinfo.get("metadata")
    if not isinstance(metadata, dict):
        return None
    advertised = metadata.get("flattrfed")
    if not isinstance(advertised, dict):
        return None
    if not isinstance(advertised.get("clearingActor"), str):
        return None
    if not isinstance(advertised.get("currency"), str):
        return None
    return advertised
