"""Find the weight files behind a path: a safetensors file, directory, index, shard set or LoRA
adapter, or a GGUF file or split GGUF set.

Nothing is opened before its type is known: only regular files and directories are read (a FIFO
would block forever, a device never end). Part counts are bounded, and an index may only name
shards inside its own directory (relative names without ``..``), so a downloaded index cannot
make tensorguard read other local files."""

from __future__ import annotations

import re
import stat
from collections import defaultdict
from dataclasses import dataclass
from enum import Enum
from os import PathLike
from pathlib import Path

from tensorguard.errors import TensorguardError
from tensorguard.inputs import read_json, regular_file
from tensorguard.loading import bytesource

SHARD_RE = re.compile(r"^(?P<base>.+)-(?P<part>\d+)-of-(?P<count>\d+)\.safetensors$")
GGUF_SPLIT_RE = re.compile(r"^(?P<base>.+)-(?P<part>\d+)-of-(?P<count>\d+)\.gguf$")
GGUF_MAGIC = b"GGUF"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: The most parts a shard set, split GGUF set or index may name (real models have a few hundred).
MAX_PARTS = 100_000


class Layout(str, Enum):
    """How a model's weights are laid out on disk."""

    FILE = "file"
    DIRECTORY = "directory"
    INDEXED_SHARDS = "indexed-shards"
    SHARDS = "shards"
    LORA = "lora-adapter"
    GGUF = "gguf"
    GGUF_SPLIT = "gguf-split"


@dataclass(frozen=True)
class _PartSet:
    """A family of numbered part files: ``BASE-0000i-of-0000n.SUFFIX``."""

    pattern: re.Pattern[str]
    suffix: str
    layout: Layout
    what: str


_SHARD_SET = _PartSet(SHARD_RE, ".safetensors", Layout.SHARDS, "shard set")
_GGUF_SET = _PartSet(GGUF_SPLIT_RE, ".gguf", Layout.GGUF_SPLIT, "split GGUF set")


@dataclass(frozen=True)
class Resolved:
    """The files of one model source and the name it goes by."""

    layout: Layout
    root: Path
    shards: tuple[Path, ...]
    name: str
    weight_map: dict[str, Path] | None = None  # tensor -> shard, from an index


def resolve(path: str | PathLike[str]) -> Resolved:
    """Say which layout ``path`` is and list its files, checking that every part is there and is
    a regular file (a FIFO would block a read forever, a device never end)."""
    resolved = _resolve(Path(path))
    for shard in resolved.shards:
        regular_file(shard)
    return resolved


def _resolve(path: Path) -> Resolved:
    try:
        is_dir = stat.S_ISDIR(path.stat().st_mode)
    except (FileNotFoundError, NotADirectoryError):
        raise TensorguardError(f"{path}: no such file or directory") from None
    except (OSError, ValueError):  # a name too long, a NUL byte: regular_file says so
        is_dir = False
    if is_dir:
        return _resolve_dir(path)
    regular_file(path)  # before anything opens it
    if path.name.endswith(".safetensors.index.json"):
        return _from_index(path, name=path.parent.resolve().name)
    if split := GGUF_SPLIT_RE.match(path.name):
        return _shard_set(path.parent, split["base"], int(split["count"]), _GGUF_SET)
    if path.suffix == ".gguf" or _starts_with(path, GGUF_MAGIC):
        return Resolved(Layout.GGUF, path.parent, (path,), path.name.removesuffix(".gguf"))
    match = SHARD_RE.match(path.name)
    if match:
        indexes = sorted(path.parent.glob("*.safetensors.index.json"))
        for index in indexes:
            resolved = _from_index(index, name=path.parent.resolve().name)
            if path.resolve() in {s.resolve() for s in resolved.shards}:
                return resolved
        return _shard_set(path.parent, match["base"], int(match["count"]))
    return Resolved(Layout.FILE, path.parent, (path,), path.name.removesuffix(".safetensors"))


def _resolve_dir(directory: Path) -> Resolved:
    name = directory.resolve().name
    if (directory / ADAPTER_CONFIG).exists():
        weights = directory / ADAPTER_WEIGHTS
        if not weights.exists():
            raise TensorguardError(
                f"{directory}: LoRA adapter without {ADAPTER_WEIGHTS} (.bin adapters are not read)")
        return Resolved(Layout.LORA, directory, (weights,), name)
    indexes = sorted(directory.glob("*.safetensors.index.json"))
    if indexes:
        preferred = directory / "model.safetensors.index.json"
        return _from_index(preferred if preferred in indexes else indexes[0], name=name)
    if (directory / "model.safetensors").exists():
        return Resolved(Layout.DIRECTORY, directory, (directory / "model.safetensors",), name)
    files = sorted(directory.glob("*.safetensors"))
    groups: dict[tuple[str, int], list[Path]] = defaultdict(list)
    for f in files:
        if m := SHARD_RE.match(f.name):
            groups[(m["base"], int(m["count"]))].append(f)
    if len(groups) == 1 and len(files) == len(next(iter(groups.values()))):
        (base, count), = groups
        return _shard_set(directory, base, count)
    if len(files) == 1:
        return Resolved(Layout.DIRECTORY, directory, (files[0],), name)
    if not files:
        return _gguf_dir(directory, name)
    listing = ", ".join(f.name for f in files[:6]) + (" ..." if len(files) > 6 else "")
    raise TensorguardError(
        f"{directory}: several unrelated .safetensors files ({listing}); pass one file, "
        "or add a model.safetensors.index.json")


