"""http_probe re-sends a journaled marker write until one is written (issue 14 §3): the
journal's replay may move it to failed/ later, and then the final state would never
reach the GameServer."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kidecar_supervisor.plugin_api import JOURNALED, MarkerUpdate, StorageConfig
from kidecar_supervisor.storage.local import LocalStore
from tests.support.game_endpoint import GameEndpoint
from tests.support.http_probe_support import IDENTITY, run_plugin, wait_until
from workers.http_probe import plugin as probe_plugin


class LosingJournalStore(LocalStore):
    """A real LocalStore whose "journal" loses what it accepts while ``api_down``: it
    answers JOURNALED and the write never arrives (as when the replay moves it to
    failed/); once the API is back it writes and answers ``written``."""

    def __init__(self, cfg: StorageConfig, state_dir: Path) -> None:
        super().__init__(cfg, IDENTITY, state_dir)
        self.api_down = threading.Event()
        self.lost: list[MarkerUpdate] = []

    def apply_markers(self, update: MarkerUpdate) -> str:
        if self.api_down.is_set():
            self.lost.append(update)
            return JOURNALED
        return super().apply_markers(update)


@pytest.fixture
def game() -> Iterator[GameEndpoint]:
    server = GameEndpoint()
    yield server
    server.stop()


def _config(url: str) -> dict[str, Any]:
    policies = [{"state": "idle", "labels": {"idle": "true"}, "gameServerOpsState": "None"},
                {"state": "busy", "labels": {"idle": "false"},
                 "gameServerOpsState": "Allocated"}]
    return {"startDelaySeconds": 0, "probeIntervalSeconds": 0.05,
            "endpoints": [{"url": url, "timeout": 2, "storageConfig": {
                "type": "Local", "inKube": {"markerPolicies": policies}}}]}


def test_a_journaled_write_the_replay_lost_is_re_sent(
    game: GameEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe_plugin, "RESEND_SECONDS", 0.5)
    stores: list[LosingJournalStore] = []

    def factory(cfg: StorageConfig) -> LosingJournalStore:
        stores.append(LosingJournalStore(cfg, tmp_path / "store"))
        return stores[-1]

    game.set("/", body="idle")
    with run_plugin(_config(game.url()), tmp_path, store_factory=factory) as run:
        wait_until(lambda: run.markers()["label"] == {"idle": "true"})
        store = stores[0]
        store.api_down.set()
        game.set("/", body="busy")  # the final state: journaled, then lost
        wait_until(lambda: store.lost)
        assert run.markers()["label"] == {"idle": "true"}
        store.api_down.clear()  # the API is back; the journal entry is gone for good
        wait_until(lambda: run.markers()["label"] == {"idle": "false"}, timeout=5)
        assert run.markers()["target"] == {"/spec/opsState": "Allocated"}
        # once written, no more re-sends
        writes = run.writes
        seen = game.request_count()
        wait_until(lambda: game.request_count() >= seen + 30)  # > 1 s: two re-send periods
        assert run.writes == writes


def test_re_sends_back_off_while_the_api_stays_down(
    game: GameEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(probe_plugin, "RESEND_SECONDS", 0.2)
    stores: list[LosingJournalStore] = []

    def factory(cfg: StorageConfig) -> LosingJournalStore:
        stores.append(LosingJournalStore(cfg, tmp_path / "store"))
        stores[-1].api_down.set()
        return stores[-1]

    game.set("/", body="idle")
    with run_plugin(_config(game.url()), tmp_path, store_factory=factory) as run:
        wait_until(lambda: len(stores[0].lost) >= 3, timeout=5)  # 0.2 s, 0.4 s later
        seen = game.request_count()
        wait_until(lambda: game.request_count() >= seen + 20)  # ~1 s of probes
        # at 0.2 doubling: at most a handful in the whole run, never one per probe
        assert len(stores[0].lost) <= 6
        assert run.plugin.status()["pendingWrite"] is False
