"""One JSON object a line on stderr: time, level, plugin, pid, msg.

Every process of the tree (supervisor, HTTP, plugins) logs through this
formatter so a log shipper can parse the pod's output without guessing; the
``plugin`` field says which part of the tree spoke.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

_process_role = "supervisor"
#: loggers of the store, which runs on a thread of the HTTP child: their lines say
#: ``storage``, not the process's role, so an operator sees which part spoke
_STORE_LOGGERS = ("kidecar.storage", "kidecar.plugin.storage")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "plugin": getattr(record, "plugin", None) or _role_of(record.name),
            "pid": record.process or os.getpid(),
            "msg": record.getMessage(),
        }
        if record.name and not record.name.startswith("kidecar"):
            entry["logger"] = record.name
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def _role_of(logger: str) -> str:
    if any(logger == name or logger.startswith(name + ".") for name in _STORE_LOGGERS):
        return "storage"
    return _process_role


def setup_logging(level: str = "info", role: str = "supervisor") -> None:
    """(Re)configure the root logger of this process for JSON lines."""
    global _process_role
    _process_role = role
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # third-party chatter stays at warning unless asked for debug
    for noisy in ("urllib3", "kubernetes", "werkzeug"):
        logging.getLogger(noisy).setLevel(logging.WARNING if level != "debug" else logging.DEBUG)


def set_role(role: str) -> None:
    """Name the part of the tree this (forked) process is, for every later line."""
    global _process_role
    _process_role = role
