"""Statement pages: the receiver fetches them from the issuer into a spool; the issuer serves them.

A statement's first page travels inside the signed document; pages 2..N are fetched with
signed GETs from `linePages?page=N` on the issuer's own origin, each an OrderedCollectionPage
of at most PAGE_LINES lines. Pages carry no proof of their own: the signed `linesDigest`,
`totals.lines` and `totals.pages` cover them, and the verification checks those. Fetched pages
are written to a temporary file as they arrive, so a long statement is never held in memory and
no database connection is held while the network is waited for.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from flattrfed.activitypub.client import FederationClient, FetchError, Signer
from flattrfed.activitypub.documents import AS_CONTEXT
from flattrfed.activitypub.origins import BadUri, origin_of
from flattrfed.settlement import statements as st

# Every page fits the client's 1 MiB cap; this caps what a whole statement may make us fetch.
MAX_STATEMENT_BYTES = 1 << 30


class PageError(Exception):
    """A page could not be fetched or is not a page of this statement; `permanent` when the
    signed document itself is at fault (retrying cannot help)."""

    def __init__(self, reason: str, *, permanent: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.permanent = permanent


def page_url(lines_url: str, number: int) -> str:
    return f"{lines_url}?page={number}"


def page_document(
    statement: dict[str, Any], number: int, items: list[dict[str, str]]
) -> dict[str, Any]:
    """What the issuer serves for page `number` of its signed `statement`."""
    lines_url = str(statement["linePages"])
    pages = int(statement["totals"]["pages"])
    document: dict[str, Any] = {
        "@context": AS_CONTEXT,
        "type": "OrderedCollectionPage",
        "id": page_url(lines_url, number),
        "partOf": lines_url,
        "statement": statement["id"],
        "orderedItems": items,
    }
    if number > 1:
        document["prev"] = page_url(lines_url, number - 1)
    if number < pages:
        document["next"] = page_url(lines_url, number + 1)
    return document


class LineSpool:
    """All pages of one received statement, in order: the first from the document, the others
    as fetched, one JSON line each in a temporary file."""

    def __init__(self, first: list[Any]) -> None:
        self._first = first
        self._file: IO[bytes] | None = None
        self.bytes = 0

    def add(self, items: list[Any]) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile()  # noqa: SIM115 - closed by close()
        data = json.dumps(items, ensure_ascii=False).encode("utf-8")
        self.bytes += len(data)
        if self.bytes > MAX_STATEMENT_BYTES:
            raise PageError(f"the pages exceed {MAX_STATEMENT_BYTES:,} bytes", permanent=True)
        self._file.write(data + b"\n")

    def pages(self) -> Iterator[list[Any]]:
        yield self._first
        if self._file is None:
            return
        self._file.seek(0)
        for raw in self._file:
            yield json.loads(raw)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


async def collect(
    client: FederationClient, signer: Signer, document: dict[str, Any], *, allow_http: bool
) -> LineSpool:
    """The pages of a received statement whose header (`statements.read_header`) was read.

    PageError, `permanent`, when `linePages` is not on the issuer's origin; PageError, not
    permanent, when a page cannot be fetched or is not a page of
    this statement (the issuer may be down or broken for a while).
    """
    first = document.get("lines")
    totals = document.get("totals")
    count = totals.get("pages") if isinstance(totals, dict) else None
    spool = LineSpool(first if isinstance(first, list) else [])
    if not isinstance(first, list) or type(count) is not int or not 1 < count <= st.MAX_PAGES:
        # One page, or a header the verification refuses as unreadable: nothing to fetch.
        return spool
    lines_url = document.get("linePages")
    try:
        if not isinstance(lines_url, str) or origin_of(
            lines_url, allow_http=allow_http
        ) != origin_of(str(document.get("issuer")), allow_http=allow_http):
            raise PageError("linePages is not on the issuer's origin", permanent=True)
    except BadUri:
        raise PageError("linePages is not a URL", permanent=True) from None
    try:
        for number in range(2, count + 1):
            spool.add(await _fetch_page(client, signer, lines_url, number))
    except BaseException:
        spool.close()
        raise
    return spool


async def _fetch_page(
    client: FederationClient, signer: Signer, lines_url: str, number: int
) -> list[Any]:
    url = page_url(lines_url, number)
    try:
        # The page's id must be the URL asked for, and after a redirect the final origin must
        # be the id's: a page served from anywhere else is refused.
        page = await client.fetch_activitypub(url, signer=signer)
    except FetchError as error:
        raise PageError(f"page {number}: {error.reason}") from None
    items = page.get("orderedItems")
    if page.get("type") != "OrderedCollectionPage" or page.get("partOf") != lines_url:
        raise PageError(f"page {number} is not a page of {lines_url}")
    if not isinstance(items, list) or not 1 <= len(items) <= st.PAGE_LINES:
        raise PageError(f"page {number} does not hold 1 to {st.PAGE_LINES} lines")
    return items
