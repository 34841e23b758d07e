"""The notebook API: load, train, evaluate, predict, generate on the real examples."""

from __future__ import annotations

import os

import numpy as np
import pytest

from dslc import api
from dslc.errors import CheckpointError, ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EX = os.path.join(ROOT, "examples")


def test_train_evaluate_predict(tmp_path):
    model = api.load(os.path.join(EX, "mlp_digits.nn"), hidden=16)
    run = api.train(model, "digits", epochs=2, out=str(tmp_path), quiet=True)
    assert [r["epoch"] for r in run.history] == [1, 2]
    res = api.evaluate(model, "digits", split="val")
    assert res["examples"] == 180 and res["accuracy"] == pytest.approx(run.last["val_accuracy"])
    x = np.zeros((3, 64), np.float32)
    out = api.predict(model, {"x": x})
    assert out["probs"].shape == (3, 10) and out["logits"].shape == (3, 10)
    # the same weights from the run directory, in a model built for inference only
    again = api.load(os.path.join(EX, "mlp_digits.nn"), str(tmp_path), training=False, hidden=16)
    np.testing.assert_array_equal(api.predict(again, {"x": x})["probs"], out["probs"])
    with pytest.raises(ConfigError, match="split must be all, train or val"):
        api.evaluate(again, "digits", split="test")


def test_generate_from_a_text_model(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("abcabcabd abcabc abd abcab " * 20)
    path = os.path.join(EX, "lstm_textgen.nn")
    model = api.load(path, embed=8, units=16, layers=1)
    api.train(model, f"{corpus}:seq=8,stride=4", epochs=1, out=str(tmp_path / "run"),
              quiet=True)  # fmt: skip
    assert model.checkpoint is None  # trained here, no checkpoint loaded into it
    lm = api.load(path, str(tmp_path / "run"), training=False, embed=8, units=16, layers=1)
    a = api.generate(lm, "abc", tokens=12, seed=3, top_k=3)
    b = api.generate(lm, "abc", tokens=12, seed=3, top_k=3)
    assert a == b and a.startswith("abc") and len(a) == 15
    assert set(a) <= set("abcd ")
    with pytest.raises(CheckpointError, match="no vocabulary"):
        api.generate(api.load(os.path.join(EX, "mlp_digits.nn"), training=False), "x")
