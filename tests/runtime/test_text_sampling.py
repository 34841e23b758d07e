"""Sampling the next token and autoregressive generation."""

from __future__ import annotations

import numpy as np
import pytest
from dslc.runtime.sampling import generate, sample_next

from dslc.errors import ConfigError


def draws(logits, n=4000, seed=0, **kw):
    rng = np.random.default_rng(seed)
    return np.bincount([sample_next(logits, rng, **kw) for _ in range(n)], minlength=len(logits))


def test_greedy_and_top_1():
    logits = np.array([0.1, 2.0, -1.0, 1.9])
    rng = np.random.default_rng(0)
    assert sample_next(logits, rng, temperature=0) == 1
    assert sample_next(logits, rng, top_k=1) == 1
    assert sample_next(logits[None], rng, temperature=0) == 1  # [1, V] works too


def test_frequencies_follow_the_softmax():
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    freq = draws(logits) / 4000
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.03)


def test_temperature_sharpens_and_flattens():
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.4]))
    cold = draws(logits, temperature=0.25) / 4000  # p ** 4, renormalised
    p4 = np.array([0.1, 0.2, 0.3, 0.4]) ** 4
    np.testing.assert_allclose(cold, p4 / p4.sum(), atol=0.03)
    hot = draws(logits, temperature=100.0) / 4000
    np.testing.assert_allclose(hot, 0.25, atol=0.03)


def test_top_k_keeps_only_the_largest():
    logits = np.array([3.0, 0.0, 2.0, 1.0, -5.0])
    counts = draws(logits, top_k=2)
    assert counts[[1, 3, 4]].sum() == 0 and counts[0] > counts[2] > 0


def test_sampling_is_reproducible():
    logits = np.zeros(50)
    assert draws(logits, n=100, seed=4).tolist() == draws(logits, n=100, seed=4).tolist()


def test_bad_settings():
    rng = np.random.default_rng(0)
    with pytest.raises(ConfigError, match="temperature must be at least 0, got -1"):
        sample_next(np.zeros(3), rng, temperature=-1)
    with pytest.raises(ConfigError, match="top-k must be at least 1, got 0"):
        sample_next(np.zeros(3), rng, top_k=0)


def counting_model(vocab=10):
    """logits [1, t, V] that put all mass on (token + 1) % V at every position."""
    seen = []

    def step(ids):
        seen.append(ids.copy())
        return np.eye(vocab)[(ids + 1) % vocab] * 50.0

    return step, seen


def test_generate_crops_to_the_context():
    step, seen = counting_model()
    out = generate(step, [7], 5, np.random.default_rng(0), context=3)
    assert out == [8, 9, 0, 1, 2]
    assert [s.shape for s in seen] == [(1, 1), (1, 2), (1, 3), (1, 3), (1, 3)]
    assert seen[-1].tolist() == [[9, 0, 1]] and seen[-1].dtype == np.int64


def test_generate_pads_fixed_length_models():
    step, seen = counting_model()
    out = generate(step, [3], 2, np.random.default_rng(0), context=4, pad_id=0)
    assert out == [4, 5] and seen[0].tolist() == [[3, 0, 0, 0]]  # read at the real position

    def next_word(ids):  # [1, T] -> [1, V] from the last step, like an LSTM classifier
        seen.append(ids.copy())
        return np.eye(10)[[(ids[0, -1] + 1) % 10]] * 50.0

    seen.clear()
    out = generate(next_word, [3], 2, np.random.default_rng(0), context=4, pad_id=0,
                   pad_side="left")  # fmt: skip
    assert out == [4, 5] and seen[0].tolist() == [[0, 0, 0, 3]]


def test_generate_stops_and_checks_arguments():
    step, _ = counting_model()
    rng = np.random.default_rng(0)
    assert generate(step, [1], 10, rng, stop_id=3) == [2, 3]
    with pytest.raises(ConfigError, match="the prompt is empty"):
        generate(step, [], 3, rng)
    with pytest.raises(ConfigError, match="padding to a fixed length needs the model's context"):
        generate(step, [1], 3, rng, pad_id=0)
