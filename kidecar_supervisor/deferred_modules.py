"""Modules a library imports eagerly but kidecar never uses: loaded on first use only.

``requests`` imports a character-set detector (``charset_normalizer``, or
``chardet`` where installed) when it is imported, only to guess the encoding
of a response that declares none when someone reads ``response.text`` or
``apparent_encoding``. kidecar never does: downloads, confirm reports and
reload answers are read as bytes. Yet the detector is 2.6 MiB of a fresh
process's memory (a mypyc-compiled module and ``unicodedata``), imported by
the supervisor before it forks and so paid by every sidecar in the fleet:
the production tree's PSS is 2.1 MiB lower without it (issue 16,
docs/footprint.md).

``defer(name)`` puts a stand-in in ``sys.modules`` that knows the module's
version (requests checks it at import) and imports the real module the first
time anything else is asked of it, so a third-party plugin that does use the
detector, through requests or directly, gets exactly what it would have had.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import threading
import types

#: held while a stand-in is swapped for its module (re-entrant: a module may import another)
_LOADING = threading.RLock()

#: what requests imports at its own import and kidecar's code never calls
UNUSED_BY_KIDECAR = ("charset_normalizer", "chardet")


class DeferredModule(types.ModuleType):
    """Stands in for a module until one of its attributes is wanted."""

    def __init__(self, name: str, version: str, path: list[str] | None) -> None:
        super().__init__(name)
        self.__version__ = version
        if path is not None:  # a package: ``from name import x`` looks for __path__
            self.__path__ = path

    def __getattr__(self, attr: str) -> object:
        # only reached for what the stand-in lacks: the real module must answer
        return getattr(self.load(), attr)

    def load(self) -> types.ModuleType:
        """The real module, imported now if it was not yet (one thread replaces the
        stand-in; any other asking meanwhile waits and gets the same module)."""
        with _LOADING:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            return importlib.import_module(self.__name__)


def defer(name: str) -> bool:
    """Defer ``name``'s import until first use; False if it is already imported or
    not installed (nothing to defer then)."""
    if name in sys.modules:
        return False
    spec = importlib.util.find_spec(name)
    if spec is None:
        return False
    try:
        version = importlib.metadata.version(name)  # the distribution's name, normalised
    except importlib.metadata.PackageNotFoundError:
        return False
    path = spec.submodule_search_locations
    sys.modules[name] = DeferredModule(name, version, list(path) if path is not None else None)
    return True


def defer_unused() -> list[str]:
    """Defer what kidecar's processes never use; the names deferred."""
    return [name for name in UNUSED_BY_KIDECAR if defer(name)]
