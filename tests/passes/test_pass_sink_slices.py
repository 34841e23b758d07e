"""sink_slices: a slice moves above the position-wise operations it cuts; values and
gradients stay those of the graph that computes every position."""

import os

import numpy as np
import pytest
from pass_helpers import checked, f64, new_graph, ops_of, same_results, with_params

from dslc.frontend import load_program
from dslc.ir.dims import Dim
from dslc.ir.types import TensorType
from dslc.passes import attention, autodiff, layer_norm, sink_slices

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RNG = np.random.default_rng(5)


def feeds_for(g, **given):
    return with_params(g, RNG, **given)


def same(before, after, f, env=None):
    same_results(before, after, f, env=env, rtol=1e-9)


def shapes_of(g, op):
    return sorted(tuple(int(s) for s in n.shape) for n in g.nodes() if n.op == op)


def block(b, x, d=6, extra=None):
    """dense -> tanh -> dense, a residual sum, layer norm: [B, T, d] -> [B, T, d]."""
    w1, w2 = b.param("w1", f64(d, 2 * d)), b.param("w2", f64(2 * d, d))
    bias = b.param("bias", f64(2 * d))
    h = b.op("tanh", b.op("add", b.op("matmul", x, w1), bias))
    y = b.op("add", x, b.op("matmul", h, w2))
    return b.op("layer_norm", y, b.param("gamma", f64(d)), b.param("beta", f64(d)), eps=1e-5)


def test_an_index_moves_to_the_top_of_a_position_wise_block():
    g, b = new_graph()
    x = b.input("x", f64(3, 5, 6))
    y = block(b, x)
    first = b.op("index", y, axis=1, i=0)  # [3, 6]: position 0 only
    g.outputs["loss"] = b.op("sum", b.op("square", first))
    out = checked(sink_slices, g)
    # every matmul, the tanh and the layer norm now work on one position
    assert shapes_of(out, "matmul") == [(3, 1, 6), (3, 1, 12)]
    assert shapes_of(out, "layer_norm") == [(3, 1, 6)]
    assert shapes_of(out, "slice") == [(3, 1, 6)]  # x itself, cut once for both readers
    assert [m["op"] for m in out.meta["sink_slices"]] == [
        "layer_norm", "add", "matmul", "tanh", "add", "matmul"
    ]  # fmt: skip
    f = feeds_for(g, x=RNG.standard_normal((3, 5, 6)))
    same(g, out, f)
    same(checked(autodiff, g), checked(autodiff, out), f)


@pytest.mark.parametrize("take", [("index", -1), ("slice", (1, 4, 2))])
def test_other_positions_and_strided_slices(take):
    g, b = new_graph()
    x = b.input("x", f64(2, 7, 6))
    y = block(b, x)
    if take[0] == "index":
        cut = b.op("index", y, axis=1, i=take[1])
    else:
        cut = b.op("slice", y, axis_slices=((1,) + take[1],))
    g.outputs["loss"] = b.op("sum", b.op("square", cut))
    out = checked(sink_slices, g)
    assert all(s[1] in (1, 2) for s in shapes_of(out, "matmul"))
    f = feeds_for(g, x=RNG.standard_normal((2, 7, 6)))
    same(g, out, f)
    same(checked(autodiff, g), checked(autodiff, out), f)


def test_it_stops_where_other_readers_need_every_position():
    g, b = new_graph()
    x = b.input("x", f64(3, 5, 6))
    y = block(b, x)
    g.outputs["first"] = b.op("index", y, axis=1, i=0)
    g.outputs["all"] = b.op("sum", y, axes=(1,))  # reads every position of y
    out = checked(sink_slices, g)
    assert ops_of(out) == ops_of(g) and out.meta["sink_slices"] == []


def test_two_readers_taking_the_same_positions_share_the_move():
    g, b = new_graph()
    x = b.input("x", f64(3, 5, 6))
    y = b.op("exp", x)
    a = b.op("index", y, axis=1, i=2)
    c = b.op("slice", y, axis_slices=((1, 2, 3, 1),))
    g.outputs["loss"] = b.op("add", b.op("sum", a), b.op("sum", c))
    out = checked(sink_slices, g)
    assert shapes_of(out, "exp") == [(3, 1, 6)]
    same(g, out, {"x": RNG.standard_normal((3, 5, 6))})


