"""What a file's own metadata says about its model: claims, reported as such, never trusted."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class BaseModelClaim:
    """One ``general.base_model.N.*`` entry of the metadata."""

    name: str | None
    organization: str | None
    version: str | None
    repo_url: str | None


@dataclass(frozen=True)
class GgufClaims:
    """What a GGUF file's metadata says about its model: claims, not checked against the weights.

    Sizes are ``{architecture}.*`` keys (``vocab_size`` falls back to the tokenizer's length);
    ``tied_embeddings`` is true when the file has a token embedding and no output tensor (the
    output reuses the embedding), ``None`` for architectures the gguf package does not know; ``hf_names`` says
    whether tensor names were mapped to Hugging Face names.
    """

    architecture: str
    name: str | None
    organization: str | None
    basename: str | None
    finetune: str | None
    size_label: str | None
    file_type: str | None
    block_count: int | None
    context_length: int | None
    embedding_length: int | None
    feed_forward_length: int | None
    head_count: int | None
    head_count_kv: int | None
    vocab_size: int | None
    base_models: tuple[BaseModelClaim, ...]
    tied_embeddings: bool | None
    hf_names: bool
