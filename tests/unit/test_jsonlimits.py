"""Untrusted JSON bodies: each limit refuses on its own, and nothing but JsonLimitError escapes."""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flattrfed.activitypub.jsonlimits import (
    DEFAULT_MAX_BYTES,
    JsonLimitError,
    JsonLimitReason,
    parse_json_limited,
)

R = JsonLimitReason


def refused(data: bytes, reason: JsonLimitReason, **limits: Any) -> JsonLimitError:
    with pytest.raises(JsonLimitError) as info:
        parse_json_limited(data, **limits)
    assert info.value.reason is reason, str(info.value)
    return info.value


# --- accepted ---------------------------------------------------------------------------------


def test_ordinary_activity_parses() -> None:
    activity = {
        "@context": ["https://www.w3.org/ns/activitystreams", {"flattr": "https://example/ns#"}],
        "id": "https://a.example/likes/1",
        "type": "Like",
        "actor": "https://a.example/users/alice",
        "object": "https://b.example/things/7",
        "instrument": {"type": "Flattr", "period": "2026-11", "weight": 1.5, "n": -3},
        "to": [f"https://c.example/u/{i}" for i in range(100)],
        "sensitive": False,
        "summary": None,
        "content": "Grüße — 👍",
    }
    assert parse_json_limited(json.dumps(activity).encode()) == activity


def test_limits_are_inclusive() -> None:
    assert parse_json_limited(b"[" * 32 + b"]" * 32, require_object=False) is not None
    assert parse_json_limited(json.dumps({"a": list(range(1000))}).encode())["a"][-1] == 999
    wide = {str(i): i for i in range(1000)}
    assert parse_json_limited(json.dumps(wide).encode()) == wide
    assert parse_json_limited(b'{"n": 9223372036854775807, "m": -9223372036854775808}') == {
        "n": 2**63 - 1,
        "m": -(2**63),
    }
    body = b'{"a": "' + b"x" * (DEFAULT_MAX_BYTES - 9) + b'"}'
    assert len(body) == DEFAULT_MAX_BYTES
    assert len(parse_json_limited(body, max_string_bytes=DEFAULT_MAX_BYTES)["a"]) > 1_000_000


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    data = json.dumps({"a": "[" * 1000 + "{" * 1000, "b": '\\"[[[[', "c": "]]]]"}).encode()
    assert parse_json_limited(data)["a"].startswith("[[[")


def test_scalars_allowed_when_object_not_required() -> None:
    assert parse_json_limited(b" 42 ", require_object=False) == 42
    assert parse_json_limited(b'"x"', require_object=False) == "x"
    assert parse_json_limited(b"null", require_object=False) is None
    assert parse_json_limited(b"[1, 2.5, true]", require_object=False) == [1, 2.5, True]


# --- one test per limit -----------------------------------------------------------------------


def test_refuses_two_megabyte_body() -> None:
    body = b'{"a": "' + b"x" * 2_000_000 + b'"}'
    error = refused(body, R.TOO_LARGE)
    assert error.http_status == 413


def test_refuses_one_byte_over_max_bytes() -> None:
    refused(b'{"a": 1}', R.TOO_LARGE, max_bytes=7)


def test_refuses_invalid_utf8() -> None:
    refused(b'{"a": "\xff"}', R.INVALID_UTF8)
    refused(b'{"a": "\xed\xa0\x80"}', R.INVALID_UTF8)  # an encoded surrogate


def test_refuses_byte_order_mark() -> None:
    refused(b"\xef\xbb\xbf{}", R.INVALID_JSON)


@pytest.mark.parametrize(
    "data",
    [b"", b"{", b"{'a': 1}", b'{"a": 1,}', b'{"a" 1}', b"{} {}", b'"\\x"', b'{"a": "\x01"}'],
)
def test_refuses_invalid_json(data: bytes) -> None:
    error = refused(data, R.INVALID_JSON)
    assert error.http_status == 400


def test_refuses_100k_nested_lists() -> None:
    refused(b"[" * 100_000 + b"]" * 100_000, R.TOO_DEEP, require_object=False)


def test_refuses_100k_unclosed_lists() -> None:
    refused(b"[" * 100_000, R.TOO_DEEP, require_object=False)


def test_refuses_deeply_nested_objects() -> None:
    refused(b'{"object":' * 10_000 + b"{}" + b"}" * 10_000, R.TOO_DEEP)


def test_refuses_one_level_over_max_depth() -> None:
    refused(b"[" * 33 + b"]" * 33, R.TOO_DEEP, require_object=False)
    refused(b'{"a": [[1]]}', R.TOO_DEEP, max_depth=2)


def test_recursion_error_is_a_limit_error_even_with_a_silly_max_depth() -> None:
    refused(b"[" * 50_000 + b"]" * 50_000, R.TOO_DEEP, max_depth=10**6, require_object=False)


def test_refuses_duplicate_keys() -> None:
    error = refused(b'{"type": "Like", "actor": "a", "type": "Undo"}', R.DUPLICATE_KEY)
    assert "'type'" in str(error)


def test_refuses_duplicate_keys_in_nested_object() -> None:
    refused(b'{"object": {"id": "x", "id": "x"}}', R.DUPLICATE_KEY)


def test_refuses_too_many_keys() -> None:
    refused(json.dumps({str(i): i for i in range(1001)}).encode(), R.TOO_MANY_KEYS)


