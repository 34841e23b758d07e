"""Graphviz DOT text: labels with op and type, clusters by scope, operand-numbered edges."""

from __future__ import annotations

import re

from ir_graphs import N, sp

from dslc.ir.builder import Builder
from dslc.ir.dot import quote, to_dot
from dslc.ir.graph import Graph
from dslc.ir.types import TensorType


def node_line(dot: str, nid: int) -> str:
    return next(line for line in dot.splitlines() if line.strip().startswith(f"n{nid} ["))


def test_structure(mlp):
    dot = to_dot(mlp, name="TinyMLP")
    assert dot.startswith('digraph "TinyMLP" {\n')
    assert dot.rstrip().endswith("}")
    assert dot.count("{") == dot.count("}")
    # every node appears once, every operand is an edge labelled with its position
    assert len(re.findall(r"^\s*n\d+ \[", dot, re.M)) == len(mlp)
    edges = re.findall(r"n(\d+) -> n(\d+) \[label=\"(\d+)\"\]", dot)
    assert len(edges) == sum(len(mlp.data(n)["inputs"]) for n in mlp.g.nodes)
    assert ("0", "4", "0") in edges and ("2", "4", "1") in edges
    assert ("1", "13", "1") in edges  # the label y is take_along's second operand


def test_labels(mlp):
    dot = to_dot(mlp)
    assert 'label="%4 matmul\\nf32[N, 32]"' in node_line(dot, 4)
    assert 'tooltip="tiny_mlp.nn:3:9"' in node_line(dot, 4)
    assert 'label="@layers.0.W\\nf32[64, 32]"' in node_line(dot, 2)
    assert 'label="x\\nf32[N, 64]"' in node_line(dot, 0)
    assert "invhouse" in node_line(dot, 0) and "ellipse" in node_line(dot, 2)


def test_clusters_follow_scopes(stub_registry):
    g = Graph()
    b = Builder(g, span=sp(1))
    x = b.input("x", TensorType((N, 4)))
    with b.at(scope="enc.layers.0.ffn"):
        h = b.op("relu", x)
    with b.at(scope="enc.layers.0"):
        h = b.op("neg", h)
    g.outputs["y"] = b.op("relu", h)
    lines = to_dot(g).splitlines()
    # nested clusters: enc > layers.0 > ffn; the numeric index stays with its name
    labels = [line.strip() for line in lines if line.strip().startswith("label=")]
    assert labels == ['label="enc";', 'label="enc.layers.0";', 'label="enc.layers.0.ffn";']
    depth = {}
    level = 0
    for line in lines:
        if line.strip().startswith("subgraph"):
            level += 1
        elif line.strip() == "}":
            level -= 1
        m = re.match(r"\s*n(\d+) \[", line)
        if m:
            depth[int(m.group(1))] = level
    assert depth == {0: 0, 1: 3, 2: 2, 3: 0}


def test_outputs_are_sinks(mlp):
    mlp.grads["layers.0.W"] = 4
    dot = to_dot(mlp)
    assert 'out0 [label="logits"' in dot and "n10 -> out0;" in dot
    assert 'out1 [label="loss"' in dot and "n15 -> out1;" in dot
    assert 'out2 [label="grad layers.0.W"' in dot and "n4 -> out2;" in dot


def test_quote_escapes():
    assert quote('a "b"\\c\nd') == '"a \\"b\\"\\\\c\\nd"'
