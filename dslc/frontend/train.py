"""The `train` section to a TrainConfig, and `--set name=value` overrides."""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass
from typing import Any

from dslc.errors import ArgumentError, ConfigError, DslcError, NameError_, Span, ValueError_
from dslc.frontend import ast as A
from dslc.frontend.values import show
from dslc.ir.program import TrainConfig

OPTIMIZERS: dict[str, tuple[str, ...]] = {
    "sgd": ("lr", "momentum", "nesterov", "dampening"),
    "adam": ("lr", "betas", "eps"),
    "adamw": ("lr", "betas", "eps"),
    "rmsprop": ("lr", "alpha", "eps", "momentum"),
}
SCHEDULES: dict[str, tuple[str, ...]] = {
    "constant": (),
    "step": ("step_size", "gamma"),
    "cosine": ("warmup", "min_lr"),
    "warmup_cosine": ("warmup", "min_lr"),
    "linear_warmup": ("warmup",),
}
METRICS = ("accuracy", "precision", "recall", "f1", "perplexity", "bleu", "mse", "mae")
DATASETS = ("digits", "regression", "sentiment", "tiny_text")
FIELDS = (
    "optimizer",
    "schedule",
    "epochs",
    "batch",
    "metrics",
    "clip_norm",
    "weight_decay",
    "data",
    "val_split",
    "seed",
    "freeze",
    "load",
)
# settings `--set` may change besides hyper-parameters (`lr` and optimizer arguments too)
OVERRIDABLE = (
    "optimizer",
    "lr",
    "momentum",
    "schedule",
    "epochs",
    "batch",
    "metrics",
    "clip_norm",
    "weight_decay",
    "data",
    "val_split",
    "seed",
    "freeze",
)


@dataclass
class _Field:
    name: str
    span: Span


def build_config(
    tdef: A.TrainDef | None, base_dir: str, hparams: dict[str, Any], errors: list[DslcError]
) -> tuple[TrainConfig, dict[str, Span]]:
    """TrainConfig from a `train` section; returns it and the span of each field given."""
    cfg = TrainConfig()
    spans: dict[str, Span] = {}
    if tdef is None:
        return cfg, spans
    for f in tdef.fields:
        try:
            if f.name in spans and f.name not in ("freeze", "load"):
                raise NameError_(
                    f"`{f.name}` is set twice in this train section",
                    f.span,
                    notes=[f"first set at {spans[f.name]}"],
                )
            if f.name not in FIELDS:
                close = difflib.get_close_matches(f.name, FIELDS, n=1)
                raise NameError_(
                    f"unknown train setting `{f.name}`",
                    f.span,
                    notes=["settings: " + ", ".join(FIELDS)],
                    hint=f"did you mean `{close[0]}`?" if close else None,
                )
            spans.setdefault(f.name, f.span)
            _FIELD_FNS[f.name](cfg, f, base_dir, hparams)
        except DslcError as e:
            errors.append(e)
    return cfg, spans


def _one(f: A.Field) -> A.Expr:
    if len(f.values) != 1:
        raise ArgumentError(f"`{f.name}` takes one value, got {len(f.values)}", f.span)
    return f.values[0]


def const_value(e: A.Expr, hparams: dict[str, Any]):
    """A compile-time constant of the train section: numbers, strings, lists, hyper-parameters."""
    if isinstance(e, A.Num | A.Str | A.Const):
        return e.value
    if isinstance(e, A.ListLit):
        return [const_value(i, hparams) for i in e.items]
    if isinstance(e, A.Name):
        if e.name in hparams:
            return hparams[e.name]
        raise NameError_(f"unknown name `{e.name}` in the train section", e.span)
    if isinstance(e, A.Unary) and e.op == "-":
        v = const_value(e.operand, hparams)
        if isinstance(v, int | float) and not isinstance(v, bool):
            return -v
    if isinstance(e, A.Binary) and e.op in ("+", "-", "*", "/", "**"):
        a, b = const_value(e.left, hparams), const_value(e.right, hparams)
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in (a, b)):
            try:
                return {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else None, "**": a**b}[
                    e.op
                ]
            except OverflowError:
                pass
    raise ValueError_(f"`{A.unparse(e)}` is not a constant", e.span)


def _callee(e: A.Expr, what: str) -> tuple[str, list, list]:
    if isinstance(e, A.Name):
        return e.name, [], []
    if isinstance(e, A.Call) and isinstance(e.func, A.Name):
        return e.func.name, list(e.args), list(e.kwargs)
    raise ValueError_(f"{what} is written as a name or a call, like `adam(lr = 1e-3)`", e.span)


