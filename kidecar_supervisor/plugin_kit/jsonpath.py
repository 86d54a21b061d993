"""A small JSONPath subset for picking one value (a probed state, a loaded version) out of JSON.

Game endpoints answer things like ``{"state": "idle", "room": {"players": 3}}``;
the probe only needs to walk to one value, so the supported syntax is the
walking part of JSONPath and nothing else (no filters, wildcards, slices or
recursive descent — each would make "which value is the state?" ambiguous):

* ``$``                      the whole document
* ``.name``                  a key made of letters, digits, ``_`` and ``-``
* ``['key']`` / ``["key"]``  any non-empty key (``\\'``, ``\\"`` and ``\\\\`` escape)
* ``[0]`` / ``[-1]``         a list index (negative counts from the end)

The Go kidecar's gjson-style paths are accepted beside them, for the same
walking subset: a path not starting with ``$`` is gjson (``state``, ``a.0.b``,
``a.#``). Its steps are separated by ``.`` (``\\.`` and ``\\\\`` escape); a number
is a list index on a list and a key on a mapping, as gjson reads it; a final
``#`` is the length of a list. gjson's wildcards (``*``, ``?``), queries
(``#(...)``), modifiers (``@``) and pipes (``|``) are refused, for the same
reason as JSONPath's filters.

A path is compiled once at config time, so a malformed one is a config error
with the offending position, never a runtime surprise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
#: ASCII digits only (``\d`` is any Unicode digit), at most 18 of them: an index that
#: fits any list, and int() never refuses it (Python's 4300-digit limit)
_INDEX = re.compile(r"-?[0-9]{1,18}(?![0-9])")

#: a value that is absent (distinct from JSON null, which is a real value)
MISSING: Any = object()


class JsonPathError(ValueError):
    """A malformed path: says where and what was expected."""

    def __init__(self, path: str, pos: int, problem: str) -> None:
        self.path = path
        self.pos = pos
        self.problem = problem
        super().__init__(f"invalid JSONPath {path!r} at position {pos}: {problem}")


@dataclass(frozen=True)
class GjsonStep:
    """A gjson step that is all digits: an index on a list, a key on a mapping."""

    text: str


@dataclass(frozen=True)
class GjsonCount:
    """gjson's final ``#``: the number of items of a list."""


Step = str | int | GjsonStep | GjsonCount


@dataclass(frozen=True)
class JsonPath:
    """A compiled path: a tuple of keys (str) and indexes (int), or gjson's steps."""

    text: str
    steps: tuple[Step, ...]

    def find(self, document: Any) -> Any:
        """The value at this path, or ``MISSING`` when any step does not exist."""
        value = document
        for step in self.steps:
            value = _step(value, step)
            if value is MISSING:
                return MISSING
        return value

    def __str__(self) -> str:
        return self.text


def _step(value: Any, step: Step) -> Any:
    if isinstance(step, GjsonCount):
        return len(value) if isinstance(value, list) else MISSING
    if isinstance(step, GjsonStep):
        if isinstance(value, list):
            index = int(step.text)
            return value[index] if index < len(value) else MISSING
        step = step.text
    if isinstance(step, int):
        if isinstance(value, list) and -len(value) <= step < len(value):
            return value[step]
        return MISSING
    if isinstance(value, dict) and step in value:
        return value[step]
    return MISSING


def compile_path(text: str) -> JsonPath:
    """Parse ``text``; raise JsonPathError naming the position of the first problem."""
    if not text.startswith("$"):
        return _compile_gjson(text)
    steps: list[Step] = []
    pos = 1
    while pos < len(text):
        char = text[pos]
        step: str | int
        if char == ".":
            step, pos = _parse_dotted(text, pos + 1)
        elif char == "[":
            step, pos = _parse_bracket(text, pos + 1)
        else:
            raise JsonPathError(text, pos, f"expected '.' or '[', got {char!r}")
        steps.append(step)
    return JsonPath(text, tuple(steps))


def _parse_dotted(text: str, pos: int) -> tuple[str, int]:
    match = _NAME.match(text, pos)
    if match is None:
        found = repr(text[pos]) if pos < len(text) else "the end"
        raise JsonPathError(
            text, pos, f"expected a key name after '.', got {found} (use ['key'] for other keys)"
        )
    return match.group(0), match.end()


def _parse_bracket(text: str, pos: int) -> tuple[str | int, int]:
    key: str | int
    if pos < len(text) and text[pos] in "'\"":
        key, pos = _parse_quoted(text, pos)
    else:
        match = _INDEX.match(text, pos)
        if match is None:
            raise JsonPathError(text, pos, "expected a quoted key or an integer index after '['")
        key, pos = int(match.group(0)), match.end()
    if pos >= len(text) or text[pos] != "]":
        raise JsonPathError(text, pos, "expected ']'")
    return key, pos + 1


def _parse_quoted(text: str, pos: int) -> tuple[str, int]:
    quote = text[pos]
    out: list[str] = []
    pos += 1
    while pos < len(text):
        char = text[pos]
        if char == "\\":
            if pos + 1 >= len(text) or text[pos + 1] not in (quote, "\\"):
                raise JsonPathError(text, pos, f"only \\{quote} and \\\\ escapes are supported")
            out.append(text[pos + 1])
            pos += 2
        elif char == quote:
            if not out:
                raise JsonPathError(text, pos, "empty key")
            return "".join(out), pos + 1
        else:
            out.append(char)
            pos += 1
    raise JsonPathError(text, pos, f"unterminated quoted key (missing {quote})")


_GJSON_REFUSED = {"*": "wildcards", "?": "wildcards", "|": "pipes", "@": "modifiers",
                  "!": "literals", "=": "queries", "(": "queries", ")": "queries"}


def _compile_gjson(text: str) -> JsonPath:
    """A gjson path (the Go kidecar's): ``state``, ``a.0.b``, ``a.#``."""
    if not text:
        raise JsonPathError(text, 0, "must not be empty (write '$' for the whole document)")
    steps: list[Step] = []
    start, pos = 0, 0
    while True:
        segment, end = _gjson_segment(text, pos)
        if not segment:
            raise JsonPathError(text, pos, "empty step (two dots, or a dot at an end)")
        steps.append(_gjson_step(text, start, segment, end))
        if end >= len(text):
            return JsonPath(text, tuple(steps))
        start = pos = end + 1


def _gjson_segment(text: str, pos: int) -> tuple[str, int]:
    """The unescaped step starting at ``pos`` and where it ends (at a dot or the end)."""
    out: list[str] = []
    while pos < len(text) and text[pos] != ".":
        char = text[pos]
        if char == "\\":
            if pos + 1 >= len(text):
                raise JsonPathError(text, pos, "a '\\' must escape the character after it")
            out.append(text[pos + 1])
            pos += 2
            continue
        if char in _GJSON_REFUSED:
            raise JsonPathError(text, pos, f"gjson {_GJSON_REFUSED[char]} ({char!r}) are not "
                                "supported: a path must lead to one value")
        out.append(char)
        pos += 1
    return "".join(out), pos


def _gjson_step(text: str, start: int, segment: str, end: int) -> Step:
    if text[start:end] == "#":
        if end < len(text):
            raise JsonPathError(text, start, "'#' is supported only as the last step (the "
                                "length of a list)")
        return GjsonCount()
    raw = text[start:end]
    # ASCII only: '⑻'.isdigit() is True but int() refuses it (found by atheris)
    if raw.isascii() and raw.isdigit() and len(raw) <= 18:
        return GjsonStep(segment)
    return segment
