"""JSON documents read with the position of every value that a writer may change, so a writer can
splice new text into the original and keep every other byte as it was (LLaVA, COCO).

Values are decoded by the standard library's C scanner (json.JSONDecoder.raw_decode); only the
containers a format walks into are scanned here, one level at a time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

_DECODER = json.JSONDecoder()
_WS = re.compile(r"[ \t\n\r]*")
BOM = "\ufeff"
# json.loads turns an integer literal into an int, and int() refuses one of more than 4300 digits
# (sys.get_int_max_str_digits) with a plain ValueError, not a JSONDecodeError
NUMBER_TOO_LONG = "a number with more than 4300 digits"


class JsonSpanError(ValueError):
    """Not valid JSON; `lineno` / `colno` are 1-based, `msg` says why."""

    def __init__(self, msg: str, text: str, pos: int):
        self.msg = msg
        self.pos = pos
        self.lineno = text.count("\n", 0, pos) + 1
        self.colno = pos - text.rfind("\n", 0, pos)
        super().__init__(f"{msg} (line {self.lineno} column {self.colno})")


def _error(exc: json.JSONDecodeError | RecursionError, text: str, pos: int) -> JsonSpanError:
    if isinstance(exc, RecursionError):
        return JsonSpanError("nested too deeply", text, pos)
    return JsonSpanError(exc.msg, text, exc.pos)


def skip_ws(text: str, pos: int) -> int:
    return _WS.match(text, pos).end()  # type: ignore[union-attr]


def decode_value(text: str, pos: int) -> tuple[Any, int]:
    """(value, end) of the JSON value starting at `pos` (no leading whitespace)."""
    try:
        return _DECODER.raw_decode(text, pos)
    except json.JSONDecodeError as exc:
        raise _error(exc, text, pos) from None
    except RecursionError as exc:
        raise _error(exc, text, pos) from None
    except ValueError:
        raise JsonSpanError(NUMBER_TOO_LONG, text, pos) from None


@dataclass(frozen=True)
class Member:
    """One `"key": value` of an object: offsets into the text (end exclusive)."""

    key_start: int
    key_end: int
    value_start: int
    value_end: int


@dataclass(frozen=True)
class Element:
    """One value of an array: the decoded value and its offsets."""

    value: Any
    start: int
    end: int


def scan_array(text: str, pos: int, decode: Callable[[str, int], tuple[Any, int]] = decode_value) -> tuple[list[Element], int]:
    """Elements of the array whose '[' is at `pos`, and the offset after its ']'."""
    if text[pos:pos + 1] != "[":
        raise JsonSpanError("expected an array '['", text, pos)
    items: list[Element] = []
    pos = skip_ws(text, pos + 1)
    if text[pos:pos + 1] == "]":
        return items, pos + 1
    while True:
        value, end = decode(text, pos)
        items.append(Element(value, pos, end))
        pos = skip_ws(text, end)
        char = text[pos:pos + 1]
        if char == ",":
            pos = skip_ws(text, pos + 1)
            continue
        if char == "]":
            return items, pos + 1
        raise JsonSpanError("expecting ',' delimiter or ']'", text, pos)


def scan_object(
    text: str, pos: int, deep: dict[str, Callable[[str, int], tuple[Any, int]]] | None = None
) -> tuple[dict[str, Any], dict[str, Member], list[str], int]:
    """(decoded object, member offsets by key, keys in order, offset after '}') of the object whose
    '{' is at `pos`. `deep` decodes the values of some keys with another scanner (its result is
    what the decoded object holds for that key). A repeated key keeps its last value, as json does."""
    if text[pos:pos + 1] != "{":
        raise JsonSpanError("expected an object '{'", text, pos)
    obj: dict[str, Any] = {}
    members: dict[str, Member] = {}
    order: list[str] = []
    pos = skip_ws(text, pos + 1)
    if text[pos:pos + 1] == "}":
        return obj, members, order, pos + 1
    while True:
        if text[pos:pos + 1] != '"':
            raise JsonSpanError("expecting property name enclosed in double quotes", text, pos)
        try:
            key, key_end = json.decoder.scanstring(text, pos + 1)  # type: ignore[attr-defined]
        except json.JSONDecodeError as exc:
            raise _error(exc, text, pos) from None
        colon = skip_ws(text, key_end)
        if text[colon:colon + 1] != ":":
            raise JsonSpanError("expecting ':' delimiter", text, colon)
        value_start = skip_ws(text, colon + 1)
        decode = (deep or {}).get(key, decode_value)
        value, value_end = decode(text, value_start)
        if key not in members:
            order.append(key)
        obj[key] = value
        members[key] = Member(pos, key_end, value_start, value_end)
        pos = skip_ws(text, value_end)
        char = text[pos:pos + 1]
        if char == ",":
            pos = skip_ws(text, pos + 1)
            continue
        if char == "}":
            return obj, members, order, pos + 1
        raise JsonSpanError("expecting ',' delimiter or '}'", text, pos)


def expect_end(text: str, pos: int) -> None:
    pos = skip_ws(text, pos)
    if pos != len(text):
        raise JsonSpanError("extra data after the JSON value", text, pos)


class LineCounter:
    """1-based line of increasing offsets, in one pass over the text."""

    def __init__(self, text: str):
        self.text = text
        self.pos = 0
        self.line = 1

    def at(self, pos: int) -> int:
        if pos < self.pos:
            self.pos, self.line = 0, 1
        self.line += self.text.count("\n", self.pos, pos)
        self.pos = pos
        return self.line


def uses_ascii_escapes(text: str) -> bool:
    """Whether the document escapes non-ASCII characters (Python's json.dump default): no raw
    non-ASCII character in it but some \\u escape."""
    return text.isascii() and "\\u" in text


def dumps_like(value: Any, ensure_ascii: bool) -> str:
    return json.dumps(value, ensure_ascii=ensure_ascii)


def splice(text: str, start: int, end: int, edits: Iterable[tuple[int, int, str]]) -> str:
    """text[start:end] with each (from, to, new text) edit applied (offsets into `text`, not overlapping)."""
    pieces: list[str] = []
    pos = start
    for a, b, new in sorted(edits, key=lambda e: (e[0], e[1])):
        if a < pos or b > end:
            raise ValueError("overlapping or out-of-range edits")
        pieces.append(text[pos:a])
        pieces.append(new)
        pos = b
    pieces.append(text[pos:end])
    return "".join(pieces)


def add_member_edit(text: str, members: dict[str, Member], order: Sequence[str], key: str, value: Any,
                    ensure_ascii: bool, object_end: int) -> tuple[int, int, str]:
    """The edit that sets `key` to `value` in an object: its value replaced when present, else a new
    member after the last one, in the object's own separator style."""
    encoded = dumps_like(value, ensure_ascii)
    if key in members:
        m = members[key]
        return (m.value_start, m.value_end, encoded)
    name = dumps_like(key, ensure_ascii)
    if not order:
        close = object_end - 1  # the '}'
        return (close, close, f"{name}: {encoded}")
    last = members[order[-1]]
    if len(order) >= 2:
        before = members[order[-2]]
        separator = text[before.value_end:last.key_start]
    else:
        separator = ", "
    colon = text[last.key_end:last.value_start]
    return (last.value_end, last.value_end, f"{separator}{name}{colon}{encoded}")


def rebuild_array(text: str, array_start: int, array_end: int, elements: Sequence[Element],
                  keep: Callable[[int], bool], replacement: Callable[[int], str | None]) -> str:
    """The array text (from its '[' to after its ']') keeping the elements `keep(i)` says, each as
    `replacement(i)` or its original text, with the original separators. Unchanged -> same text."""
    if not elements:
        return text[array_start:array_end]
    pieces = [text[array_start:elements[0].start]]
    first = True
    for i, element in enumerate(elements):
        if not keep(i):
            continue
        if not first:
            pieces.append(text[elements[i - 1].end:element.start] if i > 0 else ", ")
        new = replacement(i)
        pieces.append(text[element.start:element.end] if new is None else new)
        first = False
    pieces.append(text[elements[-1].end:array_end])
    return "".join(pieces)
