"""Compiled CPU kernels of layer normalisation and its backward pass.

Run as written, the `layer_norm` layer is a mean, a variance, a subtraction, a reciprocal
square root and three products over the [R, D] activations, and its backward another dozen
operations, several of them full passes that the fusion pass cannot join (their values have
more than one reader). Here the forward is one pass over each row (statistics, then the
normalised row) and the backward one more: the row statistics are computed again, dx is
written, and d gamma and d beta are summed per slab in float64 and added up at the end, in
the order of the slabs.

The rows are split into CHUNKS slabs per thread, taken in turn (`blas_pool.in_row_slabs`).
Row sums of float32 accumulate in float32, as the generated row kernels do. Operands that
are not contiguous fall back to the NumPy kernels (`norm_kernels`). Importing this module
needs numba.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from dslc.ops import norm_kernels as nk
from dslc.ops.blas_pool import CHUNKS, in_row_slabs
from dslc.ops.numba_math import like, zero_of

# reassoc lets LLVM vectorise the row sums
_OPTS = dict(nogil=True, cache=True, error_model="numpy", fastmath={"contract", "reassoc"})


@njit(**_OPTS)
def _row_stats(xr, eps):
    d = like(eps, xr.shape[0])
    s = zero_of(eps)
    for j in range(xr.shape[0]):
        s += xr[j]
    mu = s / d
    v = zero_of(eps)
    for j in range(xr.shape[0]):
        t = xr[j] - mu
        v += t * t
    return mu, like(eps, 1) / math.sqrt(v / d + eps)


@njit(**_OPTS)
def _forward(x, gamma, beta, eps, y, lo, hi):
    for r in range(lo, hi):
        xr, yr = x[r], y[r]
        mu, inv = _row_stats(xr, eps)
        for j in range(xr.shape[0]):
            yr[j] = (xr[j] - mu) * inv * gamma[j] + beta[j]


@njit(**_OPTS)
def _backward(x, gamma, dy, eps, dx, pg, pb, lo, hi):
    d = x.shape[1]
    dd = like(eps, d)
    for r in range(lo, hi):
        xr, gr, dr = x[r], dy[r], dx[r]
        mu, inv = _row_stats(xr, eps)
        a = zero_of(eps)
        c = zero_of(eps)
        for j in range(d):
            xh = (xr[j] - mu) * inv
            dxh = gr[j] * gamma[j]
            a += dxh
            c += dxh * xh
            pg[j] += gr[j] * xh
            pb[j] += gr[j]
        a = a / dd
        c = c / dd
        for j in range(d):
            xh = (xr[j] - mu) * inv
            dr[j] = inv * (gr[j] * gamma[j] - a - xh * c)


def _rows(*arrays) -> bool:
    return all(a.flags.c_contiguous for a in arrays) and arrays[0].dtype in (np.float32, np.float64)


def layer_norm(xp, x, gamma, beta, out=None, eps=1e-5):
    """`norm_kernels.layer_norm`, compiled."""
    if out is None:
        out = np.empty_like(x)
    if not _rows(x, gamma, beta, out) or x.size == 0:
        return nk.layer_norm(xp, x, gamma, beta, out=out, eps=eps)
    d = x.shape[-1]
    x2, y2 = x.reshape(-1, d), out.reshape(-1, d)
    e = x.dtype.type(eps)

    def slab(lo, hi):
        _forward(x2, gamma, beta, e, y2, lo, hi)

    in_row_slabs(x2.shape[0], slab, CHUNKS)
    return out


def layer_norm_grad(xp, x, gamma, dy, out=None, eps=1e-5):
    """`norm_kernels.layer_norm_grad`, compiled."""
    d = x.shape[-1]
    rows = x.size // d if d else 0
    if out is None:
        out = np.empty((rows + 2, d), x.dtype)
    if not _rows(x, gamma, dy, out) or x.size == 0:
        return nk.layer_norm_grad(xp, x, gamma, dy, out=out, eps=eps)
    x2, dy2 = x.reshape(-1, d), dy.reshape(-1, d)
    e = x.dtype.type(eps)
    sums = []

    def slab(lo, hi):
        pg, pb = np.zeros(d), np.zeros(d)
        _backward(x2, gamma, dy2, e, out, pg, pb, lo, hi)
        sums.append((lo, pg, pb))

    in_row_slabs(rows, slab, CHUNKS)
    sums.sort(key=lambda t: t[0])  # the same sums in the same order, whichever thread ran them
    out[rows] = sum(pg for _, pg, _ in sums)
    out[rows + 1] = sum(pb for _, _, pb in sums)
    return out
