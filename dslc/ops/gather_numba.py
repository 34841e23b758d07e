"""Compiled CPU kernel of `scatter_add_rows` (the gradient of an embedding lookup).

The NumPy kernel (`linalg._add_rows`) sorts the indices and sums each index's rows with
`add.reduceat` over a gathered copy of the rows: for the benchmark's GPT (4096 rows of 128
into a 65-row table) 2 ms a step. Here one loop adds each row into its table row in the
order of the indices, as the NumPy kernel's order does (0.2 ms). Out-of-range indices are
left to the NumPy kernel, which reports them. Importing this module needs numba.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from dslc.ops import linalg

_OPTS = dict(nogil=True, cache=True, error_model="numpy", fastmath={"contract"})


@njit(**_OPTS)
def _in_range(idx, n):
    for k in range(idx.shape[0]):
        if idx[k] < -n or idx[k] >= n:
            return False
    return True


@njit(**_OPTS)
def _add_rows(out, idx, rows):
    n, width = out.shape[0], out.shape[1]
    for k in range(idx.shape[0]):
        i = idx[k]
        if i < 0:
            i += n
        dst = out[i]
        src = rows[k]
        for j in range(width):
            dst[j] += src[j]


def scatter_add_rows(xp, g, idx, out=None, n=0):
    """`linalg._scatter_add_rows`, compiled."""
    flat_idx = idx.reshape(-1)
    usable = (
        g.dtype in (np.float32, np.float64)
        and flat_idx.dtype.kind == "i"
        and (out is None or (out.dtype == g.dtype and out.flags.c_contiguous))
    )
    if not usable or not _in_range(flat_idx, n):
        return linalg._scatter_add_rows(xp, g, idx, out=out, n=n)
    shape = (n,) + g.shape[idx.ndim :]
    if out is None:
        out = np.zeros(shape, dtype=g.dtype)
    else:
        out.fill(0)
    width = int(np.prod(shape[1:], dtype=np.int64))
    rows = np.ascontiguousarray(g).reshape(flat_idx.shape[0], width)
    _add_rows(out.reshape(n, width), flat_idx, rows)
    return out
