"""Where a batch's models are measured: in this process (the default), or on a Dask cluster.

An executor runs one task per model, ``work(model, **shared)``, and yields each model's
``Outcome`` as it finishes, with the model's position in the batch. A task that fails on a
model (bad input, unreadable files, out of memory) returns a ``failed`` outcome; the batch goes on.

``DaskExecutor`` uses ``dask.distributed`` (the ``distributed`` extra): a ``LocalCluster`` of
``workers`` processes on this machine (one thread each), or the cluster behind ``scheduler``.
Workers only compute; results (a catalogue row: kilobytes) come back to the client, which alone
writes. Shared arguments are sent to every worker once. Each task sets torch to one thread, so
a worker never oversubscribes its core. A worker that dies (killed, or over its memory limit)
has its tasks rerun elsewhere by the scheduler; a model that kills ``allowed-failures`` (Dask's
setting, 3 by default) workers is recorded as failed.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Any, Protocol, TypeVar

from tensorguard.app.batch import Outcome, Status, attempt
from tensorguard.errors import UsageError

T = TypeVar("T")

#: Seconds to wait for a scheduler before saying it cannot be reached.
CONNECT_TIMEOUT_S = 10
EXTRA = "pip install 'tensorguard[distributed]'"


class Executor(Protocol):
    """Runs ``work(model, **shared)`` for each model; yields ``(position, outcome)`` as each ends."""

    def run(self, work: Callable[..., Outcome[T]], models: Sequence[str],
            **shared: Any) -> Iterator[tuple[int, Outcome[T]]]: ...

    def __enter__(self) -> Executor: ...

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class LocalExecutor:
    """In this process, in order. A single model's error propagates (a command on one model
    fails with its one-line error, exit 2); in a batch it fails that model only."""

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        return None

    def run(self, work: Callable[..., Outcome[T]], models: Sequence[str],
            **shared: Any) -> Iterator[tuple[int, Outcome[T]]]:
        for i, model in enumerate(models):
            yield i, attempt(lambda m: work(m, **shared), model, alone=len(models) == 1)


def on_worker(work: Callable[..., Outcome[T]], model: str, **shared: Any) -> Outcome[T]:
    """One task on a Dask worker: torch on one thread, a model's error returned as its outcome
    (library errors need not travel back as exceptions)."""
    import torch

    torch.set_num_threads(1)
    return attempt(lambda m: work(m, **shared), model, alone=False)


class DaskExecutor:
    """On a Dask cluster: ``workers`` local processes, or the cluster at ``scheduler``."""

    def __init__(self, *, workers: int | None = None, scheduler: str | None = None) -> None:
        if (workers is None) == (scheduler is None):
            raise UsageError("give one of {workers} and {scheduler}", "workers", "scheduler")
        if workers is not None and workers < 1:
            raise UsageError(f"{{workers}} {workers}: at least 1", "workers")
        self.workers, self.scheduler = workers, scheduler
        self.client: Any = None
        self._cluster: Any = None
        self._depth = 0  # nested with blocks share one client

    def __enter__(self) -> DaskExecutor:
        self._depth += 1
        if self.client is not None:
            return self
        try:
            dist = _distributed()
        except ImportError:
            raise UsageError("{workers} and {scheduler} run on Dask, which is not installed: "
                             f"{EXTRA}", "workers", "scheduler") from None
        # Dask's own notices (cluster start, connections) only at tensorguard's debug level
        quiet = logging.getLogger("tensorguard").getEffectiveLevel() > logging.DEBUG
        logging.getLogger("distributed").setLevel(logging.ERROR if quiet else logging.INFO)
        if self.scheduler is not None:
            try:
                self.client = dist.Client(self.scheduler, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
            except (OSError, TimeoutError, ValueError) as exc:
                self._depth -= 1
                why = " ".join(str(exc).split()) or type(exc).__name__
                raise UsageError(f"{self.scheduler}: cannot reach the Dask scheduler ({why})",
                                 "scheduler") from None
        else:
            self._cluster = dist.LocalCluster(n_workers=self.workers, threads_per_worker=1, processes=True,
                                         host="127.0.0.1", dashboard_address=":0",
                                         silence_logs=logging.ERROR)
            self.client = dist.Client(self._cluster, set_as_default=False)
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._depth -= 1
        if self._depth > 0:
            return
        if self.client is not None:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()
        self.client = self._cluster = None

    def run(self, work: Callable[..., Outcome[T]], models: Sequence[str],
            **shared: Any) -> Iterator[tuple[int, Outcome[T]]]:
        if self.client is None:
            raise RuntimeError("DaskExecutor.run outside its with block")
        # each value sent once to every worker (in a list: Dask would scatter a dict item by item)
        sent = {k: self.client.scatter([v], broadcast=True, hash=False)[0] for k, v in shared.items()}
        futures = {self.client.submit(on_worker, work, model, key=f"tensorguard-{i}-{model}",
                                      pure=False, **sent): i for i, model in enumerate(models)}
        try:
            for future in _distributed().as_completed(futures, loop=self.client.loop):
                i = futures[future]
                yield i, self._outcome(future, models[i])
        finally:
            self.client.cancel(list(futures))

    @staticmethod
    def _outcome(future: Any, model: str) -> Outcome[Any]:
        try:
            outcome: Outcome[Any] = future.result()
        except _distributed().KilledWorker:
            return Outcome(model, Status.FAILED, error=f"{model}: its task killed the workers that ran it "
                                                       "(a crash, or out of memory); not retried")
        except Exception as exc:  # anything else a worker raised: that model fails, the batch goes on
            return Outcome(model, Status.FAILED, error=f"{model}: {type(exc).__name__}: {exc}")
        return outcome


def _distributed() -> Any:
    """``dask.distributed``, untyped (the extra; ImportError without it)."""
    return importlib.import_module("distributed")


def make_executor(*, workers: int | None = None, scheduler: str | None = None) -> Executor:
    """``LocalExecutor`` without ``workers`` and ``scheduler``, else a ``DaskExecutor``."""
    if workers is None and scheduler is None:
        return LocalExecutor()
    return DaskExecutor(workers=workers, scheduler=scheduler)
