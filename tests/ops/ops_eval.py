"""A tiny reference evaluator for the primitive tests: kernels called in topological order.

The real runtime lives in `runtime/`; this one exists so the primitives are tested alone.
"""

from __future__ import annotations

import numpy as np

from dslc.ir.dims import evaluate_value
from dslc.ir.graph import Graph
from dslc.ir.types import np_dtype
from dslc.ops import get_primitive


def evaluate(graph: Graph, feeds: dict, env: dict | None = None, seed: int = 0) -> dict:
    """Values of every node: `feeds` maps input names to arrays."""
    env = env or {}
    vals: dict[int, np.ndarray] = {}
    rng = np.random.default_rng(seed)
    for nid in graph.topo_order():
        node = graph.node(nid)
        if node.op == "input":
            vals[nid] = np.asarray(feeds[node.attrs["name"]], dtype=np_dtype(node.dtype))
        elif node.op == "const":
            vals[nid] = np.asarray(node.attrs["value"], dtype=np_dtype(node.dtype))
        else:
            prim = get_primitive(node.op)
            attrs = {k: evaluate_value(v, env) for k, v in node.attrs.items()}
            if prim.random:
                attrs["rng"] = rng
            vals[nid] = np.asarray(prim.numpy(np, *(vals[i] for i in node.inputs), **attrs))
    return vals
