"""Starting and killing the supervisor's children: plugin, binary, HTTP.

Each child leads its own process group, so stopping a child kills everything
it forked too (a plugin that spawned helpers, gunicorn's worker). Anything that
escapes its group is re-parented to the supervisor (a child subreaper) and
swept at shutdown.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import subprocess
from collections.abc import Callable, Iterable

import psutil

log = logging.getLogger("kidecar.children")

_PR_SET_CHILD_SUBREAPER = 36
_SUPERVISOR_SIGNALS = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}


def become_subreaper() -> bool:
    """Adopt orphaned descendants so none outlives the supervisor unreaped."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def fork_child(body: Callable[[], int], keep_fds: Iterable[int]) -> int:
    """Fork; the child leads a new process group, keeps only stdio and ``keep_fds``
    (no other child's pipe, no control connection, no handoff socket) and runs ``body``.

    The child never returns into the caller: it leaves through ``os._exit``.
    """
    # no other thread may be half-way through a log line when we fork, or the child
    # would inherit a held stream lock and block on its first line
    locks = [handler.lock for handler in logging.getLogger().handlers if handler.lock]
    for lock in locks:
        lock.acquire()
    # A signal the new child gets before it drops the supervisor's handlers would be
    # written to the supervisor's own wake-up socket (shared after fork) and read as
    # if the supervisor had received it: block them across the fork.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, _SUPERVISOR_SIGNALS)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for lock in locks:
            lock.release()
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for lock in locks:
            lock.release()
        _set_group(pid)
        return pid
    # the child: logging's own at-fork hook has already reset those locks. Nothing
    # below may ever return or raise into the caller (the supervisor's code).
    code = 70  # EX_SOFTWARE if body itself blows up
    try:
        os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        for sig in _SUPERVISOR_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        close_inherited_fds(set(keep_fds))
        code = body()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:  # noqa: BLE001 - report and leave, never return into the parent's code
        log.exception("child process failed")
        code = 70
    finally:
        os._exit(code)


def close_inherited_fds(keep: set[int]) -> None:
    """Close every fd of this (just forked) process but stdio and ``keep``."""
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        fds = list(range(3, 1024))
    for fd in fds:
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass


def spawn_program(argv: list[str], env: dict[str, str], cwd: str | None) -> subprocess.Popen[bytes]:
    """Start an external program in its own group, stdout+stderr into one pipe."""
    return subprocess.Popen(  # noqa: S603 - the operator's configured program
        argv, env=env, cwd=cwd or None, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, close_fds=True, process_group=0,
    )


def _set_group(pid: int) -> None:
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass  # the child already did it (or exec'd): either way it leads its group


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the whole process group; False if nothing is left in it."""
    try:
        os.killpg(pgid, sig)
        return True
    except OSError as exc:
        if exc.errno == errno.ESRCH:
            return False
        if exc.errno == errno.EPERM:
            log.warning("not allowed to signal process group %s", pgid)
            return True
        raise


def reap_all() -> list[tuple[int, int]]:
    """Collect every exited child, ours or adopted: (pid, exit code or -signal)."""
    exited: list[tuple[int, int]] = []
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return exited
        if pid == 0:
            return exited
        exited.append((pid, os.waitstatus_to_exitcode(status)))


def kill_descendants(grace: float = 0.0) -> int:
    """SIGKILL every remaining descendant (the last sweep at shutdown)."""
    try:
        rest = psutil.Process().children(recursive=True)
    except psutil.Error:
        return 0
    for proc in rest:
        try:
            proc.kill()
        except psutil.Error:
            pass
    if rest:
        psutil.wait_procs(rest, timeout=max(grace, 1.0))
    reap_all()
    return len(rest)
