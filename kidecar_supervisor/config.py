"""The sidecar config document (DESIGN §3): load, validate, type.

Everything is checked before any plugin starts, so a bad ConfigMap fails the
container at once with one message naming file, field path and problem,
instead of a half-started sidecar.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from kidecar_supervisor.config_document import (
    Embedded,
    KeyLines,
    expand_environment,
    literal_block_first_line,
    load_yaml,
    read_config_text,
)
from kidecar_supervisor.config_reader import ConfigError, ConfigReader
from kidecar_supervisor.plugin_api import Plugin
from kidecar_supervisor.registry import UnknownPlugin, load_plugin_class

DEFAULT_CONFIG_PATH = "/opt/sidecar/config.yaml"
RESTART_POLICIES = ("Always", "OnFailure", "Never")
START_ORDERS = ("Before", "After")
_PLUGIN_NAME = r"[a-z0-9]([a-z0-9_.-]{0,61}[a-z0-9])?"
# Kubernetes resource.Quantity: a decimal with a binary/decimal SI suffix or an exponent
# a Kubernetes resource name: [prefix/]name, e.g. ephemeral-storage, nvidia.com/gpu
_RESOURCE_NAME = r"([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?"
_QUANTITY = r"[+]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?"


@dataclass(frozen=True)
class RestartSettings:
    """How one plugin is restarted; top-level values are every plugin's default."""

    policy: str = "Always"
    backoff_seconds: float = 0.5
    max_backoff_seconds: float = 30.0
    backoff_reset_seconds: float = 60.0
    max_restarts: int = 10
    restart_window_seconds: float = 300.0
    heartbeat_timeout_seconds: float = 30.0
    stop_grace_seconds: float = 10.0
    start_timeout_seconds: float = 120.0

    @classmethod
    def parse(cls, reader: ConfigReader, base: RestartSettings) -> RestartSettings:
        return cls(
            policy=reader.str("restartPolicy", default=base.policy, choices=RESTART_POLICIES),
            backoff_seconds=reader.number(
                "backoffSeconds", default=base.backoff_seconds, minimum=0),
            max_backoff_seconds=reader.number(
                "maxBackoffSeconds", default=base.max_backoff_seconds, minimum=0),
            backoff_reset_seconds=reader.number(
                "backoffResetSeconds", default=base.backoff_reset_seconds, positive=True),
            max_restarts=reader.int("maxRestarts", default=base.max_restarts, minimum=0),
            restart_window_seconds=reader.number(
                "restartWindowSeconds", default=base.restart_window_seconds, positive=True),
            heartbeat_timeout_seconds=reader.number(
                "heartbeatTimeoutSeconds", default=base.heartbeat_timeout_seconds, positive=True),
            stop_grace_seconds=reader.number(
                "stopGraceSeconds", default=base.stop_grace_seconds, minimum=0),
            start_timeout_seconds=reader.number(
                "startTimeoutSeconds", default=base.start_timeout_seconds, positive=True),
        )


@dataclass(frozen=True)
class PluginSpec:
    """One entry of ``plugins:``, validated."""

    name: str
    boot_order: int
    plugin_class: type[Plugin]
    config: Any
    restart: RestartSettings
    field_path: str
    enabled: bool = True

    @property
    def is_binary(self) -> bool:
        return bool(getattr(self.plugin_class, "runs_external_program", False))


@dataclass(frozen=True)
class HttpSettings:
    """``http:``: where the API listens, what a client may cost, who may change things.

    The limits exist because the port is reachable by every pod that can
    reach the game server (issue 17): no client may starve the kubelet's
    probes or grow the HTTP child's memory.
    """

    port: int = 5000
    host: str = "0.0.0.0"
    threads: int = 8
    token: str = ""
    token_file: str = ""
    graceful_timeout_seconds: float = 10.0
    #: a request body larger than this is refused 413 before it is read
    max_body_bytes: int = 64 * 1024
    #: one form or JSON field (name or value) larger than this is refused 413
    max_field_bytes: int = 8 * 1024
    #: a request head must be complete this long after its first byte (else 408)
    header_timeout_seconds: float = 5.0
    #: a request body must be complete this long after its head
    body_timeout_seconds: float = 10.0
    #: connections waiting for a request head or idle at once; the oldest beyond closes
    max_connections: int = 64
    #: with a token: loopback clients may still mutate without it (the seeds' curl)
    allow_loopback_without_token: bool = True
    #: without a token: anyone who reaches the port may mutate (the old, open behaviour)
    allow_network_mutations: bool = False


