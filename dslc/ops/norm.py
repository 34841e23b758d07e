"""Primitives: layer normalisation over the last axis and its backward pass (kind `opaque`).

No `.nn` file needs to name them: the `layer_norm` pass finds the pattern the `layer_norm`
layer is made of (`(x - mean(x)) * rsqrt(var(x) + eps) * gamma + beta`) and puts one node in
its place; the layer stays a block of primitives. Kernels live in `norm_kernels` (NumPy)
and `norm_numba` (compiled).
"""

from __future__ import annotations

from dslc.errors import ShapeError
from dslc.ir.dims import numel
from dslc.ops import norm_kernels as nk
from dslc.ops.nn import no_second_order
from dslc.ops.registry import primitive
from dslc.ops.rules import need_float, same_dtype, shape_str


def _check(x, gamma, other, op):
    """D of x[..., D], with gamma [D] and `other` of x's dtype."""
    same_dtype([x, gamma, other], op)
    need_float(x, op)
    if x.rank < 1:
        raise ShapeError(f"{op}: x must have at least one axis, got {x}")
    d = x.shape[-1]
    if gamma.shape != (d,):
        raise ShapeError(f"{op}: gamma must be {shape_str((d,))}, got {gamma}")
    return d


def _infer(ts, attrs):
    x, gamma, beta = ts
    d = _check(x, gamma, beta, "layer_norm")
    if beta.shape != (d,):
        raise ShapeError(f"layer_norm: beta must be {shape_str((d,))}, got {beta}")
    return x


def _grad(b, n, g):
    x, gamma, _ = n.inputs
    shape = b.type_of(x).shape
    rows = numel(shape[:-1])
    packed = b.op("layer_norm_grad", x, gamma, g, **n.attrs)  # [rows + 2, D]
    dx = b.op("slice", packed, axis_slices=((0, 0, rows, 1),))
    dx = b.op("reshape", dx, shape=shape)
    return [dx, b.op("index", packed, axis=0, i=-2), b.op("index", packed, axis=0, i=-1)]


def _flops(factor):
    def flops(ts, out, attrs):
        return factor * 8 * numel(ts[0].shape)

    return flops


primitive(
    "layer_norm",
    kind="opaque",
    arity=3,
    infer=_infer,
    grad=_grad,
    numpy=nk.layer_norm,
    numba="dslc.ops.norm_numba:layer_norm",
    attrs={"eps": 1e-5},
    flops=_flops(1),
    doc="(x[..., D], gamma[D], beta[D]) -> [..., D]: (x - mean) / sqrt(var + eps) * gamma + "
    "beta over the last axis, population variance",
)


def _infer_grad(ts, attrs):
    x, gamma, dy = ts
    _check(x, gamma, dy, "layer_norm_grad")
    if dy.shape != x.shape:
        raise ShapeError(f"layer_norm_grad: dy must have x's shape {shape_str(x.shape)}, got {dy}")
    return x.with_shape((numel(x.shape[:-1]) + 2, x.shape[-1]))


primitive(
    "layer_norm_grad",
    kind="opaque",
    arity=3,
    infer=_infer_grad,
    grad=no_second_order,
    numpy=nk.layer_norm_grad,
    numba="dslc.ops.norm_numba:layer_norm_grad",
    attrs={"eps": 1e-5},
    flops=_flops(2),
    doc="backward of layer_norm: (x[..., D], gamma, dy) -> [R + 2, D] for the R rows of x: "
    "dx as rows, then d gamma, then d beta; the row statistics are computed again",
)
