"""Clearing periods: calendar months in UTC, their boundaries, cutoffs and month arithmetic."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Self

MIN_YEAR = 1970
MAX_YEAR = 9999

# [0-9] rather than \d so that non-ASCII digits never reach int().
_PERIOD_TEXT = re.compile(r"([0-9]{4})-([0-9]{2})")


def _require_aware(moment: object) -> datetime:
    if not isinstance(moment, datetime):
        raise TypeError(f"expected a datetime, not {type(moment).__name__}")
    # A naive datetime has no place on the time line: guessing its zone would move money
    # between months, so refuse it instead.
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("datetime must be timezone-aware")
    return moment.astimezone(UTC)


@dataclass(frozen=True, order=True, slots=True)
class Period:
    """One calendar month in UTC, e.g. 2026-11: the unit a donor's budget is split over.

    A period runs from `start` (inclusive) to `end` (exclusive); `end` is the cutoff, the first
    instant of the next month. Periods order chronologically.
    """

    year: int
    month: int

    def __post_init__(self) -> None:
        for name, value in (("year", self.year), ("month", self.month)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, not {type(value).__name__}")
        if not MIN_YEAR <= self.year <= MAX_YEAR:
            raise ValueError(f"year must be within {MIN_YEAR}..{MAX_YEAR}, got {self.year}")
        if not 1 <= self.month <= 12:
            raise ValueError(f"month must be within 1..12, got {self.month}")

    @classmethod
    def parse(cls, text: str) -> Self:
        """Read exactly "YYYY-MM" (e.g. "2026-11"); anything else raises ValueError."""
        if not isinstance(text, str):
            raise TypeError(f"period must be a str, not {type(text).__name__}")
        match = _PERIOD_TEXT.fullmatch(text)
        if match is None:
            shown = repr(text) if len(text) <= 40 else repr(text[:40]) + "..."
            raise ValueError(f"period {shown} is not of the form YYYY-MM, e.g. 2026-11")
        year, month = int(match.group(1)), int(match.group(2))
        if not 1 <= month <= 12:
            raise ValueError(f"period {text!r} has month {month:02d}; months are 01..12")
        if not MIN_YEAR <= year <= MAX_YEAR:
            raise ValueError(f"period {text!r} has year {year}; years are {MIN_YEAR}..{MAX_YEAR}")
        return cls(year, month)

    def __str__(self) -> str:
        return f"{self.year:04d}-{self.month:02d}"

    @classmethod
    def of(cls, moment: datetime) -> Self:
        """The period containing `moment`, which must be timezone-aware (judged in UTC)."""
        utc = _require_aware(moment)
        return cls(utc.year, utc.month)

    @property
    def start(self) -> datetime:
        """The first instant of the month, UTC."""
        return datetime(self.year, self.month, 1, tzinfo=UTC)

    @property
    def end(self) -> datetime:
        """The cutoff: the first instant of the next month, UTC (not itself in this period).

        Raises ValueError for 9999-12, whose end datetime cannot represent.
        """
        return self.next().start

    def next(self) -> Period:
        return self.plus_months(1)

    def previous(self) -> Period:
        return self.plus_months(-1)

    def plus_months(self, months: int) -> Period:
        """The period `months` later (earlier when negative); ValueError past 1970..9999."""
        if isinstance(months, bool) or not isinstance(months, int):
            raise TypeError(f"months must be an int, not {type(months).__name__}")
        year, month_index = divmod(self.year * 12 + (self.month - 1) + months, 12)
        return Period(year, month_index + 1)

    def months_between(self, other: Period) -> int:
        """How many months `other` lies after this period (negative when it lies before).

        Period.parse("2026-11").months_between(Period.parse("2027-05")) == 6.
        """
        return (other.year - self.year) * 12 + (other.month - self.month)

    def contains(self, moment: datetime) -> bool:
        """Whether `moment` (timezone-aware) falls in this month: start inclusive, end exclusive."""
        utc = _require_aware(moment)
        return (utc.year, utc.month) == (self.year, self.month)

    def closes_at(self, grace: timedelta) -> datetime:
        """When the period can be closed: the cutoff plus a grace window for late deliveries."""
        if grace < timedelta(0):
            raise ValueError("grace must not be negative")
        return self.end + grace
