"""Primitives: random sources (kind `source`, `random=True`); kernels also receive `rng=`."""

from __future__ import annotations

import numpy as np

from dslc.errors import ValueError_
from dslc.ir.dims import Dim
from dslc.ops.registry import NONDIFF, primitive, zero_flops
from dslc.ops.rules import need_float, norm_axes


def _mask_shape(shape, broadcast_axes):
    axes = norm_axes(tuple(broadcast_axes), len(shape), "dropout_mask")
    return tuple(Dim.const(1) if i in axes else d for i, d in enumerate(shape))


def _infer_dropout_mask(ts, attrs):
    (x,) = ts
    need_float(x, "dropout_mask")
    p = attrs["p"]
    if not 0.0 <= p < 1.0:
        raise ValueError_(f"dropout: the drop probability must be in [0, 1), got {p}")
    return x.with_shape(_mask_shape(x.shape, attrs["broadcast_axes"]))


def _dropout_mask(xp, x, out=None, p=0.5, broadcast_axes=(), rng=None):
    axes = norm_axes(tuple(broadcast_axes), x.ndim, "dropout_mask")
    shape = tuple(1 if i in axes else d for i, d in enumerate(x.shape))
    udtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float32
    keep = rng.random(shape, dtype=udtype) >= p
    if out is None:
        out = xp.empty(shape, dtype=x.dtype)
    return xp.multiply(keep, x.dtype.type(1.0 / (1.0 - p)), out=out)


primitive(
    "dropout_mask",
    kind="source",
    arity=1,
    infer=_infer_dropout_mask,
    grad=NONDIFF,
    numpy=_dropout_mask,
    random=True,
    attrs={"p": 0.5, "broadcast_axes": ()},
    flops=zero_flops,
    doc="0 or 1/(1-p) in x's shape, size 1 along `broadcast_axes` (spatial dropout)",
)
