"""Settlement statements: built from shares, checked line by line against the Likes received.

Pure functions over plain values (no database, no network), so the issuer's and the receiver's
rules are the same code and each can be tested on its own. The format is `flattrfed.statement/2`
(docs/protocol.md, docs/settlement.md): the signed document carries the totals, the number of
pages, the digest of all lines and the first page; the other pages are fetched from the issuer
(`flattrfed.settlement.pages`). Amounts are decimal strings of minor units.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from flattrfed.activitypub.documents import AS_CONTEXT, FLATTR_TERMS, iso
from flattrfed.money import Money
from flattrfed.settlement.canonical import sha256_digest

SCHEMA = "flattrfed.statement/2"
RESPONSE_SCHEMA = "flattrfed.statement-response/1"
SPLIT_RULE = "flattrfed-split/1"
MAX_LINES = 1_000_000
# A page: at most this many lines, and at most PAGE_BYTES of them as ASCII-escaped JSON, so a
# page (and the first page inside an Offer) always fits the 1 MiB / 1,000-item JSON limits.
PAGE_LINES = 1_000
PAGE_BYTES = 600_000
MAX_PAGES = 10_000
MAX_URI = 2048
LINE_KEYS = frozenset({"line", "like", "donor", "object", "amount"})

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


def line_document(line: Line) -> dict[str, str]:
    return {
        "line": line_id(line.like_uri),
        "like": line.like_uri,
        "donor": line.donor_uri,
        "object": line.object_uri,
        "amount": str(line.amount_minor),
    }


def paginate(line_docs: Iterable[dict[str, str]]) -> Iterator[list[dict[str, str]]]:
    """Cut line documents into pages: a new page starts when the current one holds PAGE_LINES
    lines or the next line would take it over PAGE_BYTES. There is always at least one page."""
    page: list[dict[str, str]] = []
    size = 2
    for doc in line_docs:
        # The ASCII-escaped form is the longest a sender's serialiser can make it.
        length = len(json.dumps(doc)) + 1
        if page and (len(page) >= PAGE_LINES or size + length > PAGE_BYTES):
            yield page
            page, size = [], 2
        page.append(doc)
        size += length
    yield page


def lines_url(statement_uri: str) -> str:
    """Where the issuer serves the pages of a statement (`?page=N`, N from 1)."""
    return f"{statement_uri}/lines"


class LinesDigest:
    """`linesDigest`, computed a page at a time: the SHA-256 of the JCS of the array of all
    lines, exactly as `sha256_digest(all_lines)`, without holding all lines at once."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256(b"[")
        self._first = True

    def add_page(self, page: list[dict[str, str]]) -> None:
        """`page` must hold well-formed line documents only (see `parse_line`): for them
        json.dumps with sorted keys and no escaping of non-ASCII is exactly RFC 8785."""
        if not page:
            return
        text = json.dumps(page, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        try:
            body = text[1:-1].encode("utf-8")
        except UnicodeEncodeError:
            raise StatementError("a line holds a lone surrogate") from None
        if not self._first:
            self._hash.update(b",")
        self._first = False
        self._hash.update(body)

    def hexdigest(self) -> str:
        final = self._hash.copy()
        final.update(b"]")
        return "sha256:" + final.hexdigest()


def build_paged_statement(
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
) -> tuple[dict[str, Any], list[list[dict[str, str]]]]:
    """The unsigned statement document for one (period, issuer, counterparty), carrying the
    first page, and all its pages (the first included) for the issuer to serve."""
    ordered = sorted(lines, key=lambda line: line.like_uri)
    pages = list(paginate(line_document(line) for line in ordered))
    digest = LinesDigest()
    for page in pages:
        digest.add_page(page)
    document = {
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
        "lines": pages[0],
        "linePages": lines_url(statement_uri),
        "totals": {
            "lines": len(ordered),
            "amount": str(sum(line.amount_minor for line in ordered)),
            "pages": len(pages),
        },
        "linesDigest": digest.hexdigest(),
        "issued": iso(issued),
    }
    return document, pages


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
    """The unsigned statement document (with its first page only; see build_paged_statement)."""
    document, _pages = build_paged_statement(
        issuer=issuer,
        counterparty=counterparty,
        statement_uri=statement_uri,
        revision=revision,
        supersedes=supersedes,
        period=period,
        currency=currency,
        fee_bp=fee_bp,
        lines=lines,
        issued=issued,
        threshold_minor=threshold_minor,
    )
    return document


def _amount(value: Any, what: str) -> int:
    # The common case first: canonical non-negative minor units, as Money.from_wire reads them
    # ("0", or ASCII digits without a leading zero, at most 18); anything else goes through it.
    if (
        type(value) is str
        and value.isascii()
        and value.isdigit()
        and len(value) <= 18
        and (value[0] != "0" or value == "0")
    ):
        return int(value)
    try:
        amount = Money.from_wire({"amount": value, "currency": "EUR"}).amount_minor
    except (ValueError, TypeError):
        raise StatementError(f"{what} is not an amount in minor units") from None
    if amount < 0:
        raise StatementError(f"{what} is negative: a statement only ever owes money one way")
    return amount


@dataclass(frozen=True)
class Header:
    """The declared figures of a received statement, read and range-checked."""

    lines: int
    amount_minor: int
    pages: int
    digest: str


def read_header(document: Mapping[str, Any], *, currency: str) -> Header:
    """The totals of a received statement; StatementError if its shape is wrong (a hostile
    issuer controls every byte of it)."""
    if document.get("schema") != SCHEMA or document.get("type") != "SettlementStatement":
        raise StatementError(f"not a {SCHEMA} document")
    if document.get("currency") != currency:
        raise StatementError(f"the statement is in {document.get('currency')!r}, not {currency}")
    totals = document.get("totals")
    if not isinstance(document.get("lines"), list) or not isinstance(totals, dict):
        raise StatementError("lines or totals missing")
    count, pages, digest = totals.get("lines"), totals.get("pages"), document.get("linesDigest")
    if type(count) is not int or not 0 <= count <= MAX_LINES:
        raise StatementError(f"the line count is not a number from 0 to {MAX_LINES:,}")
    if type(pages) is not int or not 1 <= pages <= min(MAX_PAGES, max(count, 1)):
        raise StatementError("the page count is not a number from 1 to the line count")
    if not isinstance(digest, str) or len(digest) > 100:
        raise StatementError("linesDigest missing")
    return Header(count, _amount(totals.get("amount"), "the total"), pages, digest)


def parse_line(item: Any) -> tuple[str, Line]:
    """One line document: its given line id and its values; StatementError if malformed."""
    if not isinstance(item, dict) or item.keys() != LINE_KEYS:
        raise StatementError("a line is not an object of line, like, donor, object, amount")
    given, like, donor, target = item["line"], item["like"], item["donor"], item["object"]
    for value in (given, like, donor, target):
        if type(value) is not str or len(value) > MAX_URI:
            raise StatementError("a line's line, like, donor or object is not a short string")
    return given, Line(like, donor, target, _amount(item["amount"], "a line amount"))


def read_lines(document: Mapping[str, Any], *, currency: str) -> tuple[list[Line], int, list[str]]:
    """The lines, the declared total and line ids of a received one-page statement (its
    `lines` only); StatementError if its shape is wrong."""
    header = read_header(document, currency=currency)
    lines: list[Line] = []
    ids: list[str] = []
    for item in document["lines"]:
        given, line = parse_line(item)
        ids.append(given)
        lines.append(line)
    return lines, header.amount_minor, ids


def verify_lines(
    document: Mapping[str, Any],
    *,
    currency: str,
    period: str,
    cutoff: datetime,
    received: Mapping[str, ReceivedFlattr],
    expected_from_issuer: Iterable[str],
    pages: Iterable[list[Any]] | None = None,
) -> Verdict:
    """Check every line against the Likes we received (research/clearing.md §4.6), in memory.

    The reference rules; `flattrfed.settlement.verification` applies the same rules in SQL for
    statements of any size. `pages` are all pages (default: the document's own `lines`).
    `received` maps like ids to what we recorded; `expected_from_issuer` are the like ids of
    flattrs of this period we received from the issuer's donors, so a missing line is caught.
    """
    header = read_header(document, currency=currency)
    disputes: list[Dispute] = []
    lines: list[Line] = []
    amounts: dict[str, set[int]] = defaultdict(set)
    digest = LinesDigest()
    previous: str | None = None
    page_count = 0
    for page in pages if pages is not None else [document["lines"]]:
        page_count += 1
        parsed = [parse_line(item) for item in page]
        digest.add_page(page)
        for given_id, line in parsed:
            if previous is not None and line.like_uri < previous:
                raise StatementError("the lines are not in the order of their Likes")
            duplicate = line.like_uri == previous
            previous = line.like_uri
            lines.append(line)
            amounts[line.donor_uri].add(line.amount_minor)
            lid = line_id(line.like_uri)
            if given_id != lid:
                disputes.append(Dispute(given_id, BAD_LINE_ID, line.like_uri))
            elif duplicate:
                disputes.append(Dispute(lid, DUPLICATE_LINE, line.like_uri))
            else:
                reason = line_problem(line, received.get(line.like_uri), period, cutoff)
                if reason is not None:
                    disputes.append(Dispute(lid, reason, line.like_uri))
    for line in lines:
        if len(amounts[line.donor_uri]) != 1:
            disputes.append(Dispute(line_id(line.like_uri), SHARE_INCONSISTENT, line.like_uri))
    total = sum(line.amount_minor for line in lines)
    if (
        total != header.amount_minor
        or len(lines) != header.lines
        or page_count != header.pages
        or digest.hexdigest() != header.digest
    ):
        disputes.append(Dispute("totals", TOTAL_MISMATCH))
    listed = {line.like_uri for line in lines}
    for like_uri in sorted(set(expected_from_issuer) - listed):
        disputes.append(Dispute(line_id(like_uri), LIKE_NOT_IN_STATEMENT, like_uri))
    return verdict_of(disputes, total)


def line_problem(
    line: Line, like: ReceivedFlattr | None, period: str, cutoff: datetime
) -> str | None:
    """Why one line cannot be accepted against the Like we recorded, or None."""
    if like is None:
        return LIKE_NOT_RECEIVED
    if like.actor_uri != line.donor_uri:
        return WRONG_DONOR
    if not like.ours or like.object_uri != line.object_uri:
        return UNKNOWN_OBJECT
    if like.period != period or like.received_at >= cutoff:
        return OUT_OF_PERIOD
    if like.undone_at is not None and like.undone_at < cutoff:
        return LIKE_UNDONE
    return None


def verdict_of(disputes: list[Dispute], total: int) -> Verdict:
    # A Like we received that the issuer did not put in the statement is reported, but does
    # not stop acceptance: the issuer decides what its donors pay (e.g. it saw the Undo first).
    blocking = any(dispute.reason != LIKE_NOT_IN_STATEMENT for dispute in disputes)
    return Verdict(not blocking, 0 if blocking else total, tuple(disputes))


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
