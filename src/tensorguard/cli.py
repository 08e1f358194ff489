"""The ``tensorguard`` command: one thin click command per verb over the public API and the
application layer (``tensorguard.app``).

Each command imports only what it needs, inside its body, so that ``tensorguard --help`` starts
in a fraction of a second and ``fingerprint`` never loads scikit-learn, SciPy or matplotlib.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from typing import Any, NoReturn

import click

from tensorguard import __version__, progress
from tensorguard.errors import TensorguardError

log = logging.getLogger("tensorguard")


class Interrupted(Exception):
    """Ctrl-C during a command."""


def _configure(quiet: bool, verbose: int) -> None:
    level = logging.ERROR if quiet else (logging.DEBUG if verbose > 1 else
                                         logging.INFO if verbose else logging.WARNING)
    logging.basicConfig(level=level, format="tensorguard: %(message)s", stream=sys.stderr,
                        force=True)
    progress.configure(False if quiet else None)


def standard_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--json``, ``-q/--quiet`` and ``-v/--verbose`` to a command."""

    @click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")
    @click.option("-q", "--quiet", is_flag=True, help="No progress bars or notices on stderr.")
    @click.option("-v", "--verbose", count=True, help="More detail on stderr (-vv for debug).")
    @functools.wraps(func)
    def wrapper(*args: Any, quiet: bool, verbose: int, **kwargs: Any) -> Any:
        _configure(quiet, verbose)
        try:
            return func(*args, **kwargs)
        except KeyboardInterrupt:  # past click, which would print a bare newline first
            raise Interrupted from None

    return wrapper


def emit(result: Any, as_json: bool, render_text: Callable[[Any], str]) -> None:
    """Print ``result`` as JSON (``--json``) or as the command's text report, on stdout."""
    from tensorguard import report

    click.echo(report.dumps(result) if as_json else render_text(result), nl=not as_json)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="tensorguard")
def cli() -> None:
    """Tell where a large language model comes from, by reading only its weight files.

    \b
    Examples:
      tensorguard inspect model.safetensors
      tensorguard fingerprint ./Llama-3.2-1B -o features/
      tensorguard cluster features/ --centers llama-3.2-1b,Qwen2.5-3B
      tensorguard predict unknown_features.json --clusters clusters.json
      tensorguard index add ./Llama-3.2-1B --label licence=restricted
      tensorguard scan ./suspect-model

    Exit codes: 0 success, 1 the work failed (for some models), 2 bad usage or bad input,
    3 scan found a model derived from a catalogue entry matching --policy,
    70 an internal error (a bug: please report it), 130 interrupted.
    """


@cli.command()
@click.argument("model", type=click.Path(path_type=str))
@click.option("--base", type=click.Path(path_type=str), help="Base model of a LoRA adapter.")
@click.option("--name", help="Model name to report (default: from the path).")
@standard_options
def inspect(model: str, base: str | None, name: str | None, as_json: bool) -> None:
    """Summarise a model from its headers alone: format, sizes, roles, quantization (no tensor data).

    \b
    Examples:
      tensorguard inspect llama-3.2-1b.safetensors
      tensorguard inspect ./Qwen2.5-7B-Instruct --json
      tensorguard inspect ./my-lora-adapter --base ./Llama-3.1-8B
    """
    import tensorguard
    from tensorguard.app.inspect import render_text

    emit(tensorguard.inspect(model, base=base, name=name), as_json, render_text)


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=str),
              help="Directory for the JSON files [default: features; with --json: none, the "
                   "fingerprint goes to stdout only].")
@click.option("--samples", default=15, show_default=True, type=click.IntRange(min=1),
              help="Probe samples per tensor (the paper uses 15).")
@click.option("--device", default="auto", show_default=True,
              help="auto (CUDA when available), cpu, cuda or cuda:N. Results do not depend on it.")
