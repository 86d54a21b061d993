"""Supervisor cost against supervisord and circus: crash recovery, idle CPU, memory, start-up.

Everything runs as real processes on this machine:

- kidecar: ``kidecar run`` found next to the interpreter running the bench, else on
  PATH, else ``python -m kidecar_supervisor.cli`` (supervisor + one gunicorn worker (HTTP,
  with the store on a thread) + the plugins);
- peers: ``supervisord`` and ``circusd`` from PyPI, installed on demand into
  their own venv (``~/.cache/kidecar/bench-venv``, or ``$KIDECAR_BENCH_VENV``),
  never into the project's. They run with their default settings; the ones
  that decide the result are named in each row's notes.

Rows:

- crash → running again: ``kill -9`` of the supervised ``sleep`` program, then
  the time until the supervisor has a new child pid (its
  ``/proc/PID/task/*/children`` polled every 1 ms: the same probe for all three;
  the pid counts from fork, before exec). One polling loop serves all three, so
  no measurement waits on another; each child has run 1.2 s (past
  supervisord's ``startsecs=1``: every kill is a crash of a RUNNING program)
  plus a random 0–5 s before it is killed, so kills sample every phase of a
  periodic check instead of locking onto one.
- idle CPU: CPU time (``/proc/PID/task/*/schedstat``, ns) of each supervisor
  process and of its whole tree over a window with nothing to do.
- idle footprint: PSS and USS (``psutil.memory_full_info``) summed over the
  whole process tree, programs included.
- start-up: ``kidecar run`` → first ``GET /healthz`` 200 (and ``/readyz``), and
  for every supervisor the time until both programs have a pid.

``rows(quick)``: full = 20 kills, 10 s idle window, 5 starts; quick = 10 kills,
3 s, 3 starts. Run alone: ``bench/run --only supervisor [--quick]``.
"""

from __future__ import annotations

import http.client
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import yaml

REPO = Path(__file__).resolve().parent.parent
PEER_VENV = Path(os.environ.get("KIDECAR_BENCH_VENV")
                 or Path.home() / ".cache" / "kidecar" / "bench-venv")
PEER_PACKAGES = ("supervisor", "circus")
MIB = 1024 * 1024
#: a program must have run this long before it is killed (> supervisord's startsecs=1)
SETTLE = 1.2
POLL = 0.001
RESTART_TIMEOUT = 20.0
#: plus a random 0..JITTER s, so kills sample every phase of circus's 5 s check timer
JITTER = 5.0
SLEEP = shutil.which("sleep") or "/bin/sleep"
#: two programs per supervisor, told apart by their argument
PROGRAMS = {"sleep-a": "3601", "sleep-b": "3602"}
_HAVE_PROC_CHILDREN = Path(f"/proc/{os.getpid()}/task/{os.getpid()}/children").exists()


# -- process-tree probes ----------------------------------------------------------------------
def children_of(pid: int) -> set[int]:
    """Direct children of ``pid`` now (zombies included until reaped)."""
    if not _HAVE_PROC_CHILDREN:
        try:
            return {p.pid for p in psutil.Process(pid).children()}
        except psutil.Error:
            return set()
    found: set[int] = set()
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return found
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/children") as handle:
                found.update(int(p) for p in handle.read().split())
        except OSError:
            pass
    return found


def tree_of(pid: int) -> list[int]:
    """``pid`` and all its descendants, parents before children."""
    out, todo = [], [pid]
    while todo:
        current = todo.pop(0)
        out.append(current)
        todo.extend(sorted(children_of(current)))
    return out


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [part.decode(errors="replace") for part in handle.read().split(b"\0") if part]
    except OSError:
        return []


def program_pid(root: int, program: str) -> int | None:
    """The pid of the ``sleep`` child running ``program`` (after exec), if any."""
    arg = PROGRAMS[program]
    for pid in children_of(root):
        argv = cmdline(pid)
        if len(argv) == 2 and argv[0].endswith("sleep") and argv[1] == arg:
            return pid
    return None


