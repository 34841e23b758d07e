"""Small graphs built with the Builder, for the runtime tests."""

from __future__ import annotations

import numpy as np

from dslc.ir.builder import Builder
from dslc.ir.dims import Dim
from dslc.ir.graph import Graph
from dslc.ir.types import TensorType
from dslc.passes.autodiff import autodiff

N = Dim.sym("N")


def mlp(features=4, hidden=16, classes=3, dropout=0.0, batchnorm_state=False) -> Graph:
    """x -> dense -> relu [-> dropout] -> dense -> cross-entropy; no gradients yet."""
    g = Graph()
    b = Builder(g)
    x = b.input("x", TensorType((N, features)))
    y = b.input("y", TensorType((N,), "i64"), role="label")
    w1 = b.param("l1.W", TensorType((features, hidden)), "glorot_uniform")
    b1 = b.param("l1.b", TensorType((hidden,)), "zeros")
    w2 = b.param("l2.W", TensorType((hidden, classes)), "glorot_uniform")
    b2 = b.param("l2.b", TensorType((classes,)), "zeros")
    with b.at(scope="l1"):
        h = b.op("relu", b.op("add", b.op("matmul", x, w1), b1))
    if dropout:
        h = b.op("mul", h, b.op("dropout_mask", h, p=dropout))
    if batchnorm_state:  # a running mean of h, like batch-norm's statistics
        rm = b.param("bn.mean", TensorType((hidden,)), "zeros", trainable=False)
        new = b.op(
            "add", b.op("scale", rm, c=0.9), b.op("scale", b.op("mean", h, axes=(0,)), c=0.1)
        )
        g.updates["bn.mean"] = new
    with b.at(scope="l2"):
        logits = b.op("add", b.op("matmul", h, w2), b2)
    picked = b.op("take_along", b.op("log_softmax", logits, axis=-1), y, axis=-1)
    loss = b.op("neg", b.op("mean", picked))
    g.outputs["loss"] = loss
    g.outputs["logits"] = logits
    return g


def train_graph(**kw) -> Graph:
    return autodiff(mlp(**kw))


def blobs(n=256, features=4, classes=3, seed=0):
    """Separable Gaussian blobs: x f32[n, features], y i64[n]."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 3, (classes, features))
    y = rng.integers(0, classes, n)
    x = (centers[y] + rng.normal(0, 1, (n, features))).astype(np.float32)
    return {"x": x, "y": y.astype(np.int64)}


def program(dropout=0.2, batchnorm_state=True, **train):
    """A Program around the MLP: training graph with dropout, inference graph without."""
    from dslc.ir.program import Program, TrainConfig

    cfg = TrainConfig(**{"optimizer": "sgd", "optimizer_args": {"lr": 0.1, "momentum": 0.9},
                         "epochs": 3, "batch": 16, "metrics": ["accuracy"], **train})  # fmt: skip
    infer = mlp(batchnorm_state=batchnorm_state)
    infer.updates.clear()  # inference leaves running statistics alone
    return Program(
        name="MLP",
        file="mlp.nn",
        hparams={},
        train_graph=mlp(dropout=dropout, batchnorm_state=batchnorm_state),
        infer_graph=infer,
        train=cfg,
        model_hash="0123456789abcdef",
    )


def dataset(n=200, seed=0):
    from dslc.runtime.data import Dataset

    return Dataset(blobs(n, seed=seed), {"source": "blobs"})


def interpret(graph, params, feeds, *, seed=0, step=0, float_dtype="f32"):
    """The reference: walk the graph calling each kernel on fresh arrays (no plan, no reuse).

    Returns (outputs, grads, updates) as dicts of arrays.
    """
    from dslc.runtime.params import run_dtype
    from dslc.runtime.rng import step_rng
    from dslc.runtime.schedule import bind_env, concrete, flatten, needed_nodes

    from dslc.ir.types import np_dtype
    from dslc.ops import REGISTRY

    tables = (graph.outputs, graph.grads, graph.updates)
    need = needed_nodes(graph, [n for t in tables for n in t.values()])
    env = bind_env(graph, feeds, [n for n, i in graph.inputs.items() if i in need])
    vals = {}
    for n in flatten(graph, [x for x in graph.topo_order() if x in need]):
        dt = np_dtype(run_dtype(n.type.dtype, float_dtype))
        if n.op == "input":
            vals[n.key] = np.asarray(feeds[n.attrs["name"]]).astype(dt)
        elif n.op == "param":
            vals[n.key] = np.array(params[n.attrs["name"]], dtype=dt)
        elif n.op == "const":
            vals[n.key] = np.asarray(n.attrs["value"], dtype=dt)
        else:
            prim = REGISTRY[n.op]
            kw = {k: concrete(v, env, float_dtype, k) for k, v in n.attrs.items()}
            if prim.random:
                kw["rng"] = step_rng(np, seed, step, n.key)
            vals[n.key] = np.asarray(prim.numpy(np, *[vals[i] for i in n.inputs], **kw))
    return tuple({k: vals[v] for k, v in t.items()} for t in tables)
