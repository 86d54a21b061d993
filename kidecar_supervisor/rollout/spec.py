"""What a rollout asks: the version, where it goes, and how fast (``kidecar rollout start``).

The spec is stored with the rollout's state, so a second ``start`` of the same
name (a restarted Job, a laptop) continues it only when it asks the same
thing; flags that only change the pace (pause, timeouts) may differ.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

#: the pod annotation the sidecars follow (workers/hot_update/config.py's default)
DESIRED_ANNOTATION = "kidecar.io/desired-version"
#: where hot_update writes its result on the pod (storage/result_codec.py's default)
RESULT_ANNOTATION = "sidecar.vke.volcengine.com/hot-update-result"
#: GameServerSet pods carry their set's name in this label (OpenKruise Game)
OWNER_GSS_LABEL = "game.kruise.io/owner-gss"
_BATCH = re.compile(r"^([1-9][0-9]*)(%?)$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$")
#: fields that define *what* is rolled out: a second start must ask the same
IDENTITY_FIELDS = ("selector", "version", "url", "sha256", "desired_annotation")


class SpecError(ValueError):
    """A flag that makes no sense; the message names it."""


@dataclass(frozen=True)
class RolloutSpec:
    name: str
    namespace: str
    selector: str
    version: str
    url: str
    sha256: str = ""
    batch_size: str = "25%"
    pause_seconds: float = 0.0
    max_failures: int = 0
    batch_timeout_seconds: float = 300.0
    idle_states: tuple[str, ...] = ("None",)
    idle_timeout_seconds: float = 3600.0
    force: bool = False
    desired_annotation: str = DESIRED_ANNOTATION
    result_annotation: str = RESULT_ANNOTATION
    poll_seconds: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> RolloutSpec:
        if not _NAME.match(self.name):
            raise SpecError(f"NAME {self.name!r}: 1-40 lowercase letters, digits or '-'")
        if not self.selector:
            raise SpecError("one of --gameserverset or --selector is required")
        if not self.version or not self.url:
            raise SpecError("--version and --url are required")
        if not self.url.startswith(("http://", "https://")):
            raise SpecError(f"--url must be http(s), got {self.url!r}")
        if not _BATCH.match(self.batch_size):
            raise SpecError(f"--batch-size is a count (4) or a percentage (25%), "
                            f"got {self.batch_size!r}")
        if self.batch_size.endswith("%") and int(self.batch_size[:-1]) > 100:
            raise SpecError("--batch-size percentage must be at most 100%")
        for flag, value in (("--pause-seconds", self.pause_seconds),
                            ("--max-failures", self.max_failures),
                            ("--idle-timeout-seconds", self.idle_timeout_seconds)):
            if value < 0:
                raise SpecError(f"{flag} must be >= 0, got {value}")
        if self.batch_timeout_seconds <= 0:
            raise SpecError("--batch-timeout-seconds must be > 0")
        if not self.idle_states:
            raise SpecError("--idle-states needs at least one state (e.g. None)")
        return self

    def batch_count(self, total: int) -> int:
        """Pods per batch for a selection of ``total`` pods (at least 1)."""
        match = _BATCH.match(self.batch_size)
        assert match is not None
        number = int(match.group(1))
        if match.group(2):
            return max(1, math.ceil(total * number / 100))
        return number

    def desired_value(self) -> dict[str, str]:
        """The annotation's JSON (the rollout's name makes a retry a new value)."""
        value = {"version": self.version, "url": self.url, "rollout": self.name}
        if self.sha256:
            value["sha256"] = self.sha256
        return value

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["idle_states"] = list(self.idle_states)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RolloutSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        known["idle_states"] = tuple(known.get("idle_states") or ("None",))
        return cls(**known)

    def differs_from(self, other: RolloutSpec) -> list[str]:
        """The identity fields in which ``other`` asks something else."""
        return [f for f in IDENTITY_FIELDS if getattr(self, f) != getattr(other, f)]


def gameserverset_selector(name: str) -> str:
    """The label selector of a GameServerSet's pods."""
    return f"{OWNER_GSS_LABEL}={name}"
