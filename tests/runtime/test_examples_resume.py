"""Kill-and-resume for every example's training loop (shrunk with --set so it runs fast)."""

from __future__ import annotations

import os

import numpy as np
import pytest

from dslc import api

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SMALL = {
    "linear_regression": {},
    "mlp_digits": {"hidden": 16},
    "cnn_digits": {"size": 8},
    "lstm_sentiment": {"seq": 12, "embed": 8, "units": 8},
    "lstm_textgen": {"embed": 8, "units": 8, "layers": 1},
    "gpt_char": {"d": 16, "heads": 2, "layers": 1},
    "bert_classifier": {"vocab": 500, "seq": 12, "d": 16, "heads": 2, "layers": 1, "ffn": 32},
}


@pytest.mark.parametrize("name", sorted(SMALL))
def test_a_stopped_run_resumes_to_the_uninterrupted_weights(name, tmp_path):
    path = os.path.join(ROOT, "examples", f"{name}.nn")
    common = dict(overrides=SMALL[name], batch_size=4, quiet=True, checkpoint_every=2)
    whole = api.train(path, out=str(tmp_path / "whole"), max_steps=5, **common)
    api.train(path, out=str(tmp_path / "cut"), max_steps=3, **common)  # "killed" after step 3
    resumed = api.train(path, resume=str(tmp_path / "cut"), max_steps=5, quiet=True,
                        checkpoint_every=2)  # fmt: skip
    a, b = whole.model.params, resumed.model.params
    assert set(a) == set(b)
    for n in a:
        np.testing.assert_array_equal(a[n], b[n], err_msg=n)
