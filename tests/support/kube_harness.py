"""pytest plugin: a real kube-apiserver + etcd for the whole test session.

Enable with ``pytest_plugins = ["tests.support.kube_harness"]`` in tests/conftest.py.
Tests that use the ``kube_env`` fixture are marked ``kube`` automatically.

    def test_x(kube_env):
        v1 = kubernetes.client.CoreV1Api(kube_env.admin_api())
        ...
        with kube_env.apiserver_outage():   # or stop_apiserver()/start_apiserver()
            ...

The binaries are built on first use (10-25 minutes; `tools/kube-env build`
does it ahead of time). If they cannot be had the fixture FAILS with the
reason; it never skips.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from tools import kube_env as _ke  # noqa: E402


class KubeEnv:
    """Handle on a running environment (see tools/kube_env.py for the layout of `dir`)."""

    def __init__(self, dir: Path, env: dict[str, Any]) -> None:
        self.dir = Path(dir)
        self.env = env
        self.server: str = env["server"]
        self.admin_kubeconfig: str = env["admin_kubeconfig"]
        self.sidecar_kubeconfig: str = env["sidecar_kubeconfig"]
        self.admin_token: str = env["admin_token"]
        self.sidecar_token: str = env["sidecar_token"]
        self.sidecar_user: str = env["sidecar_user"]
        self.namespace: str = env["namespace"]
        self.service_account: str = env["service_account"]
        self.ca_file: str = env["ca_file"]
        self.audit_log: str = env["audit_log"]
        self.apiserver_port: int = env["apiserver_port"]

    # -- outage simulation -------------------------------------------------
    def stop_apiserver(self, kill: bool = False) -> None:
        """Stop kube-apiserver (etcd keeps the data); connections are then refused."""
        _ke.stop_apiserver(self.dir, kill=kill)

    def start_apiserver(self) -> None:
        """Start it again on the same port with the same certs/tokens; waits for /readyz."""
        _ke.start_apiserver(self.dir)

    def apiserver_running(self) -> bool:
        return _ke.apiserver_running(self.dir)

    @contextlib.contextmanager
    def apiserver_outage(self, kill: bool = False) -> Iterator[None]:
        """Stop the API server for the block; it is started again even if the block fails."""
        self.stop_apiserver(kill=kill)
        try:
            yield
        finally:
            self.start_apiserver()

    # -- clients -----------------------------------------------------------
    def admin_api(self):  # -> kubernetes.client.ApiClient
        """A kubernetes ApiClient authenticated as the admin (system:masters)."""
        return _ke.admin_api_client(self.dir, as_admin=True)

    def sidecar_api(self):  # -> kubernetes.client.ApiClient
        """A kubernetes ApiClient authenticated as the sidecar's ServiceAccount user."""
        return _ke.admin_api_client(self.dir, as_admin=False)

    def session(self, as_admin: bool = True):  # -> requests.Session
        """A requests.Session with CA verification and the bearer token set."""
        return _ke._session(self.env, as_admin)

    def apply_yaml(self, path_or_docs: Any, as_admin: bool = True,
                   namespace: str | None = None) -> list[dict[str, Any]]:
        """Server-side apply a YAML file/text, a dict or a list of dicts."""
        return _ke.apply_yaml(self.dir, path_or_docs, as_admin=as_admin, namespace=namespace)

    def audit_events(self, user: str | None = None, verbs: Any = None,
                     stage: str | None = "ResponseComplete") -> list[dict[str, Any]]:
        """Parsed audit events (one per request at stage ResponseComplete)."""
        return _ke.audit_events(self.dir, user=user, verbs=verbs, stage=stage)

    def __repr__(self) -> str:
        return f"KubeEnv(server={self.server!r}, dir={str(self.dir)!r})"


@pytest.fixture(scope="session")
def kube_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeEnv]:
    d = tmp_path_factory.mktemp("kube-env")
    t0 = time.monotonic()
    error = None
    try:
        env = _ke.up(d, tie_to_parent=True)
    except Exception as e:  # noqa: BLE001 - the reason must be shown, never skipped
        error = f"kube_env: cannot start kube-apiserver + etcd: {e}"
    if error is not None:
        pytest.fail(error, pytrace=False)
    sys.stderr.write(f"\n[kube_env] up in {time.monotonic() - t0:.1f}s at {env['server']} "
                     f"(dir {d})\n")
    handle = KubeEnv(d, env)
    try:
        yield handle
    finally:
        _ke.down(d)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "kube_env" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kube)
