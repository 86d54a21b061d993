"""The hot_update plugin's typed config (``plugins[i].config`` of hot_update).

Accepts the seed documents as they are (``loadPatchType``, ``signal``,
``request``, ``fileDir``, ``storageConfig``) and adds a few documented knobs
that a platform engineer needs to keep a bad URL from hurting the pod:

``maxFileBytes``            size cap of one download (int or ``512Mi``/``1Gi``; default 1Gi)
``downloadTimeoutSeconds``  connect timeout and stall timeout: no byte for this long fails (30)
``downloadDeadlineSeconds`` whole-download deadline, 0 = none (3600)
``allowFileUrls``           accept ``file://`` URLs; only with ``storageConfig.type: Local`` (false)
``restoreAttempts``         tries to re-apply the recorded version at start before giving up
                            and becoming ready anyway with the error shown (3)
``request.timeoutSeconds``  per-attempt timeout of the game's reload call (5)
``request.deadlineSeconds`` keep retrying the reload call until 2xx or this deadline (30)
``request.expectedStatus``  the one status that counts as success (default: any 2xx)
``confirm``                 the game reports the version it loaded: ``http {url, jsonPath}`` or
                            ``file {path}``, ``errorJsonPath``, ``timeoutSeconds`` (30),
                            ``intervalSeconds`` (0.5); see confirm.py and DESIGN §9
``rollback.onFailure``      put the previous files back when confirmation fails (true)
``keepVersions``            byte-exact copies of previous versions kept in the state dir (3)
``allowedUrlPrefixes``      download only from these (403 for anything else; default: any)
``desiredVersion``          ``{annotationKey, enabled}``: follow the desired version written on
                            this pod (``kidecar rollout``; InKube only; on by default there,
                            key ``kidecar.io/desired-version``); see desired.py and DESIGN §10

Every problem is a ConfigError naming the field path, caught before start.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from kidecar_supervisor.plugin_api import ConfigReader, StorageConfig
from kidecar_supervisor.plugin_kit.reload import LOAD_PATCH_TYPES, RequestConfig, SignalConfig
from workers.hot_update.confirm import ConfirmConfig

DEFAULT_MAX_FILE_BYTES = 1 << 30
#: the pod annotation ``kidecar rollout`` writes (docs/rollout.md)
DEFAULT_DESIRED_ANNOTATION = "kidecar.io/desired-version"

_UNITS = {
    "": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12,
    "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30, "ti": 1 << 40,
}

#: where the shared emptyDir is mounted when the config does not say (DESIGN §3)
DEFAULT_FILE_DIR = "/app/downloads"


@dataclass(frozen=True)
class HotUpdateConfig:
    """Everything the hot_update plugin needs, validated."""

    load_patch_type: str
    file_dir: str
    signal: SignalConfig | None = None
    request: RequestConfig | None = None
    storage: StorageConfig = field(default_factory=StorageConfig)
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    download_timeout_seconds: float = 30.0
    download_deadline_seconds: float = 3600.0
    allow_file_urls: bool = False
    restore_attempts: int = 3
    confirm: ConfirmConfig | None = None
    rollback_on_failure: bool = True
    keep_versions: int = 3
    allowed_url_prefixes: tuple[str, ...] = ()
    #: the pod annotation holding the desired version ("" = not followed)
    desired_annotation_key: str = ""
    #: replace the plugin's process by a fresh one after each settled update (issue 16)
    recycle_after_update: bool = True

    def storage_configs(self) -> list[StorageConfig]:
        """The one store results go to (the supervisor sends plugin-failure Events there)."""
        return [self.storage]

    @classmethod
    def parse(cls, reader: ConfigReader) -> HotUpdateConfig:
        kind = reader.str("loadPatchType", choices=LOAD_PATCH_TYPES).lower()
        signal_reader = reader.child("signal")
        request_reader = reader.child("request")
        signal_cfg = SignalConfig.parse(signal_reader) if signal_reader else None
        request_cfg = RequestConfig.parse(request_reader) if request_reader else None
        if kind == "signal" and signal_cfg is None:
            raise reader.error("signal", "is required when loadPatchType is signal "
                               "(e.g. {processName: 'nginx: master process', signalName: SIGHUP})")
        if kind == "request" and request_cfg is None:
            raise reader.error("request", "is required when loadPatchType is request "
                               "(e.g. {url: 'http://127.0.0.1:3000/reload', method: GET})")
        storage_reader = reader.child("storageConfig")
        storage = StorageConfig.parse(storage_reader) if storage_reader else StorageConfig()
        # the seeds' documents omit fileDir: default to the design's shared emptyDir
        file_dir = reader.str("fileDir", default=DEFAULT_FILE_DIR)
        if not file_dir.startswith("/"):
            raise reader.error("fileDir", f"must be an absolute path, got {file_dir!r}")
        allow_file_urls = reader.bool("allowFileUrls", default=False)
        if allow_file_urls and storage.type != "Local":
            raise reader.error("allowFileUrls", "is only allowed with storageConfig.type Local "
                               f"(got {storage.type}): file:// URLs do not exist across pods")
        confirm_reader = reader.child("confirm")
        cfg = cls(
            load_patch_type=kind,
            file_dir=file_dir,
            signal=signal_cfg,
            request=request_cfg,
            storage=storage,
            max_file_bytes=parse_size(reader, "maxFileBytes", DEFAULT_MAX_FILE_BYTES),
            download_timeout_seconds=reader.number(
                "downloadTimeoutSeconds", default=30.0, positive=True, maximum=3600
            ),
            download_deadline_seconds=reader.number(
                "downloadDeadlineSeconds", default=3600.0, minimum=0, maximum=7 * 86400
            ),
            allow_file_urls=allow_file_urls,
            restore_attempts=reader.int("restoreAttempts", default=3, minimum=1, maximum=100),
            confirm=ConfirmConfig.parse(confirm_reader) if confirm_reader else None,
            rollback_on_failure=_rollback_on_failure(reader),
            keep_versions=reader.int("keepVersions", default=3, minimum=1, maximum=50),
            allowed_url_prefixes=_prefixes(reader),
            desired_annotation_key=_desired_key(reader, storage),
            recycle_after_update=reader.bool("recycleAfterUpdate", default=True),
        )
        reader.reject_unknown()
        return cfg


def _desired_key(reader: ConfigReader, storage: StorageConfig) -> str:
    """``desiredVersion.annotationKey`` when followed: by default with InKube storage only
    (the desired version is written on the pod object, so Local storage has none)."""
    desired = reader.child("desiredVersion")
    key, enabled = DEFAULT_DESIRED_ANNOTATION, storage.type == "InKube"
    if desired is not None:
        key = desired.str("annotationKey", default=DEFAULT_DESIRED_ANNOTATION)
        enabled = desired.bool("enabled", default=enabled)
        desired.reject_unknown()
        if enabled and storage.type != "InKube":
            raise reader.error("desiredVersion", "needs storageConfig.type InKube: the desired "
                               f"version is an annotation on the pod (got {storage.type})")
    return key if enabled else ""


def _rollback_on_failure(reader: ConfigReader) -> bool:
    """``rollback: {onFailure: bool}``, default true (DESIGN §9)."""
    rollback = reader.child("rollback")
    if rollback is None:
        return True
    value = bool(rollback.bool("onFailure", default=True))
    rollback.reject_unknown()
    return value


def _prefixes(reader: ConfigReader) -> tuple[str, ...]:
    """``allowedUrlPrefixes``: http(s) or file URL prefixes, each with a host (or file:///)."""
    prefixes = tuple(reader.str_list("allowedUrlPrefixes", default=[]))
    for index, prefix in enumerate(prefixes):
        try:
            parts = urlsplit(prefix)
        except ValueError as exc:  # "Invalid IPv6 URL" (found by atheris)
            raise reader.error("allowedUrlPrefixes", f"entry {index} is not a valid URL: "
                               f"{exc}") from None
        if parts.scheme.lower() not in ("http", "https", "file") or (
                parts.scheme.lower() != "file" and not parts.hostname):
            raise reader.error("allowedUrlPrefixes", f"entry {index} must be a URL prefix like "
                               f"https://cdn.example.com/games/, got {prefix!r}")
        if parts.query or "@" in parts.netloc:
            raise reader.error("allowedUrlPrefixes", f"entry {index} must not carry a query "
                               f"or credentials: {prefix!r}")
    return prefixes


def parse_size(reader: ConfigReader, name: str, default: int) -> int:
    """A byte count: an integer or a quantity like ``512Mi``, ``1Gi``, ``100M``."""
    value = reader.raw(name, default=None)
    if value is None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        match = re.fullmatch(r"\s*(\d+)\s*([KMGTkmgt]i?)?\s*", str(value))
        if isinstance(value, bool) or match is None:
            raise reader.error(name, f"must be a byte count like 1073741824 or 1Gi, got {value!r}")
        number = int(match.group(1)) * _UNITS[(match.group(2) or "").lower()]
    if number <= 0:
        raise reader.error(name, f"must be greater than 0, got {value!r}")
    return number
