"""A stand-in for the Hugging Face Hub on 127.0.0.1, for tests and benchmarks (no internet).

It serves local folders as repositories through the endpoints the client calls:
``/api/models/ORG/NAME/revision/REV`` (the commit and the files with their sizes) and
``/ORG/NAME/resolve/REV/PATH`` (a file, with ``Range``), plus ``/files/PATH`` for plain URLs.
Repositories may be private or gated (a token is then required), may redirect their files to a
second server (another origin, as the Hub's CDN is), and a queue of faults injects one misbehaviour
per request: dropped connections, 5xx, 429 with ``Retry-After``, ``Range`` ignored, short and
over-long bodies, a changed file (new ETag), a wrong ``Content-Range``, a stall past the client's
timeout. Bytes of file bodies served are counted.

    with HubServer() as hub:
        hub.add_repo("org/tiny", folder)
        os.environ["HF_ENDPOINT"] = hub.url
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import unquote, urlsplit

#: The faults ``HubServer.fail`` queues, each applied to one file request.
FAULTS = ("drop", "500", "503", "429", "ignore-range", "short", "long", "change", "wrong-range",
          "stall")
_RANGE = re.compile(r"^bytes=(\d+)-(\d*)$")


@dataclass
class Repo:
    folder: Path
    commit: str
    branches: dict[str, str]
    access: str = "public"  # public, private or gated
    redirect: str | None = None  # origin the files are redirected to


@dataclass
class Counters:
    body_bytes: int = 0
    requests: int = 0
    authorized: list[str] = field(default_factory=list)  # paths requested with a token


class HubServer:
    """The stand-in Hub: ``url`` is its address; start and stop it with ``with``."""

    def __init__(self, *, token: str | None = None, stall_s: float = 2.0) -> None:
        self.repos: dict[str, Repo] = {}
        self.files: dict[str, Path] = {}
        self.token = token
        self.stall_s = stall_s
        self.counters = Counters()
        self.faults: deque[str] = deque()
        self._lock = threading.Lock()
        self._changed: set[str] = set()
        hub = self

        class Handler(_Handler):
            server_hub = hub

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def add_repo(self, repo_id: str, folder: Path, *, branches: dict[str, str] | None = None,
                 access: str = "public", redirect: HubServer | None = None) -> str:
        """Serve ``folder`` as ``repo_id``; its commit is a digest of its files' names and ETags
        (returned)."""
        digest = hashlib.sha1(repo_id.encode())
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            digest.update(path.relative_to(folder).as_posix().encode())
            digest.update(_etag(path).encode())
        commit = digest.hexdigest()
        self.repos[repo_id] = Repo(folder, commit, {"main": commit, **(branches or {})}, access,
                                   redirect.url if redirect else None)
        if redirect is not None:
            for path in folder.rglob("*"):
                if path.is_file():
                    redirect.files[f"{repo_id}/{commit}/{path.relative_to(folder).as_posix()}"] = path
        return commit

    def serve_file(self, name: str, path: Path) -> str:
        """Serve ``path`` at ``/files/NAME``; its URL."""
        self.files[name] = path
        return f"{self.url}/files/{name}"

    def fail(self, *faults: str) -> None:
        """Queue faults, applied in order to the next file requests."""
        unknown = [f for f in faults if f not in FAULTS]
        if unknown:
            raise ValueError(f"unknown faults {unknown}; known: {FAULTS}")
        self.faults.extend(faults)

    def reset(self) -> None:
        with self._lock:
            self.counters = Counters()
            self.faults.clear()

    def __enter__(self) -> HubServer:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()


def _etag(path: Path) -> str:
    """A file's ETag: from its name, size and modification time (as web servers make them)."""
    stat = path.stat()
    return hashlib.sha256(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:32]


