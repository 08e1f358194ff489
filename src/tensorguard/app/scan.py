"""``tensorguard scan``: scan each model against the catalogue (a model that fails is reported and
the others go on), the policy that turns a match into a CI failure, and the text report."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from tensorguard.app.batch import Outcome, Status
from tensorguard.app.executors import Executor, LocalExecutor
from tensorguard.catalogue import Candidate, Catalogue, ScanResult, scan
from tensorguard.devices import resolve_device
from tensorguard.progress import Tally
from tensorguard.report import fmt, table


def scan_entry(model: str, *, catalogue: Catalogue, top: int, confirm: int, base: str | None,
               samples: int, blocks: int, device: str) -> Outcome[ScanResult]:
    """One model of a scan (in this process or on a worker, which reads the same catalogue file)."""
    result = scan(model, catalogue=catalogue, top=top, confirm=confirm, base=base, samples=samples,
                  blocks=blocks, device=device)
    return Outcome(model, Status.WRITTEN, result=result)


def scan_models(catalogue: Catalogue, models: Sequence[str], *, top: int = 5, confirm: int = 2,
                base: str | None = None, samples: int = 15, blocks: int = 4, device: str = "auto",
                executor: Executor | None = None,
                on_outcome: Callable[[Outcome[ScanResult]], None] | None = None,
                ) -> list[Outcome[ScanResult]]:
    """``scan`` each model (on ``executor``; default: in this process); a model that fails is
    recorded and the others go on. Results come back in the order of ``models``."""
    resolve_device(device)
    found: dict[int, Outcome[ScanResult]] = {}
    tally = Tally(len(models), "scan")
    try:
        with executor or LocalExecutor() as runner:
            for i, outcome in runner.run(scan_entry, models, catalogue=catalogue, top=top, confirm=confirm,
                                         base=base, samples=samples, blocks=blocks, device=device):
                found[i] = outcome
                tally.update(outcome.status.value)
                if on_outcome is not None:
                    on_outcome(outcome)
    finally:
        tally.close()
    return [found[i] for i in sorted(found)]


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
    lines += [f"  skipped: {why}" for why in r.skipped]
    if rows:
        lines += ["  " + line for line in table(
            ["candidate", "origin", "evidence", "signature", "retrieval", "fp distance", "match",
             "confirmed by compare"], rows).splitlines()]
    return "\n".join(lines)


def render_text(outcomes: Sequence[Outcome[ScanResult]]) -> str:
    """One block per scanned model (failures go to stderr as they happen)."""
    return "\n\n".join(render_result(o.result) for o in outcomes if o.result is not None)
