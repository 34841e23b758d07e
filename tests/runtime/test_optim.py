"""Optimizers, schedules and clipping match torch.optim, update for update."""

import math

import numpy as np
import pytest
from dslc.runtime.optim import clip_by_global_norm, make_optimizer, make_schedule

from dslc.errors import ConfigError

try:
    import torch
except ImportError:  # pragma: no cover
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")

SHAPES = [(5, 3), (3,), (2, 2, 2)]

CASES = [] if torch is None else [
    ("sgd", torch.optim.SGD, {"lr": 0.1}, {}),
    ("sgd", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9}, {}),
    ("sgd", torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.3}, {}),
    ("sgd", torch.optim.SGD, {"lr": 0.05, "momentum": 0.8, "nesterov": True,
                              "weight_decay": 0.01}, {}),
    ("adam", torch.optim.Adam, {"lr": 0.01}, {}),
    ("adam", torch.optim.Adam, {"lr": 0.01, "weight_decay": 0.1, "amsgrad": True}, {}),
    ("adam", torch.optim.Adam, {"lr": 0.01, "beta1": 0.8, "beta2": 0.95},
     {"betas": (0.8, 0.95)}),
    ("adamw", torch.optim.AdamW, {"lr": 0.01}, {}),
    ("adamw", torch.optim.AdamW, {"lr": 0.01, "weight_decay": 0.3}, {}),
    ("rmsprop", torch.optim.RMSprop, {"lr": 0.01}, {}),
    ("rmsprop", torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.9, "centered": True,
                                      "weight_decay": 0.01}, {}),
]  # fmt: skip


def _flat_groups(arrays, dtype):
    """One flat parameter buffer and gradient buffer with views, as the executor lays them out."""
    n = sum(a.size for a in arrays)
    p, g = np.zeros(n, dtype), np.zeros(n, dtype)
    views, o = [], 0
    for a in arrays:
        views.append((p[o : o + a.size].reshape(a.shape), g[o : o + a.size].reshape(a.shape)))
        p[o : o + a.size] = a.ravel()
        o += a.size
    return p, g, views


@needs_torch
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("name,tcls,ours,theirs", CASES)
def test_matches_torch(name, tcls, ours, theirs, dtype):
    rng = np.random.default_rng(0)
    init = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    p, g, views = _flat_groups(init, dtype)
    opt = make_optimizer(name, [(p, g)], **ours)
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in init]
    targs = {k: v for k, v in ours.items() if k not in ("beta1", "beta2")} | theirs
    topt = tcls(tparams, **targs)
    for _ in range(6):
        grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
        for (_, gv), gr, tp in zip(views, grads, tparams):
            gv[...] = gr
            tp.grad = torch.tensor(gr.copy())
        opt.step()
        topt.step()
    tol = 1e-12 if dtype == np.float64 else 2e-6
    for (pv, _), tp in zip(views, tparams):
        np.testing.assert_allclose(pv, tp.detach().numpy(), rtol=tol, atol=tol)


def test_state_is_preallocated_and_update_is_in_place():
    p, g = np.ones(10, np.float32), np.ones(10, np.float32)
    opt = make_optimizer("adam", [(p, g)], lr=0.1)
    before = {k: [id(a) for a in v] for k, v in opt.state.items()}
    ptr = p.__array_interface__["data"][0]
    opt.step()
    g[...] = 1
    opt.step()
    assert p.__array_interface__["data"][0] == ptr
    assert {k: [id(a) for a in v] for k, v in opt.state.items()} == before


@needs_torch
def test_clip_matches_torch():
    rng = np.random.default_rng(1)
    grads = [rng.standard_normal(s) for s in SHAPES]
    tg = [torch.tensor(a.copy(), requires_grad=True) for a in grads]
    for t, a in zip(tg, grads):
        t.grad = torch.tensor(a.copy())
    norm = clip_by_global_norm([g.ravel() for g in grads], 1.5)
    tnorm = torch.nn.utils.clip_grad_norm_(tg, 1.5)
    assert norm == pytest.approx(float(tnorm), rel=1e-12)
    for a, t in zip(grads, tg):
        np.testing.assert_allclose(a, t.grad.numpy(), rtol=1e-12)
    small = [np.full(3, 0.1)]
    clip_by_global_norm(small, 10.0)
    np.testing.assert_array_equal(small[0], np.full(3, 0.1))


@needs_torch
def test_schedules():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)
    ours = make_schedule("step", {"step_size": 2, "gamma": 0.5}, 0.5, 100, steps_per_epoch=10)
    for epoch in range(7):
        assert ours(epoch * 10 + 3) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.5)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20, eta_min=0.01)
    ours = make_schedule("cosine", {"eta_min": 0.01}, 0.5, 20, steps_per_epoch=5)
    for step in range(20):
        assert ours(step) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        sched.step()

    warm = make_schedule("linear_warmup", {"warmup": 4}, 1.0, 100, 10)
    assert [warm(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    wc = make_schedule("warmup_cosine", {"warmup": 2, "eta_min": 0.0}, 1.0, 12, 10)
    assert wc(0) == 0.5 and wc(1) == 1.0 and wc(2) == 1.0
    assert wc(7) == pytest.approx(0.5) and wc(11) == pytest.approx(
        (1 + math.cos(math.pi * 0.9)) / 2
    )


def test_bad_settings_are_config_errors():
    p = np.zeros(3)
    with pytest.raises(ConfigError, match="unknown optimizer 'adagrad'"):
        make_optimizer("adagrad", [(p, p)])
    with pytest.raises(ConfigError, match="unknown setting 'momentun'"):
        make_optimizer("sgd", [(p, p)], momentun=0.9)
    with pytest.raises(ConfigError, match="nesterov needs momentum"):
        make_optimizer("sgd", [(p, p)], nesterov=True)
    with pytest.raises(ConfigError, match="lr must not be negative"):
        make_optimizer("adam", [(p, p)], lr=-1.0)
    with pytest.raises(ConfigError, match="unknown schedule 'exp'"):
        make_schedule("exp", {}, 0.1, 10, 1)
    with pytest.raises(ConfigError, match="unknown setting 'gama'"):
        make_schedule("step", {"gama": 0.1}, 0.1, 10, 1)


def test_cosine_with_warmup_is_warmup_cosine():
    a = make_schedule("cosine", {"warmup": 3, "min_lr": 0.1}, 1.0, 20, 5)
    b = make_schedule("warmup_cosine", {"warmup": 3, "min_lr": 0.1}, 1.0, 20, 5)
    assert [a(s) for s in range(20)] == [b(s) for s in range(20)]
    assert a(0) == pytest.approx(1 / 3) and a(19) > 0.1
