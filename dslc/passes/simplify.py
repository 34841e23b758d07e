"""Algebraic simplification: local (pattern, replacement) rewrites applied to a fixed point.

Besides identities (x * 1, transposes that cancel, reshapes that chain), it rejoins a
gradient that autodiff builds in pieces: the gradient of a tensor read through one index or
slice per position of an axis is a sum of `slice_grad`s, each the zeros of the whole shape
with one piece written in. Adjacent pieces are joined into one `slice_grad` of their
`concat` (`join_slice_grads`), one that covers the whole axis is its operand, and a `concat`
of every index of one tensor, in order, is that tensor (`whole_from_indexes`). The packed
q, k, v projection (`pack_qkv`) relies on this: its gradient is attention_grad's result
itself, a view, not three zero-filled tensors added up.
"""

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

    def __init__(self, g: Graph, b: Builder, nid: int | None = None):
        super().__init__()
        self.g, self.b, self.nid = g, b, nid  # nid: the node the pattern's root matched

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
    if d["op"] != pat.op:
        return False
    if pat.args != (...,):  # P(op, ...) takes any operands, unmatched
        if len(d["inputs"]) != len(pat.args):
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


def steps_of_one(axis_slices, m) -> bool:
    return all(step == 1 for _, _, _, step in axis_slices)


def _piece(g: Graph, nid: int):
    """(axis, start, stop) of a `slice_grad` that writes one piece of one axis with step 1,
    in concrete non-negative positions, or None."""
    d = g.data(nid)
    if d["op"] != "slice_grad" or len(d["attrs"]["axis_slices"]) != 1:
        return None
    axis, start, stop, step = d["attrs"]["axis_slices"][0]
    shape = d["type"].shape
    axis %= len(shape)
    n = shape[axis]
    if step != 1 or not n.is_const:
        return None
    start = 0 if start is None else start
    stop = n.value if stop is None else stop
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (start, stop)):
        return None
    start, stop = (v + n.value if v < 0 else v for v in (start, stop))
    return (axis, start, stop) if 0 <= start <= stop <= n.value else None


def _parts(g: Graph, nid: int, axis: int) -> list[int]:
    """The operand of a piece, or the operands of the `concat` along `axis` it is (when the
    piece is its only reader)."""
    d = g.data(nid)
    if (
        d["op"] == "concat"
        and d["attrs"]["axis"] % d["type"].rank == axis
        and g.sole_user(nid) is not None
    ):
        return list(d["inputs"])
    return [nid]


def join_slice_grads(m) -> int | None:
    """slice_grad(a, S, [i:j]) + slice_grad(b, S, [j:k]) = slice_grad(concat(a, b), S, [i:k])
    on one axis, when the sum is the only reader of each piece and neither is an output."""
    g = m.g
    lo, hi = m.u, m.w
    pl, ph = _piece(g, lo), _piece(g, hi)
    if pl is None or ph is None or lo == hi or pl[0] != ph[0]:
        return None
    if g.data(lo)["type"] != g.data(hi)["type"]:
        return None
    if pl[1] > ph[1]:
        (lo, pl), (hi, ph) = (hi, ph), (lo, pl)
    if pl[2] != ph[1] or g.sole_user(lo) is None or g.sole_user(hi) is None:
        return None
    if {lo, hi} & set(g.roots()):  # a piece that is also an output stays
        return None
    axis = pl[0]
    parts = _parts(g, g.data(lo)["inputs"][0], axis) + _parts(g, g.data(hi)["inputs"][0], axis)
    joined = m.b.op("concat", *parts, axis=axis)
    shape = g.data(lo)["attrs"]["shape"]
    return m.b.op("slice_grad", joined, shape=shape, axis_slices=((axis, pl[1], ph[2], 1),))


def whole_from_indexes(m) -> int | None:
    """concat(x[.., 0, ..], x[.., 1, ..], ..., x[.., n-1, ..]) along the indexed axis (each
    index reshaped back to a length-1 axis) = x."""
    g = m.g
    d = g.data(m.nid)
    rank = d["type"].rank
    axis = d["attrs"]["axis"] % rank
    src = None
    for i, r in enumerate(d["inputs"]):
        dr = g.data(r)
        if dr["op"] != "reshape" or g.data(dr["inputs"][0])["op"] != "index":
            return None
        di = g.data(dr["inputs"][0])
        x = di["inputs"][0]
        xt = g.data(x)["type"]
        if src not in (None, x) or xt.rank != rank:
            return None
        src = x
        if di["attrs"]["axis"] % rank != axis or di["attrs"]["i"] != i:
            return None
        if dr["type"].shape != xt.shape[:axis] + (1,) + xt.shape[axis + 1 :]:
            return None
    n = g.data(src)["type"].shape[axis] if src is not None else None
    if n is None or not n.is_const or n.value != len(d["inputs"]):
        return None
    return src


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
    # gradients of reads through indexes or slices, joined back together
    (P("add", Var("u"), Var("w")), join_slice_grads),
    (P("slice_grad", X, shape=same_shape_as_x, axis_slices=steps_of_one), X),
    # ^ a piece as large as the whole, with step 1, is the whole
    (P("concat", ...), whole_from_indexes),
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
        m = Match(g, b, nid)
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
