"""A real kube-apiserver + etcd on loopback, for tests and local runs.

Used by ``tools/kube-env`` (CLI) and ``tests/kube_harness.py`` (pytest fixture).

Binaries are built from the Go module proxy (no prebuilt downloads) and cached
outside the clone under ``~/.cache/kidecar/kube/<k8s-version>/bin/``:

* ``kube-apiserver``: a throw-away Go module requiring ``k8s.io/kubernetes`` at
  :data:`K8S_VERSION`; every ``k8s.io/*`` staging module that kubernetes' go.mod
  replaces with ``./staging/...`` is re-pinned to the matching ``v0.x.y``
  (the list is derived from that release's go.mod).
* ``etcd``: a tiny ``main`` calling ``go.etcd.io/etcd/server/v3/etcdmain.Main``,
  built in the same module, so it gets the etcd version kubernetes itself pins.

An environment lives in one directory DIR::

    DIR/etcd-data/  DIR/certs/  DIR/auth/  DIR/audit.log  DIR/*.log
    DIR/admin.kubeconfig  DIR/sidecar.kubeconfig  DIR/env.json
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

K8S_VERSION = os.environ.get("KIDECAR_K8S_VERSION", "v1.34.4")
NAMESPACE = "kidecar-test"
SERVICE_ACCOUNT = "kidecar"
SIDECAR_USER = f"system:serviceaccount:{NAMESPACE}:{SERVICE_ACCOUNT}"
SIDECAR_GROUPS = [
    "system:serviceaccounts",
    f"system:serviceaccounts:{NAMESPACE}",
    "system:authenticated",
]
# Admission plugins that would need controllers we do not run. There is no
# controller-manager and no scheduler: pods stay Pending, namespaces cannot be
# deleted (no namespace controller), nothing is garbage-collected.
DISABLED_ADMISSION = [
    "ServiceAccount",                # would need the token controller for pods
    "StorageObjectInUseProtection",  # adds finalizers only a controller removes
]
STOP_TIMEOUT = 15.0
READY_TIMEOUT = float(os.environ.get("KIDECAR_KUBE_READY_TIMEOUT", "120"))

REPO_ROOT = Path(__file__).resolve().parent.parent


class KubeEnvError(RuntimeError):
    """Anything that keeps the environment from being built or started."""


def _log(msg: str) -> None:
    print(f"[kube-env] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Binaries
# --------------------------------------------------------------------------


def cache_root() -> Path:
    env = os.environ.get("KIDECAR_KUBE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "kidecar" / "kube"


def bin_dir(version: str = K8S_VERSION) -> Path:
    return cache_root() / version / "bin"


def _find_go() -> str:
    env = os.environ.get("GO")
    if env:
        return env
    found = shutil.which("go")
    if found:
        return found
    for cand in ("/usr/local/go/bin/go", "/usr/lib/go/bin/go"):
        if os.access(cand, os.X_OK):
            return cand
    raise KubeEnvError(
        "no Go toolchain found (looked for $GO, `go` on PATH, /usr/local/go/bin/go); "
        "it is needed to build kube-apiserver and etcd"
    )


def _stamp_text(version: str) -> str:
    return json.dumps({"k8s_version": version, "format": 1}, sort_keys=True)


def binaries_present(version: str = K8S_VERSION) -> bool:
    b = bin_dir(version)
    stamp = b / ".stamp"
    return (
        (b / "kube-apiserver").is_file()
        and (b / "etcd").is_file()
        and stamp.is_file()
        and stamp.read_text() == _stamp_text(version)
    )


def _run_logged(cmd: list[str], cwd: Path, env: dict[str, str], log_path: Path,
                what: str) -> str:
    """Run cmd, tee its output into log_path (appending) and stderr; raise with the tail."""
    tail: deque[str] = deque(maxlen=60)
    out_lines: list[str] = []
    with open(log_path, "a") as log:
        log.write(f"\n$ (cd {cwd} && {' '.join(cmd)})\n")
        log.flush()
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, errors="replace",
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            log.flush()
            tail.append(line)
            out_lines.append(line)
            if os.environ.get("KIDECAR_KUBE_QUIET") != "1":
                sys.stderr.write("  go| " + line)
        rc = proc.wait()
    if rc != 0:
        raise KubeEnvError(
            f"{what} failed (exit {rc}); full log: {log_path}\n--- last lines ---\n"
            + "".join(tail)
        )
    return "".join(out_lines)


def _staging_replaces(kubernetes_gomod: str, version: str) -> list[tuple[str, str]]:
    """(module, version) for each `X => ./staging/src/X` in kubernetes' go.mod."""
    major_minor_patch = version.lstrip("v").split("-")[0].split(".")
    if len(major_minor_patch) != 3 or major_minor_patch[0] != "1":
        raise KubeEnvError(f"unexpected kubernetes version {version!r}")
    staging_ver = f"v0.{major_minor_patch[1]}.{major_minor_patch[2]}"
    if "-" in version:
        staging_ver += "-" + version.split("-", 1)[1]
    out = []
    for raw in kubernetes_gomod.splitlines():
        line = raw.split("//")[0].strip()
        if line.startswith("replace "):
            line = line[len("replace "):].strip()
        if "=>" not in line:
            continue
        left, right = (s.strip() for s in line.split("=>", 1))
        if right.startswith("./staging/"):
            out.append((left.split()[0], staging_ver))
    if not out:
        raise KubeEnvError("found no ./staging replace lines in k8s.io/kubernetes go.mod")
    return out