def cpu_ns(pids: Iterable[int]) -> int:
    """CPU time used so far by every thread of ``pids`` (schedstat: ns resolution)."""
    total = 0
    for pid in pids:
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat") as handle:
                    total += int(handle.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass
    return total


@dataclass
class Footprint:
    pss: float = 0.0  # MiB
    uss: float = 0.0
    rss: float = 0.0
    parts: list[tuple[str, float, float]] = field(default_factory=list)  # (role, PSS, USS)

    def text(self) -> str:
        return f"PSS {self.pss:.1f} MiB, USS {self.uss:.1f} MiB ({len(self.parts)} processes)"

    def breakdown(self) -> str:
        return ", ".join(f"{role} {pss:.1f}/{uss:.1f}" for role, pss, uss in self.parts)


def footprint(root: int, roles: dict[int, str] | None = None) -> Footprint:
    """PSS/USS summed over the tree of ``root``; needs to read /proc/PID/smaps of each."""
    result = Footprint()
    for pid in tree_of(root):
        try:
            info = psutil.Process(pid).memory_full_info()
        except psutil.Error:
            continue
        result.pss += info.pss / MIB
        result.uss += info.uss / MIB
        result.rss += info.rss / MIB
        role = (roles or {}).get(pid) or _comm(pid)
        result.parts.append((role, info.pss / MIB, info.uss / MIB))
    return result


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return str(pid)


# -- peers' venv ----------------------------------------------------------------------------
def peer_bin(name: str) -> Path:
    return PEER_VENV / "bin" / name


def ensure_peer_venv() -> dict[str, str]:
    """supervisord and circusd in their own venv (created once); their versions."""
    if not (peer_bin("supervisord").exists() and peer_bin("circusd").exists()):
        if not peer_bin("python").exists():
            PEER_VENV.parent.mkdir(parents=True, exist_ok=True)
            base = shutil.which("python3") or sys.executable
            subprocess.run([base, "-m", "venv", str(PEER_VENV)], check=True)
        subprocess.run([str(peer_bin("python")), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", *PEER_PACKAGES], check=True)
    out = subprocess.run(
        [str(peer_bin("python")), "-c",
         "import importlib.metadata as m; print(m.version('supervisor'), m.version('circus'))"],
        check=True, capture_output=True, text=True).stdout.split()
    return {"supervisor": out[0], "circus": out[1]}


# -- supervisors under test ------------------------------------------------------------------
@dataclass
class Managed:
    """One supervisor process (kidecar, supervisord or circusd) and its workdir."""

    name: str
    proc: subprocess.Popen[bytes]
    workdir: Path
    started: float  # perf_counter at Popen
    port: int = 0
    #: every process of its tree ever seen: pid -> start time (so a reused pid is left alone)
    seen: dict[int, float] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def remember_tree(self) -> None:
        for pid in tree_of(self.pid):
            try:
                self.seen.setdefault(pid, psutil.Process(pid).create_time())
            except psutil.Error:
                pass

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM and wait; anything of its tree still alive after that is SIGKILLed."""
        self.remember_tree()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for pid, created in self.seen.items():
            try:
                proc = psutil.Process(pid)
                if proc.create_time() == created and proc.status() != psutil.STATUS_ZOMBIE:
                    proc.kill()
            except psutil.Error:
                pass

    def log_tail(self) -> str:
        try:
            return (self.workdir / "out.log").read_text(errors="replace")[-2000:]
        except OSError:
            return ""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _spawn(name: str, argv: list[str], workdir: Path, env: dict[str, str] | None = None,
           port: int = 0) -> Managed:
    with open(workdir / "out.log", "ab") as log_file:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=log_file, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, cwd=str(workdir),
                                env={**os.environ, **(env or {})})
    return Managed(name, proc, workdir, started, port)


class KidecarNotFound(RuntimeError):
    """No kidecar to benchmark in this environment (the row says so)."""


def kidecar_argv() -> list[str]:
    """The kidecar to run: next to the interpreter running the bench, else on PATH,
    else this interpreter's ``kidecar_supervisor`` package (``python -m``)."""
    beside = Path(sys.executable).parent / "kidecar"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("kidecar")
    if found:
        return [found]
    import importlib.util

    if importlib.util.find_spec("kidecar_supervisor") is not None:
        return [sys.executable, "-m", "kidecar_supervisor.cli"]
    raise KidecarNotFound(f"no kidecar next to {sys.executable}, none on PATH, and "
                          f"kidecar_supervisor is not importable: pip install -e {REPO}")


def image_argv() -> list[str]:
    """kidecar as the image starts it (the Dockerfile's ENTRYPOINT): ``python -OO -m
    kidecar_supervisor``, with the interpreter of the kidecar ``kidecar_argv`` finds."""
    first = kidecar_argv()[0]
    python = sys.executable
    if first != sys.executable:
        with open(first, "rb") as script:
            line = script.readline().decode(errors="replace").strip()
        if line.startswith("#!") and len(line.split()) == 1:  # a console script's interpreter
            python = line[2:]
    return [python, "-OO", "-m", "kidecar_supervisor"]


def binary_plugins() -> list[dict[str, Any]]:
    return [{"name": name, "binary": {"path": SLEEP, "args": [arg]}}
            for name, arg in PROGRAMS.items()]


def start_kidecar(config: dict[str, Any], workdir: Path, python_path: str = "") -> Managed:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "kidecar.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    port = free_port()
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), python_path,
                                                       os.environ.get("PYTHONPATH")]))}
    return _spawn("kidecar", [*kidecar_argv(), "run", "--config", str(path), "--port", str(port),
                              "--host", "127.0.0.1", "--state-dir", str(workdir / "state")],
                  workdir, env, port)


