"""Support for tests and benchmarks: tiny derivative models built the way attackers and converters
build them. Nothing in the runtime package imports it.

- ``disguises``: function-preserving attacks on a Llama-named model (renaming of hidden units,
  rescaling of paired matrices, rotation of the residual basis), depth pruning, and the reference
  decoder (``llama_logits``) that proves logits unchanged;
- ``renaming``: permutations of hidden units read off the architecture registry;
- ``gguf_write``: GGUF files written as llama.cpp's converter writes them (quantized too).
"""
