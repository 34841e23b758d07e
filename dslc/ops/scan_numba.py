"""Compiled CPU kernels of the recurrent scans and their backward passes: whole time loops in
Numba (LSTM, GRU, plain tanh RNN).

The NumPy kernels (`scan_kernels`) make about a dozen calls per time step; for the
benchmark's LSTM (B 32, T 100, H 128) those call overheads and the temporaries between them
cost more than the step's GEMM. Here a step is one GEMM (`cblas.gemm`, NumPy's OpenBLAS,
called without the interpreter) and one loop over the batch rows that adds the input
projection, applies the gates and updates the state in registers.

The batch rows of a scan are independent, so the rows are split into one slab per thread
(`blas_pool.in_row_slabs`), each running the whole time loop with single-threaded GEMMs:
one hand-off per call instead of a join of BLAS threads per step.

The results equal the NumPy kernels' to float32 rounding: float32 uses the vectorising
`tanh32` of `dslc.ops.numba_math` (error below 1e-6), float64 uses `math.tanh`.
Importing this module needs numba; `lstm_scan` and `lstm_scan_grad` keep the NumPy
kernels' signatures, and fall back to them when NumPy's BLAS cannot be bound (`cblas`).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dslc.ops import cblas
from dslc.ops import scan_kernels as sk
from dslc.ops.blas_pool import in_row_slabs
from dslc.ops.numba_math import tanh_of

_OPTS = dict(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})


@njit(**_OPTS)
def _sigmoid(v, n, half):
    for k in range(n):
        v[k] = half * tanh_of(half * v[k]) + half


@njit(**_OPTS)
def _tanh_(v, n):
    for k in range(n):
        v[k] = tanh_of(v[k])


@njit(**_OPTS)
def _activate(row, h, half):
    """Gate pre-activations [4H] in place: i, f sigmoid; g tanh; o sigmoid. Each loop runs
    over a view from index 0 (LLVM leaves loops over offset ranges scalar, measured 3x)."""
    _sigmoid(row[: 2 * h], 2 * h, half)
    _tanh_(row[2 * h : 3 * h], h)
    _sigmoid(row[3 * h :], h, half)


@njit(**_OPTS)
def _lstm_fwd(xw, u, h0, c0, y, bias, half):
    bsz, steps, h4 = xw.shape
    h = h4 // 4
    keep = y.shape[2] == 6  # also store the activated gates, for the backward pass
    z = np.empty((bsz, h4), xw.dtype)
    for t in range(steps):
        if t == 0:
            cblas.gemm(h0, u, z, 0.0, False)
        else:
            cblas.gemm(y[:, t - 1, 0], u, z, 0.0, False)  # rows with the stride of y
        for b in range(bsz):
            zr = z[b]
            xr = xw[b, t]
            for k in range(h4):
                zr[k] += xr[k] + bias[k]
            _activate(zr, h, half)
            ig, fg, gg, og = zr[:h], zr[h : 2 * h], zr[2 * h : 3 * h], zr[3 * h :]
            if keep:
                for k in range(4):
                    dst = y[b, t, 2 + k]
                    src = zr[k * h : (k + 1) * h]
                    for j in range(h):
                        dst[j] = src[j]
            cp = c0[b] if t == 0 else y[b, t - 1, 1]
            hr = y[b, t, 0]
            cr = y[b, t, 1]
            for j in range(h):
                c = fg[j] * cp[j] + ig[j] * gg[j]
                cr[j] = c
                hr[j] = og[j] * tanh_of(c)


@njit(**_OPTS)
def _lstm_bwd(xw, u, h0, c0, y, g, res, tail, bias, half, one):
    bsz, steps, h4 = xw.shape
    h = h4 // 4
    stored = y.shape[2] == 6  # the forward pass kept the activated gates
    if stored:
        pre = np.empty((0, 0, h4), xw.dtype)
    else:  # the gate pre-activations of every step, from the stored states: xw + h_prev @ u
        pre = xw.copy()
        for b in range(bsz):
            for t in range(steps):
                row = pre[b, t]
                for k in range(h4):
                    row[k] += bias[k]
        cblas.gemm(h0, u, pre[:, 0], 1.0, False)
        if steps > 1:
            for b in range(bsz):
                cblas.gemm(y[b, : steps - 1, 0], u, pre[b, 1:], 1.0, False)
    dh = np.zeros((bsz, h), xw.dtype)
    dc = np.zeros((bsz, h), xw.dtype)
    for t in range(steps - 1, -1, -1):
        for b in range(bsz):
            if stored:
                ig, fg, gg, og = y[b, t, 2], y[b, t, 3], y[b, t, 4], y[b, t, 5]
            else:
                pr = pre[b, t]
                _activate(pr, h, half)
                ig, fg, gg, og = pr[:h], pr[h : 2 * h], pr[2 * h : 3 * h], pr[3 * h :]
            cp = c0[b] if t == 0 else y[b, t - 1, 1]
            cr = y[b, t, 1]
            gh = g[b, t, 0]
            gc = g[b, t, 1]
            dz = res[b, t]
            di, df, dg, do = dz[:h], dz[h : 2 * h], dz[2 * h : 3 * h], dz[3 * h :]
            dhb = dh[b]
            dcb = dc[b]
            for j in range(h):
                i = ig[j]
                f = fg[j]
                gj = gg[j]
                o = og[j]
                tc = tanh_of(cr[j])
                dht = gh[j] + dhb[j]
                dct = dcb[j] + gc[j] + dht * o * (one - tc * tc)
                di[j] = dct * gj * i * (one - i)
                df[j] = dct * cp[j] * f * (one - f)
                dg[j] = dct * i * (one - gj * gj)
                do[j] = dht * tc * o * (one - o)
                dcb[j] = dct * f
        cblas.gemm(res[:, t], u, dh, 0.0, True)  # dh = dz @ u.T
    for b in range(bsz):
        last = tail[b]
        for j in range(h):
            last[j] = dh[b, j]
            last[h + j] = dc[b, j]
        for k in range(2 * h, h4):
            last[k] = 0


@njit(**_OPTS)
def _gru_fwd(xw, u, bu, h0, y, half):
    bsz, steps, h3 = xw.shape
    h = h3 // 3
    hu = np.empty((bsz, h3), xw.dtype)
    for t in range(steps):
        hp_all = h0 if t == 0 else y[:, t - 1]
        cblas.gemm(hp_all, u, hu, 0.0, False)
        for b in range(bsz):
            x = xw[b, t]
            hr = hu[b]
            hp = h0[b] if t == 0 else y[b, t - 1]
            out = y[b, t]
            xr, xz, xn = x[:h], x[h : 2 * h], x[2 * h :]
            ur, uz, un = hr[:h], hr[h : 2 * h], hr[2 * h :]
            br, bz, bn = bu[:h], bu[h : 2 * h], bu[2 * h :]
            for j in range(h):
                r = half * tanh_of(half * (xr[j] + (ur[j] + br[j]))) + half
                z = half * tanh_of(half * (xz[j] + (uz[j] + bz[j]))) + half
                n = tanh_of(xn[j] + r * (un[j] + bn[j]))
                out[j] = n + z * (hp[j] - n)


@njit(**_OPTS)
def _gru_bwd(xw, u, bu, h0, y, g, res, half, one):
    bsz, steps, h3 = xw.shape
    h = h3 // 3
    hu = np.empty((bsz, steps, h3), xw.dtype)  # h_prev @ u of every step
    cblas.gemm(h0, u, hu[:, 0], 0.0, False)
    if steps > 1:
        for b in range(bsz):
            cblas.gemm(y[b, : steps - 1], u, hu[b, 1:], 0.0, False)
    dh = np.zeros((bsz, h), xw.dtype)
    for t in range(steps - 1, -1, -1):
        for b in range(bsz):
            x = xw[b, t]
            hr = hu[b, t]
            hp = h0[b] if t == 0 else y[b, t - 1]
            gt = g[b, t]
            dx = res[b, t, 0]
            dhu = res[b, t, 1]
            dhb = dh[b]
            xr, xz, xn = x[:h], x[h : 2 * h], x[2 * h :]
            ur, uz, un = hr[:h], hr[h : 2 * h], hr[2 * h :]
            br, bz, bn = bu[:h], bu[h : 2 * h], bu[2 * h :]
            dxr, dxz, dxn = dx[:h], dx[h : 2 * h], dx[2 * h :]
            dur, duz, dun = dhu[:h], dhu[h : 2 * h], dhu[2 * h :]
            for j in range(h):
                un_b = un[j] + bn[j]
                r = half * tanh_of(half * (xr[j] + (ur[j] + br[j]))) + half
                z = half * tanh_of(half * (xz[j] + (uz[j] + bz[j]))) + half
                n = tanh_of(xn[j] + r * un_b)
                dht = gt[j] + dhb[j]
                dn = dht * ((one - z) * (one - n * n))
                dxn[j] = dn
                dxz[j] = dht * ((hp[j] - n) * z * (one - z))
                dxr[j] = dn * (un_b * r * (one - r))
                dur[j] = dxr[j]
                duz[j] = dxz[j]
                dun[j] = dn * r
                dhb[j] = dht * z  # the GEMM below adds dhu @ u.T
        cblas.gemm(res[:, t, 1], u, dh, 1.0, True)
    for b in range(bsz):
        last = res[b, steps]
        for k in range(2):
            for j in range(h3):
                last[k, j] = 0
        for j in range(h):
            last[0, j] = dh[b, j]


@njit(**_OPTS)
def _rnn_fwd(xw, u, h0, y):
    bsz, steps, h = xw.shape
    for t in range(steps):
        cblas.gemm(h0 if t == 0 else y[:, t - 1], u, y[:, t], 0.0, False)
        for b in range(bsz):
            x = xw[b, t]
            out = y[b, t]
            for j in range(h):
                out[j] = tanh_of(out[j] + x[j])


@njit(**_OPTS)
def _rnn_bwd(u, y, g, res, one):
    bsz, steps, h = y.shape
    dh = np.zeros((bsz, h), y.dtype)
    for t in range(steps - 1, -1, -1):
        for b in range(bsz):
            yt = y[b, t]
            gt = g[b, t]
            d = res[b, t]
            dhb = dh[b]
            for j in range(h):
                d[j] = (gt[j] + dhb[j]) * (one - yt[j] * yt[j])
        cblas.gemm(res[:, t], u, dh, 0.0, True)
    for b in range(bsz):
        for j in range(h):
            res[b, steps, j] = dh[b, j]


def _usable(*arrays) -> bool:
    return cblas.available() and all(
        a.dtype in (np.float32, np.float64) and a.flags.c_contiguous for a in arrays
    )


def _bias(xw, bias):
    """The bias operand, or zeros: the kernels add one either way (one compiled signature)."""
    return bias[0] if bias else np.zeros(xw.shape[-1], xw.dtype)


def lstm_scan(xp, xw, u, h0, c0, *bias, out=None, gates=False):
    bsz, steps, h4 = xw.shape
    y = out if out is not None else np.empty((bsz, steps, 6 if gates else 2, h4 // 4), xw.dtype)
    if not _usable(xw, u, h0, c0, y, *bias):
        return sk.lstm_scan(xp, xw, u, h0, c0, *bias, out=y, gates=gates)
    half, b = xw.dtype.type(0.5), _bias(xw, bias)

    def rows(lo, hi):
        _lstm_fwd(xw[lo:hi], u, h0[lo:hi], c0[lo:hi], y[lo:hi], b, half)

    in_row_slabs(bsz, rows)
    return y


def lstm_scan_grad(xp, xw, u, h0, c0, y, g, *bias, out=None):
    bsz, steps, h4 = xw.shape
    res = out if out is not None else np.empty((bsz * steps + bsz, h4), xw.dtype)
    if not _usable(xw, u, h0, c0, y, g, res, *bias):
        return sk.lstm_scan_grad(xp, xw, u, h0, c0, y, g, *bias, out=res)
    half, one = xw.dtype.type(0.5), xw.dtype.type(1.0)
    body, tail = sk.lstm_grad_parts(res, bsz, steps)
    b = _bias(xw, bias)

    def rows(lo, hi):
        _lstm_bwd(
            xw[lo:hi], u, h0[lo:hi], c0[lo:hi], y[lo:hi], g[lo:hi], body[lo:hi], tail[lo:hi],
            b, half, one,
        )  # fmt: skip

    in_row_slabs(bsz, rows)
    return res


def gru_scan(xp, xw, u, bu, h0, out=None):
    bsz, steps, h3 = xw.shape
    y = out if out is not None else np.empty((bsz, steps, h3 // 3), xw.dtype)
    if not _usable(xw, u, bu, h0, y):
        return sk.gru_scan(xp, xw, u, bu, h0, out=y)
    half = xw.dtype.type(0.5)
    in_row_slabs(bsz, lambda lo, hi: _gru_fwd(xw[lo:hi], u, bu, h0[lo:hi], y[lo:hi], half))
    return y


def gru_scan_grad(xp, xw, u, bu, h0, y, g, out=None):
    bsz, steps, h3 = xw.shape
    res = out if out is not None else np.empty((bsz, steps + 1, 2, h3), xw.dtype)
    if not _usable(xw, u, bu, h0, y, g, res):
        return sk.gru_scan_grad(xp, xw, u, bu, h0, y, g, out=res)
    half, one = xw.dtype.type(0.5), xw.dtype.type(1.0)

    def rows(lo, hi):
        _gru_bwd(xw[lo:hi], u, bu, h0[lo:hi], y[lo:hi], g[lo:hi], res[lo:hi], half, one)

    in_row_slabs(bsz, rows)
    return res


def rnn_scan(xp, xw, u, h0, out=None):
    y = out if out is not None else np.empty(xw.shape, xw.dtype)
    if not _usable(xw, u, h0, y):
        return sk.rnn_scan(xp, xw, u, h0, out=y)
    in_row_slabs(xw.shape[0], lambda lo, hi: _rnn_fwd(xw[lo:hi], u, h0[lo:hi], y[lo:hi]))
    return y


def rnn_scan_grad(xp, u, y, g, out=None):
    bsz, steps, h = y.shape
    res = out if out is not None else np.empty((bsz, steps + 1, h), y.dtype)
    if not _usable(u, y, g, res):
        return sk.rnn_scan_grad(xp, u, y, g, out=res)
    one = y.dtype.type(1.0)
    in_row_slabs(bsz, lambda lo, hi: _rnn_bwd(u, y[lo:hi], g[lo:hi], res[lo:hi], one))
    return res
