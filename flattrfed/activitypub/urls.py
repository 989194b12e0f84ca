"""The URL layout of a flattrfed instance's ActivityPub objects, built from its base URL."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

KIND_PATH = {"person": "users", "thing": "things"}


@dataclass(frozen=True)
class LocalUrls:
    """Every public URL an instance mints; the only place the path layout is written down."""

    base_url: str

    def actor(self, kind: str, username: str) -> str:
        if kind == "instance":
            return f"{self.base_url}/actor"
        return f"{self.base_url}/{KIND_PATH[kind]}/{quote(username, safe='')}"

    def key_id(self, actor_uri: str) -> str:
        return f"{actor_uri}#main-key"

    def profile(self, kind: str, username: str) -> str:
        if kind == "instance":
            return f"{self.base_url}/"
        return f"{self.base_url}/@{quote(username, safe='')}"

    def shared_inbox(self) -> str:
        return f"{self.base_url}/inbox"

    def context(self) -> str:
        return f"{self.base_url}/ns"

    def post(self, actor_uri: str, post_id: int) -> str:
        return f"{actor_uri}/posts/{post_id}"

    def flattr_page(self, kind: str, username: str) -> str:
        return f"{self.profile(kind, username)}/flattr"

    def owns(self, uri: str) -> bool:
        """Whether `uri` is on this instance (exact origin, so a look-alike host never matches)."""
        return uri == self.base_url or uri.startswith(self.base_url + "/")
