"""A tiny reference evaluator (each primitive's NumPy kernel in topological order) and checks."""

from __future__ import annotations

import numpy as np

from dslc.ir.builder import Builder
from dslc.ir.dims import Dim
from dslc.ir.graph import Graph
from dslc.ir.types import TensorType, np_dtype
from dslc.ops import REGISTRY
from dslc.passes import verify


def concrete(v, env):
    if isinstance(v, Dim):
        return v.evaluate(env)
    if isinstance(v, tuple):
        return tuple(concrete(x, env) for x in v)
    if isinstance(v, list):
        return [concrete(x, env) for x in v]
    return v


def evaluate(graph: Graph, feeds: dict, env=None, float_dtype=np.float64, seed=0) -> dict:
    """Every node's value; floats computed in `float_dtype`; feeds by input or param name."""
    env = env or {}
    vals: dict[int, np.ndarray] = {}
    for nid in graph.topo_order():
        d = graph.data(nid)
        op, t = d["op"], d["type"]
        dt = float_dtype if t.is_float else np_dtype(t.dtype)
        if op in ("input", "param"):
            vals[nid] = np.asarray(feeds[d["attrs"]["name"]], dtype=dt)
        elif op == "const":
            vals[nid] = np.asarray(d["attrs"]["value"], dtype=dt)
        elif op == "fused":
            body = d["attrs"]["body"]
            inner = {
                body.data(bi)["attrs"]["name"]: vals[src]
                for src, bi in zip(d["inputs"], body.inputs.values())
            }
            out = evaluate(body, inner, env, float_dtype, seed)
            vals[nid] = out[body.outputs["out"]]
        else:
            prim = REGISTRY[op]
            attrs = {k: concrete(v, env) for k, v in d["attrs"].items()}
            if prim.random:
                attrs["rng"] = np.random.default_rng(seed)
            vals[nid] = np.asarray(prim.numpy(np, *(vals[i] for i in d["inputs"]), **attrs))
            if t.is_float:
                vals[nid] = vals[nid].astype(float_dtype, copy=False)
    return vals


def results(graph: Graph, feeds: dict, **kw) -> dict:
    """Outputs and gradients by name: {'out:loss': ..., 'grad:w': ...}."""
    vals = evaluate(graph, feeds, **kw)
    out = {f"out:{k}": vals[v] for k, v in graph.outputs.items()}
    out.update({f"grad:{k}": vals[v] for k, v in graph.grads.items()})
    out.update({f"update:{k}": vals[v] for k, v in graph.updates.items()})
    return out


def same_results(before: Graph, after: Graph, feeds: dict, env=None, rtol=1e-10, atol=1e-12):
    """Both graphs give the same outputs and gradients, name by name."""
    want, got = results(before, feeds, env=env), results(after, feeds, env=env)
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=atol, err_msg=key)


def with_params(g: Graph, rng, **given) -> dict:
    """Feeds: `given`, plus every param of `g` drawn from N(0, 0.25) with `rng`."""
    f = dict(given)
    for name, nid in g.params.items():
        f[name] = rng.standard_normal([int(s) for s in g.data(nid)["type"].shape]) * 0.5
    return f


def numeric_grad(graph: Graph, feeds: dict, name: str, eps=1e-6) -> np.ndarray:
    """Central finite differences of outputs['loss'] with respect to feed `name`, in float64."""
    x = np.array(feeds[name], dtype=np.float64)
    grad = np.zeros_like(x)
    loss = graph.outputs["loss"]
    for i in np.ndindex(x.shape):
        vals = []
        for sign in (1, -1):
            xi = x.copy()
            xi[i] += sign * eps
            vals.append(evaluate(graph, {**feeds, name: xi})[loss])
        grad[i] = (vals[0] - vals[1]) / (2 * eps)
    return grad


def new_graph():
    """A fresh graph and its builder."""
    g = Graph()
    return g, Builder(g)


def f32(*shape) -> TensorType:
    return TensorType(shape, "f32")


def f64(*shape) -> TensorType:
    return TensorType(shape, "f64")


def ops_of(graph: Graph) -> list[str]:
    """The ops of the compute nodes in topological order."""
    return [
        graph.data(n)["op"]
        for n in graph.topo_order()
        if graph.data(n)["op"] not in ("input", "param", "const")
    ]


def checked(fn, graph: Graph) -> Graph:
    """Run a pass on a verified graph, check it left the caller's graph alone, verify the result."""
    verify(graph)
    before = (sorted(graph.g.nodes(data="op")), dict(graph.outputs), dict(graph.grads))
    out = fn(graph)
    assert (sorted(graph.g.nodes(data="op")), dict(graph.outputs), dict(graph.grads)) == before
    verify(out)
    return out
