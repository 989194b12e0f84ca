"""Money as integer minor units of an ISO 4217 currency, and the flattrfed-split/1 budget split."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Self

# Active codes of ISO 4217 list one as published on 2026-01-01, with their minor-unit exponents.
# Codes whose minor unit is "N.A." (XAU, XAG, XPD, XPT, XBA-XBD, XDR, XSU, XUA, XTS, XXX) are left
# out on purpose: without a minor unit there is no integer amount we could hold for them.
# Withdrawn codes (HRK, SLL, ZWL, ANG, CUC, BGN, ...) are absent: no instance may start using them.
CURRENCY_EXPONENTS: Mapping[str, int] = MappingProxyType(
    {
        "AED": 2,
        "AFN": 2,
        "ALL": 2,
        "AMD": 2,
        "AOA": 2,
        "ARS": 2,
        "AUD": 2,
        "AWG": 2,
        "AZN": 2,
        "BAM": 2,
        "BBD": 2,
        "BDT": 2,
        "BHD": 3,
        "BIF": 0,
        "BMD": 2,
        "BND": 2,
        "BOB": 2,
        "BOV": 2,
        "BRL": 2,
        "BSD": 2,
        "BTN": 2,
        "BWP": 2,
        "BYN": 2,
        "BZD": 2,
        "CAD": 2,
        "CDF": 2,
        "CHE": 2,
        "CHF": 2,
        "CHW": 2,
        "CLF": 4,
        "CLP": 0,
        "CNY": 2,
        "COP": 2,
        "COU": 2,
        "CRC": 2,
        "CUP": 2,
        "CVE": 2,
        "CZK": 2,
        "DJF": 0,
        "DKK": 2,
        "DOP": 2,
        "DZD": 2,
        "EGP": 2,
        "ERN": 2,
        "ETB": 2,
        "EUR": 2,
        "FJD": 2,
        "FKP": 2,
        "GBP": 2,
        "GEL": 2,
        "GHS": 2,
        "GIP": 2,
        "GMD": 2,
        "GNF": 0,
        "GTQ": 2,
        "GYD": 2,
        "HKD": 2,
        "HNL": 2,
        "HTG": 2,
        "HUF": 2,
        "IDR": 2,
        "ILS": 2,
        "INR": 2,
        "IQD": 3,
        "IRR": 2,
        "ISK": 0,
        "JMD": 2,
        "JOD": 3,
        "JPY": 0,
        "KES": 2,
        "KGS": 2,
        "KHR": 2,
        "KMF": 0,
        "KPW": 2,
        "KRW": 0,
        "KWD": 3,
        "KYD": 2,
        "KZT": 2,
        "LAK": 2,
        "LBP": 2,
        "LKR": 2,
        "LRD": 2,
        "LSL": 2,
        "LYD": 3,
        "MAD": 2,
        "MDL": 2,
        "MGA": 2,
        "MKD": 2,
        "MMK": 2,
        "MNT": 2,
        "MOP": 2,
        "MRU": 2,
        "MUR": 2,
        "MVR": 2,
        "MWK": 2,
        "MXN": 2,
        "MXV": 2,
        "MYR": 2,
        "MZN": 2,
        "NAD": 2,
        "NGN": 2,
        "NIO": 2,
        "NOK": 2,
        "NPR": 2,
        "NZD": 2,
        "OMR": 3,
        "PAB": 2,
        "PEN": 2,
        "PGK": 2,
        "PHP": 2,
        "PKR": 2,
        "PLN": 2,
        "PYG": 0,
        "QAR": 2,
        "RON": 2,
        "RSD": 2,
        "RUB": 2,
        "RWF": 0,
        "SAR": 2,
        "SBD": 2,
        "SCR": 2,
        "SDG": 2,
        "SEK": 2,
        "SGD": 2,
        "SHP": 2,
        "SLE": 2,
        "SOS": 2,
        "SRD": 2,
        "SSP": 2,
        "STN": 2,
        "SVC": 2,
        "SYP": 2,
        "SZL": 2,
        "THB": 2,
        "TJS": 2,
        "TMT": 2,
        "TND": 3,
        "TOP": 2,
        "TRY": 2,
        "TTD": 2,
        "TWD": 2,
        "TZS": 2,
        "UAH": 2,
        "UGX": 0,
        "USD": 2,
        "USN": 2,
        "UYI": 0,
        "UYU": 2,
        "UYW": 4,
        "UZS": 2,
        "VED": 2,
        "VES": 2,
        "VND": 0,
        "VUV": 0,
        "WST": 2,
        "XAD": 2,
        "XAF": 0,
        "XCD": 2,
        "XCG": 2,
        "XOF": 0,
        "XPF": 0,
        "YER": 2,
        "ZAR": 2,
        "ZMW": 2,
        "ZWG": 2,
    }
)

# The largest magnitude a Money may have: 18 decimal digits. It fits a signed 64-bit database
# column with room to spare, and it is exactly what the wire format can carry, so every Money we
# make can be sent and every amount we accept can be stored.
MAX_WIRE_DIGITS = 18
MAX_ABS_MINOR = 10**MAX_WIRE_DIGITS - 1

# [0-9] rather than \d: \d also matches non-ASCII digits such as "١٢", which int() would accept.
_HUMAN_DECIMAL = re.compile(r"(-?)([0-9]+)(?:\.([0-9]+))?")
# Canonical minor units only: one spelling per number, so signed documents cannot be re-spelled.
_WIRE_AMOUNT = re.compile(r"-?[1-9][0-9]*|0")

BASIS_POINTS_PER_WHOLE = 10_000


def is_currency(code: object) -> bool:
    """Whether `code` is an active ISO 4217 code we can hold money in (exact, upper case)."""
    return isinstance(code, str) and code in CURRENCY_EXPONENTS


class CurrencyMismatch(ValueError):
    """Two amounts of different currencies were combined; flattrfed never converts implicitly."""


def _shown(text: str) -> str:
    # Error messages quote what they refused, but hostile input may be huge: quote a prefix.
    return repr(text) if len(text) <= 40 else repr(text[:40]) + "..."


def _require_int(name: str, value: object) -> int:
    # bool is an int subclass, and True silently meaning 1 minor unit is exactly the bug to avoid.
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    return value


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount: an integer count of minor units (cents for EUR) of one ISO 4217 currency.

    Equality compares amount and currency (amounts of different currencies are simply unequal,
    so Money works in sets and dicts); ordering and arithmetic across currencies raise
    CurrencyMismatch.
    """

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        _require_int("amount_minor", self.amount_minor)
        if not is_currency(self.currency):
            raise ValueError(f"unknown currency code {self.currency!r}")
        if abs(self.amount_minor) > MAX_ABS_MINOR:
            raise ValueError(f"amount has more than {MAX_WIRE_DIGITS} digits")

    @classmethod
    def zero(cls, currency: str) -> Self:
        return cls(0, currency)

    @property
    def exponent(self) -> int:
        """How many decimal places the currency's minor unit has (EUR 2, JPY 0, KWD 3)."""
        return CURRENCY_EXPONENTS[self.currency]

    @property
    def is_zero(self) -> bool:
        return self.amount_minor == 0

    @property
    def is_negative(self) -> bool:
        return self.amount_minor < 0

    def _same_currency(self, other: Money) -> None:
        if self.currency != other.currency:
            raise CurrencyMismatch(f"cannot combine {self.currency} with {other.currency}")

    def __add__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return Money(self.amount_minor + other.amount_minor, self.currency)

    def __sub__(self, other: Money) -> Money:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return Money(self.amount_minor - other.amount_minor, self.currency)

    def __neg__(self) -> Money:
        return Money(-self.amount_minor, self.currency)

    def __lt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return self.amount_minor < other.amount_minor

    def __le__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return self.amount_minor <= other.amount_minor

    def __gt__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return self.amount_minor > other.amount_minor

    def __ge__(self, other: Money) -> bool:
        if not isinstance(other, Money):
            return NotImplemented
        self._same_currency(other)
        return self.amount_minor >= other.amount_minor

    def format(self) -> str:
        """Plain text such as "12.34 EUR", "1000 JPY" or "-0.05 EUR" (no thousands separators)."""
        sign = "-" if self.amount_minor < 0 else ""
        whole, fraction = divmod(abs(self.amount_minor), 10**self.exponent)
        if self.exponent == 0:
            return f"{sign}{whole} {self.currency}"
        return f"{sign}{whole}.{fraction:0{self.exponent}d} {self.currency}"

    def __str__(self) -> str:
        return self.format()

    @classmethod
    def parse(cls, text: str, currency: str) -> Self:
        """Read a human decimal amount ("12.34", "12", "0.5", "-3") of `currency`, exactly.

        Refused, with a ValueError saying why: empty text, spaces anywhere, a '+' or any sign
        other than one leading '-', exponents ("1e3"), separators ("1,000", "1_000"),
        non-ASCII digits, a bare "." at either end, and more decimal places than the currency
        has (so "0.001" EUR is refused rather than rounded).
        """
        if not isinstance(text, str):
            raise TypeError(f"amount text must be a str, not {type(text).__name__}")
        if not is_currency(currency):
            raise ValueError(f"unknown currency code {currency!r}")
        if text == "":
            raise ValueError("amount is empty")
        if text != text.strip() or any(ch.isspace() for ch in text):
            raise ValueError(f"amount {_shown(text)} must not contain spaces")
        match = _HUMAN_DECIMAL.fullmatch(text)
        if match is None:
            raise ValueError(
                f"amount {_shown(text)} is not a plain decimal number like 12.34 "
                "(digits 0-9, an optional leading '-', an optional '.' followed by digits)"
            )
        sign, whole_digits, fraction_digits = match.group(1), match.group(2), match.group(3) or ""
        exponent = CURRENCY_EXPONENTS[currency]
        if len(fraction_digits) > exponent:
            raise ValueError(
                f"amount {_shown(text)} has {len(fraction_digits)} decimal places "
                f"but {currency} has {exponent}"
            )
        # Checked before int() so a megabyte of digits costs nothing to refuse.
        if len(whole_digits.lstrip("0")) + exponent > MAX_WIRE_DIGITS:
            raise ValueError(f"amount {_shown(text)} is too large")
        # Safe: the regex admitted only ASCII digits, and leading zeros are dropped so int() never
        # sees more than MAX_WIRE_DIGITS of them.
        whole = int(whole_digits.lstrip("0") or "0")
        fraction = int(fraction_digits.ljust(exponent, "0") or "0")
        magnitude = whole * 10**exponent + fraction
        return cls(-magnitude if sign else magnitude, currency)

    def to_wire(self) -> dict[str, str]:
        """The protocol form: minor units as a decimal string, plus the currency code."""
        return {"amount": str(self.amount_minor), "currency": self.currency}

    @classmethod
    def from_wire(cls, obj: object) -> Self:
        """Read the protocol form from untrusted input; any deviation raises ValueError.

        `obj` must be a mapping with exactly the keys "amount" and "currency". The amount must
        be a string of ASCII digits in canonical form: an optional leading '-', no leading zeros
        (zero is "0", never "-0"), at most 18 digits. Numbers, booleans, "1_000", " 1", "+1",
        "01", "1e3" and non-ASCII digits are all refused.
        """
        if not isinstance(obj, Mapping):
            raise ValueError(f"money must be an object, not {type(obj).__name__}")
        keys = set(obj.keys())
        if keys != {"amount", "currency"}:
            found = ", ".join(sorted(repr(key)[:40] for key in keys)[:10])
            raise ValueError(
                f"money must have exactly the keys 'amount' and 'currency', got {found}"
            )
        amount = obj["amount"]
        currency = obj["currency"]
        if not isinstance(amount, str):
            raise ValueError(f"money amount must be a string, not {type(amount).__name__}")
        if not is_currency(currency):
            raise ValueError(f"unknown currency code {currency!r}")
        if len(amount.lstrip("-")) > MAX_WIRE_DIGITS:
            raise ValueError(
                f"money amount {_shown(amount)} has more than {MAX_WIRE_DIGITS} digits"
            )
        if _WIRE_AMOUNT.fullmatch(amount) is None:
            raise ValueError(
                f"money amount {_shown(amount)} is not canonical minor units "
                "(ASCII digits, optional leading '-', no leading zeros)"
            )
        # Safe: the regex admitted only canonical ASCII digits, no '_', spaces or '+'.
        return cls(int(amount), currency)


