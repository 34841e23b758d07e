"""The `dslc` command line: a click group whose subcommands live one per module."""

from __future__ import annotations

import functools
import importlib
import sys

import click

from dslc.errors import DslcError, ErrorList, render

# module name in dslc.cli -> command function name inside it
COMMANDS = {
    "check": "check",
    "compile": "compile_",
    "train": "train",
    "eval": "eval_",
    "predict": "predict",
    "generate": "generate",
}


def report_errors(fn):
    """Print dslc's own errors (with source line and caret) and exit 1; never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except ErrorList as errs:
            for e in errs.errors:
                click.echo(render(e), err=True)
            sys.exit(1)
        except DslcError as e:
            click.echo(render(e), err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)
        except Exception as e:  # a bug in dslc: say so plainly, with a way to see more
            if "--debug" in sys.argv or _debug():
                raise
            click.echo(
                f"internal error: {type(e).__name__}: {e}\n"
                "  this is a bug in dslc; rerun with DSLC_DEBUG=1 for the traceback",
                err=True,
            )
            sys.exit(2)

    return wrapper


def allow_imports_option(fn):
    """Adds `--allow-imports-outside`: let `import` reach files outside the model's folder
    (the same as DSLC_ALLOW_IMPORTS_OUTSIDE=1, for this command only)."""

    @click.option(
        "--allow-imports-outside",
        is_flag=True,
        help="Allow `import` of files outside the model file's folder.",
    )
    @functools.wraps(fn)
    def wrapper(*args, allow_imports_outside: bool = False, **kwargs):
        if not allow_imports_outside:
            return fn(*args, **kwargs)
        import os

        from dslc.frontend.resolve import ALLOW_ENV

        old = os.environ.get(ALLOW_ENV)
        os.environ[ALLOW_ENV] = "1"
        try:
            return fn(*args, **kwargs)
        finally:
            if old is None:
                os.environ.pop(ALLOW_ENV, None)
            else:
                os.environ[ALLOW_ENV] = old

    return wrapper


def _debug() -> bool:
    import os

    return os.environ.get("DSLC_DEBUG", "") not in ("", "0")


class LazyGroup(click.Group):
    """Imports a subcommand's module only when it is used, so `dslc check` starts fast."""

    def list_commands(self, ctx):
        return list(COMMANDS)

    def get_command(self, ctx, name):
        if name not in COMMANDS:
            return None
        mod = importlib.import_module(f"dslc.cli.{name}_cmd")
        return getattr(mod, COMMANDS[name])


@click.group(cls=LazyGroup)
@click.version_option(package_name="dslc")
def main():
    """dslc: compile, check, train and run neural-network models written in .nn files."""


def parse_sets(pairs: tuple[str, ...]) -> dict:
    """`--set name=value` pairs -> {name: value}; values parse as int, float, bool or str."""
    from dslc.errors import ConfigError

    out = {}
    for p in pairs:
        if "=" not in p:
            raise ConfigError(f"--set expects name=value, got {p!r}")
        k, v = p.split("=", 1)
        k = k.strip()
        if not k.replace("_", "a").replace(".", "a").isalnum():
            raise ConfigError(f"--set: {k!r} is not a name")
        out[k] = parse_value(v.strip())
    return out


def parse_value(v: str):
    low = v.lower()
    if low in ("true", "false"):
        return low == "true"
    for conv in (int, float):
        try:
            return conv(v)
        except ValueError:
            pass
    return v