@click.option("--name", help="Model name for the output (one model only; default: from the path).")
@click.option("--base", type=click.Path(path_type=str), help="Base model of LoRA adapter(s).")
@click.option("--force", is_flag=True, help="Overwrite existing fingerprint files.")
@standard_options
def fingerprint(models: tuple[str, ...], out_dir: str | None, samples: int, device: str,
                name: str | None, base: str | None, force: bool, as_json: bool) -> None:
    """Compute the paper's gradient fingerprint of each MODEL into DIR/<name>_features.json.

    Existing files are kept unless --force. A model that fails is reported on stderr and the
    others go on (exit 1); a single bad model exits 2. With --json the fingerprint is printed
    (a list for several models) and no file is written unless -o is given.

    \b
    Examples:
      tensorguard fingerprint ./Llama-3.2-1B
      tensorguard fingerprint a.safetensors b/ c/ -o features/ --device cpu
      tensorguard fingerprint ./my-adapter --base ./Llama-3.1-8B --name my-finetune --json
    """
    from tensorguard.app.batch import Status
    from tensorguard.app.fingerprint import fingerprint_models, render_text

    def report(outcome: Any) -> None:
        _report_failure(outcome)
        if outcome.status is Status.SKIPPED and as_json:
            click.echo(f"tensorguard: {outcome.paths[0]} exists, skipped (use --force)", err=True)

    directory = out_dir if out_dir is not None or as_json else "features"
    outcomes = fingerprint_models(list(models), out_dir=directory, samples=samples, device=device,
                                  name=name, base=base, force=force, on_outcome=report)
    done = [o.result for o in outcomes if o.result is not None]
    if as_json:
        if len(models) > 1 or done:
            emit(done if len(models) > 1 else done[0], True, str)
    elif any(o.status is not Status.FAILED for o in outcomes):
        click.echo(render_text(outcomes))
    _exit_if_failed(outcomes)


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--samples", type=int, default=20, show_default=True,
              help="Probes per noise kind (seeds 0..N-1, or N copies of seed 0 with --seeds repeat).")
@click.option("--seeds", type=click.Choice(["distinct", "repeat"]), default="distinct",
              show_default=True, help="'repeat' re-seeds every sample with 0, as the paper does.")
@click.option("--noise", default="all", show_default=True,
              help="Noise kind, comma-separated kinds, or 'all' (5 paper kinds + 3 attention kinds).")
@click.option("--metric", type=click.Choice(["response", "gradient-norm"]), default="response",
              show_default=True, help="'gradient-norm' is the paper's score (depends on the probe only).")
@click.option("--threshold", type=float, default=1.5, show_default=True,
              help="A layer scoring above this is sensitive.")
@click.option("--top", type=int, default=20, show_default=True, help="Layers shown in the chart.")
@click.option("--attention-test", is_flag=True, help="Compare attention with non-attention layers.")
@click.option("-o", "--output", "output", default="sensitivity", show_default=True,
              type=click.Path(path_type=str), help="Directory for the JSON and PNG files.")
@click.option("--base", type=click.Path(path_type=str), help="Base model of LoRA adapter(s).")
@click.option("--force", is_flag=True, help="Overwrite existing output files.")
@standard_options
def sensitivity(models: tuple[str, ...], samples: int, seeds: str, noise: str, metric: str,
                threshold: float, top: int, attention_test: bool, output: str, base: str | None,
                force: bool, as_json: bool) -> None:
    """Rank the 2-D tensors of each model by how much they amplify each kind of probe noise.

    \b
    Examples:
      tensorguard sensitivity ./Llama-3.2-1B
      tensorguard sensitivity ./Llama-3.2-1B --noise low_frequency --attention-test
      tensorguard sensitivity a.safetensors b.safetensors -o sensitivity/ --force
      tensorguard sensitivity ./model --metric gradient-norm --seeds repeat   # the paper's score
    """
    from tensorguard.app.sensitivity import analyze_models, render_text
    from tensorguard.sensitivity import Options

    options = Options(kinds=noise, metric=metric, samples=samples, seeds=seeds,  # type: ignore[arg-type]
                      threshold=threshold, top=top, attention_test=attention_test)
    done = analyze_models(models, options, out_dir=output, force=force, base=base,
                          on_outcome=_report_failure)
    emit(done, as_json, render_text)
    if done.failures:
        raise SystemExit(EXIT_FAILED)


@cli.command()
@click.argument("features", nargs=-1, type=click.Path(path_type=str))
@click.option("--centers", required=True, metavar="NAME,NAME,...",
              help="Model names whose fingerprints start the clusters (one cluster each).")
@click.option("--k", "k", type=click.IntRange(min=1), help="Number of clusters (default: one per center; "
              "extra ones are seeded by k-means++).")
@click.option("--method", type=click.Choice(["kmeans", "gmm"]), default="kmeans", show_default=True,
              help="K-Means, or a Gaussian mixture started from it.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the extra k-means++ centroids.")
