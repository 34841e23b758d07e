"""A numerical gradient check of a model, block by block (`dslc check --grad model.nn`).

For every top-level block of the model (a scope such as `fc1`, `conv2` or `layers.3`; a
`repeat` contributes one block per copy), the check compares the autodiff gradient of the
loss with central finite differences, in float64, on a small random batch (every symbolic
dimension set small):

- the block's parameters, and the block's input as the block sees it (the graph is rewired
  so that the block reads its input from a stand-in parameter, whose gradient autodiff then
  computes like any other);
- for each such tensor a random direction v: the analytic `grad . v` against
  `(L(t + h v) - L(t - h v)) / 2h`, and the relative error `|a - n| / max(|a|, |n|, floor)`,
  where the floor keeps derivatives that are zero up to rounding (the bias of an attention
  key, say) from reading as large relative errors: a tensor passes when
  `|a - n| <= tol * max(|a|, |n|)` or `|a - n| <= NOISE * max(1, |L|)`.

The graph is run by a small interpreter over the primitives' NumPy rules (independent of the
runtime's scheduling, fusion and kernels), so the check tests the gradient rules and the
lowering of the model's own code. Random primitives (dropout) draw the same values in every
evaluation, so they are a fixed mask for the check.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from dslc.errors import ConfigError, DslcError
from dslc.ir.dims import Dim, evaluate_value
from dslc.ir.graph import Graph
from dslc.ir.program import Program
from dslc.ir.types import is_float, np_dtype
from dslc.ops.registry import get as get_primitive
from dslc.passes.autodiff import autodiff

DEFAULT_DIM = 3
STEP = 1e-6
TOLERANCE = 1e-5
NOISE = 1e-7  # the rounding error of a difference quotient, relative to the loss


@dataclass
class TensorCheck:
    """One tensor of a block: a parameter or the block's input."""

    name: str
    analytic: float
    numeric: float
    floor: float = 1e-12  # below this size a derivative is zero up to rounding

    @property
    def error(self) -> float:
        a, n = self.analytic, self.numeric
        return abs(a - n) / max(abs(a), abs(n), self.floor)


@dataclass
class BlockCheck:
    """The tensors checked in one block, and what was not checked (frozen, no gradient)."""

    block: str
    tensors: list[TensorCheck] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    @property
    def max_error(self) -> float:
        return max((t.error for t in self.tensors), default=0.0)

    def passed(self, tol: float = TOLERANCE) -> bool:
        return self.max_error <= tol

    @property
    def worst(self) -> TensorCheck | None:
        return max(self.tensors, key=lambda t: t.error, default=None)


@dataclass
class GradReport:
    """The result of `gradcheck`: one BlockCheck per block, and the sizes it ran with."""

    blocks: list[BlockCheck]
    dims: dict[str, int]
    tol: float
    step: float

    @property
    def ok(self) -> bool:
        return all(b.passed(self.tol) for b in self.blocks)

    def failed(self) -> list[BlockCheck]:
        return [b for b in self.blocks if not b.passed(self.tol)]

    def culprit(self) -> BlockCheck | None:
        """The failing block nearest the loss: gradients flow from the loss backwards, so
        every block before a wrong gradient fails with it; this one is where it starts (or
        the code between it and the next block toward the loss)."""
        failed = self.failed()
        return failed[-1] if failed else None

    def table(self) -> str:
        dims = ", ".join(f"{k}={v}" for k, v in self.dims.items()) or "none"
        lines = [
            f"gradient check: float64, symbolic sizes {dims}, central differences "
            f"(h={self.step:g}), tolerance {self.tol:g}",
        ]
        w = max([len("block")] + [len(b.block) for b in self.blocks])
        lines.append(f"{'block':<{w}}  tensors  max rel. error  worst tensor          result")
        # (relative error; derivatives within rounding noise of zero compare absolutely)
        for b in self.blocks:
            worst = b.worst.name if b.worst else "-"
            result = "ok" if b.passed(self.tol) else "FAIL"
            lines.append(
                f"{b.block:<{w}}  {len(b.tensors):>7}  {b.max_error:>14.2e}  {worst:<20}  {result}"
            )
        return "\n".join(lines)


# --- blocks ----------------------------------------------------------------------------------

_INDEX = re.compile(r"^\d+$")


def block_of(scope: str) -> str:
    """The top-level block of a scope: `layers.3.attn.q` -> `layers.3`, `fc1.x` -> `fc1`."""
    parts = scope.split(".")
    if len(parts) > 1 and _INDEX.match(parts[1]):
        return ".".join(parts[:2])
    return parts[0]


