"""Primitives: reductions (kind `reduction`), including the row-wise softmax family.

`axes` is None (every axis), an int, or a tuple of ints; negative axes count from the end.
"""

from __future__ import annotations

from dslc.errors import ShapeError
from dslc.ir.dims import Dim
from dslc.ir.types import TensorType
from dslc.ops.registry import NONDIFF, primitive
from dslc.ops.rules import (
    count,
    need_float,
    need_numeric,
    norm_axes,
    norm_axis,
    put,
    reduced_shape,
)

# --- helpers for the gradient rules ----------------------------------------------------------


def keep_shape(shape, axes):
    return tuple(Dim.const(1) if i in axes else d for i, d in enumerate(shape))


def expand_back(b, g, x, axes, keepdims):
    """Broadcast a reduced gradient `g` back over the shape of `x`."""
    xt = b.type_of(x)
    if not keepdims:
        g = b.op("reshape", g, shape=keep_shape(xt.shape, axes))
    return b.op("broadcast_to", g, shape=xt.shape)


def keep(b, y, x, axes, keepdims):
    """The reduced value `y` with the reduced axes kept as 1 (broadcasts against x)."""
    if keepdims:
        return y
    return b.op("reshape", y, shape=keep_shape(b.type_of(x).shape, axes))


def divide_by_count(b, t, n: Dim):
    """t / n for a (possibly symbolic) element count n."""
    if n.is_const:
        return b.op("scale", t, c=1.0 / n.value)
    dtype = b.type_of(t).dtype
    return b.op("div", t, b.op("full", shape=(), value=n, dtype=dtype))


def _axes(n, b):
    return norm_axes(n.attrs["axes"], b.type_of(n.inputs[0]).rank, n.op)


# --- type rules ------------------------------------------------------------------------------


def _infer_reduce(name, need):
    def infer(ts, attrs):
        need(ts[0], name)
        axes = norm_axes(attrs["axes"], ts[0].rank, name)
        return ts[0].with_shape(reduced_shape(ts[0].shape, axes, attrs["keepdims"]))

    return infer


def _infer_rowwise(name):
    def infer(ts, attrs):
        need_float(ts[0], name)
        norm_axis(attrs["axis"], ts[0].rank, name)
        return ts[0]

    return infer


def _reduce_flops(ts, out, attrs):
    from dslc.ir.dims import numel

    return numel(ts[0].shape)


def _red(name, *, grad, kernel, need=need_float, doc=""):
    primitive(
        name,
        kind="reduction",
        arity=1,
        infer=_infer_reduce(name, need),
        grad=grad,
        numpy=kernel,
        attrs={"axes": None, "keepdims": False},
        flops=_reduce_flops,
        doc=doc,
    )


# --- kernels ---------------------------------------------------------------------------------


def _ax(x, axes):
    return norm_axes(axes, x.ndim, "reduce")


def _sum(xp, x, out=None, axes=None, keepdims=False):
    return xp.sum(x, axis=_ax(x, axes), keepdims=keepdims, out=out)


def _mean(xp, x, out=None, axes=None, keepdims=False):
    return xp.mean(x, axis=_ax(x, axes), keepdims=keepdims, out=out)


def _max(xp, x, out=None, axes=None, keepdims=False):
    return xp.max(x, axis=_ax(x, axes), keepdims=keepdims, out=out)


def _min(xp, x, out=None, axes=None, keepdims=False):
    return xp.min(x, axis=_ax(x, axes), keepdims=keepdims, out=out)


def _var(xp, x, out=None, axes=None, keepdims=False):
    return xp.var(x, axis=_ax(x, axes), keepdims=keepdims, out=out)


def _safe_max(xp, x, axes):
    m = xp.max(x, axis=axes, keepdims=True)
    return xp.where(xp.isfinite(m), m, 0).astype(x.dtype, copy=False)


def _logsumexp(xp, x, out=None, axes=None, keepdims=False):
    axes = _ax(x, axes)
    m = _safe_max(xp, x, axes)
    s = xp.sum(xp.exp(x - m), axis=axes, keepdims=True)
    r = xp.log(s, out=s)
    r += m
    if not keepdims:
        r = r.reshape([d for i, d in enumerate(x.shape) if i not in axes])
    return put(xp, r, out)


def _softmax(xp, x, out=None, axis=-1):
    m = _safe_max(xp, x, (axis,))
    e = xp.subtract(x, m, out=out)
    xp.exp(e, out=e)
    s = xp.sum(e, axis=axis, keepdims=True)
    e *= xp.reciprocal(s, out=s)  # one division per row, a multiply per element
    return e


def _log_softmax(xp, x, out=None, axis=-1):
    m = _safe_max(xp, x, (axis,))
    r = xp.subtract(x, m, out=out)
    e = xp.exp(r)
    s = xp.sum(e, axis=axis, keepdims=True)
    r -= xp.log(s, out=s)
    return r


def _argmax(xp, x, out=None, axis=-1, keepdims=False):
    r = xp.argmax(x, axis=axis, keepdims=keepdims)
    return put(xp, r, out)


def _sum_to(xp, x, out=None, shape=()):
    lead = x.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, d in enumerate(shape) if d == 1 and x.shape[lead + i] != 1
    )
    r = xp.sum(x, axis=axes, keepdims=True) if axes else x
    r = r.reshape(tuple(shape))
    return put(xp, r, out)


