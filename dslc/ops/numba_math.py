"""Scalar float32 math for Numba kernels (generated ones, the scans), written to vectorise.

Numba calls scalar libm for `math.exp`, `math.tanh` and `math.erf` (no SVML in the PyPI
build), which keeps a loop scalar; these are polynomial/rational approximations accurate
to float32 rounding (a few ulp), built from operations LLVM vectorises:

  exp32   Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, a degree-5 polynomial for e^r
          (Cephes expf), 2^n put together in the exponent bits
  tanh32  a 13/6 rational function on [-7.9, 7.9] (Eigen's float tanh), +-1 beyond
  erf32   a rational function on [-4, 4] (Eigen's float erf), +-1 beyond
  fmax, fmin  NumPy's maximum/minimum: NaN if either operand is NaN
  zero_of(x)  a zero of x's float type, for accumulators (never `x - x` or `x * 0`: NaN for
          an infinite or NaN x, such as the garbage of a scratch buffer)
  exp_of(x), tanh_of(x)  exp32 / tanh32 for a float32 x, `math.exp` / `math.tanh` for float64
  like(x, v)  the number v in x's float type (Numba types `float32 / int` as float64, which
          turns a float32 loop into a float64 one)

NaN and infinities propagate as in NumPy. The polynomials may contract to fused multiply-adds
(`fastmath={"contract"}`: one rounding instead of two, and 25% faster in the LSTM gates).
Importing this module needs numba.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

F = np.float32


@intrinsic
def _i32_as_f32(typingctx, x):
    """Reinterpret the bits of an int32 as a float32."""
    sig = types.float32(types.int32)

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return sig, codegen


_LOG2E = F(1.4426950408889634)
_LN2_HI = F(0.693359375)
_LN2_LO = F(-2.12194440e-4)
_P = (F(1.9875691500e-4), F(1.3981999507e-3), F(8.3334519073e-3), F(4.1665795894e-2),
      F(1.6666665459e-1), F(5.0000001201e-1))  # fmt: skip
_LO, _HI, _TOP = F(-87.33654), F(88.0), F(88.72283)
_ONE, _ZERO, _INF = F(1.0), F(0.0), F(np.inf)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def exp32(x):
    """e^x for float32 (relative error below 2e-7 where the result is normal)."""
    xc = min(max(x, _LO), _HI)
    n = np.rint(xc * _LOG2E)
    r = xc - n * _LN2_HI
    r = r - n * _LN2_LO
    p = _P[0] * r + _P[1]
    p = p * r + _P[2]
    p = p * r + _P[3]
    p = p * r + _P[4]
    p = p * r + _P[5]
    y = (p * (r * r) + r) + _ONE
    y = y * _i32_as_f32((np.int32(n) + np.int32(127)) << np.int32(23))
    y = y if x >= _LO else _ZERO
    y = y if x < _TOP else _INF
    return y if x == x else x


_TANH_CLAMP = F(7.90531110763549805)
_TANH_SAT = F(9.0)  # tanh rounds to +-1 in float32 beyond
_TA = (F(-2.76076847742355e-16), F(2.00018790482477e-13), F(-8.60467152213735e-11),
       F(5.12229709037114e-08), F(1.48572235717979e-05), F(6.37261928875436e-04),
       F(4.89352455891786e-03))  # fmt: skip
_TB = (F(1.19825839466702e-06), F(1.18534705686654e-04), F(2.26843463243900e-03),
       F(4.89352518554385e-03))  # fmt: skip


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def tanh32(x):
    """tanh for float32 (absolute error below 1e-6)."""
    xc = min(max(x, -_TANH_CLAMP), _TANH_CLAMP)
    x2 = xc * xc
    p = _TA[0] * x2 + _TA[1]
    p = p * x2 + _TA[2]
    p = p * x2 + _TA[3]
    p = p * x2 + _TA[4]
    p = p * x2 + _TA[5]
    p = p * x2 + _TA[6]
    p = p * xc
    q = _TB[0] * x2 + _TB[1]
    q = q * x2 + _TB[2]
    q = q * x2 + _TB[3]
    y = p / q
    y = y if x < _TANH_SAT else _ONE
    y = y if x > -_TANH_SAT else -_ONE
    return y if x == x else x


_EA = (F(-2.72614225801306e-10), F(2.77068142495902e-08), F(-2.10102402082508e-06),
       F(-5.69250639462346e-05), F(-7.34990630326855e-04), F(-2.95459980854025e-03),
       F(-1.60960333262415e-02))  # fmt: skip
_EB = (F(-1.45660718464996e-05), F(-2.13374055278905e-04), F(-1.68282697438203e-03),
       F(-7.37332916720468e-03), F(-1.42647390514189e-02))  # fmt: skip
_FOUR = F(4.0)


@njit(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})
def erf32(x):
    """erf for float32 (absolute error below 5e-7)."""
    xc = min(max(x, -_FOUR), _FOUR)
    x2 = xc * xc
    p = _EA[0] * x2 + _EA[1]
    p = p * x2 + _EA[2]
    p = p * x2 + _EA[3]
    p = p * x2 + _EA[4]
    p = p * x2 + _EA[5]
    p = p * x2 + _EA[6]
    p = p * xc
    q = _EB[0] * x2 + _EB[1]
    q = q * x2 + _EB[2]
    q = q * x2 + _EB[3]
    q = q * x2 + _EB[4]
    y = p / q
    return y if x == x else x


@njit(cache=True, nogil=True)
def fmax(a, b):
    """NumPy's maximum of two scalars."""
    return a if (a >= b or a != a) else b


@njit(cache=True, nogil=True)
def fmin(a, b):
    """NumPy's minimum of two scalars."""
    return a if (a <= b or a != a) else b


def zero_of(x):  # typed by the overload below
    raise NotImplementedError


@overload(zero_of, inline="always")
def _zero_of(x):
    if x == types.float32:
        return lambda x: np.float32(0.0)
    return lambda x: 0.0


def like(x, v):  # typed by the overload below
    raise NotImplementedError


@overload(like, inline="always")
def _like(x, v):
    if x == types.float32:
        return lambda x, v: np.float32(v)
    return lambda x, v: float(v)


def exp_of(x):  # typed by the overload below
    raise NotImplementedError


@overload(exp_of, inline="always")
def _exp_of(x):
    if x == types.float32:
        return lambda x: exp32(x)
    return lambda x: math.exp(x)


def tanh_of(x):  # typed by the overload below
    raise NotImplementedError


@overload(tanh_of, inline="always")
def _tanh_of(x):
    if x == types.float32:
        return lambda x: tanh32(x)
    return lambda x: math.tanh(x)
