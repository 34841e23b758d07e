"""The IR: a networkx multigraph of primitive operations, one node per operation.

Node data (every node):
  op      primitive name from the registry (`matmul`, `add`, ...) or one of the
          graph-level ops `input`, `param`, `const`, `fused`
  inputs  ordered tuple of operand node ids (edges mirror it: key = operand position)
  attrs   dict of primitive attributes (hashable values: ints, floats, strs, tuples)
  type    TensorType of the result
  span    Span of the `.nn` source it came from (backward nodes inherit the forward's)
  scope   dotted layer path it was created in (`layers.2.attn.q`), '' at model level
Graph-level tables:
  inputs   name -> node id of `input` nodes (attrs: name, role 'input' or 'label')
  params   name -> node id of `param` nodes (attrs: name, init, init_args, trainable, frozen)
  outputs  name -> node id (`loss` is the training objective when present)
  updates  state param name -> node id of its new value after a step (batch-norm stats)
  grads    param name -> node id of d loss / d param (filled by autodiff)
  meta     free-form: model name, hyper-parameters, source file, training config
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import networkx as nx

from dslc.errors import Span
from dslc.ir.types import TensorType

GRAPH_OPS = ("input", "param", "const", "fused")


class Node:
    """A read-only view of one node's data."""

    __slots__ = ("id", "_d")

    def __init__(self, nid: int, data: dict):
        self.id = nid
        self._d = data

    op = property(lambda self: self._d["op"])
    inputs = property(lambda self: self._d["inputs"])
    attrs = property(lambda self: self._d["attrs"])
    type = property(lambda self: self._d["type"])
    span = property(lambda self: self._d.get("span"))
    scope = property(lambda self: self._d.get("scope", ""))
    shape = property(lambda self: self._d["type"].shape)
    dtype = property(lambda self: self._d["type"].dtype)

    def __repr__(self) -> str:
        return f"%{self.id} = {self.op}{list(self.inputs)} : {self.type}"


class Graph:
    """A computation graph; every pass takes one and returns one."""

    def __init__(self):
        self.g = nx.MultiDiGraph()
        self.inputs: dict[str, int] = {}
        self.params: dict[str, int] = {}
        self.outputs: dict[str, int] = {}
        self.updates: dict[str, int] = {}
        self.grads: dict[str, int] = {}
        self.meta: dict[str, Any] = {}
        self._ids = itertools.count()

    # --- building -------------------------------------------------------------------
    def add(
        self,
        op: str,
        inputs: Iterable[int],
        type: TensorType,
        attrs: dict | None = None,
        span: Span | None = None,
        scope: str = "",
    ) -> int:
        """Add a node whose type is already known; returns its id."""
        nid = next(self._ids)
        inputs = tuple(inputs)
        self.g.add_node(
            nid, op=op, inputs=inputs, attrs=dict(attrs or {}), type=type, span=span, scope=scope
        )
        for pos, src in enumerate(inputs):
            self.g.add_edge(src, nid, key=pos)
        return nid

    def set_inputs(self, nid: int, inputs: Iterable[int]) -> None:
        """Rewire the operands of `nid`."""
        for src, _, key in list(self.g.in_edges(nid, keys=True)):
            self.g.remove_edge(src, nid, key)
        inputs = tuple(inputs)
        self.g.nodes[nid]["inputs"] = inputs
        for pos, src in enumerate(inputs):
            self.g.add_edge(src, nid, key=pos)

    def replace_uses(self, old: int, new: int) -> None:
        """Make every user of `old` (and every table entry) refer to `new`."""
        for user in list(self.users(old)):
            ins = tuple(new if i == old else i for i in self.node(user).inputs)
            self.set_inputs(user, ins)
        for table in (self.outputs, self.updates, self.grads):
            for k, v in list(table.items()):
                if v == old:
                    table[k] = new

    def remove(self, nid: int) -> None:
        self.g.remove_node(nid)

    # --- reading --------------------------------------------------------------------
    def node(self, nid: int) -> Node:
        return Node(nid, self.g.nodes[nid])

    def data(self, nid: int) -> dict:
        return self.g.nodes[nid]

    def __contains__(self, nid: int) -> bool:
        return nid in self.g

    def __len__(self) -> int:
        return self.g.number_of_nodes()

    def nodes(self) -> Iterator[Node]:
        for nid in self.g.nodes:
            yield Node(nid, self.g.nodes[nid])

    def users(self, nid: int) -> list[int]:
        return list(dict.fromkeys(self.g.successors(nid)))

    def sole_user(self, nid: int) -> int | None:
        """The one node that reads `nid`, reading it once; None when there are others."""
        users = self.users(nid)
        return (
            users[0] if len(users) == 1 and self.data(users[0])["inputs"].count(nid) == 1 else None
        )

    def topo_order(self) -> list[int]:
        """Node ids in a deterministic topological order."""
        return list(nx.lexicographical_topological_sort(self.g))

    def roots(self) -> list[int]:
        """Nodes something outside the graph reads: outputs, updates, grads."""
        return list(
            dict.fromkeys(
                itertools.chain(self.outputs.values(), self.updates.values(), self.grads.values())
            )
        )

    def trainable_params(self) -> list[str]:
        return [
            n
            for n, nid in self.params.items()
            if self.data(nid)["attrs"].get("trainable", True)
            and not self.data(nid)["attrs"].get("frozen", False)
        ]

    def copy(self) -> Graph:
        new = Graph()
        new.g = self.g.copy()
        for nid in new.g.nodes:
            d = new.g.nodes[nid]
            d["attrs"] = dict(d["attrs"])
        new.inputs = dict(self.inputs)
        new.params = dict(self.params)
        new.outputs = dict(self.outputs)
        new.updates = dict(self.updates)
        new.grads = dict(self.grads)
        new.meta = copy.deepcopy(self.meta)
        start = max(self.g.nodes, default=-1) + 1
        new._ids = itertools.count(start)
        return new

    def __repr__(self) -> str:
        return f"<Graph {len(self)} nodes, {len(self.params)} params>"