class _Server(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (a timed-out read) is no error of the server's: say nothing."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    server_hub: HubServer
    protocol_version = "HTTP/1.0"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        hub = self.server_hub
        with hub._lock:
            hub.counters.requests += 1
            if self.headers.get("Authorization"):
                hub.counters.authorized.append(self.path)
        path = unquote(urlsplit(self.path).path)
        if path.startswith("/api/models/"):
            self._api(path.removeprefix("/api/models/"))
        elif path.startswith("/files/"):
            self._file_or_404(hub.files.get(path.removeprefix("/files/")))
        elif match := re.match(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path):
            self._resolve(match[1], match[2], match[3])
        else:
            self._error(404, "")

    def _repo(self, repo_id: str) -> Repo | None:
        repo = self.server_hub.repos.get(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound")
            return None
        if repo.access != "public" and self.headers.get("Authorization") != f"Bearer {self.server_hub.token}":
            if repo.access == "gated":
                self._error(403, "GatedRepo")
            else:
                self._error(401, "RepoNotFound")
            return None
        return repo

    def _api(self, rest: str) -> None:
        match = re.match(r"^([^/]+/[^/]+)/revision/(.+)$", rest)
        repo = self._repo(match[1]) if match else None
        if match is None or repo is None:
            if match is None:
                self._error(404, "")
            return
        commit = repo.branches.get(match[2], match[2] if match[2] == repo.commit else None)
        if commit is None:
            self._error(404, "RevisionNotFound")
            return
        siblings = [{"rfilename": p.relative_to(repo.folder).as_posix(), "size": p.stat().st_size}
                    for p in sorted(repo.folder.rglob("*")) if p.is_file()]
        body = json.dumps({"id": match[1], "sha": commit, "siblings": siblings}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _resolve(self, repo_id: str, revision: str, name: str) -> None:
        repo = self._repo(repo_id)
        if repo is None:
            return
        commit = repo.branches.get(revision, revision if revision == repo.commit else None)
        if commit is None:
            self._error(404, "RevisionNotFound")
            return
        path = repo.folder / name
        if not path.is_file():
            self._error(404, "EntryNotFound")
            return
        if repo.redirect:
            self.send_response(302)
            self.send_header("Location", f"{repo.redirect}/files/{repo_id}/{commit}/{name}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self._file_or_404(path)

    def _file_or_404(self, path: Path | None) -> None:
        if path is None or not path.is_file():
            self._error(404, "EntryNotFound")
            return
        hub = self.server_hub
        with hub._lock:
            fault = hub.faults.popleft() if hub.faults else None
            if fault == "change":
                hub._changed.add(str(path))
        size = path.stat().st_size
        etag = _etag(path)
        if str(path) in hub._changed:
            etag = "changed-" + etag[:24]
        if fault in ("500", "503", "429"):
            self.send_response(int(fault))
            if fault == "429":
                self.send_header("Retry-After", "0")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if fault == "stall":
            time.sleep(hub.stall_s)
        match = _RANGE.match(self.headers.get("Range", ""))
        start, stop = 0, size
        if match and fault != "ignore-range":
            start = int(match[1])
            stop = min(size, int(match[2]) + 1 if match[2] else size)
            if start >= size:
                self._error(416, "")
                return
            shown = (start + 1, stop) if fault == "wrong-range" else (start, stop - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {shown[0]}-{shown[1]}/{size}")
        else:
            self.send_response(200)
        length = stop - start
        declared = {"short": length // 2, "long": length + 16}.get(fault or "", length)
        self.send_header("ETag", f'"{etag}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        self._send(path, start, length // 2 if fault in ("drop", "short") else length)
        if fault == "long":
            self.wfile.write(b"\0" * 16)
        if fault == "drop":
            self.connection.shutdown(2)

    def _send(self, path: Path, start: int, length: int) -> None:
        """Bytes ``start:start+length`` of ``path``, streamed, each chunk counted before it is
        sent (so a client that has read it sees it counted)."""
        hub, sent = self.server_hub, 0
        with path.open("rb") as fh:
            fh.seek(start)
            while sent < length:
                chunk = fh.read(min(1 << 20, length - sent))
                if not chunk:
                    break
                with hub._lock:
                    hub.counters.body_bytes += len(chunk)
                self.wfile.write(chunk)
                sent += len(chunk)

    def _error(self, status: int, code: str) -> None:
        self.send_response(status)
        if code:
            self.send_header("X-Error-Code", code)
        self.send_header("Content-Length", "0")
        self.end_headers()
