"""Model summary: per-scope rows (output shape, parameters, FLOPs) and totals as formulas.

Costs are symbolic: a FLOP count or a byte size is a `Dim` in the model's symbolic sizes,
printed with `Dim.format()` (`1.2M*N*T + 40k*N*T^2`). FLOPs come from each primitive's
`flops` rule in the registry; a fused node costs what its body costs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dslc.ir.dims import Dim, numel, to_dim
from dslc.ir.graph import Graph
from dslc.ir.types import TensorType, np_dtype

GRAPH_LEVEL = ("input", "param", "const")


# --- costs ---------------------------------------------------------------------------------


def node_flops(graph: Graph, nid: int) -> Dim:
    """Floating-point operations of one node, from its primitive's `flops` rule."""
    d = graph.data(nid)
    op = d["op"]
    if op in GRAPH_LEVEL:
        return Dim.const(0)
    if op == "fused":
        body = d["attrs"].get("body")
        return total_flops(body) if isinstance(body, Graph) else Dim.const(0)
    from dslc.ops import get_primitive

    in_types = [graph.data(i)["type"] for i in d["inputs"]]
    return to_dim(get_primitive(op).flops(in_types, d["type"], d["attrs"]))


def body_ops(graph: Graph, nid: int) -> list:
    """The primitive nodes inside a fused node's body, in order (empty for other nodes)."""
    body = graph.data(nid)["attrs"].get("body")
    if not isinstance(body, Graph):
        return []
    return [body.node(n) for n in body.topo_order() if body.data(n)["op"] not in GRAPH_LEVEL]


def total_flops(graph: Graph) -> Dim:
    """FLOPs of one evaluation of the whole graph."""
    total = Dim.const(0)
    for nid in graph.g.nodes:
        total = total + node_flops(graph, nid)
    return total


def nbytes(t: TensorType) -> Dim:
    """Bytes of one value of type `t`."""
    return numel(t.shape) * np_dtype(t.dtype).itemsize


def activation_bytes(graph: Graph) -> Dim:
    """Bytes of every intermediate result, as if none were freed or reused (an upper bound)."""
    total = Dim.const(0)
    for n in graph.nodes():
        if n.op not in GRAPH_LEVEL:
            total = total + nbytes(n.type)
    return total


def param_totals(graph: Graph) -> tuple[Dim, Dim]:
    """(trainable, non-trainable) parameter counts; frozen params and running state are
    non-trainable."""
    trainable = set(graph.trainable_params())
    tr = non = Dim.const(0)
    for name, nid in graph.params.items():
        n = numel(graph.data(nid)["type"].shape)
        if name in trainable:
            tr = tr + n
        else:
            non = non + n
    return tr, non


def symbols(graph: Graph) -> list[str]:
    """The symbolic sizes the graph's types mention, sorted."""
    out: set[str] = set()
    for n in graph.nodes():
        out |= n.type.symbols
    return sorted(out)


def format_count(n: Dim) -> str:
    """`101,770`, or a formula when the count is symbolic."""
    return f"{n.value:,}" if n.is_const else n.format()


def format_bytes(n: Dim) -> str:
    """`1.2MB*N + 512B`: byte coefficients with decimal k/M/G prefixes."""
    return n.format(unit="B")


# --- summary -----------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the summary: a scope (all nodes under it) or a run of top-level ops."""

    label: str
    depth: int
    ops: int = 0
    outputs: list[TensorType] = field(default_factory=list)
    params: Dim = field(default_factory=lambda: Dim.const(0))
    flops: Dim = field(default_factory=lambda: Dim.const(0))
    activations: Dim = field(default_factory=lambda: Dim.const(0))


@dataclass
class Summary:
    name: str
    mode: str | None
    rows: list[Row]
    trainable: Dim
    non_trainable: Dim
    flops: Dim
    activations: Dim
    param_bytes: Dim
    input_bytes: Dim
    symbols: list[str]

    @property
    def params(self) -> Dim:
        return self.trainable + self.non_trainable


def scope_path(scope: str) -> tuple[str, ...]:
    """`layers.2.attn.q` -> (`layers.2`, `attn`, `q`): a repeat index stays with its name."""
    out: list[str] = []
    for part in scope.split(".") if scope else ():
        if part.isdigit() and out:
            out[-1] += "." + part
        else:
            out.append(part)
    return tuple(out)


