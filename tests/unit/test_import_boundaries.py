"""Who may import what: plugins see only the plugin API, the stores never see it.

Parsed with ``ast`` (nothing is imported), so a forbidden import anywhere in a
module, even inside a function, fails here with the file and line.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: what a plugin under workers/ may import from kidecar itself
PLUGIN_ALLOWED = ("kidecar_supervisor.plugin_api", "kidecar_supervisor.plugin_kit")


def _imports(path: Path) -> Iterator[tuple[int, str]]:
    """Every absolute module name ``path`` imports, with its line."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module
            for alias in node.names:  # ``from kidecar_supervisor import plugin_api``
                yield node.lineno, f"{node.module}.{alias.name}"


def _is_under(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def _modules(directory: Path) -> list[Path]:
    found = sorted(directory.rglob("*.py"))
    assert found, f"no modules under {directory}"
    return found


def test_plugins_import_only_the_plugin_api_and_the_plugin_kit() -> None:
    wrong = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in _modules(REPO / "workers")
        for line, module in _imports(path)
        if _is_under(module, "kidecar_supervisor")
        and module != "kidecar_supervisor"
        and not any(_is_under(module, allowed) for allowed in PLUGIN_ALLOWED)
    ]
    assert not wrong, "plugins must import kidecar only through plugin_api/plugin_kit:\n" + \
        "\n".join(wrong)


def test_plugins_do_not_import_each_other() -> None:
    """What two plugins share lives in plugin_kit, not in one of them."""
    plugins = [p.name for p in (REPO / "workers").iterdir() if (p / "__init__.py").exists()]
    wrong = []
    for plugin in plugins:
        for path in _modules(REPO / "workers" / plugin):
            for line, module in _imports(path):
                others = [o for o in plugins if o != plugin and _is_under(module, f"workers.{o}")]
                if others:
                    wrong.append(f"{path.relative_to(REPO)}:{line} imports {module}")
    assert not wrong, "\n".join(wrong)


def test_the_storage_layer_and_the_plugin_kit_never_import_the_plugin_api() -> None:
    """The stores are core; plugin_api re-exports their record types, not the reverse.

    ``storage/service.py`` is exempt: it *is* a plugin (the internal storage
    service the supervisor forks), so it implements the plugin interface.
    """
    modules = [p for p in _modules(REPO / "kidecar_supervisor" / "storage")
               if p.name != "service.py"]
    modules += _modules(REPO / "kidecar_supervisor" / "plugin_kit")
    modules.append(REPO / "kidecar_supervisor" / "pod_identity.py")
    wrong = [
        f"{path.relative_to(REPO)}:{line} imports {module}"
        for path in modules
        for line, module in _imports(path)
        if _is_under(module, "kidecar_supervisor.plugin_api")
    ]
    assert not wrong, "\n".join(wrong)


def test_the_plugin_api_reexports_what_the_built_in_plugins_use() -> None:
    """Every name a plugin imports from plugin_api exists there (and is in ``__all__``)."""
    import kidecar_supervisor.plugin_api as api

    for path in _modules(REPO / "workers"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module == "kidecar_supervisor.plugin_api":
                for alias in node.names:
                    assert alias.name in api.__all__, f"{path.name}: {alias.name} not exported"
                    assert hasattr(api, alias.name)


def test_the_checker_sees_a_forbidden_import(tmp_path: Path) -> None:
    """The walk finds imports inside functions and ``from package import module`` too."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from kidecar_supervisor import storage\n"
                      "    import kidecar_supervisor.config_reader\n")
    found = {name for _, name in _imports(module)}
    assert {"kidecar_supervisor.storage", "kidecar_supervisor.config_reader"} <= found
