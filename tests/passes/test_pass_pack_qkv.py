"""pack_qkv: self-attention's q, k, v projections become one matmul; values and gradients
stay those of the three projections."""

import os

import numpy as np
import pytest
from pass_helpers import checked, f64, new_graph, ops_of, same_results, with_params

from dslc.frontend import load_program
from dslc.passes import attention, autodiff, layer_norm, pack_qkv, simplify, sink_slices

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RNG = np.random.default_rng(11)


def feeds_for(g, **given):
    return with_params(g, RNG, **given)


def example(name, **sets):
    program = load_program(os.path.join(ROOT, "examples", f"{name}.nn"), sets)
    return sink_slices(layer_norm(attention(program.train_graph)))


def weight_shapes(g):
    """Shapes of the right operands of the matmuls that read a layer norm (the projections)."""
    return sorted(
        tuple(int(s) for s in g.data(n.inputs[1])["type"].shape)
        for n in g.nodes()
        if n.op == "matmul" and g.data(n.inputs[0])["op"] == "layer_norm"
    )


def test_gpt_projects_q_k_v_with_one_matmul_and_keeps_values_and_gradients():
    g = example("gpt_char", d=8, heads=2, layers=2, ctx=6, drop=0.0)
    out = checked(pack_qkv, g)
    assert len(out.meta["pack_qkv"]) == 2
    # per layer: one [8, 24] projection (q, k, v) and the MLP's [8, 32]; the head's [8, 65]
    assert weight_shapes(out) == [(8, 24), (8, 24), (8, 32), (8, 32), (8, 65)]
    assert weight_shapes(g) == [(8, 8)] * 6 + [(8, 32), (8, 32), (8, 65)]
    for n in out.nodes():
        if n.op == "attention":
            srcs = {out.data(out.data(t)["inputs"][0])["inputs"][0] for t in n.inputs[:3]}
            assert len(srcs) == 1  # q, k, v are views of one [B, T, 3, heads, hd] tensor
    f = feeds_for(g, tokens=RNG.integers(0, 65, size=(3, 6)), targets=RNG.integers(0, 65, (3, 6)))
    env = {"B": 3, "T": 6}
    same_results(g, out, f, env=env, rtol=1e-9)
    before, after = checked(autodiff, g), checked(autodiff, out)
    same_results(before, after, f, env=env, rtol=1e-9)
    # the gradient of the packed projection is attention_grad's result, not pieces added up
    simple = checked(simplify, after)
    layers = [n.op for n in simple.nodes() if n.scope.startswith("layers.")]
    assert "slice_grad" not in layers
    assert layers.count("concat") == 4  # the packed weights and biases of the two layers


def test_bert_packs_every_layer_but_the_one_whose_queries_are_cut():
    g = example("bert_classifier", vocab=40, seq=6, d=8, heads=2, layers=2, ffn=16, drop=0.0)
    out = checked(pack_qkv, g)
    assert [e["scope"] for e in out.meta["pack_qkv"]] == ["layers.0.attn"]
    tokens = RNG.integers(1, 40, size=(3, 6))
    tokens[0, 4:] = 0  # padding
    f = feeds_for(g, tokens=tokens, y=np.array([0, 1, 1]))
    env = {"B": 3, "T": 6}
    same_results(checked(autodiff, g), checked(autodiff, out), f, env=env, rtol=1e-9)


def self_attention(b, x, d=4, heads=2, bias=True, shared=False):
    """q, k, v = dense(x) each, split into heads, attention; returns (result, q's matmul)."""
    bsz, t = (int(s) for s in b.type_of(x).shape[:2])
    parts = []
    for name in "qkv":
        w = b.param(f"{name}.W", f64(d, d))
        y = mm = b.op("matmul", x, w)
        if bias:
            y = b.op("add", mm, b.param(f"{name}.b", f64(d)))
        r = b.op("reshape", y, shape=(bsz, t, heads, d // heads))
        parts.append((b.op("transpose", r, perm=(0, 2, 1, 3)), mm))
    att = b.op("attention", *(p for p, _ in parts), scale=0.5)
    return att, parts[0][1]


@pytest.mark.parametrize("bias", [True, False])
def test_a_builder_graph_with_or_without_biases(bias):
    g, b = new_graph()
    x = b.input("x", f64(2, 3, 4))
    att, _ = self_attention(b, x, bias=bias)
    g.outputs["loss"] = b.op("sum", b.op("square", att))
    out = checked(pack_qkv, g)
    ops = ops_of(out)
    assert ops.count("matmul") == 1 and ops.count("concat") == (2 if bias else 1)
    f = feeds_for(g, x=RNG.standard_normal((2, 3, 4)))
    same_results(g, out, f, rtol=1e-9)
    same_results(checked(autodiff, g), checked(autodiff, out), f, rtol=1e-9)


def test_a_projection_read_elsewhere_or_of_another_input_is_left():
    g, b = new_graph()
    x = b.input("x", f64(2, 3, 4))
    att, q_mm = self_attention(b, x)
    g.outputs["y"] = att
    g.outputs["q"] = b.op("relu", q_mm)  # q's projection has another reader
    out = checked(pack_qkv, g)
    assert out.meta["pack_qkv"] == [] and ops_of(out).count("matmul") == 3

    g, b = new_graph()
    x, z = b.input("x", f64(2, 3, 4)), b.input("z", f64(2, 3, 4))
    parts = []
    for name, src in zip("qkv", (x, z, z)):  # cross-attention: q from x, k and v from z
        y = b.op("matmul", src, b.param(f"{name}.W", f64(4, 4)))
        parts.append(b.op("transpose", b.op("reshape", y, shape=(2, 3, 2, 2)), perm=(0, 2, 1, 3)))
    g.outputs["y"] = b.op("attention", *parts, scale=0.5)
    out = checked(pack_qkv, g)
    assert out.meta["pack_qkv"] == [] and ops_of(out).count("matmul") == 3