def summarize(
    graph: Graph, name: str = "model", mode: str | None = None, depth: int | None = 2
) -> Summary:
    """Rows for every scope down to `depth` levels (None: all), in order of first use."""
    order = graph.topo_order()
    pos = {nid: i for i, nid in enumerate(order)}
    rows: dict[tuple, Row] = {}
    first: dict[tuple, float] = {}
    member: dict[int, list[tuple]] = {}  # node -> keys of the rows it counts in

    def row_for(key: tuple, label: str, level: int, at: float) -> Row:
        if key not in rows:
            rows[key] = Row(label, level)
            first[key] = at
        first[key] = min(first[key], at)
        return rows[key]

    run = 0  # top-level ops between two scoped ones form one row
    last_top = False
    for nid in order:
        d = graph.data(nid)
        if d["op"] in GRAPH_LEVEL:
            continue
        path = scope_path(d.get("scope") or "")
        keys = []
        if not path:
            if not last_top:
                run += 1
            last_top = True
            keys.append(("", run))
            row_for(keys[-1], "", 0, pos[nid])
        else:
            last_top = False
            lim = len(path) if depth is None else min(depth, len(path))
            for k in range(1, lim + 1):
                keys.append(path[:k])
                row_for(path[:k], ".".join(path[:k]), k - 1, pos[nid])
        member[nid] = keys
        flops = node_flops(graph, nid)
        act = nbytes(d["type"])
        for key in keys:
            r = rows[key]
            r.ops += 1
            r.flops = r.flops + flops
            r.activations = r.activations + act

    # top-level runs are labelled by their ops: `(reshape)`, `(log_softmax, take_along, mean)`
    for key, r in rows.items():
        if key and key[0] == "":
            ops = [graph.data(n)["op"] for n, ks in member.items() if key in ks]
            names = list(dict.fromkeys(ops))
            r.label = "(" + ", ".join(names[:4]) + (", ..." if len(names) > 4 else "") + ")"

    # parameters count where their name puts them: `layers.0.W` belongs to `layers.0`
    for pname, nid in graph.params.items():
        path = scope_path(pname.rpartition(".")[0])
        n = numel(graph.data(nid)["type"].shape)
        lim = len(path) if depth is None else min(depth, len(path))
        if lim == 0:
            key = ("", "params")
            row_for(key, "(parameters)", 0, pos[nid])
            rows[key].params = rows[key].params + n
        for k in range(1, lim + 1):
            r = row_for(path[:k], ".".join(path[:k]), k - 1, pos[nid])
            r.params = r.params + n

    # a row's output: its last result that something outside the row (or a table) reads
    roots = set(graph.roots())
    for key, r in rows.items():
        nodes = [n for n, ks in member.items() if key in ks]
        inside = set(nodes)
        escaping = [n for n in nodes if n in roots or any(u not in inside for u in graph.users(n))]
        pick = escaping[-1:] if escaping else nodes[-1:]
        r.outputs = [graph.data(n)["type"] for n in pick]

    ordered = [rows[k] for k in sorted(rows, key=lambda k: (first[k], rows[k].depth))]
    trainable, non = param_totals(graph)
    param_bytes = sum((nbytes(graph.data(n)["type"]) for n in graph.params.values()), Dim())
    input_bytes = sum((nbytes(graph.data(n)["type"]) for n in graph.inputs.values()), Dim())
    return Summary(
        name=name,
        mode=mode,
        rows=ordered,
        trainable=trainable,
        non_trainable=non,
        flops=total_flops(graph),
        activations=activation_bytes(graph),
        param_bytes=param_bytes,
        input_bytes=input_bytes,
        symbols=symbols(graph),
    )


def render(s: Summary):
    """A rich renderable: the table of rows, then the totals."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text  # plain cells: `f32[batch, 64]` is not markup

    title = Text(s.name + (f" ({s.mode})" if s.mode else ""))
    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column("Layer", no_wrap=True)
    table.add_column("Output shape", no_wrap=True)
    table.add_column("Params", justify="right")
    table.add_column("FLOPs", justify="right")
    table.add_column("Ops", justify="right")
    for r in s.rows:
        cells = (
            "  " * r.depth + r.label,
            ", ".join(str(t) for t in r.outputs),
            format_count(r.params) if r.params != 0 else "",
            r.flops.format() if r.ops else "",
            str(r.ops) if r.ops else "",
        )
        table.add_row(*map(Text, cells))
    totals = Table.grid(padding=(0, 2))
    totals.add_column(style="bold")
    totals.add_column()
    totals.add_row("Parameters", f"{format_count(s.params)}  ({format_bytes(s.param_bytes)})")
    totals.add_row("  trainable", format_count(s.trainable))
    totals.add_row("  non-trainable", format_count(s.non_trainable))
    totals.add_row("FLOPs per forward pass", s.flops.format())
    totals.add_row("Activation memory", format_bytes(s.activations))
    totals.add_row("Input memory", format_bytes(s.input_bytes))
    if s.symbols:
        totals.add_row("Symbolic sizes", ", ".join(s.symbols))
    return Group(table, totals)


def summary_text(s: Summary, width: int = 100) -> str:
    """The rendered summary as plain text (for files and tests)."""
    from rich.console import Console

    console = Console(width=width, record=True, file=_Null(), color_system=None)
    console.print(render(s))
    return console.export_text()


class _Null:
    def write(self, _):
        return 0

    def flush(self):
        pass
