"""Reverse-mode autodiff as a graph pass: append the backward graph of `outputs["loss"]`."""

from __future__ import annotations

import networkx as nx

from dslc.errors import DslcError, InternalError
from dslc.ir.builder import Builder
from dslc.ir.graph import Graph
from dslc.ops import REGISTRY

LEAVES = ("input", "param", "const")  # a `fused` node has no rule: differentiate before fusing


def autodiff(graph: Graph) -> Graph:
    """A copy of `graph` with d loss / d param in `grads` for every param the loss can train.

    Only trainable, non-frozen, float params that the loss depends on get a gradient, and
    only nodes on a path from such a param to the loss are differentiated. A param whose
    every path to the loss is non-differentiable (through `argmax`, comparisons...) gets
    none. Without a loss the graph is returned unchanged.
    """
    g = graph.copy()
    if "loss" not in g.outputs:
        return g
    loss = g.outputs["loss"]
    ltype = g.data(loss)["type"]
    if ltype.rank != 0 or not ltype.is_float:
        raise InternalError(f"the loss must be a float scalar, it is {ltype}", g.data(loss)["span"])

    trainable = set(g.trainable_params())
    wanted = {
        nid: name
        for name, nid in g.params.items()
        if name in trainable and g.data(nid)["type"].is_float
    }
    # differentiate only float values on a path from a wanted param to the loss
    upstream = nx.ancestors(g.g, loss) | {loss}
    downstream = set(wanted)
    frontier = list(wanted)
    while frontier:
        for user in g.g.successors(frontier.pop()):
            if user not in downstream:
                downstream.add(user)
                frontier.append(user)
    active = {n for n in upstream & downstream if g.data(n)["type"].is_float}
    if not active:
        return g

    b = Builder(g)
    with b.at(span=g.data(loss)["span"], scope=g.data(loss)["scope"]):
        grads: dict[int, int] = {loss: b.const(1.0, ltype.dtype)}  # d loss / d loss
    for nid in reversed([n for n in graph.topo_order() if n in active]):
        if nid not in grads or g.data(nid)["op"] in LEAVES:
            continue
        node = g.node(nid)
        prim = REGISTRY.get(node.op)
        if prim is None or prim.grad is None:
            raise InternalError(f"no gradient rule for `{node.op}`", node.span)
        # d loss / d operand_i, one entry per operand (None: no gradient flows)
        with b.at(span=node.span, scope=node.scope):
            try:
                operand_grads = prim.grad(b, node, grads[nid])
            except (DslcError, NotImplementedError) as e:
                raise InternalError(
                    f"the gradient rule of `{node.op}` failed: {getattr(e, 'message', e)}",
                    node.span,
                ) from e
            if len(operand_grads) != len(node.inputs):
                raise InternalError(
                    f"the gradient rule of `{node.op}` returned {len(operand_grads)} "
                    f"gradients for {len(node.inputs)} operands",
                    node.span,
                )
            for src, dsrc in zip(node.inputs, operand_grads):
                if dsrc is None or src not in active:
                    continue
                dsrc = _fit(b, dsrc, g.data(src)["type"], node)
                grads[src] = b.op("add", grads[src], dsrc) if src in grads else dsrc

    for nid, name in wanted.items():
        if nid in grads:
            g.grads[name] = grads[nid]
    return g


def _fit(b: Builder, dx: int, want, node) -> int:
    """Reduce a broadcast gradient to the operand's shape and cast it to its dtype."""
    have = b.type_of(dx)
    try:
        if have.shape != want.shape:
            dx = b.op("sum_to", dx, shape=want.shape)  # d/dx of broadcast: sum over copies
        if have.dtype != want.dtype:
            dx = b.op("cast", dx, dtype=want.dtype)
    except DslcError as e:
        raise InternalError(
            f"the gradient rule of `{node.op}` gave {have} for an operand of type {want}: "
            f"{e.message}",
            node.span,
        ) from e
    return dx
