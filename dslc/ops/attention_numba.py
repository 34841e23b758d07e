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

With masks, the queries go in blocks of ROW_BLOCK rows, and each block reads the keys up to
the last one any of its rows keeps (`_extents`, scanned once per distinct mask): a causal
mask then skips a quarter of the products for T = 128 (both forward and backward), a padding
mask its padded keys. The skipped keys would have weights of exactly 0 (their fill is below
the row's maximum by more than exp resolves); a block where that does not hold is computed
again over every key (measured on the benchmark's GPT layer: forward 5.6 -> 4.5 ms,
backward 10.3 -> 9.1 ms, alternating in one process).

The pairs are split into CHUNKS slabs per thread, which the threads take in turn
(`blas_pool.in_row_slabs`), each calling single-threaded GEMMs (`cblas`, NumPy's own
OpenBLAS). float32 uses `exp32` of
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
from dslc.ops.blas_pool import CHUNKS, in_row_slabs
from dslc.ops.numba_math import exp_of, like, zero_of

# reassoc lets LLVM vectorise the row sums (5-8x faster here, measured)
_OPTS = dict(nogil=True, cache=True, error_model="numpy", fastmath={"contract", "reassoc"})
MAX_MASKS = 2
ROW_BLOCK = 64  # query rows per block: a block reads the keys up to the last one it keeps
NEGLIGIBLE = -800.0  # exp of less is 0 in float32 and float64


@njit(**_OPTS)
def _mask_row(row, m, fill, n):
    for j in range(n):
        row[j] = row[j] if m[j] else fill


@njit(**_OPTS)
def _softmax_row(row, n):
    """row = softmax(row), in place; a NaN anywhere gives NaN, as NumPy's maximum does.
    Returns the row's maximum."""
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
    return top


@njit(**_OPTS)
def _weights(q, k, m1, m2, nmask, f1, f2, scale, b, h, r0, r1, e, p):
    """p[:, :e] = the attention weights of rows r0:r1 of pair (b, h) over its first e keys.

    The keys from e on are masked in every one of these rows (`_extents`); their weights
    are exactly 0 when the fill is below the row's maximum by more than exp can resolve
    (`NEGLIGIBLE`), as with -1e9 or -inf. Where a row's maximum is that close to the fill,
    the rows are computed again over every key. Returns the number of keys used."""
    s = k.shape[2]
    while True:
        cblas.gemm_ex(q[b, h, r0:r1], k[b, h, :e], p[:, :e], scale, 0.0, False, True)
        exact = True
        for i in range(r1 - r0):
            row = p[i, :e]
            if nmask > 0:
                _mask_row(row, m1[b, h, r0 + i], f1, e)
            if nmask > 1:
                _mask_row(row, m2[b, h, r0 + i], f2, e)
            top = _softmax_row(row, e)
            if e < s:
                fill = f1 if nmask < 2 or f1 > f2 else f2
                exact &= fill - top < NEGLIGIBLE
        if exact:
            return e
        e = s


@njit(**_OPTS)
def _extents(m1, m2, nmask, t, s, rows, ext):
    """ext[b, h, blk] = 1 + the last key any query of row block blk keeps (every key when a
    row keeps none: its weights spread over all of them), for each distinct mask pair."""
    for b in range(ext.shape[0]):
        for h in range(ext.shape[1]):
            for blk in range(ext.shape[2]):
                top = 0
                for i in range(blk * rows, min(t, (blk + 1) * rows)):
                    last = -1
                    for j in range(s - 1, -1, -1):
                        if m1[b, h, i, j] and (nmask < 2 or m2[b, h, i, j]):
                            last = j
                            break
                    if last < 0:
                        top = s
                        break
                    top = max(top, last + 1)
                ext[b, h, blk] = top


@njit(**_OPTS)
def _forward(q, k, v, m1, m2, nmask, f1, f2, scale, out, ext, rows, lo, hi):
    nh, t, s = q.shape[1], q.shape[2], k.shape[2]
    p = np.empty((min(rows, t), s), q.dtype)
    for bh in range(lo, hi):
        b, h = bh // nh, bh % nh
        eb, eh = min(b, ext.shape[0] - 1), min(h, ext.shape[1] - 1)
        for blk in range(ext.shape[2]):
            r0 = blk * rows
            r1 = min(t, r0 + rows)
            pr = p[: r1 - r0]
            e = _weights(q, k, m1, m2, nmask, f1, f2, scale, b, h, r0, r1, ext[eb, eh, blk], pr)
            cblas.gemm_ex(pr[:, :e], v[b, h, :e], out[b, r0:r1, h, :], 1.0, 0.0, False, False)


@njit(**_OPTS)
def _softmax_grad_row(p, dp, n):
    """dp = p * (dp - sum(dp * p)), in place."""
    r = zero_of(p[0])
    for j in range(n):
        r += dp[j] * p[j]
    for j in range(n):
        dp[j] = p[j] * (dp[j] - r)


@njit(**_OPTS)
def _zero_rows(x):
    z = zero_of(x[0, 0])
    for i in range(x.shape[0]):
        for j in range(x.shape[1]):
            x[i, j] = z


@njit(**_OPTS)
def _backward(q, k, v, m1, m2, nmask, f1, f2, scale, g, out, ext, rows, lo, hi):
    nh, t, s = q.shape[1], q.shape[2], k.shape[2]
    p = np.empty((min(rows, t), s), q.dtype)
    dp = np.empty((min(rows, t), s), q.dtype)
    zero = zero_of(scale)
    nblk = ext.shape[2]
    beta = 0.0 if nblk == 1 else 1.0  # dk and dv sum over the row blocks
    for bh in range(lo, hi):
        b, h = bh // nh, bh % nh
        eb, eh = min(b, ext.shape[0] - 1), min(h, ext.shape[1] - 1)
        dk, dv = out[b, :, 1, h, :], out[b, :, 2, h, :]
        if nblk > 1:
            _zero_rows(dk)
            _zero_rows(dv)
        for blk in range(nblk):
            r0 = blk * rows
            r1 = min(t, r0 + rows)
            pr, dpr = p[: r1 - r0], dp[: r1 - r0]
            e = _weights(q, k, m1, m2, nmask, f1, f2, scale, b, h, r0, r1, ext[eb, eh, blk], pr)
            go = g[b, r0:r1, h, :]
            cblas.gemm_ex(pr[:, :e], go, dv[:e], 1.0, beta, True, False)  # dv += p^T g
            cblas.gemm_ex(go, v[b, h, :e], dpr[:, :e], 1.0, 0.0, False, True)  # dp = g v^T
            for i in range(r1 - r0):
                _softmax_grad_row(pr[i], dpr[i], e)
                if nmask > 0:
                    _mask_row(dpr[i], m1[b, h, r0 + i], zero, e)
                if nmask > 1:
                    _mask_row(dpr[i], m2[b, h, r0 + i], zero, e)
            dq = out[b, r0:r1, 0, h, :]
            cblas.gemm_ex(dpr[:, :e], k[b, h, :e], dq, scale, 0.0, False, False)  # dq = ds k
            cblas.gemm_ex(dpr[:, :e], q[b, h, r0:r1], dk[:e], scale, beta, True, False)  # dk


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


def _blocks(m1, m2, nmask, t, s):
    """(ext, rows): the keys each block of `rows` queries reads (`_extents`), per distinct
    mask pair (a mask broadcast over the batch or the heads is scanned once); one block of
    every query and key when no block can skip any key."""
    whole = (np.full((1, 1, 1), s, np.int64), t)
    if nmask == 0 or t <= ROW_BLOCK:
        return whole
    used = (m1, m2)[:nmask]
    nb = m1.shape[0] if any(m.strides[0] for m in used) else 1
    nh = m1.shape[1] if any(m.strides[1] for m in used) else 1
    ext = np.empty((nb, nh, -(-t // ROW_BLOCK)), np.int64)
    _extents(m1, m2, nmask, t, s, ROW_BLOCK, ext)
    return (ext, ROW_BLOCK) if (ext < s).any() else whole


def attention(xp, q, k, v, *masks, out=None, scale=1.0, fills=()):
    """`attention_kernels.attention`, compiled."""
    bsz, nh, t, _ = q.shape
    if out is None:
        out = np.empty((bsz, t, nh, v.shape[3]), q.dtype)
    if not _usable(q, k, v, masks, out):
        return ak.attention(xp, q, k, v, *masks, out=out, scale=scale, fills=fills)
    m1, m2, n, f1, f2 = _mask_args(masks, (bsz, nh, t, k.shape[2]), fills, q.dtype)
    sc = q.dtype.type(scale)
    ext, rows = _blocks(m1, m2, n, t, k.shape[2])

    def slab(lo, hi):
        _forward(q, k, v, m1, m2, n, f1, f2, sc, out, ext, rows, lo, hi)

    in_row_slabs(bsz * nh, slab, CHUNKS)
    return out


def attention_grad(xp, q, k, v, *rest, out=None, scale=1.0, fills=()):
    """`attention_kernels.attention_grad`, compiled."""
    masks, g = rest[:-1], rest[-1]
    bsz, nh, t, _ = q.shape
    if out is None:
        out = np.empty(g.shape[:2] + (3,) + g.shape[2:], g.dtype)
    if not _usable(q, k, v, masks, g, out):
        return ak.attention_grad(xp, q, k, v, *rest, out=out, scale=scale, fills=fills)
    m1, m2, n, f1, f2 = _mask_args(masks, (bsz, nh, t, k.shape[2]), fills, q.dtype)
    sc = q.dtype.type(scale)
    ext, rows = _blocks(m1, m2, n, t, k.shape[2])

    def slab(lo, hi):
        _backward(q, k, v, m1, m2, n, f1, f2, sc, g, out, ext, rows, lo, hi)

    in_row_slabs(bsz * nh, slab, CHUNKS)
    return out