@dataclass(frozen=True)
class SidecarConfig:
    plugins: tuple[PluginSpec, ...]
    restart: RestartSettings = field(default_factory=RestartSettings)
    resources: dict[str, str] = field(default_factory=dict)
    sidecar_start_order: str = "Before"
    http: HttpSettings = field(default_factory=HttpSettings)
    log_level: str = "info"
    source: str = ""
    # ${VAR}s not set where the document was read (only with unset_ok): run refuses them
    unset_variables: tuple[ConfigError, ...] = ()

    def plugin(self, name: str) -> PluginSpec | None:
        return next((p for p in self.plugins if p.name == name), None)


def config_path(cli_value: str | None) -> str:
    """``--config`` wins over ``KIDECAR_CONFIG`` over the seeds' mount path."""
    return cli_value or os.environ.get("KIDECAR_CONFIG") or DEFAULT_CONFIG_PATH


def load_config(path: str | os.PathLike[str], *, unset_ok: bool = False,
                environ: Mapping[str, str] | None = None) -> SidecarConfig:
    """Read and validate ``path``; ConfigError names file, field and problem.

    ``unset_ok`` keeps an unset ``${VAR}`` (reported in ``unset_variables``) instead
    of refusing it: ``kidecar validate`` away from the image, where the pod's
    environment does not exist, still checks the rest of the document.
    """
    text = read_config_text(path)
    return parse_config_text(text, str(path), unset_ok=unset_ok, environ=environ)


def parse_config_text(text: str, source: str = "<config>", *, unset_ok: bool = False,
                      environ: Mapping[str, str] | None = None) -> SidecarConfig:
    """The document in ``text`` (a config, or a whole ConfigMap manifest holding one)."""
    key_lines: KeyLines = {}
    document = load_yaml(text, source, key_lines=key_lines)
    document, prefix = _unwrap_sidecarconfig(document, source, key_lines)
    document, prefix = _unwrap_configmap(text, document, source, key_lines) if not prefix \
        else (document, prefix)
    unset = expand_environment(document, os.environ if environ is None else environ,
                               source, prefix)
    if unset and not unset_ok:
        raise unset[0]
    config = parse_config(document, source, prefix, key_lines)
    return replace(config, unset_variables=tuple(unset))


SIDECARCONFIG_API = "serverless.vke.volcengine.com/v1alpha1"
#: the Go kidecar's SidecarConfig ``spec.injection`` fields (its InjectConfig)
INJECTION_FIELDS = (
    "selector", "injectKidecar", "useKubeNativeSidecar", "namespace", "namespaceSelector",
    "initContainers", "containers", "volumes", "volumeMounts", "forceInjectServiceAccount",
    "serviceAccountName", "shareProcessNamespace")


def _unwrap_sidecarconfig(document: Any, source: str, key_lines: KeyLines) -> tuple[Any, str]:
    """Accept the Go kidecar's ``SidecarConfig`` (its CRD) too: the config is ``spec.kidecar``.

    ``spec.injection`` is for ``kidecar migrate`` (which renders it as a SidecarSet);
    here it is only checked for fields its CRD does not have, like any other key.
    """
    if not (isinstance(document, dict) and document.get("kind") == "SidecarConfig"):
        return document, ""
    root = ConfigReader(document, "", source, key_lines)
    api = root.str("apiVersion")
    if api != SIDECARCONFIG_API:
        raise root.error("apiVersion", f"a SidecarConfig is {SIDECARCONFIG_API}, got {api!r}")
    root.str("kind")
    root.child("metadata")
    root.raw("status", default=None)
    spec = root.child("spec", required=True)
    assert spec is not None
    injection = spec.child("injection")
    if injection is not None:
        for name in INJECTION_FIELDS:
            injection.raw(name, default=None)
        injection.reject_unknown()
    kidecar = spec.raw("kidecar", default=None)
    spec.reject_unknown()  # a misspelt 'kidecar' is named as such, not as missing
    if not isinstance(kidecar, dict):
        raise spec.error("kidecar", "is required: the kidecar config of this SidecarConfig")
    root.reject_unknown()
    return kidecar, "spec.kidecar"


