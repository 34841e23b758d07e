"""`load_program`: file -> checked Program (train graph, inference graph, TrainConfig)."""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import os
from typing import Any

import numpy as np

from dslc.errors import (
    ConfigError,
    DslcError,
    ErrorList,
    ImportError_,
    NameError_,
    SyntaxError_,
    ValueError_,
)
from dslc.frontend import ast as A
from dslc.frontend.lower import Ctx, Lowerer
from dslc.frontend.resolve import Loader, ModuleNS, prelude_sources
from dslc.frontend.train import apply_train_overrides, build_config, split_overrides
from dslc.frontend.values import Poison, Tensor, show
from dslc.ir.dims import Dim
from dslc.ir.graph import Graph
from dslc.ir.program import Program


def load_program(
    path: str | os.PathLike,
    overrides: dict[str, Any] | None = None,
    *,
    allow_imports_outside: bool | None = None,
    mode: str = "train",
) -> Program:
    """Parse, resolve, check and lower a `.nn` file.

    Raises the DslcError when there is exactly one, an ErrorList when there are several.
    `allow_imports_outside` (default: the DSLC_ALLOW_IMPORTS_OUTSIDE environment variable)
    lets `import` reach files outside the main file's directory. `mode` names the graph
    lowered now (`train` or `infer`); the other is lowered when first asked for.
    """
    errors: list[DslcError] = []
    try:
        program = _load(str(path), overrides, allow_imports_outside, mode, errors)
    except ErrorList as el:
        errors.extend(el.errors)
        program = None
    except DslcError as e:
        errors.append(e)
        program = None
    except RecursionError:
        errors.append(ValueError_(f"{path}: the program nests too deeply to compile"))
        program = None
    if errors:
        errors = _dedupe(errors)
        main = str(path)
        errors.sort(key=lambda e: _position(e, main))
        if len(errors) == 1:
            raise errors[0]
        raise ErrorList(errors)
    assert program is not None
    return program


def check(
    path: str | os.PathLike,
    overrides: dict[str, Any] | None = None,
    *,
    allow_imports_outside: bool | None = None,
    mode: str = "train",
) -> Program:
    """Like load_program, but every failure is raised as an ErrorList."""
    try:
        return load_program(path, overrides, allow_imports_outside=allow_imports_outside, mode=mode)
    except ErrorList:
        raise
    except DslcError as e:
        raise ErrorList([e]) from None


def _position(e: DslcError, main: str):
    s = e.span
    if s is None:
        return (0, "", 0, 0)
    return (1 if s.file == main else 2, s.file, s.line, s.col)


def _dedupe(errors: list[DslcError]) -> list[DslcError]:
    seen, out = set(), []
    for e in errors:
        key = (type(e), e.message, str(e.span))
        if key not in seen:
            seen.add(key)
            out.append(e)
    return out


def _load(path, overrides, allow, mode, errors: list[DslcError]) -> Program | None:
    loader = Loader(path, allow)
    ns = loader.load_main()
    errors.extend(loader.errors)
    if any(isinstance(e, ImportError_ | SyntaxError_) for e in loader.errors):
        return None  # unresolved imports would only add unknown-name errors
    module = ns.module
    mdef, tdef = _select_model(module, path, errors)
    if mdef is None:
        return None
    hparam_names = [h.name for h in mdef.hparams]
    hp_over, tr_over = split_overrides(overrides, hparam_names)
    hparams = _eval_hparams(mdef, ns, hp_over, errors)
    if hparams is None:
        return None
    cfg, field_spans = build_config(tdef, os.path.dirname(os.path.abspath(path)), hparams, errors)
    apply_train_overrides(cfg, tr_over)

    meta = {"model": mdef.name, "hparams": dict(hparams), "file": path}

    def lower(which: str, errs: list[DslcError] | None = None) -> Graph | None:
        lw = Lowerer(training=which == "train")
        g = lw.lower_model(mdef, ns, hparams)
        if lw.errors:
            if errs is None:  # lowered on first use: a mistake only this mode reaches
                raise ErrorList(lw.errors)
            errs.extend(lw.errors)
            return None
        _implicit_output(lw)
        if which == "infer":
            _prune_for_inference(g)
        # freeze errors are reported once, for the graph lowered at load time
        _apply_freeze(cfg.freeze, g, field_spans.get("freeze"), [] if errs is None else errs)
        g.meta.update(meta, mode=which)
        return g

    first = lower(mode, errors)
    if first is None or errors:
        return None
    sources = dict(loader.sources)
    sources.update(prelude_sources())
    program = Program(
        name=mdef.name,
        file=path,
        hparams=dict(hparams),
        train=cfg,
        sources=sources,
        lower=lower,
        hasher=graph_hash,
        **{f"{mode}_graph": first},
    )
    return program


def _select_model(module: A.Module, path: str, errors):
    models = {m.name: m for m in module.models}
    trains = list(module.trains)
    if not models:
        errors.append(
            NameError_(
                f"{os.path.basename(path)} defines no model",
                A_span(path),
                hint="a model file needs `model Name { ... }`; blocks alone cannot be compiled",
            )
        )
        return None, None
    named = [t for t in trains if t.model is not None]
    for t in named:
        if t.model not in models:
            close = difflib.get_close_matches(t.model, list(models), n=1)
            errors.append(
                NameError_(
                    f"`train {t.model}` names no model in this file",
                    t.span,
                    hint=f"did you mean `{close[0]}`?" if close else None,
                )
            )
    if len(models) == 1:
        mdef = next(iter(models.values()))
    else:
        targets = {t.model for t in named if t.model in models}
        if len(targets) != 1:
            errors.append(
                NameError_(
                    f"{os.path.basename(path)} defines several models "
                    f"({', '.join(models)}); say which one to use with a `train Name {{ }}` "
                    "section",
                    module.models[1].span,
                )
            )
            return None, None
        mdef = models[targets.pop()]
    mine = [t for t in trains if t.model in (None, mdef.name)]
    if len(mine) > 1:
        errors.append(NameError_(f"model `{mdef.name}` has two train sections", mine[1].span))
    return mdef, (mine[0] if mine else None)


