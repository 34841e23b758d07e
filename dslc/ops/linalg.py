"""Primitives: matmul and the integer-indexed gathers with their scatter gradients (`opaque`)."""

from __future__ import annotations

import numpy as np

from dslc.errors import ShapeError, ValueError_
from dslc.ir.dims import Dim, numel, to_dim
from dslc.ir.types import TensorType, np_dtype
from dslc.ops.blas_pool import matmul2d, stacked_matmul
from dslc.ops.registry import NONDIFF, primitive, zero_flops
from dslc.ops.rules import (
    broadcast_shapes,
    is_cupy,
    need_index,
    need_numeric,
    norm_axis,
    put,
    same_dtype,
)

# --- matmul ----------------------------------------------------------------------------------


def _as_matrices(a: TensorType, b: TensorType):
    """Shapes with NumPy's 1-D promotion: [K] @ ... is [1, K], ... @ [K] is [K, 1]."""
    ash = a.shape if a.rank >= 2 else (Dim.const(1),) + a.shape
    bsh = b.shape if b.rank >= 2 else b.shape + (Dim.const(1),)
    return ash, bsh


def _infer_matmul(ts, attrs):
    a, b = ts
    dtype = same_dtype(ts, "matmul")
    need_numeric(a, "matmul")
    if a.rank == 0 or b.rank == 0:
        raise ShapeError(f"matmul needs operands with at least one dimension, got {a} @ {b}")
    ash, bsh = _as_matrices(a, b)
    if ash[-1] != bsh[-2]:
        raise ShapeError(f"matmul: inner dimensions differ: {a} @ {b} ({ash[-1]} vs {bsh[-2]})")
    try:
        batch = broadcast_shapes([TensorType(ash[:-2], dtype), TensorType(bsh[:-2], dtype)])
    except ShapeError:
        raise ShapeError(f"matmul: batch dimensions of {a} @ {b} do not broadcast") from None
    out = batch + (ash[-2:-1] if a.rank >= 2 else ()) + (bsh[-1:] if b.rank >= 2 else ())
    return TensorType(out, dtype)


def _matmul(xp, a, b, out=None):
    if a.ndim > 2 and b.ndim == 2:
        # NumPy's stacked matmul misses BLAS for [..., M, K] @ [K, N] (70x slower measured):
        # fold the batch axes into the rows, one GEMM
        rows = a.reshape(-1, a.shape[-1])
        mm = matmul2d if xp is np else xp.matmul
        if out is None:
            return mm(rows, b).reshape(a.shape[:-1] + b.shape[-1:])
        if out.flags.c_contiguous:
            mm(rows, b, out=out.reshape(rows.shape[0], b.shape[-1]))
            return out
    if xp is np and a.ndim > 2 and b.ndim > 2:
        # a stack of GEMMs: one slab per thread, single-threaded BLAS in each (blas_pool)
        return stacked_matmul(a, b, out=out)
    if xp is np and a.ndim == 2 and b.ndim == 2:
        return matmul2d(a, b, out=out)
    return xp.matmul(a, b, out=out)


def swap_last(b, x):
    """x with its last two axes swapped."""
    r = b.type_of(x).rank
    return b.op("transpose", x, perm=tuple(range(r - 2)) + (r - 1, r - 2))


def _g_matmul(b, n, g):
    a, c = n.inputs
    at, ct = b.type_of(a), b.type_of(c)
    ash, csh = _as_matrices(at, ct)
    a2 = a if at.rank >= 2 else b.op("reshape", a, shape=ash)
    c2 = c if ct.rank >= 2 else b.op("reshape", c, shape=csh)
    if at.rank < 2 or ct.rank < 2:
        gsh = list(b.type_of(g).shape)
        if ct.rank < 2:
            gsh.append(1)
        if at.rank < 2:
            gsh.insert(len(gsh) - 1, 1)
        g = b.op("reshape", g, shape=tuple(gsh))
    ga = b.op("matmul", g, swap_last(b, c2))
    if at.rank > 2 and ct.rank == 2:
        # a dense layer on [..., M, K] inputs: the weight gradient is one GEMM over all rows,
        # [K, rows] @ [rows, N], not a batch of [K, M] @ [M, N] products summed afterwards
        k, nn = ash[-1], csh[-1]
        rows = numel(ash[:-1])
        a_rows = b.op("reshape", a, shape=(rows, k))
        g_rows = b.op("reshape", g, shape=(rows, nn))
        gc = b.op("matmul", swap_last(b, a_rows), g_rows)
    else:
        gc = b.op("matmul", swap_last(b, a2), g)
    if at.rank < 2:
        ga = b.op("reshape", b.op("sum_to", ga, shape=ash), shape=at.shape)
    if ct.rank < 2:
        gc = b.op("reshape", b.op("sum_to", gc, shape=csh), shape=ct.shape)
    return [ga, gc]


