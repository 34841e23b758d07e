"""Small graphs whose fused groups exercise each loop pattern and operand layout."""

from __future__ import annotations

import numpy as np

from dslc.ir.builder import Builder
from dslc.ir.dims import Dim
from dslc.ir.graph import Graph
from dslc.ir.types import TensorType
from dslc.passes.fuse import fuse

N = Dim.sym("N")
T = Dim.sym("T")


def fused(build) -> Graph:
    """A graph made by `build(b)` (which returns {output name: node}), after fusion."""
    g = Graph()
    b = Builder(g)
    for name, nid in build(b).items():
        g.outputs[name] = nid
    return fuse(g)


def fused_nodes(g: Graph) -> list[int]:
    return [n for n in g.topo_order() if g.data(n)["op"] == "fused"]


def x_in(b, shape=(N, 8), name="x", dtype="f32"):
    return b.input(name, TensorType(shape, dtype))


def softmax_masked(b):
    """Causal attention scores: scale, a [T, T] mask broadcast over [N, 2, T, T], softmax."""
    s = x_in(b, (N, 2, T, T), "s")
    mask = x_in(b, (T, T), "mask", "bool")
    z = b.op("where", mask, b.op("scale", s, c=0.25), b.const(-1e9))
    return {"p": b.op("softmax", z, axis=-1)}


def layer_norm(b):
    x = x_in(b, (N, T, 8))
    gamma, beta = x_in(b, (8,), "gamma"), x_in(b, (8,), "beta")
    mu = b.op("mean", x, axes=(-1,), keepdims=True)
    var = b.op("var", x, axes=(-1,), keepdims=True)
    xhat = b.op("mul", b.op("sub", x, mu), b.op("rsqrt", b.op("add_scalar", var, c=1e-5)))
    return {"y": b.op("add", b.op("mul", xhat, gamma), beta)}


def unary_chain(b):
    """Every transcendental of the scalar language, in one elementwise group."""
    x = x_in(b)
    parts = [b.op("gelu", x), b.op("gelu", x, approximate="tanh"), b.op("sigmoid", x),
             b.op("softplus", x), b.op("tanh", x), b.op("erf", x), b.op("exp", x),
             b.op("leaky_relu", x, alpha=0.1), b.op("clip", x, lo=-0.5, hi=0.5),
             b.op("log1p", b.op("abs", x)), b.op("sign", x), b.op("sin", x),
             b.op("cos", x)]  # fmt: skip
    total = parts[0]
    for p in parts[1:]:
        total = b.op("add", total, p)
    return {"y": total}


def outer_inner(b):
    """A per-row [N, 1] and a per-column [8] operand against a full [N, 8] one."""
    x = x_in(b)
    r = x_in(b, (N, 1), "r")
    c = x_in(b, (8,), "c")
    return {"y": b.op("relu", b.op("add", b.op("mul", x, r), c))}


def column_sum(b):
    """sum over the leading axis of a product: a `col` reduction (bias-gradient shape)."""
    x, y = x_in(b), x_in(b, name="y")
    return {"s": b.op("sum", b.op("mul", x, y), axes=(0,))}


def relu_grad(b):
    x, g = x_in(b), x_in(b, name="g")
    return {"dx": b.op("where", b.op("gt", x, b.const(0.0)), g, b.const(0.0))}


def log_softmax_rows(b):
    x = x_in(b)
    lse = b.op("logsumexp", x, axes=(-1,), keepdims=True)
    return {"ls": b.op("log_softmax", x, axis=-1), "lse": b.op("exp", lse),
            "mx": b.op("neg", b.op("max", x, axes=(-1,))),
            "mn": b.op("neg", b.op("min", x, axes=(-1,)))}  # fmt: skip


def middle_axis(b):
    """A reduction over a middle axis: neither pattern the generator knows."""
    x = x_in(b, (N, 8, 4))
    return {"s": b.op("sum", b.op("exp", x), axes=(1,))}


def bias_nchw(b):
    """A convolution's bias and ReLU: a [C, 1, 1] bias broadcast over [N, C, T, 3], a map
    over rows of (N, C) with a strided per-row load."""
    x = x_in(b, (N, 4, T, 3))
    bias = x_in(b, (4, 1, 1), "bias")
    return {"y": b.op("relu", b.op("add", x, bias))}


def integer_compare(b):
    i = x_in(b, (N, 8), "i", "i64")
    j = x_in(b, (8,), "j", "i64")
    return {"y": b.op("cast", b.op("ge", i, j), dtype="f32")}


GRAPHS = {
    "softmax_masked": softmax_masked,
    "layer_norm": layer_norm,
    "unary_chain": unary_chain,
    "outer_inner": outer_inner,
    "column_sum": column_sum,
    "relu_grad": relu_grad,
    "log_softmax_rows": log_softmax_rows,
    "middle_axis": middle_axis,
    "integer_compare": integer_compare,
    "bias_nchw": bias_nchw,
}


def feeds_for(g: Graph, n=5, t=6, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    env = {"N": n, "T": t}
    out = {}
    for name, nid in g.inputs.items():
        ty = g.data(nid)["type"]
        shape = tuple(d.evaluate(env) for d in ty.shape)
        if ty.dtype == "bool":
            out[name] = np.tril(np.ones(shape, bool)) if name == "mask" else rng.random(shape) > 0.5
        elif ty.dtype[0] == "i":
            out[name] = rng.integers(-3, 4, shape)
        else:
            out[name] = (rng.standard_normal(shape) * 2).astype(np.float32)
    return out
