"""The benchmark workloads: model file, sizes, optimizer and batches, shared by both sides.

Both frameworks train on the same batches: `batches(name)` draws them from a fixed seed with
NumPy, and each worker converts them to its own arrays.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
NUM_BATCHES = 4  # distinct batches, cycled through by the timed steps


@dataclass(frozen=True)
class Workload:
    name: str
    model: str  # the .nn file, relative to the repository root
    sets: dict[str, Any]  # --set overrides of the model's hyper-parameters
    optimizer: str
    optimizer_args: dict[str, Any]
    inputs: dict[str, tuple]  # input name -> (shape, kind, high): kind "normal" or "int"
    labels: dict[str, tuple]
    output: str = "logits"  # the inference output that both sides compute
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return os.path.join(ROOT, self.model)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload(
            "mlp", "bench/models/mlp.nn", {}, "sgd", {"lr": 0.01, "momentum": 0.9},
            {"x": ((128, 784), "normal", 0)}, {"y": ((128,), "int", 10)},
        ),
        Workload(
            "cnn", "bench/models/cnn.nn", {}, "sgd", {"lr": 0.01},
            {"image": ((64, 1, 28, 28), "normal", 0)}, {"y": ((64,), "int", 10)},
        ),
        Workload(
            "lstm_cls", "bench/models/lstm_cls.nn", {}, "adam", {"lr": 1e-3},
            {"tokens": ((32, 100), "int", 10000)}, {"y": ((32,), "int", 2)},
        ),
        Workload(
            "gpt_char", "examples/gpt_char.nn", {"drop": 0.0}, "adamw",
            {"lr": 1e-3, "betas": (0.9, 0.99), "weight_decay": 0.1},
            {"tokens": ((32, 128), "int", 65)}, {"targets": ((32, 128), "int", 65)},
        ),
        Workload(
            "bert_cls", "examples/bert_classifier.nn", {"drop": 0.0}, "adam", {"lr": 1e-4},
            {"tokens": ((16, 128), "tokens", 30522)}, {"y": ((16,), "int", 2)},
        ),
    ]
}  # fmt: skip

# a tiny variant of each workload for the tests: same models, small sizes
TINY: dict[str, dict[str, Any]] = {
    "mlp": {"sets": {"inputs": 32, "hidden": 16}, "x": (8, 32), "y": (8,)},
}


def _array(rng: np.random.Generator, shape, kind: str, high: int) -> np.ndarray:
    if kind == "normal":
        return rng.standard_normal(shape, dtype=np.float32)
    if kind == "tokens":  # token ids >= 1 with padding (id 0) at the end of every other row
        a = rng.integers(1, high, size=shape, dtype=np.int64)
        a[1::2, shape[1] * 3 // 4 :] = 0
        return a
    return rng.integers(0, high, size=shape, dtype=np.int64)


def batches(w: Workload, count: int = NUM_BATCHES, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """`count` batches of inputs and labels, the same for every framework."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        b = {k: _array(rng, *spec) for k, spec in w.inputs.items()}
        b.update({k: _array(rng, *spec) for k, spec in w.labels.items()})
        out.append(b)
    return out


def tiny(w: Workload) -> Workload:
    """The workload at the sizes of TINY (for tests): same model file, small inputs."""
    t = TINY[w.name]
    inputs = {k: (t[k], *spec[1:]) for k, spec in w.inputs.items()}
    labels = {k: (t[k], *spec[1:]) for k, spec in w.labels.items()}
    return Workload(w.name, w.model, {**w.sets, **t["sets"]}, w.optimizer, w.optimizer_args,
                    inputs, labels, w.output)  # fmt: skip
