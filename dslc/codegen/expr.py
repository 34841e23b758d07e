"""A target-neutral expression IR for one fused group, lowered from its body graph.

A group iterates over its domain `D`, split at axis `k` into an outer part (`R` = prod D[:k])
and an inner part (`C` = prod D[k:]). Three loop patterns:

  map  every value is per element; no reduction (split chosen so every operand has a layout)
  row  reductions over the inner part: one program per outer index (softmax, layer-norm)
  col  reductions over the outer part: per inner index (bias gradients, `sum_to` of leading
       axes); no reduced value may feed back into a per-element one

An operand is read with one of four layouts, from its shape against `D` split at `k`:
`full` [o*C + c], `outer` [o] (broadcast over the inner part), `inner` [c], `scalar` [0].
Nodes are SSA, referenced by index, each with a dtype and a level: `const`, `red` (one value
per kept index: a reduction's result or a value computed from such) or `full` (per element).
Reductions are `sum`, `mean`, `max`, `min`; softmax, log-softmax, logsumexp and var are
expanded into them. Scalar functions are the registry's EXPR_FUNCTIONS; emitters
(`numba_emit`, later CUDA C) print this IR and nothing else.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass

from dslc.ir.dims import Dim
from dslc.ir.graph import Graph
from dslc.ops import REGISTRY

LEVELS = {"const": 0, "red": 1, "full": 2}
EDGE_VIEWS = ("reshape", "broadcast_to")  # injective ops read at the group's edge
BIN = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow",
       ast.BitAnd: "and", ast.BitOr: "or"}  # fmt: skip
CMP = {ast.Eq: "eq", ast.NotEq: "ne", ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge"}
CALLS = ("exp", "log", "log1p", "sqrt", "tanh", "erf", "sin", "cos", "abs", "sign", "max", "min",
         "pow", "where")  # fmt: skip


class Unsupported(Exception):
    """The group cannot be generated; the message says why (shown in reports)."""


@dataclass(frozen=True)
class Node:
    """One SSA value: `op` is load/const/count or a scalar function, or `reduce`."""

    op: str  # load | const | count | reduce | neg | not | add ... | exp ... | cast
    args: tuple[int, ...]
    dtype: str
    level: str
    value: object = None  # load: the load index; const: the number; reduce: sum|mean|max|min;
    # cast: the target dtype


@dataclass(frozen=True)
class Load:
    """A kernel argument: operand `operand` viewed with `shape`, read with `layout`."""

    operand: int
    shape: tuple  # the view's shape (Dims); the operand's own shape unless reshaped
    reshaped: bool
    layout: str  # full | outer | inner | scalar


@dataclass(frozen=True)
class KernelIR:
    pattern: str  # map | row | col
    split: int  # k: D[:k] is the outer part
    domain: tuple
    loads: tuple[Load, ...]
    nodes: tuple[Node, ...]
    out: int
    n_operands: int

    @property
    def out_level(self) -> str:
        return self.nodes[self.out].level

    def reductions(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.op == "reduce"]


def prod(dims) -> Dim | int:
    out = 1
    for d in dims:
        out = out * d
    return out


def layout(shape: tuple, domain: tuple, k: int, strided: bool = False) -> str | None:
    """How a value of `shape` (NumPy broadcasting against `domain`) is read at split `k`.

    With `strided`, a value broadcast over some of the outer axes is read at an offset
    computed once per outer index: `sfull` (inner part whole) or `souter` (inner part 1).
    """
    r = len(domain)
    if len(shape) > r:
        return None
    s = (1,) * (r - len(shape)) + tuple(shape)
    ones = [x == 1 for x in s]
    if all(ones):
        return "scalar"
    if s == tuple(domain):
        return "full"
    if all(ones[k:]) and s[:k] == tuple(domain[:k]):
        return "outer"
    if all(ones[:k]) and s[k:] == tuple(domain[k:]):
        return "inner"
    if strided and all(a == 1 or a == b for a, b in zip(s[:k], domain[:k])):
        if s[k:] == tuple(domain[k:]):
            return "sfull"
        if all(ones[k:]):
            return "souter"
    return None


# --- lowering --------------------------------------------------------------------------------


class _Lower:
    def __init__(self, pattern: str, dtype_of):
        self.pattern = pattern
        self.dtype_of = dtype_of  # TensorType dtype -> the dtype the run uses
        self.nodes: list[Node] = []
        self.memo: dict[tuple, int] = {}

    def add(self, op: str, args, dtype: str, value=None) -> int:
        args = tuple(args)
        if op == "load":
            level = "full" if self.pattern == "map" else value[1]
        elif op in ("const", "count"):
            level = "const"
        elif op == "reduce":
            if self.nodes[args[0]].level != "full":
                raise Unsupported("a reduction of a value that is already reduced")
            level = "red"
        else:
            level = max((self.nodes[a].level for a in args), key=LEVELS.__getitem__,
                        default="const")  # fmt: skip
            if self.pattern == "col" and level == "full":
                if any(self._depends_on_reduce(a) for a in args):
                    raise Unsupported("a reduced value feeds back into the per-element loop")
        key = (op, args, dtype, value if not isinstance(value, float) or value == value else "nan")
        if key in self.memo:
            return self.memo[key]
        self.nodes.append(Node(op, args, dtype, level, value[0] if op == "load" else value))
        self.memo[key] = len(self.nodes) - 1
        return self.memo[key]

    def _depends_on_reduce(self, i: int) -> bool:
        n = self.nodes[i]
        return n.op == "reduce" or any(self._depends_on_reduce(a) for a in n.args)

    def const(self, v, dtype: str) -> int:
        return self.add("const", (), dtype, _number(v, dtype))

    # templates: "max({0}, 0.0)" parsed as a Python expression over placeholders a0, a1...
    def template(self, expr: str, args: list[int], attrs: dict, dtype: str) -> int:
        names = {f"a{i}": a for i, a in enumerate(args)}
        subst = {k: _literal(v) for k, v in attrs.items()}
        text = expr.format(*names, **subst)
        try:
            tree = ast.parse(text, mode="eval").body
        except SyntaxError:
            raise Unsupported(f"cannot read the expression template {expr!r}") from None
        return self._ast(tree, names, dtype)

    def _ast(self, t, names, dtype: str) -> int:
        if isinstance(t, ast.Name):
            if t.id in names:
                return names[t.id]
            if t.id == "inf":
                return self.const(math.inf, dtype)
            raise Unsupported(f"unknown name {t.id!r} in an expression template")
        if isinstance(t, ast.Constant):
            return self.const(t.value, dtype)
        if isinstance(t, ast.UnaryOp):
            a = self._ast(t.operand, names, dtype)
            if isinstance(t.op, ast.USub):
                return self.add("neg", (a,), self.nodes[a].dtype)
            raise Unsupported(f"unary operator {type(t.op).__name__} in a template")
        if isinstance(t, ast.BinOp) and type(t.op) in BIN:
            a, b = self._pair(t.left, t.right, names, dtype)
            op = BIN[type(t.op)]
            return self.add(op, (a, b), "bool" if op in ("and", "or") else self.nodes[a].dtype)
        if isinstance(t, ast.Compare) and len(t.ops) == 1 and type(t.ops[0]) in CMP:
            a, b = self._pair(t.left, t.comparators[0], names, dtype)
            return self.add(CMP[type(t.ops[0])], (a, b), "bool")
        if isinstance(t, ast.Call) and isinstance(t.func, ast.Name):
            fn = t.func.id
            if fn.startswith("cast_"):
                (a,) = [self._ast(x, names, dtype) for x in t.args]
                to = self.dtype_of(fn[5:])
                return self.add("cast", (a,), to, to)
            if fn not in CALLS:
                raise Unsupported(f"function {fn!r} in an expression template")
            if fn == "where":
                c = self._ast(t.args[0], names, dtype)
                a, b = self._pair(t.args[1], t.args[2], names, dtype)
                return self.add("where", (c, a, b), self.nodes[a].dtype)
            if len(t.args) == 2:
                a, b = self._pair(t.args[0], t.args[1], names, dtype)
                return self.add(fn, (a, b), self.nodes[a].dtype)
            (a,) = [self._ast(x, names, dtype) for x in t.args]
            return self.add(fn, (a,), self.nodes[a].dtype)
        raise Unsupported(f"cannot lower {ast.unparse(t)!r}")

    def _pair(self, x, y, names, dtype) -> tuple[int, int]:
        """Two operands; a literal takes the dtype of the other one."""
        if isinstance(x, ast.Constant) and not isinstance(y, ast.Constant):
            b = self._ast(y, names, dtype)
            return self.const(x.value, self.nodes[b].dtype), b
        a = self._ast(x, names, dtype)
        if isinstance(y, ast.Constant):
            return a, self.const(y.value, self.nodes[a].dtype)
        return a, self._ast(y, names, dtype)


def _number(v, dtype: str):
    if dtype == "bool":
        return bool(v)
    if dtype[0] == "i":
        if float(v) != int(v):
            raise Unsupported(f"the non-integer constant {v} in integer arithmetic")
        return int(v)
    return float(v)


def _literal(v) -> str:
    if isinstance(v, bool):
        return "1.0" if v else "0.0"
    if isinstance(v, (int, float)):
        v = float(v)
        if math.isinf(v):
            return "inf" if v > 0 else "(-inf)"
        if math.isnan(v):
            raise Unsupported("a NaN attribute")
        return repr(v)
    if isinstance(v, str) and v.isidentifier():
        return v
    raise Unsupported(f"attribute value {v!r}")


# GELU has no template (its attribute picks the formula): 0.5 x (1 + erf(x / sqrt 2)), or
# 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
GELU = {
    "none": "(0.5 * {0} * (1.0 + erf({0} * 0.7071067811865476)))",
    "tanh": "(0.5 * {0} * (1.0 + tanh(0.7978845608028654 * ({0} + 0.044715 * {0} * {0} * {0}))))",
}


def _reduction(lw: _Lower, op: str, x: int, dtype: str) -> int:
    """A reduction primitive as IR: sums, extrema, and the row functions built on them."""
    if dtype[0] != "f":
        raise Unsupported(f"`{op}` of a {dtype} value")
    if op in ("sum", "sum_to"):
        return lw.add("reduce", (x,), dtype, "sum")
    if op in ("mean", "max", "min"):
        return lw.add("reduce", (x,), dtype, op)
    if op == "var":  # mean((x - mean x)^2), two passes
        d = lw.add("sub", (x, lw.add("reduce", (x,), dtype, "mean")), dtype)
        return lw.add("reduce", (lw.add("mul", (d, d), dtype),), dtype, "mean")
    if op in ("softmax", "log_softmax", "logsumexp"):
        if lw.pattern != "row":
            raise Unsupported(f"`{op}` over leading axes")
        m = lw.add("reduce", (x,), dtype, "max")
        z = lw.add("sub", (x, m), dtype)
        e = lw.add("exp", (z,), dtype)
        s = lw.add("reduce", (e,), dtype, "sum")
        if op == "softmax":
            return lw.add("mul", (e, lw.add("div", (lw.const(1.0, dtype), s), dtype)), dtype)
        ls = lw.add("log", (s,), dtype)
        if op == "log_softmax":
            return lw.add("sub", (z, ls), dtype)
        return lw.add("add", (m, ls), dtype)
    raise Unsupported(f"`{op}` is not generated")


def pattern_of(pattern: str, domain: tuple, axes: tuple) -> tuple[str, int | None]:
    """The loop pattern and split of a fused node's `pattern`, `domain`, `reduce_axes`."""
    r = len(domain)
    if pattern == "elementwise" or not axes:
        return "map", None
    axes = tuple(sorted(axes))
    if axes == tuple(range(r - len(axes), r)):
        return "row", r - len(axes)
    if axes == tuple(range(len(axes))):
        return "col", len(axes)
    return "", None


