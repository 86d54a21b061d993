"""Who this sidecar is: the pod it runs in, from the downward API.

A neutral module: the supervisor builds it, the stores write on behalf of it,
and plugins see it through ``plugin_api`` (which re-exports it), so neither
the storage layer nor the supervisor has to import the plugin interface.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PodIdentity:
    """From the downward API env (POD_NAME, POD_NAMESPACE, NODE_NAME)."""

    pod_name: str = ""
    namespace: str = ""
    node_name: str = ""

    @property
    def in_cluster(self) -> bool:
        """True when both names are known: only then can a store write to the pod."""
        return bool(self.pod_name and self.namespace)
