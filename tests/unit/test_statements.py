"""Statements are built from shares and every kind of wrong line is caught with its reason."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from flattrfed.settlement import statements as st
from flattrfed.settlement.canonical import sha256_digest
from flattrfed.settlement.statements import Line, ReceivedFlattr, StatementError

CUTOFF = datetime(2026, 12, 1, tzinfo=UTC)
DURING = datetime(2026, 11, 20, tzinfo=UTC)
A = "https://a.example/users/ann"
B = "https://a.example/users/ben"
THING = "https://b.example/things/zine"


def like(n: int) -> str:
    return f"https://a.example/users/x/flattrs/{n}"


LINES = [Line(like(1), A, THING, 221), Line(like(2), A, THING, 221), Line(like(3), B, THING, 1583)]


def received(**changes: Any) -> dict[str, ReceivedFlattr]:
    result = {
        line.like_uri: ReceivedFlattr(
            line.like_uri, line.donor_uri, THING, "2026-11", DURING, None, True
        )
        for line in LINES
    }
    for uri, record in changes.items():
        result[uri] = record
    return result


def statement(lines: list[Line] = LINES) -> dict[str, Any]:
    return st.build_statement(
        issuer="https://a.example/actor",
        counterparty="https://b.example/actor",
        statement_uri=st.statement_id("https://a.example", "2026-11", "b.example", 1),
        revision=1,
        supersedes=None,
        period="2026-11",
        currency="EUR",
        fee_bp=500,
        lines=lines,
        issued=CUTOFF,
    )


def verdict(
    document: dict[str, Any],
    records: dict[str, ReceivedFlattr] | None = None,
    expected: list[str] | None = None,
) -> st.Verdict:
    records = received() if records is None else records
    return st.verify_lines(
        document,
        currency="EUR",
        period="2026-11",
        cutoff=CUTOFF,
        received=records,
        expected_from_issuer=[line.like_uri for line in LINES] if expected is None else expected,
    )


def reasons(result: st.Verdict) -> set[str]:
    return {dispute.reason for dispute in result.disputes}


def test_an_honest_statement_is_accepted_in_full() -> None:
    document = statement()
    assert document["totals"] == {"lines": 3, "amount": str(221 * 2 + 1583), "pages": 1}
    assert document["linePages"] == document["id"] + "/lines"
    assert [line["like"] for line in document["lines"]] == [like(1), like(2), like(3)]
    result = verdict(document)
    assert result.accepted
    assert result.accepted_minor == 221 * 2 + 1583


def test_an_inflated_line_is_an_inconsistent_share_and_a_total_mismatch() -> None:
    document = statement()
    document["lines"][0]["amount"] = "999"
    result = verdict(document)
    assert not result.accepted
    assert result.accepted_minor == 0
    assert {st.SHARE_INCONSISTENT, st.TOTAL_MISMATCH} <= reasons(result)


def test_a_phantom_like_is_not_received() -> None:
    document = statement([*LINES, Line(like(9), B, THING, 1583)])
    assert reasons(verdict(document)) == {st.LIKE_NOT_RECEIVED}


def test_likes_undone_before_the_cutoff_out_of_period_or_for_other_objects_are_disputed() -> None:
    undone = ReceivedFlattr(like(1), A, THING, "2026-11", DURING, DURING + timedelta(days=1), True)
    late = ReceivedFlattr(like(2), A, THING, "2026-11", CUTOFF + timedelta(hours=1), None, True)
    other = ReceivedFlattr(
        like(3), B, "https://b.example/things/other", "2026-11", DURING, None, True
    )
    result = verdict(statement(), received(**{like(1): undone, like(2): late, like(3): other}))
    assert reasons(result) == {st.LIKE_UNDONE, st.OUT_OF_PERIOD, st.UNKNOWN_OBJECT}


def test_a_like_undone_after_the_cutoff_still_counts() -> None:
    undone_late = ReceivedFlattr(
        like(1), A, THING, "2026-11", DURING, CUTOFF + timedelta(days=2), True
    )
    assert verdict(statement(), received(**{like(1): undone_late})).accepted


def test_a_like_sent_by_another_donor_is_disputed() -> None:
    stolen = ReceivedFlattr(like(1), B, THING, "2026-11", DURING, None, True)
    assert st.WRONG_DONOR in reasons(verdict(statement(), received(**{like(1): stolen})))


def test_a_received_flattr_missing_from_the_statement_is_reported() -> None:
    result = verdict(statement(LINES[:2]), expected=[line.like_uri for line in LINES])
    assert reasons(result) == {st.LIKE_NOT_IN_STATEMENT}
    assert result.accepted  # reported, but the issuer decides what its donors pay
    assert result.accepted_minor == 221 * 2


def test_duplicate_lines_and_forged_line_ids_are_disputed() -> None:
    document = statement()
    document["lines"].insert(1, copy.deepcopy(document["lines"][0]))
    assert st.DUPLICATE_LINE in reasons(verdict(document))
    document = statement()
    document["lines"][1]["line"] = "sha256:" + "0" * 64
    assert st.BAD_LINE_ID in reasons(verdict(document))


def test_an_edited_line_breaks_the_lines_digest() -> None:
    document = statement()
    document["lines"][2]["object"] = THING + "?x"
    assert st.TOTAL_MISMATCH in reasons(verdict(document))


@pytest.mark.parametrize(
    "broken",
    [
        {"schema": "flattrfed.statement/1"},
        {"currency": "USD"},
        {"lines": "all of them"},
        {"totals": {"amount": "1.5"}},
        {"totals": {"lines": 3, "amount": "-5", "pages": 1}},
        {"totals": {"lines": 3, "amount": "2025", "pages": 0}},
        {"totals": {"lines": 3, "amount": "2025", "pages": 4}},
        {"totals": {"lines": 2_000_000, "amount": "2025", "pages": 1}},
        {"totals": {"lines": True, "amount": "2025", "pages": 1}},
    ],
)
def test_an_unreadable_statement_is_refused_outright(broken: dict[str, Any]) -> None:
    document = {**statement(), **broken}
    with pytest.raises(StatementError):
        verdict(document)


def test_the_digest_ignores_the_proof_but_not_the_content() -> None:
    document = statement()
    digest = st.statement_digest(document)
    assert st.statement_digest({**document, "proof": {"x": 1}}) == digest
    assert st.statement_digest({**document, "revision": 2}) != digest


def test_the_response_lists_each_disputed_line_with_its_reason() -> None:
    document = statement([*LINES, Line(like(9), B, THING, 1583)])
    response = st.response_document(
        statement=document,
        responder="https://b.example/actor",
        response_uri="https://b.example/settlement/2026-11/responses/1",
        verdict=verdict(document),
        issued=CUTOFF,
    )
    assert response["status"] == "rejected"
    assert response["disputed"] == [
        {"line": st.line_id(like(9)), "reason": st.LIKE_NOT_RECEIVED, "like": like(9)}
    ]
    assert response["statementDigest"] == st.statement_digest(document)


def test_a_negative_line_amount_makes_the_statement_unreadable() -> None:
    document = statement()
    document["lines"][0]["amount"] = "-5"
    with pytest.raises(StatementError, match="negative"):
        verdict(document)


def test_lines_out_of_the_order_of_their_likes_make_the_statement_unreadable() -> None:
    document = statement()
    document["lines"].reverse()
    with pytest.raises(StatementError, match="order"):
        verdict(document)


def test_a_line_with_an_extra_or_missing_field_makes_the_statement_unreadable() -> None:
    document = statement()
    document["lines"][0]["note"] = "x"
    with pytest.raises(StatementError):
        verdict(document)
    document = statement()
    del document["lines"][0]["donor"]
    with pytest.raises(StatementError):
        verdict(document)


def many_lines(count: int, uri_length: int = 40) -> list[Line]:
    pad = "p" * max(0, uri_length - 40)
    return [
        Line(f"https://a.example/users/d{n % 97}/flattrs/{n:07d}{pad}", A, THING, 7)
        for n in range(count)
    ]


def paged(lines: list[Line]) -> tuple[dict[str, Any], list[list[dict[str, str]]]]:
    return st.build_paged_statement(
        issuer="https://a.example/actor",
        counterparty="https://b.example/actor",
        statement_uri=st.statement_id("https://a.example", "2026-11", "b.example", 1),
        revision=1,
        supersedes=None,
        period="2026-11",
        currency="EUR",
        fee_bp=0,
        lines=lines,
        issued=CUTOFF,
    )


def test_a_long_statement_is_cut_into_pages_of_at_most_a_thousand_lines() -> None:
    document, pages = paged(many_lines(2_500))
    assert [len(page) for page in pages] == [1_000, 1_000, 500]
    assert document["lines"] == pages[0]
    assert document["totals"] == {"lines": 2_500, "amount": str(7 * 2_500), "pages": 3}
    everything = [line for page in pages for line in page]
    assert [line["like"] for line in everything] == sorted(line["like"] for line in everything)
    # The digest covers every line of every page: the same as the digest of one long list.
    assert document["linesDigest"] == sha256_digest(everything)


def test_pages_of_long_lines_are_cut_by_size_to_fit_the_json_limits() -> None:
    document, pages = paged(many_lines(1_200, uri_length=1_500))
    assert len(pages) > 2
    for page in pages:
        assert len(json.dumps(page)) <= st.PAGE_BYTES
    assert sum(len(page) for page in pages) == 1_200
    assert document["totals"]["pages"] == len(pages)


def test_a_statement_with_no_lines_has_one_empty_page() -> None:
    document, pages = paged([])
    assert pages == [[]]
    assert document["totals"] == {"lines": 0, "amount": "0", "pages": 1}
    assert document["linesDigest"] == sha256_digest([])


def verdict_of_pages(document: dict[str, Any], pages: list[list[dict[str, str]]]) -> st.Verdict:
    records = {
        line["like"]: ReceivedFlattr(line["like"], A, THING, "2026-11", DURING, None, True)
        for page in pages
        for line in page
    }
    return st.verify_lines(
        document,
        currency="EUR",
        period="2026-11",
        cutoff=CUTOFF,
        received=records,
        expected_from_issuer=list(records),
        pages=pages,
    )


def test_every_page_is_checked_and_a_page_changed_breaks_the_digest() -> None:
    document, pages = paged(many_lines(2_500))
    honest = verdict_of_pages(document, pages)
    assert honest.accepted
    assert honest.accepted_minor == 7 * 2_500

    # Dropped, duplicated or changed on page 2: the signed totals and digest no longer agree.
    dropped = copy.deepcopy(pages)
    del dropped[1][10]
    assert st.TOTAL_MISMATCH in reasons(verdict_of_pages(document, dropped))
    duplicated = copy.deepcopy(pages)
    duplicated[1].insert(11, copy.deepcopy(duplicated[1][10]))
    assert {st.DUPLICATE_LINE, st.TOTAL_MISMATCH} <= reasons(verdict_of_pages(document, duplicated))
    changed = copy.deepcopy(pages)
    changed[2][0]["object"] = THING + "/other"
    assert st.TOTAL_MISMATCH in reasons(verdict_of_pages(document, changed))
    # A page left out altogether.
    assert st.TOTAL_MISMATCH in reasons(verdict_of_pages(document, pages[:2]))
