"""schemathesis against a live sidecar (issue 14 §2): requests generated from
/openapi.json with a fixed seed and a bounded number of examples per operation; no
5xx, and every answer (status, content type, body) matches the document.

The fuzzer must never make the sidecar connect anywhere but loopback: hot_update
runs with ``allowedUrlPrefixes`` set to a loopback server, a URL outside it is first
shown to be refused before any connection (a listener that counts its accepts), and
while the fuzzer runs every connection of the sidecar's processes is sampled and
must have a loopback peer.

``POST /plugins/{name}/{action}`` is left out of the generated requests: a fuzzer
that stops hot_update would turn every later hot update into a 503 it caused
itself. Its statuses are covered by tests/process/test_supervisor_process.py.
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from kidecar_supervisor.openapi import document
from tests.support.sidecar_process import Sidecar, start_sidecar
from tests.support.upstream_server import UpstreamServer

MAX_EXAMPLES = 50
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
EXCLUDED = {("/plugins/{name}/{action}", "post")}


class CountingListener:
    """A loopback port that counts the connections it accepts (and answers none)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.accepted = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self.sock.getsockname()[1])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.accepted += 1
            conn.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


class PeerSampler:
    """Samples the remote address of every inet connection of the sidecar's processes."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.foreign: set[str] = set()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeerSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            for pid in self.sidecar.tree_pids():
                try:
                    connections = psutil.Process(pid).net_connections(kind="inet")
                except psutil.Error:
                    continue
                for conn in connections:
                    if conn.raddr and not ipaddress.ip_address(conn.raddr.ip).is_loopback:
                        self.foreign.add(f"pid {pid} -> {conn.raddr.ip}:{conn.raddr.port}")
            self.samples += 1


@pytest.fixture(scope="module")
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


GAME_NAME = "kidecar-fuzz-game-xyz"


@pytest.fixture(scope="module")
def game() -> Iterator[subprocess.Popen[bytes]]:
    """A process the hot update can signal (it ignores SIGHUP): the one allowed update
    goes all the way."""
    script = "import signal, time; signal.signal(signal.SIGHUP, signal.SIG_IGN); time.sleep(600)"
    process = subprocess.Popen([sys.executable, "-c", script, GAME_NAME])
    yield process
    process.kill()
    process.wait(5)


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory, upstream: UpstreamServer,
            game: subprocess.Popen[bytes]) -> Iterator[Sidecar]:
    tmp_path = tmp_path_factory.mktemp("schemathesis")
    file_dir = tmp_path / "www"
    file_dir.mkdir()
    config = {"plugins": [{"name": "hot_update", "config": {
        "loadPatchType": "signal",
        "signal": {"processName": GAME_NAME, "signalName": "SIGHUP"},
        "fileDir": str(file_dir), "storageConfig": {"type": "Local"},
        "allowedUrlPrefixes": [upstream.url("/files/")]}}]}
    running = start_sidecar(config, tmp_path, wait_ready=True)
    yield running
    assert running.stop() == 0
    assert running.alive_leftovers() == []


def test_a_url_outside_the_allowed_prefixes_is_refused_before_any_connection(
        sidecar: Sidecar, upstream: UpstreamServer) -> None:
    listener = CountingListener()
    try:
        for url in (f"http://127.0.0.1:{listener.port}/files/x.cfg",
                    f"http://127.0.0.1:{upstream.port}/other/x.cfg",
                    f"http://127.0.0.1:{upstream.port}/files/../other/x.cfg",
                    "http://192.0.2.1/files/x.cfg"):  # TEST-NET-1: never routed
            answer = sidecar.post("/hot-update", data={"version": "v2", "url": url})
            assert answer.status_code == 403, (url, answer.text)
            assert "allowedUrlPrefixes" in answer.json()["error"]
        assert listener.accepted == 0
        assert upstream.count("/other/x.cfg") == 0
    finally:
        listener.close()
    # the prefix itself is reachable: the refusal above is the rule, not a dead port
    url = upstream.add_file("ok.cfg", b"fine\n")
    answer = sidecar.post("/hot-update", data={"version": "v1", "url": url})
    assert answer.status_code == 200, answer.text
    assert upstream.count("/files/ok.cfg") == 1


def test_generated_requests_get_no_5xx_and_match_the_document(sidecar: Sidecar) -> None:
    schema = schemathesis.openapi.from_url(f"{sidecar.url}/openapi.json")
    operations = [op.ok() for op in schema.get_all_operations()]
    loaded = {(op.path, op.method) for op in operations}
    # schemathesis leaves out the operation it loaded the document from
    assert loaded == {(path, method) for path, item in document()["paths"].items()
                      for method in item} - {("/openapi.json", "get")}
    fuzzed = [op for op in operations if (op.path, op.method) not in EXCLUDED]
    calls: dict[str, int] = {}
    with requests.Session() as session, PeerSampler(sidecar) as sampler:
        for operation in fuzzed:
            # only bodies can break the document (every path parameter is a string)
            modes = [GenerationMode.POSITIVE] + (
                [GenerationMode.NEGATIVE] if operation.method == "post" else [])
            for mode in modes:
                _fuzz(operation, mode, sidecar.url, session, calls)
    assert sampler.samples > 0
    assert sampler.foreign == set(), f"connections outside loopback: {sampler.foreign}"
    print("schemathesis calls per operation:", calls)
    assert all(count >= 1 for count in calls.values()), calls
    assert sidecar.get("/healthz").status_code == 200


def _fuzz(operation: Any, mode: GenerationMode, base_url: str, session: requests.Session,
          calls: dict[str, int]) -> None:
    """Up to MAX_EXAMPLES requests: valid ones (POSITIVE) or ones that break the
    document (NEGATIVE: wrong types, missing fields, extra fields), each checked."""
    label = f"{operation.method.upper()} {operation.path} {mode.value}"

    @settings(max_examples=MAX_EXAMPLES, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    @given(case=operation.as_strategy(mode))
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, timeout=30)
        calls[label] = calls.get(label, 0) + 1
        case.validate_response(response, checks=CHECKS)

    run()
