"""The executor: binds plans to buffers and runs them, with no graph walking at run time.

`Executor(graph)` owns (or shares) a `ParamStore`. `run(feeds)` looks up the bound plan for
the feeds' shapes (scheduling and binding it the first time those shapes are seen), copies
the feeds into the plan's input buffers, calls each step's kernel with `out=` its planned
buffer, writes gradients straight into the flat gradient buffer, applies `graph.updates` to
the parameters, and returns the outputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from dslc.runtime.kernels_choice import resolve_kernels, resolve_threads
from dslc.runtime.params import ParamStore
from dslc.runtime.rng import step_rng
from dslc.runtime.schedule import Plan, bind_env, needed_nodes, schedule

from dslc.errors import AnomalyError, DataError, InternalError
from dslc.ir.graph import Graph
from dslc.ir.types import np_dtype

MAX_PLANS = 16  # bound plans kept per executor (each holds its buffers)


def _fixed(plan: Plan) -> set[int]:
    """The nodes of an inference plan computed from parameters and constants only (sources
    included, nothing random); empty for a plan that writes gradients or updates, whose
    parameters change every run."""
    if (
        plan.grad_copies
        or plan.updates
        or any(v is not None and v.kind == "grad" for v in plan.values.values())
    ):
        return set()
    fixed = {
        nid for nid, v in plan.values.items() if v is not None and v.kind in ("param", "const")
    }
    for s in plan.steps:
        if not s.random and all(i in fixed for i in s.inputs):
            fixed.add(s.node)
    return fixed


class Kept:
    """An executor's buffers of parameter-only values, shared by its bound plans (a projected
    table is allocated once, not once per input shape), with the plan that last wrote each:
    a plan trusts its hoisted values only if it wrote them itself."""

    def __init__(self):
        self.arrays: dict[tuple, object] = {}
        self.writer: dict[tuple, int] = {}
        self.plans = 0  # plans bound so far: each gets its own number

    def number(self) -> int:
        self.plans += 1
        return self.plans


def _same_bits(xp, a, b) -> bool:
    """Whether two arrays of one dtype and shape hold the same bits (NaN equals itself)."""
    if a.dtype.kind == "f":
        a, b = a.view(f"u{a.dtype.itemsize}"), b.view(f"u{a.dtype.itemsize}")
    return bool(xp.array_equal(a, b))


class BoundPlan:
    """A plan with every value given its array: the run loop is a list of ready calls.

    In an inference plan, the steps computed from parameters and constants only (a
    projected embedding table, concatenated attention weights, a sum of two biases) are
    `hoisted`: they write buffers of their own, and `refresh()` runs them only when the
    parameters they read differ, bit for bit, from a copy taken when they last ran.
    """

    def __init__(self, plan: Plan, store: ParamStore, xp, kept: Kept | None = None):
        self.plan = plan
        self.xp = xp
        fixed = _fixed(plan)
        self.kept = Kept() if kept is None else kept
        self.kept_keys: list[tuple] = []
        self.number = self.kept.number()
        arena = [xp.empty(n, dtype=np.uint8) for n in plan.buffers]
        arrays: dict[int, object] = {}
        self.feeds: list[tuple[str, object]] = []
        for nid in plan.order:
            v = plan.values[nid]
            if v is None or v.kind == "view":
                continue
            dt = np_dtype(v.dtype)
            if v.kind == "input":
                arrays[nid] = xp.empty(v.shape, dtype=dt)
                self.feeds.append((v.ref, arrays[nid]))
            elif v.kind in ("param", "grad"):
                arr = (store.params if v.kind == "param" else store.grads)[v.ref]
                if arr.shape != v.shape or arr.dtype != dt:
                    raise InternalError(f"{v.kind} {v.ref}: stored {arr.dtype}{arr.shape}")
                arrays[nid] = arr
            elif v.kind == "const":
                arrays[nid] = xp.asarray(np.asarray(v.ref, dtype=dt))
            elif v.kind == "buffer" and nid in fixed:  # kept between runs, not in the arena
                key = (nid, tuple(v.shape), dt)
                if key not in self.kept.arrays:
                    self.kept.arrays[key] = xp.empty(v.shape, dtype=dt)
                arrays[nid] = self.kept.arrays[key]
                self.kept_keys.append(key)
            elif v.kind == "buffer":
                n = v.nbytes
                arrays[nid] = arena[v.ref][:n].view(dt).reshape(v.shape)
        self.steps: list[tuple] = []  # (kernel, args, kwargs, out)
        self.hoisted: list[tuple] = []  # the same, for parameter-only steps
        self.hoisted_nodes: list[int] = []
        self.random: list[tuple[int, dict]] = []  # (node, kwargs) of random steps
        self.nodes: list[int] = []  # node id of each step, for anomaly reports
        inputs = {id(arrays[nid]) for nid in arrays if plan.values[nid].kind == "input"}
        hidden: set[int] = set()  # inputs read by a view or inside a generated kernel's call
        for s in plan.steps:
            ins = [arrays[i] for i in s.inputs]
            v = plan.values[s.node]
            if s.view or getattr(s.kernel, "bind", None) is not None:
                hidden.update(id(a) for a in ins if id(a) in inputs)
            if s.view:
                r = s.kernel(xp, *ins, **s.attrs)
                if _shares(xp, r, ins[0]):  # a true view: nothing to do at run time
                    arrays[s.node] = r
                    continue
                arrays[s.node] = xp.empty(v.shape, dtype=np_dtype(v.dtype))  # copied per run
            out = arrays[s.node]
            steps, nodes = (
                (self.hoisted, self.hoisted_nodes) if s.node in fixed else (self.steps, self.nodes)
            )
            bind = getattr(s.kernel, "bind", None)
            if bind is not None:  # a generated kernel: the call is prepared once, here
                fn, args = bind(xp, ins, out, **s.attrs)
                steps.append((fn, args, {}, out))
                nodes.append(s.node)
                continue
            kw = dict(s.attrs, out=out)
            if s.random:
                self.random.append((s.node, kw))
            steps.append((s.kernel, (xp, *ins), kw, out))
            nodes.append(s.node)
        read = dict.fromkeys(i for s in plan.steps if s.node in fixed for i in s.inputs)
        self.hoist_params = [arrays[i] for i in read if plan.values[i].kind == "param"]
        self.snapshot: list | None = None  # the parameters as the hoisted steps last read them
        self.outputs = [(name, arrays[nid]) for name, nid in plan.outputs.items()]
        self.copies = [(store.grads[name], arrays[nid]) for name, nid in plan.grad_copies]
        self.copies += [(store.params[name], arrays[nid]) for name, nid in plan.updates]
        self.arrays = arrays
        self.direct = self._direct_feeds(hidden) if xp is np else []

    def refresh(self, check=None) -> None:
        """Run the hoisted steps if they never ran or a parameter they read has changed since
        (`check(out, node)`, if given, sees each result)."""
        if not self.hoisted:
            return
        xp = self.xp
        mine = all(self.kept.writer.get(k) == self.number for k in self.kept_keys)
        if check is None and self.snapshot is not None and mine:
            if all(_same_bits(xp, p, c) for p, c in zip(self.hoist_params, self.snapshot)):
                return
        for (kernel, args, kw, out), nid in zip(self.hoisted, self.hoisted_nodes):
            r = kernel(*args, **kw)
            if r is not out and r is not None:
                xp.copyto(out, r)
            if check is not None:
                check(out, nid)
        self.snapshot = [p.copy() for p in self.hoist_params]
        self.kept.writer.update(dict.fromkeys(self.kept_keys, self.number))

    def _direct_feeds(self, hidden: set[int]) -> list[tuple[str, object, list[tuple[int, int]]]]:
        """(name, buffer, [(step, operand)]) of each input that kernels read only as the
        buffer itself (no view of it, no generated kernel, not an output): a caller's array
        of the same dtype, shape and layout can then be passed to those kernels instead of
        being copied into the buffer first. Inputs are never written (only arena buffers
        are)."""
        direct = []
        for name, buf in self.feeds:
            if id(buf) in hidden:
                continue
            spots, others = [], False
            for i, (_, args, kw, out) in enumerate(self.steps):
                for j, a in enumerate(args):
                    if a is buf:
                        spots.append((i, j))
                    elif isinstance(a, np.ndarray) and np.may_share_memory(a, buf):
                        others = True
                more = [out, *kw.values()]
                others |= any(
                    isinstance(a, np.ndarray) and np.may_share_memory(a, buf) for a in more
                )
            ends = [a for _, a in self.outputs] + [a for pair in self.copies for a in pair]
            others |= any(np.may_share_memory(a, buf) for a in ends)
            if spots and not others:
                for i in dict.fromkeys(i for i, _ in spots):
                    kernel, args, kw, out = self.steps[i]
                    self.steps[i] = (kernel, list(args), kw, out)
                direct.append((name, buf, spots))
        return direct

    def feed(self, feeds: Mapping[str, object], graph: Graph, direct: bool) -> None:
        """Put `feeds` where the kernels read them: copied into the input buffers, or, with
        `direct`, a caller's array handed to the kernels as it is where that is safe."""
        xp = self.xp
        passed = set()
        if direct:
            for name, buf, spots in self.direct:
                src = feeds[name]
                if (
                    type(src) is np.ndarray
                    and src.dtype == buf.dtype
                    and src.shape == buf.shape
                    and src.flags.c_contiguous
                    and src.flags.aligned
                ):
                    passed.add(name)
                    use = src
                else:
                    use = buf
                for i, j in spots:
                    self.steps[i][1][j] = use
        else:
            for _, buf, spots in self.direct:
                for i, j in spots:
                    self.steps[i][1][j] = buf
        for name, buf in self.feeds:
            if name in passed:
                continue
            src = feeds[name] if xp is np else xp.asarray(feeds[name])
            try:
                xp.copyto(buf, src, casting="same_kind")
            except TypeError:
                raise DataError(
                    f"array `{name}` has dtype {np.asarray(feeds[name]).dtype}; the model expects"
                    f" {graph.data(graph.inputs[name])['type']}"
                ) from None


