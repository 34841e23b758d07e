"""Tests generated from the registry and the case table: every primitive, every case."""

from __future__ import annotations

import numpy as np
import pytest
from ops_cases import CASES
from ops_eval import evaluate

from dslc.ir.builder import Builder
from dslc.ir.graph import Graph
from dslc.ir.types import TensorType, dtype_name
from dslc.ops import NONDIFF, REGISTRY, all_primitives, get_primitive
from dslc.ops.nn import no_second_order
from dslc.ops.registry import EXPR_FUNCTIONS

ALL = [(name, case) for name in sorted(CASES) for case in CASES[name]]
IDS = [f"{name}-{case}" for name, case in ALL]


def build(name, case, float_dtype="f64", seed=0):
    """A graph with one input per operand and the primitive applied to them."""
    graph = Graph()
    b = Builder(graph)
    rng = np.random.default_rng(seed)
    ins, feeds = [], {}
    for i, arg in enumerate(case.args):
        ins.append(b.input(f"x{i}", TensorType(arg.shape, arg.dtype(float_dtype))))
        feeds[f"x{i}"] = arg.sample(rng, float_dtype)
    out = b.op(name, *ins, **case.attrs)
    return graph, b, ins, out, feeds


def kernel_call(name, graph, nid, feeds, **extra):
    prim = get_primitive(name)
    node = graph.node(nid)
    args = [feeds[graph.node(i).attrs["name"]] for i in node.inputs]
    attrs = dict(node.attrs)
    if prim.random:
        attrs["rng"] = np.random.default_rng(7)
    return prim.numpy(np, *args, **attrs, **extra)


def test_every_primitive_has_a_case():
    missing = sorted(set(REGISTRY) - set(CASES))
    assert not missing, f"add cases to tests/ops/ops_cases.py for: {missing}"
    unknown = sorted(set(CASES) - set(REGISTRY))
    assert not unknown, f"cases for primitives that do not exist: {unknown}"


@pytest.mark.parametrize("prim", all_primitives(), ids=lambda p: p.name)
def test_primitive_record_is_complete(prim):
    if prim.kind in ("elementwise", "broadcast") and prim.expr is not None:
        import re

        used = set(re.findall(r"([A-Za-z_][A-Za-z_0-9]*)\(", prim.expr))
        used = {u for u in used if not u.startswith("cast_")}
        assert used <= EXPR_FUNCTIONS, f"{prim.name}: {used - EXPR_FUNCTIONS} not in the set"
        attrs = set(re.findall(r"\{([A-Za-z_]+)\}", prim.expr))
        assert attrs <= set(prim.attrs)
    assert prim.kind != "elementwise" or prim.arity == 1


@pytest.mark.parametrize(("name", "case"), ALL, ids=IDS)
@pytest.mark.parametrize("float_dtype", ["f32", "f64"])
def test_infer_matches_kernel(name, case, float_dtype):
    graph, b, ins, out, feeds = build(name, case, float_dtype)
    value = np.asarray(kernel_call(name, graph, out, feeds))
    want = graph.node(out).type
    assert value.shape == tuple(d.value for d in want.shape)
    assert dtype_name(value.dtype) == want.dtype


@pytest.mark.parametrize(("name", "case"), ALL, ids=IDS)
def test_kernel_writes_into_out(name, case):
    graph, b, ins, out, feeds = build(name, case, "f32")
    ref = np.asarray(kernel_call(name, graph, out, feeds))
    buf = np.full(ref.shape, 123, dtype=ref.dtype)
    got = kernel_call(name, graph, out, feeds, out=buf)
    assert got is buf
    np.testing.assert_array_equal(buf, ref)


def _fd_cases():
    for name, case in ALL:
        prim = get_primitive(name)
        if prim.grad in (NONDIFF, no_second_order) or not case.fd:
            continue
        if not TensorType((), case_out_dtype(name, case)).is_float:
            continue
        yield pytest.param(name, case, id=f"{name}-{case}")


def case_out_dtype(name, case):
    graph, b, ins, out, feeds = build(name, case)
    return graph.node(out).dtype


@pytest.mark.parametrize(("name", "case"), list(_fd_cases()))
def test_gradient_matches_finite_differences(name, case):
    graph, b, ins, out, feeds = build(name, case, "f64", seed=1)
    forward, _, _, fwd_out, _ = build(name, case, "f64", seed=1)
    prim = get_primitive(name)
    otype = graph.node(out).type
    rng = np.random.default_rng(2)
    weights = rng.standard_normal(tuple(d.value for d in otype.shape))
    g = b.input("g", otype)
    feeds["g"] = weights
    grads = prim.grad(b, graph.node(out), g)
    assert len(grads) == len(ins)
    checked = 0
    for i, (x, gx) in enumerate(zip(ins, grads)):
        xtype = b.type_of(x)
        if gx is None:
            continue
        assert xtype.is_float, f"a gradient flows into integer operand {i}"
        if b.type_of(gx).shape != xtype.shape:
            gx = b.op("sum_to", gx, shape=xtype.shape)
        assert b.type_of(gx) == xtype
        analytic = evaluate(graph, feeds)[gx]
        numeric = _central_differences(forward, fwd_out, feeds, f"x{i}", weights)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7, err_msg=f"operand {i}")
        checked += 1
    assert checked, "no operand received a gradient"


