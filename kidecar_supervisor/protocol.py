"""Every message kidecar's processes exchange, declared once.

Two channels:

* **The pipe** between the supervisor and a forked child (a plugin, or the
  HTTP child with the store in it): a ``multiprocessing`` Connection carrying
  dicts keyed by ``"t"``. Child → supervisor: ``hb``, ``started``, ``ready``,
  ``error``, ``gauge``, ``call`` (to another child), ``reply`` and ``recycle``
  (replace me by a fresh process, I am idle). Supervisor
  → child: ``call``, ``reply``, ``stop`` and (HTTP child) ``serve``.
* **The control channel** (``control_channel.py``): the HTTP worker and the
  CLI ask the supervisor's main loop, dicts keyed by ``"op"`` (``Op``); every
  answer is a ``ControlReply``: ``{"ok": True, "result": ...}`` or ``{"ok":
  False, "status": <HTTP status>, "error": "...", ...extra fields}``.

The wire stays plain dicts (TypedDicts, not classes), so a message pickles as
a dict and a reader that gets an unknown key or type just ignores it. Build
messages with the functions below rather than by hand.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal, NotRequired, TypedDict

# -- the pipe ------------------------------------------------------------------


class Heartbeat(TypedDict):
    t: Literal["hb"]
    status: dict[str, Any]
    version: str


class Started(TypedDict):
    """``init()`` returned: the plugin runs."""

    t: Literal["started"]
    version: str


class Ready(TypedDict):
    t: Literal["ready"]
    ready: bool


class ErrorReport(TypedDict):
    """Why this run failed (an init error), kept over the bare exit code."""

    t: Literal["error"]
    error: str


class Gauge(TypedDict):
    t: Literal["gauge"]
    name: str
    value: float
    labels: dict[str, str]


class Call(TypedDict):
    """A call: child → supervisor names ``target``; supervisor → child does not."""

    t: Literal["call"]
    id: int
    method: str
    params: dict[str, Any]
    target: NotRequired[str]


class CallError(TypedDict, total=False):
    """``PluginCallError.to_dict()``: status, message, plus extra JSON fields."""

    status: int
    error: str


class Reply(TypedDict):
    t: Literal["reply"]
    id: int
    ok: bool
    result: NotRequired[Any]
    error: NotRequired[dict[str, Any] | None]


class Stop(TypedDict):
    """Stop soon; in-flight calls get at most ``grace`` seconds to answer."""

    t: Literal["stop"]
    grace: NotRequired[float]


class Serve(TypedDict):
    """HTTP child: accept connections now (a hot-upgrade takeover holds it back until
    the plugins run)."""

    t: Literal["serve"]


class Recycle(TypedDict):
    """Plugin: replace this process by a fresh fork of the same plugin, now that it is idle.

    A one-off heavy task (hot_update's download, install and reload) writes to
    pages the process shares with its parent and keeps them for its whole life;
    a fresh fork gives them back (issue 16, docs/footprint.md)."""

    t: Literal["recycle"]
    reason: str


PipeMessage = (Heartbeat | Started | Ready | ErrorReport | Gauge | Call | Reply | Stop | Serve
               | Recycle)


def heartbeat(status: dict[str, Any], version: str) -> Heartbeat:
    return {"t": "hb", "status": status, "version": version}


def started(version: str) -> Started:
    return {"t": "started", "version": version}


def ready(is_ready: bool) -> Ready:
    return {"t": "ready", "ready": bool(is_ready)}


def error_report(error: str) -> ErrorReport:
    return {"t": "error", "error": error}


def gauge(name: str, value: float, labels: dict[str, str]) -> Gauge:
    return {"t": "gauge", "name": name, "value": float(value), "labels": labels}


def recycle(reason: str) -> Recycle:
    return {"t": "recycle", "reason": reason}


def call(call_id: int, method: str, params: dict[str, Any], target: str | None = None) -> Call:
    message: Call = {"t": "call", "id": call_id, "method": method, "params": params}
    if target is not None:
        message["target"] = target
    return message


def reply_ok(call_id: int, result: Any) -> Reply:
    return {"t": "reply", "id": call_id, "ok": True, "result": result}


def reply_error(call_id: int, status: int, error: str, **fields: Any) -> Reply:
    return {"t": "reply", "id": call_id, "ok": False,
            "error": {"status": status, "error": error, **fields}}


def reply_as(call_id: int, reply: Reply) -> Reply:
    """``reply`` passed on under the asker's own call id."""
    return {"t": "reply", "id": call_id, "ok": bool(reply.get("ok")),
            "result": reply.get("result"), "error": reply.get("error")}


def serve() -> Serve:
    return {"t": "serve"}


def stop(grace: float | None = None) -> Stop:
    message: Stop = {"t": "stop"}
    if grace is not None:
        message["grace"] = grace
    return message


# -- calls to the store ----------------------------------------------------------------

#: the call target that owns every ResultStore (it runs in the HTTP child), and its method
STORAGE = "storage"
STORE_METHOD = "store"
#: the ResultStore methods a ``store`` call may name
STORE_OPS = ("record_result", "latest_for_pod", "latest_for_workload", "apply_markers",
             "emit_event", "watch_annotation")


class StoreParams(TypedDict):
    """``params`` of a ``store`` call: which store (its config), which method, its args."""

    cfg: Any  # a storage.base.StorageConfig (hashable: one store per config)
    op: str
    args: tuple[Any, ...]


def store_params(cfg: Any, op: str, *args: Any) -> StoreParams:
    return {"cfg": cfg, "op": op, "args": args}


# -- the control channel ---------------------------------------------------------


class Op(StrEnum):
    """What a control request asks (``{"op": Op.X, ...}``)."""

    HEALTH = "health"              # liveness: the main loop answers, no plugin Failed
    READY = "ready"                # readiness: every plugin started and ready
    PLUGINS = "plugins"            # every child's snapshot
    PLUGIN = "plugin"              # one child's snapshot: {"name"}
    METRICS = "metrics"            # numbers for /metrics
    CALL = "call"                  # route a call to a plugin: {"target", "method", "params"}
    RESTART = "restart"            # operator actions: {"name"}
    STOP = "stop"
    START = "start"
    HTTP_SERVING = "http_serving"  # from an HTTP worker: it accepts now ({"pid"})
    HANDED_OVER = "handed_over"    # internal: a newer kidecar serves our socket ({"peer"})


#: ``POST /plugins/<name>/<action>``: the actions an operator may ask
PLUGIN_ACTIONS = (Op.RESTART, Op.STOP, Op.START)
#: the timeout field every control request carries (seconds the asker waits)
DEFAULT_TIMEOUT = 5.0


class ControlRequest(TypedDict, total=False):
    op: str
    timeout: float
    name: str
    target: str
    method: str
    params: dict[str, Any]
    pid: int
    peer: int


class ControlReply(TypedDict, total=False):
    ok: bool
    result: Any
    status: int
    error: str


def request(op: Op, **fields: Any) -> ControlRequest:
    """``request(Op.CALL, target="hot_update", method="hot_update", params={...})``."""
    message: ControlRequest = {"op": op.value}
    message.update(fields)  # type: ignore[typeddict-item]
    return message


def ok(result: Any = None) -> ControlReply:
    return {"ok": True, "result": result}


def fail(status: int, error: str, **fields: Any) -> dict[str, Any]:
    """A refused request: its HTTP status, a message, and extra JSON fields."""
    return {"ok": False, "status": status, "error": error, **fields}


def reply_from_call(reply: Reply | dict[str, Any]) -> dict[str, Any]:
    """A child's ``reply`` as the control channel's answer (error fields flattened)."""
    if reply.get("ok"):
        return dict(ok(reply.get("result")))
    error = dict(reply.get("error") or {})
    return fail(int(error.pop("status", 500)), str(error.pop("error", "failed")), **error)
