"""Commands that read models: ``inspect``, ``fingerprint``, ``sensitivity``, ``compare``."""

from __future__ import annotations

from typing import Any

import click

from tensorguard.cli.main import EXIT_FAILED, cli, emit, exit_if_failed, report_failure
from tensorguard.cli.options import (
    base_option,
    blocks_option,
    device_option,
    force_option,
    model_argument,
    models_argument,
    name_option,
    samples_option,
    standard_options,
)


@cli.command()
@model_argument
@base_option
@name_option
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
    from tensorguard.app.batch import metered
    from tensorguard.app.inspect import render_text

    summary, fetched = metered(lambda: tensorguard.inspect(model, base=base, name=name))
    emit(summary, as_json, render_text, fetched=fetched)


@cli.command()
@models_argument
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False, path_type=str),
              help="Directory for the JSON files [default: features; with --json: none, the "
                   "fingerprint goes to stdout only].")
@samples_option
@device_option
@name_option
@base_option
@force_option
@standard_options
def fingerprint(models: tuple[str, ...], out_dir: str | None, samples: int, device: str,
                name: str | None, base: str | None, force: bool, as_json: bool) -> None:
    """Compute the paper's gradient fingerprint of each MODEL into DIR/<name>_features.json.

    Existing files are kept unless --force. A model that fails is reported on stderr and the
    others go on (exit 1); a single bad model exits 2. With --json the fingerprint is printed
    (a list for several models) and no file is written unless -o is given. The bundled
    reference set is never written to.

    \b
    Examples:
      tensorguard fingerprint ./Llama-3.2-1B
      tensorguard fingerprint a.safetensors b/ c/ -o my_features/ --device cpu
      tensorguard fingerprint ./my-adapter --base ./Llama-3.1-8B --name my-finetune --json
    """
    from tensorguard.app.batch import Status
    from tensorguard.app.fingerprint import DEFAULT_DIR, fingerprint_models, render_text

    def report(outcome: Any) -> None:
        report_failure(outcome)
        if outcome.status is Status.SKIPPED and as_json:
            click.echo(f"tensorguard: {outcome.paths[0]} exists, skipped (use --force)", err=True)

    directory = out_dir if out_dir is not None or as_json else DEFAULT_DIR
    outcomes = fingerprint_models(list(models), out_dir=directory, samples=samples, device=device,
                                  name=name, base=base, force=force, on_outcome=report)
    done = [o.result for o in outcomes if o.result is not None]
    fetched = [o.fetched for o in outcomes if o.result is not None]
    if as_json:
        if len(models) > 1 or done:
            emit(done if len(models) > 1 else done[0], True, str,
                 fetched=fetched if len(models) > 1 else fetched[0])
    elif any(o.status is not Status.FAILED for o in outcomes):
        click.echo(render_text(outcomes))
    exit_if_failed(outcomes)


@cli.command()
@models_argument
@click.option("--samples", type=click.IntRange(min=1), default=None,
              help="Token sequences the forward metric runs [default: 2]; for the weight-only "
                   "metrics, probes per noise kind (seeds 0..N-1, or N copies of seed 0 with "
                   "--seeds repeat) [default: 20].")
@click.option("--seeds", type=click.Choice(["distinct", "repeat"]), default="distinct",
              show_default=True, help="'repeat' re-seeds every sample with 0, as the paper does.")
@click.option("--noise", default="all", show_default=True,
              help="Noise kind, comma-separated kinds, or 'all' (5 paper kinds + 3 attention kinds).")
@click.option("--metric", type=click.Choice(["auto", "forward", "response", "gradient-norm"]),
              default="auto", show_default=True,
              help="'forward' runs the model (tensorguard[forward] and its config): next-token "
                   "change when each layer's output is perturbed; 'response' scores the weights "
                   "alone; 'gradient-norm' is the paper's score; 'auto': forward where it can run, "
                   "else response, saying why.")
@click.option("--threshold", type=float, default=1.5, show_default=True,
              help="A layer scoring above this is sensitive.")
@click.option("--top", type=click.IntRange(min=1), default=20, show_default=True,
              help="Layers shown in the report and the chart.")
@click.option("--attention-test", is_flag=True, help="Compare attention with non-attention layers.")
@click.option("-o", "--output", "output", type=click.Path(file_okay=False, path_type=str),
              help="Directory for each model's JSON and chart [default: none, the report only].")
@base_option
@force_option
@standard_options
def sensitivity(models: tuple[str, ...], samples: int | None, seeds: str, noise: str, metric: str,
                threshold: float, top: int, attention_test: bool, output: str | None,
                base: str | None, force: bool, as_json: bool) -> None:
    """Rank the layers of each model by how much each kind of noise in them changes the model.

    \b
    Examples:
      tensorguard sensitivity ./Llama-3.2-1B
      tensorguard sensitivity ./Llama-3.2-1B --noise low_frequency --attention-test
      tensorguard sensitivity a.safetensors b.safetensors -o sensitivity/ --force
      tensorguard sensitivity ./model --metric response   # weight-only, no forward pass
      tensorguard sensitivity ./model --metric gradient-norm --seeds repeat   # the paper's score
    """
    from tensorguard.app.batch import metered
    from tensorguard.app.sensitivity import analyze_models, render_text
    from tensorguard.sensitivity import Options

    options = Options(kinds=noise, metric=metric, samples=samples, seeds=seeds,  # type: ignore[arg-type]
                      threshold=threshold, top=top, attention_test=attention_test)
    done, fetched = metered(lambda: analyze_models(models, options, out_dir=output, force=force,
                                                   base=base, on_outcome=report_failure))
    emit(done, as_json, render_text, fetched=fetched)
    if done.failures:
        raise SystemExit(EXIT_FAILED)


@cli.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--reference", type=click.Path(file_okay=False, path_type=str),
              help="Reference fingerprints (+ labels.csv) that standardise distances "
                   "(default: the bundled set).")
@blocks_option
@samples_option
@device_option
@click.option("--seed", default=0, show_default=True, type=int, help="Fingerprint probe seed.")
@click.option("--plot-dir", type=click.Path(file_okay=False, path_type=str),
              help="Folder for similarity_<signal>.png and the dendrogram (3+ inputs) "
                   "[default: no figure].")
@force_option
@base_option
@standard_options
def compare(inputs: tuple[str, ...], reference: str | None, blocks: int, samples: int, device: str,
            seed: int, plot_dir: str | None, force: bool, base: str | None, as_json: bool) -> None:
    """Is one model derived from another? Fingerprint distance, weight evidence, independence test.

    Each INPUT is a model (any supported layout, a LoRA adapter too) or a fingerprint JSON. Two
    inputs: a verdict (same weights, derived, independent, inconclusive) with its evidence. More:
    every signal as a matrix, and with --plot-dir heatmaps and a dendrogram. A LoRA adapter
    without --base is merged into the other input when the adapter names it or its shapes fit.

    \b
    Examples:
      tensorguard compare ./Llama-3.2-1B ./my-finetune
      tensorguard compare a/ b/ c/ --plot-dir figures/ --json
      tensorguard compare base_features.json finetune_features.json
    """
    from tensorguard.app.batch import metered
    from tensorguard.app.compare import compare_inputs, render_text

    result, fetched = metered(lambda: compare_inputs(
        inputs, plot_dir=plot_dir, force=force, reference=reference, blocks=blocks, samples=samples,
        device=device, seed=seed, base=base))
    emit(result, as_json, render_text, fetched=fetched)
