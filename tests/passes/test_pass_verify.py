"""verify: each invariant of the IR, broken on purpose, is reported."""

import pytest
from pass_helpers import f32, new_graph

from dslc.errors import InternalError
from dslc.ir.graph import Graph
from dslc.ir.types import TensorType
from dslc.passes import verify


def small():
    g, b = new_graph()
    x = b.input("x", f32(2, 3))
    w = b.param("w", f32(3))
    y = b.op("mul", x, w)
    g.outputs["y"] = b.op("relu", y)
    return g, b, x, w, y


def broken(g, match):
    with pytest.raises(InternalError, match=match):
        verify(g)


def test_a_sound_graph_passes():
    g, *_ = small()
    assert verify(g) is g


def test_edges_must_mirror_inputs():
    g, _, x, w, y = small()
    g.g.remove_edge(w, y, 1)
    broken(g, "do not mirror inputs")


def test_edge_keys_are_operand_positions():
    g, _, x, w, y = small()
    g.g.remove_edge(x, y, 0)
    g.g.add_edge(x, y, key=5)
    broken(g, "key = position")


def test_dangling_operand():
    g, _, x, w, y = small()
    g.data(y)["inputs"] = (x, 99)
    broken(g, r"operands \[99\] are not in the graph")


def test_cycle():
    g, b, x, w, y = small()
    r = g.outputs["y"]
    g.set_inputs(y, (r, w))
    broken(g, "cycle")


def test_type_must_equal_inferred():
    g, _, x, w, y = small()
    g.data(y)["type"] = f32(2, 4)
    broken(g, r"type f32\[2, 4\] differs from the inferred f32\[2, 3\]")


def test_operand_types_must_fit():
    g, b, x, w, y = small()
    v = b.param("v", f32(4))
    g.set_inputs(y, (x, v))
    broken(g, "do not fit")


def test_unregistered_op():
    g, _, x, w, y = small()
    g.data(y)["op"] = "frobnicate"
    broken(g, "not a registered primitive")


def test_unknown_attribute():
    g, _, x, w, y = small()
    g.data(y)["attrs"]["alpha"] = 2
    broken(g, "unknown attributes")


def test_tables_point_at_live_nodes_of_the_right_op():
    g, _, x, w, y = small()
    g.params["w"] = x
    broken(g, r"params\['w'\] points at a `input`")
    g, _, x, w, y = small()
    g.outputs["z"] = 1234
    broken(g, "missing node %1234")
    g, _, x, w, y = small()
    g.grads["nope"] = y
    broken(g, "names no parameter")
    g, _, x, w, y = small()
    g.grads["w"] = y
    broken(g, r"grads\['w'\] is f32\[2, 3\], the param f32\[3\]")


def test_const_value_matches_type():
    g, b, *_ = small()
    c = b.const([1.0, 2.0])
    g.data(c)["type"] = f32(3)
    broken(g, "does not match type")


def test_fused_body_is_checked_recursively():
    g, b, x, w, y = small()
    body = Graph()
    bi = body.add("input", (), f32(2, 3), {"name": "in0", "role": "input"})
    body.inputs["in0"] = bi
    out = body.add("relu", (bi,), f32(2, 3))
    body.outputs["out"] = out
    f = g.add("fused", (y,), f32(2, 3), {"body": body})
    g.outputs["f"] = f
    verify(g)
    body.data(out)["type"] = TensorType((2, 3), "f64")
    broken(g, r"%\d+.body %\d+ `relu`: type f64\[2, 3\] differs")


def test_all_problems_are_listed():
    g, _, x, w, y = small()
    g.data(y)["op"] = "frobnicate"
    g.outputs["z"] = 1234
    with pytest.raises(InternalError) as e:
        verify(g)
    assert len([e.value.message, *e.value.notes]) == 2
