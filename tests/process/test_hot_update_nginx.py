"""The seed's example for real: nginx (Debian package) reloaded by SIGHUP serves the new file.

nginx runs as a non-daemon master with its own config in tmp. ``open_file_cache``
keeps the old index.html's file descriptor open, so the new content is only
served once the master has reloaded (new workers): the test fails if the
SIGHUP does not reach nginx.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import requests

from tests.support.hot_update_harness import PluginRun, wait_until
from tests.support.upstream_server import UpstreamServer, free_port

pytestmark = pytest.mark.nginx

SEED_PROCESS_NAME = "nginx: master process nginx"

CONF = """
daemon off;
master_process on;
user root;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log info;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    open_file_cache max=100 inactive=1h;
    open_file_cache_valid 1h;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        location / {{ }}
    }}
}}
"""


class Nginx:
    def __init__(self, workdir: Path, root: Path) -> None:
        assert shutil.which("nginx"), "nginx is not installed (apt-get install -y nginx)"
        self.port = free_port()
        self.dir = workdir
        conf = workdir / "nginx.conf"
        conf.write_text(CONF.format(dir=workdir, port=self.port, root=root))
        # argv[0] "nginx" makes the master's title 'nginx: master process nginx -c ...'
        self.proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(workdir)],
                                     executable=shutil.which("nginx"))
        self.url = f"http://127.0.0.1:{self.port}/index.html"
        wait_until(self._serving, timeout=10, what="nginx to serve")

    def _serving(self) -> bool:
        try:
            return requests.get(self.url, timeout=1).status_code == 200
        except requests.RequestException:
            return False

    def workers(self) -> set[int]:
        """Live worker pids; a retired worker the master has not reaped yet is none."""
        found = set()
        for child in psutil.Process(self.proc.pid).children():
            try:
                if "worker process" in " ".join(child.cmdline()):
                    found.add(child.pid)
            except psutil.Error:  # a zombie (or gone) between the listing and the read
                continue
        return found

    def get(self) -> bytes:
        return requests.get(self.url, timeout=5).content

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


@pytest.fixture
def upstream() -> Iterator[UpstreamServer]:
    with UpstreamServer() as server:
        yield server


def test_hot_update_reloads_real_nginx(tmp_path: Path, upstream: UpstreamServer) -> None:
    root = tmp_path / "downloads"
    root.mkdir()
    (root / "index.html").write_bytes(b"<h1>v1</h1>\n")
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    nginx = Nginx(workdir, root)
    try:
        master = " ".join(psutil.Process(nginx.proc.pid).cmdline())
        assert SEED_PROCESS_NAME in master, master
        assert nginx.get() == b"<h1>v1</h1>\n"
        old_workers = nginx.workers()
        url = upstream.add_file("index.html", b"<h1>v2 from the hot update</h1>\n")
        cfg = {"loadPatchType": "signal",
               "signal": {"processName": SEED_PROCESS_NAME, "signalName": "SIGHUP"},
               "fileDir": str(root), "storageConfig": {"type": "Local"}}
        with PluginRun(cfg, tmp_path / "state") as run:
            status, body = run.call({"version": "v2", "url": url})
            assert status == 200, body
            pids = set(body["reloadDetails"]["pids"])
            assert nginx.proc.pid in pids and not pids & old_workers  # masters, never workers
            wait_until(lambda: nginx.get() == b"<h1>v2 from the hot update</h1>\n",
                       timeout=10, what="nginx to serve v2")
            # SIGHUP makes the master start new workers and retire the old ones
            wait_until(lambda: nginx.workers() and nginx.workers().isdisjoint(old_workers),
                       timeout=10, what="nginx to replace its workers")
            assert run.results()[0].version == "v2"
        assert "reconfiguring" in (workdir / "error.log").read_text()
    finally:
        nginx.stop()


def test_nginx_keeps_old_content_without_reload(tmp_path: Path) -> None:
    """Guards the test above: without SIGHUP this nginx setup still serves the old file."""
    root = tmp_path / "downloads"
    root.mkdir()
    (root / "index.html").write_bytes(b"old\n")
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    nginx = Nginx(workdir, root)
    try:
        assert nginx.get() == b"old\n"
        temp = root / ".tmp"
        temp.write_bytes(b"new\n")
        temp.replace(root / "index.html")
        time.sleep(0.3)
        assert nginx.get() == b"old\n"
    finally:
        nginx.stop()


def confirm_nginx_config(root: Path, nginx: Nginx, timeout: float = 5.0) -> dict[str, Any]:
    """The seed's nginx, confirmed by what nginx itself serves (DESIGN §9)."""
    return {"loadPatchType": "signal",
            "signal": {"processName": SEED_PROCESS_NAME, "signalName": "SIGHUP"},
            "fileDir": str(root), "storageConfig": {"type": "Local"},
            "confirm": {"http": {"url": nginx.url.replace("index.html", "version.json"),
                                 "jsonPath": "$.version"},
                        "timeoutSeconds": timeout, "intervalSeconds": 0.1}}


@pytest.fixture
def versioned_nginx(tmp_path: Path) -> Iterator[tuple[Path, Nginx]]:
    root = tmp_path / "downloads"
    root.mkdir()
    (root / "index.html").write_bytes(b"<h1>game</h1>\n")
    (root / "version.json").write_bytes(b'{"version": "v1"}\n')
    workdir = tmp_path / "nginx"
    workdir.mkdir()
    nginx = Nginx(workdir, root)
    yield root, nginx
    nginx.stop()


def served_version(nginx: Nginx) -> Any:
    return requests.get(nginx.url.replace("index.html", "version.json"), timeout=5).json()


def test_nginx_confirms_the_version_it_serves(tmp_path: Path, upstream: UpstreamServer,
                                              versioned_nginx: tuple[Path, Nginx]) -> None:
    root, nginx = versioned_nginx
    url = upstream.add_file("version.json", b'{"version": "1.4.2-hotfix3"}\n')
    with PluginRun(confirm_nginx_config(root, nginx), tmp_path / "state") as run:
        status, body = run.call({"version": "1.4.2-hotfix3", "url": url})
        assert status == 200 and body["outcome"] == "succeeded", body
        assert "the game reports 1.4.2-hotfix3" in body["confirmed"]
    # an old worker may still answer a moment (it retires gracefully): then only the new
    wait_until(lambda: served_version(nginx) == {"version": "1.4.2-hotfix3"}, timeout=10,
               what="nginx's old worker to retire")


def test_nginx_serving_another_version_is_rolled_back(
        tmp_path: Path, upstream: UpstreamServer, versioned_nginx: tuple[Path, Nginx]) -> None:
    """The file posted as v3 says v2-bad: nginx never serves v3, so v1 goes back, byte for byte."""
    root, nginx = versioned_nginx
    before = (root / "version.json").read_bytes()
    url = upstream.add_file("version.json", b'{"version": "v2-bad"}\n')
    with PluginRun(confirm_nginx_config(root, nginx, timeout=2), tmp_path / "state") as run:
        status, body = run.call({"version": "v3", "url": url})
        assert status == 424 and body["outcome"] == "rolledBack", body
        assert body["runningVersion"] == "v1" and "did not report 'v3'" in body["reason"]
    assert (root / "version.json").read_bytes() == before
    assert sorted(p.name for p in root.iterdir()) == ["index.html", "version.json"]
    wait_until(lambda: served_version(nginx) == {"version": "v1"}, timeout=10,
               what="nginx to serve v1 again")
