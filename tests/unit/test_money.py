"""Money values, their text and wire forms, and the flattrfed-split/1 rule."""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flattrfed.money import (
    CURRENCY_EXPONENTS,
    MAX_ABS_MINOR,
    CurrencyMismatch,
    Money,
    Split,
    is_currency,
    split_budget,
)

currencies = st.sampled_from(sorted(CURRENCY_EXPONENTS))
amounts = st.integers(min_value=-MAX_ABS_MINOR, max_value=MAX_ABS_MINOR)
moneys = st.builds(Money, amounts, currencies)
non_negative = st.integers(min_value=0, max_value=10**15)
fee_bps = st.integers(min_value=0, max_value=10_000)


def shares_by_thing(
    budget_minor: int, wallet_minor: int, fee_bp: int, thing_ids: list[str]
) -> dict[str, int]:
    """What each distinct thing receives when a donor flattred `thing_ids` (repeats allowed)."""
    distinct = set(thing_ids)
    split = split_budget(budget_minor, wallet_minor, fee_bp, len(distinct))
    return {thing: split.share_minor for thing in distinct}


# --- currencies ---------------------------------------------------------------------------


def test_common_currencies_have_their_iso_exponents() -> None:
    expected = {"EUR": 2, "USD": 2, "GBP": 2, "CHF": 2, "SEK": 2, "JPY": 0, "KRW": 0, "KWD": 3}
    assert {code: CURRENCY_EXPONENTS[code] for code in expected} == expected


def test_currency_table_covers_the_active_iso_list() -> None:
    assert len(CURRENCY_EXPONENTS) > 150
    assert all(len(code) == 3 and code.isascii() and code.isupper() for code in CURRENCY_EXPONENTS)
    assert set(CURRENCY_EXPONENTS.values()) <= {0, 2, 3, 4}


def test_withdrawn_and_unitless_codes_are_not_currencies() -> None:
    for code in ["HRK", "SLL", "ZWL", "DEM", "XAU", "XXX", "XTS"]:
        assert not is_currency(code)


def test_currency_codes_are_case_sensitive_and_must_be_strings() -> None:
    assert is_currency("EUR")
    assert not is_currency("eur")
    assert not is_currency(" EUR")
    assert not is_currency(None)
    assert not is_currency(["EUR"])


# --- construction ---------------------------------------------------------------------------


@pytest.mark.parametrize("bad_amount", [1.5, 1.0, Decimal("1"), True, False, "1", None])
def test_money_refuses_amounts_that_are_not_plain_ints(bad_amount: Any) -> None:
    with pytest.raises(TypeError):
        Money(bad_amount, "EUR")


@pytest.mark.parametrize("bad_currency", ["eur", "EURO", "", "XXX", "HRK", None])
def test_money_refuses_unknown_currencies(bad_currency: Any) -> None:
    with pytest.raises(ValueError, match="currency"):
        Money(1, bad_currency)


def test_money_refuses_amounts_beyond_eighteen_digits() -> None:
    assert Money(MAX_ABS_MINOR, "EUR").amount_minor == 10**18 - 1
    with pytest.raises(ValueError, match="18 digits"):
        Money(10**18, "EUR")
    with pytest.raises(ValueError, match="18 digits"):
        Money(-(10**18), "EUR")


def test_money_is_immutable() -> None:
    money = Money(5, "EUR")
    with pytest.raises(AttributeError):
        money.amount_minor = 6  # type: ignore[misc]


# --- arithmetic and comparison ----------------------------------------------------------------


def test_adding_and_subtracting_money_of_one_currency() -> None:
    assert Money(150, "EUR") + Money(75, "EUR") == Money(225, "EUR")
    assert Money(150, "EUR") - Money(175, "EUR") == Money(-25, "EUR")
    assert -Money(25, "EUR") == Money(-25, "EUR")


def test_adding_money_of_two_currencies_raises() -> None:
    with pytest.raises(CurrencyMismatch):
        _ = Money(1, "EUR") + Money(1, "USD")


def test_subtracting_money_of_two_currencies_raises() -> None:
    with pytest.raises(CurrencyMismatch):
        _ = Money(1, "EUR") - Money(1, "USD")


def test_currency_mismatch_is_a_value_error() -> None:
    assert issubclass(CurrencyMismatch, ValueError)


def test_adding_a_plain_int_to_money_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        _ = Money(1, "EUR") + 1  # type: ignore[operator]


def test_comparing_money_of_one_currency_orders_by_amount() -> None:
    small, large = Money(1, "EUR"), Money(2, "EUR")
    assert small < large
    assert small <= large
    assert large > small
    assert large >= small
    assert small <= Money(1, "EUR")
    assert max([small, large]) == large


