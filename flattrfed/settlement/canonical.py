"""RFC 8785 (JCS) canonical JSON for money documents, their SHA-256 digests, and base58btc."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Final

__all__ = [
    "BASE58BTC_ALPHABET",
    "MAX_DEPTH",
    "MAX_SAFE_INTEGER",
    "base58btc_decode",
    "base58btc_encode",
    "canonical_json",
    "canonical_json_reference",
    "sha256_digest",
]

# RFC 8785 serialises numbers the way ECMAScript does. For an integer that is exact only up to
# Number.MAX_SAFE_INTEGER (I-JSON, RFC 7493 §2.2); beyond it two different integers can share one
# spelling, so they are refused rather than rounded. Money travels as decimal strings anyway.
MAX_SAFE_INTEGER: Final = 2**53 - 1

# Nesting cap. Also what stops a self-referencing dict or list, which would otherwise recurse
# until the interpreter gives up. Settlement documents nest a handful of levels.
MAX_DEPTH: Final = 100

# What JSON.stringify (ECMAScript QuoteJSONString, RFC 8785 §3.2.2.2) writes for the characters
# it escapes: the two-character forms where they exist, else \u00XX in lowercase hex. Everything
# else (U+007F, U+2028, '/', non-ASCII...) is written as itself, in UTF-8.
_ESCAPES: Final[dict[str, str]] = {chr(c): f"\\u{c:04x}" for c in range(0x20)} | {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}
_NEEDS_ESCAPE: Final = re.compile(r'[\x00-\x1f"\\]')
# A Python str may hold surrogate code points (e.g. from json.loads('"\\ud800"')); none of them
# is a character, and a pair of them is two lone halves here, not an astral character. I-JSON
# (RFC 8785 §3.2.2.2 via RFC 7493) forbids them, and they have no UTF-8 encoding.
_SURROGATE: Final = re.compile("[\ud800-\udfff]")

BASE58BTC_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_INDEX: Final[dict[str, int]] = {c: i for i, c in enumerate(BASE58BTC_ALPHABET)}


def canonical_json(value: object) -> bytes:
    """The RFC 8785 canonical form of `value`, as UTF-8 bytes.

    Accepted: dict with str keys, list, str, int with |n| <= 2**53 - 1, bool and None. Object
    members are sorted by the UTF-16 code units of their names (RFC 8785 §3.2.3), strings are
    escaped exactly as JSON.stringify escapes them, and there is no whitespace.

    Refused with ValueError: floats of any kind (money documents never carry them, and the
    ECMAScript double formatting is not worth the risk of getting a digit wrong), integers
    outside the safe range, strings holding surrogate code points, nesting deeper than
    MAX_DEPTH (which includes cycles). Refused with TypeError: any other type, and non-str keys.
    """
    if _plain(value, 0):
        # For these values the C JSON encoder writes exactly RFC 8785 (see _plain), many times
        # faster; a lone surrogate fails the UTF-8 encoding and gets the precise error below.
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:
            pass
    return canonical_json_reference(value)


def canonical_json_reference(value: object) -> bytes:
    """canonical_json written out rule by rule, without the fast path (tests compare them)."""
    parts: list[str] = []
    _write(value, parts, 0)
    return "".join(parts).encode("utf-8")


def _plain(value: object, depth: int) -> bool:
    """True when json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=False) writes
    `value` exactly as RFC 8785 does.

    It escapes strings as JSON.stringify does (two-character escapes, backslash-u00xx in lowercase
    for the other control characters, everything else as itself), writes integers in decimal,
    and sorts keys by code point, which equals the UTF-16 order RFC 8785 asks for when every
    key is ASCII. So: str, exact int in the safe range, bool, None, lists of them, and dicts
    with ASCII keys, nested at most MAX_DEPTH; anything else goes the careful way.
    """
    kind = type(value)
    if kind is str or value is None or kind is bool:
        return True
    if kind is int:
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER  # type: ignore[operator]
    if depth >= MAX_DEPTH:
        return False
    if kind is dict:
        return all(
            type(key) is str and key.isascii() and _plain(item, depth + 1)
            for key, item in value.items()  # type: ignore[attr-defined]
        )
    if kind is list:
        return all(_plain(item, depth + 1) for item in value)  # type: ignore[attr-defined]
    return False


def sha256_digest(value: object) -> str:
    """'sha256:' followed by the lowercase hex SHA-256 of canonical_json(value)."""
    return "sha256:" + hashlib.sha256(canonical_json(value)).hexdigest()


def _write(value: object, parts: list[str], depth: int) -> None:
    # bool before int: True is an int to Python, a literal to JSON.
    if value is None:
        parts.append("null")
    elif value is True:
        parts.append("true")
    elif value is False:
        parts.append("false")
    elif isinstance(value, str):
        parts.append(_quote(value))
    elif isinstance(value, int):
        number = int(value)  # an IntEnum member, say, is written as its number
        if not -MAX_SAFE_INTEGER <= number <= MAX_SAFE_INTEGER:
            raise ValueError("integer outside ±(2**53 - 1) has no exact JSON form")
        parts.append(str(number))
    elif isinstance(value, float):
        raise ValueError("floats are refused: money documents never carry floats")
    elif isinstance(value, dict):
        if depth >= MAX_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH}")
        for key in value:
            if not isinstance(key, str):
                raise TypeError(f"object key of type {type(key).__name__}; only str keys")
        parts.append("{")
        # Comparing UTF-16BE bytes is comparing UTF-16 code units: each unit is two bytes, most
        # significant first. Keys with surrogates cannot be encoded, so check them first.
        keys = sorted(value, key=_utf16_sort_key)
        for index, key in enumerate(keys):
            if index:
                parts.append(",")
            parts.append(_quote(key))
            parts.append(":")
            _write(value[key], parts, depth + 1)
        parts.append("}")
    elif isinstance(value, list):
        if depth >= MAX_DEPTH:
            raise ValueError(f"JSON nested deeper than {MAX_DEPTH}")
        parts.append("[")
        for index, item in enumerate(value):
            if index:
                parts.append(",")
            _write(item, parts, depth + 1)
        parts.append("]")
    else:
        raise TypeError(f"{type(value).__name__} is not a JSON value canonical_json accepts")


def _utf16_sort_key(key: str) -> bytes:
    _check_no_surrogates(key)
    return key.encode("utf-16-be")


def _check_no_surrogates(text: str) -> None:
    if _SURROGATE.search(text):
        raise ValueError("string holds a lone surrogate code point; not valid I-JSON")


def _quote(text: str) -> str:
    _check_no_surrogates(text)
    return '"' + _NEEDS_ESCAPE.sub(lambda m: _ESCAPES[m.group()], text) + '"'


def base58btc_encode(data: bytes) -> str:
    """Bitcoin-alphabet base58 of `data` (no multibase prefix); each leading zero byte is '1'."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    number = int.from_bytes(data, "big")
    digits: list[str] = []
    while number:
        number, remainder = divmod(number, 58)
        digits.append(BASE58BTC_ALPHABET[remainder])
    return "1" * zeros + "".join(reversed(digits))


def base58btc_decode(text: str) -> bytes:
    """Inverse of base58btc_encode; ValueError on any character outside the alphabet.

    The encoding is a bijection, so a string decodes to exactly one byte string and encodes back
    to itself: there is no second spelling of the same bytes to worry about.
    """
    number = 0
    for char in text:
        digit = _BASE58_INDEX.get(char)
        if digit is None:
            raise ValueError("character outside the base58btc alphabet")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    return b"\0" * zeros + number.to_bytes((number.bit_length() + 7) // 8, "big")
