"""Gunicorn embedded through ``BaseApplication``: the HTTP child of the supervisor.

The supervisor owns the listening socket and passes it as ``fd://N``: the
port stays bound (connections wait in the backlog) while the HTTP child is
restarted, and the same fd can be handed to a newer kidecar on hot upgrade.
The worker (http_worker.GuardedThreadWorker, gunicorn's gthread underneath)
reads request heads without a thread and serves probes on their own threads,
so ``/healthz`` answers while a long hot update runs and whatever slow or
half-open clients do.

The HTTP child *is* the gunicorn worker: no arbiter process above it. The
supervisor already does what the arbiter would (restart on exit, SIGTERM for a
graceful stop, reaping), and the arbiter would cost a whole Python process
(~5.5 MiB USS measured) in a 128 MiB container. The worker still exits by
itself if the supervisor goes away (gunicorn's parent check).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

from flask import Flask
from gunicorn.config import Config
from gunicorn.glogging import Logger as GunicornLogger
from gunicorn.sock import create_sockets

from kidecar_supervisor.config import HttpSettings
from kidecar_supervisor.http_app import apply_http_settings
from kidecar_supervisor.http_worker import ConnectionLimits, GuardedThreadWorker
from kidecar_supervisor.structured_log import JsonFormatter


class JsonGunicornLogger(GunicornLogger):
    """Gunicorn's own lines in the pod's JSON log format; no access log."""

    def setup(self, cfg: Any) -> None:
        super().setup(cfg)
        for handler in self.error_log.handlers:
            handler.setFormatter(JsonFormatter())
        self.error_log.propagate = False

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return None


class EmbeddedGunicorn:
    """What gunicorn's worker asks of its application: ``cfg`` and ``wsgi()``.

    Not ``gunicorn.app.base.BaseApplication``: that imports the arbiter (and
    its pidfile, systemd and debug modules) for a process that runs no
    arbiter; those pages would sit in the HTTP child for nothing (issue 16).
    """

    def __init__(self, app: Flask, options: dict[str, Any]) -> None:
        self._app = app
        self.cfg = Config()
        for key, value in options.items():
            self.cfg.set(key, value)

    def wsgi(self) -> Flask:
        return self._app


#: seconds an idle kept-alive connection stays open (it holds no thread meanwhile)
KEEPALIVE_SECONDS = 5
#: gunicorn's header limits; beyond them a request is answered 414/431 (JSON)
LIMIT_REQUEST_LINE = 4094
LIMIT_REQUEST_FIELDS = 100
LIMIT_REQUEST_FIELD_SIZE = 8190
#: the whole head, checked while it is read (before gunicorn's parser sees it)
MAX_HEAD_BYTES = 32 * 1024


def connection_limits(settings: HttpSettings) -> ConnectionLimits:
    """The worker's connection bounds from ``http:`` (see http_worker)."""
    return ConnectionLimits(
        header_timeout=settings.header_timeout_seconds,
        body_timeout=settings.body_timeout_seconds,
        keepalive=KEEPALIVE_SECONDS,
        max_connections=settings.max_connections,
        max_request_line=LIMIT_REQUEST_LINE,
        max_head_bytes=MAX_HEAD_BYTES,
        max_queued=settings.max_connections,
        max_body_bytes=settings.max_body_bytes,
    )


def gunicorn_options(listen_fd: int, settings: HttpSettings, log_level: str,
                     on_worker_ready: Callable[[Any], None] | None = None) -> dict[str, Any]:
    options: dict[str, Any] = {
        "bind": [f"fd://{listen_fd}"],
        "workers": 1,
        "threads": settings.threads,
        # the worker bounds connections itself (eviction, 503); gunicorn must never stop
        # accepting, or the kubelet's probe would wait in the backlog
        "worker_connections": connection_limits(settings).most_connections(settings.threads) + 16,
        "graceful_timeout": max(1, round(settings.graceful_timeout_seconds)),
        # no arbiter watches the worker: a hung worker fails /healthz and the kubelet acts
        "timeout": 30,
        "keepalive": KEEPALIVE_SECONDS,
        "limit_request_line": LIMIT_REQUEST_LINE,
        "limit_request_fields": LIMIT_REQUEST_FIELDS,
        "limit_request_field_size": LIMIT_REQUEST_FIELD_SIZE,
        "http_parser": "python",
        "control_socket_disable": True,
        "logger_class": JsonGunicornLogger,
        "loglevel": log_level,
        "accesslog": None,
        "proc_name": "kidecar-http",
    }
    if on_worker_ready is not None:
        options["post_worker_init"] = on_worker_ready
    return options


def serve_http(app: Flask, listen_fd: int, settings: HttpSettings, log_level: str,
               on_worker_ready: Callable[[Any], None] | None = None) -> int:
    """Run one gunicorn worker until it is told to stop; the HTTP child's whole life.

    The app's body limits and access rule are applied here, in the child,
    from the same ``http:`` settings as the worker's connection limits.
    """
    apply_http_settings(app, settings)
    application = EmbeddedGunicorn(app, gunicorn_options(listen_fd, settings, log_level,
                                                         on_worker_ready))
    cfg = application.cfg
    glog = cfg.logger_class(cfg)
    listeners = create_sockets(cfg, glog)
    worker = GuardedThreadWorker(1, os.getppid(), listeners, application, cfg.timeout / 2.0,
                                 cfg, glog, limits=connection_limits(settings))
    worker.pid = os.getpid()
    logging.getLogger("kidecar.http").info(
        "HTTP serving on %s with %d threads", listeners[0], settings.threads)
    worker.init_process()  # returns once the worker stopped (SIGTERM: graceful)
    return 0
