"""Find layer normalisation in the graph and make it one `layer_norm` node.

The `layer_norm` layer is a block of primitives:

    (x - mean(x, axis = -1, keepdims = true)) * rsqrt(var(x, axis = -1, keepdims = true) + eps)
        * gamma + beta

Its forward is seven operations, and its backward about fifteen more, several of which the
fusion pass cannot join because their values have more than one reader. This pass (before
autodiff) replaces each such chain by `layer_norm(x, gamma, beta, eps=)`, one pass over the
rows; its gradient (`layer_norm_grad`) is one more, computing the row statistics again.

It applies when every intermediate value of the chain is read only by the next step, the
mean and the variance are over the last axis with kept axes, and gamma and beta are [D]
tensors of x's dtype (either operand order of the product and the sum). Chains that start
like one but do not match are recorded in `graph.meta["layer_norm_report"]` with the reason.
"""

from __future__ import annotations

from dslc.ir.builder import Builder
from dslc.ir.graph import Graph
from dslc.ir.types import is_float


def layer_norm(graph: Graph) -> Graph:
    """A copy with each layer-normalisation chain replaced by one `layer_norm` node."""
    g = graph.copy()
    report = []
    for nid in g.topo_order():
        if nid not in g or g.data(nid)["op"] != "mean":
            continue
        found = _match(g, nid)
        if found is None:
            continue
        if isinstance(found, str):
            report.append({"node": nid, "span": g.data(nid).get("span"), "reason": found})
            continue
        _replace(g, *found)
    g.meta["layer_norm_report"] = report
    return g


def _last_axis(d: dict) -> bool:
    """Whether a reduction is over the last axis only, keeping it."""
    a, rank = d["attrs"], d["type"].rank
    return (
        rank > 0
        and a.get("keepdims") is True
        and tuple(a.get("axes") or ()) in ((-1,), (rank - 1,))
    )


def _other(d: dict, nid: int) -> int:
    a, b = d["inputs"]
    return b if a == nid else a


def _match(g: Graph, mean: int):
    """(x, gamma, beta, eps, out, chain) of the layer norm whose mean is `mean`; a reason;
    or None when `mean` does not start one."""
    md = g.data(mean)
    x = md["inputs"][0]
    xt = g.data(x)["type"]
    if not (_last_axis(md) and is_float(xt.dtype)):
        return None
    sub = g.sole_user(mean)
    if sub is None or g.data(sub)["op"] != "sub" or g.data(sub)["inputs"] != (x, mean):
        return None  # not x - mean(x)
    norm = g.sole_user(sub)
    if norm is None or g.data(norm)["op"] != "mul":
        return "x - mean(x) is read by more than one product"
    rs = _other(g.data(norm), sub)
    rsd = g.data(rs)
    if rsd["op"] != "rsqrt" or g.sole_user(rs) != norm:
        return "x - mean(x) is not multiplied by rsqrt(var(x) + eps) alone"
    shift = rsd["inputs"][0]
    sd = g.data(shift)
    if sd["op"] != "add_scalar" or g.sole_user(shift) != rs:
        return "the variance is not shifted by a constant eps"
    var = sd["inputs"][0]
    vd = g.data(var)
    if vd["op"] != "var" or vd["inputs"] != (x,) or not _last_axis(vd) or g.sole_user(var) != shift:
        return "not the variance of x over its last axis"
    scaled = g.sole_user(norm)
    if scaled is None or g.data(scaled)["op"] != "mul":
        return "the normalised value is read by more than a product with gamma"
    shifted = g.sole_user(scaled)
    if shifted is None or g.data(shifted)["op"] != "add":
        return "the scaled value is read by more than a sum with beta"
    gamma, beta = _other(g.data(scaled), norm), _other(g.data(shifted), scaled)
    d = xt.shape[-1]
    for p in (gamma, beta):
        pt = g.data(p)["type"]
        if pt.shape != (d,) or pt.dtype != xt.dtype:
            return f"gamma and beta must be [{d}] of {xt.dtype}"
    eps = float(sd["attrs"]["c"])
    return x, gamma, beta, eps, shifted, [shifted, scaled, norm, rs, shift, var, sub, mean]


def _replace(g: Graph, x, gamma, beta, eps, out, chain) -> None:
    d = g.data(out)
    b = Builder(g, d.get("span"), d.get("scope", ""))
    g.replace_uses(out, b.op("layer_norm", x, gamma, beta, eps=eps))
    for n in chain:
        g.remove(n)
