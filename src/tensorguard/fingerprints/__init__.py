"""The paper's gradient fingerprint: computing it (``protocol``) and its file format (``schema``)."""

from tensorguard.fingerprints.protocol import (
    ProbePlan,
    fingerprint,
    fingerprint_source,
    plan_probes,
    select_tensors,
)
from tensorguard.fingerprints.schema import (
    FEATURE_KEYS,
    FILE_SUFFIX,
    SCHEMA,
    Fingerprint,
    ProbedTensor,
    ProbeRecord,
    default_path,
    expand_paths,
    load_fingerprint,
    load_fingerprints,
    parse_fingerprint,
)

__all__ = ["FEATURE_KEYS", "FILE_SUFFIX", "SCHEMA", "Fingerprint", "ProbePlan", "ProbeRecord",
           "ProbedTensor", "default_path", "expand_paths", "fingerprint", "fingerprint_source",
           "load_fingerprint", "load_fingerprints", "parse_fingerprint", "plan_probes",
           "select_tensors"]