def _central_differences(graph, out, feeds, name, weights, eps=1e-6):
    x = feeds[name]
    grad = np.zeros_like(x)
    flat = grad.reshape(-1)
    for j in range(x.size):
        vals = []
        for sign in (1, -1):
            xj = x.copy()
            xj.reshape(-1)[j] += sign * eps
            y = evaluate(graph, {**feeds, name: xj})[out]
            vals.append(np.sum(y * weights))
        flat[j] = (vals[0] - vals[1]) / (2 * eps)
    return grad


def _expr_env():
    import math

    erf = np.vectorize(math.erf)
    env = {
        "exp": np.exp, "log": np.log, "log1p": np.log1p, "sqrt": np.sqrt, "tanh": np.tanh,
        "erf": erf, "sin": np.sin, "cos": np.cos, "abs": np.abs, "sign": np.sign,
        "max": np.maximum, "min": np.minimum, "pow": np.power, "where": np.where, "inf": math.inf,
    }  # fmt: skip
    from dslc.ir.types import DTYPES

    for name, dt in DTYPES.items():
        env[f"cast_{name}"] = lambda v, t=dt: np.asarray(v).astype(t)
    return env


EXPR_CASES = [
    pytest.param(name, case, id=f"{name}-{case}")
    for name, case in ALL
    if get_primitive(name).expr is not None
]


@pytest.mark.parametrize(("name", "case"), EXPR_CASES)
def test_expr_template_computes_what_the_kernel_computes(name, case):
    """The scalar template, read as Python over arrays, agrees with the NumPy kernel."""
    graph, b, ins, out, feeds = build(name, case, "f64")
    prim = get_primitive(name)
    node = graph.node(out)
    text = prim.expr.format(*(f"x{i}" for i in range(len(ins))), **{
        k: v if isinstance(v, str) else repr(v) for k, v in node.attrs.items()
    })  # fmt: skip
    with np.errstate(all="ignore"):
        got = eval(text, _expr_env(), dict(feeds))  # noqa: S307 - our own templates
        want = kernel_call(name, graph, out, feeds)
    np.testing.assert_allclose(np.broadcast_to(got, want.shape), want, rtol=1e-12)


def test_backward_only_primitives_refuse_a_second_derivative():
    from dslc.errors import InternalError

    for name in ("max_pool2d_grad", "lstm_scan_grad", "gru_scan_grad", "rnn_scan_grad"):
        case = CASES[name][0]
        graph, b, ins, out, feeds = build(name, case)
        with pytest.raises(InternalError, match=f"`{name}` has no gradient rule"):
            get_primitive(name).grad(b, graph.node(out), out)


def test_docs_primitives_md_is_generated_from_the_registry():
    from pathlib import Path

    from dslc.ops.doc import render

    path = Path(__file__).parents[2] / "docs" / "primitives.md"
    assert path.read_text() == render(), "run: python -m dslc.ops.doc > docs/primitives.md"


def _compiled_cases():
    for name, case in ALL:
        if get_primitive(name).numba:
            yield pytest.param(name, case, id=f"{name}-{case}")


@pytest.mark.parametrize(("name", "case"), list(_compiled_cases()))
@pytest.mark.parametrize("float_dtype", ["f32", "f64"])
def test_compiled_kernel_matches_the_numpy_kernel(name, case, float_dtype):
    """A primitive's `numba` kernel gives the NumPy kernel's numbers and writes into `out`."""
    pytest.importorskip("numba")
    from dslc.runtime.kernels_numba import compiled_kernel

    graph, b, ins, out, feeds = build(name, case, float_dtype)
    want = np.asarray(kernel_call(name, graph, out, feeds))
    node = graph.node(out)
    args = [feeds[graph.node(i).attrs["name"]] for i in node.inputs]
    fn = compiled_kernel(get_primitive(name).numba)
    buf = np.full(want.shape, 123, dtype=want.dtype)
    assert fn(np, *args, out=buf, **node.attrs) is buf
    tol = 1e-5 if float_dtype == "f32" else 1e-12
    np.testing.assert_allclose(buf, want, rtol=tol, atol=tol)
