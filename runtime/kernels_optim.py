"""Optimizer updates as one Numba loop over a flat parameter buffer (needs numba).

Each function is the whole update of `dslc.runtime.optim`'s optimizer of the same name, in
the same order of operations, element by element: one pass over parameters, gradient and
state instead of a dozen whole-buffer NumPy passes. Scalars arrive in the buffers' dtype.
Large buffers use the parallel variant.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

PARALLEL_MIN = 1 << 16
_OPTS = {"cache": True, "nogil": True, "error_model": "numpy", "fastmath": {"contract"}}


@njit(**_OPTS)
def _adam_at(i, p, g, m, v, vmax, lr, b1, b2, eps, wd, decoupled, use_wd, amsgrad, bc1, bc2_sqrt):
    one = p.dtype.type(1.0)
    pi = p[i]
    gi = g[i]
    if decoupled:
        pi = pi * (one - lr * wd)  # AdamW: p <- p (1 - lr wd)
    elif use_wd:
        gi = gi + p[i] * wd  # L2 in the gradient
    mi = m[i]
    mi = mi + (gi - mi) * (one - b1)
    m[i] = mi
    vi = v[i] * b2 + (gi * gi) * (one - b2)
    v[i] = vi
    if amsgrad:
        vi = max(vmax[i], vi)
        vmax[i] = vi
    denom = math.sqrt(vi) / bc2_sqrt + eps
    p[i] = pi + (mi / denom) * (-(lr / bc1))


# The loops below call the element functions with the flags that decide which buffers are
# touched as literals, one loop per configuration: with the flags as loop-invariant values
# LLVM kept the loop scalar (a conditional access of a one-element placeholder), 4.5x slower
# (Adam over 1.4M float32: 5.5 ms -> 1.2 ms, measured). The same holds for a test of a
# runtime value inside the loop (`wd != 0`, `mom != 0`): SGD with momentum over 269K float32
# took 0.24 ms with them and 0.08 ms with literal flags. Only the rare centred RMSprop and
# SGD's first step and AMSGrad's L2 test keep runtime values. `prange` is `range` in the serial
# variant; each variant is named apart, so Numba's cache keeps them in files of their own.


def _named(fn, name):
    fn.__name__ = fn.__qualname__ = name
    return fn


def _adam_loops(rng):
    def run(p, g, m, v, vmax, lr, b1, b2, eps, wd, decoupled, amsgrad, bc1, bc2r):
        zero = p.dtype.type(0)
        if amsgrad and decoupled:
            for i in rng(p.size):
                _adam_at(i, p, g, m, v, vmax, lr, b1, b2, eps, wd, True, False, True, bc1, bc2r)
        elif amsgrad:
            l2 = wd != 0
            for i in rng(p.size):
                _adam_at(i, p, g, m, v, vmax, lr, b1, b2, eps, wd, False, l2, True, bc1, bc2r)
        elif decoupled:
            for i in rng(p.size):
                _adam_at(i, p, g, m, v, vmax, lr, b1, b2, eps, wd, True, False, False, bc1, bc2r)
        elif wd != 0:
            for i in rng(p.size):
                _adam_at(i, p, g, m, v, vmax, lr, b1, b2, eps, wd, False, True, False, bc1, bc2r)
        else:
            for i in rng(p.size):
                _adam_at(i, p, g, m, v, vmax, lr, b1, b2, eps, zero, False, False, False, bc1, bc2r)

    return run


adam_serial = njit(**_OPTS)(_named(_adam_loops(range), "adam_serial"))
adam_parallel = njit(parallel=True, **_OPTS)(_named(_adam_loops(prange), "adam_parallel"))


@njit(**_OPTS)
def _sgd_at(i, p, g, buf, lr, mom, damp, wd, use_wd, use_mom, nesterov, first):
    one = p.dtype.type(1.0)
    gi = g[i]
    if use_wd:
        gi = gi + p[i] * wd
    if use_mom:
        b = gi if first else buf[i] * mom + gi * (one - damp)
        buf[i] = b
        gi = gi + b * mom if nesterov else b
    p[i] = p[i] + gi * (-lr)


def _sgd_loops(rng):
    def run(p, g, buf, lr, mom, damp, wd, nesterov, first):
        if wd == 0:
            if mom == 0:
                for i in rng(p.size):
                    _sgd_at(i, p, g, buf, lr, mom, damp, wd, False, False, False, False)
            elif first:
                for i in rng(p.size):
                    _sgd_at(i, p, g, buf, lr, mom, damp, wd, False, True, nesterov, True)
            elif nesterov:
                for i in rng(p.size):
                    _sgd_at(i, p, g, buf, lr, mom, damp, wd, False, True, True, False)
            else:
                for i in rng(p.size):
                    _sgd_at(i, p, g, buf, lr, mom, damp, wd, False, True, False, False)
        elif mom == 0:
            for i in rng(p.size):
                _sgd_at(i, p, g, buf, lr, mom, damp, wd, True, False, False, False)
        elif first:
            for i in rng(p.size):
                _sgd_at(i, p, g, buf, lr, mom, damp, wd, True, True, nesterov, True)
        elif nesterov:
            for i in rng(p.size):
                _sgd_at(i, p, g, buf, lr, mom, damp, wd, True, True, True, False)
        else:
            for i in rng(p.size):
                _sgd_at(i, p, g, buf, lr, mom, damp, wd, True, True, False, False)

    return run


sgd_serial = njit(**_OPTS)(_named(_sgd_loops(range), "sgd_serial"))
sgd_parallel = njit(parallel=True, **_OPTS)(_named(_sgd_loops(prange), "sgd_parallel"))


@njit(**_OPTS)
def _rmsprop_at(i, p, g, sq, ga, buf, lr, alpha, eps, wd, mom, use_wd, use_mom, centered):
    one = p.dtype.type(1.0)
    gi = g[i]
    if use_wd:
        gi = gi + p[i] * wd
    s = sq[i] * alpha + (gi * gi) * (one - alpha)
    sq[i] = s
    if centered:
        a = ga[i]
        a = a + (gi - a) * (one - alpha)
        ga[i] = a
        avg = math.sqrt(s - a * a) + eps
    else:
        avg = math.sqrt(s) + eps
    u = gi / avg
    if use_mom:
        u = buf[i] * mom + u
        buf[i] = u
    p[i] = p[i] + u * (-lr)


def _rmsprop_loops(rng):
    def run(p, g, sq, ga, buf, lr, alpha, eps, wd, mom, centered):
        # the flags that decide which buffers are touched, as literals (see above)
        if centered:
            for i in rng(p.size):
                _rmsprop_at(i, p, g, sq, ga, buf, lr, alpha, eps, wd, mom, wd != 0, mom != 0, True)
        elif mom != 0 and wd != 0:
            for i in rng(p.size):
                _rmsprop_at(i, p, g, sq, ga, buf, lr, alpha, eps, wd, mom, True, True, False)
        elif mom != 0:
            for i in rng(p.size):
                _rmsprop_at(i, p, g, sq, ga, buf, lr, alpha, eps, wd, mom, False, True, False)
        elif wd != 0:
            for i in rng(p.size):
                _rmsprop_at(i, p, g, sq, ga, buf, lr, alpha, eps, wd, mom, True, False, False)
        else:
            for i in rng(p.size):
                _rmsprop_at(i, p, g, sq, ga, buf, lr, alpha, eps, wd, mom, False, False, False)

    return run


rmsprop_serial = njit(**_OPTS)(_named(_rmsprop_loops(range), "rmsprop_serial"))
rmsprop_parallel = njit(parallel=True, **_OPTS)(_named(_rmsprop_loops(prange), "rmsprop_parallel"))


ADAM = (adam_serial, adam_parallel)
SGD = (sgd_serial, sgd_parallel)
RMSPROP = (rmsprop_serial, rmsprop_parallel)


def pick(variants, n: int, threads: int):
    """The serial variant; for large buffers when threads are allowed, whichever of the
    serial and parallel ones is faster on the first calls (busy cores make threads lose)."""
    if threads > 1 and n >= PARALLEL_MIN:
        from dslc.runtime.kernels_numba import Tuned

        return Tuned(variants)
    return variants[0]


def placeholder(p):
    """A one-element stand-in for a state buffer a configuration does not use."""
    return np.zeros(1, dtype=p.dtype)
