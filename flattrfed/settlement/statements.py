"""Settlement statements: built from shares, checked line by line against the Likes received.

Pure functions over plain values (no database, no network), so the issuer's and the receiver's
rules are the same code and each can be tested on its own. The format is `flattrfed.statement/1`
(docs/settlement.md); amounts are decimal strings of minor units.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flattrfed.activitypub.documents import AS_CONTEXT, FLATTR_TERMS, iso
from flattrfed.money import Money
from flattrfed.settlement.canonical import sha256_digest

SCHEMA = "flattrfed.statement/1"
RESPONSE_SCHEMA = "flattrfed.statement-response/1"
SPLIT_RULE = "flattrfed-split/1"
MAX_LINES = 100_000

# Reason codes of a disputed line (research/clearing.md §4.3).
LIKE_NOT_RECEIVED = "LIKE_NOT_RECEIVED"
LIKE_UNDONE = "LIKE_UNDONE"
UNKNOWN_OBJECT = "UNKNOWN_OBJECT"
OUT_OF_PERIOD = "OUT_OF_PERIOD"
WRONG_DONOR = "WRONG_DONOR"
DUPLICATE_LINE = "DUPLICATE_LINE"
SHARE_INCONSISTENT = "SHARE_INCONSISTENT"
TOTAL_MISMATCH = "TOTAL_MISMATCH"
BAD_LINE_ID = "BAD_LINE_ID"
LIKE_NOT_IN_STATEMENT = "LIKE_NOT_IN_STATEMENT"


class StatementError(ValueError):
    """A statement document that cannot even be read (wrong schema, shape, currency)."""


@dataclass(frozen=True)
class Line:
    like_uri: str
    donor_uri: str
    object_uri: str
    amount_minor: int


@dataclass(frozen=True)
class ReceivedFlattr:
    """What the receiver knows of one Like it received (from its received_likes table)."""

    like_uri: str
    actor_uri: str
    object_uri: str
    period: str | None
    received_at: datetime
    undone_at: datetime | None
    ours: bool  # the object is one of our things or their posts


@dataclass(frozen=True)
class Dispute:
    line: str
    reason: str
    like: str | None = None


@dataclass(frozen=True)
class Verdict:
    accepted: bool
    accepted_minor: int
    disputes: tuple[Dispute, ...]


def line_id(like_uri: str) -> str:
    """A line's id: the hash of its Like, so a Like can stand in one line of one period ever."""
    return "sha256:" + hashlib.sha256(like_uri.encode()).hexdigest()


def statement_id(base_url: str, period: str, counterparty_host: str, revision: int) -> str:
    return f"{base_url}/settlement/{period}/{counterparty_host}/r{revision}"


def build_statement(
    *,
    issuer: str,
    counterparty: str,
    statement_uri: str,
    revision: int,
    supersedes: str | None,
    period: str,
    currency: str,
    fee_bp: int,
    lines: Iterable[Line],
    issued: datetime,
    threshold_minor: int = 0,
) -> dict[str, Any]:
    """The unsigned statement document for one (period, issuer, counterparty)."""
    ordered = sorted(lines, key=lambda line: line.like_uri)
    donors: dict[str, list[Line]] = defaultdict(list)
    for line in ordered:
        donors[line.donor_uri].append(line)
    line_docs = [
        {
            "line": line_id(line.like_uri),
            "like": line.like_uri,
            "donor": line.donor_uri,
            "object": line.object_uri,
            "amount": str(line.amount_minor),
        }
        for line in ordered
    ]
    return {
        "@context": [AS_CONTEXT, FLATTR_TERMS],
        "type": "SettlementStatement",
        "schema": SCHEMA,
        "id": statement_uri,
        "revision": revision,
        "supersedes": supersedes,
        "period": period,
        "issuer": issuer,
        "counterparty": counterparty,
        "currency": currency,
        "rules": {
            "split": SPLIT_RULE,
            "feeBasisPoints": fee_bp,
            # Nets below this carry to the next month; both sides use the larger threshold.
            "settlementThresholdMinor": str(threshold_minor),
        },
        "donors": [
            {"donor": donor, "share": str(rows[0].amount_minor), "lines": len(rows)}
            for donor, rows in sorted(donors.items())
        ],
        "lines": line_docs,
        "totals": {
            "lines": len(ordered),
            "amount": str(sum(line.amount_minor for line in ordered)),
        },
        "linesDigest": sha256_digest(line_docs),
        "issued": iso(issued),
    }


def _amount(value: Any, what: str) -> int:
    try:
        amount = Money.from_wire({"amount": value, "currency": "EUR"}).amount_minor
    except (ValueError, TypeError):
        raise StatementError(f"{what} is not an amount in minor units") from None
    if amount < 0:
        raise StatementError(f"{what} is negative: a statement only ever owes money one way")
    return amount


def read_lines(document: Mapping[str, Any], *, currency: str) -> tuple[list[Line], int, list[str]]:
    """The lines, the declared total and line ids of a received statement; StatementError if
    its shape is wrong (a hostile issuer controls every byte of it)."""
    if document.get("schema") != SCHEMA or document.get("type") != "SettlementStatement":
        raise StatementError("not a flattrfed.statement/1 document")
    if document.get("currency") != currency:
        raise StatementError(f"the statement is in {document.get('currency')!r}, not {currency}")
    raw = document.get("lines")
    totals = document.get("totals")
    if not isinstance(raw, list) or len(raw) > MAX_LINES or not isinstance(totals, dict):
        raise StatementError("lines or totals missing")
    lines: list[Line] = []
    ids: list[str] = []
    for item in raw:
        if not isinstance(item, dict):
            raise StatementError("a line is not an object")
        fields = [item.get(key) for key in ("line", "like", "donor", "object")]
        if not all(isinstance(value, str) and len(value) <= 2048 for value in fields):
            raise StatementError("a line lacks line, like, donor or object")
        ids.append(str(item["line"]))
        lines.append(
            Line(
                str(item["like"]),
                str(item["donor"]),
                str(item["object"]),
                _amount(item.get("amount"), "a line amount"),
            )
        )
    return lines, _amount(totals.get("amount"), "the total"), ids


