"""`dslc predict model.nn --weights RUN/ --input FILE`: the model's outputs for new inputs."""

from __future__ import annotations

import click
import numpy as np

from dslc.cli import allow_imports_option, parse_sets, report_errors


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--weights", required=True, type=click.Path(exists=True),
              help="A run directory or checkpoint file.")  # fmt: skip
@click.option("--input", "input_", required=True, metavar="FILE",
              help="A .npz (arrays named after the inputs) or .csv file.")  # fmt: skip
@click.option("--output", "-o", type=click.Path(dir_okay=False),
              help="Write the outputs to this .npz file [default: print them].")  # fmt: skip
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True)
@click.option(
    "--set", "sets", multiple=True, metavar="NAME=VALUE", help="Override a hyper-parameter."
)
@allow_imports_option
@report_errors
def predict(model, weights, input_, output, batch_size, sets):
    """Run MODEL with trained weights on the inputs in FILE."""
    from dslc import api
    from dslc.errors import ConfigError

    outs = api.predict(
        model, input_, weights=weights, batch_size=batch_size, overrides=parse_sets(sets) or None
    )
    if output:
        if not output.endswith(".npz"):
            raise ConfigError(f"--output {output}: predictions are written as .npz")
        np.savez(output, **outs)
        shapes = ", ".join(f"{k} {v.dtype}{list(v.shape)}" for k, v in outs.items())
        click.echo(f"wrote {output}: {shapes}")
        return
    for name, arr in outs.items():
        click.echo(f"# {name}: {arr.dtype}{list(arr.shape)}")
        rows = arr.reshape(len(arr), -1) if arr.ndim > 1 else arr.reshape(-1, 1)
        fmt = "%d" if arr.dtype.kind in "iub" else "%.6g"
        for row in rows:
            click.echo(" ".join(fmt % v for v in row))