def start_supervisord(programs: dict[str, list[str]], workdir: Path) -> Managed:
    """supervisord with its defaults (startsecs=1, autorestart=unexpected, startretries=3)."""
    workdir.mkdir(parents=True, exist_ok=True)
    lines = ["[supervisord]", "nodaemon=true", f"logfile={workdir}/supervisord.log",
             f"pidfile={workdir}/supervisord.pid", f"childlogdir={workdir}", ""]
    for name, argv in programs.items():
        lines += [f"[program:{name}]", "command=" + " ".join(argv), ""]
    conf = workdir / "supervisord.conf"
    conf.write_text("\n".join(lines))
    return _spawn("supervisord", [str(peer_bin("supervisord")), "-n", "-c", str(conf)], workdir)


def start_circus(programs: dict[str, list[str]], workdir: Path) -> Managed:
    """circusd with its defaults (check_delay=5 s from an ini file, statsd off).

    Only the two endpoints are set (to ipc sockets, so parallel runs need no ports);
    setting ``stats_endpoint`` would also start a circusd-stats process.
    """
    workdir.mkdir(parents=True, exist_ok=True)
    lines = ["[circus]", f"endpoint = ipc://{workdir}/endpoint.sock",
             f"pubsub_endpoint = ipc://{workdir}/pubsub.sock", ""]
    for name, argv in programs.items():
        lines += [f"[watcher:{name}]", f"cmd = {argv[0]}", "args = " + " ".join(argv[1:]),
                  "numprocesses = 1", ""]
    conf = workdir / "circus.ini"
    conf.write_text("\n".join(lines))
    return _spawn("circus", [str(peer_bin("circusd")), str(conf)], workdir)


def sleep_programs() -> dict[str, list[str]]:
    return {name: [SLEEP, arg] for name, arg in PROGRAMS.items()}


# -- HTTP probing (raw http.client: no session, no retries, nothing between us and the port) --
def http_status(port: int, path: str, timeout: float = 3.0) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        return conn.getresponse().status
    except OSError:
        return 0
    finally:
        conn.close()


def is_200(port: int, path: str) -> bool:
    return http_status(port, path, 5.0) == 200


def http_json(port: int, path: str) -> Any:
    import json

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()


def wait_until(predicate: Callable[[], Any], timeout: float, what: str, managed: Managed,
               interval: float = POLL) -> float:
    """Poll ``predicate`` until true; the perf_counter time it first was."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if predicate():
            return time.perf_counter()
        if managed.proc.poll() is not None:
            raise RuntimeError(f"{managed.name} exited ({managed.proc.returncode}) waiting for "
                               f"{what}: {managed.log_tail()}")
        time.sleep(interval)
    raise RuntimeError(f"{managed.name}: timed out after {timeout:g}s waiting for {what}: "
                       f"{managed.log_tail()}")


def programs_running(managed: Managed) -> bool:
    return all(program_pid(managed.pid, name) for name in PROGRAMS)


def wait_ready(managed: Managed, programs: bool = True, timeout: float = 30.0) -> None:
    """kidecar: /readyz 200; with ``programs``, also both ``sleep`` programs exec'd."""
    if managed.name == "kidecar":
        wait_until(partial(is_200, managed.port, "/readyz"), timeout, "/readyz 200", managed, 0.01)
    if programs:
        wait_until(partial(programs_running, managed), timeout, "both programs running", managed)


