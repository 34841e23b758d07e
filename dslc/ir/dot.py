"""Graphviz DOT text of a graph: nodes labelled with op and type, clusters by scope.

Plain text; render it with `dot -Tsvg` (no Python graphviz package needed).
"""

from __future__ import annotations

from dslc.ir.graph import Graph
from dslc.ir.printer import format_span, format_value
from dslc.ir.summary import body_ops, scope_path

STYLE = {
    "input": 'shape=invhouse, style=filled, fillcolor="#dbeafe"',
    "param": 'shape=ellipse, style=filled, fillcolor="#fef3c7"',
    "const": 'shape=plaintext, fontcolor="#6b7280"',
    "fused": 'shape=box, style="rounded,filled,bold", fillcolor="#dcfce7"',
}
DEFAULT_STYLE = 'shape=box, style="rounded"'


def quote(s: str) -> str:
    """A DOT string literal; newlines become centred line breaks."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def label(graph: Graph, nid: int) -> str:
    d = graph.data(nid)
    op, a, t = d["op"], d["attrs"], d["type"]
    if op == "input":
        return f"{a['name']}\n{t}"
    if op == "param":
        return f"@{a['name']}\n{t}"
    if op == "const":
        return format_value(a["value"]) if t.rank == 0 else f"const\n{t}"
    if op == "fused":
        ops = [n.op for n in body_ops(graph, nid)]
        head = "fused: " + " + ".join(ops[:6]) + (" + ..." if len(ops) > 6 else "")
        return f"%{nid} {head}\n{t}"
    return f"%{nid} {op}\n{t}"


def to_dot(graph: Graph, name: str = "model") -> str:
    """The graph as a DOT digraph; outputs, grads and updates are drawn as sink nodes."""
    lines = [
        f"digraph {quote(name)} {{",
        "  rankdir=TB;",
        '  node [fontname="Helvetica", fontsize=10];',
        '  edge [fontname="Helvetica", fontsize=8, color="#4b5563"];',
    ]
    # scope tree: path -> node ids directly in it; children nest as clusters
    tree: dict[tuple, list[int]] = {}
    order = graph.topo_order()
    for nid in order:
        d = graph.data(nid)
        path = () if d["op"] in ("input", "const") else scope_path(d.get("scope") or "")
        tree.setdefault(path, []).append(nid)
        for k in range(len(path)):
            tree.setdefault(path[:k], [])

    def node_line(nid: int, pad: str) -> str:
        d = graph.data(nid)
        attrs = [f"label={quote(label(graph, nid))}", STYLE.get(d["op"], DEFAULT_STYLE)]
        where = format_span(d.get("span"))
        if where:
            attrs.append(f"tooltip={quote(where)}")
        return f"{pad}n{nid} [{', '.join(attrs)}];"

    counter = iter(range(1_000_000))

    def emit(path: tuple, pad: str) -> None:
        for nid in tree[path]:
            lines.append(node_line(nid, pad))
        children = [p for p in tree if len(p) == len(path) + 1 and p[: len(path)] == path]
        for child in children:
            lines.append(f"{pad}subgraph cluster_{next(counter)} {{")
            lines.append(f"{pad}  label={quote('.'.join(child))};")
            lines.append(f'{pad}  style="rounded,dashed"; color="#9ca3af";')
            emit(child, pad + "  ")
            lines.append(f"{pad}}}")

    emit((), "  ")
    for nid in order:
        for k, src in enumerate(graph.data(nid)["inputs"]):
            lines.append(f'  n{src} -> n{nid} [label="{k}"];')
    sinks = 0
    for title, table in (("", graph.outputs), ("grad ", graph.grads), ("update ", graph.updates)):
        for key, nid in table.items():
            lines.append(
                f"  out{sinks} [label={quote(title + key)}, shape=doublecircle, fontsize=9, "
                'style=filled, fillcolor="#fee2e2"];'
            )
            lines.append(f"  n{nid} -> out{sinks};")
            sinks += 1
    lines.append("}")
    return "\n".join(lines) + "\n"
