"""Memory planning: liveness over a schedule, buffer reuse, in-place updates, peak estimates.

Values the plan owns are the results of compute nodes. Inputs, params and consts live in
storage of their own (feeds, the executor's parameters, the graph) and are never reused.
Roots (outputs, updates, grads) stay live to the end of the step.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from dslc.ir.dims import Dim, numel
from dslc.ir.graph import Graph
from dslc.ops import REGISTRY

STORED = ("input", "param", "const")  # values with storage of their own
ITEMSIZE = {"f16": 2, "f32": 4, "f64": 8, "i32": 4, "i64": 8, "bool": 1}
INPLACE_KINDS = ("elementwise", "broadcast")
DEFAULT_SYMBOL_SIZE = 64  # stands for every unbound symbol when a symbolic peak is ranked


@dataclass
class MemoryPlan:
    """Where every planned value lives, for one concrete shape environment."""

    order: list[int]  # the schedule: compute nodes in execution order
    buffer_of: dict[int, int]  # node id -> buffer index
    sizes: list[int]  # bytes of each buffer
    inplace: dict[int, int] = field(default_factory=dict)  # node id -> operand id it overwrites
    live_peak_bytes: int = 0  # most bytes held by live values at once

    @property
    def peak_bytes(self) -> int:
        """Bytes of all buffers together: what the plan allocates."""
        return sum(self.sizes)


def value_bytes(graph: Graph, nid: int, env: Mapping[str, int] | None = None) -> Dim | int:
    """Bytes of node `nid`'s value: a Dim, or an int when `env` binds its symbols."""
    t = graph.data(nid)["type"]
    n = numel(t.shape) * ITEMSIZE[t.dtype]
    return n if env is None else n.evaluate(env)


def schedule(graph: Graph) -> list[int]:
    """Compute nodes in a deterministic topological order."""
    return [n for n in graph.topo_order() if graph.data(n)["op"] not in STORED]


def can_inplace(graph: Graph, nid: int, operand: int) -> bool:
    """Whether `nid` may write its result over `operand` (same type, elementwise access)."""
    d = graph.data(nid)
    if graph.data(operand)["type"] != d["type"]:
        return False
    if d["op"] == "fused":
        attrs = d["attrs"]  # an elementwise loop, and no member reads through an index map
        return attrs.get("pattern") == "elementwise" and "injective" not in attrs.get("kinds", ())
    prim = REGISTRY.get(d["op"])
    return prim is not None and prim.kind in INPLACE_KINDS and not prim.random


def last_uses(graph: Graph, order: Sequence[int]) -> dict[int, int]:
    """Step index after which each value is dead (len(order) for roots: never)."""
    pos = {n: i for i, n in enumerate(order)}
    end = len(order)
    last: dict[int, int] = {}
    for n in order:
        for src in graph.data(n)["inputs"]:
            last[src] = max(last.get(src, -1), pos[n])
    for r in graph.roots():
        last[r] = end
    for n in order:
        last.setdefault(n, pos[n])  # computed but unread: dead right away
    return last


def plan_memory(
    graph: Graph, env: Mapping[str, int], order: Sequence[int] | None = None
) -> MemoryPlan:
    """Assign each computed value a buffer, reusing buffers of dead values (best fit)."""
    order = list(order if order is not None else schedule(graph))
    last = last_uses(graph, order)
    roots = set(graph.roots())
    plan = MemoryPlan(order=order, buffer_of={}, sizes=[])
    free: list[int] = []  # buffer indices holding nothing live
    live_bytes = 0
    for i, n in enumerate(order):
        need = value_bytes(graph, n, env)
        dying = [
            s
            for s in dict.fromkeys(graph.data(n)["inputs"])
            if s in plan.buffer_of and last[s] == i and s not in roots
        ]
        buf = None
        for s in dying:
            if can_inplace(graph, n, s):
                buf = plan.buffer_of[s]
                plan.inplace[n] = s
                dying.remove(s)
                live_bytes -= value_bytes(graph, s, env)
                break
        if buf is None:
            fits = [k for k in free if plan.sizes[k] >= need]
            if fits:
                buf = min(fits, key=lambda k: plan.sizes[k])
            elif free:  # grow the largest free buffer rather than add one
                buf = max(free, key=lambda k: plan.sizes[k])
                plan.sizes[buf] = need
            else:
                buf = len(plan.sizes)
                plan.sizes.append(need)
            if buf in free:
                free.remove(buf)
        plan.buffer_of[n] = buf
        live_bytes += need
        plan.live_peak_bytes = max(plan.live_peak_bytes, live_bytes)
        for s in dying:
            free.append(plan.buffer_of[s])
            live_bytes -= value_bytes(graph, s, env)
        if last[n] == i and n not in roots:  # never read: its buffer is free at once
            free.append(buf)
            live_bytes -= need
    return plan


def estimate_peak(graph: Graph, env: Mapping[str, int] | None = None) -> Dim:
    """Bytes of the values live at the schedule's fullest step, as a formula in the symbols.

    The fullest step is found with `env` (unbound symbols count as 64); the result is the
    symbolic sum at that step, so it reads like `4096*N*T + 512`.
    """
    order = schedule(graph)
    last = last_uses(graph, order)
    symbols = set().union(*(graph.data(n)["type"].symbols for n in order)) if order else set()
    probe = {s: DEFAULT_SYMBOL_SIZE for s in symbols} | dict(env or {})
    dies_after: dict[int, list[int]] = {}
    for n in order:
        dies_after.setdefault(last[n], []).append(n)
    total = Dim.const(0)
    best, best_value = total, -1
    for i, n in enumerate(order):
        total = total + value_bytes(graph, n)
        value = total.evaluate(probe)
        if value > best_value:
            best, best_value = total, value
        for s in dies_after.get(i, ()):
            total = total - value_bytes(graph, s)
    return best if env is None else Dim.const(best.evaluate(env))
