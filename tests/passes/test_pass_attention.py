"""attention: q k^T, scale, masks, softmax and the product with v become one node; the values
and gradients stay those of the chain it replaces."""

import numpy as np
import pytest
from pass_gpt import gpt, pipeline_keeps_values
from pass_helpers import checked, f64, new_graph, ops_of
from pass_helpers import same_results as same

from dslc.ir.dims import Dim
from dslc.ir.types import TensorType
from dslc.passes import attention, autodiff, simplify

B, H, T, D = 2, 2, 4, 3
RNG = np.random.default_rng(5)


def chain(masks=1, dropout=False, s_len=T, e=D, extra_reader=False):
    """softmax(where(..., q @ k^T * 0.5, fill)) @ v over [B, H, T, D] inputs, summed to a loss."""
    g, b = new_graph()
    q = b.param("q", f64(B, H, T, D))  # params: autodiff gives their gradients
    k = b.param("k", f64(B, H, s_len, D))
    v = b.param("v", f64(B, H, s_len, e))
    s = b.op("scale", b.op("matmul", q, b.op("transpose", k, perm=(0, 1, 3, 2))), c=0.5)
    scores = s
    if masks >= 1:
        causal = b.input("causal", TensorType((T, s_len), "bool"))
        s = b.op("where", causal, s, b.const(-1e9, "f64"))
    if masks >= 2:
        pad = b.input("pad", TensorType((B, 1, 1, s_len), "bool"))
        s = b.op(
            "where", pad, s, b.op("broadcast_to", b.const(-3.0, "f64"), shape=(B, H, T, s_len))
        )
    p = b.op("softmax", s, axis=-1)
    if dropout:
        p = b.op("mul", p, b.input("keep", f64(B, H, T, s_len)))
    y = b.op("matmul", p, v)
    loss = b.op("sum", b.op("square", b.op("transpose", y, perm=(0, 2, 1, 3))))
    if extra_reader:
        loss = b.op("add", loss, b.op("sum", scores))
    g.outputs["loss"] = loss
    g.outputs["y"] = y
    return g


def feeds(s_len=T, e=D):
    return {
        "q": RNG.standard_normal((B, H, T, D)),
        "k": RNG.standard_normal((B, H, s_len, D)),
        "v": RNG.standard_normal((B, H, s_len, e)),
        "causal": np.tril(np.ones((T, s_len), bool)),
        "pad": RNG.random((B, 1, 1, s_len)) < 0.7,
        "keep": RNG.random((B, H, T, s_len)),
    }


@pytest.mark.parametrize("masks", [0, 1, 2])
def test_the_chain_becomes_one_node_with_the_same_values_and_gradients(masks):
    g = chain(masks)
    out = checked(attention, g)
    ops = ops_of(out)
    assert ops.count("attention") == 1
    assert not {"softmax", "where", "scale", "matmul"} & set(ops)
    node = next(n for n in out.nodes() if n.op == "attention")
    assert node.attrs["scale"] == 0.5 and len(node.attrs["fills"]) == masks
    assert out.meta["attention_report"] == []
    f = feeds()
    same(g, out, f)
    # the gradients through attention_grad equal those of the unfused chain's backward
    same(checked(autodiff, g), checked(autodiff, out), f)
    assert "attention_grad" in ops_of(autodiff(out))


def test_cross_attention_is_fused_and_differentiated_through_primitives():
    g = chain(masks=1, s_len=5, e=2)
    out = checked(attention, g)
    assert ops_of(out).count("attention") == 1
    grad = checked(autodiff, out)
    assert "attention_grad" not in ops_of(grad)  # it packs dq, dk, dv: one shape only
    f = feeds(s_len=5, e=2)
    same(checked(autodiff, g), grad, f)


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        ({"dropout": True}, "dropout"),
        ({"extra_reader": True}, "read elsewhere"),
    ],
)
def test_a_chain_read_from_the_middle_is_left_alone_and_reported(kw, reason):
    g = chain(**kw)
    out = checked(attention, g)
    assert "attention" not in ops_of(out) and "softmax" in ops_of(out)
    (entry,) = out.meta["attention_report"]
    assert reason in entry["reason"]


def test_the_gpt_graph_gets_one_attention_per_layer_and_keeps_its_values():
    g = gpt(layers=2, dropout=False, dtype="f64")
    out = checked(attention, g)
    assert ops_of(out).count("attention") == 2 and "softmax" not in ops_of(out)
    # after autodiff and simplify the heads merge from attention's layout without a transpose
    merged = simplify(autodiff(out))
    for n in merged.nodes():
        if n.op == "attention":
            assert {merged.data(u)["op"] for u in merged.users(n.id)} <= {"reshape"}
    pipeline_keeps_values(g, RNG)


def test_symbolic_batch_is_kept():
    g = gpt(layers=1, dropout=False)
    out = attention(g)
    node = next(n for n in out.nodes() if n.op == "attention")
    assert node.shape[0] == Dim.sym("B")
