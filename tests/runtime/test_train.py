"""The training loop: it learns, it is deterministic, it resumes exactly, it stops on NaN."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from dslc.runtime import checkpoint as ckpt_mod
from dslc.runtime.checkpoint import FILENAME, load_checkpoint, save_checkpoint
from dslc.runtime.model import Model
from dslc.runtime.train import Trainer, evaluate, resolve_config
from runtime_graphs import dataset, program

from dslc.errors import AnomalyError, CheckpointError, ConfigError


def run(tmp, prog=None, resume=False, max_steps=None, every=0, **settings):
    prog = prog or program()
    ck = load_checkpoint(tmp) if resume else None
    s = resolve_config(prog.train, ck.meta["settings"] if ck else None, **settings)
    model = Model(prog, seed=s.seed)
    t = Trainer(model, dataset(), s, out=str(tmp), resume=ck, quiet=True, checkpoint_every=every)
    t.fit(max_steps=max_steps)
    return t


def rows(tmp):
    with open(os.path.join(tmp, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def test_training_learns_and_writes_metrics(tmp_path):
    t = run(tmp_path)
    r = rows(tmp_path)
    assert [x["epoch"] for x in r] == [1, 2, 3]
    assert [x["step"] for x in r] == [12, 24, 36]
    assert set(r[0]) >= {"epoch", "step", "train_loss", "val_loss", "val_accuracy"}
    assert r[-1]["train_loss"] < r[0]["train_loss"]
    assert r[-1]["val_accuracy"] >= 0.9
    ck = load_checkpoint(tmp_path)
    assert ck.meta["step"] == 36 and ck.meta["model_hash"] == "0123456789abcdef"
    for name, p in t.model.params.items():
        np.testing.assert_array_equal(ck.params[name], p)
    assert set(ck.optim) == {"momentum_buffer"}


def test_same_seed_same_weights_bit_for_bit(tmp_path):
    a = run(tmp_path / "a", seed=3)
    b = run(tmp_path / "b", seed=3)
    c = run(tmp_path / "c", seed=4)
    for n in a.model.params:
        np.testing.assert_array_equal(a.model.params[n], b.model.params[n])
    assert any(not np.array_equal(a.model.params[n], c.model.params[n]) for n in a.model.params)


@pytest.mark.parametrize("stop,every", [(17, 5), (24, 0), (30, 6)])
def test_resume_gives_the_uninterrupted_result(tmp_path, stop, every):
    """Stop as a kill would (no final save), resume from the last checkpoint, compare."""
    prog = program(optimizer="adam", optimizer_args={"lr": 0.01}, schedule="cosine")
    whole = run(tmp_path / "whole", prog, every=every)
    run(tmp_path / "cut", prog, max_steps=stop, every=every)
    saved = load_checkpoint(tmp_path / "cut")
    assert saved.meta["step"] <= stop
    resumed = run(tmp_path / "cut", prog, resume=True, every=every)
    assert resumed.state.step == whole.state.step
    for n in whole.model.params:
        np.testing.assert_array_equal(resumed.model.params[n], whole.model.params[n])

    def strip(rs):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rs]

    assert strip(rows(tmp_path / "cut")) == strip(rows(tmp_path / "whole"))


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    path = str(tmp_path / FILENAME)
    save_checkpoint(path, {"w": np.ones(3, np.float32)}, meta={"step": 1})

    def fail(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(ckpt_mod.os, "replace", fail)
    with pytest.raises(OSError):
        save_checkpoint(path, {"w": np.zeros(3, np.float32)}, meta={"step": 2})
    assert os.listdir(tmp_path) == [FILENAME]  # no temporary file left behind
    ck = load_checkpoint(path)
    assert ck.meta["step"] == 1 and ck.params["w"].tolist() == [1, 1, 1]


def test_a_nan_loss_stops_with_the_node_and_no_checkpoint(tmp_path):
    prog = program(optimizer_args={"lr": 1e30}, epochs=2)
    with pytest.raises(AnomalyError) as e:
        run(tmp_path, prog)
    err = e.value
    assert "produced" in err.message and "node %" in err.message
    assert any("the loss became nan at step" in n for n in err.notes)
    assert any("no checkpoint was written" in n for n in err.notes)
    assert not os.path.exists(tmp_path / FILENAME)


def test_detect_anomaly_names_the_node(tmp_path):
    prog = program(optimizer_args={"lr": 1e30}, epochs=1)
    s = resolve_config(prog.train)
    t = Trainer(Model(prog), dataset(), s, quiet=True, detect_anomaly=True)
    with pytest.raises(AnomalyError, match=r"node %\d+ \(`\w+`( in `l\d`)?\) produced (Inf|NaN)"):
        t.fit()


def test_non_finite_weights_are_never_saved(tmp_path):
    prog = program()
    t = Trainer(Model(prog), dataset(), resolve_config(prog.train), out=str(tmp_path), quiet=True)
    t.model.params["l1.b"][0] = np.inf
    with pytest.raises(AnomalyError, match="parameter l1.b holds NaN or Inf"):
        t.save()
    assert not os.path.exists(tmp_path / FILENAME)


def test_a_changed_model_is_reported_as_a_whole(tmp_path):
    run(tmp_path, program(), epochs=1)
    from runtime_graphs import mlp

    prog = program()
    prog.infer_graph = mlp(hidden=8)
    prog.train_graph = mlp(hidden=8, batchnorm_state=False)
    prog.model_hash = "fedcba9876543210"
    with pytest.raises(CheckpointError) as e:
        Model(prog, training=False).load_weights(str(tmp_path))
    err = e.value
    assert err.message.endswith("0 parameter(s) added, 1 removed, 3 reshaped")
    assert "removed from the model: bn.mean float32[16]" in err.notes
    assert "reshaped: l1.W: float32[4, 16] in the checkpoint, float32[4, 8] in the model" in (
        err.notes
    )
    assert "model hash fedcba987654, checkpoint trained from 0123456789ab" in err.notes


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint.safetensors in this directory"):
        load_checkpoint(str(tmp_path))
    run(tmp_path, epochs=1)
    path = tmp_path / FILENAME
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{path}: truncated or corrupt checkpoint"):
        load_checkpoint(str(path))
    path.write_bytes(b"\x00" * 5)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_checkpoint(str(path))
    from safetensors.numpy import save

    path.write_bytes(save({"param/w": np.ones(2)}, metadata={"format": "other"}))
    with pytest.raises(CheckpointError, match="not a dslc checkpoint .metadata field `format`"):
        load_checkpoint(str(path))
    save_checkpoint(str(path), {"w": np.ones(2)}, meta={"step": 3})
    ck = load_checkpoint(str(path))
    with pytest.raises(CheckpointError, match=rf"{path}: the metadata has no field `optimizer`"):
        ck.field("optimizer", dict)


def test_resume_with_missing_optimizer_state_names_the_tensor(tmp_path):
    run(tmp_path, epochs=1)
    ck = load_checkpoint(tmp_path)
    del ck.optim["momentum_buffer"]["l2.W"]
    prog = program()
    with pytest.raises(CheckpointError, match="no tensor `optim/momentum_buffer/l2.W`"):
        Trainer(Model(prog), dataset(), resolve_config(prog.train), resume=ck, quiet=True)


def test_settings_resolution():
    prog = program()
    s = resolve_config(prog.train, {"batch": 8, "seed": 5}, epochs=7, lr=0.5, seed=None)
    assert (s.epochs, s.batch, s.seed, s.optimizer_args["lr"]) == (7, 8, 5, 0.5)
    assert s.optimizer_args["momentum"] == 0.9
    with pytest.raises(ConfigError, match="batch size must be at least 1"):
        resolve_config(prog.train, batch=0)
    with pytest.raises(ConfigError):
        Trainer(Model(prog), dataset(), resolve_config(prog.train, metrics=["acuracy"]), quiet=True)


def test_evaluate_reports_loss_and_metrics():
    prog = program()
    t = Trainer(Model(prog), dataset(), resolve_config(prog.train), quiet=True)
    t.fit()
    res = evaluate(t.model, dataset(), ["accuracy", "f1"], batch_size=64)
    assert set(res) == {"loss", "accuracy", "f1"} and res["accuracy"] > 0.8


def test_load_pretrained_by_name_and_prefix(tmp_path):
    from dslc.runtime.checkpoint import load_pretrained
    from safetensors.numpy import save_file

    params = {"enc.W": np.zeros((2, 3), np.float32), "enc.b": np.zeros(3, np.float32),
              "head.W": np.zeros((3, 1), np.float32)}  # fmt: skip
    plain = str(tmp_path / "w.safetensors")
    save_file({"W": np.ones((2, 3), np.float64), "b": np.full(3, 2.0, np.float32)}, plain)
    assert load_pretrained(plain, "enc", params) == ["enc.W", "enc.b"]
    assert params["enc.W"].tolist() == [[1, 1, 1]] * 2 and params["head.W"].sum() == 0
    ckpt = str(tmp_path / "c.safetensors")
    save_checkpoint(ckpt, {"head.W": np.full((3, 1), 5.0, np.float32)}, meta={"step": 1})
    assert load_pretrained(ckpt, "", params) == ["head.W"] and params["head.W"].sum() == 15
    save_file({"W": np.ones((3, 3), np.float32)}, plain)
    with pytest.raises(CheckpointError, match="1 tensor.s. do not fit") as e:
        load_pretrained(plain, "enc", params)
    assert e.value.notes == ["W: float32[3, 3] in the file, enc.W is float32[2, 3]"]
    with pytest.raises(CheckpointError, match="no tensor matches a parameter under `dec`"):
        load_pretrained(plain, "dec", params)
