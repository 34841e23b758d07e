"""fuse: Before/Expected groups, the reasons for fusions not made, and values kept."""

import ast
import inspect

import numpy as np
from pass_helpers import checked, f64, new_graph, ops_of, same_results

from dslc.errors import Span
from dslc.ir.types import TensorType
from dslc.ops import REGISTRY
from dslc.passes import autodiff, dce, fuse
from dslc.passes import fuse as fuse_module

RNG = np.random.default_rng(1)


def fused_nodes(g):
    return [n for n in g.nodes() if n.op == "fused"]


def member_ops(node):
    return [m[0] for m in node.attrs["members"]]


def reasons(g):
    return [(e["producer_op"], e["reason"]) for e in g.meta["fusion_report"]]


def same_values(before, after, feeds, rtol=1e-12, env=None):
    same_results(before, after, feeds, env=env, rtol=rtol)


def test_elementwise_chain_becomes_one_node():
    g, b = new_graph()
    x = b.input("x", f64(4, 3))
    bias = b.input("b", f64(3))
    with b.at(span=Span("m.nn", 2, 5), scope="act"):
        y = b.op("tanh", b.op("scale", b.op("add", x, bias), c=2.0))
    g.outputs["y"] = b.op("mul", y, b.const(0.5, "f64"))
    out = checked(fuse, g)
    (f,) = fused_nodes(out)
    assert ops_of(out) == ["fused"] and out.outputs["y"] == f.id
    assert member_ops(f) == ["add", "scale", "tanh", "mul"]
    assert f.attrs["kinds"] == ("broadcast", "elementwise")
    assert f.attrs["pattern"] == "elementwise" and f.attrs["reduce_axes"] == ()
    assert f.attrs["members"][0][1:] == (Span("m.nn", 2, 5), "act")
    body = f.attrs["body"]
    assert list(body.inputs) == ["in0", "in1"] and f.inputs == (x, bias)
    assert [n.op for n in body.nodes()].count("const") == 1  # the scalar 0.5 is inlined
    same_values(g, out, {"x": RNG.normal(size=(4, 3)), "b": RNG.normal(size=3)})


def test_value_used_outside_is_not_fused():
    g, b = new_graph()
    x = b.input("x", f64(4, 3))
    e = b.op("exp", x)
    g.outputs["a"] = b.op("relu", b.op("neg", e))
    g.outputs["b"] = b.op("matmul", e, b.input("w", f64(3, 2)))
    out = checked(fuse, g)
    (f,) = fused_nodes(out)
    assert member_ops(f) == ["neg", "relu"]
    assert ("exp", "its value is also used by `matmul` outside the group") in reasons(out)


def test_graph_outputs_stay_separate_values():
    g, b = new_graph()
    x = b.input("x", f64(3))
    h = b.op("exp", x)
    g.outputs["h"] = h
    g.outputs["y"] = b.op("log", h)
    out = checked(fuse, g)
    assert fused_nodes(out) == []
    assert any("read outside the graph (output 'h')" in r for _, r in reasons(out))


def test_shape_mismatch_is_reported():
    g, b = new_graph()
    x = b.input("x", f64(4, 3))
    v = b.input("v", f64(3))
    g.outputs["y"] = b.op("mul", x, b.op("exp", v))  # exp(v) would be recomputed per row
    out = checked(fuse, g)
    assert fused_nodes(out) == []
    ((op, why),) = reasons(out)
    assert op == "exp" and why.startswith("shape mismatch: its [3] would be broadcast to [4, 3]")


def test_opaque_op_in_between_is_reported():
    g, b = new_graph()
    x = b.input("x", f64(4, 3))
    h = b.op("matmul", b.op("exp", x), b.input("w", f64(3, 3)))
    g.outputs["y"] = b.op("relu", h)
    out = checked(fuse, g)
    assert sorted(ops_of(out)) == ["exp", "matmul", "relu"]
    assert ("matmul", "`matmul` (opaque) runs as its own kernel between fusable ops") in reasons(
        out
    )


def test_softmax_by_hand_is_one_row_reduce_group():
    g, b = new_graph()
    x = b.input("x", f64(4, 6))
    m = b.op("max", x, axes=(-1,), keepdims=True)
    e = b.op("exp", b.op("sub", x, m))
    g.outputs["y"] = b.op("div", e, b.op("sum", e, axes=(-1,), keepdims=True))
    out = checked(fuse, g)
    (f,) = fused_nodes(out)
    assert ops_of(out) == ["fused"]
    assert sorted(member_ops(f)) == ["div", "exp", "max", "sub", "sum"]
    assert f.attrs["pattern"] == "row_reduce" and f.attrs["reduce_axes"] == (1,)
    assert f.attrs["domain"] == (4, 6)
    same_values(g, out, {"x": RNG.normal(size=(4, 6))})


