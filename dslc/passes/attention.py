"""Find scaled dot-product attention in the graph and make it one `attention` node.

The `attention` layer is a block of primitives:

    p = softmax(where(mask, q @ transpose(k) * scale, fill), axis = -1)    # [B, H, T, S]
    y = p @ v

Run as written, it writes the [B, H, T, S] scores and reads them back three times, and its
backward keeps the weights p between the passes. This pass (before autodiff) replaces each
such chain by `attention(q, k, v, *masks, scale=, fills=)`, whose kernel keeps each
(batch, head) pair's scores in cache and whose gradient (`attention_grad`) computes the
weights again instead of storing them. Its result is [B, T, H, e], so the head merge that
follows (`transpose` back, `reshape` to [B, T, H*e]) becomes views once `simplify` cancels
the two transposes.

It applies when: the softmax is over the last axis of a rank-4 float tensor and only the
product with v reads it (attention dropout multiplies the weights: no match); every step
between the product q k^T and the softmax (`scale`, `where` with a scalar constant fill)
is read only by the next one; and there are at most two masks, each bool. (The fused
backward, `attention_grad`, covers self-attention, where q, k and v have one shape; other
shapes get a backward made of primitives.)
Each softmax over rank-4 scores that it did not replace is recorded in
`graph.meta["attention_report"]` with the reason, for `dslc compile --explain`.
"""

from __future__ import annotations

from dslc.ir.builder import Builder
from dslc.ir.graph import Graph
from dslc.ir.types import is_float

MAX_MASKS = 2


def attention(graph: Graph) -> Graph:
    """A copy with each attention chain replaced by one `attention` node."""
    g = graph.copy()
    report = []
    for nid in g.topo_order():
        if nid not in g or g.data(nid)["op"] != "softmax":
            continue
        found = _match(g, nid)
        if found is None:  # not attention's softmax at all: nothing to report
            continue
        if isinstance(found, str):
            d = g.data(nid)
            report.append({"node": nid, "span": d.get("span"), "reason": found})
            continue
        _replace(g, nid, *found)
    g.meta["attention_report"] = report
    return g


def _scalar_const(g: Graph, nid: int) -> float | None:
    """The value of a scalar constant (or of a broadcast of one), else None."""
    d = g.data(nid)
    if d["op"] == "broadcast_to":
        d = g.data(d["inputs"][0])
    if d["op"] != "const" or d["type"].rank != 0:
        return None
    try:
        return float(d["attrs"]["value"])
    except (TypeError, ValueError):
        return None


def _match(g: Graph, sm: int):
    """(q, k^T, v, masks, fills, scale, chain, product) of the attention around softmax `sm`;
    the reason there is none; or None when `sm` is not over the last axis of rank-4 scores."""
    d = g.data(sm)
    t = d["type"]
    if t.rank != 4 or d["attrs"].get("axis") not in (-1, 3) or not is_float(t.dtype):
        return None
    product = g.sole_user(sm)
    pd = g.data(product) if product is not None else None
    if pd is None or pd["op"] != "matmul" or pd["inputs"][0] != sm:
        return "the weights are read by more than their product with v (dropout?)"
    chain, masks, fills, scale = [sm], [], [], 1.0
    x = d["inputs"][0]
    while g.data(x)["op"] == "where":
        m, val, fill = g.data(x)["inputs"]
        f = _scalar_const(g, fill)
        if f is None or g.data(m)["type"].dtype != "bool":
            return "a `where` before the softmax is not a bool mask with a scalar fill"
        if g.sole_user(x) != chain[-1]:
            return "the masked scores are read elsewhere too"
        chain.append(x)
        masks.insert(0, m)
        fills.insert(0, f)
        x = val
    if len(masks) > MAX_MASKS:
        return f"more than {MAX_MASKS} masks"
    if g.data(x)["op"] == "scale":
        if g.sole_user(x) != chain[-1]:
            return "the scaled scores are read elsewhere too"
        scale = float(g.data(x)["attrs"]["c"])
        chain.append(x)
        x = g.data(x)["inputs"][0]
    qk = g.data(x)
    if qk["op"] != "matmul" or g.sole_user(x) != chain[-1]:
        return "the scores are not a product q @ k^T read only by the softmax"
    chain.append(x)
    q, kt = qk["inputs"]
    v = pd["inputs"][1]
    qt, ktt, vt = (g.data(i)["type"] for i in (q, kt, v))
    if qt.rank != 4 or ktt.rank != 4 or vt.rank != 4 or len({qt.dtype, ktt.dtype, vt.dtype}) > 1:
        return "q, k^T and v are not rank-4 tensors of one dtype"
    if not (qt.shape[:2] == ktt.shape[:2] == vt.shape[:2] and qt.shape[3] == ktt.shape[2]):
        return "q, k and v do not share batch and head axes"
    if vt.shape[2] != ktt.shape[3]:
        return "k and v differ in length"
    return q, kt, v, masks, fills, scale, chain, product


def _replace(g: Graph, sm: int, q, kt, v, masks, fills, scale, chain, product) -> None:
    d = g.data(sm)
    b = Builder(g, d.get("span"), d.get("scope", ""))
    ktd = g.data(kt)
    if ktd["op"] == "transpose" and tuple(ktd["attrs"]["perm"]) == (0, 1, 3, 2):
        k = ktd["inputs"][0]
    else:
        k = b.op("transpose", kt, perm=(0, 1, 3, 2))
    y = b.op("attention", q, k, v, *masks, scale=scale, fills=tuple(fills))
    g.replace_uses(product, b.op("transpose", y, perm=(0, 2, 1, 3)))
    fill_nodes = [g.data(n)["inputs"][2] for n in chain if g.data(n)["op"] == "where"]
    behind = [
        i for f in fill_nodes if g.data(f)["op"] == "broadcast_to" for i in g.data(f)["inputs"]
    ]
    for n in [product] + chain:
        g.remove(n)
    for n in [kt] + fill_nodes + behind:
        _remove_if_unused(g, n)


def _remove_if_unused(g: Graph, nid: int) -> None:
    """Drop a view or constant the replaced chain was the only reader of."""
    if nid in g and not g.users(nid) and nid not in g.outputs.values():
        if g.data(nid)["op"] in ("const", "transpose", "broadcast_to"):
            g.remove(nid)
