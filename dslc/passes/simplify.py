"""Algebraic simplification: local (pattern, replacement) rewrites applied to a fixed point."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dslc.ir.builder import Builder
from dslc.ir.graph import GRAPH_OPS, Graph

MAX_ROUNDS = 20

# --- patterns --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Var:
    """Matches any node and binds it (or its attribute value) to `name`."""

    name: str


@dataclass(frozen=True)
class Const:
    """Matches a const node whose every element equals `value`."""

    value: float


@dataclass(frozen=True)
class P:
    """Matches `op(*args)` whose attributes match `attrs` (literal, Var, or predicate)."""

    op: str
    args: tuple
    attrs: dict = field(default_factory=dict)

    def __init__(self, op, *args, **attrs):
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "args", args)
        object.__setattr__(self, "attrs", attrs)


class Match(dict):
    """Bindings of one match, plus the graph and a builder at the matched node's location."""

    def __init__(self, g: Graph, b: Builder):
        super().__init__()
        self.g, self.b = g, b

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def type(self, name):
        return self.g.data(self[name])["type"]


def match(pat, nid: int, m: Match) -> bool:
    d = m.g.data(nid)
    if isinstance(pat, Var):
        return m.setdefault(pat.name, nid) == nid
    if isinstance(pat, Const):
        return d["op"] == "const" and bool(np.all(np.asarray(d["attrs"]["value"]) == pat.value))
    if d["op"] != pat.op or len(d["inputs"]) != len(pat.args):
        return False
    if not all(match(a, i, m) for a, i in zip(pat.args, d["inputs"])):
        return False
    for key, want in pat.attrs.items():
        have = d["attrs"].get(key)
        if isinstance(want, Var):
            if m.setdefault(want.name, have) != have:
                return False
        elif callable(want):
            if not want(have, m):
                return False
        elif have != want:
            return False
    return True


# --- predicates and replacements -------------------------------------------------------------


def same_shape_as_x(shape, m) -> bool:
    return tuple(shape) == m.type("x").shape


def same_dtype_as_x(dtype, m) -> bool:
    return dtype == m.type("x").dtype


def _perm(perm, rank: int) -> tuple[int, ...]:
    return tuple(reversed(range(rank))) if perm is None else tuple(p % rank for p in perm)


def identity_perm(perm, m) -> bool:
    rank = m.type("x").rank
    return _perm(perm, rank) == tuple(range(rank))


def compose_transposes(m) -> int:
    rank = m.type("x").rank
    p, q = _perm(m.p, rank), _perm(m.q, rank)
    return m.b.op("transpose", m.x, perm=tuple(p[j] for j in q))  # z[j] = y[q[j]] = x[p[q[j]]]


def reshape_once(m) -> int:
    return m.b.op("reshape", m.x, shape=m.s)


X = Var("x")

RULES = [
    (P("mul", X, Const(1)), X),  # x * 1 = x
    (P("mul", Const(1), X), X),  # 1 * x = x
    (P("add", X, Const(0)), X),  # x + 0 = x
    (P("add", Const(0), X), X),  # 0 + x = x
    (P("sub", X, Const(0)), X),  # x - 0 = x
    (P("div", X, Const(1)), X),  # x / 1 = x
    (P("scale", X, c=1.0), X),  # x * 1 = x
    (P("add_scalar", X, c=0.0), X),  # x + 0 = x
    (P("pow_scalar", X, p=1.0), X),  # x ^ 1 = x
    (P("neg", P("neg", X)), X),  # -(-x) = x
    (P("transpose", X, perm=identity_perm), X),  # x^id = x
    (P("transpose", P("transpose", X, perm=Var("p")), perm=Var("q")), compose_transposes),
    # ^ (x^p)^q = x^(p o q)
    (P("reshape", X, shape=same_shape_as_x), X),  # reshape(x, shape(x)) = x
    (P("reshape", P("reshape", X), shape=Var("s")), reshape_once),
    # ^ reshape(reshape(x, s1), s) = reshape(x, s): row-major order is kept by both
    (P("sum_to", X, shape=same_shape_as_x), X),  # sum_to(x, shape(x)) = x
    (P("broadcast_to", X, shape=same_shape_as_x), X),  # broadcast_to(x, shape(x)) = x
    (P("cast", X, dtype=same_dtype_as_x), X),  # cast(x, dtype(x)) = x
]


# --- the pass --------------------------------------------------------------------------------


def simplify(graph: Graph, rules=RULES) -> Graph:
    """A copy with every rule applied wherever it matches, until nothing changes."""
    g = graph.copy()
    b = Builder(g)
    by_op: dict[str, list] = {}
    for rule in rules:
        by_op.setdefault(rule[0].op, []).append(rule)
    roots = set(g.roots())
    for _ in range(MAX_ROUNDS):
        changed = False
        for nid in g.topo_order():
            if nid not in g or g.data(nid)["op"] not in by_op:
                continue
            new = rewrite(g, b, nid, by_op[g.data(nid)["op"]])
            if new is None:
                continue
            g.replace_uses(nid, new)
            roots = set(g.roots())
            _drop_dead(g, nid, roots)
            changed = True
        if not changed:
            break
    return g


def rewrite(g: Graph, b: Builder, nid: int, rules) -> int | None:
    """The id of the first rule's replacement for `nid` that keeps its type, or None."""
    d = g.data(nid)
    for pattern, replacement in rules:
        m = Match(g, b)
        if not match(pattern, nid, m):
            continue
        with b.at(span=d["span"], scope=d["scope"]):
            new = m[replacement.name] if isinstance(replacement, Var) else replacement(m)
        if new is not None and new != nid and g.data(new)["type"] == d["type"]:
            return new
        if new is not None and new != nid and not g.users(new) and new not in g.roots():
            g.remove(new)  # built but unusable: the replacement would change the type
    return None


def _drop_dead(g: Graph, nid: int, roots: set[int]) -> None:
    """Remove `nid` and the producers only it used, stopping at graph-level ops and roots."""
    stack = [nid]
    while stack:
        n = stack.pop()
        if n not in g or g.users(n) or n in roots or g.data(n)["op"] in GRAPH_OPS:
            continue
        operands = list(g.data(n)["inputs"])
        g.remove(n)
        stack.extend(operands)
