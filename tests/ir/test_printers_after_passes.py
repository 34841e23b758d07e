"""The printers on graphs the real pass pipeline produced: gradients and fused kernels."""

from __future__ import annotations

import json

import pytest
from ir_graphs import build_mlp

from dslc.ir.dot import to_dot
from dslc.ir.json_export import to_json
from dslc.ir.printer import format_graph
from dslc.ir.summary import summarize, summary_text, total_flops
from dslc.passes import run_pipeline


@pytest.fixture
def fused():
    """The MLP over the real registry after the whole pipeline (autodiff ... fuse)."""
    return run_pipeline(build_mlp())


def test_pipeline_fused_something(fused):
    assert any(n.op == "fused" for n in fused.nodes())
    assert set(fused.grads) == {"layers.0.W", "layers.0.b", "layers.1.W", "layers.1.b"}


def test_json_of_fused_graph(fused):
    obj = json.loads(to_json(fused, stage="fuse"))
    nodes = [n for n in obj["nodes"] if n["op"] == "fused"]
    assert nodes
    for n in nodes:
        body = n["body"]
        assert [i["name"] for i in body["inputs"]] == [f"in{k}" for k in range(len(body["inputs"]))]
        assert len(body["inputs"]) == sum(1 for e in obj["edges"] if e["dst"] == n["id"])
        assert [o["name"] for o in body["outputs"]] == ["out"]
        member_ops = [m[0] for m in n["attrs"]["members"]]
        assert member_ops == [b["op"] for b in body["nodes"] if b["op"] not in ("input", "const")]
        assert all(
            m[1] is None or set(m[1]) >= {"file", "line", "col"} for m in n["attrs"]["members"]
        )
    assert [g["param"] for g in obj["grads"]] == list(fused.grads)
    # a fused node costs what its body costs: fusion moves FLOPs, it does not drop them
    assert obj["totals"]["flops"] == str(total_flops(fused))


def test_fused_flops_equal_unfused(fused):
    unfused = run_pipeline(build_mlp(), until="dce")
    assert total_flops(fused) == total_flops(unfused)


def test_text_ir_of_fused_graph(fused):
    text = format_graph(fused)
    lines = text.splitlines()
    heads = [i for i, line in enumerate(lines) if " = fused " in line]
    assert heads
    for i in heads:
        assert "pattern=" in lines[i]
        assert not any(k in lines[i] for k in ("members=", "body=", "kinds="))
        assert lines[i + 1].startswith("      lambda %in0: ")
    assert "grads:" in lines


def test_dot_and_summary_of_fused_graph(fused):
    dot = to_dot(fused)
    assert "fused: " in dot and dot.count("{") == dot.count("}")
    s = summarize(fused)
    assert s.trainable == 2410 and str(s.flops) == str(total_flops(fused))
    text = summary_text(s)
    assert "FLOPs per training step" in text and "forward pass" not in text
