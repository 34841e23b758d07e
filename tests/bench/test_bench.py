"""The benchmark: its PyTorch models are dslc's architectures, and run.py reports every field."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from bench.workloads import WORKLOADS, batches, tiny  # noqa: E402
from dslc import api  # noqa: E402


def dslc_params(w) -> int:
    model = api.load(w.path, overrides=w.sets, training=False)
    return sum(int(p.size) for p in model.params.values())


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_torch_model_has_dslc_parameter_count(name):
    tm = pytest.importorskip("bench.torch_models")
    w = WORKLOADS[name]
    assert tm.num_params(tm.build(name, w.sets)) == dslc_params(w)


@pytest.mark.parametrize("name", list(WORKLOADS))
def test_torch_model_takes_the_workload_batches(name):
    torch = pytest.importorskip("torch")
    import bench.torch_models as tm

    w = WORKLOADS[name]
    b = batches(w, count=1)[0]
    model = tm.build(name, w.sets)
    with torch.inference_mode():
        logits = model(**{k: torch.from_numpy(b[k]) for k in w.inputs})
    label = b[next(iter(w.labels))]
    assert tuple(logits.shape[:-1]) == label.shape


def test_batches_are_deterministic_and_differ():
    w = WORKLOADS["bert_cls"]
    a, b = batches(w, count=2), batches(w, count=2)
    assert (a[0]["tokens"] == b[0]["tokens"]).all()
    assert not (a[0]["tokens"] == a[1]["tokens"]).all()
    assert (a[0]["tokens"][1::2, -1] == 0).all() and (a[0]["tokens"][:, 0] != 0).all()


def test_tiny_workload_matches_torch_parameter_count():
    tm = pytest.importorskip("bench.torch_models")
    w = tiny(WORKLOADS["mlp"])
    assert tm.num_params(tm.build("mlp", w.sets)) == dslc_params(w)


def test_run_json_fields():
    cmd = [sys.executable, os.path.join(ROOT, "bench", "run.py"), "--workloads", "mlp",
           "--tiny", "--repeat", "2", "--modes", "infer", "--json"]  # fmt: skip
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines() if line.strip()]
    assert [(r["workload"], r["mode"]) for r in rows] == [("mlp", "infer")]
    has_torch = rows[0]["torch_ms"] is not None
    for r in rows:
        assert r["threads"] == 2 and r["samples"] == 2
        assert r["dslc_ms"] > 0 and r["dslc_peak_mb"] >= 0
        assert 0 < r["cpu_share"] <= 1.5
        assert r["dslc_reruns"] >= 0 and r["dslc_params"] == 970
        if has_torch:
            assert r["torch_ms"] > 0 and r["torch_peak_mb"] >= 0
            assert r["ratio"] == pytest.approx(r["dslc_ms"] / r["torch_ms"], rel=0.01, abs=1e-3)
            assert r["torch_params"] == r["dslc_params"]
        else:
            assert r["ratio"] is None