def _in_block(scope: str, block: str) -> bool:
    return scope == block or scope.startswith(block + ".")


def blocks_of(graph: Graph) -> dict[str, list[str]]:
    """Block name -> its trainable float parameters, in graph order."""
    trainable = set(graph.trainable_params())
    out: dict[str, list[str]] = {}
    for name, nid in graph.params.items():
        d = graph.data(nid)
        if name in trainable and d["type"].is_float:
            out.setdefault(block_of(d["scope"] or name.rsplit(".", 1)[0]), []).append(name)
    return out


def _rewire_input(graph: Graph, block: str) -> list[str]:
    """Let the block read each float value it takes from outside through a new parameter;
    returns the new parameters' names."""
    inside = {n.id for n in graph.nodes() if n.op not in ("param", "const")
              and _in_block(n.scope, block)}  # fmt: skip
    sources: dict[int, list[int]] = {}
    for nid in inside:
        for src in graph.node(nid).inputs:
            s = graph.node(src)
            if src not in inside and s.op not in ("param", "const") and is_float(s.dtype):
                sources.setdefault(src, []).append(nid)
    names = []
    for i, (src, users) in enumerate(sorted(sources.items())):
        s = graph.node(src)
        name = f"{block}.<input{'' if len(sources) == 1 else i}>"
        attrs = {"name": name, "init": "zeros", "init_args": (), "trainable": True,
                 "frozen": False, "stands_for": src}  # fmt: skip
        p = graph.add("param", (), s.type, attrs, s.span, block)
        graph.params[name] = p
        for user in set(users):
            graph.set_inputs(user, [p if i == src else i for i in graph.node(user).inputs])
        names.append(name)
    return names


# --- a float64 interpreter -----------------------------------------------------------------------


def _shape(t, env) -> tuple[int, ...]:
    return tuple(int(d.evaluate(env)) if isinstance(d, Dim) else int(d) for d in t.shape)


def _run_dtype(dtype: str):
    return np.float64 if is_float(dtype) else np_dtype(dtype)


class Interpreter:
    """Evaluates a graph's nodes in topological order with the primitives' NumPy rules."""

    def __init__(self, graph: Graph, env: Mapping[str, int], seed: int = 0):
        self.graph = graph
        self.env = dict(env)
        self.seed = seed
        self.order = graph.topo_order()

    def run(self, feeds: Mapping[str, np.ndarray], params: Mapping[str, np.ndarray],
            want: set[int] | None = None) -> dict[int, np.ndarray]:  # fmt: skip
        vals: dict[int, np.ndarray] = {}
        for nid in self.order:
            if want is not None and nid not in want:
                continue
            node = self.graph.node(nid)
            if node.op == "input":
                v = feeds[node.attrs["name"]]
            elif node.op == "param":
                v = params[node.attrs["name"]]
            elif node.op == "const":
                v = np.asarray(node.attrs["value"], dtype=_run_dtype(node.dtype))
            else:
                prim = get_primitive(node.op)
                attrs = {k: evaluate_value(a, self.env) for k, a in node.attrs.items()}
                if prim.random:  # the same draw in every evaluation, whatever is skipped
                    attrs["rng"] = np.random.default_rng([self.seed, nid])
                v = np.asarray(prim.numpy(np, *(vals[i] for i in node.inputs), **attrs))
                if is_float(node.dtype) and v.dtype != np.float64:
                    v = v.astype(np.float64)
            vals[nid] = v
        return vals


def _ancestors(graph: Graph, nid: int) -> set[int]:
    import networkx as nx

    return nx.ancestors(graph.g, nid) | {nid}


# --- the check -------------------------------------------------------------------------------


def symbol_sizes(graph: Graph, sizes: Mapping[str, int] | None = None) -> dict[str, int]:
    """Every symbolic dimension of the graph's inputs, set to `sizes[name]` or DEFAULT_DIM."""
    sizes = dict(sizes or {})
    env: dict[str, int] = {}
    for nid in graph.inputs.values():
        for d in graph.data(nid)["type"].shape:
            if isinstance(d, Dim):
                for s in sorted(d.symbols):
                    env.setdefault(s, int(sizes.get(s, DEFAULT_DIM)))
    unknown = set(sizes) - set(env)
    if unknown:
        raise ConfigError(
            f"--dim {sorted(unknown)[0]}: the model's inputs have no symbolic size of that "
            f"name; they have {', '.join(env) or 'none'}"
        )
    return env


