"""tensorguard: tell where a large language model comes from by reading only its weight files.

The public API, imported lazily so that ``import tensorguard`` stays cheap::

    import tensorguard
    from tensorguard.reference import bundled_dir  # the bundled reference fingerprints

    fp = tensorguard.fingerprint("./Llama-3.2-1B")               # the paper's gradient fingerprint
    result = tensorguard.compare("./Llama-3.2-1B", "./suspect")  # verdict + evidence
    summary = tensorguard.inspect("./suspect")                   # from the headers alone
    sens = tensorguard.analyze_sensitivity("./suspect")          # per-layer noise sensitivity
    known = tensorguard.load_fingerprints(bundled_dir())
    clf = tensorguard.FamilyClassifier(centers=["phi-4", "Qwen2.5-3B"]).fit(known)
    found = tensorguard.scan("./suspect", catalogue="catalogue.sqlite")  # derived from a known model?
    family = tensorguard.tree(["./base", "./finetune", "./finetune-int8"])  # who came from whom

Every verb takes a path or an open ``ModelSource`` and keyword-only options, and returns a typed
result; bad input raises ``TensorguardError`` with a one-line message.
"""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("tensorguard")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

#: Public name -> the module that defines it (imported on first use).
_LAZY: dict[str, str] = {
    "fingerprint": "tensorguard.fingerprints",
    "Fingerprint": "tensorguard.fingerprints",
    "load_fingerprint": "tensorguard.fingerprints",
    "load_fingerprints": "tensorguard.fingerprints",
    "compare": "tensorguard.lineage",
    "compare_all": "tensorguard.lineage",
    "Comparison": "tensorguard.lineage",
    "ComparisonMatrix": "tensorguard.lineage",
    "Verdict": "tensorguard.lineage",
    "VerdictLabel": "tensorguard.lineage",
    "inspect": "tensorguard.summary",
    "ModelSummary": "tensorguard.summary",
    "analyze_sensitivity": "tensorguard.sensitivity",
    "SensitivityResult": "tensorguard.sensitivity",
    "FamilyClassifier": "tensorguard.clustering",
    "UnknownPrediction": "tensorguard.clustering",
    "scan": "tensorguard.catalogue",
    "Catalogue": "tensorguard.catalogue",
    "ScanResult": "tensorguard.catalogue",
    "Answer": "tensorguard.catalogue",
    "tree": "tensorguard.genealogy",
    "Tree": "tensorguard.genealogy",
    "open_model": "tensorguard.loading",
    "ModelSource": "tensorguard.loading",
    "TensorguardError": "tensorguard.errors",
    "OptionError": "tensorguard.errors",
}

__all__ = [  # the same names as _LAZY (a test checks), spelled out for tools that read it statically
    "Answer", "Catalogue", "Comparison", "ComparisonMatrix", "FamilyClassifier", "Fingerprint",
    "ModelSource", "ModelSummary", "OptionError", "ScanResult", "SensitivityResult", "TensorguardError",
    "Tree", "UnknownPrediction", "Verdict", "VerdictLabel", "__version__", "analyze_sensitivity", "compare",
    "compare_all", "fingerprint", "inspect", "load_fingerprint", "load_fingerprints", "open_model", "scan",
    "tree",
]

if TYPE_CHECKING:
    from tensorguard.catalogue import Answer, Catalogue, ScanResult, scan
    from tensorguard.clustering import FamilyClassifier, UnknownPrediction
    from tensorguard.errors import OptionError, TensorguardError
    from tensorguard.fingerprints import Fingerprint, fingerprint, load_fingerprint, load_fingerprints
    from tensorguard.genealogy import Tree, tree
    from tensorguard.lineage import (
        Comparison,
        ComparisonMatrix,
        Verdict,
        VerdictLabel,
        compare,
        compare_all,
    )
    from tensorguard.loading import ModelSource, open_model
    from tensorguard.sensitivity import SensitivityResult, analyze_sensitivity
    from tensorguard.summary import ModelSummary, inspect


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'tensorguard' has no attribute {name!r}")
    value = getattr(import_module(_LAZY[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
