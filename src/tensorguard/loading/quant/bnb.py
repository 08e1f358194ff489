"""bitsandbytes checkpoints as transformers saves them: 4-bit (NF4, FP4) and 8-bit (LLM.int8).

4-bit, per weight ``P.weight`` of logical shape (N, K):

- ``P.weight`` uint8: two codes per byte over the flattened weight, the first in the high nibble;
- ``P.weight.quant_map`` float32 (16): the code book (NF4 or FP4 values);
- ``P.weight.absmax``: one scale per ``blocksize`` consecutive entries of the flattened weight,
  float32, or with nested (double) quantization uint8 codes decoded as
  ``nested_quant_map[code] * nested_absmax[block // nested_blocksize] + nested_offset``;
- ``P.weight.quant_state.bitsandbytes__nf4`` (or ``__fp4``): uint8 bytes of a JSON object with
  ``shape``, ``blocksize``, ``quant_type`` and the nested settings.

``W.flatten()[i] = quant_map[code[i]] * absmax[i // blocksize]``. Rows are contiguous runs of the
flattened weight, so a block of rows reads only its bytes and scales. The quant_state JSON (a few
hundred bytes per weight) is read when the model is opened: it holds the weight's shape.

8-bit: ``P.weight`` int8 (N, K) and ``P.SCB`` float32 (N): ``W = weight * SCB[:, None] / 127``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tensorguard.errors import TensorguardError
from tensorguard.loading.checks import integer, number
from tensorguard.loading.formats import WeightFormat
from tensorguard.loading.header import FLOAT_DTYPES, INTEGER_DTYPES, TensorInfo
from tensorguard.loading.quant.base import (
    PackedFormat,
    PackedTensor,
    StoredTensors,
    expect,
    inconsistent,
    quantization,
    require,
)
from tensorguard.loading.quant.scaled import scaled_tensor
from tensorguard.validation import shown

if TYPE_CHECKING:
    import torch

QUANT_STATE = ".quant_state.bitsandbytes__"
QUANT_TYPES = ("nf4", "fp4")
MAX_QUANT_STATE = 1 << 16  # bytes of a quant state's JSON (a few hundred in practice)


class Bnb4Tensor(PackedTensor):
    def __init__(self, info: TensorInfo, parts: tuple[str, ...], blocksize: int,
                 nested: tuple[int, float] | None) -> None:
        super().__init__(info, parts)
        self.blocksize, self.nested = blocksize, nested

    def read(self, stored: StoredTensors, rows: slice) -> torch.Tensor:
        import torch

        name, k = self.info.name, self.info.shape[1]
        start, stop = rows.start * k, rows.stop * k
        first_byte = start // 2
        packed = stored.get(name, rows=slice(first_byte, -(-stop // 2))).reshape(-1).numpy()
        codes = np.empty(2 * packed.size, dtype=np.int64)
        codes[0::2], codes[1::2] = packed >> 4, packed & 0x0F
        codes = codes[start - 2 * first_byte:stop - 2 * first_byte]
        first_block = start // self.blocksize
        absmax = self._absmax(stored, first_block, (stop - 1) // self.blocksize + 1)
        blocks = torch.arange(start, stop) // self.blocksize - first_block
        values = stored.get(name + ".quant_map").float().reshape(-1)[torch.from_numpy(codes)]
        return (values * absmax[blocks]).reshape(rows.stop - rows.start, k)

    def _absmax(self, stored: StoredTensors, first: int, last: int) -> torch.Tensor:
        import torch

        absmax = stored.get(self.info.name + ".absmax", rows=slice(first, last))
        if self.nested is None:
            return absmax.float()
        size, offset = self.nested
        n_first = first // size
        nested = stored.get(self.info.name + ".nested_absmax", rows=slice(n_first, (last - 1) // size + 1))
        code_book = stored.get(self.info.name + ".nested_quant_map").float().reshape(-1)
        return (code_book[absmax.long()] * nested.float()[torch.arange(first, last) // size - n_first]
                + offset)


class Bnb4(PackedFormat):
    format = WeightFormat.BNB_4BIT
    quant_methods = ("bitsandbytes",)
    markers = tuple(QUANT_STATE + t for t in QUANT_TYPES)

    def plan(self, infos: Mapping[str, TensorInfo], config: Mapping[str, Any], where: Path,
             stored: StoredTensors) -> dict[str, PackedTensor]:
        return {t.info.name: t for t in (self._weight(infos, n, where, stored)
                                         for n in infos if QUANT_STATE in n)}

    def _weight(self, infos: Mapping[str, TensorInfo], state_name: str, where: Path,
                stored: StoredTensors) -> Bnb4Tensor:
        weight = state_name.split(".quant_state.")[0]
        packed = require(infos, weight, weight, "packed codes", where)
        absmax = require(infos, weight + ".absmax", weight, "absmax scales", where)
        quant_map = require(infos, weight + ".quant_map", weight, "quant_map", where)
        state = _quant_state(stored, infos[state_name])
        shape, blocksize = state.get("shape"), state.get("blocksize")
        if (not isinstance(shape, list) or len(shape) != 2 or state.get("quant_type") not in QUANT_TYPES
                or not all(type(d) is int and d >= 0 for d in shape)):
            raise TensorguardError(f"{infos[state_name].shard}: {state_name!r} is not a 2-D nf4/fp4 quant "
                                   f"state: {shown(state, 120)}")
        blocksize = integer(blocksize, f"{state_name!r}'s blocksize", infos[state_name].shard)
        numel = shape[0] * shape[1]
        expect(packed, weight, where, dtypes={"U8"}, ndim={1, 2})
        if packed.numel != -(-numel // 2) or absmax.numel != -(-numel // blocksize) \
                or packed.shape[1:] not in ((), (1,)):
            raise inconsistent(where, weight, f"{packed.numel} packed bytes and {absmax.numel} absmax "
                               f"scales do not fit shape {list(shape)} in blocks of {blocksize}")
        _code_book(quant_map, 16, weight, where)
        parts = [packed, absmax, quant_map, infos[state_name]]
        nested = None
        if "nested_blocksize" in state:
            nested_absmax = require(infos, weight + ".nested_absmax", weight, "nested absmax", where)
            parts += [nested_absmax, _code_book(require(infos, weight + ".nested_quant_map", weight,
                                                        "nested quant_map", where), 256, weight, where)]
            size = integer(state["nested_blocksize"], f"{state_name!r}'s nested_blocksize", where)
            expect(absmax, weight, where, dtypes={"U8"}, ndim={1})
            expect(nested_absmax, weight, where, dtypes=FLOAT_DTYPES, ndim={1})
            if nested_absmax.numel != -(-absmax.numel // size):
                raise inconsistent(where, weight, f"{nested_absmax.numel} nested scales for "
                                   f"{absmax.numel} absmax codes in blocks of {size}")
            nested = (size, number(state.get("nested_offset", 0.0), f"{state_name!r}'s nested_offset",
                                   where))
        else:
            expect(absmax, weight, where, dtypes=FLOAT_DTYPES, ndim={1})
        scheme = str(state["quant_type"])
        info = TensorInfo(weight, (shape[0], shape[1]), scheme, packed.shard,
                          quantization(scheme, 4, parts, numel, (1, blocksize)))
        return Bnb4Tensor(info, tuple(p.name for p in parts), blocksize, nested)


def _code_book(info: TensorInfo, size: int, weight: str, where: Path) -> TensorInfo:
    """A code book indexed by codes: float, with an entry for every code."""
    expect(info, weight, where, dtypes=FLOAT_DTYPES)
    if info.numel != size:
        raise inconsistent(where, weight, f"{info.name!r} has {info.numel} entries for {size} codes")
    return info


def _quant_state(stored: StoredTensors, info: TensorInfo) -> dict[str, Any]:
    """The JSON object a quant state tensor holds as bytes."""
    if info.dtype != "U8" or info.numel > MAX_QUANT_STATE:
        raise TensorguardError(f"{info.shard}: {info.name!r} is not a quant state (a {info.dtype} tensor "
                               f"of {info.numel} entries, not a few hundred bytes of JSON)")
    try:
        state = json.loads(bytes(stored.get(info.name).reshape(-1).tolist()).decode("utf-8"))
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, too deep, a 5000-digit number
        why = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise TensorguardError(f"{info.shard}: {info.name!r} is not a readable quant state ({why})") from None
    if not isinstance(state, dict):
        raise TensorguardError(f"{info.shard}: {info.name!r} is not a readable quant state (not an object)")
    return state


class Bnb8(PackedFormat):
    format = WeightFormat.BNB_8BIT
    quant_methods = ("bitsandbytes",)
    markers = (".SCB",)

    def plan(self, infos: Mapping[str, TensorInfo], config: Mapping[str, Any], where: Path,
             stored: StoredTensors) -> dict[str, PackedTensor]:
        out: dict[str, PackedTensor] = {}
        for name in infos:
            if name.endswith(".SCB"):
                prefix = name.removesuffix(".SCB")
                weight = require(infos, prefix + ".weight", prefix + ".weight", "int8 codes", where)
                layout = prefix + ".weight_format"
                if layout in infos and (infos[layout].numel != 1 or infos[layout].dtype not in
                                        INTEGER_DTYPES or int(stored.get(layout).reshape(-1)[0]) != 0):
                    raise TensorguardError(f"{where}: {weight.name!r} is saved in a GPU tile layout, "
                                           "not row-major; tensorguard reads row-major int8 weights")
                out[weight.name] = scaled_tensor(infos, weight.name, name, None, block=None,
                                                 factor=1 / 127, where=where, extra=[layout])
        return out


FOUR_BIT = Bnb4()
EIGHT_BIT = Bnb8()