def kidecar_roles(managed: Managed) -> dict[int, str]:
    """pid → role from /plugins (internal children included), plus the gunicorn worker."""
    roles = {managed.pid: "supervisor"}
    for entry in http_json(managed.port, "/plugins"):
        if entry.get("pid"):
            roles[int(entry["pid"])] = str(entry["name"])
            if entry["name"] == "http":
                for worker in children_of(int(entry["pid"])):
                    roles[worker] = "http-worker"
    return roles


# -- (i) crash → running --------------------------------------------------------------------
@dataclass
class _KillState:
    """Where one supervisor is in its kill cycle: waiting to kill, or waiting for a new pid."""

    managed: Managed
    next_kill_at: float
    victim: int = 0
    baseline: set[int] = field(default_factory=set)
    killed_at: float = 0.0
    times: list[float] = field(default_factory=list)


def _try_kill(state: _KillState, program: str) -> None:
    victim = program_pid(state.managed.pid, program)
    if victim is None:  # forked but not exec'd yet: try again on the next tick
        return
    state.baseline = children_of(state.managed.pid) - {victim}
    state.victim = victim
    state.killed_at = time.perf_counter()
    os.kill(victim, signal.SIGKILL)


def _check_restarted(state: _KillState, now: float, rng: random.Random) -> None:
    if children_of(state.managed.pid) - state.baseline - {state.victim}:
        state.times.append(now - state.killed_at)
        state.victim = 0
        state.next_kill_at = now + SETTLE + rng.uniform(0.0, JITTER)
    elif now - state.killed_at > RESTART_TIMEOUT:
        raise RuntimeError(f"{state.managed.name}: no new child within {RESTART_TIMEOUT:g}s of "
                           f"kill -9: {state.managed.log_tail()}")


def crash_rounds(managers: list[Managed], kills: int, program: str = "sleep-a",
                 seed: int = 1) -> dict[str, list[float]]:
    """``kills`` × kill -9 of each supervisor's ``program``; seconds until a new child pid.

    One loop serves all supervisors every ``POLL``: no measurement waits for
    another supervisor's. Before each kill the program has run ``SETTLE`` s plus
    a random 0–``JITTER`` s, so kills do not lock onto the phase of a periodic
    check (circus's 5 s timer would otherwise give the same latency every time).
    """
    rng = random.Random(seed)
    now = time.perf_counter()
    states = [_KillState(m, now + rng.uniform(0.0, JITTER)) for m in managers]
    while any(len(st.times) < kills for st in states):
        now = time.perf_counter()
        for st in states:
            if st.victim:
                _check_restarted(st, now, rng)
            elif len(st.times) < kills and now >= st.next_kill_at:
                _try_kill(st, program)
            if st.managed.proc.poll() is not None:
                raise RuntimeError(f"{st.managed.name} exited: {st.managed.log_tail()}")
        time.sleep(POLL)
    return {st.managed.name: st.times for st in states}


def idle_cpu(managers: list[Managed], seconds: float) -> dict[str, tuple[float, float]]:
    """(supervisor process %, whole tree %) of one core over ``seconds`` of idling."""
    trees = {m.name: tree_of(m.pid) for m in managers}
    before = {m.name: (cpu_ns([m.pid]), cpu_ns(trees[m.name])) for m in managers}
    start = time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - start
    out = {}
    for m in managers:
        own, tree = cpu_ns([m.pid]), cpu_ns(trees[m.name])
        out[m.name] = ((own - before[m.name][0]) / 1e9 / elapsed * 100,
                       (tree - before[m.name][1]) / 1e9 / elapsed * 100)
    return out


