"""RFC 8785 canonical JSON, its digests, and base58btc."""

from __future__ import annotations

import json
import math
from enum import IntEnum
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from flattrfed.settlement.canonical import (
    MAX_DEPTH,
    MAX_SAFE_INTEGER,
    _plain,
    base58btc_decode,
    base58btc_encode,
    canonical_json,
    canonical_json_reference,
    sha256_digest,
)

# JSON values canonical_json accepts: no floats, integers in the I-JSON safe range, strings
# without surrogates (Hypothesis' default alphabet excludes category Cs).
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-MAX_SAFE_INTEGER, max_value=MAX_SAFE_INTEGER)
    | st.text()
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(), children, max_size=5)
    ),
    max_leaves=30,
)


def text(value: object) -> str:
    return canonical_json(value).decode("utf-8")


# --- RFC 8785 examples -------------------------------------------------------------------------


def test_rfc8785_3_2_3_sorts_keys_by_utf16_code_units() -> None:
    # RFC 8785 §3.2.3. The emoji is the surrogate pair D83D DE00 in UTF-16, so it sorts before
    # U+FB33; by code point (Python's plain sorted()) it would come after.
    document = json.loads(
        '{"\\u20ac": "Euro Sign", "\\r": "Carriage Return",'
        ' "\\ufb33": "Hebrew Letter Dalet With Dagesh", "1": "One",'
        ' "\\ud83d\\ude00": "Emoji: Grinning Face", "\\u0080": "Control",'
        ' "\\u00f6": "Latin Small Letter O With Diaeresis"}'
    )
    assert text(document) == (
        '{"\\r":"Carriage Return","1":"One","\u0080":"Control",'
        '"\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign",'
        '"\U0001f600":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}'
    )


def test_rfc8785_3_2_2_string_escaping_and_literals() -> None:
    # RFC 8785 §3.2.2's sample without its "numbers" member (we refuse floats; see below).
    source = r"""{
      "string": "\u20ac$\u000F\u000aA'\u0042\u0022\u005c\\\"\/",
      "literals": [null, true, false]
    }"""
    expected = r"""{"literals":[null,true,false],"string":"€$\u000f\nA'B\"\\\\\"/"}"""
    assert text(json.loads(source)) == expected


def test_rfc8785_3_2_2_sample_with_its_floats_is_refused() -> None:
    source = (
        '{"numbers": [333333333.33333329, 1E30, 4.50, 2e-3, 0.000000000000000000000000001],'
        ' "string": "x", "literals": [null, true, false]}'
    )
    with pytest.raises(ValueError, match="floats"):
        canonical_json(json.loads(source))


def test_jcs_reference_weird_vector() -> None:
    # "weird.json" from the JCS reference implementation's test data (cyberphone), with its
    # published canonical output in hex.
    source = r"""{
      "\u20ac": "Euro Sign",
      "\r": "Carriage Return",
      "\u000a": "Newline",
      "1": "One",
      "\u0080": "Control\u007f",
      "\ud83d\ude02": "Smiley",
      "\u00f6": "Latin Small Letter O With Diaeresis",
      "\ufb33": "Hebrew Letter Dalet With Dagesh",
      "</script>": "Browser Challenge"
    }"""
    expected_hex = (
        "7b225c6e223a224e65776c696e65222c225c72223a2243617272696167652052657475726e222c2231223a"
        "224f6e65222c223c2f7363726970743e223a2242726f77736572204368616c6c656e6765222c22c280223a"
        "22436f6e74726f6c7f222c22c3b6223a224c6174696e20536d616c6c204c6574746572204f205769746820"
        "446961657265736973222c22e282ac223a224575726f205369676e222c22f09f9882223a22536d696c6579"
        "222c22efacb3223a22486562726577204c65747465722044616c6574205769746820446167657368227d"
    )
    assert canonical_json(json.loads(source)).hex() == expected_hex


# --- strings -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("char", "escaped"),
    [
        ("\b", "\\b"),
        ("\t", "\\t"),
        ("\n", "\\n"),
        ("\f", "\\f"),
        ("\r", "\\r"),
        ('"', '\\"'),
        ("\\", "\\\\"),
        ("\x00", "\\u0000"),
        ("\x0b", "\\u000b"),
        ("\x1f", "\\u001f"),
        ("\x1b", "\\u001b"),
    ],
)
def test_escapes_exactly_what_json_stringify_escapes(char: str, escaped: str) -> None:
    assert text(char) == f'"{escaped}"'


