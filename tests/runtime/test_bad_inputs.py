"""Damaged checkpoints and bad data: every failure is a DslcError that names the file and
the field (tensor, metadata field or array) at fault, never a crash deep in NumPy."""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import numpy as np
import pytest
from dslc.runtime.checkpoint import load_checkpoint
from dslc.runtime.data import load_dataset
from safetensors import safe_open
from safetensors.numpy import save

from dslc import api
from dslc.errors import CheckpointError, DataError
from dslc.frontend import load_program

MODEL = """\
model Tiny(classes = 3, hidden = 8) {
    input x: f32[N, 4]
    label y: i64[N]
    logits = x |> dense(hidden, name = "fc1") |> relu |> dense(classes, name = "fc2")
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


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A model file, a good dataset and the checkpoint of one short run."""
    d = tmp_path_factory.mktemp("bad")
    (d / "m.nn").write_text(MODEL)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 4)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    np.savez(d / "good.npz", x=x, y=y)
    api.train(str(d / "m.nn"), str(d / "good.npz"), out=str(d / "run"), quiet=True)
    path = d / "run" / "checkpoint.safetensors"
    with safe_open(str(path), "numpy") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return d, path.read_bytes(), meta, tensors, x, y


def write(setup, name, tensors=None, meta=None, raw=None) -> str:
    d, data, meta0, tensors0, *_ = setup
    path = d / f"{name}.safetensors"
    if raw is None:
        raw = save(tensors if tensors is not None else tensors0,
                   metadata=meta if meta is not None else meta0)  # fmt: skip
    path.write_bytes(raw)
    return str(path)


def eval_error(setup, weights) -> CheckpointError:
    d = setup[0]
    with pytest.raises(CheckpointError) as e:
        api.evaluate(str(d / "m.nn"), str(d / "good.npz"), weights=weights)
    return e.value


def resume_error(setup, weights) -> CheckpointError:
    """What resuming a run whose checkpoint is (a copy of) `weights` reports; the copy's
    path in the message reads as `weights`."""
    d = setup[0]
    run = d / f"resume-{os.path.basename(weights)}"
    run.mkdir()
    ckpt = run / "checkpoint.safetensors"
    shutil.copyfile(weights, ckpt)
    with pytest.raises(CheckpointError) as e:
        api.train(str(d / "m.nn"), str(d / "good.npz"), resume=str(run), epochs=2, quiet=True)
    e.value.message = e.value.message.replace(str(ckpt), weights)
    return e.value


# --- damaged files ----------------------------------------------------------------------------