def test_layer_norm_is_one_group():
    g, b = new_graph()
    x = b.input("x", f64(2, 3, 8))
    gamma = b.param("gamma", f64(8))
    beta = b.param("beta", f64(8))
    mu = b.op("mean", x, axes=(-1,), keepdims=True)
    inv = b.op("rsqrt", b.op("add_scalar", b.op("var", x, axes=(-1,), keepdims=True), c=1e-5))
    y = b.op("add", b.op("mul", b.op("mul", b.op("sub", x, mu), inv), gamma), beta)
    g.outputs["y"] = y
    out = checked(fuse, g)
    (f,) = fused_nodes(out)
    assert ops_of(out) == ["fused"] and len(f.attrs["members"]) == 8
    assert f.attrs["pattern"] == "row_reduce" and f.attrs["reduce_axes"] == (2,)
    same_values(
        g, out, {"x": RNG.normal(size=(2, 3, 8)), "gamma": RNG.normal(size=8), "beta": np.ones(8)}
    )


def test_softmax_primitive_groups_with_its_neighbours():
    g, b = new_graph()
    s = b.input("s", f64(2, 4, 4))
    mask = b.input("mask", f64(4, 4))
    p = b.op("softmax", b.op("add", b.op("scale", s, c=0.5), mask), axis=-1)
    g.outputs["y"] = b.op("mul", p, b.const(0.9, "f64"))
    out = checked(fuse, g)
    (f,) = fused_nodes(out)
    assert member_ops(f) == ["scale", "add", "softmax", "mul"]
    assert f.attrs["pattern"] == "row_reduce"


def test_reductions_over_other_axes_do_not_join():
    g, b = new_graph()
    x = b.input("x", f64(4, 6))
    col = b.op("sum", x, axes=(0,), keepdims=True)
    row = b.op("sum", b.op("mul", x, col), axes=(1,), keepdims=True)
    g.outputs["y"] = row
    out = checked(fuse, g)
    (f,) = fused_nodes(out)
    assert member_ops(f) == ["mul", "sum"]
    assert any(op == "sum" and "reduces axes (0,)" in why for op, why in reasons(out))


def test_random_ops_stay_outside():
    g, b = new_graph()
    x = b.input("x", f64(4, 3))
    mask = b.op("dropout_mask", x, p=0.5)
    g.outputs["y"] = b.op("relu", b.op("mul", b.op("exp", x), mask))
    out = checked(fuse, g)
    (f,) = fused_nodes(out)
    assert member_ops(f) == ["exp", "mul", "relu"] and "dropout_mask" in ops_of(out)


def test_injective_ops_join_only_at_the_edge():
    g, b = new_graph()
    x = b.input("x", f64(3, 4))
    r = b.op("reshape", x, shape=(4, 3))  # reads x: joins
    y = b.op("exp", r)
    g.outputs["y"] = b.op("transpose", b.op("relu", y), perm=(1, 0))  # moves a computed value
    out = checked(fuse, g)
    (f,) = fused_nodes(out)
    assert member_ops(f) == ["reshape", "exp", "relu"]
    assert ops_of(out) == ["fused", "transpose"]
    same_values(g, out, {"x": RNG.normal(size=(3, 4))})


def test_views_the_generated_kernels_cannot_read_stay_outside():
    g, b = new_graph()
    x = b.input("x", f64(3, 4))
    t = b.op("transpose", x, perm=(1, 0))  # a view of x, read through by the kernel
    s = b.op("slice", b.input("z", f64(4, 5)), axis_slices=((1, 0, 3, 1),))
    g.outputs["y"] = b.op("relu", b.op("add", b.op("exp", t), s))
    out = checked(fuse, g)
    (f,) = fused_nodes(out)
    assert member_ops(f) == ["exp", "add", "relu"]
    assert sorted(ops_of(out)) == ["fused", "slice", "transpose"]
    assert {op for op, why in reasons(out) if "does not read at its edge" in why} == {
        "transpose",
        "slice",
    }
    same_values(g, out, {"x": RNG.normal(size=(3, 4)), "z": RNG.normal(size=(4, 5))})


def test_training_graph_values_are_kept():
    g, b = new_graph()
    x = b.input("x", f64(8, 4))
    w1, b1 = b.param("w1", f64(4, 6)), b.param("b1", f64(6))
    w2 = b.param("w2", f64(6, 3))
    labels = b.input("y", TensorType((8,), "i64"), role="label")
    h = b.op("gelu", b.op("add", b.op("matmul", x, w1), b1))
    logits = b.op("matmul", h, w2)
    pick = b.op("take_along", b.op("log_softmax", logits, axis=-1), labels)
    g.outputs["loss"] = b.op("neg", b.op("mean", pick))
    train = dce(autodiff(g))
    out = checked(fuse, train)
    assert len(ops_of(out)) < len(ops_of(train))
    feeds = {
        "x": RNG.normal(size=(8, 4)),
        "w1": RNG.normal(size=(4, 6)),
        "b1": RNG.normal(size=6),
        "w2": RNG.normal(size=(6, 3)),
        "y": RNG.integers(0, 3, size=8),
    }
    same_values(train, out, feeds)


