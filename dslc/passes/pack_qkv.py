"""Compute self-attention's q, k and v projections as one matmul of the packed weights.

The `attention` layer projects its input three times (`q = x |> dense(d)`, `k = ...`,
`v = ...`): three GEMMs that each read x, three bias adds, and in the backward three GEMMs
for d x added up by a fourth kernel, three for the weights, three bias sums. This pass
(after `attention` has made the chain one node, before autodiff) puts one projection in
their place when q, k and v are each `transpose(reshape(x @ W + b))` of the same x, with
nothing else reading the steps in between:

    w = concat(W_q, W_k, W_v, axis = 1)           # [D, 3d], per step (3 * D * d values)
    y = x @ w + concat(b_q, b_k, b_v)             # [..., T, 3d]
    y = reshape(y, [..., T, 3, heads, hd])
    q, k, v = transpose(y[:, :, i], [0, 2, 1, 3]) for i = 0, 1, 2   # views

The parameters stay three (checkpoints, names and optimizer state do not change); their
gradients are slices of the packed weight's. `attention_grad` writes dq, dk, dv in the
packed layout ([B, T, 3, heads, hd]), so once `simplify` has joined the three index
gradients back together, d y is attention_grad's result itself and d x one GEMM. The values
are those of the three projections (each output element is the same dot product).

It leaves an attention alone where q is read from other positions than k and v (the
`sink_slices` pass cuts a [CLS]-only last layer's q to one row) or any step has another
reader. Each packed attention is listed in `graph.meta["pack_qkv"]`, each one left in
`graph.meta["pack_qkv_report"]` with the reason, for `dslc compile --explain`.
"""

from __future__ import annotations

from dataclasses import dataclass

from dslc.ir.builder import Builder
from dslc.ir.graph import Graph

HEADS_FIRST = (0, 2, 1, 3)  # [B, T, heads, hd] -> [B, heads, T, hd]


@dataclass(frozen=True)
class Projection:
    """One of q, k, v as `transpose(reshape(x @ w (+ bias)))`: the nodes of the chain."""

    x: int
    w: int
    bias: int | None
    nodes: tuple[int, ...]  # the chain from the transpose up to the matmul
    shape: tuple  # the reshape's target, [B, T, heads, hd]


def pack_qkv(graph: Graph) -> Graph:
    """A copy with each self-attention's three projections made one."""
    g = graph.copy()
    b = Builder(g)
    packed, report = [], []
    for nid in g.topo_order():
        if g.data(nid)["op"] != "attention":
            continue
        d = g.data(nid)
        ps = [_projection(g, nid, d["inputs"][i]) for i in range(3)]
        why = _why_not(g, ps)
        if why is not None:
            report.append({"node": nid, "span": d["span"], "scope": d["scope"], "reason": why})
            continue
        first = g.data(ps[0].nodes[-1])  # q's matmul: the layer's source line
        with b.at(span=first["span"], scope=d["scope"]):
            qkv = _packed(b, ps)
        g.set_inputs(nid, tuple(qkv) + tuple(d["inputs"][3:]))
        for p in ps:
            for n in p.nodes:  # the old chains, transpose first: each now unread
                g.remove(n)
        packed.append({"node": nid, "span": first["span"], "scope": d["scope"]})
    g.meta["pack_qkv"] = packed
    g.meta["pack_qkv_report"] = report
    return g


def _projection(g: Graph, attention: int, t: int) -> Projection | None:
    """The chain of operand `t` of `attention` if it is a packable projection, else None."""
    dt = g.data(t)
    if dt["op"] != "transpose" or tuple(dt["attrs"].get("perm") or ()) != HEADS_FIRST:
        return None
    if g.sole_user(t) != attention:
        return None
    r = dt["inputs"][0]
    dr = g.data(r)
    if dr["op"] != "reshape" or dr["type"].rank != 4 or g.sole_user(r) != t:
        return None
    y = dr["inputs"][0]
    dy = g.data(y)
    if dy["type"].rank != 3 or g.sole_user(y) != r:
        return None
    bias, mm = None, y
    if dy["op"] == "add":
        a, c = dy["inputs"]
        if g.data(a)["op"] != "matmul":
            a, c = c, a
        if g.data(c)["type"].rank != 1 or g.data(c)["type"].shape != dy["type"].shape[-1:]:
            return None
        bias, mm = c, a
        if g.sole_user(mm) != y:
            return None
    dm = g.data(mm)
    if dm["op"] != "matmul" or dm["type"] != dy["type"]:
        return None
    x, w = dm["inputs"]
    if g.data(w)["type"].rank != 2 or g.data(x)["type"].rank != 3:
        return None
    chain = (t, r) + ((y, mm) if bias is not None else (mm,))
    return Projection(x, w, bias, chain, tuple(dr["attrs"]["shape"]))


def _why_not(g: Graph, ps: list[Projection | None]) -> str | None:
    """Why these three chains cannot be packed, or None when they can."""
    if any(p is None for p in ps):
        return "q, k and v are not each `x @ W (+ b)` split into heads, read by the attention alone"
    q = ps[0]
    if any(p.x != q.x for p in ps):
        return (
            "q, k and v are projected from different tensors (cross-attention, or queries "
            "cut to the positions a slice keeps)"
        )
    wt = [g.data(p.w)["type"] for p in ps]
    if any(p.shape != q.shape or (p.bias is None) != (q.bias is None) for p in ps) or any(
        t != wt[0] for t in wt
    ):
        return "the projections differ in width, dtype or bias"
    if len({n for p in ps for n in p.nodes}) != 3 * len(q.nodes):
        return "the projections share steps"
    return None


def _packed(b: Builder, ps: list[Projection]) -> list[int]:
    """q, k, v as views of one projection by the packed weights."""
    y = b.op("matmul", ps[0].x, b.op("concat", *(p.w for p in ps), axis=1))
    if ps[0].bias is not None:
        y = b.op("add", y, b.op("concat", *(p.bias for p in ps), axis=0))
    s = ps[0].shape
    y = b.op("reshape", y, shape=tuple(s[:2]) + (len(ps),) + tuple(s[2:]))
    return [
        b.op("transpose", b.op("index", y, axis=2, i=i), perm=HEADS_FIRST) for i in range(len(ps))
    ]
