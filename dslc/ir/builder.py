"""Adds primitive nodes to a Graph, checking attributes and inferring types from the registry."""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from dslc.errors import ArgumentError, DslcError, Span
from dslc.ir.graph import Graph
from dslc.ir.types import TensorType, np_dtype


class Builder:
    """Appends nodes to `graph`; every node gets the current span and scope."""

    def __init__(self, graph: Graph, span: Span | None = None, scope: str = ""):
        self.graph = graph
        self.span = span
        self.scope = scope

    @contextmanager
    def at(self, span: Span | None = None, scope: str | None = None):
        """Temporarily build at another source span and/or scope."""
        old = (self.span, self.scope)
        if span is not None:
            self.span = span
        if scope is not None:
            self.scope = scope
        try:
            yield self
        finally:
            self.span, self.scope = old

    def type_of(self, nid: int) -> TensorType:
        return self.graph.data(nid)["type"]

    def op(self, name: str, *inputs: int, **attrs) -> int:
        """Add `name(*inputs, **attrs)`; raises a located DslcError if it does not fit."""
        from dslc.ops import get_primitive

        prim = get_primitive(name)
        if prim.arity is not None and len(inputs) != prim.arity:
            raise ArgumentError(
                f"`{name}` takes {prim.arity} operand(s), got {len(inputs)}", self.span
            )
        unknown = set(attrs) - set(prim.attrs)
        if unknown:
            raise ArgumentError(
                f"`{name}` has no attribute {sorted(unknown)[0]!r}"
                + (f"; it takes {', '.join(sorted(prim.attrs))}" if prim.attrs else ""),
                self.span,
            )
        full = {**prim.attrs, **attrs}
        in_types = [self.type_of(i) for i in inputs]
        try:
            out = prim.infer(in_types, full)
        except DslcError as e:
            if e.span is None:
                e.span = self.span
            raise
        return self.graph.add(name, inputs, out, full, span=self.span, scope=self.scope)

    def const(self, value, dtype: str = "f32") -> int:
        """A constant; scalars are stored as Python numbers, arrays as read-only ndarrays."""
        if np.ndim(value) == 0:
            v = (
                bool(value)
                if dtype == "bool"
                else (float(value) if dtype[0] == "f" else int(value))
            )
            return self.graph.add(
                "const", (), TensorType((), dtype), {"value": v}, self.span, self.scope
            )
        arr = np.array(value, dtype=np_dtype(dtype))
        arr.setflags(write=False)
        return self.graph.add(
            "const", (), TensorType(arr.shape, dtype), {"value": arr}, self.span, self.scope
        )

    def input(self, name: str, type: TensorType, role: str = "input") -> int:
        nid = self.graph.add("input", (), type, {"name": name, "role": role}, self.span, "")
        self.graph.inputs[name] = nid
        return nid

    def param(
        self,
        name: str,
        type: TensorType,
        init: str = "zeros",
        init_args: tuple = (),
        trainable: bool = True,
        frozen: bool = False,
    ) -> int:
        """A named parameter (`layers.0.attn.q.W`); `trainable=False` marks running state."""
        attrs = {
            "name": name,
            "init": init,
            "init_args": tuple(init_args),
            "trainable": trainable,
            "frozen": frozen,
        }
        nid = self.graph.add("param", (), type, attrs, self.span, self.scope)
        self.graph.params[name] = nid
        return nid
