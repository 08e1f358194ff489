"""A PEFT LoRA adapter served as its base model with the adapter merged into each tensor read."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tensorguard.errors import TensorguardError
from tensorguard.inputs import read_json
from tensorguard.loading import bytesource
from tensorguard.loading.checks import integer, name_pattern, number
from tensorguard.loading.header import TensorInfo, read_header
from tensorguard.loading.layouts import ADAPTER_CONFIG, Resolved
from tensorguard.loading.safetensors_store import Handles
from tensorguard.loading.source import ModelSource
from tensorguard.validation import shown

if TYPE_CHECKING:
    import torch

_ADAPTER_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+?)\."
    r"(?P<kind>lora_A|lora_B|lora_embedding_A|lora_embedding_B)(?:\.[A-Za-z_]\w*)??(?:\.weight)?$")
#: PEFT's ``LoraConfig.lora_alpha`` when a config leaves it out.
DEFAULT_ALPHA = 8
#: ``rank_pattern``/``alpha_pattern`` keys read, and the longest module name matched against a key
#: with quantifiers (real names have under 100 characters): with ``checks.name_pattern``'s limits,
#: one match takes under 0.1 s.
MAX_PATTERN_KEYS = 10_000
MAX_MATCHED_NAME = 256
_QUANTIFIER = re.compile(r"[*+?{]")


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
        self._handles = Handles()
        config = _read_config(adapter.root / ADAPTER_CONFIG)
        self.deltas, self.replacements = _plan(adapter, config, read_header(adapter.shards[0]), base)

    def release(self) -> None:
        self._handles.clear()
        self.base.close()

    def read(self, name: str, rows: slice | None, dtype: torch.dtype | None) -> torch.Tensor:
        import torch

        if name in self.replacements:
            bytesource.need_rows(self.replacements[name], rows)
            handle = self._handles.open(self.replacements[name].shard)
            src = self.replacements[name].name
            stored: torch.Tensor = handle.get_tensor(src) if rows is None else handle.get_slice(src)[rows]
            return stored if dtype is None else stored.to(dtype)
        w = self.base.read(name) if rows is None else self.base.read_rows(name, rows.start, rows.stop)
        out_dtype = dtype or w.dtype
        delta = self.deltas.get(name)
        if delta is None:
            return w.to(out_dtype)
        bytesource.need_rows(delta.a)  # the factors are small: read whole
        bytesource.need_rows(delta.b)
        handle = self._handles.open(delta.a.shard)

        def part(info: TensorInfo, index: Any = None) -> torch.Tensor:
            """The factor, or only the rows or columns the update needs, as float32."""
            stored: torch.Tensor = (handle.get_tensor(info.name) if index is None
                                    else handle.get_slice(info.name)[index])
            return stored.to(torch.float32)

        if delta.transposed:  # rows of (B @ A)^T are columns of A
            update = part(delta.a, None if rows is None else (slice(None), rows)).T @ part(delta.b).T
        else:
            update = part(delta.b, rows) @ part(delta.a)
        return (w.to(torch.float32) + delta.scale * update).to(out_dtype)


class LoraSource(ModelSource):
    """A LoRA adapter served as its base model with the adapter merged into each tensor read."""

    def __init__(self, adapter: Resolved, base: ModelSource, name: str | None = None) -> None:
        store = LoraStore(adapter, base)
        super().__init__(adapter, name=name, store=store)
        self.shards = base.shards + adapter.shards
        self.base = base
        self.deltas, self.replacements = store.deltas, store.replacements


def _read_config(path: Path) -> LoraConfig:
    config = read_json(path, what="a PEFT adapter config")
    if not isinstance(config, dict) or "r" not in config:
        raise TensorguardError(f"{path}: not a PEFT LoRA adapter config (no 'r')")
    if config.get("peft_type", "LORA") != "LORA":
        raise TensorguardError(f"{path}: {shown(config['peft_type'])} adapters are not supported "
                               "(LoRA only)")
    if config.get("use_dora"):
        raise TensorguardError(f"{path}: DoRA adapters are not supported (plain LoRA only)")
    return LoraConfig.parse(config, path)


@dataclass(frozen=True)
class LoraConfig:
    """The settings of ``adapter_config.json`` that the merge uses, checked."""

    path: Path
    r: int
    alpha: float
    ranks: tuple[tuple[str, re.Pattern[str], int], ...]  # rank_pattern: (key, its pattern, rank)
    alphas: tuple[tuple[str, re.Pattern[str], float], ...]
    rslora: bool
    fan_in_fan_out: bool

    @classmethod
    def parse(cls, config: Mapping[str, Any], path: Path) -> LoraConfig:
        alpha = config.get("lora_alpha", DEFAULT_ALPHA)
        return cls(path, integer(config["r"], "r", path), number(alpha, "lora_alpha", path),
                   _patterns(config.get("rank_pattern"), "rank_pattern", path, integer),
                   _patterns(config.get("alpha_pattern"), "alpha_pattern", path, number),
                   _flag(config.get("use_rslora", False), "use_rslora", path),
                   _flag(config.get("fan_in_fan_out", False), "fan_in_fan_out", path))

    def scale(self, module: str) -> tuple[int, float]:
        """The rank of ``module``'s update and the factor it is multiplied by."""
        r = self._lookup(self.ranks, module, self.r)
        alpha = self._lookup(self.alphas, module, self.alpha)
        return r, alpha / math.sqrt(r) if self.rslora else alpha / r

    def _lookup(self, patterns: tuple[tuple[str, re.Pattern[str], Any], ...], module: str,
                default: Any) -> Any:
        """The value of the first key that is ``module`` or matches a dotted tail of it (PEFT's rule)."""
        for key, pattern, value in patterns:
            if module == key:
                return value
            if len(module) > MAX_MATCHED_NAME and _QUANTIFIER.search(key):
                raise TensorguardError(f"{self.path}: module name of {len(module)} characters is too "
                                       f"long to match against the pattern {shown(key)}")
            if pattern.fullmatch(module):
                return value
        return default


