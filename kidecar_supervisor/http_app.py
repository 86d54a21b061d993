"""The Flask app: /hot-update, health, plugins, metrics and a status page.

It holds no plugin state: every answer comes from the supervisor over the
control channel, so it can be restarted (or handed to a newer kidecar) at any
time without losing anything.
"""

from __future__ import annotations

import secrets
from typing import Any

from flask import Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from kidecar_supervisor import openapi, status_page
from kidecar_supervisor.config import HttpSettings
from kidecar_supervisor.control_channel import ControlClient, ControlError
from kidecar_supervisor.http_access import AccessPolicy, install_access, set_access
from kidecar_supervisor.http_limits import (
    check_fields,
    install_limits,
    read_json_object,
    set_limits,
)
from kidecar_supervisor.metrics import render_metrics
from kidecar_supervisor.protocol import PLUGIN_ACTIONS, ControlRequest, Op
from kidecar_supervisor.protocol import request as control_request

#: /healthz must answer quickly even when the supervisor is wedged
HEALTH_TIMEOUT = 1.0
STATUS_TIMEOUT = 5.0
#: a hot update waits for its download; the plugin enforces its own deadlines
HOT_UPDATE_TIMEOUT = 3600.0


def error(status: int, message: str, **fields: Any) -> tuple[Response, int]:
    return jsonify({"error": message, **fields}), status


def create_app(control: ControlClient, token: str = "",
               settings: HttpSettings | None = None) -> Flask:
    """The API; ``settings`` (or ``apply_http_settings`` later) set its limits and access."""
    app = Flask("kidecar")
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.config["KIDECAR_TOKEN"] = token
    install_access(app)  # first: a refused client learns nothing else
    install_limits(app)
    apply_http_settings(app, settings or HttpSettings())

    def ask(message: ControlRequest, timeout: float = STATUS_TIMEOUT) -> tuple[Response, int]:
        try:
            reply = control.request(message, timeout=timeout)
        except ControlError as exc:
            return error(503, f"supervisor unavailable: {exc}")
        if reply.get("ok"):
            return jsonify(reply.get("result")), 200
        extra = {k: v for k, v in reply.items() if k not in ("ok", "status", "error")}
        return error(int(reply.get("status", 500)), str(reply.get("error", "failed")), **extra)

    @app.get("/healthz")
    def healthz() -> Any:
        return ask(control_request(Op.HEALTH), timeout=HEALTH_TIMEOUT)

    @app.get("/readyz")
    def readyz() -> Any:
        return ask(control_request(Op.READY), timeout=HEALTH_TIMEOUT)

    @app.get("/plugins")
    def plugins() -> Any:
        return ask(control_request(Op.PLUGINS))

    @app.get("/plugins/<name>")
    def plugin(name: str) -> Any:
        return ask(control_request(Op.PLUGIN, name=name))

    # every non-GET route is mutating: http_access decides who may call it
    @app.post("/plugins/<name>/<action>")
    def plugin_action(name: str, action: str) -> Any:
        if action not in PLUGIN_ACTIONS:
            return error(404, f"unknown action {action!r}; use restart, stop or start")
        return ask(control_request(Op(action), name=name), timeout=30.0)

    @app.post("/hot-update")
    def hot_update() -> Any:
        params, problem = _hot_update_params()
        if problem:
            return error(400, problem)
        return ask(_hot_update_call("hot_update", params), timeout=HOT_UPDATE_TIMEOUT)

    @app.post("/hot-update/rollback")
    def hot_update_rollback() -> Any:
        params, problem = _rollback_params()
        if problem:
            return error(400, problem)
        # a rollback downloads nothing but reloads and confirms like an update
        return ask(_hot_update_call("hot_update_rollback", params), timeout=HOT_UPDATE_TIMEOUT)

    @app.get("/hot-update")
    def hot_update_status() -> Any:
        return ask(_hot_update_call("hot_update_status", {}))

    @app.get("/metrics")
    def metrics() -> Any:
        try:
            reply = control.request(control_request(Op.METRICS), timeout=STATUS_TIMEOUT)
        except ControlError as exc:
            return error(503, f"supervisor unavailable: {exc}")
        body, content_type = render_metrics(reply.get("result") or {})
        return Response(body, status=200, content_type=content_type)

    @app.get("/openapi.json")
    def openapi_document() -> Any:
        return jsonify(openapi.document())

    @app.get("/")
    def index() -> Any:
        nonce = secrets.token_urlsafe(16)
        page = status_page.render(_page_data(control), nonce)
        return Response(page, content_type="text/html; charset=utf-8", headers={
            "Cache-Control": "no-store",
            "Content-Security-Policy": status_page.content_security_policy(nonce),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer"})

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        return error(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Any:
        app.logger.exception("unexpected error")
        return error(500, f"internal error: {type(exc).__name__}")

    return app


def apply_http_settings(app: Flask, settings: HttpSettings) -> None:
    """``http:``'s limits and access rule for ``app`` (the HTTP child applies its own)."""
    set_limits(app, settings)
    set_access(app, AccessPolicy.from_settings(settings, app.config["KIDECAR_TOKEN"]))


def _hot_update_call(method: str, params: dict[str, Any]) -> ControlRequest:
    """A call routed by the supervisor to the hot_update plugin."""
    return control_request(Op.CALL, target="hot_update", method=method, params=params)


def _hot_update_params() -> tuple[dict[str, Any], str]:
    """Form (the seed's curl) or JSON body → params; a message if unreadable.

    Size and depth limits are checked here (BodyRefused: 413/400), before
    anything is sent on to the plugin.
    """
    if request.is_json:
        source: dict[str, Any] = read_json_object(request)
    else:
        source = request.form.to_dict() or request.args.to_dict()
    check_fields(source, current_app.config["KIDECAR_MAX_FIELD_BYTES"])
    # every field goes to the plugin, so a typo (``sha=``) gets its 400, not silence
    params: dict[str, Any] = dict(source)
    for key, value in params.items():
        if not isinstance(value, str):
            return {}, f"{key} must be a string"
    return params, ""


def _rollback_params() -> tuple[dict[str, Any], str]:
    """``POST /hot-update/rollback``'s body: nothing, or ``version`` of a kept version.

    Any other field is a 400: a typo (``versoin=v2``) must not roll back to
    the previous version instead of the one the operator named.
    """
    params, problem = _hot_update_params()
    if problem:
        return {}, problem
    unknown = sorted(set(params) - {"version"})
    if unknown:
        return {}, f"unknown field(s) {', '.join(unknown)}; a rollback takes only version"
    if "version" in params and not params["version"].strip():
        return {}, "version must not be empty (leave it out to roll back to the previous one)"
    return params, ""


def _page_data(control: ControlClient) -> status_page.PageData:
    """What the status page shows first; each part fails alone (the page says which)."""
    def answer(message: ControlRequest, timeout: float) -> status_page.Answer:
        try:
            reply = control.request(message, timeout=timeout)
        except ControlError as exc:
            return status_page.Answer(503, {"error": f"supervisor unavailable: {exc}"})
        if reply.get("ok"):
            return status_page.Answer(200, reply.get("result"))
        return status_page.Answer(int(reply.get("status", 500)),
                                  {"error": str(reply.get("error", "failed"))})

    return status_page.PageData(
        health=answer(control_request(Op.HEALTH), HEALTH_TIMEOUT),
        ready=answer(control_request(Op.READY), HEALTH_TIMEOUT),
        plugins=answer(control_request(Op.PLUGINS), STATUS_TIMEOUT),
        hot_update=answer(_hot_update_call("hot_update_status", {}), STATUS_TIMEOUT))
