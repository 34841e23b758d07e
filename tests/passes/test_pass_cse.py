"""cse: Before/Expected on small graphs."""

import numpy as np
from pass_helpers import checked, f32, new_graph, ops_of, results

from dslc.passes import cse


def test_merges_equal_computations_and_their_users():
    g, b = new_graph()
    x = b.input("x", f32(3))
    a1 = b.op("exp", x)
    a2 = b.op("exp", x)
    g.outputs["y"] = b.op("add", b.op("relu", a1), b.op("relu", a2))
    out = checked(cse, g)
    assert ops_of(out) == ["exp", "relu", "add"]
    add = out.outputs["y"]
    assert out.data(add)["inputs"][0] == out.data(add)["inputs"][1]


def test_attrs_tell_apart():
    g, b = new_graph()
    x = b.input("x", f32(3))
    g.outputs["a"] = b.op("scale", x, c=2.0)
    g.outputs["b"] = b.op("scale", x, c=3.0)
    g.outputs["c"] = b.op("scale", x, c=2.0)
    out = checked(cse, g)
    assert ops_of(out).count("scale") == 2
    assert out.outputs["a"] == out.outputs["c"] != out.outputs["b"]


def test_commutative_operands():
    g, b = new_graph()
    x = b.input("x", f32(3))
    y = b.input("y", f32(3))
    g.outputs["a"] = b.op("add", x, y)
    g.outputs["b"] = b.op("add", y, x)
    g.outputs["c"] = b.op("sub", x, y)
    g.outputs["d"] = b.op("sub", y, x)
    out = checked(cse, g)
    assert out.outputs["a"] == out.outputs["b"]
    assert out.outputs["c"] != out.outputs["d"]


def test_consts_merged_by_value_and_dtype():
    g, b = new_graph()
    x = b.input("x", f32(3))
    c1, c2, c3 = b.const(2.0), b.const(2.0), b.const(-0.0)
    c4 = b.const(0.0)
    arr1, arr2 = b.const([1.0, 2.0, 3.0]), b.const([1.0, 2.0, 3.0])
    g.outputs["a"] = b.op("mul", x, c1)
    g.outputs["b"] = b.op("mul", x, c2)
    g.outputs["c"] = b.op("add", x, c3)
    g.outputs["d"] = b.op("add", x, c4)
    g.outputs["e"] = b.op("sub", x, arr1)
    g.outputs["f"] = b.op("sub", x, arr2)
    out = checked(cse, g)
    assert out.outputs["a"] == out.outputs["b"]
    assert out.outputs["e"] == out.outputs["f"]
    assert out.outputs["c"] != out.outputs["d"]  # -0.0 and 0.0 differ (1/x)
    assert c2 not in out and arr2 not in out


def test_random_ops_are_never_merged():
    g, b = new_graph()
    x = b.input("x", f32(4, 3))
    m1 = b.op("dropout_mask", x, p=0.5)
    m2 = b.op("dropout_mask", x, p=0.5)
    g.outputs["a"] = b.op("mul", x, m1)
    g.outputs["b"] = b.op("mul", x, m2)
    out = checked(cse, g)
    assert ops_of(out).count("dropout_mask") == 2
    assert out.outputs["a"] != out.outputs["b"]


def test_params_and_inputs_are_never_merged():
    g, b = new_graph()
    p1 = b.param("a", f32(3))
    p2 = b.param("b", f32(3))
    g.outputs["y"] = b.op("add", p1, p2)
    out = checked(cse, g)
    assert len(out) == len(g)


def test_values_are_kept():
    g, b = new_graph()
    x = b.input("x", f32(2, 3))
    s1 = b.op("sum", x, axes=(1,), keepdims=True)
    s2 = b.op("sum", x, axes=(1,), keepdims=True)
    s3 = b.op("sum", x, axes=(0,), keepdims=True)
    g.outputs["y"] = b.op("add", b.op("mul", s1, s2), s3)
    out = checked(cse, g)
    feeds = {"x": np.arange(6.0).reshape(2, 3)}
    np.testing.assert_allclose(results(out, feeds)["out:y"], results(g, feeds)["out:y"])
    assert ops_of(out).count("sum") == 2
