"""`dslc check model.nn`: validate a model (parse, resolve, shapes, asserts) and say OK."""

from __future__ import annotations

import click

from dslc.cli import allow_imports_option, parse_sets, report_errors


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--set", "sets", multiple=True, metavar="NAME=VALUE", help="Override a hyper-parameter."
)
# Issue 6 adds `--grad` here: a numerical gradient check of the model, block by block, run
# on the Program that `load_program` returns below (after the OK line, exit 1 on a mismatch).
@allow_imports_option
@report_errors
def check(model: str, sets: tuple[str, ...]) -> None:
    """Validate MODEL without compiling it further; print OK or the errors (exit 1)."""
    from dslc.frontend import load_program
    from dslc.ir.summary import format_count, param_totals

    program = load_program(model, parse_sets(sets))
    trainable, non = param_totals(program.train_graph)
    extra = f", {format_count(non)} non-trainable" if non != 0 else ""
    click.echo(f"OK: {model} ({program.name}, {format_count(trainable)} parameters{extra})")
