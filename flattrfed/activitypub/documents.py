"""Builds the ActivityStreams JSON we serve and send, and recognises the content types we accept."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

AS_CONTEXT = "https://www.w3.org/ns/activitystreams"
SECURITY_CONTEXT = "https://w3id.org/security/v1"
MULTIKEY_CONTEXT = "https://w3id.org/security/multikey/v1"
PUBLIC = "https://www.w3.org/ns/activitystreams#Public"
FLATTR_NS = "https://flattrfed.org/ns#"
PROTOCOL_VERSION = "flattrfed/1"

ACTIVITY_JSON = "application/activity+json"
LD_JSON_PROFILE = 'application/ld+json; profile="https://www.w3.org/ns/activitystreams"'
ACCEPT_ACTIVITYPUB = f"{ACTIVITY_JSON}, {LD_JSON_PROFILE}"

# Our terms, with fixed IRIs: every instance serves this same context at /ns, but nobody needs
# to fetch it, because we embed it inline and never fetch anybody's @context ourselves.
FLATTR_TERMS: dict[str, Any] = {
    "flattr": FLATTR_NS,
    "Flattr": "flattr:Flattr",
    "flattrPeriod": "flattr:period",
    "flattrBudgetOwner": {"@id": "flattr:budgetOwner", "@type": "@id"},
    "flattrClearing": {"@id": "flattr:clearing", "@type": "@id"},
    "toot": "http://joinmastodon.org/ns#",
    "discoverable": "toot:discoverable",
    "indexable": "toot:indexable",
    "manuallyApprovesFollowers": "as:manuallyApprovesFollowers",
    "schema": "http://schema.org#",
    "PropertyValue": "schema:PropertyValue",
    "value": "schema:value",
}

ACTOR_TYPES = frozenset({"Application", "Group", "Organization", "Person", "Service"})
# Things are Service actors: Mastodon follows any of ACTOR_TYPES, and "Service" says this
# actor is not a person posting by hand; it shows a small "automated" badge (docs/protocol.md).
ACTOR_TYPE_BY_KIND = {"person": "Person", "thing": "Service", "instance": "Application"}


def context() -> list[Any]:
    return [AS_CONTEXT, SECURITY_CONTEXT, FLATTR_TERMS]


def context_document() -> dict[str, Any]:
    """The JSON-LD context served at /ns."""
    # Inline, FLATTR_TERMS follows the ActivityStreams context, which defines the `as:` prefix;
    # served alone it must define it itself, or `as:manuallyApprovesFollowers` expands to an
    # IRI with the scheme "as".
    return {"@context": {"as": f"{AS_CONTEXT}#", **FLATTR_TERMS}}


def media_type(content_type: str) -> tuple[str, dict[str, str]]:
    main, _, rest = content_type.partition(";")
    params: dict[str, str] = {}
    for part in rest.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep:
            params[key.strip().lower()] = value.strip().strip('"')
    return main.strip().lower(), params


def is_activitypub_content_type(content_type: str | None) -> bool:
    """activity+json, or ld+json with the ActivityStreams profile (plain JSON is refused)."""
    if not content_type:
        return False
    main, params = media_type(content_type)
    if main == ACTIVITY_JSON:
        return True
    return main == "application/ld+json" and AS_CONTEXT in params.get("profile", "").split()


def wants_activitypub(accept: str | None) -> bool:
    """Whether an Accept header asks for ActivityStreams rather than a page."""
    if not accept:
        return False
    for item in accept.split(","):
        if is_activitypub_content_type(item.split(";q=")[0].strip()) or (
            media_type(item)[0] == "application/ld+json" and "activitystreams" in item
        ):
            return True
    return False


def has_activitystreams_context(document: dict[str, Any]) -> bool:
    value = document.get("@context")
    if value == AS_CONTEXT:
        return True
    return isinstance(value, list) and AS_CONTEXT in value


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class ActorView:
    """Everything an actor document shows, gathered from the database by the caller."""

    uri: str
    kind: str
    username: str
    name: str
    summary: str
    profile_url: str
    shared_inbox: str
    public_key_pem: str
    published: datetime
    payment_href: str | None = None
    icon_url: str | None = None
    also_known_as: tuple[str, ...] = ()
    # Ed25519 Multikeys that verify this actor's object proofs (FEP-8b32 assertionMethod).
    assertion_keys: tuple[str, ...] = field(default_factory=tuple)
    likes_total: int | None = None  # things show their public count, as Mastodon posts do

    @property
    def key_id(self) -> str:
        return f"{self.uri}#main-key"

    @property
    def inbox(self) -> str:
        return f"{self.uri}/inbox"


def actor_document(view: ActorView) -> dict[str, Any]:
    document: dict[str, Any] = {
        "@context": context(),
        "id": view.uri,
        "type": ACTOR_TYPE_BY_KIND[view.kind],
        "preferredUsername": view.username,
        "name": view.name,
        "summary": view.summary,
        "url": view.profile_url,
        "inbox": view.inbox,
        "outbox": f"{view.uri}/outbox",
        "followers": f"{view.uri}/followers",
        "following": f"{view.uri}/following",
        "endpoints": {"sharedInbox": view.shared_inbox},
        "manuallyApprovesFollowers": False,
        "discoverable": view.kind != "instance",
        "indexable": view.kind != "instance",
        "published": iso(view.published),
        "publicKey": {
            "id": view.key_id,
            "owner": view.uri,
            "publicKeyPem": view.public_key_pem,
        },
    }
    attachment: list[dict[str, Any]] = []
    if view.payment_href is not None:
        # FEP-0ea0 payment link for machines, plus a PropertyValue that Mastodon shows people.
        attachment.append(
            {
                "type": "Link",
                "name": "Flattr",
                "rel": ["payment", f"{FLATTR_NS}flattr"],
                "href": view.payment_href,
                "mediaType": "text/html",
            }
        )
        attachment.append(
            {
                "type": "PropertyValue",
                "name": "Flattr",
                "value": f'<a href="{view.payment_href}" rel="me nofollow noopener">'
                f"{view.payment_href}</a>",
            }
        )
    if attachment:
        document["attachment"] = attachment
    if view.icon_url:
        document["icon"] = {"type": "Image", "url": view.icon_url}
    if view.also_known_as:
        document["alsoKnownAs"] = list(view.also_known_as)
    if view.likes_total is not None:
        document["likes"] = {
            "id": f"{view.uri}/likes",
            "type": "Collection",
            "totalItems": view.likes_total,
        }
    if view.assertion_keys:
        # Multikey and assertionMethod are defined by this context; JSON-LD readers need it.
        document["@context"] = [*document["@context"], MULTIKEY_CONTEXT]
        document["assertionMethod"] = [
            {
                "id": f"{view.uri}#ed25519-key"
                if index == 0
                else f"{view.uri}#ed25519-key-{index}",
                "type": "Multikey",
                "controller": view.uri,
                "publicKeyMultibase": multikey,
            }
            for index, multikey in enumerate(view.assertion_keys)
        ]
    return document


def ordered_collection(uri: str, total: int, items: list[Any] | None = None) -> dict[str, Any]:
    document: dict[str, Any] = {
        "@context": AS_CONTEXT,
        "id": uri,
        "type": "OrderedCollection",
        "totalItems": total,
    }
    if items is not None:
        document["orderedItems"] = items
    return document


def note_document(
    *, uri: str, actor_uri: str, content: str, published: datetime, followers: str
) -> dict[str, Any]:
    return {
        "@context": context(),
        "id": uri,
        "type": "Note",
        "attributedTo": actor_uri,
        "content": content,
        "published": iso(published),
        "url": uri,
        "to": [PUBLIC],
        "cc": [followers],
    }


def create_activity(note: dict[str, Any]) -> dict[str, Any]:
    embedded = {key: value for key, value in note.items() if key != "@context"}
    return {
        "@context": context(),
        "id": f"{note['id']}/activity",
        "type": "Create",
        "actor": note["attributedTo"],
        "published": note["published"],
        "to": note["to"],
        "cc": note["cc"],
        "object": embedded,
    }


def delete_activity(*, actor_uri: str, object_uri: str, activity_uri: str) -> dict[str, Any]:
    return {
        "@context": context(),
        "id": activity_uri,
        "type": "Delete",
        "actor": actor_uri,
        "to": [PUBLIC],
        "object": {"id": object_uri, "type": "Tombstone"},
    }


def accept_activity(*, actor_uri: str, follow: dict[str, Any], activity_uri: str) -> dict[str, Any]:
    # Embed the Follow rebuilt from its four references, as Mastodon's AcceptFollowSerializer
    # does, not the sender's raw JSON: that could carry anything (an actor object, proofs,
    # padding), and we would sign and send it back. Callers pass a verified, stored Follow.
    follower = _reference(follow.get("actor"))
    embedded = {
        "id": follow["id"],
        "type": "Follow",
        "actor": follower,
        "object": _reference(follow.get("object")),
    }
    return {
        "@context": context(),
        "id": activity_uri,
        "type": "Accept",
        "actor": actor_uri,
        "to": [follower],
        "object": embedded,
    }


def _reference(value: Any) -> Any:
    """The id of an embedded object (`{"id": …}`), or the value itself when it is a URI."""
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return value["id"]
    return value


def update_actor_activity(
    actor: dict[str, Any], *, activity_uri: str, published: datetime
) -> dict[str, Any]:
    embedded = {key: value for key, value in actor.items() if key != "@context"}
    return {
        "@context": context(),
        "id": activity_uri,
        "type": "Update",
        "actor": actor["id"],
        "published": iso(published),
        "to": [PUBLIC],
        "cc": [actor["followers"]],
        "object": embedded,
    }


def like_activity(
    *,
    like_uri: str,
    actor_uri: str,
    object_uri: str,
    recipient: str,
    published: datetime,
    flattr_period: str | None = None,
    clearing_actor: str | None = None,
) -> dict[str, Any]:
    """A Like; with a period it carries our Flattr instrument. Never any amount, never content."""
    like: dict[str, Any] = {
        "@context": context(),
        "id": like_uri,
        "type": "Like",
        "actor": actor_uri,
        "object": object_uri,
        "to": [recipient],
        "published": iso(published),
    }
    if flattr_period is not None:
        like["instrument"] = {
            "type": "Flattr",
            "flattrPeriod": flattr_period,
            "flattrBudgetOwner": actor_uri,
            "flattrClearing": clearing_actor,
        }
    return like


def undo_activity(activity: dict[str, Any], *, undo_uri: str) -> dict[str, Any]:
    """Undo embedding the whole activity, as Mastodon needs to find what to undo."""
    embedded = {key: value for key, value in activity.items() if key != "@context"}
    return {
        "@context": context(),
        "id": undo_uri,
        "type": "Undo",
        "actor": activity["actor"],
        "to": activity.get("to", []),
        "object": embedded,
    }


def follow_activity(*, follow_uri: str, actor_uri: str, object_uri: str) -> dict[str, Any]:
    return {
        "@context": context(),
        "id": follow_uri,
        "type": "Follow",
        "actor": actor_uri,
        "object": object_uri,
    }