@pytest.mark.parametrize("char", ["/", "\x7f", "\x80", "\u2028", "\u2029", "é", "\U0001f600"])
def test_everything_else_is_written_literally_in_utf8(char: str) -> None:
    assert canonical_json(char) == b'"' + char.encode("utf-8") + b'"'


def test_every_control_character_uses_lowercase_hex_unless_it_has_a_short_form() -> None:
    short = {"\b", "\t", "\n", "\f", "\r"}
    for code in range(0x20):
        char = chr(code)
        if char not in short:
            assert text(char) == f'"\\u{code:04x}"'


@pytest.mark.parametrize("bad", ["\ud800", "a\udfffb", "\ud83d\ude00"])
def test_surrogate_code_points_are_refused_in_values_and_keys(bad: str) -> None:
    # "\ud83d\ude00" as a Python str is two lone halves, not the emoji.
    with pytest.raises(ValueError, match="surrogate"):
        canonical_json(bad)
    with pytest.raises(ValueError, match="surrogate"):
        canonical_json({bad: 1})
    with pytest.raises(ValueError, match="surrogate"):
        canonical_json({"a": 1, bad: 1, "b": 2})


# --- numbers and other types -------------------------------------------------------------------


def test_integers_in_the_safe_range() -> None:
    assert text([0, -1, 7, MAX_SAFE_INTEGER, -MAX_SAFE_INTEGER]) == (
        "[0,-1,7,9007199254740991,-9007199254740991]"
    )


@pytest.mark.parametrize("number", [2**53, -(2**53), 10**30])
def test_integers_beyond_the_safe_range_are_refused(number: int) -> None:
    with pytest.raises(ValueError, match="2\\*\\*53"):
        canonical_json({"n": number})


@pytest.mark.parametrize("number", [1.0, 0.5, -0.0, math.nan, math.inf, -math.inf])
def test_floats_are_refused(number: float) -> None:
    with pytest.raises(ValueError, match="floats"):
        canonical_json(number)
    with pytest.raises(ValueError, match="floats"):
        canonical_json({"a": [1, {"b": number}]})


def test_bools_are_literals_not_integers() -> None:
    assert text([True, False, None, 1, 0]) == "[true,false,null,1,0]"


def test_int_enum_members_are_written_as_numbers() -> None:
    class Scale(IntEnum):
        CENTS = 2

    assert text({"scale": Scale.CENTS}) == '{"scale":2}'


@pytest.mark.parametrize("value", [(1, 2), {1, 2}, b"bytes", object(), {1: "a"}, {None: 1}])
def test_other_types_are_refused(value: object) -> None:
    with pytest.raises(TypeError):
        canonical_json(value)


def test_nesting_is_capped() -> None:
    ok: Any = []
    for _ in range(MAX_DEPTH - 1):
        ok = [ok]
    canonical_json(ok)
    with pytest.raises(ValueError, match="deeper"):
        canonical_json([ok])


def test_cycles_are_refused() -> None:
    loop: dict[str, Any] = {}
    loop["self"] = loop
    with pytest.raises(ValueError, match="deeper"):
        canonical_json(loop)


def test_no_whitespace_and_nested_members_sorted() -> None:
    value = {"b": [{"z": 1, "a": 2}], "a": {"d": True, "c": None}, "": ""}
    assert text(value) == '{"":"","a":{"c":null,"d":true},"b":[{"a":2,"z":1}]}'


# --- digest ------------------------------------------------------------------------------------


