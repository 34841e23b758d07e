"""Generated Numba kernels equal the NumPy calls they replace; the float32 math is accurate."""

from __future__ import annotations

import math

import numpy as np
import pytest
from codegen_graphs import GRAPHS, feeds_for, fused

from dslc.codegen.expr import lower
from dslc.codegen.numba_emit import emit

numba = pytest.importorskip("numba")

from dslc.runtime.executor import Executor  # noqa: E402

from dslc.ops.numba_math import erf32, exp32, tanh32  # noqa: E402


def run(g, feeds, kernels, threads=1):
    exe = Executor(g, kernels=kernels, threads=threads)
    out = exe.run(feeds)
    return out, exe.bound(feeds).plan


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_generated_kernels_match_numpy(name):
    g = fused(GRAPHS[name])
    feeds = feeds_for(g)
    ref, ref_plan = run(g, feeds, "numpy")
    got, plan = run(g, feeds, "numba")
    assert ref_plan.generated == [] and plan.kernels == "numba"
    if name == "middle_axis":
        assert plan.generated == [] and "neither leading nor trailing" in plan.fallbacks[0][1]
    else:
        assert plan.generated and not plan.fallbacks, plan.fallbacks
    for k in ref:
        assert got[k].dtype == ref[k].dtype and got[k].shape == ref[k].shape
        np.testing.assert_allclose(got[k], ref[k], rtol=2e-6, atol=2e-6, err_msg=k)


@pytest.mark.parametrize("name", ["softmax_masked", "layer_norm", "column_sum", "outer_inner"])
def test_parallel_variants_match(name, monkeypatch):
    """Large domains take the prange variant (the threshold lowered to reach it here)."""
    from dslc.runtime import kernels_numba

    monkeypatch.setattr(kernels_numba, "PARALLEL_MIN", 1)
    g = fused(GRAPHS[name])
    feeds = feeds_for(g, n=37, t=9)
    ref, _ = run(g, feeds, "numpy")
    exe = Executor(g, kernels="numba", threads=2)
    for _ in range(6):  # serial and parallel in turn, then the faster one
        got = exe.run(feeds)
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], rtol=2e-6, atol=2e-6, err_msg=k)
    tuned = [fn for fn, *_ in exe.bound(feeds).steps if isinstance(fn, kernels_numba.Tuned)]
    assert tuned and all(t.chosen is not None for t in tuned)


@pytest.mark.parametrize("name", ["log_softmax_rows", "unary_chain", "layer_norm"])
def test_nan_and_inf_propagate_as_in_numpy(name):
    g = fused(GRAPHS[name])
    feeds = feeds_for(g)
    x = feeds["x"].reshape(-1)
    x[3] = np.nan
    if name == "unary_chain":
        x[10], x[12] = np.inf, -np.inf
    with np.errstate(all="ignore"):
        ref, _ = run(g, feeds, "numpy")
        got, _ = run(g, feeds, "numba")
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=2e-6, atol=2e-6, err_msg=k)


def test_float64_runs_use_float64_math():
    g = fused(GRAPHS["unary_chain"])
    feeds = feeds_for(g)
    ref = Executor(g, kernels="numpy", float_dtype="f64").run(feeds)["y"]
    got = Executor(g, kernels="numba", float_dtype="f64").run(feeds)["y"]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_the_source_is_shape_independent_and_cached_by_hash(tmp_path, monkeypatch):
    from dslc.runtime import kernels_numba

    g = fused(GRAPHS["layer_norm"])
    (nid,) = [n for n in g.topo_order() if g.data(n)["op"] == "fused"]
    a = g.data(nid)["attrs"]
    src = emit(lower(a["body"], a["pattern"], a["domain"], a["reduce_axes"]), "m")
    assert "cache=True" in src and "def serial(" in src and "def parallel(" in src
    monkeypatch.setenv("DSLC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(kernels_numba, "_KERNELS", {})  # as in a fresh process
    monkeypatch.setattr(kernels_numba, "_MODULES", {})
    exe = Executor(g, kernels="numba")
    exe.run(feeds_for(g, n=5, t=6))
    exe.run(feeds_for(g, n=3, t=11))  # other sizes: the same kernel
    files = sorted(p.name for p in (tmp_path / "kernels").glob("k_*.py"))
    assert len(files) == 1
    assert kernels_numba.cache_dir() == tmp_path / "kernels"


# --- the float32 math -----------------------------------------------------------------------


def _grid(lo, hi, n=200_001):
    return np.linspace(lo, hi, n, dtype=np.float32)


@numba.njit
def _apply(fn_id, x, out):
    for i in range(x.size):
        out[i] = exp32(x[i]) if fn_id == 0 else tanh32(x[i]) if fn_id == 1 else erf32(x[i])


def _eval(fn_id, x):
    out = np.empty_like(x)
    _apply(fn_id, x, out)
    return out


def test_exp32_relative_error():
    x = _grid(-87, 88)
    got = _eval(0, x).astype(np.float64)
    ref = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got - ref) / ref) < 3e-7
    special = np.array([-np.inf, np.inf, np.nan, -200.0, 100.0, 0.0], np.float32)  # no subnormals
    with np.errstate(over="ignore"):
        assert np.array_equal(_eval(0, special), np.exp(special), equal_nan=True)


def test_tanh32_and_erf32_absolute_error():
    x = _grid(-12, 12)
    assert np.max(np.abs(_eval(1, x) - np.tanh(x.astype(np.float64)))) < 1e-6
    ref = np.array([math.erf(v) for v in x[::7].astype(np.float64)])
    assert np.max(np.abs(_eval(2, x)[::7] - ref)) < 1e-6
    special = np.array([-np.inf, np.inf, np.nan], np.float32)
    assert np.array_equal(_eval(1, special), np.tanh(special), equal_nan=True)
    assert np.array_equal(_eval(2, special), np.array([-1, 1, np.nan], np.float32), equal_nan=True)


@pytest.mark.parametrize("t", [4096, 4097])
def test_row_sums_short_and_long_rows_agree_with_numpy(t):
    """Rows up to ROW_F32_MAX sum in float32, longer ones in float64: both as NumPy does."""
    g = fused(GRAPHS["log_softmax_rows"])
    feeds = feeds_for(g, n=3, t=t)
    ref, _ = run(g, feeds, "numpy")
    got, _ = run(g, feeds, "numba")
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-5, err_msg=k)


@pytest.mark.parametrize("name", sorted(GRAPHS))
def test_row_slabs_on_several_threads_give_the_same_numbers(name, monkeypatch):
    """Maps and row reductions split into slabs of rows (threshold lowered to reach it) give
    exactly the numbers of one call: each slab starts its strided offsets at its first row."""
    from dslc.runtime import kernels_numba

    if kernels_numba.row_threads() < 2:
        pytest.skip("one BLAS thread: kernels are not split")
    g = fused(GRAPHS[name])
    feeds = feeds_for(g, n=7, t=5)
    whole, _ = run(g, feeds, "numba")
    monkeypatch.setattr(kernels_numba, "SLAB_MIN", 1)
    split, _ = run(g, feeds, "numba")
    for k in whole:
        np.testing.assert_array_equal(split[k], whole[k], err_msg=k)
