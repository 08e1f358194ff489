"""Running a command over several models: one model's failure is recorded, the others go on."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from tensorguard.enums import TextEnum
from tensorguard.errors import TensorguardError, UsageError
from tensorguard.inputs import read_text_file

T = TypeVar("T")
R = TypeVar("R")

#: What fails one model of a batch rather than the whole run: bad input, unreadable files,
#: torch refusing a tensor, or a model too large for memory.
MODEL_ERRORS = (TensorguardError, OSError, RuntimeError, MemoryError)


class Status(TextEnum):
    WRITTEN = "written"
    SKIPPED = "skipped"  # its output exists and force was not given
    FAILED = "failed"


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What happened to one model of a batch."""

    model: str
    status: Status
    paths: tuple[str, ...] = ()
    error: str | None = None
    result: T | None = None
    fetched: int | None = None  # bytes fetched over the network (None: no remote model was read)


def failure_message(model: str, exc: BaseException) -> str:
    """One line naming the model: a library error as it is, anything else with its type."""
    detail = str(exc) if isinstance(exc, TensorguardError) else f"{type(exc).__name__}: {exc}"
    return detail if detail.startswith(model) else f"{model}: {detail}"


def metered(call: Callable[[], R]) -> tuple[R, int | None]:
    """``call()``, and the bytes it fetched over the network (``None`` when it read no remote
    model: a local result's JSON stays as it was)."""
    from tensorguard.loading.mirror import usage

    before = usage()
    result = call()
    spent = usage().since(before)
    return result, spent.fetched if spent.opened else None


def attempt(work: Callable[[str], Outcome[T]], model: str, *, alone: bool) -> Outcome[T]:
    """``work(model)``, with the bytes it fetched; a model's error is its ``failed`` outcome,
    unless the model is ``alone`` in its batch (then it propagates: the CLI exits 2 on bad input)."""
    try:
        outcome, fetched = metered(functools.partial(work, model))
        return dataclasses.replace(outcome, fetched=fetched)
    except MODEL_ERRORS as exc:
        if alone:
            raise
        return Outcome(model, Status.FAILED, error=failure_message(model, exc))


def run_batch(models: Sequence[str], work: Callable[[str], Outcome[T]], *,
              on_outcome: Callable[[Outcome[T]], None] | None = None) -> list[Outcome[T]]:
    """``work(model)`` for each model. With several models, a model that fails is recorded as
    ``failed`` with its reason; with one, its error propagates (the CLI exits 2 on bad input)."""
    outcomes: list[Outcome[T]] = []
    for model in models:
        outcome = attempt(work, model, alone=len(models) == 1)
        outcomes.append(outcome)
        if on_outcome is not None:
            on_outcome(outcome)
    return outcomes


def model_list(models: Sequence[str], from_file: str | Path | None) -> list[str]:
    """The models of a batch: the arguments, then ``from_file``'s lines (one model each; blank
    lines and ``#`` comments skipped)."""
    listed = list(models)
    if from_file is not None:
        lines = (line.strip() for line in read_text_file(from_file, "model list").splitlines())
        listed += [line for line in lines if line and not line.startswith("#")]
    if not listed:
        raise UsageError("name at least one model (as arguments, or one a line in {from_file})", "from_file")
    return listed


def name_collision(seen: dict[str, str], model: str, name: str) -> None:
    """Refuse a second model of the run whose outputs would take the same file names."""
    if name in seen:
        raise TensorguardError(f"{model}: model name {name!r} is also the name of {seen[name]} in "
                               "this run (their outputs would collide); rename one")
    seen[name] = model
