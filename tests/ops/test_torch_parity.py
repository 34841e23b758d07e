"""Forward values (and backward, through the grad rules) of a representative subset vs PyTorch."""

from __future__ import annotations

import numpy as np
import pytest
from ops_eval import evaluate

from dslc.ir.builder import Builder
from dslc.ir.graph import Graph
from dslc.ir.types import TensorType, dtype_name
from dslc.ops import get_primitive

torch = pytest.importorskip("torch")
F = torch.nn.functional
RNG = np.random.default_rng(0)


def run(name, arrays, grad_out=None, **attrs):
    """Apply primitive `name`; with `grad_out`, also the operand gradients from its grad rule."""
    graph = Graph()
    b = Builder(graph)
    ins = [b.input(f"x{i}", TensorType(a.shape, dtype_name(a.dtype))) for i, a in enumerate(arrays)]
    y = b.op(name, *ins, **attrs)
    feeds = {f"x{i}": a for i, a in enumerate(arrays)}
    grads = []
    if grad_out is not None:
        g = b.input("g", graph.node(y).type)
        feeds["g"] = grad_out
        grads = get_primitive(name).grad(b, graph.node(y), g)
    vals = evaluate(graph, feeds)
    return vals[y], [None if gi is None else vals[gi] for gi in grads]


def t(a, grad=False):
    return torch.tensor(a, requires_grad=grad)


def randn(*shape):
    return RNG.standard_normal(shape)


@pytest.mark.parametrize(
    "attrs",
    [
        {},
        {"stride": 2, "padding": 1},
        {"stride": (1, 2), "padding": (2, 0), "dilation": (2, 1)},
        {"padding": 1, "groups": 2},
    ],
)
def test_conv2d_and_its_gradients(attrs):
    groups = attrs.get("groups", 1)
    x, w = randn(3, 4, 9, 8), randn(6, 4 // groups, 3, 3)
    tx, tw = t(x, True), t(w, True)
    ty = F.conv2d(tx, tw, **attrs)
    g = randn(*ty.shape)
    ty.backward(t(g))
    y, (dx, dw) = run("conv2d", [x, w], g, **attrs)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dw, tw.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "attrs",
    [{"kernel": 2}, {"kernel": 3, "stride": 2, "padding": 1}, {"kernel": (2, 3), "stride": 1}],
)
def test_pools_and_their_gradients(attrs):
    x = randn(2, 3, 7, 8)
    torch_kw = {"kernel_size": attrs["kernel"], "stride": attrs.get("stride"),
                "padding": attrs.get("padding", 0)}  # fmt: skip
    for name, fn in (("max_pool2d", F.max_pool2d), ("avg_pool2d", F.avg_pool2d)):
        tx = t(x, True)
        ty = fn(tx, **torch_kw)
        g = randn(*ty.shape)
        ty.backward(t(g))
        y, (dx,) = run(name, [x], g, **attrs)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-12, atol=1e-14, err_msg=name)


def test_max_pool_routes_ties_to_the_first_maximum():
    x = np.zeros((1, 1, 2, 2))
    _, (dx,) = run("max_pool2d", [x], np.ones((1, 1, 1, 1)), kernel=2)
    assert dx.reshape(-1).tolist() == [1.0, 0.0, 0.0, 0.0]


def _scan_case(kind, bsz=3, steps=5, n_in=4, h=6):
    mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
    torch.manual_seed(0)
    m = mod(n_in, h, batch_first=True).double()
    x = randn(bsz, steps, n_in)
    h0 = randn(bsz, h)
    w_ih = m.weight_ih_l0.detach().numpy()
    b_ih, b_hh = m.bias_ih_l0.detach().numpy(), m.bias_hh_l0.detach().numpy()
    u = m.weight_hh_l0.detach().numpy().T.copy()
    xw = x @ w_ih.T + b_ih + (0 if kind == "gru" else b_hh)
    return m, x, h0, xw, u, b_hh


