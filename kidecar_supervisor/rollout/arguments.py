"""The arguments of ``kidecar rollout`` (stdlib only: cli.py builds its parser for every
command, ``kidecar run`` included, so nothing here may import the API client)."""

from __future__ import annotations

import argparse

from kidecar_supervisor.rollout.spec import DESIRED_ANNOTATION, RESULT_ANNOTATION


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``rollout`` subcommands (registered by cli.py)."""
    sub = parser.add_subparsers(dest="rollout_command", required=True, metavar="ACTION")
    start = sub.add_parser("start", help="start (or continue) a rollout of a version")
    _common(start)
    which = start.add_mutually_exclusive_group(required=True)
    which.add_argument("--gameserverset", help="the GameServerSet whose pods are updated")
    which.add_argument("--selector", help="a label selector of the pods to update")
    start.add_argument("--version", required=True)
    start.add_argument("--url", required=True)
    start.add_argument("--sha256", default="")
    start.add_argument("--batch-size", default="25%", help="pods per batch: N or P%% (25%%)")
    start.add_argument("--pause-seconds", type=float, default=0.0)
    start.add_argument("--max-failures", type=int, default=0)
    start.add_argument("--batch-timeout-seconds", type=float, default=300.0)
    start.add_argument("--idle-states", default="None",
                       help="GameServer opsStates that may be updated (None[,X...])")
    start.add_argument("--idle-timeout-seconds", type=float, default=3600.0)
    start.add_argument("--force", action="store_true",
                       help="update busy game servers after the idle timeout (default: skip)")
    start.add_argument("--wait", action="store_true",
                       help="follow the rollout to its end (exit 0 done, 1 aborted)")
    start.add_argument("--desired-annotation", default=DESIRED_ANNOTATION)
    start.add_argument("--result-annotation", default=RESULT_ANNOTATION)
    start.add_argument("--poll-seconds", type=float, default=1.0)
    status = sub.add_parser("status", help="show a rollout's progress")
    _common(status)
    status.add_argument("-o", "--output", choices=("text", "json"), default="text")
    for action in ("pause", "resume", "abort"):
        _common(sub.add_parser(action, help=f"{action} a rollout (any driver obeys)"))


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("-n", "--namespace", required=True)
    parser.add_argument("--kubeconfig", default=None,
                        help="kubeconfig (default: in-cluster, then $KUBECONFIG)")
