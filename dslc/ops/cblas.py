"""GEMM callable from Numba kernels: NumPy's own OpenBLAS `cblas_?gemm`, found at run time.

A recurrent scan is a loop of small GEMMs with a little elementwise work between them. Run
from Python, each step pays a dozen call overheads; run inside one Numba kernel, the loop
needs a GEMM it can call without the interpreter. Numba's `np.dot` calls SciPy's BLAS (an
extra dependency, and 30% slower on these shapes than NumPy's, measured); this module binds
the `cblas_sgemm`/`cblas_dgemm` of the OpenBLAS that NumPy itself loaded, through ctypes,
which Numba calls directly.

`gemm(a, b, c, beta, trans_b)` computes c = a @ op(b) + beta * c for 2-D arrays whose rows
have a unit stride (any row stride: a time step's rows inside [B, T, ...] are fine), and
`gemm_ex(a, b, c, alpha, beta, trans_a, trans_b)` c = alpha * op(a) @ op(b) + beta * c.

`available()` says whether a usable library was found. Without one (a NumPy linked to
another BLAS), callers keep their NumPy kernels. Importing this module needs numba.
"""

from __future__ import annotations

import ctypes

import llvmlite.binding as llvm
import numpy as np
from numba import njit, types

from dslc.ops.blas_pool import openblas_paths

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
# NumPy's wheels ship OpenBLAS with 64-bit integers (ILP64) and a symbol prefix and suffix;
# only ILP64 builds are bound, so one signature serves (and Numba can cache the kernels)
_SYMBOLS = ("scipy_cblas_{p}gemm64_", "cblas_{p}gemm64_")


def _address(prefix: str) -> int | None:
    for path in openblas_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in _SYMBOLS:
            fn = getattr(lib, name.format(p=prefix), None)
            if fn is not None:
                return ctypes.cast(fn, ctypes.c_void_p).value
    return None


def _external(prefix: str, real):
    """The GEMM as a Numba external function named `dslc_cblas_?gemm`, or None.

    The symbol is registered with LLVM by name in every process before any kernel that calls
    it is compiled or loaded from Numba's cache; pointers travel as intp (the same
    registers as a pointer on every 64-bit ABI)."""
    addr = _address(prefix)
    if addr is None:
        return None
    name = f"dslc_cblas_{prefix}gemm"
    llvm.add_symbol(name, addr)
    i32, i64, p = types.int32, types.int64, types.intp
    return types.ExternalFunction(
        name, types.void(i32, i32, i32, i64, i64, i64, real, p, i64, p, i64, real, p, i64)
    )


_sgemm = _external("s", types.float32)
_dgemm = _external("d", types.float64)


def available() -> bool:
    """Whether both GEMMs were found."""
    return _sgemm is not None and _dgemm is not None


if available():
    _s, _d = _sgemm, _dgemm

    @njit(nogil=True, cache=True)
    def _ld(x, isz):
        """The leading dimension of a row-major matrix. A one-row matrix may carry any stride
        on that axis (NumPy does not fix strides of length-1 axes), which BLAS rejects."""
        ld = x.strides[0] // isz
        return max(ld, x.shape[1], 1) if x.shape[0] <= 1 else ld

    @njit(nogil=True, cache=True)
    def gemm_ex(a, b, c, alpha, beta, trans_a, trans_b):
        """c = alpha * op(a) @ op(b) + beta * c, op transposing when asked; rows of each
        with a unit stride."""
        m, n = c.shape
        k = a.shape[0] if trans_a else a.shape[1]
        ta = _TRANS if trans_a else _NO_TRANS
        tb = _TRANS if trans_b else _NO_TRANS
        isz = a.itemsize
        lda, ldb, ldc = _ld(a, isz), _ld(b, isz), _ld(c, isz)
        if isz == 4:
            _s(_ROW_MAJOR, ta, tb, m, n, k, np.float32(alpha), a.ctypes.data, lda,
               b.ctypes.data, ldb, np.float32(beta), c.ctypes.data, ldc)  # fmt: skip
        else:
            _d(_ROW_MAJOR, ta, tb, m, n, k, np.float64(alpha), a.ctypes.data, lda,
               b.ctypes.data, ldb, np.float64(beta), c.ctypes.data, ldc)  # fmt: skip

    @njit(nogil=True, cache=True)
    def gemm(a, b, c, beta, trans_b):
        """c = a @ (b.T if trans_b else b) + beta * c; rows of each with a unit stride."""
        gemm_ex(a, b, c, 1.0, beta, False, trans_b)

else:
    gemm = gemm_ex = None
