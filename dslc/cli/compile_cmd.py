"""`dslc compile model.nn`: the summary, text IR, JSON or DOT of a model, before or after passes."""

from __future__ import annotations

import os
from collections.abc import Mapping

import click

from dslc.cli import allow_imports_option, parse_sets, report_errors

EMITS = ("summary", "ir", "json", "dot")


@click.command("compile")
@click.argument("model", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--set", "sets", multiple=True, metavar="NAME=VALUE", help="Override a hyper-parameter."
)
@click.option(
    "--emit",
    type=click.Choice(EMITS),
    default=None,
    help="What to print: the model summary (default), text IR, JSON or Graphviz DOT.",
)
@click.option(
    "--mode",
    type=click.Choice(["train", "infer"]),
    default=None,
    help="Which graph: training (with loss) or inference. "
    "Default: infer for the plain summary, train otherwise.",
)
@click.option("--passes", "show_passes", is_flag=True, help="Show what each pass changed.")
@click.option("--after", metavar="PASS", help="Run the pass pipeline up to and including PASS.")
@click.option(
    "--explain",
    is_flag=True,
    help="List fused kernels with their source lines, and the fusions not made, with why.",
)
@click.option(
    "--depth", type=click.IntRange(min=1), default=2, show_default=True, help="Summary depth."
)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Write the emitted text to a file."
)
@allow_imports_option
@report_errors
def compile_(model, sets, emit, mode, show_passes, after, explain, depth, output):
    """Compile MODEL and print its summary, IR (--emit ir|json|dot) or pass reports."""
    from dslc.frontend import load_program

    run_passes = bool(after or show_passes or explain)
    if mode is None:
        mode = "infer" if (emit in (None, "summary") and not run_passes) else "train"
    program = load_program(model, parse_sets(sets), mode=mode)  # lowers only this graph
    graph = program.graph(mode)
    stage = "lowered"
    if run_passes:
        from dslc.passes import run_pipeline  # 70 ms of imports a plain summary does not need

        graph, reports = run_pipeline(graph, until=after, report=True)
        stage = reports[-1].name
        if show_passes:
            _print(_passes_table(reports))
        if explain:
            click.echo(explanation(graph, program.sources))
    if emit is None and (show_passes or explain):
        return
    _emit(emit or "summary", graph, program, mode, stage, depth, output)


def _emit(emit, graph, program, mode, stage, depth, output) -> None:
    from dslc.ir import dot, json_export, printer, summary

    title = f"{program.name} · {mode} graph · {stage}"
    if emit == "summary":
        s = summary.summarize(graph, program.name, mode, depth=depth)
        if output is None:
            _print(summary.render(s))
            return
        text = summary.summary_text(s)
    elif emit == "ir":
        text = printer.format_graph(graph, title)
    elif emit == "json":
        text = json_export.to_json(
            graph,
            name=program.name,
            file=program.file,
            mode=mode,
            stage=stage,
            hparams=program.hparams,
        )
    else:
        text = dot.to_dot(graph, name=program.name)
    if output is None:
        click.echo(text, nl=False)
        return
    with open(output, "w", encoding="utf-8") as fh:
        fh.write(text)
    click.echo(f"wrote {output}", err=True)


def _print(renderable) -> None:
    import sys

    from rich.console import Console

    # a pipe or file has no width: give tables room instead of rich's 80 columns
    Console(soft_wrap=False, width=None if sys.stdout.isatty() else 120).print(renderable)


# --- --passes -----------------------------------------------------------------------------


def _passes_table(reports: list):
    """One row per pass: nodes, kernels and estimated peak memory, before -> after."""
    from rich.table import Table
    from rich.text import Text

    from dslc.ir.summary import format_bytes

    table = Table(title="passes", title_justify="left", header_style="bold")
    table.add_column("Pass")
    table.add_column("Nodes", justify="right")
    table.add_column("Kernels", justify="right")
    table.add_column("Peak memory (estimated)", justify="right")
    for r in reports:
        table.add_row(
            Text(r.name),
            _change(r.nodes_before, r.nodes_after),
            _change(r.kernels_before, r.kernels_after),
            _change(format_bytes(r.peak_before), format_bytes(r.peak_after)),
        )
    return table


def _change(before, after) -> str:
    """`120 -> 95 (-25)`, or just `95` when nothing changed."""
    if before == after:
        return f"{after}"
    diff = f" ({after - before:+d})" if isinstance(after, int) else ""
    return f"{before} -> {after}{diff}"


# --- --explain ----------------------------------------------------------------------------


