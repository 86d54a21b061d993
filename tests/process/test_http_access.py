"""Issue 15: mutating routes are closed to the network by default.

The sidecar runs inside a network namespace (the "pod", listening on
0.0.0.0 like in a real pod) and the test calls it from the other end of a
veth pair (another pod), and from inside the namespace over its loopback
(``kubectl exec ... curl localhost:5000``, the seeds' way, and the CLI).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support.netns import Netns, veth_namespace
from tests.support.sidecar_process import REPO, Sidecar, start_sidecar

pytestmark = pytest.mark.slow

TOKEN = "s3cret-token-for-the-test"
MUTATIONS = [("POST", "/hot-update"), ("POST", "/hot-update/rollback"),
             ("POST", "/plugins/test_sleeper/restart"), ("POST", "/plugins/test_sleeper/stop"),
             ("POST", "/plugins/test_sleeper/start"),
             # a route added later (or a method nobody handles) is closed too
             ("POST", "/some-future-route"), ("PUT", "/plugins/test_sleeper"),
             ("DELETE", "/plugins/test_sleeper")]
READ_ONLY = ["/healthz", "/readyz", "/metrics", "/plugins", "/plugins/test_sleeper",
             "/hot-update", "/"]


@pytest.fixture(scope="module")
def pod() -> Iterator[Netns]:
    with veth_namespace() as netns:
        yield netns


@pytest.fixture
def start(pod: Netns, tmp_path: Path) -> Iterator[Callable[..., Sidecar]]:
    started: list[Sidecar] = []

    def run(http: dict[str, Any] | None = None, env: dict[str, str] | None = None) -> Sidecar:
        (tmp_path / "www").mkdir(exist_ok=True)
        config = {"http": http or {}, "plugins": [
            {"name": "test_sleeper"},
            {"name": "hot_update", "config": {
                "loadPatchType": "signal",
                "signal": {"processName": "no-such-game-process", "signalName": "SIGHUP"},
                "fileDir": str(tmp_path / "www"), "storageConfig": {"type": "Local"}}}]}
        sidecar = start_sidecar(config, tmp_path, env=env, host="0.0.0.0", prefix=pod.prefix(),
                                reach=pod.inside_ip, wait_ready=True)
        started.append(sidecar)
        return sidecar

    yield run
    for sidecar in started:
        sidecar.stop()
        assert sidecar.alive_leftovers() == [], sidecar.log()


def _from_outside(sidecar: Sidecar, method: str, path: str, **kwargs: Any) -> requests.Response:
    assert sidecar.url.startswith("http://10.213.0.2:")  # never loopback: the other pod
    return requests.request(method, sidecar.url + path, timeout=10, **kwargs)


def _curl_inside(pod: Netns, sidecar: Sidecar, path: str, *args: str) -> tuple[int, dict]:
    """The seeds' way: curl localhost inside the pod."""
    out = pod.run("curl", "-s", "-w", "\n%{http_code}", "-X", "POST",
                  f"http://localhost:{sidecar.port}{path}", *args)
    body, _, code = out.stdout.rpartition("\n")
    return int(code), json.loads(body) if body else {}


def _cli_inside(pod: Netns, sidecar: Sidecar, *argv: str,
                env: dict[str, str] | None = None) -> int:
    out = pod.run(sys.executable, "-m", "kidecar_supervisor.cli", *argv,
                  env={"KIDECAR_PORT": str(sidecar.port), "PYTHONPATH": str(REPO), **(env or {})})
    return out.returncode


