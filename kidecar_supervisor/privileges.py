"""Least privilege for a kidecar started as root: keep only the named capabilities.

The image runs as root so that, beside a root game (the seeds' nginx master, with
``shareProcessNamespace``), kidecar can signal it with no securityContext at all:
switching to kidecar is a change of image, no config edit. Root with every
capability is far more than that needs, so ``kidecar run``, before it forks or
imports anything heavy, keeps only the capabilities named by
``KIDECAR_KEEP_CAPABILITIES`` (the image sets ``KILL``; empty keeps none): they
stay in the bounding, permitted, effective, inheritable and ambient sets, every
other one is dropped from all of them, and ``no_new_privs`` is set so no exec'd
program (setuid or with file capabilities) can get any back.

Nothing is touched when the variable is unset (root elsewhere stays as it was),
when kidecar does not run as root, or when its capabilities are already within
the kept set (a pod securityContext that already dropped them).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from dataclasses import dataclass

ENV_VAR = "KIDECAR_KEEP_CAPABILITIES"

#: linux/capability.h, in bit order: CAPABILITIES[n] is capability number n
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL", "SETGID",
    "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE", "NET_BROADCAST",
    "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER", "SYS_MODULE", "SYS_RAWIO",
    "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT", "SYS_ADMIN", "SYS_BOOT", "SYS_NICE",
    "SYS_RESOURCE", "SYS_TIME", "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE",
    "AUDIT_CONTROL", "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)
CAP_SETPCAP = CAPABILITIES.index("SETPCAP")

# prctl(2) options (linux/prctl.h) and capset(2)'s header version 3
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
SYS_CAPSET = {"x86_64": 126, "aarch64": 91, "armv7l": 185, "ppc64le": 184, "s390x": 185}


class PrivilegeError(Exception):
    """The keep list is invalid, or the drop could not be done: kidecar must not start."""


@dataclass(frozen=True)
class Capabilities:
    """A process's capability sets and no_new_privs, as /proc/<pid>/status shows them."""

    effective: int
    permitted: int
    inheritable: int
    bounding: int
    ambient: int
    no_new_privs: bool

    def within(self, keep: int) -> bool:
        """True when no set holds a capability outside ``keep``: nothing to drop."""
        sets = (self.effective, self.permitted, self.inheritable, self.bounding, self.ambient)
        return all(value & ~keep == 0 for value in sets)


def parse_keep(value: str) -> int:
    """``KILL`` / ``CAP_KILL, NET_BIND_SERVICE`` (commas or spaces) as a bit mask.

    An unknown name is an error, so a typo fails the start instead of silently
    leaving kidecar without the capability the pod relies on.
    """
    mask = 0
    for word in value.replace(",", " ").split():
        name = word.upper().removeprefix("CAP_")
        if name not in CAPABILITIES:
            raise PrivilegeError(
                f"{ENV_VAR}: unknown capability {word!r} (known: "
                f"{', '.join(CAPABILITIES)}; e.g. {ENV_VAR}=KILL, empty keeps none)")
        mask |= 1 << CAPABILITIES.index(name)
    return mask


def names(mask: int) -> list[str]:
    """The capability names in ``mask``, in bit order (for logs and messages)."""
    return [name for bit, name in enumerate(CAPABILITIES) if mask >> bit & 1]


def read_capabilities(pid: int | str = "self") -> Capabilities:
    """The capability sets of ``pid`` from /proc (what the kernel will check)."""
    fields: dict[str, str] = {}
    with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as handle:
        for line in handle:
            key, _, rest = line.partition(":")
            fields[key] = rest.strip()
    return Capabilities(
        effective=int(fields["CapEff"], 16), permitted=int(fields["CapPrm"], 16),
        inheritable=int(fields["CapInh"], 16), bounding=int(fields["CapBnd"], 16),
        ambient=int(fields.get("CapAmb", "0"), 16),
        no_new_privs=fields.get("NoNewPrivs", "0") == "1")


