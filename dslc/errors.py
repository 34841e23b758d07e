"""One error hierarchy for everything a user can get wrong; rendered only at the CLI edge."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Span:
    """A region of a source file: 1-based line and column, end exclusive."""

    file: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


class DslcError(Exception):
    """Base of every error dslc reports to a user."""

    kind = "error"

    def __init__(
        self,
        message: str,
        span: Span | None = None,
        *,
        notes: list[str] | None = None,
        hint: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.span = span
        self.notes = list(notes or [])
        self.hint = hint

    def __str__(self) -> str:
        where = f"{self.span}: " if self.span else ""
        return f"{where}{self.kind}: {self.message}"


# --- source-level mistakes (all carry a Span) -------------------------------------------


class SyntaxError_(DslcError):
    """The text does not follow the grammar."""

    kind = "syntax error"


class NameError_(DslcError):
    """A name that is not defined, or defined twice."""

    kind = "name error"


class ArgumentError(DslcError):
    """Wrong arity, unknown or duplicate keyword, wrong argument kind."""

    kind = "argument error"


class ShapeError(DslcError):
    """Shapes that provably do not fit."""

    kind = "shape error"


class DTypeError(DslcError):
    """Element types that do not fit."""

    kind = "type error"


class AssertionFailed(DslcError):
    """An `assert` statement in a `.nn` file was false at compile time."""

    kind = "assertion failed"


class ImportError_(DslcError):
    """An `import` that cannot be resolved, escapes its root, or forms a cycle."""

    kind = "import error"


class ValueError_(DslcError):
    """A value of the right kind but out of range (negative size, zero division...)."""

    kind = "value error"


# --- run-time mistakes (name a file and a field) ---------------------------------------


class DataError(DslcError):
    """A dataset that does not fit the model: missing array, wrong shape, dtype or range."""

    kind = "data error"


class CheckpointError(DslcError):
    """A checkpoint that cannot be read or does not match the model."""

    kind = "checkpoint error"


class ConfigError(DslcError):
    """A bad command-line override or training setting."""

    kind = "config error"


class AnomalyError(DslcError):
    """A NaN or Inf appeared during training."""

    kind = "numerical anomaly"


class InternalError(DslcError):
    """A bug in dslc itself: an invariant of the IR was broken."""

    kind = "internal error"


@dataclass
class ErrorList(Exception):
    """Several errors collected in one run; raised when at least one was found."""

    errors: list[DslcError] = field(default_factory=list)

    def __str__(self) -> str:
        return "\n".join(str(e) for e in self.errors)


def render(err: DslcError, sources: dict[str, str] | None = None) -> str:
    """Render an error as `file:line:col: kind: message`, the source line and a caret."""
    lines = [str(err)]
    span = err.span
    text = None
    if span is not None:
        if sources and span.file in sources:
            text = sources[span.file]
        else:
            try:
                with open(span.file, encoding="utf-8") as fh:
                    text = fh.read()
            except OSError:
                text = None
    if span is not None and text is not None:
        src_lines = text.splitlines()
        if 1 <= span.line <= len(src_lines):
            src = src_lines[span.line - 1].expandtabs(1)
            width = 1
            if span.end_line == span.line and span.end_col and span.end_col > span.col:
                width = span.end_col - span.col
            gutter = f"{span.line:>4} | "
            lines.append(gutter + src)
            lines.append(" " * (len(gutter) + span.col - 1) + "^" * max(1, width))
    for note in err.notes:
        lines.append(f"  note: {note}")
    if err.hint:
        lines.append(f"  hint: {err.hint}")
    return "\n".join(lines)
