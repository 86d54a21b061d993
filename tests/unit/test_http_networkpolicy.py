"""config/networkpolicy.yaml (issue 15): port 5000 closed to other pods, the game's ports open."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

CONFIG = Path(__file__).resolve().parents[2] / "config"


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load((CONFIG / name).read_text())
    return doc


def test_the_policy_selects_the_game_pods_and_limits_port_5000() -> None:
    policy = _load("networkpolicy.yaml")
    template = _load("gameserverset.yaml")["spec"]["gameServerTemplate"]
    assert policy["kind"] == "NetworkPolicy" and policy["spec"]["policyTypes"] == ["Ingress"]
    labels = template["metadata"]["labels"]
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
    rules = policy["spec"]["ingress"]
    # every rule that opens 5000 names who may come (no rule opens it to everyone)
    opening_5000 = [r for r in rules if any(p["port"] == 5000 for p in r.get("ports", []))]
    assert opening_5000 and all(r.get("from") for r in opening_5000)
    assert all(r.get("ports") for r in rules)  # no rule opens every port
    # the game's own ports stay reachable (a policy drops whatever it does not allow)
    game_ports = {p["containerPort"] for c in template["spec"]["containers"]
                  for p in c.get("ports", [])}
    open_ports = {p["port"] for r in rules if not r.get("from") for p in r["ports"]}
    assert game_ports and game_ports <= open_ports and 5000 not in open_ports
