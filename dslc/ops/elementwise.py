"""Primitives: elementwise maps (unary, kind `elementwise`) and broadcasting maps (`broadcast`).

Gradient rules build graph nodes; `y` below is the node's own output, `g` the incoming
gradient. Broadcasting ops return gradients in the broadcast shape; autodiff applies `sum_to`.
"""

from __future__ import annotations

import math

import numpy as np

from dslc.ir.types import TensorType, np_dtype
from dslc.ops.registry import NONDIFF, primitive
from dslc.ops.rules import (
    broadcast_shapes,
    need_bool,
    need_float,
    need_numeric,
    put,
    same_dtype,
)
from dslc.ops.special import blocked as _blocked
from dslc.ops.special import erf as _erf
from dslc.ops.special import erf32_block as _erf32_block

SQRT_2 = math.sqrt(2.0)
SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)
TWO_OVER_SQRT_PI = 2.0 / math.sqrt(math.pi)
GELU_C = 0.044715


def const_like(b, value, nid):
    """A scalar constant of the same dtype as node `nid`."""
    return b.const(value, b.type_of(nid).dtype)


def one_minus(b, x):
    """1 - x."""
    return b.op("add_scalar", b.op("neg", x), c=1.0)


def mask_to(b, cond, g):
    """g where cond holds, else 0."""
    return b.op("where", cond, g, const_like(b, 0.0, g))


# --- type rules ------------------------------------------------------------------------------


def _float_unary(name):
    def infer(ts, attrs):
        need_float(ts[0], name)
        return ts[0]

    return infer


def _numeric_unary(name):
    def infer(ts, attrs):
        need_numeric(ts[0], name)
        return ts[0]

    return infer


def _binary(name, out_dtype=None, need=need_numeric):
    def infer(ts, attrs):
        dtype = same_dtype(ts, name)
        for t in ts:
            need(t, name)
        return TensorType(broadcast_shapes(ts), out_dtype or dtype)

    return infer


def _unary(name, *, grad, kernel, expr, infer=None, attrs=None, flops=None, doc=""):
    kw = {"flops": flops} if flops else {}
    primitive(
        name,
        kind="elementwise",
        arity=1,
        infer=infer or _float_unary(name),
        grad=grad,
        numpy=kernel,
        expr=expr,
        attrs=attrs or {},
        doc=doc,
        **kw,
    )


# --- kernels that need more than one ufunc ---------------------------------------------------


def _sigmoid(xp, x, out=None):
    # 1/(1+e^-x) for x >= 0, e^x/(1+e^x) otherwise: exp never overflows
    e = xp.exp(-xp.abs(x))
    r = xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(x.dtype, copy=False)
    return put(xp, r, out)


def _softplus(xp, x, out=None):
    # log(1 + e^x) = max(x, 0) + log1p(e^-|x|)
    r = xp.log1p(xp.exp(-xp.abs(x)))
    r += xp.maximum(x, 0)
    return put(xp, r, out)


def _rsqrt(xp, x, out=None):
    r = xp.sqrt(x, out=out)
    return xp.divide(1.0, r, out=r)


def _gelu32_block(approximate):
    def fn(xb, ob, scratch):
        t = scratch[4]  # scratch 0-2 are erf's, 3 its argument
        if approximate == "tanh":
            np.multiply(xb, xb, out=t)  # tanh(k (x + c x^3))
            t *= np.float32(GELU_C)
            t += np.float32(1.0)
            t *= xb
            t *= np.float32(SQRT_2_OVER_PI)
            np.tanh(t, out=t)
        else:
            np.multiply(xb, np.float32(1.0 / SQRT_2), out=scratch[3])
            _erf32_block(scratch[3], t, scratch[:3])
        t += np.float32(1.0)
        t *= np.float32(0.5)
        np.multiply(xb, t, out=ob)

    return fn


def _gelu(xp, x, out=None, approximate="none"):
    if xp is np and x.dtype == np.float32:  # one pass over memory, the formula per block
        return _blocked(x, out, _gelu32_block(approximate), 5)
    if approximate == "tanh":
        inner = x * x
        inner *= GELU_C
        inner += 1.0
        inner *= x
        inner *= SQRT_2_OVER_PI
        t = xp.tanh(inner, out=inner)
    else:
        t = _erf(xp, x * (1.0 / SQRT_2))
    t += 1.0
    t *= 0.5
    return xp.multiply(x, t, out=out)


