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
# Admission plugins that would need controllers we do not run (no
# controller-manager, no scheduler): ServiceAccount admission would demand a
# token controller before pods can be created.
DISABLED_ADMISSION = [
    "ServiceAccount",
    "DefaultStorageClass",
    "DefaultTolerationSeconds",
    "StorageObjectInUseProtection",
    "PersistentVolumeClaimResize",
    "Priority",
    "RuntimeClass",
    "TaintNodesByCondition",
    "CertificateApproval",
    "CertificateSigning",
    "CertificateSubjectRestriction",
    "ClusterTrustBundleAttest",
    "DefaultIngressClass",
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
        _run_logged([go, "build", "-trimpath", "-ldflags=-s -w", "-o", str(tmp), pkg],
                    src, env, log_path, f"go build {pkg}")
        tmp.chmod(0o755)
        os.replace(tmp, paths[name])
        _log(f"built {paths[name]} in {time.monotonic() - t1:.0f}s")
    stamp.write_text(_stamp_text(version))
    _log(f"binaries ready in {time.monotonic() - t0:.0f}s: {b}")
    return paths
