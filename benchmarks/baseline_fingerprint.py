"""The straightforward fingerprint, as the paper's code computes it: the benchmark's baseline.

Loads every tensor of blocks 0-15 (and those outside blocks) as float32, then for each selected
tensor and each of its samples rebuilds the probe, runs autograd for the full gradient matrix and
takes numpy/scipy statistics, subsampling 500k entries for skewness and kurtosis of gradients
above a million entries (as the reference does). Same selection and probes as tensorguard.

    python benchmarks/baseline_fingerprint.py MODEL -o DIR [--samples 15]
"""

from __future__ import annotations

import argparse

import torch

from tensorguard.architectures import block_index
from tensorguard.fingerprints.protocol import aggregate, plan_probes, summarize_tensor
from tensorguard.loading import open_model
from tensorguard.probes import MAX_BLOCK, make_probe
from tensorguard.probes.gradients import autograd_statistics

REFERENCE_SUBSAMPLE = 500_000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("-o", "--output", default="baseline-features")
    parser.add_argument("--samples", type=int, default=15)
    args = parser.parse_args()
    with open_model(args.model) as source:
        params = {i.name: source.read(i.name, torch.float32) for i in source
                  if (block_index(i.name) or 0) <= MAX_BLOCK}
        plan = plan_probes(source, args.samples)
        pool = [n for n, p in params.items() if p.ndim == 2]
        probed = []
        for name, kinds in zip(plan.tensors, plan.kinds, strict=True):
            weight = params[name]
            attacked = next(params[n] for n in pool if params[n].shape[1] == weight.shape[1])
            samples = [(autograd_statistics(weight, make_probe(kind, weight.shape[1], attacked).x,
                                            subsample=REFERENCE_SUBSAMPLE), 1) for kind in kinds]
            probed.append(summarize_tensor(name, tuple(weight.shape), samples=samples))
        fp = aggregate(source.name, probed, total_params=source.total_params,
                       num_samples=args.samples, seed=0)
    print(fp.save(args.output, force=True))


if __name__ == "__main__":
    main()
