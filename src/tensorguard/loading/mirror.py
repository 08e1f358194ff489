"""A sparse local mirror of a remote model, so that the file readers work on it unchanged.

``materialize(reference)`` lays out, under the cache folder, the model's folder as a local copy
would be: every weight file (``.safetensors``, ``.gguf``) and ``tokenizer.json`` as a sparse file of
its real size, and the small files the readers need at once (``config.json``, an index, an adapter
config) fetched whole. Each sparse file has a ``RemoteFile`` attached (``loading.bytesource``):
the blocks a reader asks for are fetched by range, several in flight, written into the file and
marked in a block map beside it, so a later command reads them from disk. The mirror is keyed by
content (a Hub commit, a URL's ETag) and bounded (``TENSORGUARD_REMOTE_CACHE_GB``, default 20): the
least recently used files are emptied first. Nothing is fetched whole unless a reader needs it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tensorguard.errors import TensorguardError
from tensorguard.loading import bytesource
from tensorguard.loading.layouts import GGUF_SPLIT_RE, SHARD_RE
from tensorguard.loading.reference import HubReference, Reference, UrlReference
from tensorguard.loading.remote import Http, RemoteError, Settings, hf_home

log = logging.getLogger(__name__)

#: Granularity of the block map (what one fetch rounds to) and the largest single request.
BLOCK = 1 << 16
PIECE = 8 << 20
#: Requests in flight at once for one read.
IN_FLIGHT = 4
DEFAULT_CACHE_GB = 20.0
#: Files fetched whole when the mirror is laid out (small, and read by every command).
EAGER = frozenset({"config.json", "adapter_config.json"})
INDEX_SUFFIX = ".safetensors.index.json"
#: Files mirrored sparse and fetched as read.
LAZY = (".safetensors", ".gguf", "tokenizer.json")
_STATE = ".tensorguard-state"


def cache_root(env: Mapping[str, str] | None = None) -> Path:
    """The mirror's folder: ``$TENSORGUARD_REMOTE_CACHE``, else ``$HF_HOME/tensorguard``."""
    env = os.environ if env is None else env
    return Path(env.get("TENSORGUARD_REMOTE_CACHE") or hf_home(env) / "tensorguard")


