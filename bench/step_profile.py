"""Where a dslc step spends its time: each plan step timed, summed by op and by layer.

    python bench/step_profile.py WORKLOAD [--mode train|infer] [--steps 5] [--threads 2] [--top 25]
                                 [--shapes]

It binds the workload's plan as the executor does and runs the same kernel calls with a
timer around each one (the executor's own loop is not changed); the optimizer update is
timed as one item, and so is the check of an inference plan's parameter-only steps
(`BoundPlan.refresh`). Per-op totals show what is left to make fast; `--shapes` splits them
by operand shapes (`*` marks an operand that is not contiguous).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import defaultdict

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("workload")
    ap.add_argument("--mode", default="train", choices=("train", "infer"))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--shapes", action="store_true", help="one row per op and operand shapes")
    args = ap.parse_args(argv)
    from bench.worker import set_threads

    set_threads(args.threads)
    import dslc  # noqa: F401, I001 - before NumPy, as a dslc program: its OpenBLAS settings apply
    import numpy as np
    from dslc.runtime.optim import make_optimizer
    from bench.workloads import WORKLOADS, batches
    from dslc import api

    w = WORKLOADS[args.workload]
    data = batches(w)
    model = api.load(w.path, overrides=w.sets, training=args.mode == "train")
    if args.mode == "train":
        exe = model.trainer_executor()
        opt = make_optimizer(w.optimizer, model.store.groups(), **dict(w.optimizer_args))
    else:
        exe = model.executor((w.output,))
        opt = None
        data = [{k: b[k] for k in w.inputs} for b in data]
    exe.run(data[0], copy=False)  # bind the plan and compile what needs compiling
    if opt is not None:
        opt.step()
    bp = exe.bound(data[0])
    by_op: dict[str, float] = defaultdict(float)
    cpu_op: dict[str, float] = defaultdict(float)
    by_scope: dict[str, float] = defaultdict(float)
    calls: dict[str, int] = defaultdict(int)
    total = 0.0
    with np.errstate(all="ignore"):
        for k in range(args.steps):
            t_step = time.perf_counter()
            for name, buf in bp.feeds:
                np.copyto(buf, data[k % len(data)][name], casting="same_kind")
            c0, t0 = time.process_time(), time.perf_counter()
            bp.refresh()  # parameter-only steps of an inference plan: run when params change
            by_op["(hoisted steps, check)"] += time.perf_counter() - t0
            cpu_op["(hoisted steps, check)"] += time.process_time() - c0
            for (kernel, a, kw, out), nid in zip(bp.steps, bp.nodes):
                node = bp.plan.nodes[nid]
                c0, t0 = time.process_time(), time.perf_counter()
                r = kernel(*a, **kw)
                if r is not out and r is not None:  # generated kernels return None
                    np.copyto(out, r)
                dt = time.perf_counter() - t0
                dc = time.process_time() - c0
                label = node.op
                if args.shapes:
                    dims = [
                        "x".join(map(str, x.shape)) + ("" if x.flags.c_contiguous else "*")
                        for x in a
                        if isinstance(x, np.ndarray)
                    ]
                    label = f"{node.op} {' '.join(dims)}"[:60]
                by_op[label] += dt
                cpu_op[label] += dc
                calls[label] += 1
                by_scope[(node.scope or "-").split(".")[0]] += dt
            c0, t0 = time.process_time(), time.perf_counter()
            for dst, src in bp.copies:
                np.copyto(dst, src)
            if opt is not None:
                opt.step()
            by_op["(optimizer + copies)"] += time.perf_counter() - t0
            cpu_op["(optimizer + copies)"] += time.process_time() - c0
            total += time.perf_counter() - t_step
    n = args.steps
    print(f"{w.name} {args.mode}: {total / n * 1e3:.2f} ms per step, {len(bp.steps)} kernel calls")
    w_op = 60 if args.shapes else 32
    # cores: process CPU time over wall time while the op ran (2.0 = both threads busy)
    print(f"{'op':{w_op}} {'ms/step':>9} {'share':>6} {'calls':>6} {'cores':>5}")
    for op, t in sorted(by_op.items(), key=lambda kv: -kv[1])[: args.top]:
        cores = cpu_op[op] / t if t else 0.0
        print(f"{op:{w_op}} {t / n * 1e3:9.3f} {t / total:6.1%} {calls[op] // n:6d} {cores:5.2f}")
    t_cpu = sum(cpu_op.values())
    print(f"cores over all ops: {t_cpu / max(sum(by_op.values()), 1e-12):.2f}")
    print(f"\n{'layer':32} {'ms/step':>9} {'share':>6}")
    for sc, t in sorted(by_scope.items(), key=lambda kv: -kv[1])[:12]:
        print(f"{sc:32} {t / n * 1e3:9.3f} {t / total:6.1%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
