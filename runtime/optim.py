"""Optimizers, learning-rate schedules and gradient clipping over flat buffers.

Every parameter of one dtype lives in one flat buffer and its gradient in another (see
`dslc.runtime.params`), so an update is a handful of vectorised in-place operations over the
whole buffer, never a Python loop over parameters. The formulas are PyTorch's (`torch.optim`,
single-tensor path), operation for operation, so runs can be compared with it.

An optimizer *consumes* the gradient: it may overwrite the gradient buffer as scratch space
(the next backward pass writes it again).

With `kernels="numba"` (the default when numba is installed, see
`dslc.runtime.kernels_choice`) each update is one Numba loop over the flat buffers
(`dslc.runtime.kernels_optim`); the NumPy operations below are the oracle it is tested
against.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from dslc.runtime.kernels_choice import resolve_kernels, resolve_threads

from dslc.errors import ConfigError

Group = tuple[Any, Any]  # (flat parameter buffer, flat gradient buffer) of one dtype


class Optimizer:
    """Base: holds the groups, a scratch buffer per group, the step count and the state."""

    name = ""
    defaults: dict[str, Any] = {}
    state_names: tuple[str, ...] = ()

    def __init__(self, groups: list[Group], xp=np, *, kernels: str | None = None, **hparams):
        unknown = set(hparams) - set(self.defaults)
        if unknown:
            raise ConfigError(
                f"optimizer {self.name}: unknown setting {sorted(unknown)[0]!r}; "
                f"it takes {', '.join(sorted(self.defaults))}"
            )
        self.hp = {**self.defaults, **hparams}
        for k, v in self.hp.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
                raise ConfigError(f"optimizer {self.name}: {k} must not be negative, got {v}")
        self.lr = float(self.hp["lr"])
        self.xp = xp
        self.groups = list(groups)
        self.t = 0  # number of updates done
        self.scratch = [xp.empty_like(p) for p, _ in self.groups]
        self.state: dict[str, list] = {
            s: [xp.zeros_like(p) for p, _ in self.groups] for s in self.active_state()
        }
        self.kernels = resolve_kernels(kernels, xp)
        self.threads = 1
        if self.kernels == "numba":
            from dslc.runtime import kernels_optim

            self._ko = kernels_optim
            self.threads = resolve_threads()  # $DSLC_THREADS, else 1 (see kernels_choice)
            self._unused = [kernels_optim.placeholder(p) for p, _ in self.groups]
            self._picked: dict = {}

    def active_state(self) -> tuple[str, ...]:
        """The state buffers this configuration needs (momentum only with momentum > 0...)."""
        return self.state_names

    def step(self) -> None:
        """Apply one update to every group, in place."""
        self.t += 1
        for i, (p, g) in enumerate(self.groups):
            if self.kernels == "numba" and p.dtype.kind == "f":
                self._fused(i, p, g)
            else:
                self._update(i, p, g, self.scratch[i])

    def _update(self, i: int, p, g, s) -> None:
        raise NotImplementedError

    def _fused(self, i: int, p, g) -> None:
        """The same update as one kernel (kernels_optim)."""
        raise NotImplementedError

    def _buf(self, name: str, i: int):
        """State buffer `name` of group i, or a stand-in when this configuration has none."""
        bufs = self.state.get(name)
        return bufs[i] if bufs is not None else self._unused[i]

    def _kernel(self, variants, p):
        key = (id(variants), p.size)
        fn = self._picked.get(key)
        if fn is None:
            fn = self._picked[key] = self._ko.pick(variants, p.size, self.threads)
        return fn

    def _decay_into_grad(self, p, g, s) -> None:
        """g += weight_decay * p (L2 regularisation folded into the gradient)."""
        wd = self.hp.get("weight_decay", 0.0)
        if wd:
            self.xp.multiply(p, wd, out=s)
            g += s


class SGD(Optimizer):
    """torch.optim.SGD: momentum, dampening, Nesterov, L2 weight decay."""

    name = "sgd"
    defaults = {"lr": 0.01, "momentum": 0.0, "dampening": 0.0, "nesterov": False,
                "weight_decay": 0.0}  # fmt: skip

    def __init__(self, groups, xp=np, *, kernels=None, **hp):
        super().__init__(groups, xp, kernels=kernels, **hp)
        if self.hp["nesterov"] and (self.hp["momentum"] <= 0 or self.hp["dampening"] != 0):
            raise ConfigError("optimizer sgd: nesterov needs momentum > 0 and no dampening")

    def active_state(self):
        return ("momentum_buffer",) if self.hp["momentum"] else ()

    def _update(self, i, p, g, s):
        xp, mom, lr = self.xp, self.hp["momentum"], self.lr
        self._decay_into_grad(p, g, s)
        if mom:
            buf = self.state["momentum_buffer"][i]
            if self.t == 1:  # torch starts the buffer at the first gradient, undamped
                xp.copyto(buf, g)
            else:
                buf *= mom
                damp = self.hp["dampening"]
                if damp:
                    xp.multiply(g, 1.0 - damp, out=s)
                    buf += s
                else:
                    buf += g
            if self.hp["nesterov"]:
                xp.multiply(buf, mom, out=s)
                g += s  # d_p = g + momentum * buf
            else:
                g = buf
        xp.multiply(g, -lr, out=s)
        p += s

    def _fused(self, i, p, g):
        t, hp = p.dtype.type, self.hp
        fn = self._kernel(self._ko.SGD, p)
        nesterov, first = bool(hp["nesterov"]), self.t == 1
        fn(p, g, self._buf("momentum_buffer", i), t(self.lr), t(hp["momentum"]),
           t(hp["dampening"]), t(hp["weight_decay"]), nesterov, first)  # fmt: skip


class Adam(Optimizer):
    """torch.optim.Adam (L2 decay in the gradient), optionally AMSGrad."""

    name = "adam"
    defaults = {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0,
                "amsgrad": False}  # fmt: skip
    decoupled = False

    def __init__(self, groups, xp=np, *, kernels=None, **hp):
        if "betas" in hp:  # accept torch's spelling too
            hp["beta1"], hp["beta2"] = hp.pop("betas")
        super().__init__(groups, xp, kernels=kernels, **hp)
        for b in ("beta1", "beta2"):
            if not 0.0 <= self.hp[b] < 1.0:
                raise ConfigError(f"optimizer {self.name}: {b} must be in [0, 1), got {self.hp[b]}")

    def active_state(self):
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.hp["amsgrad"] else ())

    def _update(self, i, p, g, s):
        xp, lr, b1, b2 = self.xp, self.lr, self.hp["beta1"], self.hp["beta2"]
        m, v = self.state["exp_avg"][i], self.state["exp_avg_sq"][i]
        if self.decoupled:
            p *= 1.0 - lr * self.hp["weight_decay"]  # AdamW: p <- p (1 - lr wd)
        else:
            self._decay_into_grad(p, g, s)
        xp.subtract(g, m, out=s)  # m.lerp_(g, 1 - b1): m += (1 - b1)(g - m)
        s *= 1.0 - b1
        m += s
        v *= b2  # v = b2 v + (1 - b2) g^2
        xp.multiply(g, g, out=s)
        s *= 1.0 - b2
        v += s
        if self.hp["amsgrad"]:
            vmax = self.state["max_exp_avg_sq"][i]
            xp.maximum(vmax, v, out=vmax)
            v = vmax
        bc1 = 1.0 - b1**self.t
        bc2_sqrt = math.sqrt(1.0 - b2**self.t)
        xp.sqrt(v, out=s)  # denom = sqrt(v) / sqrt(bc2) + eps
        s /= bc2_sqrt
        s += self.hp["eps"]
        xp.divide(m, s, out=s)  # p -= lr / bc1 * m / denom
        s *= -(lr / bc1)
        p += s

    def _fused(self, i, p, g):
        t, hp = p.dtype.type, self.hp
        b1, b2 = hp["beta1"], hp["beta2"]
        fn = self._kernel(self._ko.ADAM, p)
        fn(p, g, self._buf("exp_avg", i), self._buf("exp_avg_sq", i),
           self._buf("max_exp_avg_sq", i), t(self.lr), t(b1), t(b2), t(hp["eps"]),
           t(hp["weight_decay"]), self.decoupled, bool(hp["amsgrad"]),
           t(1.0 - b1**self.t), t(math.sqrt(1.0 - b2**self.t)))  # fmt: skip


class AdamW(Adam):
    """torch.optim.AdamW: weight decay applied to the weights, not the gradient."""

    name = "adamw"
    defaults = {**Adam.defaults, "weight_decay": 1e-2}
    decoupled = True


class RMSprop(Optimizer):
    """torch.optim.RMSprop: optionally centred, with momentum and L2 weight decay."""

    name = "rmsprop"
    defaults = {"lr": 1e-2, "alpha": 0.99, "eps": 1e-8, "weight_decay": 0.0, "momentum": 0.0,
                "centered": False}  # fmt: skip

    def active_state(self):
        out = ("square_avg",)
        if self.hp["momentum"]:
            out += ("momentum_buffer",)
        if self.hp["centered"]:
            out += ("grad_avg",)
        return out

    def _update(self, i, p, g, s):
        xp, lr, a = self.xp, self.lr, self.hp["alpha"]
        self._decay_into_grad(p, g, s)
        sq = self.state["square_avg"][i]
        sq *= a  # sq = a sq + (1 - a) g^2
        xp.multiply(g, g, out=s)
        s *= 1.0 - a
        sq += s
        if self.hp["centered"]:
            ga = self.state["grad_avg"][i]
            xp.subtract(g, ga, out=s)  # ga.lerp_(g, 1 - a)
            s *= 1.0 - a
            ga += s
            xp.multiply(ga, ga, out=s)  # avg = sqrt(sq - ga^2) + eps
            xp.subtract(sq, s, out=s)
            xp.sqrt(s, out=s)
        else:
            xp.sqrt(sq, out=s)
        s += self.hp["eps"]
        xp.divide(g, s, out=s)
        if self.hp["momentum"]:
            buf = self.state["momentum_buffer"][i]
            buf *= self.hp["momentum"]
            buf += s
            xp.multiply(buf, -lr, out=s)
        else:
            s *= -lr
        p += s

    def _fused(self, i, p, g):
        t, hp = p.dtype.type, self.hp
        fn = self._kernel(self._ko.RMSPROP, p)
        fn(p, g, self._buf("square_avg", i), self._buf("grad_avg", i),
           self._buf("momentum_buffer", i), t(self.lr), t(hp["alpha"]), t(hp["eps"]),
           t(hp["weight_decay"]), t(hp["momentum"]), bool(hp["centered"]))  # fmt: skip


OPTIMIZERS: dict[str, type[Optimizer]] = {c.name: c for c in (SGD, Adam, AdamW, RMSprop)}


def make_optimizer(
    name: str, groups: list[Group], xp=np, *, kernels: str | None = None, **hparams
) -> Optimizer:
    """An optimizer by its `.nn` name (`sgd`, `adam`, `adamw`, `rmsprop`)."""
    cls = OPTIMIZERS.get(name.lower())
    if cls is None:
        raise ConfigError(
            f"unknown optimizer {name!r}; choose one of {', '.join(sorted(OPTIMIZERS))}"
        )
    return cls(groups, xp, kernels=kernels, **hparams)


# --- gradient clipping -----------------------------------------------------------------------


def global_norm(grads: list, xp=np) -> float:
    """sqrt(sum of squares) over every gradient buffer."""
    total = 0.0
    for g in grads:
        total += float(xp.dot(g, g))
    return math.sqrt(total)


def clip_by_global_norm(grads: list, max_norm: float, xp=np) -> float:
    """torch.nn.utils.clip_grad_norm_: scale all gradients by max_norm / (norm + 1e-6) when
    that is below 1; returns the norm before clipping."""
    norm = global_norm(grads, xp)
    coef = max_norm / (norm + 1e-6)
    if coef < 1.0:
        for g in grads:
            g *= coef
    return norm


# --- learning-rate schedules -----------------------------------------------------------------

Schedule = Callable[[int], float]  # optimizer step index (0-based) -> learning rate


def make_schedule(
    name: str | None,
    args: dict[str, Any],
    base_lr: float,
    total_steps: int,
    steps_per_epoch: int,
) -> Schedule:
    """The learning rate at each step for a schedule named in the `train` section.

    `step` (step_size epochs, gamma) is torch's StepLR counted in epochs; `cosine` (min_lr)
    anneals from base_lr to min_lr over the run, per step (CosineAnnealingLR's closed form);
    `linear_warmup` (warmup) ramps linearly up to base_lr over `warmup` steps; and
    `warmup_cosine` (warmup, min_lr), or `cosine` given a warmup, ramps up and then anneals
    over the remaining steps. `warmup` counts optimizer steps (`warmup_epochs` counts
    epochs); its default is a twentieth of the run.
    """
    args = dict(args or {})
    spe = max(1, steps_per_epoch)

    def take(key: str, default):
        return args.pop(key, default)

    def warmup_steps() -> int:
        if "warmup_epochs" in args:
            return int(round(float(take("warmup_epochs", 0)) * spe))
        return int(take("warmup", take("warmup_steps", max(1, total_steps // 20))))

    if name is None or name in ("none", "constant"):
        fn: Schedule = lambda step: base_lr  # noqa: E731
    elif name == "step":
        size = int(take("step_size", 1))
        gamma = float(take("gamma", 0.1))
        if size < 1:
            raise ConfigError(f"schedule step: step_size must be at least 1, got {size}")
        fn = lambda step: base_lr * gamma ** ((step // spe) // size)  # noqa: E731
    elif name in ("linear_warmup", "warmup"):
        W = warmup_steps()
        fn = lambda step: base_lr * min(1.0, (step + 1) / max(1, W))  # noqa: E731
    elif name in ("cosine", "warmup_cosine"):
        warm = name == "warmup_cosine" or {"warmup", "warmup_epochs", "warmup_steps"} & set(args)
        W = warmup_steps() if warm else 0
        eta_min = float(take("eta_min", take("min_lr", 0.0)))
        rest = max(1, total_steps - W)

        def fn(step: int) -> float:
            if step < W:
                return base_lr * (step + 1) / W
            return _cosine(base_lr, eta_min, min(step - W, rest), rest)
    else:
        raise ConfigError(
            f"unknown schedule {name!r}; choose one of step, cosine, linear_warmup, warmup_cosine"
        )
    if args:
        raise ConfigError(f"schedule {name}: unknown setting {sorted(args)[0]!r}")
    return fn


def _cosine(base: float, eta_min: float, t: int, T: int) -> float:
    return eta_min + (base - eta_min) * (1.0 + math.cos(math.pi * t / T)) / 2.0