def _unwrap_configmap(text: str, document: Any, source: str,
                      key_lines: KeyLines) -> tuple[Any, str]:
    """Accept a whole ConfigMap manifest too: its ``data`` holds the real document,
    read with the same rules (size, duplicate keys) and errors naming the file's lines."""
    if not (isinstance(document, dict) and document.get("kind") == "ConfigMap"):
        return document, ""
    data = document.get("data") or {}
    if not isinstance(data, dict):  # found by atheris: a string here raised AttributeError
        raise ConfigError(f"must be a mapping of file names to documents, got "
                          f"{type(data).__name__}", "data", source)
    key = "config.yaml" if "config.yaml" in data else next(iter(data), None)
    if key is None or not isinstance(data.get(key), str):
        raise ConfigError("ConfigMap has no config document in data", "data", source)
    prefix = f'data["{key}"]'
    where = Embedded(prefix, literal_block_first_line(text, ("data", str(key))))
    return load_yaml(data[key], source, where, key_lines), prefix


def machine_problems(config: SidecarConfig) -> list[ConfigError]:
    """What ``run`` would refuse on *this* machine although the document is valid.

    ``${VAR}`` values and whatever a plugin config's ``machine_problems(field_path,
    source)`` reports (the binary plugin: its program, working directory, the
    inherited environment's size) exist per machine, and configs are often validated away
    from the image: ``validate`` reports these as warnings unless asked to check
    this machine, ``run`` refuses to start with any of them.
    """
    problems = list(config.unset_variables)
    for spec in config.plugins:
        check = getattr(spec.config, "machine_problems", None)
        if spec.enabled and check is not None:
            problems += check(spec.field_path, config.source)
    return problems


def parse_config(document: Any, source: str = "<config>", prefix: str = "",
                 key_lines: KeyLines | None = None) -> SidecarConfig:
    root = ConfigReader(document, prefix, source, key_lines)
    restart = RestartSettings.parse(root, RestartSettings())
    resources = _parse_resources(root)
    start_order = root.str("sidecarStartOrder", default="Before", choices=START_ORDERS)
    http = _parse_http(root.child("http"))
    log_level = root.str(
        "logLevel", default="info", choices=("debug", "info", "warning", "error"))
    plugins = tuple(_parse_plugin(r, restart) for r in root.children("plugins"))
    _check_unique_names(plugins, root)
    root.reject_unknown()
    return SidecarConfig(
        plugins=plugins, restart=restart, resources=resources, sidecar_start_order=start_order,
        http=http, log_level=log_level, source=source,
    )


def _parse_plugin(reader: ConfigReader, defaults: RestartSettings) -> PluginSpec:
    name = reader.str("name", pattern=_PLUGIN_NAME)
    binary = reader.child("binary")
    try:
        plugin_class = load_plugin_class("binary" if binary is not None else name)
    except UnknownPlugin as exc:
        raise reader.error("name", str(exc)) from None
    if getattr(plugin_class, "internal", False):
        raise reader.error("name", f"{name!r} is internal to kidecar and cannot be configured")
    config_reader = binary if binary is not None else reader.child("config")
    if config_reader is None:
        config_reader = ConfigReader({}, reader.field_path("config"), reader.source)
    if binary is not None and reader.has("config"):
        raise reader.error("config", "a binary plugin takes its settings under 'binary:' only")
    # a seed document puts bootOrder inside config:; accept it there too
    nested_order = config_reader.int("bootOrder", default=None)
    config = plugin_class.config_type.parse(config_reader)  # type: ignore[attr-defined]
    boot_order = reader.int("bootOrder", default=None)
    spec = PluginSpec(
        name=name,
        boot_order=boot_order if boot_order is not None else (nested_order or 0),
        plugin_class=plugin_class,
        config=config,
        restart=RestartSettings.parse(reader, defaults),
        field_path=reader.path,
        enabled=reader.bool("enabled", default=True),
    )
    reader.reject_unknown()
    return spec


