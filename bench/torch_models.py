"""The benchmark models in PyTorch, layer for layer the architectures of the .nn files.

Each builder takes the model's hyper-parameters (the .nn defaults unless overridden, the same
`--set` values dslc gets) and returns an nn.Module whose forward takes the workload's inputs
as keyword arguments and returns the logits. Parameter counts equal dslc's (a test checks).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, inputs=784, hidden=256, classes=10, **_):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(inputs, hidden), nn.ReLU(),
            nn.Linear(hidden, hidden), nn.ReLU(),
            nn.Linear(hidden, classes),
        )  # fmt: skip

    def forward(self, x):
        return self.net(x)


class CNN(nn.Module):
    def __init__(self, size=28, classes=10, **_):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 64, 3)
        side = (size - 4) // 2
        self.fc1 = nn.Linear(64 * side * side, 128)
        self.fc2 = nn.Linear(128, classes)

    def forward(self, image):
        h = F.relu(self.conv2(F.relu(self.conv1(image))))
        h = torch.flatten(F.max_pool2d(h, 2), 1)
        return self.fc2(F.relu(self.fc1(h)))


class LSTMClassifier(nn.Module):
    def __init__(self, vocab=10000, embed=128, units=128, classes=2, **_):
        super().__init__()
        self.embed = nn.Embedding(vocab, embed)
        self.lstm = nn.LSTM(embed, units, batch_first=True)
        self.fc = nn.Linear(units, classes)

    def forward(self, tokens):
        h, _ = self.lstm(self.embed(tokens))
        return self.fc(h[:, -1])


class SelfAttention(nn.Module):
    """q, k, v and output projections with biases, as dslc's `attention` layer."""

    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x, causal=False, keep=None):
        b, t, d = x.shape

        def split(z):
            return z.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        mask = None if keep is None else keep[:, None, None, :]
        y = F.scaled_dot_product_attention(
            split(self.q(x)), split(self.k(x)), split(self.v(x)), attn_mask=mask,
            is_causal=causal,
        )  # fmt: skip
        return self.o(y.transpose(1, 2).reshape(b, t, d))


class GPTBlock(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = SelfAttention(d, heads)
        self.fc, self.proj = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        x = x + self.attn(self.ln1(x), causal=True)
        return x + self.proj(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, vocab=65, ctx=128, d=128, heads=4, layers=4, **_):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Parameter(torch.randn(ctx, d))
        self.blocks = nn.ModuleList(GPTBlock(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, vocab, bias=False)

    def forward(self, tokens):
        h = self.wte(tokens) + self.wpe[: tokens.shape[1]]
        for blk in self.blocks:
            h = blk(h)
        return self.head(self.ln_f(h))


class EncoderBlock(nn.Module):
    def __init__(self, d, heads, ffn):
        super().__init__()
        self.attn = SelfAttention(d, heads)
        self.ln1, self.ln2 = nn.LayerNorm(d, eps=1e-12), nn.LayerNorm(d, eps=1e-12)
        self.fc, self.proj = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, x, keep):
        x = self.ln1(x + self.attn(x, keep=keep))
        return self.ln2(x + self.proj(F.gelu(self.fc(x))))


class BertClassifier(nn.Module):
    def __init__(self, vocab=30522, seq=128, d=256, heads=4, layers=4, ffn=1024, segments=2,
                 classes=2, **_):  # fmt: skip
        super().__init__()
        self.tok = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(seq, d))
        self.seg = nn.Embedding(segments, d)
        self.emb_ln = nn.LayerNorm(d, eps=1e-12)
        self.blocks = nn.ModuleList(EncoderBlock(d, heads, ffn) for _ in range(layers))
        self.pooler = nn.Linear(d, d)
        self.classifier = nn.Linear(d, classes)

    def forward(self, tokens):
        keep = tokens != 0
        h = self.tok(tokens) + self.pos[: tokens.shape[1]] + self.seg(torch.zeros_like(tokens))
        h = self.emb_ln(h)
        for blk in self.blocks:
            h = blk(h, keep)
        return self.classifier(torch.tanh(self.pooler(h[:, 0])))


BUILDERS = {"mlp": MLP, "cnn": CNN, "lstm_cls": LSTMClassifier, "gpt_char": GPT,
            "bert_cls": BertClassifier}  # fmt: skip


def build(name: str, sets: dict) -> nn.Module:
    """The torch model of workload `name` with the hyper-parameters `sets`."""
    return BUILDERS[name](**sets)


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def loss_fn(logits, labels):
    """Mean cross-entropy over every position (logits [..., C], labels [...])."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def make_optimizer(name: str, params, args: dict):
    args = dict(args)
    if name == "sgd":
        return torch.optim.SGD(params, **args)
    if name == "adam":
        return torch.optim.Adam(params, **args)
    if name == "adamw":
        return torch.optim.AdamW(params, **args)
    raise ValueError(f"no torch optimizer for {name}")
