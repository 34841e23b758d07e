"""Constant folding: compute nodes whose operands are all consts with their NumPy kernel."""

from __future__ import annotations

import numpy as np

from dslc.ir.dims import Dim
from dslc.ir.graph import Graph
from dslc.ir.types import np_dtype
from dslc.ops import REGISTRY

MAX_FOLDED_ELEMENTS = 1024  # a folded const is stored in the graph: keep big broadcasts lazy


def constfold(graph: Graph) -> Graph:
    """A copy where small all-const computations are replaced by their value."""
    g = graph.copy()
    for nid in g.topo_order():
        d = g.data(nid)
        value = _fold(g, d)
        if value is None:
            continue
        g.data(nid).update(op="const", inputs=(), attrs={"value": value})
        g.set_inputs(nid, ())
    return g


def _fold(g: Graph, d: dict):
    prim = REGISTRY.get(d["op"])
    if prim is None or prim.random or prim.kind == "source" and not d["inputs"]:
        return None  # sources stay lazy: `full` and `arange` are cheaper than a stored array
    operands = [g.data(i) for i in d["inputs"]]
    if any(o["op"] != "const" for o in operands):
        return None
    shape = d["type"].shape
    if any(not s.is_const for s in shape) or int(np.prod([s.value for s in shape])) > (
        MAX_FOLDED_ELEMENTS
    ):
        return None
    attrs = _concrete(d["attrs"])
    if attrs is None:
        return None
    # floats fold in float64 so that scalar consts keep full precision (stored as Python floats)
    args = [
        np.asarray(o["attrs"]["value"], dtype=_compute_dtype(o["type"].dtype)) for o in operands
    ]
    dtype = d["type"].dtype
    out = np.empty([s.value for s in shape], _compute_dtype(dtype))
    with np.errstate(all="ignore"):
        out = np.asarray(prim.numpy(np, *args, out=out, **attrs))
    if out.ndim == 0:
        v = out.item()
        return bool(v) if dtype == "bool" else float(v) if dtype[0] == "f" else int(v)
    out = out.astype(np_dtype(dtype))
    out.setflags(write=False)
    return out


def _compute_dtype(dtype: str):
    return np.float64 if dtype[0] == "f" else np_dtype(dtype)


def _concrete(v):
    """Attributes with constant Dims as ints, or None when a symbolic Dim remains."""
    if isinstance(v, Dim):
        return v.value if v.is_const else None
    if isinstance(v, dict):
        out = {k: _concrete(x) for k, x in v.items()}
        return None if any(out[k] is None and v[k] is not None for k in v) else out
    if isinstance(v, (tuple, list)):
        out = [_concrete(x) for x in v]
        if any(a is None and b is not None for a, b in zip(out, v)):
            return None
        return type(v)(out)
    return v
