"""The paper's probe pool: which tensors of a model its protocol may probe."""

from __future__ import annotations

from tensorguard.architectures import block_index
from tensorguard.loading import ModelSource, TensorInfo

MAX_BLOCK = 15  # the paper probes blocks 0..15 only


def pool(source: ModelSource) -> list[TensorInfo]:
    """2-D floating-point tensors outside blocks above ``MAX_BLOCK``, in plain name order."""
    return [i for i in source.matrices() if (block_index(i.name) or 0) <= MAX_BLOCK]
