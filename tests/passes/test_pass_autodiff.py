"""autodiff: gradients against central finite differences in float64, and what gets a gradient."""

import numpy as np
import pytest
from pass_helpers import checked, evaluate, f64, new_graph, numeric_grad, results

from dslc.errors import InternalError, Span
from dslc.ir.types import TensorType
from dslc.passes import autodiff

RNG = np.random.default_rng(0)


def grad_check(g, feeds, rtol=1e-6, atol=1e-8):
    """autodiff's gradient of every param equals finite differences."""
    out = checked(autodiff, g)
    got = results(out, feeds)
    for name in out.grads:
        want = numeric_grad(g, feeds, name)
        np.testing.assert_allclose(got[f"grad:{name}"], want, rtol=rtol, atol=atol, err_msg=name)
    return out


def test_scalar_chain():
    g, b = new_graph()
    x = b.param("x", f64())
    y = b.op("mul", b.op("exp", x), b.op("sin", x))  # e^x sin x
    g.outputs["loss"] = b.op("add", y, b.op("square", x))
    out = grad_check(g, {"x": 0.7})
    assert set(out.grads) == {"x"}


def test_mlp_with_broadcast_bias_and_mean_loss():
    g, b = new_graph()
    x = b.input("x", f64(4, 3))
    w = b.param("w", f64(3, 5))
    bias = b.param("b", f64(5))
    h = b.op("tanh", b.op("add", b.op("matmul", x, w), bias))  # bias broadcast over rows
    g.outputs["loss"] = b.op("mean", b.op("square", h))
    feeds = {"x": RNG.normal(size=(4, 3)), "w": RNG.normal(size=(3, 5)), "b": RNG.normal(size=5)}
    out = grad_check(g, feeds)
    assert set(out.grads) == {"w", "b"}
    assert "sum_to" in {n.op for n in out.nodes()}  # the bias gradient is reduced to [5]


def test_softmax_cross_entropy_and_reused_value():
    g, b = new_graph()
    x = b.input("x", f64(3, 4))
    labels = b.input("y", TensorType((3,), "i64"), role="label")
    w = b.param("w", f64(4, 4))
    logits = b.op("matmul", x, w)
    z = b.op("mul", logits, logits)  # logits used twice: gradients must accumulate
    lp = b.op("log_softmax", b.op("add", z, logits), axis=-1)
    nll = b.op("neg", b.op("take_along", lp, labels, axis=-1))
    g.outputs["loss"] = b.op("mean", nll)
    feeds = {"x": RNG.normal(size=(3, 4)), "y": np.array([0, 3, 1]), "w": RNG.normal(size=(4, 4))}
    grad_check(g, feeds)


def test_layer_norm_block():
    g, b = new_graph()
    x = b.input("x", f64(2, 5))
    gamma = b.param("gamma", f64(5))
    beta = b.param("beta", f64(5))
    mu = b.op("mean", x, axes=(-1,), keepdims=True)
    xc = b.op("sub", x, mu)
    inv = b.op("rsqrt", b.op("add_scalar", b.op("var", x, axes=(-1,), keepdims=True), c=1e-5))
    y = b.op("add", b.op("mul", b.op("mul", xc, inv), gamma), beta)
    g.outputs["loss"] = b.op("sum", b.op("mul", y, b.op("sigmoid", y)))
    feeds = {"x": RNG.normal(size=(2, 5)), "gamma": RNG.normal(size=5), "beta": RNG.normal(size=5)}
    grad_check(g, feeds)


def test_only_needed_gradients():
    g, b = new_graph()
    x = b.input("x", f64(3))
    used = b.param("used", f64(3))
    unused = b.param("unused", f64(3))
    frozen = b.param("frozen", f64(3), frozen=True)
    state = b.param("state", f64(3), trainable=False)
    ints = b.param("ints", TensorType((3,), "i64"))
    other = b.op("exp", unused)
    g.outputs["other"] = other  # not on the loss path
    s = b.op("add", b.op("add", b.op("mul", x, used), frozen), state)
    s = b.op("add", s, b.op("cast", ints, dtype="f64"))
    g.outputs["loss"] = b.op("sum", s)
    out = grad_check(
        g,
        {
            "x": RNG.normal(size=3),
            "used": np.ones(3),
            "unused": np.ones(3),
            "frozen": np.ones(3),
            "state": np.ones(3),
            "ints": np.arange(3),
        },
    )
    assert set(out.grads) == {"used"}
    # nothing was differentiated off the path from `used` to the loss
    backward = [n for n in out.nodes() if n.id not in g]
    assert all(n.op != "exp" for n in backward)


