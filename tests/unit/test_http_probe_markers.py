"""Policy resolution (pure logic): which markers a state implies, across endpoints."""

from __future__ import annotations

from kidecar_supervisor.storage.base import MarkerPolicy, StorageConfig, TargetRef
from workers.http_probe.markers import (
    DEFAULT_TARGET_PATH,
    POLICY,
    RAW,
    STALE,
    Claim,
    FieldKey,
    endpoint_claims,
    is_valid_label_value,
    is_valid_qualified_name,
    plan_writes,
    resolve,
    sanitize_label_value,
    target_field,
)

IDLE = MarkerPolicy("idle", labels=(("gameserver-idle", "true"),),
                    annotations=(("controller.kubernetes.io/pod-deletion-cost", "-10"),))
BUSY = MarkerPolicy("busy", labels=(("gameserver-idle", "false"), ("busy", "yes")))
DELETE = MarkerPolicy("WaitToBeDeleted", game_server_ops_state="WaitToBeDeleted",
                      annotations=(("deleting", "true"),))
NONE = MarkerPolicy("None", game_server_ops_state="None")


def storage(*policies: MarkerPolicy, **kw: object) -> StorageConfig:
    return StorageConfig(type="InKube", marker_policies=policies, **kw)  # type: ignore[arg-type]


def label(key: str) -> FieldKey:
    return FieldKey("InKube", "label", key)


def annotation(key: str) -> FieldKey:
    return FieldKey("InKube", "annotation", key)


OPS = target_field(storage())


def values(claims: dict[FieldKey, Claim]) -> dict[FieldKey, str | None]:
    return {f: c.value for f, c in claims.items()}


# -- one endpoint -----------------------------------------------------------------
def test_entering_a_state_applies_its_markers_and_removes_other_policies_keys() -> None:
    cfg = storage(IDLE, BUSY, DELETE)
    assert values(endpoint_claims(cfg, "busy")) == {
        label("gameserver-idle"): "false",
        label("busy"): "yes",
        annotation("controller.kubernetes.io/pod-deletion-cost"): None,
        annotation("deleting"): None,
    }
    assert values(endpoint_claims(cfg, "idle")) == {
        label("gameserver-idle"): "true",
        label("busy"): None,
        annotation("controller.kubernetes.io/pod-deletion-cost"): "-10",
        annotation("deleting"): None,
    }


def test_game_server_ops_state_goes_to_the_default_target() -> None:
    claims = endpoint_claims(storage(DELETE, NONE), "WaitToBeDeleted")
    assert claims[OPS] == Claim("WaitToBeDeleted", POLICY)
    assert OPS.key == DEFAULT_TARGET_PATH == "/spec/opsState"
    assert endpoint_claims(storage(DELETE, NONE), "None")[OPS] == Claim("None", POLICY)


def test_state_without_policy_updates_only_raw_keys_and_leaves_target() -> None:
    cfg = storage(DELETE, annotation_key="http_probe", label_key="probe-state")
    claims = endpoint_claims(cfg, "something else")
    assert OPS not in claims
    assert claims[annotation("http_probe")] == Claim("something else", RAW)
    assert claims[label("probe-state")] == Claim("something-else", RAW)
    # keys of policies not matched are removed, so nothing stale survives
    assert claims[annotation("deleting")] == Claim(None, STALE)


def test_explicit_target_and_json_path_receive_the_raw_state() -> None:
    ref = TargetRef("game.kruise.io", "v1alpha1", "gameservers", "gs-1", "ns")
    cfg = StorageConfig(type="InKube", target=ref, json_path="/spec/opsState")
    claims = endpoint_claims(cfg, "WaitToBeDeleted")
    field = target_field(cfg)
    assert claims == {field: Claim("WaitToBeDeleted", RAW)}
    assert field.scope == "InKube:game.kruise.io/v1alpha1/gameservers/ns/gs-1"


def test_explicit_target_with_policies_writes_only_matched_states() -> None:
    ref = TargetRef("game.kruise.io", "v1alpha1", "gameservers", "gs-1", "ns")
    cfg = StorageConfig(type="InKube", target=ref, json_path="/spec/opsState",
                        marker_policies=(IDLE, DELETE))
    assert endpoint_claims(cfg, "idle")[target_field(cfg)] == Claim("idle", POLICY)
    assert endpoint_claims(cfg, "WaitToBeDeleted")[target_field(cfg)].value == "WaitToBeDeleted"
    assert target_field(cfg) not in endpoint_claims(cfg, "other")


def test_default_target_spelled_out_is_the_same_field() -> None:
    ref = TargetRef("game.kruise.io", "v1alpha1", "gameservers",
                    "${SELF:POD_NAME}", "${SELF:POD_NAMESPACE}")
    explicit = StorageConfig(type="InKube", target=ref, json_path="/spec/opsState")
    assert target_field(explicit) == OPS


def test_no_state_yet_and_metrics_claim_nothing() -> None:
    assert endpoint_claims(storage(IDLE), None) == {}
    assert endpoint_claims(StorageConfig(type="HTTPMetric"), "3") == {}


