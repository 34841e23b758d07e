"""Dead-code elimination: keep what the roots (outputs, updates, grads) need."""

from __future__ import annotations

from dslc.ir.graph import Graph


def dce(graph: Graph) -> Graph:
    """A copy without the nodes no output, update or gradient reads.

    `input` and `param` nodes stay even when unused: they are the model's interface and
    its state (feeds and checkpoints name them).
    """
    g = graph.copy()
    live = set(g.inputs.values()) | set(g.params.values())
    stack = g.roots()
    while stack:
        n = stack.pop()
        if n not in live:
            live.add(n)
            stack.extend(g.data(n)["inputs"])
    g.g.remove_nodes_from([n for n in list(g.g.nodes) if n not in live])
    return g
