"""The Dockerfile's build steps, run without a Docker engine by tools/docker-steps-check:
installed in a clean virtualenv, started as the image's user, /healthz and /readyz 200.

The image runs as root and kidecar keeps only CAP_KILL (KIDECAR_KEEP_CAPABILITIES):
run as root, the check reads the started processes' capability sets from /proc.

The check must be honest: a broken install step, a missing COPY, a step it cannot
reproduce, a root USER without the ENV that makes kidecar drop its capabilities, or
a kidecar that does not drop them each make it fail."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOOL = REPO / "tools" / "docker-steps-check"
DOCKERFILE = (REPO / "Dockerfile").read_text()

pytestmark = pytest.mark.slow


def run_check(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def variant(tmp_path: Path, old: str, new: str) -> Path:
    assert old in DOCKERFILE, f"the Dockerfile no longer has {old!r}: update this test"
    path = tmp_path / "Dockerfile"
    path.write_text(DOCKERFILE.replace(old, new))
    return path


KILL_ONLY = f"{1 << 5:016x}"  # CAP_KILL, as /proc/<pid>/status prints it


def test_dockerfile_installs_and_serves_as_root_with_only_cap_kill(tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    result = run_check("--keep", "--report", str(report_path))
    report = json.loads(report_path.read_text())
    try:
        out = result.stdout + result.stderr
        assert result.returncode == 0 and report["ok"], out[-4000:]
        assert "RUN " in out and "pip install --no-cache-dir ." in out
        assert "/healthz 200, /readyz 200" in out
        assert "SIGTERM: exit 0" in out and "OK in" in out
        # ownership as a fact on disk, not a printed claim: kidecar ran as USER 0 when
        # this runs as root (and could only run as this user otherwise)
        assert report["user"] == [0, 0]
        expected = 0 if os.geteuid() == 0 else os.geteuid()
        assert report["ran_as"] == expected
        assert report["ran_as_image_user"] == (os.geteuid() == 0)
        state_dir = Path(report["state_dir"])
        assert state_dir.is_relative_to(report["work"])
        files = sorted(state_dir.rglob("*"))
        assert files, "kidecar wrote nothing to KIDECAR_STATE_DIR"
        owners = {str(f.relative_to(state_dir)): f.lstat().st_uid for f in files}
        assert set(owners.values()) == {expected}, owners
        # what is left after the SIGTERM (sockets, WAL files go) is what the tool saw
        assert owners.items() <= report["state_files"].items()
        assert set(report["state_files"].values()) == {expected}
        assert state_dir.stat().st_mode & 0o777 == 0o700, "the image's chmod of the state dir"
        if os.geteuid() == 0:
            assert state_dir.stat().st_uid == 0
            # every kidecar process, as the kernel saw it: CAP_KILL alone, no new privileges
            caps = report["capabilities"]
            assert len(caps) >= 3, caps  # the supervisor, its HTTP child, the plugins...
            for pid, sets in caps.items():
                assert sets["CapEff"] == sets["CapPrm"] == sets["CapBnd"] == KILL_ONLY, (pid, sets)
                assert sets["NoNewPrivs"] == "1", (pid, sets)
            assert "capabilities: " in out and f"hold exactly {KILL_ONLY} (KILL)" in out
    finally:
        shutil.rmtree(report["work"], ignore_errors=True)


def test_a_state_dir_the_user_cannot_write_fails_the_check(tmp_path: Path) -> None:
    """Left to the old user 65532, /var/lib/kidecar is not root's to write without
    CAP_DAC_OVERRIDE: fails as root and as anyone else."""
    path = variant(tmp_path, "chmod 0700 /var/lib/kidecar", "chown 65532:65532 /var/lib/kidecar")
    report_path = tmp_path / "report.json"
    result = run_check("--dockerfile", str(path), "--context", str(REPO),
                       "--report", str(report_path))
    assert result.returncode == 1
    problem = re.compile(r"KIDECAR_STATE_DIR /var/lib/kidecar is owned by 65532:65532 with mode "
                         r"7[0-7]5: USER 0:0 cannot write it")
    assert "FAILED" in result.stdout and problem.search(result.stdout), result.stdout[-3000:]
    report = json.loads(report_path.read_text())
    assert report["ok"] is False and problem.search(report["error"])


def test_a_chown_to_another_user_fails_the_check(tmp_path: Path) -> None:
    path = variant(tmp_path, "chmod 0700 /var/lib/kidecar",
                   "chown 1000:1000 /var/lib/kidecar && chmod 0700 /var/lib/kidecar")
    result = run_check("--dockerfile", str(path), "--context", str(REPO))
    assert result.returncode == 1
    assert "is owned by 1000:1000 with mode 700: USER 0:0 cannot write it" in result.stdout, \
        result.stdout[-3000:]


@pytest.mark.parametrize("old, new, expected", [
    ("pip install --no-cache-dir .", "pip install --no-cache-dir ./kidecar-missing",
     "exit 1"),
    # root keeps every capability unless the image tells kidecar to drop them
    ("ENV KIDECAR_KEEP_CAPABILITIES=KILL\n", "",
     "USER 0 is root without ENV KIDECAR_KEEP_CAPABILITIES"),
    ("ENV KIDECAR_KEEP_CAPABILITIES=KILL\n\nWORKDIR /var/lib/kidecar\nUSER 0:0",
     "WORKDIR /var/lib/kidecar\nUSER root", "USER root is root without ENV KIDECAR_KEEP_CAPABILITIES"),
    ("KIDECAR_KEEP_CAPABILITIES=KILL", "KIDECAR_KEEP_CAPABILITIES=KILL,SYS_ADMIN",
     "keeps ['SYS_ADMIN']: a root image keeps at most ['KILL']"),
    ("KIDECAR_KEEP_CAPABILITIES=KILL", "KIDECAR_KEEP_CAPABILITIES=KILLL",
     "unknown capabilities ['KILLL']"),
    ("RUN mkdir -p", "RUN apt-get update && mkdir -p", "RUN command 'apt-get' is not reproduced"),
    ('ENTRYPOINT ["python", "-OO", "-m", "kidecar_supervisor", "run"]',
     "ENTRYPOINT python -OO -m kidecar_supervisor run", "exec (JSON array) form"),
    # the image runs kidecar under -OO (issue 16): the console script cannot say so
    ('ENTRYPOINT ["python", "-OO", "-m", "kidecar_supervisor", "run"]',
     'ENTRYPOINT ["kidecar", "run"]', "expected ['python', '-OO'"),
    ("RUN python -OO -m compileall -q -j 0 -x '/(tests?|idle_test)/' /usr/local/lib/python3.11",
     "RUN python -OO -m compileall -q", "compileall without a directory"),
    ("EXPOSE 5000", "EXPOSE 8080", "EXPOSE 5000 is missing"),
])
def test_broken_dockerfiles_fail_the_check(tmp_path: Path, old: str, new: str,
                                           expected: str) -> None:
    result = run_check("--dockerfile", str(variant(tmp_path, old, new)), "--context", str(REPO))
    assert result.returncode == 1
    assert "FAILED" in result.stdout and expected in result.stdout, result.stdout[-3000:]


def test_a_package_left_out_of_the_image_fails_at_start(tmp_path: Path) -> None:
    """pip install succeeds without workers/, but the sidecar cannot start: caught."""
    path = variant(tmp_path, "COPY workers ./workers\n", "")
    result = run_check("--dockerfile", str(path), "--context", str(REPO))
    assert result.returncode == 1
    assert "kidecar exited 1 at start" in result.stdout, result.stdout[-3000:]


def test_dockerignore_is_honoured(tmp_path: Path) -> None:
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "setup.cfg"):
        shutil.copy(REPO / name, context / name)
    for name in ("kidecar_supervisor", "workers"):
        (context / name).symlink_to(REPO / name)
    (context / ".dockerignore").write_text((REPO / ".dockerignore").read_text() + "workers\n")
    result = run_check("--dockerfile", str(REPO / "Dockerfile"), "--context", str(context))
    assert result.returncode == 1
    assert "COPY source 'workers' not found" in result.stdout, result.stdout[-3000:]


@pytest.mark.skipif(os.geteuid() != 0, reason="only a check run as root starts kidecar as root")
def test_a_kidecar_that_keeps_its_capabilities_fails_the_check(tmp_path: Path) -> None:
    """The image as it is, but a kidecar whose drop does nothing: the /proc check catches it."""
    context = tmp_path / "context"
    context.mkdir()
    for name in ("pyproject.toml", "setup.cfg", ".dockerignore"):
        shutil.copy(REPO / name, context / name)
    (context / "workers").symlink_to(REPO / "workers")
    shutil.copytree(REPO / "kidecar_supervisor", context / "kidecar_supervisor",
                    ignore=shutil.ignore_patterns("__pycache__"))
    privileges = context / "kidecar_supervisor" / "privileges.py"
    privileges.write_text(privileges.read_text() + (
        "\n\ndef drop_to(environ=None):  # broken on purpose: keeps everything\n"
        "    return None\n"))
    report_path = tmp_path / "report.json"
    result = run_check("--dockerfile", str(REPO / "Dockerfile"), "--context", str(context),
                       "--report", str(report_path))
    assert result.returncode == 1, result.stdout[-3000:]
    assert "kidecar runs as root but did not drop its capabilities" in result.stdout, \
        result.stdout[-3000:]
    report = json.loads(report_path.read_text())
    assert report["ok"] is False
    assert any(sets["CapEff"] != KILL_ONLY for sets in report["capabilities"].values())
