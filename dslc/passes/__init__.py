"""Graph passes, each `fn(graph) -> graph` in its own module, run in `PIPELINE` order."""

from __future__ import annotations

from dataclasses import dataclass

from dslc.errors import ConfigError
from dslc.ir.dims import Dim
from dslc.ir.graph import Graph
from dslc.passes.attention import attention
from dslc.passes.autodiff import autodiff
from dslc.passes.constfold import constfold
from dslc.passes.cse import cse
from dslc.passes.dce import dce
from dslc.passes.fuse import fuse
from dslc.passes.layer_norm import layer_norm
from dslc.passes.memory import STORED, estimate_peak, plan_memory
from dslc.passes.pack_qkv import pack_qkv
from dslc.passes.project_tables import project_tables
from dslc.passes.scan_gates import scan_gates
from dslc.passes.simplify import simplify
from dslc.passes.sink_slices import sink_slices
from dslc.passes.verify import verify

PIPELINE = [
    ("attention", attention),  # q k^T, mask, softmax, @ v -> one node (before its gradient)
    ("layer_norm", layer_norm),  # mean, var, rsqrt, * gamma + beta -> one node
    ("sink_slices", sink_slices),  # compute only the positions a slice keeps
    ("pack_qkv", pack_qkv),  # attention's q, k, v projections -> one matmul
    ("project_tables", project_tables),  # inference: gather(T, i) @ W -> gather(T @ W, i)
    ("autodiff", autodiff),  # adds the backward graph when the graph has a loss
    ("simplify", simplify),
    ("constfold", constfold),
    ("cse", cse),
    ("dce", dce),
    ("scan_gates", scan_gates),  # a recurrent backward reads the forward's gates
    ("fuse", fuse),
]
PASS_NAMES = [name for name, _ in PIPELINE]
# the passes that merge operations into fewer kernels; the others keep every operation
FUSION_PASSES = ("attention", "layer_norm", "pack_qkv", "fuse")


@dataclass(frozen=True)
class PassReport:
    """What one pass changed."""

    name: str
    nodes_before: int
    nodes_after: int
    kernels_before: int
    kernels_after: int
    peak_before: Dim  # estimated bytes of live values at the fullest step (symbolic)
    peak_after: Dim

    def __str__(self) -> str:
        return (
            f"{self.name:<10} nodes {self.nodes_before} -> {self.nodes_after}, "
            f"kernels {self.kernels_before} -> {self.kernels_after}, "
            f"peak {self.peak_before.format()} B -> {self.peak_after.format()} B"
        )


def count_kernels(graph: Graph) -> int:
    """Compute nodes: each is one kernel call (a fused node is one)."""
    return sum(1 for n in graph.nodes() if n.op not in STORED)


def run_pipeline(graph: Graph, until: str | None = None, report: bool = False, check=False):
    """Run PIPELINE on a copy, stopping after the pass named `until`.

    Returns the graph, or `(graph, [PassReport, ...])` when `report` is true. `check` runs
    the verifier after every pass.
    """
    if until is not None and until not in PASS_NAMES:
        raise ConfigError(f"no pass named {until!r}; the passes are {', '.join(PASS_NAMES)}")
    reports: list[PassReport] = []
    before = (len(graph), count_kernels(graph), estimate_peak(graph)) if report else None
    for name, fn in PIPELINE:
        graph = fn(graph)
        if check:
            verify(graph)
        if report:
            after = (len(graph), count_kernels(graph), estimate_peak(graph))
            reports.append(
                PassReport(name, before[0], after[0], before[1], after[1], before[2], after[2])
            )
            before = after
        if name == until:
            break
    return (graph, reports) if report else graph


__all__ = [
    "PIPELINE",
    "PASS_NAMES",
    "FUSION_PASSES",
    "PassReport",
    "run_pipeline",
    "count_kernels",
    "verify",
    "attention",
    "layer_norm",
    "pack_qkv",
    "project_tables",
    "sink_slices",
    "autodiff",
    "simplify",
    "constfold",
    "cse",
    "dce",
    "scan_gates",
    "fuse",
    "plan_memory",
    "estimate_peak",
]