def test_sha256_digest() -> None:
    # SHA-256 of the two bytes '{}'.
    assert sha256_digest({}) == (
        "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    )
    assert sha256_digest({"a": 1, "b": 2}) == sha256_digest({"b": 2, "a": 1})


# --- properties --------------------------------------------------------------------------------


@given(json_values)
def test_canonical_form_is_a_fixed_point_through_a_json_parser(value: object) -> None:
    once = canonical_json(value)
    assert canonical_json(json.loads(once)) == once
    assert json.loads(once) == value


@given(json_values)
def test_agrees_with_pythons_json_where_code_point_order_is_utf16_order(value: object) -> None:
    # Python's json escapes exactly like JSON.stringify (ensure_ascii=False), and sort_keys
    # orders by code point, which equals UTF-16 order unless a key holds a character above
    # U+FFFF. So on BMP-only keys the two must agree byte for byte.
    def bmp_keys(node: object) -> bool:
        if isinstance(node, dict):
            return all(max(map(ord, k), default=0) <= 0xFFFF for k in node) and all(
                bmp_keys(v) for v in node.values()
            )
        if isinstance(node, list):
            return all(bmp_keys(v) for v in node)
        return True

    if bmp_keys(value):
        expected = json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        assert canonical_json(value) == expected.encode("utf-8")


@given(st.dictionaries(st.text(), st.integers(0, 9), min_size=2))
def test_members_come_out_in_utf16_code_unit_order(value: dict[str, int]) -> None:
    parsed = json.loads(canonical_json(value))
    keys = list(parsed)
    assert keys == sorted(keys, key=lambda k: [ord(u) for u in _utf16_units(k)])


def _utf16_units(key: str) -> str:
    raw = key.encode("utf-16-be")
    return "".join(chr(int.from_bytes(raw[i : i + 2], "big")) for i in range(0, len(raw), 2))


# --- base58btc ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "encoded"),
    [
        (b"", ""),
        (b"\0", "1"),
        (b"hello world", "StV1DL6CwTryKyV"),
        # multiformats/multibase test vectors (without the 'z' prefix)
        (b"Decentralize everything!!", "UXE7GvtEk8XTXs1GF8HSGbVA9FCX9SEBPe"),
        (b"yes mani !", "7paNL19xttacUY"),
        (b"\0\0yes mani !", "117paNL19xttacUY"),
    ],
)
def test_base58btc_vectors(raw: bytes, encoded: str) -> None:
    assert base58btc_encode(raw) == encoded
    assert base58btc_decode(encoded) == raw


@pytest.mark.parametrize("bad", ["0", "O", "I", "l", "abc+", " 1", "é"])
def test_base58btc_refuses_characters_outside_the_alphabet(bad: str) -> None:
    with pytest.raises(ValueError, match="alphabet"):
        base58btc_decode(bad)


@given(st.binary(max_size=80))
def test_base58btc_round_trip(raw: bytes) -> None:
    assert base58btc_decode(base58btc_encode(raw)) == raw


@given(st.text(alphabet="123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz", max_size=60))
def test_base58btc_has_one_spelling_per_byte_string(encoded: str) -> None:
    assert base58btc_encode(base58btc_decode(encoded)) == encoded


# --- the fast path (json.dumps for plain values) ----------------------------------------------


@given(json_values)
def test_the_fast_path_writes_exactly_what_the_rules_write(value: object) -> None:
    assert canonical_json(value) == canonical_json_reference(value)


@given(
    st.recursive(
        json_scalars,
        lambda children: (
            st.lists(children, max_size=5)
            | st.dictionaries(st.text(alphabet=st.characters(max_codepoint=127)), children)
        ),
        max_leaves=30,
    )
)
def test_values_with_ascii_keys_take_the_fast_path_and_agree(value: object) -> None:
    assert _plain(value, 0)
    assert canonical_json(value) == canonical_json_reference(value)


def test_the_fast_path_agrees_on_every_character() -> None:
    # Every code point but the surrogates, in one string and as a value under an ASCII key.
    every = "".join(chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF)
    value = {"all": every, "line": "sha256:" + "0" * 64, "amount": "1583"}
    assert _plain(value, 0)
    assert canonical_json(value) == canonical_json_reference(value)


def test_the_w3c_weird_vector_values_under_ascii_keys_agree() -> None:
    # The JCS reference "weird" strings (control characters, U+007F, U+0080, astral characters,
    # '</script>') as values: the fast path must write them as the rules do.
    weird = json.loads(
        r"""["Euro Sign \u20ac", "\r", "\u000a", "\u0080 Control\u007f", "\ud83d\ude02",
        "\u00f6", "\ufb33", "</script>", "\u0000\u001f\\\""]"""
    )
    value = {f"k{index}": item for index, item in enumerate(weird)}
    assert _plain(value, 0)
    assert canonical_json(value) == canonical_json_reference(value)
    assert canonical_json(weird) == canonical_json_reference(weird)


class _Unit(IntEnum):
    ONE = 1


@pytest.mark.parametrize(
    "value",
    [
        {"\u20ac": 1, "a": 2},  # a non-ASCII key: UTF-16 order is the careful path's job
        {"a": 1.5},  # floats are refused by the careful path
        {"a": MAX_SAFE_INTEGER + 1},
        {"a": True, "b": _Unit.ONE},  # an int subclass
        {"a": ("tuple",)},
    ],
)
def test_values_the_fast_path_leaves_to_the_rules(value: object) -> None:
    assert not _plain(value, 0)


def test_a_lone_surrogate_under_an_ascii_key_is_still_refused() -> None:
    value = {"a": "\ud800"}
    assert _plain(value, 0)  # looks plain, but cannot be encoded: the careful path refuses it
    with pytest.raises(ValueError, match="surrogate"):
        canonical_json(value)