def cache_limit(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    raw = env.get("TENSORGUARD_REMOTE_CACHE_GB", "")
    try:
        gb = float(raw) if raw else DEFAULT_CACHE_GB
    except ValueError:
        raise TensorguardError(f"TENSORGUARD_REMOTE_CACHE_GB={raw!r}: not a number of GB") from None
    if not gb > 0:
        raise TensorguardError(f"TENSORGUARD_REMOTE_CACHE_GB={raw!r}: must be more than 0")
    return int(gb * (1 << 30))


@dataclass
class Traffic:
    """Bytes fetched over the network and bytes of the remote files, per reference."""

    fetched: int = 0
    size: int = 0
    files: set[str] = field(default_factory=set)

    def describe(self, reference: str) -> str:
        share = f" ({100 * self.fetched / self.size:.2f} %)" if self.size else ""
        return f"{reference}: {_bytes(self.fetched)} fetched of {_bytes(self.size)}{share}"


def _bytes(n: int) -> str:
    return f"{n:,} bytes" if n < 1 << 20 else f"{n / (1 << 20):,.1f} MiB"


_lock = threading.Lock()
_TRAFFIC: dict[str, Traffic] = {}


def traffic(reference: str) -> Traffic:
    """What reading ``reference`` has cost so far in this process."""
    with _lock:
        return _TRAFFIC.setdefault(reference, Traffic())


@dataclass(frozen=True)
class Usage:
    """Remote models opened and bytes fetched by this process (``usage()``), or between two
    readings (``later.since(earlier)``)."""

    opened: int  # remote models opened (each open of a reference counts)
    fetched: int  # bytes fetched over the network

    def since(self, earlier: Usage) -> Usage:
        return Usage(self.opened - earlier.opened, self.fetched - earlier.fetched)


_opened = 0


def usage() -> Usage:
    """What reading remote models has cost so far in this process."""
    with _lock:
        return Usage(_opened, sum(t.fetched for t in _TRAFFIC.values()))


class RemoteFile:
    """One mirrored file: a ``ByteSource`` that fetches missing blocks into the sparse file."""

    def __init__(self, http: Http, url: str, path: Path, size: int, *, etag: str | None,
                 where: str, counter: Traffic) -> None:
        self.http, self.url, self.path, self.size = http, url, path, size
        self.etag, self.where, self.counter = etag, where, counter
        self.blocks_path = _state_path(path, ".blocks")
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.stat().st_size != size:
            with path.open("wb") as fh:
                fh.truncate(size)
            self.blocks_path.unlink(missing_ok=True)
        nblocks = -(-size // BLOCK)
        try:
            done = self.blocks_path.read_bytes()
        except OSError:
            done = b""
        self.done = bytearray(done) if len(done) == nblocks else bytearray(nblocks)
        self._mutex = threading.Lock()

    def need(self, offset: int, length: int) -> None:
        stop = min(self.size, offset + length)
        if offset >= stop:
            return
        with self._mutex:
            first, last = offset // BLOCK, -(-stop // BLOCK)
            runs = _runs([b for b in range(first, last) if not self.done[b]])
            if not runs:
                return
            pieces = [(s, min(e, s + PIECE // BLOCK)) for a, b in runs
                      for s, e in ((x, b) for x in range(a, b, PIECE // BLOCK))]
            with ThreadPoolExecutor(max_workers=min(IN_FLIGHT, len(pieces))) as pool:
                answers = list(pool.map(self._fetch, pieces))
            etags = {e for _, e in answers if e is not None} | ({self.etag} if self.etag else set())
            if len(etags) > 1:
                raise RemoteError(f"{self.where}: the file changed while being read (ETags "
                                  f"{', '.join(sorted(etags))}); run the command again")
            self.etag = self.etag or next(iter(etags), None)
            got = [d for d, _ in answers]
            fd = os.open(self.path, os.O_WRONLY)
            try:
                for (a, b), data in zip(pieces, got, strict=True):
                    os.pwrite(fd, data, a * BLOCK)
                    self.done[a:b] = b"\1" * (b - a)
            finally:
                os.close(fd)
            _write_atomic(self.blocks_path, bytes(self.done))
            fetched = sum(len(d) for d in got)
        with _lock:
            self.counter.fetched += fetched
        log.debug("%s: fetched %d bytes at %d", self.where, fetched, pieces[0][0] * BLOCK)

    def _fetch(self, piece: tuple[int, int]) -> tuple[bytes, str | None]:
        start, stop = piece[0] * BLOCK, min(self.size, piece[1] * BLOCK)
        return self.http.read_range(self.url, start, stop - start, size=self.size,
                                    etag=self.etag, where=self.where)


def _runs(blocks: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for b in blocks:
        if runs and runs[-1][1] == b:
            runs[-1] = (runs[-1][0], b + 1)
        else:
            runs.append((b, b + 1))
    return runs


def _state_path(path: Path, suffix: str) -> Path:
    """Where a mirrored file's block map lives: in the content key's folder, beside the model
    folder, never inside it."""
    key = next(p for p in path.parents if p.name.startswith("key-"))
    return key / _STATE / (path.relative_to(key).as_posix().replace("/", "%") + suffix)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


@dataclass(frozen=True)
class Mirrored:
    """A remote model laid out locally: the path to open, and the reference pinned to content."""

    path: Path
    pinned: str


_LAID_OUT: dict[tuple[str, Settings, Path], Mirrored] = {}


def materialize(ref: Reference, *, settings: Settings | None = None,
                root: Path | None = None) -> Mirrored:
    """Lay out ``ref``'s files in the mirror (fetching only the small ones) and attach a byte
    source to every sparse file. Done once per process for each reference and settings: the
    commit a branch resolved to stays the same for every command of the process."""
    settings = settings or Settings.from_env()
    root = root or cache_root()
    key = (str(ref), settings, root)
    global _opened
    with _lock:
        _opened += 1
    if key not in _LAID_OUT:
        http = Http(settings)
        enforce_limit(root, cache_limit())
        _LAID_OUT[key] = _hub(ref, http, root) if isinstance(ref, HubReference) else _url(ref, http, root)
    return _LAID_OUT[key]


def _hub(ref: HubReference, http: Http, root: Path) -> Mirrored:
    repo = root / "hub" / ref.repo_id.replace("/", "--")
    refs = repo / "refs" / hashlib.sha256(ref.revision.encode()).hexdigest()[:16]
    if http.settings.offline:
        try:
            commit = refs.read_text().strip()
            files = json.loads((repo / f"key-{commit}" / _STATE / "files.json").read_text())
        except (OSError, ValueError):
            raise RemoteError(f"{ref}: not cached, and HF_HUB_OFFLINE is set (unset it to "
                              "fetch)") from None
    else:
        commit, files = http.repo_files(ref.repo_id, ref.revision)
        _write_atomic(repo / f"key-{commit}" / _STATE / "files.json", json.dumps(files).encode())
        _write_atomic(refs, commit.encode())
    where = ref.pinned(commit)
    sub = PurePosixPath(ref.subpath) if ref.subpath else PurePosixPath()
    if ref.subpath and ref.subpath in files:
        folder = sub.parent
    elif not ref.subpath or any(f.startswith(f"{ref.subpath}/") for f in files):
        folder = sub
    else:
        raise RemoteError(f"{ref}: no file or folder {ref.subpath!r} in the repository at {commit[:12]}")
    model = repo / f"key-{commit}" / ref.name
    counter = traffic(where)
    for name, size in sorted(files.items()):
        if not _inside(name) or PurePosixPath(name).parent != folder or not _mirrored(name):
            continue  # a name reaching outside the mirror is never written
        url = http.file_url(ref.repo_id, commit, name)
        _attach(http, url, model / name, size, None, f"{where}: {name}", counter)
    return Mirrored(model / sub if ref.subpath else model, where)


def _url(ref: UrlReference, http: Http, root: Path) -> Mirrored:
    home = root / "url" / hashlib.sha256(ref.url.encode()).hexdigest()[:24]
    if http.settings.offline:
        try:
            key = (home / "current").read_text().strip()
            files = json.loads((home / f"key-{key}" / _STATE / "files.json").read_text())
        except (OSError, ValueError):
            raise RemoteError(f"{ref}: not cached, and HF_HUB_OFFLINE is set (unset it to "
                              "fetch)") from None
    else:
        files = _url_files(ref, http)
        main = files[ref.filename]
        key = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:24]
        if main[1] is None:
            log.info("%s: the server gives no ETag; a change to the file is seen only by its size",
                     ref.url)
        _write_atomic(home / f"key-{key}" / _STATE / "files.json", json.dumps(files).encode())
        _write_atomic(home / "current", key.encode())
    model = home / f"key-{key}" / ref.folder
    counter = traffic(ref.url)
    for name, (size, etag) in files.items():
        _attach(http, urljoin_file(ref.url, name), model / name, size, etag, f"{ref.url}: {name}"
                if name != ref.filename else ref.url, counter)
    return Mirrored(model / ref.filename, ref.url)


def _url_files(ref: UrlReference, http: Http) -> dict[str, tuple[int, str | None]]:
    """The file a URL names, and the files beside it a local reader would open with it."""
    found: dict[str, tuple[int, str | None]] = {}

    def add(name: str, *, required: bool) -> None:
        probe = http.probe(urljoin_file(ref.url, name), f"{ref.url}: {name}"
                           if name != ref.filename else ref.url, missing_ok=not required)
        if probe is not None:
            found[name] = (probe.size, probe.etag)

    add(ref.filename, required=True)
    name = ref.filename
    if name.endswith(INDEX_SUFFIX):
        index = _fetch_whole(http, ref.url, found[name][0], ref.url)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if isinstance(weight_map, dict):
            for shard in sorted({v for v in weight_map.values() if isinstance(v, str)}):
                if "/" in shard or not _inside(shard) or shard == ".":
                    raise RemoteError(f"{ref.url}: shard {shard!r} is outside the index's folder")
                add(shard, required=False)  # a missing shard: the reader names it
    elif match := SHARD_RE.match(name) or GGUF_SPLIT_RE.match(name):
        width = len(match["part"])
        suffix = ".gguf" if name.endswith(".gguf") else ".safetensors"
        for part in range(1, min(int(match["count"]), 10_000) + 1):
            sibling = f"{match['base']}-{part:0{width}d}-of-{match['count']}{suffix}"
            if sibling != name:
                add(sibling, required=False)
    if not name.endswith(".gguf"):
        for side in ("config.json", "tokenizer.json"):
            add(side, required=False)
    return found


def _fetch_whole(http: Http, url: str, size: int, where: str) -> object:
    data, _ = http.read_range(url, 0, size, size=size, etag=None, where=where) if size else (b"", None)
    try:
        return json.loads(data)
    except ValueError:
        raise RemoteError(f"{where}: not JSON") from None


def urljoin_file(url: str, name: str) -> str:
    """The address of ``name`` in the folder of ``url``."""
    base, _, _ = url.partition("?")
    return base.rsplit("/", 1)[0] + "/" + name


def _inside(name: str) -> bool:
    """Whether a file name from a server stays inside the model's folder: relative, no ``..``,
    no backslash or NUL."""
    path = PurePosixPath(name)
    return bool(name) and not path.is_absolute() and ".." not in path.parts \
        and not any(c in name for c in "\\\0")


def _eager(name: str) -> bool:
    base = PurePosixPath(name).name
    return base in EAGER or base.endswith(INDEX_SUFFIX)


def _mirrored(name: str) -> bool:
    return _eager(name) or PurePosixPath(name).name.endswith(LAZY)


def _attach(http: Http, url: str, path: Path, size: int, etag: str | None, where: str,
            counter: Traffic) -> None:
    file = RemoteFile(http, url, path, size, etag=etag, where=where, counter=counter)
    with _lock:
        counter.size += size if path.name not in counter.files else 0
        counter.files.add(path.name)
    bytesource.attach(path, file)
    if _eager(path.name):
        file.need(0, size)


def enforce_limit(root: Path, limit: int) -> None:
    """Empty the least recently used mirrored files until the mirror holds at most ``limit``
    bytes (the files this process has open are kept)."""
    maps = []
    for blocks in root.glob(f"*/*/key-*/{_STATE}/*.blocks"):
        try:
            maps.append((blocks.stat().st_mtime, blocks, blocks.read_bytes().count(1) * BLOCK))
        except OSError:
            continue
    total = sum(m[2] for m in maps)
    for _, blocks, held in sorted(maps):
        if total <= limit:
            break
        data = blocks.parent.parent / re.sub(r"\.blocks$", "", blocks.name).replace("%", "/")
        if bytesource.source_of(data) is not None:
            continue
        try:
            size = data.stat().st_size
            os.truncate(data, 0)
            os.truncate(data, size)
            blocks.unlink()
        except OSError:
            continue
        total -= held
