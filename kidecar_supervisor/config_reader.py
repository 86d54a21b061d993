"""Typed, path-aware reading of YAML config mappings.

Every config error must name the file, the field path
(``plugins[1].config.endpoints[0].timeout``) and the problem, so one reader
object carries all three and every accessor raises ``ConfigError`` with them.
Keys match case-insensitively because the seed documents spell the same key
``bootorder`` and ``bootOrder``; aliases cover real misspellings the seeds use
(``markerPolices``).
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit

_MISSING: Any = object()
#: ``default=REQUIRED``: the field must be present (the accessors' own default)
REQUIRED: Any = _MISSING


class ConfigError(Exception):
    """A config problem: which file, which field, what is wrong."""

    def __init__(self, problem: str, path: str = "", source: str = "") -> None:
        self.problem = problem
        self.path = path
        self.source = source
        super().__init__(self.describe())

    def describe(self) -> str:
        parts = [p for p in (self.source, self.path) if p]
        return ": ".join([*parts, self.problem])


def join_path(base: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{base}[{key}]"
    return f"{base}.{key}" if base else key


class ConfigReader:
    """A view on one mapping of the config, remembering where it sits."""

    def __init__(self, data: Any, path: builtins.str = "", source: builtins.str = "",
                 key_lines: Mapping[builtins.str, Mapping[builtins.str, builtins.str]] | None = None,
                 ) -> None:
        self.path = path
        self.source = source
        # where each spelling of a case-duplicated key is (config_document.KeyLines)
        self._key_lines = key_lines or {}
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ConfigError(f"must be a mapping, got {_kind(data)}", path, source)
        # keys by their text: YAML's `null:` or `1:` are keys "None" and "1" (a None key
        # was found under "None" and then looked up as "None": KeyError, found by atheris)
        self._data: dict[builtins.str, Any] = {}
        self._by_folded: dict[builtins.str, builtins.str] = {}
        for key, value in data.items():
            name = str(key)
            earlier = self._by_folded.setdefault(name.lower(), name)
            if earlier != name or name in self._data:
                raise self._duplicate(earlier, name)
            self._data[name] = value
        self._used: set[builtins.str] = set()
        self._asked: set[builtins.str] = set()

    def _duplicate(self, earlier: builtins.str, key: builtins.str) -> ConfigError:
        """Field names match case-insensitively, so two spellings would silently pick one."""
        lines = self._key_lines.get(self.path, {})
        where = f" on {lines[earlier]} and {lines[key]}" if earlier in lines and key in lines else ""
        return ConfigError(f"duplicate key: {earlier!r} and {key!r} are the same key{where} "
                           "(field names match case-insensitively; keep one)",
                           self.path, self.source)

    # -- lookup -----------------------------------------------------------
    def has(self, *names: builtins.str) -> bool:
        return self._find(names) is not None

    def raw(self, *names: builtins.str, default: Any = _MISSING) -> Any:
        """The value under the first of ``names`` present (case-insensitive)."""
        key = self._find(names)
        if key is None:
            if default is _MISSING:
                raise self.error(names[0], "is required")
            return default
        self._used.add(key)
        return self._data[key]

    def _find(self, names: Iterable[builtins.str]) -> builtins.str | None:
        for name in names:
            self._asked.add(name)
            key = self._by_folded.get(name.lower())
            if key is not None:
                return key
        return None

    def field_path(self, name: builtins.str | builtins.int) -> str:
        return join_path(self.path, name)

    def error(self, name: builtins.str | builtins.int, problem: str) -> ConfigError:
        return ConfigError(problem, self.field_path(name), self.source)

    # -- typed accessors ----------------------------------------------------
    def str(
        self,
        *names: builtins.str,
        default: Any = _MISSING,
        choices: Iterable[builtins.str] | None = None,
        pattern: builtins.str | None = None,
        allow_empty: bool = False,
    ) -> Any:
        value = self.raw(*names, default=default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, str | int | float):
            raise self.error(names[0], f"must be a string, got {_kind(value)}")
        value = str(value)
        if not allow_empty and not value.strip():
            raise self.error(names[0], "must not be empty")
        if choices is not None:
            options = list(choices)
            match = next((c for c in options if c.lower() == value.lower()), None)
            if match is None:
                raise self.error(names[0], f"must be one of {', '.join(options)}, got {value!r}")
            value = match
        if pattern is not None and not re.fullmatch(pattern, value):
            raise self.error(names[0], f"{value!r} does not match {pattern}")
        return value

    def check_http_url(self, name: builtins.str, url: builtins.str) -> builtins.str:
        """``url`` (read from field ``name``) is an http(s) URL with a host, or a
        ConfigError on that field: every URL a plugin fetches or calls is checked
        the same way (urlsplit raises on e.g. ``http://[::1/x``, found by atheris)."""
        try:
            parts = urlsplit(url)
            host = parts.hostname
        except ValueError as exc:
            raise self.error(name, f"is not a valid URL: {exc}") from None
        if parts.scheme not in ("http", "https") or not host:
            raise self.error(name, f"must be an http(s) URL, got {url!r}")
        return url

    def int(
        self, *names: builtins.str, default: Any = _MISSING, minimum: int | None = None,
        maximum: int | None = None,
    ) -> Any:
        value = self.raw(*names, default=default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
                value = int(value)
            else:
                raise self.error(names[0], f"must be an integer, got {_kind(value)} {value!r}")
        self._check_range(names[0], value, minimum, maximum)
        return value

    def number(
        self, *names: builtins.str, default: Any = _MISSING, minimum: float | None = None,
        maximum: float | None = None, positive: bool = False,
    ) -> Any:
        value = self.raw(*names, default=default)
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            try:
                value = float(str(value).strip())
            except ValueError:
                raise self.error(names[0], f"must be a number, got {_kind(value)} {value!r}") from None
        if positive and value <= 0:
            raise self.error(names[0], f"must be greater than 0, got {value}")
        self._check_range(names[0], value, minimum, maximum)
        return value

    def bool(self, *names: builtins.str, default: Any = _MISSING) -> Any:
        value = self.raw(*names, default=default)
        if isinstance(value, bool):
            return value
        if value is default and default is not _MISSING:
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise self.error(names[0], f"must be true or false, got {value!r}")

    def str_map(self, *names: builtins.str, default: Any = _MISSING) -> Any:
        value = self.raw(*names, default=default)
        if value is default and default is not _MISSING:
            return value
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.error(names[0], f"must be a mapping of strings, got {_kind(value)}")
        out: dict[builtins.str, builtins.str] = {}
        for k, v in value.items():
            if isinstance(v, bool) or not isinstance(v, str | int | float):
                raise self.error(names[0], f"value of {k!r} must be a string, got {_kind(v)}")
            out[str(k)] = str(v)
        return out

    def str_list(self, *names: builtins.str, default: Any = _MISSING) -> Any:
        value = self.raw(*names, default=default)
        if value is default and default is not _MISSING:
            return value
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(names[0], f"must be a list, got {_kind(value)}")
        out = []
        for i, item in enumerate(value):
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                raise ConfigError(
                    f"must be a string, got {_kind(item)}",
                    join_path(self.field_path(names[0]), i), self.source,
                )
            out.append(str(item))
        return out

    def child(self, *names: builtins.str, required: builtins.bool = False) -> ConfigReader | None:
        """The nested mapping under ``names``, or None when absent and optional."""
        value = self.raw(*names, default=_MISSING if required else None)
        if value is None:
            return None
        key = self._find(names)
        return ConfigReader(value, self.field_path(key or names[0]), self.source, self._key_lines)

    def children(self, *names: builtins.str, required: builtins.bool = False) -> list[ConfigReader]:
        """Each mapping of the list under ``names``."""
        value = self.raw(*names, default=_MISSING if required else None)
        if value is None:
            return []
        key = self._find(names) or names[0]
        if not isinstance(value, list):
            raise self.error(key, f"must be a list, got {_kind(value)}")
        return [
            ConfigReader(item, join_path(self.field_path(key), i), self.source, self._key_lines)
            for i, item in enumerate(value)
        ]

    def unread(self) -> list[builtins.str]:
        """Keys nobody has read yet: the entries of a free-form map (``resources``)."""
        return [str(key) for key in self._data if key not in self._used]

    def reject_unknown(self, ignore: Iterable[builtins.str] = ()) -> None:
        """Refuse keys nobody read: a typo must not silently become a default."""
        ignored = {name.lower() for name in ignore}
        for key in self._data:
            if key in self._used or str(key).lower() in ignored:
                continue
            # imported on a typo only: a valid config never needs it, and what the
            # supervisor imports stays in every process's pages (issue 16)
            import difflib

            hint = difflib.get_close_matches(str(key), sorted(self._asked), n=1, cutoff=0.6)
            suffix = f" (did you mean {hint[0]!r}?)" if hint else ""
            raise self.error(str(key), f"unknown field{suffix}")

    def _check_range(
        self, name: builtins.str, value: float, minimum: float | None, maximum: float | None
    ) -> None:
        if minimum is not None and value < minimum:
            raise self.error(name, f"must be at least {minimum}, got {value}")
        if maximum is not None and value > maximum:
            raise self.error(name, f"must be at most {maximum}, got {value}")


def _kind(value: Any) -> str:
    if value is None:
        return "nothing"
    return {dict: "a mapping", list: "a list", bool: "a boolean", str: "a string"}.get(
        type(value), type(value).__name__
    )
