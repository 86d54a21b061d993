"""kidecar inject: every kind of pod template, start orders, idempotence byte for byte,
bad input refused with nothing written, and the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from kidecar_supervisor.inject import (
    InjectError,
    InjectOptions,
    inject_text,
    options_from_config,
    pod_specs,
    split_documents,
)

REPO = Path(__file__).resolve().parents[2]
OPTS = InjectOptions(image="registry.example/kidecar:1.2.3")

GAME = {"name": "game", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}


def template(**spec: Any) -> dict[str, Any]:
    return {"metadata": {"labels": {"app": "g"}}, "spec": {"containers": [dict(GAME)], **spec}}


def manifest(kind: str) -> dict[str, Any]:
    meta = {"name": f"my-{kind.lower()}"}
    if kind == "Pod":
        return {"apiVersion": "v1", "kind": "Pod", "metadata": meta,
                "spec": {"containers": [dict(GAME)]}}
    if kind == "GameServerSet":
        return {"apiVersion": "game.kruise.io/v1alpha1", "kind": kind, "metadata": meta,
                "spec": {"replicas": 1, "gameServerTemplate": template()}}
    if kind == "CronJob":
        return {"apiVersion": "batch/v1", "kind": kind, "metadata": meta,
                "spec": {"schedule": "* * * * *", "jobTemplate": {"spec": {"template": template(
                    restartPolicy="Never")}}}}
    api = {"Job": "batch/v1", "CloneSet": "apps.kruise.io/v1alpha1"}.get(kind, "apps/v1")
    spec: dict[str, Any] = {"selector": {"matchLabels": {"app": "g"}}, "template": template()}
    if kind == "Job":
        spec = {"template": template(restartPolicy="Never")}
    return {"apiVersion": api, "kind": kind, "metadata": meta, "spec": spec}


KINDS = ["GameServerSet", "Pod", "Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job",
         "CronJob", "CloneSet"]


def injected_spec(kind: str, opts: InjectOptions = OPTS, doc: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    text = inject_text(yaml.safe_dump(doc or manifest(kind), sort_keys=False), opts).text
    specs = [spec for _, spec in pod_specs(yaml.safe_load(text))]
    assert len(specs) == 1
    return specs[0]


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_gets_a_native_sidecar_with_everything_it_needs(kind: str) -> None:
    spec = injected_spec(kind)
    kidecar = spec["initContainers"][0]
    assert kidecar["name"] == "kidecar" and kidecar["restartPolicy"] == "Always"
    assert kidecar["image"] == "registry.example/kidecar:1.2.3"
    assert [c["name"] for c in spec["containers"]] == ["game"]
    assert spec["shareProcessNamespace"] is True and spec["serviceAccountName"] == "kidecar"
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in kidecar["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    assert kidecar["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": 5000}
    assert kidecar["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": 5000}
    assert kidecar["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert kidecar["resources"]["limits"] == {"cpu": "100m", "memory": "128Mi"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["kidecar-config"]["configMap"] == {"name": "kidecar-config"}
    assert volumes["kidecar-shared"] == {"name": "kidecar-shared", "emptyDir": {}}
    mounts = {m["name"]: m["mountPath"] for m in kidecar["volumeMounts"]}
    assert mounts == {"kidecar-config": "/opt/sidecar", "kidecar-state": "/var/lib/kidecar",
                      "kidecar-shared": "/app/downloads"}
    assert spec["containers"][0]["volumeMounts"] == [
        {"name": "kidecar-shared", "mountPath": "/app/downloads"}]


def test_after_renders_a_regular_container_and_switching_moves_it() -> None:
    after = InjectOptions(image="k:1", start_order="After")
    text = yaml.safe_dump(manifest("Deployment"))
    once = inject_text(text, after).text
    spec = next(pod_specs(yaml.safe_load(once)))[1]
    assert [c["name"] for c in spec["containers"]] == ["game", "kidecar"]
    assert "initContainers" not in spec
    assert "restartPolicy" not in spec["containers"][1]
    assert "startupProbe" not in spec["containers"][1]
    before = inject_text(once, after._replace(start_order="Before")).text
    spec = next(pod_specs(yaml.safe_load(before)))[1]
    assert [c["name"] for c in spec["containers"]] == ["game"]
    assert [c["name"] for c in spec["initContainers"]] == ["kidecar"]
    back = inject_text(before, after).text
    assert yaml.safe_load(back) == yaml.safe_load(once)


def test_native_sidecar_goes_before_existing_init_containers() -> None:
    doc = manifest("StatefulSet")
    doc["spec"]["template"]["spec"]["initContainers"] = [{"name": "migrate", "image": "m:1"}]
    spec = injected_spec("StatefulSet", doc=doc)
    assert [c["name"] for c in spec["initContainers"]] == ["kidecar", "migrate"]


MULTI = """\
# a comment before everything
apiVersion: v1
kind: Service
metadata:
  name: game   # keep me
spec:
  ports: [{port: 80}]