def test_columns_of_a_matmul_and_random_masks_keep_their_slice():
    g, b = new_graph()
    x = b.input("x", f64(4, 6))
    w = b.param("w", f64(6, 8))
    cols = b.op("slice", b.op("matmul", x, w), axis_slices=((1, 0, 2, 1),))  # columns
    d = b.op("mul", b.op("exp", x), b.op("dropout_mask", x, p=0.5))
    g.outputs["cols"] = cols
    g.outputs["row"] = b.op("index", d, axis=0, i=1)
    out = checked(sink_slices, g)
    assert shapes_of(out, "matmul") == [(4, 8)]
    assert shapes_of(out, "dropout_mask") == [(4, 6)]  # the same random numbers are drawn
    assert shapes_of(out, "exp") == [(1, 6)]
    assert [m["op"] for m in out.meta["sink_slices"]] == ["mul", "exp"]


def test_an_output_is_never_removed():
    g, b = new_graph()
    x = b.input("x", f64(3, 5))
    y = b.op("exp", x)
    g.outputs["y"] = y
    g.outputs["row"] = b.op("index", y, axis=0, i=0)
    out = checked(sink_slices, g)
    assert shapes_of(out, "exp") == [(3, 5)]


def test_broadcast_operands_stay_whole_and_aligned_ones_are_cut():
    g, b = new_graph()
    B = Dim.sym("B")
    x = b.input("x", TensorType((B, 5, 6), "f64"))
    pos = b.param("pos", f64(5, 6))  # aligned with x's positions: cut too
    scale = b.param("scale", f64(1, 6))  # broadcasts along the positions: stays whole
    y = b.op("mul", b.op("add", x, pos), scale)
    g.outputs["last"] = b.op("index", y, axis=1, i=-1)
    out = checked(sink_slices, g)
    cuts = [n for n in out.nodes() if n.op == "slice"]
    assert sorted(out.data(c.inputs[0])["attrs"]["name"] for c in cuts) == ["pos", "x"]
    f = feeds_for(g, x=RNG.standard_normal((2, 5, 6)))
    same(g, out, f, env={"B": 2})


def test_attention_cuts_its_queries_and_the_mask_rows():
    B, H, T, e = 2, 2, 5, 3
    g, b = new_graph()
    q, k, v = (b.input(n, f64(B, H, T, e)) for n in "qkv")
    causal = b.input("m", TensorType((T, T), "bool"))
    o = b.op("attention", q, k, v, causal, scale=0.5, fills=(-1e9,))  # [B, T, H, e]
    g.outputs["loss"] = b.op("sum", b.op("square", b.op("index", o, axis=1, i=3)))
    out = checked(sink_slices, g)
    node = next(n for n in out.nodes() if n.op == "attention")
    assert [tuple(out.data(i)["type"].shape) for i in node.inputs] == [
        (B, H, 1, e), (B, H, T, e), (B, H, T, e), (1, T)
    ]  # fmt: skip
    f = {n: RNG.standard_normal((B, H, T, e)) for n in "qkv"}
    f["m"] = np.tril(np.ones((T, T), bool))
    same(g, out, f)
    same(checked(autodiff, g), checked(autodiff, out), f)


def bert(drop):
    sets = {"vocab": 40, "seq": 6, "d": 8, "heads": 2, "layers": 2, "ffn": 16, "drop": drop}
    program = load_program(os.path.join(ROOT, "examples", "bert_classifier.nn"), sets)
    return program.train_graph


def bert_feeds(g):
    tokens = RNG.integers(1, 40, size=(3, 6))
    tokens[0, 4:] = 0  # padding
    return feeds_for(g, tokens=tokens, y=np.array([0, 1, 1]))


def test_bert_computes_one_row_of_its_last_layer_with_the_same_loss_and_gradients():
    g = layer_norm(attention(bert(0.0)))
    out = checked(sink_slices, g)
    last = [n for n in out.nodes() if n.scope.startswith("layers.1.") and n.op == "matmul"]
    rows = sorted(str(n.shape[1]) for n in last)
    assert rows == ["1", "1", "1", "1", "T", "T"]  # q, o, fc, proj on the [CLS] row; k and v on all
    f = bert_feeds(g)
    env = {"B": 3, "T": 6}
    same(checked(autodiff, g), checked(autodiff, out), f, env=env)


def test_bert_with_dropout_keeps_its_masks_and_values():
    g = layer_norm(attention(bert(0.1)))
    out = checked(sink_slices, g)
    masks = lambda gr: sorted(str(n.type) for n in gr.nodes() if n.op == "dropout_mask")  # noqa: E731
    assert masks(out) == masks(g)
    assert {m["op"] for m in out.meta["sink_slices"]} == {"layer_norm", "add", "mul"}
    f = bert_feeds(g)
    same(checked(autodiff, g), checked(autodiff, out), f, env={"B": 3, "T": 6})
