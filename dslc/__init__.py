"""dslc: a compiler for neural-network models written in `.nn` files."""

import os as _os

__version__ = "0.1.0"

# OpenBLAS's worker threads spin for 2^28 cycles (0.1 s) after each call before they sleep.
# A dslc step runs threads of its own between GEMMs (the recurrent scans' row slabs), and a
# spinning BLAS thread took half of their core: 2^22 cycles (about 2 ms) keeps the BLAS
# threads awake between back-to-back GEMMs and frees the core soon after (lstm_cls step
# 55-59 -> 41-50 ms, gpt_char unchanged; docs/benchmarks.md). OpenBLAS reads it when NumPy
# loads it, so it applies when dslc is imported first; a value already set is kept.
_os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "22")
