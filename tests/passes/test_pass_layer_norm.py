"""layer_norm: mean, var, rsqrt, the product with gamma and the sum with beta become one node;
the values and gradients stay those of the chain it replaces."""

import numpy as np
import pytest
from pass_gpt import gpt, ln, pipeline_keeps_values
from pass_helpers import checked, f64, new_graph, ops_of
from pass_helpers import same_results as same

from dslc.passes import autodiff, layer_norm

RNG = np.random.default_rng(11)


def ln_graph(extra_reader=None, swapped=False):
    g, b = new_graph()
    x = b.input("x", f64(3, 4, 6))
    w = b.param("w", f64(6, 6))
    h = b.op("matmul", x, w)
    if swapped:  # gamma * xhat + beta written the other way round
        gm, bt = b.param("g", f64(6)), b.param("b", f64(6))
        mu = b.op("mean", h, axes=(-1,), keepdims=True)
        inv = b.op("rsqrt", b.op("add_scalar", b.op("var", h, axes=(-1,), keepdims=True), c=1e-3))
        y = b.op("add", bt, b.op("mul", gm, b.op("mul", inv, b.op("sub", h, mu))))
    else:
        y = ln(b, h, "n", 6, lambda *s: f64(*s))
    loss = b.op("sum", b.op("square", b.op("tanh", y)))
    if extra_reader is not None:
        node = next(n for n in g.topo_order() if g.data(n)["op"] == extra_reader)
        loss = b.op("add", loss, b.op("sum", node))
    g.outputs["loss"] = loss
    return g


def feeds(g):
    f = {"x": RNG.standard_normal((3, 4, 6)) * 2 + 1}
    for name, nid in g.params.items():
        f[name] = RNG.standard_normal([int(s) for s in g.data(nid)["type"].shape])
    return f


@pytest.mark.parametrize("swapped", [False, True])
def test_the_chain_becomes_one_node_with_the_same_values_and_gradients(swapped):
    g = ln_graph(swapped=swapped)
    out = checked(layer_norm, g)
    ops = ops_of(out)
    assert ops.count("layer_norm") == 1
    assert not {"mean", "var", "rsqrt", "sub"} & set(ops)
    node = next(n for n in out.nodes() if n.op == "layer_norm")
    assert node.attrs["eps"] == (1e-3 if swapped else 1e-5)
    f = feeds(g)
    same(g, out, f)
    grad = checked(autodiff, out)
    assert "layer_norm_grad" in ops_of(grad)
    same(checked(autodiff, g), grad, f)


@pytest.mark.parametrize("reader", ["sub", "rsqrt", "mul"])
def test_a_chain_read_from_the_middle_is_left_alone_and_reported(reader):
    g = ln_graph(extra_reader=reader)
    out = checked(layer_norm, g)
    assert "layer_norm" not in ops_of(out)
    assert len(out.meta["layer_norm_report"]) == 1


def test_a_mean_that_is_no_layer_norm_is_not_reported():
    g, b = new_graph()
    x = b.input("x", f64(3, 4))
    g.outputs["y"] = b.op("mean", x, axes=(-1,), keepdims=True)
    out = checked(layer_norm, g)
    assert out.meta["layer_norm_report"] == [] and ops_of(out) == ["mean"]


def test_the_gpt_graph_keeps_its_values_with_every_layer_norm_replaced():
    g = gpt(layers=2, dropout=False, dtype="f64")
    out = checked(layer_norm, g)
    assert ops_of(out).count("layer_norm") == 5 and "var" not in ops_of(out)
    pipeline_keeps_values(g, RNG)