def _ldflags(version: str) -> str:
    """-s -w, plus the version stamps hack/lib/version.sh would set (so /version is right)."""
    major, minor = version.lstrip("v").split(".")[:2]
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={version}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.buildDate=1970-01-01T00:00:00Z",
        ]
    return " ".join(flags)


ETCD_MAIN = """\
// Generated by kidecar tools/kube_env.py: the etcd server binary.
package main

import (
\t"os"

\t"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
"""


def ensure_binaries(version: str = K8S_VERSION, force: bool = False) -> dict[str, Path]:
    """Build kube-apiserver and etcd into the cache unless already there.

    Raises KubeEnvError (with the tail of the go output) if the build fails.
    """
    b = bin_dir(version)
    paths = {"kube-apiserver": b / "kube-apiserver", "etcd": b / "etcd"}
    if not force and binaries_present(version):
        return paths
    import fcntl

    (cache_root() / version).mkdir(parents=True, exist_ok=True)
    with open(cache_root() / version / ".build.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            _log("another process is building the binaries; waiting for it")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not force and binaries_present(version):
            return paths
        return _build(version, paths)


def _build(version: str, paths: dict[str, Path]) -> dict[str, Path]:
    b = bin_dir(version)
    go = _find_go()
    root = cache_root() / version
    src = root / "src"
    src.mkdir(parents=True, exist_ok=True)
    b.mkdir(parents=True, exist_ok=True)
    log_path = root / "build.log"
    log_path.write_text(f"kidecar kube-env build of {version} at {time.ctime()}\n")
    env = dict(os.environ)
    env.update({"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false",
                "GOTOOLCHAIN": env.get("GOTOOLCHAIN", "local"),
                "GOWORK": "off"})
    t0 = time.monotonic()
    _log(f"building kube-apiserver + etcd for {version} in {root} (log: {log_path}); "
         "the first build takes 10-25 minutes")

    # 1. kubernetes' own go.mod, to derive the staging modules to pin.
    dl_dir = Path(tempfile.mkdtemp(prefix="kube-dl-", dir=root))
    try:
        out = _run_logged([go, "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
                          dl_dir, env, log_path, f"go mod download k8s.io/kubernetes@{version}")
    finally:
        shutil.rmtree(dl_dir, ignore_errors=True)
    start = out.find("{")
    info = json.loads(out[start:]) if start >= 0 else {}
    if info.get("Error") or not info.get("GoMod"):
        raise KubeEnvError(f"cannot download k8s.io/kubernetes@{version}: {out[-2000:]}")
    replaces = _staging_replaces(Path(info["GoMod"]).read_text(), version)

    # 2. the throw-away module.
    lines = [
        "// Generated by kidecar tools/kube_env.py; throw-away build module.",
        "module kidecar.local/kubebuild",
        "",
        "go 1.24.0",
        "",
        f"require k8s.io/kubernetes {version}",
        "",
        "replace (",
        *[f"\t{m} => {m} {v}" for m, v in replaces],
        ")",
        "",
    ]
    (src / "go.mod").write_text("\n".join(lines))
    (src / "go.sum").unlink(missing_ok=True)
    (src / "cmd" / "etcd").mkdir(parents=True, exist_ok=True)
    (src / "cmd" / "etcd" / "main.go").write_text(ETCD_MAIN)
    # `go build -mod=mod` (GOFLAGS) resolves the imports against the module graph
    # kubernetes pins (etcd server included) and writes go.sum; no upgrades.

    # 3. build (each into a temp name, then rename: a half-written binary never counts).
    targets = [("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
               ("etcd", "./cmd/etcd")]
    stamp = b / ".stamp"
    stamp.unlink(missing_ok=True)
    for name, pkg in targets:
        t1 = time.monotonic()
        tmp = b / f".{name}.tmp"
        _run_logged([go, "build", "-trimpath", "-ldflags=" + _ldflags(version), "-o", str(tmp),
                     pkg],
                    src, env, log_path, f"go build {pkg}")
        tmp.chmod(0o755)
        os.replace(tmp, paths[name])
        _log(f"built {paths[name]} in {time.monotonic() - t1:.0f}s")
    stamp.write_text(_stamp_text(version))
    _log(f"binaries ready in {time.monotonic() - t0:.0f}s: {b}")
    return paths


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def shared_dir() -> Path:
    env = os.environ.get("KIDECAR_SHARED")
    if env:
        return Path(env)
    return REPO_ROOT.parent / "shared"


def crd_files() -> list[Path]:
    crds = shared_dir() / "kubernetes" / "crds"
    files = sorted(crds.glob("*.yaml"))
    if not files:
        raise KubeEnvError(f"no CRDs found in {crds} (set KIDECAR_SHARED to the shared/ dir)")
    return files


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise KubeEnvError(f"openssl {' '.join(args)} failed:\n{proc.stderr[-2000:]}")


def _generate_pki(certs: Path, auth: Path) -> None:
    """A CA, a serving cert for 127.0.0.1/localhost, and the SA signing key pair."""
    certs.mkdir(parents=True, exist_ok=True)
    auth.mkdir(parents=True, exist_ok=True)
    if shutil.which("openssl") is None:
        raise KubeEnvError("the `openssl` command is needed to generate certificates")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "3650",
             "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=kidecar-test-ca",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
             cwd=certs)
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-sha256",
             "-keyout", "apiserver.key", "-out", "apiserver.csr",
             "-subj", "/CN=kube-apiserver", cwd=certs)
    (certs / "apiserver.ext").write_text(
        "basicConstraints=CA:FALSE\n"
        "keyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectKeyIdentifier=hash\n"
        "authorityKeyIdentifier=keyid,issuer\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,"
        "DNS:kubernetes.default,DNS:kubernetes.default.svc\n"
    )
    _openssl("x509", "-req", "-in", "apiserver.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-sha256", "-days", "3650", "-extfile", "apiserver.ext",
             "-out", "apiserver.crt", cwd=certs)
    _openssl("genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048",
             "-out", "sa.key", cwd=auth)
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=auth)


