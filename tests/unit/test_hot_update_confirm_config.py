"""hot_update's confirm/rollback/keepVersions/allowedUrlPrefixes config (DESIGN §9), and URL redaction."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from kidecar_supervisor.config_reader import ConfigError, ConfigReader
from workers.hot_update.config import HotUpdateConfig
from workers.hot_update.confirm import ConfirmConfig, Report, _parse_report
from workers.hot_update.url_redaction import allowed, redact, scrub

BASE = {"loadPatchType": "signal", "signal": {"processName": "game"}, "fileDir": "/app"}


def parse(**extra: Any) -> HotUpdateConfig:
    return HotUpdateConfig.parse(ConfigReader({**BASE, **extra}, "plugins[0].config", "c.yaml"))


def test_the_design_example_parses() -> None:
    cfg = parse(**yaml.safe_load("""
      confirm:
        http: {url: 'http://127.0.0.1:8080/version', jsonPath: '$.version'}
        errorJsonPath: '$.lastReloadError'
        timeoutSeconds: 30
        intervalSeconds: 0.5
      rollback: {onFailure: true}
      keepVersions: 3
    """))
    assert cfg.confirm is not None and cfg.confirm.http_url == "http://127.0.0.1:8080/version"
    assert str(cfg.confirm.json_path) == "$.version" and cfg.confirm.timeout_seconds == 30
    assert cfg.rollback_on_failure and cfg.keep_versions == 3


def test_without_confirm_nothing_changes() -> None:
    cfg = parse()
    assert cfg.confirm is None and cfg.allowed_url_prefixes == ()


@pytest.mark.parametrize("confirm, words", [
    ({}, "exactly one of confirm.http"),
    ({"http": {"url": "x"}, "file": {"path": "/a"}}, "exactly one"),
    ({"http": {"url": "ftp://h/v"}}, "must be an http(s) URL"),
    ({"file": {"path": "relative"}}, "absolute path"),
    ({"file": {"path": "/v"}, "errorJsonPath": "$.["}, "invalid JSONPath"),
    ({"file": {"path": "/v"}, "timeoutSeconds": 0}, "timeoutSeconds"),
    ({"file": {"path": "/v"}, "retries": 3}, "retries"),
])
def test_bad_confirm_names_its_field(confirm: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse(confirm=confirm)
    assert words in err.value.describe()


@pytest.mark.parametrize("prefixes", [["ftp://h/"], ["https://u:p@h/"], ["https://h/?t=1"],
                                      ["not a url"]])
def test_bad_prefixes_are_refused(prefixes: list[str]) -> None:
    with pytest.raises(ConfigError) as err:
        parse(allowedUrlPrefixes=prefixes)
    assert "allowedUrlPrefixes" in err.value.describe()


def test_reports_ack_and_nack() -> None:
    cfg = ConfirmConfig.parse(ConfigReader({"file": {"path": "/v"}, "errorJsonPath": "$.err"}))
    assert _parse_report(cfg, b'{"err": ""}').error == ""
    assert _parse_report(cfg, b'{"err": "bad line 3"}').error == "bad line 3"
    plain = ConfirmConfig.parse(ConfigReader({"file": {"path": "/v"}}))
    assert _parse_report(plain, b" v2\n") == Report(version="v2")
    at_path = ConfirmConfig.parse(ConfigReader({"http": {"url": "http://h/v",
                                                          "jsonPath": "$.build.id"}}))
    assert _parse_report(at_path, b'{"build": {"id": "2026.11.29-b42"}}').version == \
        "2026.11.29-b42"
    assert _parse_report(at_path, b'{"build": {}}').version is None


@pytest.mark.parametrize("url, shown", [
    ("https://u:p@cdn.example.com/g/x.lua?X-Amz-Signature=abc", "https://***@cdn.example.com/g/x.lua?***"),
    ("http://127.0.0.1:8000/v2/index.html", "http://127.0.0.1:8000/v2/index.html"),
    ("https://h/x#frag", "https://h/x#***"),
    ("https://[::1]:8443/x?token=t", "https://[::1]:8443/x?***"),
])
def test_redaction_keeps_scheme_host_and_path(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert redact(shown) == shown  # redacting twice changes nothing


def test_scrub_masks_urls_inside_error_texts() -> None:
    text = "Max retries exceeded with url: /x.lua?token=SECRET (http://u:pw@h/x)"
    assert "SECRET" not in scrub(text) and "pw" not in scrub(text)


@pytest.mark.parametrize("url, ok", [
    ("https://cdn.example.com/games/x.lua", True),
    ("https://cdn.example.com/games/x.lua?token=1", True),
    ("https://user:pw@cdn.example.com/games/x.lua", True),
    ("https://cdn.example.com/games-evil/x.lua", False),
    ("https://cdn.example.com.evil.net/games/x.lua", False),
    ("http://cdn.example.com/games/x.lua", False),
    ("https://evil.net/x?https://cdn.example.com/games/", False),
])
def test_allowed_prefixes_match_on_a_path_boundary(url: str, ok: bool) -> None:
    assert allowed(url, ("https://cdn.example.com/games",)) is ok
