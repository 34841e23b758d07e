"""Built-in functions of the language: tensor functions over primitives, compile-time helpers,
initialisers, operators on tensors, and subscripts. Layers live in dslc/layers/*.nn."""

from __future__ import annotations

import difflib
import functools
import math
from typing import Any

from dslc.errors import ArgumentError, DTypeError, ShapeError, Span, ValueError_
from dslc.frontend import ast as A
from dslc.frontend.values import (
    REQUIRED,
    BlockValue,
    Builtin,
    InitSpec,
    Layer,
    Namespace,
    Tensor,
    kind_of,
    show,
)
from dslc.ir.dims import Dim, numel
from dslc.ir.types import DTYPES, TensorType, is_float

# --- the table -------------------------------------------------------------------------------

_TABLE: dict[str, Builtin] = {}
CONSTANTS: dict[str, Any] = {
    "inf": math.inf,
    "pi": math.pi,
    "prim": Namespace("prim", None, "prim"),
}


# Bounds on what compile-time code may build, so that no program can hang the compiler:
MAX_INT = 2**63 - 1  # compile-time whole numbers fit an int64, as sizes must
MAX_LIST = 1_000_000  # elements of a compile-time list (`range`, `[0] * n`)
MAX_REPEAT = 10_000  # copies made by one `repeat`


def builtin(name: str, *sig, variadic: bool = False, doc: str = ""):
    """Register `fn(lw, ctx, span, **args)` under `name` with signature `sig`."""

    def deco(fn):
        _TABLE[name] = Builtin(name, tuple(sig), fn, doc, variadic)
        return fn

    return deco


def lookup(name: str):
    if name in _TABLE:
        return _TABLE[name]
    return CONSTANTS.get(name)


def names() -> set[str]:
    return set(_TABLE) | set(CONSTANTS)


R = REQUIRED


def call_builtin(lw, ctx, e: A.Call, fn: Builtin, args, kwargs, kwspans):
    """Bind arguments to `fn.sig` by position and keyword, then call it."""
    names_ = [n for n, _ in fn.sig]
    bound: dict[str, Any] = {}
    if fn.variadic and args and not (len(args) == 1 and isinstance(args[0], list)):
        n_fixed = 0
        bound[names_[0]] = list(args)
        args = []
        names_rest = names_[1:]
    else:
        n_fixed = len(names_)
        names_rest = names_
    del n_fixed
    if len(args) > len(names_rest):
        raise ArgumentError(
            f"`{fn.name}` takes at most {len(names_rest)} positional argument"
            f"{'' if len(names_rest) == 1 else 's'}, got {len(args)}",
            e.span,
            notes=[f"signature: {builtin_signature(fn)}"],
        )
    for n, v in zip(names_rest, args):
        bound[n] = v
    for k, v in kwargs.items():
        span = kwspans.get(k, e.span)
        if k not in names_:
            close = difflib.get_close_matches(k, names_, n=1)
            raise ArgumentError(
                f"`{fn.name}` has no argument `{k}`",
                span,
                notes=[f"signature: {builtin_signature(fn)}"],
                hint=f"did you mean `{close[0]}`?" if close else None,
            )
        if k in bound:
            raise ArgumentError(f"`{fn.name}` got argument `{k}` twice", span)
        bound[k] = v
    for n, default in fn.sig:
        if n not in bound:
            if default is REQUIRED:
                raise ArgumentError(
                    f"`{fn.name}` is missing argument `{n}`",
                    e.span,
                    notes=[f"signature: {builtin_signature(fn)}"],
                )
            bound[n] = default
    return fn.fn(lw, ctx, e, **bound)


def builtin_signature(fn: Builtin) -> str:
    parts = []
    for n, d in fn.sig:
        parts.append(n if d is REQUIRED else f"{n} = {show(d)}")
    return f"{fn.name}({', '.join(parts)})"


# --- argument helpers ------------------------------------------------------------------------


def _tensor(lw, v, e: A.Call, what: str, fn: str) -> Tensor:
    if isinstance(v, Tensor):
        return v
    raise ArgumentError(f"`{fn}`: `{what}` must be a tensor, got {kind_of(v)}", e.span)


def _int(v, e: A.Call, what: str, fn: str, allow_dim=False):
    if isinstance(v, Dim):
        if v.is_const:
            return v.value
        if allow_dim:
            return v
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if isinstance(v, int) and not isinstance(v, bool):
        if abs(v) > MAX_INT:
            raise ValueError_(f"`{fn}`: `{what}` is too large ({show(v)})", e.span)
        return v
    raise ArgumentError(f"`{fn}`: `{what}` must be a whole number, got {show(v)}", e.span)


def _num(v, e: A.Call, what: str, fn: str) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    raise ArgumentError(f"`{fn}`: `{what}` must be a number, got {kind_of(v)}", e.span)


def _axes(v, e, fn: str):
    if v is None:
        return None
    if isinstance(v, list):
        return tuple(_int(a, e, "axis", fn) for a in v)
    return (_int(v, e, "axis", fn),)


def _shape(v, e, fn: str) -> tuple:
    if not isinstance(v, list):
        raise ArgumentError(
            f"`{fn}`: the shape must be a list like [B, T, 64], got {show(v)}", e.span
        )
    return tuple(_int(d, e, "size", fn, allow_dim=True) for d in v)


def _dtype(v, e, fn: str) -> str:
    if not isinstance(v, str) or v not in DTYPES:
        raise ArgumentError(
            f"`{fn}`: dtype must be one of {', '.join(DTYPES)}, got {show(v)}", e.span
        )
    return v


def _is_number(v) -> bool:
    return isinstance(v, int | float | Dim) and not isinstance(v, bool)


def _norm(v):
    if isinstance(v, Dim) and v.is_const:
        return v.value
    return v


# --- elementwise math: numbers at compile time, tensors as primitives ------------------------

_MATH = {
    "exp": math.exp,
    "log": math.log,
    "sqrt": math.sqrt,
    "rsqrt": lambda x: 1.0 / math.sqrt(x),
    "abs": abs,
    "relu": lambda x: max(x, 0),
    "tanh": math.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + math.exp(-x)),
    "softplus": lambda x: math.log1p(math.exp(x)),
    "sin": math.sin,
    "cos": math.cos,
    "square": lambda x: x * x,
    "reciprocal": lambda x: 1.0 / x,
    "erf": math.erf,
    "log1p": math.log1p,
    "sign": lambda x: (x > 0) - (x < 0),
    "neg": lambda x: -x,
}


