"""Routing calls between the control channel, plugins and the store (in the HTTP child):
every call is answered exactly once (by the target, 503 when it goes away, 504 at its
deadline)."""

from __future__ import annotations

from typing import Any

import pytest

from kidecar_supervisor.child import Child
from kidecar_supervisor.config import RestartSettings
from kidecar_supervisor.protocol import STORAGE, call, ready, reply_error, reply_ok, started
from kidecar_supervisor.router import Router, call_target
from kidecar_supervisor.states import ChildKind, ChildState
from tests.support.child_fakes import FakeOps


class Asker:
    """A waiting control request."""

    def __init__(self) -> None:
        self.answers: list[dict[str, Any]] = []

    def answer(self, reply: dict[str, Any]) -> None:
        self.answers.append(reply)


class Host:
    def __init__(self) -> None:
        self.ops = FakeOps()
        self.children: dict[str, Child] = {}
        self.allowed = True
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.deaf: set[str] = set()

    def add(self, name: str, kind: ChildKind = ChildKind.PLUGIN, run: bool = True) -> Child:
        child = Child(name, kind, RestartSettings(), self.ops)
        self.children[name] = child
        if run:
            child.start()
            if child.callable:
                child.on_message(started("1"))
        return child

    def child(self, name: str) -> Child | None:
        return self.children.get(name)

    def call_target(self, name: str) -> Child | None:
        return call_target(self.children.values(), name)

    def send(self, child: Child, message: Any) -> bool:
        if child.name in self.deaf:
            return False
        self.sent.append((child.name, dict(message)))
        return True

    def restarts_allowed(self) -> bool:
        return self.allowed


@pytest.fixture
def host() -> Host:
    return Host()


def _ask(router: Router, target: str, deadline: float = 100.0) -> Asker:
    asker = Asker()
    router.from_control(asker, target, "do", {"x": 1}, deadline)
    return asker


def test_a_control_call_reaches_the_plugin_and_its_answer_comes_back(host: Host) -> None:
    host.add("hot_update")
    router = Router(host)
    asker = _ask(router, "hot_update")
    name, sent = host.sent[-1]
    assert name == "hot_update" and sent["t"] == "call" and sent["method"] == "do"
    assert sent["params"] == {"x": 1} and "target" not in sent
    router.on_reply(reply_ok(sent["id"], {"version": "v2"}))
    assert asker.answers == [{"ok": True, "result": {"version": "v2"}}]
    router.expire(10_000)  # answered once: a late deadline answers nothing more
    assert len(asker.answers) == 1 and router.in_flight == {}


def test_an_error_reply_keeps_its_status_and_extra_fields(host: Host) -> None:
    host.add("hot_update")
    router = Router(host)
    asker = _ask(router, "hot_update")
    router.on_reply(reply_error(host.sent[-1][1]["id"], 409, "busy", running="v3"))
    assert asker.answers == [{"ok": False, "status": 409, "error": "busy", "running": "v3"}]


@pytest.mark.parametrize("target", ["nope", "sleeper", "http"])
def test_a_target_that_takes_no_calls_is_404(host: Host, target: str) -> None:
    host.add("sleeper", ChildKind.BINARY)
    host.add("http", ChildKind.HTTP)
    asker = _ask(Router(host), target)
    assert asker.answers[0]["status"] == 404 and "not configured" in asker.answers[0]["error"]


def test_a_call_to_a_starting_store_waits_for_it(host: Host) -> None:
    child = host.add("http", ChildKind.HTTP, run=False)
    router = Router(host)
    asker = _ask(router, STORAGE)
    assert host.sent == [] and len(router.queued["http"]) == 1
    child.start()
    assert child.state == ChildState.STARTING  # its store is not running yet
    router.on_running(child)
    assert host.sent == []
    child.on_message(started("1"))
    router.on_running(child)
    assert host.sent[-1][0] == "http" and router.queued == {}
    router.on_reply(reply_ok(host.sent[-1][1]["id"], "written"))
    assert asker.answers == [{"ok": True, "result": "written"}]


def test_a_call_to_a_plugin_that_will_not_come_back_is_503(host: Host) -> None:
    child = host.add("p")
    child.disable(grace=1)
    child.on_exit(0, may_restart=True)
    asker = _ask(Router(host), "p")
    assert asker.answers[0]["status"] == 503 and "Stopped" in asker.answers[0]["error"]


def test_nothing_waits_while_kidecar_shuts_down(host: Host) -> None:
    host.add("p", run=False)
    host.allowed = False
    asker = _ask(Router(host), "p")
    assert asker.answers[0]["status"] == 503


def test_the_wait_queue_is_bounded(host: Host) -> None:
    host.add("p", run=False)
    router = Router(host, max_queued=2)
    askers = [_ask(router, "p") for _ in range(3)]
    assert [len(a.answers) for a in askers] == [0, 0, 1]
    assert askers[2].answers[0]["status"] == 503


def test_deadlines_answer_504_for_sent_and_waiting_calls(host: Host) -> None:
    host.add("p")
    host.add("q", run=False)
    router = Router(host)
    sent = _ask(router, "p", deadline=10)
    waiting = _ask(router, "q", deadline=20)
    router.expire(15)
    assert sent.answers[0]["status"] == 504 and waiting.answers == []
    router.expire(25)
    assert waiting.answers[0]["status"] == 504 and "did not start" in waiting.answers[0]["error"]
    assert router.in_flight == {} and router.queued == {"q": []}


