"""``${SELF:VAR}`` / ``${POD:VAR}`` templates in target references.

``${SELF:VAR}`` is the sidecar's own environment variable (e.g. POD_NAME from
the downward API); ``${POD:VAR}`` is an env var of the pod's *first*
container, read from the pod object, because the game container often
carries the names the sidecar needs (its GameServerSet, a region...). Values
given by ``valueFrom.fieldRef`` are resolved from the pod object the way the
kubelet would; ``$(VAR)`` references to earlier variables are expanded too.
Anything unresolvable is an error naming the template and the variable,
never an empty string that would patch the wrong object.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

_REF = re.compile(r"\$\{([A-Za-z]+):([A-Za-z_][A-Za-z0-9_]*)\}")
_ANY_REF = re.compile(r"\$\{[^}]*\}?")
_DEPENDENT = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_FIELD_IN_MAP = re.compile(r"^metadata\.(labels|annotations)\['([^']+)'\]$")
_SIMPLE_FIELDS = {
    "metadata.name": ("metadata", "name"),
    "metadata.namespace": ("metadata", "namespace"),
    "metadata.uid": ("metadata", "uid"),
    "spec.nodeName": ("spec", "nodeName"),
    "spec.serviceAccountName": ("spec", "serviceAccountName"),
    "status.podIP": ("status", "podIP"),
    "status.hostIP": ("status", "hostIP"),
}

PodEnv = Mapping[str, str]


class TemplateError(ValueError):
    """A template that names an unknown scope or a variable that is not set."""


def render(template: str, self_env: Mapping[str, str],
           pod_env: Callable[[], PodEnv] | None = None) -> str:
    """``template`` with every reference replaced; ``pod_env`` is called only if needed."""
    _reject_malformed(template)
    pod_values: PodEnv | None = None

    def substitute(match: re.Match[str]) -> str:
        nonlocal pod_values
        scope, var = match.group(1), match.group(2)
        if scope == "SELF":
            if var not in self_env:
                raise TemplateError(f"{template!r}: the sidecar has no env var {var} "
                                    f"(referenced as ${{SELF:{var}}})")
            return self_env[var]
        if scope == "POD":
            if pod_env is None:
                raise TemplateError(f"{template!r}: ${{POD:{var}}} needs the pod object, "
                                    "which is not available here")
            if pod_values is None:
                pod_values = pod_env()
            if var not in pod_values:
                raise TemplateError(f"{template!r}: the pod's first container has no env var "
                                    f"{var} (referenced as ${{POD:{var}}})")
            return pod_values[var]
        raise TemplateError(f"{template!r}: unknown scope {scope!r} in ${{{scope}:{var}}}; "
                            "use ${SELF:VAR} or ${POD:VAR}")

    return _REF.sub(substitute, template)


def _reject_malformed(template: str) -> None:
    for match in _ANY_REF.finditer(template):
        if not _REF.fullmatch(match.group(0)):
            raise TemplateError(f"{template!r}: malformed reference {match.group(0)!r}; "
                                "use ${SELF:VAR} or ${POD:VAR}")


def first_container_env(pod: Mapping[str, Any]) -> dict[str, str]:
    """The env of the pod's first container as the process sees it (literal + fieldRef)."""
    containers = (pod.get("spec") or {}).get("containers") or []
    if not containers:
        return {}
    env: dict[str, str] = {}
    for item in containers[0].get("env") or []:
        name = item.get("name")
        if not name:
            continue
        if "value" in item or not item.get("valueFrom"):
            env[name] = _expand_dependent(str(item.get("value") or ""), env)
            continue
        field_ref = (item.get("valueFrom") or {}).get("fieldRef")
        if field_ref:
            value = _field_value(pod, str(field_ref.get("fieldPath", "")))
            if value is not None:
                env[name] = value
        # configMapKeyRef / secretKeyRef / resourceFieldRef: not readable from the
        # pod object; such a variable stays unset and rendering names it.
    return env


def _expand_dependent(value: str, earlier: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion: earlier vars only, ``$$`` escapes, unknown kept."""

    def substitute(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return earlier.get(name, match.group(0))

    return _DEPENDENT.sub(substitute, value)


def _field_value(pod: Mapping[str, Any], path: str) -> str | None:
    simple = _SIMPLE_FIELDS.get(path)
    if simple is not None:
        value = (pod.get(simple[0]) or {}).get(simple[1])
        return None if value is None else str(value)
    match = _FIELD_IN_MAP.match(path)
    if match:
        mapping = (pod.get("metadata") or {}).get(match.group(1)) or {}
        value = mapping.get(match.group(2))
        return None if value is None else str(value)
    return None