def _unary(name: str):
    def fn(lw, ctx, e, x):
        if isinstance(x, Tensor):
            return lw.tensor_op(ctx, e.span, name, [x])
        if _is_number(x) and not isinstance(x, Dim):
            try:
                return _MATH[name](x)
            except (ValueError, ZeroDivisionError, OverflowError) as err:
                raise ValueError_(f"`{name}({show(x)})`: {err}", e.span) from None
        raise ArgumentError(f"`{name}` needs a tensor or a number, got {kind_of(x)}", e.span)

    builtin(name, ("x", R), doc=f"elementwise {name}")(fn)


for _n in _MATH:
    _unary(_n)


@builtin("gelu", ("x", R), ("approximate", "none"))
def _gelu(lw, ctx, e, x, approximate):
    if approximate not in ("none", "tanh"):
        raise ArgumentError('`gelu`: approximate must be "none" or "tanh"', e.span)
    return lw.tensor_op(
        ctx, e.span, "gelu", [_tensor(lw, x, e, "x", "gelu")], approximate=approximate
    )


@builtin("leaky_relu", ("x", R), ("alpha", 0.01))
def _leaky(lw, ctx, e, x, alpha):
    x = _tensor(lw, x, e, "x", "leaky_relu")
    return lw.tensor_op(ctx, e.span, "leaky_relu", [x], alpha=_num(alpha, e, "alpha", "leaky_relu"))


@builtin("clip", ("x", R), ("lo", None), ("hi", None))
def _clip(lw, ctx, e, x, lo, hi):
    x = _tensor(lw, x, e, "x", "clip")
    lo = None if lo is None else _num(lo, e, "lo", "clip")
    hi = None if hi is None else _num(hi, e, "hi", "clip")
    return lw.tensor_op(ctx, e.span, "clip", [x], lo=lo, hi=hi)


@builtin("cast", ("x", R), ("dtype", R))
def _cast(lw, ctx, e, x, dtype):
    x = _tensor(lw, x, e, "x", "cast")
    dtype = _dtype(dtype, e, "cast")
    if x.type.dtype == dtype:
        return x
    return lw.tensor_op(ctx, e.span, "cast", [x], dtype=dtype)


def _softmax_like(name):
    def fn(lw, ctx, e, x, axis):
        x = _tensor(lw, x, e, "x", name)
        return lw.tensor_op(ctx, e.span, name, [x], axis=_int(axis, e, "axis", name))

    builtin(name, ("x", R), ("axis", -1))(fn)


_softmax_like("softmax")
_softmax_like("log_softmax")


def _reduction(name):
    def fn(lw, ctx, e, x, axis, keepdims):
        if name in ("max", "min") and not isinstance(x, Tensor):
            return _minmax(name, e, x, axis)
        x = _tensor(lw, x, e, "x", name)
        if not isinstance(keepdims, bool):
            raise ArgumentError(f"`{name}`: keepdims must be true or false", e.span)
        axes = _axes(axis, e, name)
        if name != "sum":  # the others have no value over no elements
            r = x.type.rank
            over = range(r) if axes is None else [a % r for a in axes if -r <= a < r]
            if any(Dim.const(0) + x.type.shape[a] == Dim.const(0) for a in over):
                raise ShapeError(f"`{name}` over an axis of size 0 of {x.type}", ctx.where(e.span))
        return lw.tensor_op(ctx, e.span, name, [x], axes=axes, keepdims=keepdims)

    builtin(name, ("x", R), ("axis", None), ("keepdims", False))(fn)


for _n in ("sum", "mean", "max", "min", "var", "logsumexp"):
    _reduction(_n)


def _minmax(name, e, x, second):
    vals = x if isinstance(x, list) else [x] + ([] if second is None else [second])
    if not vals or not all(_is_number(v) and not isinstance(_norm(v), Dim) for v in vals):
        raise ArgumentError(f"`{name}` takes a tensor, or numbers known at compile time", e.span)
    vals = [_norm(v) for v in vals]
    return max(vals) if name == "max" else min(vals)


@builtin("argmax", ("x", R), ("axis", -1), ("keepdims", False))
def _argmax(lw, ctx, e, x, axis, keepdims):
    x = _tensor(lw, x, e, "x", "argmax")
    return lw.tensor_op(ctx, e.span, "argmax", [x], axis=_int(axis, e, "axis", "argmax"),
                        keepdims=bool(keepdims))  # fmt: skip


def _binary_fn(name):
    def fn(lw, ctx, e, a, b):
        if not isinstance(a, Tensor) and not isinstance(b, Tensor):
            if name in ("maximum", "minimum") and _is_number(a) and _is_number(b):
                return max(a, b) if name == "maximum" else min(a, b)
            if name == "pow" and _is_number(a) and _is_number(b):
                if isinstance(a, Dim) or isinstance(b, Dim):
                    raise ValueError_("`pow` on a symbolic size", e.span)
                return num_pow(a, b, e)
            raise ArgumentError(f"`{name}` needs at least one tensor", e.span)
        like = a if isinstance(a, Tensor) else b
        a = lw.as_tensor(a, like, ctx, e.span)
        b = lw.as_tensor(b, like, ctx, e.span)
        return lw.tensor_op(ctx, e.span, name, [a, b])

    builtin(name, ("a", R), ("b", R))(fn)


for _n in ("maximum", "minimum", "pow", "matmul"):
    _binary_fn(_n)


@builtin("where", ("cond", R), ("a", R), ("b", R))
def _where(lw, ctx, e, cond, a, b):
    cond = _tensor(lw, cond, e, "cond", "where")
    like = a if isinstance(a, Tensor) else b if isinstance(b, Tensor) else None
    if like is None:
        dtype = "f32" if isinstance(a, float) or isinstance(b, float) else "i64"
        a = scalar_tensor(lw, ctx, e.span, a, dtype)
        b = scalar_tensor(lw, ctx, e.span, b, dtype)
    else:
        a = lw.as_tensor(a, like, ctx, e.span)
        b = lw.as_tensor(b, like, ctx, e.span)
    nid = lw.op(ctx, e.span, "where", [cond, a, b])
    t = lw.graph.data(nid)["type"]
    first = like if like is not None else cond
    return first.then("where", nid, t)


