"""Per-architecture knowledge for reading GGUF files back as the Hugging Face model they came from.

Data only. Each GGUF architecture names the scheme of the architecture registry its tensors come
from (the Hugging Face names of every weight, and how each is stored) and the conversions
llama.cpp's ``convert_hf_to_gguf.py`` applies, which the reader undoes. The GGUF name of each
Hugging Face module comes from the ``gguf`` package's own ``TensorNameMap``, so no GGUF naming is
kept here, and no Hugging Face naming either: both come from their owners.

Conversions (checked against llama.cpp's ``conversion/`` modules):

- ``qk_permuted`` (``LlamaModel``: llama, also Mistral and Mixtral checkpoints): the rows of
  ``q_proj`` (and ``k_proj``, per KV head) are interleaved per head for llama.cpp's RoPE,
  ``reshape(heads, 2, head_dim // 2, ...).swapaxes(1, 2)``.
- ``norm_offset`` (Gemma, Gemma 2, Gemma 3): every ``*norm.weight`` is stored plus 1.
- transposed (GPT-2): ``Conv1D`` weights, stored ``(in, out)`` by Hugging Face (the registry's
  axes say so), are written transposed.
- ``fused_qkv``: rows in the registry's ``GROUPED`` order, Falcon's per-KV-group ``[q..., k, v]``
  (GPT-NeoX's per-head ``[q, k, v]`` is its case of as many KV heads as heads), are regrouped as
  ``[all q, all k, all v]``.
- Qwen2/Qwen3 and Phi-3 are written unchanged.

A model whose embeddings are tied has no ``output`` tensor in GGUF, as in its safetensors.
``generated`` tensors are computed by the converter (RoPE frequency factors), not model weights.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from tensorguard.architectures import REGISTRY, QkvOrder, Scheme, Slot


@dataclass(frozen=True)
class GgufArch:
    """How one GGUF architecture's tensors relate to its Hugging Face checkpoint."""

    scheme: str  # the architecture registry's scheme
    qk_permuted: bool = False
    norm_offset: float = 0.0
    # (GGUF tensor whose presence selects it, block modules tried first): layout variants
    variants: tuple[tuple[str, tuple[str, ...]], ...] = ()
    generated: tuple[str, ...] = field(
        default=("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight"))

    @property
    def _scheme(self) -> Scheme:
        return REGISTRY.schemes[self.scheme]

    @property
    def stack(self) -> str:
        """Prefix of block modules: ``{stack}.{index}.{module}``."""
        return self._scheme.stack

    @property
    def top(self) -> tuple[str, ...]:
        """Modules outside the blocks."""
        return self._scheme.modules((*self._scheme.before, *self._scheme.after))

    @property
    def block(self) -> tuple[str, ...]:
        """Modules inside each block."""
        return self._scheme.modules(self._scheme.blocks, relative=True)

    @cached_property
    def transposed(self) -> tuple[str, ...]:
        """Block modules stored ``(in, out)`` by Hugging Face."""
        return self._scheme.modules(tuple(w for w in self._scheme.blocks if w.stored_in_out),
                                    relative=True)

    @cached_property
    def fused_qkv(self) -> str | None:
        """The block module of a fused query/key/value matrix whose rows the converter regroups:
        the registry's ``GROUPED`` order (GPT-NeoX, Falcon); ``CONCAT`` rows are written as they are."""
        fused = tuple(w for w in self._scheme.blocks
                      if w.slot is Slot.QKV and w.qkv_order is QkvOrder.GROUPED)
        return self._scheme.modules(fused, relative=True)[0] if fused else None


#: GGUF ``general.architecture`` -> how to read it back.
ARCHITECTURES: dict[str, GgufArch] = {
    "llama": GgufArch("llama", qk_permuted=True),
    "qwen2": GgufArch("llama"),
    "qwen3": GgufArch("llama"),
    "gemma": GgufArch("llama", norm_offset=1.0),
    "gemma2": GgufArch("llama", norm_offset=1.0),
    "gemma3": GgufArch("llama", norm_offset=1.0),
    "phi3": GgufArch("phi3"),
    "gpt2": GgufArch("gpt2"),
    "gptneox": GgufArch("neox"),
    # Falcon-7B has one ``input_layernorm``; Falcon-40B/180B ``ln_attn`` and ``ln_mlp``, which
    # llama.cpp maps to the same GGUF norm as ``input_layernorm``: the variant decides.
    "falcon": GgufArch("falcon",
                       variants=(("blk.0.attn_norm_2.weight", ("ln_attn", "ln_mlp")),)),
}
#: Hugging Face tensor suffixes tried on every module.
SUFFIXES = (".weight", ".bias")
