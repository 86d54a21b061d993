"""Building Kubernetes patches: RFC 6901 pointers, merge patches, JSON patches.

Marker writes must work whether the key exists or not, and removing a key
that is already gone must not fail. A JSON merge patch (RFC 7386) has exactly
those semantics for maps: it creates missing parent maps, replaces existing
members and ``null`` removes a member (a no-op when absent). So a pointer made
only of map keys (``/spec/opsState``, ``/metadata/labels/a~1b``) becomes a
nested merge patch. Merge patches also compose (``compose``), which is what
lets bursts of writes to one object coalesce into one request.

A pointer that walks into a list (a numeric token whose parent is a list)
cannot be a merge patch: ``json_patch_ops`` builds RFC 6902 operations against
the object as currently read, adding only the missing parents.
"""

from __future__ import annotations

import copy
from typing import Any

JsonObj = dict[str, Any]


class PointerError(ValueError):
    """A JSON pointer that is malformed or cannot be applied to the object."""


def escape_token(token: str) -> str:
    """One reference token, escaped per RFC 6901 (``~`` → ``~0``, ``/`` → ``~1``)."""
    return token.replace("~", "~0").replace("/", "~1")


def unescape_token(token: str) -> str:
    """The inverse of ``escape_token``; a ``~`` not followed by 0 or 1 is an error."""
    out: list[str] = []
    i = 0
    while i < len(token):
        ch = token[i]
        if ch == "~":
            nxt = token[i + 1 : i + 2]
            if nxt not in ("0", "1"):
                raise PointerError(f"bad escape '~{nxt}' in JSON pointer token {token!r}")
            out.append("~" if nxt == "0" else "/")
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def parse_pointer(pointer: str) -> list[str]:
    """The unescaped tokens of ``pointer``; "" is the whole document (no tokens)."""
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise PointerError(f"JSON pointer must start with '/', got {pointer!r}")
    return [unescape_token(t) for t in pointer[1:].split("/")]


def format_pointer(tokens: list[str]) -> str:
    """The pointer for ``tokens``, each escaped."""
    return "".join("/" + escape_token(t) for t in tokens)


def nest(tokens: list[str], value: Any) -> Any:
    """``{"a": {"b": value}}`` for tokens ``["a", "b"]``: a merge patch setting one leaf."""
    out = value
    for token in reversed(tokens):
        out = {token: out}
    return out


def pointer_merge_patch(pointer: str, value: Any) -> JsonObj:
    """A merge patch setting (or, for None, removing) the member at ``pointer``."""
    tokens = parse_pointer(pointer)
    if not tokens:
        raise PointerError("cannot patch the whole object: the JSON pointer is empty")
    patch: JsonObj = nest(tokens, value)
    return patch


def compose(first: JsonObj, second: JsonObj) -> JsonObj:
    """One merge patch equal to applying ``first`` then ``second`` (latest value wins).

    Exact for what kidecar writes (string leaves, maps of them); the one case
    RFC 7386 cannot express in a single patch, a map over an earlier ``null``,
    keeps the map (the earlier removal of unrelated members is dropped).
    """
    out = copy.deepcopy(first)
    _compose_into(out, second)
    return out


def _compose_into(target: JsonObj, patch: JsonObj) -> None:
    for key, value in patch.items():
        current = target.get(key)
        if isinstance(value, dict) and isinstance(current, dict):
            _compose_into(current, value)
        else:
            target[key] = copy.deepcopy(value)


def apply_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 applied locally (for caches of objects we patched)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = apply_merge_patch(out.get(key), value)
    return out


def walks_into_list(obj: Any, pointer: str) -> bool:
    """True if following ``pointer`` in ``obj`` passes through a list (needs a JSON patch)."""
    node = obj
    for token in parse_pointer(pointer):
        if isinstance(node, list):
            return True
        if not isinstance(node, dict) or token not in node:
            return False
        node = node[token]
    return False


def json_patch_ops(obj: Any, pointer: str, value: Any) -> list[JsonObj]:
    """RFC 6902 ops setting (or removing, for None) ``pointer`` in ``obj`` as read.

    Only the first missing parent is added (as nested maps), so siblings are
    never wiped; a removal of a path that is not there is no operation at all.
    """
    tokens = parse_pointer(pointer)
    if not tokens:
        raise PointerError("cannot patch the whole object: the JSON pointer is empty")
    node = obj
    for depth, token in enumerate(tokens):
        here = format_pointer(tokens[: depth + 1])
        last = depth == len(tokens) - 1
        if isinstance(node, list):
            index = _list_index(token, here)
            if index is None or index >= len(node):
                if value is None:
                    return []  # removing what is not there
                if last and (index is None or index == len(node)):
                    return [{"op": "add", "path": here, "value": value}]
                raise PointerError(f"{here}: index past the end of a list of {len(node)}")
            if last:
                if value is None:
                    return [{"op": "remove", "path": here}]
                return [{"op": "replace", "path": here, "value": value}]
            node = node[index]
            continue
        if not isinstance(node, dict):
            raise PointerError(f"{here}: parent is a {type(node).__name__}, not an object")
        if token not in node:
            if value is None:
                return []
            return [{"op": "add", "path": here, "value": nest(tokens[depth + 1 :], value)}]
        if last:
            if value is None:
                return [{"op": "remove", "path": here}]
            return [{"op": "add", "path": here, "value": value}]
        node = node[token]
    return []  # unreachable: the loop returns on the last token


def _list_index(token: str, here: str) -> int | None:
    """The list index ``token`` names; None for ``-`` (one past the end)."""
    if token == "-":
        return None
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PointerError(f"{here}: {token!r} is not a list index")
    return int(token)
