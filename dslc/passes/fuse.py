"""Operator fusion: group nodes by their registry `kind`, then wrap each group in a `fused` node.

Grouping (TVM style, kinds only, never op names) grows each group backwards from a root,
visiting candidates in decreasing topological order, so that every user of a candidate has
been decided before the candidate is. A producer joins when

- its kind is elementwise, broadcast, reduction or injective (injective ops only at the
  group's edge: they remap a value read from outside, never one computed inside; and only
  the views the code generator reads there, `dslc.codegen.expr.EDGE_VIEWS`);
- every user of its value is in the group and nothing outside the graph reads it (a fused
  node has one result), or it is *recomputed*: an elementwise or broadcast op whose operands
  are all computed outside fusable groups (a matmul's or convolution's result, a parameter)
  and at most one of them of its own size, such as the bias add between a matmul and its
  activation, whose value the activation reads forward and its gradient backward. Each group
  that reads it then computes it from its operands (reading the same amount: the operand
  instead of the value), and its own kernel and the value's buffer are gone. This applies
  only when every reader of its value is a member of such a group; otherwise it stays a
  kernel of its own;
- its shape is the group's iteration domain `D`, or, when the group reduces axes `A` of `D`,
  the reduced shape (with or without kept dims). Reductions must reduce the same axes `A`
  of the same domain: a softmax, a layer-norm or a sum of squares becomes one group whose
  `pattern` is `row_reduce` (A trailing: one row per program) or `reduce`.

Every candidate that could not join is recorded with its reason in
`graph.meta["fusion_report"]`, for `dslc compile --explain`. The fused node's attrs are
`body` (a Graph: `input` nodes `in0, in1...` for the operands, scalar consts inlined, the
result as `outputs["out"]`), `kinds`, `members` ((op, span, scope) per member, in
topological order), `pattern`, `domain` and `reduce_axes`. Kernels are the runtime's job:
`graph.meta["codegen_report"]` lists the fused nodes that the code generator
(`dslc.codegen`) cannot make one kernel of, each with its reason; they run as NumPy calls.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

from dslc.codegen.expr import EDGE_VIEWS, Unsupported, lower
from dslc.ir.dims import Shape
from dslc.ir.graph import Graph
from dslc.ops import REGISTRY

FUSABLE = ("elementwise", "broadcast", "reduction", "injective")


@dataclass
class Group:
    root: int
    domain: Shape  # the iteration space: the shape every full-size member has
    axes: tuple[int, ...] | None = None  # reduced axes of `domain`, None while none
    members: set[int] = field(default_factory=set)

    @property
    def pattern(self) -> str:
        if self.axes is None:
            return "elementwise"
        trailing = self.axes == tuple(range(len(self.domain) - len(self.axes), len(self.domain)))
        return "row_reduce" if trailing else "reduce"


def kind_of(g: Graph, nid: int) -> str | None:
    """The fusion kind of a node; None for graph-level ops and random sources."""
    prim = REGISTRY.get(g.data(nid)["op"])
    if prim is None or prim.random:
        return None
    return prim.kind


def reduced_axes(g: Graph, nid: int) -> tuple[int, ...]:
    """The axes of its first operand that a reduction reduces (from `axes`/`axis` or shapes)."""
    d = g.data(nid)
    in_shape = g.data(d["inputs"][0])["type"].shape
    rank = len(in_shape)
    attrs = d["attrs"]
    if "axes" in attrs or "axis" in attrs:
        axes = attrs["axes"] if "axes" in attrs else attrs["axis"]
        if axes is None:
            return tuple(range(rank))
        if isinstance(axes, int):
            axes = (axes,)
        return tuple(sorted({int(a) % rank for a in axes}))
    out = d["type"].shape  # shape-directed (`sum_to`): dropped leading axes and kept 1s
    lead = rank - len(out)
    kept = [lead + i for i, s in enumerate(out) if s == 1 and in_shape[lead + i] != 1]
    return tuple(range(lead)) + tuple(kept)


def reduced_shapes(domain: Shape, axes) -> tuple[Shape, Shape]:
    keep = tuple(1 if i in axes else s for i, s in enumerate(domain))
    drop = tuple(s for i, s in enumerate(domain) if i not in axes)
    return keep, drop


def fits(shape: Shape, domain: Shape, axes) -> bool:
    """Whether a value of `shape` is one of the group's: full-size or reduced."""
    return shape == domain or (axes is not None and shape in reduced_shapes(domain, axes))


def row_axes(shape: Shape, domain: Shape) -> tuple[int, ...] | None:
    """The trailing axes a per-row value of `shape` leaves out of `domain`, else None."""
    if len(shape) != len(domain):
        return None
    axes = []
    for i, (s, d) in enumerate(zip(shape, domain)):
        if s == d:
            continue
        if s != 1:
            return None
        axes.append(i)
    if not axes or axes != list(range(len(domain) - len(axes), len(domain))):
        return None
    return tuple(axes)


