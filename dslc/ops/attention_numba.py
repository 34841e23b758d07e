"""Compiled CPU kernels of attention and its backward pass: one Numba loop over the
(batch, head) pairs.

The unfused graph writes the [B, H, T, T] scores, reads them back for the mask and the
softmax, and again for the product with v: three passes over a tensor (8 MB for the
benchmark's GPT) that does not stay in cache, and two stacked GEMMs that NumPy runs as one
small BLAS call at a time. Here each (batch, head) pair computes its [T, S] scores with one
GEMM into a buffer that stays in the core's cache (q k^T, the scale folded into the GEMM),
applies the masks and the softmax row by row there, and multiplies by v straight into the
[B, T, H, d] result. The backward computes the weights again the same way (nothing of
[B, H, T, T] is stored between the passes), then dv = p^T g, dp = g v^T, the softmax
gradient in place, dq = ds k and dk = ds^T q, each written into its [B, T, H, d] slot.

The pairs are split into one slab per thread (`blas_pool.in_row_slabs`), each calling
single-threaded GEMMs (`cblas`, NumPy's own OpenBLAS). float32 uses `exp32` of
`dslc.ops.numba_math` with a float32 row sum, as the generated softmax does; float64 uses
`math.exp`. Up to two masks; with more, or operands whose rows do not have a unit stride,
or without a usable BLAS, the NumPy kernels (`attention_kernels`) run instead.
Importing this module needs numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dslc.ops import attention_kernels as ak
from dslc.ops import cblas
from dslc.ops.blas_pool import in_row_slabs
from dslc.ops.numba_math import exp_of, like, zero_of

# reassoc lets LLVM vectorise the row sums (5-8x faster here, measured)
_OPTS = dict(nogil=True, cache=True, error_model="numpy", fastmath={"contract", "reassoc"})
MAX_MASKS = 2


@njit(**_OPTS)
def _mask_row(row, m, fill, n):
    for j in range(n):
        row[j] = row[j] if m[j] else fill


@njit(**_OPTS)
def _softmax_row(row, n):
    """row = softmax(row), in place; a NaN anywhere gives NaN, as NumPy's maximum does."""
    top = row[0]
    nan = False
    for j in range(n):
        x = row[j]
        top = x if x > top else top
        nan |= x != x
    if nan:  # NaN of the row's type: 0 / 0
        top = zero_of(top) / zero_of(top)
    total = zero_of(top)
    for j in range(n):
        e = exp_of(row[j] - top)
        row[j] = e
        total += e
    inv = like(total, 1) / total
    for j in range(n):
        row[j] = row[j] * inv


@njit(**_OPTS)
def _weights(q, k, m1, m2, nmask, f1, f2, scale, b, h, p):
    """p = the [T, S] attention weights of pair (b, h)."""
    cblas.gemm_ex(q[b, h], k[b, h], p, scale, 0.0, False, True)
    t, s = p.shape
    for i in range(t):
        row = p[i]
        if nmask > 0:
            _mask_row(row, m1[b, h, i], f1, s)
        if nmask > 1:
            _mask_row(row, m2[b, h, i], f2, s)
        _softmax_row(row, s)


@njit(**_OPTS)
def _forward(q, k, v, m1, m2, nmask, f1, f2, scale, out, lo, hi):
    nh, t, s = q.shape[1], q.shape[2], k.shape[2]
    p = np.empty((t, s), q.dtype)
    for bh in range(lo, hi):
        b, h = bh // nh, bh % nh
        _weights(q, k, m1, m2, nmask, f1, f2, scale, b, h, p)
        cblas.gemm_ex(p, v[b, h], out[b, :, h, :], 1.0, 0.0, False, False)


@njit(**_OPTS)
def _softmax_grad_row(p, dp, n):
    """dp = p * (dp - sum(dp * p)), in place."""
    r = zero_of(p[0])
    for j in range(n):
        r += dp[j] * p[j]
    for j in range(n):
        dp[j] = p[j] * (dp[j] - r)


