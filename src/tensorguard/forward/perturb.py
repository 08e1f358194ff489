"""One layer at a time, each kind of noise added to its output; what it does to the next token.

For a target matrix (its module's output ``y``, shape ``sequences x positions x features``) each
kind makes a perturbation ``d`` of the same shape, scaled so that ``||d_b|| = STRENGTH * ||y_b||``
for every sequence ``b`` (the matched relative strength). Frequency kinds act along the sequence
axis, where order exists. The measure is the KL divergence of the perturbed next-token
distribution from the clean one, averaged over the kept positions of every sequence.

Cost, by design: every kind and sequence goes through one batched forward per target; the
blocks before the target's block are not run again (each returns its clean output, recorded
once); one clean forward (and, for ``adversarial``, one backward) serves every target.
"""

from __future__ import annotations

import inspect
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from tensorguard import progress

#: The perturbation's norm relative to the clean output's, per sequence.
STRENGTH = 0.1
#: KL is measured at every ``KEEP_EVERY``-th position from ``KEEP_EVERY - 1`` (the logits of the
#: other positions are never computed: the output head is the largest matrix of a small model).
KEEP_EVERY = 4


@dataclass(frozen=True)
class Clean:
    """What one clean pass gives every target: its output and, for adversarial, its gradient."""

    output: torch.Tensor  # sequences x positions x features
    gradient: torch.Tensor | None


Noise = Callable[[Clean, torch.Generator], torch.Tensor]


def _band(x: torch.Tensor, start: int, stop: int | None) -> torch.Tensor:
    """``x`` with only the rfft bins ``start:stop`` along the sequence axis (1) kept."""
    freq = torch.fft.rfft(x.double(), dim=1)
    mask = torch.zeros(freq.shape[1], dtype=torch.float64)
    mask[start:stop] = 1
    kept: torch.Tensor = torch.fft.irfft(freq * mask[None, :, None], n=x.shape[1], dim=1)
    return kept.float()


def _bins(positions: int) -> int:
    return positions // 2 + 1