def _matmul_flops(ts, out, attrs):
    ash, _ = _as_matrices(ts[0], ts[1])
    return 2 * numel(out.shape) * ash[-1]


primitive(
    "matmul",
    kind="opaque",
    arity=2,
    infer=_infer_matmul,
    grad=_g_matmul,
    numpy=_matmul,
    flops=_matmul_flops,
    doc="NumPy matmul: batched, 1-D operands promoted",
)

# --- gather / scatter_add_rows ---------------------------------------------------------------


def _infer_gather(ts, attrs):
    table, idx = ts
    need_index(idx, "gather")
    if table.rank < 1:
        raise ShapeError(f"gather: the table must have at least one dimension, got {table}")
    return TensorType(idx.shape + table.shape[1:], table.dtype)


def _gather(xp, table, idx, out=None):
    n = table.shape[0]
    if out is not None and idx.size and n and -n <= int(idx.min()) and int(idx.max()) < n:
        # indices checked: `wrap` (negative ones count from the end, as with `raise`) writes
        # straight into `out`; `raise` goes through a copy (0.23 -> 0.1 ms for lstm_cls)
        return xp.take(table, idx, axis=0, out=out, mode="wrap")
    return xp.take(table, idx, axis=0, out=out)


def _g_gather(b, n, g):
    table, idx = n.inputs
    rows = b.type_of(table).shape[0]
    return [b.op("scatter_add_rows", g, idx, n=rows), None]


primitive(
    "gather",
    kind="opaque",
    arity=2,
    infer=_infer_gather,
    grad=_g_gather,
    numpy=_gather,
    flops=zero_flops,
    doc="rows of `table` at integer `indices` of any shape",
)


def _infer_scatter(ts, attrs):
    g, idx = ts
    need_index(idx, "scatter_add_rows")
    if g.shape[: idx.rank] != idx.shape:
        raise ShapeError(f"scatter_add_rows: {g} does not start with the index shape {idx}")
    return TensorType((to_dim(attrs["n"]),) + g.shape[idx.rank :], g.dtype)


def _scatter_add_rows(xp, g, idx, out=None, n=0):
    shape = (n,) + g.shape[idx.ndim :]
    if out is None:
        out = xp.zeros(shape, dtype=g.dtype)
    else:
        out.fill(0)
    rows = g.reshape((-1,) + g.shape[idx.ndim :])
    if is_cupy(xp):
        import cupyx

        cupyx.scatter_add(out, idx.ravel(), rows)
    else:
        _add_rows(out, idx.ravel(), rows)
    return out


def _add_rows(out, idx, rows):
    """out[idx[k]] += rows[k] for every k, in the order of k (as np.add.at, 3-5x faster).

    Rows are grouped by how many earlier rows share their index: within one group every
    index is distinct, so each group is one vectorised `out[i] += rows` (groups are added
    in order, so each table row sums its rows in their original order). When an index
    repeats often, the rows sorted by index are summed per run with `add.reduceat` (the same
    sums up to rounding in the last bits, deterministic).
    """
    n = idx.shape[0]
    if n == 0:
        return
    order = np.argsort(idx, kind="stable")
    s = idx[order]
    first = np.empty(n, dtype=bool)
    first[0] = True
    np.not_equal(s[1:], s[:-1], out=first[1:])
    pos = np.arange(n)
    rank = pos - np.maximum.accumulate(np.where(first, pos, 0))  # earlier rows, same index
    top = int(rank.max())
    if top > 16:  # indices repeat often (a small vocabulary): sum each index's run at once
        starts = np.flatnonzero(first)
        out[s[starts]] += np.add.reduceat(rows[order], starts, axis=0)
        return
    for r in range(top + 1):
        sel = order[rank == r]
        out[idx[sel]] += rows[sel]


