"""Architectures as data: one registry record per naming scheme, and everything derived from it.

``schemes.py`` holds the records; ``registry.py`` their types and the name lookup; ``roles``
(the paper's layer types) and ``anatomy`` (vocabulary matrices, MLP blocks) are read off the
records, as are the header summary, the synthetic generators and the test support's renaming.
Adding an architecture is one ``Scheme`` in ``schemes.py`` plus a test.
"""

from tensorguard.architectures import schemes as _schemes  # noqa: F401  (registers the records)
from tensorguard.architectures.anatomy import (
    MlpBlock,
    NeuronMatrix,
    block_order,
    is_vocab_matrix,
    mlp_blocks,
    vocab_matrices,
    vocab_matrix,
)
from tensorguard.architectures.registry import (
    NORM_PLUS_ONE,
    REGISTRY,
    SLOT_ROLES,
    Located,
    QkvOrder,
    Role,
    Scheme,
    Site,
    Slot,
    Space,
    Weight,
    lookup,
)
from tensorguard.architectures.roles import KEYWORD_ROLES, block_index, role

__all__ = ["KEYWORD_ROLES", "NORM_PLUS_ONE", "REGISTRY", "SLOT_ROLES", "Located", "MlpBlock",
           "NeuronMatrix", "QkvOrder", "Role", "Scheme", "Site", "Slot", "Space", "Weight",
           "block_index", "block_order", "is_vocab_matrix", "lookup", "mlp_blocks", "role", "vocab_matrices",
           "vocab_matrix"]
