"""The training loop: epochs of shuffled batches, validation, metrics, checkpoints, resume.

Everything random is a function of the seed and the position in the run (see `rng.py`): the
data order of epoch e is drawn from (seed, e), a dropout mask from (seed, step, node). A
checkpoint records the step, the epoch and how many of its batches were done, so a resumed run
skips those batches of the same order and continues bit for bit like the uninterrupted run.

Per epoch the loop appends one JSON object to `RUN/metrics.jsonl` (`epoch`, `step`,
`train_loss`, `val_loss` when the inference graph has a loss, `val_<metric>` for each metric,
`lr`, `seconds`) and then writes `RUN/checkpoint.safetensors` atomically. A loss that becomes
NaN or Inf stops the run with a report naming the node that produced it; no checkpoint with
non-finite weights is ever written.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from dslc.runtime.checkpoint import FILENAME, Checkpoint, load_checkpoint, save_checkpoint
from dslc.runtime.model import Model
from dslc.runtime.optim import clip_by_global_norm, make_optimizer, make_schedule
from dslc.runtime.rng import data_rng, split_seed

from dslc import __version__
from dslc.errors import AnomalyError, CheckpointError, ConfigError
from dslc.ir.program import TrainConfig

METRICS_FILE = "metrics.jsonl"


# the TrainConfig fields a run records in its checkpoint and takes back when resumed
RUN_FIELDS = ("optimizer", "optimizer_args", "schedule", "schedule_args", "epochs", "batch",
              "metrics", "clip_norm", "weight_decay", "val_split", "seed")  # fmt: skip


def resolve_config(
    config: TrainConfig, saved: Mapping[str, Any] | None = None, **overrides
) -> TrainConfig:
    """A program's train section, then a resumed run's recorded settings, then the overrides
    that are not None (`lr` goes into optimizer_args)."""
    out = replace(config, **{k: v for k, v in (saved or {}).items() if k in RUN_FIELDS})
    lr = overrides.pop("lr", None)
    unknown = set(overrides) - set(RUN_FIELDS)
    if unknown:
        raise ConfigError(f"unknown training setting {sorted(unknown)[0]!r}")
    out = replace(out, **{k: v for k, v in overrides.items() if v is not None})
    if lr is not None:
        out.optimizer_args = {**out.optimizer_args, "lr": float(lr)}
    if out.epochs < 0:
        raise ConfigError(f"epochs must not be negative, got {out.epochs}")
    if out.batch < 1:
        raise ConfigError(f"batch size must be at least 1, got {out.batch}")
    if out.clip_norm is not None and out.clip_norm <= 0:
        raise ConfigError(f"clip norm must be positive, got {out.clip_norm}")
    return out


def recorded(config: TrainConfig) -> dict[str, Any]:
    """The settings of a run as its checkpoint records them."""
    return {k: getattr(config, k) for k in RUN_FIELDS}


class Progress:
    """A rich progress bar with loss and throughput, or nothing when quiet or not a TTY."""

    def __init__(self, enabled: bool):
        self.bar = None
        if enabled:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self.bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}  {task.fields[rate]} ex/s"),
                TimeRemainingColumn(),
                transient=True,
                console=Console(stderr=True),
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self.bar.start()
        self.task = None

    def epoch(self, description: str, total: int, done: int) -> None:
        if self.bar is not None:
            if self.task is not None:
                self.bar.remove_task(self.task)
            self.task = self.bar.add_task(description, total=total, completed=done, loss="-",
                                          rate="-")  # fmt: skip

    def advance(self, loss: float, rate: float) -> None:
        if self.bar is not None:
            self.bar.update(self.task, advance=1, loss=f"{loss:.4f}", rate=f"{rate:,.0f}")

    def line(self, text: str, log: Callable[[str], None]) -> None:
        """A line above the bar when both share the terminal, else through `log`."""
        if self.bar is not None and sys.stdout.isatty():
            self.bar.console.print(text, markup=False, highlight=False)
        else:
            log(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


@dataclass
class State:
    """Where a run is: what a checkpoint must hold to continue it exactly."""

    step: int = 0
    epoch: int = 0  # the epoch in progress (0-based)
    batch_in_epoch: int = 0  # batches of it already done
    loss_sum: float = 0.0  # sum of batch loss * batch size in the epoch in progress
    examples: int = 0  # examples seen in the epoch in progress


class Trainer:
    """Trains a Model on a Dataset; `fit()` runs to the last epoch (or `max_steps`)."""

    def __init__(
        self,
        model: Model,
        dataset,
        settings: TrainConfig,
        *,
        out: str | None = None,
        resume: Checkpoint | None = None,
        quiet: bool = False,
        detect_anomaly: bool = False,
        checkpoint_every: int = 0,
        log: Callable[[str], None] | None = None,
        dataset_spec: str | None = None,
        extra_meta: Mapping[str, Any] | None = None,
    ):
        self.model = model
        self.settings = s = settings
        self.out = out
        self.quiet = quiet
        self.detect_anomaly = detect_anomaly
        self.checkpoint_every = checkpoint_every
        self.log = log or (lambda line: print(line, flush=True))
        self.dataset_spec = dataset_spec
        self.extra_meta = dict(extra_meta or {})
        self.xp = model.xp
        self.exe = model.trainer_executor()
        self.exe.seed = s.seed
        opt_args = dict(s.optimizer_args)
        if s.weight_decay and "weight_decay" not in opt_args:
            opt_args["weight_decay"] = s.weight_decay
        self.optimizer = make_optimizer(s.optimizer, model.store.groups(), self.xp, **opt_args)
        self.base_lr = self.optimizer.lr
        self.train_set, self.val_set = dataset.split(s.val_split, seed=split_seed(s.seed))
        if len(self.train_set) == 0:
            raise ConfigError("no training examples: the dataset is empty")
        self.vocab = dataset.meta.get("vocab")
        self.window = dataset.meta.get("seq")  # a text model's training window length
        self.steps_per_epoch = self.train_set.num_batches(s.batch)
        self.total_steps = self.steps_per_epoch * s.epochs
        self.lr_at = make_schedule(
            s.schedule, s.schedule_args, self.base_lr, self.total_steps, self.steps_per_epoch
        )
        from dslc.runtime.metrics import make_metric

        self.metric_names = list(s.metrics)
        for m in self.metric_names:
            make_metric(m)  # unknown names fail before training starts
        self.state = State()
        if resume is not None:
            self._restore(resume)
        self.history: list[dict[str, Any]] = []

    # --- the loop -------------------------------------------------------------------------
    def fit(self, max_steps: int | None = None) -> list[dict[str, Any]]:
        """Train to the last epoch; returns the metrics of the epochs this call finished.

        `max_steps` stops after that many steps in all (as a kill would: no final checkpoint).
        """
        s, st = self.settings, self.state
        if self.out:
            os.makedirs(self.out, exist_ok=True)
            self._trim_metrics_file()
        progress = Progress(not self.quiet and sys.stderr.isatty())
        try:
            with np.errstate(all="ignore"):  # a NaN loss is reported by the loop itself
                while st.epoch < s.epochs:
                    if max_steps is not None and st.step >= max_steps:
                        return self.history
                    if not self._epoch(progress, max_steps):
                        return self.history
        finally:
            progress.close()
        return self.history

    def _epoch(self, progress: Progress, max_steps: int | None) -> bool:
        s, st = self.settings, self.state
        exe, opt = self.exe, self.optimizer
        groups_grads = [g for _, g in self.model.store.groups()]
        progress.epoch(f"epoch {st.epoch + 1}/{s.epochs}", self.steps_per_epoch, st.batch_in_epoch)
        t0 = time.perf_counter()
        seen0 = st.examples
        batches = self.train_set.batches(
            s.batch, data_rng(s.seed, st.epoch), shuffle=True, skip=st.batch_in_epoch
        )
        for batch in batches:
            if max_steps is not None and st.step >= max_steps:
                return False
            n = len(next(iter(batch.values())))
            opt.lr = self.lr_at(st.step)
            try:
                out = exe.run(batch, step=st.step, copy=False, check=self.detect_anomaly)
            except AnomalyError as e:
                e.notes += [f"found {self._position()}", self._kept()]
                raise
            loss = float(out["loss"])
            if not math.isfinite(loss):
                raise self._anomaly(batch, loss)
            if s.clip_norm is not None:
                clip_by_global_norm(groups_grads, s.clip_norm, self.xp)
            opt.step()
            st.step += 1
            st.batch_in_epoch += 1
            st.loss_sum += loss * n
            st.examples += n
            progress.advance(loss, (st.examples - seen0) / max(time.perf_counter() - t0, 1e-9))
            if self.checkpoint_every and st.step % self.checkpoint_every == 0:
                self.save()
        row = {
            "epoch": st.epoch + 1,
            "step": st.step,
            "train_loss": st.loss_sum / max(st.examples, 1),
        }
        if len(self.val_set):
            row.update({f"val_{k}": v for k, v in self.evaluate(self.val_set, s.batch).items()})
        row["lr"] = opt.lr
        row["seconds"] = round(time.perf_counter() - t0, 3)
        st.epoch += 1
        st.batch_in_epoch = 0
        st.loss_sum = 0.0
        st.examples = 0
        self.history.append(row)
        if self.out:
            with open(os.path.join(self.out, METRICS_FILE), "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
            self.save()
        if not self.quiet:
            progress.line(format_row(row, s.epochs), self.log)
        return True

    def evaluate(self, dataset, batch_size: int | None = None) -> dict[str, float]:
        """Metrics of the inference graph over `dataset` (and its loss, when it has one)."""
        return evaluate(self.model, dataset, self.metric_names, batch_size or 256)

    # --- anomalies ------------------------------------------------------------------------
    def _anomaly(self, batch, loss: float) -> AnomalyError:
        """Re-run the failing step with every value checked, to name the node at fault."""
        where = self._position()
        try:
            self.exe.run(batch, step=self.state.step, check=True)
        except AnomalyError as e:
            e.notes.append(f"the loss became {loss} {where}")
            e.notes.append(self._kept())
            return e
        return AnomalyError(f"the loss became {loss} {where}", notes=[self._kept()])

    def _position(self) -> str:
        st = self.state
        return f"at step {st.step} (epoch {st.epoch + 1}, batch {st.batch_in_epoch + 1})"

    def _kept(self) -> str:
        if self.out and os.path.exists(os.path.join(self.out, FILENAME)):
            return f"training stopped; the last checkpoint in {self.out} is intact"
        return "training stopped; no checkpoint was written"

    # --- checkpoints ----------------------------------------------------------------------
    def save(self) -> None:
        """Write RUN/checkpoint.safetensors atomically; refuses non-finite weights."""
        xp = self.xp
        for flat in self.model.store.flat.values():
            if flat.dtype.kind == "f" and not bool(xp.isfinite(flat).all()):
                bad = [n for n, p in self.model.params.items() if not bool(xp.isfinite(p).all())]
                raise AnomalyError(
                    f"parameter {bad[0]} holds NaN or Inf at step {self.state.step}; "
                    "no checkpoint written",
                    notes=[self._kept()],
                    hint="rerun with --detect-anomaly to find the node that made it",
                )
        store, opt = self.model.store, self.optimizer
        optim = {name: store.split(arrays) for name, arrays in opt.state.items()}
        meta = {
            "dslc_version": __version__,
            "model": self.model.name,
            "model_hash": self.model.program.model_hash,
            "seed": self.settings.seed,
            "settings": recorded(self.settings),
            "state": asdict(self.state),
            "step": self.state.step,
            "epoch": self.state.epoch,
            "optimizer": {"name": opt.name, "t": opt.t, "hparams": opt.hp},
            "float_dtype": store.float_dtype,
            "dataset": self.dataset_spec,
        }
        if self.vocab is not None:
            meta["vocab"] = self.vocab.to_json()
        if self.window is not None:
            meta["seq"] = int(self.window)
        meta.update(self.extra_meta)
        save_checkpoint(os.path.join(self.out, FILENAME), self.model.params, optim, meta)

    def _restore(self, ckpt: Checkpoint) -> None:
        """Weights, optimizer state and position from a checkpoint of this run."""
        self.model.load_weights_from(ckpt)
        opt_meta = ckpt.field("optimizer", dict)
        if opt_meta.get("name") != self.optimizer.name:
            raise CheckpointError(
                f"{ckpt.path}: the run used optimizer {opt_meta.get('name')}, "
                f"this one is {self.optimizer.name}"
            )
        views = {
            name: self.model.store.split(arrays) for name, arrays in self.optimizer.state.items()
        }
        for state, by_param in views.items():
            saved = ckpt.optim.get(state, {})
            for name, dst in by_param.items():
                if name not in saved:
                    raise CheckpointError(f"{ckpt.path}: no tensor `optim/{state}/{name}`")
                if saved[name].shape != dst.shape:
                    raise CheckpointError(
                        f"{ckpt.path}: tensor `optim/{state}/{name}` has shape "
                        f"{list(saved[name].shape)}, the parameter {list(dst.shape)}"
                    )
                dst[...] = self.xp.asarray(saved[name])
        self.optimizer.t = int(opt_meta.get("t", 0))
        st = ckpt.field("state", dict)
        try:
            self.state = State(**st)
        except TypeError:
            raise CheckpointError(f"{ckpt.path}: metadata field `state` is malformed") from None

    def _trim_metrics_file(self) -> None:
        """Drop metric rows past the run's position (written after its last checkpoint)."""
        path = os.path.join(self.out, METRICS_FILE)
        if not os.path.exists(path):
            return
        with open(path, encoding="utf-8") as fh:
            rows = [line for line in fh if line.strip()]
        keep = [r for r in rows if _row_step(r) <= self.state.step]
        if self.state.step == 0:
            keep = []
        if len(keep) != len(rows):
            with open(path, "w", encoding="utf-8") as fh:
                fh.writelines(keep)


