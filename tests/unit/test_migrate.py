"""`kidecar migrate` without a cluster: the SidecarConfig's parts land where a
SidecarSet and a ConfigMap hold them, and a bad document writes nothing.
tests/kube/test_migrate_kube.py creates the output in a real API server."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kidecar_supervisor.config import parse_config_text
from kidecar_supervisor.config_reader import ConfigError
from kidecar_supervisor.migrate import MigrateError, migrate_text

FIXTURE = Path(__file__).resolve().parents[1] / "support" / "fixtures" / "go-sidecarconfig.yaml"


def objects(text: str) -> dict[str, dict]:
    return {d["kind"]: d for d in yaml.safe_load_all(migrate_text(text, "sc.yaml").text) if d}


def test_configmap_holds_spec_kidecar_as_written_and_kidecar_reads_it() -> None:
    out = objects(FIXTURE.read_text())
    configmap = out["ConfigMap"]
    assert configmap["metadata"] == {"name": "kidecar-config", "namespace": "default"}
    source = yaml.safe_load(FIXTURE.read_text())["spec"]["kidecar"]
    assert yaml.safe_load(configmap["data"]["config.yaml"]) == source
    config = parse_config_text(configmap["data"]["config.yaml"], "config.yaml")
    assert [p.name for p in config.plugins] == ["hot_update", "http_probe"]


def test_sidecarset_carries_selector_namespace_native_sidecar_and_volumes() -> None:
    out = objects(FIXTURE.read_text())
    spec = out["SidecarSet"]["spec"]
    assert out["SidecarSet"]["metadata"] == {"name": "hot-update-game"}
    assert spec["selector"] == {"matchLabels": {"app": "hot-update-game"}}
    assert spec["namespace"] == "default"
    assert "containers" not in spec  # useKubeNativeSidecar: an init container ...
    kidecar = spec["initContainers"][0]
    assert kidecar["restartPolicy"] == "Always"  # ... that keeps running (native sidecar)
    assert kidecar["podInjectPolicy"] == "BeforeAppContainer"
    assert kidecar["shareVolumePolicy"] == {"type": "enabled"}  # the game's fileDir mount
    assert kidecar["resources"]["limits"] == {"cpu": "100m", "memory": "128Mi",
                                              "ephemeral-storage": "256Mi"}
    assert {m["mountPath"] for m in kidecar["volumeMounts"]} == {"/opt/sidecar",
                                                                 "/var/lib/kidecar"}
    assert [v["name"] for v in spec["volumes"]] == ["kidecar-config", "kidecar-state",
                                                    "game-extra"]
    assert out["ServiceAccount"]["metadata"] == {"name": "kidecar-sa", "namespace": "default"}


def test_what_a_sidecarset_cannot_set_is_said() -> None:
    result = migrate_text(FIXTURE.read_text(), "sc.yaml")
    note = next(n for n in result.notes if "cannot set pod fields" in n)
    assert "shareProcessNamespace: true" in note and "serviceAccountName: kidecar-sa" in note
    assert "# note: " + note in result.text  # in the manifests too, for whoever applies them


def test_a_regular_container_without_use_kube_native_sidecar() -> None:
    text = FIXTURE.read_text().replace("useKubeNativeSidecar: true", "useKubeNativeSidecar: false")
    spec = objects(text)["SidecarSet"]["spec"]
    assert "initContainers" not in spec and "restartPolicy" not in spec["containers"][0]


def test_other_documents_are_left_out_with_a_note() -> None:
    text = FIXTURE.read_text() + "---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {name: x}\n"
    result = migrate_text(text, "sc.yaml")
    assert any("document 2 (ServiceAccount) is not a SidecarConfig" in n for n in result.notes)


@pytest.mark.parametrize(("change", "error", "words"), [
    (("    selector:\n      matchLabels:\n        app: hot-update-game\n", ""), MigrateError,
     "selector is empty"),
    (("shareProcessNamespace: true", "shareProcesNamespace: true"), ConfigError,
     "spec.injection.shareProcesNamespace: unknown field"),
    (("fieldType: int", "fieldType: date"), ConfigError,
     "spec.kidecar.plugins[1].config.endpoints[0].storageConfig.inKube.markerPolices[0]"
     ".jsonPathConfigs[0].fieldType"),
    (("kind: SidecarConfig", "kind: SidecarConfigs"), MigrateError, "no SidecarConfig"),
    (("serverless.vke.volcengine.com/v1alpha1", "serverless.vke.volcengine.com/v2"),
     ConfigError, "apiVersion: a SidecarConfig is serverless.vke.volcengine.com/v1alpha1"),
])
def test_a_bad_document_is_refused_naming_the_field(change: tuple[str, str], error: type,
                                                    words: str) -> None:
    text = FIXTURE.read_text()
    assert change[0] in text
    with pytest.raises(error) as info:
        migrate_text(text.replace(change[0], change[1]), "sc.yaml")
    assert words in str(info.value)
