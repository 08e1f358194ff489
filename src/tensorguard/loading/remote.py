"""HTTP range reads from the Hugging Face Hub or any web server, on the standard library.

The Hub's conventions are honoured: ``HF_ENDPOINT`` (the Hub's address), ``HF_TOKEN`` or the token
``huggingface-cli login`` stored (``HF_TOKEN_PATH``, else ``$HF_HOME/token``), ``HF_HUB_OFFLINE``.
The token is sent to the Hub's own origin only, never across a redirect to another host, and is
never written to a message. Every answer is checked before its bytes are used: a server that ignores
``Range`` (200 and the whole body) is read up to the range and cut; a short or over-long body, a
``Content-Range`` other than the one asked, or an ETag that differs from the one pinned at the
file's first read are refused, never mixed. Dropped connections, timeouts, 5xx and 429 are retried
a bounded number of times with exponential backoff (``Retry-After`` honoured, capped).
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

from tensorguard.errors import TensorguardError

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
#: Tries per request (the first and the retries), the first backoff (doubled each time) and the
#: longest wait a ``Retry-After`` may ask for.
TRIES = 5
BACKOFF_S = 0.5
MAX_WAIT_S = 60.0
TIMEOUT_S = 30.0
MAX_REDIRECTS = 5
#: The largest JSON answer read (a repository listing, an index).
MAX_JSON_BYTES = 64 << 20
_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
_CHUNK = 1 << 20
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


class RemoteError(TensorguardError):
    """A remote model could not be read: one line, saying what to do where there is something."""


@dataclass(frozen=True)
class Settings:
    """Where the Hub is, how to authenticate to it, and whether the network may be used."""

    endpoint: str
    token: str | None
    offline: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        token = env.get("HF_TOKEN") or _stored_token(env)
        offline = env.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
        return cls(env.get("HF_ENDPOINT", DEFAULT_ENDPOINT).rstrip("/"), token or None, offline)

    def __repr__(self) -> str:  # never the token
        return f"Settings(endpoint={self.endpoint!r}, token={'set' if self.token else None}, " \
               f"offline={self.offline})"


def hf_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("HF_HOME") or Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
                / "huggingface")


def _stored_token(env: Mapping[str, str]) -> str | None:
    path = Path(env.get("HF_TOKEN_PATH") or hf_home(env) / "token")
    try:
        return path.read_text(encoding="utf-8").strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), (parts.netloc or "").lower()


@dataclass(frozen=True)
class Probe:
    """A file's size and ETag, as its server reports them."""

    size: int
    etag: str | None


class _Retry(Exception):
    """A transient failure: try again after ``wait`` seconds (``None``: the backoff)."""

    def __init__(self, why: str, wait: float | None = None) -> None:
        super().__init__(why)
        self.wait = wait


