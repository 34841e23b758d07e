"""Compiled CPU kernel of the convolution's input gradient (groups of 1), one image at a time.

The NumPy kernel (`conv_kernels.conv2d_grad_input`) multiplies a chunk of images' gradients
into an 8 MB column buffer and adds the columns back with nine strided passes over it,
which does not stay in cache: for the benchmark's second convolution that scatter took
longer than its GEMM. Here each image's columns ([C*kh*kw, Ho*Wo], under 1 MB) come from one
single-threaded GEMM (`cblas`, NumPy's OpenBLAS), cols = w^T @ g[n], and are added into
dx[n] (col2im) while they are in the core's cache: 27 -> 20 ms on that convolution,
alternating with the NumPy kernel in one process.

The forward and the weight gradient stay NumPy kernels: compiled the same way (im2col per
image) they were no faster, because Numba's loops over rows of a few dozen elements with
run-time bounds cost more than NumPy's one strided copy per chunk (measured).

The images are split into one slab per thread (`blas_pool.in_row_slabs`). Grouped
convolutions, operands that are not contiguous, and a NumPy without a usable BLAS take the
NumPy kernel. Importing this module needs numba.
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
def _span(sw, pw, dw, j, wo, wd):
    """The output columns s in [lo, hi) whose input column s*sw - pw + j*dw is inside."""
    lo, hi = 0, wo
    off = j * dw - pw
    while lo < wo and lo * sw + off < 0:
        lo += 1
    while hi > lo and (hi - 1) * sw + off >= wd:
        hi -= 1
    return lo, hi, off


@njit(**_OPTS)
def _col2im(cols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, dx):
    """dx[c, r*sh - ph + i*dh, s*sw - pw + j*dw] += cols[(c*kh + i)*kw + j, r*wo + s]."""
    c, h, wd = dx.shape
    for ci in range(c):
        for i in range(kh):
            for j in range(kw):
                row = cols[(ci * kh + i) * kw + j]
                lo, hi, off = _span(sw, pw, dw, j, wo, wd)
                for r in range(ho):
                    xi = r * sh - ph + i * dh
                    if xi < 0 or xi >= h:
                        continue
                    dr = dx[ci, xi]
                    base = r * wo
                    if sw == 1:
                        for s in range(lo, hi):
                            dr[s + off] += row[base + s]
                    else:
                        for s in range(lo, hi):
                            dr[s * sw + off] += row[base + s]


@njit(**_OPTS)
def _grad_input(g3, w2, dx, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, lo, hi):
    cols = np.empty((w2.shape[1], ho * wo), dx.dtype)
    zero = zero_of(g3[0, 0, 0])
    for n in range(lo, hi):
        cblas.gemm_ex(w2, g3[n], cols, 1.0, 0.0, True, False)
        dn = dx[n]
        dn[...] = zero
        _col2im(cols, kh, kw, sh, sw, ph, pw, dh, dw, ho, wo, dn)


def _usable(groups, *arrays) -> bool:
    if groups != 1 or not cblas.available():
        return False
    a0 = arrays[0]
    if a0.dtype not in (np.float32, np.float64) or any(a.dtype != a0.dtype for a in arrays):
        return False
    return all(a.flags.c_contiguous for a in arrays) and all(a.size for a in arrays)


def _geometry(attrs, kh, kw, h, wd):
    (sh, sw), (ph, pw), (dh, dw) = attrs["stride"], attrs["padding"], attrs["dilation"]
    ho, wo = ck.out_size(h, kh, sh, ph, dh), ck.out_size(wd, kw, sw, pw, dw)
    return kh, kw, sh, sw, ph, pw, dh, dw, ho, wo


def conv2d_grad_input(xp, g, w, out=None, in_size=(0, 0), **attrs):
    """`conv_kernels.conv2d_grad_input`, compiled (groups of 1)."""
    a = conv_attrs(attrs)
    n, o = g.shape[:2]
    _, c, kh, kw = w.shape
    h, wd = (int(s) for s in in_size)
    if out is None:
        out = np.empty((n, c, h, wd), g.dtype)
    if not _usable(a["groups"], g, w, out):
        return ck.conv2d_grad_input(xp, g, w, out=out, in_size=(h, wd), **a)
    geo = _geometry(a, kh, kw, h, wd)
    w2, g3 = w.reshape(o, -1), g.reshape(n, o, -1)

    def slab(lo, hi):
        _grad_input(g3, w2, out, *geo, lo, hi)

    in_row_slabs(n, slab)
    return out
