"""Which class a config's plugin name means: one list of built-ins (setup.cfg's entry
points, read from the installed metadata), third-party entry points, and a loud error
when kidecar's metadata is missing (issue 9: no second copy in registry.py)."""

from __future__ import annotations

import configparser
import importlib.util
from pathlib import Path

import pytest

from kidecar_supervisor import registry
from kidecar_supervisor.registry import UnknownPlugin, available_plugins, load_plugin_class

REPO = Path(__file__).resolve().parents[2]


def setup_cfg_plugins() -> dict[str, str]:
    parser = configparser.ConfigParser()
    parser.read(REPO / "setup.cfg")
    lines = parser["options.entry_points"]["kidecar.plugins"].strip().splitlines()
    return dict((part.strip() for part in line.split("=", 1)) for line in lines)  # type: ignore[misc]


def test_the_builtins_are_setup_cfgs_entry_points_and_nothing_else() -> None:
    expected = setup_cfg_plugins()
    assert set(expected) == {"binary", "file_sync", "hot_update", "http_probe"}
    assert registry.builtin_plugins() == expected, "installed metadata is stale: pip install -e ."
    source = Path(registry.__file__).read_text()
    assert not any(target in source for target in expected.values()), \
        "registry.py must not keep its own copy of the built-in list"


@pytest.mark.parametrize("name", ["binary", "file_sync", "hot_update", "http_probe"])
def test_every_builtin_loads(name: str) -> None:
    cls = load_plugin_class(name)
    assert f"{cls.__module__}:{cls.__name__}" == setup_cfg_plugins()[name]


@pytest.mark.skipif(importlib.util.find_spec("kidecar_test_plugins") is None,
                    reason="tests/plugin_pkg is not installed (tools/run-tests installs it)")
def test_a_third_party_plugin_comes_through_the_entry_point_group() -> None:
    cls = load_plugin_class("test_sleeper")
    assert cls.__module__ == "kidecar_test_plugins.plugins"
    assert "test_sleeper" in available_plugins() and "hot_update" in available_plugins()


def test_an_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownPlugin, match=r"unknown plugin 'teleport' \(known: binary, "
                                            r"file_sync, hot_update, http_probe"):
        load_plugin_class("teleport")


def test_another_package_with_a_builtins_name_replaces_the_builtin(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A platform ships a patched plugin without a fork: real metadata on sys.path."""
    info = tmp_path / "patched_hot_update-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: patched-hot-update\n"
                                   "Version: 1.0\n")
    (info / "entry_points.txt").write_text(
        "[kidecar.plugins]\nhot_update = patched_hot_update:Plugin\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert available_plugins()["hot_update"] == "patched_hot_update:Plugin"
    assert registry.builtin_plugins()["hot_update"] == "workers.hot_update.plugin:HotUpdatePlugin"