def verify_lines(
    document: Mapping[str, Any],
    *,
    currency: str,
    period: str,
    cutoff: datetime,
    received: Mapping[str, ReceivedFlattr],
    expected_from_issuer: Iterable[str],
) -> Verdict:
    """Check every line against the Likes we received (research/clearing.md §4.6).

    `received` maps like ids to what we recorded; `expected_from_issuer` are the like ids of
    flattrs of this period we received from the issuer's donors, so a missing line is caught.
    """
    lines, declared_total, ids = read_lines(document, currency=currency)
    disputes: list[Dispute] = []
    seen: set[str] = set()
    by_donor: dict[str, set[int]] = defaultdict(set)
    declared_shares = {
        str(entry.get("donor")): entry.get("share")
        for entry in document.get("donors", [])
        if isinstance(entry, dict)
    }
    for line, given_id in zip(lines, ids, strict=True):
        lid = line_id(line.like_uri)
        by_donor[line.donor_uri].add(line.amount_minor)
        if given_id != lid:
            disputes.append(Dispute(given_id, BAD_LINE_ID, line.like_uri))
            continue
        if lid in seen:
            disputes.append(Dispute(lid, DUPLICATE_LINE, line.like_uri))
            continue
        seen.add(lid)
        like = received.get(line.like_uri)
        if like is None:
            disputes.append(Dispute(lid, LIKE_NOT_RECEIVED, line.like_uri))
        elif like.actor_uri != line.donor_uri:
            disputes.append(Dispute(lid, WRONG_DONOR, line.like_uri))
        elif not like.ours or like.object_uri != line.object_uri:
            disputes.append(Dispute(lid, UNKNOWN_OBJECT, line.like_uri))
        elif like.period != period or like.received_at >= cutoff:
            disputes.append(Dispute(lid, OUT_OF_PERIOD, line.like_uri))
        elif like.undone_at is not None and like.undone_at < cutoff:
            disputes.append(Dispute(lid, LIKE_UNDONE, line.like_uri))
    for donor, amounts in by_donor.items():
        declared = declared_shares.get(donor)
        if len(amounts) != 1 or declared != str(next(iter(amounts))):
            for line in lines:
                if line.donor_uri == donor:
                    disputes.append(
                        Dispute(line_id(line.like_uri), SHARE_INCONSISTENT, line.like_uri)
                    )
    total = sum(line.amount_minor for line in lines)
    if total != declared_total or document.get("linesDigest") != sha256_digest(
        document.get("lines")
    ):
        disputes.append(Dispute("totals", TOTAL_MISMATCH))
    listed = {line.like_uri for line in lines}
    for like_uri in sorted(set(expected_from_issuer) - listed):
        disputes.append(Dispute(line_id(like_uri), LIKE_NOT_IN_STATEMENT, like_uri))
    # A Like we received that the issuer did not put in the statement is reported, but does
    # not stop acceptance: the issuer decides what its donors pay (e.g. it saw the Undo first).
    blocking = [dispute for dispute in disputes if dispute.reason != LIKE_NOT_IN_STATEMENT]
    accepted = sum(line.amount_minor for line in lines)
    return Verdict(not blocking, accepted if not blocking else 0, tuple(disputes))


def disputed_like_ids(response: Mapping[str, Any]) -> set[str]:
    """The Likes whose lines a StatementResponse disputes (the issuer leaves them out next time)."""
    found: set[str] = set()
    for entry in response.get("disputed", []) if isinstance(response.get("disputed"), list) else []:
        if (
            isinstance(entry, dict)
            and entry.get("reason") != LIKE_NOT_IN_STATEMENT
            and isinstance(entry.get("like"), str)
        ):
            found.add(entry["like"])
    return found


def response_document(
    *,
    statement: Mapping[str, Any],
    responder: str,
    response_uri: str,
    verdict: Verdict,
    issued: datetime,
) -> dict[str, Any]:
    """Our signed answer (unsigned here): accepted, or rejected with per-line reasons."""
    return {
        "@context": [AS_CONTEXT, FLATTR_TERMS],
        "type": "StatementResponse",
        "schema": RESPONSE_SCHEMA,
        # On the responder's origin: nobody can speak for ids on another server (FEP-fe34).
        "id": response_uri,
        "statement": statement["id"],
        "statementDigest": statement_digest(statement),
        "responder": responder,
        "status": "accepted" if verdict.accepted else "rejected",
        "acceptedAmount": str(verdict.accepted_minor),
        "disputed": [
            {"line": d.line, "reason": d.reason, **({"like": d.like} if d.like else {})}
            for d in verdict.disputes
        ],
        "issued": iso(issued),
    }


def statement_digest(document: Mapping[str, Any]) -> str:
    """The digest of a statement without its proof: equal ids with other digests = equivocation."""
    return sha256_digest({key: value for key, value in document.items() if key != "proof"})
