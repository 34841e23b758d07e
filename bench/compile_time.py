"""How long `dslc compile` takes on the GPT example with 12 layers.

    python bench/compile_time.py [--layers 12] [--runs 5] [--json]

Two numbers, medians over the runs: `cold_s`, the wall time of the whole command in a new
process (interpreter start, imports, parsing, lowering, the summary), and `warm_s`, the same
compile and summary in a process that has compiled once before (what an editor or a language
server sees). `cpu_share` is the command's CPU time over its wall time: well below 1 means
another process held the core and the sample is not worth much.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODEL = ROOT / "examples" / "gpt_char.nn"
# as on a user's machine: bytecode is cached (some CI images turn that off, which makes every
# run compile the package's sources again)
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def cold(layers: int) -> tuple[float, float]:
    cmd = [sys.executable, "-m", "dslc", "compile", str(MODEL), "--set", f"layers={layers}"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, cwd=ROOT, env=ENV)
    wall = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu / wall


def warm(layers: int) -> float:
    from dslc.frontend import load_program
    from dslc.ir import summary

    t = time.perf_counter()
    p = load_program(str(MODEL), {"layers": layers}, mode="infer")
    summary.render(summary.summarize(p.infer_graph, p.name, "infer", depth=2))
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    cold(a.layers)  # writes the bytecode caches
    colds = [cold(a.layers) for _ in range(a.runs)]
    warm(a.layers)  # parser, layer files and kernels of the summary loaded once
    warms = [warm(a.layers) for _ in range(a.runs)]
    row = {
        "workload": f"compile gpt_char layers={a.layers}",
        "cold_s": round(statistics.median(w for w, _ in colds), 3),
        "warm_s": round(statistics.median(warms), 3),
        "cpu_share": round(statistics.median(s for _, s in colds), 2),
        "runs": a.runs,
        "cpus": os.cpu_count(),
    }
    if a.json:
        print(json.dumps(row))
    else:
        for k, v in row.items():
            print(f"{k:10} {v}")


if __name__ == "__main__":
    main()
