"""The Python API: what the `dslc` commands do, as functions for notebooks and scripts.

    from dslc import api as dslc
    model = dslc.load("examples/mlp_digits.nn", hidden=256)
    run = dslc.train(model, data="digits", epochs=5, out="runs/mlp")
    dslc.evaluate(model, data="digits")          # {'accuracy': 0.97, 'f1': 0.97, ...}
    dslc.predict(model, {"x": images})["probs"]
    dslc.generate(model, "To be", tokens=50)     # a language model trained on text

Every function takes a `Model` (from `load`) or a path to a `.nn` file. Data is a built-in
name, a `.npz`/`.csv`/`.txt` path, a dict of arrays or a `Dataset`; `None` means the data the
run was trained on (recorded in its checkpoint), else the model's `train` section default.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dslc.errors import CheckpointError, ConfigError
from dslc.ir.program import TrainConfig
from dslc.runtime.checkpoint import Checkpoint
from dslc.runtime.data import Dataset, load_dataset, validate
from dslc.runtime.model import Model
from dslc.runtime.rng import split_seed
from dslc.runtime.train import Trainer, recorded, resolve_config, resume_checkpoint
from dslc.runtime.train import evaluate as _evaluate

__all__ = ["Model", "Run", "load", "train", "evaluate", "predict", "generate"]


def load(
    path: str | os.PathLike,
    weights: str | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
    training: bool = True,
    seed: int | None = None,
    float_dtype: str = "f32",
    **hparams,
) -> Model:
    """Compile a `.nn` file (hyper-parameters overridden by `overrides` and keywords) into a
    Model, with the weights of a checkpoint or run directory when `weights` is given."""
    from dslc.frontend import load_program

    program = load_program(str(path), {**dict(overrides or {}), **hparams} or None)
    model = Model(
        program,
        training=training,
        seed=program.train.seed if seed is None else seed,
        float_dtype=float_dtype,
    )
    if weights is not None:
        model.load_weights(weights)
    return model


def _model(model, *, training: bool, overrides=None, weights=None, seed=None) -> Model:
    if isinstance(model, Model):
        if weights is not None:
            model.load_weights(weights)
        return model
    return load(model, weights, overrides=overrides, training=training, seed=seed)


def _saved(model: Model, key: str, default=None):
    """A value the model's checkpoint recorded (its settings, vocabulary, data); for a model
    trained in this process and not saved, the settings of its last run."""
    ck = model.checkpoint
    if ck is None:
        if key == "settings" and getattr(model, "run_settings", None) is not None:
            return recorded(model.run_settings)
        return default
    return ck.meta.get(key, default)


def dataset_for(
    model: Model, data, *, labels: bool = True, source_hint: str | None = None
) -> Dataset:
    """The data as a Dataset checked against the model (see the module docstring)."""
    program = model.program
    if isinstance(data, Dataset):
        return validate(data, program, data.meta.get("source", "dataset"), labels=labels)
    if isinstance(data, Mapping):
        return validate(Dataset(dict(data), {"source": "arrays"}), program, "arrays",
                        labels=labels)  # fmt: skip
    spec = data if data is not None else _saved(model, "dataset")
    vocab = _saved(model, "vocab")
    return load_dataset(
        None if spec is None else str(spec),
        program,
        source_hint=source_hint,
        labels=labels,
        vocab=vocab,
    )


# --- training --------------------------------------------------------------------------------


@dataclass
class Run:
    """A finished (or stopped) training run."""

    model: Model
    settings: TrainConfig
    history: list[dict[str, Any]] = field(default_factory=list)
    out: str | None = None

    @property
    def last(self) -> dict[str, Any]:
        return self.history[-1] if self.history else {}


def train(
    model: Model | str | os.PathLike,
    data=None,
    *,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float | None = None,
    seed: int | None = None,
    out: str | None = None,
    resume: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    quiet: bool = False,
    detect_anomaly: bool = False,
    checkpoint_every: int = 0,
    max_steps: int | None = None,
    log: Callable[[str], None] | None = None,
    data_hint: str | None = None,
) -> Run:
    """Train a model; with `resume` (a run directory) continue that run exactly.

    A model given as a path is initialised from the run's seed; a Model object keeps the
    weights it has. `out` (default: the resumed run's directory) receives metrics.jsonl and
    checkpoint.safetensors. Settings not given come from the resumed run, then from the
    model's `train` section.
    """
    from dslc.frontend import load_program

    ckpt: Checkpoint | None = resume_checkpoint(resume) if resume else None
    saved = ckpt.meta if ckpt else {}
    sets = dict(overrides) if overrides else dict(saved.get("overrides") or {})
    if isinstance(model, Model):
        program = model.program
    else:
        program = load_program(str(model), sets or None)
    settings = resolve_config(
        program.train,
        saved.get("settings"),
        epochs=epochs,
        batch=batch_size,
        lr=lr,
        seed=seed,
    )
    if not isinstance(model, Model):
        model = Model(program, training=True, seed=settings.seed)
    elif model.train_graph is None:
        raise ConfigError("this model was loaded for inference only: load it with training=True")
    if ckpt is not None:
        model.checkpoint = ckpt
        _check_resumable(ckpt, model, log)
    else:
        for path, prefix in program.train.load:
            model.load_pretrained(path, prefix)
    dataset = dataset_for(model, data, source_hint=data_hint)
    spec = data if isinstance(data, (str, os.PathLike)) else saved.get("dataset")
    if spec is None and not isinstance(data, (Dataset, Mapping)):
        spec = program.train.dataset
    out = out or resume
    trainer = Trainer(
        model,
        dataset,
        settings,
        out=out,
        resume=ckpt,
        quiet=quiet,
        detect_anomaly=detect_anomaly,
        checkpoint_every=checkpoint_every,
        log=log,
        dataset_spec=None if spec is None else str(spec),
        extra_meta={"overrides": sets, "model_file": program.file},
    )
    history = trainer.fit(max_steps=max_steps)
    model.run_settings = settings  # evaluate(split="val") holds out what this run held out
    return Run(model, settings, history, out)


def _check_resumable(ckpt: Checkpoint, model: Model, log) -> None:
    from dslc.runtime.checkpoint import compare

    if any(compare(ckpt.params, model.params)):
        return  # restoring reports every added, removed and reshaped parameter
    saved = ckpt.meta.get("model_hash")
    if saved and model.program.model_hash and saved != model.program.model_hash:
        (log or print)(
            f"warning: {model.program.file} changed since {ckpt.path} was written "
            "(its parameters still fit); the resumed run will not match the original exactly"
        )


# --- evaluation and prediction ---------------------------------------------------------------


def evaluate(
    model: Model | str | os.PathLike,
    data=None,
    *,
    weights: str | None = None,
    metrics: list[str] | None = None,
    split: str = "all",
    batch_size: int | None = None,
    overrides: Mapping[str, Any] | None = None,
    data_hint: str | None = None,
) -> dict[str, float]:
    """Metrics of the model on `data`: `split="val"` takes the held-out part that training
    used (same fraction and seed), `train` the rest, `all` everything."""
    model = _model(model, training=False, overrides=overrides, weights=weights)
    settings = resolve_config(model.program.train, _saved(model, "settings"))
    names = list(metrics) if metrics is not None else settings.metrics
    dataset = dataset_for(model, data, source_hint=data_hint)
    if split != "all":
        if split not in ("train", "val"):
            raise ConfigError(f"split must be all, train or val, got {split!r}")
        tr, va = dataset.split(settings.val_split, seed=split_seed(settings.seed))
        dataset = va if split == "val" else tr
    if len(dataset) == 0:
        raise ConfigError(f"no examples to evaluate in the {split} split")
    result = _evaluate(model, dataset, names, batch_size or max(settings.batch, 256))
    result["examples"] = len(dataset)
    return result


def predict(
    model: Model | str | os.PathLike,
    inputs,
    *,
    weights: str | None = None,
    outputs: list[str] | None = None,
    batch_size: int = 256,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """The model's declared outputs (or `outputs`) for `inputs`: a dict of arrays, a Dataset,
    or a `.npz`/`.csv` file."""
    model = _model(model, training=False, overrides=overrides, weights=weights)
    data = dataset_for(model, inputs, labels=False, source_hint="--input")
    return model.predict(data.arrays, outputs=outputs, batch_size=batch_size)


def generate(
    model: Model | str | os.PathLike,
    prompt: str,
    *,
    tokens: int = 100,
    temperature: float = 1.0,
    top_k: int | None = None,
    seed: int = 0,
    weights: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> str:
    """Text that continues `prompt`, sampled from a language model trained on text."""
    from dslc.runtime.generation import generate_text

    model = _model(model, training=False, overrides=overrides, weights=weights)
    vocab = _saved(model, "vocab")
    if vocab is None:
        where = model.checkpoint.path if model.checkpoint else "the model"
        raise CheckpointError(
            f"{where}: no vocabulary: generate needs the checkpoint of a model trained on text",
            hint="train it with --data on a .txt file or a built-in text set (tiny_text)",
        )
    if tokens < 0:
        raise ConfigError(f"--tokens must be at least 0, got {tokens}")
    return generate_text(
        model,
        vocab,
        prompt,
        tokens=tokens,
        temperature=temperature,
        top_k=top_k,
        seed=seed,
        context=_saved(model, "seq"),
    )