AUDIT_POLICY = """\
# Generated by kidecar tools/kube_env.py: every request at Metadata level.
# RequestReceived is omitted, so a normal request is exactly one line
# (stage ResponseComplete); long-running ones (watch) add a ResponseStarted.
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
"""


def _kubeconfig(server: str, ca_file: Path, user: str, token: str) -> str:
    import base64

    ca_data = base64.b64encode(ca_file.read_bytes()).decode()
    cfg = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kidecar-test", "cluster": {
            "server": server, "certificate-authority-data": ca_data}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": f"{user}@kidecar-test", "context": {
            "cluster": "kidecar-test", "user": user, "namespace": NAMESPACE}}],
        "current-context": f"{user}@kidecar-test",
        "preferences": {},
    }
    return json.dumps(cfg, indent=2) + "\n"  # JSON is YAML


def _pid_alive(pid: int | None) -> bool:
    """True if pid runs (reaping it first if it is our exited child)."""
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError, OSError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def _pid_matches(pid: int | None, binary: str | Path) -> bool:
    """pid is alive and runs `binary` (guards against pid reuse)."""
    if not _pid_alive(pid):
        return False
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return True  # cannot tell: assume it is ours
    return os.path.basename(exe.replace(" (deleted)", "")) == os.path.basename(str(binary))


def _terminate(pid: int | None, binary: str | Path, name: str,
               timeout: float = STOP_TIMEOUT, kill: bool = False) -> None:
    if not _pid_matches(pid, binary):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    _log(f"{name} (pid {pid}) did not stop within {timeout:.0f}s: SIGKILL")
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not _pid_alive(pid):
            return
        time.sleep(0.05)
    raise KubeEnvError(f"{name} (pid {pid}) survived SIGKILL")


