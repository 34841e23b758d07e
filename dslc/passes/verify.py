"""The IR checker: the invariants every pass must keep; tests run it after every pass."""

from __future__ import annotations

import networkx as nx
import numpy as np

from dslc.errors import DslcError, InternalError
from dslc.ir.graph import GRAPH_OPS, Graph
from dslc.ir.types import TensorType
from dslc.ops import REGISTRY

MAX_LISTED = 12


def verify(graph: Graph) -> Graph:
    """Raise InternalError listing every broken invariant; return `graph` unchanged when sound."""
    problems = check(graph)
    if problems:
        shown = problems[:MAX_LISTED]
        more = len(problems) - len(shown)
        raise InternalError(
            f"IR verification failed: {problems[0]}",
            notes=shown[1:] + ([f"... and {more} more"] if more > 0 else []),
        )
    return graph


def check(graph: Graph, where: str = "") -> list[str]:
    """Every broken invariant of `graph` as a message (empty when sound)."""
    g = graph.g
    out: list[str] = []

    def bad(nid, msg):
        d = g.nodes[nid] if nid in g else {}
        op = d.get("op", "?")
        span = f" (from {d['span']})" if d.get("span") else ""
        out.append(f"{where}%{nid} `{op}`: {msg}{span}")

    for nid, d in g.nodes(data=True):
        missing = [k for k in ("op", "inputs", "attrs", "type") if k not in d]
        if missing:
            bad(nid, f"node data lacks {', '.join(missing)}")
            continue
        if not isinstance(d["type"], TensorType):
            bad(nid, f"type is {d['type']!r}, not a TensorType")
        inputs = d["inputs"]
        dangling = [i for i in inputs if i not in g]
        if dangling:
            bad(nid, f"operands {dangling} are not in the graph")
        want = sorted((src, pos) for pos, src in enumerate(inputs))
        have = sorted((src, key) for src, _, key in g.in_edges(nid, keys=True))
        if want != have:
            bad(nid, f"edges {have} do not mirror inputs {list(inputs)} (key = position)")

    if not nx.is_directed_acyclic_graph(g):
        cycle = nx.find_cycle(g)
        out.append(f"{where}the graph has a cycle through {[e[0] for e in cycle]}")
        return out  # type checks below assume a DAG
    if out:
        return out

    for nid, d in g.nodes(data=True):
        op = d["op"]
        if op in GRAPH_OPS:
            _check_graph_op(graph, nid, d, bad, out, where)
            continue
        prim = REGISTRY.get(op)
        if prim is None:
            bad(nid, "not a registered primitive")
            continue
        if prim.arity is not None and len(d["inputs"]) != prim.arity:
            bad(nid, f"takes {prim.arity} operand(s), has {len(d['inputs'])}")
            continue
        unknown = set(d["attrs"]) - set(prim.attrs)
        if unknown:
            bad(nid, f"unknown attributes {sorted(unknown)}")
            continue
        attrs = {**prim.attrs, **d["attrs"]}
        in_types = [g.nodes[i]["type"] for i in d["inputs"]]
        try:
            inferred = prim.infer(in_types, attrs)
        except DslcError as e:
            bad(nid, f"its operand types {[str(t) for t in in_types]} do not fit: {e.message}")
            continue
        if inferred != d["type"]:
            bad(nid, f"type {d['type']} differs from the inferred {inferred}")

    _check_tables(graph, bad, out, where)
    return out


def _check_graph_op(graph: Graph, nid, d, bad, out, where) -> None:
    op, attrs, typ = d["op"], d["attrs"], d["type"]
    if op != "fused" and d["inputs"]:
        bad(nid, "a graph-level op takes no operands")
    if op == "input":
        if attrs.get("role") not in ("input", "label"):
            bad(nid, f"role {attrs.get('role')!r} is not 'input' or 'label'")
    elif op == "param":
        for key in ("name", "trainable", "frozen"):
            if key not in attrs:
                bad(nid, f"param lacks attribute {key!r}")
    elif op == "const":
        if "value" not in attrs:
            bad(nid, "const lacks its value")
        elif any(not s.is_const for s in typ.shape) or np.shape(attrs["value"]) != tuple(
            s.value for s in typ.shape
        ):
            bad(nid, f"value of shape {np.shape(attrs['value'])} does not match type {typ}")
    elif op == "fused":
        body = attrs.get("body")
        if not isinstance(body, Graph):
            bad(nid, "fused node without a Graph `body`")
            return
        out.extend(check(body, where=f"{where}%{nid}.body "))
        ins = list(body.inputs.values())
        if len(ins) != len(d["inputs"]):
            bad(nid, f"has {len(d['inputs'])} operands but its body {len(ins)} inputs")
        else:
            for pos, (src, bi) in enumerate(zip(d["inputs"], ins)):
                outer = graph.g.nodes[src]["type"] if src in graph.g else None
                inner = body.data(bi)["type"]
                if outer != inner:
                    bad(nid, f"operand {pos} is {outer} but the body's input is {inner}")
        if set(body.outputs) != {"out"}:
            bad(nid, f"body outputs are {sorted(body.outputs)}, expected exactly 'out'")
        elif body.outputs["out"] in body and body.data(body.outputs["out"])["type"] != typ:
            bad(nid, f"body result is {body.data(body.outputs['out'])['type']}, node is {typ}")


def _check_tables(graph: Graph, bad, out, where) -> None:
    g = graph.g

    def entry(table, name, nid, op=None):
        if nid not in g:
            out.append(f"{where}{table}[{name!r}] points at missing node %{nid}")
            return False
        if op is not None and g.nodes[nid]["op"] != op:
            out.append(f"{where}{table}[{name!r}] points at a `{g.nodes[nid]['op']}`, not `{op}`")
            return False
        return True

    for name, nid in graph.inputs.items():
        if entry("inputs", name, nid, "input") and g.nodes[nid]["attrs"].get("name") != name:
            got = g.nodes[nid]["attrs"].get("name")
            out.append(f"{where}inputs[{name!r}] points at the input named {got!r}")
    for name, nid in graph.params.items():
        if entry("params", name, nid, "param") and g.nodes[nid]["attrs"].get("name") != name:
            got = g.nodes[nid]["attrs"].get("name")
            out.append(f"{where}params[{name!r}] points at the param named {got!r}")
    for name, nid in graph.outputs.items():
        entry("outputs", name, nid)
    for table, rows in (("updates", graph.updates), ("grads", graph.grads)):
        for name, nid in rows.items():
            if name not in graph.params:
                out.append(f"{where}{table}[{name!r}] names no parameter")
            elif entry(table, name, nid):
                want = g.nodes[graph.params[name]]["type"]
                have = g.nodes[nid]["type"]
                if want.shape != have.shape:
                    out.append(f"{where}{table}[{name!r}] is {have}, the param {want}")