def test_grouping_reads_kinds_never_op_names():
    source = inspect.getsource(fuse_module)
    strings = {n.value for n in ast.walk(ast.parse(source)) if isinstance(n, ast.Constant)} - {
        "fused",
        "input",
        "const",
    }
    assert not {s for s in strings if isinstance(s, str)} & set(REGISTRY)


def test_gpt_training_step_loses_40_percent_of_its_kernels():
    from pass_gpt import gpt, gpt_feeds

    from dslc.passes import attention, autodiff, count_kernels, cse, dce, layer_norm, simplify

    g = gpt(layers=2, dropout=False)
    before = dce(cse(simplify(autodiff(g))))  # every pass but the three that fuse
    fused = dce(cse(simplify(autodiff(layer_norm(attention(g))))))
    after = checked(fuse, fused)
    assert count_kernels(after) <= 0.6 * count_kernels(before)
    assert count_kernels(after) < count_kernels(checked(fuse, before))
    same_values(before, after, gpt_feeds(before, RNG), rtol=1e-9, env={"B": 2})


def bias_add(b, x, n=3):
    """x @ w + bias: the add reads a matmul's result and a parameter."""
    return b.op("add", b.op("matmul", x, b.param("w", f64(3, n))), b.param("bias", f64(n)))


def test_a_bias_add_read_by_two_groups_is_computed_in_each():
    g, b = new_graph()
    x = b.input("x", f64(4, 3))
    h = bias_add(b, x)
    g.outputs["a"] = b.op("tanh", h)  # forward: the activation
    g.outputs["s"] = b.op("sum", b.op("mul", h, b.op("exp", h)))  # as a gradient would read it
    out = checked(fuse, g)
    groups = sorted(member_ops(f) for f in fused_nodes(out))
    assert groups == [["add", "exp", "mul", "sum"], ["add", "tanh"]]
    assert ops_of(out).count("add") == 0 and ops_of(out).count("matmul") == 1
    assert not any(op == "add" for op, _ in reasons(out))
    f = {"x": RNG.normal(size=(4, 3)), "w": RNG.normal(size=(3, 3)), "bias": RNG.normal(size=3)}
    same_values(g, out, f)


def test_a_shared_value_stays_one_kernel_when_a_reader_cannot_recompute_it():
    f = {"x": RNG.normal(size=(4, 3)), "w": RNG.normal(size=(3, 3)), "bias": RNG.normal(size=3)}
    # a reader outside any group (a matmul)
    g, b = new_graph()
    x = b.input("x", f64(4, 3))
    h = bias_add(b, x)
    g.outputs["a"] = b.op("tanh", h)
    g.outputs["m"] = b.op("matmul", h, b.param("w2", f64(3, 2)))
    out = checked(fuse, g)
    assert ops_of(out).count("add") == 1
    assert ("add", "its value is also used by `matmul` outside the group") in reasons(out)
    same_values(g, out, {**f, "w2": RNG.normal(size=(3, 2))})
    # a reader whose group runs over another shape: taken out of the group that took it
    g, b = new_graph()
    x = b.input("x", f64(4, 3))
    h = bias_add(b, x)
    g.outputs["a"] = b.op("tanh", h)
    g.outputs["z"] = b.op("relu", b.op("mul", h, b.input("z", f64(2, 4, 3))))
    out = checked(fuse, g)
    assert ops_of(out).count("add") == 1
    assert sorted(member_ops(n) for n in fused_nodes(out)) == [["mul", "relu"]]
    same_values(g, out, {**f, "z": RNG.normal(size=(2, 4, 3))})


def test_values_computed_by_fusable_ops_or_from_two_full_operands_are_not_recomputed():
    g, b = new_graph()
    x = b.input("x", f64(4, 3))
    h = b.op("add", b.op("exp", x), b.param("bias", f64(3)))  # exp would be computed twice
    g.outputs["a"] = b.op("tanh", h)
    g.outputs["b"] = b.op("neg", h)
    y1 = b.op("matmul", x, b.param("w1", f64(3, 3)))
    k = b.op("add", y1, b.op("matmul", x, b.param("w2", f64(3, 3))))  # two full-size reads
    g.outputs["c"] = b.op("tanh", k)
    g.outputs["d"] = b.op("neg", k)
    out = checked(fuse, g)
    assert [op for op, _ in reasons(out)].count("add") >= 2
    assert (
        ops_of(out).count("matmul") == 2
        and sum(member_ops(n).count("add") for n in fused_nodes(out)) == 1
    )  # only exp + add, as before