class Http:
    """Requests to one Hub (``settings``) and to any web server, checked and retried."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    # --- the Hub's API -------------------------------------------------------------------------
    def repo_files(self, repo_id: str, revision: str) -> tuple[str, dict[str, int]]:
        """The commit ``revision`` of ``repo_id`` is at, and every file of it with its size."""
        url = (f"{self.settings.endpoint}/api/models/{repo_id}/revision/"
               f"{quote(revision, safe='')}?blobs=true")
        where = f"hf://{repo_id}@{revision}"
        info = self.json(url, where)
        sha, siblings = (info.get("sha"), info.get("siblings")) if isinstance(info, dict) else (None, None)
        if not isinstance(sha, str) or not isinstance(siblings, list):
            raise RemoteError(f"{where}: the Hub's answer names no commit and files")
        files: dict[str, int] = {}
        for entry in siblings:
            if not isinstance(entry, dict):
                continue
            name, size = entry.get("rfilename"), entry.get("size")
            if isinstance(name, str) and isinstance(size, int) and size >= 0:
                files[name] = size
        return sha, files

    def file_url(self, repo_id: str, commit: str, path: str) -> str:
        return f"{self.settings.endpoint}/{repo_id}/resolve/{commit}/{quote(path)}"

    # --- requests --------------------------------------------------------------------------------
    def json(self, url: str, where: str) -> Any:
        def once(resp: http.client.HTTPResponse) -> Any:
            if resp.status != 200:
                raise RemoteError(f"{where}: unexpected HTTP {resp.status}")
            raw = resp.read(MAX_JSON_BYTES + 1)
            if len(raw) > MAX_JSON_BYTES:
                raise RemoteError(f"{where}: answer larger than {MAX_JSON_BYTES >> 20} MB")
            try:
                return json.loads(raw)
            except ValueError:
                raise RemoteError(f"{where}: the answer is not JSON") from None

        return self._retried("GET", url, {}, where, once)

    def probe(self, url: str, where: str, *, missing_ok: bool = False) -> Probe | None:
        """Size and ETag of the file at ``url`` (one byte asked for); ``None`` for a missing file
        when ``missing_ok``."""
        def once(resp: http.client.HTTPResponse) -> Probe:
            etag = _etag(resp)
            if resp.status == 206:
                span = _content_range(resp)
                if span is None or span[2] is None:
                    raise RemoteError(f"{where}: the server's Content-Range does not give the size")
                return Probe(span[2], etag)
            if resp.status == 200:
                length = resp.getheader("Content-Length")
                if length is None or not length.isdigit():
                    raise RemoteError(f"{where}: the server gives neither ranges nor a size")
                return Probe(int(length), etag)
            raise RemoteError(f"{where}: unexpected HTTP {resp.status}")

        try:
            probe: Probe = self._retried("GET", url, {"Range": "bytes=0-0"}, where, once)
            return probe
        except _Missing:
            if missing_ok:
                return None
            raise

    def read_range(self, url: str, start: int, length: int, *, size: int, etag: str | None,
                   where: str) -> tuple[bytes, str | None]:
        """Bytes ``start:start+length`` of the file at ``url`` and the ETag they came with; the
        file must still be ``size`` bytes and, when ``etag`` is given, carry that ETag."""
        stop = start + length

        def once(resp: http.client.HTTPResponse) -> tuple[bytes, str | None]:
            got = _etag(resp)
            if etag is not None and got is not None and got != etag:
                raise RemoteError(f"{where}: the file changed while being read (ETag {etag} then "
                                  f"{got}); run the command again")
            if resp.status == 206:
                span = _content_range(resp)
                if span is None or span[:2] != (start, stop - 1) or span[2] not in (None, size):
                    raise RemoteError(f"{where}: the server answered bytes "
                                      f"{resp.getheader('Content-Range')} for bytes {start}-{stop - 1}"
                                      f"/{size} (the file changed?)")
                declared = resp.getheader("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) > length:
                    raise RemoteError(f"{where}: the server sent a {declared}-byte body for a "
                                      f"{length}-byte range")
                return _exactly(resp, length, where), got
            if resp.status == 200:  # the server ignored Range: read up to the range, cut it out
                declared = resp.getheader("Content-Length")
                if declared is not None and declared.isdigit() and int(declared) != size:
                    raise RemoteError(f"{where}: the file is now {declared} bytes, not {size} "
                                      "(it changed); run the command again")
                skip = start
                while skip:
                    if not (chunk := resp.read(min(skip, _CHUNK))):
                        raise _Retry("the body ended early")
                    skip -= len(chunk)
                return _exactly(resp, length, where), got
            if resp.status == 416:
                raise RemoteError(f"{where}: bytes {start}-{stop - 1} are past the file's end (it "
                                  "changed?)")
            raise RemoteError(f"{where}: unexpected HTTP {resp.status}")

        data: tuple[bytes, str | None] = self._retried(
            "GET", url, {"Range": f"bytes={start}-{stop - 1}"}, where, once)
        return data

    def _retried(self, method: str, url: str, headers: dict[str, str], where: str,
                 handle: Any) -> Any:
        """``handle(response)`` of the first answer that is neither transient nor a failure."""
        if self.settings.offline:
            raise RemoteError(f"{where}: not cached, and HF_HUB_OFFLINE is set (unset it to fetch)")
        last = ""
        for attempt in range(TRIES):
            try:
                conn, resp = self._open(method, url, headers, where)
                try:
                    if resp.status in _RETRY_STATUS:
                        raise _Retry(f"HTTP {resp.status}", _retry_after(resp))
                    _refuse(resp, where)
                    return handle(resp)
                finally:
                    conn.close()
            except _Retry as exc:
                last, wait = str(exc), exc.wait
            except (OSError, http.client.HTTPException) as exc:  # drops, resets, timeouts
                last, wait = _describe(exc), None
            if attempt + 1 < TRIES:
                delay = min(MAX_WAIT_S, BACKOFF_S * 2 ** attempt if wait is None else wait)
                log.debug("%s: %s; retrying in %.1f s", where, last, delay)
                time.sleep(delay)
        raise RemoteError(f"{where}: failed after {TRIES} tries ({last})")

    def _open(self, method: str, url: str, headers: dict[str, str],
              where: str) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """The answer to the request, following redirects; the token goes to the Hub's origin
        only."""
        hub = _origin(self.settings.endpoint)
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise RemoteError(f"{where}: cannot follow a redirect to a non-HTTP address")
            send = {"User-Agent": "tensorguard", "Accept-Encoding": "identity", **headers}
            if self.settings.token and _origin(url) == hub:
                send["Authorization"] = f"Bearer {self.settings.token}"
            kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = kind(parts.netloc, timeout=TIMEOUT_S)
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            try:
                conn.request(method, target, headers=send)
                resp = conn.getresponse()
            except BaseException:
                conn.close()
                raise
            if resp.status in (301, 302, 303, 307, 308) and resp.getheader("Location"):
                url = urljoin(url, resp.getheader("Location", ""))
                conn.close()
                continue
            return conn, resp
        raise RemoteError(f"{where}: more than {MAX_REDIRECTS} redirects")


class _Missing(RemoteError):
    """404: no such repository, revision or file."""


def _refuse(resp: http.client.HTTPResponse, where: str) -> None:
    """The one-line error for an answer that says no (401, 403, 404)."""
    code = resp.getheader("X-Error-Code", "")
    if resp.status == 404 or code in ("RepoNotFound", "RevisionNotFound", "EntryNotFound"):
        what = {"RepoNotFound": "no such repository (or it is private: set HF_TOKEN)",
                "RevisionNotFound": "no such revision", "EntryNotFound": "no such file"}
        raise _Missing(f"{where}: {what.get(code, 'not found (HTTP 404)')}")
    message = resp.getheader("X-Error-Message", "").lower()
    if code == "GatedRepo" or (resp.status == 403 and "gated" in message):
        raise RemoteError(f"{where}: a gated repository: accept its licence on its Hub page, then "
                          "set HF_TOKEN (or run huggingface-cli login)")
    if resp.status in (401, 403):
        raise RemoteError(f"{where}: access denied (HTTP {resp.status}): a private or gated "
                          "repository needs HF_TOKEN (or huggingface-cli login) with access to it")


def _etag(resp: http.client.HTTPResponse) -> str | None:
    value = resp.getheader("X-Linked-Etag") or resp.getheader("ETag")
    return value.removeprefix("W/").strip('"') if value else None


def _content_range(resp: http.client.HTTPResponse) -> tuple[int, int, int | None] | None:
    match = _CONTENT_RANGE.match(resp.getheader("Content-Range", "").strip())
    if match is None:
        return None
    return int(match[1]), int(match[2]), None if match[3] == "*" else int(match[3])


def _exactly(resp: http.client.HTTPResponse, length: int, where: str) -> bytes:
    """``length`` bytes of the body, no fewer (transient: retried) and no more (refused)."""
    data = resp.read(length)
    if len(data) < length:
        raise _Retry(f"short body ({len(data)} of {length} bytes)")
    if resp.getheader("Content-Length") is None and resp.read(1):
        raise RemoteError(f"{where}: the server sent more bytes than the range asked")
    return data


def _retry_after(resp: http.client.HTTPResponse) -> float | None:
    value = resp.getheader("Retry-After", "").strip()
    return float(value) if value.replace(".", "", 1).isdigit() else None


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out after {TIMEOUT_S:g} s"
    if isinstance(exc, http.client.IncompleteRead):
        return "the connection dropped mid-body"
    return f"{type(exc).__name__}: {exc}".rstrip(": ")
