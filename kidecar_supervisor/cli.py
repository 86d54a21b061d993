"""The ``kidecar`` command: run the sidecar, validate configs, talk to a running one.

Exit codes scripts can rely on: 0 success; 1 the operation failed (bad config,
unhealthy, refused); 2 usage error; 3 the sidecar could not be reached.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from kidecar_supervisor.protocol import Op
from kidecar_supervisor.protocol import request as control_request

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNREACHABLE = 0, 1, 2, 3
DEFAULT_STATE_DIR = "/var/lib/kidecar"


def _default_url() -> str:
    return os.environ.get("KIDECAR_URL") or f"http://127.0.0.1:{os.environ.get('KIDECAR_PORT', '5000')}"


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command; only ``command``'s own arguments when one is named.

    ``inject``, ``migrate`` and ``rollout`` define their arguments in their own
    modules. ``kidecar run`` does not import them: the supervisor's pages are
    shared by every process it forks, and code none of them runs is memory
    each pod pays for (issue 16).
    """
    parser = argparse.ArgumentParser(
        prog="kidecar", description="Sidecar for game servers on Kubernetes (OpenKruise Game).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the sidecar (supervisor, HTTP API, plugins)")
    run.add_argument("--config", help="config file (default: $KIDECAR_CONFIG or "
                                      "/opt/sidecar/config.yaml)")
    run.add_argument("--port", type=int, help="HTTP port (default: $KIDECAR_PORT, config "
                                              "http.port, 5000)")
    run.add_argument("--host", help="HTTP bind address (default: config http.host, 0.0.0.0)")
    run.add_argument("--state-dir", help="local state: results, journal, control socket "
                                         f"(default: $KIDECAR_STATE_DIR or {DEFAULT_STATE_DIR})")
    run.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    run.add_argument("--empty", action="store_true",
                     default=os.environ.get("KIDECAR_EMPTY", "").lower() in ("1", "true", "yes"),
                     help="do nothing but wait (SidecarSet hotUpgradeEmptyImage); also KIDECAR_EMPTY=1")

    validate = commands.add_parser(
        "validate", help="check a config file; exit 0 or 1",
        description="Check a config document. What only this machine decides (a program "
                    "path, an unset ${VAR}) is a warning, since configs are often checked "
                    "away from the image; --this-machine makes it an error, as for run.")
    validate.add_argument("config", help="config file to check")
    validate.add_argument("--this-machine", action="store_true",
                          help="also fail on what 'kidecar run' would refuse on this machine "
                               "(missing program, unset ${VAR}, ...)")

    for name, text in (("status", "show the plugins of a running sidecar"),
                       ("restart", "restart one plugin of a running sidecar"),
                       ("hot-update", "ask a running sidecar for a hot update"),
                       ("rollback", "roll a running sidecar's hot update back to a kept "
                                    "version (default: the previous one)")):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("--sidecar", default=_default_url(), metavar="URL",
                         help="the sidecar's base URL (default: $KIDECAR_URL or "
                              "http://127.0.0.1:$KIDECAR_PORT)")
        sub.add_argument("--token", default=os.environ.get("KIDECAR_TOKEN", ""),
                         help="bearer token (default: $KIDECAR_TOKEN)")
        sub.add_argument("--json", action="store_true", help="print the raw JSON answer")
        if name == "restart":
            sub.add_argument("name", help="plugin name")
        if name == "hot-update":
            sub.add_argument("--version", required=True, dest="update_version",
                             help="version, e.g. v2")
            sub.add_argument("--url", dest="file_url", required=True,
                             help="URL of the new file (http/https)")
            sub.add_argument("--sha256", help="expected sha256 of the file")
        if name == "rollback":
            sub.add_argument("--version", dest="rollback_version",
                             help="a kept version (GET /hot-update lists them)")

    health = commands.add_parser(
        "health", help="ask this container's own supervisor (control socket) if it is healthy")
    health.add_argument("--state-dir", help="state dir of the sidecar to ask")
    health.add_argument("--ready", action="store_true", help="check readiness instead")

    inject = commands.add_parser(
        "inject", help="add kidecar to every pod template of a manifest file (idempotent)")
    migrate = commands.add_parser(
        "migrate", help="print the Go kidecar's SidecarConfig as a kidecar ConfigMap + "
                        "OpenKruise SidecarSet (for kubectl apply)")
    rollout = commands.add_parser(
        "rollout", help="roll a version out to a workload's pods in batches (docs/rollout.md)")
    if command in (None, "inject"):
        from kidecar_supervisor.inject import add_arguments as add_inject_arguments

        add_inject_arguments(inject)
    if command in (None, "migrate"):
        from kidecar_supervisor.migrate import add_arguments as add_migrate_arguments

        add_migrate_arguments(migrate)
    if command in (None, "rollout"):
        from kidecar_supervisor.rollout.arguments import add_arguments as add_rollout_arguments

        add_rollout_arguments(rollout)
    return parser


