"""Commands over the model catalogue: the ``index`` group and ``scan``."""

from __future__ import annotations

from typing import Any

import click

from tensorguard.cli.main import EXIT_POLICY, cli, emit, exit_if_failed, log, report_failure
from tensorguard.cli.options import (
    base_option,
    batch_models_argument,
    blocks_option,
    catalogue_options,
    db_option,
    device_option,
    executor_options,
    force_option,
    name_option,
    replace_option,
    samples_option,
    standard_options,
)


def _catalogue(db: str | None, timeout: float, no_builtin: bool = False) -> Any:
    from tensorguard.catalogue import Catalogue

    return Catalogue(db, builtin=not no_builtin, timeout=timeout)


@cli.group()
def index() -> None:
    """The model catalogue that scan looks models up in (an SQLite file).

    \b
    Examples:
      tensorguard index add ./Llama-3.2-1B --label base=Llama-3.2-1B,licence=restricted
      tensorguard index import my_features/ --labels my_features/labels.csv
      tensorguard index list
      tensorguard index show Llama-3.2-1B --json
      tensorguard index remove Llama-3.2-1B
      tensorguard index repair --remove
      tensorguard index export team.tgpack
      tensorguard index import team.tgpack
    """


@index.command("add")
@batch_models_argument
@click.option("--label", "label", metavar="KEY=VALUE,...", help="Labels of every model added: base, "
              "family, licence, or any tag (e.g. base=Llama-3.2-1B,licence=restricted).")
@name_option
@base_option
@replace_option
@samples_option
@device_option
@executor_options
@db_option
@standard_options
def index_add(models: tuple[str, ...], from_file: str | None, label: str | None, name: str | None,
              base: str | None, replace: bool, samples: int, device: str, workers: int | None,
              scheduler: str | None, db: str | None, timeout: float, as_json: bool) -> None:
    """Read each MODEL (fingerprint, weight signature, header summary) into the catalogue.

    Models already in the catalogue with the same header hash are skipped, so rerunning an
    interrupted batch resumes it. Measured models are committed in batches (and on Ctrl-C): an
    interrupt keeps every finished model and half-writes nothing. A model that fails is
    reported and the others are added (exit 1). --workers or --scheduler measure the models on
    Dask workers; this process alone writes the catalogue.

    \b
    Examples:
      tensorguard index add ./Llama-3.2-1B --label base=Llama-3.2-1B,licence=restricted
      tensorguard index add --from models.txt --workers 4
      tensorguard index add --from models.txt --scheduler tcp://10.0.0.5:8786
    """
    from tensorguard.app.batch import model_list
    from tensorguard.app.executors import make_executor
    from tensorguard.app.index import add_models, render_add
    from tensorguard.catalogue import parse_labels
    from tensorguard.catalogue.entries import entry_of

    catalogue = _catalogue(db, timeout)
    listed = model_list(models, from_file)
    outcomes = add_models(catalogue, listed, labels=parse_labels(label), name=name, base=base,
                          replace=replace, samples=samples, device=device,
                          executor=make_executor(workers=workers, scheduler=scheduler),
                          on_outcome=report_failure)
    if as_json:
        added = [(o.result, o.fetched) for o in outcomes if o.result is not None]
        emit([entry_of(row) for row, _ in added], True, str, fetched=[f for _, f in added])
    else:
        click.echo(render_add(outcomes))
    exit_if_failed(outcomes)


@index.command("import")
@click.argument("features", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--labels", "labels_file", type=click.Path(path_type=str),
              help="CSV model_name,base_model[,family] (default: a folder's own labels.csv).")
@click.option("--label", "label", metavar="KEY=VALUE,...", help="Labels added to every entry.")
@replace_option
@db_option
@standard_options
def index_import(features: tuple[str, ...], labels_file: str | None, label: str | None, replace: bool,
                 db: str | None, timeout: float, as_json: bool) -> None:
    """Add fingerprint-only entries from FEATURES (*_features.json files or folders), or merge a
    signature pack (index export) into the catalogue.

    Fingerprint-only entries can be named as the closest known model, never as a confirmed base.
    A pack is checked whole first; its entries named like different ones of the catalogue are
    reported and nothing is imported, unless --replace.
    """
    from tensorguard.app.index import import_pack, render_added, render_pack_import
    from tensorguard.catalogue import parse_labels

    if import_pack(features, labels_file=labels_file, label=label):
        emit(_catalogue(db, timeout).import_pack(features[0], replace=replace), as_json, render_pack_import)
        return

    added = _catalogue(db, timeout).import_fingerprints(
        list(features), labels_file=labels_file, labels=parse_labels(label), replace=replace)
    emit(added, as_json, render_added)


