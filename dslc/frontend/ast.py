"""The syntax tree of a `.nn` file: frozen dataclasses, each with the Span it was parsed from."""

from __future__ import annotations

from dataclasses import dataclass, field

from dslc.errors import Span

# --- expressions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Expr:
    span: Span


@dataclass(frozen=True)
class Name(Expr):
    name: str


@dataclass(frozen=True)
class Attr(Expr):
    obj: Expr
    name: str


@dataclass(frozen=True)
class Num(Expr):
    value: int | float


@dataclass(frozen=True)
class Str(Expr):
    value: str


@dataclass(frozen=True)
class Const(Expr):
    """`true`, `false` or `none`."""

    value: bool | None


@dataclass(frozen=True)
class ListLit(Expr):
    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Unary(Expr):
    op: str  # '-', '+', 'not'
    operand: Expr


@dataclass(frozen=True)
class Binary(Expr):
    op: str  # + - * / // % @ ** == != < <= > >= and or
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Keyword:
    name: str
    value: Expr
    span: Span


@dataclass(frozen=True)
class Call(Expr):
    """`f(a, k = v)`; `a |> f(b)` is a Call with `piped=True` and `a` as first argument."""

    func: Expr
    args: tuple[Expr, ...]
    kwargs: tuple[Keyword, ...] = ()
    piped: bool = False


@dataclass(frozen=True)
class Ellipsis_(Expr):
    pass


@dataclass(frozen=True)
class Slice(Expr):
    start: Expr | None
    stop: Expr | None
    step: Expr | None


@dataclass(frozen=True)
class Subscript(Expr):
    obj: Expr
    items: tuple[Expr, ...]  # Expr, Slice or Ellipsis_


# --- types -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TypePat:
    """`f32[N, 64]`; `dims` holds expressions and Ellipsis_; `()` is a scalar."""

    dtype: str
    dims: tuple[Expr, ...]
    span: Span


# --- statements --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stmt:
    span: Span


@dataclass(frozen=True)
class InputStmt(Stmt):
    name: str
    type: TypePat
    role: str  # 'input' | 'label'


@dataclass(frozen=True)
class OutputStmt(Stmt):
    name: str
    value: Expr | None


@dataclass(frozen=True)
class LossStmt(Stmt):
    value: Expr


@dataclass(frozen=True)
class AssignStmt(Stmt):
    targets: tuple[str, ...]
    value: Expr
    let: bool = False


@dataclass(frozen=True)
class ParamStmt(Stmt):
    """`param W: f32[D, units] = uniform(-b, b)`; `state` for non-trainable running values."""

    name: str
    type: TypePat
    init: Expr
    state: bool = False


@dataclass(frozen=True)
class UpdateStmt(Stmt):
    name: str
    value: Expr


@dataclass(frozen=True)
class AssertStmt(Stmt):
    cond: Expr
    message: Expr | None


@dataclass(frozen=True)
class ReturnStmt(Stmt):
    value: Expr


@dataclass(frozen=True)
class IfStmt(Stmt):
    cond: Expr
    then: tuple[Stmt, ...]
    orelse: tuple[Stmt, ...]


# --- definitions -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HParam:
    name: str
    default: Expr | None
    span: Span


@dataclass(frozen=True)
class TParam:
    name: str
    type: TypePat
    span: Span


@dataclass(frozen=True)
class ModelDef:
    name: str
    hparams: tuple[HParam, ...]
    body: tuple[Stmt, ...]
    span: Span
    file: str = ""


@dataclass(frozen=True)
class BlockDef:
    name: str
    hparams: tuple[HParam, ...]
    inputs: tuple[TParam, ...]
    ret: TypePat | None
    body: tuple[Stmt, ...]
    span: Span
    file: str = ""
    builtin: bool = False  # one of dslc/layers/*.nn


@dataclass(frozen=True)
class Field:
    """`epochs 20`, `metrics accuracy, f1`, `freeze embed.*`, `load "w.safetensors" into enc`."""

    name: str
    values: tuple  # expressions; strings for freeze patterns; (path, prefix) for load
    span: Span


@dataclass(frozen=True)
class TrainDef:
    model: str | None
    fields: tuple[Field, ...]
    span: Span


@dataclass(frozen=True)
class Import:
    path: str
    alias: str | None
    span: Span


@dataclass(frozen=True)
class Module:
    """One parsed `.nn` file."""

    file: str
    imports: tuple[Import, ...] = ()
    models: tuple[ModelDef, ...] = ()
    blocks: tuple[BlockDef, ...] = ()
    trains: tuple[TrainDef, ...] = ()
    order: tuple = field(default=(), repr=False)  # every definition in source order


# --- printing back -----------------------------------------------------------------------------

_PREC = {"or": 1, "and": 2, "not": 3, "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4,
         "+": 5, "-": 5, "*": 6, "/": 6, "//": 6, "%": 6, "@": 6, "neg": 7, "**": 8}  # fmt: skip


def unparse(e, prec: int = 0) -> str:
    """An expression (or type pattern) as source text, for messages."""
    if e is None:
        return ""
    if isinstance(e, TypePat):
        if not e.dims:
            return e.dtype
        return f"{e.dtype}[" + ", ".join(unparse(d) for d in e.dims) + "]"
    if isinstance(e, Name):
        return e.name
    if isinstance(e, Attr):
        return f"{unparse(e.obj, 9)}.{e.name}"
    if isinstance(e, Num):
        return repr(e.value)
    if isinstance(e, Str):
        return repr(e.value)
    if isinstance(e, Const):
        return {True: "true", False: "false", None: "none"}[e.value]
    if isinstance(e, ListLit):
        return "[" + ", ".join(unparse(i) for i in e.items) + "]"
    if isinstance(e, Ellipsis_):
        return "..."
    if isinstance(e, Slice):
        s = unparse(e.start) + ":" + unparse(e.stop)
        return s + (":" + unparse(e.step) if e.step is not None else "")
    if isinstance(e, Subscript):
        return f"{unparse(e.obj, 9)}[" + ", ".join(unparse(i) for i in e.items) + "]"
    if isinstance(e, Unary):
        p = _PREC["not" if e.op == "not" else "neg"]
        sep = " " if e.op == "not" else ""
        text = f"{e.op}{sep}{unparse(e.operand, p)}"
        return f"({text})" if p < prec else text
    if isinstance(e, Binary):
        p = _PREC[e.op]
        text = f"{unparse(e.left, p)} {e.op} {unparse(e.right, p + 1)}"
        return f"({text})" if p < prec else text
    if isinstance(e, Call):
        args = list(e.args)
        head = ""
        if e.piped:
            head = unparse(args.pop(0), 1) + " |> "
        parts = [unparse(a) for a in args] + [f"{k.name} = {unparse(k.value)}" for k in e.kwargs]
        text = head + unparse(e.func, 9) + (f"({', '.join(parts)})" if parts or not e.piped else "")
        return f"({text})" if e.piped and prec > 0 else text
    return "?"
