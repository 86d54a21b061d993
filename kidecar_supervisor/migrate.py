"""``kidecar migrate``: a Go kidecar ``SidecarConfig`` as kidecar's ConfigMap + SidecarSet.

The Go kidecar injects itself with its own webhook, driven by a cluster-scoped
``SidecarConfig`` (``serverless.vke.volcengine.com/v1alpha1``): ``spec.kidecar``
is the sidecar's config, ``spec.injection`` says which pods get it. kidecar is
injected by OpenKruise's SidecarSet instead (or by ``kidecar inject`` into the
manifests), so this command prints, ready for ``kubectl apply -f -``:

* a ConfigMap (``kidecar-config``, the Go webhook's name too) whose
  ``config.yaml`` is ``spec.kidecar`` exactly as written (kidecar reads the Go
  keys, and the document was validated here first, with field paths);
* a ServiceAccount when ``injection.serviceAccountName`` names one;
* a SidecarSet with the injection's selector, namespace and namespaceSelector,
  the kidecar container (a native sidecar when ``useKubeNativeSidecar``, as the
  Go webhook did), its config and state volumes, and the injection's volumes.

A SidecarSet cannot set pod-level fields, so ``shareProcessNamespace`` and
``serviceAccountName`` of the selected pods are said in the output's comment and
on stderr, with the ``kidecar inject`` command that sets them on a workload.
Nothing is written when the document is refused.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, NamedTuple

from kidecar_supervisor.config import SIDECARCONFIG_API, SidecarConfig, parse_config_text
from kidecar_supervisor.config_reader import ConfigError
from kidecar_supervisor.inject import (
    CONFIG_VOLUME,
    DEFAULT_CONFIGMAP,
    STATE_VOLUME,
    InjectOptions,
    default_image,
    render_container,
    security_context,
    split_documents,
    write_output,
)

SIDECARSET_API = "apps.kruise.io/v1alpha1"


class MigrateError(Exception):
    """Input that cannot be migrated; nothing is written."""


class Migrated(NamedTuple):
    """The manifests (YAML text) and what the user must still do or know."""

    text: str
    notes: list[str]


def migrate_text(text: str, source: str, image: str = "") -> Migrated:
    """Every SidecarConfig document of ``text`` as ConfigMap (+ ServiceAccount) + SidecarSet."""
    import yaml

    objects: list[dict[str, Any]] = []
    notes: list[str] = []
    found = 0
    for index, (_, body) in enumerate(split_documents(text)):
        try:
            doc = yaml.safe_load(body)
        except yaml.YAMLError as exc:
            raise MigrateError(f"{source}: document {index + 1} is not valid YAML: {exc}") from None
        if not isinstance(doc, dict) or doc.get("kind") != "SidecarConfig":
            if isinstance(doc, dict) and doc.get("kind"):
                notes.append(f"document {index + 1} ({doc.get('kind')}) is not a SidecarConfig: "
                             "left out (apply it yourself if you still need it)")
            continue
        found += 1
        where = source if index == 0 else f"{source} (document {index + 1})"
        config = parse_config_text(body, where, unset_ok=True)  # ConfigError names the field
        objects += _migrate_one(doc, config, image, notes)
    if not found:
        raise MigrateError(f"{source}: no SidecarConfig ({SIDECARCONFIG_API}) document found")
    return Migrated(_render(objects, notes), notes)


def _migrate_one(doc: dict[str, Any], config: SidecarConfig, image: str,
                 notes: list[str]) -> list[dict[str, Any]]:
    name = str((doc.get("metadata") or {}).get("name") or "kidecar")
    injection: dict[str, Any] = doc["spec"].get("injection") or {}
    namespace = str(injection.get("namespace") or "")
    if not injection.get("selector"):
        raise MigrateError(f"SidecarConfig {name}: spec.injection.selector is empty; the Go "
                           "webhook then injected every pod it saw. A SidecarSet needs a "
                           "selector: add one that matches your game pods")
    meta = {"name": DEFAULT_CONFIGMAP, **({"namespace": namespace} if namespace else {})}
    objects: list[dict[str, Any]] = [{
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": meta,
        "data": {"config.yaml": _dump(doc["spec"]["kidecar"])}}]
    if not namespace:
        notes.append(f"SidecarConfig {name}: no injection.namespace: the ConfigMap goes to "
                     "kubectl's current namespace; it must be in every game pod's namespace")
    account = str(injection.get("serviceAccountName") or "")
    if account:
        objects.append({"apiVersion": "v1", "kind": "ServiceAccount",
                        "metadata": {"name": account,
                                     **({"namespace": namespace} if namespace else {})}})
    objects.append(_sidecarset(name, injection, config, image, notes))
    notes.extend(_pod_level_notes(name, injection, config))
    return objects


def _sidecarset(name: str, injection: dict[str, Any], config: SidecarConfig, image: str,
                notes: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"selector": injection["selector"]}
    for key in ("namespace", "namespaceSelector"):
        if injection.get(key):
            spec[key] = injection[key]
    native = bool(injection.get("useKubeNativeSidecar"))
    volumes: list[dict[str, Any]] = [
        {"name": CONFIG_VOLUME, "configMap": {"name": DEFAULT_CONFIGMAP}},
        {"name": STATE_VOLUME, "emptyDir": {}}]
    if injection.get("injectKidecar", False) is False:
        notes.append(f"SidecarConfig {name}: injectKidecar is false: the Go webhook injected "
                     "only injection.containers/initContainers, and so does this SidecarSet")
        containers = [_sidecar(c) for c in injection.get("containers") or []]
        init = [_sidecar(c) for c in injection.get("initContainers") or []]
    else:
        container = _kidecar_container(config, image, native, injection)
        containers, init = ([], [container]) if native else ([container], [])
        if config.sidecar_start_order == "Before" and not native:
            notes.append(f"SidecarConfig {name}: sidecarStartOrder is Before but "
                         "useKubeNativeSidecar is not set: kidecar is a regular container "
                         "injected before the game's (as the Go webhook did); set "
                         "useKubeNativeSidecar: true for a native sidecar (Kruise >= 1.7, "
                         "Kubernetes >= 1.29)")
    if containers:
        spec["containers"] = containers
    if init:
        spec["initContainers"] = init
    spec["volumes"] = volumes + [v for v in injection.get("volumes") or []
                                 if v.get("name") not in (CONFIG_VOLUME, STATE_VOLUME)]
    spec["updateStrategy"] = {"type": "RollingUpdate", "maxUnavailable": 1}
    return {"apiVersion": SIDECARSET_API, "kind": "SidecarSet", "metadata": {"name": name},
            "spec": spec}


def _kidecar_container(config: SidecarConfig, image: str, native: bool,
                       injection: dict[str, Any]) -> dict[str, Any]:
    """The container ``kidecar inject`` renders, as a SidecarSet container."""
    needs_signal = any(getattr(p.config, "load_patch_type", "") == "signal"
                       for p in config.plugins)
    opts = InjectOptions(
        image=image, start_order="Before" if native else "After", shared_dirs=(),
        cpu=config.resources.get("CPU", "100m"), memory=config.resources.get("Memory", "128Mi"),
        port=config.http.port, needs_signal=needs_signal,
        extra_resources=tuple((k, v) for k, v in config.resources.items()
                              if k not in ("CPU", "Memory")))
    container = render_container(opts, security_context(opts, {}, {}, []))
    container["volumeMounts"] += [m for m in injection.get("volumeMounts") or []
                                  if isinstance(m, dict)]
    # the game's own mounts (the shared fileDir) are shared into kidecar by Kruise
    return {**container, "podInjectPolicy": "BeforeAppContainer",
            "shareVolumePolicy": {"type": "enabled"}}


def _sidecar(container: dict[str, Any]) -> dict[str, Any]:
    return {**container, "podInjectPolicy": "BeforeAppContainer"}


def _pod_level_notes(name: str, injection: dict[str, Any], config: SidecarConfig) -> list[str]:
    """What the SidecarSet cannot do: the pod's shareProcessNamespace and service account."""
    wanted = []
    if injection.get("shareProcessNamespace"):
        wanted.append("shareProcessNamespace: true")
    account = injection.get("serviceAccountName")
    if account:
        wanted.append(f"serviceAccountName: {account}")
    if not wanted:
        return []
    fields = {"shareProcessNamespace": True} if injection.get("shareProcessNamespace") else {}
    if account:
        fields["serviceAccountName"] = account
    patch = json.dumps({"spec": {"gameServerTemplate": {"spec": fields}}}, separators=(",", ":"))
    return [f"SidecarConfig {name}: a SidecarSet cannot set pod fields; the pod templates of "
            f"the selected workloads must set {' and '.join(wanted)} themselves (the Go "
            f"webhook set them), e.g. kubectl patch gss GAME --type merge -p '{patch}'"]


