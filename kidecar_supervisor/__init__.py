"""kidecar: a sidecar for game servers on Kubernetes (OpenKruise Game)."""

__version__ = "0.1.0"
