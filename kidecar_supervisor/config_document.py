"""From a config file to a plain document: size limit, strict YAML, ``${VAR}``.

This is everything that happens to the config *before* its fields are typed
(``config.py`` does that), and it is where "the last one wins" surprises live:

* a config larger than ``MAX_CONFIG_BYTES`` is refused before it is read, so a
  runaway ConfigMap costs an error line, not the same 100+ MB in every process
  of the tree;
* a key given twice in one mapping is an error naming both lines, instead of
  YAML silently keeping the last one. Two spellings of one key (``restartPolicy``
  and ``restartpolicy``: field names match case-insensitively, DESIGN §3) are
  remembered with their lines here and refused by ``ConfigReader`` when the
  mapping is read as fields; data mappings (labels, env) keep case-sensitive keys;
* ``${VAR}`` in a string value is the sidecar's environment variable. An unset
  one is never left as literal text (that made a directory named ``${VAR}``):
  it is an error, or, for ``kidecar validate`` away from the image, a warning.
  ``$${`` writes a literal ``${``; ``${SCOPE:...}`` (``${SELF:POD_NAME}``, a
  shell's ``${X:-default}``) is left for whoever reads that field.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from kidecar_supervisor.config_reader import ConfigError, join_path

MAX_CONFIG_BYTES = 1024 * 1024  # a ConfigMap cannot hold more than 1 MiB either
_MERGE_TAG = "tag:yaml.org,2002:merge"
_REFERENCE = re.compile(r"\$\$\{|\$\{([^}]*)\}|\$\{")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCOPED = re.compile(r"[A-Za-z]+:.*", re.DOTALL)

# field path -> {key as spelled: where it is}, for keys that differ only in case
KeyLines = dict[str, dict[str, str]]


def read_config_text(path: str | os.PathLike[str]) -> str:
    """The file's text, refused by size first: the stat costs nothing, the read may.

    At most ``MAX_CONFIG_BYTES + 1`` bytes are read even if the size could not be
    known in advance (a pipe, a file still growing), so the limit always holds.
    """
    source = str(path)
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            _check_size(size, source)
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError("file not found (set --config or KIDECAR_CONFIG)", "", source) from None
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc}", "", source) from None
    _check_size(len(data), source)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"cannot read file: not UTF-8 text ({exc})", "", source) from None


def _check_size(size: int, source: str, path: str = "") -> None:
    if size > MAX_CONFIG_BYTES:
        raise ConfigError(
            f"the config is {size} bytes; at most {MAX_CONFIG_BYTES} (1 MiB) are accepted",
            path, source)


@dataclass(frozen=True)
class Embedded:
    """Where a document sits inside another file (a ConfigMap's ``data`` value)."""

    path: str = ""          # field path prefix, e.g. data["config.yaml"]
    first_line: int = 0     # file line of the document's line 1, 0 if not known


def load_yaml(text: str, source: str, where: Embedded = Embedded(),
              key_lines: KeyLines | None = None) -> Any:
    """One YAML document, plain Python values; duplicate keys are refused with both lines.

    Keys that differ only in case are noted in ``key_lines`` (when given) for
    ConfigReader, which refuses them in field mappings with these lines.
    """
    _check_size(len(text.encode("utf-8", "surrogatepass")), source, where.path)
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # refuses control characters already (found by atheris)
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_duplicate_keys(node, source, where, {} if key_lines is None else key_lines)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {_yaml_problem(exc, where)}", where.path, source) from None
    finally:
        if loader is not None:
            loader.dispose()


def _yaml_problem(exc: yaml.YAMLError, where: Embedded) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return str(problem)
    return f"{_line(mark.line + 1, where)}, column {mark.column + 1}: {problem}"


def _line(line: int, where: Embedded) -> str:
    if where.first_line:
        return f"line {line} (line {where.first_line + line - 1} of the file)"
    return f"line {line}"


def _refuse_duplicate_keys(root: yaml.Node, source: str, where: Embedded,
                           key_lines: KeyLines) -> None:
    """Walk the node graph once (aliases are shared, so each node is checked once)."""
    seen: set[int] = set()
    pending: list[tuple[yaml.Node, str]] = [(root, where.path)]
    while pending:
        node, path = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            pending.extend((item, join_path(path, i)) for i, item in enumerate(node.value))
        elif isinstance(node, yaml.MappingNode):
            _check_mapping(node, path, source, where, key_lines)
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                pending.append((value, join_path(path, str(name))))


def _check_mapping(node: yaml.MappingNode, path: str, source: str, where: Embedded,
                   key_lines: KeyLines) -> None:
    first: dict[str, yaml.ScalarNode] = {}
    for key, _ in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
            continue  # '<<' merges are meant to be overridden by the mapping's own keys
        earlier = first.setdefault(str(key.value), key)
        if earlier is not key:
            raise ConfigError(
                f"duplicate key: {key.value!r} on {_line(earlier.start_mark.line + 1, where)} "
                f"and {_line(key.start_mark.line + 1, where)} (keep one)", path, source)
    folded: dict[str, list[yaml.ScalarNode]] = {}
    for key in first.values():
        folded.setdefault(key.value.casefold(), []).append(key)
    for spellings in folded.values():
        if len(spellings) > 1:
            lines = key_lines.setdefault(path, {})
            lines.update({k.value: _line(k.start_mark.line + 1, where) for k in spellings})


def literal_block_first_line(text: str, keys: tuple[str, ...]) -> int:
    """The file line where the literal block (``|``) at ``keys`` starts, 0 if it is not one.

    Lets an error inside a ConfigMap's embedded ``config.yaml`` name the line of the
    manifest the reader has open, not only the line inside the embedded text.
    """
    try:
        node: Any = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return 0
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            return 0
        node = next((v for k, v in node.value
                     if isinstance(k, yaml.ScalarNode) and k.value == key), None)
    if isinstance(node, yaml.ScalarNode) and node.style == "|":
        return int(node.start_mark.line) + 2  # the text starts on the line after the '|'
    return 0


def expand_environment(document: Any, environ: Mapping[str, str], source: str,
                       prefix: str = "") -> list[ConfigError]:
    """Replace ``${VAR}`` in every string value, in place; return the unset variables.

    An unset variable is reported (the caller decides: an error for ``run``, a
    warning for ``validate``) and replaced by a stand-in, an absolute path named
    after it, so ``validate`` away from the image can still check the rest of
    the field (``fileDir: ${DATA}/downloads`` must be absolute). A malformed
    reference (``${}``, ``${ DIR}``, a ``${`` never closed) is a document error.
    """
    unset: list[ConfigError] = []
    seen: set[int] = set()

    def visit(value: Any, path: str) -> Any:
        if isinstance(value, str):
            return _expand_string(value, environ, source, path, unset)
        if id(value) in seen:
            return value
        seen.add(id(value))
        if isinstance(value, dict):
            for key in list(value):
                value[key] = visit(value[key], join_path(path, str(key)))
        elif isinstance(value, list):
            for i, item in enumerate(value):
                value[i] = visit(item, join_path(path, i))
        return value

    visit(document, prefix)
    return unset


def unset_stand_in(name: str) -> str:
    """What an unset ``${name}`` reads as while the document is only validated."""
    return f"/kidecar-unset-{name}"


def _expand_string(text: str, environ: Mapping[str, str], source: str, path: str,
                   unset: list[ConfigError]) -> str:
    if "${" not in text:
        return text

    def substitute(match: re.Match[str]) -> str:
        whole, name = match.group(0), match.group(1)
        if whole == "$${":
            return "${"
        if name is None:
            raise ConfigError(f"{text!r}: '${{' is never closed (write '$${{' for a literal "
                              "'${')", path, source)
        if _VARIABLE.fullmatch(name):
            if name in environ:
                return environ[name]
            unset.append(ConfigError(
                f"environment variable {name} is not set (referenced as ${{{name}}})",
                path, source))
            return unset_stand_in(name)
        if _SCOPED.fullmatch(name):
            return whole  # ${SELF:VAR}/${POD:VAR}: rendered by the storage targets
        raise ConfigError(f"{text!r}: malformed reference {whole!r}; use ${{VAR}} with a "
                          "variable name, or '$${' for a literal '${'", path, source)

    return _REFERENCE.sub(substitute, text)
