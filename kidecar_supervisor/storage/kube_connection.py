"""How to reach the API server: its URL, a TLS connection pool and the credentials.

In a pod (the production case) this needs nothing but urllib3: the
ServiceAccount's projected token and CA under
``/var/run/secrets/kubernetes.io/serviceaccount`` and the
``KUBERNETES_SERVICE_HOST``/``_PORT`` env. Not importing the kubernetes
package there keeps ~20 MiB out of the storage process (the sidecar's whole
budget is 128 MiB). The token is re-read every minute and after a 401, so a
rotated projected token is picked up like client-go does.

Outside a cluster, a kubeconfig (``$KUBECONFIG``, then ``~/.kube/config``) is
loaded with the kubernetes package, which knows every way a kubeconfig can
carry credentials (certs, tokens, exec plugins).
"""

from __future__ import annotations

import os
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import urllib3
from urllib3.util.ssl_ import create_urllib3_context

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
TOKEN_REFRESH_SECONDS = 60.0
POOL_SIZE = 16


class KubeConfigError(Exception):
    """No usable way to reach the API server."""


@dataclass
class Connection:
    """Base URL, pool and credentials; ``auth()`` gives the headers of one request."""

    host: str
    pool: Any  # urllib3.PoolManager (or the kubernetes package's)
    auth: Callable[[], dict[str, str]] = field(default=lambda: {})
    #: called after a 401: True if the credentials changed (worth one more try)
    refresh: Callable[[], bool] = field(default=lambda: False)
    source: str = ""

    @classmethod
    def plain(cls, host: str) -> Connection:
        """No TLS, no credentials (a local test server)."""
        return cls(host.rstrip("/"), urllib3.PoolManager(maxsize=POOL_SIZE, retries=False),
                   source=host)


class TokenFile:
    """A bearer token read from a file, re-read periodically and on demand."""

    def __init__(self, path: str, max_age: float = TOKEN_REFRESH_SECONDS) -> None:
        self.path = path
        self.max_age = max_age
        self._lock = threading.Lock()
        self._token = ""
        self._read_at = float("-inf")

    def _read(self) -> str:
        try:
            with open(self.path, encoding="utf-8") as fh:
                return fh.read().strip()
        except OSError as exc:
            raise KubeConfigError(f"cannot read the ServiceAccount token {self.path}: "
                                  f"{exc}") from exc

    def headers(self) -> dict[str, str]:
        with self._lock:
            if time.monotonic() - self._read_at > self.max_age:
                self._token = self._read()
                self._read_at = time.monotonic()
            return {"Authorization": f"Bearer {self._token}"} if self._token else {}

    def reread(self) -> bool:
        """Read the file now; True if the token changed."""
        with self._lock:
            token = self._read()
            changed = token != self._token
            self._token, self._read_at = token, time.monotonic()
            return changed


def service_account_tls(ca_file: str) -> ssl.SSLContext:
    """One TLS context for every connection to the API server, the CA loaded once.

    Given only ``ca_certs``, urllib3 builds a new context and parses the CA file
    again for each new connection of the pool (up to POOL_SIZE of them), each
    holding its own copy of the certificate store in the storage process.
    """
    context = create_urllib3_context(cert_reqs=ssl.CERT_REQUIRED)
    context.check_hostname = True
    context.load_verify_locations(cafile=ca_file)
    return context


def in_cluster(sa_dir: str = SERVICE_ACCOUNT_DIR,
               environ: dict[str, str] | None = None) -> Connection:
    """The connection of a pod's ServiceAccount (no kubernetes package needed)."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST", ""), env.get("KUBERNETES_SERVICE_PORT", "")
    if not host or not port:
        raise KubeConfigError("not in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set")
    ca = os.path.join(sa_dir, "ca.crt")
    if not os.path.isfile(ca):
        raise KubeConfigError(f"in-cluster CA certificate {ca} is missing")
    token = TokenFile(os.path.join(sa_dir, "token"))
    token.headers()  # fail now, with the path, if it is unreadable
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # IPv6
    pool = urllib3.PoolManager(maxsize=POOL_SIZE, retries=False,
                               ssl_context=service_account_tls(ca))
    return Connection(f"https://{host}:{port}", pool, token.headers, token.reread,
                      source=f"in-cluster ServiceAccount ({sa_dir})")


def from_kubeconfig(path: str) -> Connection:
    """The connection of a kubeconfig file's current context (kubernetes package)."""
    from kubernetes import config as kconfig
    from kubernetes.client import Configuration, rest

    configuration = Configuration()
    try:
        kconfig.load_kube_config(config_file=path, client_configuration=configuration)
    except (kconfig.ConfigException, OSError, TypeError, ValueError) as exc:
        raise KubeConfigError(f"kubeconfig {path!r} is unusable: {exc}") from exc
    configuration.retries = False  # KubeClient retries, with backoff and a deadline
    configuration.connection_pool_maxsize = POOL_SIZE
    pool = rest.RESTClientObject(configuration).pool_manager

    def auth() -> dict[str, str]:
        settings: Any = configuration.auth_settings().get("BearerToken") or {}
        value = settings.get("value")
        return {str(settings.get("key") or "authorization"): str(value)} if value else {}

    return Connection(str(configuration.host).rstrip("/"), pool, auth, source=path)


def from_environment(kubeconfig: str | None = None,
                     sa_dir: str = SERVICE_ACCOUNT_DIR) -> Connection:
    """In-cluster when running in a pod (and no kubeconfig is given), else a kubeconfig.

    ``$KUBECONFIG`` is read now (the kubernetes package reads it once at
    import) and may list several files, merged as kubectl does.
    """
    problems = []
    if kubeconfig is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
        try:
            return in_cluster(sa_dir)
        except KubeConfigError as exc:
            problems.append(str(exc))
    path = kubeconfig or os.environ.get("KUBECONFIG") or os.path.expanduser("~/.kube/config")
    try:
        return from_kubeconfig(path)
    except KubeConfigError as exc:
        problems.append(str(exc))
    raise KubeConfigError("no Kubernetes config: not in a cluster and "
                          + "; ".join(reversed(problems)))
