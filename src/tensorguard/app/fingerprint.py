"""``tensorguard fingerprint``: fingerprint each model and write ``DIR/<name>_features.json``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from tensorguard.app.batch import Outcome, Status, name_collision, run_batch
from tensorguard.devices import resolve_device
from tensorguard.errors import UsageError
from tensorguard.fingerprints import Fingerprint, default_path, fingerprint_source
from tensorguard.loading import open_model
from tensorguard.reference import is_bundled

#: Where the command line writes fingerprints when no folder is named (as the paper's code does).
DEFAULT_DIR = "features"


def fingerprint_models(models: Sequence[str], *, out_dir: str | Path | None, samples: int = 15,
                       device: str = "auto", name: str | None = None, base: str | None = None,
                       force: bool = False,
                       on_outcome: Callable[[Outcome[Fingerprint]], None] | None = None,
                       ) -> list[Outcome[Fingerprint]]:
    """Fingerprint each model; with ``out_dir``, write each to ``out_dir/<name>_features.json``
    (an existing file is skipped unless ``force``, so an interrupted batch resumes where it
    stopped). A model that fails is recorded and the others go on."""
    if name is not None and len(models) != 1:
        raise UsageError("{name} applies to a single model only", "name")
    if out_dir is not None and is_bundled(out_dir):
        raise UsageError(f"{out_dir} is tensorguard's bundled reference set, which is read-only; "
                         + "name another folder with {out_dir}", "out_dir")
    resolve_device(device)
    seen: dict[str, str] = {}

    def one(model: str) -> Outcome[Fingerprint]:
        with open_model(model, base=base, name=name) as source:
            name_collision(seen, model, source.name)
            path = default_path(out_dir, source.name) if out_dir is not None else None
            if path is not None and path.exists() and not force:
                return Outcome(model, Status.SKIPPED, (str(path),))
            fp = fingerprint_source(source, samples=samples, device=device)
        if path is None:
            return Outcome(model, Status.WRITTEN, (), result=fp)
        return Outcome(model, Status.WRITTEN, (str(fp.save(path, force=force)),), result=fp)

    return run_batch(models, one, on_outcome=on_outcome)


def render_text(outcomes: Sequence[Outcome[Fingerprint]]) -> str:
    """One line per fingerprinted or skipped model (failures go to stderr as they happen)."""
    lines = []
    for o in outcomes:
        if o.status is Status.WRITTEN and o.result is not None:
            fp = o.result
            where = f"wrote {o.paths[0]}" if o.paths else "computed"
            lines.append(f"{fp.model_name}: {where} ({fp.num_layers} tensors x "
                         f"{fp.probe.num_samples if fp.probe else 0} samples)")
        elif o.status is Status.SKIPPED:
            lines.append(f"{o.model}: {o.paths[0]} exists, skipped (use --force)")
    return "\n".join(lines)
