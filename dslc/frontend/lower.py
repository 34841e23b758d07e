"""AST to IR: evaluates a model body at compile time, adding one graph node per primitive.

Everything that is not a tensor (hyper-parameters, derived values, sizes, `assert`, `if`) is
computed here; tensors become graph nodes built through `dslc.ir.builder.Builder`, each with
the span of the expression that made it and the dotted scope of the layer it belongs to.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any

from dslc.errors import (
    ArgumentError,
    AssertionFailed,
    DslcError,
    DTypeError,
    InternalError,
    NameError_,
    ShapeError,
    Span,
    ValueError_,
)
from dslc.frontend import ast as A
from dslc.frontend import builtins as B
from dslc.frontend.resolve import ModuleNS
from dslc.frontend.values import (
    BlockValue,
    Builtin,
    InitSpec,
    Layer,
    Namespace,
    Poison,
    Step,
    Tensor,
    chain_flags,
    chain_text,
    kind_of,
    show,
)
from dslc.ir.builder import Builder
from dslc.ir.dims import Dim
from dslc.ir.graph import Graph
from dslc.ir.types import DTYPES, FLOAT_DTYPES, INT_DTYPES, TensorType

MAX_DEPTH = 64
MAX_NODES = 50_000  # a lowered graph larger than this is a mistake, not a model
MAX_BLOCK_CALLS = 5_000  # block applications in one lowering (about 10x a 48-layer GPT)
DTYPE_PATTERNS = {"float": FLOAT_DTYPES, "int": INT_DTYPES, "any": tuple(DTYPES)}


class _Poisoned(Exception):
    """A value from a statement that already failed was used: stay silent."""


class _Return(Exception):
    def __init__(self, value, span):
        self.value = value
        self.span = span


@dataclass
class Ctx:
    """One activation: the model body or one block call."""

    env: dict[str, Any]
    scope: str
    ns: ModuleNS
    fixed: set[str] = field(default_factory=set)  # hyper-parameters: not assignable
    used: dict[str, int] = field(default_factory=dict)  # child scope names taken
    builtin: bool = False  # inside a built-in layer: nodes take the call site's span
    site: Span | None = None  # that call site
    params: dict[str, tuple[str, Tensor, bool]] = field(default_factory=dict)  # local -> full
    stmt_name: str | None = None  # scope name offered by the statement being executed
    block: A.BlockDef | None = None
    depth: int = 0
    ellipsis: tuple | None = None  # dims matched by `...` in the signature

    def child_scope(self, name: str) -> str:
        return f"{self.scope}.{name}" if self.scope else name

    def where(self, span: Span) -> Span:
        return self.site if self.builtin and self.site is not None else span


class Lowerer:
    """Builds one graph (train or inference mode) for one model."""

    def __init__(self, training: bool):
        self.training = training
        self.block_calls = 0
        self.graph = Graph()
        self.b = Builder(self.graph)
        self.errors: list[DslcError] = []
        self.loss_span: Span | None = None
        self.loss_first_arg: int | None = None

    # --- models ------------------------------------------------------------------------
    def lower_model(self, mdef: A.ModelDef, ns: ModuleNS, hparams: dict[str, Any]) -> Graph:
        ctx = Ctx(env=dict(hparams), scope="", ns=ns, fixed=set(hparams))
        self.model_ctx = ctx
        for stmt in mdef.body:
            self.top_stmt(stmt, ctx)
        return self.graph

    def top_stmt(self, stmt: A.Stmt, ctx: Ctx) -> None:
        """Run one statement of a model body; an error poisons what it would have defined."""
        try:
            self.stmt(stmt, ctx)
        except _Poisoned:
            self._poison(stmt, ctx)
        except DslcError as e:
            self.errors.append(e)
            if not getattr(e, "keep_names", False):
                self._poison(stmt, ctx)
        except _Return as r:
            self.errors.append(
                NameError_(
                    "`return` is for blocks; a model names its results with `output`", r.span
                )
            )

    def _poison(self, stmt: A.Stmt, ctx: Ctx) -> None:
        for name in _defines(stmt):
            ctx.env[name] = Poison(name)

    # --- statements --------------------------------------------------------------------
    def stmt(self, s: A.Stmt, ctx: Ctx) -> None:
        method = _STMTS.get(type(s))
        if method is None:  # pragma: no cover - the parser makes only these
            raise InternalError(f"unknown statement {type(s).__name__}", s.span)
        method(self, s, ctx)

    def s_input(self, s: A.InputStmt, ctx: Ctx) -> None:
        if ctx.block is not None:
            raise NameError_(
                f"`{s.role}` declares a model input; a block takes its tensors in its signature",
                s.span,
            )
        if s.name in self.graph.inputs:
            raise _dup(f"input `{s.name}` is declared twice", s.span)
        self._check_new(s.name, s.span, ctx)
        t = self.declared_type(s.type, ctx, what=f"input `{s.name}`")
        with self.b.at(span=s.span, scope=""):
            nid = self.b.input(s.name, t, s.role)
        ctx.env[s.name] = Tensor(nid, t, (Step(s.name, t),))

    def s_output(self, s: A.OutputStmt, ctx: Ctx) -> None:
        if ctx.block is not None:
            raise NameError_("`output` belongs in a model; a block ends with `return`", s.span)
        if s.name == "loss":
            raise NameError_("`loss` is reserved for the `loss` statement", s.span)
        if s.name in self.graph.outputs:
            raise _dup(f"output `{s.name}` is declared twice", s.span)
        if s.value is None:
            v = self.lookup(s.name, s.span, ctx)
        else:
            ctx.stmt_name = self.name_for(s.value, s.name, ctx)
            try:
                v = self.ev(s.value, ctx)
            finally:
                ctx.stmt_name = None
        t = self.need_tensor(v, s.value.span if s.value else s.span, "an output")
        self.graph.outputs[s.name] = t.nid
        ctx.env[s.name] = t

    def s_loss(self, s: A.LossStmt, ctx: Ctx) -> None:
        if ctx.block is not None:
            raise NameError_("`loss` belongs in a model, not in a block", s.span)
        if "loss" in self.graph.outputs:
            raise _dup("a model has one `loss`; this is the second", s.span)
        if isinstance(s.value, A.Call):
            func, args, kwargs, kwspans = self.call_parts(s.value, ctx)
            if args and isinstance(args[0], Tensor):
                self.loss_first_arg = args[0].nid
            v = self.apply(func, args, kwargs, ctx, s.value, _label(s.value.func), kwspans)
        else:
            v = self.ev(s.value, ctx)
        t = self.need_tensor(v, s.value.span, "the loss")
        if t.type.rank != 0:
            raise ShapeError(
                f"the loss must be a scalar, got {t.type}",
                s.value.span,
                notes=[chain_text(t)],
                hint="reduce it, e.g. `loss mean(...)`",
            )
        if not t.type.is_float:
            raise DTypeError(f"the loss must be a float, got {t.type}", s.value.span)
        self.graph.outputs["loss"] = t.nid
        self.loss_span = s.span

    def s_assign(self, s: A.AssignStmt, ctx: Ctx) -> None:
        for name in s.targets:
            if name in ctx.fixed:
                err = NameError_(
                    f"`{name}` is a hyper-parameter and cannot be assigned",
                    s.span,
                    hint=f"give the derived value a new name: `let {name}2 = ...`",
                )
                err.keep_names = True
                raise err
            if s.let:
                self._check_new(name, s.span, ctx)
        if len(s.targets) == 1:
            ctx.stmt_name = self.name_for(s.value, s.targets[0], ctx)
        try:
            v = self.ev(s.value, ctx)
        finally:
            ctx.stmt_name = None
        if isinstance(v, Poison):
            raise _Poisoned()
        if len(s.targets) == 1:
            ctx.env[s.targets[0]] = v
            return
        if not isinstance(v, list) or len(v) != len(s.targets):
            n = len(v) if isinstance(v, list) else 1
            raise ValueError_(
                f"cannot unpack {kind_of(v)} into {len(s.targets)} names"
                + (f" (it has {n} items)" if isinstance(v, list) else ""),
                s.value.span,
            )
        for name, item in zip(s.targets, v):
            ctx.env[name] = item

    def name_for(self, value: A.Expr, target: str, ctx: Ctx) -> str | None:
        """The statement's target names its layer when exactly one call owns parameters."""
        return target if _count_param_calls(value, self, ctx) == 1 else None

    def _check_new(self, name: str, span: Span, ctx: Ctx) -> None:
        if name in ctx.env and not isinstance(ctx.env[name], Poison):
            err = NameError_(
                f"`{name}` is already defined",
                span,
                hint="use a plain assignment `name = ...` to rebind it",
            )
            err.keep_names = True  # the earlier definition stays valid
            raise err

    def s_param(self, s: A.ParamStmt, ctx: Ctx) -> None:
        kw = "state" if s.state else "param"
        if s.name in ctx.params:
            raise _dup(f"{kw} `{s.name}` is declared twice in this block", s.span)
        self._check_new(s.name, s.span, ctx)
        t = self.declared_type(s.type, ctx, what=f"{kw} `{s.name}`", concrete=True)
        init = self.ev_init(s.init, ctx, t)
        full = ctx.child_scope(s.name)
        if full in self.graph.params:
            raise NameError_(f"parameter `{full}` is declared twice", ctx.where(s.span))
        with self.b.at(span=ctx.where(s.span), scope=ctx.scope):
            nid = self.b.param(full, t, init.name, init.args, trainable=not s.state)
        tensor = Tensor(nid, t, (Step(full, t),))
        ctx.params[s.name] = (full, tensor, s.state)
        ctx.env[s.name] = tensor

    def s_update(self, s: A.UpdateStmt, ctx: Ctx) -> None:
        entry = ctx.params.get(s.name)
        if entry is None or not entry[2]:
            raise NameError_(
                f"`update` needs a `state` declared in this block; `{s.name}` is not one",
                ctx.where(s.span),
            )
        if not self.training:
            return
        full, tensor, _ = entry
        v = self.need_tensor(self.ev(s.value, ctx), s.value.span, "an update")
        if v.type != tensor.type:
            raise ShapeError(
                f"the new value of `{s.name}` is {v.type} but the state is {tensor.type}",
                ctx.where(s.span),
            )
        if full in self.graph.updates:
            raise NameError_(f"state `{s.name}` is updated twice", ctx.where(s.span))
        self.graph.updates[full] = v.nid

    def s_assert(self, s: A.AssertStmt, ctx: Ctx) -> None:
        cond = self.ev(s.cond, ctx)
        ok = self.truth(cond, s.cond.span, "`assert`")
        if ok:
            return
        if s.message is not None:
            msg = self.ev(s.message, ctx)
            msg = msg if isinstance(msg, str) else show(msg)
        else:
            msg = f"assert {A.unparse(s.cond)}"
        notes = []
        for name in sorted(_names_in(s.cond)):
            v = ctx.env.get(name)
            if isinstance(v, int | float | Dim | str | list) and not isinstance(v, bool):
                notes.append(f"{name} = {show(v)}")
        where = ctx.where(s.span)
        cls = AssertionFailed
        if ctx.builtin and ctx.block is not None:
            msg = f"{ctx.block.name}: {msg}"
            names = _names_in(s.cond)
            if names & {"dtype", "is_float"}:
                cls = DTypeError
            elif names & {"shape", "rank"}:
                cls = ShapeError
            else:
                cls = ValueError_
            notes = [] if cls is not ValueError_ else notes
        raise cls(msg, where, notes=notes)

    def s_if(self, s: A.IfStmt, ctx: Ctx) -> None:
        cond = self.truth(self.ev(s.cond, ctx), s.cond.span, "`if`")
        for st in s.then if cond else s.orelse:
            self.stmt(st, ctx)

    def s_return(self, s: A.ReturnStmt, ctx: Ctx) -> None:
        if ctx.block is None:
            raise NameError_(
                "`return` is for blocks; a model names its results with `output`", s.span
            )
        raise _Return(self.ev(s.value, ctx), s.span)

    def truth(self, v, span: Span, what: str) -> bool:
        if isinstance(v, Poison):
            raise _Poisoned()
        if isinstance(v, bool):
            return v
        if isinstance(v, Tensor):
            raise ValueError_(
                f"{what} needs a condition known at compile time, got {kind_of(v)}", span
            )
        if isinstance(v, Dim):
            raise ValueError_(f"{what}: the condition depends on the symbolic size {v}", span)
        if isinstance(v, int | float | str | list) or v is None:
            return bool(v)
        raise ValueError_(f"{what} needs a condition, got {kind_of(v)}", span)

    # --- names -------------------------------------------------------------------------
    def lookup(self, name: str, span: Span, ctx: Ctx):
        if name in ctx.env:
            v = ctx.env[name]
            if isinstance(v, Poison):
                raise _Poisoned()
            return v
        found = ctx.ns.lookup(name)
        if found is not None:
            if isinstance(found, ModuleNS):
                return Namespace(name, found)
            bdef, ns = found
            return BlockValue(bdef, ns)
        if name == "training":
            return self.training
        v = B.lookup(name)
        if v is not None:
            return v
        raise self.unknown(name, span, ctx)

    def unknown(self, name: str, span: Span, ctx: Ctx) -> NameError_:
        cands = set(ctx.env) | ctx.ns.visible_names() | B.names() | {"training"}
        close = difflib.get_close_matches(name, sorted(cands), n=1, cutoff=0.6)
        hint = f"did you mean `{close[0]}`?" if close else None
        if name in DTYPES or name in DTYPE_PATTERNS:
            hint = f"`{name}` is an element type; it is written before a shape: `{name}[N, 4]`"
        return NameError_(f"unknown name `{name}`", span, hint=hint)

    # --- expressions -------------------------------------------------------------------
    def ev(self, e: A.Expr, ctx: Ctx):
        return _EXPRS[type(e)](self, e, ctx)

    def e_name(self, e: A.Name, ctx: Ctx):
        return self.lookup(e.name, e.span, ctx)

    def e_num(self, e: A.Num, ctx: Ctx):
        return e.value

    def e_str(self, e: A.Str, ctx: Ctx):
        return e.value

    def e_const(self, e: A.Const, ctx: Ctx):
        return e.value

    def e_list(self, e: A.ListLit, ctx: Ctx):
        return [self.ev(i, ctx) for i in e.items]

    def e_ellipsis(self, e, ctx):
        raise ValueError_("`...` can only be used in shapes and subscripts", e.span)

    def e_slice(self, e, ctx):
        raise ValueError_("a slice `a:b` can only be used inside `[...]`", e.span)

    def e_attr(self, e: A.Attr, ctx: Ctx):
        obj = self.ev(e.obj, ctx)
        if isinstance(obj, Namespace):
            return self.member(obj, e.name, e.span)
        if isinstance(obj, Tensor):
            if e.name == "shape":
                return [_norm(d) for d in obj.type.shape]
            if e.name == "dtype":
                return obj.type.dtype
            if e.name == "rank":
                return obj.type.rank
            raise NameError_(
                f"a tensor has no attribute `{e.name}`; it has `shape`, `dtype` and `rank`",
                e.span,
            )
        raise NameError_(f"{kind_of(obj)} has no attribute `{e.name}`", e.span)

    def member(self, ns: Namespace, name: str, span: Span):
        if ns.kind == "prim":
            from dslc.ops import REGISTRY

            if name in REGISTRY:
                return B.prim_function(name)
            close = difflib.get_close_matches(name, sorted(REGISTRY), n=1)
            raise NameError_(
                f"there is no primitive `{name}`",
                span,
                hint=f"did you mean `prim.{close[0]}`?" if close else None,
            )
        mod: ModuleNS = ns.members
        if name in mod.blocks:
            return BlockValue(mod.blocks[name], mod)
        close = difflib.get_close_matches(name, sorted(mod.blocks), n=1)
        raise NameError_(
            f"`{ns.name}` ({mod.path}) defines no block `{name}`",
            span,
            hint=f"did you mean `{ns.name}.{close[0]}`?" if close else None,
        )

    def e_unary(self, e: A.Unary, ctx: Ctx):
        v = self.ev(e.operand, ctx)
        if e.op == "not":
            if isinstance(v, Tensor):
                return self.tensor_op(ctx, e.span, "logical_not", [v], label="not")
            return not self.truth(v, e.span, "`not`")
        if e.op == "+":
            return v
        if isinstance(v, Tensor):
            return self.tensor_op(ctx, e.span, "neg", [v], label="-")
        if isinstance(v, int | float | Dim) and not isinstance(v, bool):
            return _norm(-v)
        raise ValueError_(f"cannot negate {kind_of(v)}", e.span)

    def e_binary(self, e: A.Binary, ctx: Ctx):
        if e.op in ("and", "or"):
            left = self.ev(e.left, ctx)
            if isinstance(left, Tensor):
                right = self.ev(e.right, ctx)
                prim = "logical_and" if e.op == "and" else "logical_or"
                right = self.as_tensor(right, left, ctx, e.span)
                return self.tensor_op(ctx, e.span, prim, [left, right], label=e.op)
            lv = self.truth(left, e.left.span, f"`{e.op}`")
            if e.op == "and" and not lv:
                return False
            if e.op == "or" and lv:
                return True
            return self.truth(self.ev(e.right, ctx), e.right.span, f"`{e.op}`")
        left = self.ev(e.left, ctx)
        right = self.ev(e.right, ctx)
        if isinstance(left, Tensor) or isinstance(right, Tensor):
            return B.tensor_binary(self, ctx, e, left, right)
        return B.const_binary(e, left, right)

    def e_subscript(self, e: A.Subscript, ctx: Ctx):
        obj = self.ev(e.obj, ctx)
        items = []
        for it in e.items:
            if isinstance(it, A.Ellipsis_):
                items.append(Ellipsis)
            elif isinstance(it, A.Slice):
                items.append(
                    slice(
                        *(
                            None if p is None else self.size_value(self.ev(p, ctx), p.span)
                            for p in (it.start, it.stop, it.step)
                        )
                    )
                )
            else:
                items.append(self.ev(it, ctx))
        return B.subscript(self, ctx, e, obj, items)

    def size_value(self, v, span: Span):
        """An int or a Dim (a slice bound, an index)."""
        if isinstance(v, Poison):
            raise _Poisoned()
        if isinstance(v, bool) or not isinstance(v, int | float | Dim):
            raise ValueError_(f"expected a whole number, got {kind_of(v)}", span)
        if isinstance(v, float):
            if not v.is_integer():
                raise ValueError_(f"expected a whole number, got {v}", span)
            return int(v)
        return _norm(v)

    # --- calls -------------------------------------------------------------------------
    def e_call(self, e: A.Call, ctx: Ctx):
        func, args, kwargs, kwspans = self.call_parts(e, ctx)
        return self.apply(func, args, kwargs, ctx, e, _label(e.func), kwspans)

    def call_parts(self, e: A.Call, ctx: Ctx):
        """The callee and the evaluated arguments of a call."""
        func = self.ev(e.func, ctx)
        args = [self.ev(a, ctx) for a in e.args]
        kwargs: dict[str, Any] = {}
        kwspans: dict[str, Span] = {}
        for kw in e.kwargs:
            if kw.name in kwargs:
                raise ArgumentError(f"keyword `{kw.name}` is given twice", kw.span)
            kwargs[kw.name] = self.ev(kw.value, ctx)
            kwspans[kw.name] = kw.span
        for v in (*args, *kwargs.values()):
            if isinstance(v, Poison):
                raise _Poisoned()
        return func, args, kwargs, kwspans

    def apply(self, func, args, kwargs, ctx: Ctx, e: A.Call, label: str, kwspans=None):
        kwspans = kwspans or {}
        if isinstance(func, Builtin):
            if func.name == "repeat":
                return self.call_repeat(args, kwargs, ctx, e)
            if func.name.startswith("prim."):
                return B.call_prim(self, ctx, e, func, args, kwargs)
            return B.call_builtin(self, ctx, e, func, args, kwargs, kwspans)
        if isinstance(func, BlockValue):
            return self.call_block_value(func, args, kwargs, ctx, e, label, kwspans)
        if isinstance(func, Layer):
            if kwargs or any(not isinstance(a, Tensor) for a in args):
                raise ArgumentError(
                    f"`{label}` is a layer whose arguments are already given; "
                    "apply it to tensors only",
                    e.span,
                )
            return self.apply_layer(func, args, ctx, e.span, label)
        hint = None
        name = label.rsplit(".", 1)[-1]
        if ctx.ns.lookup(name) is not None or B.lookup(name) is not None:
            hint = f"the local name `{name}` hides the built-in `{name}`; rename the local one"
        raise ValueError_(f"`{label}` is {kind_of(func)}, not a function", e.func.span, hint=hint)

    def call_repeat(self, args, kwargs, ctx: Ctx, e: A.Call):
        """`x |> repeat(n, Block(args), name = "layers")`."""
        for k in kwargs:
            if k not in ("n", "layer", "name"):
                raise ArgumentError(
                    f"`repeat` has no argument `{k}`; it takes n, layer, name", e.span
                )
        if not args or not isinstance(args[0], Tensor):
            raise ArgumentError(
                "`repeat(n, layer)` needs an input: write `x |> repeat(n, Block(...))`", e.span
            )
        x, rest = args[0], list(args[1:])
        count_expr = e.args[1] if len(e.args) > 1 else None
        names = ["n", "layer"]
        vals = dict(zip(names, rest))
        if len(rest) > 2:
            raise ArgumentError(f"`repeat` takes n and a layer, got {len(rest)} arguments", e.span)
        for k in ("n", "layer"):
            if k in kwargs:
                if k in vals:
                    raise ArgumentError(f"`repeat` got `{k}` twice", e.span)
                vals[k] = kwargs[k]
        for k in ("n", "layer"):
            if k not in vals:
                raise ArgumentError(f"`repeat` is missing argument `{k}`", e.span)
        if "n" in kwargs:
            count_expr = next((kw.value for kw in e.kwargs if kw.name == "n"), None)
        return B.call_repeat(
            self, ctx, e, x, vals["n"], vals["layer"], kwargs.get("name"), count_expr
        )

    def call_block_value(self, bv: BlockValue, args, kwargs, ctx, e: A.Call, label, kwspans):
        bdef = bv.bdef
        n_in = len(bdef.inputs)
        in_names = [p.name for p in bdef.inputs]
        hp_names = [p.name for p in bdef.hparams]
        tensors: dict[str, Any] = {}
        params: dict[str, Any] = {}
        i = 0
        while i < len(args) and i < n_in and isinstance(args[i], Tensor):
            tensors[in_names[i]] = args[i]
            i += 1
        rest = args[i:]
        if len(rest) > len(hp_names):
            extra = rest[len(hp_names)]
            raise ArgumentError(
                f"`{label}` takes {_count(n_in, 'tensor')} and {_count(len(hp_names), 'argument')}"
                f", got {len(args)} positional; the extra one is {kind_of(extra)}",
                e.span,
                notes=[f"signature: {signature(bdef)}"],
            )
        for name, v in zip(hp_names, rest):
            params[name] = v
        scope_name = None
        for k, v in kwargs.items():
            span = kwspans.get(k, e.span)
            if k == "name":
                if not isinstance(v, str) or not v.replace("_", "a").isalnum():
                    raise ArgumentError('`name` must be a string like "attn"', span)
                scope_name = v
            elif k in in_names:
                if k in tensors:
                    raise ArgumentError(f"`{label}` got tensor `{k}` twice", span)
                tensors[k] = v
            elif k in hp_names:
                if k in params:
                    raise ArgumentError(f"`{label}` got argument `{k}` twice", span)
                params[k] = v
            else:
                close = difflib.get_close_matches(k, hp_names + in_names, n=1)
                raise ArgumentError(
                    f"`{label}` has no argument `{k}`",
                    span,
                    notes=[f"signature: {signature(bdef)}"],
                    hint=f"did you mean `{close[0]}`?" if close else None,
                )
        if n_in and not tensors:
            # a layer: arguments bound now, tensors supplied later (`repeat`, `|>`)
            missing = [p.name for p in bdef.hparams if p.default is None and p.name not in params]
            if missing:
                raise ArgumentError(
                    f"`{label}` is missing argument `{missing[0]}`",
                    e.span,
                    notes=[f"signature: {signature(bdef)}"],
                )
            return Layer(bv, tuple(params.items()), label, e.span, scope_name)
        missing_t = [n for n in in_names if n not in tensors]
        if missing_t:
            raise ArgumentError(
                f"`{label}` is missing its tensor input `{missing_t[0]}`",
                e.span,
                notes=[f"signature: {signature(bdef)}"],
            )
        for k, v in tensors.items():
            if not isinstance(v, Tensor):
                raise ArgumentError(
                    f"`{label}`: input `{k}` must be a tensor, got {kind_of(v)}", e.span
                )
        name = self.scope_name_for(bv, ctx, label, scope_name, e.span)
        return self.run_block(bv, [tensors[n] for n in in_names], params, ctx, e.span, label, name)

    def apply_layer(self, layer: Layer, tensors: list, ctx: Ctx, span: Span, label: str):
        bdef = layer.block.bdef
        if len(tensors) != len(bdef.inputs):
            raise ArgumentError(
                f"layer `{layer.label}` takes {_count(len(bdef.inputs), 'tensor')}, "
                f"got {len(tensors)}",
                span,
            )
        name = self.scope_name_for(layer.block, ctx, label, layer.scope_name, span)
        return self.run_block(
            layer.block, tensors, dict(layer.params), ctx, span, layer.label, name
        )

    def scope_name_for(self, bv: BlockValue, ctx: Ctx, label: str, explicit, span) -> str:
        """The scope of a block call; see docs/language.md, "Parameter names"."""
        if explicit is not None:
            if explicit in ctx.used:
                raise NameError_(f"layer name `{explicit}` is used twice here", span)
            ctx.used[explicit] = 1
            return explicit
        if ctx.stmt_name is not None and B.owns_params(bv):
            name, ctx.stmt_name = ctx.stmt_name, None
        else:
            name = label.rsplit(".", 1)[-1]
        return self.unique(name, ctx)

    def unique(self, name: str, ctx: Ctx) -> str:
        if name not in ctx.used:
            ctx.used[name] = 1
            return name
        n = ctx.used[name]
        while f"{name}_{n}" in ctx.used:
            n += 1
        ctx.used[name] = n + 1
        ctx.used[f"{name}_{n}"] = 1
        return f"{name}_{n}"

    def run_block(self, bv: BlockValue, tensors, params, ctx: Ctx, span, label, scope_name):
        bdef = bv.bdef
        if ctx.depth >= MAX_DEPTH:
            raise ValueError_(
                f"blocks nest more than {MAX_DEPTH} deep at `{label}`: does a block call itself?",
                span,
            )
        self.block_calls += 1
        if self.block_calls > MAX_BLOCK_CALLS:
            raise ValueError_(
                f"the model applies blocks more than {MAX_BLOCK_CALLS:,} times (at `{label}`)",
                span,
                hint="is a `repeat` count or a block's recursion far larger than meant?",
            )
        builtin = ctx.builtin or bdef.builtin
        inner = Ctx(
            env={},
            scope=ctx.child_scope(scope_name),
            ns=bv.ns,
            fixed=set(),
            builtin=builtin,
            site=ctx.site if ctx.builtin else (span if bdef.builtin else None),
            block=bdef,
            depth=ctx.depth + 1,
        )
        site = inner.where(span)
        # hyper-parameters, defaults evaluated in order (a default may use earlier ones)
        for hp in bdef.hparams:
            if hp.name in params:
                inner.env[hp.name] = params[hp.name]
            elif hp.default is not None:
                inner.env[hp.name] = self.ev(hp.default, inner)
            else:
                raise ArgumentError(
                    f"`{label}` is missing argument `{hp.name}`",
                    span,
                    notes=[f"signature: {signature(bdef)}"],
                )
            inner.fixed.add(hp.name)
        # tensor inputs: unify each with its declared type
        for tp, t in zip(bdef.inputs, tensors):
            if not isinstance(t, Tensor):  # `3 |> repeat(2, B(...))`, `3 |> layer`
                raise ArgumentError(
                    f"`{label}`: input `{tp.name}` must be a tensor, got {kind_of(t)}", span
                )
            self.unify(tp.type, t, inner, f"`{label}` expects `{tp.name}` to be", span)
            inner.env[tp.name] = t
        try:
            for st in bdef.body:
                self.stmt(st, inner)
        except _Return as r:
            result = r.value
            ret_span = r.span
        except DslcError as err:
            if bdef.builtin and not ctx.builtin and isinstance(err, ShapeError | DTypeError):
                if not err.notes:
                    err.notes = [chain_text(t) for t in tensors]
                err.hint = err.hint or _hint_for(tensors)
            if not builtin and span is not None and not any("called from" in n for n in err.notes):
                err.notes.append(f"in block `{bdef.name}`, called from {span}")
            raise
        else:
            raise ValueError_(f"block `{bdef.name}` ends without `return`", bdef.span)
        if isinstance(result, Poison):
            raise _Poisoned()
        if bdef.ret is not None:
            t = self.need_tensor(result, inner.where(ret_span), f"the result of `{bdef.name}`")
            try:
                self.unify(bdef.ret, t, inner, f"`{bdef.name}` declares it returns", None, True)
            except DslcError as err:
                err.span = site if builtin else ret_span
                raise
        if isinstance(result, Tensor) and tensors:
            first = tensors[0]
            flag = ""
            if bdef.name == "dense" and bdef.builtin and first.type.rank == 4:
                flag = "dense-on-image"
            result = first.then(label, result.nid, result.type, flag=flag, line=site.line)
        return result

    # --- types and unification ---------------------------------------------------------
    def declared_type(self, pat: A.TypePat, ctx: Ctx, what: str, concrete=False) -> TensorType:
        """The type of an input or a parameter: unknown names become symbols (inputs only)."""
        if pat.dtype not in DTYPES:
            raise self._bad_dtype(pat, concrete_only=True)
        dims = []
        for d in pat.dims:
            if isinstance(d, A.Ellipsis_):
                raise ShapeError(f"`...` is for block signatures; {what} needs every size", d.span)
            if isinstance(d, A.Name) and d.name not in ctx.env and ctx.ns.lookup(d.name) is None:
                if concrete:
                    raise self.unknown(d.name, d.span, ctx)
                ctx.env[d.name] = Dim.sym(d.name)
                dims.append(Dim.sym(d.name))
                continue
            v = self.size_value(self.ev(d, ctx), d.span)
            if isinstance(v, Dim) and concrete:
                raise ShapeError(
                    f"the shape of {what} must be known at compile time, but "
                    f"`{A.unparse(d)}` is the symbolic size {v}",
                    ctx.where(d.span),
                    hint="parameter sizes come from hyper-parameters or from fixed input sizes",
                )
            if isinstance(v, int) and v < 0:
                raise ShapeError(f"negative size {v} in {what}", ctx.where(d.span))
            dims.append(v)
        return TensorType(tuple(dims), pat.dtype)

    def _bad_dtype(self, pat: A.TypePat, concrete_only=False) -> DslcError:
        names = list(DTYPES) + ([] if concrete_only else list(DTYPE_PATTERNS))
        close = difflib.get_close_matches(pat.dtype, names, n=1)
        return DTypeError(
            f"unknown element type `{pat.dtype}`; expected one of {', '.join(names)}",
            pat.span,
            hint=f"did you mean `{close[0]}`?" if close else None,
        )

    def unify(self, pat, t: Tensor, ctx: Ctx, prefix: str, span, check_ellipsis=False):
        """Match a tensor against a signature type, binding pattern names in `ctx`."""
        if pat.dtype in DTYPES:
            ok = t.type.dtype == pat.dtype
        elif pat.dtype in DTYPE_PATTERNS:
            ok = t.type.dtype in DTYPE_PATTERNS[pat.dtype]
        else:
            raise self._bad_dtype(pat)
        pat_text = A.unparse(pat)
        where = ctx.where(span) if span is not None else None

        def fail(msg_tail: str, cls=ShapeError):
            what = prefix.split("`")[1]
            if check_ellipsis:
                notes = [chain_text(t) + f", returned by {what} which declares {pat_text}"]
            else:
                notes = [chain_text(t) + f" -> {what} expects {pat_text}"]
            known = [
                f"{n} = {show(ctx.env[n])}"
                for n in sorted(_names_in_pat(pat))
                if n in ctx.env and n in ctx.fixed
            ]
            if known:
                notes.append("where " + ", ".join(known))
            hint = _hint_for([t])
            return cls(
                f"{prefix} {pat_text}, got {t.type}{msg_tail}", where, notes=notes, hint=hint
            )

        if not ok:
            raise fail("", DTypeError)
        dims = pat.dims
        shape = tuple(_norm(d) for d in t.type.shape)
        ell = [i for i, d in enumerate(dims) if isinstance(d, A.Ellipsis_)]
        if len(ell) > 1:
            raise ShapeError("a type may contain `...` only once", pat.span)
        if ell:
            k = ell[0]
            before, after = dims[:k], dims[k + 1 :]
            if len(shape) < len(before) + len(after):
                raise fail(f": rank {len(shape)} is less than {len(before) + len(after)}")
            mid = shape[len(before) : len(shape) - len(after)]
            if check_ellipsis and ctx.ellipsis is not None and tuple(ctx.ellipsis) != tuple(mid):
                raise fail(
                    f": `...` is {_shape_text(mid)} here but {_shape_text(ctx.ellipsis)} "
                    "for the input"
                )
            if ctx.ellipsis is None:
                ctx.ellipsis = mid
            pairs = list(zip(before, shape[: len(before)])) + list(
                zip(after, shape[len(shape) - len(after) :])
            )
        else:
            if len(dims) != len(shape):
                raise fail(f": rank {len(shape)} instead of {len(dims)}")
            pairs = list(zip(dims, shape))
        for dp, actual in pairs:
            if isinstance(dp, A.Name) and dp.name not in ctx.env:
                found = ctx.ns.lookup(dp.name)
                if found is None and B.lookup(dp.name) is None:
                    ctx.env[dp.name] = actual
                    continue
            want = self.size_value(self.ev(dp, ctx), dp.span)
            if _norm(want) != actual:
                raise fail(f": {A.unparse(dp)} is {want} but the tensor has {actual}")

    # --- tensors -----------------------------------------------------------------------
    def need_tensor(self, v, span: Span, what: str) -> Tensor:
        if isinstance(v, Poison):
            raise _Poisoned()
        if isinstance(v, Tensor):
            return v
        hint = None
        if isinstance(v, Layer):
            hint = f"`{v.label}` is a layer waiting for its input: write `x |> {v.label}(...)`"
        elif isinstance(v, BlockValue):
            hint = f"call it on a tensor: `x |> {v.name}`"
        raise ValueError_(f"{what} must be a tensor, got {kind_of(v)}", span, hint=hint)

    def as_tensor(self, v, like: Tensor, ctx: Ctx, span: Span) -> Tensor:
        if isinstance(v, Tensor):
            return v
        return B.scalar_tensor(self, ctx, span, v, like.type.dtype)

    def op(self, ctx: Ctx, span: Span, prim: str, inputs: list[Tensor], **attrs) -> int:
        """Add one primitive node; a shape/type error gets the operands' shape chains."""
        b = self.b
        b.span = ctx.where(span)
        b.scope = ctx.scope
        if len(self.graph) >= MAX_NODES:
            raise ValueError_(
                f"the model expands to more than {MAX_NODES:,} graph nodes", b.span,
                hint="is a `repeat` count or a block's recursion far larger than meant?",
            )  # fmt: skip
        try:
            return b.op(prim, *[t.nid for t in inputs], **attrs)
        except DslcError as err:
            err.span = b.span
            if isinstance(err, ShapeError | DTypeError):
                for t in inputs:
                    if len(t.hist) > 1:
                        err.notes.append(chain_text(t))
                if err.hint is None:
                    err.hint = _hint_for(inputs)
            raise

    def tensor_op(self, ctx, span, prim, inputs: list[Tensor], label=None, **attrs) -> Tensor:
        nid = self.op(ctx, span, prim, inputs, **attrs)
        t = self.graph.data(nid)["type"]
        return inputs[0].then(label or prim, nid, t) if inputs else Tensor(nid, t, ())

    # --- initialisers ------------------------------------------------------------------
    def ev_init(self, e: A.Expr, ctx: Ctx, t: TensorType) -> InitSpec:
        if isinstance(e, A.Name) and e.name in B.INITS:
            name, args, kwargs, span = e.name, [], {}, e.span
        elif isinstance(e, A.Call) and isinstance(e.func, A.Name) and e.func.name in B.INITS:
            name, span = e.func.name, e.span
            args = [self.ev(a, ctx) for a in e.args]
            kwargs = {k.name: self.ev(k.value, ctx) for k in e.kwargs}
        else:
            raise ValueError_(
                f"`{A.unparse(e)}` is not an initialiser; use one of {', '.join(B.INITS)}",
                e.span,
            )
        return B.make_init(name, args, kwargs, t, ctx.where(span))


