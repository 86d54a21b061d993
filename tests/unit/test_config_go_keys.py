"""The Go kidecar's config keys (issue 13 §1), parsed without processes: each is
accepted as its documents write it and lands where it means something; an unknown
key that neither implementation knows stays an error with its field path."""

from __future__ import annotations

import textwrap

import pytest

from kidecar_supervisor.config import notes, parse_config_text
from kidecar_supervisor.config_reader import ConfigError

SHA = "ab" * 32


def parse(text: str):  # noqa: ANN201 - SidecarConfig
    return parse_config_text(textwrap.dedent(text), "cfg.yaml")


def refused(text: str) -> ConfigError:
    with pytest.raises(ConfigError) as err:
        parse(text)
    return err.value


def test_binary_keys_of_the_go_kidecar() -> None:
    config = parse(f"""
        plugins:
        - name: kubectl-proxy
          binary:
            path: /opt/bin/kubectl
            version: "1.0.0"
            args: ["proxy", "--port=8080"]
            env: ["ENV_VAR=value"]
            permissions: "700"
            description: "This is kubectl proxy plugin"
            dependencies: [libc, ca-certificates]
            checksum: "sha256:{SHA.upper()}"
            downloadURL: https://example.invalid/kubectl
        """)
    cfg = config.plugins[0].config
    assert (cfg.version, cfg.permissions, cfg.dependencies) == ("1.0.0", 0o700,
                                                                ("libc", "ca-certificates"))
    assert cfg.sha256() == SHA and cfg.download_url == "https://example.invalid/kubectl"
    lines = notes(config)
    assert "plugins[0].binary.version: 1.0.0 (informational)" in lines
    assert any("downloadURL: fetched to /opt/bin/kubectl" in line and SHA in line
               for line in lines)


def test_a_missing_program_with_download_url_starts_the_fetch_step() -> None:
    cfg = parse("""
        plugins: [{name: p, binary: {path: /nonexistent/dir/prog, args: [a],
                   downloadURL: "http://127.0.0.1:9/prog"}}]
        """).plugins[0].config
    argv = cfg.argv()
    assert argv[1:4] == ["-m", "workers.binary", "http://127.0.0.1:9/prog"]
    assert argv[-3:] == ["--", "/nonexistent/dir/prog", "a"]


@pytest.mark.parametrize(("binary", "field", "words"), [
    ("{path: /p, checksum: md5:abc}", "binary.checksum", "must be a sha256"),
    ("{path: /p, permissions: rwx}", "binary.permissions", "octal mode"),
    ("{path: p, downloadURL: 'http://h/p'}", "binary.path", "must be absolute"),
    ("{path: /p, downloadURL: 'ftp://h/p'}", "binary.downloadURL", "http(s) URL"),
    ("{path: /p, checksums: x}", "binary.checksums", "unknown field (did you mean 'checksum'?)"),
])
def test_bad_go_binary_keys_name_the_field(binary: str, field: str, words: str) -> None:
    error = refused(f"plugins: [{{name: p, binary: {binary}}}]\n")
    assert error.path == f"plugins[0].{field}" and words in error.problem


def test_resources_other_than_cpu_and_memory() -> None:
    config = parse("resources: {CPU: 100m, Memory: 128Mi, ephemeral-storage: 1Gi, "
                   "nvidia.com/gpu: 1}\n")
    assert config.resources == {"CPU": "100m", "Memory": "128Mi",
                                "ephemeral-storage": "1Gi", "nvidia.com/gpu": "1"}
    assert refused("resources: {ephemeral-storage: lots}\n").path == "resources.ephemeral-storage"


HOT_UPDATE = """
plugins:
- name: hot_update
  config:
    loadPatchType: request
    fileDir: /app/downloads
    request: {request}
"""


@pytest.mark.parametrize(("request_cfg", "url"), [
    ("{address: 127.0.0.1, port: 3000}", "http://127.0.0.1:3000/"),
    ("{address: 'http://localhost/reload', port: 8080}", "http://localhost:8080/reload"),
    ("{address: '::1', port: 81}", "http://[::1]:81/"),
    ("{url: 'http://127.0.0.1:3000/reload'}", "http://127.0.0.1:3000/reload"),
])
def test_request_address_and_port(request_cfg: str, url: str) -> None:
    config = parse(HOT_UPDATE.format(request=request_cfg))
    assert config.plugins[0].config.request.url == url