def _dump(value: Any) -> str:
    import yaml

    return str(yaml.safe_dump(value, sort_keys=False, default_flow_style=False, width=100))


def _render(objects: list[dict[str, Any]], notes: list[str]) -> str:
    """The manifests; the ConfigMap's config.yaml as a literal block, readable as written."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        style = "|" if "\n" in value and not value.endswith((" ", "\t")) else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Dumper.add_representer(str, text)
    head = ["# kidecar migrate: the Go kidecar's SidecarConfig as kidecar manifests "
            "(docs/migration.md)", "#   kubectl apply -f THIS-FILE"]
    head += [f"# note: {note}" for note in notes]
    body = yaml.dump_all(objects, Dumper=Dumper, sort_keys=False, default_flow_style=False,
                         width=100)
    return "\n".join(head) + "\n---\n" + str(body)


# -- command line -------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", required=True,
                        help="the Go kidecar's SidecarConfig manifest ('-' for stdin)")
    parser.add_argument("-o", "--output", default="-",
                        help="where to write the manifests (default: stdout)")
    parser.add_argument("--image", help="kidecar image (default kidecar:<installed version>)")


def run_cli(args: argparse.Namespace) -> int:
    """``kidecar migrate``: 0 written, 1 bad input (nothing written)."""
    source = args.filename
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        result = migrate_text(text, "<stdin>" if source == "-" else source,
                              args.image or default_image())
    except (MigrateError, ConfigError) as exc:
        print(f"kidecar migrate: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"kidecar migrate: cannot read {source}: {exc}", file=sys.stderr)
        return 1
    try:
        write_output(args.output, result.text, "")
    except OSError as exc:
        print(f"kidecar migrate: cannot write {args.output}: {exc}", file=sys.stderr)
        return 1
    for note in result.notes:
        print(f"kidecar migrate: note: {note}", file=sys.stderr)
    return 0