# -- (ii) footprints -----------------------------------------------------------------------
def _settled_footprint(managed: Managed, programs: bool = True) -> Footprint:
    wait_ready(managed, programs)
    roles: dict[int, str] | None = None
    if managed.name == "kidecar":
        http_status(managed.port, "/healthz")
        http_status(managed.port, "/plugins")
        time.sleep(2.5)  # a heartbeat round trip, imports done, gunicorn worker warmed
        roles = kidecar_roles(managed)
    else:
        time.sleep(1.0)
    return footprint(managed.pid, roles)


TEST_PLUGINS = REPO / "tests" / "plugin_pkg"


def test_plugins_path(workdir: Path) -> str:
    """A PYTHONPATH under which kidecar finds tests/plugin_pkg's plugins.

    Installed (``pip install -e tests/plugin_pkg``): nothing to add. Else the
    package's directory plus a ``.dist-info`` with its entry points written
    from its setup.cfg in ``workdir``: kidecar finds plugins by entry point,
    and this needs no pip, no build and no network. '' if neither works.
    """
    import configparser
    import importlib.metadata

    try:
        importlib.metadata.distribution("kidecar-test-plugins")
        return ""
    except importlib.metadata.PackageNotFoundError:
        pass
    setup = configparser.ConfigParser()
    if not setup.read(TEST_PLUGINS / "setup.cfg"):
        raise FileNotFoundError(f"{TEST_PLUGINS}/setup.cfg is missing")
    meta = workdir / "test-plugins-meta" / "kidecar_test_plugins-0.dist-info"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "METADATA").write_text("Metadata-Version: 2.1\nName: kidecar-test-plugins\n"
                                   f"Version: {setup['metadata']['version']}\n")
    (meta / "entry_points.txt").write_text(
        "[kidecar.plugins]\n" + setup["options.entry_points"]["kidecar.plugins"].strip() + "\n")
    return os.pathsep.join([str(meta.parent), str(TEST_PLUGINS)])


def python_plugins_config() -> dict[str, Any]:
    """Two idle Python plugins from tests/plugin_pkg."""
    return {"plugins": [
        {"name": "test_sleeper"},
        {"name": "test_crasher", "config": {"afterSeconds": 10 ** 7}},
    ]}


def seed_plugins_config(workdir: Path) -> dict[str, Any]:
    """The seeds' pair, hot_update + http_probe, on Local storage, probing a closed port."""
    files = workdir / "files"
    files.mkdir(parents=True, exist_ok=True)
    return {"plugins": [
        {"name": "hot_update", "bootOrder": 0, "config": {
            "loadPatchType": "signal", "fileDir": str(files),
            "signal": {"processName": "kidecar-bench-no-such-game", "signalName": "SIGHUP"},
            "storageConfig": {"type": "Local"}}},
        {"name": "http_probe", "bootOrder": 1, "config": {
            "probeIntervalSeconds": 5,
            "endpoints": [{"url": f"http://127.0.0.1:{free_port()}/state", "timeout": 1,
                           "storageConfig": {"type": "Local"}}]}},
    ]}


def python_sleepers() -> dict[str, list[str]]:
    """The supervisord reference for Python plugins: two bare interpreters, sleeping."""
    code = "'import time; time.sleep(3600)'"
    return {f"py-{i}": [sys.executable, "-c", code] for i in ("a", "b")}


def measure_footprint(start: Callable[[], Managed]) -> Footprint:
    managed = start()
    try:
        if managed.name != "kidecar":
            wait_until(lambda: len(children_of(managed.pid)) >= 2, 30, "two programs", managed)
            time.sleep(2.0)
            return footprint(managed.pid)
        return _settled_footprint(managed, programs=False)
    finally:
        managed.stop()


# -- (iii) start-up -----------------------------------------------------------------------------
@dataclass
class StartTimes:
    health: list[float] = field(default_factory=list)
    ready: list[float] = field(default_factory=list)
    programs: list[float] = field(default_factory=list)


def time_kidecar_start(base: Path, runs: int) -> StartTimes:
    times = StartTimes()
    for i in range(runs):
        managed = start_kidecar({"plugins": binary_plugins()}, base / f"kidecar-start-{i}")
        try:
            health = wait_until(partial(is_200, managed.port, "/healthz"), 30, "/healthz 200",
                                managed, 0.002)
            programs = wait_until(partial(programs_running, managed), 30, "programs", managed)
            ready = wait_until(partial(is_200, managed.port, "/readyz"), 30, "/readyz 200", managed,
                               0.002)
            times.health.append(health - managed.started)
            times.ready.append(ready - managed.started)
            times.programs.append(programs - managed.started)
        finally:
            managed.stop()
    return times


