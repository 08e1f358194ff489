"""The fingerprint: the paper's 14 gradient features of a model, and its JSON file format.

Files written here keep the published TensorGuard layout (the 14 feature keys, ``total_params``,
``num_layers``, ``model_name``) and add ``schema``, ``tensorguard_version`` and a ``probe``
object for auditing; the only numeric top-level keys are the paper's, so readers that take
"all numeric keys" (as the paper's clustering does) see exactly what they expect.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tensorguard.errors import TensorguardError
from tensorguard.inputs import read_json
from tensorguard.outputs import write_text_atomic
from tensorguard.validation import finite, shown

SCHEMA = "tensorguard.fingerprint/1"
STATISTICS = ("mean", "std", "norm", "skewness", "kurtosis")
ROLE_STATISTICS = ("mean", "std", "norm")
FEATURE_ROLES = ("attention", "ffn", "embedding")
#: The paper's 14 features, in the fixed order every vector uses.
FEATURE_KEYS: tuple[str, ...] = tuple(f"global_{s}" for s in STATISTICS) + tuple(
    f"{r}_{s}" for r in FEATURE_ROLES for s in ROLE_STATISTICS)
FILE_SUFFIX = "_features.json"


@dataclass(frozen=True)
class ProbedTensor:
    """One probed tensor and the mean of each gradient statistic over its samples."""

    name: str
    role: str
    shape: tuple[int, ...]
    mean: float
    std: float
    norm: float
    skewness: float
    kurtosis: float


@dataclass(frozen=True)
class ProbeRecord:
    """How a fingerprint was probed: enough to audit or reproduce it."""

    seed: int
    num_samples: int
    tensors: tuple[ProbedTensor, ...]


@dataclass(frozen=True)
class Fingerprint:
    """A model's gradient fingerprint; ``features`` maps a subset of ``FEATURE_KEYS`` to values."""

    model_name: str
    features: dict[str, float]
    total_params: int
    num_layers: int
    probe: ProbeRecord | None = None
    tensorguard_version: str | None = None
    path: Path | None = field(default=None, compare=False)  # where it was read from

    def vector(self) -> np.ndarray:
        """The 14 features in ``FEATURE_KEYS`` order; raises if any is missing."""
        missing = [k for k in FEATURE_KEYS if k not in self.features]
        if missing:
            raise TensorguardError(
                f"{self.path or self.model_name}: fingerprint lacks feature(s) {', '.join(missing)}")
        return np.array([self.features[k] for k in FEATURE_KEYS], dtype=np.float64)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object, keys in the published order, then tensorguard's own."""
        out: dict[str, Any] = {k: self.features[k] for k in FEATURE_KEYS if k in self.features}
        out.update(total_params=self.total_params, num_layers=self.num_layers,
                   model_name=self.model_name, schema=SCHEMA)
        if self.tensorguard_version is not None:
            out["tensorguard_version"] = self.tensorguard_version
        if self.probe is not None:
            out["probe"] = {
                "seed": self.probe.seed,
                "num_samples": self.probe.num_samples,
                "tensors": [
                    {"name": t.name, "role": t.role, "shape": list(t.shape),
                     **{s: getattr(t, s) for s in STATISTICS}}
                    for t in self.probe.tensors
                ],
            }
        return out

    def dumps(self) -> str:
        """Deterministic JSON text: the same fingerprint always gives the same bytes."""
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def save(self, path: str | Path, *, force: bool = False) -> Path:
        """Write the fingerprint atomically to ``path`` (a ``.json`` file) or, given a directory,
        to ``DIR/<model_name>_features.json``; an existing file is kept unless ``force``."""
        path = Path(path)
        target = path if path.suffix == ".json" else default_path(path, self.model_name)
        return write_text_atomic(target, self.dumps(), force=force)


#: The largest magnitude of a number in a fingerprint: far beyond any real statistic, and small
#: enough that distances, variances and standardisations of such numbers stay finite in float64.
MAX_MAGNITUDE = 1e100


def default_path(directory: str | Path, model_name: str) -> Path:
    """Where the fingerprint of ``model_name`` goes: ``DIR/<model_name>_features.json``."""
    return Path(directory) / f"{model_name.replace('/', '_')}{FILE_SUFFIX}"