def test_a_target_that_exits_fails_its_calls_at_once(host: Host) -> None:
    child = host.add("p")
    router = Router(host)
    asker = _ask(router, "p")
    router.on_pipe_closed(child)
    assert asker.answers[0]["status"] == 503 and "exited" in asker.answers[0]["error"]
    router.on_reply(reply_ok(host.sent[-1][1]["id"], "late"))
    assert len(asker.answers) == 1


def test_a_closed_pipe_fails_only_the_calls_sent_to_that_process(host: Host) -> None:
    """A gapless HTTP restart: two HTTP children serve the store for a moment; the old
    one's exit fails what it was sent, not what went to its successor."""
    old = host.add("http", ChildKind.HTTP)
    router = Router(host)
    to_old = _ask(router, STORAGE)
    successor = Child("http", ChildKind.HTTP, RestartSettings(), host.ops)
    successor.start()
    successor.on_message(started("1"))
    host.children["http"] = successor  # promoted
    to_new = _ask(router, STORAGE)
    assert old.pid != successor.pid
    router.on_pipe_closed(old)
    assert to_old.answers[0]["status"] == 503 and "'storage' exited" in to_old.answers[0]["error"]
    assert to_new.answers == [] and len(router.in_flight) == 1
    router.on_reply(reply_ok(host.sent[-1][1]["id"], "written"))
    assert to_new.answers == [{"ok": True, "result": "written"}]


def test_waiting_calls_fail_with_the_reason_the_target_settled(host: Host) -> None:
    child = host.add("p", run=False)
    router = Router(host)
    asker = _ask(router, "p")
    router.on_settled(child, "plugin 'p' is Failed")
    assert asker.answers == [{"ok": False, "status": 503, "error": "plugin 'p' is Failed"}]


def test_fail_all_queued_answers_everyone_waiting(host: Host) -> None:
    host.add("p", run=False)
    host.add("q", run=False)
    router = Router(host)
    askers = [_ask(router, "p"), _ask(router, "q")]
    router.fail_all_queued("kidecar is shutting down")
    assert [a.answers[0]["error"] for a in askers] == ["kidecar is shutting down"] * 2


def test_a_target_that_cannot_be_written_to_is_503(host: Host) -> None:
    host.add("p")
    host.deaf.add("p")
    router = Router(host)
    asker = _ask(router, "p")
    assert asker.answers[0]["status"] == 503 and router.in_flight == {}


def test_a_plugin_call_to_storage_is_answered_under_the_plugins_own_id(host: Host) -> None:
    plugin = host.add("hot_update")
    host.add("http", ChildKind.HTTP)
    router = Router(host)
    router.from_child(plugin, call(7, "store", {"op": "emit_event"}, target="storage"), now=0)
    to_storage = host.sent[-1][1]
    assert host.sent[-1][0] == "http" and to_storage["id"] != 7
    router.on_reply(reply_ok(to_storage["id"], None))
    assert host.sent[-1] == ("hot_update", {"t": "reply", "id": 7, "ok": True, "result": None,
                                            "error": None})


def test_a_reply_for_a_restarted_asker_is_dropped(host: Host) -> None:
    plugin = host.add("hot_update")
    host.add("http", ChildKind.HTTP)
    router = Router(host)
    router.from_child(plugin, call(7, "store", {}, target="storage"), now=0)
    call_id = host.sent[-1][1]["id"]
    plugin.on_exit(-9, may_restart=True)  # restarted at once: another pid, same name
    assert plugin.state == ChildState.STARTING
    router.on_reply(reply_ok(call_id, None))
    assert all(name != "hot_update" for name, _ in host.sent)


def test_notify_sends_a_call_nobody_waits_for(host: Host) -> None:
    storage = host.add("http", ChildKind.HTTP)
    router = Router(host)
    router.notify(storage, "store", {"op": "emit_event"})
    assert host.sent[-1][1]["id"] == 0 and router.in_flight == {}
    router.on_reply(reply_ok(0, None))  # matches nothing


def test_calls_to_a_recycling_plugin_wait_until_its_fresh_process_is_ready(host: Host) -> None:
    """A fresh hot_update restores its state first: a call sent then would get a 409."""
    child = host.add("hot_update")
    router = Router(host)
    child.recycle(grace=3.0, reason="update settled")
    asker = _ask(router, "hot_update")
    assert host.sent == [] and len(router.queued["hot_update"]) == 1
    child.on_exit(0, may_restart=True)  # the fresh process starts
    child.on_message(started("1"))
    router.on_running(child)
    assert host.sent == [] and len(router.queued["hot_update"]) == 1  # running, restoring
    child.on_message(ready(False))  # restored (readiness either way): the calls go
    router.on_running(child)
    assert router.queued == {} and host.sent[-1][0] == "hot_update"
    assert router.waits_on(child) and not child.recycling
    router.on_reply(reply_ok(host.sent[-1][1]["id"], "idle"))
    assert asker.answers == [{"ok": True, "result": "idle"}] and not router.waits_on(child)


def test_storage_calls_go_to_the_http_child_which_is_no_target_by_its_own_name() -> None:
    host = Host()
    http = host.add("http", ChildKind.HTTP)
    plugin = host.add("hot_update")
    children = list(host.children.values())
    assert call_target(children, STORAGE) is http
    assert call_target(children, "http") is None
    assert call_target(children, "hot_update") is plugin
    assert call_target(children, "missing") is None
    assert call_target([plugin], STORAGE) is None
