"""Without numba the core imports and runs, on the NumPy path."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import sys
sys.modules["numba"] = None  # as if the jit extra were not installed
import numpy as np
from dslc.runtime.executor import Executor
from dslc.runtime.optim import make_optimizer
sys.path.insert(0, "tests/runtime")
from runtime_graphs import blobs, train_graph
from dslc.passes import fuse
g = fuse(train_graph())
exe = Executor(g)
opt = make_optimizer("adam", exe.store.groups())
out = exe.run(blobs(16))
opt.step()
assert exe.kernels == "numpy" and opt.kernels == "numpy", (exe.kernels, opt.kernels)
assert np.isfinite(out["loss"])
assert "numba" not in [m for m in sys.modules if sys.modules[m] is not None]
print("ok")
"""


def test_the_numpy_path_runs_without_numba():
    import os

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {k: v for k, v in os.environ.items() if k != "DSLC_KERNELS"}
    r = subprocess.run([sys.executable, "-c", SCRIPT], cwd=root, env=env,
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