def explanation(graph, sources: Mapping[str, str] | None = None) -> str:
    """Each fused kernel with the `.nn` lines it came from, then the fusions not made.

    The declined fusions are the fuse pass's `graph.meta["fusion_report"]`: dicts with
    `producer`, `producer_op`, `consumer_op`, `group` (node ids as they are after the pass),
    `span` and `reason`.
    """
    from dslc.ir.printer import format_span
    from dslc.ir.summary import body_ops

    sources = dict(sources or {})
    fused = [n for n in graph.topo_order() if graph.data(n)["op"] == "fused"]
    not_generated = {e["node"]: e["reason"] for e in graph.meta.get("codegen_report") or []}
    lines = [f"{len(fused)} fused kernel(s)"]
    for nid in fused:
        d = graph.data(nid)
        ops = body_ops(graph, nid)
        pattern = d["attrs"].get("pattern")
        head = f"%{nid}: {d['type']} = fused {' + '.join(n.op for n in ops)}"
        head += f"  [{pattern}]" if pattern else ""
        head += f"  ({d['scope']})" if d.get("scope") else ""
        lines += ["", head]
        if nid in not_generated:
            lines.append(f"    not one generated kernel (NumPy calls): {not_generated[nid]}")
        spans = [n.span for n in ops if n.span is not None] or [d.get("span")]
        for file, line in sorted({(s.file, s.line) for s in spans if s is not None}):
            text = _source_line(file, line, sources)
            lines.append(f"    {os.path.basename(file)}:{line:<5} | {text}")
    lines += _pattern_lines(graph, sources)
    lines += _pack_lines(graph, sources)
    lines += _project_lines(graph, sources)
    lines += _sink_lines(graph, sources)
    declined = sorted(
        graph.meta.get("fusion_report") or [],
        key=lambda e: (e["span"].file, e["span"].line, e["span"].col) if e.get("span") else ("",),
    )
    lines += ["", f"{len(declined)} fusion(s) not made"]
    for e in declined:
        where = format_span(e.get("span")) or "?"
        into = f"`{e['consumer_op']}` " if e.get("consumer_op") else ""
        lines.append(
            f"  {where}: `{e['producer_op']}` (%{e['producer']}) not fused into "
            f"{into}(%{e['group']}): {e['reason']}"
        )
    return "\n".join(lines)


# the passes that put one primitive in place of a layer's chain: (primitives, report key, op)
PATTERN_PASSES = (
    (("attention", "attention_grad"), "attention_report", "softmax", "attention"),
    (("layer_norm", "layer_norm_grad"), "layer_norm_report", "mean", "layer_norm"),
)


def _pattern_lines(graph, sources: dict[str, str]) -> list[str]:
    """The kernels of the `attention` and `layer_norm` passes with their source lines, and
    the chains they looked at and left (`graph.meta[...report]`), with why."""
    from dslc.ir.printer import format_span

    lines: list[str] = []
    for ops, key, start, into in PATTERN_PASSES:
        nodes = [n for n in graph.topo_order() if graph.data(n)["op"] in ops]
        report = graph.meta.get(key) or []
        if not nodes and not report:
            continue
        lines += ["", f"{len(nodes)} {into} kernel(s)"]
        for nid in nodes:
            d = graph.data(nid)
            head = f"%{nid}: {d['type']} = {d['op']}"
            lines.append(head + (f"  ({d['scope']})" if d.get("scope") else ""))
            span = d.get("span")
            if span is not None:
                text = _source_line(span.file, span.line, sources)
                lines.append(f"    {os.path.basename(span.file)}:{span.line:<5} | {text}")
        for e in report:
            where = format_span(e.get("span")) or "?"
            why = e["reason"]
            lines.append(f"  {where}: `{start}` (%{e['node']}) not made into `{into}`: {why}")
    return lines


def _source_row(entry: dict, sources: dict[str, str]) -> str:
    """`    file.nn:line | source text  (scope)` of a pass report entry."""
    span = entry.get("span")
    where = f"{os.path.basename(span.file)}:{span.line:<5}" if span is not None else "?"
    text = _source_line(span.file, span.line, sources) if span is not None else ""
    return f"    {where} | {text}  ({entry['scope']})"


def _pack_lines(graph, sources: dict[str, str]) -> list[str]:
    """The attentions whose q, k and v projections the `pack_qkv` pass made one matmul, and
    those it left, with why (`graph.meta["pack_qkv"]`, `["pack_qkv_report"]`)."""
    from dslc.ir.printer import format_span

    packed = graph.meta.get("pack_qkv") or []
    left = graph.meta.get("pack_qkv_report") or []
    if not packed and not left:
        return []
    lines = ["", f"{len(packed)} attention(s) with q, k and v projected by one matmul"]
    lines += [_source_row(e, sources) for e in packed]
    for e in left:
        where = format_span(e.get("span")) or "?"
        lines.append(f"  {where}: attention (%{e['node']}) keeps three projections: {e['reason']}")
    return lines


def _project_lines(graph, sources: dict[str, str]) -> list[str]:
    """The lookups the `project_tables` pass made read a projected table (inference graphs:
    `graph.meta["project_tables"]`)."""
    done = graph.meta.get("project_tables") or []
    if not done:
        return []
    lines = ["", f"{len(done)} lookup(s) reading rows of a projected table (computed once)"]
    lines += [_source_row(e, sources) for e in done]
    return lines


def _sink_lines(graph, sources: dict[str, str]) -> list[str]:
    """The operations the `sink_slices` pass cut to the positions a slice keeps, by source
    line (`graph.meta["sink_slices"]`)."""
    moved = graph.meta.get("sink_slices") or []
    if not moved:
        return []
    by_line: dict[tuple, list[str]] = {}
    for m in moved:
        span = m.get("span")
        key = (span.file, span.line) if span is not None else ("", 0)
        by_line.setdefault(key, []).append(f"{m['op']} (axis {m['axis']})")
    lines = ["", f"{len(moved)} operation(s) computed only for the positions a slice keeps"]
    for (file, line), ops in sorted(by_line.items()):
        where = f"{os.path.basename(file)}:{line:<5}" if file else "?"
        lines.append(f"    {where} | {_source_line(file, line, sources) if file else ''}")
        lines.append(f"           {', '.join(ops)}")
    return lines


def _source_line(file: str, line: int, sources: dict[str, str]) -> str:
    if file not in sources:
        try:
            with open(file, encoding="utf-8") as fh:
                sources[file] = fh.read()
        except OSError:
            sources[file] = ""
    src = sources[file].splitlines()
    return src[line - 1].strip() if 1 <= line <= len(src) else ""
