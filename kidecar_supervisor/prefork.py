"""What the supervisor builds once before it forks, so every child shares it.

A forked child shares the parent's pages until one of them writes to a page;
whatever a child builds for itself is private to it, once per child (issue 16:
the tree is five processes, and every pod of the fleet carries one). So what
more than one child would build on its own is built here, in the parent,
before ``gc.freeze()`` and the first fork:

* OpenSSL's first context: loading the default provider, its algorithm tables
  and cipher lists is C memory (invisible to ``tracemalloc``) that every child
  using TLS (storage to the API server, hot_update's https downloads,
  http_probe's https endpoints) otherwise allocates for itself: 2.1 MiB USS per
  such child, measured (docs/footprint.md). The context itself is kept, so the
  library's caches it filled are never freed and reallocated. It is the
  standard library's client context, not urllib3's: OpenSSL loads the same
  tables for either, and urllib3 is not imported here (below).
* The ``idna`` codec: every connection to a host by name encodes the name
  with it (``socket.getaddrinfo``), so http_probe, the store and hot_update's
  downloads each imported it (with ``stringprep`` and ``unicodedata``) after
  the fork once requests, which imported it before, was no longer imported by
  the supervisor: +1 MiB USS in http_probe alone, measured.
* glibc's free heap pages are given back (``malloc_trim``): what the imports
  and builds freed would otherwise stay resident in the parent, counted in
  every process's PSS, and a child reusing a freed chunk would copy the old
  page instead of getting a fresh one (about 1 MiB RSS per process measured).

Modules only one child uses are *not* imported here (the HTTP stack is the HTTP
child's, InKube's modules and urllib3 its store's, requests hot_update's while
it downloads, given back when it is recycled): imported in the parent, their
pages are counted once as shared and again for every page that child copies
when it writes a reference count; imported in the child, only once.
"""

from __future__ import annotations

import ssl

from kidecar_supervisor.heap import release_free_heap

#: kept for the life of the process (and so of every child's copy of it)
_KEPT: list[object] = []


def build_shared() -> None:
    """Build, in the parent, what several children would otherwise each build."""
    _KEPT.append(_openssl_warmed())
    "localhost".encode("idna")  # the codec imported and in the codec registry's cache
    release_free_heap()


def _openssl_warmed() -> ssl.SSLContext:
    """A verifying TLS 1.2+ client context: OpenSSL's providers and ciphers loaded."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context
