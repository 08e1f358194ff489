"""Probing weight matrices: the seeded probe kinds (a registry), the FGSM attack streamed over its
matrix, the paper's probe pool, and the exact gradient statistics of a probed matrix."""

from tensorguard.probes.fgsm import MatrixRows, fgsm_matrix, fgsm_step
from tensorguard.probes.kinds import (
    ALL_KINDS,
    ATTENTION_KINDS,
    KINDS,
    NOISE_KINDS,
    Group,
    Probe,
    ProbeKind,
    kind,
    make_probe,
    make_probes,
    register,
)
from tensorguard.probes.pool import MAX_BLOCK, pool

__all__ = ["ALL_KINDS", "ATTENTION_KINDS", "KINDS", "MAX_BLOCK", "NOISE_KINDS", "Group", "MatrixRows",
           "Probe", "ProbeKind", "fgsm_matrix", "fgsm_step", "kind", "make_probe", "make_probes",
           "pool", "register"]