@pytest.mark.parametrize("cut", ["empty", "header", "half", "last_byte"])
def test_a_truncated_checkpoint_names_the_file(setup, cut):
    data = setup[1]
    raw = {"empty": b"", "header": data[:20], "half": data[: len(data) // 2],
           "last_byte": data[:-1]}[cut]  # fmt: skip
    path = write(setup, f"trunc-{cut}", raw=raw)
    for err in (eval_error(setup, path), resume_error(setup, path)):
        assert err.message.startswith(f"{path}: truncated or corrupt checkpoint (")


def test_a_corrupt_header_names_the_file(setup):
    data = bytearray(setup[1])
    n = int.from_bytes(data[:8], "little")
    data[8 : 8 + n] = b"{" + b" " * (n - 1)  # the JSON header, broken
    path = write(setup, "header-json", raw=bytes(data))
    assert eval_error(setup, path).message.startswith(
        f"{path}: truncated or corrupt checkpoint (Error while deserializing header"
    )
    path = write(setup, "garbage", raw=b"\xff" * 64)
    assert eval_error(setup, path).message.startswith(f"{path}: truncated or corrupt checkpoint")


def test_a_foreign_file_is_not_a_checkpoint(setup):
    meta = {k: v for k, v in setup[2].items() if k != "format"}
    path = write(setup, "noformat", meta=meta)
    assert eval_error(setup, path).message == (
        f"{path}: not a dslc checkpoint (metadata field `format` is missing)"
    )
    path = write(setup, "otherformat", meta={**setup[2], "format": "other-1"})
    assert eval_error(setup, path).message == (
        f"{path}: not a dslc checkpoint (metadata field `format` is 'other-1', expected "
        "'dslc-checkpoint-1')"
    )


def test_bad_metadata_names_the_field(setup):
    path = write(setup, "badjson", meta={**setup[2], "step": "{not json"})
    assert eval_error(setup, path).message == f"{path}: metadata field `step` is not valid"
    for field in ("state", "optimizer"):
        meta = {k: v for k, v in setup[2].items() if k != field}
        path = write(setup, f"no-{field}", meta=meta)
        assert resume_error(setup, path).message == (f"{path}: the metadata has no field `{field}`")
    path = write(setup, "badstate", meta={**setup[2], "state": json.dumps({"bogus": 1})})
    assert resume_error(setup, path).message == f"{path}: metadata field `state` is malformed"


def test_an_unexpected_tensor_is_named(setup):
    tensors = {**setup[3], "weird/x": np.zeros(1, np.float32)}
    path = write(setup, "unexpected", tensors)
    assert eval_error(setup, path).message == f"{path}: unexpected tensor `weird/x`"


@pytest.mark.parametrize("value, what", [(np.nan, "NaN"), (np.inf, "Inf")])
def test_a_non_finite_weight_is_named(setup, value, what):
    tensors = dict(setup[3])
    w = tensors["param/fc2.W"].copy()
    w[1, 2] = value
    tensors["param/fc2.W"] = w
    path = write(setup, f"nonfinite-{what}", tensors)
    assert eval_error(setup, path).message == (
        f"{path}: tensor `param/fc2.W` contains {what} (first at index [1, 2]); the checkpoint "
        "is damaged or was written from a diverged run"
    )


# --- checkpoints that do not fit -----------------------------------------------------------


def test_wrong_dtypes_and_missing_tensors_are_listed_together(setup):
    tensors = dict(setup[3])
    tensors["param/fc1.W"] = tensors["param/fc1.W"].astype(np.float64)
    tensors["param/fc1.b"] = tensors["param/fc1.b"].astype(np.int32)
    del tensors["param/fc2.b"]
    tensors["param/extra.W"] = np.zeros((2, 2), np.float32)
    path = write(setup, "misfit", tensors)
    err = eval_error(setup, path)
    assert err.message == (
        f"{path}: the checkpoint does not fit the model: 1 parameter(s) added, 1 removed, "
        "0 reshaped, 2 with another dtype"
    )
    assert err.notes == [
        "added in the model: fc2.b float32[3]",
        "removed from the model: extra.W float32[2, 2]",
        "another dtype: fc1.W: float64[4, 8] in the checkpoint, float32[4, 8] in the model",
        "another dtype: fc1.b: int32[8] in the checkpoint, float32[8] in the model",
    ]


def test_missing_or_misshapen_optimizer_state_is_named_on_resume(setup):
    tensors = dict(setup[3])
    del tensors["optim/exp_avg/fc1.W"]
    path = write(setup, "no-optim", tensors)
    assert resume_error(setup, path).message == f"{path}: no tensor `optim/exp_avg/fc1.W`"
    tensors = dict(setup[3])
    tensors["optim/exp_avg_sq/fc2.b"] = np.zeros(5, np.float32)
    path = write(setup, "optim-shape", tensors)
    assert resume_error(setup, path).message == (
        f"{path}: tensor `optim/exp_avg_sq/fc2.b` has shape [5], the parameter [3]"
    )


def test_evaluation_ignores_optimizer_state(setup):
    tensors = {k: v for k, v in setup[3].items() if not k.startswith("optim/")}
    path = write(setup, "params-only", tensors)
    d = setup[0]
    res = api.evaluate(str(d / "m.nn"), str(d / "good.npz"), weights=path)
    assert res["examples"] == 32 and 0 <= res["accuracy"] <= 1
    assert load_checkpoint(path).optim == {}


# --- bad data --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def program(setup):
    return load_program(str(setup[0] / "m.nn"))


def data_error(program, tmp_path, **arrays) -> str:
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(DataError) as e:
        load_dataset(str(path), program, source_hint="--data")
    return e.value.message.replace(f"{path}", "D"), [n.replace(str(path), "D")
                                                    for n in e.value.notes]  # fmt: skip


def test_nan_and_inf_in_inputs(setup, program, tmp_path):
    x, y = setup[4].copy(), setup[5]
    x[5, 2] = np.nan
    assert data_error(program, tmp_path, x=x, y=y)[0] == (
        "D: array `x` contains NaN at index [5, 2]; input `x` expects f32[N, 4] with finite values"
    )
    x[5, 2] = -np.inf
    assert "array `x` contains Inf at index [5, 2]" in data_error(program, tmp_path, x=x, y=y)[0]


def test_labels_out_of_range(setup, program, tmp_path):
    x, y = setup[4], setup[5].copy()
    y[7] = 3
    assert data_error(program, tmp_path, x=x, y=y)[0] == (
        "D: array `y` holds class index 3 (at index [7]) but label `y` has 3 classes; "
        "values must be in 0..2"
    )
    y[7] = -1
    assert "holds negative class index -1 (at index [7])" in data_error(program, tmp_path,
                                                                       x=x, y=y)[0]  # fmt: skip
    y[7] = 2
    assert data_error(program, tmp_path, x=x, y=y + 0.5)[0] == (
        f"D: array `y` has dtype float64 with non-integer value {y[0] + 0.5:g} (at index [0]) "
        "but label `y` expects i64[N]"
    )


def test_empty_datasets(setup, program, tmp_path):
    x, y = setup[4], setup[5]
    assert data_error(program, tmp_path, x=x[:0], y=y[:0])[0] == (
        "D: the dataset is empty (0 examples)"
    )
    assert data_error(program, tmp_path)[0] == "D: the archive holds no arrays"
    path = tmp_path / "zero.npz"
    path.write_bytes(b"")
    with pytest.raises(DataError) as e:
        load_dataset(str(path), program)
    assert e.value.message == f"{path}: not a readable .npz archive (the file is empty)"


def test_missing_arrays(setup, program, tmp_path):
    msg, notes = data_error(program, tmp_path, x=setup[4])
    assert msg == "D: no array named `y` for label `y`, which expects i64[N]"
    assert notes == ["arrays present: `x`"]
    msg, notes = data_error(program, tmp_path, inputs=setup[4], y=setup[5])
    assert msg == "D: no array named `x` for input `x`, which expects f32[N, 4]"
    assert notes == ["arrays present: `inputs`, `y`"]


def test_wrong_shapes(setup, program, tmp_path):
    x, y = setup[4], setup[5]
    msg, notes = data_error(program, tmp_path, x=x[:, :3], y=y)
    assert msg == "D: array `x` has shape [32, 3] but input `x` expects f32[N, 4]"
    assert notes == ["dimension 1 is 3, expected 4"]
    msg, notes = data_error(program, tmp_path, x=x[:, :, None], y=y)
    assert msg == "D: array `x` has shape [32, 4, 1] but input `x` expects f32[N, 4]"
    assert notes == ["the array has 3 dimension(s), the input 2"]
    msg, _ = data_error(program, tmp_path, x=x, y=y[:30])
    assert msg == "D: arrays differ in their number of examples: `x` has 32, `y` has 30"


def test_non_numeric_and_pickled_arrays(setup, program, tmp_path):
    y = setup[5]
    msg, _ = data_error(program, tmp_path, x=np.array([["a"] * 4] * 32), y=y)
    assert msg.startswith("D: array `x` has dtype <U1, not numbers, but input `x` expects")
    msg, _ = data_error(program, tmp_path, x=np.array([{"a": 1}] * 32, dtype=object), y=y)
    assert msg == "D: array `x` holds Python objects; dslc loads only numeric arrays (no pickle)"


def test_damaged_npz_files(setup, program, tmp_path):
    good = (setup[0] / "good.npz").read_bytes()
    cases = {
        "garbage": (b"\x80\x04K\x01." * 4, "not a readable .npz archive (it is not a zip archive)"),
        "truncated": (good[: len(good) // 2], "truncated or corrupt .npz archive ("),
    }
    for name, (raw, message) in cases.items():
        path = tmp_path / f"{name}.npz"
        path.write_bytes(raw)
        with pytest.raises(DataError) as e:
            load_dataset(str(path), program)
        assert e.value.message.startswith(f"{path}: {message}"), e.value.message
    # a member whose bytes were flipped: the zip checksum catches it
    path = tmp_path / "flipped.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("x.npy", _npy(setup[4]))
        z.writestr("y.npy", _npy(setup[5]))
    raw = bytearray(path.read_bytes())
    at = raw.index(b"x.npy") + 200
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError) as e:
        load_dataset(str(path), program)
    assert e.value.message.startswith(f"{path}: truncated or corrupt .npz archive (Bad CRC-32")


def _npy(a: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()
