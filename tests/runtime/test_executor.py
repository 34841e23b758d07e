"""The executor: plans built once per shape, flat parameter storage, determinism."""

from __future__ import annotations

import numpy as np
import pytest
from dslc.runtime import executor as executor_mod
from dslc.runtime import schedule as schedule_mod
from dslc.runtime.executor import Executor
from dslc.runtime.optim import make_optimizer
from runtime_graphs import N, blobs, mlp, train_graph

from dslc.errors import AnomalyError, DataError, Span
from dslc.ir.builder import Builder
from dslc.ir.dims import Dim
from dslc.ir.graph import Graph
from dslc.ir.types import TensorType
from dslc.passes.autodiff import autodiff


def batches(data, size):
    n = len(data["y"])
    for i in range(0, n, size):
        yield {k: v[i : i + size] for k, v in data.items()}


def train(graph, data, steps=60, seed=0, lr=0.1, batch=32):
    exe = Executor(graph, seed=seed)
    opt = make_optimizer("sgd", exe.store.groups(), lr=lr, momentum=0.9)
    losses = []
    step = 0
    while step < steps:
        for b in batches(data, batch):
            losses.append(float(exe.run(b, step=step)["loss"]))
            opt.step()
            step += 1
    return exe, losses


def test_training_lowers_the_loss():
    exe, losses = train(train_graph(), blobs(), steps=80)
    assert np.mean(losses[-8:]) < 0.3 * np.mean(losses[:8])
    logits = exe.run(blobs())["logits"]
    assert (logits.argmax(1) == blobs()["y"]).mean() > 0.9


def test_parameters_and_gradients_live_in_flat_buffers():
    exe = Executor(train_graph(batchnorm_state=True))
    (flat,) = exe.store.flat.values()
    (gflat,) = exe.store.grad_flat.values()
    for name, p in exe.params.items():
        assert np.shares_memory(p, flat), name
    assert set(exe.grads) == {"l1.W", "l1.b", "l2.W", "l2.b"}
    for g in exe.grads.values():
        assert np.shares_memory(g, gflat)
    bp = exe.bound(blobs(32))
    assert not bp.plan.grad_copies  # gradient kernels write into the flat buffer directly
    ((p, g),) = exe.store.groups()
    assert p.size == g.size and np.shares_memory(p, flat)
    assert not np.shares_memory(p, exe.params["bn.mean"])  # state sits after the trained part


def test_a_step_reuses_its_plan_and_never_walks_the_graph(monkeypatch):
    g = train_graph()
    exe = Executor(g)
    data = blobs(40)
    first = exe.run({k: v[:32] for k, v in data.items()})

    def boom(*a, **k):
        raise AssertionError("the graph was walked during a step")

    monkeypatch.setattr(Graph, "data", boom)
    monkeypatch.setattr(Graph, "node", boom)
    monkeypatch.setattr(Graph, "topo_order", boom)
    monkeypatch.setattr(executor_mod, "schedule", boom)
    monkeypatch.setattr(schedule_mod, "schedule", boom)
    again = exe.run({k: v[:32] for k, v in data.items()})
    np.testing.assert_array_equal(first["loss"], again["loss"])
    monkeypatch.undo()
    exe.run({k: v[32:] for k, v in data.items()})  # a last partial batch gets its own plan
    assert len(exe._bound) == 2


def test_buffers_are_reused():
    plan = Executor(train_graph()).bound(blobs(64)).plan
    computed = [plan.values[s.node] for s in plan.steps]
    total = sum(v.nbytes for v in computed if v.kind == "buffer")
    assert plan.arena_bytes < 0.6 * total
    assert any(v.kind == "view" for v in computed)  # transposes cost nothing


def test_outputs_are_copies_unless_asked():
    exe = Executor(train_graph())
    a = exe.run(blobs(8))
    b = exe.run(blobs(8, seed=1))
    assert not np.shares_memory(a["logits"], b["logits"])
    c = exe.run(blobs(8), copy=False)
    d = exe.run(blobs(8, seed=1), copy=False)
    assert np.shares_memory(c["logits"], d["logits"])


def test_updates_are_applied_after_the_run():
    exe = Executor(train_graph(batchnorm_state=True))
    data = blobs(16)
    h = np.maximum(data["x"] @ exe.params["l1.W"] + exe.params["l1.b"], 0)
    exe.run(data)
    np.testing.assert_allclose(exe.params["bn.mean"], 0.1 * h.mean(0), rtol=1e-5, atol=1e-7)