@njit(**_OPTS)
def _backward(q, k, v, m1, m2, nmask, f1, f2, scale, g, out, lo, hi):
    nh, t, s = q.shape[1], q.shape[2], k.shape[2]
    p = np.empty((t, s), q.dtype)
    dp = np.empty((t, s), q.dtype)
    zero = zero_of(scale)
    for bh in range(lo, hi):
        b, h = bh // nh, bh % nh
        _weights(q, k, m1, m2, nmask, f1, f2, scale, b, h, p)
        go = g[b, :, h, :]
        cblas.gemm_ex(p, go, out[2, b, :, h, :], 1.0, 0.0, True, False)  # dv = p^T g
        cblas.gemm_ex(go, v[b, h], dp, 1.0, 0.0, False, True)  # dp = g v^T
        for i in range(t):
            _softmax_grad_row(p[i], dp[i], s)
            if nmask > 0:
                _mask_row(dp[i], m1[b, h, i], zero, s)
            if nmask > 1:
                _mask_row(dp[i], m2[b, h, i], zero, s)
        cblas.gemm_ex(dp, k[b, h], out[0, b, :, h, :], scale, 0.0, False, False)  # dq
        cblas.gemm_ex(dp, q[b, h], out[1, b, :, h, :], scale, 0.0, True, False)  # dk


def _usable(q, k, v, masks, *more) -> bool:
    """Whether the compiled kernels take these operands (else the NumPy kernels run)."""
    if not cblas.available() or len(masks) > MAX_MASKS:
        return False
    if q.dtype not in (np.float32, np.float64):
        return False
    if any(a.ndim != 4 for a in (q, k, v)):
        return False
    arrays = (q, k, v) + more
    if any(a.dtype != q.dtype for a in arrays):
        return False
    if q.shape[0] * q.shape[1] == 0 or q.shape[2] == 0 or k.shape[2] == 0:
        return False
    # rows with a unit stride that do not overlap (length-1 axes may carry any stride)
    return all(
        a.strides[-1] == a.itemsize
        and (a.shape[-2] <= 1 or a.strides[-2] >= a.shape[-1] * a.itemsize)
        for a in arrays
    )


def _mask_args(masks, shape, fills, dtype):
    """Two [B, H, T, S] bool views (broadcast, no copies) and their fills; unused ones are
    stand-ins the kernel never reads."""
    ms = [np.broadcast_to(m, shape) for m in masks]
    fs = [dtype.type(f) for f in fills]
    while len(ms) < MAX_MASKS:
        ms.append(np.broadcast_to(np.ones((1, 1, 1, 1), np.bool_), shape))
        fs.append(dtype.type(0))
    return ms[0], ms[1], len(masks), fs[0], fs[1]


def attention(xp, q, k, v, *masks, out=None, scale=1.0, fills=()):
    """`attention_kernels.attention`, compiled."""
    bsz, nh, t, _ = q.shape
    if out is None:
        out = np.empty((bsz, t, nh, v.shape[3]), q.dtype)
    if not _usable(q, k, v, masks, out):
        return ak.attention(xp, q, k, v, *masks, out=out, scale=scale, fills=fills)
    m1, m2, n, f1, f2 = _mask_args(masks, (bsz, nh, t, k.shape[2]), fills, q.dtype)
    sc = q.dtype.type(scale)

    def slab(lo, hi):
        _forward(q, k, v, m1, m2, n, f1, f2, sc, out, lo, hi)

    in_row_slabs(bsz * nh, slab)
    return out


def attention_grad(xp, q, k, v, *rest, out=None, scale=1.0, fills=()):
    """`attention_kernels.attention_grad`, compiled."""
    masks, g = rest[:-1], rest[-1]
    bsz, nh, t, _ = q.shape
    if out is None:
        out = np.empty((3,) + g.shape, g.dtype)
    if not _usable(q, k, v, masks, g, out):
        return ak.attention_grad(xp, q, k, v, *rest, out=out, scale=scale, fills=fills)
    m1, m2, n, f1, f2 = _mask_args(masks, (bsz, nh, t, k.shape[2]), fills, q.dtype)
    sc = q.dtype.type(scale)

    def slab(lo, hi):
        _backward(q, k, v, m1, m2, n, f1, f2, sc, g, out, lo, hi)

    in_row_slabs(bsz * nh, slab)
    return out
