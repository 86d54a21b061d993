"""Inputs atheris found (tests/fuzz), each a crash of a parser before its fix: the
parser's own error, never another exception. The inputs are also kept in the fuzz
corpus (tests/fuzz/corpus/*/regression-*)."""

from __future__ import annotations

import pytest

from kidecar_supervisor.config import parse_config_text
from kidecar_supervisor.config_reader import ConfigError
from kidecar_supervisor.plugin_kit.jsonpath import MISSING, JsonPathError, compile_path
from kidecar_supervisor.storage import result_codec


@pytest.mark.parametrize("text", ["a: \x00", "\x18", "plugins: [\x1b]"])
def test_control_characters_in_yaml_are_a_config_error(text: str) -> None:
    """yaml's reader refuses them in the loader's constructor, which ran outside the
    try that turns YAML errors into ConfigError (a ReaderError escaped)."""
    with pytest.raises(ConfigError, match="invalid YAML: unacceptable character"):
        parse_config_text(text, "<fuzz>")


def test_a_control_character_inside_a_configmap_manifest_is_a_config_error() -> None:
    manifest = ('apiVersion: v1\nkind: ConfigMap\nmetadata: {name: k}\n'
                'data:\n  config.yaml: "plugins: \\x18"\n')
    with pytest.raises(ConfigError, match="unacceptable character"):
        parse_config_text(manifest, "<fuzz>")


@pytest.mark.parametrize("path", ["a.⑻", "⑻", "a.²"])
def test_unicode_digits_are_gjson_keys_not_indexes(path: str) -> None:
    """'⑻'.isdigit() is True but int('⑻') raises ValueError (in find)."""
    compiled = compile_path(path)
    key = path.rsplit(".", 1)[-1]
    assert compiled.find({"a": {key: "found"}, key: "top"}) in ("found", "top")
    assert compiled.find({"a": ["x"] * 10}) is MISSING


@pytest.mark.parametrize("path", ["$[" + "9" * 5000 + "]", "$[٣]"])
def test_huge_or_unicode_bracket_indexes_are_a_path_error(path: str) -> None:
    with pytest.raises(JsonPathError):
        compile_path(path)


def test_a_long_gjson_number_is_a_key() -> None:
    path = "a." + "9" * 5000
    assert compile_path(path).find({"a": [1, 2]}) is MISSING


@pytest.mark.parametrize("data", ['"config.yaml"', "[a, b]", "3"])
def test_a_configmap_whose_data_is_not_a_mapping_is_a_config_error(data: str) -> None:
    manifest = f"apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: k}}\ndata: {data}\n"
    with pytest.raises(ConfigError, match="must be a mapping"):
        parse_config_text(manifest, "<fuzz>")


@pytest.mark.parametrize("key", ["null", "~", "1", "true"])
def test_a_non_string_key_is_read_by_its_text(key: str) -> None:
    """`null:` under resources was listed as "None" and then looked up as "None" in a
    mapping whose key is None: KeyError."""
    text = f"resources: {{{key}: 1Gi}}\nplugins: []\n"
    try:
        config = parse_config_text(text, "<fuzz>")
    except ConfigError as exc:
        assert "resource name" in str(exc)
        return
    assert list(config.resources.values()) == ["1Gi"]
    assert all(isinstance(name, str) for name in config.resources)


def test_none_and_its_text_are_the_same_key() -> None:
    with pytest.raises(ConfigError, match="duplicate key"):
        parse_config_text('resources: {null: 1Gi, "None": 2Gi}\nplugins: []\n', "<fuzz>")


@pytest.mark.parametrize("fields", [
    "loadPatchType: signal\n      signal: {processName: game}\n"
    "      confirm: {http: {url: 'http://[::1/version'}}",
    "loadPatchType: signal\n      signal: {processName: game}\n"
    "      allowedUrlPrefixes: ['http://[zz/files/']",
    "loadPatchType: request\n      request: {url: 'http://[::1/reload'}",
])
def test_an_unparsable_url_is_a_config_error(fields: str) -> None:
    """urlsplit raises ValueError ("Invalid IPv6 URL") for an unclosed bracket."""
    text = f"plugins:\n  - name: hot_update\n    config:\n      fileDir: /tmp/x\n      {fields}\n"
    with pytest.raises(ConfigError, match="not a valid URL"):
        parse_config_text(text, "<fuzz>")


def test_an_unparsable_download_url_is_a_config_error() -> None:
    text = ("plugins: [{name: p, binary: {path: /opt/game, "
            "downloadURL: 'https://[cdn/game'}}]\n")
    with pytest.raises(ConfigError, match="not a valid URL"):
        parse_config_text(text, "<fuzz>")


@pytest.mark.parametrize("text", ['["v3",false,1e999]', '["v3",true,-1e999]', '["v3",true,NaN]',
                                  '["v3",true,Infinity]'])
def test_a_pod_entry_with_an_infinite_time_is_not_an_entry(text: str) -> None:
    """Found by the CI pass of result_codec: json takes 1e999 as inf, int(inf) raised."""
    assert result_codec.parse_pod_entry(text) is None


@pytest.mark.parametrize("stamp", ["1e999", "NaN", "soon", None, [1]])
def test_a_stored_time_that_is_not_a_finite_number_reads_as_unknown(stamp: object) -> None:
    import json
    entry = json.dumps({"version": "v2", "url": "http://f/x", "timestamp": stamp})
    record = result_codec.parse_workload_entry(entry, "hot_update", "GameServerSet/gs")
    assert record is not None and record.timestamp == 0.0
    assert result_codec.pod_entry(record)  # writable again: int(timestamp) works