def _gguf_dir(directory: Path, name: str) -> Resolved:
    """A directory without safetensors: one GGUF file or one split GGUF set."""
    files = sorted(directory.glob("*.gguf"))
    if not files:
        raise TensorguardError(f"{directory}: no .safetensors files (nor .gguf) in this directory")
    if len(files) == 1 and not GGUF_SPLIT_RE.match(files[0].name):
        return Resolved(Layout.GGUF, directory, (files[0],), name)
    sets = {(m["base"], int(m["count"])) for f in files if (m := GGUF_SPLIT_RE.match(f.name))}
    if len(sets) == 1 and all(GGUF_SPLIT_RE.match(f.name) for f in files):
        (base, count), = sets
        return _shard_set(directory, base, count, _GGUF_SET)
    listing = ", ".join(f.name for f in files[:6]) + (" ..." if len(files) > 6 else "")
    raise TensorguardError(f"{directory}: several .gguf files ({listing}); pass one file")


def _shard_set(directory: Path, base: str, count: int, kind: _PartSet = _SHARD_SET) -> Resolved:
    if count > MAX_PARTS:
        raise TensorguardError(f"{directory}: {kind.what} {base!r} claims {count} parts; at most "
                               f"{MAX_PARTS} are read")
    found: dict[int, Path] = {}
    for f in directory.glob(f"{glob_escape(base)}-*-of-*{kind.suffix}"):
        m = kind.pattern.match(f.name)
        if m and m["base"] == base and int(m["count"]) == count:
            found[int(m["part"])] = f
    missing = [p for p in range(1, count + 1) if p not in found]
    if missing:
        width = len(next(iter(found.values())).name.split("-of-")[1].split(".")[0]) if found else 5
        example = f"{base}-{missing[0]:0{width}d}-of-{count:0{width}d}{kind.suffix}"
        raise TensorguardError(
            f"{directory}: {kind.what} {base!r} is incomplete: part(s) "
            f"{', '.join(map(str, missing[:10]))} of {count} missing (e.g. {example})")
    extra = sorted(p for p in found if p > count or p < 1)
    if extra:
        raise TensorguardError(f"{directory}: {kind.what} {base!r} has part {extra[0]} beyond {count}")
    name = directory.resolve().name if base == "model" else base
    shards = tuple(found[p] for p in range(1, count + 1))
    return Resolved(kind.layout, directory, shards, name)


def _starts_with(path: Path, magic: bytes) -> bool:
    try:
        bytesource.need(path, 0, len(magic))
        with path.open("rb") as fh:
            return fh.read(len(magic)) == magic
    except OSError:
        return False


def _from_index(index: Path, name: str) -> Resolved:
    data = read_json(index, what="a safetensors index")
    weight_map = data.get("weight_map") if isinstance(data, dict) else None
    if not isinstance(weight_map, dict) or not weight_map or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in weight_map.items()
    ):
        raise TensorguardError(f"{index}: not a safetensors index (no 'weight_map' of names)")
    names = set(weight_map.values())
    if len(names) > MAX_PARTS:
        raise TensorguardError(f"{index}: the index names {len(names)} shards; at most {MAX_PARTS} "
                               "are read")
    outside = next((v for v in sorted(names) if not _inside(v)), None)
    if outside is not None:
        raise TensorguardError(f"{index}: shard {outside!r} is outside the model's directory (an "
                               "index may only name files in its own directory)")
    files = {v: index.parent / v for v in names}
    missing = sorted(v for v, p in files.items() if not _exists(p))
    if missing:
        raise TensorguardError(
            f"{index}: shard {missing[0]} listed in the index is missing"
            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    shards = tuple(files[v] for v in sorted(files))
    return Resolved(Layout.INDEXED_SHARDS, index.parent, shards, name,
                    {k: files[v] for k, v in weight_map.items()})


def _inside(shard: str) -> bool:
    """Whether an index's shard name stays in the index's directory: a relative path without
    ``..`` (checked on the name, so an index cannot reach other local files; symbolic links
    already in the directory, such as the Hugging Face cache's links to its blobs, are followed)."""
    relative = Path(shard)
    return bool(shard) and "\0" not in shard and not relative.is_absolute() and ".." not in relative.parts


def _exists(path: Path) -> bool:
    try:
        return path.exists()
    except OSError:  # a name too long: the regular-file check says so
        return True


def glob_escape(text: str) -> str:
    """Escape glob metacharacters in a literal file-name part."""
    return re.sub(r"([*?\[\]])", r"[\1]", text)