@pytest.mark.parametrize(
    "compare",
    [
        lambda a, b: a < b,
        lambda a, b: a <= b,
        lambda a, b: a > b,
        lambda a, b: a >= b,
    ],
)
def test_ordering_money_of_two_currencies_raises(compare: Any) -> None:
    with pytest.raises(CurrencyMismatch):
        compare(Money(1, "EUR"), Money(2, "USD"))


def test_money_of_two_currencies_is_unequal_rather_than_an_error() -> None:
    assert Money(1, "EUR") != Money(1, "USD")
    assert len({Money(1, "EUR"), Money(1, "USD"), Money(1, "EUR")}) == 2


def test_zero_is_zero_in_the_given_currency() -> None:
    zero = Money.zero("JPY")
    assert zero == Money(0, "JPY")
    assert zero.is_zero
    assert not Money(-1, "JPY").is_zero
    assert Money(-1, "JPY").is_negative
    assert not zero.is_negative


half_amounts = st.integers(min_value=-(MAX_ABS_MINOR // 2), max_value=MAX_ABS_MINOR // 2)


@given(half_amounts, half_amounts, currencies)
def test_adding_then_subtracting_returns_the_original(first: int, second: int, code: str) -> None:
    base, other = Money(first, code), Money(second, code)
    assert (base + other) - other == base
    assert base + other == other + base


def test_arithmetic_beyond_eighteen_digits_raises_instead_of_wrapping() -> None:
    with pytest.raises(ValueError, match="18 digits"):
        _ = Money(MAX_ABS_MINOR, "EUR") + Money(1, "EUR")


# --- human text ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("money", "text"),
    [
        (Money(1234, "EUR"), "12.34 EUR"),
        (Money(5, "EUR"), "0.05 EUR"),
        (Money(-5, "EUR"), "-0.05 EUR"),
        (Money(0, "EUR"), "0.00 EUR"),
        (Money(100000, "EUR"), "1000.00 EUR"),
        (Money(1000, "JPY"), "1000 JPY"),
        (Money(-7, "JPY"), "-7 JPY"),
        (Money(1234, "KWD"), "1.234 KWD"),
        (Money(1, "CLF"), "0.0001 CLF"),
    ],
)
def test_format_writes_the_amount_with_the_currency_exponent(money: Money, text: str) -> None:
    assert money.format() == text
    assert str(money) == text


@pytest.mark.parametrize(
    ("text", "currency", "minor"),
    [
        ("12.34", "EUR", 1234),
        ("12", "EUR", 1200),
        ("0.5", "EUR", 50),
        ("0.05", "EUR", 5),
        ("-0.05", "EUR", -5),
        ("-3", "EUR", -300),
        ("0", "EUR", 0),
        ("-0", "EUR", 0),
        ("007.50", "EUR", 750),
        ("1000", "JPY", 1000),
        ("1.5", "KWD", 1500),
        ("0.001", "KWD", 1),
        ("9999999999999999.99", "EUR", MAX_ABS_MINOR),
    ],
)
def test_parse_reads_decimal_text_exactly(text: str, currency: str, minor: int) -> None:
    assert Money.parse(text, currency) == Money(minor, currency)


@pytest.mark.parametrize(
    ("text", "currency", "message"),
    [
        ("", "EUR", "empty"),
        (" 12", "EUR", "spaces"),
        ("12 ", "EUR", "spaces"),
        ("1 2", "EUR", "spaces"),
        ("12.\u00a034", "EUR", "spaces"),
        ("+12", "EUR", "plain decimal"),
        ("--12", "EUR", "plain decimal"),
        ("12-", "EUR", "plain decimal"),
        ("1e3", "EUR", "plain decimal"),
        ("1E3", "EUR", "plain decimal"),
        ("1,000", "EUR", "plain decimal"),
        ("1_000", "EUR", "plain decimal"),
        ("12,34", "EUR", "plain decimal"),
        (".5", "EUR", "plain decimal"),
        ("5.", "EUR", "plain decimal"),
        ("\u0661\u0662", "EUR", "plain decimal"),  # Arabic-Indic digits
        ("\u221212", "EUR", "plain decimal"),
        ("NaN", "EUR", "plain decimal"),
        ("Infinity", "EUR", "plain decimal"),
        ("12.345", "EUR", "3 decimal places but EUR has 2"),
        ("12.340", "EUR", "3 decimal places but EUR has 2"),
        ("1.0", "JPY", "1 decimal places but JPY has 0"),
        ("0.0001", "KWD", "4 decimal places but KWD has 3"),
        ("10000000000000000", "EUR", "too large"),
        ("1" * 100_000, "EUR", "too large"),
    ],
)
def test_parse_refuses_text_that_is_not_an_exact_amount(
    text: str, currency: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        Money.parse(text, currency)


def test_parse_refuses_an_unknown_currency() -> None:
    with pytest.raises(ValueError, match="currency"):
        Money.parse("1", "EURO")


def test_parse_refuses_a_number_instead_of_text() -> None:
    with pytest.raises(TypeError):
        Money.parse(1.5, "EUR")  # type: ignore[arg-type]


@given(moneys)
def test_parse_reads_back_what_format_writes(money: Money) -> None:
    number, currency = money.format().split(" ")
    assert currency == money.currency
    assert Money.parse(number, currency) == money


# --- wire form ----------------------------------------------------------------------------


def test_to_wire_writes_minor_units_as_a_decimal_string() -> None:
    assert Money(1234, "EUR").to_wire() == {"amount": "1234", "currency": "EUR"}
    assert Money(-5, "JPY").to_wire() == {"amount": "-5", "currency": "JPY"}
    assert Money(0, "KWD").to_wire() == {"amount": "0", "currency": "KWD"}


@given(moneys)
def test_from_wire_reads_back_what_to_wire_writes(money: Money) -> None:
    assert Money.from_wire(money.to_wire()) == money


def test_from_wire_accepts_the_largest_eighteen_digit_amounts() -> None:
    for amount in ["999999999999999999", "-999999999999999999"]:
        assert Money.from_wire({"amount": amount, "currency": "EUR"}).amount_minor == int(amount)


@pytest.mark.parametrize(
    "hostile_amount",
    [
        "1_000",
        " 1",
        "1 ",
        "1\n",
        "+1",
        "01",
        "00",
        "-0",
        "-01",
        "1e3",
        "\u0661\u0662",  # Arabic-Indic digits
        "\uff11\uff12",  # fullwidth digits
        "1234567890123456789",  # 19 digits
        "-1234567890123456789",
        "9" * 5000,
        "",
        "-",
        "1.5",
        "0x10",
        "--1",
        1.5,
        True,
        12,
        None,
        ["1"],
    ],
)
def test_from_wire_refuses_hostile_amounts(hostile_amount: object) -> None:
    with pytest.raises(ValueError, match="amount"):
        Money.from_wire({"amount": hostile_amount, "currency": "EUR"})


@pytest.mark.parametrize("hostile_currency", ["eur", "EURO", "XXX", "", None, 978, ["EUR"]])
def test_from_wire_refuses_unknown_currencies(hostile_currency: object) -> None:
    with pytest.raises(ValueError, match="currency"):
        Money.from_wire({"amount": "1", "currency": hostile_currency})


@pytest.mark.parametrize(
    "hostile_object",
    [
        None,
        "1 EUR",
        ["1", "EUR"],
        {"amount": "1"},
        {"currency": "EUR"},
        {"amount": "1", "currency": "EUR", "rate": "1"},
        {},
    ],
)
def test_from_wire_refuses_objects_that_are_not_exactly_amount_and_currency(
    hostile_object: object,
) -> None:
    with pytest.raises(ValueError, match="money"):
        Money.from_wire(hostile_object)


# --- flattrfed-split/1 ----------------------------------------------------------------------


def test_split_worked_example_wallet_below_budget() -> None:
    # Budget 10.00 EUR, wallet 7.00 EUR, fee 5 %, three things.
    split = split_budget(budget_minor=1000, wallet_minor=700, fee_bp=500, things=3)
    assert split == Split(
        spent_minor=700,
        fee_minor=35,
        distributable_minor=665,
        share_minor=221,
        carry_minor=2,
        things=3,
    )
    assert split.debited_minor == 698


def test_split_worked_example_budget_below_wallet_without_fee() -> None:
    split = split_budget(budget_minor=200, wallet_minor=5000, fee_bp=0, things=3)
    assert (split.spent_minor, split.share_minor, split.carry_minor) == (200, 66, 2)
    assert split.debited_minor == 198


def test_split_fee_rounds_down_in_the_donors_favour() -> None:
    # 999 * 1000 / 10000 = 99.9: the instance takes 99, never 100.
    split = split_budget(budget_minor=999, wallet_minor=999, fee_bp=1000, things=1)
    assert split.fee_minor == 99
    assert split.share_minor == 900


def test_split_with_more_things_than_minor_units_gives_zero_shares_and_keeps_the_rest() -> None:
    split = split_budget(budget_minor=5, wallet_minor=5, fee_bp=0, things=7)
    assert split.share_minor == 0
    assert split.carry_minor == 5
    assert split.debited_minor == 0


def test_split_with_a_full_fee_leaves_nothing_to_share() -> None:
    split = split_budget(budget_minor=1000, wallet_minor=1000, fee_bp=10_000, things=4)
    assert (split.fee_minor, split.distributable_minor, split.share_minor) == (1000, 0, 0)
    assert split.debited_minor == 1000


def test_split_with_an_empty_wallet_debits_nothing() -> None:
    split = split_budget(budget_minor=1000, wallet_minor=0, fee_bp=500, things=3)
    assert split.debited_minor == 0
    assert split.spent_minor == 0


def test_split_without_things_debits_nothing_not_even_the_fee() -> None:
    assert split_budget(budget_minor=1000, wallet_minor=700, fee_bp=500, things=0) == Split(
        0, 0, 0, 0, 0, 0
    )


@pytest.mark.parametrize(
    ("budget", "wallet", "fee_bp", "things"),
    [
        (-1, 100, 0, 1),
        (100, -1, 0, 1),
        (100, 100, -1, 1),
        (100, 100, 10_001, 1),
        (100, 100, 0, -1),
    ],
)
def test_split_refuses_out_of_range_inputs(
    budget: int, wallet: int, fee_bp: int, things: int
) -> None:
    with pytest.raises(ValueError, match="must"):
        split_budget(budget, wallet, fee_bp, things)


@pytest.mark.parametrize(
    "arguments",
    [(100.0, 100, 0, 1), (100, Decimal(100), 0, 1), (100, 100, True, 1), (100, 100, 0, 1.0)],
)
def test_split_refuses_non_int_inputs(arguments: tuple[Any, Any, Any, Any]) -> None:
    with pytest.raises(TypeError):
        split_budget(*arguments)


@given(non_negative, non_negative, fee_bps, st.integers(min_value=0, max_value=10_000))
def test_split_adds_up_to_what_was_spent(budget: int, wallet: int, fee_bp: int, n: int) -> None:
    split = split_budget(budget, wallet, fee_bp, n)
    assert split.fee_minor + n * split.share_minor + split.carry_minor == split.spent_minor
    assert split.distributable_minor == split.spent_minor - split.fee_minor
    assert split.debited_minor == split.spent_minor - split.carry_minor
    assert min(split.fee_minor, split.share_minor, split.carry_minor) >= 0


@given(non_negative, non_negative, fee_bps, st.integers(min_value=1, max_value=10_000))
def test_split_carry_is_less_than_the_number_of_things(
    budget: int, wallet: int, fee_bp: int, n: int
) -> None:
    split = split_budget(budget, wallet, fee_bp, n)
    assert 0 <= split.carry_minor < n
    assert split.spent_minor == min(budget, wallet)


@given(non_negative, non_negative, fee_bps, st.integers(min_value=0, max_value=10_000))
def test_split_never_spends_more_than_the_budget_or_the_wallet(
    budget: int, wallet: int, fee_bp: int, n: int
) -> None:
    split = split_budget(budget, wallet, fee_bp, n)
    assert split.spent_minor <= budget
    assert split.spent_minor <= wallet
    assert split.debited_minor <= split.spent_minor


@given(non_negative, non_negative, fee_bps)
def test_split_without_things_debits_nothing(budget: int, wallet: int, fee_bp: int) -> None:
    split = split_budget(budget, wallet, fee_bp, 0)
    assert split.debited_minor == 0
    assert split.spent_minor == 0
    assert split.fee_minor == 0


@given(
    non_negative,
    non_negative,
    fee_bps,
    st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=40),
    st.randoms(use_true_random=False),
)
def test_split_gives_every_thing_the_same_share_whatever_the_order(
    budget: int, wallet: int, fee_bp: int, thing_ids: list[str], rng: random.Random
) -> None:
    shares = shares_by_thing(budget, wallet, fee_bp, thing_ids)
    shuffled = list(thing_ids)
    rng.shuffle(shuffled)
    assert shares_by_thing(budget, wallet, fee_bp, shuffled) == shares
    assert len(set(shares.values())) == 1
    expected = split_budget(budget, wallet, fee_bp, len(set(thing_ids))).share_minor
    assert set(shares.values()) == {expected}


@given(non_negative, non_negative, fee_bps, st.integers(min_value=1, max_value=10_000))
def test_split_fee_is_the_floor_of_the_basis_points(
    budget: int, wallet: int, fee_bp: int, n: int
) -> None:
    split = split_budget(budget, wallet, fee_bp, n)
    # Exact rational check: fee <= B*bp/10000 < fee + 1, without any floats.
    assert split.fee_minor * 10_000 <= split.spent_minor * fee_bp < (split.fee_minor + 1) * 10_000
