"""Reads fields of untrusted activities: the id of a reference, and the one type we act on."""

from __future__ import annotations

from typing import Any

MAX_TYPE_LENGTH = 32
KNOWN_TYPES = frozenset(
    {"Follow", "Undo", "Like", "Create", "Update", "Delete", "Accept", "Reject", "Announce"}
)


def id_of(value: Any) -> str | None:
    """The id of a reference: a URI string, or an embedded object's `id` (and nothing else).

    Embedded objects are written by whoever sent them, so nothing but their id is trusted.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("id"), str):
        return str(value["id"])
    return None


def activity_type(value: Any) -> str | None:
    """One type: a plain string, or a list naming exactly one type we act on.

    Multi-typed input is accepted (we never send it: Mastodon ignores it).
    """
    if isinstance(value, str):
        # At most the width of the type columns (inbound_activities.type is VARCHAR(32)): a
        # longer type is nothing we act on, and on PostgreSQL storing it would fail with a 500.
        return value if len(value) <= MAX_TYPE_LENGTH else None
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        known = {item for item in value if item in KNOWN_TYPES}
        return known.pop() if len(known) == 1 else None
    return None
