"""Graphs for the printer tests, built with the Builder over a stub registry.

The stub primitives carry the real names but shape and FLOP rules defined here, so these
tests pin the printers' arithmetic, not the primitives' (tested in tests/ops).
"""

from __future__ import annotations

from dslc.errors import ShapeError, Span
from dslc.ir.builder import Builder
from dslc.ir.dims import Dim, numel
from dslc.ir.graph import Graph
from dslc.ir.types import TensorType
from dslc.ops import registry


def _none(*a, **k):
    raise NotImplementedError


def _same(ts, a):
    return ts[0]


def _broadcast(ts, a):
    r = max(t.rank for t in ts)
    shapes = [(Dim.const(1),) * (r - t.rank) + t.shape for t in ts]
    out = []
    for ds in zip(*shapes):
        big = [d for d in ds if d != 1]
        if any(d != big[0] for d in big):
            raise ShapeError(f"cannot broadcast {[str(t) for t in ts]}")
        out.append(big[0] if big else Dim.const(1))
    return TensorType(tuple(out), ts[0].dtype)


def _matmul(ts, a):
    x, w = ts  # [..., K] @ [K, M], or batched [B.., T, K] @ [B.., K, M]
    if x.shape[-1] != w.shape[-2]:
        raise ShapeError(f"matmul: {x} @ {w}")
    return TensorType(x.shape[:-1] + w.shape[-1:], x.dtype)


def _reduce(ts, a):
    axes = {ax % ts[0].rank for ax in a["axes"]}
    shape = tuple(
        (Dim.const(1) if a["keepdims"] else None) if i in axes else d
        for i, d in enumerate(ts[0].shape)
    )
    return TensorType(tuple(d for d in shape if d is not None), ts[0].dtype)


def _take_along(ts, a):
    return TensorType(ts[1].shape, ts[0].dtype)


def _reshape(ts, a):
    return TensorType(a["shape"], ts[0].dtype)


STUBS = {
    "matmul": dict(
        kind="opaque",
        arity=2,
        infer=_matmul,
        flops=lambda ts, o, a: 2 * numel(o.shape) * ts[0].shape[-1],
    ),
    "add": dict(kind="broadcast", arity=2, infer=_broadcast, expr="{0} + {1}"),
    "mul": dict(kind="broadcast", arity=2, infer=_broadcast, expr="{0} * {1}"),
    "relu": dict(kind="elementwise", arity=1, infer=_same, expr="max({0}, 0)"),
    "neg": dict(kind="elementwise", arity=1, infer=_same),
    "scale": dict(kind="elementwise", arity=1, infer=_same, attrs={"c": 1.0}),
    "log_softmax": dict(
        kind="reduction",
        arity=1,
        infer=_same,
        attrs={"axis": -1},
        flops=lambda ts, o, a: 3 * numel(o.shape),
    ),
    "mean": dict(
        kind="reduction",
        arity=1,
        infer=_reduce,
        attrs={"axes": (), "keepdims": False},
        flops=lambda ts, o, a: numel(ts[0].shape),
    ),
    "take_along": dict(
        kind="opaque", arity=2, infer=_take_along, attrs={"axis": -1}, flops=registry.zero_flops
    ),
    "reshape": dict(
        kind="injective", arity=1, infer=_reshape, attrs={"shape": ()}, flops=registry.zero_flops
    ),
}


def stub_primitives() -> dict:
    """The stubs as Primitive records, ready to stand in for the registry."""
    return {
        name: registry.Primitive(name=name, grad=registry.NONDIFF, numpy=_none, **kw)
        for name, kw in STUBS.items()
    }


N = Dim.sym("N")
SRC = "examples/tiny_mlp.nn"


def sp(line: int, col: int = 5) -> Span:
    return Span(SRC, line, col, line, col + 3)


def build_mlp(with_loss: bool = True) -> Graph:
    """x: f32[N, 64] -> dense 32 relu -> dense 10 (-> cross-entropy loss); plus a state param.

    Stub FLOPs: 2*N*64*32 + N*32 + N*32 + 2*N*32*10 + N*10 (+ 3*N*10 + N + 1 for the loss).
    """
    g = Graph()
    b = Builder(g, span=sp(1))
    x = b.input("x", TensorType((N, 64), "f32"))
    y = b.input("y", TensorType((N,), "i64"), role="label") if with_loss else None
    h = x
    for i, (fan_in, fan_out) in enumerate(((64, 32), (32, 10))):
        with b.at(span=sp(3 + i, 9), scope=f"layers.{i}"):
            w = b.param(f"layers.{i}.W", TensorType((fan_in, fan_out)), "glorot_uniform")
            bias = b.param(f"layers.{i}.b", TensorType((fan_out,)), "zeros")
            h = b.op("add", b.op("matmul", h, w), bias)
            if i == 0:
                h = b.op("relu", h)
    with b.at(scope="norm"):
        b.param("norm.mean", TensorType((32,)), "zeros", trainable=False)
    g.outputs["logits"] = h
    if with_loss:
        with b.at(span=sp(6, 3)):
            lp = b.op("log_softmax", h, axis=-1)
            picked = b.op("take_along", lp, y, axis=-1)
            g.outputs["loss"] = b.op("neg", b.op("mean", picked, axes=(0,)))
    g.meta["model"] = "TinyMLP"
    return g
