"""What the front end hands to everything after it: graphs plus the training section."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dslc.ir.graph import Graph


@dataclass
class TrainConfig:
    """The `train` section of a `.nn` file after CLI overrides."""

    optimizer: str = "adam"  # sgd | adam | adamw | rmsprop
    optimizer_args: dict[str, Any] = field(default_factory=dict)  # lr, momentum, nesterov...
    schedule: str | None = None  # step | cosine | warmup_cosine | linear_warmup
    schedule_args: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch: int = 32
    metrics: list[str] = field(default_factory=list)
    clip_norm: float | None = None
    weight_decay: float = 0.0
    dataset: str | None = None  # default `--data`
    dataset_args: dict[str, Any] = field(default_factory=dict)
    val_split: float = 0.1
    seed: int = 0
    freeze: list[str] = field(default_factory=list)  # parameter name patterns
    load: list[tuple[str, str]] = field(default_factory=list)  # (weights file, name prefix)

    @property
    def lr(self) -> float:
        return float(self.optimizer_args.get("lr", 1e-3))


class Program:
    """A checked model: its training graph, its inference graph, and how to train it.

    The front end lowers one graph when it loads a file (the one its caller asks for first,
    so that errors surface at load time) and the other on first use: `dslc check` and the
    inference summary never pay for a graph they do not show. `model_hash` is likewise
    computed on first use.
    """

    def __init__(
        self,
        name: str = "",
        file: str = "",
        hparams: dict[str, Any] | None = None,
        train_graph: Graph | None = None,
        infer_graph: Graph | None = None,
        train: TrainConfig | None = None,
        sources: dict[str, str] | None = None,
        model_hash: str = "",
        lower: Callable[[str], Graph] | None = None,
        hasher: Callable[[Graph], str] | None = None,
    ):
        self.name = name
        self.file = file
        self.hparams = dict(hparams or {})
        self.train = train if train is not None else TrainConfig()
        self.sources = dict(sources or {})  # file -> text, for error rendering
        self._graphs = {"train": train_graph, "infer": infer_graph}
        self._lower = lower
        self._hasher = hasher
        self._hash = model_hash

    def graph(self, mode: str) -> Graph:
        """The `train` graph (loss among its outputs, dropout active, no gradients yet) or the
        `infer` graph (outputs only, dropout off, batch-norm on running statistics)."""
        g = self._graphs[mode]
        if g is None:
            if self._lower is None:
                raise AttributeError(f"program {self.name!r} has no {mode} graph")
            g = self._graphs[mode] = self._lower(mode)
        return g

    @property
    def train_graph(self) -> Graph:
        return self.graph("train")

    @train_graph.setter
    def train_graph(self, g: Graph) -> None:
        self._graphs["train"] = g

    @property
    def infer_graph(self) -> Graph:
        return self.graph("infer")

    @infer_graph.setter
    def infer_graph(self, g: Graph) -> None:
        self._graphs["infer"] = g

    @property
    def model_hash(self) -> str:
        """A hash of the resolved model (after imports and overrides)."""
        if not self._hash and self._hasher is not None:
            self._hash = self._hasher(self.train_graph)
        return self._hash

    @model_hash.setter
    def model_hash(self, value: str) -> None:
        self._hash = value
