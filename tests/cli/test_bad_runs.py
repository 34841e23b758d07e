"""`dslc train / eval` on damaged inputs: a changed model, a diverging run, bad data and
damaged checkpoints are reported as one clear error (file and field named), exit status 1."""

from __future__ import annotations

import numpy as np
import pytest
from dslc.runtime.checkpoint import load_checkpoint

MODEL = """\
model Tiny(hidden = 8) {
    input x: f32[N, 4]
    label y: i64[N]
    logits = x |> dense(hidden, name = "fc1") |> relu |> dense(3, name = "fc2")
    output probs = softmax(logits)
    loss cross_entropy(logits, y)
}

train Tiny {
    optimizer adam(lr = 1e-2)
    epochs 1
    batch 8
    metrics accuracy
}
"""
# the same model after an edit: a layer added, fc2 without bias, fc1 wider
CHANGED = MODEL.replace(
    'dense(hidden, name = "fc1") |> relu |>',
    'dense(2 * hidden, name = "fc1") |> relu |> dense(hidden, name = "mid") |> relu |>',
).replace('dense(3, name = "fc2")', 'dense(3, bias = false, name = "fc2")')


@pytest.fixture
def trained(tmp_path, dslc_cli):
    model = tmp_path / "tiny.nn"
    model.write_text(MODEL)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((32, 4)).astype(np.float32),
             y=rng.integers(0, 3, 32))  # fmt: skip
    run = tmp_path / "run"
    r = dslc_cli("train", str(model), "--data", str(tmp_path / "d.npz"), "--out", str(run),
                 "--quiet", "--set", "hidden=8")  # fmt: skip
    assert r.exit_code == 0, r.output
    return model, run, tmp_path / "d.npz"


CHANGE_NOTES = [
    "  note: added in the model: mid.W float32[16, 8]",
    "  note: added in the model: mid.b float32[8]",
    "  note: removed from the model: fc2.b float32[3]",
    "  note: reshaped: fc1.W: float32[4, 8] in the checkpoint, float32[4, 16] in the model",
    "  note: reshaped: fc1.b: float32[8] in the checkpoint, float32[16] in the model",
]


@pytest.mark.parametrize("how", ["resume", "eval"])
def test_a_changed_model_lists_what_changed(trained, dslc_cli, how):
    model, run, data = trained
    model.write_text(CHANGED)
    if how == "resume":
        r = dslc_cli("train", str(model), "--resume", str(run), "--epochs", "2")
    else:
        r = dslc_cli("eval", str(model), "--weights", str(run), "--data", str(data))
    assert r.exit_code == 1
    ckpt = run / "checkpoint.safetensors"
    lines = r.stderr.splitlines()
    assert lines[0] == (
        f"checkpoint error: {ckpt}: the checkpoint does not fit the model: "
        "2 parameter(s) added, 1 removed, 2 reshaped"
    )
    assert lines[1:6] == CHANGE_NOTES
    assert lines[6].startswith("  note: model hash ")
    assert lines[7] == (
        f"  hint: the checkpoint was trained from {model} with --set hidden=8; use the model "
        "(and --set overrides) it was trained with, or train afresh"
    )
    assert "warning" not in r.output and "Traceback" not in r.output
    assert load_checkpoint(str(run)).meta["step"] == 4  # untouched


def test_a_changed_model_whose_parameters_fit_resumes_with_a_warning(trained, dslc_cli):
    model, run, data = trained
    r = dslc_cli("eval", str(model), "--weights", str(run), "--data", str(data))
    assert r.exit_code == 0 and r.stderr == ""  # the same model: no warning
    model.write_text(MODEL.replace("|> relu |>", "|> tanh |>"))
    r = dslc_cli("eval", str(model), "--weights", str(run), "--data", str(data))
    assert r.exit_code == 0, r.output
    assert r.stderr == (
        f"warning: {model} changed since {run / 'checkpoint.safetensors'} was written (its "
        "parameters still fit); the metrics are of the model as it is now\n"
    )
    r = dslc_cli("train", str(model), "--resume", str(run), "--epochs", "2", "--quiet")
    assert r.exit_code == 0, r.output
    assert f"warning: {model} changed since {run / 'checkpoint.safetensors'} was written" in (
        r.output
    )


