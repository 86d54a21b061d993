"""The control table (op → handler) and the inbox that hands requests to the main loop."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from kidecar_supervisor.child import Child
from kidecar_supervisor.config import RestartSettings
from kidecar_supervisor.control import ControlInbox, ControlTable, PendingRequest
from kidecar_supervisor.control_channel import ControlError
from kidecar_supervisor.protocol import Op, reply_ok, request, started
from kidecar_supervisor.router import Router, call_target
from kidecar_supervisor.states import ChildKind, ChildState, Mode
from tests.support.child_fakes import FakeOps


class Host:
    """The supervisor as the control table sees it, with real children on fake ops."""

    def __init__(self) -> None:
        self.ops = FakeOps()
        self.children: list[Child] = []
        self.shutting_down = False
        self.mode = Mode.SERVING
        self.started_at = self.ops.now - 5.0
        self.router = Router(self)
        self.actions: list[tuple[str, Op]] = []
        self.serving: list[int] = []
        self.handed: list[int] = []
        self.sent: list[tuple[str, dict[str, Any]]] = []

    def add(self, name: str, kind: ChildKind = ChildKind.PLUGIN, internal: bool = False,
            ready: bool = True) -> Child:
        child = Child(name, kind, RestartSettings(), self.ops, internal=internal)
        self.children.append(child)
        child.start()
        if child.callable:
            child.on_message(started("1"))
        child.ready = ready
        return child

    def child(self, name: str) -> Child | None:
        return next((c for c in self.children if c.name == name), None)

    def call_target(self, name: str) -> Child | None:
        return call_target(self.children, name)

    def clock(self) -> float:
        return self.ops.now

    def sidecarset_version(self) -> int | None:
        return 7

    def gauges(self) -> list[dict[str, Any]]:
        return [{"plugin": "p", "name": "g", "labels": {}, "value": 1.0}]

    def operator_action(self, child: Child, op: Op) -> None:
        self.actions.append((child.name, op))
        if op == Op.STOP:
            child.disable(grace=1)

    def http_serving(self, pid: int) -> None:
        self.serving.append(pid)

    def handed_over(self, peer: int) -> None:
        self.handed.append(peer)

    # RouterHost
    def send(self, child: Child, message: Any) -> bool:
        self.sent.append((child.name, dict(message)))
        return True

    def restarts_allowed(self) -> bool:
        return not self.shutting_down


@pytest.fixture
def host() -> Host:
    h = Host()
    h.add("http", ChildKind.HTTP, internal=True)
    h.add("game", ChildKind.PLUGIN)
    return h


def ask(host: Host, op: Op | str, **fields: Any) -> dict[str, Any] | None:
    message = request(op, **fields) if isinstance(op, Op) else {"op": op}
    pending = PendingRequest(message)  # type: ignore[arg-type]
    ControlTable(host).serve(pending)
    return pending.reply


def test_every_op_has_a_handler() -> None:
    assert set(ControlTable(Host()).handlers) == {op.value for op in Op}


def test_health_is_ok_while_nothing_failed(host: Host) -> None:
    reply = ask(host, Op.HEALTH)
    assert reply is not None and reply["ok"]
    assert reply["result"]["mode"] == "serving" and reply["result"]["uptime"] == 5.0
    assert reply["result"]["sidecarsetVersion"] == 7


def test_a_failed_plugin_fails_health(host: Host) -> None:
    host.child("game").state = ChildState.FAILED  # type: ignore[union-attr]
    assert ask(host, Op.HEALTH) == {"ok": False, "status": 503,
                                    "error": "plugin(s) failed: game", "failed": ["game"]}


def test_health_and_readiness_fail_while_shutting_down(host: Host) -> None:
    host.shutting_down = True
    assert ask(host, Op.HEALTH)["status"] == 503  # type: ignore[index]
    assert ask(host, Op.READY)["error"] == "shutting down"  # type: ignore[index]


def test_ready_waits_for_every_plugin_but_not_a_completed_one(host: Host) -> None:
    assert ask(host, Op.READY) == {"ok": True, "result": {"status": "ready"}}
    done = host.add("oneshot", ChildKind.BINARY)
    done.on_exit(0, may_restart=False)
    done.state = ChildState.COMPLETED
    host.child("game").ready = False  # type: ignore[union-attr]
    reply = ask(host, Op.READY)
    assert reply == {"ok": False, "status": 503, "error": "not ready: game", "waiting": ["game"]}


def test_the_idle_half_of_a_hot_upgrade_is_ready(host: Host) -> None:
    host.mode = Mode.IDLE
    host.child("game").ready = False  # type: ignore[union-attr]
    assert ask(host, Op.READY) == {"ok": True, "result": {"status": "ready", "mode": "idle"}}


def test_plugins_and_one_plugin(host: Host) -> None:
    rows = ask(host, Op.PLUGINS)["result"]  # type: ignore[index]
    assert [r["name"] for r in rows] == ["http", "game"]
    assert ask(host, Op.PLUGIN, name="game")["result"]["state"] == "Running"  # type: ignore[index]
    assert ask(host, Op.PLUGIN, name="nope") == {"ok": False, "status": 404,
                                                 "error": "unknown plugin 'nope'"}


def test_metrics_carry_snapshots_and_gauges(host: Host) -> None:
    result = ask(host, Op.METRICS)["result"]  # type: ignore[index]
    assert result["uptime"] == 5.0 and len(result["plugins"]) == 2
    assert result["gauges"][0]["name"] == "g"


@pytest.mark.parametrize("op", [Op.RESTART, Op.STOP, Op.START])
def test_operator_actions_reach_the_supervisor(host: Host, op: Op) -> None:
    reply = ask(host, op, name="game")
    assert reply is not None and reply["ok"] and host.actions == [("game", op)]


def test_internal_children_can_be_restarted_only(host: Host) -> None:
    for op in (Op.STOP, Op.START):
        reply = ask(host, op, name="http")
        assert reply is not None and reply["status"] == 409
        assert "part of kidecar" in reply["error"]
    assert ask(host, Op.RESTART, name="http")["ok"]  # type: ignore[index]
    assert host.actions == [("http", Op.RESTART)]


def test_no_operator_action_while_shutting_down(host: Host) -> None:
    host.shutting_down = True
    assert ask(host, Op.RESTART, name="game")["status"] == 503  # type: ignore[index]
    assert ask(host, Op.PLUGIN, name="game")["ok"]  # type: ignore[index] - looking is fine
    assert host.actions == []


def test_a_call_is_answered_when_the_plugin_replies(host: Host) -> None:
    pending = PendingRequest(request(Op.CALL, target="game", method="m", params={}, timeout=3))
    ControlTable(host).serve(pending)
    assert pending.reply is None
    name, sent = host.sent[-1]
    assert name == "game" and sent["method"] == "m"
    host.router.on_reply(reply_ok(sent["id"], 42))
    assert pending.reply == {"ok": True, "result": 42}
    assert host.router.in_flight == {}


def test_internal_ops(host: Host) -> None:
    assert ask(host, Op.HTTP_SERVING, pid=321) == {"ok": True, "result": None}
    assert ask(host, Op.HANDED_OVER, peer=2) == {"ok": True, "result": None}
    assert host.serving == [321] and host.handed == [2]


def test_an_unknown_op_is_400(host: Host) -> None:
    assert ask(host, "reboot") == {"ok": False, "status": 400, "error": "unknown op 'reboot'"}


def test_a_handler_that_raises_answers_500_and_the_loop_lives_on(host: Host) -> None:
    def boom(child: Child, op: Op) -> None:
        raise RuntimeError("kaputt")

    host.operator_action = boom  # type: ignore[method-assign]
    assert ask(host, Op.RESTART, name="game") == {"ok": False, "status": 500, "error": "kaputt"}


def test_the_inbox_hands_requests_to_the_loop_and_back() -> None:
    inbox = ControlInbox()
    answers: list[dict[str, Any]] = []
    asker = threading.Thread(target=lambda: answers.append(
        inbox.submit(request(Op.HEALTH, timeout=5))))
    asker.start()
    for _ in range(500):
        if inbox.pending():
            break
        threading.Event().wait(0.01)
    inbox.clear_wakeups()
    taken = list(inbox.take(10))
    assert len(taken) == 1 and taken[0].message["op"] == "health"
    taken[0].answer({"ok": True, "result": "alive"})
    asker.join(5)
    assert answers == [{"ok": True, "result": "alive"}]


def test_the_inbox_gives_up_when_the_loop_does_not_answer() -> None:
    inbox = ControlInbox()
    with pytest.raises(ControlError, match="did not answer within 0.05s"):
        inbox.submit(request(Op.HEALTH, timeout=0.05))


def test_the_loop_takes_a_bounded_number_per_wakeup() -> None:
    inbox = ControlInbox()
    for _ in range(5):
        threading.Thread(target=lambda: _quietly(inbox), daemon=True).start()
    for _ in range(500):
        if inbox._queue.qsize() == 5:
            break
        threading.Event().wait(0.01)
    first = list(inbox.take(3))
    assert len(first) == 3 and inbox.pending()
    for pending in first + list(inbox.take(3)):
        pending.answer({"ok": True})


def _quietly(inbox: ControlInbox) -> None:
    try:
        inbox.submit(request(Op.HEALTH, timeout=5))
    except ControlError:
        pass
