"""Remote models: bytes fetched and wall time per command, for a model served by the Hub stand-in
on 127.0.0.1, against the model's size and a full download of it.

    python benchmarks/remote_traffic.py            # the 2.5 GB Llama-3.2-1B-shaped model
    python benchmarks/remote_traffic.py --small    # a 0.3 GB model of the same shape family

Each command starts from an empty mirror (a first use), except ``scan``, which runs after
``index add`` of a fine-tune of the model, as a user checking an upload against a catalogue does;
``compare`` is the served model against its local fine-tune. The table is printed as Markdown.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import LLAMA_1B, bench_model, build_once
from tensorguard.lineage.distance import Reference, load_reference
from tensorguard.synthetic import ModelSpec, finetune, make_weights, save_model, tensor_shapes

SMALL = ModelSpec(scheme="llama", hidden=1024, layers=8, intermediate=4096, vocab=32000, heads=16,
                  kv_heads=4, tied=True)
WORKDIR = Path(__file__).with_name(".data")
#: The rows ``--only`` picks from (``steps``: each of ``scan``'s steps alone).
COMMANDS = ("inspect", "fingerprint", "index-add", "scan", "compare", "steps", "download")


def small_model(workdir: Path, seed: int = 0, name: str = "llama-small") -> Path:
    def write(folder: Path) -> None:
        save_model(make_weights(SMALL, seed), folder, dtype=torch.bfloat16, shards=2)
    return build_once(workdir / name, write)


def sparse_1b(workdir: Path) -> Path:
    """The 2.5 GB Llama-3.2-1B-shaped model's file with its real header and the data section
    left sparse (zeros, no disk space): enough for ``inspect``, which reads headers only."""
    def write(folder: Path) -> None:
        folder.mkdir(parents=True)
        header, offset = {}, 0
        for name, shape in tensor_shapes(LLAMA_1B):
            nbytes = 2 * math.prod(shape)
            header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            offset += nbytes
        raw = json.dumps(header).encode()
        raw += b" " * (-len(raw) % 8)
        with (folder / "model.safetensors").open("wb") as fh:
            fh.write(struct.pack("<Q", len(raw)) + raw)
            fh.truncate(8 + len(raw) + offset)
    return build_once(workdir / "llama-1b-shaped-sparse", write)


def tuned_copy(model: Path, spec: ModelSpec, workdir: Path) -> Path:
    def write(folder: Path) -> None:
        save_model(finetune(make_weights(spec, 0), 0.01, seed=1), folder, dtype=torch.bfloat16, shards=2)
    return build_once(workdir / f"{model.name}-tuned", write)


def scan_steps(ref: str, model: Path, tuned: Path,
               reference: Reference) -> list[tuple[str, Callable[[], object]]]:
    """``scan``'s steps, each alone from an empty mirror: the query's weight signature (its
    ``QUERY_BLOCKS`` blocks), the confirmation (``confirm_subjects`` against the catalogued
    fine-tune, both signatures given: computed from the local copies here, as ``scan`` has them),
    and the fingerprint (which ``scan`` computes only when no match is confirmed)."""
    from tensorguard.catalogue.scanning import QUERY_BLOCKS
    from tensorguard.fingerprints import fingerprint_source
    from tensorguard.lineage import Context, Subject, confirm_subjects
    from tensorguard.loading import open_model
    from tensorguard.signatures import compute_signature

    def signature() -> None:
        with open_model(ref) as source:
            compute_signature(source, blocks=QUERY_BLOCKS)

    sig, stored = compute_signature(model, blocks=QUERY_BLOCKS), compute_signature(tuned)

    def confirm() -> None:
        with open_model(tuned) as base, open_model(ref) as source:
            confirm_subjects(Subject(base.name, tuned, None, base),
                             Subject(source.name, Path(ref), None, source),
                             Context(reference, 4, {source: sig, base: stored}))

    def fingerprint() -> None:
        with open_model(ref) as source:
            fingerprint_source(source, device="cpu")

    return [(f"scan, step 1 alone: weight signature ({QUERY_BLOCKS} blocks)", signature),
            ("scan, step 2 alone: confirm (the signals that decide)", confirm),
            ("scan, step 3 alone: fingerprint (run only when no match is confirmed)", fingerprint)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--small", action="store_true", help="the 0.3 GB model instead of 2.5 GB")
    parser.add_argument("--workdir", type=Path, default=WORKDIR, help="where the models are built")
    parser.add_argument("--only", nargs="+", choices=COMMANDS, default=COMMANDS, metavar="COMMAND",
                        help=f"rows to measure (default all: {' '.join(COMMANDS)})")
    args = parser.parse_args()
    torch.set_num_threads(1)
    spec = SMALL if args.small else LLAMA_1B
    model = small_model(args.workdir) if args.small else bench_model(args.workdir)
    tuned = tuned_copy(model, spec, args.workdir)
    size = sum(f.stat().st_size for f in model.glob("*.safetensors"))

    import tensorguard
    from tensorguard.catalogue import Catalogue
    from tensorguard.loading import mirror, remote
    from tensorguard.testing.hub_server import HubServer

    reference = load_reference(None)
    described = (f"model: {model.name}, {size / 1e9:.2f} GB in {len(list(model.glob('*.safetensors')))} "
                 "shards (bf16), served by tensorguard.testing.hub_server on 127.0.0.1")
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp, HubServer() as hub:
        hub.add_repo("bench/model", model)
        os.environ["HF_ENDPOINT"] = hub.url
        os.environ.pop("HF_TOKEN", None)
        ref = "hf://bench/model"
        db = Path(tmp) / "catalogue.sqlite"
        Catalogue(db, builtin=False).add([tuned])

        def run(label: str, call: Callable[[], object], command: str) -> None:
            if command not in args.only:
                return
            os.environ["TENSORGUARD_REMOTE_CACHE"] = str(Path(tmp) / f"mirror-{len(rows)}")
            mirror._LAID_OUT.clear()
            hub.reset()
            start = time.perf_counter()
            call()
            wall = time.perf_counter() - start
            got = hub.counters.body_bytes
            rows.append([label, f"{got / 1e6:,.2f}", f"{100 * got / size:.2f} %", f"{wall:.1f}"])

        run("inspect", lambda: tensorguard.inspect(ref), "inspect")
        run("fingerprint", lambda: tensorguard.fingerprint(ref, device="cpu"), "fingerprint")
        run("index add", lambda: Catalogue(Path(tmp) / "other.sqlite", builtin=False).add([ref]), "index-add")
        answers: list[str] = []

        def scan() -> None:
            found = tensorguard.scan(ref, catalogue=Catalogue(db, builtin=False), device="cpu")
            answers.append(found.summary)

        run("scan", scan, "scan")
        run("compare", lambda: tensorguard.compare(ref, tuned, device="cpu"), "compare")
        if "steps" in args.only:
            for label, step in scan_steps(ref, model, tuned, reference):
                run(label, step, "steps")

        def download() -> None:
            http = remote.Http(remote.Settings.from_env())
            url = http.file_url("bench/model", hub.repos["bench/model"].commit, "")
            for shard in sorted(model.glob("*.safetensors")):
                n = shard.stat().st_size
                for start in range(0, n, 64 << 20):
                    http.read_range(url + shard.name, start, min(64 << 20, n - start), size=n,
                                    etag=None, where=shard.name)

        run("full download (reference)", download, "download")
        if args.small and "inspect" in args.only:  # inspect of the 2.5 GB file (its real header, sparse data)
            sparse = sparse_1b(args.workdir)
            hub.add_repo("bench/sparse-1b", sparse)
            size = (sparse / "model.safetensors").stat().st_size
            run("inspect of the 2.5 GB 1B-shaped file", lambda: tensorguard.inspect("hf://bench/sparse-1b"),
                "inspect")
    print(described)
    print(*(f"scan's answer: {a}" for a in answers), sep="\n")
    print("| command | MB fetched | of the file size | wall s |")
    print("| --- | ---: | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
