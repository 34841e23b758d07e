"""Compiled CPU kernels of stride-1 convolution (groups of 1), one image at a time, in cache.

The NumPy kernels (`conv_kernels`) build the columns of a chunk of images (8 MB) and then
multiply; the input gradient multiplies first and adds the columns back over that buffer,
which does not stay in cache. Here each image works in buffers of under 1 MB next to one
single-threaded GEMM (`cblas`, NumPy's OpenBLAS), on the image's *wide* columns: with the
(padded) image flattened, row (c, i, j) of the columns is the contiguous run of Ho*Wp values
starting at c*Hp*Wp + i*dh*Wp + j*dw (Wp the padded width), so building or scattering the
columns is one long copy or add per row instead of Ho short ones. The Wp - Wo extra columns
of each output row are junk: the forward drops them when it writes y, and the gradients
put zeros there first, so they add nothing:

  conv2d              y[n]  = (w @ cols(x[n]))[:, :, :Wo]
  conv2d_grad_weight  dw   += wide(g[n]) @ cols(x[n])^T        (per thread, then summed)
  conv2d_grad_input   dx[n] = col2im(w^T @ wide(g[n]))

The GEMMs are Wp/Wo larger (8% on the benchmark's 26/24). Strided or grouped convolutions,
operands that are not contiguous, and a NumPy without a usable BLAS take the NumPy kernels.
The images are split into one slab per thread (`blas_pool.in_row_slabs`). Importing this
module needs numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dslc.ops import cblas
from dslc.ops import conv_kernels as ck
from dslc.ops.blas_pool import in_row_slabs
from dslc.ops.nn import conv_attrs
from dslc.ops.numba_math import zero_of

_OPTS = dict(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})


@njit(**_OPTS)
def _padded(x, ph, pw, xpad):
    """xpad [C, H + 2ph, W + 2pw] = x [C, H, W] with zeros around."""
    c, h, wd = x.shape
    zero = zero_of(x[0, 0, 0])
    xpad[...] = zero
    for ci in range(c):
        for r in range(h):
            dst = xpad[ci, r + ph]
            src = x[ci, r]
            for s in range(wd):
                dst[pw + s] = src[s]


@njit(**_OPTS)
def _cols(xflat, c, plane, kh, kw, dh, dw, wp, cols):
    """cols[(c*kh + i)*kw + j, q] = xflat[c*plane + i*dh*wp + j*dw + q] (0 past the plane)."""
    zero = zero_of(xflat[0])
    n = cols.shape[1]
    for ci in range(c):
        for i in range(kh):
            for j in range(kw):
                row = cols[(ci * kh + i) * kw + j]
                off = i * dh * wp + j * dw
                m = min(n, plane - off)
                src = xflat[ci * plane + off : ci * plane + off + m]
                for q in range(m):
                    row[q] = src[q]
                for q in range(m, n):
                    row[q] = zero


@njit(**_OPTS)
def _image_cols(x, ph, pw, xpad, kh, kw, dh, dw, cols):
    """The wide columns of one image [C, H, W], padded through `xpad` when it must be."""
    if ph or pw:
        _padded(x, ph, pw, xpad)
        x = xpad
    c, hp, wp = x.shape
    _cols(x.reshape(-1), c, hp * wp, kh, kw, dh, dw, wp, cols)


@njit(**_OPTS)
def _col2im(cols, c, plane, kh, kw, dh, dw, wp, dflat):
    """dflat[c*plane + i*dh*wp + j*dw + q] += cols[(c*kh + i)*kw + j, q] inside the plane."""
    n = cols.shape[1]
    for ci in range(c):
        for i in range(kh):
            for j in range(kw):
                row = cols[(ci * kh + i) * kw + j]
                off = i * dh * wp + j * dw
                m = min(n, plane - off)
                dst = dflat[ci * plane + off : ci * plane + off + m]
                for q in range(m):
                    dst[q] += row[q]


@njit(**_OPTS)
def _widen(g, wp, gw):
    """gw [O, Ho*Wp] = g [O, Ho, Wo] with zeros in the wp - Wo extra columns of each row."""
    o, ho, wo = g.shape
    zero = zero_of(g[0, 0, 0])
    for k in range(o):
        dst = gw[k]
        for r in range(ho):
            src = g[k, r]
            for s in range(wo):
                dst[r * wp + s] = src[s]
            for s in range(wo, wp):
                dst[r * wp + s] = zero


@njit(**_OPTS)
def _forward(x, w2, y, kh, kw, ph, pw, dh, dw, lo, hi):
    c, h, wd = x.shape[1:]
    hp, wp = h + 2 * ph, wd + 2 * pw
    ho, wo = y.shape[2], y.shape[3]
    xpad = np.empty((c, hp, wp), x.dtype)
    cols = np.empty((w2.shape[1], ho * wp), x.dtype)
    yw = np.empty((w2.shape[0], ho * wp), x.dtype)
    for n in range(lo, hi):
        _image_cols(x[n], ph, pw, xpad, kh, kw, dh, dw, cols)
        cblas.gemm_ex(w2, cols, yw, 1.0, 0.0, False, False)
        for k in range(yw.shape[0]):
            dst = y[n, k]
            row = yw[k]
            for r in range(ho):
                for s in range(wo):
                    dst[r, s] = row[r * wp + s]


@njit(**_OPTS)
def _grad_weight(x, g, acc, kh, kw, ph, pw, dh, dw, lo, hi):
    c, h, wd = x.shape[1:]
    hp, wp = h + 2 * ph, wd + 2 * pw
    o, ho = g.shape[1], g.shape[2]
    xpad = np.empty((c, hp, wp), x.dtype)
    cols = np.empty((acc.shape[1], ho * wp), x.dtype)
    gw = np.empty((o, ho * wp), x.dtype)
    for n in range(lo, hi):
        _image_cols(x[n], ph, pw, xpad, kh, kw, dh, dw, cols)
        _widen(g[n], wp, gw)
        cblas.gemm_ex(gw, cols, acc, 1.0, 1.0, False, True)


@njit(**_OPTS)
def _grad_input(g, w2, dx, kh, kw, ph, pw, dh, dw, lo, hi):
    c, h, wd = dx.shape[1:]
    hp, wp = h + 2 * ph, wd + 2 * pw
    o, ho = g.shape[1], g.shape[2]
    zero = zero_of(g[0, 0, 0, 0])
    dpad = np.empty((c, hp, wp), dx.dtype)
    cols = np.empty((w2.shape[1], ho * wp), dx.dtype)
    gw = np.empty((o, ho * wp), dx.dtype)
    for n in range(lo, hi):
        _widen(g[n], wp, gw)
        cblas.gemm_ex(w2, gw, cols, 1.0, 0.0, True, False)
        dst = dpad if (ph or pw) else dx[n]
        dst[...] = zero
        _col2im(cols, c, hp * wp, kh, kw, dh, dw, wp, dst.reshape(-1))
        if ph or pw:
            for ci in range(c):
                for r in range(h):
                    out = dx[n, ci, r]
                    src = dpad[ci, r + ph]
                    for s in range(wd):
                        out[s] = src[pw + s]


def _usable(a, *arrays) -> bool:
    if a["groups"] != 1 or a["stride"] != (1, 1) or not cblas.available():
        return False
    a0 = arrays[0]
    if a0.dtype not in (np.float32, np.float64) or any(x.dtype != a0.dtype for x in arrays):
        return False
    return all(x.flags.c_contiguous and x.size for x in arrays)


def _geometry(a, kh, kw):
    (ph, pw), (dh, dw) = a["padding"], a["dilation"]
    return kh, kw, ph, pw, dh, dw


def conv2d(xp, x, w, out=None, **attrs):
    """`conv_kernels.conv2d`, compiled (stride 1, groups of 1)."""
    a = conv_attrs(attrs)
    n, _, h, wd = x.shape
    o, _, kh, kw = w.shape
    (sh, sw), (ph, pw), (dh, dw) = a["stride"], a["padding"], a["dilation"]
    ho, wo = ck.out_size(h, kh, sh, ph, dh), ck.out_size(wd, kw, sw, pw, dw)
    if out is None:
        out = np.empty((n, o, ho, wo), x.dtype)
    if not _usable(a, x, w, out):
        return ck.conv2d(xp, x, w, out=out, **a)
    w2, geo = w.reshape(o, -1), _geometry(a, kh, kw)
    in_row_slabs(n, lambda lo, hi: _forward(x, w2, out, *geo, lo, hi))
    return out


def conv2d_grad_weight(xp, x, g, out=None, kernel=(1, 1), **attrs):
    """`conv_kernels.conv2d_grad_weight`, compiled (stride 1, groups of 1)."""
    a = conv_attrs(attrs)
    n, c = x.shape[:2]
    o = g.shape[1]
    kh, kw = (int(k) for k in kernel)
    if out is None:
        out = np.empty((o, c, kh, kw), x.dtype)
    if not _usable(a, x, g, out):
        return ck.conv2d_grad_weight(xp, x, g, out=out, kernel=(kh, kw), **a)
    geo = _geometry(a, kh, kw)
    parts = []

    def slab(lo, hi):
        acc = np.zeros((o, c * kh * kw), x.dtype)
        _grad_weight(x, g, acc, *geo, lo, hi)
        parts.append(acc)

    in_row_slabs(n, slab)
    total = parts[0]
    for p in parts[1:]:
        total += p
    out.reshape(o, -1)[...] = total
    return out


def conv2d_grad_input(xp, g, w, out=None, in_size=(0, 0), **attrs):
    """`conv_kernels.conv2d_grad_input`, compiled (stride 1, groups of 1)."""
    a = conv_attrs(attrs)
    n, o = g.shape[:2]
    _, c, kh, kw = w.shape
    h, wd = (int(s) for s in in_size)
    if out is None:
        out = np.empty((n, c, h, wd), g.dtype)
    if not _usable(a, g, w, out):
        return ck.conv2d_grad_input(xp, g, w, out=out, in_size=(h, wd), **a)
    w2, geo = w.reshape(o, -1), _geometry(a, kh, kw)
    in_row_slabs(n, lambda lo, hi: _grad_input(g, w2, out, *geo, lo, hi))
    return out
