"""atheris fuzz targets: each takes the fuzzer's bytes and may raise only the parser's
own error type. Anything else (an IndexError, a RecursionError, a TypeError from a
value of an unexpected type) is a bug the runner reports with the input saved.

* ``config_yaml``     a kidecar config document (``parse_config_text``): ConfigError
* ``config_manifest`` the same text inside a ConfigMap or a Go SidecarConfig manifest
* ``jsonpath``        JSONPath / gjson paths (``compile_path``: JsonPathError) and
                      ``find`` on JSON documents (never raises)
* ``result_codec``    what the store reads back from the cluster: pod annotations,
                      pod and workload entries of the result ConfigMap (never raise)
* ``pipe_frames``     the supervisor's framing of a child's pipe: any byte stream in
                      any chunking gives whole messages or PipeFrameError; encoded
                      messages come back equal whatever the chunking
"""

from __future__ import annotations

import json
import pickle
import types
from collections.abc import Callable
from typing import Any

import atheris

from kidecar_supervisor import pipe_frames
from kidecar_supervisor.config import parse_config_text
from kidecar_supervisor.config_reader import ConfigError
from kidecar_supervisor.pipe_frames import PipeFrameError, PipeFrames, encode
from kidecar_supervisor.plugin_kit.jsonpath import JsonPathError, compile_path
from kidecar_supervisor.storage import result_codec
from kidecar_supervisor.storage.base import ResultRecord

ENVIRON = {"GAME_VERSION": "v1", "POD_NAME": "game-0"}


def config_yaml(data: bytes) -> None:
    text = data.decode("utf-8", "replace")
    try:
        parse_config_text(text, "<fuzz>", unset_ok=True, environ=ENVIRON)
    except ConfigError:
        pass


_SIDECARCONFIG_HEAD = ("apiVersion: serverless.vke.volcengine.com/v1alpha1\n"
                       "kind: SidecarConfig\nmetadata: {name: fuzz}\nspec:\n  kidecar:\n")


def config_manifest(data: bytes) -> None:
    """The first byte picks the wrapper: the text as a ConfigMap's ``data`` value, as
    a SidecarConfig's ``spec.kidecar`` (indented), or a whole manifest as it is."""
    if not data:
        return
    mode, text = data[0] % 3, data[1:].decode("utf-8", "replace")
    if mode == 0:
        manifest = ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: kidecar}\n"
                    f"data:\n  config.yaml: {json.dumps(text)}\n")
    elif mode == 1:
        manifest = _SIDECARCONFIG_HEAD + "".join(f"    {line}\n" for line in text.splitlines())
    else:
        manifest = text
    try:
        parse_config_text(manifest, "<fuzz>", unset_ok=True, environ=ENVIRON)
    except ConfigError:
        pass


_DOCUMENTS: list[Any] = [
    {"state": "idle", "room": {"players": [1, 2, 3], "0": "zero"}, "a.b": {"c": None}},
    [{"x": 1}, [], "s", 2.5, None, True],
    "plain", 0, None, {},
]


def jsonpath(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    text = provider.ConsumeUnicodeNoSurrogates(provider.ConsumeIntInRange(0, 200))
    try:
        path = compile_path(text)
    except JsonPathError:
        return
    documents = list(_DOCUMENTS)
    rest = provider.ConsumeUnicodeNoSurrogates(4096)
    try:
        documents.append(json.loads(rest))
    except (ValueError, RecursionError):
        pass
    for document in documents:
        path.find(document)  # a value or MISSING, never an exception
    assert str(path) == text


def result_codec_target(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    plugin = provider.ConsumeUnicodeNoSurrogates(16) or "hot_update"
    text = provider.ConsumeUnicodeNoSurrogates(8192)
    last_good = result_codec.last_good_from_annotation(text, plugin)
    if last_good is not None:
        assert last_good.success and last_good.plugin == plugin
    result_codec.parse_pod_entry(text)
    result_codec.parse_workload_entry(text, plugin, "GameServerSet/gs")
    label = result_codec.sanitize_label_value(text)
    assert len(label) <= result_codec.MAX_LABEL_VALUE
    assert len(result_codec.fit_key(text)) <= result_codec.MAX_CONFIGMAP_KEY
    # a failed result written over whatever the annotation held is valid JSON again
    failed = ResultRecord(plugin=plugin, version="v9", url="http://127.0.0.1/x",
                          success=False, message=text)
    value = json.loads(result_codec.annotation_value(failed, text))
    assert value["success"] is False
    again = ResultRecord(plugin=plugin, version="v9", url="", success=False)
    result_codec.last_good_from_annotation(result_codec.annotation_value(again, text), plugin)


class _NoGlobalsUnpickler(pickle.Unpickler):
    """Random bytes must never import or call anything while being fuzzed."""

    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(f"fuzzing: no globals ({module}.{name})")

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("fuzzing: no persistent ids")


def _safe_loads(data: bytes) -> Any:
    import io

    return _NoGlobalsUnpickler(io.BytesIO(data)).load()


#: pipe_frames decodes with pickle (its peers are kidecar's own children); under the
#: fuzzer it gets an unpickler that can build plain values only
pipe_frames.pickle = types.SimpleNamespace(loads=_safe_loads)  # type: ignore[assignment]


def pipe_frames_target(data: bytes) -> None:
    provider = atheris.FuzzedDataProvider(data)
    cuts = [provider.ConsumeIntInRange(1, 64) for _ in range(provider.ConsumeIntInRange(0, 8))]
    stream = provider.ConsumeBytes(provider.ConsumeIntInRange(0, 4096))
    frames = PipeFrames()
    try:
        for chunk in _chunks(stream, cuts):
            frames.feed(chunk)
            for _message in frames.messages():
                pass
    except PipeFrameError:
        pass
    # whole messages survive any chunking
    messages: list[Any] = [{"t": "hb", "status": {"n": provider.ConsumeInt(4)}},
                           provider.ConsumeUnicodeNoSurrogates(64),
                           [provider.ConsumeBytes(32), None, provider.ConsumeFloat()]]
    encoded = b"".join(encode(m) for m in messages)
    frames = PipeFrames()
    got: list[Any] = []
    for chunk in _chunks(encoded, cuts or [len(encoded) or 1]):
        frames.feed(chunk)
        got += list(frames.messages())
    assert _same(got, messages), (got, messages)


def _same(a: Any, b: Any) -> bool:
    """Equal, with NaN equal to NaN (a float from the fuzzer may be one): repr is
    exact for floats, strings and bytes."""
    return repr(a) == repr(b)


def _chunks(data: bytes, cuts: list[int]) -> list[bytes]:
    out, pos, i = [], 0, 0
    while pos < len(data):
        size = cuts[i % len(cuts)] if cuts else len(data)
        out.append(data[pos:pos + size])
        pos += size
        i += 1
    return out


TARGETS: dict[str, Callable[[bytes], None]] = {
    "config_yaml": config_yaml,
    "config_manifest": config_manifest,
    "jsonpath": jsonpath,
    "result_codec": result_codec_target,
    "pipe_frames": pipe_frames_target,
}