def test_lstm_scan_matches_torch_lstm_forward_and_backward():
    m, x, h0, xw, u, _ = _scan_case("lstm")
    c0 = randn(*h0.shape)
    tx, th0, tc0 = t(x, True), t(h0[None], True), t(c0[None], True)
    out, (hn, cn) = m(tx, (th0, tc0))
    g = randn(*out.shape)
    (out * t(g)).sum().backward()
    gy = np.zeros(out.shape[:2] + (2,) + out.shape[2:])
    gy[:, :, 0] = g
    y, (dxw, du, dh0, dc0) = run("lstm_scan", [xw, u, h0, c0], gy)
    np.testing.assert_allclose(y[:, :, 0], out.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(y[:, -1, 1], cn[0].detach().numpy(), rtol=1e-10, atol=1e-12)
    w_ih = m.weight_ih_l0.detach().numpy()
    np.testing.assert_allclose(dxw @ w_ih, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(du.T, m.weight_hh_l0.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dh0, th0.grad[0].numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dc0, tc0.grad[0].numpy(), rtol=1e-9, atol=1e-12)


def test_gru_scan_matches_torch_gru_forward_and_backward():
    m, x, h0, xw, u, b_hh = _scan_case("gru")
    tx, th0 = t(x, True), t(h0[None], True)
    out, _ = m(tx, th0)
    g = randn(*out.shape)
    (out * t(g)).sum().backward()
    y, (dxw, du, dbu, dh0) = run("gru_scan", [xw, u, b_hh, h0], g)
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-10, atol=1e-12)
    w_ih = m.weight_ih_l0.detach().numpy()
    np.testing.assert_allclose(dxw @ w_ih, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dxw.sum((0, 1)), m.bias_ih_l0.grad.numpy(), rtol=1e-9)
    np.testing.assert_allclose(du.T, m.weight_hh_l0.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dbu, m.bias_hh_l0.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dh0, th0.grad[0].numpy(), rtol=1e-9, atol=1e-12)


def test_rnn_scan_matches_torch_rnn_forward_and_backward():
    m, x, h0, xw, u, _ = _scan_case("rnn")
    tx, th0 = t(x, True), t(h0[None], True)
    out, _ = m(tx, th0)
    g = randn(*out.shape)
    (out * t(g)).sum().backward()
    y, (dxw, du, dh0) = run("rnn_scan", [xw, u, h0], g)
    np.testing.assert_allclose(y, out.detach().numpy(), rtol=1e-10, atol=1e-12)
    w_ih = m.weight_ih_l0.detach().numpy()
    np.testing.assert_allclose(dxw @ w_ih, tx.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(du.T, m.weight_hh_l0.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dh0, th0.grad[0].numpy(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_gelu_matches_torch(approximate, dtype):
    x = np.concatenate([np.linspace(-10, 10, 2001), randn(1000) * 3]).astype(dtype)
    tx = t(x, True)
    ty = F.gelu(tx, approximate=approximate)
    ty.backward(torch.ones_like(ty))
    y, (dx,) = run("gelu", [x], np.ones_like(x), approximate=approximate)
    tol = 1e-14 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=tol, atol=tol)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=tol * 10, atol=tol * 10)


def test_log_softmax_softmax_logsumexp_match_torch_and_are_stable():
    x = randn(4, 7) * 30
    x[0, 0] = 1e4  # would overflow without the max subtracted
    tx = t(x)
    y, _ = run("log_softmax", [x], axis=1)
    np.testing.assert_allclose(y, F.log_softmax(tx, dim=1).numpy(), rtol=1e-12, atol=1e-12)
    y, _ = run("softmax", [x], axis=0)
    np.testing.assert_allclose(y, F.softmax(tx, dim=0).numpy(), rtol=1e-12, atol=1e-300)
    y, _ = run("logsumexp", [x], axes=(1,))
    np.testing.assert_allclose(y, torch.logsumexp(tx, dim=1).numpy(), rtol=1e-12)


def test_sigmoid_and_softplus_are_stable_for_large_inputs():
    x = np.array([-1000.0, -40.0, 0.0, 40.0, 1000.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y, _ = run("sigmoid", [x])
        s, _ = run("softplus", [x])
    np.testing.assert_allclose(y, torch.sigmoid(t(x)).numpy(), rtol=1e-15)
    np.testing.assert_allclose(s, F.softplus(t(x)).numpy(), rtol=1e-15)


def test_erf_matches_torch_and_math_erf():
    import math

    x = np.concatenate([np.linspace(-7, 7, 14001), [0.0, 0.46875, -0.46875, 4.0, 30.0, -np.inf]])
    y, _ = run("erf", [x])
    want = np.array([math.erf(v) for v in x])
    np.testing.assert_allclose(y, want, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(y, torch.erf(t(x)).numpy(), rtol=1e-14, atol=1e-16)


def test_float32_erf_is_close_to_torch():
    x = np.concatenate([np.linspace(-6, 6, 12001), randn(1000) * 2]).astype(np.float32)
    y, _ = run("erf", [x])
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, torch.erf(t(x)).numpy(), rtol=0, atol=5e-7)


@pytest.mark.parametrize("cross", [False, True])
def test_attention_and_its_gradients_match_torch_sdpa(cross):
    bsz, heads, n, d = 2, 3, 5, 4
    s, e = (7, 2) if cross else (n, d)
    q, k, v = randn(bsz, heads, n, d), randn(bsz, heads, s, d), randn(bsz, heads, s, e)
    causal = np.tril(np.ones((n, s), bool))  # no row fully masked
    pad = np.ones((bsz, 1, 1, s), bool)
    pad[1, ..., 3:] = False
    tq, tk, tv = t(q, True), t(k, True), t(v, True)
    keep = torch.tensor(causal) & torch.tensor(pad)
    ty = F.scaled_dot_product_attention(tq, tk, tv, attn_mask=keep, scale=0.4)
    g = randn(bsz, n, heads, e)
    ty.backward(t(g).transpose(1, 2))
    y, grads = run("attention", [q, k, v, causal, pad], g, scale=0.4, fills=(-1e9, -1e9))
    np.testing.assert_allclose(y, ty.detach().transpose(1, 2).numpy(), rtol=1e-10, atol=1e-12)
    assert grads[3:] == [None, None]
    for got, want in zip(grads, (tq.grad, tk.grad, tv.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-9, atol=1e-11)


def test_layer_norm_and_its_gradients_match_torch():
    x, gamma, beta = randn(3, 4, 6) * 2 + 1, randn(6), randn(6)
    tx, tg, tb = t(x, True), t(gamma, True), t(beta, True)
    ty = F.layer_norm(tx, (6,), tg, tb, eps=1e-4)
    g = randn(3, 4, 6)
    ty.backward(t(g))
    y, grads = run("layer_norm", [x, gamma, beta], g, eps=1e-4)
    np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-10, atol=1e-12)
    for got, want in zip(grads, (tx.grad, tg.grad, tb.grad)):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-9, atol=1e-11)
