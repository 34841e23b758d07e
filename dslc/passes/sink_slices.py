"""Move slices toward the inputs, so that only the positions the outputs read are computed.

A BERT-style classifier reads one position of its last encoder layer (`h[:, 0]`, the [CLS]
row): every other row of that layer's attention output, feed-forward block and layer norms
is computed and then dropped, and so is its gradient. This pass moves an `index` or a
one-axis `slice` above the operation that produced its operand when

- that operation treats the positions along the axis independently: elementwise maps and
  broadcasts (an operand that broadcasts along the axis is left whole), the rows of a
  matmul by a matrix, layer norm's rows, attention's queries (keys and values stay whole,
  masks are cut along the query axis), transposes and reshapes that keep the axis, and the
  indices of a gather;
- every reader of the result takes the same positions (otherwise the full result is needed
  anyway), and the result is not itself an output;
- the operation draws no random numbers: a dropout mask keeps its shape, so the numbers
  drawn do not depend on which passes ran (the fused and unfused pipelines draw the same
  masks). A dropout reads its operand for the mask's shape too, so the cut stops there.

It repeats until no slice moves. The values are the same; the operations above a moved
slice run on the taken positions only. It runs before autodiff, so the backward graph is
built for the smaller forward one. Each move is recorded in `graph.meta["sink_slices"]`
(the operation, its source location and the axis).
"""

from __future__ import annotations

from dataclasses import dataclass

from dslc.errors import DslcError
from dslc.ir.builder import Builder
from dslc.ir.dims import numel
from dslc.ir.graph import GRAPH_OPS, Graph
from dslc.ops import get_primitive
from dslc.ops.shape import slice_length

MAX_ROUNDS = 64


@dataclass(frozen=True)
class Take:
    """Positions start:stop:step of one axis (ints or None, Python slice semantics)."""

    axis: int
    start: int | None
    stop: int | None
    step: int

    def on(self, axis: int) -> Take:
        return Take(axis, self.start, self.stop, self.step)

    @property
    def axis_slices(self) -> tuple:
        return ((self.axis, self.start, self.stop, self.step),)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int_or_none(v) -> bool:
    return v is None or _is_int(v)


def _take_of(g: Graph, nid: int) -> Take | None:
    """The positions an `index` or one-axis `slice` node takes, or None for other nodes."""
    d = g.data(nid)
    rank = g.data(d["inputs"][0])["type"].rank
    if d["op"] == "index":
        i = d["attrs"]["i"]
        if not _is_int(i):
            return None
        return Take(d["attrs"]["axis"] % rank, i, None if i == -1 else i + 1, 1)
    if d["op"] == "slice" and len(d["attrs"]["axis_slices"]) == 1:
        axis, start, stop, step = d["attrs"]["axis_slices"][0]
        if _int_or_none(start) and _int_or_none(stop) and _is_int(step):
            return Take(axis % rank, start, stop, step)
    return None


def sink_slices(graph: Graph) -> Graph:
    """A copy in which slices have moved above the position-wise operations they cut."""
    g = graph.copy()
    moved: list[dict] = []
    for _ in range(MAX_ROUNDS):
        changed = False
        for nid in reversed(g.topo_order()):
            if nid in g and _sink_below(g, nid, moved):
                changed = True
        if not changed:
            break
    g.meta["sink_slices"] = moved
    return g


def _sink_below(g: Graph, x: int, moved: list[dict]) -> bool:
    """Move the slices that read `x` above it, when they all take the same positions."""
    d = g.data(x)
    users = g.users(x)
    if d["op"] in GRAPH_OPS or not users or x in g.roots():
        return False
    takes = [_take_of(g, u) for u in users]
    take = takes[0]
    if take is None or any(t != take for t in takes) or not _shrinks(g, users[0], x):
        return False
    prim = get_primitive(d["op"])
    rule = _operand_takes(g, x, prim, take)
    if rule is None:
        return False
    operand_takes, attrs = rule
    b = Builder(g, d.get("span"), d.get("scope", ""))
    operands = [
        i if t is None else _slice_of(g, b, i, t) for i, t in zip(d["inputs"], operand_takes)
    ]
    try:
        cut = prim.infer([g.data(i)["type"] for i in operands], attrs)
    except DslcError:  # a shape rule refused the cut operands: leave this one
        _drop_unread(g, operands)
        return False
    # `x` itself becomes the cut operation: node ids stay those of the source graph
    for u in users:
        if g.data(u)["op"] == "index":
            with b.at(g.data(u).get("span"), g.data(u).get("scope", "")):
                g.replace_uses(u, b.op("index", x, axis=take.axis, i=0))
        else:
            g.replace_uses(u, x)
        g.remove(u)
    g.set_inputs(x, operands)
    d["type"], d["attrs"] = cut, attrs
    moved.append({"op": d["op"], "span": d.get("span"), "axis": take.axis})
    return True