@click.option("--labels", type=click.Path(path_type=str), help="CSV model_name,base_model[,family]: "
              "the known models' bases and families (saved for predict), and the clusters' score.")
@click.option("--save", "save_to", type=click.Path(path_type=str), help="Write clusters.json for predict.")
@click.option("--plot", default="imgs/cluster_result.png", show_default=True,
              type=click.Path(path_type=str), help="PCA scatter of the clusters (PNG).")
@click.option("--no-plot", is_flag=True, help="Draw no figure.")
@click.option("--force", is_flag=True, help="Overwrite --save and --plot files.")
@standard_options
def cluster(features: tuple[str, ...], centers: str, k: int | None, method: str, seed: int,
            labels: str | None, save_to: str | None, plot: str, no_plot: bool, force: bool,
            as_json: bool) -> None:
    """Cluster fingerprints into families around named center models.

    FEATURES are fingerprint files and/or directories of *_features.json (default: the bundled
    fingerprints of 43 real LLMs).

    \b
    Examples:
      tensorguard cluster --centers gemma-3-4b-it,Llama-3.1-8B,llama-3.2-1b,Llama-3.2-3B,\\
          Mistral-7B-v0.1,phi-4,Qwen2.5-3B,Qwen2.5-7B-Instruct --labels features/labels.csv
      tensorguard cluster my_features/ --centers base-a,base-b --save clusters.json --force
    """
    from tensorguard.app.families import cluster_files, parse_centers, render_cluster_text

    report = cluster_files(features, centers=parse_centers(centers), k=k, method=method,
                           random_state=seed, labels=labels, save_to=save_to,
                           plot=None if no_plot else plot, force=force)
    emit(report, as_json, render_cluster_text)


@cli.command()
@click.argument("unknowns", nargs=-1, type=click.Path(path_type=str))
@click.option("--clusters", type=click.Path(path_type=str), help="clusters.json from cluster --save.")
@click.option("--centers", metavar="NAME,NAME,...", help="Instead of --clusters: fit here around "
              "these models of --features.")
@click.option("--features", "features", multiple=True, type=click.Path(path_type=str),
              help="With --centers: the known set (repeatable; default: the bundled set).")
@click.option("--k", "k", type=click.IntRange(min=1), help="With --centers: number of clusters.")
@click.option("--method", type=click.Choice(["kmeans", "gmm"]), default="kmeans", show_default=True,
              help="With --centers: clustering method.")
@click.option("--rule", type=click.Choice(["neighbors", "paper", "centroid"]), default="neighbors",
              show_default=True, help="neighbors: distance-weighted vote of the 3 nearest known models; "
              "paper: the nearest center model (the paper's code); centroid: the nearest K-Means centroid.")
@click.option("--threshold", type=float, help="Distance beyond which a model is 'unknown' "
              "(default: the rule's own, see the report).")
@click.option("--labels", type=click.Path(path_type=str), help="CSV model_name,base_model[,family]: "
              "with --centers, the known models' bases and families; always, the truth that scores the "
              "predictions (a base no known model carries means 'unknown' is right).")
@click.option("--evaluate", is_flag=True, help="Also print each rule's leave-one-out accuracy on the "
              "known set, and what it answers for each family held out.")
@click.option("--plot", "plot", type=click.Path(file_okay=False, path_type=str),
              help="Folder for unknown_model_prediction_<name>.png [default: no figure].")
@click.option("--force", is_flag=True, help="Overwrite existing figures.")
@standard_options
def predict(unknowns: tuple[str, ...], clusters: str | None, centers: str | None,
            features: tuple[str, ...], k: int | None, method: str, rule: str, threshold: float | None,
            labels: str | None, evaluate: bool, plot: str | None, force: bool, as_json: bool) -> None:
    """Predict the base model of unknown fingerprints, or call them 'unknown'.

    UNKNOWNS are fingerprint files and/or directories of *_features.json. Nothing is written
    unless --plot is given, so the same command can run again and again.

    \b
    Examples:
      tensorguard predict my_model_features.json --clusters clusters.json
      tensorguard predict my_model_features.json --clusters clusters.json --rule paper --json
      tensorguard predict --evaluate --centers gemma-3-4b-it,Llama-3.1-8B,llama-3.2-1b,\\
          Llama-3.2-3B,Mistral-7B-v0.1,phi-4,Qwen2.5-3B,Qwen2.5-7B-Instruct --labels features/labels.csv
    """
    from tensorguard.app.families import parse_centers, predict_files, render_predict_text

    report = predict_files(unknowns, clusters=clusters, features=features,
                           centers=parse_centers(centers or ""), k=k, method=method, rule=rule,
                           threshold=threshold, labels=labels, evaluate=evaluate, plot=plot,
                           force=force)
    emit(report, as_json, render_predict_text)