# --- shapes and data movement ----------------------------------------------------------------


@builtin("reshape", ("x", R), ("shape", R))
def _reshape(lw, ctx, e, x, shape):
    x = _tensor(lw, x, e, "x", "reshape")
    return lw.tensor_op(ctx, e.span, "reshape", [x], shape=_shape(shape, e, "reshape"))


@builtin("transpose", ("x", R), ("perm", None))
def _transpose(lw, ctx, e, x, perm):
    x = _tensor(lw, x, e, "x", "transpose")
    r = x.type.rank
    if perm is None:
        if r < 2:
            raise ShapeError(
                f"`transpose` without `perm` swaps the last two axes; {x.type} has fewer", e.span
            )
        perm = list(range(r - 2)) + [r - 1, r - 2]
    perm = tuple(
        _int(p, e, "perm", "transpose") for p in (perm if isinstance(perm, list) else [perm])
    )
    if len(perm) != r or sorted(p % r if -r <= p < r else -1 for p in perm) != list(range(r)):
        raise ShapeError(
            f"`transpose`: {list(perm)} is not a permutation of the {r} axes of {x.type}",
            e.span,
        )
    return lw.tensor_op(ctx, e.span, "transpose", [x], perm=perm)


@builtin("flatten", ("x", R), ("start", 1))
def _flatten(lw, ctx, e, x, start):
    x = _tensor(lw, x, e, "x", "flatten")
    start = _int(start, e, "start", "flatten")
    shape = x.type.shape
    if not -len(shape) <= start < len(shape) or len(shape) == 0:
        raise ShapeError(f"`flatten`: start axis {start} is out of range for {x.type}", e.span)
    start %= len(shape)
    new = tuple(shape[:start]) + (numel(tuple(shape[start:])),)
    return lw.tensor_op(ctx, e.span, "reshape", [x], label="flatten", shape=new)


@builtin("unsqueeze", ("x", R), ("axis", R))
def _unsqueeze(lw, ctx, e, x, axis):
    x = _tensor(lw, x, e, "x", "unsqueeze")
    r = x.type.rank
    axis = _int(axis, e, "axis", "unsqueeze")
    if not -r - 1 <= axis <= r:
        raise ShapeError(f"`unsqueeze`: axis {axis} is out of range for {x.type}", e.span)
    axis %= r + 1
    shape = x.type.shape[:axis] + (Dim.const(1),) + x.type.shape[axis:]
    return lw.tensor_op(ctx, e.span, "reshape", [x], label="unsqueeze", shape=shape)


@builtin("squeeze", ("x", R), ("axis", R))
def _squeeze(lw, ctx, e, x, axis):
    x = _tensor(lw, x, e, "x", "squeeze")
    r = x.type.rank
    axis = _int(axis, e, "axis", "squeeze")
    if not -r <= axis < r or x.type.shape[axis % r] != 1:
        raise ShapeError(f"`squeeze`: axis {axis} of {x.type} is not of size 1", e.span)
    axis %= r
    shape = x.type.shape[:axis] + x.type.shape[axis + 1 :]
    return lw.tensor_op(ctx, e.span, "reshape", [x], label="squeeze", shape=shape)


@builtin("broadcast_to", ("x", R), ("shape", R))
def _broadcast_to(lw, ctx, e, x, shape):
    x = _tensor(lw, x, e, "x", "broadcast_to")
    return lw.tensor_op(ctx, e.span, "broadcast_to", [x], shape=_shape(shape, e, "broadcast_to"))


@builtin("concat", ("xs", R), ("axis", -1), variadic=True)
def _concat(lw, ctx, e, xs, axis):
    if not isinstance(xs, list) or not xs:
        raise ArgumentError("`concat` takes a list of tensors: concat([a, b], axis = -1)", e.span)
    ts = [_tensor(lw, x, e, "xs", "concat") for x in xs]
    return lw.tensor_op(ctx, e.span, "concat", ts, axis=_int(axis, e, "axis", "concat"))


@builtin("split", ("x", R), ("sections", R), ("axis", -1))
def _split(lw, ctx, e, x, sections, axis):
    x = _tensor(lw, x, e, "x", "split")
    axis = _int(axis, e, "axis", "split")
    r = x.type.rank
    if not -r <= axis < r:
        raise ShapeError(f"`split`: axis {axis} is out of range for {x.type}", e.span)
    axis %= r
    size = _norm(x.type.shape[axis])
    if isinstance(sections, list):
        sizes = [_int(s, e, "sections", "split", allow_dim=True) for s in sections]
        total = sum(sizes[1:], Dim.const(0) + sizes[0]) if sizes else 0
        if _norm(total) != size:
            raise ShapeError(
                f"`split`: sizes {show(sizes)} add up to {_norm(total)}, but axis {axis} of "
                f"{x.type} has {size}",
                e.span,
            )
    else:
        n = _int(sections, e, "sections", "split")
        q = Dim.const(size).exact_div(n) if isinstance(size, int) else size.exact_div(n)
        if n <= 0 or q is None:
            raise ShapeError(
                f"`split`: axis {axis} of {x.type} does not split into {n} equal parts", e.span
            )
        sizes = [_norm(q)] * n
    out, start = [], 0
    for s in sizes:
        stop = (
            _norm(start + s) if not (isinstance(start, int) and isinstance(s, int)) else start + s
        )
        out.append(
            lw.tensor_op(
                ctx, e.span, "slice", [x], label="split", axis_slices=((axis, start, stop, 1),)
            )
        )
        start = stop
    return out


@builtin("pad", ("x", R), ("pads", R), ("value", 0.0))
def _pad(lw, ctx, e, x, pads, value):
    x = _tensor(lw, x, e, "x", "pad")
    if not isinstance(pads, list) or not all(isinstance(p, list) and len(p) == 2 for p in pads):
        raise ArgumentError("`pad`: pads must be a list of [before, after] per axis", e.span)
    pads = tuple((_int(a, e, "pads", "pad"), _int(b, e, "pads", "pad")) for a, b in pads)
    return lw.tensor_op(ctx, e.span, "pad", [x], pads=pads, value=_num(value, e, "value", "pad"))