# --- gradient rules --------------------------------------------------------------------------


def _g_sum(b, n, g):
    return [expand_back(b, g, n.inputs[0], _axes(n, b), n.attrs["keepdims"])]


def _g_mean(b, n, g):
    x = n.inputs[0]
    axes = _axes(n, b)
    cnt = count(b.type_of(x).shape, axes)
    return [divide_by_count(b, expand_back(b, g, x, axes, n.attrs["keepdims"]), cnt)]


def _g_extremum(b, n, g):
    # the gradient is shared evenly among tied extrema (as torch.amax does)
    x = n.inputs[0]
    axes, kd = _axes(n, b), n.attrs["keepdims"]
    hit = b.op("cast", b.op("eq", x, keep(b, n.id, x, axes, kd)), dtype=b.type_of(x).dtype)
    ties = b.op("sum", hit, axes=axes, keepdims=True)
    return [b.op("mul", b.op("div", hit, ties), keep(b, g, x, axes, kd))]


def _g_var(b, n, g):
    # d var = 2 (x - mean) / n
    x = n.inputs[0]
    axes, kd = _axes(n, b), n.attrs["keepdims"]
    centred = b.op("sub", x, b.op("mean", x, axes=axes, keepdims=True))
    cnt = count(b.type_of(x).shape, axes)
    d = divide_by_count(b, b.op("scale", centred, c=2.0), cnt)
    return [b.op("mul", d, keep(b, g, x, axes, kd))]


def _g_logsumexp(b, n, g):
    x = n.inputs[0]
    axes, kd = _axes(n, b), n.attrs["keepdims"]
    p = b.op("exp", b.op("sub", x, keep(b, n.id, x, axes, kd)))
    return [b.op("mul", p, keep(b, g, x, axes, kd))]


def _g_softmax(b, n, g):
    # dx = y (g - sum(g y))
    y, axis = n.id, n.attrs["axis"]
    s = b.op("sum", b.op("mul", g, y), axes=(axis,), keepdims=True)
    return [b.op("mul", y, b.op("sub", g, s))]


def _g_log_softmax(b, n, g):
    # dx = g - exp(y) sum(g)
    y, axis = n.id, n.attrs["axis"]
    s = b.op("sum", g, axes=(axis,), keepdims=True)
    return [b.op("sub", g, b.op("mul", b.op("exp", y), s))]


def _g_sum_to(b, n, g):
    return [b.op("broadcast_to", g, shape=b.type_of(n.inputs[0]).shape)]


# --- declarations ----------------------------------------------------------------------------

_red("sum", grad=_g_sum, kernel=_sum, need=need_numeric)
_red("mean", grad=_g_mean, kernel=_mean)
_red("max", grad=_g_extremum, kernel=_max, need=need_numeric, doc="ties share the gradient evenly")
_red("min", grad=_g_extremum, kernel=_min, need=need_numeric, doc="ties share the gradient evenly")
_red("var", grad=_g_var, kernel=_var, doc="population variance (divides by n)")
_red("logsumexp", grad=_g_logsumexp, kernel=_logsumexp, doc="log(sum(exp(x))), max subtracted")


def _infer_argmax(ts, attrs):
    need_numeric(ts[0], "argmax")
    axis = norm_axis(attrs["axis"], ts[0].rank, "argmax")
    return TensorType(reduced_shape(ts[0].shape, (axis,), attrs["keepdims"]), "i64")


primitive(
    "argmax",
    kind="reduction",
    arity=1,
    infer=_infer_argmax,
    grad=NONDIFF,
    numpy=_argmax,
    attrs={"axis": -1, "keepdims": False},
    flops=_reduce_flops,
    doc="i64 index of the first maximum",
)
primitive(
    "softmax",
    kind="reduction",
    arity=1,
    infer=_infer_rowwise("softmax"),
    grad=_g_softmax,
    numpy=_softmax,
    attrs={"axis": -1},
    flops=lambda i, o, a: 5 * _reduce_flops(i, o, a),
)
primitive(
    "log_softmax",
    kind="reduction",
    arity=1,
    infer=_infer_rowwise("log_softmax"),
    grad=_g_log_softmax,
    numpy=_log_softmax,
    attrs={"axis": -1},
    flops=lambda i, o, a: 5 * _reduce_flops(i, o, a),
)


def _infer_sum_to(ts, attrs):
    from dslc.ir.dims import to_dim

    x = ts[0]
    shape = tuple(to_dim(d) for d in attrs["shape"])
    lead = x.rank - len(shape)
    ok = lead >= 0 and all(d == 1 or d == x.shape[lead + i] for i, d in enumerate(shape))
    if not ok:
        from dslc.ir.dims import format_shape

        raise ShapeError(f"sum_to: {x} does not broadcast from {format_shape(shape)}")
    return x.with_shape(shape)


primitive(
    "sum_to",
    kind="reduction",
    arity=1,
    infer=_infer_sum_to,
    grad=_g_sum_to,
    numpy=_sum_to,
    attrs={"shape": ()},
    flops=_reduce_flops,
    doc="sum a broadcast result back to `shape`",
)
