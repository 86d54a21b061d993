"""Streaming download of one file into a hidden temp file next to its target.

The game must never see a partial file, so bytes go to ``.kidecar-tmp-*`` in
``fileDir`` itself (same filesystem, so the later rename is atomic) and the
temp file is removed on every failure. Memory stays flat: the body is read in
fixed-size chunks and written straight through an unbuffered file. Every way a
download can go wrong maps to one ``DownloadError`` with the HTTP status the
caller gets (502 upstream, 504 stalled, 413 too large, 422 checksum, 507 disk
full) and a message that says what happened.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import unquote, urlsplit

from kidecar_supervisor.plugin_kit.durable_files import remove_quietly
from workers.hot_update.url_redaction import redact, scrub

if TYPE_CHECKING:
    import requests

log = logging.getLogger("kidecar.hot_update.download")
# urllib3 logs every request line at DEBUG, query string (a pre-signed token) and all:
# kidecar's logs never carry a URL's credentials (DESIGN §5), whatever the log level
logging.getLogger("urllib3.connectionpool").setLevel(logging.INFO)

TEMP_PREFIX = ".kidecar-tmp-"
CHUNK_BYTES = 256 * 1024
#: start writing back (and stop caching) the file every this many bytes
WRITEBACK_BYTES = 8 << 20
MAX_REDIRECTS = 10
USER_AGENT = "kidecar-hot-update"


class DownloadError(Exception):
    """A download failed; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str, **fields: Any) -> None:
        message = scrub(message)  # requests' texts quote the URL, query string and all
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields


@dataclass
class Progress:
    """Bytes done of a running download; read by the status call from another thread."""

    done: int = 0
    total: int | None = None


@dataclass(frozen=True)
class Downloaded:
    """A complete, fsynced temp file waiting to be renamed into place."""

    temp_path: Path
    size: int
    sha256: str
    final_url: str


@dataclass(frozen=True)
class DownloadLimits:
    max_bytes: int
    stall_timeout: float
    deadline: float = 0.0  # 0: no whole-download deadline
    chunk_bytes: int = CHUNK_BYTES
    max_redirects: int = MAX_REDIRECTS


def download(
    url: str,
    dest_dir: Path,
    limits: DownloadLimits,
    expected_sha256: str = "",
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    mode: int = 0o644,
) -> Downloaded:
    """Fetch ``url`` into a new temp file in ``dest_dir``; raise DownloadError on any failure.

    The sha256 is computed only when one is expected: hashing costs about as
    much CPU as the copy itself, and the caller did not ask for it otherwise.
    """
    progress = progress if progress is not None else Progress()
    cancel = cancel if cancel is not None else threading.Event()
    fd, temp_name = _make_temp(dest_dir)
    temp_path = Path(temp_name)
    try:
        with open(fd, "wb", buffering=0) as out:
            digest = hashlib.sha256() if expected_sha256 else None
            with _open_source(url, limits) as source:
                progress.total = source.length
                _check_length(source.length, limits.max_bytes)
                size = _copy(source.chunks(), out, digest, limits, progress, cancel)
            _finish_file(out, mode)
        actual = digest.hexdigest() if digest is not None else ""
        if expected_sha256 and actual != expected_sha256:
            raise DownloadError(
                422, f"sha256 mismatch: expected {expected_sha256}, downloaded file has {actual}",
                expectedSha256=expected_sha256, actualSha256=actual, bytes=size,
            )
        return Downloaded(temp_path=temp_path, size=size, sha256=actual, final_url=source.final_url)
    except BaseException:
        remove_quietly(temp_path)
        raise


def _make_temp(dest_dir: Path) -> tuple[int, str]:
    try:
        return tempfile.mkstemp(prefix=TEMP_PREFIX, dir=dest_dir)
    except OSError as exc:
        raise _disk_error(exc, f"cannot create a temp file in {dest_dir}") from exc


def _check_length(length: int | None, max_bytes: int) -> None:
    if length is not None and length > max_bytes:
        raise DownloadError(
            413, f"the file is {length} bytes, more than maxFileBytes ({max_bytes})",
            bytes=length, maxFileBytes=max_bytes,
        )


def _copy(
    chunks: Iterator[bytes], out: BinaryIO, digest: Any, limits: DownloadLimits,
    progress: Progress, cancel: threading.Event,
) -> int:
    started = time.monotonic()
    size = 0
    writeback = Writeback(out.fileno())
    for chunk in chunks:
        if cancel.is_set():
            raise DownloadError(503, "the download was cancelled: the plugin is stopping")
        size += len(chunk)
        if size > limits.max_bytes:
            raise DownloadError(
                413, f"the file is larger than maxFileBytes ({limits.max_bytes} bytes)",
                maxFileBytes=limits.max_bytes,
            )
        if limits.deadline and time.monotonic() - started > limits.deadline:
            raise DownloadError(
                504, f"the download took longer than downloadDeadlineSeconds ({limits.deadline:g}s)"
                f" after {size} bytes", bytes=size,
            )
        if digest is not None:
            digest.update(chunk)
        _write(out, chunk)
        writeback.advance(size)
        progress.done = size
    return size