@builtin("gather", ("table", R), ("indices", R))
def _gather(lw, ctx, e, table, indices):
    table = _tensor(lw, table, e, "table", "gather")
    indices = _tensor(lw, indices, e, "indices", "gather")
    nid = lw.op(ctx, e.span, "gather", [table, indices])
    return indices.then("gather", nid, lw.graph.data(nid)["type"])


@builtin("take_along", ("x", R), ("indices", R), ("axis", -1))
def _take_along(lw, ctx, e, x, indices, axis):
    x = _tensor(lw, x, e, "x", "take_along")
    indices = _tensor(lw, indices, e, "indices", "take_along")
    return lw.tensor_op(
        ctx, e.span, "take_along", [x, indices], axis=_int(axis, e, "axis", "take_along")
    )


@builtin("one_hot", ("indices", R), ("depth", R), ("dtype", "f32"))
def _one_hot(lw, ctx, e, indices, depth, dtype):
    indices = _tensor(lw, indices, e, "indices", "one_hot")
    return lw.tensor_op(ctx, e.span, "one_hot", [indices], depth=_int(depth, e, "depth", "one_hot"),
                        dtype=_dtype(dtype, e, "one_hot"))  # fmt: skip


@builtin("arange", ("n", R), ("dtype", "i64"))
def _arange(lw, ctx, e, n, dtype):
    n = _int(n, e, "n", "arange", allow_dim=True)
    nid = lw.op(ctx, e.span, "arange", [], n=n, dtype=_dtype(dtype, e, "arange"))
    t = lw.graph.data(nid)["type"]
    return Tensor(nid, t, ()).then("arange", nid, t)


@builtin("full", ("shape", R), ("value", R), ("dtype", "f32"))
def _full(lw, ctx, e, shape, value, dtype):
    return _make_full(lw, ctx, e, shape, value, dtype, "full")


@builtin("zeros", ("shape", R), ("dtype", "f32"))
def _zeros(lw, ctx, e, shape, dtype):
    return _make_full(lw, ctx, e, shape, 0, dtype, "zeros")


@builtin("ones", ("shape", R), ("dtype", "f32"))
def _ones(lw, ctx, e, shape, dtype):
    return _make_full(lw, ctx, e, shape, 1, dtype, "ones")


def _make_full(lw, ctx, e, shape, value, dtype, fn):
    dtype = _dtype(dtype, e, fn)
    shape = _shape(shape, e, fn)
    if isinstance(value, bool) or not _is_number(value):
        raise ArgumentError(f"`{fn}`: value must be a number, got {kind_of(value)}", e.span)
    value = _norm(value)
    if not isinstance(value, Dim):
        value = float(value) if is_float(dtype) else int(value)
    nid = lw.op(ctx, e.span, "full", [], shape=shape, value=value, dtype=dtype)
    t = lw.graph.data(nid)["type"]
    return Tensor(nid, t, ()).then(fn, nid, t)


for _n in ("zeros_like", "ones_like"):

    def _like(lw, ctx, e, x, _name=_n):
        x = _tensor(lw, x, e, "x", _name)
        return lw.tensor_op(ctx, e.span, _name, [x])

    builtin(_n, ("x", R))(_like)


@builtin("dropout_mask", ("x", R), ("p", 0.5), ("broadcast_axes", []))
def _dropout_mask(lw, ctx, e, x, p, broadcast_axes):
    x = _tensor(lw, x, e, "x", "dropout_mask")
    axes = _axes(broadcast_axes, e, "dropout_mask") or ()
    return lw.tensor_op(ctx, e.span, "dropout_mask", [x], p=_num(p, e, "p", "dropout_mask"),
                        broadcast_axes=tuple(axes))  # fmt: skip


# --- compile-time helpers --------------------------------------------------------------------


@builtin("shape", ("x", R))
def _shape_of(lw, ctx, e, x):
    return [_norm(d) for d in _tensor(lw, x, e, "x", "shape").type.shape]


@builtin("rank", ("x", R))
def _rank(lw, ctx, e, x):
    return _tensor(lw, x, e, "x", "rank").type.rank


@builtin("dtype", ("x", R))
def _dtype_of(lw, ctx, e, x):
    return _tensor(lw, x, e, "x", "dtype").type.dtype


@builtin("is_float", ("x", R))
def _is_float(lw, ctx, e, x):
    if isinstance(x, str):
        return is_float(x)
    return _tensor(lw, x, e, "x", "is_float").type.is_float


@builtin("is_tensor", ("x", R))
def _is_tensor(lw, ctx, e, x):
    return isinstance(x, Tensor)


@builtin("len", ("x", R))
def _len(lw, ctx, e, x):
    if isinstance(x, list | str):
        return len(x)
    raise ArgumentError(f"`len` takes a list or a string, got {kind_of(x)}", e.span)


@builtin("range", ("a", R), ("b", None), ("step", 1))
def _range(lw, ctx, e, a, b, step):
    a = _int(a, e, "a", "range")
    if b is None:
        a, b = 0, a
    r = range(a, _int(b, e, "b", "range"), _int(step, e, "step", "range") or _zero_step(e))
    if len(r) > MAX_LIST:
        raise ValueError_(f"`range`: more than {MAX_LIST:,} elements", e.span)
    return list(r)


def _zero_step(e: A.Call):
    raise ValueError_("`range`: the step must not be zero", e.span)


@builtin("int", ("x", R))
def _to_int(lw, ctx, e, x):
    if isinstance(x, Dim) and not x.is_const:
        return x
    if _is_number(x):
        return int(_norm(x))
    raise ArgumentError(f"`int` takes a number, got {kind_of(x)}", e.span)


@builtin("float", ("x", R))
def _to_float(lw, ctx, e, x):
    if _is_number(x) and not isinstance(_norm(x), Dim):
        return float(_norm(x))
    raise ArgumentError(f"`float` takes a number known at compile time, got {kind_of(x)}", e.span)


@builtin("str", ("x", R))
def _to_str(lw, ctx, e, x):
    return x if isinstance(x, str) else show(x)


