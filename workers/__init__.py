"""kidecar plugins (workers): each runs in its own process under the supervisor."""