def _tail(path: Path, n: int = 40) -> str:
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=n))
    except OSError:
        return "(no log)"


def _pdeathsig() -> None:
    """preexec_fn: have the kernel SIGKILL the child when the starting thread dies."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort only
        pass


def _spawn(cmd: list[str], log_path: Path, tie_to_parent: bool) -> int:
    # PDEATHSIG fires when the *thread* that forked exits: only tie to the main thread.
    tie_to_parent = tie_to_parent and threading.current_thread() is threading.main_thread()
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        log.write(f"\n==== {time.ctime()} $ {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, close_fds=True,
            preexec_fn=_pdeathsig if tie_to_parent else None,
        )
    finally:
        log.close()
    _CHILDREN[proc.pid] = proc
    return proc.pid


# Popen objects of processes this interpreter started (kept so they can be reaped).
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


# --------------------------------------------------------------------------
# The environment
# --------------------------------------------------------------------------


def env_path(dir: str | Path) -> Path:
    return Path(dir) / "env.json"


def load_env(dir: str | Path) -> dict[str, Any]:
    p = env_path(dir)
    if not p.is_file():
        raise KubeEnvError(f"{p} does not exist: no environment in {dir} (run `up` first)")
    return json.loads(p.read_text())


def _save_env(dir: str | Path, env: dict[str, Any]) -> None:
    p = env_path(dir)
    tmp = p.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(env, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, p)


def _session(env: dict[str, Any], as_admin: bool = True):  # -> requests.Session
    import requests

    ca_file = env["ca_file"]

    class _Session(requests.Session):
        # requests lets $REQUESTS_CA_BUNDLE / $CURL_CA_BUNDLE override Session.verify;
        # only a per-request verify= wins over them, so set it on every request.
        def request(self, method, url, *args, **kwargs):
            kwargs.setdefault("verify", ca_file)
            return super().request(method, url, *args, **kwargs)

    s = _Session()
    s.verify = ca_file
    token = env["admin_token"] if as_admin else env["sidecar_token"]
    s.headers["Authorization"] = f"Bearer {token}"
    return s


def session(dir: str | Path, as_admin: bool = True):  # -> requests.Session
    """A requests.Session for the env's API server (CA verified, bearer token set)."""
    return _session(load_env(dir), as_admin)


def _wait_etcd(env: dict[str, Any], timeout: float) -> None:
    import requests

    url = f"http://127.0.0.1:{env['etcd_client_port']}/health"
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not _pid_alive(env["pids"]["etcd"]):
            raise KubeEnvError(f"etcd exited during startup; log {env['logs']['etcd']}:\n"
                               + _tail(Path(env["logs"]["etcd"])))
        try:
            r = requests.get(url, timeout=2)
            if r.status_code == 200 and r.json().get("health") == "true":
                return
            last = f"{r.status_code} {r.text[:200]}"
        except requests.RequestException as e:
            last = str(e)
        time.sleep(0.1)
    raise KubeEnvError(f"etcd not healthy after {timeout:.0f}s ({last}); log:\n"
                       + _tail(Path(env["logs"]["etcd"])))


def _wait_apiserver(env: dict[str, Any], timeout: float) -> None:
    import requests

    s = _session(env)
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if not _pid_alive(env["pids"]["apiserver"]):
            raise KubeEnvError(
                f"kube-apiserver exited during startup; log {env['logs']['apiserver']}:\n"
                + _tail(Path(env["logs"]["apiserver"])))
        try:
            r = s.get(env["server"] + "/readyz", timeout=5)
            if r.status_code == 200 and r.text.strip() == "ok":
                return
            last = f"{r.status_code} {r.text[-500:]}"
        except requests.RequestException as e:
            last = str(e)
        time.sleep(0.2)
    raise KubeEnvError(f"kube-apiserver not ready after {timeout:.0f}s ({last}); log:\n"
                       + _tail(Path(env["logs"]["apiserver"])))


def _etcd_cmd(env: dict[str, Any]) -> list[str]:
    c, p = env["etcd_client_port"], env["etcd_peer_port"]
    return [
        env["binaries"]["etcd"],
        "--name=kidecar-test",
        f"--data-dir={env['etcd_data']}",
        f"--listen-client-urls=http://127.0.0.1:{c}",
        f"--advertise-client-urls=http://127.0.0.1:{c}",
        f"--listen-peer-urls=http://127.0.0.1:{p}",
        f"--initial-advertise-peer-urls=http://127.0.0.1:{p}",
        f"--initial-cluster=kidecar-test=http://127.0.0.1:{p}",
        "--initial-cluster-state=new",
        "--unsafe-no-fsync=true",  # test data: skip fsync, much faster on slow disks
        "--log-level=warn",
    ]


