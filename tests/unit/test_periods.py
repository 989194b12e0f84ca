"""Periods: calendar months in UTC and their boundaries."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flattrfed.periods import Period

periods = st.builds(
    Period, st.integers(min_value=1970, max_value=9998), st.integers(min_value=1, max_value=12)
)
# Hypothesis wants naive bounds and attaches the time zones itself.
aware_moments = st.datetimes(
    min_value=datetime(1970, 3, 1),  # noqa: DTZ001
    max_value=datetime(9999, 11, 30),  # noqa: DTZ001
    timezones=st.sampled_from([UTC, timezone(timedelta(hours=14)), timezone(timedelta(hours=-12))]),
)


# --- construction and text -------------------------------------------------------------------


def test_parse_reads_year_and_month() -> None:
    assert Period.parse("2026-11") == Period(2026, 11)
    assert Period.parse("1970-01") == Period(1970, 1)
    assert Period.parse("9999-12") == Period(9999, 12)


def test_str_writes_year_dash_month() -> None:
    assert str(Period(2026, 11)) == "2026-11"
    assert str(Period(2027, 1)) == "2027-01"


@given(periods)
def test_parse_reads_back_what_str_writes(period: Period) -> None:
    assert Period.parse(str(period)) == period


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "YYYY-MM"),
        ("2026-1", "YYYY-MM"),
        ("2026-011", "YYYY-MM"),
        ("26-11", "YYYY-MM"),
        ("2026/11", "YYYY-MM"),
        ("2026-11-01", "YYYY-MM"),
        (" 2026-11", "YYYY-MM"),
        ("2026-11\n", "YYYY-MM"),
        ("+2026-11", "YYYY-MM"),
        ("\u0662\u0660\u0662\u0666-\u0661\u0661", "YYYY-MM"),  # Arabic-Indic digits
        ("2026-00", "months are 01..12"),
        ("2026-13", "months are 01..12"),
        ("1969-12", "years are 1970..9999"),
        ("0000-01", "years are 1970..9999"),
    ],
)
def test_parse_refuses_anything_but_yyyy_mm(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Period.parse(text)


@pytest.mark.parametrize(("year", "month"), [(2026, 0), (2026, 13), (1969, 12), (10000, 1)])
def test_period_refuses_out_of_range_fields(year: int, month: int) -> None:
    with pytest.raises(ValueError, match="must be within"):
        Period(year, month)


@pytest.mark.parametrize(("year", "month"), [(2026.0, 1), (2026, True), ("2026", 1)])
def test_period_refuses_fields_that_are_not_ints(year: Any, month: Any) -> None:
    with pytest.raises(TypeError):
        Period(year, month)


def test_periods_order_chronologically() -> None:
    assert Period(2025, 12) < Period(2026, 1) < Period(2026, 2)
    assert sorted([Period(2026, 3), Period(2025, 12), Period(2026, 1)]) == [
        Period(2025, 12),
        Period(2026, 1),
        Period(2026, 3),
    ]


# --- boundaries -----------------------------------------------------------------------------


def test_start_is_the_first_instant_of_the_month_in_utc() -> None:
    assert Period(2026, 11).start == datetime(2026, 11, 1, tzinfo=UTC)
    assert Period(2026, 11).start.utcoffset() == timedelta(0)


def test_end_is_the_first_instant_of_the_next_month() -> None:
    assert Period(2026, 11).end == datetime(2026, 12, 1, tzinfo=UTC)


def test_december_ends_at_the_first_of_january_of_the_next_year() -> None:
    december = Period(2026, 12)
    assert december.end == datetime(2027, 1, 1, tzinfo=UTC)
    assert december.next() == Period(2027, 1)
    assert Period(2027, 1).previous() == december


def test_february_of_a_leap_year_has_twenty_nine_days() -> None:
    assert Period(2028, 2).end - Period(2028, 2).start == timedelta(days=29)
    assert Period(2000, 2).end - Period(2000, 2).start == timedelta(days=29)


def test_february_of_a_common_year_has_twenty_eight_days() -> None:
    assert Period(2026, 2).end - Period(2026, 2).start == timedelta(days=28)
    # 2100 is divisible by 4 but by 100 and not by 400: not a leap year.
    assert Period(2100, 2).end - Period(2100, 2).start == timedelta(days=28)


def test_leap_day_belongs_to_february() -> None:
    assert Period.of(datetime(2028, 2, 29, 23, 59, 59, tzinfo=UTC)) == Period(2028, 2)
    assert Period.of(datetime(2028, 3, 1, tzinfo=UTC)) == Period(2028, 3)


def test_the_last_period_has_no_end() -> None:
    with pytest.raises(ValueError, match="year"):
        _ = Period(9999, 12).end
    with pytest.raises(ValueError, match="year"):
        Period(1970, 1).previous()


@given(periods)
def test_each_period_ends_where_the_next_starts(period: Period) -> None:
    assert period.end == period.next().start
    assert period.next().previous() == period
    assert period.start < period.end


# --- membership -----------------------------------------------------------------------------


def test_contains_includes_the_start_and_excludes_the_end() -> None:
    november = Period(2026, 11)
    assert november.contains(november.start)
    assert november.contains(november.end - timedelta(microseconds=1))
    assert not november.contains(november.end)
    assert not november.contains(november.start - timedelta(microseconds=1))
    assert Period(2026, 12).contains(november.end)


def test_of_judges_the_moment_in_utc() -> None:
    # 00:30 on 1 December in Berlin (UTC+1) is still 23:30 on 30 November in UTC.
    berlin = timezone(timedelta(hours=1))
    moment = datetime(2026, 12, 1, 0, 30, tzinfo=berlin)
    assert Period.of(moment) == Period(2026, 11)
    assert Period(2026, 11).contains(moment)
    assert not Period(2026, 12).contains(moment)


def test_naive_datetimes_are_refused() -> None:
    naive = datetime(2026, 11, 15, 12, 0)  # noqa: DTZ001 - the point of the test
    with pytest.raises(ValueError, match="timezone-aware"):
        Period.of(naive)
    with pytest.raises(ValueError, match="timezone-aware"):
        Period(2026, 11).contains(naive)


def test_dates_without_a_time_are_refused() -> None:
    with pytest.raises(TypeError):
        Period.of(date(2026, 11, 15))  # type: ignore[arg-type]


@given(aware_moments)
def test_a_moment_lies_between_its_periods_start_and_end(moment: datetime) -> None:
    period = Period.of(moment)
    assert period.start <= moment < period.end
    assert period.contains(moment)
    assert not period.next().contains(moment)
    assert not period.previous().contains(moment)


# --- cutoffs and month arithmetic -----------------------------------------------------------


def test_closes_at_is_the_end_plus_the_grace_window() -> None:
    assert Period(2026, 11).closes_at(timedelta(hours=48)) == datetime(2026, 12, 3, tzinfo=UTC)
    assert Period(2026, 11).closes_at(timedelta(0)) == Period(2026, 11).end


def test_closes_at_refuses_a_negative_grace_window() -> None:
    with pytest.raises(ValueError, match="grace"):
        Period(2026, 11).closes_at(timedelta(seconds=-1))


def test_plus_months_crosses_year_boundaries() -> None:
    assert Period(2026, 11).plus_months(6) == Period(2027, 5)
    assert Period(2026, 11).plus_months(-11) == Period(2025, 12)
    assert Period(2026, 11).plus_months(0) == Period(2026, 11)
    assert Period(2026, 1).plus_months(-1) == Period(2025, 12)
    assert Period(2026, 12).plus_months(25) == Period(2029, 1)


def test_months_between_counts_forward_and_backward() -> None:
    assert Period(2026, 11).months_between(Period(2027, 5)) == 6
    assert Period(2027, 5).months_between(Period(2026, 11)) == -6
    assert Period(2026, 11).months_between(Period(2026, 11)) == 0


def test_pending_flattr_expiry_after_six_months() -> None:
    flattred_in = Period(2026, 11)
    expires_in = flattred_in.plus_months(6)
    assert expires_in == Period(2027, 5)
    assert flattred_in.months_between(expires_in) == 6


@given(periods, st.integers(min_value=-500, max_value=500))
def test_plus_months_and_months_between_agree(period: Period, months: int) -> None:
    try:
        later = period.plus_months(months)
    except ValueError:
        return  # outside 1970..9999
    assert period.months_between(later) == months
    assert later.plus_months(-months) == period


def test_plus_months_refuses_non_int_counts() -> None:
    with pytest.raises(TypeError):
        Period(2026, 11).plus_months(1.0)  # type: ignore[arg-type]
