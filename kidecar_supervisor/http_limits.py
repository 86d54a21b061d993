"""What a request body may be: size, field size, JSON depth (issue 17, finding 2).

Unbounded bodies cost the pod: a 60 MB form got the HTTP child OOM-killed
under the 128Mi limit, a ~256 KB field reached the hot_update plugin (and its
pipe), and JSON nested 100,000 deep blew the recursion limit (500). So:

* a declared ``Content-Length`` over ``http.maxBodyBytes`` is answered 413
  before a byte of the body is read; a chunked body is cut off (413) as soon
  as it passes the limit (werkzeug's ``MAX_CONTENT_LENGTH`` stream cap);
* each form or JSON field (name or value) over ``http.maxFieldBytes`` is 413;
* JSON nested deeper than ``MAX_JSON_DEPTH`` is 400, found by a scan that
  never recurses, before ``json.loads`` runs.
"""

from __future__ import annotations

import json
import re
from typing import Any

from flask import Flask, Request, Response, current_app, jsonify, request
from werkzeug.exceptions import RequestEntityTooLarge

from kidecar_supervisor.config import HttpSettings
from kidecar_supervisor.http_worker import RequestReadTimeout

#: kidecar's JSON bodies are flat objects; anything deeper is not for us
MAX_JSON_DEPTH = 32
#: multipart parts (fields and files) one request may carry
MAX_FORM_PARTS = 64
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


class BodyRefused(Exception):
    """A body the API will not take: status and message for the JSON answer."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def json_depth(data: bytes) -> int:
    """The deepest nesting of arrays/objects in ``data``, without recursion.

    Strings are skipped first so brackets inside them don't count; malformed
    input just gives some depth, and ``json.loads`` then says what is wrong.
    """
    depth = deepest = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub(b'""', data)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def set_limits(app: Flask, settings: HttpSettings) -> None:
    """Make ``settings``' body limits those of ``app`` (read per request)."""
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # urlencoded forms are checked whole against this, multipart per field;
    # the per-field limit is ours (check_fields), so this is the body limit
    app.config["MAX_FORM_MEMORY_SIZE"] = settings.max_body_bytes
    app.config["MAX_FORM_PARTS"] = MAX_FORM_PARTS
    app.config["KIDECAR_MAX_FIELD_BYTES"] = settings.max_field_bytes


def install_limits(app: Flask) -> None:
    """Refuse bodies over ``MAX_CONTENT_LENGTH`` (413) and answer limit errors in JSON."""
    app.config.setdefault("MAX_CONTENT_LENGTH", HttpSettings.max_body_bytes)

    @app.before_request
    def refuse_large_body() -> Any:
        # checked before the view runs, so a view that never reads its body answers 413 too
        length, limit = request.content_length, current_app.config["MAX_CONTENT_LENGTH"]
        if length is not None and length > limit:
            return _too_large(length, limit)
        return None

    @app.errorhandler(RequestEntityTooLarge)
    def body_too_large(exc: RequestEntityTooLarge) -> Any:
        return _too_large(request.content_length, current_app.config["MAX_CONTENT_LENGTH"])

    @app.errorhandler(BodyRefused)
    def body_refused(exc: BodyRefused) -> Any:
        return jsonify({"error": exc.message}), exc.status

    @app.errorhandler(RequestReadTimeout)
    def body_too_slow(exc: RequestReadTimeout) -> Any:
        return jsonify({"error": str(exc)}), 408


def _too_large(length: int | None, limit: int) -> tuple[Response, int]:
    size = f"{length} bytes" if length is not None else "larger"
    return jsonify({"error": f"request body too large ({size}); the limit is {limit} bytes "
                             "(http.maxBodyBytes)", "limit": limit}), 413


def read_json_object(req: Request) -> dict[str, Any]:
    """The JSON object in ``req``'s body, depth-checked before it is parsed."""
    data = req.get_data(cache=True)
    if json_depth(data) > MAX_JSON_DEPTH:
        raise BodyRefused(400, f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        body = json.loads(data)
    except (ValueError, RecursionError):
        raise BodyRefused(400, "request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise BodyRefused(400, "request body is not a JSON object")
    return body


def check_fields(fields: dict[str, Any], limit: int) -> None:
    """Refuse (413) any field whose name or text value is over ``limit`` bytes."""
    for key, value in fields.items():
        for part, text in (("name", key), ("value", value)):
            if isinstance(text, str) and len(text.encode("utf-8", "surrogatepass")) > limit:
                shown = key if part == "value" else key[:40] + "..."
                raise BodyRefused(413, f"field {shown!r}: {part} larger than {limit} bytes "
                                       "(http.maxFieldBytes)")
