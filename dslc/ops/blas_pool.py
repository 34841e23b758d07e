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


def openblas_paths() -> list[str]:
    """Paths of the OpenBLAS libraries mapped into this process, NumPy's own first."""
    np.dot(np.ones((2, 2)), np.ones((2, 2)))  # NumPy's BLAS is loaded
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if "openblas" in line.lower()}
    except OSError:
        return []
    libs = os.path.join(os.path.dirname(os.path.dirname(np.__file__)), "numpy.libs")
    return sorted(
        (p for p in paths if os.path.exists(p)), key=lambda p: (not p.startswith(libs), p)
    )


def _openblas_local_setter():
    """`openblas_set_num_threads_local` of the OpenBLAS NumPy loaded, or None."""
    for path in openblas_paths():
        try:
            fn = ctypes.CDLL(path).openblas_set_num_threads_local
        except (OSError, AttributeError):
            continue
        fn.argtypes, fn.restype = [ctypes.c_int], ctypes.c_int
        return fn
    return None


def _setup() -> None:
    if "threads" not in _state:
        with _lock:
            if "threads" not in _state:
                n = _threads()
                _state["setter"] = _openblas_local_setter() if n > 1 else None
                _state["threads"] = n


def threads() -> int:
    """The BLAS thread count dslc works with (OPENBLAS_NUM_THREADS, else the CPUs)."""
    _setup()
    return _state["threads"]  # type: ignore[return-value]


def _make_pool(name: str, workers: int) -> ThreadPoolExecutor | None:
    if name not in _state:
        with _lock:
            if name not in _state:
                _state[name] = ThreadPoolExecutor(workers, thread_name_prefix=f"dslc-{name}")
    return _state[name]  # type: ignore[return-value]


def pool() -> ThreadPoolExecutor | None:
    """The worker pool of stacked GEMMs (created on first use), or None.

    Off unless DSLC_BLAS_SPLIT=1: on a quiet 2-core machine one multi-threaded GEMM per
    product is as fast, and a split only pays where another process holds a core. Small
    GEMMs run on one BLAS thread either way (`matmul2d`).
    """
    _setup()
    if _state["setter"] is None or os.environ.get("DSLC_BLAS_SPLIT", "") != "1":
        return None
    return _make_pool("blas", _state["threads"])


def row_pool() -> ThreadPoolExecutor | None:
    """Workers for kernels that run a whole loop of small GEMMs over a slab of rows (the
    recurrent scans), or None with one thread. On by default, unlike `pool()`: a scan
    hands each worker one call, not one per GEMM; the calling thread takes a slab too."""
    _setup()
    if _state["setter"] is None:
        return None
    return _make_pool("rows", _state["threads"] - 1)


def _run_slabs(ex, n: int, k: int, fn, caller_takes_one: bool) -> None:
    """fn(lo, hi) over k slabs of range(n), every BLAS call on one thread.

    `openblas_set_num_threads_local` is not thread-local in every OpenBLAS build: a worker
    that sets 1 and never sets it back left the main thread's large GEMMs on one thread
    (measured: 2.7 -> 5.4 ms for a [3200, 128] @ [128, 512]). So the caller sets 1 for the
    whole call and restores its value after every slab has finished, and each worker sets
    and restores around its slab; whichever meaning the setting has, the caller's value is
    back when this returns.
    """
    setter = _state["setter"]
    bounds = [n * i // k for i in range(k + 1)]
    slabs = list(zip(bounds[:-1], bounds[1:]))

    def task(lo, hi):
        prev = setter(1)
        try:
            fn(lo, hi)
        finally:
            setter(prev)

    prev = setter(1)
    try:
        mine = slabs[0] if caller_takes_one else None
        futures = [ex.submit(task, lo, hi) for lo, hi in (slabs[1:] if mine else slabs)]
        try:
            if mine:
                fn(*mine)
        finally:
            for f in futures:
                f.result()
    finally:
        setter(prev)


CHUNKS = 4  # slabs per thread for kernels whose rows cost alike (`in_row_slabs`)


def in_row_slabs(n: int, fn, chunks: int = 1) -> None:
    """fn(lo, hi) over a split of range(n), one slab per thread, every GEMM single-threaded.

    `fn` must release the GIL (a Numba `nogil` kernel) for the slabs to run at once. With
    `chunks` > 1, range(n) is cut into that many slabs per thread, which the threads take
    in turn as they finish one: a thread that starts late (its core still held by another
    thread, or by another process) then takes fewer, and the call does not wait for it.
    """
    ex = row_pool() if n > 1 else None
    if ex is None:
        with single_threaded():
            fn(0, n)
        return
    k = min(n, _state["threads"])
    if chunks <= 1 or n < 2 * k:
        _run_slabs(ex, n, k, fn, caller_takes_one=True)
        return
    m = min(n, k * chunks)
    bounds = [n * i // m for i in range(m + 1)]
    todo = iter(range(m))  # shared: next() on a range iterator is atomic under the GIL

    def take(lo, hi):
        for j in todo:
            fn(bounds[j], bounds[j + 1])

    _run_slabs(ex, k, k, take, caller_takes_one=True)


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

    def part(lo, hi):
        np.matmul(a[lo:hi], b[lo:hi], out=out[lo:hi])

    _run_slabs(ex, batch[0], n, part, caller_takes_one=False)
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
    _run_slabs(ex, n, min(n, _state["threads"]), fn, caller_takes_one=False)


@contextmanager
def single_threaded():
    """BLAS calls of the calling thread use one thread inside the block."""
    _setup()
    setter = _state["setter"]
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
    _setup()
    setter = _state["setter"]
    if setter is None or a.shape[0] * a.shape[1] * b.shape[-1] >= SMALL_GEMM:
        return np.matmul(a, b, out=out)
    prev = setter(1)
    try:
        return np.matmul(a, b, out=out)
    finally:
        setter(prev)