def _leaky_relu(xp, x, out=None, alpha=0.01):
    return put(xp, xp.where(x > 0, x, x * alpha).astype(x.dtype, copy=False), out)


def _clip(xp, x, out=None, lo=-math.inf, hi=math.inf):
    return xp.clip(x, lo, hi, out=out)


def _cast(xp, x, out=None, dtype="f32"):
    if out is None:
        return x.astype(np_dtype(dtype))
    xp.copyto(out, x, casting="unsafe")
    return out


def _scale(xp, x, out=None, c=1.0):
    return xp.multiply(x, xp.asarray(c, dtype=x.dtype), out=out)


def _add_scalar(xp, x, out=None, c=0.0):
    return xp.add(x, xp.asarray(c, dtype=x.dtype), out=out)


def _pow_scalar(xp, x, out=None, p=1.0):
    return xp.power(x, xp.asarray(p, dtype=x.dtype), out=out)


def _relu(xp, x, out=None):
    return xp.maximum(x, 0, out=out)


# --- gradient rules --------------------------------------------------------------------------


def _g_neg(b, n, g):
    return [b.op("neg", g)]


def _g_exp(b, n, g):
    return [b.op("mul", g, n.id)]


def _g_log(b, n, g):
    return [b.op("div", g, n.inputs[0])]


def _g_sqrt(b, n, g):
    return [b.op("div", g, b.op("scale", n.id, c=2.0))]


def _g_rsqrt(b, n, g):
    # d x^-1/2 = -1/2 x^-3/2 = -1/2 y^3
    y = n.id
    return [b.op("mul", g, b.op("scale", b.op("mul", y, b.op("square", y)), c=-0.5))]


def _g_abs(b, n, g):
    return [b.op("mul", g, b.op("sign", n.inputs[0]))]


def _g_relu(b, n, g):
    # from the output (relu(x) > 0 exactly where x > 0): the input then has one reader, so a
    # bias add before the relu fuses with it and its value need not be kept for the backward
    y = n.id
    return [mask_to(b, b.op("gt", y, const_like(b, 0.0, y)), g)]


def _g_tanh(b, n, g):
    return [b.op("mul", g, one_minus(b, b.op("square", n.id)))]


def _g_sigmoid(b, n, g):
    y = n.id
    return [b.op("mul", g, b.op("mul", y, one_minus(b, y)))]


def _g_softplus(b, n, g):
    return [b.op("mul", g, b.op("sigmoid", n.inputs[0]))]


def _g_sin(b, n, g):
    return [b.op("mul", g, b.op("cos", n.inputs[0]))]


def _g_cos(b, n, g):
    return [b.op("neg", b.op("mul", g, b.op("sin", n.inputs[0])))]


def _g_square(b, n, g):
    return [b.op("mul", g, b.op("scale", n.inputs[0], c=2.0))]


def _g_reciprocal(b, n, g):
    return [b.op("neg", b.op("mul", g, b.op("square", n.id)))]


def _g_erf(b, n, g):
    x = n.inputs[0]
    d = b.op("scale", b.op("exp", b.op("neg", b.op("square", x))), c=TWO_OVER_SQRT_PI)
    return [b.op("mul", g, d)]


def _g_log1p(b, n, g):
    return [b.op("div", g, b.op("add_scalar", n.inputs[0], c=1.0))]


def _g_gelu(b, n, g):
    x = n.inputs[0]
    x2 = b.op("square", x)
    if n.attrs.get("approximate", "none") == "tanh":
        # y = x/2 (1 + t), t = tanh(k (x + c x^3)):
        # dy = (1 + t)/2 + x/2 (1 - t^2) k (1 + 3 c x^2)
        u = b.op(
            "scale",
            b.op("mul", x, b.op("add_scalar", b.op("scale", x2, c=GELU_C), c=1.0)),
            c=SQRT_2_OVER_PI,
        )
        t = b.op("tanh", u)
        du = b.op(
            "scale", b.op("add_scalar", b.op("scale", x2, c=3 * GELU_C), c=1.0), c=SQRT_2_OVER_PI
        )
        left = b.op("scale", b.op("add_scalar", t, c=1.0), c=0.5)
        right = b.op(
            "mul", b.op("scale", x, c=0.5), b.op("mul", one_minus(b, b.op("square", t)), du)
        )
        return [b.op("mul", g, b.op("add", left, right))]
    # y = x Phi(x): dy = Phi(x) + x phi(x)
    cdf = b.op(
        "scale", b.op("add_scalar", b.op("erf", b.op("scale", x, c=1 / SQRT_2)), c=1.0), c=0.5
    )
    pdf = b.op("scale", b.op("exp", b.op("scale", x2, c=-0.5)), c=INV_SQRT_2PI)
    return [b.op("mul", g, b.op("add", cdf, b.op("mul", x, pdf)))]


