"""project_tables: in inference, gather(T, i) @ W becomes gather(T @ W, i); values kept."""

import importlib

import numpy as np
from pass_helpers import checked, f64, new_graph, ops_of, same_results

from dslc.ir.dims import Dim
from dslc.ir.types import TensorType
from dslc.passes import autodiff, project_tables

module = importlib.import_module("dslc.passes.project_tables")

RNG = np.random.default_rng(3)


def lookup_then_dense(vocab=7, d=4, n=5, loss=False, bias_sum=False):
    """tokens -> embedding rows -> @ W (+ b): the front of an LSTM or a bag-of-words model."""
    g, b = new_graph()
    tokens = b.input("tokens", TensorType((Dim.sym("B"), 3), "i64"))
    table = b.param("table", f64(vocab, d))
    w = b.param("w", f64(d, n))
    if bias_sum:  # a parameter-only expression counts as a parameter
        w = b.op("add", w, b.param("w2", f64(d, n)))
    y = b.op("add", b.op("matmul", b.op("gather", table, tokens), w), b.param("b", f64(n)))
    if loss:
        g.outputs["loss"] = b.op("sum", b.op("square", y))
    else:
        g.outputs["y"] = y
    return g


def feeds():
    return {
        "tokens": RNG.integers(0, 7, size=(2, 3)),
        "table": RNG.standard_normal((7, 4)),
        "w": RNG.standard_normal((4, 5)),
        "w2": RNG.standard_normal((4, 5)),
        "b": RNG.standard_normal(5),
    }


def test_an_inference_lookup_reads_rows_of_the_projected_table():
    for bias_sum in (False, True):
        g = lookup_then_dense(bias_sum=bias_sum)
        out = checked(project_tables, g)
        assert len(out.meta["project_tables"]) == 1
        (mm,) = [n for n in out.nodes() if n.op == "matmul"]
        assert tuple(int(s) for s in mm.shape) == (7, 5)  # the table, projected
        (look,) = [n for n in out.nodes() if n.op == "gather"]
        assert look.inputs[0] == mm.id
        same_results(g, out, feeds(), env={"B": 2})


def test_training_graphs_and_other_readers_are_left_alone():
    g = lookup_then_dense(loss=True)
    assert checked(project_tables, g).meta["project_tables"] == []
    assert checked(project_tables, autodiff(g)).meta["project_tables"] == []
    g, b = new_graph()
    tokens = b.input("tokens", TensorType((2, 3), "i64"))
    rows = b.op("gather", b.param("table", f64(7, 4)), tokens)
    g.outputs["y"] = b.op("matmul", rows, b.param("w", f64(4, 5)))
    g.outputs["rows"] = b.op("relu", rows)  # the looked-up rows are read elsewhere too
    assert ops_of(checked(project_tables, g)).count("gather") == 1
    assert checked(project_tables, g).meta["project_tables"] == []


def test_a_projection_by_an_input_or_a_table_too_large_is_left(monkeypatch):
    g, b = new_graph()
    tokens = b.input("tokens", TensorType((2, 3), "i64"))
    rows = b.op("gather", b.param("table", f64(7, 4)), tokens)
    g.outputs["y"] = b.op("matmul", rows, b.input("w", f64(4, 5)))  # W is fed, not a param
    assert checked(project_tables, g).meta["project_tables"] == []
    monkeypatch.setattr(module, "TABLE_MAX", 7 * 5 * 8 - 1)  # one byte short of the table
    assert checked(project_tables, lookup_then_dense()).meta["project_tables"] == []