def test_non_differentiable_path_gives_no_gradient():
    g, b = new_graph()
    w = b.param("w", f64(4))
    k = b.op("argmax", w, axis=0)
    hot = b.op("one_hot", k, depth=4)
    g.outputs["loss"] = b.op("sum", b.op("cast", hot, dtype="f64"))
    out = checked(autodiff, g)
    assert out.grads == {}


def test_backward_nodes_inherit_span_and_scope():
    g, b = new_graph()
    span = Span("m.nn", 3, 5)
    w = b.param("w", f64(3))
    with b.at(span=span, scope="layers.0"):
        y = b.op("tanh", w)
    with b.at(span=Span("m.nn", 9, 1), scope="loss"):
        g.outputs["loss"] = b.op("sum", y)
    out = checked(autodiff, g)
    backward = [n for n in out.nodes() if n.id not in g]
    from_tanh = [n for n in backward if n.span == span]
    assert from_tanh and all(n.scope == "layers.0" for n in from_tanh)
    assert all(n.span is not None for n in backward)


def test_no_loss_is_a_no_op():
    g, b = new_graph()
    w = b.param("w", f64(3))
    g.outputs["y"] = b.op("exp", w)
    out = checked(autodiff, g)
    assert len(out) == len(g) and out.grads == {}


def test_non_scalar_loss_is_an_internal_error():
    g, b = new_graph()
    w = b.param("w", f64(3))
    g.outputs["loss"] = b.op("exp", w)
    with pytest.raises(InternalError, match="float scalar"):
        autodiff(g)


def test_seed_value_and_gradient_values():
    g, b = new_graph()
    w = b.param("w", f64(3))
    g.outputs["loss"] = b.op("sum", b.op("scale", w, c=3.0))
    out = autodiff(g)
    vals = evaluate(out, {"w": np.arange(3.0)})
    np.testing.assert_allclose(vals[out.grads["w"]], [3.0, 3.0, 3.0])


def test_gpt_block_directional_derivative():
    """Along a random direction in parameter space, grads . u equals (L(p+eu) - L(p-eu)) / 2e."""
    from pass_gpt import gpt

    g = gpt(layers=1, V=11, T=5, d=8, H=2, B=2, dropout=False, dtype="f64")
    out = autodiff(g)
    params = {
        n: RNG.normal(size=[int(s) for s in g.data(i)["type"].shape]) * 0.5
        for n, i in g.params.items()
    }
    data = {"x": RNG.integers(0, 11, size=(2, 5)), "y": RNG.integers(0, 11, size=(2, 5))}
    u = {n: RNG.normal(size=p.shape) for n, p in params.items()}
    got = results(out, {**params, **data})
    assert set(out.grads) == set(params)
    slope = sum(float(np.sum(got[f"grad:{n}"] * u[n])) for n in params)
    eps = 1e-6
    loss = g.outputs["loss"]
    plus = evaluate(g, {**data, **{n: p + eps * u[n] for n, p in params.items()}})[loss]
    minus = evaluate(g, {**data, **{n: p - eps * u[n] for n, p in params.items()}})[loss]
    np.testing.assert_allclose(slope, (plus - minus) / (2 * eps), rtol=1e-6)


def test_a_node_without_a_rule_fails_loudly():
    from dslc.passes import fuse

    g, b = new_graph()
    w = b.param("w", f64(3))
    g.outputs["loss"] = b.op("sum", b.op("exp", b.op("tanh", w)))
    with pytest.raises(InternalError, match="no gradient rule for `fused`"):
        autodiff(fuse(g))
