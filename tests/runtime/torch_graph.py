"""An independent PyTorch evaluator of dslc forward graphs, for gradient parity tests.

`torch_forward(graph, feeds, params, env)` walks a lowered graph (before any pass) in
topological order and computes every node with the PyTorch function of its primitive, in
float64; parameters are torch leaf tensors, so `loss.backward()` gives PyTorch's gradients of
the very computation that dslc differentiates with its own autodiff pass.

`fix_dropout_masks(graph)` turns every `dropout_mask` into an input (`mask0`, `mask1`, ...)
so that dslc and PyTorch see the same fixed masks; `dropout_masks(...)` draws them.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dslc.ir.dims import evaluate_shape, evaluate_value
from dslc.ir.graph import Graph
from dslc.ir.types import TensorType

F = torch.nn.functional

TORCH_DTYPES = {
    "f16": torch.float64,  # every float runs in float64 here
    "f32": torch.float64,
    "f64": torch.float64,
    "i32": torch.int64,
    "i64": torch.int64,
    "bool": torch.bool,
}


def _axes(axes, rank):
    if axes is None:
        return tuple(range(rank))
    if isinstance(axes, int):
        axes = (axes,)
    return tuple(a % rank for a in axes)


def _pair(v):
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _reduce(fn):
    def run(x, axes=None, keepdims=False):
        return fn(x, dim=_axes(axes, x.dim()), keepdim=keepdims)

    return run


def _slice(x, axis_slices):
    index = [slice(None)] * x.dim()
    for axis, start, stop, step in axis_slices:
        index[axis] = slice(start, stop, step)
    return x[tuple(index)]


def _index(x, axis, i):
    return x.select(axis, i)


def _take_along(x, indices, axis=-1):
    axis = axis % x.dim()
    return torch.gather(x, axis, indices.unsqueeze(axis)).squeeze(axis)


def _lstm_scan(xw, u, h0, c0, *bias, gates=False):
    """Gates i, f, g, o as torch.nn.LSTM; [B, T, 2, H] of (h, c) per step, and with `gates`
    [B, T, 6, H] of (h, c, i, f, g, o activated); an optional bias added at every step."""
    h, c = h0, c0
    states = []
    for t in range(xw.shape[1]):
        z = xw[:, t] + h @ u + (bias[0] if bias else 0)
        i, f, g, o = z.chunk(4, dim=-1)
        i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
        c = f * c + i * g
        h = o * torch.tanh(c)
        states.append(torch.stack([h, c, i, f, g, o] if gates else [h, c], dim=1))
    return torch.stack(states, dim=1)


def _gru_scan(xw, u, bu, h0):
    """Gates r, z, n as torch.nn.GRU (the recurrent bias inside the reset gate)."""
    h = h0
    out = []
    for t in range(xw.shape[1]):
        xr, xz, xn = xw[:, t].chunk(3, dim=-1)
        hr, hz, hn = (h @ u + bu).chunk(3, dim=-1)
        r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
        n = torch.tanh(xn + r * hn)
        h = (1 - z) * n + z * h
        out.append(h)
    return torch.stack(out, dim=1)


def _rnn_scan(xw, u, h0):
    h = h0
    out = []
    for t in range(xw.shape[1]):
        h = torch.tanh(xw[:, t] + h @ u)
        out.append(h)
    return torch.stack(out, dim=1)


def _pool(fn):
    def run(x, kernel=2, stride=None, padding=0):
        return fn(x, kernel_size=_pair(kernel), stride=_pair(stride or kernel),
                  padding=_pair(padding))  # fmt: skip

    return run


def _conv2d(x, w, stride=1, padding=0, dilation=1, groups=1):
    return F.conv2d(x, w, stride=_pair(stride), padding=_pair(padding),
                    dilation=_pair(dilation), groups=groups)  # fmt: skip


def _pad(x, pads, value=0):
    flat = []
    for before, after in reversed(pads):
        flat += [before, after]
    return F.pad(x, flat, value=value)


def _gelu(x, approximate="none"):
    return F.gelu(x, approximate=approximate)


def _full(shape, value, dtype="f32"):
    return torch.full(tuple(shape), value, dtype=TORCH_DTYPES[dtype])


def _sum_to(x, shape):
    shape = tuple(shape)
    lead = x.dim() - len(shape)
    if lead:
        x = x.sum(dim=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    return x.sum(dim=axes, keepdim=True) if axes else x


OPS = {
    # elementwise
    "neg": torch.neg,
    "exp": torch.exp,
    "log": torch.log,
    "sqrt": torch.sqrt,
    "rsqrt": torch.rsqrt,
    "abs": torch.abs,
    "relu": torch.relu,
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "softplus": F.softplus,
    "sin": torch.sin,
    "cos": torch.cos,
    "square": torch.square,
    "reciprocal": torch.reciprocal,
    "erf": torch.erf,
    "log1p": torch.log1p,
    "gelu": _gelu,
    "leaky_relu": lambda x, alpha=0.01: F.leaky_relu(x, alpha),
    "clip": lambda x, lo=None, hi=None: torch.clamp(x, lo, hi),
    "cast": lambda x, dtype: x.to(TORCH_DTYPES[dtype]),
    "sign": torch.sign,
    "scale": lambda x, c: x * c,
    "add_scalar": lambda x, c: x + c,
    "pow_scalar": lambda x, p: x**p,
    "add": torch.add,
    "sub": torch.sub,
    "mul": torch.mul,
    "div": torch.div,
    "pow": torch.pow,
    "maximum": torch.maximum,
    "minimum": torch.minimum,
    "eq": torch.eq,
    "ne": torch.ne,
    "lt": torch.lt,
    "le": torch.le,
    "gt": torch.gt,
    "ge": torch.ge,
    "logical_and": torch.logical_and,
    "logical_or": torch.logical_or,
    "logical_not": torch.logical_not,
    "where": torch.where,
    # reductions
    "sum": _reduce(torch.sum),
    "mean": _reduce(torch.mean),
    "max": _reduce(torch.amax),
    "min": _reduce(torch.amin),
    "logsumexp": _reduce(torch.logsumexp),
    "var": lambda x, axes=None, keepdims=False: torch.var(
        x, dim=_axes(axes, x.dim()), correction=0, keepdim=keepdims
    ),
    "argmax": lambda x, axis=-1, keepdims=False: torch.argmax(x, dim=axis, keepdim=keepdims),
    "softmax": lambda x, axis=-1: torch.softmax(x, dim=axis),
    "log_softmax": lambda x, axis=-1: torch.log_softmax(x, dim=axis),
    "sum_to": _sum_to,
    # data movement
    "reshape": lambda x, shape: x.reshape(tuple(shape)),
    "transpose": lambda x, perm: x.permute(tuple(perm)),
    "broadcast_to": lambda x, shape: x.broadcast_to(tuple(shape)),
    "slice": _slice,
    "concat": lambda *xs, axis=0: torch.cat(xs, dim=axis),
    "pad": _pad,
    "index": _index,
    # linear algebra, gathers
    "matmul": torch.matmul,
    "gather": lambda table, idx: table[idx],
    "take_along": _take_along,
    "one_hot": lambda idx, depth: F.one_hot(idx, depth).to(torch.float64),
    # sources
    "arange": lambda n, dtype="i64": torch.arange(n, dtype=TORCH_DTYPES[dtype]),
    "zeros_like": lambda x: torch.zeros_like(x),
    "ones_like": lambda x: torch.ones_like(x),
    "full": _full,
    # nn
    "conv2d": _conv2d,
    "max_pool2d": _pool(F.max_pool2d),
    "avg_pool2d": _pool(F.avg_pool2d),
    "lstm_scan": _lstm_scan,
    "gru_scan": _gru_scan,
    "rnn_scan": _rnn_scan,
}


def torch_forward(graph: Graph, feeds: dict, params: dict, env: dict) -> dict:
    """Every node's value as a torch tensor: `feeds` by input name (NumPy arrays),
    `params` by parameter name (torch tensors)."""
    vals: dict[int, torch.Tensor] = {}
    for nid in graph.topo_order():
        node = graph.node(nid)
        dtype = TORCH_DTYPES[node.type.dtype]
        if node.op == "input":
            vals[nid] = torch.as_tensor(np.asarray(feeds[node.attrs["name"]])).to(dtype)
        elif node.op == "param":
            vals[nid] = params[node.attrs["name"]]
        elif node.op == "const":
            vals[nid] = torch.as_tensor(np.asarray(node.attrs["value"])).to(dtype)
        elif node.op in OPS:
            attrs = {k: evaluate_value(v, env) for k, v in node.attrs.items()}
            y = OPS[node.op](*(vals[i] for i in node.inputs), **attrs)
            if y.is_floating_point() or node.type.dtype != "bool":
                y = y.to(dtype)
            vals[nid] = y
        else:
            raise NotImplementedError(f"no PyTorch function for primitive `{node.op}`")
        want = evaluate_shape(node.type.shape, env)
        if tuple(vals[nid].shape) != want:
            raise AssertionError(
                f"node {nid} ({node.op}): shape {tuple(vals[nid].shape)} != {want}"
            )
    return vals


def fix_dropout_masks(graph: Graph) -> tuple[Graph, dict[str, tuple]]:
    """A copy of `graph` whose dropout masks are inputs `mask0`, `mask1`, ...; returns it and
    {mask name: (type, p)}."""
    graph = graph.copy()
    masks = {}
    for nid in graph.topo_order():
        node = graph.node(nid)
        if node.op != "dropout_mask":
            continue
        name = f"mask{len(masks)}"
        t: TensorType = node.type
        new = graph.add("input", (), t, {"name": name, "role": "input"}, node.span, node.scope)
        graph.inputs[name] = new
        graph.replace_uses(nid, new)
        graph.remove(nid)
        masks[name] = (t, node.attrs["p"])
    return graph, masks


def dropout_masks(masks: dict, env: dict, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Inverted-dropout masks (0 or 1/(1-p)) of the shapes `fix_dropout_masks` recorded."""
    out = {}
    for name, (t, p) in masks.items():
        shape = evaluate_shape(t.shape, env)
        keep = rng.random(shape) >= p
        out[name] = keep / (1.0 - p)
        assert math.isfinite(float(out[name].sum()))
    return out