def test_same_seed_same_weights_bit_for_bit_with_dropout():
    data = blobs()
    a, _ = train(train_graph(dropout=0.3), data, steps=20, seed=7)
    b, _ = train(train_graph(dropout=0.3), data, steps=20, seed=7)
    c, _ = train(train_graph(dropout=0.3), data, steps=20, seed=8)
    for name in a.params:
        np.testing.assert_array_equal(a.params[name], b.params[name])
    assert any(not np.array_equal(a.params[n], c.params[n]) for n in a.params)


def test_dropout_masks_depend_on_the_step():
    exe = Executor(train_graph(dropout=0.5))
    data = blobs(16)
    l0 = exe.run(data, step=0)["loss"]
    l1 = exe.run(data, step=1)["loss"]
    l0b = exe.run(data, step=0)["loss"]
    assert l0 != l1 and l0 == l0b


def test_float64_gradients_match_torch():
    torch = pytest.importorskip("torch")
    exe = Executor(train_graph(), float_dtype="f64")
    data = blobs(16)
    out = exe.run(data)
    assert out["loss"].dtype == np.float64
    tp = {n: torch.tensor(p.copy(), requires_grad=True) for n, p in exe.params.items()}
    x = torch.tensor(data["x"].astype(np.float64))
    h = torch.relu(x @ tp["l1.W"] + tp["l1.b"])
    loss = torch.nn.functional.cross_entropy(h @ tp["l2.W"] + tp["l2.b"], torch.tensor(data["y"]))
    loss.backward()
    assert float(out["loss"]) == pytest.approx(loss.item(), rel=1e-12)
    for n, t in tp.items():
        np.testing.assert_allclose(exe.grads[n], t.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_inference_executor_shares_the_parameters():
    train_exe = Executor(train_graph())
    infer = Executor(mlp(), store=train_exe.store, outputs=["logits"])
    assert infer.input_names == ["x"]  # labels are not needed for the logits
    opt = make_optimizer("sgd", train_exe.store.groups(), lr=0.5)
    data = blobs(32)
    before = infer.run({"x": data["x"]})["logits"]
    train_exe.run(data)
    opt.step()
    after = infer.run({"x": data["x"]})["logits"]
    assert not np.allclose(before, after)


def test_feed_errors_name_the_array():
    exe = Executor(train_graph())
    data = blobs(8)
    with pytest.raises(DataError, match="no array named `y`"):
        exe.run({"x": data["x"]})
    with pytest.raises(
        DataError, match=r"array `x` has shape \[8, 5\]; the model expects f32\[N, 4\]"
    ):
        exe.run({"x": np.zeros((8, 5), np.float32), "y": data["y"]})
    with pytest.raises(DataError, match=r"with N = 8"):
        exe.run({"x": data["x"], "y": data["y"][:4]})
    with pytest.raises(DataError, match="array `y` has dtype float64; the model expects i64"):
        exe.run({"x": data["x"], "y": data["y"].astype(np.float64)})


def _log_graph():
    g = Graph()
    span = Span("model.nn", 3, 9, 3, 15)
    b = Builder(g, span=Span("model.nn", 1, 1))
    x = b.input("x", TensorType((N, 2)))
    w = b.param("w", TensorType((2,)), "ones")
    with b.at(span=span, scope="block"):
        y = b.op("log", b.op("mul", x, w))
    g.outputs["loss"] = b.op("mean", y)
    return autodiff(g)


def test_check_names_the_node_that_made_a_nan():
    exe = Executor(_log_graph())
    exe.run({"x": np.ones((2, 2), np.float32)}, check=True)
    with pytest.raises(AnomalyError) as e:
        exe.run({"x": -np.ones((2, 2), np.float32)}, check=True)
    msg = str(e.value)
    assert "node %" in msg and "(`log` in `block`) produced NaN" in msg
    assert e.value.span == Span("model.nn", 3, 9, 3, 15)
    with pytest.raises(AnomalyError, match="input `x` contains NaN or Inf"):
        exe.run({"x": np.full((2, 2), np.nan, np.float32)}, check=True)


def test_elementwise_kernels_may_write_over_their_operand():
    """The memory plan writes an elementwise result over an operand that dies there."""
    from dslc.ops import all_primitives

    rng = np.random.default_rng(0)
    for prim in all_primitives():
        if prim.kind not in ("elementwise", "broadcast") or prim.random:
            continue
        arity = prim.arity or 2
        if prim.name == "where":
            args = [rng.random((3, 4)) > 0.5, rng.random((3, 4)), rng.random((3, 4))]
        elif prim.name in ("logical_and", "logical_or", "logical_not"):
            args = [rng.random((3, 4)) > 0.5 for _ in range(arity)]
        else:
            args = [rng.uniform(0.5, 2.0, (3, 4)).astype(np.float32) for _ in range(arity)]
        try:
            want = prim.numpy(np, *[a.copy() for a in args])
        except Exception:  # kernels needing attributes without defaults: not this test's
            continue
        for i, a in enumerate(args):
            if a.dtype != want.dtype:
                continue
            ins = [x.copy() for x in args]
            got = prim.numpy(np, *ins, out=ins[i])
            np.testing.assert_array_equal(got, want, err_msg=f"{prim.name} over operand {i}")


SMALL_EXAMPLES = {
    "mlp_digits": {"hidden": 16},
    "cnn_digits": {"size": 8},
    "lstm_sentiment": {"seq": 12, "embed": 8, "units": 8},
    "gpt_char": {"d": 16, "heads": 2, "layers": 1},
    "bert_classifier": {"vocab": 500, "seq": 12, "d": 16, "heads": 2, "layers": 1, "ffn": 32},
}


@pytest.mark.parametrize("name", sorted(SMALL_EXAMPLES))
def test_the_plan_computes_what_the_graph_says(name):
    """Buffer reuse, in-place writes, views and fused bodies change no number: the executor
    equals a plain walk of the (fused, optimised) training graph, dropout included."""
    import os

    from dslc.runtime.data import load_dataset
    from runtime_graphs import interpret

    from dslc import api

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    model = api.load(os.path.join(root, "examples", f"{name}.nn"), float_dtype="f64",
                     overrides=SMALL_EXAMPLES[name])  # fmt: skip
    data = load_dataset(None, model.program)
    batch = {k: v[:6] for k, v in data.arrays.items()}
    before = {k: v.copy() for k, v in model.params.items()}
    out = model.trainer_executor().run(batch, step=5)
    ref_out, ref_grads, ref_updates = interpret(
        model.train_graph, before, batch, step=5, float_dtype="f64"
    )
    np.testing.assert_allclose(out["loss"], ref_out["loss"], rtol=1e-12)
    assert set(model.store.grads) == set(ref_grads)
    for k, g in ref_grads.items():
        np.testing.assert_allclose(model.store.grads[k], g, rtol=1e-10, atol=1e-12, err_msg=k)
    for k, u in ref_updates.items():
        np.testing.assert_allclose(model.params[k], u, rtol=1e-12, err_msg=k)


def test_no_in_place_write_over_a_value_another_operand_views():
    """`e - e[:, :1]`: the result must not overwrite `e` while its first column is read."""
    g = Graph()
    b = Builder(g)
    x = b.input("x", TensorType((N, 3)))
    e = b.op("exp", x)
    first = b.op("broadcast_to", b.op("slice", e, axis_slices=((1, 0, 1, 1),)), shape=(N, 3))
    g.outputs["y"] = y = b.op("sub", e, first)
    x0 = np.random.default_rng(0).random((4, 3)).astype(np.float32)
    exe = Executor(g)
    out = exe.run({"x": x0})["y"]
    np.testing.assert_allclose(out, np.exp(x0) - np.exp(x0[:, :1]), rtol=1e-6)
    # NumPy's ufuncs would survive the overlap; CuPy's and multi-step kernels would not
    values = exe.bound({"x": x0}).plan.values
    assert values[y].ref != values[e].ref


def _matmul_graph(view: bool):
    """x [N, 4] @ w, with x read as it is, or also through a view (a transpose)."""
    g = Graph()
    b = Builder(g)
    x = b.input("x", TensorType((N, 4)))
    w = b.param("w", TensorType((4, 3)), "ones")
    y = b.op("matmul", x, w)
    if view:  # + the row sums of x, read through x^T
        rows = b.op("sum", b.op("transpose", x, perm=(1, 0)), axes=(0,))
        y = b.op("add", y, b.op("reshape", rows, shape=(N, 1)))
    g.outputs["y"] = y
    return g


@pytest.mark.parametrize("view", [False, True])
@pytest.mark.parametrize("kernels", ["numpy", "numba"])
def test_a_callers_array_is_read_in_place_where_only_kernels_read_it(view, kernels):
    """No copy of a feed that kernels read as it is; the caller's array is never written, a
    different array each run is read each run, and a feed of another dtype is converted."""
    if kernels == "numba":
        pytest.importorskip("numba")
    rng = np.random.default_rng(0)
    exe = Executor(_matmul_graph(view), kernels=kernels)
    xs = [rng.standard_normal((6, 4)).astype(np.float32) for _ in range(3)]
    w = exe.store.params["w"]
    want = [x @ w + (x.sum(axis=1, keepdims=True) if view else 0) for x in xs]
    keep = [x.copy() for x in xs]
    for x, y in zip(xs, want):
        np.testing.assert_allclose(exe.run({"x": x})["y"], y, rtol=1e-5)
    np.testing.assert_allclose(exe.run({"x": xs[0].astype(np.float64)})["y"], want[0], rtol=1e-5)
    xs[1][...] = keep[2]  # the same array, new values: read again
    np.testing.assert_allclose(exe.run({"x": xs[1]})["y"], want[2], rtol=1e-5)
    assert all(np.array_equal(x, k) for x, k in zip((xs[0], xs[2]), (keep[0], keep[2])))
    bp = exe.bound({"x": xs[0]})
    assert [name for name, _, _ in bp.direct] == ([] if view else ["x"])
    with pytest.raises(AnomalyError, match="input `x` contains NaN"):  # checked runs copy
        exe.run({"x": np.full((6, 4), np.nan, np.float32)}, check=True)


def _projected_lookup_graph():
    """y = gather(table @ w, tokens) + b: the projected table depends on parameters only."""
    g = Graph()
    b = Builder(g)
    f32 = lambda *s: TensorType(s, "f32")  # noqa: E731
    tokens = b.input("tokens", TensorType((Dim.sym("B"), 3), "i64"))
    proj = b.op("matmul", b.param("table", f32(7, 4)), b.param("w", f32(4, 5)))
    g.outputs["y"] = b.op("add", b.op("gather", proj, tokens), b.param("b", f32(5)))
    return g


def _projected_lookup_executor(**kw):
    exe = Executor(_projected_lookup_graph(), **kw)
    rng = np.random.default_rng(2)
    for p in exe.store.params.values():
        p[...] = rng.standard_normal(p.shape)
    return exe


def _want(exe, tokens):
    p = exe.store.params
    return (p["table"] @ p["w"])[tokens] + p["b"]


@pytest.mark.parametrize("kernels", ["numpy", "numba"])
def test_parameter_only_steps_run_again_only_when_a_parameter_changes(kernels):
    if kernels == "numba":
        pytest.importorskip("numba")
    exe = _projected_lookup_executor(kernels=kernels)
    tokens = np.random.default_rng(0).integers(0, 7, size=(2, 3))
    np.testing.assert_allclose(exe.run({"tokens": tokens})["y"], _want(exe, tokens), rtol=1e-6)
    bp = exe.bound({"tokens": tokens})
    assert [exe.graph.data(n)["op"] for n in bp.hoisted_nodes] == ["matmul"]
    first = bp.snapshot
    exe.run({"tokens": tokens})
    assert bp.snapshot is first  # the parameters did not change: the table was kept
    exe.store.params["w"][1, 2] += 1.0  # written in place, as an optimizer or a user would
    np.testing.assert_allclose(exe.run({"tokens": tokens})["y"], _want(exe, tokens), rtol=1e-6)
    assert bp.snapshot is not first
    exe.store.params["table"][...] = np.nan  # NaN bits equal themselves: computed once more
    exe.run({"tokens": tokens})
    nan = bp.snapshot
    exe.run({"tokens": tokens})
    assert bp.snapshot is nan


def test_plans_of_other_shapes_share_a_table_and_trust_only_what_they_wrote():
    exe = _projected_lookup_executor()
    rng = np.random.default_rng(1)
    two, three = rng.integers(0, 7, size=(2, 3)), rng.integers(0, 7, size=(3, 3))
    w0 = exe.store.params["w"].copy()
    exe.run({"tokens": two})
    exe.store.params["w"][...] = w0 * 2
    np.testing.assert_allclose(exe.run({"tokens": three})["y"], _want(exe, three), rtol=1e-6)
    a, b = exe.bound({"tokens": two}), exe.bound({"tokens": three})
    assert a is not b and a.hoisted[0][3] is b.hoisted[0][3]  # one buffer for the table
    exe.store.params["w"][...] = w0  # back to the bits plan `a` last computed from
    np.testing.assert_allclose(exe.run({"tokens": two})["y"], _want(exe, two), rtol=1e-6)


def test_nothing_is_hoisted_in_a_training_plan():
    exe = Executor(train_graph())
    bp = exe.bound(blobs(8))
    assert bp.hoisted == [] and bp.hoist_params == []
