"""simplify: each rule, Before/Expected, and values kept."""

import numpy as np
import pytest
from pass_helpers import checked, f32, new_graph, ops_of, results

from dslc.ir.types import TensorType
from dslc.passes import simplify


def one_op(op, *consts, **attrs):
    """y = op(x, *consts) on x: f32[2, 3]."""
    g, b = new_graph()
    x = b.input("x", f32(2, 3))
    args = [b.const(c) for c in consts]
    g.outputs["y"] = b.op(op, x, *args, **attrs)
    return g, x


@pytest.mark.parametrize(
    "op, consts, attrs",
    [
        ("mul", [1.0], {}),
        ("add", [0.0], {}),
        ("sub", [0.0], {}),
        ("div", [1.0], {}),
        ("scale", [], {"c": 1.0}),
        ("add_scalar", [], {"c": 0.0}),
        ("pow_scalar", [], {"p": 1.0}),
        ("transpose", [], {"perm": (0, 1)}),
        ("reshape", [], {"shape": (2, 3)}),
        ("sum_to", [], {"shape": (2, 3)}),
        ("broadcast_to", [], {"shape": (2, 3)}),
        ("cast", [], {"dtype": "f32"}),
    ],
)
def test_identities(op, consts, attrs):
    g, x = one_op(op, *consts, **attrs)
    out = checked(simplify, g)
    assert out.outputs["y"] == x and ops_of(out) == []


def test_constant_on_the_left_and_array_of_ones():
    g, b = new_graph()
    x = b.input("x", f32(2, 3))
    g.outputs["a"] = b.op("mul", b.const(1.0), x)
    g.outputs["b"] = b.op("add", b.const(np.zeros(3)), x)
    out = checked(simplify, g)
    assert out.outputs["a"] == x and out.outputs["b"] == x


def test_identity_that_would_change_the_type_is_kept():
    g, b = new_graph()
    x = b.input("x", f32(3))
    g.outputs["y"] = b.op("mul", x, b.const(np.ones((2, 3))))  # broadcasts x to [2, 3]
    out = checked(simplify, g)
    assert ops_of(out) == ["mul"]


def test_non_identities_are_kept():
    g, b = new_graph()
    x = b.input("x", f32(2, 3))
    g.outputs["a"] = b.op("mul", x, b.const(2.0))
    g.outputs["b"] = b.op("transpose", x, perm=(1, 0))
    g.outputs["c"] = b.op("cast", x, dtype="f64")
    out = checked(simplify, g)
    assert sorted(ops_of(out)) == ["cast", "mul", "transpose"]


def test_double_negation():
    g, b = new_graph()
    x = b.input("x", f32(3))
    g.outputs["y"] = b.op("exp", b.op("neg", b.op("neg", x)))
    out = checked(simplify, g)
    assert ops_of(out) == ["exp"]
    assert out.data(out.outputs["y"])["inputs"] == (x,)


def test_transposes_compose():
    g, b = new_graph()
    x = b.input("x", f32(2, 3, 4))
    t = b.op("transpose", b.op("transpose", x, perm=(1, 2, 0)), perm=(0, 2, 1))
    g.outputs["y"] = t
    out = checked(simplify, g)
    assert ops_of(out) == ["transpose"]
    assert out.data(out.outputs["y"])["attrs"]["perm"] == (1, 0, 2)
    feeds = {"x": np.arange(24.0).reshape(2, 3, 4)}
    np.testing.assert_array_equal(results(out, feeds)["out:y"], results(g, feeds)["out:y"])


def test_transposes_that_cancel_vanish():
    g, b = new_graph()
    x = b.input("x", f32(2, 3, 4))
    y = b.op("transpose", b.op("transpose", x, perm=(1, 2, 0)), perm=(2, 0, 1))
    g.outputs["y"] = b.op("relu", y)
    z = b.op("transpose", b.op("transpose", x), perm=None)  # default: reverse the axes
    g.outputs["z"] = z
    out = checked(simplify, g)
    assert ops_of(out) == ["relu"] and out.outputs["z"] == x


def test_reshapes_chain():
    g, b = new_graph()
    x = b.input("x", f32(2, 3, 4))
    r = b.op(
        "reshape", b.op("reshape", b.op("reshape", x, shape=(6, 4)), shape=(24,)), shape=(4, 6)
    )
    g.outputs["y"] = r
    g.outputs["back"] = b.op("reshape", b.op("reshape", x, shape=(24,)), shape=(2, 3, 4))
    out = checked(simplify, g)
    assert ops_of(out) == ["reshape"] and out.outputs["back"] == x
    (rid,) = [n.id for n in out.nodes() if n.op == "reshape"]
    assert out.data(rid)["inputs"] == (x,) and out.data(rid)["attrs"]["shape"] == (4, 6)


