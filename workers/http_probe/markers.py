"""Which markers a probed state implies, resolved across endpoints. Pure logic.

Rules (OpenKruise PodProbeMarker semantics, extended to several endpoints):

* An endpoint *in* state S claims, for every field it knows about:

  - the labels/annotations of its policy whose ``state`` is S (rank POLICY);
  - ``gameServerOpsState`` of that policy for its target field (rank POLICY);
    with an explicit ``jsonPath`` and no ``gameServerOpsState`` the raw state
    goes to the target (rank POLICY when a policy matched, RAW when the
    endpoint has no policies at all; with policies but no match: no claim);
  - the raw state for ``annotationKey`` / ``labelKey`` (rank RAW; a label
    value is sanitized into a valid label value, or removed if nothing valid
    is left);
  - *removal* (None) of every label/annotation key that its other policies
    set and S's policy does not (rank STALE), so no stale marker survives.

* The target field is never removed: a state without a policy leaves it as is.
* An endpoint with no state yet (nothing applied) claims nothing.
* Several endpoints claiming the same field: the lowest (rank, config index)
  wins — i.e. the first endpoint in config order with a matching policy, then
  the first raw claim, then the first removal. Deterministic, so endpoints
  never take turns overwriting each other.

A field is identified by the object it lives on: pod labels/annotations per
storage type (every InKube endpoint writes the same pod), the target per
(type, target object, JSON pointer); an absent ``target`` means this pod's
GameServer, spelled with the same templates an explicit one would use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kidecar_supervisor.plugin_api import MarkerPolicy, MarkerUpdate, StorageConfig, TargetRef

#: ranks: lower wins
POLICY, RAW, STALE = 0, 1, 2

DEFAULT_TARGET = TargetRef(
    group="game.kruise.io", version="v1alpha1", resource="gameservers",
    name="${SELF:POD_NAME}", namespace="${SELF:POD_NAMESPACE}",
)
DEFAULT_TARGET_PATH = "/spec/opsState"

_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@dataclass(frozen=True)
class FieldKey:
    """One marker field: ``kind`` is label | annotation | target | pointer (jsonPathConfigs)."""

    scope: str
    kind: str
    key: str


@dataclass(frozen=True)
class Claim:
    """What one endpoint wants a field to be (None: removed)."""

    value: str | None
    rank: int


@dataclass(frozen=True)
class Desired:
    """The resolved value of a field and the endpoint (config index) that owns it."""

    value: str | None
    owner: int


# -- Kubernetes syntax ---------------------------------------------------------
def is_valid_label_value(value: str) -> bool:
    return len(value) <= 63 and _LABEL_VALUE.fullmatch(value) is not None


def is_valid_qualified_name(key: str) -> bool:
    """A label/annotation key: ``[prefix/]name`` as Kubernetes validates it."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return False
    return 0 < len(name) <= 63 and _NAME_PART.fullmatch(name) is not None


def sanitize_label_value(state: str) -> str | None:
    """``state`` made into a valid label value; None when nothing valid is left.

    Runs of invalid characters become one ``-``, the value is cut to 63 characters and
    trimmed to start and end with an alphanumeric character.
    """
    if is_valid_label_value(state):
        return state
    cleaned = re.sub(r"[^-A-Za-z0-9_.]+", "-", state)[:63]
    cleaned = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", cleaned)
    return cleaned or None


# -- one endpoint ---------------------------------------------------------------
def policy_for(cfg: StorageConfig, state: str) -> MarkerPolicy | None:
    """The policy whose ``state`` equals ``state`` exactly (first one wins)."""
    return next((p for p in cfg.marker_policies if p.state == state), None)


def pod_scope(cfg: StorageConfig) -> str:
    return cfg.type


def target_field(cfg: StorageConfig) -> FieldKey:
    ref = cfg.target or DEFAULT_TARGET
    obj = f"{ref.group}/{ref.version}/{ref.resource}/{ref.namespace}/{ref.name}"
    return FieldKey(f"{cfg.type}:{obj}", "target", cfg.json_path or DEFAULT_TARGET_PATH)