@index.command("export")
@click.argument("pack", type=click.Path(path_type=str))
@force_option
@db_option
@standard_options
def index_export(pack: str, force: bool, db: str | None, timeout: float, as_json: bool) -> None:
    """Write the catalogue's entries to PACK, one signature pack (a checked, read-only file).

    Others import it (index import PACK) or scan against it directly (scan --db PACK).
    """
    from tensorguard.app.index import render_pack

    emit(_catalogue(db, timeout).export_pack(pack, force=force), as_json, render_pack)


@index.command("list")
@catalogue_options
@standard_options
def index_list(db: str | None, timeout: float, no_builtin: bool, as_json: bool) -> None:
    """List the catalogue's entries (and the built-in published fingerprints)."""
    from tensorguard.app.index import render_entries

    emit(_catalogue(db, timeout, no_builtin).entries(), as_json, render_entries)


@index.command("show")
@click.argument("name")
@catalogue_options
@standard_options
def index_show(name: str, db: str | None, timeout: float, no_builtin: bool, as_json: bool) -> None:
    """Show one entry: labels, where its weights were read, its summary and fingerprint."""
    from tensorguard.app.index import render_entry

    emit(_catalogue(db, timeout, no_builtin).entry(name), as_json, render_entry)


@index.command("remove")
@click.argument("name")
@db_option
@standard_options
def index_remove(name: str, db: str | None, timeout: float, as_json: bool) -> None:
    """Remove one entry of the catalogue file (built-in entries are read-only)."""
    emit(_catalogue(db, timeout).remove(name), as_json, lambda e: f"{e.name}: removed")


@index.command("repair")
@click.option("--remove", is_flag=True, help="Remove the damaged entries (else only list them).")
@db_option
@standard_options
def index_repair(remove: bool, db: str | None, timeout: float, as_json: bool) -> None:
    """List the catalogue's damaged entries (unreadable rows); --remove removes them."""
    from tensorguard.app.index import render_damage

    catalogue = _catalogue(db, timeout)
    damage = catalogue.repair() if remove else catalogue.check()
    emit(damage, as_json, lambda d: render_damage(d, catalogue.path, removed=remove))


@cli.command()
@batch_models_argument
@click.option("--top", default=5, show_default=True, type=click.IntRange(min=1),
              help="Candidates shown per model.")
@click.option("--confirm", default=2, show_default=True, type=click.IntRange(min=0),
              help="Signature matches checked with compare (while their weights are at hand).")
@base_option
@samples_option
@blocks_option
@device_option
@click.option("--policy", metavar="KEY=VALUE,...", help="Exit 3 when a model is derived from an "
              "entry carrying all these labels (e.g. licence=restricted).")
@click.option("--policy-unconfirmed", is_flag=True,
              help="With --policy: an unconfirmed signature match counts too.")
@executor_options
@catalogue_options
@standard_options
def scan(models: tuple[str, ...], from_file: str | None, top: int, confirm: int, base: str | None,
         samples: int, blocks: int, device: str, policy: str | None, policy_unconfirmed: bool,
         workers: int | None, scheduler: str | None, db: str | None, timeout: float, no_builtin: bool,
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
      tensorguard scan --from uploads.txt --db team.tgpack --workers 4
    """
    from tensorguard.app.batch import model_list
    from tensorguard.app.executors import make_executor
    from tensorguard.app.scan import policy_hits, render_text, scan_models
    from tensorguard.catalogue import parse_labels

    labels = parse_labels(policy, option="policy")
    listed = model_list(models, from_file)
    outcomes = scan_models(_catalogue(db, timeout, no_builtin), listed, top=top, confirm=confirm, base=base,
                           samples=samples, blocks=blocks, device=device,
                           executor=make_executor(workers=workers, scheduler=scheduler),
                           on_outcome=report_failure)
    results = [o.result for o in outcomes if o.result is not None]
    if as_json:
        fetched = [o.fetched for o in outcomes if o.result is not None]
        emit(results if len(listed) > 1 else results[0], True, str,
             fetched=fetched if len(listed) > 1 else fetched[0])
    elif results:
        click.echo(render_text(outcomes))
    hits = policy_hits(results, labels, unconfirmed=policy_unconfirmed)
    for r in hits:
        log.warning("%s: derived from %s, which carries %s (--policy): exit %d", r.model, r.base,
                    policy, EXIT_POLICY)
    if hits:
        raise SystemExit(EXIT_POLICY)
    exit_if_failed(outcomes)
