"""`dslc check model.nn`: validate a model (parse, resolve, shapes, asserts) and say OK;
`--grad` adds a numerical gradient check, block by block (dslc/gradcheck.py)."""

from __future__ import annotations

import sys

import click

from dslc.cli import allow_imports_option, parse_sets, report_errors


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--set", "sets", multiple=True, metavar="NAME=VALUE", help="Override a hyper-parameter."
)
@click.option("--grad", is_flag=True, help="Also check the gradients numerically, block by "
              "block (float64, central differences on a small random batch).")  # fmt: skip
@click.option("--dim", "dims", multiple=True, metavar="NAME=SIZE", help="With --grad: the "
              "size of a symbolic dimension [default: 3 for each].")  # fmt: skip
@click.option("--seed", type=int, default=0, show_default=True,
              help="With --grad: seed of the random batch, weights and directions.")  # fmt: skip
@click.option(
    "--tol",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="With --grad: the largest relative error that passes [default: 1e-5].",
)
@allow_imports_option
@report_errors
def check(model: str, sets: tuple[str, ...], grad: bool, dims: tuple[str, ...], seed: int,
          tol: float | None) -> None:  # fmt: skip
    """Validate MODEL without compiling it further; print OK or the errors (exit 1)."""
    from dslc.frontend import load_program
    from dslc.ir.summary import format_count, param_totals

    program = load_program(model, parse_sets(sets))
    program.infer_graph  # noqa: B018 - lower the inference graph too: it may fail on its own
    trainable, non = param_totals(program.train_graph)
    extra = f", {format_count(non)} non-trainable" if non != 0 else ""
    click.echo(f"OK: {model} ({program.name}, {format_count(trainable)} parameters{extra})")
    if grad:
        _grad(program, dims, seed, tol)


def _grad(program, dims: tuple[str, ...], seed: int, tol: float | None) -> None:
    from dslc import gradcheck

    sizes = {}
    for d in dims:
        name, _, value = d.partition("=")
        if not name.strip() or not value.strip().isdigit() or int(value) < 1:
            from dslc.errors import ConfigError

            raise ConfigError(f"--dim expects NAME=SIZE with a positive size, got {d!r}")
        sizes[name.strip()] = int(value)
    report = gradcheck.gradcheck(program, sizes=sizes, seed=seed,
                                 tol=gradcheck.TOLERANCE if tol is None else tol)  # fmt: skip
    click.echo(report.table())
    b = report.culprit()
    if b is not None:
        t = b.worst
        click.echo(
            f"error: gradient check failed in block `{b.block}`: `{t.name}` has autodiff "
            f"{t.analytic:.6g}, finite differences {t.numeric:.6g} (relative error "
            f"{t.error:.2e})",
            err=True,
        )
        before = [f"`{f.block}`" for f in report.failed() if f is not b]
        if before:
            click.echo(f"  note: {', '.join(before)} fail through it (their gradients pass "
                       f"through `{b.block}`)", err=True)  # fmt: skip
        click.echo(f"  hint: a gradient rule used in `{b.block}` (or between it and the next "
                   "block toward the loss) is wrong", err=True)  # fmt: skip
        sys.exit(1)
    click.echo(f"gradients OK ({len(report.blocks)} block(s))")
