"""A compiled model: a Program's graphs after the passes, its parameters and its executors.

`Model(program, training=True)` runs the pass pipeline on the training graph (autodiff
first) and on the inference graph (without autodiff), and keeps one `ParamStore` that the
training and inference executors share, so a weight updated by a training step is the weight
the next prediction reads.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from dslc.runtime.checkpoint import Checkpoint, load_checkpoint, load_pretrained, restore_params
from dslc.runtime.executor import Executor
from dslc.runtime.params import ParamStore

from dslc.errors import ConfigError, DataError
from dslc.ir.graph import Graph
from dslc.ir.program import Program
from dslc.passes import PIPELINE, run_pipeline


def prepare_train(graph: Graph) -> Graph:
    """The training graph after the whole pipeline: forward, backward, optimised."""
    return run_pipeline(graph)


def prepare_infer(graph: Graph) -> Graph:
    """The inference graph after every pass but autodiff (it never gets a backward)."""
    for name, fn in PIPELINE:
        if name != "autodiff":
            graph = fn(graph)
    return graph


def prediction_name(graph: Graph) -> str | None:
    """The model's prediction: its first declared output that is not the loss."""
    return next((o for o in graph.outputs if o != "loss"), None)


def input_names(graph: Graph, role: str) -> list[str]:
    """Names of the graph's inputs with `role` (`input` or `label`), in declaration order."""
    return [n for n, nid in graph.inputs.items() if graph.data(nid)["attrs"].get("role") == role]


class Model:
    """A Program ready to run: prepared graphs, parameters, executors built on demand."""

    def __init__(
        self,
        program: Program,
        *,
        training: bool = True,
        seed: int = 0,
        float_dtype: str = "f32",
        xp=np,
    ):
        self.program = program
        self.xp = xp
        self.seed = seed
        self.infer_graph = prepare_infer(program.infer_graph)
        if training:
            self.train_graph = prepare_train(program.train_graph)
            main, extra = self.train_graph, [self.infer_graph]
        else:
            self.train_graph = None
            main, extra = self.infer_graph, [program.train_graph]
        self.store = ParamStore(main, xp, float_dtype, seed, extra=extra)
        self.params = self.store.params
        self.prediction = prediction_name(self.infer_graph)
        self.inputs = input_names(program.train_graph, "input")
        self.labels = input_names(program.train_graph, "label")
        self.checkpoint: Checkpoint | None = None  # the last checkpoint loaded
        self._train_exe: Executor | None = None
        self._infer_exe: dict[tuple, Executor] = {}

    @property
    def name(self) -> str:
        return self.program.name

    def trainer_executor(self) -> Executor:
        """The executor of a training step: the loss, the gradients, the state updates."""
        if self.train_graph is None:
            raise ConfigError("this model was loaded for inference only")
        if self._train_exe is None:
            self._train_exe = Executor(
                self.train_graph, store=self.store, xp=self.xp, seed=self.seed, outputs=["loss"]
            )
        return self._train_exe

    def executor(self, outputs: tuple[str, ...] | None = None) -> Executor:
        """An inference executor computing `outputs` (every declared output by default)."""
        g = self.infer_graph
        names = tuple(o for o in g.outputs if o != "loss") if outputs is None else outputs
        for o in names:
            if o not in g.outputs:
                raise ConfigError(
                    f"model {self.name} has no output `{o}`; it has {', '.join(g.outputs)}"
                )
        exe = self._infer_exe.get(names)
        if exe is None:
            exe = Executor(g, store=self.store, xp=self.xp, seed=self.seed, outputs=names)
            self._infer_exe[names] = exe
        return exe

    def predict(self, feeds: Mapping[str, object], outputs=None, batch_size: int = 256):
        """Run the inference graph over `feeds` (arrays with an example axis), in batches."""
        exe = self.executor(None if outputs is None else tuple(outputs))
        missing = [n for n in exe.input_names if n not in feeds]
        if missing:
            raise DataError(f"no array named `{missing[0]}`: the model's inputs are "
                            + ", ".join(f"`{n}`" for n in exe.input_names))  # fmt: skip
        n = len(feeds[exe.input_names[0]]) if exe.input_names else 1
        parts: dict[str, list] = {}
        for start in range(0, max(n, 1), batch_size):
            batch = {k: feeds[k][start : start + batch_size] for k in exe.input_names}
            for k, v in exe.run(batch).items():
                parts.setdefault(k, []).append(v)
        return {k: _join(v) for k, v in parts.items()}

    def load_weights(self, where: str) -> Checkpoint:
        """Load a checkpoint's weights (a file or a run directory); returns the checkpoint."""
        ckpt = load_checkpoint(where)
        self.load_weights_from(ckpt)
        return ckpt

    def load_weights_from(self, ckpt: Checkpoint) -> None:
        """Copy a checkpoint's weights in; a changed model is reported param by param."""
        restore_params(ckpt, self.params, self.program.model_hash, self.xp)
        self.checkpoint = ckpt

    def load_pretrained(self, path: str, prefix: str = "") -> list[str]:
        """Copy matching tensors of a checkpoint (or any safetensors file) into parameters
        under `prefix` (the `load "w.safetensors" into enc` of a train section)."""
        return load_pretrained(path, prefix, self.params, self.xp)


def _join(parts: list):
    if parts[0].ndim == 0:  # a per-batch scalar (a loss): keep one value per batch
        return np.stack(parts)
    return np.concatenate(parts) if len(parts) > 1 else parts[0]
