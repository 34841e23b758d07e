"""What the front end hands to everything after it: graphs plus the training section."""

from __future__ import annotations

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


@dataclass
class Program:
    """A checked model: its training graph, its inference graph, and how to train it."""

    name: str
    file: str
    hparams: dict[str, Any]
    train_graph: Graph  # with `loss` among its outputs, dropout active, no gradients yet
    infer_graph: Graph  # outputs only, dropout off, batch-norm on running statistics
    train: TrainConfig
    sources: dict[str, str] = field(default_factory=dict)  # file -> text, for error rendering
    model_hash: str = ""  # hash of the resolved model (after imports and overrides)