def drop_to(environ: dict[str, str] | os._Environ[str] | None = None) -> str | None:
    """Apply ``KIDECAR_KEEP_CAPABILITIES``; what was done, for the log (None: nothing).

    Must run while the process has a single thread: capability sets and
    no_new_privs are per thread, and every thread and child started later
    inherits them from this one.
    """
    env = os.environ if environ is None else environ
    if ENV_VAR not in env:
        return None
    wanted = parse_keep(env[ENV_VAR])
    if os.geteuid() != 0:
        return None
    before = read_capabilities()
    if before.within(wanted):
        return None
    _require_single_thread()
    keep = wanted & before.permitted  # a capability the pod never gave cannot be kept
    _drop_bounding(keep, before)
    _capset(effective=keep, permitted=keep, inheritable=keep)
    _set_ambient(keep)
    _prctl(PR_SET_NO_NEW_PRIVS, 1)
    after = read_capabilities()
    if not (after.within(keep) and after.effective == keep and after.no_new_privs):
        raise PrivilegeError(f"capabilities not dropped as asked: {after}")
    return _describe(keep, wanted, after)


def _describe(keep: int, wanted: int, after: Capabilities) -> str:
    kept = ", ".join(names(keep)) or "none"
    why = ("KILL lets kidecar signal a game of another uid (shareProcessNamespace), nothing "
           "else is needed" if keep >> CAPABILITIES.index("KILL") & 1 else
           "without KILL kidecar can signal only processes of its own uid")
    text = (f"running as root with only these capabilities: {kept} ({ENV_VAR}="
            f"{','.join(names(wanted))}); every other capability dropped, no new privileges: "
            f"{why}")
    if wanted & ~keep:
        text += (f"; not granted to this container, so not kept: "
                 f"{', '.join(names(wanted & ~keep))}")
    if after.bounding & ~keep:
        text += "; the bounding set could not be reduced (no CAP_SETPCAP): no_new_privs holds it"
    return text


def _require_single_thread() -> None:
    """Refuse when other threads exist: they would keep every capability."""
    try:
        threads = len(os.listdir("/proc/self/task"))
    except OSError:
        return
    if threads != 1:
        raise PrivilegeError(f"cannot drop capabilities: {threads} threads already run")


def _drop_bounding(keep: int, before: Capabilities) -> None:
    """Remove every capability not kept from the bounding set (needs CAP_SETPCAP)."""
    if not before.effective >> CAP_SETPCAP & 1:
        return
    for bit in range(_last_cap() + 1):
        if before.bounding >> bit & 1 and not keep >> bit & 1:
            _prctl(PR_CAPBSET_DROP, bit)


def _last_cap() -> int:
    try:
        with open("/proc/sys/kernel/cap_last_cap", encoding="ascii") as handle:
            return int(handle.read())
    except (OSError, ValueError):
        return len(CAPABILITIES) - 1


class _Header(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _Data(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _capset(effective: int, permitted: int, inheritable: int) -> None:
    """capset(2) for this thread: the 64-bit sets as two 32-bit halves (version 3)."""
    header = _Header(LINUX_CAPABILITY_VERSION_3, 0)
    data = (_Data * 2)()
    for half in (0, 1):
        shift = 32 * half
        data[half].effective = effective >> shift & 0xFFFFFFFF
        data[half].permitted = permitted >> shift & 0xFFFFFFFF
        data[half].inheritable = inheritable >> shift & 0xFFFFFFFF
    libc = _libc()
    function = getattr(libc, "capset", None)
    if function is not None:
        result = function(ctypes.byref(header), data)
    else:
        number = SYS_CAPSET.get(os.uname().machine)
        if number is None:
            raise PrivilegeError(f"capset is not available on {os.uname().machine}")
        result = libc.syscall(number, ctypes.byref(header), data)
    if result != 0:
        _raise_errno("capset")


def _set_ambient(keep: int) -> None:
    """Ambient = exactly ``keep``, so a program kidecar execs keeps only those."""
    try:
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0)
    except PrivilegeError as exc:
        if "EINVAL" in str(exc):
            return  # a kernel older than 4.3 has no ambient set
        raise
    for bit in names_bits(keep):
        _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, bit, 0, 0)


def names_bits(mask: int) -> list[int]:
    """The capability numbers set in ``mask``."""
    return [bit for bit in range(mask.bit_length()) if mask >> bit & 1]


def _prctl(option: int, *args: int) -> None:
    values = [ctypes.c_ulong(a) for a in (*args, 0, 0, 0, 0)[:4]]
    if _libc().prctl(option, *values) != 0:
        _raise_errno(f"prctl({option}, {', '.join(map(str, args))})")


def _raise_errno(what: str) -> None:
    code = ctypes.get_errno()
    raise PrivilegeError(f"cannot drop capabilities: {what} failed: "
                         f"{errno.errorcode.get(code, code)} ({os.strerror(code)})")
