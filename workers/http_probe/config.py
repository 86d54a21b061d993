"""The http_probe plugin's config: endpoints, timing, thresholds, storage.

Accepts the seed documents as published (``markerPolices``, ``bootorder``
outside ``config``, the ``gameServerOpsState`` policies) and refuses anything
that would only fail later — a malformed JSONPath, a label value Kubernetes
would reject, a non-positive interval — with the field path of the problem.

Defaults: ``startDelaySeconds`` 0, ``probeIntervalSeconds`` 5 (the seed
example; one seed omits it), ``method`` GET, ``timeout`` 5 s,
``expectedStatusCode`` 200, ``successThreshold`` 1, ``failureThreshold`` 3
(the kubelet's), ``storageConfig`` Local, ``fieldType`` string.
A ``bootorder`` inside an endpoint (one seed puts it there) is ignored with a
warning: boot order belongs to the plugin entry.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from kidecar_supervisor.plugin_api import ConfigReader, StorageConfig
from kidecar_supervisor.plugin_kit.jsonpath import JsonPath, JsonPathError, compile_path
from workers.http_probe.markers import is_valid_label_value, is_valid_qualified_name

log = logging.getLogger("kidecar.http_probe")

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
FIELD_TYPES = ("string", "number", "int", "float", "bool")
DEFAULT_METRIC = "kidecar_probe_state"
_METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_HEADER_NAME = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"


@dataclass(frozen=True)
class JsonPathConfig:
    """Where the state sits in a JSON answer and how to render it."""

    path: JsonPath
    field_type: str = "string"

    @classmethod
    def parse(cls, reader: ConfigReader) -> JsonPathConfig:
        text = reader.str("jsonPath")
        try:
            path = compile_path(text)
        except JsonPathError as exc:
            raise reader.error("jsonPath", str(exc)) from None
        field_type = reader.str("fieldType", default="string", choices=FIELD_TYPES)
        reader.reject_unknown()
        return cls(path, field_type)


@dataclass(frozen=True)
class EndpointConfig:
    """One probed URL and what its answers mean."""

    url: str
    method: str = "GET"
    headers: tuple[tuple[str, str], ...] = ()
    timeout: float = 5.0
    expected_status_code: int = 200
    json_path: JsonPathConfig | None = None
    success_threshold: int = 1
    failure_threshold: int = 3
    storage: StorageConfig = field(default_factory=StorageConfig)
    metric_name: str = DEFAULT_METRIC

    @classmethod
    def parse(cls, reader: ConfigReader) -> EndpointConfig:
        url = _parse_url(reader)
        json_reader = reader.child("jsonPathConfig")
        storage, metric_name = _parse_storage(reader)
        endpoint = cls(
            url=url,
            method=reader.str("method", default="GET", choices=METHODS),
            headers=_parse_headers(reader),
            timeout=reader.number("timeout", default=5.0, positive=True),
            expected_status_code=reader.int(
                "expectedStatusCode", default=200, minimum=100, maximum=599
            ),
            json_path=JsonPathConfig.parse(json_reader) if json_reader else None,
            success_threshold=reader.int("successThreshold", default=1, minimum=1),
            failure_threshold=reader.int("failureThreshold", default=3, minimum=1),
            storage=storage,
            metric_name=metric_name,
        )
        if reader.has("bootOrder"):
            log.warning("%s: bootOrder has no effect on an endpoint (it belongs to the plugin "
                        "entry); ignored", reader.field_path("bootOrder"))
        reader.reject_unknown(ignore=("bootOrder",))
        return endpoint


@dataclass(frozen=True)
class HttpProbeConfig:
    """``plugins[i].config`` of http_probe."""

    endpoints: tuple[EndpointConfig, ...]
    start_delay_seconds: float = 0.0
    probe_interval_seconds: float = 5.0

    def storage_configs(self) -> list[StorageConfig]:
        """Every endpoint's store, in config order (the first InKube one gets failure Events)."""
        return [endpoint.storage for endpoint in self.endpoints]

    @classmethod
    def parse(cls, reader: ConfigReader) -> HttpProbeConfig:
        endpoints = tuple(EndpointConfig.parse(r) for r in reader.children("endpoints"))
        if not endpoints:
            raise reader.error("endpoints", "needs at least one endpoint")
        config = cls(
            endpoints=endpoints,
            start_delay_seconds=reader.number("startDelaySeconds", default=0.0, minimum=0),
            probe_interval_seconds=reader.number(
                "probeIntervalSeconds", default=5.0, positive=True
            ),
        )
        reader.reject_unknown()
        return config


