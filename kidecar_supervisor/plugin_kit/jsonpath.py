"""A small JSONPath subset for picking one value (a probed state, a loaded version) out of JSON.

Game endpoints answer things like ``{"state": "idle", "room": {"players": 3}}``;
the probe only needs to walk to one value, so the supported syntax is the
walking part of JSONPath and nothing else (no filters, wildcards, slices or
recursive descent — each would make "which value is the state?" ambiguous):

* ``$``                      the whole document
* ``.name``                  a key made of letters, digits, ``_`` and ``-``
* ``['key']`` / ``["key"]``  any non-empty key (``\\'``, ``\\"`` and ``\\\\`` escape)
* ``[0]`` / ``[-1]``         a list index (negative counts from the end)

A path is compiled once at config time, so a malformed one is a config error
with the offending position, never a runtime surprise.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")
_INDEX = re.compile(r"-?\d+")

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
class JsonPath:
    """A compiled path: a tuple of keys (str) and indexes (int)."""

    text: str
    steps: tuple[str | int, ...]

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


def _step(value: Any, step: str | int) -> Any:
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
        raise JsonPathError(text, 0, "must start with '$'")
    steps: list[str | int] = []
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
