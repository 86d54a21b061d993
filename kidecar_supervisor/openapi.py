"""The HTTP API as an OpenAPI 3 document, served at ``GET /openapi.json``.

Written by hand next to the routes (http_app.py) rather than generated from
them: the document says what each route answers (statuses, bodies), which the
routes do not know. Two tests keep it true: tests/unit/test_openapi.py compares
its paths and methods with the Flask app's URL map, and
tests/process/test_schemathesis.py lets schemathesis call a live sidecar with
requests generated from it and checks every answer against it.

Every error is ``{"error": "..."}`` (plus fields that say more); the statuses
listed per operation are all the ones it can answer, access (401/403) and body
limits (400/413) included.
"""

from __future__ import annotations

from typing import Any

from kidecar_supervisor import __version__

JSON = "application/json"
ERROR_REF = {"$ref": "#/components/schemas/Error"}

#: why each status can come back, shared by the operations that answer it
_REASONS = {
    200: "OK",
    400: "bad input (a field, the JSON body)",
    401: "a token is configured and the request has none (or a malformed one)",
    403: "refused: wrong token, a change from outside the pod without one, or a URL "
         "outside allowedUrlPrefixes",
    404: "no such plugin, action or kept version",
    409: "conflicts with what runs now",
    413: "a field or the body is too large",
    422: "the download is not the file asked for",
    424: "the game did not take it (rolled back, or not there to reload)",
    500: "it failed and the previous state could not be restored",
    502: "the download server or the game answered with an error",
    503: "the supervisor or the plugin is unavailable, shutting down, or not ready",
    504: "the download or the game's reload did not answer in time",
    507: "no room in the state directory",
}
_MUTATION = (400, 401, 403, 413)


def _responses(statuses: tuple[int, ...], ok_schema: dict[str, Any],
               content_type: str = JSON) -> dict[str, Any]:
    """200 with ``ok_schema`` (in ``content_type``), every other status an Error."""
    out: dict[str, Any] = {"200": {"description": _REASONS[200],
                                   "content": {content_type: {"schema": ok_schema}}}}
    for status in sorted(set(statuses) - {200}):
        out[str(status)] = {"description": _REASONS[status],
                            "content": {JSON: {"schema": ERROR_REF}}}
    return out


def _object(required: dict[str, Any] | None = None, **optional: Any) -> dict[str, Any]:
    """An object with these typed fields; more fields may come (the API grows)."""
    schema: dict[str, Any] = {"type": "object",
                              "properties": {**(required or {}), **optional}}
    if required:
        schema["required"] = sorted(required)
    return schema


_STRING = {"type": "string"}
_NUMBER = {"type": "number"}
_NAME = {"name": "name", "in": "path", "required": True,
         "description": "a plugin's name (http, which also runs the store, is kidecar's own)",
         "schema": {"type": "string"}}


def _form_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": properties,
                              "additionalProperties": False}
    if required:
        schema["required"] = required
    return {"required": bool(required), "content": {
        "application/x-www-form-urlencoded": {"schema": schema},
        JSON: {"schema": schema}}}


def _schemas() -> dict[str, Any]:
    plugin = _object({"name": _STRING, "kind": _STRING, "state": _STRING,
                      "ready": {"type": "boolean"}, "restarts": {"type": "integer"}},
                     recycles={"type": "integer"},
                     pid={"type": ["integer", "null"]}, lastError={"type": ["string", "null"]},
                     infos={"type": "object"})
    return {
        "Error": _object({"error": _STRING}),
        "Health": _object({"status": _STRING}, version=_STRING, mode=_STRING, uptime=_NUMBER),
        "Ready": _object({"status": _STRING}, mode=_STRING),
        "Plugin": plugin,
        "PluginList": {"type": "array", "items": {"$ref": "#/components/schemas/Plugin"}},
        "HotUpdateAnswer": _object(status=_STRING, version=_STRING, outcome=_STRING,
                                   recorded=_STRING, recordedParts={"type": "object"}),
        "HotUpdateStatus": _object(version={"type": ["string", "null"]}, stage=_STRING,
                                   kept={"type": "array"}, history={"type": "array"}),
    }


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _paths() -> dict[str, Any]:
    version_field = {"type": "string", "minLength": 1, "maxLength": 63,
                     "pattern": "^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$",
                     "description": "label-safe version (v2, 1.4.2-hotfix3)"}
    update_body = _form_body({"version": version_field,
                              "url": {"type": "string", "format": "uri", "maxLength": 8192},
                              "sha256": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}},
                             ["version", "url"])
    return {
        "/healthz": {"get": {"summary": "liveness: the supervisor's main loop answers",
                             "responses": _responses((503,), _ref("Health"))}},
        "/readyz": {"get": {"summary": "readiness: every plugin runs and is ready",
                            "responses": _responses((503,), _ref("Ready"))}},
        "/plugins": {"get": {"summary": "every plugin and kidecar's own children",
                             "responses": _responses((503,), _ref("PluginList"))}},
        "/plugins/{name}": {"get": {"summary": "one plugin", "parameters": [_NAME],
                                    "responses": _responses((404, 503), _ref("Plugin"))}},
        "/plugins/{name}/{action}": {"post": {
            "summary": "restart, stop or start a plugin (http: restart only)",
            "parameters": [_NAME, {"name": "action", "in": "path", "required": True,
                                   "schema": {"type": "string",
                                              "enum": ["restart", "stop", "start"]}}],
            "responses": _responses((*_MUTATION, 404, 409, 503), _ref("Plugin"))}},
        "/hot-update": {
            "get": {"summary": "the version in place, the stage, kept versions, history",
                    "responses": _responses((404, 503), _ref("HotUpdateStatus"))},
            "post": {"summary": "download a version, put it in place, reload the game",
                     "requestBody": update_body,
                     "responses": _responses((*_MUTATION, 404, 409, 422, 424, 500, 502, 503,
                                              504, 507), _ref("HotUpdateAnswer"))}},
        "/hot-update/rollback": {"post": {
            "summary": "go back to a kept version (the previous one by default)",
            "requestBody": _form_body({"version": version_field}, []),
            "responses": _responses((*_MUTATION, 404, 409, 424, 500, 502, 503, 504),
                                    _ref("HotUpdateAnswer"))}},
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": _responses((503,), _STRING,
                                                     "text/plain; version=0.0.4")}},
        "/openapi.json": {"get": {"summary": "this document",
                                  "responses": _responses((), {"type": "object"})}},
        "/": {"get": {"summary": "the status page",
                      "responses": _responses((), _STRING, "text/html")}},
    }


def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of this kidecar's HTTP API."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "kidecar", "version": __version__,
                 "description": "The sidecar's HTTP API (README.md, 'HTTP API')."},
        "paths": _paths(),
        "components": {"schemas": _schemas()},
    }
