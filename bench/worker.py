"""One framework running one workload in one mode, in its own process, driven over stdin.

    python bench/worker.py FRAMEWORK WORKLOAD MODE THREADS [--tiny]

FRAMEWORK is `dslc` or `torch`, MODE `train` or `infer`. The thread settings are put in the
environment before NumPy or torch is imported. The worker builds the model, optimizer and
batches, runs a warm-up step, picks how many steps make one sample (at least TARGET_S), and
answers one JSON line per command read from stdin:

- `sample`: run that many steps; {"wall", "cpu", "other", "steps"}: wall and process CPU
  seconds, and the CPU seconds that everything else on the machine used meanwhile (busy and
  stolen time from /proc/stat minus our own), so the driver can tell a contended sample.
- `mem`: {"peak_mb", "base_mb", "method"}: the rise of peak resident memory during the
  samples over the resident memory after setup and warm-up.
- `quit`.
"""

from __future__ import annotations

import json
import os
import sys
import time

# DSLC_THREADS is left at its default (generated kernels on one thread, BLAS on `threads`)
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "NUMBA_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")  # fmt: skip
TARGET_S = 0.2  # a sample lasts at least this long (steps are repeated to reach it)
MAX_STEPS_PER_SAMPLE = 200


def set_threads(threads: int) -> None:
    for var in THREAD_VARS:
        os.environ[var] = str(threads)


# --- measurements ----------------------------------------------------------------------------


def machine_busy() -> float | None:
    """Seconds of non-idle CPU time on the whole machine since boot (steal included)."""
    try:
        with open("/proc/stat") as fh:
            fields = fh.readline().split()[1:]
    except OSError:
        return None
    v = [int(x) for x in fields]
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
    return busy / os.sysconf("SC_CLK_TCK")


def _status_kb(key: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak() -> str:
    """Reset the peak resident memory to the current one where the OS allows it."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return "VmHWM"
    except OSError:
        return "ru_maxrss"


def peak_kb(method: str) -> int:
    if method == "VmHWM":
        v = _status_kb("VmHWM")
        if v is not None:
            return v
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def rss_kb() -> int:
    v = _status_kb("VmRSS")
    if v is None:
        import resource

        v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return v


# --- the two frameworks ----------------------------------------------------------------------


def dslc_runner(w, mode, data):
    from dslc.runtime.optim import make_optimizer

    from dslc import api

    model = api.load(w.path, overrides=w.sets, training=mode == "train")
    if mode == "train":
        exe = model.trainer_executor()
        opt = make_optimizer(w.optimizer, model.store.groups(), **dict(w.optimizer_args))

        def step(batch):
            out = exe.run(batch, copy=False)
            opt.step()
            return out["loss"]

    else:
        exe = model.executor((w.output,))
        feeds = [{k: b[k] for k in w.inputs} for b in data]
        data[:] = feeds

        def step(batch):
            return exe.run(batch, copy=False)[w.output]

    return step, sum(int(p.size) for p in model.params.values())


def torch_runner(w, mode, data, threads):
    import torch

    from bench import torch_models as tm

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = tm.build(w.name, w.sets)
    converted = [{k: torch.from_numpy(v) for k, v in b.items()} for b in data]
    data[:] = converted
    labels = list(w.labels)
    if mode == "train":
        model.train()
        opt = tm.make_optimizer(w.optimizer, model.parameters(), w.optimizer_args)

        def step(batch):
            opt.zero_grad()
            logits = model(**{k: batch[k] for k in w.inputs})
            loss = tm.loss_fn(logits, batch[labels[0]])
            loss.backward()
            opt.step()
            return loss

    else:
        model.eval()

        def step(batch):
            with torch.inference_mode():
                return model(**{k: batch[k] for k in w.inputs})

    return step, tm.num_params(model)


# --- the loop --------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    framework, name, mode, threads = argv[0], argv[1], argv[2], int(argv[3])
    small = "--tiny" in argv
    set_threads(threads)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, root)
    if framework == "dslc":
        import dslc  # noqa: F401 - first: its OpenBLAS settings apply when NumPy loads it
    import numpy as np

    from bench.workloads import WORKLOADS, batches, tiny

    w = WORKLOADS[name]
    if small:
        w = tiny(w)
    data = batches(w)
    t0 = time.perf_counter()
    if framework == "dslc":
        step, nparams = dslc_runner(w, mode, data)
    else:
        step, nparams = torch_runner(w, mode, data, threads)
    with np.errstate(all="ignore"):
        step(data[0])  # warm-up: plans, buffers, kernel compilation, optimizer state
        t1 = time.perf_counter()
        step(data[1 % len(data)])
        one = time.perf_counter() - t1
    setup = time.perf_counter() - t0
    per = 1 if small else max(1, min(MAX_STEPS_PER_SAMPLE, int(np.ceil(TARGET_S / max(one, 1e-6)))))
    method = reset_peak()
    base = rss_kb()
    print(json.dumps({"ready": True, "setup_s": setup, "steps": per, "params": nparams}),
          flush=True)  # fmt: skip
    k = 0
    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "sample":
            m0, c0, w0 = machine_busy(), time.process_time(), time.perf_counter()
            for _ in range(per):
                step(data[k % len(data)])
                k += 1
            wall, cpu = time.perf_counter() - w0, time.process_time() - c0
            m1 = machine_busy()
            other = None if m0 is None or m1 is None else max(0.0, (m1 - m0) - cpu)
            print(json.dumps({"wall": wall, "cpu": cpu, "other": other, "steps": per}),
                  flush=True)  # fmt: skip
        elif cmd == "mem":
            peak = peak_kb(method)
            print(json.dumps({"peak_mb": max(0, peak - base) / 1024, "base_mb": base / 1024,
                              "method": method}), flush=True)  # fmt: skip
        elif cmd == "quit":
            break
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
