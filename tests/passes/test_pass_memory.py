"""Memory planning: liveness, buffer reuse, in-place, peak estimates; and run_pipeline reports."""

import numpy as np
import pytest
from pass_helpers import f32, new_graph

from dslc.errors import ConfigError
from dslc.ir.dims import Dim
from dslc.ir.types import TensorType
from dslc.passes import PASS_NAMES, estimate_peak, plan_memory, run_pipeline
from dslc.passes.memory import schedule


def chain(n=4, shape=(8, 8)):
    """x -> exp -> matmul(., w) -> ... : each value dies as soon as the next is computed."""
    g, b = new_graph()
    x = b.input("x", f32(*shape))
    w = b.param("w", f32(shape[1], shape[1]))
    v = x
    for _ in range(n):
        v = b.op("matmul", b.op("exp", v), w)
    g.outputs["y"] = v
    return g


def assert_no_overlap(g, plan, env):
    """No two values that are live at the same time share a buffer (unless written in place)."""
    pos = {n: i for i, n in enumerate(plan.order)}
    end = {n: pos[n] for n in plan.order}
    for n in plan.order:
        for s in g.data(n)["inputs"]:
            if s in end:
                end[s] = max(end[s], pos[n])
    for r in g.roots():
        end[r] = len(plan.order)
    for a in plan.order:
        for c in plan.order:
            if a < c and plan.buffer_of[a] == plan.buffer_of[c]:
                first, second = sorted((a, c), key=pos.get)
                overlap = pos[second] < end[first]
                inplace = plan.inplace.get(second) == first and end[first] == pos[second]
                assert not overlap or inplace, (a, c)


def test_buffers_are_reused():
    g = chain(4)
    plan = plan_memory(g, {})
    assert len(plan.sizes) <= 3 and len(plan.buffer_of) == 8
    assert plan.peak_bytes == 256 * len(plan.sizes)
    assert_no_overlap(g, plan, {})


def test_inplace_when_operand_dies_and_types_match():
    g, b = new_graph()
    x = b.input("x", f32(16))
    a = b.op("exp", b.op("neg", x))
    c = b.op("relu", a)
    g.outputs["y"] = b.op("add", c, b.op("sqrt", x))
    plan = plan_memory(g, {})
    assert plan.inplace[a] == g.data(a)["inputs"][0]  # exp overwrites neg's result
    assert plan.inplace[c] == a
    assert len(plan.sizes) == 2
    assert_no_overlap(g, plan, {})


def test_no_inplace_over_inputs_params_or_live_values():
    g, b = new_graph()
    x = b.input("x", f32(16))
    e = b.op("exp", x)
    g.outputs["a"] = b.op("neg", e)
    g.outputs["b"] = b.op("relu", e)  # e is still needed after neg
    plan = plan_memory(g, {})
    assert g.outputs["a"] not in plan.inplace
    assert x not in plan.buffer_of


def test_roots_live_to_the_end():
    g, b = new_graph()
    x = b.input("x", f32(4))
    w = b.param("w", f32(4))
    loss = b.op("sum", b.op("mul", x, w))
    g.outputs["loss"] = loss
    g.grads["w"] = b.op("scale", x, c=1.0)
    g.outputs["z"] = b.op("exp", b.op("exp", x))
    plan = plan_memory(g, {})
    buffers = [plan.buffer_of[r] for r in g.roots()]
    assert len(set(buffers)) == len(buffers)
    assert_no_overlap(g, plan, {})


def test_symbolic_sizes_and_peak_estimate():
    g = chain(3, shape=(Dim.sym("N"), 8))
    peak = estimate_peak(g)
    assert peak == Dim.sym("N") * 64  # two [N, 8] f32 values live at once
    assert estimate_peak(g, {"N": 10}) == 640
    plan = plan_memory(g, {"N": 10})
    assert plan.live_peak_bytes == 640 and plan.peak_bytes >= 640
    assert_no_overlap(g, plan, {"N": 10})


def test_dtype_sizes():
    g, b = new_graph()
    x = b.input("x", TensorType((10,), "f64"))
    g.outputs["y"] = b.op("cast", b.op("exp", x), dtype="f16")
    assert estimate_peak(g) == 80 + 20


def test_schedule_holds_compute_nodes_only():
    g = chain(2)
    assert [g.data(n)["op"] for n in schedule(g)] == ["exp", "matmul", "exp", "matmul"]


def training_graph():
    g, b = new_graph()
    n = Dim.sym("N")
    x = b.input("x", f32(n, 4))
    w = b.param("w", f32(4, 3))
    bias = b.param("b", f32(3))
    h = b.op("relu", b.op("add", b.op("matmul", x, w), bias))
    g.outputs["loss"] = b.op("mean", b.op("mul", b.op("add", h, b.const(0.0)), h))
    return g


def test_run_pipeline_reports_every_pass():
    g = training_graph()
    out, reports = run_pipeline(g, report=True, check=True)
    assert [r.name for r in reports] == PASS_NAMES
    by_name = {r.name: r for r in reports}
    ad = by_name["autodiff"]
    assert ad.nodes_after > ad.nodes_before  # autodiff adds the backward graph
    assert reports[-1].kernels_after < reports[-1].kernels_before  # fusion
    assert set(out.grads) == {"w", "b"}
    assert "N" in str(ad.peak_after)
    assert "kernels" in str(reports[-1])


def test_run_pipeline_stops_after_a_named_pass():
    g = training_graph()
    out = run_pipeline(g, until="autodiff")
    assert out.grads and not any(n.op == "fused" for n in out.nodes())
    assert len(g.grads) == 0  # the caller's graph is left alone
    with pytest.raises(ConfigError, match="no pass named 'fusion'"):
        run_pipeline(g, until="fusion")


def test_inference_graph_passes_through_autodiff_unchanged():
    g = training_graph()
    del g.outputs["loss"]
    g.outputs["y"] = [n.id for n in g.nodes() if n.op == "relu"][0]
    out = run_pipeline(g, check=True)
    assert not out.grads and np.any([n.op == "fused" for n in out.nodes()])