def test_policy_beats_raw_label_key_on_the_same_key() -> None:
    cfg = storage(IDLE, label_key="gameserver-idle")
    assert endpoint_claims(cfg, "idle")[label("gameserver-idle")] == Claim("true", POLICY)
    assert endpoint_claims(cfg, "other")[label("gameserver-idle")] == Claim("other", RAW)


# -- label syntax ---------------------------------------------------------------------
def test_label_values_are_sanitized_or_removed() -> None:
    assert sanitize_label_value("idle") == "idle"
    assert sanitize_label_value("Wait To Be Deleted!") == "Wait-To-Be-Deleted"
    assert sanitize_label_value('{"a":1}') == "a-1"
    assert sanitize_label_value("x" * 80) == "x" * 63
    assert sanitize_label_value("") == ""
    assert sanitize_label_value("!!!") is None
    for state in ("Wait To Be Deleted!", '{"a":1}', "-a-", "é" * 10 + "z"):
        cleaned = sanitize_label_value(state)
        assert cleaned is None or is_valid_label_value(cleaned)


def test_qualified_names() -> None:
    assert is_valid_qualified_name("controller.kubernetes.io/pod-deletion-cost")
    assert is_valid_qualified_name("gameserver-idle")
    assert not is_valid_qualified_name("Bad_Prefix/x")
    assert not is_valid_qualified_name("/x")
    assert not is_valid_qualified_name("a/")
    assert not is_valid_qualified_name("has space")
    assert not is_valid_qualified_name("x" * 64)


# -- several endpoints ------------------------------------------------------------------
def test_first_endpoint_with_a_matching_policy_wins_the_target() -> None:
    first = storage(DELETE)  # knows only WaitToBeDeleted
    second = storage(NONE, MarkerPolicy("WaitToBeDeleted", game_server_ops_state="Maintaining"))
    # first has no policy for its state: the second's policy decides
    desired = resolve([endpoint_claims(first, "None"), endpoint_claims(second, "None")])
    assert desired[OPS].value == "None" and desired[OPS].owner == 1
    # both match: config order decides, whatever the order the states arrived in
    desired = resolve([endpoint_claims(first, "WaitToBeDeleted"),
                       endpoint_claims(second, "WaitToBeDeleted")])
    assert desired[OPS].value == "WaitToBeDeleted" and desired[OPS].owner == 0


def test_a_removal_never_beats_another_endpoints_policy() -> None:
    first = storage(IDLE, BUSY)
    second = storage(MarkerPolicy("full", labels=(("busy", "full"),)))
    # first is idle: it wants "busy" removed; second's policy sets it
    desired = resolve([endpoint_claims(first, "idle"), endpoint_claims(second, "full")])
    assert desired[label("busy")].value == "full" and desired[label("busy")].owner == 1
    # nobody sets it any more: the first endpoint knowing the key removes it
    desired = resolve([endpoint_claims(first, "idle"), endpoint_claims(second, "empty")])
    assert desired[label("busy")].value is None and desired[label("busy")].owner == 0


# -- writes -------------------------------------------------------------------------------
def test_plan_writes_only_what_differs_from_the_last_write() -> None:
    cfg = storage(IDLE, BUSY, DELETE, annotation_key="http_probe")
    desired = resolve([endpoint_claims(cfg, "busy")])
    plan = plan_writes(desired, {})
    update, fields = plan[0]
    assert update.labels == {"gameserver-idle": "false", "busy": "yes"}
    assert update.annotations == {
        "controller.kubernetes.io/pod-deletion-cost": None, "deleting": None, "http_probe": "busy",
    }
    assert update.target_value is None
    written = dict(fields)
    assert plan_writes(desired, written) == {}  # steady state: nothing to write

    plan = plan_writes(resolve([endpoint_claims(cfg, "WaitToBeDeleted")]), written)
    update, _ = plan[0]
    assert update.labels == {"gameserver-idle": None, "busy": None}
    assert update.annotations == {"deleting": "true", "http_probe": "WaitToBeDeleted"}
    assert update.target_value == "WaitToBeDeleted"


def test_plan_groups_fields_by_owner() -> None:
    first = storage(DELETE)
    second = storage(IDLE)
    desired = resolve([endpoint_claims(first, "WaitToBeDeleted"), endpoint_claims(second, "idle")])
    plan = plan_writes(desired, {})
    assert plan[0][0].target_value == "WaitToBeDeleted"
    assert plan[0][0].labels == {}
    assert plan[1][0].labels == {"gameserver-idle": "true"}
    assert plan[1][0].target_value is None


def test_ownership_moving_back_rewrites_the_value() -> None:
    """Per-field bookkeeping: A sets x, B overwrites, A wins again -> A must rewrite."""
    a_cfg = storage(MarkerPolicy("on", labels=(("x", "a"),)), MarkerPolicy("off"))
    b_cfg = storage(MarkerPolicy("on", labels=(("x", "b"),)), MarkerPolicy("off"))
    written: dict[FieldKey, str | None] = {}
    for a_state, b_state, expect in [("on", "off", "a"), ("off", "on", "b"), ("on", "on", "a")]:
        desired = resolve([endpoint_claims(a_cfg, a_state), endpoint_claims(b_cfg, b_state)])
        for _, (_, fields) in plan_writes(desired, written).items():
            written.update(fields)
        assert written[label("x")] == expect
