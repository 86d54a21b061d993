"""``kidecar rollout start|status|pause|resume|abort`` (the CLI of the rollout driver).

Exit codes: 0 the rollout succeeded (every selected pod runs the version), 1 it
aborted (``--wait`` prints which pods failed and why), 2 it completed but
skipped busy pods or had failures within ``--max-failures``, 3 a usage or API error.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, TextIO

from kidecar_supervisor.rollout import plan
from kidecar_supervisor.rollout.driver import Driver, failed_pods
from kidecar_supervisor.rollout.fleet import Fleet
from kidecar_supervisor.rollout.record import (
    PREFIX,
    TERMINAL,
    RecordExists,
    RecordStore,
    RolloutRecord,
)
from kidecar_supervisor.rollout.spec import RolloutSpec, SpecError, gameserverset_selector
from kidecar_supervisor.storage.kube_api import KubeClient, KubeError

EXIT_USAGE = 3
USER_AGENT = "kidecar-rollout/0.1"


def run_cli(args: argparse.Namespace) -> int:
    try:
        client = KubeClient.from_environment(kubeconfig=args.kubeconfig)
        client.user_agent = USER_AGENT  # tells the driver's requests apart in audit logs
        records = RecordStore(client, args.namespace)
        if args.rollout_command == "start":
            return _start(args, client, records)
        if args.rollout_command == "status":
            return _status(args, records)
        return _control(args, client, records)
    except (SpecError, RecordExists) as exc:
        print(f"kidecar rollout: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (KubeError, RuntimeError) as exc:
        print(f"kidecar rollout: {exc}", file=sys.stderr)
        return EXIT_USAGE


def spec_from_args(args: argparse.Namespace) -> RolloutSpec:
    selector = (gameserverset_selector(args.gameserverset) if args.gameserverset
                else args.selector)
    return RolloutSpec(
        name=args.name, namespace=args.namespace, selector=selector, version=args.version,
        url=args.url, sha256=args.sha256, batch_size=args.batch_size,
        pause_seconds=args.pause_seconds, max_failures=args.max_failures,
        batch_timeout_seconds=args.batch_timeout_seconds,
        idle_states=tuple(s.strip() for s in args.idle_states.split(",") if s.strip()),
        idle_timeout_seconds=args.idle_timeout_seconds, force=args.force,
        desired_annotation=args.desired_annotation, result_annotation=args.result_annotation,
        poll_seconds=args.poll_seconds).validate()


def _start(args: argparse.Namespace, client: KubeClient, records: RecordStore) -> int:
    spec = spec_from_args(args)
    bar = ProgressBar(sys.stderr) if args.wait and sys.stderr.isatty() else None
    driver = Driver(records, Fleet(client, args.namespace), spec,
                    say=bar.say if bar else _line, progress=bar.show if bar else None)
    outcome = driver.run(wait=args.wait)
    if bar:
        bar.close()
    if outcome.phase in TERMINAL:
        print(summary_text(outcome.record))
    return outcome.exit_code


def _status(args: argparse.Namespace, records: RecordStore) -> int:
    record = records.get(args.name)
    if record is None:
        print(f"kidecar rollout: no rollout {args.name!r} in namespace {args.namespace!r} "
              f"(ConfigMap {PREFIX}{args.name})", file=sys.stderr)
        return EXIT_USAGE
    if args.output == "json":
        print(json.dumps(status_document(record), indent=2, sort_keys=True))
    else:
        print(summary_text(record))
    return 0


def _control(args: argparse.Namespace, client: KubeClient, records: RecordStore) -> int:
    record = records.set_control(args.name, args.rollout_command)
    if args.rollout_command == "abort" and record.phase not in TERMINAL:
        # no driver may be running: abort now (a running driver's abort is the same writes)
        Driver(records, Fleet(client, args.namespace), record.spec, say=_line)._pass(record)
        record = records.get(args.name) or record
    print(f"rollout {args.name}: {args.rollout_command} requested; phase {record.phase}")
    return 0


def status_document(record: RolloutRecord) -> dict[str, Any]:
    """``status -o json``: spec, status, counts, batches and every pod's entry."""
    batches: dict[int, dict[str, int]] = {}
    for entry in record.entries.values():
        if entry.batch:
            batch = batches.setdefault(entry.batch, {})
            batch[entry.state] = batch.get(entry.state, 0) + 1
    return {"name": record.spec.name, "namespace": record.spec.namespace,
            "spec": record.spec.to_dict(), "status": record.status(),
            "control": record.control, "counts": plan.counts(record.entries),
            "batches": [{"batch": n, **batches[n]} for n in sorted(batches)],
            "pods": {n: {"state": e.state, "batch": e.batch, "reason": e.reason,
                         "previous": e.previous}
                     for n, e in sorted(record.entries.items())}}


def summary_text(record: RolloutRecord) -> str:
    counts = plan.counts(record.entries)
    total = len(record.entries)
    lines = [f"rollout {record.spec.name} ({record.spec.namespace}): {record.phase}; "
             f"version {record.spec.version}; batch {record.batch}; "
             f"{counts.get(plan.DONE, 0)}/{total} done"
             + (f"; {record.message}" if record.message else "")]
    lines.append("  " + bar(counts.get(plan.DONE, 0), total) + f" {counts.get(plan.DONE, 0)}"
                 f"/{total} done, {counts.get(plan.FAILED, 0)} failed")
    doc = status_document(record)
    for batch in doc["batches"]:
        parts = ", ".join(f"{v} {k}" for k, v in sorted(batch.items()) if k != "batch")
        lines.append(f"  batch {batch['batch']}: {parts}")
    for name, why in failed_pods(record):
        lines.append(f"  failed {name}: {why}")
    for name, entry in sorted(record.entries.items()):
        if entry.state in (plan.SKIPPED, plan.DEFERRED):
            lines.append(f"  {entry.state} {name}: {entry.reason}")
    return "\n".join(lines)


def bar(done: int, total: int, width: int = 30) -> str:
    """``[#####-----]``: ``done`` of ``total`` in ``width`` characters."""
    filled = int(width * done / total) if total else width
    return f"[{'#' * filled}{'-' * (width - filled)}]"


def _line(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


class ProgressBar:
    """One redrawn line on a terminal: done/total, failures, batch, phase."""

    def __init__(self, out: TextIO, width: int = 30) -> None:
        self.out = out
        self.width = width

    def show(self, record: RolloutRecord) -> None:
        counts = plan.counts(record.entries)
        total = max(1, len(record.entries))
        done = counts.get(plan.DONE, 0)
        self.out.write(f"\r{bar(done, total, self.width)} {done}/{total} "
                       f"done, {counts.get(plan.FAILED, 0)} failed, batch {record.batch}, "
                       f"{record.phase}   ")
        self.out.flush()

    def say(self, text: str) -> None:
        self.out.write("\r\x1b[K" + text + "\n")
        self.out.flush()

    def close(self) -> None:
        self.out.write("\n")
        self.out.flush()
