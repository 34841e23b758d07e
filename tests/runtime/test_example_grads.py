"""Gradient parity of every example model with PyTorch autograd, in float64.

For each example, the training graph after dslc's whole pipeline (autodiff, then the
optimising passes) runs in the executor on a fixed small batch; PyTorch evaluates the same
lowered forward graph op by op (`torch_graph.py`, an independent mapping of each primitive to
its PyTorch function) and differentiates it with autograd. The loss and every parameter
gradient must agree. Dropout masks are fixed inputs shared by both. For the MLP, the CNN
and the LSTM generator, hand-written PyTorch models (nn.Linear, nn.Conv2d, nn.LSTM, ...)
give a second reference that does not read dslc's graph at all.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from dslc.runtime.executor import Executor  # noqa: E402
from dslc.runtime.model import prepare_train  # noqa: E402
from dslc.runtime.schedule import bind_env  # noqa: E402
from torch_graph import dropout_masks, fix_dropout_masks, torch_forward  # noqa: E402

from dslc.frontend import load_program  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RTOL = 1e-6


def _tokens(rng, vocab, shape, low=0):
    return rng.integers(low, vocab, shape).astype(np.int64)


def _batch(name: str, rng) -> dict:
    """Feeds of a small fixed batch for each example (at its own sizes)."""
    if name == "linear_regression":
        x = rng.standard_normal((8, 1))
        return {"x": x, "y": 1.5 * x - 0.5 + 0.01 * rng.standard_normal((8, 1))}
    if name == "mlp_digits":
        return {"x": rng.random((6, 64)), "y": _tokens(rng, 10, 6)}
    if name == "cnn_digits":
        return {"image": rng.random((2, 1, 28, 28)), "y": _tokens(rng, 10, 2)}
    if name == "lstm_sentiment":
        tokens = _tokens(rng, 10000, (2, 100), low=1)
        tokens[0, :40] = 0  # pre-padding, as the data has
        return {"tokens": tokens, "y": np.array([0, 1])}
    if name in ("lstm_textgen", "gpt_char"):
        return {"tokens": _tokens(rng, 65, (2, 12)), "targets": _tokens(rng, 65, (2, 12))}
    if name == "bert_classifier":
        tokens = _tokens(rng, 30522, (2, 10), low=1)
        tokens[1, 6:] = 0  # padding that the attention mask must hide
        return {"tokens": tokens, "y": np.array([1, 0])}
    raise KeyError(name)


NAMES = sorted(p.stem for p in EXAMPLES.glob("*.nn"))


def test_every_example_is_checked():
    assert sorted(p.stem for p in EXAMPLES.glob("*.nn")) == sorted(NAMES)


def dslc_run(name: str, seed: int = 0):
    """(forward graph, feeds, env, dslc loss, dslc grads, float64 params) of one example."""
    rng = np.random.default_rng(seed)
    feeds = _batch(name, rng)
    program = load_program(str(EXAMPLES / f"{name}.nn"))
    forward, masks = fix_dropout_masks(program.train_graph)
    env = bind_env(forward, feeds, [n for n in feeds])
    feeds = {**feeds, **dropout_masks(masks, env, rng)}
    exe = Executor(prepare_train(forward), float_dtype="f64", seed=seed)
    out = exe.run(feeds)
    assert out["loss"].dtype == np.float64
    grads = {n: exe.grads[n].copy() for n in exe.graph.grads}
    params = {n: exe.params[n].copy() for n in exe.params}
    return forward, feeds, env, float(out["loss"]), grads, params, masks


def assert_grad_close(name, ours, theirs, scale):
    """Equal to `RTOL`, elements far below the model's largest gradient `scale` (round-off
    of gradients that are zero in exact arithmetic, like an attention key's bias) to
    `RTOL * 1e-3 * scale`."""
    np.testing.assert_allclose(ours, theirs, rtol=RTOL, atol=RTOL * 1e-3 * scale, err_msg=name)


def largest(grads) -> float:
    return max(float(np.abs(g).max()) for g in grads)


@pytest.mark.parametrize("name", NAMES)
def test_loss_and_gradients_match_torch_autograd(name):
    forward, feeds, env, loss, grads, params, _ = dslc_run(name)
    tp = {n: torch.tensor(v, requires_grad=True) for n, v in params.items()}
    vals = torch_forward(forward, feeds, tp, env)
    t_loss = vals[forward.outputs["loss"]]
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=RTOL)
    trained = set(forward.trainable_params())
    assert set(grads) == trained, "every trainable parameter gets a gradient"
    assert len(trained) == len(params)
    assert all(tp[n].grad is not None for n in trained)
    scale = largest(tp[n].grad.numpy() for n in trained)
    assert scale > 0
    for n in trained:
        assert_grad_close(n, grads[n], tp[n].grad.numpy(), scale)


# --- hand-written PyTorch models ---------------------------------------------------------------


def _t(a):
    return torch.tensor(a, requires_grad=True)


def test_mlp_matches_a_handwritten_torch_model():
    _, feeds, _, loss, grads, p, _ = dslc_run("mlp_digits")
    scale = largest(grads.values())
    w1, b1, w2, b2 = (_t(p[n]) for n in ("h.W", "h.b", "logits.W", "logits.b"))
    l1, l2 = torch.nn.Linear(64, 128).double(), torch.nn.Linear(128, 10).double()
    with torch.no_grad():
        l1.weight.copy_(w1.T)
        l1.bias.copy_(b1)
        l2.weight.copy_(w2.T)
        l2.bias.copy_(b2)
    logits = l2(torch.relu(l1(torch.tensor(feeds["x"]))))
    t_loss = torch.nn.functional.cross_entropy(logits, torch.tensor(feeds["y"]))
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=RTOL)
    assert_grad_close("h.W", grads["h.W"], l1.weight.grad.numpy().T, scale)
    assert_grad_close("h.b", grads["h.b"], l1.bias.grad.numpy(), scale)
    assert_grad_close("logits.W", grads["logits.W"], l2.weight.grad.numpy().T, scale)
    assert_grad_close("logits.b", grads["logits.b"], l2.bias.grad.numpy(), scale)


def test_cnn_matches_a_handwritten_torch_model():
    _, feeds, _, loss, grads, p, masks = dslc_run("cnn_digits")
    scale = largest(grads.values())
    nn = torch.nn
    conv1, conv2 = nn.Conv2d(1, 32, 3).double(), nn.Conv2d(32, 64, 3).double()
    fc1, fc2 = nn.Linear(64 * 12 * 12, 128).double(), nn.Linear(128, 10).double()
    with torch.no_grad():
        for mod, prefix, transpose in ((conv1, "conv1", False), (conv2, "conv2", False),
                                       (fc1, "fc1", True), (fc2, "fc2", True)):  # fmt: skip
            w = torch.tensor(p[f"{prefix}.W"])
            mod.weight.copy_(w.T if transpose else w)
            mod.bias.copy_(torch.tensor(p[f"{prefix}.b"]))
    assert list(masks) == ["mask0", "mask1"]
    x = torch.tensor(feeds["image"])
    h = torch.relu(conv2(torch.relu(conv1(x))))
    h = torch.nn.functional.max_pool2d(h, 2) * torch.tensor(feeds["mask0"])
    h = torch.relu(fc1(h.flatten(1))) * torch.tensor(feeds["mask1"])
    t_loss = torch.nn.functional.cross_entropy(fc2(h), torch.tensor(feeds["y"]))
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=RTOL)
    for mod, prefix, transpose in ((conv1, "conv1", False), (conv2, "conv2", False),
                                   (fc1, "fc1", True), (fc2, "fc2", True)):  # fmt: skip
        g = mod.weight.grad.numpy()
        assert_grad_close(f"{prefix}.W", grads[f"{prefix}.W"], g.T if transpose else g, scale)
        assert_grad_close(f"{prefix}.b", grads[f"{prefix}.b"], mod.bias.grad.numpy(), scale)


def test_lstm_textgen_matches_torch_nn_lstm():
    _, feeds, _, loss, grads, p, _ = dslc_run("lstm_textgen")
    scale = largest(grads.values())
    nn = torch.nn
    emb = nn.Embedding(65, 64).double()
    lstm = nn.LSTM(64, 256, num_layers=2, batch_first=True).double()
    head = nn.Linear(256, 65).double()
    with torch.no_grad():
        emb.weight.copy_(torch.tensor(p["embed.table"]))
        for k in range(2):
            getattr(lstm, f"weight_ih_l{k}").copy_(torch.tensor(p[f"lstm.{k}.W"]).T)
            getattr(lstm, f"weight_hh_l{k}").copy_(torch.tensor(p[f"lstm.{k}.U"]).T)
            getattr(lstm, f"bias_ih_l{k}").copy_(torch.tensor(p[f"lstm.{k}.b_ih"]))
            getattr(lstm, f"bias_hh_l{k}").copy_(torch.tensor(p[f"lstm.{k}.b_hh"]))
        head.weight.copy_(torch.tensor(p["head.W"]).T)
        head.bias.copy_(torch.tensor(p["head.b"]))
    h, _ = lstm(emb(torch.tensor(feeds["tokens"])))
    logits = head(h)
    t_loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, 65), torch.tensor(feeds["targets"]).reshape(-1)
    )
    t_loss.backward()
    assert loss == pytest.approx(t_loss.item(), rel=RTOL)
    assert_grad_close("embed.table", grads["embed.table"], emb.weight.grad.numpy(), scale)
    for k in range(2):
        pairs = (("W", "weight_ih", True), ("U", "weight_hh", True),
                 ("b_ih", "bias_ih", False), ("b_hh", "bias_hh", False))  # fmt: skip
        for ours, theirs, tr in pairs:
            g = getattr(lstm, f"{theirs}_l{k}").grad.numpy()
            assert_grad_close(
                f"lstm.{k}.{ours}", grads[f"lstm.{k}.{ours}"], g.T if tr else g, scale
            )
    assert_grad_close("head.W", grads["head.W"], head.weight.grad.numpy().T, scale)
    assert_grad_close("head.b", grads["head.b"], head.bias.grad.numpy(), scale)