def test_default_closes_mutations_to_the_network_and_keeps_loopback(start, pod: Netns) -> None:
    sidecar = start()
    before = sidecar.wait_state("test_sleeper", "Running")
    for method, path in MUTATIONS:
        response = _from_outside(sidecar, method, path, data={"version": "v2", "url": "http://x/f"})
        assert response.status_code == 403, (method, path, response.text)
        message = response.json()["error"]
        # it says how to allow it
        assert "loopback" in message and "KIDECAR_TOKEN" in message, message
        assert "allowNetworkMutations" in message, message
    assert sidecar.plugin("test_sleeper")["pid"] == before["pid"]  # nothing was stopped
    for path in READ_ONLY:
        assert _from_outside(sidecar, "GET", path).status_code == 200, path
    # inside the pod, over loopback: the seed's curl reaches the plugin (its own 400 here)
    code, body = _curl_inside(pod, sidecar, "/hot-update", "-d", "version=not valid&url=x")
    assert code == 400 and "loopback" not in body["error"], body
    code, body = _curl_inside(pod, sidecar, "/plugins/test_sleeper/restart")
    assert code == 200, body
    after = sidecar.wait_for(lambda: (p := sidecar.plugin("test_sleeper"))["state"] == "Running"
                             and p["pid"] != before["pid"] and p, what="restart from loopback")
    # and the CLI, from inside the pod
    assert _cli_inside(pod, sidecar, "restart", "test_sleeper") == 0
    sidecar.wait_for(lambda: sidecar.plugin("test_sleeper")["pid"] not in (None, after["pid"]),
                     what="restart by the CLI")


def test_a_token_opens_mutations_to_its_bearer_from_anywhere(start, pod: Netns) -> None:
    sidecar = start(env={"KIDECAR_TOKEN": TOKEN})
    pid = sidecar.wait_state("test_sleeper", "Running")["pid"]
    missing = _from_outside(sidecar, "POST", "/plugins/test_sleeper/restart")
    assert missing.status_code == 401 and "Bearer" in missing.json()["error"]
    wrong = _from_outside(sidecar, "POST", "/plugins/test_sleeper/restart",
                          headers={"Authorization": "Bearer not-the-token"})
    assert wrong.status_code == 403 and "invalid bearer token" in wrong.json()["error"]
    assert sidecar.plugin("test_sleeper")["pid"] == pid
    right = _from_outside(sidecar, "POST", "/plugins/test_sleeper/restart",
                          headers={"Authorization": f"Bearer {TOKEN}"})
    assert right.status_code == 200, right.text
    pid = sidecar.wait_for(lambda: (p := sidecar.plugin("test_sleeper"))["pid"] not in (None, pid)
                           and p["pid"], what="restart with the token")
    # loopback without the token is still allowed by default (the seed's curl keeps working)
    code, body = _curl_inside(pod, sidecar, "/plugins/test_sleeper/restart")
    assert code == 200, body
    # /readyz is 503 while a plugin restarts (by design): probe once it runs again
    sidecar.wait_for(lambda: (p := sidecar.plugin("test_sleeper"))["state"] == "Running"
                     and p["pid"] != pid, what="restart from loopback")
    for path in ("/healthz", "/readyz", "/metrics"):
        assert _from_outside(sidecar, "GET", path).status_code == 200


def test_loopback_needs_the_token_when_told_so(start, pod: Netns) -> None:
    sidecar = start(http={"allowLoopbackWithoutToken": False}, env={"KIDECAR_TOKEN": TOKEN})
    code, body = _curl_inside(pod, sidecar, "/plugins/test_sleeper/restart")
    assert code == 401, body
    code, body = _curl_inside(pod, sidecar, "/plugins/test_sleeper/restart",
                              "-H", f"Authorization: Bearer {TOKEN}")
    assert code == 200, body
    # the CLI inside the sidecar container has the token in its environment
    assert _cli_inside(pod, sidecar, "restart", "test_sleeper", env={"KIDECAR_TOKEN": TOKEN}) == 0
    assert _cli_inside(pod, sidecar, "restart", "test_sleeper", env={"KIDECAR_TOKEN": ""}) != 0


def test_the_opt_out_reopens_mutations_with_a_warning(start, pod: Netns) -> None:
    sidecar = start(http={"allowNetworkMutations": True})
    pid = sidecar.wait_state("test_sleeper", "Running")["pid"]
    response = _from_outside(sidecar, "POST", "/plugins/test_sleeper/restart")
    assert response.status_code == 200, response.text
    sidecar.wait_for(lambda: sidecar.plugin("test_sleeper")["pid"] not in (None, pid),
                     what="restart from the network")
    warnings = [json.loads(line) for line in sidecar.log().splitlines()
                if line.startswith("{") and "allowNetworkMutations" in line]
    assert warnings and warnings[0]["level"] == "warning", sidecar.log()