# -- pieces ----------------------------------------------------------------------
def _parse_url(reader: ConfigReader) -> str:
    url: str = reader.str("url")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise reader.error("url", f"is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise reader.error("url", f"must be an http:// or https:// URL with a host, got {url!r}")
    return url


def _parse_headers(reader: ConfigReader) -> tuple[tuple[str, str], ...]:
    headers: dict[str, str] = reader.str_map("headers", default={})
    for name, value in headers.items():
        if not re.fullmatch(_HEADER_NAME, name):
            raise reader.error("headers", f"{name!r} is not a valid HTTP header name")
        if "\r" in value or "\n" in value:
            raise reader.error("headers", f"value of {name!r} must not contain line breaks")
    return tuple(headers.items())


def _parse_storage(reader: ConfigReader) -> tuple[StorageConfig, str]:
    """``storageConfig`` via StorageConfig.parse, plus checks it does not make.

    ``httpMetric.metricName`` (the original kidecar's key) is read here, before
    StorageConfig.parse refuses keys it does not know.
    """
    storage_reader = reader.child("storageConfig")
    if storage_reader is None:
        return StorageConfig(), DEFAULT_METRIC
    metric_name = DEFAULT_METRIC
    metric_reader = storage_reader.child("httpMetric")
    if metric_reader is not None:
        metric_name = metric_reader.str("metricName", default=DEFAULT_METRIC, pattern=_METRIC_NAME)
        metric_reader.reject_unknown()
    storage = StorageConfig.parse(storage_reader)
    _check_storage(storage_reader, storage)
    if metric_reader is not None and storage.type != "HTTPMetric":
        raise storage_reader.error("httpMetric", "only applies to type: HTTPMetric")
    return storage, metric_name


def _check_storage(reader: ConfigReader, storage: StorageConfig) -> None:
    inkube = reader.child("inKube")
    if inkube is None:
        return
    if storage.type == "HTTPMetric":
        raise reader.error("inKube", "has no effect with type: HTTPMetric (a gauge, no markers)")
    if storage.target is not None and not storage.json_path:
        raise inkube.error("jsonPath", "is required with target (where in the target to write)")
    for name, key in (("annotationKey", storage.annotation_key), ("labelKey", storage.label_key)):
        if key and not is_valid_qualified_name(key):
            raise inkube.error(name, f"{key!r} is not a valid Kubernetes label/annotation key")
    _check_policies(inkube)


def _check_policies(inkube: ConfigReader) -> None:
    seen: dict[str, int] = {}
    for policy in inkube.children("markerPolicies", "markerPolices"):
        state = policy.str("state")
        if state in seen:
            raise policy.error("state", f"{state!r} already has a policy (entry {seen[state]})")
        seen[state] = len(seen)
        _check_keys(policy, "labels", values_are_labels=True)
        _check_keys(policy, "annotations", values_are_labels=False)


def _check_keys(policy: ConfigReader, name: str, values_are_labels: bool) -> None:
    for key, value in policy.str_map(name, default={}).items():
        path = f"{name}.{key}"
        if not is_valid_qualified_name(key):
            raise policy.error(path, "is not a valid Kubernetes label/annotation key")
        if values_are_labels and not is_valid_label_value(value):
            raise policy.error(
                path, f"{value!r} is not a valid label value (max 63 of [-A-Za-z0-9_.], "
                "starting and ending alphanumeric)"
            )
