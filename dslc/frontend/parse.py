"""Text to AST: one cached LALR parser, a Transformer that records spans, located syntax errors."""

from __future__ import annotations

import ast as pyast
import functools

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import (
    UnexpectedCharacters,
    UnexpectedEOF,
    UnexpectedInput,
    UnexpectedToken,
    VisitError,
)
from lark.lexer import PatternStr

from dslc.errors import DslcError, Span, SyntaxError_
from dslc.frontend import ast as A
from dslc.frontend import tables


@functools.lru_cache(maxsize=1)
def parser() -> Lark:
    """The LALR parser, loaded once per process from pre-generated tables (see tables.py)."""
    return tables.load()


def parse_text(text: str, file: str) -> A.Module:
    """Parse one file's text; raises SyntaxError_ with file:line:col and what was expected."""
    try:
        tree = parser().parse(text)
    except UnexpectedInput as e:
        raise _syntax_error(e, text, file) from None
    try:
        return _ToAst(file).transform(tree)
    except VisitError as e:  # a located error raised while building a node
        if isinstance(e.orig_exc, DslcError):
            raise e.orig_exc from None
        raise


def _short(text: str, n: int = 24) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


# --- syntax errors in words ------------------------------------------------------------------

_WORDS = {
    "NAME": "a name",
    "INT": "a number",
    "FLOAT": "a number",
    "STRING": "a string",
    "GLOB": "a parameter name pattern",
    "ELLIPSIS": "`...`",
    "COMP_OP": "a comparison",
    "ADD_OP": "`+` or `-`",
    "MUL_OP": "`*`, `/`, `//`, `%` or `@`",
    "POW": "`**`",
    "$END": "the end of the file",
}
_EXPR_START = {"NAME", "INT", "FLOAT", "STRING", "LPAR", "LSQB", "TRUE", "FALSE", "NONE"}
_STMT_START = {"INPUT", "LABEL", "OUTPUT", "LOSS", "LET", "PARAM", "STATE", "UPDATE", "ASSERT",
               "RETURN", "IF"}  # fmt: skip
_OPERATORS = {"ADD_OP", "MUL_OP", "POW", "COMP_OP", "AND", "OR", "DOT", "__ANON_1"}


def _term_words(name: str) -> str:
    if name in _WORDS:
        return _WORDS[name]
    term = parser().get_terminal(name) if name in _terminal_names() else None
    if term is not None and isinstance(term.pattern, PatternStr):
        return f"`{term.pattern.value}`"
    return name.lower()


@functools.lru_cache(maxsize=1)
def _terminal_names() -> frozenset[str]:
    return frozenset(t.name for t in parser().terminals)


def _pipe_terminal() -> str | None:
    for t in parser().terminals:
        if isinstance(t.pattern, PatternStr) and t.pattern.value == "|>":
            return t.name
    return None


def expected_words(expected: set[str]) -> str:
    """Lark terminal names -> `a name, `)` or an expression`."""
    expected = set(expected)
    words: list[str] = []
    if _EXPR_START <= expected | {"TRUE", "FALSE", "NONE"} and {"NAME", "INT", "LPAR"} <= expected:
        expected -= _EXPR_START | {"ADD_OP", "NOT", "FLOAT"}
        words.append("an expression")
    if len(expected & _STMT_START) >= 4:
        expected -= _STMT_START
        words.append("a statement")
    ops = _OPERATORS | ({_pipe_terminal()} - {None})
    if len(expected & ops) >= 3:
        expected -= ops | {"LPAR", "LSQB"}
        words.append("an operator")
    words.extend(sorted({_term_words(n) for n in expected}))
    words = list(dict.fromkeys(words))
    if not words:
        return "something else"
    if len(words) > 8:
        words = words[:8] + ["..."]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _syntax_error(e: UnexpectedInput, text: str, file: str) -> SyntaxError_:
    line, col = getattr(e, "line", 0) or 0, getattr(e, "column", 0) or 0
    if isinstance(e, UnexpectedCharacters):
        ch = text[e.pos_in_stream] if e.pos_in_stream < len(text) else ""
        if ch in "\"'":
            msg = "unterminated string: a string must end on the line it starts"
        else:
            msg = f"unexpected character `{ch}`"
        allowed = set(e.allowed or ())
        if allowed:
            msg += f"; expected {expected_words(allowed)}"
        return SyntaxError_(msg, Span(file, line, col, line, col + 1))
    if isinstance(e, UnexpectedEOF) or (isinstance(e, UnexpectedToken) and e.token.type == "$END"):
        lines = text.splitlines() or [""]
        line, col = len(lines), len(lines[-1]) + 1
        exp = set(getattr(e, "expected", None) or getattr(e, "accepts", None) or ())
        msg = "unexpected end of file"
        if exp:
            msg += f"; expected {expected_words(exp)}"
        hint = "a `{` was never closed" if "RBRACE" in exp else None
        return SyntaxError_(msg, Span(file, line, col, line, col + 1), hint=hint)
    assert isinstance(e, UnexpectedToken)
    tok = e.token
    exp = set(e.accepts or e.expected or ())
    what = _token_words(tok)
    msg = f"unexpected {what}; expected {expected_words(exp)}"
    end_col = (tok.end_column or col + 1) if tok.end_line == tok.line else col + 1
    hint = None
    if str(tok.value) in ("def", "class", "fn", "function", "layer", "fun"):
        hint = "definitions start with `model`, `block`, `train` or `import`"
    elif tok.type == "EQUAL" and "COMP_OP" in exp:
        hint = "use `==` to compare"
    elif exp & {"RPAR", "RSQB"} and _starts_line(text, tok):
        hint = "a bracket opened on an earlier line is not closed"
    elif tok.type.isupper() and tok.value.isidentifier() and "NAME" in exp:
        hint = f"`{tok.value}` is a keyword and cannot be used as a name here"
    return SyntaxError_(msg, Span(file, tok.line, tok.column, tok.end_line, end_col), hint=hint)


