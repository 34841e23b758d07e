"""Every example's training step and inference give the same numbers whether fused groups run
as generated Numba kernels, as NumPy calls, or unfused; the fused optimizer updates equal
the NumPy ones; the kernels choice reads its option and environment variable."""

from __future__ import annotations

import os

import numpy as np
import pytest
from dslc.runtime.executor import Executor
from dslc.runtime.kernels_choice import resolve_kernels, resolve_threads
from dslc.runtime.optim import make_optimizer

from dslc.errors import ConfigError
from dslc.passes import FUSION_PASSES, PIPELINE

numba = pytest.importorskip("numba")

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = {
    "mlp_digits": {"hidden": 16},
    "cnn_digits": {"size": 8},
    "lstm_sentiment": {"seq": 12, "embed": 8, "units": 8},
    "lstm_textgen": {"ctx": 12, "embed": 8, "units": 8, "layers": 1},
    "gpt_char": {"d": 16, "heads": 2, "layers": 2},
    "bert_classifier": {"vocab": 500, "seq": 12, "d": 16, "heads": 2, "layers": 1, "ffn": 32},
    "linear_regression": {},
}


def unfused(graph):
    """The training pipeline without the passes that fuse (attention, layer_norm, fuse)."""
    for name, fn in PIPELINE:
        if name not in FUSION_PASSES:
            graph = fn(graph)
    return graph


def close(got, ref, what):
    """float32 agreement, scaled by the size of the reference (gradients near 0 included)."""
    scale = max(float(np.max(np.abs(ref))), 1e-3) if ref.size else 1.0
    np.testing.assert_allclose(got, ref, rtol=2e-4, atol=2e-5 * scale, err_msg=what)


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_training_step_and_inference_agree(name):
    from dslc.runtime.data import load_dataset

    from dslc import api

    model = api.load(os.path.join(ROOT, "examples", f"{name}.nn"), overrides=EXAMPLES[name])
    data = load_dataset(None, model.program)
    batch = {k: v[:6] for k, v in data.arrays.items()}
    store = model.store
    before = {k: v.copy() for k, v in store.params.items()}
    graphs = {
        "numba": (model.train_graph, "numba"),
        "numpy": (model.train_graph, "numpy"),
        "unfused": (unfused(model.program.train_graph), "numpy"),
    }
    results = {}
    for label, (graph, kernels) in graphs.items():
        for k, v in before.items():
            store.params[k][...] = v
        exe = Executor(graph, store=store, kernels=kernels, outputs=["loss"], seed=3)
        out = exe.run(batch, step=2)
        grads = {k: g.copy() for k, g in store.grads.items()}
        params = {k: p.copy() for k, p in store.params.items()}  # state updates (batch-norm)
        results[label] = (out["loss"], grads, params, exe.bound(batch).plan)
    plan = results["numba"][3]
    assert plan.kernels == "numba" and plan.generated
    assert not plan.fallbacks, plan.fallbacks  # every fused group is one generated kernel
    for label in ("numpy", "unfused"):
        loss, grads, params, _ = results[label]
        close(results["numba"][0], loss, f"loss vs {label}")
        for k in grads:
            close(results["numba"][1][k], grads[k], f"grad {k} vs {label}")
        for k in params:
            close(results["numba"][2][k], params[k], f"param {k} vs {label}")

    for k, v in before.items():
        store.params[k][...] = v
    feeds = {k: v for k, v in batch.items() if k in model.inputs}
    outs = {}
    for kernels in ("numba", "numpy"):
        exe = Executor(model.infer_graph, store=store, kernels=kernels)
        outs[kernels] = exe.run({k: v for k, v in feeds.items() if k in exe.input_names})
    for k in outs["numpy"]:
        close(outs["numba"][k], outs["numpy"][k], f"inference output {k}")


CASES = [
    ("sgd", {"lr": 0.1}),
    ("sgd", {"lr": 0.1, "momentum": 0.9, "dampening": 0.2, "weight_decay": 0.01}),
    ("sgd", {"lr": 0.05, "momentum": 0.8, "nesterov": True}),
    ("adam", {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}),
    ("adam", {"lr": 0.01, "betas": (0.8, 0.95)}),
    ("adamw", {"lr": 0.01, "weight_decay": 0.3}),
    ("rmsprop", {"lr": 0.01}),
    ("rmsprop", {"lr": 0.01, "momentum": 0.9, "centered": True, "weight_decay": 0.01}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("big", [False, True])
@pytest.mark.parametrize("name,hp", CASES)
def test_fused_optimizer_updates_equal_numpy(name, hp, big, dtype, monkeypatch):
    from dslc.runtime import kernels_optim

    if big:  # the parallel variant
        monkeypatch.setattr(kernels_optim, "PARALLEL_MIN", 1)
    rng = np.random.default_rng(1)
    n = 1000
    p0 = rng.standard_normal(n).astype(dtype)
    runs = {}
    for kernels in ("numpy", "numba"):
        p, g = p0.copy(), np.empty(n, dtype)
        opt = make_optimizer(name, [(p, g)], kernels=kernels, **dict(hp))
        opt.threads = 2
        for step in range(4):
            g[...] = np.random.default_rng(step).standard_normal(n)
            opt.step()
        runs[kernels] = (p, {s: v[0] for s, v in opt.state.items()})
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(runs["numba"][0], runs["numpy"][0], rtol=tol, atol=tol)
    for s, v in runs["numpy"][1].items():
        np.testing.assert_allclose(runs["numba"][1][s], v, rtol=tol, atol=tol, err_msg=s)


def test_kernels_choice(monkeypatch):
    monkeypatch.delenv("DSLC_KERNELS", raising=False)
    assert resolve_kernels() == "numba"  # numba is installed (this module needs it)
    assert resolve_kernels("numpy") == "numpy"
    monkeypatch.setenv("DSLC_KERNELS", "numpy")
    assert resolve_kernels() == "numpy" and resolve_kernels("numba") == "numba"
    monkeypatch.setenv("DSLC_KERNELS", "fortran")
    with pytest.raises(ConfigError, match="unknown kernels"):
        resolve_kernels()
    monkeypatch.setenv("DSLC_THREADS", "3")
    assert resolve_threads() == 3 and resolve_threads(1) == 1
    monkeypatch.setenv("DSLC_THREADS", "many")
    with pytest.raises(ConfigError, match="DSLC_THREADS"):
        resolve_threads()


def test_without_numba_the_default_is_numpy(monkeypatch):
    from dslc.runtime import kernels_choice

    monkeypatch.delenv("DSLC_KERNELS", raising=False)
    monkeypatch.setattr(kernels_choice, "numba_available", lambda: False)
    assert resolve_kernels() == "numpy"
    with pytest.raises(ConfigError, match="pip install"):
        resolve_kernels("numba")


def test_fusion_removes_40_percent_of_the_gpt_training_steps_kernel_launches():
    from dslc import api

    model = api.load(os.path.join(ROOT, "examples", "gpt_char.nn"))
    feed = {"tokens": np.zeros((2, 16), np.int64), "targets": np.zeros((2, 16), np.int64)}

    def launches(graph, kernels):
        exe = Executor(graph, outputs=["loss"], kernels=kernels)
        exe.run(feed, copy=False)
        return len(exe.bound(feed).steps)

    fused = launches(model.train_graph, "numba")
    plain = launches(unfused(model.program.train_graph), "numpy")
    # the optimizer's update is one kernel over all parameters in both counts
    assert fused <= 0.6 * plain, (fused, plain)
