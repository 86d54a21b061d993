"""Where the bearer token for mutating routes comes from.

Its own module so the supervisor can read it without importing the HTTP app:
the supervisor must not load flask, werkzeug or gunicorn (issue 16, see
``http_child.HttpChild.body``).
"""

from __future__ import annotations

import os


def load_token(explicit: str = "", token_file: str = "") -> str:
    """The bearer token: KIDECAR_TOKEN, then the config's token, then the token file."""
    token = os.environ.get("KIDECAR_TOKEN") or explicit
    path = os.environ.get("KIDECAR_TOKEN_FILE") or token_file
    if not token and path:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    return token