@cli.command()
@click.option("--imgs", "imgs_dir", default="imgs/demo", show_default=True, type=click.Path(path_type=str),
              help="Where the demo's figures go (its own previous figures are replaced).")
@click.option("--samples", type=click.IntRange(min=1), default=15, show_default=True,
              help="Probe samples per fingerprint.")
@standard_options
def demo(imgs_dir: str, samples: int, as_json: bool) -> None:
    """Run the whole method end to end on tiny synthetic models and the bundled real fingerprints.

    \b
    Example:
      make demo
    """
    from tensorguard.app.demo import render_text, run_demo

    emit(run_demo(imgs_dir, num_samples=samples, log=None if as_json else click.echo),
         as_json, render_text)


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--reference", type=click.Path(file_okay=False, path_type=str),
              help="Reference fingerprints (+ labels.csv) that standardise distances "
                   "(default: the bundled features/).")
@click.option("--blocks", default=4, show_default=True, type=click.IntRange(min=1),
              help="Evenly spaced MLP blocks probed by the independence test.")
@click.option("--samples", default=15, show_default=True, type=click.IntRange(min=1),
              help="Probe samples per tensor when fingerprinting a model.")
@click.option("--device", default="auto", show_default=True, help="Device for fingerprinting.")
@click.option("--seed", default=0, show_default=True, type=int, help="Fingerprint probe seed.")
@click.option("--plot-dir", default="imgs", show_default=True, type=click.Path(path_type=str),
              help="Where similarity_<signal>.png and the dendrogram go (3+ inputs).")
@click.option("--no-plot", is_flag=True, help="Draw no figure.")
@click.option("--force", is_flag=True, help="Overwrite existing figures.")
@click.option("--base", type=click.Path(path_type=str), help="Base model of an input that is a LoRA "
              "adapter (default: the other input, when the adapter names it or its shapes fit).")
@standard_options
def compare(inputs: tuple[str, ...], reference: str | None, blocks: int, samples: int, device: str,
            seed: int, plot_dir: str, no_plot: bool, force: bool, base: str | None,
            as_json: bool) -> None:
    """Is one model derived from another? Fingerprint distance, weight evidence, independence test.

    Each INPUT is a model (any supported layout, a LoRA adapter too) or a fingerprint JSON. Two
    inputs: a verdict (same weights, derived, independent, inconclusive) with its evidence. More:
    every signal as a matrix, heatmaps and a dendrogram.

    \b
    Examples:
      tensorguard compare ./Llama-3.2-1B ./my-finetune
      tensorguard compare a/ b/ c/ --plot-dir imgs --json
      tensorguard compare features/phi-4_features.json features/unsloth-phi-4_features.json
    """
    from tensorguard.app.compare import compare_inputs, render_text

    emit(compare_inputs(inputs, plot_dir=None if no_plot else plot_dir, force=force,
                        reference=reference, blocks=blocks, samples=samples, device=device,
                        seed=seed, base=base), as_json, render_text)


def db_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--db``: the catalogue file a command reads or writes."""
    return click.option("--db", type=click.Path(path_type=str), metavar="PATH",
                        help="Catalogue file [default: $TENSORGUARD_CATALOGUE, else "
                             "~/.cache/tensorguard/catalogue.sqlite].")(func)


def catalogue_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--db`` and ``--no-builtin``: which catalogue a command reads."""
    func = click.option("--no-builtin", is_flag=True,
                        help="Leave out the 43 built-in published fingerprints.")(func)
    return db_option(func)


def _catalogue(db: str | None, no_builtin: bool = False) -> Any:
    from tensorguard.catalogue import Catalogue

    return Catalogue(db, builtin=not no_builtin)


@cli.group()
def index() -> None:
    """The model catalogue that scan looks models up in (an SQLite file).

    \b
    Examples:
      tensorguard index add ./Llama-3.2-1B --label base=Llama-3.2-1B,licence=restricted
      tensorguard index import features/ --labels features/labels.csv
      tensorguard index list
      tensorguard index show Llama-3.2-1B --json
      tensorguard index remove Llama-3.2-1B
    """


