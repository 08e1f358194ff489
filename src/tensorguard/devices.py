"""Which torch device a computation runs on: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""

from __future__ import annotations

import torch

from tensorguard.errors import OptionError

_KNOWN = "not a device (auto, cpu, cuda or cuda:N)"


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` is CUDA when available, else the CPU; anything else must exist on this machine."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise OptionError("device", device, _KNOWN) from None
    if resolved.type not in ("cpu", "cuda"):
        raise OptionError("device", device, _KNOWN)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise OptionError("device", device, "CUDA is not available on this machine")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise OptionError("device", device, f"only {torch.cuda.device_count()} CUDA device(s) here")
    return resolved
