"""Parameter storage: every parameter of a dtype in ONE flat buffer, with named views.

Layout per dtype: first the parameters that get a gradient (in graph order), then the rest
(running statistics, frozen and unused parameters). The gradients of the first region live
in a second flat buffer of the same length, so an optimizer updates `train_region(dtype)`
from `grad_flat[dtype]` with a few whole-buffer operations. Offsets are rounded up to
`ALIGN` elements; the padding stays zero (a zero gradient leaves a zero weight at zero under
every optimizer here).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from dslc.runtime.init import initial_value

from dslc.errors import InternalError
from dslc.ir.graph import Graph
from dslc.ir.types import is_float, np_dtype

ALIGN = 16  # elements: 64 bytes of f32


def run_dtype(dtype: str, float_dtype: str) -> str:
    """The dtype a value of IR dtype `dtype` has when floats run as `float_dtype`."""
    return float_dtype if is_float(dtype) else dtype


@dataclass(frozen=True)
class Slot:
    """Where one parameter lives: its dtype's flat buffer, offset and shape."""

    dtype: str
    offset: int
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


def _concrete_shape(graph: Graph, name: str, nid: int) -> tuple[int, ...]:
    t = graph.data(nid)["type"]
    try:
        return tuple(int(d) for d in t.shape)
    except ValueError:
        raise InternalError(
            f"parameter {name} has a symbolic shape {t}", graph.data(nid)["span"]
        ) from None


class ParamStore:
    """The parameters (and their gradients) of a model, shared by its executors."""

    def __init__(
        self,
        graph: Graph,
        xp=np,
        float_dtype: str = "f32",
        seed: int = 0,
        extra: Iterable[Graph] = (),
    ):
        """Parameters of `graph` (gradients from its `grads`), plus any other parameter of
        the `extra` graphs (the other mode of the same model)."""
        self.xp = xp
        self.float_dtype = float_dtype
        self.seed = seed
        with_grad = [n for n in graph.params if n in graph.grads]
        rest = [n for n in graph.params if n not in graph.grads]
        owner = dict.fromkeys(graph.params, graph)
        for other in extra:
            for n in other.params:
                if n not in owner:
                    owner[n] = other
                    rest.append(n)
        self.layout: dict[str, Slot] = {}
        self.spec: dict[str, tuple[str, tuple, object]] = {}  # name -> (init, init_args, span)
        ends: dict[str, int] = {}
        self.train_end: dict[str, int] = {}
        for names, region in ((with_grad, True), (rest, False)):
            for name in names:
                g = owner[name]
                nid = g.params[name]
                d = g.data(nid)
                dtype = run_dtype(d["type"].dtype, float_dtype)
                shape = _concrete_shape(g, name, nid)
                off = ends.get(dtype, 0)
                slot = Slot(dtype, off, shape)
                self.layout[name] = slot
                ends[dtype] = off + -(-slot.size // ALIGN) * ALIGN
                a = d["attrs"]
                self.spec[name] = (a.get("init", "zeros"), a.get("init_args", ()), d["span"])
            if region:
                self.train_end = dict(ends)
        self.flat = {dt: xp.zeros(n, dtype=np_dtype(dt)) for dt, n in ends.items()}
        self.grad_flat = {dt: xp.zeros(n, dtype=np_dtype(dt)) for dt, n in self.train_end.items()}
        self.params = {n: self._view(self.flat, s) for n, s in self.layout.items()}
        self.grads = {n: self._view(self.grad_flat, self.layout[n]) for n in with_grad}
        self.initialize(seed)

    @staticmethod
    def _view(flats, slot: Slot):
        return flats[slot.dtype][slot.offset : slot.offset + slot.size].reshape(slot.shape)

    def initialize(self, seed: int) -> None:
        """(Re)draw every parameter from its initialiser under `seed`."""
        self.seed = seed
        for name, slot in self.layout.items():
            init, args, span = self.spec[name]
            value = initial_value(name, slot.shape, np_dtype(slot.dtype), init, args, seed, span)
            self.params[name][...] = self.xp.asarray(value)

    def group_dtypes(self) -> list[str]:
        """The dtypes that have trained parameters, in the order of `groups()`."""
        return [dt for dt, n in self.train_end.items() if n]

    def groups(self) -> list[tuple[object, object]]:
        """(parameter region, gradient buffer) per dtype: what an optimizer updates."""
        return [
            (self.flat[dt][: self.train_end[dt]], self.grad_flat[dt]) for dt in self.group_dtypes()
        ]

    def split(self, arrays: list) -> dict[str, object]:
        """Per-parameter views of flat arrays laid out like `groups()` (optimizer state)."""
        by_dtype = dict(zip(self.group_dtypes(), arrays))
        return {n: self._view(by_dtype, self.layout[n]) for n in self.grads}

    def check_graph(self, graph: Graph) -> None:
        """Every parameter of `graph` (another mode of the model) is stored here, same type."""
        for name, nid in graph.params.items():
            slot = self.layout.get(name)
            t = graph.data(nid)["type"]
            if (
                slot is None
                or slot.dtype != run_dtype(t.dtype, self.float_dtype)
                or (slot.shape != tuple(int(d) for d in t.shape))
            ):
                raise InternalError(f"parameter {name} ({t}) is not in the parameter store")
