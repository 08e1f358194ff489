"""The weight signature: a small summary of a model's weights that renaming hidden units,
function-preserving rescaling, fine-tuning, quantization and pruning leave recognisable.

``anatomy`` finds its inputs through the architecture registry, ``tokens`` picks the embedding
rows by token string, ``signature`` computes it and stores it as bytes, ``similarity`` compares
two of them (and gives the compact retrieval vector ``scan`` ranks a whole catalogue on).
"""

from tensorguard.signatures.anatomy import REFUSED, Anatomy, Block, Matrix, anatomy
from tensorguard.signatures.signature import (
    BLOCK_TOKENS,
    BUDGET_BYTES,
    EMBED_TOKENS,
    KINDS,
    MIN_TOKENS,
    SCHEMA,
    Signature,
    compute_signature,
    sample_blocks,
)
from tensorguard.signatures.similarity import (
    RETRIEVAL_TOKENS,
    BlockPair,
    Comparer,
    SignatureSimilarity,
    align_blocks,
    retrieval_vector,
    similarity,
    triangle,
    unit,
)
from tensorguard.signatures.tokens import select_tokens, token_strings

__all__ = ["BLOCK_TOKENS", "BUDGET_BYTES", "EMBED_TOKENS", "KINDS", "MIN_TOKENS", "REFUSED",
           "RETRIEVAL_TOKENS", "SCHEMA", "Anatomy", "Block", "BlockPair", "Comparer", "Matrix", "Signature",
           "SignatureSimilarity", "align_blocks", "anatomy", "compute_signature", "retrieval_vector",
           "sample_blocks", "select_tokens", "similarity", "token_strings", "triangle", "unit"]
