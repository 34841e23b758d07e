"""`dslc eval model.nn --weights RUN/`: metrics of trained weights on a dataset."""

from __future__ import annotations

import json

import click

from dslc.cli import allow_imports_option, parse_sets, report_errors


@click.command("eval")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--weights", required=True, type=click.Path(exists=True),
              help="A run directory or checkpoint file.")  # fmt: skip
@click.option("--data", metavar="DATA", help="Built-in name or .npz/.csv/.txt file "
              "[default: the data the run was trained on].")  # fmt: skip
@click.option("--split", type=click.Choice(["all", "val", "train"]), default="all",
              show_default=True, help="`val`: the run's held-out examples.")  # fmt: skip
@click.option("--metrics", metavar="A,B", help="Metrics [default: the train section's].")
@click.option("--batch-size", type=click.IntRange(min=1), help="Examples per batch.")
@click.option(
    "--set", "sets", multiple=True, metavar="NAME=VALUE", help="Override a hyper-parameter."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@allow_imports_option
@report_errors
def eval_(model, weights, data, split, metrics, batch_size, sets, as_json):
    """Evaluate MODEL with the weights of a run on a dataset; print its metrics."""
    from dslc import api

    names = [m.strip() for m in metrics.split(",") if m.strip()] if metrics else None
    loaded = api.load(model, weights, overrides=parse_sets(sets) or None, training=False)
    saved = loaded.checkpoint.meta.get("model_hash") if loaded.checkpoint else None
    if saved and loaded.program.model_hash and saved != loaded.program.model_hash:
        click.echo(
            f"warning: {model} changed since {loaded.checkpoint.path} was written (its "
            "parameters still fit); the metrics are of the model as it is now",
            err=True,
        )
    result = api.evaluate(
        loaded,
        data,
        metrics=names,
        split=split,
        batch_size=batch_size,
        data_hint="--data" if data else None,
    )
    if as_json:
        click.echo(json.dumps(result))
        return
    for k, v in result.items():
        click.echo(f"{k:<12} {v:.4f}" if isinstance(v, float) else f"{k:<12} {v}")
