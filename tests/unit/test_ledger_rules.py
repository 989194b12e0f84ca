"""The ledger's pure rules: account codes and kinds, posting validation, the content hash."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flattrfed.settlement.ledger import (
    CASH_BANK,
    EXTERNAL,
    FEES,
    LedgerError,
    account_kind,
    content_hash,
    deposit_txid,
    earnings_available,
    earnings_pending,
    is_member_liability,
    member_of,
    normalized_postings,
    payout_txid,
    payouts_pending,
    peer_payable,
    peer_receivable,
    wallet,
)


def test_account_codes_follow_the_chart_of_accounts() -> None:
    assert wallet(12) == "member:12:wallet"
    assert earnings_pending(12) == "member:12:earnings:pending"
    assert earnings_available(12) == "member:12:earnings:available"
    assert payouts_pending(12) == "member:12:payouts:pending"
    assert peer_payable("B.Example:8443") == "peer:b.example:8443:payable"
    assert peer_receivable("b.example") == "peer:b.example:receivable"
    assert (CASH_BANK, FEES, EXTERNAL) == ("cash:bank", "income:fees", "external")
    assert deposit_txid("DEP-1") == "deposit:DEP-1"
    assert payout_txid(7, "paid") == "payout:7:paid"


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        ("cash:bank", "asset"),
        ("cash:psp", "asset"),
        ("peer:b.example:receivable", "asset"),
        ("peer:[::1]:8080:receivable", "asset"),
        ("member:1:wallet", "liability"),
        ("member:1:earnings:pending", "liability"),
        ("member:1:earnings:available", "liability"),
        ("member:1:payouts:pending", "liability"),
        ("peer:b.example:payable", "liability"),
        ("income:fees", "income"),
        ("external", "equity"),
    ],
)
def test_account_kind_follows_from_the_code(code: str, kind: str) -> None:
    assert account_kind(code) == kind


@pytest.mark.parametrize(
    "code",
    [
        "",
        "cash",
        "cash:",
        "Cash:bank",
        "member:0:wallet",
        "member:01:wallet",
        "member:x:wallet",
        "member:1:savings",
        "member:1:earnings",
        "peer::payable",
        "peer:b.example:owed",
        "peer:b example:payable",
        "income:",
        "externals",
        "world",
    ],
)
def test_unknown_account_codes_are_refused(code: str) -> None:
    with pytest.raises(ValueError, match="unknown account code"):
        account_kind(code)


@pytest.mark.parametrize("bad", [0, -1, True, "1", 1.0])
def test_member_codes_need_a_positive_int_id(bad: Any) -> None:
    with pytest.raises(ValueError, match="positive int"):
        wallet(bad)


def test_member_of_reads_the_id_from_member_codes_only() -> None:
    assert member_of("member:42:earnings:pending") == 42
    assert member_of("cash:bank") is None
    assert member_of("peer:b.example:payable") is None
    assert is_member_liability("member:42:wallet")
    assert not is_member_liability("peer:b.example:payable")
    assert not is_member_liability("cash:bank")


def test_valid_postings_come_back_sorted_by_code() -> None:
    assert normalized_postings([("member:1:wallet", -500), ("cash:bank", 500)]) == (
        ("cash:bank", 500),
        ("member:1:wallet", -500),
    )


@pytest.mark.parametrize(
    ("postings", "message"),
    [
        ([], "needs postings"),
        ([("cash:bank", 5)], "sum to 5"),
        ([("cash:bank", 5), ("member:1:wallet", -4)], "sum to 1"),
        ([("cash:bank", 0), ("member:1:wallet", 0)], "is zero"),
        ([("cash:bank", 5.0), ("member:1:wallet", -5.0)], "must be an int"),
        ([("cash:bank", True), ("member:1:wallet", -1)], "must be an int"),
        ([("cash:bank", 2**53), ("member:1:wallet", -(2**53))], "2\\*\\*53"),
        ([("cash:bank", 5), ("cash:bank", -5)], "appears twice"),
        ([("cash:bank", 5), ("nowhere", -5)], "unknown account code"),
        ([("cash:bank", 5, 1)], "pair"),
    ],
)
def test_invalid_postings_are_refused(postings: list[Any], message: str) -> None:
    with pytest.raises(LedgerError, match=message):
        normalized_postings(postings)


def test_largest_amount_below_the_bound_is_accepted() -> None:
    limit = 2**53 - 1
    assert normalized_postings([("cash:bank", limit), ("external", -limit)])


def test_content_hash_ignores_posting_order_and_covers_every_field() -> None:
    lines = [("cash:bank", 500), ("member:1:wallet", -500)]
    base = content_hash("deposit", "EUR", lines, "memo")
    assert base == content_hash("deposit", "EUR", list(reversed(lines)), "memo")
    assert len(base) == 64
    others = {
        content_hash("payout", "EUR", lines, "memo"),
        content_hash("deposit", "SEK", lines, "memo"),
        content_hash("deposit", "EUR", [("cash:bank", 501), ("member:1:wallet", -501)], "memo"),
        content_hash("deposit", "EUR", [("cash:psp", 500), ("member:1:wallet", -500)], "memo"),
        content_hash("deposit", "EUR", lines, "memo2"),
    }
    assert base not in others
    assert len(others) == 5


@given(
    st.lists(
        st.tuples(st.sampled_from(["cash:bank", "external", "member:1:wallet"]), st.integers()),
        max_size=4,
    ),
    st.text(max_size=20),
)
def test_content_hash_is_deterministic(lines: list[tuple[str, int]], memo: str) -> None:
    assert content_hash("k", "EUR", lines, memo) == content_hash("k", "EUR", lines[::-1], memo)