def _g_scatter(b, n, g):
    return [b.op("gather", g, n.inputs[1]), None]


primitive(
    "scatter_add_rows",
    kind="opaque",
    arity=2,
    infer=_infer_scatter,
    grad=_g_scatter,
    numpy=_scatter_add_rows,
    numba="dslc.ops.gather_numba:scatter_add_rows",
    attrs={"n": 0},
    flops=lambda ts, out, a: numel(ts[0].shape),
    doc="sum rows of `g` into an [n, ...] table at `indices` (gradient of gather)",
)

# --- take_along / put_along ------------------------------------------------------------------


def _infer_take_along(ts, attrs):
    x, idx = ts
    need_index(idx, "take_along")
    axis = norm_axis(attrs["axis"], x.rank, "take_along")
    rest = x.shape[:axis] + x.shape[axis + 1 :]
    if idx.shape != rest:
        raise ShapeError(
            f"take_along axis {axis}: indices {idx} must have the shape of {x} without axis "
            f"{axis}, {TensorType(rest, idx.dtype)}"
        )
    return TensorType(idx.shape, x.dtype)


def _take_along(xp, x, idx, out=None, axis=-1):
    axis %= x.ndim
    r = xp.take_along_axis(x, xp.expand_dims(idx, axis), axis)
    return put(xp, xp.squeeze(r, axis), out)


def _g_take_along(b, n, g):
    x, idx = n.inputs
    xt = b.type_of(x)
    axis = n.attrs["axis"] % xt.rank
    return [b.op("put_along", g, idx, axis=axis, n=xt.shape[axis]), None]


primitive(
    "take_along",
    kind="opaque",
    arity=2,
    infer=_infer_take_along,
    grad=_g_take_along,
    numpy=_take_along,
    attrs={"axis": -1},
    flops=zero_flops,
    doc="x[..., indices[...], ...] along `axis`, which the result drops",
)


def _infer_put_along(ts, attrs):
    g, idx = ts
    need_index(idx, "put_along")
    if g.shape != idx.shape:
        raise ShapeError(f"put_along: values {g} and indices {idx} differ in shape")
    axis = norm_axis(attrs["axis"], g.rank + 1, "put_along")
    return g.with_shape(g.shape[:axis] + (to_dim(attrs["n"]),) + g.shape[axis:])


def _put_along(xp, g, idx, out=None, axis=-1, n=0):
    axis %= g.ndim + 1
    shape = g.shape[:axis] + (n,) + g.shape[axis:]
    if out is None:
        out = xp.zeros(shape, dtype=g.dtype)
    else:
        out.fill(0)
    grids = [
        xp.arange(s).reshape((1,) * j + (s,) + (1,) * (g.ndim - j - 1))
        for j, s in enumerate(g.shape)
    ]
    out[tuple(grids[:axis]) + (idx,) + tuple(grids[axis:])] = g
    return out


def _g_put_along(b, n, g):
    return [b.op("take_along", g, n.inputs[1], axis=n.attrs["axis"]), None]


primitive(
    "put_along",
    kind="opaque",
    arity=2,
    infer=_infer_put_along,
    grad=_g_put_along,
    numpy=_put_along,
    attrs={"axis": -1, "n": 0},
    flops=zero_flops,
    doc="zeros with `g` placed at `indices` along a new axis of size n (gradient of take_along)",
)

# --- one_hot ---------------------------------------------------------------------------------


def _infer_one_hot(ts, attrs):
    (idx,) = ts
    need_index(idx, "one_hot")
    depth = to_dim(attrs["depth"])
    if depth.is_const and depth.value <= 0:
        raise ValueError_(f"one_hot: depth must be positive, got {depth}")
    return TensorType(idx.shape + (depth,), attrs["dtype"])


def _one_hot(xp, idx, out=None, depth=0, dtype="f32"):
    hit = xp.expand_dims(idx, -1) == xp.arange(depth)
    if out is None:
        return hit.astype(np_dtype(dtype))
    xp.copyto(out, hit, casting="unsafe")
    return out


primitive(
    "one_hot",
    kind="opaque",
    arity=1,
    infer=_infer_one_hot,
    grad=NONDIFF,
    numpy=_one_hot,
    attrs={"depth": 0, "dtype": "f32"},
    flops=zero_flops,
    doc="indices [...] -> [..., depth] of 0/1",
)