@index.command("add")
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--label", "label", metavar="KEY=VALUE,...", help="Labels of every model added: base, "
              "family, licence, or any tag (e.g. base=Llama-3.2-1B,licence=restricted).")
@click.option("--name", help="Entry name (one model only; default: from the path).")
@click.option("--base", type=click.Path(path_type=str), help="Base model of a LoRA adapter.")
@click.option("--replace", is_flag=True, help="Replace entries of the same name.")
@click.option("--samples", default=15, show_default=True, type=click.IntRange(min=1),
              help="Probe samples per tensor of the fingerprint.")
@click.option("--device", default="auto", show_default=True, help="Device for fingerprinting.")
@db_option
@standard_options
def index_add(models: tuple[str, ...], label: str | None, name: str | None, base: str | None,
              replace: bool, samples: int, device: str, db: str | None, as_json: bool) -> None:
    """Read each MODEL (fingerprint, weight signature, header summary) into the catalogue.

    The models are written together when all have been read, so an interrupted add changes
    nothing. A model that fails is reported and the others are added (exit 1).
    """
    from tensorguard.app.index import add_models, render_added
    from tensorguard.catalogue import parse_labels
    from tensorguard.catalogue.entries import entry_of

    catalogue = _catalogue(db)
    outcomes = add_models(catalogue, models, labels=parse_labels(label), name=name, base=base,
                          replace=replace, samples=samples, device=device, on_outcome=_report_failure)
    emit([entry_of(o.result) for o in outcomes if o.result is not None], as_json, render_added)
    _exit_if_failed(outcomes)


@index.command("import")
@click.argument("features", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--labels", "labels_file", type=click.Path(path_type=str),
              help="CSV model_name,base_model[,family] (default: a folder's own labels.csv).")
@click.option("--label", "label", metavar="KEY=VALUE,...", help="Labels added to every entry.")
@click.option("--replace", is_flag=True, help="Replace entries of the same name.")
@db_option
@standard_options
def index_import(features: tuple[str, ...], labels_file: str | None, label: str | None, replace: bool,
                 db: str | None, as_json: bool) -> None:
    """Add fingerprint-only entries from FEATURES (*_features.json files or folders).

    Fingerprint-only entries can be named as the closest known model, never as a confirmed base.
    """
    from tensorguard.app.index import render_added
    from tensorguard.catalogue import parse_labels

    added = _catalogue(db).import_fingerprints(
        list(features), labels_file=labels_file, labels=parse_labels(label), replace=replace)
    emit(added, as_json, render_added)


@index.command("list")
@catalogue_options
@standard_options
def index_list(db: str | None, no_builtin: bool, as_json: bool) -> None:
    """List the catalogue's entries (and the built-in published fingerprints)."""
    from tensorguard.app.index import render_entries

    emit(_catalogue(db, no_builtin).entries(), as_json, render_entries)


@index.command("show")
@click.argument("name")
@catalogue_options
@standard_options
def index_show(name: str, db: str | None, no_builtin: bool, as_json: bool) -> None:
    """Show one entry: labels, where its weights were read, its summary and fingerprint."""
    from tensorguard.app.index import render_entry

    emit(_catalogue(db, no_builtin).entry(name), as_json, render_entry)


@index.command("remove")
@click.argument("name")
@db_option
@standard_options
def index_remove(name: str, db: str | None, as_json: bool) -> None:
    """Remove one entry of the catalogue file (built-in entries are read-only)."""
    emit(_catalogue(db).remove(name), as_json, lambda e: f"{e.name}: removed")


@cli.command()
@click.argument("models", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=1),
              help="Candidates shown per model.")
@click.option("--confirm", default=2, show_default=True, type=click.IntRange(min=0),
              help="Signature matches checked with compare (while their weights are at hand).")
@click.option("--base", type=click.Path(path_type=str), help="Base model of LoRA adapter(s).")
@click.option("--samples", default=15, show_default=True, type=click.IntRange(min=1),
              help="Probe samples per tensor of the fingerprint.")
@click.option("--blocks", default=4, show_default=True, type=click.IntRange(min=1),
              help="MLP blocks the confirming independence test probes.")
@click.option("--device", default="auto", show_default=True, help="Device for fingerprinting.")
@click.option("--policy", metavar="KEY=VALUE,...", help="Exit 3 when a model is derived from an "
              "entry carrying all these labels (e.g. licence=restricted).")
@click.option("--policy-unconfirmed", is_flag=True,
              help="With --policy: an unconfirmed signature match counts too.")