def _g_leaky_relu(b, n, g):
    x = n.inputs[0]
    cond = b.op("gt", x, const_like(b, 0.0, x))
    return [b.op("where", cond, g, b.op("scale", g, c=n.attrs["alpha"]))]


def _g_clip(b, n, g):
    x, lo, hi = n.inputs[0], n.attrs["lo"], n.attrs["hi"]
    conds = []
    if lo != -math.inf:
        conds.append(b.op("ge", x, const_like(b, lo, x)))
    if hi != math.inf:
        conds.append(b.op("le", x, const_like(b, hi, x)))
    if not conds:
        return [g]
    cond = conds[0] if len(conds) == 1 else b.op("logical_and", *conds)
    return [mask_to(b, cond, g)]


def _g_cast(b, n, g):
    src = b.type_of(n.inputs[0]).dtype
    if src[0] != "f" or n.attrs["dtype"][0] != "f":
        return [None]
    return [b.op("cast", g, dtype=src)]


def _g_scale(b, n, g):
    return [b.op("scale", g, c=n.attrs["c"])]


def _g_identity(b, n, g):
    return [g]


def _g_pow_scalar(b, n, g):
    p = n.attrs["p"]
    x = n.inputs[0]
    return [b.op("mul", g, b.op("scale", b.op("pow_scalar", x, p=p - 1.0), c=p))]


def _infer_cast(ts, attrs):
    if attrs["dtype"] not in ("f16", "f32", "f64", "i32", "i64", "bool"):
        from dslc.errors import DTypeError

        raise DTypeError(f"cast: unknown dtype {attrs['dtype']!r}")
    return ts[0].with_dtype(attrs["dtype"])


def _infer_clip(ts, attrs):
    need_numeric(ts[0], "clip")
    lo, hi = attrs["lo"], attrs["hi"]
    if lo > hi:
        from dslc.errors import ValueError_

        raise ValueError_(f"clip: lo ({lo}) is greater than hi ({hi})")
    return ts[0]


def _infer_gelu(ts, attrs):
    if attrs["approximate"] not in ("none", "tanh"):
        from dslc.errors import ValueError_

        raise ValueError_(
            f'gelu: approximate must be "none" or "tanh", got {attrs["approximate"]!r}'
        )
    need_float(ts[0], "gelu")
    return ts[0]


# --- unary declarations ----------------------------------------------------------------------