def _args(name, pos, kws, allowed, what, span, hparams) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if len(pos) > len(allowed):
        raise ArgumentError(f"{what} `{name}` takes at most {len(allowed)} positional values", span)
    for k, v in zip(allowed, pos):
        out[k] = const_value(v, hparams)
    for kw in kws:
        if kw.name not in allowed:
            close = difflib.get_close_matches(kw.name, allowed, n=1)
            raise ArgumentError(
                f"{what} `{name}` has no argument `{kw.name}`"
                + (f"; it takes {', '.join(allowed)}" if allowed else ""),
                kw.span,
                hint=f"did you mean `{close[0]}`?" if close else None,
            )
        if kw.name in out:
            raise ArgumentError(f"`{kw.name}` is given twice", kw.span)
        out[kw.name] = const_value(kw.value, hparams)
    return out


def _choose(name: str, table, what: str, span: Span) -> None:
    if name not in table:
        close = difflib.get_close_matches(name, list(table), n=1, cutoff=0.5)
        raise NameError_(
            f"unknown {what} `{name}`; expected one of {', '.join(table)}",
            span,
            hint=f"did you mean `{close[0]}`?" if close else None,
        )


def _f_optimizer(cfg, f, base, hp):
    e = _one(f)
    name, pos, kws = _callee(e, "the optimizer")
    _choose(name, OPTIMIZERS, "optimizer", e.span)
    allowed = OPTIMIZERS[name] + ("weight_decay",)
    args = _args(name, pos, kws, allowed, "optimizer", e.span, hp)
    if "weight_decay" in args:
        cfg.weight_decay = _number(args.pop("weight_decay"), "weight_decay", e.span, lo=0.0)
    for k in ("lr", "momentum", "eps", "alpha", "dampening"):
        if k in args:
            args[k] = _number(args[k], k, e.span, lo=0.0)
    cfg.optimizer, cfg.optimizer_args = name, args


def _f_schedule(cfg, f, base, hp):
    e = _one(f)
    name, pos, kws = _callee(e, "the schedule")
    if name == "none":
        cfg.schedule, cfg.schedule_args = None, {}
        return
    _choose(name, SCHEDULES, "schedule", e.span)
    cfg.schedule = name
    cfg.schedule_args = _args(name, pos, kws, SCHEDULES[name], "schedule", e.span, hp)


def _number(v, what, span, lo=None, hi=None, integer=False, open_hi=False):
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError_(f"`{what}` must be a number, got {show(v)}", span)
    if integer:
        if isinstance(v, float) and not v.is_integer():
            raise ValueError_(f"`{what}` must be a whole number, got {v}", span)
        v = int(v)
    if lo is not None and v < lo:
        raise ValueError_(f"`{what}` must be at least {lo}, got {v}", span)
    if hi is not None and (v >= hi if open_hi else v > hi):
        raise ValueError_(f"`{what}` must be below {hi}, got {v}", span)
    return v


def _f_epochs(cfg, f, base, hp):
    cfg.epochs = _number(const_value(_one(f), hp), "epochs", f.span, lo=1, integer=True)


def _f_batch(cfg, f, base, hp):
    cfg.batch = _number(const_value(_one(f), hp), "batch", f.span, lo=1, integer=True)


def _f_seed(cfg, f, base, hp):
    cfg.seed = _number(const_value(_one(f), hp), "seed", f.span, lo=0, integer=True)


def _f_clip(cfg, f, base, hp):
    v = const_value(_one(f), hp)
    cfg.clip_norm = None if v is None else float(_number(v, "clip_norm", f.span, lo=0.0))


def _f_wd(cfg, f, base, hp):
    cfg.weight_decay = float(_number(const_value(_one(f), hp), "weight_decay", f.span, lo=0.0))


def _f_val(cfg, f, base, hp):
    v = const_value(_one(f), hp)
    cfg.val_split = float(_number(v, "val_split", f.span, lo=0.0, hi=1.0, open_hi=True))


def _f_metrics(cfg, f, base, hp):
    out = []
    for e in f.values:
        if not isinstance(e, A.Name | A.Str):
            raise ValueError_("metrics are names, like `metrics accuracy, f1`", e.span)
        name = e.name if isinstance(e, A.Name) else e.value
        _choose(name, METRICS, "metric", e.span)
        out.append(name)
    cfg.metrics = out


def _f_data(cfg, f, base, hp):
    e = _one(f)
    if isinstance(e, A.Str):
        cfg.dataset = (
            e.value if os.path.isabs(e.value) else os.path.normpath(os.path.join(base, e.value))
        )
        return
    name, pos, kws = _callee(e, "the data set")
    _choose(name, DATASETS, "built-in data set", e.span)
    cfg.dataset = name
    cfg.dataset_args = {}
    if pos:
        raise ArgumentError("data set arguments are given by name: tiny_text(seq = 64)", e.span)
    for kw in kws:
        cfg.dataset_args[kw.name] = const_value(kw.value, hp)


def _f_freeze(cfg, f, base, hp):
    for g in f.values:
        if not re.fullmatch(r"[A-Za-z0-9_.*?\[\]\-]+", g):
            raise ValueError_(f"`{g}` is not a parameter name pattern", f.span)
        cfg.freeze.append(g)


def _f_load(cfg, f, base, hp):
    ((path, prefix),) = f.values
    full = path if os.path.isabs(path) else os.path.normpath(os.path.join(base, path))
    cfg.load.append((full, prefix))


