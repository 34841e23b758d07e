"""Text IR: one equation per line, like a jaxpr.

    %7: f32[N, 128] = matmul %x, @layers.0.W    # mlp_digits.nn:12:9  (layers.0)

Operands print as `%x` for the input named x, `@name` for parameters, inline values for
constants and `%id` for everything else. Attributes follow in braces; fused nodes print
their body indented under them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np

from dslc.errors import Span
from dslc.ir.dims import Dim, format_shape, numel
from dslc.ir.graph import Graph
from dslc.ir.summary import format_count

INDENT = "  "
MAX_INLINE_ELEMS = 8  # a constant array with more elements prints as `f32[64, 64]{...}`
FUSED_SHOWN_BELOW = ("body", "members", "kinds")


def format_value(v) -> str:
    """One attribute value the way the text IR writes it: `(1,)`, `true`, `"tanh"`, `N*T`."""
    if v is None:
        return "none"
    if isinstance(v, bool | np.bool_):
        return "true" if v else "false"
    if isinstance(v, Dim):
        return str(v) if v.is_const or v.is_symbol else f"({v})"
    if isinstance(v, int | np.integer):
        return str(int(v))
    if isinstance(v, float | np.floating):
        r = repr(float(v))  # exact when short; 6 significant digits beyond (the JSON is exact)
        return r if len(r) <= 10 else f"{float(v):.6g}"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, tuple | list):
        items = [format_value(x) for x in v]
        if isinstance(v, tuple):
            return "(" + ", ".join(items) + ("," if len(items) == 1 else "") + ")"
        return "[" + ", ".join(items) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}={format_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, np.ndarray):
        return format_array(v)
    if isinstance(v, Graph):
        return f"<graph {len(v)} nodes>"
    return str(v)


def format_array(a: np.ndarray, dtype: str | None = None) -> str:
    """A constant array: its values when small, else only its type."""
    from dslc.ir.types import dtype_name

    try:
        dt = dtype or dtype_name(a.dtype)
    except KeyError:
        dt = str(a.dtype)
    head = f"{dt}{format_shape(tuple(Dim.const(d) for d in a.shape))}"
    if a.size > MAX_INLINE_ELEMS:
        return head + "{...}"
    return head + "{" + ", ".join(format_value(x.item()) for x in a.reshape(-1)) + "}"


def format_attrs(attrs: Mapping, skip: tuple[str, ...] = ()) -> str:
    items = [(k, v) for k, v in attrs.items() if k not in skip]
    if not items:
        return ""
    return "{" + ", ".join(f"{k}={format_value(v)}" for k, v in items) + "}"


def format_span(span: Span | None) -> str:
    if span is None:
        return ""
    return f"{os.path.basename(span.file)}:{span.line}:{span.col}"


class _Printer:
    def __init__(self, graph: Graph):
        self.graph = graph

    def ref(self, nid: int) -> str:
        """How an operand is written where it is used."""
        d = self.graph.data(nid)
        op = d["op"]
        if op == "input":
            return "%" + str(d["attrs"]["name"])
        if op == "param":
            return "@" + str(d["attrs"]["name"])
        if op == "const":
            v = d["attrs"]["value"]
            if isinstance(v, np.ndarray):
                return format_array(v, d["type"].dtype)
            return format_value(v)
        return f"%{nid}"

    def equation(self, nid: int) -> tuple[str, str]:
        """(`%7: f32[N, 128] = matmul %x, @W {..}`, `# file:line:col  (scope)`)."""
        d = self.graph.data(nid)
        lhs = f"%{nid}: {d['type']}"
        rhs = d["op"]
        if d["inputs"]:
            rhs += " " + ", ".join(self.ref(i) for i in d["inputs"])
        # a fused node's body prints below it; its members and kinds are read off that body
        attrs = format_attrs(d["attrs"], skip=FUSED_SHOWN_BELOW if d["op"] == "fused" else ())
        if attrs:
            rhs += " " + attrs
        where = format_span(d.get("span"))
        scope = d.get("scope") or ""
        comment = ""
        if where or scope:
            comment = "# " + where + (f"  ({scope})" if scope else "")
        return f"{lhs} = {rhs}", comment.rstrip()

    def body_lines(self, depth: int) -> list[str]:
        """Every equation in topological order; fused bodies nested below their node."""
        g = self.graph
        order = [n for n in g.topo_order() if g.data(n)["op"] not in ("input", "param", "const")]
        eqs = [self.equation(n) for n in order]
        width = min(max((len(e) for e, _ in eqs), default=0), 72)
        pad = INDENT * depth
        lines = []
        for nid, (eq, comment) in zip(order, eqs):
            lines.append((pad + eq.ljust(width) + "    " + comment) if comment else pad + eq)
            body = g.data(nid)["attrs"].get("body") if g.data(nid)["op"] == "fused" else None
            if isinstance(body, Graph):
                lines += _Printer(body).nested(depth + 2)
        return lines

    def nested(self, depth: int) -> list[str]:
        """A fused node's body: its operands, its equations, what it returns."""
        g = self.graph
        pad = INDENT * depth
        ins = ", ".join(f"{self.ref(n)}: {g.data(n)['type']}" for n in g.inputs.values())
        lines = [pad + f"lambda {ins}:"]
        lines += self.body_lines(depth + 1)
        outs = ", ".join(self.ref(n) for n in g.outputs.values())
        lines.append(pad + INDENT + f"return {outs}")
        return lines


def format_graph(graph: Graph, title: str | None = None) -> str:
    """The whole graph as text: header (inputs, params), equations, footer (outputs...)."""
    p = _Printer(graph)
    n_eqs = sum(1 for n in graph.nodes() if n.op not in ("input", "param", "const"))
    lines = []
    if title:
        lines.append(f"# {title}")
    lines.append(f"# {n_eqs} equations, {len(graph.params)} parameters")
    lines.append("inputs:")
    for name, nid in graph.inputs.items():
        d = graph.data(nid)
        role = d["attrs"].get("role", "input")
        lines.append(INDENT + f"%{name}: {d['type']}" + (f"  ({role})" if role != "input" else ""))
    lines.append("params:")
    for name, nid in graph.params.items():
        d = graph.data(nid)
        a = d["attrs"]
        init = str(a.get("init", ""))
        if a.get("init_args"):
            init += "(" + ", ".join(format_value(x) for x in a["init_args"]) + ")"
        flags = []
        if not a.get("trainable", True):
            flags.append("state")
        if a.get("frozen", False):
            flags.append("frozen")
        count = format_count(numel(d["type"].shape))
        text = f"@{name}: {d['type']} = {init}    {count}"
        lines.append(INDENT + text + ("  " + " ".join(flags) if flags else ""))
    lines.append("equations:")
    lines += p.body_lines(1)
    for title_, table, prefix in (
        ("outputs", graph.outputs, ""),
        ("grads", graph.grads, "@"),
        ("updates", graph.updates, "@"),
    ):
        if table or title_ == "outputs":
            lines.append(f"{title_}:")
            for name, nid in table.items():
                lines.append(INDENT + f"{prefix}{name} = {p.ref(nid)}: {graph.data(nid)['type']}")
    return "\n".join(lines) + "\n"
