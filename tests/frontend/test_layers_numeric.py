"""The built-in layers compute what their PyTorch counterparts compute (forward, float64).

Parameters of dslc are copied into the torch modules (dense/recurrent weights transposed:
dslc keeps W as [in, out]); outputs are compared on random inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

from dslc.frontend import load_program

torch = pytest.importorskip("torch")
F = torch.nn.functional
Executor = pytest.importorskip("dslc.runtime.executor").Executor


def run(nn_file, src: str, feeds: dict, mode: str = "train", seed: int = 0):
    p = load_program(nn_file(src))
    g = p.train_graph if mode == "train" else p.infer_graph
    ex = Executor(g, float_dtype="f64", seed=seed)
    out = ex.run(feeds)
    return out, {k: np.array(v) for k, v in ex.params.items()}, ex


def t(a):
    return torch.tensor(np.asarray(a), dtype=torch.float64)


RNG = np.random.default_rng(0)


def test_dense_and_conv(nn_file):
    x = RNG.normal(size=(2, 3, 7, 7))
    out, P, _ = run(
        nn_file,
        """
        model M {
            input x: f32[N, 3, 7, 7]
            c = x |> conv2d(4, kernel = 3, stride = 2, padding = 1)
            output c
            output y = c |> flatten |> dense(5)
        }
        """,
        {"x": x},
    )
    ref_c = F.conv2d(t(x), t(P["c.W"]), t(P["c.b"]), stride=2, padding=1)
    np.testing.assert_allclose(out["c"], ref_c.numpy(), rtol=1e-9, atol=1e-12)
    ref_y = ref_c.flatten(1) @ t(P["y.W"]) + t(P["y.b"])
    np.testing.assert_allclose(out["y"], ref_y.numpy(), rtol=1e-9, atol=1e-12)


def test_norms(nn_file):
    x = RNG.normal(size=(4, 3, 5, 5)) * 3 + 1
    src = """
    model M {
        input x: f32[N, 3, 5, 5]
        output b = x |> batch_norm
        output l = x |> layer_norm
    }
    """
    out, P, ex = run(nn_file, src, {"x": x})
    bn = torch.nn.BatchNorm2d(3).double()
    ref = bn(t(x))
    np.testing.assert_allclose(out["b"], ref.detach().numpy(), rtol=1e-9, atol=1e-12)
    # the running statistics moved exactly as PyTorch's (unbiased variance, momentum 0.1)
    np.testing.assert_allclose(ex.params["b.running_mean"], bn.running_mean.numpy(), rtol=1e-9)
    np.testing.assert_allclose(ex.params["b.running_var"], bn.running_var.numpy(), rtol=1e-9)
    ref_l = F.layer_norm(t(x), (5,), eps=1e-5)
    np.testing.assert_allclose(out["l"], ref_l.numpy(), rtol=1e-9, atol=1e-12)
    out, _, _ = run(nn_file, src, {"x": x}, mode="infer")
    np.testing.assert_allclose(out["b"], x / np.sqrt(1 + 1e-5), rtol=1e-9)  # fresh running stats


def test_attention_matches_torch(nn_file):
    x = RNG.normal(size=(2, 5, 8))
    mask = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=bool)
    out, P, _ = run(
        nn_file,
        """
        model M {
            input x: f32[B, T, 8]
            input keep: bool[B, T]
            output c = x |> attention(2, causal = true)
            output m = x |> attention(2, mask = keep)
        }
        """,
        {"x": x, "keep": mask},
    )
    for name in ("c", "m"):
        mha = torch.nn.MultiheadAttention(8, 2, batch_first=True).double()
        w = np.concatenate([P[f"{name}.q.W"], P[f"{name}.k.W"], P[f"{name}.v.W"]], axis=1).T
        b = np.concatenate([P[f"{name}.q.b"], P[f"{name}.k.b"], P[f"{name}.v.b"]])
        with torch.no_grad():
            mha.in_proj_weight.copy_(t(w))
            mha.in_proj_bias.copy_(t(b))
            mha.out_proj.weight.copy_(t(P[f"{name}.o.W"].T))
            mha.out_proj.bias.copy_(t(P[f"{name}.o.b"]))
        if name == "c":
            causal = torch.triu(torch.ones(5, 5, dtype=torch.bool), 1)
            ref, _ = mha(t(x), t(x), t(x), attn_mask=causal, need_weights=False)
        else:
            ref, _ = mha(t(x), t(x), t(x), key_padding_mask=torch.tensor(~mask), need_weights=False)
        np.testing.assert_allclose(out[name], ref.detach().numpy(), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_recurrent_matches_torch(nn_file, kind):
    x = RNG.normal(size=(3, 4, 5))
    out, P, _ = run(
        nn_file,
        f"model M {{\n input x: f32[B, T, 5]\n output h = x |> {kind}(6)\n}}\n",
        {"x": x},
    )
    mod = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind]
    m = mod(5, 6, batch_first=True).double()
    with torch.no_grad():
        m.weight_ih_l0.copy_(t(P["h.W"].T))
        m.weight_hh_l0.copy_(t(P["h.U"].T))
        m.bias_ih_l0.copy_(t(P["h.b_ih"]))
        m.bias_hh_l0.copy_(t(P["h.b_hh"]))
    ref, _ = m(t(x))
    np.testing.assert_allclose(out["h"], ref.detach().numpy(), rtol=1e-8, atol=1e-10)


def test_losses_match_torch(nn_file):
    logits = RNG.normal(size=(4, 3, 5))
    labels = RNG.integers(0, 5, size=(4, 3))
    probs = RNG.dirichlet(np.ones(5), size=(4, 3))
    target = RNG.uniform(size=(4, 3, 5))
    out, _, _ = run(
        nn_file,
        """
        model M {
            input z: f32[B, T, 5]
            input y: i64[B, T]
            input p: f32[B, T, 5]
            input q: f32[B, T, 5]
            output ce = cross_entropy(z, y)
            output ls = cross_entropy(z, y, label_smoothing = 0.1)
            output soft = cross_entropy(z, p, label_smoothing = 0.2)
            output bce = binary_cross_entropy(z, q)
            output sq = mse(z, q)
        }
        """,
        {"z": logits, "y": labels, "p": probs, "q": target},
    )
    z, y = t(logits).reshape(-1, 5), torch.tensor(labels).reshape(-1)
    p = t(probs).reshape(-1, 5)
    refs = {
        "ce": F.cross_entropy(z, y),
        "ls": F.cross_entropy(z, y, label_smoothing=0.1),
        "soft": F.cross_entropy(z, p, label_smoothing=0.2),
        "bce": F.binary_cross_entropy_with_logits(t(logits), t(target)),
        "sq": F.mse_loss(t(logits), t(target)),
    }
    for k, ref in refs.items():
        np.testing.assert_allclose(out[k], ref.item(), rtol=1e-10, err_msg=k)


def test_dropout_masks(nn_file):
    src = """
    model M {
        input x: f32[B, T, C]
        output a = x |> dropout(0.5)
        output s = x |> spatial_dropout(0.5)
    }
    """
    x = np.ones((2, 50, 8))
    out, _, _ = run(nn_file, src, {"x": x})
    a, s = out["a"], out["s"]
    assert set(np.unique(a)) <= {0.0, 2.0} and 0 < (a == 0).mean() < 1
    assert (s == s[:, :1, :]).all()  # one decision per (sample, channel), for every step
    out, _, _ = run(nn_file, src, {"x": x}, mode="infer")
    np.testing.assert_array_equal(out["a"], x)
    np.testing.assert_array_equal(out["s"], x)