def _shares(xp, a, b) -> bool:
    fn = getattr(xp, "may_share_memory", None) or np.may_share_memory
    return bool(fn(a, b))


class Executor:
    """Runs one graph (a mode of a model) over the parameters in `store`."""

    def __init__(
        self,
        graph: Graph,
        *,
        store: ParamStore | None = None,
        xp=np,
        float_dtype: str | None = None,
        seed: int = 0,
        outputs: Iterable[str] | None = None,
        kernels: str | None = None,
        threads: int | None = None,
    ):
        self.graph = graph
        self.xp = xp
        self.kernels = resolve_kernels(kernels, xp)
        self.threads = 1
        if self.kernels == "numba":
            from dslc.runtime.kernels_numba import set_threads

            self.threads = set_threads(resolve_threads(threads))
        if store is None:
            store = ParamStore(graph, xp, float_dtype or "f32", seed)
        else:
            store.check_graph(graph)
        self.store = store
        self.float_dtype = store.float_dtype
        self.params = store.params
        self.grads = store.grads
        self.seed = seed
        self.step = 0  # the training step: random ops draw from (seed, step, node)
        self.outputs = list(graph.outputs) if outputs is None else list(outputs)
        roots = [graph.outputs[o] for o in self.outputs if o in graph.outputs]
        roots += list(graph.grads.values()) + list(graph.updates.values())
        needed = needed_nodes(graph, roots)
        self.input_names = [n for n, nid in graph.inputs.items() if nid in needed]
        self._bound: dict[tuple, BoundPlan] = {}
        self._kept = Kept()  # parameter-only values, shared by the plans

    # --- plans ----------------------------------------------------------------------------
    def bound(self, feeds: Mapping[str, object], kernels: str | None = None) -> BoundPlan:
        """The bound plan for these feeds' shapes (scheduled and bound once per shapes).

        `kernels` overrides the executor's choice: checked runs use "numpy", where every
        member of a fused group is its own step, so a NaN is traced to the primitive and the
        `.nn` line that made it, not to a whole generated kernel.
        """
        kernels = kernels or self.kernels
        key = tuple(np.shape(feeds[n]) if n in feeds else None for n in self.input_names)
        key += (kernels,)
        bp = self._bound.get(key)
        if bp is None:
            env = bind_env(self.graph, feeds, self.input_names)
            plan = schedule(self.graph, env, self.float_dtype, self.outputs,
                            kernels=kernels, threads=self.threads)  # fmt: skip
            if len(self._bound) >= MAX_PLANS:  # generation sees many lengths: keep the latest
                del self._bound[next(iter(self._bound))]
            bp = self._bound[key] = BoundPlan(plan, self.store, self.xp, self._kept)
        return bp

    # --- running --------------------------------------------------------------------------
    def run(
        self,
        feeds: Mapping[str, object],
        *,
        step: int | None = None,
        copy: bool = True,
        check: bool = False,
    ) -> dict[str, object]:
        """Run the graph on `feeds`; gradients land in `self.grads`, updates in `self.params`.

        Outputs are copies unless `copy=False` (then they are the plan's buffers, valid until
        the next run). `check` looks at every value for NaN/Inf and raises AnomalyError
        naming the first node that made one.
        """
        bp = self.bound(feeds, "numpy" if check else None)
        xp = self.xp
        bp.feed(feeds, self.graph, direct=not check)  # a checked run reads the buffers
        if bp.random:
            s = self.step if step is None else step
            for nid, kw in bp.random:
                kw["rng"] = step_rng(xp, self.seed, s, nid)
        if check:
            self._run_checked(bp)
        else:
            bp.refresh()
            for kernel, args, kw, out in bp.steps:
                r = kernel(*args, **kw)
                if r is not out and r is not None:
                    xp.copyto(out, r)
        for dst, src in bp.copies:
            xp.copyto(dst, src)
        if copy:
            return {name: arr.copy() for name, arr in bp.outputs}
        return dict(bp.outputs)

    def _run_checked(self, bp: BoundPlan) -> None:
        """The run loop with a finiteness check after every kernel (--detect-anomaly)."""
        with np.errstate(all="ignore"):  # the check reports it, with the node
            self._checked_steps(bp)

    def _checked_steps(self, bp: BoundPlan) -> None:
        xp = self.xp
        for name, buf in bp.feeds:
            if buf.dtype.kind == "f" and not bool(xp.isfinite(buf).all()):
                raise AnomalyError(f"input `{name}` contains NaN or Inf")
        for name, p in self.params.items():
            if p.dtype.kind == "f" and not bool(xp.isfinite(p).all()):
                raise AnomalyError(f"parameter {name} contains NaN or Inf")

        def finite(out, nid):
            if out.dtype.kind == "f" and not bool(xp.isfinite(out).all()):
                raise anomaly(self.graph, bp.plan.nodes[nid], out, xp)

        bp.refresh(check=finite)  # checked runs compute the hoisted steps too
        for (kernel, args, kw, out), nid in zip(bp.steps, bp.nodes):
            r = kernel(*args, **kw)
            if r is not out and r is not None:
                xp.copyto(out, r)
            finite(out, nid)


def anomaly(graph: Graph, node, value, xp=np) -> AnomalyError:
    """The report for the first non-finite value: node, op, scope, source line."""
    what = "NaN" if bool(xp.isnan(value).any()) else "Inf"
    n_bad = int((~xp.isfinite(value)).sum())
    outer = node.key[0] if isinstance(node.key, tuple) else node.key
    label = f"%{outer}" + (f" (fused, member %{node.key[1]})" if outer != node.key else "")
    loss = graph.outputs.get("loss")
    forward = loss is None or outer == loss or outer in needed_nodes(graph, [loss])
    where = "" if forward else " in the backward pass"
    scope = f" in `{node.scope}`" if node.scope else ""
    return AnomalyError(
        f"node {label} (`{node.op}`{scope}) produced {what}{where}",
        node.span,
        notes=[f"{n_bad} of {value.size} values of {node.type} are not finite"],
        hint="look for a log or division of zero, an overflowing exp, or too high a learning rate",
    )