def _check_unique_names(plugins: tuple[PluginSpec, ...], root: ConfigReader) -> None:
    seen: dict[str, str] = {}
    for spec in plugins:
        if spec.name in seen or spec.name in ("http", "storage", "supervisor"):
            raise ConfigError(
                f"plugin name {spec.name!r} is already used"
                + (f" by {seen[spec.name]}" if spec.name in seen else " by kidecar itself"),
                f"{spec.field_path}.name", root.source,
            )
        seen[spec.name] = spec.field_path


def _parse_resources(root: ConfigReader) -> dict[str, str]:
    """``CPU`` and ``Memory`` (any spelling), and any other resource name the Go
    kidecar's free-form map allows (``ephemeral-storage``, ``nvidia.com/gpu``), each a
    Kubernetes quantity; ``kidecar inject`` renders the others under their own names."""
    resources = root.child("resources")
    if resources is None:
        return {}
    out = {}
    for key in ("CPU", "Memory"):
        value = resources.str(key, default="")
        if value and not re.fullmatch(_QUANTITY, value):
            raise resources.error(key, f"{value!r} is not a Kubernetes quantity (e.g. 100m, 128Mi)")
        if value:
            out[key] = value
    for key in resources.unread():
        if not re.fullmatch(_RESOURCE_NAME, key):
            raise resources.error(key, "is not a Kubernetes resource name (e.g. "
                                       "ephemeral-storage, nvidia.com/gpu)")
        value = resources.str(key)
        if not re.fullmatch(_QUANTITY, value):
            raise resources.error(key, f"{value!r} is not a Kubernetes quantity (e.g. 1Gi)")
        out[key] = value
    resources.reject_unknown()
    return out


def notes(config: SidecarConfig) -> list[str]:
    """Informational lines for ``kidecar validate``: keys accepted from the Go kidecar
    that change nothing at run time (a binary's ``version``), or only sometimes."""
    out: list[str] = []
    for spec in config.plugins:
        describe = getattr(spec.config, "notes", None)
        if describe is not None:
            out += describe(spec.field_path)
    extra = {k: v for k, v in config.resources.items() if k not in ("CPU", "Memory")}
    if extra:
        out.append(f"resources: {extra} (rendered by kidecar inject into the container's "
                   "requests and limits)")
    return out


def _parse_http(reader: ConfigReader | None) -> HttpSettings:
    if reader is None:
        return HttpSettings()
    http = HttpSettings(
        port=reader.int("port", default=5000, minimum=1, maximum=65535),
        host=reader.str("host", default="0.0.0.0"),
        threads=reader.int("threads", default=8, minimum=1, maximum=256),
        token=reader.str("token", default=""),
        token_file=reader.str("tokenFile", default=""),
        graceful_timeout_seconds=reader.number("gracefulTimeoutSeconds", default=10.0, minimum=0),
        max_body_bytes=reader.int("maxBodyBytes", default=HttpSettings.max_body_bytes,
                                  minimum=1024, maximum=64 << 20),
        max_field_bytes=reader.int("maxFieldBytes", default=HttpSettings.max_field_bytes,
                                   minimum=256, maximum=64 << 20),
        header_timeout_seconds=reader.number(
            "headerTimeoutSeconds", default=HttpSettings.header_timeout_seconds,
            positive=True, maximum=300),
        body_timeout_seconds=reader.number(
            "bodyTimeoutSeconds", default=HttpSettings.body_timeout_seconds,
            positive=True, maximum=3600),
        max_connections=reader.int("maxConnections", default=HttpSettings.max_connections,
                                   minimum=1, maximum=10000),
        allow_loopback_without_token=reader.bool(
            "allowLoopbackWithoutToken", default=HttpSettings.allow_loopback_without_token),
        allow_network_mutations=reader.bool(
            "allowNetworkMutations", default=HttpSettings.allow_network_mutations),
    )
    if http.max_field_bytes > http.max_body_bytes:
        raise reader.error("maxFieldBytes", f"must not exceed maxBodyBytes ({http.max_body_bytes})")
    reader.reject_unknown()
    return http
