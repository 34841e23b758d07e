"""Stacked matmuls split over a few threads, each running single-threaded BLAS.

NumPy runs `[B, M, K] @ [B, K, N]` as B separate GEMM calls; OpenBLAS splits every one of
them over its threads and joins them again, B times per call. On a machine where another
process holds a core that join waits a whole time slice each time, and a stack of small
GEMMs (attention's scores) runs 10-100x slower than on one thread. Here the stack is split
into one slab per thread instead, each thread calling GEMMs with its own BLAS thread count
set to 1 (`openblas_set_num_threads_local`): one join per call, the same total parallelism.

Small single GEMMs have the same problem (a [32, 128] @ [128, 512] took 9 ms with two
OpenBLAS threads on a busy machine and 0.1 ms with one): `matmul2d` runs those with the
calling thread's BLAS thread count set to 1, and recurrent scans run their time loops so.

Without an OpenBLAS that has the per-thread setting (or with one thread), all of this is
plain `numpy.matmul`.
"""

from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

_lock = threading.Lock()
_state: dict[str, object] = {}
SMALL_GEMM = 1 << 22  # M*N*K below which one BLAS thread is faster than a join of several


def _threads() -> int:
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        v = os.environ.get(var, "")
        if v.isdigit() and int(v) > 0:
            return int(v)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def _openblas_local_setter():
    """`openblas_set_num_threads_local` of the OpenBLAS NumPy loaded, or None."""
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "openblas" in line.lower()}
    except OSError:
        return None
    for path in sorted(paths):
        if not os.path.exists(path):
            continue
        try:
            fn = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    return None


def pool() -> ThreadPoolExecutor | None:
    """The worker pool (created on first use), or None where splitting cannot help.

    Off unless DSLC_BLAS_SPLIT=1: on a quiet 2-core machine, once the pool's threads had
    called BLAS, a large GEMM on the main thread ran at one thread's speed (a [4096, 128] @
    [128, 512] took 8.1 ms instead of 4.9), which cost more than the split of stacked
    products gained (3.2 -> 2.6 ms). The split helps on a machine where another process holds
    a core; small GEMMs still run on one BLAS thread either way (`matmul2d`).
    """
    if "pool" not in _state:
        with _lock:
            if "pool" not in _state:
                n = _threads()
                setter = _openblas_local_setter() if n > 1 else None
                _state["threads"] = n
                _state["setter"] = setter
                _state["pool"] = None
                if setter is not None and os.environ.get("DSLC_BLAS_SPLIT", "") == "1":
                    _state["pool"] = ThreadPoolExecutor(
                        n, thread_name_prefix="dslc-blas", initializer=lambda: setter(1)
                    )
    return _state["pool"]  # type: ignore[return-value]


def stacked_matmul(a, b, out=None):
    """np.matmul of operands with batch axes, split along the first batch axis over threads."""
    ex = pool() if a.ndim > 2 and b.ndim > 2 else None
    if ex is None:
        return np.matmul(a, b, out=out)
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    n = _state["threads"]
    if batch[0] < n:
        return np.matmul(a, b, out=out)
    a = np.broadcast_to(a, batch + a.shape[-2:])
    b = np.broadcast_to(b, batch + b.shape[-2:])
    if out is None:
        out = np.empty(batch + (a.shape[-2], b.shape[-1]), np.result_type(a, b))
    bounds = [batch[0] * i // n for i in range(n + 1)]
    futures = [
        ex.submit(np.matmul, a[lo:hi], b[lo:hi], out=out[lo:hi])
        for lo, hi in zip(bounds[:-1], bounds[1:])
    ]
    for f in futures:
        f.result()
    return out


def in_slabs(n: int, fn) -> None:
    """fn(lo, hi) over a split of range(n), one slab per thread (fn(0, n) without a pool).

    `fn` runs in the pool's threads, whose BLAS calls are single-threaded: it must call
    NumPy directly (not `stacked_matmul`, whose tasks would wait behind its own).
    """
    ex = pool() if n > 1 else None
    if ex is None:
        fn(0, n)
        return
    k = min(n, _state["threads"])
    bounds = [n * i // k for i in range(k + 1)]
    futures = [ex.submit(fn, lo, hi) for lo, hi in zip(bounds[:-1], bounds[1:])]
    for f in futures:
        f.result()


@contextmanager
def single_threaded():
    """BLAS calls of the calling thread use one thread inside the block."""
    pool()
    setter = _state.get("setter")
    if setter is None:
        yield
        return
    prev = setter(1)
    try:
        yield
    finally:
        setter(prev)


def matmul2d(a, b, out=None):
    """np.matmul of 2-D operands; small products on one BLAS thread (see the module doc)."""
    pool()
    setter = _state.get("setter")
    if setter is None or a.shape[0] * a.shape[1] * b.shape[-1] >= SMALL_GEMM:
        return np.matmul(a, b, out=out)
    prev = setter(1)
    try:
        return np.matmul(a, b, out=out)
    finally:
        setter(prev)
