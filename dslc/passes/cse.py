"""Common-subexpression elimination: one node per (op, operands, attrs); consts by value."""

from __future__ import annotations

import numpy as np

from dslc.ir.dims import Dim
from dslc.ir.graph import Graph
from dslc.ops import REGISTRY

# operand order does not change the result (IEEE addition and multiplication commute)
COMMUTATIVE = frozenset(
    {"add", "mul", "maximum", "minimum", "eq", "ne", "logical_and", "logical_or"}
)


def cse(graph: Graph) -> Graph:
    """A copy where equal computations are computed once; random ops are never merged."""
    g = graph.copy()
    seen: dict[tuple, int] = {}
    for nid in g.topo_order():
        key = node_key(g, nid)
        if key is None:
            continue
        first = seen.setdefault(key, nid)
        if first != nid:
            g.replace_uses(nid, first)
            g.remove(nid)
    return g


def node_key(g: Graph, nid: int) -> tuple | None:
    """What makes two nodes compute the same value, or None when they must stay apart."""
    d = g.data(nid)
    op = d["op"]
    if op in ("input", "param", "fused"):
        return None
    if op == "const":
        return ("const", d["type"], freeze(d["attrs"]["value"]))
    prim = REGISTRY.get(op)
    if prim is None or prim.random:
        return None
    inputs = d["inputs"]
    if op in COMMUTATIVE:
        inputs = tuple(sorted(inputs))
    return (op, inputs, d["type"], freeze(d["attrs"]))


def freeze(v):
    """A hashable stand-in that tells apart what computes differently (1 vs 1.0, -0.0 vs 0.0)."""
    if isinstance(v, np.ndarray):
        return ("nd", v.dtype.str, v.shape, v.tobytes())
    if isinstance(v, dict):
        return tuple(sorted((k, freeze(x)) for k, x in v.items()))
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, *(freeze(x) for x in v))
    if isinstance(v, float):
        return ("f", v.hex())
    if isinstance(v, Dim):
        return ("int", v.value) if v.is_const else ("dim", str(v))
    if isinstance(v, (bool, int, str, type(None))):
        return (type(v).__name__, v)
    if isinstance(v, np.generic):
        return freeze(v.item())
    return ("id", id(v))  # unknown objects are equal only to themselves