@builtin("pair", ("x", R))
def _pair(lw, ctx, e, x):
    if isinstance(x, list):
        if len(x) != 2:
            raise ArgumentError(f"expected one number or two, got {show(x)}", e.span)
        return list(x)
    return [x, x]


@builtin("prod", ("xs", R))
def _prod(lw, ctx, e, xs):
    if not isinstance(xs, list):
        raise ArgumentError(f"`prod` takes a list, got {kind_of(xs)}", e.span)
    out: Any = 1
    for v in xs:
        out = out * v
    return _norm(out)


@builtin("floor", ("x", R))
def _floor(lw, ctx, e, x):
    return math.floor(_num(x, e, "x", "floor"))


@builtin("ceil", ("x", R))
def _ceil(lw, ctx, e, x):
    return math.ceil(_num(x, e, "x", "ceil"))


@builtin("repeat", ("n", R), ("layer", R), ("name", None), variadic=False)
def _repeat(lw, ctx, e, n, layer, name):
    """`x |> repeat(n, Block(args))`: n copies applied in turn, scopes name.0 ... name.n-1."""
    raise ArgumentError(
        "`repeat(n, layer)` needs an input: write `x |> repeat(n, Block(...))`", e.span
    )


def call_repeat(lw, ctx, e: A.Call, x, n, layer, name, count_expr):
    n = _int(n, e, "n", "repeat")
    if n < 0:
        raise ValueError_(f"`repeat`: the count must not be negative, got {n}", e.span)
    if n > MAX_REPEAT:
        raise ValueError_(f"`repeat`: at most {MAX_REPEAT:,} copies, got {n:,}", e.span)
    if isinstance(layer, BlockValue):
        layer = Layer(layer, (), layer.name, e.span)
    if not isinstance(layer, Layer):
        raise ArgumentError(
            "`repeat`: the second argument must be a layer like `Block(args)`, "
            f"got {kind_of(layer)}",
            e.span,
        )
    if name is None:
        if layer.scope_name is not None:
            name = layer.scope_name
        elif isinstance(count_expr, A.Name):
            name = count_expr.name
        elif ctx.stmt_name is not None:
            name, ctx.stmt_name = ctx.stmt_name, None
        else:
            name = "repeat"
        name = lw.unique(name, ctx)
    else:
        if not isinstance(name, str):
            raise ArgumentError("`repeat`: name must be a string", e.span)
        if name in ctx.used:
            raise ArgumentError(f"layer name `{name}` is used twice here", e.span)
        ctx.used[name] = 1
    from dslc.frontend.lower import Ctx  # noqa: F401  (type only)

    for i in range(n):
        x = lw.run_block(layer.block, [x], dict(layer.params), ctx, e.span, layer.label,
                         f"{name}.{i}")  # fmt: skip
    return x


# --- primitives by their registry name: prim.conv2d(x, w, stride = 2) -----------------------


@functools.cache
def prim_function(name: str) -> Builtin:
    def fn(lw, ctx, e, xs, **attrs):
        ts = [v for v in xs]
        for v in ts:
            if not isinstance(v, Tensor):
                raise ArgumentError(
                    f"`prim.{name}` takes tensors as positional arguments and attributes as "
                    f"keywords; got {kind_of(v)}",
                    e.span,
                )
        from dslc.ops import get_primitive

        allowed = get_primitive(name).attrs
        for k in attrs:
            if k not in allowed:
                close = difflib.get_close_matches(k, list(allowed), n=1)
                raise ArgumentError(
                    f"`prim.{name}` has no attribute `{k}`"
                    + (f"; it takes {', '.join(allowed)}" if allowed else ""),
                    e.span,
                    hint=f"did you mean `{close[0]}`?" if close else None,
                )
        conv = {k: _attr_kind(name, k, allowed[k], _attr_value(v), e) for k, v in attrs.items()}
        nid = lw.op(ctx, e.span, name, ts, **conv)
        t = lw.graph.data(nid)["type"]
        return ts[0].then(name, nid, t) if ts else Tensor(nid, t, ()).then(name, nid, t)

    return Builtin(f"prim.{name}", (("xs", REQUIRED),), fn, variadic=True)


def call_prim(lw, ctx, e, fn: Builtin, args, kwargs):
    return fn.fn(lw, ctx, e, list(args), **kwargs)


def _attr_kind(prim: str, k: str, default, v, e: A.Call):
    """An attribute whose default is a flag takes a flag; one whose default is a whole number
    takes whole numbers (or a list of them), never a flag or a fraction."""
    if isinstance(default, bool) and not isinstance(v, bool):
        raise ArgumentError(f"`prim.{prim}`: `{k}` must be true or false, got {show(v)}", e.span)
    if isinstance(default, int) and not isinstance(default, bool):

        def whole(x):
            if isinstance(x, tuple):
                return tuple(whole(y) for y in x)
            if isinstance(x, float) and x.is_integer():
                return int(x)
            if isinstance(x, bool) or isinstance(x, float):
                raise ArgumentError(
                    f"`prim.{prim}`: `{k}` must be a whole number, got {show(v)}", e.span
                )
            return x

        v = whole(v)
    return v


def _attr_value(v):
    if isinstance(v, list):
        return tuple(_attr_value(x) for x in v)
    return _norm(v)


# --- initialisers ----------------------------------------------------------------------------

# name: (argument names, defaults). The runtime implements the first six; the rest are
# rewritten here into `uniform`/`normal` with bounds computed from the parameter's fans.
INITS: dict[str, tuple[tuple[str, ...], tuple]] = {
    "zeros": ((), ()),
    "ones": ((), ()),
    "constant": (("value",), (R,)),
    "normal": (("mean", "std"), (0.0, 1.0)),
    "uniform": (("lo", "hi"), (R, R)),
    "truncated_normal": (("mean", "std", "lo", "hi"), (0.0, 1.0, None, None)),
    "glorot_uniform": (("gain",), (1.0,)),
    "glorot_normal": (("gain",), (1.0,)),
    "he_uniform": (("gain",), (math.sqrt(2.0),)),
    "he_normal": (("gain",), (math.sqrt(2.0),)),
    "lecun_normal": (("gain",), (1.0,)),
}
RUNTIME_INITS = ("zeros", "ones", "constant", "normal", "uniform", "truncated_normal")