def _apiserver_cmd(env: dict[str, Any]) -> list[str]:
    d = Path(env["dir"])
    return [
        env["binaries"]["kube-apiserver"],
        f"--etcd-servers=http://127.0.0.1:{env['etcd_client_port']}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={env['apiserver_port']}",
        f"--cert-dir={d / 'certs'}",
        f"--tls-cert-file={d / 'certs' / 'apiserver.crt'}",
        f"--tls-private-key-file={d / 'certs' / 'apiserver.key'}",
        "--authorization-mode=RBAC",
        f"--token-auth-file={d / 'auth' / 'tokens.csv'}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={d / 'auth' / 'sa.pub'}",
        f"--service-account-signing-key-file={d / 'auth' / 'sa.key'}",
        "--api-audiences=https://kubernetes.default.svc.cluster.local",
        "--service-cluster-ip-range=10.96.0.0/16",
        f"--audit-policy-file={d / 'auth' / 'audit-policy.yaml'}",
        f"--audit-log-path={env['audit_log']}",
        "--audit-log-mode=blocking",
        "--audit-log-maxsize=0",  # never rotate: counts must see every request
        f"--disable-admission-plugins={','.join(DISABLED_ADMISSION)}",
        "--allow-privileged=true",
        # the endpoints of Service "kubernetes" may not be loopback: do not maintain them
        "--endpoint-reconciler-type=none",
        "--profiling=false",
        "--v=1",
    ]


def start_etcd(dir: str | Path, tie_to_parent: bool = False,
               timeout: float = READY_TIMEOUT) -> None:
    env = load_env(dir)
    if _pid_matches(env["pids"].get("etcd"), env["binaries"]["etcd"]):
        return
    env["pids"]["etcd"] = _spawn(_etcd_cmd(env), Path(env["logs"]["etcd"]), tie_to_parent)
    _save_env(dir, env)
    _wait_etcd(env, timeout)


def start_apiserver(dir: str | Path, tie_to_parent: bool | None = None,
                    timeout: float = READY_TIMEOUT) -> None:
    """(Re)start kube-apiserver on the same port, certs, tokens and etcd; wait for /readyz."""
    env = load_env(dir)
    if tie_to_parent is None:
        tie_to_parent = bool(env.get("tie_to_parent"))
    if not _pid_matches(env["pids"].get("etcd"), env["binaries"]["etcd"]):
        raise KubeEnvError(f"etcd of {dir} is not running; use `up`")
    if _pid_matches(env["pids"].get("apiserver"), env["binaries"]["kube-apiserver"]):
        _wait_apiserver(env, timeout)
        return
    env["pids"]["apiserver"] = _spawn(_apiserver_cmd(env), Path(env["logs"]["apiserver"]),
                                      tie_to_parent)
    _save_env(dir, env)
    _wait_apiserver(env, timeout)


def stop_apiserver(dir: str | Path, kill: bool = False, timeout: float = STOP_TIMEOUT) -> None:
    """Stop kube-apiserver only (etcd keeps running): an API outage. Idempotent."""
    env = load_env(dir)
    _terminate(env["pids"].get("apiserver"), env["binaries"]["kube-apiserver"],
               "kube-apiserver", timeout=timeout, kill=kill)
    env["pids"]["apiserver"] = None
    _save_env(dir, env)


def apiserver_running(dir: str | Path) -> bool:
    env = load_env(dir)
    return _pid_matches(env["pids"].get("apiserver"), env["binaries"]["kube-apiserver"])


