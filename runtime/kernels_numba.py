"""Generated Numba kernels: write each emitted module to a cache file, load it, bind it.

A kernel's source is keyed by its hash and written once to `$DSLC_CACHE_DIR` (default
`~/.cache/dslc/kernels`) as `k_<hash>.py`, so that Numba's `cache=True` keeps the machine
code next to it: a second process loads it in milliseconds instead of compiling again.
Each module has a `serial` and a `parallel` function; a bound step picks the parallel one
for large domains when more than one thread is allowed. Importing this module needs numba.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import tempfile
import time
from pathlib import Path

import numba
import numpy as np

from dslc.codegen.expr import KernelIR
from dslc.codegen.numba_emit import emit
from dslc.errors import InternalError

MATH_MODULE = "dslc.ops.numba_math"
PARALLEL_MIN = 1 << 16  # elements of the domain from which the parallel loop pays
SLAB_MIN = 1 << 18  # elements from which a kernel's rows are split over the BLAS threads
_MODULES: dict[str, object] = {}


def cache_dir() -> Path:
    """Where generated kernel sources (and Numba's machine code beside them) live."""
    d = os.environ.get("DSLC_CACHE_DIR")
    base = Path(d) if d else Path.home() / ".cache" / "dslc"
    return base / "kernels"


def _lib_tag() -> str:
    """A hash of the math module's source, so kernels are rebuilt when it changes."""
    path = Path(importlib.util.find_spec(MATH_MODULE).origin)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def load_source(source: str):
    """The module of a generated source: written to the cache once, imported once."""
    h = hashlib.sha256(source.encode()).hexdigest()[:24]
    mod = _MODULES.get(h)
    if mod is not None:
        return mod
    d = cache_dir()
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"k_{h}.py"
    if not path.exists() or path.read_text(encoding="utf-8") != source:
        fd, tmp = tempfile.mkstemp(dir=d, suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(source)
        os.replace(tmp, path)  # atomic: concurrent processes see a whole file or none
    name = f"dslc_kernel_{h}"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    _MODULES[h] = mod
    return mod


def set_threads(n: int | None) -> int:
    """Use at most `n` threads in parallel kernels (None: Numba's default); returns it."""
    top = numba.config.NUMBA_NUM_THREADS
    n = top if n is None else max(1, min(int(n), top))
    numba.set_num_threads(n)
    return n


class GeneratedKernel:
    """One fused group as one Numba kernel; `bind` returns the call a run makes."""

    def __init__(self, ir: KernelIR):
        self.ir = ir
        self.source = emit(ir, MATH_MODULE, _lib_tag())
        self.module = load_source(self.source)

    def alias_ok(self, operand: int) -> bool:
        """Whether the result may be written over operand `operand`: never. It would be
        correct (each element is read before it is written), but LLVM then cannot prove the
        arrays apart and keeps the loop scalar: 5-7x slower, measured."""
        return False

    def bind(self, xp, ins, out, *, R: int, C: int, outer: tuple, shapes: tuple, threads: int = 1):
        """(function, args) computing `out` from the operand arrays `ins`."""
        args = [_flat(out, "the result")]
        copies = []
        for ld, shape in zip(self.ir.loads, shapes):
            a = ins[ld.operand]
            v = a.reshape(shape) if ld.reshaped else a
            if ld.reshaped and not np.shares_memory(v, a):
                v = None
            if v is None or not v.flags.c_contiguous:  # read through a copy made each run
                buf = np.empty(shape, dtype=a.dtype)
                copies.append((buf, a, shape))
                args.append(buf.reshape(-1))
            else:
                args.append(v.reshape(-1))
        fn = self.module.serial
        slabs = False
        if threads > 1 and R * C >= PARALLEL_MIN:
            fn = Tuned((self.module.serial, self.module.parallel))
        elif self.ir.pattern in ("map", "row") and R * C >= SLAB_MIN and row_threads() > 1:
            slabs = True
        k = self.ir.split
        od = np.array(outer, dtype=np.int64).reshape(k)
        os_ = np.zeros((len(shapes), k), dtype=np.int64)
        for j, shape in enumerate(shapes):  # element strides over the outer axes, 0 broadcast
            s = (1,) * (len(self.ir.domain) - len(shape)) + tuple(shape)
            for ax in range(k):
                os_[j, ax] = 0 if s[ax] == 1 else int(np.prod(s[ax + 1 :], dtype=np.int64))
        args += [np.int64(R), np.int64(C), od, os_, np.int64(0)]
        if slabs:
            fn = _in_slabs(fn, R, C, self.ir)
        if not copies:
            return fn, tuple(args)

        def run(*a):
            for buf, src, shape in copies:
                np.copyto(buf, src.reshape(shape))
            fn(*a)

        return run, tuple(args)


def row_threads() -> int:
    """Threads that slabs of rows run on: BLAS's (they take turns with the GEMMs)."""
    from dslc.ops.blas_pool import row_pool, threads

    return threads() if row_pool() is not None else 1


def _in_slabs(fn, R: int, C: int, ir: KernelIR):
    """fn over slabs of rows, CHUNKS per thread (`blas_pool.in_row_slabs`): the rows of a map
    or a row reduction are independent. A slab gets views of the operands that have rows
    (the result, full and per-row loads) and the index of its first row, from which the
    strided loads' offsets start; it computes the numbers one call would. A flat map is
    split by elements (rows of one element)."""
    from dslc.ops.blas_pool import CHUNKS, in_row_slabs

    flat = ir.split == 0
    n, c = (R * C, 1) if flat else (R, C)
    rows_out = ir.pattern == "map" or ir.out_level == "full"
    kinds = [ld.layout for ld in ir.loads]

    def cut(a, kind, lo, hi):
        if kind == "full":
            return a[lo * c : hi * c]
        if kind == "outer":
            return a[lo:hi]
        return a

    def run(*args):
        out, loads, od, os_ = args[0], args[1 : 1 + len(kinds)], args[-3], args[-2]

        def slab(lo, hi):
            o = out[lo * c : hi * c] if rows_out else out[lo:hi]
            ins = [cut(a, k, lo, hi) for a, k in zip(loads, kinds)]
            fn(o, *ins, np.int64(hi - lo), np.int64(c), od, os_, np.int64(lo))

        in_row_slabs(n, slab, CHUNKS)

    return run


class Tuned:
    """Runs each variant in turn on the first calls (real data), then only the fastest.

    The parallel variant is not always the faster one: LLVM vectorises some loops less well
    inside Numba's parallel regions, and threads lose when the machine's cores are busy.
    Each variant's first call (compilation) is not counted; two timed calls each decide.
    """

    ROUNDS = 2

    def __init__(self, variants):
        self.variants = variants
        self.times: list[list[float]] = [[] for _ in variants]
        self.calls = 0
        self.chosen = None

    def __call__(self, *args):
        if self.chosen is not None:
            return self.chosen(*args)
        i = self.calls % len(self.variants)
        self.calls += 1
        t = time.perf_counter()
        if i == 0:
            self.variants[0](*args)
        else:
            try:
                self.variants[i](*args)
            except Exception:  # a variant Numba cannot compile: keep the first (serial) one
                self.chosen = self.variants[0]
                return self.chosen(*args)
        dt = time.perf_counter() - t
        if self.calls > len(self.variants):
            self.times[i].append(dt)
        if all(len(ts) >= self.ROUNDS for ts in self.times):
            best = min(range(len(self.variants)), key=lambda k: min(self.times[k]))
            self.chosen = self.variants[best]
        return None


def _flat(a, what: str):
    if not a.flags.c_contiguous:
        raise InternalError(f"{what} of a generated kernel is not contiguous")
    return a.reshape(-1)


_KERNELS: dict[KernelIR, GeneratedKernel] = {}


def kernel_for(ir: KernelIR) -> GeneratedKernel:
    """The kernel of an IR, made once per process."""
    k = _KERNELS.get(ir)
    if k is None:
        k = _KERNELS[ir] = GeneratedKernel(ir)
    return k


def compiled_kernel(path: str):
    """The kernel function named by a primitive's `numba` field ("module:function")."""
    mod, _, name = path.partition(":")
    return getattr(importlib.import_module(mod), name)
