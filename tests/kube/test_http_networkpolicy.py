"""config/networkpolicy.yaml is a valid NetworkPolicy: the real API server stores it as written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

POLICY = Path(__file__).resolve().parents[2] / "config" / "networkpolicy.yaml"


@pytest.mark.kube
def test_the_networkpolicy_is_created_as_written(kube_env: Any) -> None:
    stored = kube_env.apply_yaml(POLICY, namespace=kube_env.namespace)
    assert [o["kind"] for o in stored] == ["NetworkPolicy"]
    assert stored[0]["spec"] == yaml.safe_load(POLICY.read_text())["spec"]
