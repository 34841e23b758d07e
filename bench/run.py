"""Benchmark dslc against PyTorch eager on the CPU: training step, inference, peak memory.

    python bench/run.py [--workloads mlp,cnn] [--threads 2] [--repeat 7] [--json]

Each (framework, workload, mode) runs in its own worker process (bench/worker.py), so peak
memory is per process and thread settings are fixed before NumPy or torch is imported. The
samples of dslc and PyTorch alternate, on the same batches. A sample during which the rest of
the machine used more than OTHER_MAX of a core (busy and stolen time from /proc/stat, less
the worker's own) is discarded and taken again, at most `--max-reruns` times per framework
and mode; the counts are reported. Times are medians of the kept samples.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

from bench.worker import THREAD_VARS  # noqa: E402
from bench.workloads import WORKLOADS  # noqa: E402

OTHER_MAX = 0.25  # cores used by other processes during a sample beyond which it is retaken
# Pause before each sample of the alternation (the other framework's worker ran the last
# one): its BLAS and OpenMP threads keep spinning for a while after their last call
# (OpenBLAS: 2^28 cycles by default, 0.1-0.15 s), taking a core from the sample that follows.
SETTLE_S = 0.2
BUDGET_S = 13 * 60  # the whole run stops retaking samples past this (it must end in 15)


class Worker:
    """A worker process: started, asked for samples, asked for its memory, stopped."""

    def __init__(self, framework, workload, mode, threads, tiny=False):
        env = dict(os.environ)
        for var in THREAD_VARS:
            env[var] = str(threads)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        cmd = [sys.executable, os.path.join(HERE, "worker.py"), framework, workload, mode,
               str(threads)] + (["--tiny"] if tiny else [])  # fmt: skip
        self.framework = framework
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env, cwd=ROOT)  # fmt: skip
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            raise RuntimeError(f"{self.framework} worker exited with {self.proc.returncode}")
        return json.loads(line)

    def ask(self, cmd: str) -> dict:
        self.proc.stdin.write(cmd + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        self.proc.wait(timeout=60)


def torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def measure(name, mode, threads, repeat, max_reruns, deadline, tiny=False, with_torch=True):
    """One row: interleaved samples of each framework for workload `name` in `mode`."""
    frameworks = ["dslc"] + (["torch"] if with_torch else [])
    workers = {}
    try:
        for f in frameworks:
            workers[f] = Worker(f, name, mode, threads, tiny)
        kept = {f: [] for f in frameworks}
        reruns = {f: 0 for f in frameworks}
        forced = {f: 0 for f in frameworks}  # contended samples kept once reruns ran out
        for _ in range(repeat):
            for f in frameworks:  # alternate: dslc, torch, dslc, torch, ...
                if len(frameworks) > 1 and not tiny:
                    time.sleep(SETTLE_S)  # the other worker's idle BLAS threads stop spinning
                while True:
                    s = workers[f].ask("sample")
                    busy = s["other"] is not None and s["other"] / s["wall"] > OTHER_MAX
                    if not busy:
                        break
                    if reruns[f] >= max_reruns or time.monotonic() > deadline:
                        forced[f] += 1
                        break
                    reruns[f] += 1
                kept[f].append(s)
        mem = {f: workers[f].ask("mem") for f in frameworks}
    finally:
        for wk in workers.values():
            wk.close()
    row = {"workload": name, "mode": mode, "threads": threads}
    for f in frameworks:
        ss = kept[f]
        row[f"{f}_ms"] = round(statistics.median(s["wall"] / s["steps"] for s in ss) * 1e3, 3)
        row[f"{f}_peak_mb"] = round(mem[f]["peak_mb"], 1)
        row[f"{f}_base_mb"] = round(mem[f]["base_mb"], 1)
        row[f"{f}_cpu_share"] = round(
            statistics.median(s["cpu"] / (s["wall"] * threads) for s in ss), 2
        )
        others = [s["other"] / s["wall"] for s in ss if s["other"] is not None]
        row[f"{f}_other_cores"] = round(statistics.median(others), 2) if others else None
        row[f"{f}_reruns"] = reruns[f]
        row[f"{f}_contended_kept"] = forced[f]
        row[f"{f}_steps_per_sample"] = ss[0]["steps"]
        row[f"{f}_params"] = workers[f].ready["params"]
        row[f"{f}_setup_s"] = round(workers[f].ready["setup_s"], 2)
    row["samples"] = repeat
    if with_torch:
        row["ratio"] = round(row["dslc_ms"] / row["torch_ms"], 3)
    else:
        row.update(torch_ms=None, torch_peak_mb=None, ratio=None)
    row["cpu_share"] = row["dslc_cpu_share"]
    return row


COLUMNS = [("workload", "workload"), ("mode", "mode"), ("dslc ms", "dslc_ms"),
           ("torch ms", "torch_ms"), ("dslc/torch", "ratio"), ("dslc MB", "dslc_peak_mb"),
           ("torch MB", "torch_peak_mb"), ("cpu share d/t", None),
           ("reruns d/t", None)]  # fmt: skip


def cells(row) -> list[str]:
    out = []
    for _, key in COLUMNS:
        if key is not None:
            v = row.get(key)
            out.append("-" if v is None else f"{v:g}" if isinstance(v, float) else str(v))
    t = row.get("torch_cpu_share")
    out.append(f"{row['dslc_cpu_share']:.2f}/{'-' if t is None else f'{t:.2f}'}")
    out.append(f"{row['dslc_reruns']}/{row.get('torch_reruns', '-')}")
    return out


def print_table(rows, threads) -> None:
    heads = [h for h, _ in COLUMNS]
    body = [cells(r) for r in rows]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(heads)]
        print("  ".join(h.ljust(wd) for h, wd in zip(heads, widths)))
        for b in body:
            print("  ".join(c.rjust(wd) for c, wd in zip(b, widths)))
        return
    table = Table(title=f"dslc vs PyTorch eager, CPU, {threads} threads, ms per step (median)")
    for i, h in enumerate(heads):
        table.add_column(h, justify="left" if i < 2 else "right")
    for b in body:
        table.add_row(*b)
    Console(width=max(120, Console().width)).print(table)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--modes", default="train,infer")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=7, help="kept samples per framework and mode")
    ap.add_argument(
        "--max-reruns",
        type=int,
        default=None,
        help="contended samples retaken per framework and mode (default 2*repeat)",
    )
    ap.add_argument("--json", action="store_true", help="one JSON object per line")
    ap.add_argument("--tiny", action="store_true", help="tiny sizes, one step per sample (tests)")
    ap.add_argument("--no-torch", action="store_true", help="dslc only")
    args = ap.parse_args(argv)
    names = [n.strip() for n in args.workloads.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        ap.error(f"unknown workload {unknown[0]!r}; choose from {', '.join(WORKLOADS)}")
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if any(m not in ("train", "infer") for m in modes):
        ap.error("--modes takes train and/or infer")
    with_torch = not args.no_torch and torch_available()
    max_reruns = 2 * args.repeat if args.max_reruns is None else args.max_reruns
    deadline = time.monotonic() + BUDGET_S
    rows = []
    todo = [(name, mode) for name in names for mode in modes]
    for k, (name, mode) in enumerate(todo):
        # retakes of contended samples stop at this row's share of the time left
        share = (deadline - time.monotonic()) / (len(todo) - k)
        row = measure(name, mode, args.threads, args.repeat, max_reruns,
                      time.monotonic() + max(0.0, share), tiny=args.tiny,
                      with_torch=with_torch)  # fmt: skip
        rows.append(row)
        if args.json:
            print(json.dumps(row), flush=True)
    if not args.json:
        print_table(rows, args.threads)
        if not with_torch:
            print("PyTorch is not installed: dslc only")
    return 0


if __name__ == "__main__":
    sys.exit(main())
