"""CLI fixtures: a stand-in front end returning a small Program, and a CliRunner helper."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

import dslc.frontend
from dslc.cli import main
from dslc.errors import Span
from dslc.ir.builder import Builder
from dslc.ir.dims import Dim
from dslc.ir.graph import Graph
from dslc.ir.program import Program, TrainConfig
from dslc.ir.types import TensorType

MODEL_TEXT = """\
model TinyMLP(hidden = 32) {
    input x: f32[N, 64]
    label y: i64[N]
    h = x |> dense(hidden) |> relu
    logits = h |> dense(10)
    loss   cross_entropy(logits, y)
}
"""
N = Dim.sym("N")


def build(file: str, train: bool, hidden: int = 32) -> Graph:
    """The graph MODEL_TEXT stands for, over the real primitives (line 4: dense, relu...)."""
    g = Graph()
    b = Builder(g, span=Span(file, 2, 5, 2, 24))
    x = b.input("x", TensorType((N, 64)))
    with b.at(span=Span(file, 3, 5, 3, 20)):
        y = b.input("y", TensorType((N,), "i64"), role="label") if train else None
    h = x
    layers = ((Span(file, 4, 14, 4, 27), 64, hidden), (Span(file, 5, 19, 5, 28), hidden, 10))
    for i, (span, fan_in, fan_out) in enumerate(layers):
        with b.at(span=span, scope=f"layers.{i}"):
            w = b.param(f"layers.{i}.W", TensorType((fan_in, fan_out)))
            bias = b.param(f"layers.{i}.b", TensorType((fan_out,)))
            h = b.op("add", b.op("matmul", h, w), bias)
        if i == 0:
            with b.at(span=Span(file, 4, 31, 4, 35)):
                h = b.op("relu", h)
    g.outputs["logits"] = h
    if train:
        with b.at(span=Span(file, 6, 12, 6, 36)):
            picked = b.op("take_along", b.op("log_softmax", h, axis=-1), y, axis=-1)
            g.outputs["loss"] = b.op("neg", b.op("mean", picked, axes=(0,)))
    return g


class FakeFrontend:
    """Stands in for `dslc.frontend.load_program`; records the overrides it was given."""

    def __init__(self):
        self.calls: list[tuple[str, dict]] = []
        self.error: Exception | None = None

    def __call__(self, path, overrides=None, **kwargs):
        self.calls.append((path, dict(overrides or {})))
        if self.error is not None:
            raise self.error
        hidden = (overrides or {}).get("hidden", 32)
        return Program(
            name="TinyMLP",
            file=path,
            hparams={"hidden": hidden},
            train_graph=build(path, True, hidden),
            infer_graph=build(path, False, hidden),
            train=TrainConfig(),
            sources={path: MODEL_TEXT},
        )


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "tiny.nn"
    path.write_text(MODEL_TEXT)
    return str(path)


@pytest.fixture
def fake(monkeypatch) -> FakeFrontend:
    f = FakeFrontend()
    monkeypatch.setattr(dslc.frontend, "load_program", f, raising=False)
    return f


@pytest.fixture
def dslc_cli():
    """Run `dslc ARGS...` in-process; returns click's Result (stdout, stderr, exit_code)."""

    def run(*args: str):
        return CliRunner().invoke(main, list(args))

    return run
