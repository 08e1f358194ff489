"""Scale-out figures: ``scan``'s retrieve step over a large synthetic catalogue (time and peak
memory), the size of its signature pack, and ``index add``'s throughput in this process, on a
local Dask cluster and through an external scheduler.

    python benchmarks/scale_out.py                      # 100,000 rows, 8 models
    python benchmarks/scale_out.py --rows 20000 --models 4 --no-throughput
    python benchmarks/scale_out.py --workdir /tmp/scale --reuse --no-pack --no-throughput

The synthetic catalogue: ``--rows`` rows, each with a random retrieval vector (in 4 token lists,
as several tokenizers give) and a perturbed fingerprint; ``SHORTLIST`` of them are planted near
the query (noisy copies of its retrieval vector) with a full signature each, so the shortlist
compared in full is real work. The other rows carry no signature: the retrieve step never reads
the signatures of rows outside its shortlist. The retrieve step runs in a fresh child process
(open the file, read every row, rank, compare the shortlist in full), best of 3, with its peak
resident memory: once through the retrieval index, once streaming every vector (the index
ignored), on the same file.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "src"), str(ROOT / "tests")]

from tensorguard.catalogue import SHORTLIST, Catalogue, Row, Store  # noqa: E402
from tensorguard.fingerprints import FEATURE_KEYS  # noqa: E402
from tensorguard.report import table  # noqa: E402
from tensorguard.signatures import compute_signature, retrieval_vector  # noqa: E402
from tensorguard.synthetic import ModelSpec, finetune, make_weights, save_model  # noqa: E402

SPEC = ModelSpec(scheme="llama", hidden=256, layers=8, intermediate=768, vocab=2048, heads=8, kv_heads=4)
_RETRIEVE = """
import json, resource, sys, time
from pathlib import Path
from tensorguard.catalogue import Store
from tensorguard.catalogue import retrieval
from tensorguard.catalogue.retrieval import fingerprint_threshold, load_known, rank_candidates
from tensorguard.fingerprints import fingerprint
from tensorguard.lineage.distance import load_reference
from tensorguard.signatures import compute_signature
import torch
torch.set_num_threads(1)
db, model = Path(sys.argv[1]), Path(sys.argv[2])
if sys.argv[3] == "streamed":
    retrieval.indexed_scores = lambda *args, **kwargs: None
sig, fp = compute_signature(model), fingerprint(model, samples=2, device="cpu")
reference = load_reference(None)
limit = fingerprint_threshold(reference)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
with Store.open(db) as store:
    known = load_known(store, builtin=True)
    ranked = rank_candidates(sig, fp, known, store, reference, limit)
wall = time.perf_counter() - start
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"wall_s": wall, "peak_mb": after / 1024, "growth_mb": (after - before) / 1024,
                  "rows": len(known.names), "best": ranked[0].name}))