def _command_named(argv: list[str]) -> str | None:
    """The subcommand in ``argv`` (its first word not an option), if any."""
    return next((arg for arg in argv if not arg.startswith("-")), None)


def main(argv: list[str] | None = None) -> int:
    words = sys.argv[1:] if argv is None else argv
    args = build_parser(_command_named(words)).parse_args(words)
    handlers = {"run": cmd_run, "validate": cmd_validate, "status": cmd_status,
                "restart": cmd_restart, "hot-update": cmd_hot_update, "health": cmd_health,
                "rollback": cmd_rollback,
                "inject": cmd_inject, "migrate": cmd_migrate, "rollout": cmd_rollout}
    return int(handlers[args.command](args))


def _state_dir(value: str | None) -> Path:
    return Path(value or os.environ.get("KIDECAR_STATE_DIR") or DEFAULT_STATE_DIR).absolute()


def cmd_run(args: argparse.Namespace) -> int:
    # first of all, while this is the only thread and nothing is forked: a root
    # kidecar keeps only KIDECAR_KEEP_CAPABILITIES (the image's least privilege)
    from kidecar_supervisor.privileges import PrivilegeError, drop_to

    try:
        dropped = drop_to()
    except PrivilegeError as exc:
        print(f"kidecar: {exc}", file=sys.stderr)
        return EXIT_FAILED
    # requests' charset detector is never used by kidecar: not loaded unless asked for
    from kidecar_supervisor.deferred_modules import defer_unused

    defer_unused()
    # the supervisor imports what several children use *before* it forks them, so
    # those pages are shared (PSS) instead of loaded again in each child; the HTTP
    # stack (flask, werkzeug, gunicorn, prometheus_client) and the stores' backends
    # (sqlite3 for Local, the Kubernetes client for InKube) are the HTTP child's alone
    # and are imported there, when used: pages one child touches cost less there, and
    # an InKube sidecar never loads SQLite at all (docs/footprint.md)
    import kidecar_supervisor.plugin_runtime  # noqa: F401 - every plugin process
    from kidecar_supervisor.config import (
        SidecarConfig,
        config_path,
        load_config,
        machine_problems,
    )
    from kidecar_supervisor.config_reader import ConfigError
    from kidecar_supervisor.http_token import load_token
    from kidecar_supervisor.structured_log import setup_logging
    from kidecar_supervisor.supervisor import RunOptions, Supervisor

    path = config_path(args.config)
    try:
        config = SidecarConfig(plugins=()) if args.empty else load_config(path)
    except ConfigError as exc:
        print(f"kidecar: invalid config: {exc}", file=sys.stderr)
        return EXIT_FAILED
    problems = machine_problems(config)
    for problem in problems:
        print(f"kidecar: invalid config: {problem}", file=sys.stderr)
    if problems:
        return EXIT_FAILED
    setup_logging(args.log_level or config.log_level)
    if dropped:
        logging.getLogger("kidecar.privileges").info("%s", dropped)
    port = args.port or int(os.environ.get("KIDECAR_PORT") or config.http.port)
    try:
        token = load_token(config.http.token, config.http.token_file)
    except OSError as exc:
        print(f"kidecar: cannot read token file: {exc}", file=sys.stderr)
        return EXIT_FAILED
    options = RunOptions(state_dir=_state_dir(args.state_dir), port=port,
                         host=args.host or config.http.host, token=token, empty=args.empty)
    try:
        options.state_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        print(f"kidecar: cannot use state dir {options.state_dir}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        return Supervisor(config, options).run()
    except OSError as exc:
        print(f"kidecar: cannot start: {exc}", file=sys.stderr)
        return EXIT_FAILED


def cmd_validate(args: argparse.Namespace) -> int:
    """Same document rules as ``run``; this machine's verdict is a warning unless asked."""
    from kidecar_supervisor.config import load_config, machine_problems, notes
    from kidecar_supervisor.config_reader import ConfigError

    try:
        config = load_config(args.config, unset_ok=not args.this_machine)
    except ConfigError as exc:
        print(f"invalid: {exc}", file=sys.stderr)
        return EXIT_FAILED
    problems = machine_problems(config)
    for problem in problems:
        if args.this_machine:
            print(f"invalid: {problem}", file=sys.stderr)
        else:
            print(f"warning: {problem} (kidecar run would refuse this on this machine; "
                  "--this-machine makes it an error)", file=sys.stderr)
    if problems and args.this_machine:
        return EXIT_FAILED
    for note in notes(config):
        print(f"info: {note}")
    names = ", ".join(f"{p.name} (bootOrder {p.boot_order})" for p in config.plugins) or "none"
    print(f"ok: {args.config}: plugins: {names}")
    return EXIT_OK


def _http(args: argparse.Namespace, method: str, path: str,
          data: dict[str, Any] | None = None) -> tuple[int, Any]:
    import requests

    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    try:
        response = requests.request(method, args.sidecar.rstrip("/") + path, json=data,
                                    headers=headers, timeout=(3, 3600))
    except requests.RequestException as exc:
        print(f"kidecar: cannot reach the sidecar at {args.sidecar}: {exc}", file=sys.stderr)
        return -1, None
    try:
        body = response.json()
    except ValueError:
        body = {"error": response.text}
    return response.status_code, body


def _finish(status: int, body: Any, as_json: bool, ok_text: str = "") -> int:
    if status < 0:
        return EXIT_UNREACHABLE
    if status >= 400:
        message = body.get("error") if isinstance(body, dict) else body
        print(f"kidecar: HTTP {status}: {message}", file=sys.stderr)
        if as_json:
            print(json.dumps(body, indent=2))
        return EXIT_FAILED
    print(json.dumps(body, indent=2) if as_json or not ok_text else ok_text)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    status, body = _http(args, "GET", "/plugins")
    if status != 200 or args.json:
        return _finish(status, body, args.json)
    rows = [("NAME", "STATE", "PID", "RESTARTS", "UPTIME", "LAST ERROR")]
    for p in body:
        rows.append((p["name"], p["state"], str(p.get("pid") or "-"), str(p["restarts"]),
                     f"{p.get('uptime') or 0:.0f}s", (p.get("lastError") or "")[:60]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    return EXIT_OK


def cmd_restart(args: argparse.Namespace) -> int:
    status, body = _http(args, "POST", f"/plugins/{args.name}/restart")
    return _finish(status, body, args.json, f"restarting {args.name}")


def cmd_hot_update(args: argparse.Namespace) -> int:
    data = {"version": args.update_version, "url": args.file_url}
    if args.sha256:
        data["sha256"] = args.sha256
    status, body = _http(args, "POST", "/hot-update", data)
    return _finish(status, body, True)


def cmd_rollback(args: argparse.Namespace) -> int:
    """``POST /hot-update/rollback``: the answer is an update's (status, version, recorded)."""
    # --version "" is sent as given (a 400), never taken as "the previous one"
    data = {} if args.rollback_version is None else {"version": args.rollback_version}
    status, body = _http(args, "POST", "/hot-update/rollback", data)
    return _finish(status, body, True)


def cmd_health(args: argparse.Namespace) -> int:
    from kidecar_supervisor.control_channel import (
        ControlClient,
        ControlError,
        control_socket_path,
        read_authkey,
    )

    state_dir = _state_dir(args.state_dir)
    try:
        client = ControlClient(control_socket_path(state_dir), read_authkey(state_dir))
        reply = client.request(control_request(Op.READY if args.ready else Op.HEALTH), timeout=2.0)
    except (OSError, ControlError) as exc:
        print(f"kidecar: no supervisor answers in {state_dir}: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if reply.get("ok"):
        print("ok")
        return EXIT_OK
    print(f"unhealthy: {reply.get('error')}", file=sys.stderr)
    return EXIT_FAILED


def cmd_inject(args: argparse.Namespace) -> int:
    from kidecar_supervisor.inject import run_cli

    return run_cli(args)


def cmd_migrate(args: argparse.Namespace) -> int:
    from kidecar_supervisor.migrate import run_cli

    return run_cli(args)


def cmd_rollout(args: argparse.Namespace) -> int:
    from kidecar_supervisor.rollout.commands import run_cli

    return run_cli(args)


if __name__ == "__main__":
    sys.exit(main())
