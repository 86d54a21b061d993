"""/openapi.json is kept true: its paths and methods are exactly the Flask app's routes,
and it is a valid OpenAPI 3.1 document (schemathesis loads it)."""

from __future__ import annotations

import re

import schemathesis
from flask import Flask

from kidecar_supervisor.control_channel import ControlClient
from kidecar_supervisor.http_app import create_app
from kidecar_supervisor.openapi import document

IGNORED_METHODS = {"HEAD", "OPTIONS"}


def _app() -> Flask:
    # no supervisor behind it: only the URL map and /openapi.json are used
    return create_app(ControlClient("/nonexistent/control.sock", b"k" * 32))


def _flask_operations(app: Flask) -> set[tuple[str, str]]:
    found = set()
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - IGNORED_METHODS:
            found.add((path, method.lower()))
    return found


def _documented(doc: dict[str, object]) -> set[tuple[str, str]]:
    paths = doc["paths"]
    assert isinstance(paths, dict)
    return {(path, method) for path, item in paths.items() for method in item}


def test_the_document_lists_exactly_the_flask_routes() -> None:
    assert _documented(document()) == _flask_operations(_app())


def test_every_path_parameter_is_declared() -> None:
    for path, item in document()["paths"].items():  # type: ignore[union-attr]
        wanted = set(re.findall(r"{([^}]+)}", path))
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == wanted, f"{method.upper()} {path}"


def test_served_at_openapi_json_and_loadable_by_schemathesis() -> None:
    response = _app().test_client().get("/openapi.json")
    assert response.status_code == 200 and response.is_json
    served = response.get_json()
    assert served == document()
    schema = schemathesis.openapi.from_dict(served)
    operations = [op.ok() for op in schema.get_all_operations()]
    assert {(op.path, op.method) for op in operations} == _documented(served)
