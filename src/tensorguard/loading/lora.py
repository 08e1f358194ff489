"""A PEFT LoRA adapter served as its base model with the adapter merged into each tensor read."""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tensorguard.errors import TensorguardError
from tensorguard.loading.header import TensorInfo, read_header
from tensorguard.loading.layouts import ADAPTER_CONFIG, Resolved
from tensorguard.loading.source import ModelSource

if TYPE_CHECKING:
    import torch

_ADAPTER_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+?)\."
    r"(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.[A-Za-z_]\w*)??(?:\.weight)?$")


@dataclass(frozen=True)
class LoraDelta:
    """The low-rank update of one base tensor: ``scale * B @ A`` (transposed where needed)."""

    a: TensorInfo  # linear: (r, in); embedding: (r, num_embeddings)
    b: TensorInfo  # linear: (out, r); embedding: (dim, r)
    scale: float
    transposed: bool  # the base stores (in, out): GPT-2 Conv1D with fan_in_fan_out, or embeddings


class LoraStore:
    """The base model's tensors, each adapted tensor merged as W + scale * B @ A on read."""

    def __init__(self, adapter: Resolved, base: ModelSource) -> None:
        self.base = base
        self.format = base.format
        self.claims = base.claims
        self.tensors = base.tensors
        self._handles: dict[Any, Any] = {}
        config = _read_config(adapter.root / ADAPTER_CONFIG)
        self.deltas, self.replacements = _plan(adapter, config, read_header(adapter.shards[0]), base)

    def _handle(self, shard: Any) -> Any:
        if shard not in self._handles:
            from safetensors import safe_open

            self._handles[shard] = safe_open(str(shard), framework="pt", device="cpu")
        return self._handles[shard]

    def release(self) -> None:
        self._handles.clear()
        self.base.close()

    def read(self, name: str, rows: slice | None, dtype: torch.dtype | None) -> torch.Tensor:
        import torch

        if name in self.replacements:
            handle = self._handle(self.replacements[name].shard)
            src = self.replacements[name].name
            w = handle.get_tensor(src) if rows is None else handle.get_slice(src)[rows]
            return w if dtype is None else w.to(dtype)
        w = self.base.read(name) if rows is None else self.base.read_rows(name, rows.start, rows.stop)
        out_dtype = dtype or w.dtype
        delta = self.deltas.get(name)
        if delta is None:
            return w.to(out_dtype)
        handle = self._handle(delta.a.shard)
        a = handle.get_tensor(delta.a.name).to(torch.float32)
        b = handle.get_tensor(delta.b.name).to(torch.float32)
        if delta.transposed:  # rows of (B @ A)^T are columns of A
            update = (a if rows is None else a[:, rows]).T @ b.T
        else:
            update = (b if rows is None else b[rows]) @ a
        return (w.to(torch.float32) + delta.scale * update).to(out_dtype)


class LoraSource(ModelSource):
    """A LoRA adapter served as its base model with the adapter merged into each tensor read."""

    def __init__(self, adapter: Resolved, base: ModelSource, name: str | None = None) -> None:
        store = LoraStore(adapter, base)
        super().__init__(adapter, name=name, store=store)
        self.shards = base.shards + adapter.shards
        self.base = base
        self.deltas, self.replacements = store.deltas, store.replacements


def _read_config(path: Any) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TensorguardError(f"{path}: not a readable adapter config ({exc})") from None
    if not isinstance(config, dict) or "r" not in config:
        raise TensorguardError(f"{path}: not a PEFT LoRA adapter config (no 'r')")
    if config.get("peft_type", "LORA") != "LORA":
        raise TensorguardError(f"{path}: {config['peft_type']} adapters are not supported (LoRA only)")
    if config.get("use_dora"):
        raise TensorguardError(f"{path}: DoRA adapters are not supported (plain LoRA only)")
    return config


def _pattern_value(pattern: dict[str, Any] | None, module: str, default: Any) -> Any:
    for key, value in (pattern or {}).items():
        if module == key or re.fullmatch(rf"(?:.*\.)?{key}", module):
            return value
    return default


def _plan(adapter: Resolved, config: dict[str, Any], infos: dict[str, TensorInfo],
          base: ModelSource) -> tuple[dict[str, LoraDelta], dict[str, TensorInfo]]:
    pairs: dict[str, dict[str, TensorInfo]] = {}
    replacements: dict[str, TensorInfo] = {}
    for key, info in infos.items():
        m = _ADAPTER_KEY.match(key)
        if m:
            pairs.setdefault(m["module"], {})[m["kind"]] = info
            continue
        target = key.removeprefix("base_model.model.").replace(".modules_to_save.default", "")
        if target not in base.tensors:
            raise TensorguardError(f"{adapter.root}: adapter tensor {key!r} has no counterpart "
                                   "in the base model")
        if base.tensors[target].shape != info.shape:
            raise TensorguardError(
                f"{adapter.root}: adapter tensor {key!r} has shape {list(info.shape)}, the base "
                f"has {list(base.tensors[target].shape)}: this adapter does not fit the base")
        replacements[target] = info
    deltas: dict[str, LoraDelta] = {}
    fan_in_fan_out = bool(config.get("fan_in_fan_out", False))
    for module, parts in sorted(pairs.items()):
        embedding = "lora_embedding_A" in parts or "lora_embedding_B" in parts
        a = parts.get("lora_embedding_A" if embedding else "lora_A")
        b = parts.get("lora_embedding_B" if embedding else "lora_B")
        if a is None or b is None:
            raise TensorguardError(f"{adapter.root}: module {module!r} lacks its LoRA A or B matrix")
        target = f"{module}.weight"
        if target not in base.tensors:
            raise TensorguardError(f"{adapter.root}: adapted module {module!r} has no tensor "
                                   f"{target!r} in the base model: this adapter does not fit it")
        r = int(_pattern_value(config.get("rank_pattern"), module, config["r"]))
        alpha = float(_pattern_value(config.get("alpha_pattern"), module,
                                     config.get("lora_alpha", r)))
        scale = alpha / math.sqrt(r) if config.get("use_rslora") else alpha / r
        transposed = embedding or fan_in_fan_out
        rows_cols = (a.shape[1], b.shape[0]) if transposed else (b.shape[0], a.shape[1])
        if len(a.shape) != 2 or len(b.shape) != 2 or a.shape[0] != b.shape[1] \
                or base.tensors[target].shape != rows_cols:
            raise TensorguardError(
                f"{adapter.root}: LoRA {module!r} (A {list(a.shape)}, B {list(b.shape)}) does not "
                f"fit base tensor {target!r} of shape {list(base.tensors[target].shape)}")
        deltas[target] = LoraDelta(a, b, scale, transposed)
    if not deltas and not replacements:
        raise TensorguardError(f"{adapter.root}: the adapter holds no LoRA tensors")
    return deltas, replacements