def test_a_damaged_checkpoint_stops_a_resume(trained, dslc_cli):
    model, run, _ = trained
    ckpt = run / "checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:-10])
    r = dslc_cli("train", str(model), "--resume", str(run), "--epochs", "2")
    assert r.exit_code == 1
    assert r.stderr.startswith(f"checkpoint error: {ckpt}: truncated or corrupt checkpoint (")
    assert "Traceback" not in r.output


def test_bad_data_names_the_file_and_array(trained, dslc_cli, tmp_path):
    model, run, _ = trained
    x = np.ones((8, 4), np.float32)
    x[2, 1] = np.nan
    np.savez(tmp_path / "nan.npz", x=x, y=np.zeros(8, np.int64))
    np.savez(tmp_path / "labels.npz", x=np.ones((8, 4), np.float32), y=np.full(8, 7))
    for cmd in (["train", str(model), "--out", str(tmp_path / "r2")],
                ["eval", str(model), "--weights", str(run)]):  # fmt: skip
        r = dslc_cli(*cmd, "--data", str(tmp_path / "nan.npz"))
        assert r.exit_code == 1
        assert r.stderr == (
            f"data error: {tmp_path / 'nan.npz'}: array `x` contains NaN at index [2, 1]; "
            "input `x` expects f32[N, 4] with finite values\n"
        )
        r = dslc_cli(*cmd, "--data", str(tmp_path / "labels.npz"))
        assert r.exit_code == 1
        assert r.stderr == (
            f"data error: {tmp_path / 'labels.npz'}: array `y` holds class index 7 (at index "
            "[0]) but label `y` has 3 classes; values must be in 0..2\n"
        )


DIVERGES = """\
model Div {
    input x: f32[N, 4]
    label y: f32[N, 1]
    output p = x |> dense(1)
    loss mse(p, y)
}

train Div {
    optimizer sgd(lr = 1e6)
    epochs 3
    batch 8
}
"""


@pytest.mark.parametrize("flag", [[], ["--detect-anomaly"]])
def test_a_nan_loss_keeps_the_last_finite_checkpoint(dslc_cli, tmp_path, flag):
    """The loss overflows at the 4th step; the checkpoint of step 3 stays, finite."""
    (tmp_path / "div.nn").write_text(DIVERGES)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((64, 4)).astype(np.float32) * 10,
             y=rng.standard_normal((64, 1)).astype(np.float32))  # fmt: skip
    run = tmp_path / "run"
    r = dslc_cli("train", str(tmp_path / "div.nn"), "--data", str(tmp_path / "d.npz"),
                 "--out", str(run), "--checkpoint-every", "1", *flag)  # fmt: skip
    assert r.exit_code == 1
    lines = r.stderr.splitlines()
    assert lines[0].startswith(f"{tmp_path / 'div.nn'}:5:10: numerical anomaly: node %")
    # a checked run executes fused groups member by member: the primitive is named
    assert lines[0].endswith("(`square` in `mse`) produced Inf")
    assert lines[1] == "   5 |     loss mse(p, y)"
    when = "found" if flag else "the loss became inf"  # checked per node, or the loss
    assert f"  note: {when} at step 3 (epoch 1, batch 4)" in lines
    assert f"  note: training stopped; the last checkpoint in {run} is intact" in lines
    ckpt = load_checkpoint(str(run))
    assert ckpt.meta["step"] == 3
    assert all(np.isfinite(a).all() for a in ckpt.params.values())
    assert all(np.isfinite(a).all() for st in ckpt.optim.values() for a in st.values())