def random_feeds(program: Program, env: Mapping[str, int], rng) -> dict[str, np.ndarray]:
    """A small random batch: normal floats, integers within their bound (classes, rows)."""
    from dslc.runtime.data import input_specs

    feeds = {}
    for spec in input_specs(program.train_graph):
        shape = _shape(spec.type, env)
        dt = spec.type.dtype
        if is_float(dt):
            feeds[spec.name] = rng.standard_normal(shape)
        elif dt == "bool":
            feeds[spec.name] = rng.random(shape) < 0.5
        else:
            feeds[spec.name] = rng.integers(0, spec.bound or 2, size=shape).astype(np_dtype(dt))
    return feeds


def initial_params(graph: Graph, seed: int) -> dict[str, np.ndarray]:
    from dslc.runtime.init import initial_value

    out = {}
    for name, nid in graph.params.items():
        d = graph.data(nid)
        a = d["attrs"]
        shape = tuple(int(s) for s in d["type"].shape)
        dtype = _run_dtype(d["type"].dtype)
        out[name] = initial_value(name, shape, dtype, a.get("init", "zeros"),
                                  a.get("init_args", ()), seed, d["span"])  # fmt: skip
    return out


def gradcheck(
    program: Program,
    *,
    sizes: Mapping[str, int] | None = None,
    seed: int = 0,
    step: float = STEP,
    tol: float = TOLERANCE,
    blocks: list[str] | None = None,
) -> GradReport:
    """Check the autodiff gradients of `program`'s loss block by block (module docstring)."""
    base = program.train_graph
    if "loss" not in base.outputs:
        raise ConfigError(f"{program.file}: the model has no loss, so no gradient to check")
    env = symbol_sizes(base, sizes)
    rng = np.random.default_rng(seed)
    feeds = random_feeds(program, env, rng)
    params = initial_params(base, seed)
    forward = Interpreter(base, env, seed).run(feeds, params)
    loss0 = forward[base.outputs["loss"]]
    if not np.isfinite(loss0):
        raise ConfigError(f"{program.file}: the loss is {loss0} on the random batch")
    report = GradReport([], env, tol, step)
    by_block = blocks_of(base)
    position = {nid: i for i, nid in enumerate(base.topo_order())}
    last = {
        block: max(position[n.id] for n in base.nodes() if _in_block(n.scope, block))
        for block in by_block
    }
    for block in sorted(by_block, key=lambda b: last[b]):  # from the inputs to the loss
        names = by_block[block]
        if blocks is not None and block not in blocks:
            continue
        floor = NOISE * max(1.0, abs(float(loss0))) / tol
        report.blocks.append(_check_block(base, block, names, feeds, params, forward, env,
                                          seed, step, rng, floor))  # fmt: skip
    return report


def _check_block(base, block, names, feeds, params, forward, env, seed, step, rng, floor):
    g = base.copy()
    inputs = _rewire_input(g, block)
    values = dict(params)
    for name in inputs:
        values[name] = np.array(forward[g.data(g.params[name])["attrs"]["stands_for"]],
                                dtype=np.float64)  # fmt: skip
    try:
        gd = autodiff(g)
    except DslcError as e:
        e.notes.append(f"while differentiating block `{block}` for the gradient check")
        raise
    interp = Interpreter(gd, env, seed)
    loss = gd.outputs["loss"]
    want = {gd.grads[n] for n in names + inputs if n in gd.grads} | {loss}
    vals = interp.run(feeds, values, want=set().union(*(_ancestors(gd, w) for w in want)))
    loss_only = _ancestors(gd, loss)
    out = BlockCheck(block)
    for name in names + inputs:
        if name not in gd.grads:
            out.skipped.append(name)
            continue
        t = values[name]
        v = rng.standard_normal(t.shape)
        analytic = float(np.sum(vals[gd.grads[name]] * v))
        lo_hi = []
        for sign in (1.0, -1.0):
            vals2 = interp.run(feeds, {**values, name: t + sign * step * v}, want=loss_only)
            lo_hi.append(float(vals2[loss]))
        numeric = (lo_hi[0] - lo_hi[1]) / (2 * step)
        label = name[len(block) + 1 :] if name.startswith(block + ".") else name
        out.tensors.append(TensorCheck(label, analytic, numeric, floor))
    return out