@catalogue_options
@standard_options
def scan(models: tuple[str, ...], top: int, confirm: int, base: str | None, samples: int, blocks: int,
         device: str, policy: str | None, policy_unconfirmed: bool, db: str | None, no_builtin: bool,
         as_json: bool) -> None:
    """Which catalogued model is each MODEL derived from?

    Answers "derived from X" (signature match confirmed by compare, with its p-value),
    "closest known: X, not confirmed" or "no known base". Exit 3 when a model is derived from
    an entry matching --policy (CI), 1 when some models failed, 2 on bad input.

    \b
    Examples:
      tensorguard scan ./suspect-model
      tensorguard scan a/ b/ --db team.sqlite --top 3 --json
      tensorguard scan ./suspect --policy licence=restricted --policy-unconfirmed
    """
    from tensorguard.app.scan import policy_hits, render_text, scan_models
    from tensorguard.catalogue import parse_labels

    labels = parse_labels(policy, option="policy")
    outcomes = scan_models(_catalogue(db, no_builtin), models, top=top, confirm=confirm, base=base,
                           samples=samples, blocks=blocks, device=device, on_outcome=_report_failure)
    results = [o.result for o in outcomes if o.result is not None]
    if as_json:
        emit(results if len(models) > 1 else results[0], True, str)
    elif results:
        click.echo(render_text(outcomes))
    hits = policy_hits(results, labels, unconfirmed=policy_unconfirmed)
    for r in hits:
        log.warning("%s: derived from %s, which carries %s (--policy): exit %d", r.model, r.base,
                    policy, EXIT_POLICY)
    if hits:
        raise SystemExit(EXIT_POLICY)
    _exit_if_failed(outcomes)


def _report_failure(outcome: Any) -> None:
    from tensorguard.app.batch import Status

    if outcome.status is Status.FAILED:
        click.echo(f"tensorguard: error: {outcome.error}", err=True)


def _exit_if_failed(outcomes: Any) -> None:
    """Exit 1 when some model of a batch failed (each was reported as it happened)."""
    from tensorguard.app.batch import Status

    if any(o.status is Status.FAILED for o in outcomes):
        raise SystemExit(EXIT_FAILED)


#: How the library's parameter names are spelled on the command line, where they differ.
FLAGS = {"kinds": "--noise", "out_dir": "--output", "save_to": "--save", "random_state": "--seed",
         "catalogue": "--db", "labels_file": "--labels"}


#: Exit codes (documented in ``tensorguard --help`` and the README).
EXIT_FAILED, EXIT_BAD_INPUT, EXIT_POLICY, EXIT_INTERNAL, EXIT_INTERRUPTED = 1, 2, 3, 70, 130
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def one_line(message: str) -> str:
    """``message`` on one line: control characters (a newline in a file name) shown escaped."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], message)


def _fail(message: str, code: int) -> NoReturn:
    click.echo(f"tensorguard: {one_line(message)}", err=True)
    sys.exit(code)


def main() -> None:
    """Run the command line: one-line errors, documented exit codes, no tracebacks for bad input."""
    try:
        code = cli.main(standalone_mode=False)
    except TensorguardError as exc:
        _fail(f"error: {exc.for_cli(FLAGS)}", exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:  # a usage error: one line, the way to the help
        command = " ".join(sys.argv[1:2])
        _fail(f"error: {exc.format_message()} (see tensorguard {command} --help)".replace("  ", " "),
              EXIT_BAD_INPUT)
    except (click.Abort, KeyboardInterrupt, Interrupted):
        _fail("interrupted", EXIT_INTERRUPTED)
    except MemoryError:
        _fail("error: out of memory", EXIT_FAILED)
    except Exception as exc:  # a bug, not bad input: say so in one line, traceback with -v
        if log.isEnabledFor(logging.INFO):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (rerun with -v for the traceback)",
              EXIT_INTERNAL)
    sys.exit(code if isinstance(code, int) else 0)


def run() -> None:
    """The console script. Once the command has finished, the process ends at once: every output
    is written, flushed and closed by then, and the interpreter's teardown (torch's exit handlers
    take about half a second) has nothing left to do; a late Ctrl-C is ignored, so it can never
    print a traceback from an exit handler either."""
    code = 0
    try:
        main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else EXIT_FAILED)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError):  # a closed pipe (``| head``): nothing more can be said
            stream.flush()
    os._exit(code)