---
# the game
apiVersion: game.kruise.io/v1alpha1
kind: GameServerSet
metadata: {name: g}
spec:
  replicas: 1
  gameServerTemplate:
    spec:
      containers: [{name: game, image: nginx}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: untouched}   # flow style stays
data: {a: "1"}
---
apiVersion: v1
kind: List
items:
  - apiVersion: apps/v1
    kind: Deployment
    metadata: {name: d}
    spec:
      selector: {matchLabels: {a: b}}
      template:
        metadata: {labels: {a: b}}
        spec: {containers: [{name: web, image: web}]}
...
"""


def test_multi_document_order_kept_untouched_documents_byte_for_byte() -> None:
    report = inject_text(MULTI, OPTS)
    assert report.injected == ["GameServerSet/g", "List item 0 Deployment/d"]
    docs = split_documents(report.text)
    assert [yaml.safe_load(d)["kind"] for _, d in docs if yaml.safe_load(d)] == [
        "Service", "GameServerSet", "ConfigMap", "List"]
    original = split_documents(MULTI)
    assert docs[0] == original[0] and docs[2] == original[2]  # comments, flow style kept
    assert docs[1][1].startswith("# the game\n")  # a changed document keeps its header
    assert report.text.endswith("...\n")


@pytest.mark.parametrize("opts", [OPTS, InjectOptions(image="k:2", start_order="After"),
                                  InjectOptions(image="k:3", shared_dirs=("/a", "/b"))])
def test_injecting_twice_changes_nothing_byte_for_byte(opts: InjectOptions) -> None:
    text = MULTI + "---\n" + "---\n".join(yaml.safe_dump(manifest(k)) for k in KINDS)
    once = inject_text(text, opts).text
    twice = inject_text(once, opts).text
    assert once != text and twice == once


def test_existing_parts_are_respected() -> None:
    doc = manifest("Deployment")
    spec = doc["spec"]["template"]["spec"]
    spec["serviceAccountName"] = "game-sa"
    spec["volumes"] = [{"name": "kidecar-shared", "emptyDir": {"medium": "Memory"}}]
    spec["containers"][0]["volumeMounts"] = [{"name": "kidecar-shared",
                                              "mountPath": "/usr/share/nginx/html"}]
    report = inject_text(yaml.safe_dump(doc), OPTS)
    new = next(pod_specs(yaml.safe_load(report.text)))[1]
    assert new["serviceAccountName"] == "game-sa"
    assert any("keeps serviceAccountName 'game-sa'" in n for n in report.notes)
    assert {"name": "kidecar-shared", "emptyDir": {"medium": "Memory"}} in new["volumes"]
    assert new["containers"][0]["volumeMounts"] == [
        {"name": "kidecar-shared", "mountPath": "/usr/share/nginx/html"}]


def test_who_kidecar_runs_as() -> None:
    root_kill = injected_spec("Pod")["initContainers"][0]["securityContext"]
    assert root_kill["runAsUser"] == 0 and root_kill["capabilities"] == {
        "drop": ["ALL"], "add": ["KILL"]}
    doc = manifest("Pod")
    doc["spec"]["securityContext"] = {"runAsUser": 1000, "runAsGroup": 1000}
    same_uid = injected_spec("Pod", doc=doc)["initContainers"][0]["securityContext"]
    no_caps = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    assert same_uid == {"runAsUser": 1000, "runAsGroup": 1000, **no_caps}
    no_signal = injected_spec("Pod", OPTS._replace(needs_signal=False))
    assert no_signal["initContainers"][0]["securityContext"] == no_caps
    doc = manifest("Pod")
    doc["spec"]["securityContext"] = {"runAsNonRoot": True}
    report = inject_text(yaml.safe_dump(doc), OPTS)
    assert any("--run-as-user" in n for n in report.notes)
    spec = next(pod_specs(yaml.safe_load(report.text)))[1]
    # the image runs as root: under runAsNonRoot kidecar needs a non-root UID to start at all
    assert spec["initContainers"][0]["securityContext"] == {"runAsUser": 65532, **no_caps}


def test_options_from_a_sidecar_config(tmp_path: Path) -> None:
    config = tmp_path / "cm.yaml"
    config.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "my-sidecar"},
        "data": {"config.yaml": yaml.safe_dump({
            "plugins": [{"name": "file_sync", "config": {
                "srcDir": "/opt/files", "dstDir": "/app/scripts", "loadPatchType": "request",
                "request": {"url": "http://127.0.0.1:8080/reload"}}}],
            "resources": {"CPU": "200m", "Memory": "96Mi"}, "sidecarStartOrder": "After",
            "http": {"port": 5005}})}}))
    opts = options_from_config(str(config), InjectOptions(image="k:1"))
    assert opts.configmap == "my-sidecar" and opts.start_order == "After"
    assert opts.shared_dirs == ("/app/scripts",) and not opts.needs_signal
    spec = injected_spec("Deployment", opts)
    kidecar = spec["containers"][1]
    assert kidecar["resources"]["requests"] == {"cpu": "200m", "memory": "96Mi"}
    assert kidecar["ports"][0]["containerPort"] == 5005
    assert {"name": "KIDECAR_PORT", "value": "5005"} in kidecar["env"]
    assert kidecar["readinessProbe"]["httpGet"]["port"] == 5005


def test_shipped_gameserverset_is_exactly_what_inject_produces() -> None:
    text = (REPO / "config" / "gameserverset.yaml").read_text()
    opts = options_from_config(str(REPO / "config" / "sidecar-configmap.yaml"),
                               InjectOptions(image="kidecar:0.1.0"))
    assert inject_text(text, opts).text == text


@pytest.mark.parametrize("text, problem", [
    ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n", "no pod template found"),
    ("kind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n", "Pod/p: the pod template has no"),
    ("kind: Pod\nspec: {containers: [{name: a\n", "document 1 is not valid YAML"),
])
def test_bad_input_is_refused(text: str, problem: str) -> None:
    with pytest.raises(InjectError, match=problem):
        inject_text(text, OPTS)


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kidecar_supervisor.cli", "inject", *args],
                          capture_output=True, text=True, input=stdin, cwd=REPO, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_cli_in_place_twice_then_stdout(tmp_path: Path) -> None:
    path = tmp_path / "game.yaml"
    path.write_text(MULTI)
    first = _cli("-f", str(path), "--image", "k:9")
    assert first.returncode == 0, first.stderr
    assert "GameServerSet/g: kidecar (native sidecar, k:9)" in first.stderr
    once = path.read_bytes()
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    second = _cli("-f", str(path), "--image", "k:9")
    assert second.returncode == 0 and path.read_bytes() == once
    assert path.stat().st_mtime_ns == 1_000_000_000  # nothing to write: not even touched
    out = _cli("-f", "-", "-o", "-", "--image", "k:9", stdin=MULTI)
    assert out.returncode == 0 and out.stdout.encode() == once


def test_cli_bad_input_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "cm.yaml"
    original = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n"
    path.write_text(original)
    result = _cli("-f", str(path))
    assert result.returncode == 1 and "no pod template found" in result.stderr
    assert path.read_text() == original
    game = tmp_path / "g.yaml"
    game.write_text(yaml.safe_dump(manifest("Pod")))
    before = game.read_text()
    result = _cli("-f", str(game), "--game-container", "nope")
    assert result.returncode == 1 and "no container named 'nope'" in result.stderr
    assert game.read_text() == before
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("plugins: [{name: hot_update, config: {loadPatchType: carrier}}]\n")
    result = _cli("-f", str(game), "--config", str(bad_config))
    assert result.returncode == 1 and "plugins[0].config.loadPatchType" in result.stderr
    assert game.read_text() == before


# -- the real API server ------------------------------------------------------------------
def _dry_run_pod(kube_env: Any, spec: dict[str, Any], name: str) -> dict[str, Any]:
    """Create a Pod from ``spec`` with dryRun=All: full Pod validation, nothing stored."""
    session = kube_env.session()
    url = f"{kube_env.server}/api/v1/namespaces/{kube_env.namespace}/pods"
    response = session.post(url, params={"dryRun": "All"}, timeout=30, json={
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec})
    assert response.status_code == 201, response.text[:2000]
    result: dict[str, Any] = response.json()
    return result


@pytest.mark.kube
def test_injected_manifests_are_accepted_by_the_api_server(kube_env: Any) -> None:
    docs = [manifest("GameServerSet"), manifest("Deployment"), manifest("StatefulSet")]
    docs[2]["spec"]["serviceName"] = "x"
    text = inject_text("---\n".join(yaml.safe_dump(d) for d in docs), OPTS).text
    stored = kube_env.apply_yaml(text, namespace=kube_env.namespace)
    assert [o["kind"] for o in stored] == ["GameServerSet", "Deployment", "StatefulSet"]
    gss_spec = stored[0]["spec"]["gameServerTemplate"]["spec"]
    assert gss_spec["initContainers"][0]["restartPolicy"] == "Always"  # not pruned by the CRD
    deploy_spec = stored[1]["spec"]["template"]["spec"]
    assert deploy_spec["initContainers"][0]["restartPolicy"] == "Always"
    assert deploy_spec["shareProcessNamespace"] is True
    # the CRD does not validate pod templates: a dry-run Pod from it does, fully
    pod = _dry_run_pod(kube_env, gss_spec, "inject-gss-dry-run")
    assert [c["name"] for c in pod["spec"]["initContainers"]] == ["kidecar"]
    after = inject_text(yaml.safe_dump(manifest("Pod")), OPTS._replace(start_order="After"))
    pod_doc = yaml.safe_load(after.text)
    pod = _dry_run_pod(kube_env, pod_doc["spec"], "inject-after-dry-run")
    assert [c["name"] for c in pod["spec"]["containers"]] == ["game", "kidecar"]
