"""Commands over fingerprints: ``cluster`` and ``predict``."""

from __future__ import annotations

import click

from tensorguard.cli.main import cli, emit
from tensorguard.cli.options import F, force_option, standard_options


def _method_option(func: F) -> F:
    return click.option("--method", type=click.Choice(["kmeans", "gmm"]), default="kmeans",
                        show_default=True, help="K-Means, or a Gaussian mixture started from it.")(func)


def _k_option(func: F) -> F:
    return click.option("--k", "k", type=click.IntRange(min=1),
                        help="Number of clusters (default: one per center; extra ones are seeded "
                             "by k-means++).")(func)


@cli.command()
@click.argument("features", nargs=-1, type=click.Path(path_type=str))
@click.option("--centers", required=True, metavar="NAME,NAME,...",
              help="Model names whose fingerprints start the clusters (one cluster each).")
@_k_option
@_method_option
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the extra k-means++ centroids.")
@click.option("--labels", type=click.Path(path_type=str), help="CSV model_name,base_model[,family]: "
              "the known models' bases and families (saved for predict), and the clusters' score "
              "[default: the bundled set's own, when it is the input].")
@click.option("--save", "save_to", type=click.Path(path_type=str), help="Write clusters.json for predict.")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=str),
              help="PCA scatter of the clusters (PNG) [default: no figure].")
@force_option
@standard_options
def cluster(features: tuple[str, ...], centers: str, k: int | None, method: str, seed: int,
            labels: str | None, save_to: str | None, plot: str | None, force: bool,
            as_json: bool) -> None:
    """Cluster fingerprints into families around named center models.

    FEATURES are fingerprint files and/or directories of *_features.json (default: the bundled
    fingerprints of real LLMs, scored against their labels).

    \b
    Examples:
      tensorguard cluster --centers gemma-3-4b-it,Llama-3.1-8B,llama-3.2-1b,Llama-3.2-3B,\\
          Mistral-7B-v0.1,phi-4,Qwen2.5-3B,Qwen2.5-7B-Instruct --plot figures/clusters.png
      tensorguard cluster my_features/ --centers base-a,base-b --save clusters.json --force
    """
    from tensorguard.app.families import cluster_files, parse_centers, render_cluster_text

    report = cluster_files(features, centers=parse_centers(centers), k=k, method=method,
                           random_state=seed, labels=labels, save_to=save_to, plot=plot, force=force)
    emit(report, as_json, render_cluster_text)


@cli.command()
@click.argument("unknowns", nargs=-1, type=click.Path(path_type=str))
@click.option("--clusters", type=click.Path(path_type=str), help="clusters.json from cluster --save.")
@click.option("--centers", metavar="NAME,NAME,...", help="Instead of --clusters: fit the clusters "
              "on the spot around these models of --features.")
@click.option("--features", "features", multiple=True, type=click.Path(path_type=str),
              help="With --centers: the known set (repeatable; default: the bundled set).")
@_k_option
@_method_option
@click.option("--rule", type=click.Choice(["neighbors", "paper", "centroid"]), default="neighbors",
              show_default=True, help="neighbors: distance-weighted vote of the 3 nearest known models; "
              "paper: the nearest center model (the paper's code); centroid: the nearest K-Means centroid.")
@click.option("--threshold", type=float, help="Distance beyond which a model is 'unknown' "
              "(default: the rule's own, see the report).")
@click.option("--labels", type=click.Path(path_type=str), help="CSV model_name,base_model[,family]: "
              "with --centers, the known models' bases and families (default: the bundled set's own "
              "when it is the known set); always, the truth that scores the predictions (a base no "
              "known model carries means 'unknown' is right).")
@click.option("--evaluate", is_flag=True, help="Also print each rule's leave-one-out accuracy on the "
              "known set, and what it answers for each family held out.")
@click.option("--plot", "plot", type=click.Path(file_okay=False, path_type=str),
              help="Folder for unknown_model_prediction_<name>.png [default: no figure].")
@force_option
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
          Llama-3.2-3B,Mistral-7B-v0.1,phi-4,Qwen2.5-3B,Qwen2.5-7B-Instruct
    """
    from tensorguard.app.families import parse_centers, predict_files, render_predict_text

    report = predict_files(unknowns, clusters=clusters, features=features,
                           centers=parse_centers(centers or ""), k=k, method=method, rule=rule,
                           threshold=threshold, labels=labels, evaluate=evaluate, plot=plot,
                           force=force)
    emit(report, as_json, render_predict_text)
