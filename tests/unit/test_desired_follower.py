"""The desired-version follower notes a refused value before the process may be recycled.

A hot update's end asks for a fresh process (issue 16). When the follower ran it,
it still had to note the value as failed; a recycle in between made the fresh
process apply the refused build once more, reloading the game twice (CI, session
23: ``test_a_refused_desired_version_is_not_retried_until_a_new_value``). The
follower considers a value inside ``settling``, which the plugin makes hold the
recycle back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kidecar_supervisor.plugin_api import PluginCallError
from workers.hot_update.desired import FAILED_NAME, DesiredFollower

V3 = json.dumps({"version": "v3", "url": "http://127.0.0.1:1/v3/index.html"})


class _Pod:
    """The store's pod watch, as the follower sees it: one value, synced."""

    def watch_annotation(self, key: str, revision: int, wait: float) -> dict[str, Any]:
        return {"supported": True, "synced": True, "revision": 7, "value": V3}


def test_a_refused_value_is_noted_before_the_settling_hold_ends(tmp_path: Path) -> None:
    events: list[str] = []

    def refuse(params: dict[str, Any]) -> dict[str, Any]:
        events.append(f"applied {params['version']}")
        raise PluginCallError(424, "the game refused v3")

    @contextmanager
    def settling() -> Iterator[None]:
        events.append("hold")
        yield
        failed = tmp_path / FAILED_NAME
        events.append("released, failed noted" if failed.exists() else "released, not noted")

    follower = DesiredFollower(_Pod(), "kidecar/desired", tmp_path, refuse,  # type: ignore[arg-type]
                               threading.Event(), lambda reason, text: None, settling)
    assert follower.apply_at_start() is None
    assert events == ["hold", "applied v3", "released, failed noted"]
    # and the value is not applied again, by this process or a fresh one
    fresh = DesiredFollower(_Pod(), "kidecar/desired", tmp_path, refuse,  # type: ignore[arg-type]
                            threading.Event(), lambda reason, text: None, settling)
    assert fresh.apply_at_start() is None
    assert events.count("applied v3") == 1