_FIELD_FNS = {
    "optimizer": _f_optimizer,
    "schedule": _f_schedule,
    "epochs": _f_epochs,
    "batch": _f_batch,
    "seed": _f_seed,
    "clip_norm": _f_clip,
    "weight_decay": _f_wd,
    "val_split": _f_val,
    "metrics": _f_metrics,
    "data": _f_data,
    "freeze": _f_freeze,
    "load": _f_load,
}


# --- overrides ---------------------------------------------------------------------------------


def parse_value(v: Any) -> Any:
    """A `--set` value: `6` -> 6, `1e-3` -> 0.001, `true`, `none`, `[3, 3]`, else the string."""
    if not isinstance(v, str):
        return v
    s = v.strip()
    low = s.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    try:
        return int(s.replace("_", "")) if re.fullmatch(r"[+-]?[0-9][0-9_]*", s) else float(s)
    except ValueError:
        pass
    if s.startswith("[") and s.endswith("]"):
        inner = s[1:-1].strip()
        return [parse_value(p) for p in inner.split(",")] if inner else []
    if len(s) >= 2 and s[0] == s[-1] and s[0] in "\"'":
        return s[1:-1]
    return s


def split_overrides(
    overrides: dict[str, Any] | None, hparam_names: list[str]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(hyper-parameter overrides, train overrides); unknown names raise ConfigError."""
    hp: dict[str, Any] = {}
    tr: dict[str, Any] = {}
    for key, raw in (overrides or {}).items():
        value = parse_value(raw)
        k = key.strip()
        if k.startswith("train."):
            name = k[len("train.") :]
            if name not in OVERRIDABLE:
                raise _unknown_setting(k, hparam_names)
            tr[name] = value
        elif k in hparam_names:
            hp[k] = value
        elif k in OVERRIDABLE:
            tr[k] = value
        else:
            raise _unknown_setting(k, hparam_names)
    return hp, tr


def _unknown_setting(key: str, hparam_names: list[str]) -> ConfigError:
    valid = list(hparam_names) + list(OVERRIDABLE)
    close = difflib.get_close_matches(key.removeprefix("train."), valid, n=1)
    notes = [
        "hyper-parameters: " + (", ".join(hparam_names) if hparam_names else "(none)"),
        "training settings: " + ", ".join(OVERRIDABLE),
    ]
    return ConfigError(
        f"`--set {key}`: the model has no hyper-parameter or training setting `{key}`",
        None,
        notes=notes,
        hint=f"did you mean `{close[0]}`?" if close else None,
    )


def apply_train_overrides(cfg: TrainConfig, tr: dict[str, Any]) -> None:
    for k, v in tr.items():
        where = f"`--set {k}={show(v)}`"
        try:
            if k == "lr":
                cfg.optimizer_args["lr"] = float(_number(v, "lr", None, lo=0.0))
            elif k == "momentum":
                cfg.optimizer_args["momentum"] = float(_number(v, "momentum", None, lo=0.0))
            elif k == "optimizer":
                if v not in OPTIMIZERS:
                    raise ValueError_(f"unknown optimizer {show(v)}; expected one of "
                                      + ", ".join(OPTIMIZERS))  # fmt: skip
                keep = {a: x for a, x in cfg.optimizer_args.items() if a in OPTIMIZERS[v]}
                cfg.optimizer, cfg.optimizer_args = v, keep
            elif k == "schedule":
                if v is None or v == "none":
                    cfg.schedule, cfg.schedule_args = None, {}
                elif v in SCHEDULES:
                    cfg.schedule, cfg.schedule_args = v, {}
                else:
                    raise ValueError_(f"unknown schedule {show(v)}; expected one of "
                                      + ", ".join(SCHEDULES))  # fmt: skip
            elif k in ("epochs", "batch"):
                setattr(cfg, k, _number(v, k, None, lo=1, integer=True))
            elif k == "seed":
                cfg.seed = _number(v, k, None, lo=0, integer=True)
            elif k == "clip_norm":
                cfg.clip_norm = None if v is None else float(_number(v, k, None, lo=0.0))
            elif k == "weight_decay":
                cfg.weight_decay = float(_number(v, k, None, lo=0.0))
            elif k == "val_split":
                cfg.val_split = float(_number(v, k, None, lo=0.0, hi=1.0, open_hi=True))
            elif k == "data":
                cfg.dataset, cfg.dataset_args = str(v), {}
            elif k == "metrics":
                names = v if isinstance(v, list) else [p.strip() for p in str(v).split(",")]
                for n in names:
                    if n not in METRICS:
                        raise ValueError_(f"unknown metric {show(n)}; expected one of "
                                          + ", ".join(METRICS))  # fmt: skip
                cfg.metrics = list(names)
            elif k == "freeze":
                cfg.freeze = v if isinstance(v, list) else [p.strip() for p in str(v).split(",")]
        except DslcError as e:
            raise ConfigError(f"{where}: {e.message}") from None
