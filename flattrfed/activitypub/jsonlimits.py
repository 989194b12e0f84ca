"""Parses untrusted JSON bodies within limits."""

from __future__ import annotations

import json
import math
import re
from enum import StrEnum
from itertools import accumulate
from typing import Any, NoReturn

__all__ = [
    "DEFAULT_MAX_BYTES",
    "JsonLimitError",
    "JsonLimitReason",
    "parse_json_limited",
]

DEFAULT_MAX_BYTES = 1_048_576  # Mastodon's body_with_limit cap for fetched documents

_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


class JsonLimitReason(StrEnum):
    """Why a body was refused; stable strings, fit for logs and metrics."""

    TOO_LARGE = "too_large"
    INVALID_UTF8 = "invalid_utf8"
    INVALID_JSON = "invalid_json"
    TOO_DEEP = "too_deep"
    DUPLICATE_KEY = "duplicate_key"
    TOO_MANY_KEYS = "too_many_keys"
    LIST_TOO_LONG = "list_too_long"
    STRING_TOO_LONG = "string_too_long"
    BAD_STRING = "bad_string"
    NON_FINITE_NUMBER = "non_finite_number"
    NUMBER_TOO_LARGE = "number_too_large"
    TOO_MANY_NODES = "too_many_nodes"
    NOT_AN_OBJECT = "not_an_object"


class JsonLimitError(ValueError):
    """An untrusted JSON body was refused; `reason` says which rule it broke."""

    def __init__(self, reason: JsonLimitReason, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason}: {self.detail}"

    @property
    def http_status(self) -> int:
        """413 for a body over the byte cap, 400 for everything else."""
        return 413 if self.reason is JsonLimitReason.TOO_LARGE else 400


def _refuse(reason: JsonLimitReason, detail: str) -> NoReturn:
    raise JsonLimitError(reason, detail)


def _short(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:40] + "…")


# A JSON string, written so that it always matches from an opening quote: an unterminated string
# runs to the end (a trailing lone backslash included). A pattern that could fail there would be
# retried from every later quote, which is quadratic on '"\"\"\"…'.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*\\?(?:"|\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def _nesting_depth(text: str) -> int:
    """The deepest bracket nesting outside strings, found without recursion.

    Exact for valid JSON. For invalid JSON it may be wrong only after the point where json.loads
    stops with an error, so it still bounds how deep json.loads can recurse.
    """
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    return max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0)