def _starts_line(text: str, tok: Token) -> bool:
    lines = text.splitlines()
    if not 1 <= tok.line <= len(lines):
        return False
    return lines[tok.line - 1][: tok.column - 1].strip() == ""


def _token_words(tok: Token) -> str:
    if tok.type == "NAME":
        return f"name `{tok.value}`"
    if tok.type in ("INT", "FLOAT"):
        return f"number `{tok.value}`"
    if tok.type == "STRING":
        return f"string {tok.value}"
    return f"`{tok.value}`"


# --- tree to AST -----------------------------------------------------------------------------


def _tspan(file: str, tok: Token) -> Span:
    return Span(file, tok.line, tok.column, tok.end_line, tok.end_column)


_BINOPS = {"+", "-", "*", "/", "//", "%", "@", "**"}


@v_args(meta=True, inline=True)
class _ToAst(Transformer):
    """Builds frozen AST nodes; every node gets the span of its text."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _span(self, meta) -> Span:
        if getattr(meta, "empty", True):
            return Span(self.file, 1, 1)
        return Span(self.file, meta.line, meta.column, meta.end_line, meta.end_column)

    # --- top level ---------------------------------------------------------------------
    def start(self, meta, *items):
        imports = tuple(i for i in items if isinstance(i, A.Import))
        models = tuple(i for i in items if isinstance(i, A.ModelDef))
        blocks = tuple(i for i in items if isinstance(i, A.BlockDef))
        trains = tuple(i for i in items if isinstance(i, A.TrainDef))
        return A.Module(self.file, imports, models, blocks, trains, tuple(items))

    def import_stmt(self, meta, path, alias):
        return A.Import(_unquote(path), str(alias) if alias else None, self._span(meta))

    def model_def(self, meta, name, hparams, body):
        return A.ModelDef(str(name), hparams or (), body, self._span(meta), self.file)

    def block_def(self, meta, name, hparams, inputs, ret, body):
        return A.BlockDef(str(name), hparams or (), inputs, ret, body, self._span(meta), self.file)

    def hparams(self, meta, *items):
        return tuple(i for i in items if i is not None)

    def hparam(self, meta, name, default):
        return A.HParam(str(name), default, _tspan(self.file, name))

    def inputs(self, meta, *items):
        return tuple(i for i in items if i is not None)

    def tparam(self, meta, name, type_):
        return A.TParam(str(name), type_, _tspan(self.file, name))

    def body(self, meta, *stmts):
        return tuple(stmts)

    def type_pat(self, meta, dtype, *dims):
        if len(dims) == 1 and dims[0] is None:  # `f32` without brackets
            dims = ()
        return A.TypePat(str(dtype), tuple(d for d in dims if d is not None), self._span(meta))

    # --- statements --------------------------------------------------------------------
    def input_stmt(self, meta, name, type_):
        return A.InputStmt(self._span(meta), str(name), type_, "input")

    def label_stmt(self, meta, name, type_):
        return A.InputStmt(self._span(meta), str(name), type_, "label")

    def output_stmt(self, meta, name, value):
        return A.OutputStmt(self._span(meta), str(name), value)

    def loss_stmt(self, meta, value):
        return A.LossStmt(self._span(meta), value)

    def assign_stmt(self, meta, *parts):
        *names, value = parts
        return A.AssignStmt(self._span(meta), tuple(str(n) for n in names), value)

    def let_stmt(self, meta, *parts):
        *names, value = parts
        return A.AssignStmt(self._span(meta), tuple(str(n) for n in names), value, let=True)

    def param_stmt(self, meta, name, type_, init):
        return A.ParamStmt(self._span(meta), str(name), type_, init)

    def state_stmt(self, meta, name, type_, init):
        return A.ParamStmt(self._span(meta), str(name), type_, init, state=True)

    def update_stmt(self, meta, name, value):
        return A.UpdateStmt(self._span(meta), str(name), value)

    def assert_stmt(self, meta, cond, message):
        return A.AssertStmt(self._span(meta), cond, message)

    def return_stmt(self, meta, value):
        return A.ReturnStmt(self._span(meta), value)

    def if_stmt(self, meta, cond, then, orelse=None):
        return A.IfStmt(self._span(meta), cond, then, orelse or ())

    def if_else(self, meta, stmt):
        return (stmt,)

    # --- training section --------------------------------------------------------------
    def train_def(self, meta, name, *fields):
        return A.TrainDef(str(name) if name else None, tuple(fields), self._span(meta))

    def field(self, meta, name, *values):
        return A.Field(str(name), tuple(values), self._span(meta))

    def freeze_field(self, meta, *globs):
        return A.Field("freeze", tuple(_glob(g) for g in globs), self._span(meta))

    def load_field(self, meta, path, prefix=None):  # `_glob` is inlined: no placeholder
        return A.Field(
            "load", ((_unquote(path), _glob(prefix) if prefix else ""),), self._span(meta)
        )

    # --- expressions -------------------------------------------------------------------
    def name(self, meta, tok):
        return A.Name(_tspan(self.file, tok), str(tok))

    def attr(self, meta, obj, name):
        return A.Attr(self._span(meta), obj, str(name))

    def int_lit(self, meta, tok):
        digits = str(tok).replace("_", "").lstrip("0") or "0"
        if len(digits) > 19 or int(digits) > 2**63 - 1:
            raise SyntaxError_(
                f"the number {_short(str(tok))} is too large (more than 2**63 - 1)",
                _tspan(self.file, tok),
            )
        return A.Num(_tspan(self.file, tok), int(digits))

    def float_lit(self, meta, tok):
        return A.Num(_tspan(self.file, tok), float(str(tok).replace("_", "")))

    def str_lit(self, meta, tok):
        return A.Str(_tspan(self.file, tok), _unquote(tok))

    def true_lit(self, meta):
        return A.Const(self._span(meta), True)

    def false_lit(self, meta):
        return A.Const(self._span(meta), False)

    def none_lit(self, meta):
        return A.Const(self._span(meta), None)

    def list_lit(self, meta, *items):
        return A.ListLit(self._span(meta), tuple(i for i in items if i is not None))

    def ellipsis(self, meta, tok):
        return A.Ellipsis_(_tspan(self.file, tok))

    def unary(self, meta, op, operand):
        return A.Unary(self._span(meta), str(op), operand)

    def not_op(self, meta, operand):
        return A.Unary(self._span(meta), "not", operand)

    def binary(self, meta, left, op, right):
        return A.Binary(self._span(meta), str(op), left, right)

    def compare(self, meta, left, op, right):
        return A.Binary(self._span(meta), str(op), left, right)

    def and_op(self, meta, left, right):
        return A.Binary(self._span(meta), "and", left, right)

    def or_op(self, meta, left, right):
        return A.Binary(self._span(meta), "or", left, right)

    def args(self, meta, *items):
        pos, kws = [], []
        for it in items:
            if it is None:
                continue
            if isinstance(it, A.Keyword):
                kws.append(it)
            else:
                pos.append(it)
        return tuple(pos), tuple(kws)

    def kwarg(self, meta, name, value):
        return A.Keyword(str(name), value, _tspan(self.file, name))

    def call(self, meta, func, args):
        pos, kws = args
        return A.Call(self._span(meta), func, pos, kws)

    def pipe_target(self, meta, callee):
        return (callee, (), (), self._span(meta))

    def pipe_call(self, meta, callee, args):
        pos, kws = args
        return (callee, pos, kws, self._span(meta))

    def pipe(self, meta, value, target):
        callee, pos, kws, span = target
        return A.Call(span, callee, (value, *pos), kws, piped=True)

    def subscript(self, meta, obj, items):
        return A.Subscript(self._span(meta), obj, items)

    def subscripts(self, meta, *items):
        return tuple(i for i in items if i is not None)

    def slice(self, meta, start, stop, step):
        return A.Slice(self._span(meta), start, stop, step)


def _unquote(tok) -> str:
    s = str(tok)
    try:
        return pyast.literal_eval(s)
    except (ValueError, SyntaxError):
        return s[1:-1]


def _glob(tok) -> str:
    return _unquote(tok) if tok.type == "STRING" else str(tok)