def A_span(path: str):
    from dslc.errors import Span

    return Span(path, 1, 1)


def _eval_hparams(mdef: A.ModelDef, ns: ModuleNS, over: dict[str, Any], errors):
    lw = Lowerer(training=True)
    ctx = Ctx(env={}, scope="", ns=ns)
    before = len(errors)
    out: dict[str, Any] = {}
    seen: set[str] = set()
    for hp in mdef.hparams:
        if hp.name in seen:
            errors.append(NameError_(f"hyper-parameter `{hp.name}` is declared twice", hp.span))
            continue
        seen.add(hp.name)
        try:
            default = lw.ev(hp.default, ctx) if hp.default is not None else None
        except DslcError as e:
            errors.append(e)
            ctx.env[hp.name] = Poison(hp.name)
            continue
        except Exception:  # noqa: BLE001 - a poisoned default: its error is already listed
            ctx.env[hp.name] = Poison(hp.name)
            continue
        if hp.name in over:
            v = over[hp.name]
            if hp.default is not None:
                v = _coerce(hp.name, default, v)
        elif hp.default is None:
            errors.append(
                ConfigError(
                    f"hyper-parameter `{hp.name}` has no default; set it with "
                    f"`--set {hp.name}=...`",
                    hp.span,
                )
            )
            ctx.env[hp.name] = Poison(hp.name)
            continue
        else:
            v = default
        if isinstance(v, Tensor | Dim):
            errors.append(ValueError_(f"hyper-parameter `{hp.name}` must be a constant", hp.span))
            continue
        ctx.env[hp.name] = v
        out[hp.name] = v
    if len(errors) > before:
        return None
    return out


def _coerce(name: str, default, v):
    if isinstance(default, bool):
        if not isinstance(v, bool):
            raise ConfigError(f"`--set {name}`: expected true or false, got {show(v)}")
        return v
    if isinstance(default, int | float):
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise ConfigError(f"`--set {name}`: expected a number, got {show(v)}")
        if isinstance(default, int) and isinstance(v, float) and v.is_integer():
            return int(v)
        return v
    if isinstance(default, str) and not isinstance(v, str):
        return show(v)
    return v


def _implicit_output(lw: Lowerer) -> None:
    """A model with no `output` predicts the first argument of its loss function."""
    g = lw.graph
    if any(k != "loss" for k in g.outputs) or lw.loss_first_arg is None:
        return
    g.outputs = {"prediction": lw.loss_first_arg, **g.outputs}


def _prune_for_inference(g: Graph) -> None:
    """Drop the loss and what only it needs (labels among them); keep params and inputs."""
    g.outputs.pop("loss", None)
    g.updates.clear()
    live: set[int] = set()
    stack = list(g.outputs.values())
    while stack:
        n = stack.pop()
        if n in live:
            continue
        live.add(n)
        stack.extend(g.data(n)["inputs"])
    keep_ops = {"param"}
    for nid in list(g.g.nodes):
        d = g.data(nid)
        if nid in live or d["op"] in keep_ops:
            continue
        if d["op"] == "input" and d["attrs"].get("role") == "input":
            continue
        if d["op"] == "input":
            g.inputs.pop(d["attrs"]["name"], None)
        g.remove(nid)


def _apply_freeze(patterns: list[str], g: Graph, span, errors) -> None:
    if not patterns:
        return
    names = list(g.params)
    for pat in patterns:
        hits = [n for n in names if fnmatch.fnmatchcase(n, pat)]
        if not hits:
            prefixes = sorted({n.rsplit(".", 1)[0] + ".*" for n in names if "." in n} | set(names))
            close = difflib.get_close_matches(pat, prefixes, n=1)
            errors.append(
                NameError_(
                    f"`freeze {pat}` matches no parameter",
                    span,
                    hint=f"did you mean `{close[0]}`?" if close else None,
                )
            )
            continue
        for n in hits:
            g.data(g.params[n])["attrs"]["frozen"] = True


def graph_hash(g: Graph) -> str:
    """A hash of the graph's structure: ops, types, attributes, names; not spans or ids."""
    h = hashlib.sha256()
    order = g.topo_order()
    index = {nid: i for i, nid in enumerate(order)}
    for nid in order:
        d = g.data(nid)
        attrs = []
        for k in sorted(d["attrs"]):
            v = d["attrs"][k]
            if isinstance(v, np.ndarray):
                v = hashlib.sha256(v.tobytes()).hexdigest() + str(v.dtype) + str(v.shape)
            attrs.append(f"{k}={v!r}")
        ins = ",".join(str(index[i]) for i in d["inputs"])
        h.update(f"{d['op']}({ins})[{';'.join(attrs)}]:{d['type']}@{d.get('scope', '')}\n".encode())
    for table in ("inputs", "params", "outputs", "updates"):
        items = sorted((k, index[v]) for k, v in getattr(g, table).items())
        h.update(f"{table}:{items}\n".encode())
    return h.hexdigest()