def _gaussian(clean: Clean, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(clean.output.shape, generator=gen)


def _low_frequency(clean: Clean, gen: torch.Generator) -> torch.Tensor:
    return _band(_gaussian(clean, gen), 0, _bins(clean.output.shape[1]) // 8)


def _high_frequency(clean: Clean, gen: torch.Generator) -> torch.Tensor:
    return _band(_gaussian(clean, gen), _bins(clean.output.shape[1]) // 2, None)


def _structured(clean: Clean, gen: torch.Generator) -> torch.Tensor:
    """The output's own slow part (the lowest quarter of its frequencies) added again."""
    return _band(clean.output, 0, _bins(clean.output.shape[1]) // 4)


def _adversarial(clean: Clean, gen: torch.Generator) -> torch.Tensor:
    """One FGSM step: the sign of the loss gradient with respect to the output."""
    if clean.gradient is None:
        raise ValueError("the adversarial kind needs the clean pass's gradient")
    return clean.gradient.sign()


def _token_focus(clean: Clean, gen: torch.Generator) -> torch.Tensor:
    """A quarter of the positions amplified."""
    positions = clean.output.shape[1]
    mask = torch.zeros(positions)
    mask[torch.randperm(positions, generator=gen)[:max(1, positions // 4)]] = 1.0
    return clean.output * mask[None, :, None]


def _attention_pattern(clean: Clean, gen: torch.Generator) -> torch.Tensor:
    """A periodic pattern along the sequence (8 periods) in a random direction, a little noise."""
    _, positions, features = clean.output.shape
    wave = torch.sin(torch.arange(positions) * (2 * torch.pi * 8 / positions))
    direction = torch.randn(features, generator=gen)
    return wave[None, :, None] * direction + 0.1 * _gaussian(clean, gen)


def _head_specific(clean: Clean, gen: torch.Generator) -> torch.Tensor:
    """Strong noise in 1-3 of 8 equal slices of the features, weak noise elsewhere."""
    features = clean.output.shape[2]
    width = max(1, features // 8)
    noise = 0.05 * _gaussian(clean, gen)
    for head in torch.randperm(8, generator=gen)[:int(torch.randint(1, 4, (1,), generator=gen))]:
        part = noise[:, :, head * width:(head + 1) * width]
        part.copy_(torch.randn(part.shape, generator=gen))
    return noise


#: The noise of each probe kind, in the model's activations (``probes.KINDS`` names).
NOISES: dict[str, Noise] = {
    "adversarial": _adversarial, "structured": _structured, "gaussian": _gaussian,
    "low_frequency": _low_frequency, "high_frequency": _high_frequency,
    "token_focus": _token_focus, "attention_pattern": _attention_pattern,
    "head_specific": _head_specific,
}


def perturbation(kind: str, clean: Clean) -> torch.Tensor:
    """The perturbation of ``kind`` for ``clean``, at ``STRENGTH`` times each sequence's norm."""
    gen = torch.Generator().manual_seed(zlib.crc32(kind.encode()))
    delta = NOISES[kind](clean, gen)
    scale = torch.linalg.vector_norm(clean.output.double(), dim=(1, 2))
    norm = torch.linalg.vector_norm(delta.double(), dim=(1, 2))
    factor = torch.where(norm > 0, STRENGTH * scale / torch.where(norm > 0, norm, 1.0), 0.0)
    return (delta * factor[:, None, None].float()).to(clean.output.dtype)


@dataclass(frozen=True)
class Target:
    """A matrix to perturb: its model module and, when it sits in a block, that block."""

    name: str
    module: torch.nn.Module
    block: int | None


def _output(value: Any) -> torch.Tensor:
    tensor: torch.Tensor = value[0] if isinstance(value, tuple) else value
    return tensor


@contextmanager
def _hook(module: torch.nn.Module, hook: Callable[..., Any]) -> Iterator[None]:
    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


@contextmanager
def _replayed(layers: Sequence[torch.nn.Module], outputs: Sequence[Any], copies: int) -> Iterator[None]:
    """Blocks that return their recorded clean output (repeated ``copies`` times), not run."""

    def repeat(value: Any) -> Any:
        if isinstance(value, tuple):
            return (repeat(value[0]), *value[1:])
        return value.repeat(copies, *([1] * (value.dim() - 1)))

    def returning(value: Any) -> Callable[..., Any]:
        return lambda *args, **kwargs: value

    try:  # only the last one's output is read (each replayed block ignores its input)
        for i, (layer, output) in enumerate(zip(layers, outputs, strict=True)):
            layer.forward = returning(repeat(output) if i == len(layers) - 1 else output)
        yield
    finally:
        for layer in layers:
            layer.__dict__.pop("forward", None)


class Probe:
    """A model, its token sequences and the clean pass, ready to measure targets."""

    def __init__(self, model: Any, tokens: torch.Tensor, layers: Sequence[torch.nn.Module],
                 targets: Sequence[Target], kinds: Sequence[str]) -> None:
        self.model, self.tokens, self.layers = model, tokens, list(layers)
        self.targets, self.kinds = list(targets), list(kinds)
        self.keep = torch.arange(KEEP_EVERY - 1, tokens.shape[1], KEEP_EVERY)
        self.layer_outputs: list[Any] = [None] * len(self.layers)
        self.clean: dict[str, Clean] = {}
        self._clean_pass()

    def _logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """The logits at the kept positions (only those computed, where the model allows)."""
        if "logits_to_keep" in inspect.signature(self.model.forward).parameters:
            kept: torch.Tensor = self.model(input_ids=tokens, logits_to_keep=self.keep,
                                            use_cache=False).logits
        else:
            kept = self.model(input_ids=tokens, use_cache=False).logits[:, self.keep]
        return kept.float()

    def _clean_pass(self) -> None:
        """Record every block's output and every target's output (and gradient) once."""
        outputs: dict[str, torch.Tensor] = {}
        adversarial = "adversarial" in self.kinds
        with ExitStack() as stack:
            if adversarial:  # the weights need no gradient: the activations get it from here on
                stack.enter_context(_hook(self.model.get_input_embeddings(),
                                          lambda m, a, out: out.detach().requires_grad_()))
            for i, layer in enumerate(self.layers):
                def keep_layer(module: Any, args: Any, out: Any, i: int = i) -> None:
                    self.layer_outputs[i] = (tuple(o.detach() if torch.is_tensor(o) else o for o in out)
                                             if isinstance(out, tuple) else out.detach())
                stack.enter_context(_hook(layer, keep_layer))
            for target in self.targets:
                def keep_target(module: Any, args: Any, out: Any, name: str = target.name) -> None:
                    tensor = _output(out)
                    if tensor.requires_grad:
                        tensor.retain_grad()
                    outputs[name] = tensor
                stack.enter_context(_hook(target.module, keep_target))
            if adversarial:
                with torch.enable_grad():
                    logits = self.model(input_ids=self.tokens, use_cache=False).logits
                    loss: torch.Tensor = torch.nn.functional.cross_entropy(
                        logits[:, :-1].flatten(0, 1).float(), self.tokens[:, 1:].flatten())
                    torch.autograd.backward(loss)
                    logits = logits[:, self.keep]
            else:
                with torch.inference_mode():
                    logits = self._logits(self.tokens)
        self.clean_log_probs = logits.detach().double().log_softmax(dim=-1)  # KL >= 0 to rounding
        for name, tensor in outputs.items():
            grad = tensor.grad if adversarial else None
            self.clean[name] = Clean(tensor.detach(), None if grad is None else grad.detach())

    def measure(self, target: Target) -> list[float]:
        """The mean KL divergence of the next-token distribution for each kind."""
        clean = self.clean[target.name]
        deltas = torch.cat([perturbation(kind, clean) for kind in self.kinds])
        copies = len(self.kinds)

        def add(module: Any, args: Any, out: Any) -> Any:
            if isinstance(out, tuple):
                return (out[0] + deltas, *out[1:])
            return out + deltas

        start = target.block if target.block is not None else 0
        with torch.inference_mode(), _hook(target.module, add), \
                _replayed(self.layers[:start], self.layer_outputs[:start], copies):
            log_q = self._logits(self.tokens.repeat(copies, 1)).double().log_softmax(dim=-1)
        log_p = self.clean_log_probs.repeat(copies, 1, 1)
        kl = (log_p.exp() * (log_p - log_q)).sum(dim=-1)  # (kinds x sequences) x positions
        means: list[float] = kl.reshape(copies, -1).mean(dim=1).tolist()
        return means

    def run(self, desc: str) -> dict[str, list[float]]:
        """``measure`` for every target, by name."""
        return {t.name: self.measure(t) for t in progress.bar(self.targets, desc=desc,
                                                              total=len(self.targets), unit="layer")}
