"""Recognise packed-integer quantized checkpoints, which tensorguard does not read yet."""

from __future__ import annotations

from collections.abc import Iterable

#: (suffix or fragment of a tensor name, format it reveals), checked in order.
_MARKERS: tuple[tuple[str, str], ...] = (
    (".g_idx", "GPTQ"),
    (".qweight", "AWQ/GPTQ"),
    ("quant_state.bitsandbytes__", "bitsandbytes 4-bit"),
    (".absmax", "bitsandbytes 4-bit"),
    (".quant_map", "bitsandbytes 4-bit"),
    (".SCB", "bitsandbytes 8-bit"),
    ("_blocks", "MXFP4"),
)


def packed_format(names: Iterable[str]) -> str | None:
    """The packed-quantization format these tensor names reveal, or ``None`` for plain weights."""
    names = list(names)
    for marker, fmt in _MARKERS:
        if any(marker in n for n in names):
            if fmt == "AWQ/GPTQ":
                return "AWQ" if not any(n.endswith(".g_idx") for n in names) else "GPTQ"
            return fmt
    return None