def test_refuses_long_list() -> None:
    refused(json.dumps({"to": ["x"] * 1001}).encode(), R.LIST_TOO_LONG)


def test_refuses_100k_recipients() -> None:
    to = [f"https://x.example/{i}" for i in range(100_000)]
    refused(json.dumps({"to": to}).encode(), R.LIST_TOO_LONG, max_bytes=10_000_000)


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_refuses_nan_and_infinity(constant: bytes) -> None:
    refused(b'{"a": ' + constant + b"}", R.NON_FINITE_NUMBER)


def test_refuses_5000_digit_number() -> None:
    refused(b'{"a": ' + b"9" * 5000 + b"}", R.NUMBER_TOO_LARGE)


def test_megabyte_digit_string_is_refused_quickly() -> None:
    started = time.perf_counter()
    refused(b'{"a": ' + b"7" * 1_000_000 + b"}", R.NUMBER_TOO_LARGE)
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize(
    "number", [b"9223372036854775808", b"-9223372036854775809", b"1e400", b"-1e400"]
)
def test_refuses_numbers_outside_range(number: bytes) -> None:
    refused(b'{"a": ' + number + b"}", R.NUMBER_TOO_LARGE)


def test_refuses_long_float_literal() -> None:
    refused(b'{"a": 0.' + b"1" * 40 + b"}", R.NUMBER_TOO_LARGE)


def test_refuses_long_string() -> None:
    refused(json.dumps({"type": "x" * 300_000}).encode(), R.STRING_TOO_LONG)


def test_string_limit_counts_utf8_bytes() -> None:
    data = json.dumps({"a": "é" * 6}, ensure_ascii=False).encode()
    refused(data, R.STRING_TOO_LONG, max_string_bytes=11)
    assert parse_json_limited(data, max_string_bytes=12) == {"a": "é" * 6}


def test_refuses_long_key() -> None:
    refused(json.dumps({"k" * 300_000: 1}).encode(), R.STRING_TOO_LONG)


@pytest.mark.parametrize("escape", [b"\\ud800", b"\\udfff", b"\\udc00\\ud800"])
def test_refuses_lone_surrogate(escape: bytes) -> None:
    refused(b'{"a": "x' + escape + b'"}', R.BAD_STRING)
    refused(b'{"' + escape + b'": 1}', R.BAD_STRING)


def test_accepts_surrogate_pair() -> None:
    assert parse_json_limited(b'{"a": "\\ud83d\\udc4d"}') == {"a": "👍"}


def test_refuses_nul_character() -> None:
    refused(b'{"a": "x\\u0000y"}', R.BAD_STRING)


def test_refuses_too_many_nodes() -> None:
    many = {"a": [[0] * 500 for _ in range(10)]}
    refused(json.dumps(many).encode(), R.TOO_MANY_NODES, max_total_nodes=5000)
    assert parse_json_limited(json.dumps(many).encode(), max_total_nodes=5012) == many


@pytest.mark.parametrize("data", [b"[]", b'"Like"', b"1", b"null", b"true"])
def test_refuses_non_object_top_level(data: bytes) -> None:
    refused(data, R.NOT_AN_OBJECT)


def test_quote_storm_is_linear() -> None:
    # An unterminated string full of escaped quotes once made a naive string regex quadratic.
    started = time.perf_counter()
    refused(b'"' + b'\\"' * 500_000, R.INVALID_JSON, require_object=False)
    refused(b'"\\' * 300_000, R.INVALID_JSON, require_object=False)
    assert time.perf_counter() - started < 2


def test_error_is_a_value_error_with_readable_text() -> None:
    error = refused(b'{"a": NaN}', R.NON_FINITE_NUMBER)
    assert isinstance(error, ValueError)
    assert str(error).startswith("non_finite_number: ")
    assert error.reason == "non_finite_number"


# --- no other exception escapes ---------------------------------------------------------------


def _only_limit_errors(data: bytes, require_object: bool) -> None:
    with contextlib.suppress(JsonLimitError):
        parse_json_limited(data, require_object=require_object, max_depth=8, max_list_items=20)


@settings(max_examples=500)
@given(st.binary(max_size=2048), st.booleans())
def test_arbitrary_bytes_raise_only_limit_errors(data: bytes, require_object: bool) -> None:
    _only_limit_errors(data, require_object)


JSONISH = st.text(alphabet='[]{}",:0123456789-+.eE \\untrlsfaINy\x00\u00e9\ud800', max_size=200)


@settings(max_examples=500)
@given(JSONISH, st.booleans())
def test_json_like_text_raises_only_limit_errors(text: str, require_object: bool) -> None:
    _only_limit_errors(text.encode("utf-8", "surrogatepass"), require_object)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=8), children, max_size=6)
    ),
    max_leaves=40,
)


@settings(max_examples=300)
@given(json_values)
def test_valid_json_parses_to_itself_or_is_refused(value: Any) -> None:
    data = json.dumps(value).encode()
    reason: JsonLimitReason | None = None
    parsed: Any = None
    try:
        parsed = parse_json_limited(data, require_object=False)
    except JsonLimitError as error:
        reason = error.reason
    # Only content limits may refuse a well-formed document of this size.
    assert reason in {None, R.NUMBER_TOO_LARGE, R.BAD_STRING, R.TOO_DEEP}
    if reason is None:
        assert parsed == value