def _flag(value: Any, what: str, path: Path) -> bool:
    if not isinstance(value, bool) and value is not None:
        raise TensorguardError(f"{path}: {what} is {shown(value)}: must be true or false")
    return bool(value)


def _patterns(value: Any, what: str, path: Path, check: Any) -> tuple[Any, ...]:
    """``rank_pattern`` or ``alpha_pattern``: a map of module names or regular expressions."""
    if value is None:
        return ()
    if not isinstance(value, dict):
        raise TensorguardError(f"{path}: {what} is {shown(value)}: must be a map of module names "
                               "or patterns to values")
    if len(value) > MAX_PATTERN_KEYS:
        raise TensorguardError(f"{path}: {what} has {len(value)} keys; at most {MAX_PATTERN_KEYS} "
                               "are read")
    return tuple((key, name_pattern(key, what, path), check(v, f"{what}[{key!r}]", path))
                 for key, v in value.items())


def _plan(adapter: Resolved, config: LoraConfig, infos: dict[str, TensorInfo],
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
        if base.tensors[target].shape != info.shape or base.tensors[target].is_float != info.is_float:
            raise TensorguardError(
                f"{adapter.root}: adapter tensor {key!r} is {list(info.shape)} {info.dtype}, the "
                f"base has {list(base.tensors[target].shape)} {base.tensors[target].dtype}: this "
                "adapter does not fit the base")
        replacements[target] = info
    deltas: dict[str, LoraDelta] = {}
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
        transposed = embedding or config.fan_in_fan_out
        fits = a.ndim == 2 and b.ndim == 2 and a.shape[0] == b.shape[1] and a.is_float and b.is_float
        if not fits or base.tensors[target].shape != ((a.shape[1], b.shape[0]) if transposed
                                                       else (b.shape[0], a.shape[1])):
            raise TensorguardError(
                f"{adapter.root}: LoRA {module!r} (A {list(a.shape)} {a.dtype}, B {list(b.shape)} "
                f"{b.dtype}) does not fit base tensor {target!r} of shape "
                f"{list(base.tensors[target].shape)}")
        r, scale = config.scale(module)
        if a.shape[0] != r:
            raise TensorguardError(f"{adapter.root}: LoRA {module!r} has rank {a.shape[0]}, but "
                                   f"{config.path.name} says r = {r}")
        deltas[target] = LoraDelta(a, b, scale, transposed)
    if not deltas and not replacements:
        raise TensorguardError(f"{adapter.root}: the adapter holds no LoRA tensors")
    return deltas, replacements