def _row_step(line: str) -> int:
    try:
        return int(json.loads(line).get("step", 0))
    except (ValueError, AttributeError):
        return 1 << 62


def evaluate(model: Model, dataset, metrics: list[str], batch_size: int = 256) -> dict[str, float]:
    """Metrics of the model's prediction over `dataset` (plus `loss` when the inference graph
    computes one); labels are the model's label arrays."""
    from dslc.runtime.metrics import make_metric

    ms = {name: make_metric(name) for name in metrics}
    has_loss = "loss" in model.infer_graph.outputs
    outs = ((model.prediction,) if model.prediction else ()) + (("loss",) if has_loss else ())
    if not outs:
        return {}
    exe = model.executor(outs)
    label = model.labels[0] if model.labels else None
    if ms and label is None:
        raise ConfigError(f"model {model.name} has no label to compute metrics against")
    loss_sum, count = 0.0, 0
    for batch in dataset.batches(batch_size, shuffle=False):
        out = exe.run(batch, copy=False)
        n = len(next(iter(batch.values())))
        if has_loss:
            loss_sum += float(out["loss"]) * n
            count += n
        for m in ms.values():
            m.update(np.asarray(out[model.prediction]), batch[label])
    result = {"loss": loss_sum / count} if has_loss and count else {}
    result.update({name: float(m.result()) for name, m in ms.items()})
    return result


def format_row(row: Mapping[str, Any], epochs: int) -> str:
    """`epoch 3/10  step 150  train_loss 0.2143  val_accuracy 0.9611  1.2s`."""
    parts = [f"epoch {row['epoch']}/{epochs}", f"step {row['step']}"]
    for k, v in row.items():
        if k in ("epoch", "step", "seconds", "lr"):
            continue
        parts.append(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}")
    parts.append(f"{row.get('seconds', 0):.1f}s")
    return "  ".join(parts)


def resume_checkpoint(run_dir: str) -> Checkpoint:
    """The checkpoint of a run directory to resume."""
    if not os.path.isdir(run_dir):
        raise CheckpointError(f"{run_dir}: no such run directory to resume")
    return load_checkpoint(run_dir)