def up(dir: str | Path, tie_to_parent: bool = False, version: str = K8S_VERSION,
       timeout: float = READY_TIMEOUT) -> dict[str, Any]:
    """Start etcd + kube-apiserver in DIR, install the CRDs, namespace and SA.

    Returns the env dict (also written to DIR/env.json) once everything is ready.
    `tie_to_parent` makes the kernel kill both processes if the calling thread
    dies (for test fixtures; the CLI leaves them running in the background).
    """
    t0 = time.monotonic()
    d = Path(dir).resolve()
    d.mkdir(parents=True, exist_ok=True)
    if env_path(d).is_file():
        old = json.loads(env_path(d).read_text())
        if any(_pid_alive(p) for p in old.get("pids", {}).values()):
            raise KubeEnvError(f"an environment is already running in {d}; `down` it first")
    bins = ensure_binaries(version)
    # fresh state each time
    for sub in ("etcd-data", "certs", "auth"):
        shutil.rmtree(d / sub, ignore_errors=True)
    for f in ("audit.log", "etcd.log", "kube-apiserver.log", "admin.kubeconfig",
              "sidecar.kubeconfig", "env.json"):
        (d / f).unlink(missing_ok=True)
    certs, auth = d / "certs", d / "auth"
    _generate_pki(certs, auth)
    admin_token = secrets.token_hex(24)
    sidecar_token = secrets.token_hex(24)
    (auth / "tokens.csv").write_text(
        f'{admin_token},kidecar-admin,kidecar-admin,"system:masters"\n'
        f'{sidecar_token},{SIDECAR_USER},kidecar-test-sa-uid,"{",".join(SIDECAR_GROUPS)}"\n'
    )
    (auth / "tokens.csv").chmod(0o600)
    (auth / "audit-policy.yaml").write_text(AUDIT_POLICY)
    ports: set[int] = set()
    while len(ports) < 3:
        ports.add(free_port())
    etcd_client, etcd_peer, api_port = sorted(ports)
    server = f"https://127.0.0.1:{api_port}"
    env: dict[str, Any] = {
        "dir": str(d),
        "k8s_version": version,
        "server": server,
        "apiserver_port": api_port,
        "etcd_client_port": etcd_client,
        "etcd_peer_port": etcd_peer,
        "etcd_url": f"http://127.0.0.1:{etcd_client}",
        "etcd_data": str(d / "etcd-data"),
        "pids": {"etcd": None, "apiserver": None},
        "admin_token": admin_token,
        "admin_user": "kidecar-admin",
        "sidecar_token": sidecar_token,
        "sidecar_user": SIDECAR_USER,
        "sidecar_groups": SIDECAR_GROUPS,
        "namespace": NAMESPACE,
        "service_account": SERVICE_ACCOUNT,
        "ca_file": str(certs / "ca.crt"),
        "admin_kubeconfig": str(d / "admin.kubeconfig"),
        "sidecar_kubeconfig": str(d / "sidecar.kubeconfig"),
        "audit_log": str(d / "audit.log"),
        "logs": {"etcd": str(d / "etcd.log"), "apiserver": str(d / "kube-apiserver.log")},
        "binaries": {k: str(v) for k, v in bins.items()},
        "tie_to_parent": tie_to_parent,
    }
    _save_env(d, env)
    (d / "admin.kubeconfig").write_text(
        _kubeconfig(server, certs / "ca.crt", "kidecar-admin", admin_token))
    (d / "sidecar.kubeconfig").write_text(
        _kubeconfig(server, certs / "ca.crt", SIDECAR_USER, sidecar_token))
    try:
        start_etcd(d, tie_to_parent, timeout)
        start_apiserver(d, tie_to_parent, timeout)
        t_api = time.monotonic() - t0
        install_crds(d, timeout=timeout)
        apply_yaml(d, [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            {"apiVersion": "v1", "kind": "ServiceAccount",
             "metadata": {"name": SERVICE_ACCOUNT, "namespace": NAMESPACE}},
        ])
    except BaseException:
        down(d)
        raise
    env = load_env(d)
    _log(f"ready in {time.monotonic() - t0:.1f}s (apiserver ready after {t_api:.1f}s): "
         f"{server}")
    return env


def down(dir: str | Path, timeout: float = STOP_TIMEOUT) -> None:
    """Stop kube-apiserver, then etcd (SIGTERM, SIGKILL after timeout). Idempotent."""
    p = env_path(dir)
    if not p.is_file():
        return
    env = load_env(dir)
    _terminate(env["pids"].get("apiserver"), env["binaries"]["kube-apiserver"],
               "kube-apiserver", timeout=timeout)
    _terminate(env["pids"].get("etcd"), env["binaries"]["etcd"], "etcd", timeout=timeout)
    env["pids"] = {"etcd": None, "apiserver": None}
    _save_env(dir, env)


# --------------------------------------------------------------------------
# API helpers (plain requests; discovery maps kinds to resources)
# --------------------------------------------------------------------------


def _gv_path(api_version: str) -> str:
    return f"/api/{api_version}" if "/" not in api_version else f"/apis/{api_version}"