def time_peer_start(start: Callable[[Path], Managed], base: Path, runs: int) -> list[float]:
    out = []
    for i in range(runs):
        managed = start(base / f"start-{i}")
        try:
            seen = wait_until(partial(programs_running, managed), 30, "programs", managed)
            out.append(seen - managed.started)
            time.sleep(0.5)  # circusd stopped right after start can hang for its 30 s timeout
        finally:
            managed.stop()
    return out


# -- formatting ---------------------------------------------------------------------------------
def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} ms / {max(values) * 1000:.1f} ms"


def secs(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s"


def _crash_and_idle(base: Path, versions: dict[str, str], kills: int,
                    idle_seconds: float) -> list[dict[str, str]]:
    """One run with all three supervising the same two sleeps: footprint, idle CPU, kills."""
    kidecar_config = {"backoffResetSeconds": 1, "maxRestarts": 1000,
                      "plugins": binary_plugins()}
    managers: list[Managed] = []
    try:
        managers.append(start_kidecar(kidecar_config, base / "kidecar"))
        managers.append(start_supervisord(sleep_programs(), base / "supervisord"))
        managers.append(start_circus(sleep_programs(), base / "circus"))
        prints = {m.name: _settled_footprint(m) for m in managers}
        time.sleep(1.0)
        cpu = idle_cpu(managers, idle_seconds)
        times = crash_rounds(managers, kills)
        restarts = http_json(managers[0].port, "/plugins/sleep-a")["restarts"]
    finally:
        for managed in managers:
            managed.stop()
    sv, cc = f"supervisord {versions['supervisor']}", f"circus {versions['circus']}"
    k = prints["kidecar"]
    return [
        {"benchmark": f"crash → running again after kill -9 (median / max of {kills})",
         "kidecar": ms(times["kidecar"]),
         "peers": f"{sv}: {ms(times['supervisord'])}; {cc}: {ms(times['circus'])}",
         "aim": "milliseconds; ≤ supervisord",
         "notes": (f"same `sleep` child under each; time from kill -9 to a new child pid of "
                   f"the supervisor (/proc/PID/task/*/children polled every 1 ms); kills "
                   f"scheduled independently, each child ran {SETTLE:g} s + random 0–{JITTER:g} s "
                   f"first (no phase lock on periodic checks); kidecar restarts "
                   f"counted: {restarts}. Settings: kidecar binary plugin with "
                   f"backoffResetSeconds 1, maxRestarts 1000 (defaults 60 s / 10 per 300 s: "
                   f"a 2nd crash within 60 s waits 0.5 s, then 1, 2 s…, the 11th in 5 min "
                   f"marks it Failed, by design); supervisord defaults (startsecs=1, "
                   f"autorestart=unexpected); circus defaults (check_delay=5 s: it finds a "
                   f"dead process only on its periodic check, no SIGCHLD)")},
        {"benchmark": f"supervisor idle CPU over {idle_seconds:g} s (2 sleeping programs)",
         "kidecar": f"{cpu['kidecar'][0]:.2f} % (whole tree {cpu['kidecar'][1]:.2f} %)",
         "peers": (f"{sv}: {cpu['supervisord'][0]:.2f} %; "
                   f"{cc}: {cpu['circus'][0]:.2f} % (whole tree {cpu['circus'][1]:.2f} %)"),
         "aim": "~0 %",
         "notes": ("% of one core from /proc/PID/task/*/schedstat (ns) of the supervisor "
                   "process; kidecar's tree adds the gunicorn worker (HTTP, with the store; "
                   "heartbeat every 1 s)")},
        {"benchmark": "idle tree PSS / USS, 2 binary plugins (`sleep`)",
         "kidecar": k.text(),
         "peers": f"{sv}: {prints['supervisord'].text()}; {cc}: {prints['circus'].text()}",
         "aim": "kidecar PSS ≤ 64 MiB",
         "notes": (f"psutil memory_full_info summed over the whole tree, programs included, "
                   f"after /readyz and a heartbeat. kidecar PSS/USS by process (MiB): "
                   f"{k.breakdown()}")},
    ]


def _python_footprints(base: Path, versions: dict[str, str]) -> list[dict[str, str]]:
    out = []
    config = python_plugins_config()
    sv = f"supervisord {versions['supervisor']}"
    try:
        plugin_path = test_plugins_path(base)
    except (OSError, KeyError) as exc:
        out.append({"benchmark": "idle tree PSS / USS, 2 Python plugins (test plugins)",
                    "kidecar": "not measured", "peers": "", "aim": "PSS ≤ 64 MiB",
                    "notes": f"tests/plugin_pkg could not be located or described: {exc}"})
    else:
        kid = measure_footprint(lambda: start_kidecar(config, base / "py-kidecar", plugin_path))
        peer = measure_footprint(lambda: start_supervisord(python_sleepers(),
                                                           base / "py-supervisord"))
        out.append({
            "benchmark": "idle tree PSS / USS, 2 Python plugins (test_sleeper, test_crasher)",
            "kidecar": kid.text(), "peers": f"{sv} with 2 bare `python -c sleep`: {peer.text()}",
            "aim": "kidecar PSS ≤ 64 MiB",
            "notes": (f"idle plugins from tests/plugin_pkg, forked by the supervisor; the peer "
                      f"runs two fresh interpreters that import nothing (a lower bound for any "
                      f"Python program). kidecar PSS/USS by process (MiB): {kid.breakdown()}")})
    seed = measure_footprint(lambda: start_kidecar(seed_plugins_config(base / "seed"),
                                                   base / "seed-kidecar"))
    out.append({
        "benchmark": "idle tree PSS / USS, seed plugins hot_update + http_probe (Local storage)",
        "kidecar": seed.text(), "peers": "n/a",
        "aim": "PSS ≤ 64 MiB",
        "notes": (f"the seeds' two plugins, Local storage, one endpoint probed every 5 s "
                  f"(refused), no update. PSS/USS by process (MiB): {seed.breakdown()}")})
    return out


def _startup(base: Path, versions: dict[str, str], runs: int) -> dict[str, str]:
    kid = time_kidecar_start(base / "startup", runs)
    sv = time_peer_start(lambda d: start_supervisord(sleep_programs(), d),
                         base / "startup-supervisord", runs)
    cc = time_peer_start(lambda d: start_circus(sleep_programs(), d),
                         base / "startup-circus", runs)
    return {
        "benchmark": f"`kidecar run` → /healthz 200 (median of {runs})",
        "kidecar": f"{secs(kid.health)} (max {max(kid.health):.2f} s)",
        "peers": (f"both programs running: kidecar {secs(kid.programs)}, supervisord "
                  f"{versions['supervisor']} {secs(sv)}, circus {versions['circus']} {secs(cc)}"),
        "aim": "≤ 1.0 s",
        "notes": (f"from Popen of the console script to the first 200 (raw HTTP GET polled "
                  f"every 2 ms); /readyz 200 at {secs(kid.ready)}; config = 2 binary `sleep` "
                  f"plugins; 'programs running' = both `sleep` pids exec'd under the "
                  f"supervisor, the same probe for all three")}


def _phase(name: str, body: Callable[[], list[dict[str, str]]]) -> list[dict[str, str]]:
    """Run one part; its duration on stderr (progress for a long run)."""
    start = time.perf_counter()
    result = body()
    print(f"bench_supervisor: {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)
    return result


def rows(quick: bool) -> list[dict[str, str]]:
    kills, idle_seconds, starts = (10, 3.0, 3) if quick else (20, 10.0, 5)
    versions = ensure_peer_venv()
    base = Path(tempfile.mkdtemp(prefix="bench-supervisor-"))
    try:
        out = _phase("crash + idle", lambda: _crash_and_idle(base, versions, kills, idle_seconds))
        out += _phase("footprints", lambda: _python_footprints(base, versions))
        out += _phase("start-up", lambda: [_startup(base, versions, starts)])
        return out
    finally:
        shutil.rmtree(base, ignore_errors=True)
