"""The text IR: one equation per line, header and footer, inline constants, fused bodies."""

from __future__ import annotations

import re

import numpy as np
from ir_graphs import N, build_mlp, sp

from dslc.ir.builder import Builder
from dslc.ir.dims import Dim
from dslc.ir.graph import Graph
from dslc.ir.printer import format_graph, format_value
from dslc.ir.types import TensorType


def section(text: str, name: str) -> list[str]:
    """The lines under `name:` up to the next section."""
    lines = text.splitlines()
    start = lines.index(f"{name}:") + 1
    end = next((i for i in range(start, len(lines)) if not lines[i].startswith(" ")), len(lines))
    return lines[start:end]


def test_header_lists_inputs_and_params(mlp):
    text = format_graph(mlp, "TinyMLP · train graph · lowered")
    assert text.splitlines()[:2] == [
        "# TinyMLP · train graph · lowered",
        "# 9 equations, 5 parameters",
    ]
    assert section(text, "inputs") == ["  %x: f32[N, 64]", "  %y: i64[N]  (label)"]
    assert section(text, "params") == [
        "  @layers.0.W: f32[64, 32] = glorot_uniform    2,048",
        "  @layers.0.b: f32[32] = zeros    32",
        "  @layers.1.W: f32[32, 10] = glorot_uniform    320",
        "  @layers.1.b: f32[10] = zeros    10",
        "  @norm.mean: f32[32] = zeros    32  state",
    ]


def test_equations_name_inputs_and_params_and_carry_source(mlp):
    eqs = section(format_graph(mlp), "equations")
    assert len(eqs) == 9
    first = eqs[0]
    assert re.fullmatch(
        r"  %4: f32\[N, 32\] = matmul %x, @layers\.0\.W +# tiny_mlp\.nn:3:9  \(layers\.0\)",
        first,
    ), first
    assert eqs[1].startswith("  %5: f32[N, 32] = add %4, @layers.0.b ")
    assert eqs[2].startswith("  %6: f32[N, 32] = relu %5 ")
    # comments line up in one column
    assert len({line.index("#") for line in eqs}) == 1
    # top-level nodes have no scope in parentheses
    assert eqs[-1].endswith("# tiny_mlp.nn:6:3")


def test_attributes_print_by_name(mlp):
    eqs = section(format_graph(mlp), "equations")
    assert any("= mean %13 {axes=(0,), keepdims=false} " in e for e in eqs)
    assert any("= log_softmax %10 {axis=-1} " in e for e in eqs)
    assert any("= take_along %12, %y {axis=-1} " in e for e in eqs)


def test_footer_lists_outputs_grads_updates(mlp):
    mlp.grads["layers.0.W"] = 4  # pretend: any node id will do for printing
    mlp.updates["norm.mean"] = 6
    text = format_graph(mlp)
    assert section(text, "outputs") == ["  logits = %10: f32[N, 10]", "  loss = %15: f32[]"]
    assert section(text, "grads") == ["  @layers.0.W = %4: f32[N, 32]"]
    assert section(text, "updates") == ["  @norm.mean = %6: f32[N, 32]"]


def test_no_grads_section_before_autodiff(mlp):
    text = format_graph(mlp)
    assert "grads:" not in text and "updates:" not in text


def test_constants_print_inline(stub_registry):
    g = Graph()
    b = Builder(g)
    x = b.input("x", TensorType((4, 3)))
    y = b.op("mul", x, b.const(0.5))
    z = b.op("add", y, b.const([1.0, 2.0, 3.0]))
    w = b.op("add", z, b.const(np.zeros((4, 3))))  # too big to inline: only its type
    g.outputs["w"] = b.op("scale", w, c=2.0)
    eqs = section(format_graph(g), "equations")
    assert eqs == [
        "  %2: f32[4, 3] = mul %x, 0.5",
        "  %4: f32[4, 3] = add %2, f32[3]{1.0, 2.0, 3.0}",
        "  %6: f32[4, 3] = add %4, f32[4, 3]{...}",
        "  %7: f32[4, 3] = scale %6 {c=2.0}",
    ]


def test_fused_node_prints_its_body_indented(stub_registry):
    g = build_mlp()
    body = Graph()
    bb = Builder(body, span=sp(3, 9), scope="layers.0")
    a0 = bb.input("a0", TensorType((N, 32)))
    a1 = bb.input("a1", TensorType((32,)))
    body.outputs["out"] = bb.op("relu", bb.op("add", a0, a1))
    fused = g.add(
        "fused", (4, 3), TensorType((N, 32)), {"body": body}, span=sp(3, 9), scope="layers.0"
    )
    g.replace_uses(6, fused)
    for n in (6, 5):
        g.remove(n)
    eqs = section(format_graph(g), "equations")
    i = next(i for i, e in enumerate(eqs) if "fused" in e)
    assert eqs[i].startswith("  %16: f32[N, 32] = fused %4, @layers.0.b ")
    assert "body=" not in eqs[i]
    assert eqs[i + 1 : i + 5] == [
        "      lambda %a0: f32[N, 32], %a1: f32[32]:",
        "        %2: f32[N, 32] = add %a0, %a1    # tiny_mlp.nn:3:9  (layers.0)",
        "        %3: f32[N, 32] = relu %2         # tiny_mlp.nn:3:9  (layers.0)",
        "        return %3",
    ]
    assert eqs[i + 5].startswith("  %9: f32[N, 10] = matmul %16, @layers.1.W")


def test_format_value():
    assert format_value((1,)) == "(1,)"
    assert format_value((0, 2)) == "(0, 2)"
    assert format_value(True) == "true"
    assert format_value(None) == "none"
    assert format_value("tanh") == '"tanh"'
    assert format_value(Dim.sym("T")) == "T"
    assert format_value(Dim.const(4)) == "4"
    assert format_value((Dim.sym("B") * Dim.sym("T"), 64)) == "((B*T), 64)"
    assert format_value(((0, 1, Dim.sym("T"), 1),)) == "((0, 1, T, 1),)"
    assert format_value(np.array([1, 2], dtype=np.int64)) == "i64[2]{1, 2}"
    assert [format_value(x) for x in (1.0, 0.125, 1e-05, 0.08838834764831843)] == [
        "1.0",
        "0.125",
        "1e-05",
        "0.0883883",
    ]
