"""The JSONPath subset used to pick the probed state out of a JSON answer."""

from __future__ import annotations

import pytest

from kidecar_supervisor.plugin_kit.jsonpath import MISSING, JsonPathError, compile_path

DOC = {
    "state": "idle",
    "room": {"players": [{"name": "a", "ready": True}, {"name": "b"}], "max": 8},
    "odd key": {"x.y": 1, "it's": 2},
    "nothing": None,
}


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("$", DOC),
        ("$.state", "idle"),
        ("$.room.max", 8),
        ("$.room.players[0].name", "a"),
        ("$.room.players[-1].name", "b"),
        ("$['odd key']['x.y']", 1),
        ('$["odd key"]["x.y"]', 1),
        ("$['odd key']['it\\'s']", 2),
        ("$.nothing", None),
        ("$['room'].players[0]['ready']", True),
    ],
)
def test_finds_values(path: str, expected: object) -> None:
    assert compile_path(path).find(DOC) == expected


@pytest.mark.parametrize(
    "path",
    ["$.missing", "$.room.players[2]", "$.room.players[-3]", "$.state.sub", "$.room[0]",
     "$.room.players.name"],
)
def test_absent_values_are_missing_not_none(path: str) -> None:
    assert compile_path(path).find(DOC) is MISSING


@pytest.mark.parametrize(
    ("path", "pos", "words"),
    [
        ("$.", 2, "expected a key name"),
        ("$..a", 2, "expected a key name"),
        ("$.a b", 3, "expected '.' or '['"),
        ("$[", 2, "quoted key or an integer"),
        ("$[abc]", 2, "quoted key or an integer"),
        ("$['a'", 5, "expected ']'"),
        ("$['a", 4, "unterminated"),
        ("$['']", 3, "empty key"),
        ("$['a\\n']", 4, "escapes"),
        ("$[1.5]", 3, "expected ']'"),
        ("$.a[*]", 4, "quoted key or an integer"),
        ("$.a[?(@.x)]", 4, "quoted key or an integer"),
    ],
)
def test_malformed_paths_say_where(path: str, pos: int, words: str) -> None:
    with pytest.raises(JsonPathError) as info:
        compile_path(path)
    assert info.value.pos == pos
    assert words in str(info.value)
    assert repr(path) in str(info.value)


def test_compiled_path_keeps_its_text() -> None:
    assert str(compile_path("$.a[0]['b']")) == "$.a[0]['b']"
    assert compile_path("$.a[0]['b']").steps == ("a", 0, "b")


GJSON_DOC = {"state": "idle", "a": [{"b": 1}, {"b": 2}], "m": {"0": "zero"}, "x.y": 3}


@pytest.mark.parametrize(
    ("path", "expected"),
    [("state", "idle"), ("a.0.b", 1), ("a.1.b", 2), ("a.#", 2), ("m.0", "zero"),
     ("x\\.y", 3)],
)
def test_gjson_paths_of_the_go_kidecar_find_the_same_values(path: str, expected: object) -> None:
    """The Go kidecar's documents write gjson paths; each finds what gjson finds."""
    assert compile_path(path).find(GJSON_DOC) == expected


@pytest.mark.parametrize("path", ["a.5", "state.#", "state.x", "m.1"])
def test_absent_gjson_values_are_missing(path: str) -> None:
    assert compile_path(path).find(GJSON_DOC) is MISSING


@pytest.mark.parametrize(
    ("path", "pos", "words"),
    [("", 0, "must not be empty"), ("a..b", 2, "empty step"), ("a.", 2, "empty step"),
     ("a.*", 2, "wildcards"), ("a.b?", 3, "wildcards"), ("a|@reverse", 1, "pipes"),
     ("a.#.b", 2, "only as the last step"), ("a.#(b==1)", 3, "queries")],
)
def test_gjson_paths_beyond_one_value_are_refused(path: str, pos: int, words: str) -> None:
    with pytest.raises(JsonPathError) as info:
        compile_path(path)
    assert info.value.pos == pos and words in str(info.value)
