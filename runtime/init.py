"""Parameter initialisers, by the names `.nn` files use (`param W: f32[a, b] = glorot_uniform`).

Each parameter draws from its own generator seeded by (seed, parameter name), so a parameter's
initial value does not change when another parameter is added, removed or reordered.

Fans follow the layouts of the built-in layers: a matrix `[in, out]` (used as `x @ W`) has
fan_in = in, fan_out = out; a convolution kernel `[out, in, kh, kw]` has fan_in = in*kh*kw and
fan_out = out*kh*kw (PyTorch's convention); a vector has fan_in = fan_out = its length.

The front end stores every initialiser as one of zeros, ones, constant, normal, uniform and
truncated_normal (docs/language.md, section 8); the others are here for graphs built in
Python. Initialisers and their arguments (positional in this order, or by keyword):

  zeros, ones
  constant(value)
  normal(mean=0, std=1)            uniform(low=0, high=1)
  truncated_normal(mean=0, std=1, lo=mean-2std, hi=mean+2std)  redrawn outside [lo, hi]
  glorot_uniform(gain=1)  glorot_normal(gain=1)    alias xavier_uniform, xavier_normal
  he_uniform(gain=sqrt 2) he_normal(gain=sqrt 2)   alias kaiming_uniform, kaiming_normal
  lecun_uniform  lecun_normal                      (gain 1 over fan_in)
  fan_in_uniform                                   U(+-1/sqrt(fan_in)): PyTorch's default
                                                   for Linear/Conv weights and biases
  orthogonal(gain=1)                               a (semi-)orthogonal matrix
  eye                                              the identity (square matrices)
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable

import numpy as np

from dslc.errors import Span, ValueError_

SQRT2 = math.sqrt(2.0)


def fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """(fan_in, fan_out) of a parameter shape."""
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[2:])
    return shape[1] * receptive, shape[0] * receptive


def _normal(rng, shape, mean=0.0, std=1.0):
    return rng.normal(mean, std, shape)


def _uniform(rng, shape, low=0.0, high=1.0):
    return rng.uniform(low, high, shape)


def _truncated(rng, shape, mean=0.0, std=1.0, lo=None, hi=None):
    lo = mean - 2.0 * std if lo is None else lo
    hi = mean + 2.0 * std if hi is None else hi
    if not lo < hi or std <= 0:
        raise ValueError(f"needs std > 0 and lo < hi, got std {std}, [{lo}, {hi}]")
    out = rng.normal(mean, std, shape)
    bad = (out < lo) | (out > hi)
    while bad.any():  # redraw what falls outside [lo, hi]
        out[bad] = rng.normal(mean, std, int(bad.sum()))
        bad = (out < lo) | (out > hi)
    return out


def _glorot_uniform(rng, shape, gain=1.0):
    fi, fo = fans(shape)
    a = gain * math.sqrt(6.0 / (fi + fo))
    return rng.uniform(-a, a, shape)


def _glorot_normal(rng, shape, gain=1.0):
    fi, fo = fans(shape)
    return rng.normal(0.0, gain * math.sqrt(2.0 / (fi + fo)), shape)


def _he_uniform(rng, shape, gain=SQRT2):
    a = gain * math.sqrt(3.0 / fans(shape)[0])
    return rng.uniform(-a, a, shape)


def _he_normal(rng, shape, gain=SQRT2):
    return rng.normal(0.0, gain / math.sqrt(fans(shape)[0]), shape)


def _fan_in_uniform(rng, shape):
    a = 1.0 / math.sqrt(fans(shape)[0])
    return rng.uniform(-a, a, shape)


def _orthogonal(rng, shape, gain=1.0):
    if len(shape) < 2:
        raise ValueError("orthogonal needs a parameter of rank 2 or more")
    rows, cols = shape[0], math.prod(shape[1:])
    a = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q *= np.sign(np.diag(r))  # make the decomposition unique
    if rows < cols:
        q = q.T
    return gain * q.reshape(shape)


def _eye(rng, shape):
    if len(shape) != 2:
        raise ValueError("eye needs a matrix")
    return np.eye(*shape)


INITIALIZERS: dict[str, Callable] = {
    "zeros": lambda rng, shape: np.zeros(shape),
    "ones": lambda rng, shape: np.ones(shape),
    "constant": lambda rng, shape, value=0.0: np.full(shape, value, dtype=np.float64),
    "normal": _normal,
    "uniform": _uniform,
    "truncated_normal": _truncated,
    "glorot_uniform": _glorot_uniform,
    "glorot_normal": _glorot_normal,
    "xavier_uniform": _glorot_uniform,
    "xavier_normal": _glorot_normal,
    "he_uniform": _he_uniform,
    "he_normal": _he_normal,
    "kaiming_uniform": _he_uniform,
    "kaiming_normal": _he_normal,
    "lecun_uniform": lambda rng, shape: _he_uniform(rng, shape, gain=1.0),
    "lecun_normal": lambda rng, shape: _he_normal(rng, shape, gain=1.0),
    "fan_in_uniform": _fan_in_uniform,
    "orthogonal": _orthogonal,
    "eye": _eye,
}


def param_rng(seed: int, name: str) -> np.random.Generator:
    """The generator that initialises parameter `name` under `seed`."""
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(name.encode())])


def _split_args(init_args) -> tuple[list, dict]:
    """`init_args` holds positional values and/or (keyword, value) pairs."""
    args, kwargs = [], {}
    for a in init_args or ():
        if isinstance(a, tuple) and len(a) == 2 and isinstance(a[0], str):
            kwargs[a[0]] = a[1]
        elif kwargs:
            raise ValueError("a positional argument follows a keyword argument")
        else:
            args.append(a)
    return args, kwargs


def initial_value(
    name: str,
    shape: tuple[int, ...],
    dtype,
    init: str,
    init_args=(),
    seed: int = 0,
    span: Span | None = None,
) -> np.ndarray:
    """The initial value of one parameter, as a NumPy array of `dtype`."""
    fn = INITIALIZERS.get(init)
    if fn is None:
        raise ValueError_(
            f"parameter {name}: unknown initialiser {init!r}",
            span,
            hint="one of " + ", ".join(sorted(INITIALIZERS)),
        )
    try:
        args, kwargs = _split_args(init_args)
        value = fn(param_rng(seed, name), tuple(shape), *args, **kwargs)
    except (TypeError, ValueError) as e:
        raise ValueError_(f"parameter {name}: bad arguments for {init}: {e}", span) from None
    return np.asarray(value).astype(dtype, copy=False)