def fans(shape: tuple) -> tuple[int, int]:
    """fan_in, fan_out: [in, out] for rank 2 (dense), [out, in, k...] for rank >= 3 (conv)."""
    dims = [int(d) for d in shape]
    if len(dims) == 0:
        return 1, 1
    if len(dims) == 1:
        return dims[0], dims[0]
    if len(dims) == 2:
        return dims[0], dims[1]
    k = math.prod(dims[2:])
    return dims[1] * k, dims[0] * k


def make_init(name: str, args, kwargs, t: TensorType, span: Span) -> InitSpec:
    names_, defaults = INITS[name]
    if len(args) > len(names_):
        raise ArgumentError(f"`{name}` takes {len(names_)} argument(s), got {len(args)}", span)
    vals = dict(zip(names_, args))
    for k, v in kwargs.items():
        if k not in names_:
            close = difflib.get_close_matches(k, names_, n=1)
            raise ArgumentError(
                f"initialiser `{name}` has no argument `{k}`",
                span,
                hint=f"did you mean `{close[0]}`?" if close else None,
            )
        if k in vals:
            raise ArgumentError(f"initialiser `{name}` got `{k}` twice", span)
        vals[k] = v
    for n, d in zip(names_, defaults):
        if n not in vals:
            if d is R:
                raise ArgumentError(f"initialiser `{name}` is missing `{n}`", span)
            vals[n] = d
    optional = {n for n, d in zip(names_, defaults) if d is None}
    for k, v in vals.items():
        if v is None and k in optional:
            continue
        if not _is_number(v) or isinstance(_norm(v), Dim):
            raise ArgumentError(
                f"initialiser `{name}`: `{k}` must be a number known at compile time, "
                f"got {show(v)}",
                span,
            )
        vals[k] = float(_norm(v))
    if name in ("zeros", "ones"):
        return InitSpec(name)
    if name == "constant":
        return InitSpec("constant", (vals["value"],))
    if name == "normal":
        _positive(vals["std"], "std", name, span, allow_zero=True)
        return InitSpec("normal", (vals["mean"], vals["std"]))
    if name == "uniform":
        if vals["lo"] > vals["hi"]:
            raise ValueError_(f"`uniform`: lo {vals['lo']} is above hi {vals['hi']}", span)
        return InitSpec("uniform", (vals["lo"], vals["hi"]))
    if name == "truncated_normal":
        m, s = vals["mean"], vals["std"]
        _positive(s, "std", name, span)
        lo = vals["lo"] if vals["lo"] is not None else m - 2 * s
        hi = vals["hi"] if vals["hi"] is not None else m + 2 * s
        if not lo < hi:
            raise ValueError_(f"`truncated_normal`: lo {lo} must be below hi {hi}", span)
        return InitSpec("truncated_normal", (m, s, lo, hi))
    fan_in, fan_out = fans(t.shape)
    gain = vals["gain"]
    if name == "glorot_uniform":
        b = gain * math.sqrt(6.0 / (fan_in + fan_out))
        return InitSpec("uniform", (-b, b))
    if name == "glorot_normal":
        return InitSpec("normal", (0.0, gain * math.sqrt(2.0 / (fan_in + fan_out))))
    if name == "he_uniform":
        b = gain * math.sqrt(3.0 / fan_in)
        return InitSpec("uniform", (-b, b))
    if name == "he_normal":
        return InitSpec("normal", (0.0, gain / math.sqrt(fan_in)))
    if name == "lecun_normal":
        return InitSpec("normal", (0.0, gain / math.sqrt(fan_in)))
    raise ValueError_(f"unknown initialiser `{name}`", span)  # pragma: no cover


def _positive(v, what, name, span, allow_zero=False):
    if v < 0 or (v == 0 and not allow_zero):
        raise ValueError_(f"`{name}`: {what} must be positive, got {v}", span)


# --- operators on tensors --------------------------------------------------------------------

_CMP = {"==": "eq", "!=": "ne", "<": "lt", "<=": "le", ">": "gt", ">=": "ge"}


def scalar_tensor(lw, ctx, span, v, dtype: str) -> Tensor:
    """A compile-time scalar as a 0-d tensor of `dtype`."""
    if isinstance(v, Dim):
        v = _norm(v)
    b = lw.b
    b.span, b.scope = ctx.where(span), ctx.scope
    if isinstance(v, Dim):
        nid = b.op("full", shape=(), value=v, dtype=dtype)
    elif isinstance(v, bool):
        if dtype != "bool":
            raise DTypeError(f"cannot combine a {dtype} tensor with `{show(v)}`", ctx.where(span))
        nid = b.const(v, "bool")
    elif isinstance(v, int | float):
        if not is_float(dtype) and isinstance(v, float) and not v.is_integer():
            raise DTypeError(
                f"cannot combine a {dtype} tensor with the fraction {v}",
                ctx.where(span),
                hint='cast the tensor first: cast(x, "f32")',
            )
        if dtype == "bool":
            raise DTypeError(
                f"cannot combine a bool tensor with the number {v}",
                ctx.where(span),
                hint='cast it first: cast(mask, "f32")',
            )
        nid = b.const(v, dtype)
    else:
        raise ValueError_(f"cannot use {kind_of(v)} in tensor arithmetic", ctx.where(span))
    t = lw.graph.data(nid)["type"]
    return Tensor(nid, t, ())


