"""A network path that is not loopback: a network namespace joined by a veth pair.

Issue 15's tests must call the sidecar the way another pod would, from an
address that is not the pod's loopback. The namespace plays the pod (its own
loopback, its own address); the test process, outside, plays the other pod.
Only addresses created here are used (``10.213.0.1`` outside, ``10.213.0.2``
inside), and everything is removed on exit, also when the test fails.
Needs root and iproute2 (CI runs as root; tools/run-tests installs iproute2).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

SUBNET = ipaddress.ip_network("10.213.0.0/24")
OUTSIDE_IP = "10.213.0.1"
INSIDE_IP = "10.213.0.2"


@dataclass(frozen=True)
class Netns:
    """The namespace (the "pod") and the addresses on each end of its veth pair."""

    name: str
    inside_ip: str = INSIDE_IP
    outside_ip: str = OUTSIDE_IP

    def prefix(self) -> list[str]:
        """A command prefix that runs the rest of the command inside the namespace."""
        return ["ip", "netns", "exec", self.name]

    def run(self, *argv: str, env: dict[str, str] | None = None,
            timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the namespace ("kubectl exec" into the pod)."""
        return subprocess.run([*self.prefix(), *argv], capture_output=True, text=True,
                              timeout=timeout, check=False, env={**os.environ, **(env or {})})


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


def _subnet_in_use() -> bool:
    out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True, text=True,
                         check=True, timeout=30).stdout
    for line in out.splitlines():
        parts = line.split()
        address = parts[parts.index("inet") + 1] if "inet" in parts else ""
        if address and ipaddress.ip_interface(address).network.overlaps(SUBNET):
            return True
    return False


@contextlib.contextmanager
def veth_namespace() -> Iterator[Netns]:
    """A fresh namespace with ``lo`` up and a veth pair to this one; removed on exit."""
    if os.geteuid() != 0:
        raise RuntimeError("a network namespace needs root (CI runs as root)")
    if shutil.which("ip") is None:
        raise RuntimeError("the 'ip' command (iproute2) is missing; tools/run-tests installs it")
    if _subnet_in_use():
        raise RuntimeError(f"{SUBNET} is already used on this machine; the test needs it for itself")
    suffix = uuid.uuid4().hex[:8]
    netns = Netns(name=f"kidecar-test-{suffix}")
    outside, inside = f"kdo{suffix}", f"kdi{suffix}"  # interface names: at most 15 characters
    _ip("netns", "add", netns.name)
    try:
        _ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        _ip("link", "set", inside, "netns", netns.name)
        _ip("addr", "add", f"{OUTSIDE_IP}/24", "dev", outside)
        _ip("link", "set", outside, "up")
        _ip("-n", netns.name, "addr", "add", f"{INSIDE_IP}/24", "dev", inside)
        _ip("-n", netns.name, "link", "set", inside, "up")
        _ip("-n", netns.name, "link", "set", "lo", "up")
        yield netns
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", outside)  # deletes its peer too
        _ip("netns", "del", netns.name)