class _Limits:
    """The hooks json.loads calls while parsing, and the walk over what it built."""

    def __init__(
        self,
        *,
        max_list_items: int,
        max_keys: int,
        max_string_bytes: int,
        max_number_chars: int,
        max_total_nodes: int,
    ) -> None:
        self.max_list_items = max_list_items
        self.max_keys = max_keys
        self.max_string_bytes = max_string_bytes
        self.max_number_chars = max_number_chars
        self.max_total_nodes = max_total_nodes

    def object_pairs(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        if len(pairs) > self.max_keys:
            _refuse(JsonLimitReason.TOO_MANY_KEYS, f"object has more than {self.max_keys} keys")
        result = dict(pairs)
        if len(result) != len(pairs):
            # Two parsers keeping different copies of a repeated key (first wins vs last wins)
            # would disagree about what was signed or checked, so refuse instead of choosing.
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    _refuse(JsonLimitReason.DUPLICATE_KEY, f"key {_short(key)} appears twice")
                seen.add(key)
        return result

    def constant(self, name: str) -> NoReturn:
        # Python's json accepts NaN and ±Infinity, which are not JSON and break comparisons.
        _refuse(JsonLimitReason.NON_FINITE_NUMBER, f"{name} is not a JSON number")

    def _check_number_length(self, text: str) -> None:
        # Checked before int(): converting a long digit string is quadratic.
        if len(text) > self.max_number_chars:
            _refuse(
                JsonLimitReason.NUMBER_TOO_LARGE,
                f"number literal longer than {self.max_number_chars} characters",
            )

    def integer(self, text: str) -> int:
        self._check_number_length(text)
        value = int(text)
        # Anything we keep goes into 64-bit database columns.
        if not _INT64_MIN <= value <= _INT64_MAX:
            _refuse(JsonLimitReason.NUMBER_TOO_LARGE, f"integer {text} outside 64-bit range")
        return value

    def real(self, text: str) -> float:
        self._check_number_length(text)
        value = float(text)
        if not math.isfinite(value):
            _refuse(JsonLimitReason.NUMBER_TOO_LARGE, f"number {text} overflows a float")
        return value

    def _check_string(self, text: str, what: str) -> None:
        if len(text) > self.max_string_bytes:
            _refuse(JsonLimitReason.STRING_TOO_LONG, f"{what} over {self.max_string_bytes} bytes")
        if "\x00" in text:
            # Valid JSON, but PostgreSQL text cannot hold it and C consumers truncate at it.
            _refuse(JsonLimitReason.BAD_STRING, f"{what} contains U+0000")
        if text.isascii():
            return
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            # A lone surrogate from a \ud800-style escape: valid JSON syntax, not valid Unicode,
            # and it would fail later when stored or re-serialised.
            raise JsonLimitError(
                JsonLimitReason.BAD_STRING, f"{what} contains a lone surrogate"
            ) from None
        if size > self.max_string_bytes:
            _refuse(JsonLimitReason.STRING_TOO_LONG, f"{what} over {self.max_string_bytes} bytes")

    def walk(self, root: Any) -> None:
        """Check every value json.loads built; a stack, not recursion, so depth is no issue."""
        nodes = 0
        stack = [root]
        while stack:
            value = stack.pop()
            nodes += 1
            if nodes > self.max_total_nodes:
                _refuse(JsonLimitReason.TOO_MANY_NODES, f"more than {self.max_total_nodes} values")
            if isinstance(value, str):
                self._check_string(value, "string")
            elif isinstance(value, list):
                if len(value) > self.max_list_items:
                    _refuse(
                        JsonLimitReason.LIST_TOO_LONG,
                        f"list has more than {self.max_list_items} items",
                    )
                stack.extend(value)
            elif isinstance(value, dict):
                for key in value:
                    self._check_string(key, "key")
                stack.extend(value.values())


def parse_json_limited(
    data: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_depth: int = 32,
    max_list_items: int = 1000,
    max_keys: int = 1000,
    max_string_bytes: int = 262_144,
    max_number_chars: int = 32,
    max_total_nodes: int = 20_000,
    require_object: bool = True,
) -> Any:
    """Parse an untrusted JSON body, or raise JsonLimitError saying which limit it broke.

    Refuses: more than `max_bytes`; invalid UTF-8 (a BOM included) or JSON; containers nested
    deeper than `max_depth`; a list over `max_list_items` items or an object over `max_keys`
    keys; a repeated key; a string or key over `max_string_bytes` UTF-8 bytes, or holding U+0000
    or a lone surrogate; NaN/Infinity; a number literal over `max_number_chars` characters, an
    integer outside 64 bits or a float that overflows; more than `max_total_nodes` values in
    all; and, if `require_object`, a top level that is not an object.
    """
    if len(data) > max_bytes:
        _refuse(JsonLimitReason.TOO_LARGE, f"body of {len(data)} bytes exceeds {max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise JsonLimitError(
            JsonLimitReason.INVALID_UTF8, f"invalid UTF-8 at byte {exc.start}"
        ) from None
    # json.loads recurses once per level and would hit RecursionError near 1000 levels, so the
    # depth is measured on the text before json.loads ever sees it.
    depth = _nesting_depth(text)
    if depth > max_depth:
        _refuse(JsonLimitReason.TOO_DEEP, f"nesting deeper than {max_depth}")
    limits = _Limits(
        max_list_items=max_list_items,
        max_keys=max_keys,
        max_string_bytes=max_string_bytes,
        max_number_chars=max_number_chars,
        max_total_nodes=max_total_nodes,
    )
    try:
        value = json.loads(
            text,
            object_pairs_hook=limits.object_pairs,
            parse_constant=limits.constant,
            parse_int=limits.integer,
            parse_float=limits.real,
        )
    except JsonLimitError:
        raise
    except RecursionError:
        # Only reachable with a max_depth near the interpreter's recursion limit.
        raise JsonLimitError(JsonLimitReason.TOO_DEEP, "nesting too deep for the parser") from None
    except json.JSONDecodeError as exc:
        raise JsonLimitError(
            JsonLimitReason.INVALID_JSON, f"{exc.msg} (character {exc.pos})"
        ) from None
    except ValueError as exc:
        # Defensive: nothing else in json.loads or the hooks is known to raise ValueError.
        raise JsonLimitError(JsonLimitReason.INVALID_JSON, str(exc)) from None
    if require_object and not isinstance(value, dict):
        _refuse(JsonLimitReason.NOT_AN_OBJECT, f"top level is {type(value).__name__}, not object")
    limits.walk(value)
    return value