def _shrinks(g: Graph, user: int, x: int) -> bool:
    """Whether the slice takes fewer elements than `x` has."""
    return numel(g.data(user)["type"].shape) != numel(g.data(x)["type"].shape)


def _slice_of(g: Graph, b: Builder, src: int, take: Take) -> int:
    """`src` cut to `take`: an identical slice node already reading it, or a new one."""
    for u in g.users(src):
        if g.data(u)["op"] == "slice" and _take_of(g, u) == take:
            return u
    return b.op("slice", src, axis_slices=take.axis_slices)


def _drop_unread(g: Graph, nodes) -> None:
    """Remove slices this pass made that nothing reads (a rule was refused)."""
    for n in nodes:
        if n in g and g.data(n)["op"] == "slice" and not g.users(n) and n not in g.roots():
            g.remove(n)


def _operand_takes(g: Graph, x: int, prim, take: Take):
    """(one Take or None per operand, the attributes of the cut operation), or None when
    the operation does not treat the positions along `take.axis` independently."""
    d = g.data(x)
    op, attrs = d["op"], {**prim.attrs, **d["attrs"]}
    out = d["type"]
    a, rank = take.axis, out.rank
    ins = d["inputs"]
    types = [g.data(i)["type"] for i in ins]
    if prim.random:
        return None
    if prim.kind in ("elementwise", "broadcast"):
        takes = _broadcast_takes(types, out.rank, take, out.shape[a])
        return None if takes is None else (takes, attrs)
    if op == "matmul":
        at, bt = types
        if bt.rank == 2 and at.rank == rank and a < rank - 1:
            return [take, None], attrs
        return None
    if op == "layer_norm":
        return ([take, None, None], attrs) if a < rank - 1 else None
    if op == "attention":
        takes = _attention_takes(types, take)
        return None if takes is None else (takes, attrs)
    if op == "transpose":
        return [take.on(attrs["perm"][a])], attrs
    if op == "reshape":
        it = types[0]
        if a < it.rank and it.shape[: a + 1] == out.shape[: a + 1]:
            new_len = slice_length(it.shape[a], take.start, take.stop, take.step)
            attrs["shape"] = tuple(attrs["shape"][:a]) + (new_len,) + tuple(attrs["shape"][a + 1 :])
            return [take], attrs
        return None
    if op == "gather":
        return ([None, take], attrs) if a < types[1].rank else None
    return None


def _broadcast_takes(types, rank: int, take: Take, length):
    """Per operand broadcast against a result of `rank` axes whose axis `take.axis` has
    `length` positions: the same positions along the operand's aligned axis, or None where
    it has no such axis or broadcasts along it (size 1); None for all when one cannot be
    cut."""
    takes = []
    for t in types:
        ax = take.axis - (rank - t.rank)
        if ax < 0 or (t.shape[ax] == 1 and length != 1):
            takes.append(None)
        elif t.shape[ax] == length:
            takes.append(take.on(ax))
        else:
            return None
    return takes


def _attention_takes(types, take: Take):
    """attention(q, k, v, *masks) -> [B, T, H, e]: a cut of the query axis (1) cuts q's
    axis 2 and each mask's query axis; keys and values stay whole."""
    if take.axis != 1:
        return None
    queries = take.on(2)  # masks broadcast against the [B, H, T, S] scores
    masks = _broadcast_takes(types[3:], 4, queries, types[0].shape[2])
    return None if masks is None else [queries, None, None, *masks]