def test_shared_inner_node_stays_for_its_other_users():
    g, b = new_graph()
    x = b.input("x", f32(3))
    n1 = b.op("neg", x)
    g.outputs["a"] = b.op("neg", n1)
    g.outputs["b"] = b.op("exp", n1)
    out = checked(simplify, g)
    assert out.outputs["a"] == x and sorted(ops_of(out)) == ["exp", "neg"]


def test_cast_to_another_dtype_stays_and_int_identities_apply():
    g, b = new_graph()
    i = b.input("i", TensorType((3,), "i64"))
    g.outputs["y"] = b.op("add", i, b.const(0, "i64"))
    out = checked(simplify, g)
    assert out.outputs["y"] == i


# --- gradients of reads through indexes, joined back together ---------------------------------


def three_reads(x, b, order=(0, 1, 2)):
    """sum_i c_i * sum(x[:, i, :]^2) over the positions of axis 1, read in `order`."""
    total = None
    for i in order:
        part = b.op("scale", b.op("sum", b.op("square", b.op("index", x, axis=1, i=i))), c=i + 1.0)
        total = part if total is None else b.op("add", total, part)
    return total


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 0, 1)])
def test_index_gradients_join_into_one_concat(order):
    from dslc.passes import autodiff

    g, b = new_graph()
    x = b.param("x", f32(2, 3, 4))
    g.outputs["loss"] = three_reads(x, b, order)
    grad = autodiff(g)
    assert ops_of(grad).count("slice_grad") == 3
    out = checked(simplify, grad)
    ops = ops_of(out)
    # no zero-filled pieces added up: one concat of the three pieces
    assert "slice_grad" not in ops and ops.count("concat") == 1
    (cat,) = [n for n in out.nodes() if n.op == "concat"]
    assert cat.attrs["axis"] == 1 and out.grads["x"] == cat.id
    feeds = {"x": np.arange(24.0).reshape(2, 3, 4)}
    np.testing.assert_allclose(results(out, feeds)["grad:x"], results(grad, feeds)["grad:x"])


def test_pieces_that_do_not_touch_or_have_other_readers_stay():
    g, b = new_graph()
    x = b.param("x", f32(2, 3))
    lo = b.op("slice_grad", b.op("reshape", x, shape=(2, 3, 1)), shape=(2, 3, 4),
              axis_slices=((2, 0, 1, 1),))  # fmt: skip
    far = b.op("slice_grad", b.op("reshape", x, shape=(2, 3, 1)), shape=(2, 3, 4),
               axis_slices=((2, 2, 3, 1),))  # fmt: skip
    g.outputs["gap"] = b.op("add", lo, far)  # positions 0 and 2: not adjacent
    near = b.op("slice_grad", b.op("reshape", x, shape=(2, 3, 1)), shape=(2, 3, 4),
                axis_slices=((2, 1, 2, 1),))  # fmt: skip
    g.outputs["shared"] = b.op("add", near, b.op("slice_grad", b.op("reshape", x, shape=(2, 3, 1)),
                               shape=(2, 3, 4), axis_slices=((2, 2, 3, 1),)))  # fmt: skip
    g.outputs["near"] = near  # read by the sum and as an output
    out = checked(simplify, g)
    assert "concat" not in ops_of(out)
    feeds = {"x": np.arange(6.0).reshape(2, 3)}
    for k, v in results(g, feeds).items():
        np.testing.assert_array_equal(results(out, feeds)[k], v)


def test_a_concat_of_every_index_in_order_is_the_tensor():
    g, b = new_graph()
    x = b.input("x", f32(2, 3, 4))

    def piece(i):
        return b.op("reshape", b.op("index", x, axis=1, i=i), shape=(2, 1, 4))

    g.outputs["all"] = b.op("concat", piece(0), piece(1), piece(2), axis=1)
    g.outputs["swapped"] = b.op("concat", piece(1), piece(0), piece(2), axis=1)
    g.outputs["partial"] = b.op("concat", piece(0), piece(1), axis=1)
    out = checked(simplify, g)
    assert out.outputs["all"] == x
    assert out.outputs["swapped"] != x and out.outputs["partial"] != x
    feeds = {"x": np.arange(24.0).reshape(2, 3, 4)}
    for k, v in results(g, feeds).items():
        np.testing.assert_array_equal(results(out, feeds)[k], v)


def test_a_full_piece_is_its_operand_unless_it_is_reversed():
    g, b = new_graph()
    x = b.input("x", f32(2, 3))
    g.outputs["whole"] = b.op("slice_grad", x, shape=(2, 3), axis_slices=((1, 0, 3, 1),))
    g.outputs["reversed"] = b.op("slice_grad", x, shape=(2, 3), axis_slices=((1, None, None, -1),))
    out = checked(simplify, g)
    assert out.outputs["whole"] == x and ops_of(out) == ["slice_grad"]
