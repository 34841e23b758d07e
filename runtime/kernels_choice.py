"""Which kernels run a step: NumPy calls (portable, the oracle) or generated Numba kernels.

`resolve_kernels` reads an explicit choice, else $DSLC_KERNELS (`numpy`, `numba`, `auto`),
else `auto`: numba when it is installed (it was measured faster on every example), else
numpy. `resolve_threads` reads the thread count for parallel kernels ($DSLC_THREADS).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np

from dslc.errors import ConfigError

KERNELS = ("numpy", "numba")


def numba_available() -> bool:
    """Whether numba can be imported (the `jit` extra)."""
    try:
        return importlib.util.find_spec("numba") is not None
    except (ImportError, ValueError):  # a stub or a broken install
        return False


def resolve_kernels(kernels: str | None = None, xp=np) -> str:
    """Who runs fused groups: `kernels`, else $DSLC_KERNELS, else numba when installed.

    `numpy` splices each group into NumPy calls (the portable path, and the oracle);
    `numba` runs each group as one generated kernel. Other array modules use `numpy`.
    """
    k = (kernels or os.environ.get("DSLC_KERNELS") or "auto").strip().lower()
    if k not in KERNELS + ("auto",):
        raise ConfigError(
            f"unknown kernels {k!r} (DSLC_KERNELS or kernels=); choose one of "
            + ", ".join(KERNELS + ("auto",))
        )
    if xp is not np:
        return "numpy"
    if k == "auto":
        return "numba" if numba_available() else "numpy"
    if k == "numba" and not numba_available():
        raise ConfigError("kernels numba needs the numba package: pip install 'dslc[jit]'")
    return k


def resolve_threads(threads: int | None = None) -> int:
    """Threads for generated kernels: `threads`, else $DSLC_THREADS, else 1.

    One by default: the cores go to BLAS, which spends most of a step. Measured on the
    2-core machine (gpt_char training step, BLAS on 2 threads): generated kernels on one
    thread 429 ms; on two, 592-755 ms, because Numba's and OpenBLAS's worker threads spin
    while they wait and take the cores from each other.
    """
    t = threads if threads is not None else os.environ.get("DSLC_THREADS")
    if t is None or t == "":
        return 1
    try:
        n = int(t)
    except ValueError:
        raise ConfigError(f"DSLC_THREADS must be a whole number, got {t!r}") from None
    if n < 1:
        raise ConfigError(f"threads must be at least 1, got {n}")
    return n
