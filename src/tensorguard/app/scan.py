"""``tensorguard scan``: scan each model against the catalogue (a model that fails is reported and
the others go on), the policy that turns a match into a CI failure, and the text report."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from tensorguard.app.batch import Outcome, Status, run_batch
from tensorguard.catalogue import Candidate, Catalogue, ScanResult, scan
from tensorguard.devices import resolve_device
from tensorguard.report import fmt, table


def scan_models(catalogue: Catalogue, models: Sequence[str], *, top: int = 5, confirm: int = 2,
                base: str | None = None, samples: int = 15, blocks: int = 4, device: str = "auto",
                on_outcome: Callable[[Outcome[ScanResult]], None] | None = None,
                ) -> list[Outcome[ScanResult]]:
    """``scan`` each model; a model that fails is recorded and the others go on."""
    resolve_device(device)

    def one(model: str) -> Outcome[ScanResult]:
        result = scan(model, catalogue=catalogue, top=top, confirm=confirm, base=base, samples=samples,
                      blocks=blocks, device=device)
        return Outcome(model, Status.WRITTEN, result=result)

    return run_batch(models, one, on_outcome=on_outcome)


def policy_hits(results: Sequence[ScanResult], policy: Mapping[str, str], *,
                unconfirmed: bool = False) -> list[ScanResult]:
    """The results whose answer names an entry carrying every ``key=value`` of ``policy``."""
    return [r for r in results if policy and r.matches(policy, unconfirmed=unconfirmed)]


def _confirmation(c: Candidate) -> str:
    if c.confirmation is None:
        return "-"
    if not c.confirmation.ran:
        return f"not run: {c.confirmation.reason}"
    p = c.confirmation.p_text
    return f"{c.confirmation.verdict}{f' ({p})' if p else ''}"


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def render_result(r: ScanResult) -> str:
    rows = [[c.name, c.origin.value, c.evidence.value, _score(c.score), _score(c.retrieval),
             fmt(c.fingerprint_distance, 3), "yes" if c.match else "no", _confirmation(c)]
            for c in r.candidates]
    base = f"  {r.base}: " + ",".join(f"{k}={v}" for k, v in sorted(r.base_labels.items())) \
        if r.base and r.base_labels else None
    lines = [f"{r.model}: {r.summary}", *([base] if base else []),
             f"  {r.rows} catalogue entries ({r.catalogue}); signature match >= {r.thresholds.signature}"
             + (f", fingerprint match <= {r.thresholds.fingerprint:.3g}"
                if r.thresholds.fingerprint is not None else "")]
    if rows:
        lines += ["  " + line for line in table(
            ["candidate", "origin", "evidence", "signature", "retrieval", "fp distance", "match",
             "confirmed by compare"], rows).splitlines()]
    return "\n".join(lines)


def render_text(outcomes: Sequence[Outcome[ScanResult]]) -> str:
    """One block per scanned model (failures go to stderr as they happen)."""
    return "\n\n".join(render_result(o.result) for o in outcomes if o.result is not None)