def tensor_binary(lw, ctx, e: A.Binary, left, right):
    op = e.op
    span = e.span
    for v in (left, right):
        if not isinstance(v, Tensor) and not _is_number(v) and not isinstance(v, bool):
            raise ValueError_(f"cannot apply `{op}` to a tensor and {kind_of(v)}", ctx.where(span))
    if op == "@":
        if not (isinstance(left, Tensor) and isinstance(right, Tensor)):
            raise ValueError_("`@` multiplies two tensors", ctx.where(span))
        return lw.tensor_op(ctx, span, "matmul", [left, right], label="@")
    if op in ("%", "//"):
        raise ValueError_(f"`{op}` works on numbers only, not on tensors", ctx.where(span))
    if op in _CMP:
        like = left if isinstance(left, Tensor) else right
        a = lw.as_tensor(left, like, ctx, span)
        b = lw.as_tensor(right, like, ctx, span)
        return _binop(lw, ctx, span, _CMP[op], a, b, op, like)
    if isinstance(left, Tensor) and isinstance(right, Tensor):
        prim = {"+": "add", "-": "sub", "*": "mul", "/": "div", "**": "pow"}[op]
        return _binop(lw, ctx, span, prim, left, right, op, left)
    t, c = (left, right) if isinstance(left, Tensor) else (right, left)
    c = _norm(c)
    tensor_left = t is left
    scalar_ok = t.type.is_float and isinstance(c, int | float) and not isinstance(c, bool)
    if scalar_ok:
        c = float(c)
        if op == "+":
            return lw.tensor_op(ctx, span, "add_scalar", [t], label="+", c=c)
        if op == "-":
            if tensor_left:
                return lw.tensor_op(ctx, span, "add_scalar", [t], label="-", c=-c)
            neg = lw.tensor_op(ctx, span, "neg", [t], label="-")
            return lw.tensor_op(ctx, span, "add_scalar", [neg], label="-", c=c) if c else neg
        if op == "*":
            return lw.tensor_op(ctx, span, "scale", [t], label="*", c=c)
        if op == "/":
            if tensor_left:
                if c == 0:
                    raise ValueError_("division by zero", ctx.where(span))
                return lw.tensor_op(ctx, span, "scale", [t], label="/", c=1.0 / c)
            r = lw.tensor_op(ctx, span, "reciprocal", [t], label="/")
            return r if c == 1.0 else lw.tensor_op(ctx, span, "scale", [r], label="/", c=c)
        if op == "**" and tensor_left:
            if c == 2.0:
                return lw.tensor_op(ctx, span, "square", [t], label="**")
            if c == 0.5:
                return lw.tensor_op(ctx, span, "sqrt", [t], label="**")
            return lw.tensor_op(ctx, span, "pow_scalar", [t], label="**", p=c)
    cst = scalar_tensor(lw, ctx, span, c, t.type.dtype)
    a, b = (t, cst) if tensor_left else (cst, t)
    prim = {"+": "add", "-": "sub", "*": "mul", "/": "div", "**": "pow"}[op]
    return _binop(lw, ctx, span, prim, a, b, op, t)


def _binop(lw, ctx, span, prim, a: Tensor, b: Tensor, label, like: Tensor) -> Tensor:
    nid = lw.op(ctx, span, prim, [a, b])
    t = lw.graph.data(nid)["type"]
    # the chain follows the operand with the longer history (usually the data path)
    first = a if len(a.hist) >= len(b.hist) else b
    return first.then(label, nid, t)


def const_binary(e: A.Binary, left, right):
    """Arithmetic and comparisons on compile-time values (numbers, sizes, strings, lists)."""
    op = e.op
    if op in ("==", "!="):
        eq = _values_equal(left, right)
        return eq if op == "==" else not eq
    if op == "+" and isinstance(left, str):
        return left + (right if isinstance(right, str) else show(right))
    if op == "+" and isinstance(right, str) and _is_number(left):
        return show(left) + right
    if op == "+" and isinstance(left, list) and isinstance(right, list):
        return left + right
    if op == "*" and isinstance(left, list) and isinstance(right, int):
        if len(left) * max(right, 0) > MAX_LIST:
            raise ValueError_(f"a list of more than {MAX_LIST:,} elements", e.span)
        return left * right
    for v in (left, right):
        if not _is_number(v):
            raise ValueError_(f"cannot apply `{op}` to {kind_of(v)}", e.span)
    a, b = _norm(left), _norm(right)
    sym = isinstance(a, Dim) or isinstance(b, Dim)
    try:
        return _bounded(_const_arith(op, a, b, sym, e), e)
    except ZeroDivisionError:
        raise ValueError_("division by zero", e.span) from None
    except OverflowError:
        raise ValueError_("number too large", e.span) from None


def _bounded(v, e: A.Expr):
    """A compile-time result: whole numbers within an int64, no complex numbers."""
    if isinstance(v, int) and not isinstance(v, bool) and abs(v) > MAX_INT:
        raise ValueError_(f"number too large: more than {MAX_INT:,}", e.span)
    if isinstance(v, complex):
        raise ValueError_("a negative number to a fractional power", e.span)
    return v


def num_pow(a, b, e: A.Expr):
    """`a ** b` on numbers, refusing results too large to compute or to be a size."""
    if isinstance(a, int) and isinstance(b, int) and b > 0 and abs(a) > 1:
        if b * math.log2(abs(a)) > 64:
            raise ValueError_(f"number too large: more than {MAX_INT:,}", e.span)
    try:
        return _bounded(a**b, e)
    except ZeroDivisionError:
        raise ValueError_("division by zero", e.span) from None
    except OverflowError:
        raise ValueError_("number too large", e.span) from None


def _const_arith(op: str, a, b, sym: bool, e: A.Binary):
    if sym and op not in ("/", "//"):  # sizes combine with whole numbers only
        for v in (a, b):
            if isinstance(v, float) and not v.is_integer():
                size = a if isinstance(a, Dim) else b
                raise ValueError_(
                    f"cannot combine the symbolic size {size} with the fraction {show(v)} "
                    "at compile time",
                    e.span,
                    hint="sizes are whole numbers; compute with a tensor, or use `//`",
                )
        a, b = (int(v) if isinstance(v, float) else v for v in (a, b))
    if op == "+":
        return _norm(a + b)
    if op == "-":
        return _norm(a - b)
    if op == "*":
        return _norm(a * b)
    if op in ("/", "//") and sym:
        if isinstance(b, float) or isinstance(a, float):
            raise ValueError_(f"cannot divide the size {a} by {b}", e.span)
        q = Dim.const(a).exact_div(b) if isinstance(a, int) else a.exact_div(b)
        if q is None:
            raise ValueError_(f"the size {a} is not known to be divisible by {b}", e.span)
        return _norm(q)
    if op == "/":
        return a / b
    if op == "//":
        return a // b
    if op == "%":
        if sym:
            raise ValueError_(f"`%` on the symbolic size {a if isinstance(a, Dim) else b}", e.span)
        return a % b
    if op == "**":
        if sym:
            raise ValueError_("`**` on a symbolic size", e.span)
        return num_pow(a, b, e)
    if op in ("<", "<=", ">", ">="):
        if sym:
            d = _norm(Dim.const(0) + a - b)
            if isinstance(d, Dim):
                raise ValueError_(
                    f"cannot compare the symbolic sizes {a} and {b} at compile time", e.span
                )
            a, b = d, 0
        return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
    raise ValueError_(f"unknown operator `{op}`", e.span)  # pragma: no cover