def _discover(s: Any, server: str, api_version: str, kind: str,
              timeout: float = 30.0) -> tuple[str, bool]:
    """(plural resource name, namespaced) for apiVersion/kind, retrying while discovery lags."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        r = s.get(server + _gv_path(api_version), timeout=10)
        if r.status_code == 200:
            for res in r.json().get("resources", []):
                if res.get("kind") == kind and "/" not in res["name"]:
                    return res["name"], bool(res.get("namespaced"))
            last = f"kind {kind} not served by {api_version}"
        else:
            last = f"{r.status_code} {r.text[:300]}"
        if time.monotonic() > deadline:
            raise KubeEnvError(f"discovery of {api_version} {kind} failed: {last}")
        time.sleep(0.2)


def _load_docs(path_or_docs: Any) -> list[dict[str, Any]]:
    import yaml

    if isinstance(path_or_docs, dict):
        docs: Iterable[Any] = [path_or_docs]
    elif isinstance(path_or_docs, Path) or (
            isinstance(path_or_docs, str) and "\n" not in path_or_docs
            and Path(path_or_docs).is_file()):
        docs = list(yaml.safe_load_all(Path(path_or_docs).read_text()))
    elif isinstance(path_or_docs, str):
        docs = list(yaml.safe_load_all(path_or_docs))
    else:
        docs = list(path_or_docs)
    out: list[dict[str, Any]] = []
    for doc in docs:
        if not doc:
            continue
        if doc.get("kind", "").endswith("List") and "items" in doc:
            out.extend(i for i in doc["items"] if i)
        else:
            out.append(doc)
    return out


def object_url(server: str, s: Any, obj: dict[str, Any], namespace: str | None = None) -> str:
    plural, namespaced = _discover(s, server, obj["apiVersion"], obj["kind"])
    url = server + _gv_path(obj["apiVersion"])
    if namespaced:
        ns = obj.get("metadata", {}).get("namespace") or namespace or "default"
        url += f"/namespaces/{ns}"
    return url + f"/{plural}/{obj['metadata']['name']}"


def apply_yaml(dir: str | Path, path_or_docs: Any, as_admin: bool = True,
               namespace: str | None = None,
               field_manager: str = "kidecar-kube-env") -> list[dict[str, Any]]:
    """Server-side apply (force) each document: a file path, YAML text, a dict or a list.

    Returns the objects as the server stored them. Raises KubeEnvError on any
    non-2xx answer (the server's message included).
    """
    env = load_env(dir)
    s = _session(env, as_admin)
    out = []
    for obj in _load_docs(path_or_docs):
        url = object_url(env["server"], s, obj, namespace)
        body = dict(obj)
        if namespace and "namespace" not in body.get("metadata", {}):
            # only namespaced objects get one: the URL tells
            if "/namespaces/" in url:
                body["metadata"] = {**body["metadata"], "namespace": namespace}
        r = s.patch(url, params={"fieldManager": field_manager, "force": "true"},
                    data=json.dumps(body),
                    headers={"Content-Type": "application/apply-patch+yaml"}, timeout=30)
        if r.status_code >= 300:
            raise KubeEnvError(f"apply {obj['kind']}/{obj['metadata']['name']} "
                               f"-> {r.status_code}: {r.text[:1000]}")
        out.append(r.json())
    return out


def install_crds(dir: str | Path, files: Iterable[Path] | None = None,
                 timeout: float = 60.0) -> list[str]:
    """Apply the shared CRDs; wait until each is Established and served by discovery."""
    env = load_env(dir)
    s = _session(env)
    names: list[str] = []
    served: list[tuple[str, str, str]] = []
    for f in files if files is not None else crd_files():
        for crd in apply_yaml(dir, f):
            if crd.get("kind") != "CustomResourceDefinition":
                continue
            names.append(crd["metadata"]["name"])
            spec = crd["spec"]
            for v in spec["versions"]:
                if v.get("served"):
                    served.append((spec["group"], v["name"], spec["names"]["plural"]))
    base = env["server"] + "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
    deadline = time.monotonic() + timeout
    for name in names:
        while True:
            r = s.get(base + name, timeout=10)
            conds = ((r.json().get("status") or {}).get("conditions") or []) if r.ok else []
            if any(c["type"] == "Established" and c["status"] == "True" for c in conds):
                break
            if time.monotonic() > deadline:
                raise KubeEnvError(f"CRD {name} not Established after {timeout:.0f}s: {conds}")
            time.sleep(0.1)
    for group, version, plural in served:
        while True:
            r = s.get(f"{env['server']}/apis/{group}/{version}", timeout=10)
            if r.ok and any(x["name"] == plural for x in r.json().get("resources", [])):
                break
            if time.monotonic() > deadline:
                raise KubeEnvError(f"{plural}.{group}/{version} not in discovery")
            time.sleep(0.1)
    return names


def admin_api_client(dir: str | Path, as_admin: bool = True):  # -> kubernetes ApiClient
    """A kubernetes.client.ApiClient built from the env's kubeconfig."""
    from kubernetes import client, config

    env = load_env(dir)
    cfg = client.Configuration()
    path = env["admin_kubeconfig"] if as_admin else env["sidecar_kubeconfig"]
    config.load_kube_config(config_file=path, client_configuration=cfg)
    return client.ApiClient(cfg)


def audit_events(dir: str | Path, user: str | None = None,
                 verbs: Iterable[str] | None = None,
                 stage: str | None = "ResponseComplete") -> list[dict[str, Any]]:
    """Parsed audit log events, optionally filtered by username, verb and stage."""
    env = load_env(dir)
    vs = set(verbs) if verbs is not None else None
    out = []
    try:
        f = open(env["audit_log"])
    except FileNotFoundError:
        return []
    with f:
        for line in f:
            try:
                ev = json.loads(line)
            except ValueError:
                continue
            if user is not None and ev.get("user", {}).get("username") != user:
                continue
            if vs is not None and ev.get("verb") not in vs:
                continue
            if stage is not None and ev.get("stage") != stage:
                continue
            out.append(ev)
    return out


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------


USAGE = """\
usage: tools/kube-env build            build/ensure kube-apiserver + etcd in the cache
       tools/kube-env up DIR           start etcd + kube-apiserver in DIR, install CRDs
       tools/kube-env down DIR         stop them (idempotent)
       tools/kube-env stop-apiserver DIR | start-apiserver DIR
       tools/kube-env status DIR       print env.json and whether processes run
       tools/kube-env apply DIR FILE.yaml
"""


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    cmd, rest = args[0], args[1:]
    try:
        if cmd == "build":
            t0 = time.monotonic()
            paths = ensure_binaries()
            for k, v in paths.items():
                print(f"{k}: {v}")
            print(f"k8s {K8S_VERSION}; ensured in {time.monotonic() - t0:.1f}s")
            return 0
        if cmd in ("paths",):
            for k in ("kube-apiserver", "etcd"):
                print(f"{k}: {bin_dir() / k}")
            return 0
        if not rest:
            print(USAGE, end="", file=sys.stderr)
            return 2
        d = rest[0]
        if cmd == "up":
            t0 = time.monotonic()
            env = up(d)
            print(f"kube-env up in {time.monotonic() - t0:.1f}s ({env['k8s_version']})")
            print(f"  server:             {env['server']}")
            print(f"  admin kubeconfig:   {env['admin_kubeconfig']}")
            print(f"  sidecar kubeconfig: {env['sidecar_kubeconfig']}  ({env['sidecar_user']})")
            print(f"  env:                {env_path(d)}")
            print(f"  audit log:          {env['audit_log']}")
            print(f"  logs:               {env['logs']['apiserver']}, {env['logs']['etcd']}")
            print(f"  pids:               apiserver {env['pids']['apiserver']}, "
                  f"etcd {env['pids']['etcd']}")
            print(f"  stop with:          tools/kube-env down {d}")
            return 0
        if cmd == "down":
            down(d)
            print(f"kube-env down: {d}")
            return 0
        if cmd == "stop-apiserver":
            stop_apiserver(d)
            return 0
        if cmd == "start-apiserver":
            start_apiserver(d)
            return 0
        if cmd == "status":
            env = load_env(d)
            env["running"] = {
                "etcd": _pid_matches(env["pids"].get("etcd"), env["binaries"]["etcd"]),
                "apiserver": _pid_matches(env["pids"].get("apiserver"),
                                          env["binaries"]["kube-apiserver"]),
            }
            print(json.dumps(env, indent=2, sort_keys=True))
            return 0
        if cmd == "apply":
            for f in rest[1:]:
                for obj in apply_yaml(d, f):
                    print(f"applied {obj['kind']}/{obj['metadata']['name']}")
            return 0
    except KubeEnvError as e:
        print(f"kube-env {cmd}: ERROR: {e}", file=sys.stderr)
        return 1
    print(USAGE, end="", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