@pytest.mark.parametrize(("request_cfg", "field", "words"), [
    ("{address: 127.0.0.1}", "request.port", "is required"),
    ("{address: 127.0.0.1, port: 0}", "request.port", "at least 1"),
    ("{address: '127.0.0.1:80', port: 81}", "request.port", "names port 80"),
    ("{address: 127.0.0.1, port: 80, url: 'http://x/'}", "request.url", "not both"),
])
def test_bad_request_address_names_the_field(request_cfg: str, field: str, words: str) -> None:
    error = refused(HOT_UPDATE.format(request=request_cfg))
    assert error.path == f"plugins[0].config.{field}" and words in error.problem


PROBE = """
plugins:
- name: http_probe
  config:
    endpoints:
    - url: http://127.0.0.1:8080
      jsonPathConfig: {{jsonPath: game.state, fieldType: string}}
      storageConfig:
        type: InKube
        inKube:
          target: {target}
          jsonPath: /spec/opsState
          markerPolices:
          - state: idle
            gameServerOpsState: None
            jsonPathConfigs:
            - {{jsonPath: /spec/updatePriority, fieldType: int, value: 7}}
"""


def test_probe_keys_of_the_go_kidecar() -> None:
    target = "{group: game.kruise.io, version: v1alpha1, resource: gameservers, name: x, podOwner: true}"
    endpoint = parse(PROBE.format(target=target)).plugins[0].config.endpoints[0]
    assert endpoint.storage.target.pod_owner
    assert endpoint.storage.marker_policies[0].target_values == (("/spec/updatePriority", "7"),)
    assert endpoint.json_path.path.find({"game": {"state": "idle"}}) == "idle"
    # podOwner alone is a whole target
    alone = parse(PROBE.format(target="{podOwner: true}")).plugins[0].config.endpoints[0]
    assert alone.storage.target.pod_owner


def test_a_target_without_pod_owner_still_needs_its_name() -> None:
    error = refused(PROBE.format(target="{version: v1, resource: pods}"))
    assert error.path.endswith("inKube.target.name") and "is required" in error.problem


def test_json_path_configs_need_a_pointer() -> None:
    text = PROBE.format(target="{podOwner: true}").replace("/spec/updatePriority",
                                                           "spec.updatePriority")
    error = refused(text)
    assert error.path.endswith("markerPolices[0].jsonPathConfigs[0].jsonPath")
    assert "JSON pointer" in error.problem


SIDECARCONFIG = """\
apiVersion: serverless.vke.volcengine.com/v1alpha1
kind: SidecarConfig
metadata: {name: game}
spec:
  injection: {selector: {matchLabels: {app: game}}, injectKidecar: true}
  kidecar:
    restartPolicy: Never
    plugins:
    - name: tool
      binary: {path: /bin/sleep, args: ["${SECONDS_TO_SLEEP}"], version: "2"}
"""


def test_a_sidecarconfig_is_read_from_spec_kidecar() -> None:
    config = parse_config_text(SIDECARCONFIG, "sc.yaml", environ={"SECONDS_TO_SLEEP": "5"})
    assert config.restart.policy == "Never"
    assert config.plugins[0].config.args == ("5",) and config.plugins[0].field_path == \
        "spec.kidecar.plugins[0]"


@pytest.mark.parametrize(("change", "path", "words"), [
    (("restartPolicy: Never", "restartPolicy: Never\n    restartpolicy: Always"),
     "spec.kidecar", "on line 7 and line 8"),
    (("  kidecar:\n", "  kidecars:\n"), "spec.kidecars", "unknown field"),
    (("injectKidecar: true", "injectKidecars: true"), "spec.injection.injectKidecars",
     "did you mean 'injectKidecar'?"),
    (("version: \"2\"}", "version: \"2\", size: 1}"), "spec.kidecar.plugins[0].binary.size",
     "unknown field"),
])
def test_sidecarconfig_errors_name_the_field_and_line(change: tuple[str, str], path: str,
                                                      words: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config_text(SIDECARCONFIG.replace(*change), "sc.yaml",
                          environ={"SECONDS_TO_SLEEP": "5"})
    assert err.value.path == path and words in err.value.problem
