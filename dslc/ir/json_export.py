"""The JSON contract: a graph as one JSON object. docs/ir-json.md is its specification.

Keys appear in a fixed order; bump VERSION's major number on any change that removes,
renames or retypes a key, its minor number when a key is added.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from dslc.errors import Span
from dslc.ir.dims import Dim, numel
from dslc.ir.graph import Graph
from dslc.ir.summary import activation_bytes, all_flops, dim_sum, nbytes, param_totals, symbols
from dslc.ir.types import dtype_name

VERSION = "1.0"
MAX_CONST_VALUES = 1024  # larger constant arrays are exported without their values


def dim_json(d: Dim) -> int | str:
    """A constant size as an int, a symbolic one as its formula (`"N"`, `"B*T"`)."""
    return d.value if d.is_const else str(d)


def shape_json(shape) -> list[int | str]:
    return [dim_json(d) for d in shape]


def value_json(v) -> Any:
    """Any attribute value as JSON: tuples become lists, Dims ints or formulas."""
    if v is None or isinstance(v, bool | str):
        return v
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, Span):
        return source_json(v)
    if isinstance(v, Dim):
        return dim_json(v)
    if isinstance(v, int | np.integer):
        return int(v)
    if isinstance(v, float | np.floating):
        f = float(v)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return f
    if isinstance(v, tuple | list):
        return [value_json(x) for x in v]
    if isinstance(v, Mapping):
        return {str(k): value_json(x) for k, x in v.items()}
    if isinstance(v, np.ndarray):
        try:
            dt = dtype_name(v.dtype)
        except KeyError:
            dt = str(v.dtype)
        return {
            "dtype": dt,
            "shape": list(v.shape),
            "data": value_json(v.tolist()) if v.size <= MAX_CONST_VALUES else None,
        }
    return str(v)


def source_json(span: Span | None) -> dict | None:
    if span is None:
        return None
    return {
        "file": span.file,
        "line": span.line,
        "col": span.col,
        "end_line": span.end_line,
        "end_col": span.end_col,
    }


def flops_terms(d: Dim) -> list[dict]:
    """A polynomial as data: `[{"coef": 256, "dims": {"N": 1}}, ...]`."""
    items = sorted(d.terms.items(), key=lambda it: (-sum(p for _, p in it[0]), it[0]))
    return [{"coef": c, "dims": {s: p for s, p in m}} for m, c in items]


def _node(graph: Graph, nid: int, flops: Dim) -> dict:
    d = graph.data(nid)
    attrs = {k: value_json(v) for k, v in d["attrs"].items() if k != "body"}
    out = {
        "id": nid,
        "op": d["op"],
        "shape": shape_json(d["type"].shape),
        "dtype": d["type"].dtype,
        "param": d["attrs"].get("name") if d["op"] == "param" else None,
        "scope": d.get("scope") or "",
        "attrs": attrs,
        "source": source_json(d.get("span")),
        "flops": str(flops),
    }
    body = d["attrs"].get("body") if d["op"] == "fused" else None
    if isinstance(body, Graph):
        out["body"] = _graph_core(body, all_flops(body))
    return out


def _typed(graph: Graph, nid: int) -> dict:
    t = graph.data(nid)["type"]
    return {"node": nid, "shape": shape_json(t.shape), "dtype": t.dtype}


def _graph_core(graph: Graph, flops: dict[int, Dim]) -> dict:
    """nodes, edges, inputs, outputs: what a fused node's body carries too."""
    order = graph.topo_order()
    edges = [
        {"src": src, "dst": nid, "operand": k}
        for nid in order
        for k, src in enumerate(graph.data(nid)["inputs"])
    ]
    return {
        "nodes": [_node(graph, n, flops[n]) for n in order],
        "edges": edges,
        "inputs": [
            {"name": name, **_typed(graph, nid), "role": graph.data(nid)["attrs"].get("role")}
            for name, nid in graph.inputs.items()
        ],
        "outputs": [{"name": name, **_typed(graph, nid)} for name, nid in graph.outputs.items()],
    }


def to_json_obj(
    graph: Graph,
    *,
    name: str | None = None,
    file: str | None = None,
    mode: str | None = None,
    stage: str = "lowered",
    hparams: Mapping | None = None,
) -> dict:
    """The graph as a JSON-able dict with the keys (and key order) of docs/ir-json.md."""
    node_flops = all_flops(graph)
    core = _graph_core(graph, node_flops)
    trainable = set(graph.trainable_params())
    params = []
    for pname, nid in graph.params.items():
        d = graph.data(nid)
        a = d["attrs"]
        params.append(
            {
                "name": pname,
                **_typed(graph, nid),
                "count": dim_json(numel(d["type"].shape)),
                "trainable": pname in trainable,
                "state": not a.get("trainable", True),
                "frozen": bool(a.get("frozen", False)),
                "init": a.get("init"),
                "init_args": value_json(a.get("init_args", ())),
            }
        )
    tr, non = param_totals(graph)
    flops = dim_sum(node_flops.values())
    syms = symbols(graph)
    at = {s: 1 for s in syms}
    param_bytes = dim_sum(nbytes(graph.data(n)["type"]) for n in graph.params.values())
    return {
        "version": VERSION,
        "model": {
            "name": name,
            "file": file,
            "mode": mode,
            "stage": stage,
            "hparams": value_json(dict(hparams or {})),
            "dims": syms,
        },
        "nodes": core["nodes"],
        "edges": core["edges"],
        "inputs": core["inputs"],
        "outputs": core["outputs"],
        "params": params,
        "grads": [{"param": p, "node": n} for p, n in graph.grads.items()],
        "updates": [{"param": p, "node": n} for p, n in graph.updates.items()],
        "totals": {
            "params": dim_json(tr),
            "params_non_trainable": dim_json(non),
            "param_bytes": dim_json(param_bytes),
            "flops": str(flops),
            "flops_terms": flops_terms(flops),
            "flops_at": {"dims": at, "flops": flops.evaluate(at)},
            "activation_bytes": str(activation_bytes(graph)),
            "nodes": len(graph),
        },
    }


def to_json(graph: Graph, indent: int | None = 2, **kw) -> str:
    """The graph as JSON text (see `to_json_obj`)."""
    return json.dumps(to_json_obj(graph, **kw), indent=indent, allow_nan=False) + "\n"
