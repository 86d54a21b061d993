"""A deferred module is imported on first use, and is then the real module."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import pytest

from kidecar_supervisor.deferred_modules import DeferredModule, defer

#: a small installed package no test imports (its version is in its metadata)
PACKAGE = "iniconfig"


@pytest.fixture
def not_imported() -> Iterator[str]:
    saved = {n: m for n, m in sys.modules.items() if n.split(".")[0] == PACKAGE}
    for name in saved:
        del sys.modules[name]
    yield PACKAGE
    for name in [n for n in sys.modules if n.split(".")[0] == PACKAGE]:
        del sys.modules[name]
    sys.modules.update(saved)


def test_a_deferred_package_answers_its_version_without_being_imported(not_imported: str) -> None:
    import importlib.metadata

    assert defer(not_imported) is True
    stand_in = sys.modules[not_imported]
    assert isinstance(stand_in, DeferredModule)
    from iniconfig import __version__  # what requests does with its detector

    assert __version__ == importlib.metadata.version(not_imported)
    assert sys.modules[not_imported] is stand_in  # still not imported


def test_first_use_imports_the_real_module(not_imported: str) -> None:
    defer(not_imported)
    stand_in = sys.modules[not_imported]
    parser = stand_in.IniConfig  # the first use
    real = sys.modules[not_imported]
    assert real is not stand_in and not isinstance(real, DeferredModule)
    assert parser is real.IniConfig
    import iniconfig

    assert iniconfig is real


def test_nothing_to_defer_when_imported_or_missing(not_imported: str) -> None:
    assert defer("no_such_module_kidecar") is False
    import iniconfig  # noqa: F401

    assert defer(not_imported) is False
    assert not isinstance(sys.modules[not_imported], DeferredModule)


def test_threads_using_it_first_at_once_all_get_the_real_module(not_imported: str) -> None:
    import threading

    defer(not_imported)
    stand_in = sys.modules[not_imported]
    start = threading.Barrier(8)
    got: list[object] = []
    errors: list[BaseException] = []

    def use() -> None:
        start.wait()
        try:
            got.append(stand_in.IniConfig)
        except BaseException as exc:  # noqa: BLE001 - the test reports it
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert errors == []
    assert len(got) == 8 and len({id(g) for g in got}) == 1
    assert sys.modules[not_imported].IniConfig is got[0]