def endpoint_claims(cfg: StorageConfig, state: str | None) -> dict[FieldKey, Claim]:
    """Every field the endpoint with storage ``cfg`` wants, being in ``state``."""
    if state is None or cfg.type == "HTTPMetric":
        return {}
    scope = pod_scope(cfg)
    claims: dict[FieldKey, Claim] = {}
    for kind, key in _policy_keys(cfg):
        claims[FieldKey(scope, kind, key)] = Claim(None, STALE)
    if cfg.annotation_key:
        claims[FieldKey(scope, "annotation", cfg.annotation_key)] = Claim(state, RAW)
    if cfg.label_key:
        claims[FieldKey(scope, "label", cfg.label_key)] = Claim(sanitize_label_value(state), RAW)
    policy = policy_for(cfg, state)
    if policy is not None:
        for key, value in policy.labels:
            claims[FieldKey(scope, "label", key)] = Claim(value, POLICY)
        for key, value in policy.annotations:
            claims[FieldKey(scope, "annotation", key)] = Claim(value, POLICY)
    target = _target_claim(cfg, state, policy)
    if target is not None:
        claims[target_field(cfg)] = target
    for pointer, value in policy.target_values if policy is not None else ():
        claims[pointer_field(cfg, pointer)] = Claim(value, POLICY)
    return claims


def pointer_field(cfg: StorageConfig, pointer: str) -> FieldKey:
    """A field of the target named by a policy's ``jsonPathConfigs`` (the Go kidecar's):
    the target field itself when the pointer is the same, else a field of its own."""
    main = target_field(cfg)
    return main if pointer == main.key else FieldKey(main.scope, "pointer", pointer)


def pointer_writes(desired: dict[FieldKey, Desired], written: dict[FieldKey, str | None]
                   ) -> dict[tuple[int, str], tuple[str, FieldKey]]:
    """The ``jsonPathConfigs`` values still to write: (owner, pointer) -> (value, field).

    They are not part of ``plan_writes``' one update per endpoint, whose target
    value goes to the endpoint's own jsonPath; each is written as that endpoint's
    target with the pointer as its jsonPath. Never removed, as in the Go kidecar.
    """
    out: dict[tuple[int, str], tuple[str, FieldKey]] = {}
    for field, want in desired.items():
        if field.kind != "pointer" or want.value is None:
            continue
        if field in written and written[field] == want.value:
            continue
        out[(want.owner, field.key)] = (want.value, field)
    return out


def _policy_keys(cfg: StorageConfig) -> list[tuple[str, str]]:
    keys: list[tuple[str, str]] = []
    for policy in cfg.marker_policies:
        keys += [("label", k) for k, _ in policy.labels]
        keys += [("annotation", k) for k, _ in policy.annotations]
    return keys


def _target_claim(cfg: StorageConfig, state: str, policy: MarkerPolicy | None) -> Claim | None:
    if policy is not None and policy.game_server_ops_state:
        return Claim(policy.game_server_ops_state, POLICY)
    if not cfg.json_path:
        return None
    if policy is not None:
        return Claim(state, POLICY)
    return Claim(state, RAW) if not cfg.marker_policies else None


# -- all endpoints ----------------------------------------------------------------
def resolve(claims: list[dict[FieldKey, Claim]]) -> dict[FieldKey, Desired]:
    """Per field, the claim of lowest (rank, endpoint index): the first endpoint wins."""
    best: dict[FieldKey, tuple[int, int, str | None]] = {}
    for index, endpoint in enumerate(claims):
        for field, claim in endpoint.items():
            current = best.get(field)
            if current is None or (claim.rank, index) < current[:2]:
                best[field] = (claim.rank, index, claim.value)
    return {field: Desired(value, owner) for field, (_, owner, value) in best.items()}


def plan_writes(
    desired: dict[FieldKey, Desired], written: dict[FieldKey, str | None]
) -> dict[int, tuple[MarkerUpdate, dict[FieldKey, str | None]]]:
    """The writes that bring ``written`` to ``desired``, grouped by owning endpoint.

    Only fields whose desired value differs from the last written one are
    included, so a steady state plans nothing. Each entry also carries the
    fields it covers, to be merged into ``written`` once the write succeeded.
    """
    plan: dict[int, tuple[MarkerUpdate, dict[FieldKey, str | None]]] = {}
    for field, want in sorted(desired.items(), key=lambda item: _sort_key(item[0])):
        if field.kind == "pointer" or (field in written and written[field] == want.value):
            continue  # pointer fields: pointer_writes
        update, fields = plan.setdefault(want.owner, (MarkerUpdate(), {}))
        fields[field] = want.value
        if field.kind == "label":
            update.labels[field.key] = want.value
        elif field.kind == "annotation":
            update.annotations[field.key] = want.value
        else:
            update.target_value = want.value
    return plan


def _sort_key(field: FieldKey) -> tuple[str, str, str]:
    return (field.kind, field.scope, field.key)
