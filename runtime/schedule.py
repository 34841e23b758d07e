"""Scheduling: a graph and a concrete shape environment become a flat plan, once.

A `Plan` lists the kernel calls of one run in execution order, each with its operand values,
its output value and its attributes with every `Dim` replaced by an int. It also says where
each value lives:

  input   a buffer the executor copies the feed into
  param   the parameter's view in the executor's flat parameter buffer
  grad    the parameter's view in the flat gradient buffer: a gradient node writes there
  const   the constant, converted once
  buffer  a slice of a preallocated arena buffer, reused once its value is dead
  view    a view of another value (`reshape`, `transpose`, `slice`...), made when the plan
          is bound, so it costs nothing at run time; its base stays live as long as it does

Buffer reuse is a liveness walk (best fit over dead buffers, writing elementwise results over
an operand that dies at that step), like `dslc.passes.memory.plan_memory` but aware of views
and of values stored outside the arena (gradients).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from dslc.runtime.kernels_choice import KERNELS
from dslc.runtime.params import run_dtype

from dslc.codegen.expr import Unsupported, lower, single_body
from dslc.errors import ConfigError, DataError, InternalError
from dslc.ir.dims import Dim, format_shape
from dslc.ir.graph import Graph
from dslc.ir.types import DTYPES, TensorType, np_dtype
from dslc.ops import REGISTRY
from dslc.passes.fuse import reduced_axes
from dslc.passes.memory import INPLACE_KINDS

VIEW_OPS = frozenset({"reshape", "transpose", "broadcast_to", "slice", "index"})
STORED = ("input", "param", "const")
# nodes outside any fused group that still get a generated kernel: NumPy needs several
# passes (and temporaries) for each of these
GENERATED_SINGLES = frozenset({"gelu", "erf", "tanh", "sigmoid", "softplus", "leaky_relu",
                               "where", "softmax", "log_softmax", "logsumexp", "var"})  # fmt: skip


@dataclass(frozen=True)
class Value:
    """Where one value of the plan lives (see the module docstring for the kinds)."""

    kind: str
    shape: tuple[int, ...]
    dtype: str
    ref: Any = None  # input/param/grad: a name; const: the value; buffer: index; view: base id

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np_dtype(self.dtype).itemsize


@dataclass
class Step:
    """One kernel call: `kernel(xp, *values[inputs], out=values[node], **attrs)`."""

    node: Any  # the key of the value it computes
    op: str
    kernel: Callable
    inputs: tuple[int, ...]
    attrs: dict[str, Any]
    random: bool = False
    view: bool = False  # a view op: evaluated once at bind time when its result is a view


@dataclass
class Plan:
    """Everything one run does for one shape environment; built once, run many times."""

    env: dict[str, int]
    float_dtype: str
    order: list  # every value's key, in execution order
    values: dict[Any, Value]
    steps: list[Step]
    buffers: list[int]  # bytes of each arena buffer
    inputs: dict[str, int]  # feeds the plan reads
    outputs: dict[str, int]
    nodes: dict[Any, Node]  # key -> the node it computes, for reports
    grad_copies: list[tuple[str, int]] = field(default_factory=list)  # grads not written in place
    updates: list[tuple[str, int]] = field(default_factory=list)  # param <- value, after the run
    kernels: str = "numpy"  # who runs fused groups: NumPy calls, or generated kernels
    generated: list = field(default_factory=list)  # keys of the steps that are one kernel
    fallbacks: list[tuple[Any, str]] = field(default_factory=list)  # (fused key, why NumPy)

    @property
    def arena_bytes(self) -> int:
        return sum(self.buffers)

    def describe(self) -> str:
        """One line per step: what runs, on what, into what."""
        lines = []
        for s in self.steps:
            v = self.values[s.node]
            where = f"buf{v.ref}" if v.kind == "buffer" else v.kind
            lines.append(
                f"%{s.node} = {s.op}({', '.join(f'%{i}' for i in s.inputs)})"
                f" -> {where} {v.dtype}{list(v.shape)}"
            )
        return "\n".join(lines)


def needed_nodes(graph: Graph, roots: Iterable[int]) -> set[int]:
    """The roots and everything they read."""
    seen: set[int] = set()
    stack = list(roots)
    while stack:
        n = stack.pop()
        if n not in seen:
            seen.add(n)
            stack.extend(graph.data(n)["inputs"])
    return seen


def concrete(v, env: Mapping[str, int], float_dtype: str, key: str = ""):
    """An attribute value with Dims evaluated; float dtype names follow `float_dtype`."""
    if isinstance(v, Dim):
        return v.evaluate(env)
    if isinstance(v, tuple):
        return tuple(concrete(x, env, float_dtype) for x in v)
    if isinstance(v, list):
        return [concrete(x, env, float_dtype) for x in v]
    if key == "dtype" and isinstance(v, str) and v in DTYPES:
        return run_dtype(v, float_dtype)
    return v


def bind_env(graph: Graph, feeds: Mapping[str, Any], names: Iterable[str]) -> dict[str, int]:
    """Bind the symbols of the inputs' shapes from the feeds' shapes; DataError on a misfit."""
    env: dict[str, int] = {}
    later: list[tuple[str, Dim, int, Any]] = []
    for name in names:
        t = graph.data(graph.inputs[name])["type"]
        if name not in feeds:
            raise DataError(f"no array named `{name}`: the model needs `{name}` of type {t}")
        shape = tuple(getattr(feeds[name], "shape", np.shape(feeds[name])))
        if len(shape) != t.rank:
            raise DataError(
                f"array `{name}` has shape {format_shape(shape)}; the model expects {t}"
                f" ({t.rank} dimension{'s' if t.rank != 1 else ''})"
            )
        for d, n in zip(t.shape, shape):
            if d.is_symbol:
                (s,) = d.symbols
                if env.setdefault(s, n) != n:
                    raise DataError(
                        f"array `{name}` has shape {format_shape(shape)}; the model expects {t}"
                        f" with {s} = {env[s]} as in the arrays before it"
                    )
            else:
                later.append((name, d, n, t))
    for name, d, n, t in later:
        if not d.symbols <= env.keys() or d.evaluate(env) != n:
            raise DataError(
                f"array `{name}` has shape {format_shape(feeds[name].shape)}; the model expects {t}"
            )
    return env


@dataclass(frozen=True)
class Node:
    """One node of the flattened graph: fused bodies are spliced in, keys are unique."""

    key: Any  # the node id, or (fused node id, body node id) inside a fused body
    op: str
    inputs: tuple
    type: TensorType
    attrs: dict
    span: Any = None
    scope: str = ""


def flatten(graph: Graph, order: Iterable[int], whole: frozenset = frozenset()) -> list[Node]:
    """The nodes in execution order, each `fused` node not in `whole` replaced by its body's
    nodes.

    A body's `input` nodes stand for the fused node's operands and its output is the fused
    node's value: kernels of the body read and write the outer values directly.
    """
    out: list[Node] = []
    for nid in order:
        d = graph.data(nid)
        if d["op"] != "fused" or nid in whole:
            out.append(Node(nid, d["op"], tuple(d["inputs"]), d["type"], d["attrs"],
                            d.get("span"), d.get("scope", "")))  # fmt: skip
            continue
        body: Graph = d["attrs"]["body"]
        result = body.outputs["out"]
        key = {body.inputs[f"in{i}"]: src for i, src in enumerate(d["inputs"])}
        for bid in body.topo_order():
            b = body.data(bid)
            if b["op"] == "input":
                continue
            key[bid] = nid if bid == result else (nid, bid)
            ins = tuple(key[i] for i in b["inputs"])
            out.append(Node(key[bid], b["op"], ins, b["type"], b["attrs"], b.get("span"),
                            b.get("scope", "")))  # fmt: skip
    return out


def schedule(
    graph: Graph,
    env: Mapping[str, int],
    float_dtype: str = "f32",
    outputs: Iterable[str] | None = None,
    grads: bool = True,
    updates: bool = True,
    kernels: str = "numpy",
    threads: int = 1,
) -> Plan:
    """The flat plan that computes `outputs` (all by default), the gradients and the updates.

    With `kernels="numba"` each fused group the code generator handles (and each node of
    GENERATED_SINGLES) is one generated kernel; the others are spliced into NumPy calls and
    listed in `plan.fallbacks` with the reason.
    """
    if kernels not in KERNELS:
        raise ConfigError(f"unknown kernels {kernels!r}; choose one of {', '.join(KERNELS)}")
    env = dict(env)
    out_names = list(graph.outputs) if outputs is None else list(outputs)
    for o in out_names:
        if o not in graph.outputs:
            raise InternalError(f"the graph has no output named {o!r}")
    out_map = {o: graph.outputs[o] for o in out_names}
    grad_map = dict(graph.grads) if grads else {}
    upd_map = dict(graph.updates) if updates else {}
    roots = list(out_map.values()) + list(grad_map.values()) + list(upd_map.values())
    needed = needed_nodes(graph, roots)
    order = [n for n in graph.topo_order() if n in needed]
    gen: dict[int, tuple] = {}
    fallbacks: list[tuple[Any, str]] = []
    if kernels == "numba":
        for nid in order:
            op = graph.data(nid)["op"]
            if op == "fused" or op in GENERATED_SINGLES:
                r = generate(graph, nid, env, float_dtype, threads)
                if isinstance(r, str):
                    fallbacks.append((nid, r))
                else:
                    gen[nid] = r
    nodes = flatten(graph, order, frozenset(gen))

    values: dict[Any, Value | None] = {}
    typed: dict[Any, tuple[tuple[int, ...], str]] = {}  # key -> concrete (shape, dtype)
    steps: list[Step] = []
    inputs: dict[str, int] = {}
    for n in nodes:
        try:
            shape = tuple(x.evaluate(env) for x in n.type.shape)
        except KeyError as e:
            raise InternalError(
                f"node %{n.key} ({n.op}) has a size in {e.args[0]}, which no input binds", n.span
            ) from None
        dtype = run_dtype(n.type.dtype, float_dtype)
        typed[n.key] = (shape, dtype)
        if n.op == "input":
            values[n.key] = Value("input", shape, dtype, n.attrs["name"])
            inputs[n.attrs["name"]] = n.key
        elif n.op == "param":
            values[n.key] = Value("param", shape, dtype, n.attrs["name"])
        elif n.op == "const":
            values[n.key] = Value("const", shape, dtype, n.attrs["value"])
        elif n.key in gen:
            kernel, attrs = gen[n.key]
            steps.append(Step(n.key, n.op, kernel, n.inputs, attrs))
            values[n.key] = None
        else:
            prim = REGISTRY.get(n.op)
            if prim is None:
                raise InternalError(f"no kernel for `{n.op}` (node %{n.key})", n.span)
            attrs = {k: concrete(v, env, float_dtype, k) for k, v in n.attrs.items()}
            view = n.op in VIEW_OPS
            fn = prim.numpy
            if kernels == "numba" and prim.numba:
                from dslc.runtime.kernels_numba import compiled_kernel

                fn = compiled_kernel(prim.numba)
            steps.append(Step(n.key, n.op, fn, n.inputs, attrs, prim.random, view))
            values[n.key] = Value("view", shape, dtype, n.inputs[0]) if view else None

    grad_copies = []
    for name, nid in grad_map.items():
        if values[nid] is None:  # a computed value: its kernel writes the gradient in place
            values[nid] = Value("grad", *typed[nid], name)
        else:
            grad_copies.append((name, nid))
    info = {n.key: n for n in nodes}
    buffers = _plan_buffers(info, typed, steps, values, roots)
    return Plan(
        env=env,
        float_dtype=float_dtype,
        order=[n.key for n in nodes],
        values=values,
        steps=steps,
        buffers=buffers,
        inputs=inputs,
        outputs=out_map,
        nodes=info,
        grad_copies=grad_copies,
        updates=list(upd_map.items()),
        kernels=kernels,
        generated=list(gen),
        fallbacks=fallbacks,
    )


def generate(graph: Graph, nid: int, env, float_dtype: str, threads: int = 1):
    """(kernel, step attrs) of node `nid` as one generated kernel, or why it cannot be."""
    from dslc.runtime.kernels_numba import kernel_for

    d = graph.data(nid)
    if d["op"] == "fused":
        a = d["attrs"]
        body, pattern, domain, axes = a["body"], a["pattern"], a["domain"], a["reduce_axes"]
    else:
        in_types = [graph.data(i)["type"] for i in d["inputs"]]
        body = single_body(d["op"], in_types, d["type"], d["attrs"])
        if REGISTRY[d["op"]].kind == "reduction":
            domain, axes, pattern = in_types[0].shape, reduced_axes(graph, nid), "reduce"
        else:
            domain, axes, pattern = d["type"].shape, (), "elementwise"
    try:
        ir = lower(body, pattern, domain, axes, lambda t: run_dtype(t, float_dtype))
    except Unsupported as e:
        return str(e)
    dom = [int(concrete(x, env, float_dtype)) for x in domain]
    R = int(np.prod(dom[: ir.split], dtype=np.int64))
    C = int(np.prod(dom[ir.split :], dtype=np.int64))
    shapes = tuple(tuple(int(concrete(x, env, float_dtype)) for x in ld.shape) for ld in ir.loads)
    attrs = {"R": R, "C": C, "outer": tuple(dom[: ir.split]), "shapes": shapes, "threads": threads}
    return kernel_for(ir), attrs


def _inplace_ok(node: Node, operand: Node, step: Step) -> bool:
    """Whether `node` may write its result over `operand` (same type, elementwise access)."""
    alias_ok = getattr(step.kernel, "alias_ok", None)
    if alias_ok is not None:  # a generated kernel: it knows how it reads each operand
        pos = [i for i, k in enumerate(step.inputs) if k == operand.key]
        return node.type == operand.type and all(alias_ok(i) for i in pos)
    prim = REGISTRY[node.op]
    return node.type == operand.type and prim.kind in INPLACE_KINDS and not prim.random


def _plan_buffers(info, typed, steps, values, roots) -> list[int]:
    """Give every computed value not placed yet an arena buffer; returns the buffer sizes."""

    def owner(n):
        while values[n] is not None and values[n].kind == "view":
            n = values[n].ref
        return n

    end = len(steps)
    last: dict = {}
    for i, s in enumerate(steps):
        for src in s.inputs:
            o = owner(src)
            last[o] = max(last.get(o, -1), i)
        if values[s.node] is None:
            last.setdefault(s.node, i)
    for r in roots:
        last[owner(r)] = end
    dies: dict[int, list] = {}
    for n, i in last.items():
        if values[n] is None:  # an arena value
            dies.setdefault(i, []).append(n)

    sizes: list[int] = []
    free: list[int] = []
    placed: dict = {}
    for i, s in enumerate(steps):
        n = s.node
        if values[n] is not None:  # a view, or a gradient written in place
            continue
        shape, dtype = typed[n]
        need = int(np.prod(shape, dtype=np.int64)) * np_dtype(dtype).itemsize
        buf = None
        for src in dict.fromkeys(s.inputs):  # write over an operand that dies here...
            if src in placed and last.get(src) == i and _inplace_ok(info[n], info[src], s):
                if any(owner(o) == src for o in s.inputs if o != src):
                    continue  # ...unless another operand is a view of it, read as we write
                buf = placed[src]
                dies[i].remove(src)
                break
        if buf is None:
            fits = [k for k in free if sizes[k] >= need]
            if fits:
                buf = min(fits, key=lambda k: sizes[k])
            elif free:  # grow the largest free buffer rather than add one
                buf = max(free, key=lambda k: sizes[k])
                sizes[buf] = need
            else:
                buf = len(sizes)
                sizes.append(need)
            if buf in free:
                free.remove(buf)
        placed[n] = buf
        values[n] = Value("buffer", shape, dtype, buf)
        for dead in dies.get(i, ()):
            free.append(placed[dead])
    return sizes
