"""The file_sync plugin's typed config (``plugins[i].config`` of file_sync).

``srcDir``            files baked into the sidecar image (absolute path, required)
``dstDir``            the shared emptyDir the game reads (absolute path, required)
``loadPatchType``     ``signal`` or ``request``, exactly as hot_update's
``signal``            ``{processName, signalName}`` (hot_update's semantics)
``request``           ``{url, method, timeoutSeconds, deadlineSeconds, expectedStatus, headers}``;
                      ``deadlineSeconds`` defaults to 300 here (not hot_update's 30): at pod
                      start the game may still be booting, and the guide's request.sh
                      waits for it
``version``           the version of the bundled files, recorded like a hot update
``versionEnv``        or: the name of an env var holding it (e.g. set by the image's ENV)
                      without either, the version is ``sha256-<12 hex>`` of the file tree
``storageConfig``     where the result goes (hot_update's storageConfig)
``watch``             ``{enabled, debounceSeconds, intervalSeconds, ignore}``: reload the
                      game whenever files in dstDir change, once per burst

Signal and request settings are parsed by the plugin kit's reload classes, so
this plugin and hot_update accept exactly the same spellings and reject the same mistakes.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field

from kidecar_supervisor.plugin_api import ConfigReader, StorageConfig
from kidecar_supervisor.plugin_kit.reload import LOAD_PATCH_TYPES, RequestConfig, SignalConfig

#: a version must be usable as a label value (the store may put it in one)
VERSION_PATTERN = r"[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?"
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"
DEFAULT_REQUEST_DEADLINE = 300.0


@dataclass(frozen=True)
class WatchConfig:
    """Reload on changes in dstDir: polled (no extra dependency), debounced per burst."""

    enabled: bool = False
    debounce_seconds: float = 1.0
    interval_seconds: float = 0.5
    #: fnmatch patterns on each path component; hidden names by default, because
    #: atomic writers (rsync, kidecar itself) write hidden temp files then rename
    ignore: tuple[str, ...] = (".*",)

    @classmethod
    def parse(cls, reader: ConfigReader) -> WatchConfig:
        cfg = cls(
            enabled=reader.bool("enabled", default=True),
            debounce_seconds=reader.number("debounceSeconds", default=1.0, minimum=0,
                                           maximum=3600),
            interval_seconds=reader.number("intervalSeconds", default=0.5, minimum=0.01,
                                           maximum=60),
            ignore=tuple(reader.str_list("ignore", default=[".*"])),
        )
        reader.reject_unknown()
        return cfg


@dataclass(frozen=True)
class FileSyncConfig:
    src_dir: str
    dst_dir: str
    load_patch_type: str
    signal: SignalConfig | None = None
    request: RequestConfig | None = None
    version: str = ""
    version_env: str = ""
    storage: StorageConfig = field(default_factory=StorageConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)

    def storage_configs(self) -> list[StorageConfig]:
        """The one store sync results go to (the supervisor sends plugin-failure Events there)."""
        return [self.storage]

    @classmethod
    def parse(cls, reader: ConfigReader) -> FileSyncConfig:
        src_dir = _absolute_dir(reader, "srcDir")
        dst_dir = _absolute_dir(reader, "dstDir")
        _check_disjoint(reader, src_dir, dst_dir)
        kind = reader.str("loadPatchType", choices=LOAD_PATCH_TYPES).lower()
        signal_reader = reader.child("signal")
        request_reader = reader.child("request")
        signal_cfg = SignalConfig.parse(signal_reader) if signal_reader else None
        request_cfg = _parse_request(request_reader) if request_reader else None
        if kind == "signal" and signal_cfg is None:
            raise reader.error("signal", "is required when loadPatchType is signal "
                               "(e.g. {processName: 'nginx: master process', signalName: SIGHUP})")
        if kind == "request" and request_cfg is None:
            raise reader.error("request", "is required when loadPatchType is request "
                               "(e.g. {url: 'http://127.0.0.1:3000/reload', method: GET})")
        version = reader.str("version", default="", pattern=VERSION_PATTERN)
        version_env = reader.str("versionEnv", default="", pattern=_ENV_NAME)
        if version and version_env:
            raise reader.error("versionEnv", "give either version or versionEnv, not both")
        storage_reader = reader.child("storageConfig")
        watch_reader = reader.child("watch")
        cfg = cls(
            src_dir=src_dir, dst_dir=dst_dir, load_patch_type=kind, signal=signal_cfg,
            request=request_cfg, version=version, version_env=version_env,
            storage=StorageConfig.parse(storage_reader) if storage_reader else StorageConfig(),
            watch=WatchConfig.parse(watch_reader) if watch_reader else WatchConfig(),
        )
        reader.reject_unknown()
        return cfg


def _parse_request(reader: ConfigReader) -> RequestConfig:
    has_deadline = reader.has("deadlineSeconds")
    cfg = RequestConfig.parse(reader)
    if not has_deadline:
        cfg = dataclasses.replace(cfg, deadline_seconds=DEFAULT_REQUEST_DEADLINE)
    return cfg


def _absolute_dir(reader: ConfigReader, name: str) -> str:
    value: str = reader.str(name)
    if not value.startswith("/"):
        raise reader.error(name, f"must be an absolute path, got {value!r}")
    return os.path.normpath(value)


def _check_disjoint(reader: ConfigReader, src: str, dst: str) -> None:
    """Copying a tree into itself (or its parent) would never end or eat the source."""
    if src == dst or dst.startswith(src + "/") or src.startswith(dst + "/"):
        raise reader.error("dstDir", f"must not be srcDir or inside it (or contain it): "
                           f"srcDir {src!r}, dstDir {dst!r}")


def resolve_version(cfg: FileSyncConfig, tree_digest: str,
                    environ: dict[str, str] | os._Environ[str] | None = None) -> str:
    """The version to record: config, else the env var, else one derived from the content."""
    if cfg.version:
        return cfg.version
    if cfg.version_env:
        env = os.environ if environ is None else environ
        value = env.get(cfg.version_env, "").strip()
        if not value:
            raise ValueError(f"versionEnv {cfg.version_env} is not set in the sidecar's "
                             "environment (set it in the image's ENV or the container's env)")
        if not re.fullmatch(VERSION_PATTERN, value):
            raise ValueError(f"{cfg.version_env}={value!r} is not a usable version "
                             f"(must match {VERSION_PATTERN})")
        return value
    return f"sha256-{tree_digest[:12]}"
