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


def dim_sum(dims) -> Dim:
    """The sum of many Dims, adding terms in place instead of building a Dim per step."""
    terms: dict = {}
    for d in dims:
        for m, c in d.terms.items():
            terms[m] = terms.get(m, 0) + c
    return Dim(terms)


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


def all_flops(graph: Graph) -> dict[int, Dim]:
    """Every node's FLOPs, by node id."""
    return {nid: node_flops(graph, nid) for nid in graph.g.nodes}


def total_flops(graph: Graph) -> Dim:
    """FLOPs of one evaluation of the whole graph."""
    return dim_sum(all_flops(graph).values())


def body_ops(graph: Graph, nid: int) -> list:
    """The primitive nodes inside a fused node's body, in order (empty for other nodes)."""
    body = graph.data(nid)["attrs"].get("body")
    if not isinstance(body, Graph):
        return []
    return [body.node(n) for n in body.topo_order() if body.data(n)["op"] not in GRAPH_LEVEL]


def nbytes(t: TensorType) -> Dim:
    """Bytes of one value of type `t`."""
    return numel(t.shape) * np_dtype(t.dtype).itemsize


def activation_bytes(graph: Graph) -> Dim:
    """Bytes of every intermediate result, as if none were freed or reused (an upper bound)."""
    return dim_sum(nbytes(n.type) for n in graph.nodes() if n.op not in GRAPH_LEVEL)


def param_totals(graph: Graph) -> tuple[Dim, Dim]:
    """(trainable, non-trainable) parameter counts; frozen params and running state are
    non-trainable."""
    trainable = set(graph.trainable_params())
    counts = {name: numel(graph.data(nid)["type"].shape) for name, nid in graph.params.items()}
    return (
        dim_sum(n for name, n in counts.items() if name in trainable),
        dim_sum(n for name, n in counts.items() if name not in trainable),
    )


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

    label: str  # the last part of the scope (nested rows are indented under their parent)
    depth: int
    scope: str = ""  # the full dotted scope; "" for runs of model-level ops
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
    backward: bool = False  # the graph holds gradients: its FLOPs are a whole training step

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
    flops = all_flops(graph)
    size = {
        n: nbytes(graph.data(n)["type"]) for n in order if graph.data(n)["op"] not in GRAPH_LEVEL
    }
    rows: dict[tuple, Row] = {}
    first: dict[tuple, int] = {}
    nodes_of: dict[tuple, list[int]] = {}
    params_of: dict[tuple, list[Dim]] = {}

    def keys(path: tuple, at: int) -> list[tuple]:
        """The rows a node at scope `path` counts in: each prefix down to `depth`."""
        lim = len(path) if depth is None else min(depth, len(path))
        out = [path[:k] for k in range(1, lim + 1)]
        for k in out:
            if k not in rows:
                rows[k], first[k] = Row(k[-1], len(k) - 1, ".".join(k)), at
        return out

    run = None  # the row of the current run of model-level ops
    for at, nid in enumerate(order):
        d = graph.data(nid)
        if d["op"] == "param":  # parameters count where their name puts them: `layers.0.W`
            name_ = d["attrs"]["name"]
            path = scope_path(name_.rpartition(".")[0]) or ("(parameters)",)
            for k in keys(path, at):
                params_of.setdefault(k, []).append(numel(d["type"].shape))
        if d["op"] in GRAPH_LEVEL:
            continue
        path = scope_path(d.get("scope") or "")
        if path:
            run = None
            ks = keys(path, at)
        else:
            if run is None:
                run = ("", at)
                rows[run], first[run] = Row("", 0), at
            ks = [run]
        for k in ks:
            nodes_of.setdefault(k, []).append(nid)

    roots = set(graph.roots())
    for k, r in rows.items():
        nodes = nodes_of.get(k, [])
        r.ops = len(nodes)
        r.flops = dim_sum(flops[n] for n in nodes)
        r.activations = dim_sum(size[n] for n in nodes)
        r.params = dim_sum(params_of.get(k, []))
        if k[0] == "":  # a run of model-level ops is named by them: `(log_softmax, mean)`
            ops = list(dict.fromkeys(graph.data(n)["op"] for n in nodes))
            r.label = "(" + ", ".join(ops[:4]) + (", ..." if len(ops) > 4 else "") + ")"
        # the row's output: its last result that something outside it (or a table) reads
        inside = set(nodes)
        escaping = [n for n in nodes if n in roots or any(u not in inside for u in graph.users(n))]
        r.outputs = [graph.data(n)["type"] for n in (escaping or nodes)[-1:]]

    trainable, non = param_totals(graph)
    return Summary(
        name=name,
        mode=mode,
        rows=[rows[k] for k in sorted(rows, key=lambda k: (first[k], rows[k].depth))],
        trainable=trainable,
        non_trainable=non,
        flops=dim_sum(flops.values()),
        activations=dim_sum(size.values()),
        param_bytes=dim_sum(nbytes(graph.data(n)["type"]) for n in graph.params.values()),
        input_bytes=dim_sum(nbytes(graph.data(n)["type"]) for n in graph.inputs.values()),
        symbols=symbols(graph),
        backward=bool(graph.grads),
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
    flops = "FLOPs per training step" if s.backward else "FLOPs per forward pass"
    lines = [
        ("Parameters", f"{format_count(s.params)}  ({format_bytes(s.param_bytes)})"),
        ("  trainable", format_count(s.trainable)),
        ("  non-trainable", format_count(s.non_trainable)),
        (flops, s.flops.format()),
        ("Activation memory", format_bytes(s.activations)),
        ("Input memory", format_bytes(s.input_bytes)),
    ]
    if s.symbols:
        lines.append(("Symbolic sizes", ", ".join(s.symbols)))
    for name, value in lines:
        totals.add_row(name, Text(value))
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
