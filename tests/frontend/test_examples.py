"""Every example parses, lowers in both modes, passes the IR verifier, and has the parameter
count of the same model written in PyTorch."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from dslc.frontend import load_program
from dslc.passes.verify import verify

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
NAMES = [
    "linear_regression",
    "mlp_digits",
    "cnn_digits",
    "lstm_sentiment",
    "lstm_textgen",
    "gpt_char",
    "bert_classifier",
]


def trainable_count(graph) -> int:
    total = 0
    for nid in graph.params.values():
        d = graph.data(nid)
        if d["attrs"]["trainable"]:
            total += math.prod(int(s) for s in d["type"].shape)
    return total


def ops(graph) -> set[str]:
    return {n.op for n in graph.nodes()}


@pytest.fixture(scope="module")
def programs():
    return {name: load_program(str(EXAMPLES / f"{name}.nn")) for name in NAMES}


def test_every_example_is_tested():
    assert sorted(p.stem for p in EXAMPLES.glob("*.nn")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_example_lowers(programs, name):
    p = programs[name]
    verify(p.train_graph)
    verify(p.infer_graph)
    assert "loss" in p.train_graph.outputs
    assert "loss" not in p.infer_graph.outputs
    assert p.infer_graph.outputs, "an inference graph needs an output"
    assert p.train.dataset in ("digits", "regression", "sentiment", "tiny_text")
    assert set(p.train_graph.params) == set(p.infer_graph.params)
    assert not any(
        d["role"] == "label"
        for d in (p.infer_graph.data(i)["attrs"] for i in p.infer_graph.inputs.values())
    )
    for node in p.train_graph.nodes():
        assert node.span is not None, node
        assert node.span.line >= 1
    assert len(p.model_hash) == 64


def test_mlp_graph(programs):
    g = programs["mlp_digits"].train_graph
    assert ops(g) == {"input", "param", "matmul", "add", "relu", "softmax", "log_softmax",
                      "take_along", "neg", "mean"}  # fmt: skip
    assert {n: str(g.data(i)["type"]) for n, i in g.params.items()} == {
        "h.W": "f32[64, 128]", "h.b": "f32[128]",
        "logits.W": "f32[128, 10]", "logits.b": "f32[10]",
    }  # fmt: skip
    w = g.data(g.params["h.W"])["attrs"]
    assert w["init"] == "uniform" and w["init_args"] == (-0.125, 0.125)
    assert str(g.data(g.inputs["x"])["type"]) == "f32[N, 64]"
    assert str(g.data(g.outputs["probs"])["type"]) == "f32[N, 10]"
    assert g.data(g.params["h.W"])["scope"] == "h"


def test_cnn_graph(programs):
    p = programs["cnn_digits"]
    assert {"conv2d", "max_pool2d", "dropout_mask", "reshape"} <= ops(p.train_graph)
    assert "dropout_mask" not in ops(p.infer_graph)
    assert str(p.train_graph.data(p.train_graph.params["fc1.W"])["type"]) == "f32[9216, 128]"
    small = load_program(str(EXAMPLES / "cnn_digits.nn"), {"size": 8})
    assert str(small.train_graph.data(small.train_graph.params["fc1.W"])["type"]) == "f32[256, 128]"


def test_gpt_parameter_names(programs):
    g = programs["gpt_char"].train_graph
    names = set(g.params)
    for i in range(4):
        for part in ("attn.q.W", "attn.k.b", "attn.o.W", "ln1.gamma", "mlp.fc.W", "mlp.proj.b"):
            assert f"layers.{i}.{part}" in names
    assert "head.W" in names and "head.b" not in names
    assert {"wte.table", "wpe.table", "ln_f.gamma"} <= names
    attn = [n for n in g.nodes() if n.scope == "layers.2.attn" and n.op == "softmax"]
    assert len(attn) == 1


def test_lstm_uses_scan(programs):
    assert "lstm_scan" in ops(programs["lstm_sentiment"].train_graph)
    g = programs["lstm_textgen"].train_graph
    assert {"lstm.0.W", "lstm.1.W", "lstm.1.b_hh"} <= set(g.params)
    assert str(g.data(g.params["lstm.0.W"])["type"]) == "f32[64, 1024]"


def test_gpt_with_12_layers_lowers_only_what_is_asked():
    # how long this takes is measured by bench/compile_time.py, not here
    p = load_program(str(EXAMPLES / "gpt_char.nn"), {"layers": 12}, mode="infer")
    assert p._graphs["train"] is None  # the training graph waits until it is asked for
    assert len([n for n in p.infer_graph.params if n.endswith("attn.q.W")]) == 12
    assert sorted(p.train_graph.params) == sorted(p.infer_graph.params)


def test_the_prelude_parses_only_the_layer_files_a_model_uses():
    from dslc.frontend import resolve

    resolve.prelude.cache_clear()
    load_program(str(EXAMPLES / "mlp_digits.nn"))
    parsed = {os.path.basename(f) for f in resolve.prelude().parsed}
    assert "recurrent.nn" not in parsed and "core.nn" in parsed


def test_the_prelude_index_names_every_built_in_block():
    from dslc.frontend import resolve
    from dslc.frontend.parse import parse_text

    pre = resolve.prelude()
    for path, text in resolve.prelude_sources().items():
        for b in parse_text(text, path).blocks:
            assert pre.index[b.name] == path


# --- parameter counts against the same models in PyTorch --------------------------------------


def torch_models():
    torch = pytest.importorskip("torch")
    nn = torch.nn

    class GPTBlock(nn.Module):
        def __init__(self, d, heads):
            super().__init__()
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.attn = nn.MultiheadAttention(d, heads)
            self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))

    def gpt(vocab=65, ctx=128, d=128, heads=4, layers=4):
        return nn.ModuleList(
            [nn.Embedding(vocab, d), nn.Embedding(ctx, d)]
            + [GPTBlock(d, heads) for _ in range(layers)]
            + [nn.LayerNorm(d), nn.Linear(d, vocab, bias=False)]
        )

    def bert(vocab=30522, seq=128, d=256, heads=4, layers=4, ffn=1024, classes=2):
        return nn.ModuleList(
            [nn.Embedding(vocab, d), nn.Embedding(seq, d), nn.Embedding(2, d), nn.LayerNorm(d)]
            + [nn.TransformerEncoderLayer(d, heads, ffn) for _ in range(layers)]
            + [nn.Linear(d, d), nn.Linear(d, classes)]
        )

    return {
        "linear_regression": nn.Linear(1, 1),
        "mlp_digits": nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10)),
        "cnn_digits": nn.Sequential(
            nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3), nn.Linear(9216, 128), nn.Linear(128, 10)
        ),
        "lstm_sentiment": nn.ModuleList(
            [nn.Embedding(10000, 128), nn.LSTM(128, 128, batch_first=True), nn.Linear(128, 2)]
        ),
        "lstm_textgen": nn.ModuleList(
            [nn.Embedding(65, 64), nn.LSTM(64, 256, num_layers=2), nn.Linear(256, 65)]
        ),
        "gpt_char": gpt(),
        "bert_classifier": bert(),
    }


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_matches_pytorch(programs, name):
    model = torch_models()[name]
    expected = sum(p.numel() for p in model.parameters())
    assert trainable_count(programs[name].train_graph) == expected


def test_gru_rnn_counts_match_pytorch(nn_file):
    torch = pytest.importorskip("torch")
    path = nn_file(
        """
        model R {
            input x: f32[B, T, 12]
            a = x |> gru(20)
            b = a |> rnn(7)
            output b
        }
        """
    )
    p = load_program(path)
    expected = sum(
        q.numel() for m in (torch.nn.GRU(12, 20), torch.nn.RNN(20, 7)) for q in m.parameters()
    )
    assert trainable_count(p.train_graph) == expected


def test_batch_norm_counts_match_pytorch(nn_file):
    torch = pytest.importorskip("torch")
    path = nn_file(
        """
        model B {
            input x: f32[N, 3, 8, 8]
            h = x |> conv2d(6, kernel = 3, padding = "same") |> batch_norm |> relu
            output y = h |> flatten |> dense(5) |> batch_norm
        }
        """
    )
    g = load_program(path).train_graph
    m = torch.nn.ModuleList(
        [torch.nn.Conv2d(3, 6, 3, padding=1), torch.nn.BatchNorm2d(6),
         torch.nn.Linear(384, 5), torch.nn.BatchNorm1d(5)]
    )  # fmt: skip
    assert trainable_count(g) == sum(q.numel() for q in m.parameters())
    buffers = [n for n, i in g.params.items() if not g.data(i)["attrs"]["trainable"]]
    assert len(buffers) == sum(1 for n, _ in m.named_buffers() if "running" in n)
