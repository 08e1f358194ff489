"""Hostile and malformed input: every case is a one-line error with exit code 2, never a hang,
never a traceback or an internal error, and nothing the user owns is replaced.

The fuzz tests flip and cut bytes of small valid files from a fixed seed; each case runs the real
CLI in-process under an alarm, so a hang fails the test instead of stalling it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from tensorguard.reference import bundled_dir
from tensorguard.synthetic import ModelSpec, make_weights, save_model

SPEC = ModelSpec(layers=1, hidden=16, intermediate=32, vocab=24, heads=2)
SECONDS_PER_CASE = 20


@dataclass(frozen=True)
class Fuzz:
    """How much fuzzing: ``TENSORGUARD_FUZZ=SCALE[:SEED]`` runs SCALE times every corpus's cases,
    drawn from other seeds, for a longer hunt (``TENSORGUARD_FUZZ=20:1 pytest -k fuzz``); unset,
    ``make test`` runs the fixed corpora (scale 1, seed 0)."""

    scale: int = 1
    offset: int = 0

    @classmethod
    def from_env(cls) -> Fuzz:
        scale, _, seed = os.environ.get("TENSORGUARD_FUZZ", "1").partition(":")
        return cls(int(scale), 1000 * int(seed or 0))

    def cases(self, count: int) -> int:
        return count * self.scale

    def seed(self, seed: int) -> int:
        return seed + self.offset


FUZZ = Fuzz.from_env()


class Hung(BaseException):
    """Raised by the alarm; a BaseException, so no ``except OSError`` in the code under test
    can swallow it and block again."""


@contextmanager
def deadline(seconds: int) -> Iterator[None]:
    def hung(signum: int, frame: object) -> None:
        raise Hung(f"no answer within {seconds} s: the command hangs")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def clean_failure(run_cli, *args: object, codes: tuple[int, ...] = (2,)) -> str:
    """Run the CLI; it must end with one of ``codes`` and, unless 0, one line on stderr."""
    with deadline(SECONDS_PER_CASE):
        result = run_cli(*args)
    assert result.code in codes, (args, result.code, result.err)
    assert "internal error" not in result.err and "Traceback" not in result.err, result.err
    if result.code != 0:
        assert result.err.count("\n") == 1 and result.err.startswith("tensorguard: "), result.err
    return result.err


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("valid") / "m.safetensors"
    save_model(make_weights(SPEC, 0), path)
    return path.read_bytes()


def corruptions(data: bytes, count: int, seed: int) -> Iterator[tuple[str, bytes]]:
    """Seeded byte flips (header and data) and truncations of ``data`` (``count`` cases, scaled by
    ``FUZZ``, as are the other corpora)."""
    rng = random.Random(FUZZ.seed(seed))
    header_end = 8 + int.from_bytes(data[:8], "little")
    for i in range(FUZZ.cases(count)):
        buf = bytearray(data)
        how = i % 4
        if how == 0:  # flip bytes in the header
            for _ in range(rng.randint(1, 4)):
                buf[rng.randrange(0, header_end)] ^= 1 << rng.randrange(8)
            yield f"header flip {i}", bytes(buf)
        elif how == 1:  # replace a header byte by a structural character
            buf[rng.randrange(8, header_end)] = ord(rng.choice('{}[],:"0-9e.'))
            yield f"header char {i}", bytes(buf)
        elif how == 2:  # flip bytes in the data (weights may become NaN or huge)
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(header_end, len(buf))] ^= 1 << rng.randrange(8)
            yield f"data flip {i}", bytes(buf)
        else:
            yield f"truncated {i}", bytes(buf[:rng.randrange(0, len(buf))])


@pytest.mark.parametrize("command", [("inspect", "--json"), ("fingerprint", "--json", "--samples", "1")])
def test_fuzzed_safetensors_files(model_bytes: bytes, tmp_path: Path, run_cli,
                                  command: tuple[str, ...]) -> None:
    path = tmp_path / "fuzzed.safetensors"
    for label, data in corruptions(model_bytes, 120, seed=len(command)):
        path.write_bytes(data)
        try:
            clean_failure(run_cli, command[0], path, *command[1:], codes=(0, 2))
        except AssertionError as exc:
            raise AssertionError(f"{label}: {exc}") from None


def test_fuzzed_fingerprint_files(tmp_path: Path, run_cli) -> None:
    data = (bundled_dir() / "phi-4_features.json").read_bytes()
    path = tmp_path / "x_features.json"
    rng = random.Random(FUZZ.seed(0))
    for i in range(FUZZ.cases(60)):
        buf = bytearray(data)
        if i % 2:
            buf = buf[:rng.randrange(len(buf))]
        else:
            buf[rng.randrange(len(buf))] = rng.randrange(256)
        path.write_bytes(bytes(buf))
        clean_failure(run_cli, "compare", path, bundled_dir() / "phi-4_features.json", codes=(0, 2))


def test_deeply_nested_json_inputs(tmp_path: Path, run_cli) -> None:
    nested = "[" * 100_000 + "]" * 100_000
    fingerprint = tmp_path / "deep_features.json"
    fingerprint.write_text(nested)
    assert "nested too deeply" in clean_failure(run_cli, "compare", fingerprint, fingerprint)
    assert "nested too deeply" in clean_failure(run_cli, "cluster", fingerprint, "--centers", "x")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_fifos_and_devices_are_refused_up_front(tmp_path: Path, run_cli) -> None:
    fifo = tmp_path / "pipe_features.json"
    os.mkfifo(fifo)
    assert "FIFO" in clean_failure(run_cli, "compare", fifo, bundled_dir() / "phi-4_features.json")
    assert "FIFO" in clean_failure(run_cli, "predict", fifo, "--centers", "phi-4")
    assert "character device" in clean_failure(run_cli, "compare", "/dev/zero",
                                               bundled_dir() / "phi-4_features.json")


def test_output_problems_are_one_line_errors(tmp_path: Path, run_cli) -> None:
    model = save_model(make_weights(SPEC, 0), tmp_path / "m.safetensors")
    fp = tmp_path / "fp"
    assert run_cli("fingerprint", model, "-o", fp, "--samples", "1").code == 0
    target = fp / "m_features.json"
    target.unlink()
    target.mkdir()  # a directory where the file goes: refused even with --force
    assert "is a directory" in clean_failure(run_cli, "fingerprint", model, "-o", fp, "--force",
                                             "--samples", "1")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root can write anywhere
            assert "cannot write" in clean_failure(run_cli, "fingerprint", model, "-o", locked,
                                                   "--samples", "1")
    finally:
        locked.chmod(0o700)
    assert "cannot write" in clean_failure(run_cli, "fingerprint", model, "-o", "/proc/tensorguard",
                                           "--samples", "1")
    long_name = "n" * 300
    assert "cannot write" in clean_failure(run_cli, "fingerprint", model, "--name", long_name,
                                           "-o", tmp_path / "o", "--samples", "1")
    existing = tmp_path / "a-file"
    existing.write_text("mine")
    clean_failure(run_cli, "fingerprint", model, "-o", existing)  # click's usage error, one line
    assert existing.read_text() == "mine"


def test_a_failed_output_of_several_names_the_file_that_failed(tmp_path: Path) -> None:
    from tensorguard.errors import TensorguardError
    from tensorguard.outputs import write_all

    (tmp_path / "blocker").write_text("a file where a directory should be")
    ok, bad = tmp_path / "ok.json", tmp_path / "blocker" / "b.png"
    with pytest.raises(TensorguardError, match=r"/b\.png: cannot write"):
        write_all([(ok, b"{}"), (bad, b"png")], force=False)
    assert not ok.exists()  # together or not at all


def test_control_characters_in_names_stay_on_one_line(tmp_path: Path, run_cli) -> None:
    odd = tmp_path / "two\nlines.safetensors"
    odd.write_bytes(b"not a model")
    err = clean_failure(run_cli, "inspect", odd)
    assert "two\\nlines" in err


def test_predict_refuses_a_nan_threshold(run_cli) -> None:
    err = clean_failure(run_cli, "predict", bundled_dir() / "phi-4_features.json", "--centers",
                        "Qwen2.5-3B,llama-3.2-1b", "--threshold", "nan")
    assert "--threshold nan" in err


@pytest.mark.parametrize(("edit", "expect"), [
    (lambda w: w["model.layers.0.mlp.up_proj.weight"].__setitem__((0, 0), float("nan")), "NaN"),
    (lambda w: w["model.embed_tokens.weight"].__setitem__((3, 1), float("inf")), "NaN or infinite"),
    (lambda w: w["model.layers.0.mlp.down_proj.weight"].__setitem__((2, 2), 3e38), None),
    (lambda w: [t.zero_() for t in w.values()], None),
])
def test_unusual_weights(tmp_path: Path, run_cli, edit, expect: str | None) -> None:
    weights = make_weights(SPEC, 0)
    edit(weights)
    model = save_model(weights, tmp_path / "w.safetensors")
    for command in (("fingerprint", model, "--json", "--samples", "2"),
                    ("sensitivity", model, "-o", tmp_path / "s", "--samples", "2", "--force")):
        err = clean_failure(run_cli, *command, codes=(2,) if expect else (0,))
        assert expect is None or expect in err
    if expect is None:
        data = json.loads(run_cli("fingerprint", model, "--json", "--samples", "2").out)
        assert all(isinstance(v, (int, float, str, dict, type(None))) for v in data.values())


def test_zero_size_and_zero_column_tensors(tmp_path: Path, run_cli) -> None:
    weights = make_weights(SPEC, 0)
    weights["model.layers.0.mlp.extra.weight"] = torch.zeros(0, 16)
    weights["model.layers.0.mlp.narrow.weight"] = torch.zeros(16, 0)
    model = save_model(weights, tmp_path / "z.safetensors")
    for command in (("inspect", model), ("fingerprint", model, "--json", "--samples", "2"),
                    ("sensitivity", model, "-o", tmp_path / "s", "--samples", "1")):
        clean_failure(run_cli, *command, codes=(0,))


_SENSITIVITY_CHILD = textwrap.dedent("""
    import os, signal, sys, time
    signal.signal(signal.SIGINT, signal.default_int_handler)  # not the launcher's (nohup ignores it)
    import tensorguard.app.sensitivity as app
    import tensorguard.outputs as outputs
    stage, model, out = sys.argv[1:]
    if stage == "analysis":  # stall while the model is analysed: nothing may be written
        analyze = app.analyze
        def slow(*args, **kwargs):
            print("ready", flush=True)
            time.sleep(60)
            return analyze(*args, **kwargs)
        app.analyze = slow
    else:  # Ctrl-C between the two renames: both files must still appear
        replace, done = os.replace, []
        def slow(src, dst):
            replace(src, dst)
            done.append(dst)
            if len(done) == 1:
                print("ready", flush=True)
                time.sleep(2)
        outputs.os.replace = slow
    sys.argv = ["tensorguard", "sensitivity", model, "-o", out, "--samples", "2", "-q"]
    from tensorguard.cli import run
    run()
""")


@pytest.mark.parametrize(("stage", "expected"), [("analysis", []),
                                                 ("rename", ["m_sensitivity.json", "m_sensitivity.png"])])
def test_interrupted_sensitivity_leaves_both_outputs_or_neither(tmp_path: Path, stage: str,
                                                                expected: list[str]) -> None:
    """Ctrl-C while the model is analysed leaves no file; between the renames, both files."""
    model = save_model(make_weights(ModelSpec(layers=2, hidden=64, intermediate=128, vocab=64), 0),
                       tmp_path / "m.safetensors")
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", _SENSITIVITY_CHILD, stage, str(model), str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err == "tensorguard: interrupted\n"
    names = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert names == expected
