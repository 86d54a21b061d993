"""Who may change a game server through the API (issue 15).

Port 5000 listens on every address of the pod (the kubelet probes it), so
without a rule any pod that reaches a game server's IP could ``POST
/hot-update`` and put any file into the game. The rule:

* every request that is not GET/HEAD/OPTIONS is *mutating*, including any
  route added later: nothing is open by forgetting a decorator;
* no token configured (the default, the seeds' way): mutating requests are
  accepted only from the pod's loopback (``kubectl exec ... curl
  localhost:5000``, the ``kidecar`` CLI); anyone else gets a JSON 403 saying
  how to allow it;
* a token configured (``KIDECAR_TOKEN`` / ``http.tokenFile``): the bearer
  token is accepted from anywhere (compared in constant time), loopback
  without one only if ``http.allowLoopbackWithoutToken`` (default yes);
* ``http.allowNetworkMutations: true`` restores the old open behaviour (a
  warning is logged when the HTTP server starts).

Read-only routes, ``/healthz``, ``/readyz`` and ``/metrics`` stay open.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from dataclasses import dataclass
from typing import Any

from flask import Flask, Request, current_app, jsonify, request

from kidecar_supervisor.config import HttpSettings

READ_ONLY_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_HOW_TO_ALLOW = ("run it inside the pod against localhost (kubectl exec POD -c SIDECAR -- "
                 "curl localhost:5000/...), or configure a token (KIDECAR_TOKEN or "
                 "http.tokenFile) and send Authorization: Bearer <token>, or set "
                 "http.allowNetworkMutations: true to open mutating routes to the network")


@dataclass(frozen=True)
class AccessPolicy:
    """The three knobs of the rule above."""

    token: str = ""
    allow_loopback_without_token: bool = True
    allow_network_mutations: bool = False

    @classmethod
    def from_settings(cls, settings: HttpSettings, token: str) -> AccessPolicy:
        return cls(token=token,
                   allow_loopback_without_token=settings.allow_loopback_without_token,
                   allow_network_mutations=settings.allow_network_mutations)

    def refusal(self, method: str, remote_addr: str | None,
                authorization: str | None) -> tuple[int, str] | None:
        """(status, message) if this request may not proceed, None if it may."""
        if method.upper() in READ_ONLY_METHODS:
            return None
        loopback = is_loopback(remote_addr)
        if self.token:
            if authorization is None:
                if loopback and self.allow_loopback_without_token:
                    return None
                return 401, ("missing bearer token (Authorization: Bearer <token>); "
                             "changes need the token configured in KIDECAR_TOKEN or "
                             "http.tokenFile")
            if not authorization.startswith("Bearer "):
                return 401, "malformed Authorization header (Authorization: Bearer <token>)"
            if not hmac.compare_digest(authorization[7:].strip().encode(), self.token.encode()):
                return 403, "invalid bearer token"
            return None
        if loopback or self.allow_network_mutations:
            return None
        return 403, (f"{method} from {remote_addr} refused: with no token configured, changes "
                     f"are accepted only from the pod's loopback. To allow it: {_HOW_TO_ALLOW}")


def is_loopback(address: str | None) -> bool:
    """127.0.0.0/8, ::1, and IPv4-mapped loopback (::ffff:127.x.y.z); anything else is not."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped.is_loopback
    return ip.is_loopback


def install_access(app: Flask) -> None:
    """Check every request of ``app`` against its ``KIDECAR_ACCESS`` policy before the view.

    The policy is read per request, so the HTTP child can apply its settings
    to an app built earlier (``set_access``); until then the defaults hold.
    """
    app.config.setdefault("KIDECAR_ACCESS", AccessPolicy())

    @app.before_request
    def check_access() -> Any:
        policy: AccessPolicy = current_app.config["KIDECAR_ACCESS"]
        refused = policy.refusal(request.method, _peer(request),
                                 request.headers.get("Authorization"))
        if refused is None:
            return None
        status, message = refused
        return jsonify({"error": message}), status


def set_access(app: Flask, policy: AccessPolicy) -> None:
    """Make ``policy`` the rule of ``app``; an open one is logged as a warning."""
    if policy.allow_network_mutations and not policy.token:
        logging.getLogger("kidecar.http").warning(
            "http.allowNetworkMutations is true: anyone who can reach this port can change "
            "the game server (POST /hot-update, stop plugins); consider a token or a "
            "NetworkPolicy instead")
    app.config["KIDECAR_ACCESS"] = policy


def _peer(req: Request) -> str | None:
    """The TCP peer (gunicorn puts the socket's peer in REMOTE_ADDR, never a header)."""
    return req.environ.get("REMOTE_ADDR")