def fmt(shape: Shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


# --- grouping --------------------------------------------------------------------------------


def find_groups(g: Graph, order: list[int] | None = None) -> tuple[list[Group], list[dict]]:
    """Partition the fusable nodes into groups; also the reasons for fusions not made."""
    order = order if order is not None else g.topo_order()
    pos = {n: i for i, n in enumerate(order)}
    kind = {n: kind_of(g, n) for n in order}
    root_names: dict[int, str] = {}
    for table, rows in (("output", g.outputs), ("update", g.updates), ("gradient", g.grads)):
        for name, nid in rows.items():
            root_names.setdefault(nid, f"{table} {name!r}")
    group_of: dict[int, Group] = {}
    groups: list[Group] = []
    report: list[dict] = []
    cheap = {n for n in order if _recomputable(g, n, kind, root_names)}

    for root in reversed(order):
        if root in group_of or kind[root] not in FUSABLE:
            continue
        if kind[root] == "reduction":
            src = g.data(root)["inputs"][0]
            grp = Group(root, g.data(src)["type"].shape, reduced_axes(g, root))
        else:
            grp = Group(root, g.data(root)["type"].shape)
        groups.append(grp)
        grp.members.add(root)
        group_of[root] = grp
        heap = [(-pos[root], root)]
        queued = {root}
        while heap:
            _, m = heapq.heappop(heap)
            if m != root:
                why = _refusal(g, grp, m, kind, group_of, root_names, m in cheap)
                if why is not None:
                    if why:
                        report.append(_entry(g, grp, m, why))
                    continue
                grp.members.add(m)
                if m not in cheap:
                    group_of[m] = grp
            if kind[m] == "injective":
                continue  # data movement stays at the edge: its operands are read from outside
            for p in g.data(m)["inputs"]:
                if p not in queued:
                    queued.add(p)
                    heapq.heappush(heap, (-pos[p], p))
    return _settle_recomputed(g, groups, cheap, report)


def _recomputable(g: Graph, p: int, kind, root_names) -> bool:
    """Whether `p` may be computed again in each group that reads it (see the module doc)."""
    d = g.data(p)
    if kind[p] not in ("elementwise", "broadcast") or p in root_names:
        return False
    users = g.users(p)
    if len(users) < 2 or any(kind[u] not in FUSABLE for u in users):
        return False
    full = [i for i in d["inputs"] if g.data(i)["type"].shape == d["type"].shape]
    return len(full) <= 1 and all(kind[i] not in FUSABLE for i in d["inputs"])


def _settle_recomputed(g: Graph, groups: list[Group], cheap: set[int], report: list[dict]):
    """Keep a recomputed node in the groups that took it only if every reader of its value is
    in one of them (then its own one-node group goes); otherwise take it out of them (nothing
    joined a group through it: its operands are not fusable) and it stays a kernel."""
    holders: dict[int, list[Group]] = {}
    for grp in groups:
        for m in grp.members:
            if m in cheap and m != grp.root:
                holders.setdefault(m, []).append(grp)
    gone = set()
    for p, grps in holders.items():
        inside = set().union(*(grp.members for grp in grps))
        outside = [u for u in g.users(p) if u not in inside]
        if outside:
            for grp in grps:
                grp.members.discard(p)
                report.append(_entry(g, grp, p, _also_used(g, outside[0])))
        else:
            gone.add(p)
    groups = [grp for grp in groups if not (grp.root in gone and len(grp.members) == 1)]
    return groups, report


def _also_used(g: Graph, user: int) -> str:
    return f"its value is also used by `{g.data(user)['op']}` outside the group"


def _refusal(g, grp: Group, p: int, kind, group_of, root_names, recompute=False) -> str | None:
    """Why `p` cannot join `grp` ('' when it is not a candidate at all), or None if it can.

    Joining may set the group's reduced axes or widen its domain (a reduction's input).
    With `recompute`, readers outside the group do not keep it out (it is computed again).
    """
    d = g.data(p)
    k = kind[p]
    if k not in FUSABLE:
        fusable_operand = any(kind[i] in FUSABLE for i in d["inputs"])
        if k is not None and fusable_operand:
            return f"`{d['op']}` ({k}) runs as its own kernel between fusable ops"
        return ""
    if p in group_of:
        return ""
    if k == "injective" and d["op"] not in EDGE_VIEWS:
        # a slice outside the group is a view the kernel reads through; inside, the
        # generated kernels could not read it
        return f"`{d['op']}` is data movement a generated kernel does not read at its edge"
    if p in root_names:
        return f"its value is read outside the graph ({root_names[p]})"
    outside = [u for u in g.users(p) if u not in grp.members]
    if outside and not recompute:
        return _also_used(g, outside[0])
    shape = d["type"].shape
    if k == "reduction":
        in_shape = g.data(d["inputs"][0])["type"].shape
        axes = reduced_axes(g, p)
        if grp.axes is None:
            if grp.domain != in_shape and grp.domain not in reduced_shapes(in_shape, axes):
                return (
                    f"it reduces {fmt(in_shape)} to {fmt(shape)}, "
                    f"the group runs over {fmt(grp.domain)}"
                )
            grp.domain, grp.axes = in_shape, axes
            return None
        if in_shape != grp.domain or axes != grp.axes:
            return (
                f"it reduces axes {axes} of {fmt(in_shape)}, the group reduces axes "
                f"{grp.axes} of {fmt(grp.domain)}"
            )
        return None
    if fits(shape, grp.domain, grp.axes):
        return None
    if grp.axes is None and (axes := row_axes(shape, grp.domain)) is not None:
        grp.axes = axes  # a per-row value: the group becomes row-wise
        return None
    return (
        f"shape mismatch: its {fmt(shape)} would be broadcast to {fmt(grp.domain)} "
        "and recomputed for every element"
    )


def _entry(g: Graph, grp: Group, p: int, reason: str) -> dict:
    d = g.data(p)
    users = [u for u in g.users(p) if u in grp.members]
    return {
        "producer": p,
        "producer_op": d["op"],
        "consumer_op": g.data(users[0])["op"] if users else None,
        "group": grp.root,
        "span": d.get("span"),
        "reason": reason,
    }


# --- the pass --------------------------------------------------------------------------------


def fuse(graph: Graph) -> Graph:
    """A copy where every group of two or more nodes is one `fused` node."""
    g = graph.copy()
    order = g.topo_order()
    groups, report = find_groups(g, order)
    pos = {n: i for i, n in enumerate(order)}
    fused_of: dict[int, int] = {}
    shared = _shared(groups)  # recomputed nodes: each group that holds one takes a copy
    for grp in groups:
        if len(grp.members) > 1:
            f = _wrap(g, grp, sorted(grp.members, key=pos.__getitem__), shared)
            fused_of.update(dict.fromkeys(grp.members - shared, f))
    g.g.remove_nodes_from(shared)
    for entry in report:  # name nodes as they are now: a fused member by its fused node
        entry["group"] = fused_of.get(entry["group"], entry["group"])
        entry["producer"] = fused_of.get(entry["producer"], entry["producer"])
    g.meta["fusion_report"] = report
    g.meta["codegen_report"] = codegen_report(g, set(fused_of.values()))
    return g


def _shared(groups: list[Group]) -> set[int]:
    """The nodes that are members of more than one group."""
    seen: set[int] = set()
    shared: set[int] = set()
    for grp in groups:
        shared |= seen & grp.members
        seen |= grp.members
    return shared


def codegen_report(g: Graph, fused: set[int]) -> list[dict]:
    """The fused nodes the code generator declines: {node, span, reason}."""
    out = []
    for f in sorted(fused):
        a = g.data(f)["attrs"]
        try:
            lower(a["body"], a["pattern"], a["domain"], a["reduce_axes"])
        except Unsupported as e:
            out.append({"node": f, "span": g.data(f).get("span"), "reason": str(e)})
    return out


def _wrap(g: Graph, grp: Group, members: list[int], shared: set[int] = frozenset()) -> int:
    """Replace the group's nodes by one `fused` node holding them as its body; the `shared`
    ones are left for the caller to remove once every group holding them is wrapped."""
    body = Graph()
    inner: dict[int, int] = {}
    operands: list[int] = []
    for m in members:
        for src in g.data(m)["inputs"]:
            if src in inner:
                continue
            s = g.data(src)
            if s["op"] == "const" and s["type"].rank == 0:  # scalars are inlined in the kernel
                inner[src] = body.add("const", (), s["type"], s["attrs"], s["span"], s["scope"])
                continue
            name = f"in{len(operands)}"
            inner[src] = body.add("input", (), s["type"], {"name": name, "role": "input"})
            body.inputs[name] = inner[src]
            operands.append(src)
        d = g.data(m)
        ins = [inner[i] for i in d["inputs"]]
        inner[m] = body.add(d["op"], ins, d["type"], d["attrs"], d["span"], d["scope"])
    body.outputs["out"] = inner[grp.root]
    r = g.data(grp.root)
    attrs = {
        "body": body,
        "kinds": tuple(sorted({REGISTRY[g.data(m)["op"]].kind for m in members})),
        "members": tuple((g.data(m)["op"], g.data(m)["span"], g.data(m)["scope"]) for m in members),
        "pattern": grp.pattern,
        "domain": grp.domain,
        "reduce_axes": grp.axes or (),
    }
    fused = g.add("fused", operands, r["type"], attrs, r["span"], r["scope"])
    g.replace_uses(grp.root, fused)
    g.g.remove_nodes_from([m for m in members if m not in shared])
    return fused
