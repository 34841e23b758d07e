"""Lowering fused bodies to the kernel IR: patterns, operand layouts, refusals."""

from __future__ import annotations

import pytest
from codegen_graphs import GRAPHS, N, T, fused, fused_nodes

from dslc.codegen.expr import Unsupported, layout, lower, pattern_of


def lowered(name):
    g = fused(GRAPHS[name])
    out = []
    for nid in fused_nodes(g):
        a = g.data(nid)["attrs"]
        out.append(lower(a["body"], a["pattern"], a["domain"], a["reduce_axes"]))
    return out


def test_layouts_of_operand_shapes():
    d = (N, T, 8)
    assert layout((N, T, 8), d, 2) == "full"
    assert layout((N, T, 1), d, 2) == "outer"
    assert layout((8,), d, 2) == "inner"
    assert layout((1,), d, 2) == "scalar"
    assert layout((T, 8), d, 2) is None  # broadcast over N only: not without offsets
    assert layout((T, 8), d, 1) == "inner"  # split after N: the whole inner part
    assert layout((T, 8), d, 2, strided=True) == "sfull"  # split after T: at a row offset
    assert layout((T, 1), d, 2, strided=True) == "souter"


def test_patterns_from_the_fusion_attributes():
    assert pattern_of("elementwise", (N, 8), ()) == ("map", None)
    assert pattern_of("row_reduce", (N, T, 8), (2,)) == ("row", 2)
    assert pattern_of("reduce", (N, T, 8), (0, 1)) == ("col", 2)
    assert pattern_of("reduce", (N, T, 8), (1,)) == ("", None)


def test_masked_softmax_is_one_row_kernel_with_a_strided_mask():
    (ir,) = lowered("softmax_masked")
    assert ir.pattern == "row" and ir.split == 3
    assert sorted(ld.layout for ld in ir.loads) == ["full", "sfull"]
    kinds = [n.value for n in ir.nodes if n.op == "reduce"]
    assert kinds == ["max", "sum"]  # softmax expanded: max, exp, sum, scale
    assert ir.out_level == "full"


def test_layer_norm_reads_gamma_and_beta_per_column():
    (ir,) = lowered("layer_norm")
    assert ir.pattern == "row"
    assert sorted(ld.layout for ld in ir.loads) == ["full", "inner", "inner"]


def test_map_picks_the_split_that_reads_rows_and_columns():
    (ir,) = lowered("outer_inner")
    assert ir.pattern == "map" and ir.split == 1
    assert sorted(ld.layout for ld in ir.loads) == ["full", "inner", "outer"]


def test_column_reduction():
    (ir,) = lowered("column_sum")
    assert ir.pattern == "col" and ir.out_level == "red"


def test_a_middle_axis_reduction_is_refused_with_a_reason():
    g = fused(GRAPHS["middle_axis"])
    (nid,) = fused_nodes(g)
    a = g.data(nid)["attrs"]
    with pytest.raises(Unsupported, match="neither leading nor trailing"):
        lower(a["body"], a["pattern"], a["domain"], a["reduce_axes"])


def test_constants_take_the_dtype_of_their_operand():
    (ir,) = lowered("integer_compare")
    consts = [n for n in ir.nodes if n.op == "const"]
    assert all(n.dtype != "f64" for n in consts)
    assert ir.nodes[ir.out].dtype == "f32"


def test_the_fuse_pass_reports_groups_without_a_kernel():
    report = fused(GRAPHS["middle_axis"]).meta["codegen_report"]
    assert [e["reason"] for e in report] == ["it reduces axes (1,), neither leading nor trailing"]
    assert fused(GRAPHS["layer_norm"]).meta["codegen_report"] == []
