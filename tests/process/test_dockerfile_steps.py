"""The Dockerfile's build steps, run without a Docker engine by tools/docker-steps-check:
installed in a clean virtualenv, started as the image's user, /healthz and /readyz 200.

The check must be honest: a broken install step, a missing COPY, a step it cannot
reproduce or a root USER each make it fail."""

from __future__ import annotations

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


def test_dockerfile_installs_and_serves_as_its_non_root_user() -> None:
    result = run_check()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-4000:]
    assert "RUN " in out and "pip install --no-cache-dir ." in out
    assert "/healthz 200, /readyz 200" in out
    assert "written by uid 65532" in out  # USER 65532 can write KIDECAR_STATE_DIR
    assert "SIGTERM: exit 0" in out and "OK in" in out


@pytest.mark.parametrize("old, new, expected", [
    ("pip install --no-cache-dir .", "pip install --no-cache-dir ./kidecar-missing",
     "exit 1"),
    ("USER 65532:65532", "USER root", "USER root is root"),
    ("RUN groupadd", "RUN apt-get update && groupadd", "RUN command 'apt-get' is not reproduced"),
    ('ENTRYPOINT ["kidecar", "run"]', "ENTRYPOINT kidecar run", "exec (JSON array) form"),
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
