"""`dslc train model.nn`: train a model, writing metrics and checkpoints to a run directory."""

from __future__ import annotations

import os

import click

from dslc.cli import allow_imports_option, parse_sets, report_errors


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--data", metavar="DATA", help="Built-in name or .npz/.csv/.txt file "
              "[default: the model's `data`, or the resumed run's].")  # fmt: skip
@click.option("--epochs", type=click.IntRange(min=0), help="Number of epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Examples per batch.")
@click.option("--lr", type=float, help="Learning rate.")
@click.option("--seed", type=int, help="Seed of initialisation, data order and dropout.")
@click.option(
    "--set", "sets", multiple=True, metavar="NAME=VALUE", help="Override a hyper-parameter."
)
@click.option("--out", type=click.Path(file_okay=False), help="Run directory "
              "[default: runs/<model>, or the resumed run's].")  # fmt: skip
@click.option("--resume", type=click.Path(file_okay=False), help="Continue the run in this "
              "directory from its checkpoint.")  # fmt: skip
@click.option(
    "--checkpoint-every", type=click.IntRange(min=0), default=0, metavar="K",
    help="Also checkpoint every K steps (0: at epoch ends only).",
)  # fmt: skip
@click.option("--quiet", "-q", is_flag=True, help="No progress bar and no per-epoch lines.")
@click.option("--detect-anomaly", is_flag=True, help="Check every value for NaN/Inf and name "
              "the node and source line of the first (slow).")  # fmt: skip
@allow_imports_option
@report_errors
def train(model, data, epochs, batch_size, lr, seed, sets, out, resume, checkpoint_every,
          quiet, detect_anomaly):  # fmt: skip
    """Train MODEL; metrics go to RUN/metrics.jsonl, weights to RUN/checkpoint.safetensors."""
    from dslc import api

    if out is None:
        out = resume or os.path.join("runs", os.path.splitext(os.path.basename(model))[0])
    run = api.train(
        model,
        data,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        out=out,
        resume=resume,
        overrides=parse_sets(sets) or None,
        quiet=quiet,
        detect_anomaly=detect_anomaly,
        checkpoint_every=checkpoint_every,
        log=click.echo,
        data_hint="--data" if data else None,
    )
    done = run.last
    summary = ", ".join(f"{k} {v:.4f}" for k, v in done.items() if k.startswith("val_"))
    where = os.path.join(out, "checkpoint.safetensors")
    if done:
        click.echo(f"trained {run.model.name} to step {done['step']}"
                   + (f" ({summary})" if summary else "") + f"; checkpoint: {where}")  # fmt: skip
    else:
        click.echo(f"nothing to train: {run.model.name} already ran {run.settings.epochs} "
                   f"epoch(s); checkpoint: {where}")  # fmt: skip
