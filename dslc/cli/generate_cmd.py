"""`dslc generate model.nn --weights RUN/ --prompt TEXT`: sample text from a language model."""

from __future__ import annotations

import click

from dslc.cli import allow_imports_option, parse_sets, report_errors


@click.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option("--weights", required=True, type=click.Path(exists=True),
              help="A run directory or checkpoint file (it holds the vocabulary).")  # fmt: skip
@click.option("--prompt", required=True, help="The text to continue.")
@click.option("--tokens", type=click.IntRange(min=0), default=100, show_default=True,
              help="How many tokens to add.")  # fmt: skip
@click.option("--temperature", type=click.FloatRange(min=0), default=1.0, show_default=True,
              help="Softmax temperature; 0 always picks the likeliest token.")  # fmt: skip
@click.option("--top-k", type=click.IntRange(min=1), help="Sample among the k likeliest only.")
@click.option("--seed", type=int, default=0, show_default=True, help="Sampling seed.")
@click.option(
    "--set", "sets", multiple=True, metavar="NAME=VALUE", help="Override a hyper-parameter."
)
@allow_imports_option
@report_errors
def generate(model, weights, prompt, tokens, temperature, top_k, seed, sets):
    """Continue PROMPT with text sampled from MODEL (trained on text)."""
    from dslc import api

    click.echo(
        api.generate(
            model,
            prompt,
            tokens=tokens,
            temperature=temperature,
            top_k=top_k,
            seed=seed,
            weights=weights,
            overrides=parse_sets(sets) or None,
        )
    )
