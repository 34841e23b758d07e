"""The model summary: rows per scope, totals, and costs as formulas in the symbolic sizes."""

from __future__ import annotations

import re

import pytest
from ir_graphs import N, sp

from dslc.ir.builder import Builder
from dslc.ir.dims import Dim
from dslc.ir.graph import Graph
from dslc.ir.summary import (
    activation_bytes,
    format_bytes,
    format_count,
    scope_path,
    summarize,
    summary_text,
    total_flops,
)
from dslc.ir.types import TensorType

T = Dim.sym("T")


@pytest.fixture
def attention(stub_registry) -> Graph:
    """Scores of one attention head: FLOPs have an N*T and an N*T^2 term."""
    g = Graph()
    b = Builder(g, span=sp(1))
    x = b.input("x", TensorType((N, T, 64)))
    proj = {}
    for name in ("q", "k"):
        with b.at(scope=f"attn.{name}"):
            w = b.param(f"attn.{name}.W", TensorType((64, 64)), "normal", (0.02,))
            proj[name] = b.op("matmul", x, w)  # 2*64*64 per row of N*T
    with b.at(scope="attn"):
        kt = b.op("reshape", proj["k"], shape=(N, 64, T))
        scores = b.op("matmul", proj["q"], kt)  # 2*64 per entry of N*T*T
        scores = b.op("scale", scores, c=0.125)
    g.outputs["y"] = b.op("mean", scores, axes=(1, 2))
    return g


def rows(s):
    return [(r.label, r.depth, r.ops, [str(t) for t in r.outputs], r.params) for r in s.rows]


def test_rows_per_scope(mlp):
    s = summarize(mlp, "TinyMLP", "train")
    assert rows(s) == [
        ("layers.0", 0, 3, ["f32[N, 32]"], 2080),
        ("layers.1", 0, 2, ["f32[N, 10]"], 330),
        ("norm", 0, 0, [], 32),
        ("(log_softmax, take_along, mean, neg)", 0, 4, ["f32[]"], 0),
    ]
    assert [str(r.flops) for r in s.rows] == ["4160*N", "650*N", "0", "31*N + 1"]


def test_totals(mlp):
    s = summarize(mlp)
    assert (s.trainable, s.non_trainable, s.params) == (2410, 32, 2442)
    assert str(s.flops) == "4841*N + 1" == str(total_flops(mlp))
    # activations: f32 [N,32] x3, [N,10] x3, [N] (take_along), two scalars
    assert str(s.activations) == str(activation_bytes(mlp)) == "508*N + 8"
    assert str(s.input_bytes) == "264*N"  # f32[N, 64] + i64[N]
    assert str(s.param_bytes) == "9768"
    assert s.symbols == ["N"]


def test_symbolic_formulas(attention):
    s = summarize(attention, "Head")
    assert str(s.flops) == "130*N*T^2 + 16384*N*T"
    assert s.flops.format() == "130*N*T^2 + 16.4k*N*T"
    assert format_bytes(s.activations) == "8B*N*T^2 + 768B*N*T + 4B*N"
    assert s.symbols == ["N", "T"]
    assert rows(s) == [
        ("attn", 0, 5, ["f32[N, T, T]"], 8192),
        ("q", 1, 1, ["f32[N, T, 64]"], 4096),
        ("k", 1, 1, ["f32[N, T, 64]"], 4096),
        ("(mean)", 0, 1, ["f32[N]"], 0),
    ]
    assert [r.scope for r in s.rows] == ["attn", "attn.q", "attn.k", ""]
    assert [r.flops.format() for r in s.rows] == [
        "129*N*T^2 + 16.4k*N*T",
        "8.2k*N*T",
        "8.2k*N*T",
        "N*T^2",
    ]


def test_depth_limits_rows(attention):
    assert [r.label for r in summarize(attention, depth=1).rows] == ["attn", "(mean)"]
    assert [r.label for r in summarize(attention, depth=None).rows] == ["attn", "q", "k", "(mean)"]


def test_rendered_table_and_totals(attention):
    text = summary_text(summarize(attention, "Head", "infer"), width=120)
    lines = text.splitlines()
    assert lines[0].strip() == "Head (infer)"
    header = next(line for line in lines if "Layer" in line)
    for col in ("Output shape", "Params", "FLOPs", "Ops"):
        assert col in header
    row = next(line for line in lines if "│   q " in line)  # indented under attn
    assert "f32[N, T, 64]" in row and "4,096" in row and "8.2k*N*T" in row
    totals = dict(
        re.fullmatch(r"\s*(\S.*?)\s{2,}(\S.*?)\s*", line).groups()
        for line in lines
        if line.strip() and not line.startswith(("┃", "│", "┏", "┡", "└", "Head"))
    )
    assert totals["Parameters"] == "8,192  (32.8kB)"
    assert totals["trainable"] == "8,192"
    assert totals["non-trainable"] == "0"
    assert totals["FLOPs per forward pass"] == "130*N*T^2 + 16.4k*N*T"
    assert totals["Activation memory"] == "8B*N*T^2 + 768B*N*T + 4B*N"
    assert totals["Input memory"] == "256B*N*T"
    assert totals["Symbolic sizes"] == "N, T"


def test_scope_path():
    assert scope_path("") == ()
    assert scope_path("layers.2.attn.q") == ("layers.2", "attn", "q")
    assert scope_path("blocks.0.1.ffn") == ("blocks.0.1", "ffn")


def test_formatting():
    assert format_count(Dim.const(1234567)) == "1,234,567"
    assert format_count(Dim.sym("V") * 64 + 128) == "64*V + 128"
    assert format_bytes(Dim.const(0)) == "0B"
    assert format_bytes(Dim.sym("N") * 1_200_000 + 512) == "1.2MB*N + 512B"
    assert (Dim.sym("N") * 1_200_000 - 3).format() == "1.2M*N - 3"


def test_lowercase_sizes_are_not_markup(stub_registry):
    g = Graph()
    b = Builder(g)
    x = b.input("x", TensorType((Dim.sym("batch"), 4)))
    with b.at(scope="act"):
        g.outputs["y"] = b.op("relu", x)
    text = summary_text(summarize(g, "[bold]M"))
    assert "[bold]M" in text
    assert "f32[batch, 4]" in text
    assert "Activation memory       16B*batch" in text