_unary(
    "neg",
    grad=_g_neg,
    kernel=lambda xp, x, out=None: xp.negative(x, out=out),
    expr="(-{0})",
    infer=_numeric_unary("neg"),
)
_unary("exp", grad=_g_exp, kernel=lambda xp, x, out=None: xp.exp(x, out=out), expr="exp({0})")
_unary("log", grad=_g_log, kernel=lambda xp, x, out=None: xp.log(x, out=out), expr="log({0})")
_unary("sqrt", grad=_g_sqrt, kernel=lambda xp, x, out=None: xp.sqrt(x, out=out), expr="sqrt({0})")
_unary("rsqrt", grad=_g_rsqrt, kernel=_rsqrt, expr="(1.0 / sqrt({0}))")
_unary(
    "abs",
    grad=_g_abs,
    kernel=lambda xp, x, out=None: xp.abs(x, out=out),
    expr="abs({0})",
    infer=_numeric_unary("abs"),
)
_unary("relu", grad=_g_relu, kernel=_relu, expr="max({0}, 0.0)", infer=_numeric_unary("relu"))
_unary("tanh", grad=_g_tanh, kernel=lambda xp, x, out=None: xp.tanh(x, out=out), expr="tanh({0})")
_unary("sigmoid", grad=_g_sigmoid, kernel=_sigmoid, expr="(1.0 / (1.0 + exp(-{0})))")
_unary(
    "softplus", grad=_g_softplus, kernel=_softplus, expr="(max({0}, 0.0) + log1p(exp(-abs({0}))))"
)
_unary("sin", grad=_g_sin, kernel=lambda xp, x, out=None: xp.sin(x, out=out), expr="sin({0})")
_unary("cos", grad=_g_cos, kernel=lambda xp, x, out=None: xp.cos(x, out=out), expr="cos({0})")
_unary(
    "square",
    grad=_g_square,
    kernel=lambda xp, x, out=None: xp.multiply(x, x, out=out),
    expr="({0} * {0})",
    infer=_numeric_unary("square"),
)
_unary(
    "reciprocal",
    grad=_g_reciprocal,
    kernel=lambda xp, x, out=None: xp.divide(1.0, x, out=out),
    expr="(1.0 / {0})",
)
_unary("erf", grad=_g_erf, kernel=_erf, expr="erf({0})", flops=lambda i, o, a: 20 * _numel(o))
_unary(
    "log1p", grad=_g_log1p, kernel=lambda xp, x, out=None: xp.log1p(x, out=out), expr="log1p({0})"
)
_unary(
    "gelu",
    grad=_g_gelu,
    kernel=_gelu,
    infer=_infer_gelu,
    attrs={"approximate": "none"},
    expr=None,
    flops=lambda i, o, a: 8 * _numel(o),
    doc='x * Phi(x); approximate="tanh" uses the tanh form',
)
_unary(
    "leaky_relu",
    grad=_g_leaky_relu,
    kernel=_leaky_relu,
    attrs={"alpha": 0.01},
    expr="where({0} > 0.0, {0}, {0} * {alpha})",
)
_unary(
    "clip",
    grad=_g_clip,
    kernel=_clip,
    attrs={"lo": -math.inf, "hi": math.inf},
    infer=_infer_clip,
    expr="min(max({0}, {lo}), {hi})",
    doc="clamp to [lo, hi]",
)
_unary(
    "cast",
    grad=_g_cast,
    kernel=_cast,
    attrs={"dtype": "f32"},
    infer=_infer_cast,
    expr="cast_{dtype}({0})",
    doc="convert the element type; no gradient into integers",
)
_unary(
    "sign",
    grad=NONDIFF,
    kernel=lambda xp, x, out=None: xp.sign(x, out=out),
    expr="sign({0})",
    infer=_numeric_unary("sign"),
)
_unary(
    "scale",
    grad=_g_scale,
    kernel=_scale,
    attrs={"c": 1.0},
    expr="({0} * {c})",
    infer=_numeric_unary("scale"),
    doc="x * c for a constant c",
)
_unary(
    "add_scalar",
    grad=_g_identity,
    kernel=_add_scalar,
    attrs={"c": 0.0},
    expr="({0} + {c})",
    infer=_numeric_unary("add_scalar"),
    doc="x + c for a constant c",
)
_unary(
    "pow_scalar",
    grad=_g_pow_scalar,
    kernel=_pow_scalar,
    attrs={"p": 1.0},
    expr="pow({0}, {p})",
    doc="x ** p for a constant p",
)


def _numel(t):
    from dslc.ir.dims import numel

    return numel(t.shape)


# --- binary broadcasting ---------------------------------------------------------------------


def _bin(name, *, grad, kernel, expr, infer=None, doc=""):
    primitive(
        name,
        kind="broadcast",
        arity=2,
        infer=infer or _binary(name),
        grad=grad,
        numpy=kernel,
        expr=expr,
        doc=doc,
    )


def _g_add(b, n, g):
    return [g, g]


def _g_sub(b, n, g):
    return [g, b.op("neg", g)]


def _g_mul(b, n, g):
    a, c = n.inputs
    return [b.op("mul", g, c), b.op("mul", g, a)]


def _g_div(b, n, g):
    # d(a/c) = g/c, -g a/c^2 = -(g/c) y
    gc = b.op("div", g, n.inputs[1])
    return [gc, b.op("neg", b.op("mul", gc, n.id))]


def _g_pow(b, n, g):
    a, e = n.inputs
    ga = b.op("mul", g, b.op("mul", e, b.op("pow", a, b.op("add_scalar", e, c=-1.0))))
    ge = b.op("mul", g, b.op("mul", n.id, b.op("log", a)))
    return [ga, ge]


