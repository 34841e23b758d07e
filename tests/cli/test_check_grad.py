"""`dslc check --grad`: autodiff against central finite differences, block by block."""

from __future__ import annotations

import dataclasses
import os

import pytest

from dslc.frontend import load_program
from dslc.gradcheck import block_of, gradcheck
from dslc.ops.registry import REGISTRY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = os.path.join(ROOT, "examples")

MODEL = """\
block Mix(d) (x: f32[N, d]) -> f32[N, d] {
    param g: f32[d] = ones
    return tanh(x |> dense(d, name = "inner")) * g
}

model M(d = 5) {
    input x: f32[N, 4]
    label y: i64[N]
    h = x |> dense(d, name = "pre") |> relu
    h = h |> Mix(d, name = "mix")
    logits = h |> dense(3, name = "post")
    loss cross_entropy(logits, y)
}
"""


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "m.nn"
    path.write_text(MODEL)
    return str(path)


def test_a_correct_model_passes(model, dslc_cli):
    r = dslc_cli("check", model, "--grad", "--dim", "N=4")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == f"OK: {model} (M, 78 parameters)"
    assert lines[1].startswith("gradient check: float64, symbolic sizes N=4, central")
    rows = [line.split() for line in lines[3:6]]
    assert [row[0] for row in rows] == ["pre", "mix", "post"]  # input to loss
    assert [row[1] for row in rows] == ["3", "4", "3"]  # W, b and the input; mix also g
    assert all(row[-1] == "ok" and float(row[2]) < 1e-6 for row in rows)
    assert lines[-1] == "gradients OK (3 block(s))"


def broken(monkeypatch, name: str, factor: float = 2.0):
    """Replace the gradient rule of primitive `name` by one `factor` times too large."""
    prim = REGISTRY[name]

    def grad(b, node, g):
        return prim.grad(b, node, b.op("scale", g, c=factor))

    monkeypatch.setitem(REGISTRY, name, dataclasses.replace(prim, grad=grad))


def test_a_broken_gradient_rule_fails_and_names_its_block(model, dslc_cli, monkeypatch):
    broken(monkeypatch, "tanh")
    r = dslc_cli("check", model, "--grad")
    assert r.exit_code == 1
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[3:6]}
    assert rows["post"][-1] == "ok"
    assert rows["mix"][-1] == "FAIL"
    assert rows["mix"][3] in ("inner.W", "inner.b", "<input>")  # before tanh; `g` after it
    assert rows["pre"][-1] == "FAIL"  # its gradient flows through mix
    err = r.stderr.splitlines()
    assert err[0].startswith("error: gradient check failed in block `mix`: `")
    assert err[1] == "  note: `pre` fail through it (their gradients pass through `mix`)"
    assert "Traceback" not in r.output
    mix = next(b for b in gradcheck(load_program(model)).blocks if b.block == "mix")
    errors = {t.name: t.error for t in mix.tensors}
    assert errors["g"] < 1e-6 and min(errors["inner.W"], errors["inner.b"]) > 1e-2


def test_a_slightly_wrong_rule_is_caught(model, monkeypatch):
    broken(monkeypatch, "relu", factor=1.001)
    report = gradcheck(load_program(model))
    assert [b.block for b in report.failed()] == ["pre"]
    assert 1e-4 < report.blocks[0].max_error < 1e-2
    assert report.culprit().block == "pre"


@pytest.mark.parametrize("name, sets", [
    ("gpt_char", {"d": 8, "heads": 2, "layers": 2, "vocab": 11, "ctx": 8}),
    ("cnn_digits", {"size": 8}),
    ("lstm_textgen", {"embed": 4, "units": 5, "vocab": 7}),
    ("bert_classifier", {"d": 8, "heads": 2, "ffn": 16, "vocab": 20, "layers": 1}),
])  # fmt: skip
def test_the_examples_pass(name, sets):
    program = load_program(os.path.join(EXAMPLES, f"{name}.nn"), sets)
    report = gradcheck(program, seed=1)
    assert report.ok, report.table()
    assert len(report.blocks) >= 3
    assert all(b.tensors for b in report.blocks)


def test_block_names():
    assert block_of("layers.3.attn.q") == "layers.3"
    assert block_of("fc1") == "fc1" and block_of("enc.ln") == "enc"


def test_bad_options(model, dslc_cli):
    r = dslc_cli("check", model, "--grad", "--dim", "T=3")
    assert r.exit_code == 1
    assert r.stderr.startswith("config error: --dim T: the model's inputs have no symbolic size")
    r = dslc_cli("check", model, "--grad", "--dim", "N=0")
    assert r.exit_code == 1 and "--dim expects NAME=SIZE with a positive size" in r.stderr


def test_check_lowers_the_inference_graph_too(dslc_cli):
    """A mistake only the inference graph reaches (a name set under `if training`)."""
    path = os.path.join(ROOT, "tests", "frontend", "fuzz_corpus", "fails-only-in-inference.nn")
    r = dslc_cli("check", path)
    assert r.exit_code == 1
    assert r.stderr.startswith(f"{path}:7:16: name error: unknown name `mu`")
