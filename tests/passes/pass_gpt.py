"""A GPT-style training graph built with the Builder (pre-LayerNorm, causal attention, GELU MLP).

Stands in for `examples/gpt_char.nn` until the front end lowers it; used to check that the
passes keep values and that fusion removes enough kernels.
"""

import numpy as np
from pass_helpers import new_graph, same_results

from dslc.ir.dims import Dim
from dslc.ir.types import TensorType
from dslc.passes import autodiff, run_pipeline


def ln(b, x, name, d, f):
    g_ = b.param(f"{name}.g", f(d))
    b_ = b.param(f"{name}.b", f(d))
    mu = b.op("mean", x, axes=(-1,), keepdims=True)
    inv = b.op("rsqrt", b.op("add_scalar", b.op("var", x, axes=(-1,), keepdims=True), c=1e-5))
    return b.op("add", b.op("mul", b.op("mul", b.op("sub", x, mu), inv), g_), b_)


def dense(b, x, name, i, o, f):
    w = b.param(f"{name}.W", f(i, o))
    bb = b.param(f"{name}.b", f(o))
    return b.op("add", b.op("matmul", x, w), bb)


def gpt(layers=2, V=65, T=16, d=32, H=4, B=None, dropout=True, dtype="f32"):
    """Loss and logits of a small GPT; `B` is symbolic unless given."""
    g, b = new_graph()
    B = B or Dim.sym("B")

    def f(*shape):
        return TensorType(shape, dtype)

    idx = b.input("x", TensorType((B, T), "i64"))
    y = b.input("y", TensorType((B, T), "i64"), role="label")
    wte = b.param("wte", f(V, d))
    wpe = b.param("wpe", f(T, d))
    x = b.op("add", b.op("gather", wte, idx), wpe)
    hd = d // H
    mask = b.op(
        "le",
        b.op("reshape", b.op("arange", n=T), shape=(1, T)),
        b.op("reshape", b.op("arange", n=T), shape=(T, 1)),
    )
    neg = b.const(-1e9, dtype)
    for l in range(layers):
        h = ln(b, x, f"l{l}.ln1", d, f)
        qkv = []
        for nm in "qkv":
            t = dense(b, h, f"l{l}.{nm}", d, d, f)
            t = b.op("transpose", b.op("reshape", t, shape=(B, T, H, hd)), perm=(0, 2, 1, 3))
            qkv.append(t)
        q, k, v = qkv
        s = b.op(
            "scale", b.op("matmul", q, b.op("transpose", k, perm=(0, 1, 3, 2))), c=1 / np.sqrt(hd)
        )
        s = b.op("where", mask, s, b.op("broadcast_to", neg, shape=(B, H, T, T)))
        p = b.op("softmax", s, axis=-1)
        if dropout:
            p = b.op("mul", p, b.op("dropout_mask", p, p=0.1))
        o = b.op(
            "reshape", b.op("transpose", b.op("matmul", p, v), perm=(0, 2, 1, 3)), shape=(B, T, d)
        )
        o = dense(b, o, f"l{l}.proj", d, d, f)
        if dropout:
            o = b.op("mul", o, b.op("dropout_mask", o, p=0.1))
        x = b.op("add", x, o)
        h = ln(b, x, f"l{l}.ln2", d, f)
        h = b.op("gelu", dense(b, h, f"l{l}.fc", d, 4 * d, f), approximate="tanh")
        h = dense(b, h, f"l{l}.fc2", 4 * d, d, f)
        if dropout:
            h = b.op("mul", h, b.op("dropout_mask", h, p=0.1))
        x = b.op("add", x, h)
    x = ln(b, x, "lnf", d, f)
    logits = dense(b, x, "head", d, V, f)
    lp = b.op("log_softmax", logits, axis=-1)
    g.outputs["logits"] = logits
    g.outputs["loss"] = b.op("neg", b.op("mean", b.op("take_along", lp, y, axis=-1)))
    return g


def gpt_feeds(graph, rng, batch=2, T=16, V=65):
    """Feeds for `gpt(...)`'s graph: small random parameters, tokens and targets."""
    feeds = {
        name: rng.normal(size=[int(s) for s in graph.data(nid)["type"].shape]) * 0.3
        for name, nid in graph.params.items()
    }
    feeds["x"] = rng.integers(0, V, size=(batch, T))
    feeds["y"] = rng.integers(0, V, size=(batch, T))
    return feeds


def pipeline_keeps_values(graph, rng):
    """The pipeline up to dce gives `graph`'s loss and gradients (B = 2)."""
    f = gpt_feeds(graph, rng)
    same_results(autodiff(graph), run_pipeline(graph, until="dce"), f, env={"B": 2}, rtol=1e-9)