def _g_extremum(pick):
    # ties split the gradient evenly, as torch.maximum/minimum do
    def grad(b, n, g):
        a, c = n.inputs
        half = b.op("scale", g, c=0.5)
        zero = const_like(b, 0.0, g)
        tie = b.op("eq", a, c)
        ga = b.op("where", b.op(pick, a, c), g, b.op("where", tie, half, zero))
        gc = b.op("where", b.op(pick, c, a), g, b.op("where", tie, half, zero))
        return [ga, gc]

    return grad


def _ufunc(name):
    def kernel(xp, a, b, out=None):
        return getattr(xp, name)(a, b, out=out)

    kernel.__name__ = name
    return kernel


_bin("add", grad=_g_add, kernel=_ufunc("add"), expr="({0} + {1})")
_bin("sub", grad=_g_sub, kernel=_ufunc("subtract"), expr="({0} - {1})")
_bin("mul", grad=_g_mul, kernel=_ufunc("multiply"), expr="({0} * {1})")
_bin(
    "div",
    grad=_g_div,
    kernel=_ufunc("true_divide"),
    expr="({0} / {1})",
    infer=_binary("div", need=need_float),
)
_bin(
    "pow",
    grad=_g_pow,
    kernel=_ufunc("power"),
    expr="pow({0}, {1})",
    infer=_binary("pow", need=need_float),
)
_bin("maximum", grad=_g_extremum("gt"), kernel=_ufunc("maximum"), expr="max({0}, {1})")
_bin("minimum", grad=_g_extremum("lt"), kernel=_ufunc("minimum"), expr="min({0}, {1})")

for _name, _uf, _sym in (
    ("eq", "equal", "=="),
    ("ne", "not_equal", "!="),
    ("lt", "less", "<"),
    ("le", "less_equal", "<="),
    ("gt", "greater", ">"),
    ("ge", "greater_equal", ">="),
):
    _bin(
        _name,
        grad=NONDIFF,
        kernel=_ufunc(_uf),
        expr=f"({{0}} {_sym} {{1}})",
        infer=_binary(_name, out_dtype="bool", need=lambda t, op: None),
    )

_bin(
    "logical_and",
    grad=NONDIFF,
    kernel=_ufunc("logical_and"),
    expr="({0} & {1})",
    infer=_binary("logical_and", need=need_bool),
)
_bin(
    "logical_or",
    grad=NONDIFF,
    kernel=_ufunc("logical_or"),
    expr="({0} | {1})",
    infer=_binary("logical_or", need=need_bool),
)


def _infer_not(ts, attrs):
    need_bool(ts[0], "logical_not")
    return ts[0]


_unary(
    "logical_not",
    grad=NONDIFF,
    kernel=lambda xp, x, out=None: xp.logical_not(x, out=out),
    expr="({0} == 0)",
    infer=_infer_not,
)


def _infer_where(ts, attrs):
    need_bool(ts[0], "where: the condition")
    dtype = same_dtype(ts[1:], "where")
    return TensorType(broadcast_shapes(ts), dtype)


def _g_where(b, n, g):
    cond = n.inputs[0]
    zero = const_like(b, 0.0, g)
    return [None, b.op("where", cond, g, zero), b.op("where", cond, zero, g)]


def _same_array(a, b) -> bool:
    """Whether a and b are the very same elements (one buffer, one layout)."""
    ia, ib = getattr(a, "__array_interface__", None), getattr(b, "__array_interface__", None)
    if ia is None or ib is None:  # cupy: compare what it exposes
        return a is b
    return ia["data"][0] == ib["data"][0] and a.shape == b.shape and a.strides == b.strides


def _where(xp, c, a, d, out=None):
    if out is None:
        return xp.where(c, a, d)
    cb = xp.broadcast_to(c, out.shape)
    if xp.may_share_memory(out, a):  # the memory plan may write the result over `a`
        if _same_array(out, a) and not xp.may_share_memory(out, d):
            # only the other branch moves: a bool mask, not a float temporary
            xp.copyto(out, xp.broadcast_to(d, out.shape), where=xp.logical_not(cb))
            return out
        return put(xp, xp.where(c, a, d), out)
    xp.copyto(out, d)
    xp.copyto(out, xp.broadcast_to(a, out.shape), where=cb)
    return out


primitive(
    "where",
    kind="broadcast",
    arity=3,
    infer=_infer_where,
    grad=_g_where,
    numpy=_where,
    expr="where({0}, {1}, {2})",
    doc="a where cond holds, else b",
)
