"""Vectorised special functions NumPy lacks: erf (W. J. Cody's rational approximations).

Cody, "Rational Chebyshev approximations for the error function", Math. Comp. 23 (1969),
as in his CALERF routine: three ranges of |x|, each a ratio of polynomials, accurate to
float64 rounding. float32 uses one cheaper rational function (abs. error below 5e-7).
CuPy has its own erf, used when `xp` is cupy.
"""

from __future__ import annotations

import numpy as np

from dslc.ops.rules import is_cupy

_A = (
    3.16112374387056560e00,
    1.13864154151050156e02,
    3.77485237685302021e02,
    3.20937758913846947e03,
    1.85777706184603153e-1,
)
_B = (
    2.36012909523441209e01,
    2.44024637934444173e02,
    1.28261652607737228e03,
    2.84423683343917062e03,
)
_C = (
    5.64188496988670089e-1,
    8.88314979438837594e00,
    6.61191906371416295e01,
    2.98635138197400131e02,
    8.81952221241769090e02,
    1.71204761263407058e03,
    2.05107837782607147e03,
    1.23033935479799725e03,
    2.15311535474403846e-8,
)
_D = (
    1.57449261107098347e01,
    1.17693950891312499e02,
    5.37181101862009858e02,
    1.62138957456669019e03,
    3.29079923573345963e03,
    4.36261909014324716e03,
    3.43936767414372164e03,
    1.23033935480374942e03,
)
_P = (
    3.05326634961232344e-1,
    3.60344899949804439e-1,
    1.25781726111229246e-1,
    1.60837851487422766e-2,
    6.58749161529837803e-4,
    1.63153871373020978e-2,
)
_Q = (
    2.56852019228982242e00,
    1.87295284992346725e00,
    5.27905102951428412e-1,
    6.05183413124413191e-2,
    2.33520497626869185e-3,
)
_SQRPI = 5.6418958354775628695e-1  # 1/sqrt(pi)
_THRESH = 0.46875


def _erf_small(x):
    """erf(x) for |x| <= 0.46875."""
    y = x * x
    num = _A[4] * y
    den = y
    for i in range(3):
        num = (num + _A[i]) * y
        den = (den + _B[i]) * y
    return x * (num + _A[3]) / (den + _B[3])


def _scaled(xp, y, r):
    """exp(-y*y) * r, with y*y split so the exponent keeps its low bits."""
    ysq = xp.trunc(y * 16.0) / 16.0
    d = (y - ysq) * (y + ysq)
    return xp.exp(-ysq * ysq) * xp.exp(-d) * r


def _erfc_mid(xp, y):
    """erfc(y) for 0.46875 < y <= 4."""
    num = _C[8] * y
    den = y
    for i in range(7):
        num = (num + _C[i]) * y
        den = (den + _D[i]) * y
    return _scaled(xp, y, (num + _C[7]) / (den + _D[7]))


def _erfc_large(xp, y):
    """erfc(y) for y > 4 (0 past 27, where it underflows; also for y = inf)."""
    y = xp.minimum(y, 27.0)
    z = 1.0 / (y * y)
    num = _P[5] * z
    den = z
    for i in range(4):
        num = (num + _P[i]) * z
        den = (den + _Q[i]) * z
    r = z * (num + _P[4]) / (den + _Q[4])
    return _scaled(xp, y, (_SQRPI - r) / y)


# float32: one rational function on [-4, 4] (erf is +-1 in float32 beyond), as in Eigen
_ALPHA32 = (-2.72614225801306e-10, 2.77068142495902e-08, -2.10102402082508e-06,
            -5.69250639462346e-05, -7.34990630326855e-04, -2.95459980854025e-03,
            -1.60960333262415e-02)  # fmt: skip
_BETA32 = (-1.45660718464996e-05, -2.13374055278905e-04, -1.68282697438203e-03,
           -7.37332916720468e-03, -1.42647390514189e-02)  # fmt: skip


BLOCK = 32768  # elements per block: a dozen passes over a block stay in the caches


def blocked(x, out, fn, n_scratch: int):
    """out = fn(x) evaluated block by block: `fn(xb, ob, scratch)` writes block `ob` from `xb`
    using float32 scratch vectors of the block's length. Multi-pass formulas then cost one
    pass over memory instead of one per operation. Returns `out` (allocated when None)."""
    shape = x.shape
    res = out if out is not None and out.dtype == np.float32 and out.flags.c_contiguous else None
    if res is None:
        res = np.empty(shape, np.float32)
    xi = np.ascontiguousarray(x).reshape(-1)
    ro = res.reshape(-1)
    n = xi.size
    b = min(BLOCK, max(n, 1))
    scratch = [np.empty(b, np.float32) for _ in range(n_scratch)]
    for s in range(0, n, b):
        e = min(n, s + b)
        fn(xi[s:e], ro[s:e], [t[: e - s] for t in scratch])
    if out is not None and res is not out:
        np.copyto(out, res, casting="unsafe")
        return out
    return res


_A32 = tuple(np.float32(c) for c in _ALPHA32)
_B32 = tuple(np.float32(c) for c in _BETA32)


def erf32_block(xb, ob, scratch) -> None:
    """erf of one float32 block into `ob` (three scratch vectors)."""
    v, x2, den = scratch
    np.clip(xb, np.float32(-4.0), np.float32(4.0), out=v)
    np.multiply(v, v, out=x2)
    num = ob
    np.multiply(x2, _A32[0], out=num)
    num += _A32[1]
    for c in _A32[2:]:
        num *= x2
        num += c
    num *= v
    np.multiply(x2, _B32[0], out=den)
    den += _B32[1]
    for c in _B32[2:]:
        den *= x2
        den += c
    num /= den


def _erf32(xp, x, out=None):
    """erf for float32 and float16 arrays, to float32 rounding; computed in float32."""
    if xp is not np:
        raise AssertionError("cupy has its own erf")
    res = blocked(x, out, erf32_block, 3)
    return res if out is not None or x.dtype == np.float32 else res.astype(x.dtype)


def erf(xp, x, out=None):
    """erf of a float array, elementwise; float64 is computed in one Cody range per element."""
    if is_cupy(xp):
        from cupyx.scipy.special import erf as cupy_erf

        return cupy_erf(x) if out is None else xp.copyto(out, cupy_erf(x)) or out
    x = xp.asarray(x)
    if x.dtype != np.float64:
        return _erf32(xp, x, out)
    work = x
    res = xp.empty_like(work)
    ax = xp.abs(work)
    small = ax <= _THRESH
    res[small] = _erf_small(work[small])
    big = ~small
    if big.any():
        y = ax[big]
        erfc = xp.empty_like(y)
        mid = y <= 4.0
        erfc[mid] = _erfc_mid(xp, y[mid])
        erfc[~mid] = _erfc_large(xp, y[~mid]) if (~mid).any() else 0.0
        r = (0.5 - erfc) + 0.5
        res[big] = xp.where(work[big] < 0, -r, r)
    if out is None:
        return res
    xp.copyto(out, res, casting="unsafe")
    return out
