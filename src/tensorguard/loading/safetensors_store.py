"""The tensors of a safetensors checkpoint: plain floats read as stored, packed weights dequantized."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tensorguard.errors import TensorguardError
from tensorguard.inputs import read_json, regular_file, special_file
from tensorguard.loading import bytesource
from tensorguard.loading.formats import WeightFormat
from tensorguard.loading.header import TensorInfo, read_header
from tensorguard.loading.layouts import Resolved
from tensorguard.loading.quant import plan_packed

if TYPE_CHECKING:
    import torch

CONFIG = "config.json"


class SafetensorsStore:
    """Every shard's header listed under one name space; packed weights (``quant``) become one
    logical tensor each, their auxiliary tensors (scales, zeros ...) are not listed."""

    claims = None
    format: WeightFormat

    def __init__(self, resolved: Resolved) -> None:
        self.stored = _headers(resolved)
        self._handles = Handles()
        self.format, self.packed = plan_packed(self.stored, _config(resolved.root), resolved.root, self)
        consumed = {part for tensor in self.packed.values() for part in tensor.parts}
        tensors = {n: i for n, i in self.stored.items() if n not in consumed}
        tensors.update({n: t.info for n, t in self.packed.items()})
        self.tensors: dict[str, TensorInfo] = dict(sorted(tensors.items()))

    def read(self, name: str, rows: slice | None, dtype: torch.dtype | None) -> torch.Tensor:
        packed = self.packed.get(name)
        if packed is not None:
            tensor = packed.read(self, rows or slice(0, packed.info.shape[0]))
        else:
            tensor = self.get(name, rows)
        return tensor if dtype is None else tensor.to(dtype)

    def get(self, name: str, rows: slice | None = None, cols: slice | None = None) -> torch.Tensor:
        """A stored tensor, or rows and/or columns of it (``StoredTensors`` for packed formats)."""
        bytesource.need_rows(self.stored[name], rows)
        handle = self._handles.open(self.stored[name].shard)
        tensor: torch.Tensor
        if rows is None and cols is None:
            tensor = handle.get_tensor(name)
        elif cols is None:
            tensor = handle.get_slice(name)[rows]
        else:
            tensor = handle.get_slice(name)[rows or slice(None), cols]
        return tensor

    def release(self) -> None:
        """Unmap the shards (reads reopen them)."""
        self._handles.clear()


def _headers(resolved: Resolved) -> dict[str, TensorInfo]:
    infos: dict[str, TensorInfo] = {}
    for shard in resolved.shards:
        for tname, info in read_header(shard).items():
            if tname in infos:
                raise TensorguardError(
                    f"{shard}: tensor {tname!r} also appears in {infos[tname].shard.name}")
            infos[tname] = info
    if resolved.weight_map:
        for tname, shard in resolved.weight_map.items():
            if tname not in infos or infos[tname].shard != shard:
                raise TensorguardError(
                    f"{shard}: the index lists tensor {tname!r} in this shard, "
                    "but its header has no such tensor")
    return infos


class Handles:
    """``safe_open`` handles, one per shard, opened on first use and kept until ``clear``."""

    def __init__(self) -> None:
        self._open: dict[Path, Any] = {}

    def open(self, shard: Path) -> Any:
        if shard not in self._open:
            self._open[shard] = open_safetensors(shard)
        return self._open[shard]

    def clear(self) -> None:
        self._open.clear()


def open_safetensors(shard: Path) -> Any:
    """A ``safe_open`` handle on a shard whose header ``read_header`` accepted. Its checks cover
    what safetensors enforces, so a refusal here means the file changed since, or a check is
    missing: still a one-line error naming the file, never a traceback."""
    from safetensors import SafetensorError, safe_open

    try:
        return safe_open(str(shard), framework="pt", device="cpu")
    except (SafetensorError, OSError) as exc:
        raise TensorguardError(f"{shard}: safetensors cannot open it: {exc}") from None


def _config(root: Path) -> dict[str, Any]:
    """``config.json`` beside the weights; absent or unreadable counts as empty (plain models do
    not need it; a packed format that needs its settings says so), but a FIFO or device under that
    name is refused rather than read (it would block, or never end)."""
    path = root / CONFIG
    if special_file(path) is not None:
        regular_file(path)
    try:
        config = read_json(path, what="a model config")
    except TensorguardError:
        return {}
    return config if isinstance(config, dict) else {}