"""


def save(directory: Path, weights: dict, seed: int) -> Path:
    save_model(weights, directory)
    (directory / "config.json").write_text(json.dumps({
        "hidden_size": SPEC.hidden, "num_attention_heads": SPEC.heads,
        "num_key_value_heads": SPEC.kv_heads, "head_dim": SPEC.head_dim}))
    vocab = {f"tok{i}": i for i in range(SPEC.vocab)}
    (directory / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordLevel", "vocab": vocab},
                                                          "added_tokens": []}))
    return directory


def synthetic_catalogue(db: Path, rows: int, query: Path) -> None:
    """``rows`` synthetic rows around ``query`` (see the module's docstring)."""
    from tensorguard.fingerprints import fingerprint

    for old in db.parent.glob(db.name + "*"):
        old.unlink()
    rng = np.random.default_rng(0)
    sig, fp = compute_signature(query), fingerprint(query, samples=2, device="cpu")
    tokens, vector = retrieval_vector(sig)
    lists = [tokens] + [tuple(f"{t}{k}" if i % 7 == 0 else t for i, t in enumerate(tokens)) for k in range(3)]
    blob, base = sig.to_bytes(), np.asarray([fp.features[k] for k in FEATURE_KEYS])
    with Store.open(db, writable=True) as store:
        for start in range(0, rows, 5000):
            batch = []
            for i in range(start, min(rows, start + 5000)):
                planted = i % (rows // SHORTLIST) == 0 and i // (rows // SHORTLIST) < SHORTLIST
                v = vector.astype(np.float32) + rng.normal(size=vector.size).astype(np.float32) * (
                    0.02 if planted else 1.0)
                v = (v - v.mean()) / np.linalg.norm(v - v.mean())
                scaled = base * rng.uniform(0.5, 2, len(base))
                name = f"synthetic-{i:06d}"
                row_fp = {**fp.to_dict(), **dict(zip(FEATURE_KEYS, scaled.tolist(), strict=True)),
                          "model_name": name}
                batch.append(Row(name, {"base": name}, None, None, None, row_fp,
                                 scaled.astype("<f8").tobytes(), blob if planted else None,
                                 tokens if planted else lists[i % len(lists)],
                                 v.astype(np.float16).tobytes(), "2026-01-01T00:00:00"))
            store.put(batch, replace=False)


def retrieval(db: Path, query: Path, mode: str, runs: int = 3) -> dict:
    """The retrieve step in a fresh process, ``indexed`` or ``streamed``: the fastest of ``runs``."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    found = [json.loads(subprocess.run([sys.executable, "-c", _RETRIEVE, str(db), str(query), mode], env=env,
                                       check=True, capture_output=True, text=True).stdout)
             for _ in range(runs)]
    return min(found, key=lambda r: r["wall_s"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def throughput(workdir: Path, models: list[Path]) -> list[list[object]]:
    """``index add`` of ``models`` in this process, on ``--workers 2`` and on an external scheduler
    with two workers: models per minute (wall time of the whole command, start-up included)."""
    listed = workdir / "models.txt"
    listed.write_text("\n".join(map(str, models)) + "\n")
    dask = Path(sys.executable).parent / "dask"
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([str(dask), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], **quiet)]
    procs += [subprocess.Popen([str(dask), "worker", address, "--nthreads", "1", "--host", "127.0.0.1",
                                "--no-dashboard"], **quiet) for _ in range(2)]
    rows = []
    try:
        time.sleep(5)
        for label, extra in (("in-process", []), ("--workers 2", ["--workers", "2"]),
                             ("external scheduler, 2 workers", ["--scheduler", address])):
            db = workdir / f"throughput-{len(rows)}.sqlite"
            for old in workdir.glob(db.name + "*"):
                old.unlink()
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "tensorguard", "index", "add", "--from", str(listed),
                            "--db", str(db), "-q", "--device", "cpu", *extra], check=True,
                           stdout=subprocess.DEVNULL)
            wall = time.perf_counter() - start
            rows.append([label, len(models), round(wall, 1), round(len(models) / wall * 60, 1)])
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--models", type=int, default=8, help="models added in the throughput runs")
    parser.add_argument("--no-throughput", action="store_true")
    parser.add_argument("--no-pack", action="store_true", help="skip the pack export and check")
    parser.add_argument("--reuse", action="store_true",
                        help="keep the --workdir's catalogue and query model when they are there")
    parser.add_argument("--workdir", type=Path, help="kept (default: a temporary folder, removed)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="tensorguard-scale-"))
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        base = make_weights(SPEC, 0)
        models = [save(workdir / f"model-{i}", finetune(base, 0.1, seed=i) if i else base, i)
                  for i in range(max(args.models, 1))]
        db = workdir / "synthetic.sqlite"
        reuse = args.reuse and db.exists() and (workdir / "query").is_dir()
        query = workdir / "query" if reuse else save(workdir / "query", finetune(base, 0.2, seed=99), 99)
        start = time.perf_counter()
        if not reuse:
            synthetic_catalogue(db, args.rows, query)
        built = time.perf_counter() - start
        with Store.open(db, writable=True) as store:  # a catalogue of an older schema is migrated
            blocks = store.sketch_blocks() or []
        index_mb = sum(sum(len(c) for c in b.to_columns()[1:]) for b in blocks) / 1e6
        how = "reused" if reuse else f"built in {built:.0f} s"
        print(f"catalogue {db.stat().st_size / 1e6:.0f} MB ({how}), its retrieval index {index_mb:.1f} MB "
              f"in {len(blocks)} blocks")
        for mode in ("streamed", "indexed"):
            found = retrieval(db, query, mode)
            print(f"retrieve step, {mode}, over {found['rows']:,} rows: best of 3 {found['wall_s']:.3f} s, "
                  f"peak RSS {found['peak_mb']:.0f} MB (+{found['growth_mb']:.0f} MB during the step); "
                  f"best match {found['best']}")
        if not args.no_pack:
            pack = workdir / "synthetic.tgpack"
            start = time.perf_counter()
            info = Catalogue(db, builtin=False).export_pack(pack, force=True)
            exported = time.perf_counter() - start
            start = time.perf_counter()
            from tensorguard.catalogue import read_pack

            read_pack(pack)
            verified = time.perf_counter() - start
            print(f"signature pack of those {info.rows:,} rows: {info.size / 1e6:.0f} MB, exported in "
                  f"{exported:.1f} s, checked whole in {verified:.1f} s")
        if not args.no_throughput:
            print(table(["index add", "models", "wall s", "models/min"], throughput(workdir, models)))
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"(peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
