"""Initialisers: the runtime set the front end emits, seeded per parameter name."""

from __future__ import annotations

import numpy as np
import pytest
from dslc.runtime.init import fans, initial_value

from dslc.errors import ValueError_


def test_the_front_end_initialisers():
    z = initial_value("a", (3, 4), np.float32, "zeros")
    assert z.dtype == np.float32 and not z.any()
    assert initial_value("a", (2,), np.float64, "ones").tolist() == [1, 1]
    assert initial_value("a", (2,), np.float64, "constant", (0.5,)).tolist() == [0.5, 0.5]
    u = initial_value("a", (1000,), np.float64, "uniform", (-0.1, 0.1))
    assert u.min() >= -0.1 and u.max() < 0.1 and u.std() > 0.05
    n = initial_value("a", (4000,), np.float64, "normal", (1.0, 0.02))
    assert abs(n.mean() - 1.0) < 0.002 and abs(n.std() - 0.02) < 0.002
    t = initial_value("a", (4000,), np.float64, "truncated_normal", (0.0, 1.0, -0.5, 1.5))
    assert t.min() >= -0.5 and t.max() <= 1.5
    t2 = initial_value("a", (4000,), np.float64, "truncated_normal", (("std", 0.1),))
    assert np.abs(t2).max() <= 0.2


def test_seeded_by_seed_and_name():
    a = initial_value("l.W", (5, 5), np.float32, "normal", (), seed=1)
    assert np.array_equal(a, initial_value("l.W", (5, 5), np.float32, "normal", (), seed=1))
    assert not np.array_equal(a, initial_value("l.W", (5, 5), np.float32, "normal", (), seed=2))
    assert not np.array_equal(a, initial_value("k.W", (5, 5), np.float32, "normal", (), seed=1))


def test_fans_and_named_schemes():
    assert fans((64, 10)) == (64, 10)
    assert fans((32, 3, 5, 5)) == (75, 800)
    w = initial_value("w", (400, 600), np.float64, "glorot_uniform")
    assert np.abs(w).max() <= np.sqrt(6 / 1000)
    h = initial_value("w", (400, 600), np.float64, "he_normal")
    assert h.std() == pytest.approx(np.sqrt(2 / 400), rel=0.05)
    q = initial_value("w", (6, 4), np.float64, "orthogonal")
    np.testing.assert_allclose(q.T @ q, np.eye(4), atol=1e-12)


def test_bad_initialisers_are_value_errors():
    with pytest.raises(ValueError_, match="parameter w: unknown initialiser 'gaussian'"):
        initial_value("w", (2,), np.float32, "gaussian")
    with pytest.raises(ValueError_, match="parameter w: bad arguments for uniform"):
        initial_value("w", (2,), np.float32, "uniform", (1, 2, 3))
    with pytest.raises(ValueError_, match="needs std > 0 and lo < hi"):
        initial_value("w", (2,), np.float32, "truncated_normal", (0.0, 1.0, 1.0, 0.0))