# --- helpers ---------------------------------------------------------------------------------


def _dup(msg: str, span: Span) -> NameError_:
    """A duplicate definition: the first one stays valid, so later uses stay checked."""
    err = NameError_(msg, span)
    err.keep_names = True
    return err


def _norm(v):
    if isinstance(v, Dim) and v.is_const:
        return v.value
    return v


def _shape_text(dims) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _count(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _label(func: A.Expr) -> str:
    if isinstance(func, A.Name):
        return func.name
    if isinstance(func, A.Attr):
        return f"{_label(func.obj)}.{func.name}"
    return A.unparse(func)


def signature(bdef: A.BlockDef) -> str:
    hps = ", ".join(
        h.name + (f" = {A.unparse(h.default)}" if h.default is not None else "")
        for h in bdef.hparams
    )
    ins = ", ".join(f"{p.name}: {A.unparse(p.type)}" for p in bdef.inputs)
    ret = f" -> {A.unparse(bdef.ret)}" if bdef.ret is not None else ""
    return f"{bdef.name}({hps}) ({ins}){ret}"


def _hint_for(tensors: list[Tensor]) -> str | None:
    for t in tensors:
        for s in chain_flags(t):
            if s.flag == "dense-on-image":
                where = f" (line {s.line})" if s.line else ""
                return (
                    f"insert `flatten` before `dense`{where}: dense works on the last axis, "
                    "so a rank-4 image tensor must be flattened first"
                )
    return None


def _names_in(e) -> set[str]:
    out: set[str] = set()

    def walk(x):
        if isinstance(x, A.Name):
            out.add(x.name)
        elif isinstance(x, A.Expr):
            for v in x.__dict__.values():
                if isinstance(v, A.Expr):
                    walk(v)
                elif isinstance(v, tuple):
                    for i in v:
                        if isinstance(i, A.Expr):
                            walk(i)
                        elif isinstance(i, A.Keyword):
                            walk(i.value)

    walk(e)
    return out


def _names_in_pat(pat: A.TypePat) -> set[str]:
    out: set[str] = set()
    for d in pat.dims:
        out |= _names_in(d)
    return out


def _defines(stmt: A.Stmt) -> list[str]:
    if isinstance(stmt, A.AssignStmt):
        return list(stmt.targets)
    if isinstance(stmt, A.InputStmt | A.OutputStmt | A.ParamStmt):
        return [stmt.name]
    if isinstance(stmt, A.IfStmt):
        out = []
        for s in stmt.then + stmt.orelse:
            out += _defines(s)
        return out
    return []


def _count_param_calls(e: A.Expr, lw: Lowerer, ctx: Ctx) -> int:
    """Parameter-owning call sites in an expression (rule 3 of the scope names)."""
    n = 0
    if isinstance(e, A.Call):
        callee = None
        try:
            if isinstance(e.func, A.Name | A.Attr):
                callee = lw.ev(e.func, ctx)
        except (DslcError, _Poisoned):
            callee = None
        if isinstance(callee, Builtin) and callee.name == "repeat":
            return 1
        if isinstance(callee, BlockValue) and B.owns_params(callee):
            n += 1
        elif isinstance(callee, Layer) and B.owns_params(callee.block):
            n += 1
        for a in e.args:
            n += _count_param_calls(a, lw, ctx)
        for k in e.kwargs:
            n += _count_param_calls(k.value, lw, ctx)
        return n
    if isinstance(e, A.Expr):
        for v in e.__dict__.values():
            if isinstance(v, A.Expr):
                n += _count_param_calls(v, lw, ctx)
            elif isinstance(v, tuple):
                for i in v:
                    if isinstance(i, A.Expr):
                        n += _count_param_calls(i, lw, ctx)
    return n


_STMTS = {
    A.InputStmt: Lowerer.s_input,
    A.OutputStmt: Lowerer.s_output,
    A.LossStmt: Lowerer.s_loss,
    A.AssignStmt: Lowerer.s_assign,
    A.ParamStmt: Lowerer.s_param,
    A.UpdateStmt: Lowerer.s_update,
    A.AssertStmt: Lowerer.s_assert,
    A.IfStmt: Lowerer.s_if,
    A.ReturnStmt: Lowerer.s_return,
}

_EXPRS = {
    A.Name: Lowerer.e_name,
    A.Num: Lowerer.e_num,
    A.Str: Lowerer.e_str,
    A.Const: Lowerer.e_const,
    A.ListLit: Lowerer.e_list,
    A.Ellipsis_: Lowerer.e_ellipsis,
    A.Slice: Lowerer.e_slice,
    A.Attr: Lowerer.e_attr,
    A.Unary: Lowerer.e_unary,
    A.Binary: Lowerer.e_binary,
    A.Subscript: Lowerer.e_subscript,
    A.Call: Lowerer.e_call,
}