class Writeback:
    """Push written pages to disk while downloading, and drop them from the page cache.

    The page cache of a sidecar counts against its memory limit (128Mi in the
    seeds): without this a 1 GiB download leaves up to 1 GiB of dirty pages
    charged to the container, the kernel throttles the writer, and the final
    fsync writes it all at once. ``POSIX_FADV_DONTNEED`` starts asynchronous
    writeback of a range and drops the pages that are already clean, so each
    call covers the previous step again (clean by now) and the new one.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.previous = 0
        self.current = 0

    def advance(self, size: int) -> None:
        if size - self.current < WRITEBACK_BYTES:
            return
        try:
            os.posix_fadvise(self.fd, self.previous, size - self.previous,
                             os.POSIX_FADV_DONTNEED)
        except OSError:
            pass  # a filesystem without fadvise: the final fsync does it all
        self.previous, self.current = self.current, size


def _write(out: BinaryIO, chunk: bytes) -> None:
    try:
        view = memoryview(chunk)
        while view:
            written = out.write(view)
            view = view[written or 0:]
    except OSError as exc:
        raise _disk_error(exc, "cannot write the downloaded file") from exc


def _finish_file(out: BinaryIO, mode: int) -> None:
    try:
        os.fchmod(out.fileno(), mode)
        os.fsync(out.fileno())
    except OSError as exc:
        raise _disk_error(exc, "cannot flush the downloaded file to disk") from exc


def _disk_error(exc: OSError, what: str) -> DownloadError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return DownloadError(507, f"{what}: the disk of fileDir is full ({exc.strerror})")
    return DownloadError(500, f"{what}: {exc.strerror or exc}")


class _Source:
    """An open body: its announced length, final URL and chunk iterator."""

    def __init__(self, length: int | None, final_url: str, chunks: Iterator[bytes],
                 close: Any) -> None:
        self.length = length
        self.final_url = final_url
        self._chunks = chunks
        self._close = close

    def chunks(self) -> Iterator[bytes]:
        return self._chunks

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self._close()


def _open_source(url: str, limits: DownloadLimits) -> _Source:
    if urlsplit(url).scheme.lower() == "file":
        return _open_file_url(url, limits)
    return _open_http(url, limits)


def _open_file_url(url: str, limits: DownloadLimits) -> _Source:
    path = unquote(urlsplit(url).path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by _Source
        length = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise DownloadError(502, f"cannot read {redact(url)}: {exc.strerror or exc}") from exc

    def chunks() -> Iterator[bytes]:
        try:
            while chunk := handle.read(limits.chunk_bytes):
                yield chunk
        except OSError as exc:
            raise DownloadError(502, f"cannot read {redact(url)}: {exc.strerror or exc}") from exc

    return _Source(length, url, chunks(), handle.close)


def _open_http(url: str, limits: DownloadLimits) -> _Source:
    import requests  # here, not at the top: only a process that downloads loads it (issue 16)

    session = requests.Session()
    session.max_redirects = limits.max_redirects
    try:
        response = session.get(
            url, stream=True, allow_redirects=True,
            timeout=(limits.stall_timeout, limits.stall_timeout),
            headers={"Accept-Encoding": "identity", "User-Agent": USER_AGENT},
        )
    except requests.RequestException as exc:
        session.close()
        raise _http_error(exc, url, limits) from exc

    def close() -> None:
        response.close()
        session.close()

    if response.status_code != 200:
        close()
        raise DownloadError(
            502, f"upstream answered {response.status_code} {response.reason or ''}".rstrip()
            + f" for {redact(response.url)}", upstreamStatus=response.status_code,
        )
    return _Source(_content_length(response), response.url,
                   _http_chunks(response, url, limits), close)


def _http_chunks(response: requests.Response, url: str,
                 limits: DownloadLimits) -> Iterator[bytes]:
    """Whatever each read brings (``read1``), not whole chunks: an upstream that
    drips a byte at a time must still meet the deadline and the cancel checks,
    which run between chunks."""
    import requests
    import urllib3

    raw = response.raw
    try:
        while True:
            chunk = raw.read1(limits.chunk_bytes, decode_content=True)
            if not chunk:
                return
            yield chunk
    except requests.RequestException as exc:
        raise _http_error(exc, url, limits) from exc
    except urllib3.exceptions.ReadTimeoutError as exc:
        raise _http_error(requests.ReadTimeout(str(exc)), url, limits) from exc
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError) as exc:
        raise _http_error(requests.exceptions.ChunkedEncodingError(str(exc)), url,
                          limits) from exc
    except urllib3.exceptions.HTTPError as exc:
        raise DownloadError(502, f"cannot download {redact(url)}: {type(exc).__name__}: "
                            f"{exc}") from exc


def _content_length(response: requests.Response) -> int | None:
    value = response.headers.get("Content-Length")
    if value is None or response.headers.get("Content-Encoding", "identity") != "identity":
        return None
    try:
        return int(value)
    except ValueError:
        return None


def _http_error(exc: requests.RequestException, url: str, limits: DownloadLimits) -> DownloadError:
    """One clear DownloadError for every way requests can fail."""
    import requests

    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, requests.ConnectTimeout):
        return DownloadError(504, f"timed out connecting to {redact(url)} "
                             f"(downloadTimeoutSeconds {limits.stall_timeout:g}s)")
    if isinstance(exc, requests.ReadTimeout) or "Read timed out" in text:
        return DownloadError(504, f"the download from {redact(url)} stalled: no data for "
                             f"{limits.stall_timeout:g}s (downloadTimeoutSeconds)")
    if isinstance(exc, requests.TooManyRedirects):
        return DownloadError(502, f"{redact(url)} redirected more than "
                             f"{limits.max_redirects} times")
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return DownloadError(502, f"the connection to {redact(url)} broke before the whole file "
                             f"arrived ({exc})")
    if isinstance(exc, requests.ConnectionError):
        reason = "connection refused" if "refused" in text.lower() else str(exc)
        return DownloadError(502, f"cannot download {redact(url)}: {reason}")
    return DownloadError(502, f"cannot download {redact(url)}: {text}")