def lower(
    body: Graph, pattern: str, domain: tuple, reduce_axes: tuple, dtype_of=lambda d: d
) -> KernelIR:
    """The kernel IR of a fused body; raises Unsupported with the reason it cannot be."""
    domain = tuple(domain)
    pat, k = pattern_of(pattern, domain, tuple(reduce_axes))
    if not pat:
        raise Unsupported(f"it reduces axes {tuple(reduce_axes)}, neither leading nor trailing")
    order = body.topo_order()
    inputs = {nid: int(body.data(nid)["attrs"]["name"][2:]) for nid in order
              if body.data(nid)["op"] == "input"}  # fmt: skip
    # views at the edge: value id -> (operand, shape, reshaped)
    views: dict[int, tuple[int, tuple, bool]] = {
        nid: (i, tuple(body.data(nid)["type"].shape), False) for nid, i in inputs.items()
    }
    for nid in order:
        d = body.data(nid)
        if d["op"] in EDGE_VIEWS:
            src = d["inputs"][0]
            if src not in views:
                raise Unsupported(f"`{d['op']}` of a value computed inside the group")
            i, shape, reshaped = views[src]
            if d["op"] == "reshape":
                views[nid] = (i, tuple(d["type"].shape), True)
            else:
                views[nid] = (i, shape, reshaped)
    used = {src for nid in order for src in body.data(nid)["inputs"]
            if body.data(nid)["op"] not in EDGE_VIEWS} | {body.outputs["out"]}  # fmt: skip
    leaves = [nid for nid in views if nid in used]
    if k is None:  # map: the split where every operand has a layout; prefer flat, then many rows
        shapes = [views[n][1] for n in leaves]
        cands = [j for j in range(len(domain) + 1)
                 if all(layout(s, domain, j) is not None for s in shapes)]  # fmt: skip
        flat = [j for j in cands if all(layout(s, domain, j) in ("full", "scalar") for s in shapes)]
        strided = not cands
        if strided:  # some operand broadcasts over outer axes: read it at an offset per row
            cands = [j for j in range(len(domain) + 1)
                     if all(layout(s, domain, j, True) is not None for s in shapes)]  # fmt: skip
        if not cands:
            raise Unsupported("an operand broadcasts over both leading and trailing axes")
        if 0 in flat:
            k = 0
        elif flat:
            k = flat[0]
        elif strided:  # offsets are worked out once per row: the longest rows (bias over NCHW)
            k = min(cands)
        else:
            k = max(cands)
    lw = _Lower(pat, dtype_of)
    loads: list[Load] = []
    val: dict[int, int] = {}
    for nid in order:
        d = body.data(nid)
        op = d["op"]
        dtype = dtype_of(d["type"].dtype)
        if nid in views:
            if nid not in leaves:
                continue
            i, shape, reshaped = views[nid]
            lay = layout(shape, domain, k, strided=pat != "col")
            if lay is None:
                raise Unsupported(
                    f"operand {i} of shape {_fmt(shape)} is not read whole, per row or per"
                    f" column of {_fmt(domain)}"
                )
            lvl = {"full": "full", "sfull": "full", "scalar": "red"}.get(lay)
            lay_kept = "outer" if lay == "souter" else lay
            if lvl is None:  # outer/inner: per kept index in reductions, else per element
                kept = "outer" if pat == "row" else "inner"
                lvl = "red" if lay_kept == kept else "full"
            ld = Load(i, shape, reshaped, lay)
            idx = loads.index(ld) if ld in loads else len(loads)
            if idx == len(loads):
                loads.append(ld)
            val[nid] = lw.add("load", (), dtype, (idx, lvl))
            continue
        if op == "const":
            v = d["attrs"]["value"]
            try:
                v = float(v) if dtype[0] == "f" else v.item() if hasattr(v, "item") else v
            except (TypeError, ValueError):
                raise Unsupported("a non-scalar constant") from None
            val[nid] = lw.const(v, dtype)
            continue
        prim = REGISTRY.get(op)
        if prim is None:
            raise Unsupported(f"`{op}` has no primitive record")
        args = [val[i] for i in d["inputs"]]
        if prim.kind == "reduction":
            val[nid] = _reduction(lw, op, args[0], dtype)
        elif prim.kind in ("elementwise", "broadcast"):
            expr = GELU.get(d["attrs"].get("approximate")) if op == "gelu" else prim.expr
            if expr is None:
                raise Unsupported(f"`{op}` has no scalar expression")
            val[nid] = lw.template(expr, args, d["attrs"], dtype)
            if lw.nodes[val[nid]].dtype != dtype:  # a template that yields another type
                val[nid] = lw.add("cast", (val[nid],), dtype, dtype)
        else:
            raise Unsupported(f"`{op}` ({prim.kind}) inside the group")
    out = val[body.outputs["out"]]
    out_level = lw.nodes[out].level
    if out_level == "const":
        raise Unsupported("the result is a constant")
    if pat == "map" and not loads:
        raise Unsupported("no operand")
    if pat == "col" and out_level == "full":
        raise Unsupported("a per-element result of a reduction over leading axes")
    if pat == "map" and any(n.op == "reduce" for n in lw.nodes):
        raise Unsupported("a reduction in an elementwise group")
    return KernelIR(pat, k, domain, tuple(loads), tuple(lw.nodes), out, len(inputs))


def _fmt(shape) -> str:
    return "[" + ", ".join(str(s) for s in shape) + "]"


def single_body(op: str, in_types, out_type, attrs) -> Graph:
    """A one-node body for a node that was not fused, so it can be generated alike."""
    g = Graph()
    ins = []
    for i, t in enumerate(in_types):
        ins.append(g.add("input", (), t, {"name": f"in{i}", "role": "input"}))
        g.inputs[f"in{i}"] = ins[-1]
    g.outputs["out"] = g.add(op, ins, out_type, dict(attrs))
    return g
