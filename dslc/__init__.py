"""dslc: a compiler for neural-network models written in `.nn` files."""

import os as _os

__version__ = "0.1.0"

# OpenBLAS's worker threads spin for 2^28 cycles (0.1 s) after each call before they sleep.
# A dslc step runs threads of its own between GEMMs (compiled kernels split in row slabs:
# attention, layer norm, the recurrent scans, fused elementwise groups), and a spinning BLAS
# thread holds the core one of them needs: a fused add after a GEMM took 1.7 ms instead of
# 0.3. 2^18 cycles (about 0.1 ms) keeps the BLAS threads awake between back-to-back GEMMs and
# frees the core soon after (gpt_char training step 266-339 ms with 2^22, 213-293 ms with
# 2^18, lstm_cls inference 12.4-12.9 -> 9.2-12.3 ms, three rounds of separate processes;
# docs/benchmarks.md). OpenBLAS reads it when NumPy loads it, so it applies when dslc is
# imported first; a value already set is kept.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "18")

# NumPy asks the kernel for transparent huge pages on every array of 4 MB or more. The
# kernel's background collapser (khugepaged, every 10 s) then turns 2 MB ranges of such
# memory into huge pages even where most of the range was never touched, so a process's
# resident memory grows by up to 2 MB at a time while it runs the same step over the same
# buffers (lstm_cls training: +1-2 MB over 15 s of steps; +0.01 MB without the advice).
# A step's buffers are planned and allocated once, and measured with and without huge pages
# the steps run at the same speed, so dslc asks NumPy not to give the advice. NumPy reads it
# when it is imported: it applies when dslc is imported first; a value already set is kept.
_os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")