def _values_equal(a, b) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_values_equal(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if _is_number(a) and _is_number(b):
        a, b = _norm(a), _norm(b)
        if isinstance(a, Dim) or isinstance(b, Dim):
            return Dim.const(0) + a == Dim.const(0) + b
        return a == b
    if isinstance(a, Tensor) or isinstance(b, Tensor):
        return a is b
    return a == b


# --- subscripts ------------------------------------------------------------------------------


def subscript(lw, ctx, e: A.Subscript, obj, items: list):
    if isinstance(obj, list | str):
        if len(items) != 1:
            raise ValueError_("a list takes one index", e.span)
        it = items[0]
        try:
            if isinstance(it, slice):
                return obj[slice(*(_plain_int(p, e) for p in (it.start, it.stop, it.step)))]
            if it is None:  # `none` adds an axis to a tensor; a list has none to add
                raise ValueError_("a list index must be a whole number, got none", e.span)
            return obj[_plain_int(it, e)]
        except IndexError:
            raise ValueError_(
                f"index {show(it)} is out of range for a list of {len(obj)}", e.span
            ) from None
    if not isinstance(obj, Tensor):
        raise ValueError_(f"cannot index {kind_of(obj)}", e.span)
    if len(items) == 1 and isinstance(items[0], Tensor):
        return _gather(lw, ctx, e, obj, items[0])
    rank = obj.type.rank
    n_ell = sum(1 for i in items if i is Ellipsis)
    if n_ell > 1:
        raise ValueError_("a subscript may contain `...` only once", e.span)
    n_real = len(items) - n_ell
    if n_real > rank:
        raise ShapeError(f"too many indices ({n_real}) for {obj.type}", ctx.where(e.span))
    axes: list[tuple[int, Any]] = []
    if n_ell:
        k = items.index(Ellipsis)
        for i, it in enumerate(items[:k]):
            axes.append((i, it))
        after = items[k + 1 :]
        for j, it in enumerate(after):
            axes.append((rank - len(after) + j, it))
    else:
        axes = list(enumerate(items))
    slices, picks = [], []
    for axis, it in axes:
        if isinstance(it, slice):
            if it.start is None and it.stop is None and it.step in (None, 1):
                continue
            step = 1 if it.step is None else it.step
            if not isinstance(step, int) or step == 0:
                raise ValueError_("a slice step must be a non-zero whole number", e.span)
            slices.append((axis, it.start, it.stop, step))
        elif isinstance(it, Tensor):
            raise ValueError_("indexing by a tensor works only alone, as `table[indices]`", e.span)
        else:
            i = _norm(it)
            if isinstance(i, bool) or not isinstance(i, int | Dim):
                raise ValueError_(f"an index must be a whole number, got {kind_of(it)}", e.span)
            d = _norm(obj.type.shape[axis])
            if isinstance(i, int) and isinstance(d, int) and not -d <= i < d:
                raise ShapeError(
                    f"index {i} is out of range for axis {axis} of {obj.type}", ctx.where(e.span)
                )
            picks.append((axis, i))
    out = obj
    if slices:
        out = lw.tensor_op(ctx, e.span, "slice", [out], label="[...]", axis_slices=tuple(slices))
    for axis, i in sorted(picks, reverse=True):
        out = lw.tensor_op(ctx, e.span, "index", [out], label="[...]", axis=axis, i=i)
    return out


def _gather(lw, ctx, e, table: Tensor, idx: Tensor):
    nid = lw.op(ctx, e.span, "gather", [table, idx])
    return idx.then("[...]", nid, lw.graph.data(nid)["type"])


def _plain_int(v, e):
    if v is None:
        return None
    v = _norm(v)
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise ValueError_(f"a list index must be a whole number, got {show(v)}", e.span)


# --- parameter ownership of blocks (for scope names) ----------------------------------------


def owns_params(bv: BlockValue) -> bool:
    """Whether calling the block may create parameters (statically, from its body)."""
    bdef = bv.bdef
    known = bdef.__dict__.get("_owns_params")
    if known is not None:
        return known
    object.__setattr__(bdef, "_owns_params", False)  # recursion guard; cached on the node
    result = _stmts_own(bdef.body, bv.ns)
    object.__setattr__(bdef, "_owns_params", result)
    return result


def _stmts_own(stmts, ns) -> bool:
    for s in stmts:
        if isinstance(s, A.ParamStmt):
            return True
        if isinstance(s, A.IfStmt):
            if _stmts_own(s.then, ns) or _stmts_own(s.orelse, ns):
                return True
        for v in s.__dict__.values():
            if isinstance(v, A.Expr) and _expr_owns(v, ns):
                return True
    return False


def _expr_owns(e, ns) -> bool:
    if isinstance(e, A.Call):
        if isinstance(e.func, A.Name):
            if e.func.name == "repeat":
                return True
            found = ns.lookup(e.func.name)
            if isinstance(found, tuple) and owns_params(BlockValue(found[0], found[1])):
                return True
        elif isinstance(e.func, A.Attr) and isinstance(e.func.obj, A.Name):
            mod = ns.lookup(e.func.obj.name)
            if mod is not None and not isinstance(mod, tuple) and e.func.name in mod.blocks:
                if owns_params(BlockValue(mod.blocks[e.func.name], mod)):
                    return True
    if isinstance(e, A.Expr):
        for v in e.__dict__.values():
            if isinstance(v, A.Expr) and _expr_owns(v, ns):
                return True
            if isinstance(v, tuple):
                for i in v:
                    if isinstance(i, A.Expr) and _expr_owns(i, ns):
                        return True
                    if isinstance(i, A.Keyword) and _expr_owns(i.value, ns):
                        return True
    return False