@dataclass(frozen=True, slots=True)
class Split:
    """One donor's month under flattrfed-split/1 (all amounts in minor units).

    spent_minor is B, the part of the budget the rule works on; distributable_minor is D = B - fee;
    every one of the `things` flattred things gets share_minor (q); carry_minor is D - q*n.
    The carry never leaves the donor's wallet: it is not debited, so it is simply there to be
    spent next month. What leaves the wallet is `debited_minor` = fee + q*n.
    """

    spent_minor: int
    fee_minor: int
    distributable_minor: int
    share_minor: int
    carry_minor: int
    things: int

    @property
    def debited_minor(self) -> int:
        """What actually leaves the donor's wallet: the instance fee plus every thing's share."""
        return self.fee_minor + self.share_minor * self.things


def split_budget(budget_minor: int, wallet_minor: int, fee_bp: int, things: int) -> Split:
    """Split one donor's month equally among `things` distinct things (flattrfed-split/1).

    B = min(budget, wallet); fee = B * fee_bp // 10000 (floor, kept by the donor's instance);
    D = B - fee; q = D // n; carry = D - q*n, so 0 <= carry < n.

    The carry never leaves the donor's wallet: it is not part of what is debited and is there
    to be spent next month. Every thing gets exactly q, so a receiving instance can check each
    line it is sent. With no things (n = 0) nothing is debited, not even the fee: the whole
    budget stays in the wallet.

    Raises TypeError for non-int arguments (bools included) and ValueError for negative amounts
    or thing counts and for fee_bp outside 0..10000.
    """
    _require_int("budget_minor", budget_minor)
    _require_int("wallet_minor", wallet_minor)
    _require_int("fee_bp", fee_bp)
    _require_int("things", things)
    if budget_minor < 0:
        raise ValueError(f"budget_minor must not be negative, got {budget_minor}")
    if wallet_minor < 0:
        raise ValueError(f"wallet_minor must not be negative, got {wallet_minor}")
    if not 0 <= fee_bp <= BASIS_POINTS_PER_WHOLE:
        raise ValueError(f"fee_bp must be within 0..{BASIS_POINTS_PER_WHOLE}, got {fee_bp}")
    if things < 0:
        raise ValueError(f"things must not be negative, got {things}")
    if things == 0:
        return Split(0, 0, 0, 0, 0, 0)
    spent = min(budget_minor, wallet_minor)
    fee = spent * fee_bp // BASIS_POINTS_PER_WHOLE
    distributable = spent - fee
    share = distributable // things
    carry = distributable - share * things
    return Split(
        spent_minor=spent,
        fee_minor=fee,
        distributable_minor=distributable,
        share_minor=share,
        carry_minor=carry,
        things=things,
    )