def _number(path: Path, key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TensorguardError(f"{path}: key {key!r} is not a number ({shown(value)})")
    number = finite(value)
    if number is None:
        raise TensorguardError(f"{path}: key {key!r} is {shown(value)} (not a finite number)")
    if abs(number) > MAX_MAGNITUDE:
        raise TensorguardError(f"{path}: key {key!r} is {number:.3g}, beyond +-{MAX_MAGNITUDE:g} (no "
                               "model's statistics come near; statistics of it would overflow)")
    return number


def _integer(path: Path, key: str, value: Any) -> int:
    number = _number(path, key, value)
    if number != int(number):
        raise TensorguardError(f"{path}: key {key!r} is not a whole number ({value!r})")
    return int(number)


def _probed_tensor(path: Path, t: Any) -> ProbedTensor:
    if not (isinstance(t, dict) and isinstance(t.get("name"), str) and isinstance(t.get("role"), str)
            and isinstance(t.get("shape"), list)):
        raise TensorguardError(f"{path}: malformed 'probe' object (a tensor needs name, role, shape)")
    return ProbedTensor(t["name"], t["role"], tuple(_integer(path, "shape", d) for d in t["shape"]),
                        *(_number(path, f"probe {s}", t.get(s)) for s in STATISTICS))


def _probe(path: Path, data: Any) -> ProbeRecord | None:
    if data is None:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("tensors"), list):
        raise TensorguardError(f"{path}: malformed 'probe' object (needs seed, num_samples, tensors)")
    return ProbeRecord(seed=_integer(path, "seed", data.get("seed")),
                       num_samples=_integer(path, "num_samples", data.get("num_samples")),
                       tensors=tuple(_probed_tensor(path, t) for t in data["tensors"]))


def _version(path: Path, value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise TensorguardError(f"{path}: 'tensorguard_version' must be a string")
    return value


def parse_fingerprint(data: Any, path: Path, *, complete: bool = True) -> Fingerprint:
    """Validate a decoded fingerprint JSON object (``complete``: all 14 features required)."""
    if not isinstance(data, dict):
        raise TensorguardError(f"{path}: not a fingerprint (expected a JSON object)")
    schema = data.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise TensorguardError(f"{path}: schema {schema!r} is not {SCHEMA!r}")
    present = [k for k in FEATURE_KEYS if k in data]
    if "model_name" not in data or not present:
        raise TensorguardError(
            f"{path}: not a fingerprint (needs 'model_name' and the gradient features "
            f"{FEATURE_KEYS[0]}, ...)")
    if not isinstance(data["model_name"], str) or not data["model_name"]:
        raise TensorguardError(f"{path}: 'model_name' must be a non-empty string")
    missing = [k for k in FEATURE_KEYS if k not in data]
    if complete and missing:
        raise TensorguardError(f"{path}: fingerprint lacks feature(s) {', '.join(missing)}")
    features = {k: _number(path, k, data[k]) for k in present}
    return Fingerprint(
        model_name=data["model_name"],
        features=features,
        total_params=_integer(path, "total_params", data.get("total_params", 0)),
        num_layers=_integer(path, "num_layers", data.get("num_layers", 0)),
        probe=_probe(path, data.get("probe")),
        tensorguard_version=_version(path, data.get("tensorguard_version")),
        path=path,
    )


def load_fingerprint(path: str | Path, *, complete: bool = True) -> Fingerprint:
    """Read one fingerprint file, published or tensorguard-written, with one-line errors."""
    path = Path(path)
    return parse_fingerprint(read_json(path, what="a fingerprint"), path, complete=complete)


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Fingerprint files named directly, plus every ``*_features.json`` in named directories."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob(f"*{FILE_SUFFIX}"))
            if not found:
                raise TensorguardError(f"{p}: no *{FILE_SUFFIX} files in this directory")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise TensorguardError(f"{p}: no such file or directory")
    return out


def load_fingerprints(paths: str | Path | Iterable[str | Path], *,
                      complete: bool = True) -> list[Fingerprint]:
    """Load fingerprints from files and directories of ``*_features.json`` (published by the
    paper's authors or written by tensorguard); model names must be unique.

    Example::

        fps = load_fingerprints("my_features/")   # a folder of your own
        fps = load_fingerprints(bundled_dir())    # tensorguard.reference: the bundled reference set
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    fps = [load_fingerprint(p, complete=complete) for p in expand_paths(paths)]
    seen: dict[str, Path | None] = {}
    for fp in fps:
        if fp.model_name in seen:
            raise TensorguardError(
                f"{fp.path}: duplicate model name {fp.model_name!r} (also in {seen[fp.model_name]})")
        seen[fp.model_name] = fp.path
    if not fps:
        raise TensorguardError("no fingerprint files given")
    return fps
