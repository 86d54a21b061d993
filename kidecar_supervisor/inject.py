"""``kidecar inject``: add the kidecar sidecar to every pod template of some manifests.

Finds pod templates in GameServerSets (``spec.gameServerTemplate``), Pods,
Deployments/StatefulSets/DaemonSets/Jobs/ReplicaSets/CloneSets
(``spec.template``), CronJobs and Lists, and gives each one what kidecar
needs: the container (a native sidecar, i.e. an init container with
``restartPolicy: Always``, for ``sidecarStartOrder: Before``), its volumes
(config ConfigMap, state emptyDir, the shared emptyDir(s) also mounted into
the game container), ``shareProcessNamespace: true`` and the service account.

Idempotent by construction: the container is rendered from the options and
put where it already is; volumes, mounts and the service account are only
added when missing, so hand edits to them survive. A document that ends up
equal to what it was keeps its original text byte for byte (comments and
all), so injecting twice changes nothing. Documents are kept in order.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

# yaml, copy, tempfile are imported where used: the CLI builds this command's
# parser on every call, including the `kidecar health` exec probe

CONTAINER_NAME = "kidecar"
CONFIG_VOLUME = "kidecar-config"
STATE_VOLUME = "kidecar-state"
#: a non-root UID for kidecar where the pod demands one (the image itself runs as root)
NON_ROOT_UID = 65532
SHARED_VOLUME = "kidecar-shared"
CONFIG_MOUNT = "/opt/sidecar"
STATE_MOUNT = "/var/lib/kidecar"
DEFAULT_CONFIGMAP = "kidecar-config"
DEFAULT_SERVICE_ACCOUNT = "kidecar"
DEFAULT_SHARED_DIR = "/app/downloads"
DEFAULT_PORT = 5000
START_ORDERS = ("Before", "After")

_DOC_START = re.compile(r"^---(?:[ \t].*)?$")
_DOC_END = re.compile(r"^\.\.\.[ \t]*$")


class InjectError(Exception):
    """Input that cannot be injected; nothing is written."""


def default_image() -> str:
    try:
        from importlib.metadata import version

        return f"kidecar:{version('kidecar')}"
    except Exception:  # noqa: BLE001 - not installed: any tag is a guess
        return "kidecar:latest"


class InjectOptions(NamedTuple):
    """What to inject. ``needs_signal``: a plugin reloads the game by signal."""

    image: str = ""  # "" = default_image()
    start_order: str = "Before"
    configmap: str = DEFAULT_CONFIGMAP
    service_account: str = DEFAULT_SERVICE_ACCOUNT
    shared_dirs: tuple[str, ...] = (DEFAULT_SHARED_DIR,)
    cpu: str = "100m"
    memory: str = "128Mi"
    port: int = DEFAULT_PORT
    container_name: str = CONTAINER_NAME
    game_container: str = ""
    needs_signal: bool = True
    run_as_user: int | None = None
    #: resources besides CPU/Memory (the Go kidecar's free-form map), as named there
    extra_resources: tuple[tuple[str, str], ...] = ()


# -- the container ----------------------------------------------------------------------
def render_container(opts: InjectOptions, security: dict[str, Any]) -> dict[str, Any]:
    """The kidecar container exactly as injected (deterministic: idempotence relies on it)."""
    http = {"path": "/healthz", "port": opts.port}
    ready = {"path": "/readyz", "port": opts.port}
    container: dict[str, Any] = {"name": opts.container_name,
                                 "image": opts.image or default_image(),
                                 "imagePullPolicy": "IfNotPresent"}
    if opts.start_order == "Before":
        container["restartPolicy"] = "Always"  # a native sidecar (Kubernetes >= 1.29)
    container["ports"] = [{"name": "kidecar", "containerPort": opts.port, "protocol": "TCP"}]
    container["env"] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
    ]
    if opts.port != DEFAULT_PORT:
        container["env"].append({"name": "KIDECAR_PORT", "value": str(opts.port)})
    amounts = {"cpu": opts.cpu, "memory": opts.memory, **dict(opts.extra_resources)}
    container["resources"] = {"requests": dict(amounts), "limits": dict(amounts)}
    mounts = [{"name": CONFIG_VOLUME, "mountPath": CONFIG_MOUNT, "readOnly": True},
              {"name": STATE_VOLUME, "mountPath": STATE_MOUNT}]
    mounts += [{"name": name, "mountPath": path} for name, path in shared_volumes(opts)]
    container["volumeMounts"] = mounts
    if opts.start_order == "Before":
        # the game starts only once kidecar is ready (files restored / synced)
        container["startupProbe"] = {"httpGet": dict(ready), "periodSeconds": 1,
                                     "failureThreshold": 300}
    container["livenessProbe"] = {"httpGet": http, "periodSeconds": 10, "failureThreshold": 3}
    container["readinessProbe"] = {"httpGet": ready, "periodSeconds": 5}
    if security:
        container["securityContext"] = security
    return container


def shared_volumes(opts: InjectOptions) -> list[tuple[str, str]]:
    """(volume name, mount path) of each shared directory, first one ``kidecar-shared``."""
    return [(SHARED_VOLUME if i == 0 else f"{SHARED_VOLUME}-{i + 1}", path)
            for i, path in enumerate(opts.shared_dirs)]


def security_context(opts: InjectOptions, spec: dict[str, Any], game: dict[str, Any],
                     notes: list[str]) -> dict[str, Any]:
    """Who kidecar runs as, with the least privilege that lets it signal the game.

    The kernel lets a process signal another only under the same UID or with
    CAP_KILL (docs/deploy.md): the game's UID when the pod or game declares one,
    else (nginx's master: root) root with every capability dropped but KILL.
    Otherwise, no capability at all.
    """
    base: dict[str, Any] = {"allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]}}
    pod_sc = spec.get("securityContext") or {}
    game_sc = game.get("securityContext") or {}
    uid = opts.run_as_user
    if uid is None and opts.needs_signal:
        uid = game_sc.get("runAsUser", pod_sc.get("runAsUser"))
    if uid is not None:
        group = game_sc.get("runAsGroup", pod_sc.get("runAsGroup"))
        return {"runAsUser": uid, **({"runAsGroup": group} if group is not None else {}), **base}
    if not opts.needs_signal:
        return base
    if game_sc.get("runAsNonRoot") or pod_sc.get("runAsNonRoot"):
        notes.append("the game must run as non-root but its UID is not set: give kidecar the "
                     "same UID with --run-as-user, or it cannot signal the game")
        # the image runs as root: a pod-level runAsNonRoot would refuse it without a UID
        return {"runAsUser": NON_ROOT_UID, **base}
    # the game runs as its image's user (nginx's master: root): root with only CAP_KILL
    return {"runAsUser": 0, "runAsNonRoot": False, "allowPrivilegeEscalation": False,
            "capabilities": {"drop": ["ALL"], "add": ["KILL"]}}


# -- one pod spec -------------------------------------------------------------------------
def inject_pod_spec(spec: dict[str, Any], opts: InjectOptions, where: str) -> list[str]:
    """Mutate ``spec`` (a PodSpec); returns notes for the user."""
    notes: list[str] = []
    containers = spec.get("containers")
    if not isinstance(containers, list) or not containers:
        raise InjectError(f"{where}: the pod template has no containers")
    game = _game_container(containers, opts, where)
    security = security_context(opts, spec, game, notes)
    _place_container(spec, render_container(opts, security), opts)
    volumes = _list(spec, "volumes", where)
    _add_volume(volumes, {"name": CONFIG_VOLUME, "configMap": {"name": opts.configmap}})
    _add_volume(volumes, {"name": STATE_VOLUME, "emptyDir": {}})
    game_mounts = _list(game, "volumeMounts", f"{where} container {game.get('name')}")
    for name, path in shared_volumes(opts):
        _add_volume(volumes, {"name": name, "emptyDir": {}})
        if not any(m.get("name") == name or m.get("mountPath") == path for m in game_mounts):
            game_mounts.append({"name": name, "mountPath": path})
    spec["shareProcessNamespace"] = True
    account = spec.get("serviceAccountName")
    if not account:
        spec["serviceAccountName"] = opts.service_account
    elif account != opts.service_account:
        notes.append(f"keeps serviceAccountName {account!r}: bind kidecar's Role to it "
                     f"(config/rbac.yaml) or use {opts.service_account!r}")
    return notes


def _game_container(containers: list[Any], opts: InjectOptions, where: str) -> dict[str, Any]:
    candidates = [c for c in containers if isinstance(c, dict)
                  and c.get("name") != opts.container_name]
    if opts.game_container:
        found = next((c for c in candidates if c.get("name") == opts.game_container), None)
        if found is None:
            names = ", ".join(str(c.get("name")) for c in candidates) or "none"
            raise InjectError(f"{where}: no container named {opts.game_container!r} "
                              f"(containers: {names})")
        return found
    if not candidates:
        raise InjectError(f"{where}: the pod template has no game container besides kidecar")
    return candidates[0]


def _place_container(spec: dict[str, Any], container: dict[str, Any],
                     opts: InjectOptions) -> None:
    """Replace the kidecar container where it is, or put it where the start order says."""
    wanted = "initContainers" if opts.start_order == "Before" else "containers"
    for key in ("initContainers", "containers"):
        items = spec.get(key) or []
        for index, item in enumerate(items):
            if isinstance(item, dict) and item.get("name") == opts.container_name:
                if key == wanted:
                    items[index] = container
                    return
                del items[index]
                if not items:
                    del spec[key]
                break
    target = spec.setdefault(wanted, [])
    if wanted == "initContainers":
        target.insert(0, container)  # before other init containers: kidecar starts first
    else:
        target.append(container)


def _list(parent: dict[str, Any], key: str, where: str) -> list[Any]:
    value = parent.setdefault(key, [])
    if value is None:
        value = parent[key] = []
    if not isinstance(value, list):
        raise InjectError(f"{where}: {key} must be a list")
    return value


def _add_volume(volumes: list[Any], volume: dict[str, Any]) -> None:
    if not any(isinstance(v, dict) and v.get("name") == volume["name"] for v in volumes):
        volumes.append(volume)


# -- documents ---------------------------------------------------------------------------------
def pod_specs(doc: Any) -> Iterator[tuple[str, dict[str, Any]]]:
    """(description, PodSpec) of every pod template in one manifest document."""
    if not isinstance(doc, dict):
        return
    kind = str(doc.get("kind", ""))
    name = (doc.get("metadata") or {}).get("name", "?")
    where = f"{kind}/{name}"
    if kind == "List":
        for i, item in enumerate(doc.get("items") or []):
            for inner, item_spec in pod_specs(item):
                yield f"List item {i} {inner}", item_spec
        return
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        return
    if kind == "Pod":
        yield where, spec
    elif kind == "PodTemplate":
        template = _dig(doc, "template", "spec")
        if template is not None:
            yield where, template
    elif kind == "GameServerSet":
        template = _dig(spec, "gameServerTemplate", "spec")
        if template is not None:
            yield where, template
    elif kind == "CronJob":
        template = _dig(spec, "jobTemplate", "spec", "template", "spec")
        if template is not None:
            yield where, template
    else:
        template = _dig(spec, "template", "spec")
        if template is not None and "containers" in template:
            yield where, template


def _dig(node: Any, *keys: str) -> dict[str, Any] | None:
    for key in keys:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node if isinstance(node, dict) else None


class InjectReport:
    """The new text, where kidecar went, and what the user should know."""

    def __init__(self, text: str = "") -> None:
        self.text = text
        self.injected: list[str] = []
        self.notes: list[str] = []


def inject_text(text: str, opts: InjectOptions, source: str = "<input>") -> InjectReport:
    """Inject into every document of ``text``; unchanged documents keep their exact text."""
    import copy

    import yaml

    report = InjectReport()
    pieces: list[str] = []
    for index, (separator, body) in enumerate(split_documents(text)):
        pieces.append(separator)
        try:
            doc = yaml.safe_load(body)
        except yaml.YAMLError as exc:
            raise InjectError(f"{source}: document {index + 1} is not valid YAML: {exc}") from None
        new = copy.deepcopy(doc)
        found = False
        for where, spec in pod_specs(new):
            found = True
            report.notes += [f"{where}: {n}" for n in inject_pod_spec(spec, opts, where)]
            report.injected.append(where)
        pieces.append(_render(body, new) if found and new != doc else body)
    if not report.injected:
        raise InjectError(f"{source}: no pod template found (kinds understood: GameServerSet, "
                          "Pod, Deployment, StatefulSet, DaemonSet, Job, CronJob, ReplicaSet, "
                          "any kind with spec.template, List)")
    report.text = "".join(pieces)
    return report


def split_documents(text: str) -> list[tuple[str, str]]:
    """[(separator line(s) before it, document text)]; joined back they are ``text``."""
    out: list[tuple[str, str]] = []
    separator, body = "", ""
    for line in text.splitlines(keepends=True):
        bare = line.rstrip("\r\n")
        if _DOC_START.match(bare) or _DOC_END.match(bare):
            if body.strip() or out or separator:
                out.append((separator, body))
                separator, body = "", ""
            separator += line
        else:
            body += line
    out.append((separator, body))
    return [(sep, doc) for sep, doc in out if sep or doc]


def _render(original: str, doc: Any) -> str:
    """Dump ``doc``, keeping the comment lines that opened the original document."""
    import yaml

    lines = original.splitlines(keepends=True)
    head = []
    for line in lines:
        if line.strip() == "" or line.lstrip().startswith("#"):
            head.append(line)
        else:
            break
    if head and not head[-1].endswith("\n"):
        head[-1] += "\n"
    return "".join(head) + yaml.safe_dump(doc, sort_keys=False, default_flow_style=False,
                                          width=100)


# -- options from a sidecar config --------------------------------------------------------------
def options_from_config(path: str, base: InjectOptions) -> InjectOptions:
    """Start order, resources, shared dirs and ConfigMap name from a (validated) sidecar config."""
    from kidecar_supervisor.config import load_config

    config = load_config(path)  # ConfigError names the field
    dirs: list[str] = []
    needs_signal = False
    for spec in config.plugins:
        for attr in ("file_dir", "dst_dir"):
            value = getattr(spec.config, attr, None)
            if isinstance(value, str) and value not in dirs:
                dirs.append(value)
        needs_signal = needs_signal or getattr(spec.config, "load_patch_type", "") == "signal"
    values: dict[str, Any] = {"start_order": config.sidecar_start_order,
                              "needs_signal": needs_signal,
                              "shared_dirs": tuple(dirs) or base.shared_dirs}
    if config.resources.get("CPU"):
        values["cpu"] = config.resources["CPU"]
    if config.resources.get("Memory"):
        values["memory"] = config.resources["Memory"]
    values["extra_resources"] = tuple((k, v) for k, v in config.resources.items()
                                      if k not in ("CPU", "Memory"))
    name = _configmap_name(path)
    if name:
        values["configmap"] = name
    if config.http.port != DEFAULT_PORT:
        values["port"] = config.http.port
    return base._replace(**values)


def _configmap_name(path: str) -> str:
    import yaml

    try:
        document = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return ""
    if isinstance(document, dict) and document.get("kind") == "ConfigMap":
        return str((document.get("metadata") or {}).get("name") or "")
    return ""


# -- command line -----------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-f", "--filename", required=True,
                        help="manifest file to inject into ('-' for stdin)")
    parser.add_argument("-o", "--output",
                        help="where to write (default: the input file itself; '-' for stdout)")
    parser.add_argument("--config", dest="sidecar_config",
                        help="the sidecar config (file or ConfigMap manifest): start order, "
                             "resources, shared dirs, ConfigMap name")
    parser.add_argument("--start-order", choices=START_ORDERS,
                        help="Before: native sidecar (init container, restartPolicy Always); "
                             "After: a regular container (default: the config's, else Before)")
    parser.add_argument("--image", help="kidecar image (default kidecar:<installed version>)")
    parser.add_argument("--configmap", help="ConfigMap holding config.yaml "
                                            f"(default: the --config ConfigMap's name, else "
                                            f"{DEFAULT_CONFIGMAP})")
    parser.add_argument("--service-account", help=f"default {DEFAULT_SERVICE_ACCOUNT}")
    parser.add_argument("--shared-dir", action="append", dest="shared_dirs",
                        help=f"shared emptyDir path (repeatable; default: from --config, "
                             f"else {DEFAULT_SHARED_DIR})")
    parser.add_argument("--game-container", help="container that gets the shared mount "
                                                 "(default: the first one)")
    parser.add_argument("--run-as-user", type=int,
                        help="kidecar's UID (default: the game's runAsUser if set; else root "
                             "with only CAP_KILL when a plugin signals the game)")


def options_from_args(args: argparse.Namespace) -> InjectOptions:
    opts = InjectOptions()
    if args.sidecar_config:
        opts = options_from_config(args.sidecar_config, opts)
    overrides: dict[str, Any] = {}
    for attr, key in (("start_order", "start_order"), ("image", "image"),
                      ("configmap", "configmap"), ("service_account", "service_account"),
                      ("game_container", "game_container"), ("run_as_user", "run_as_user")):
        value = getattr(args, attr, None)
        if value is not None:
            overrides[key] = value
    if args.shared_dirs:
        bad = [d for d in args.shared_dirs if not d.startswith("/")]
        if bad:
            raise InjectError(f"--shared-dir must be absolute paths, got {bad}")
        overrides["shared_dirs"] = tuple(dict.fromkeys(args.shared_dirs))
    return opts._replace(**overrides)


def run_cli(args: argparse.Namespace) -> int:
    """``kidecar inject``: 0 written, 1 bad input (nothing written)."""
    from kidecar_supervisor.config_reader import ConfigError

    try:
        opts = options_from_args(args)
        source = args.filename
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
        report = inject_text(text, opts, "<stdin>" if source == "-" else source)
    except (InjectError, ConfigError) as exc:
        print(f"kidecar inject: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"kidecar inject: cannot read {args.filename}: {exc}", file=sys.stderr)
        return 1
    output = args.output or (source if source != "-" else "-")
    try:
        write_output(output, report.text, text)
    except OSError as exc:
        print(f"kidecar inject: cannot write {output}: {exc}", file=sys.stderr)
        return 1
    mode = "native sidecar" if opts.start_order == "Before" else "container"
    for where in report.injected:
        print(f"kidecar inject: {where}: kidecar ({mode}, {opts.image or default_image()})",
              file=sys.stderr)
    for note in report.notes:
        print(f"kidecar inject: note: {note}", file=sys.stderr)
    return 0


def write_output(output: str, text: str, original: str) -> None:
    """stdout, or an atomic replace of the file (left untouched when nothing changed)."""
    import os
    import tempfile

    if output == "-":
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    target = Path(output)
    if target.exists() and target.read_text(encoding="utf-8") == text:
        return
    mode = target.stat().st_mode & 0o777 if target.exists() else 0o644
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or Path("."))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(temp, mode)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
