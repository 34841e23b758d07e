"""Primitives: scaled dot-product attention and its backward pass (kind `opaque`).

No `.nn` file names them: the `attention` pass finds the pattern the `attention` layer is
made of (`softmax(where(mask, q @ k^T * scale, fill)) @ v`) and puts one `attention` node
in its place, so the layer stays a block of primitives and autodiff, fusion and the
verifier still see through it. Kernels live in `attention_kernels` (NumPy) and
`attention_numba` (compiled).
"""

from __future__ import annotations

from dslc.errors import ShapeError, ValueError_
from dslc.ir.dims import numel
from dslc.ir.types import TensorType
from dslc.ops import attention_kernels as ak
from dslc.ops.nn import no_second_order
from dslc.ops.registry import primitive
from dslc.ops.rules import broadcast_shapes, need_bool, need_float, same_dtype, shape_str

ATTRS = {"scale": 1.0, "fills": ()}


def _dims(ts, attrs, op, extra=()):
    """(q, k, v, masks) of an attention operand list, checked: q [B, H, T, d], k [B, H, S, d],
    v [B, H, S, e], one mask per fill, each bool and broadcastable to [B, H, T, S], then the
    operands named in `extra`."""
    fills = attrs["fills"]
    if not isinstance(fills, tuple) or not all(isinstance(f, float) for f in fills):
        raise ValueError_(f"{op}: `fills` must be a tuple of floats, got {fills!r}")
    if len(ts) != 3 + len(fills) + len(extra):
        more = "".join(f", {x}" for x in extra)
        raise ShapeError(
            f"{op}: q, k, v, {len(fills)} mask(s) (one per fill){more} needed, "
            f"got {len(ts)} operands"
        )
    q, k, v, masks = ts[0], ts[1], ts[2], ts[3 : 3 + len(fills)]
    for t, what in ((q, "q"), (k, "k"), (v, "v")):
        if t.rank != 4:
            raise ShapeError(f"{op}: {what} must be [B, heads, T, d], got {t}")
    same_dtype([q, k, v], op)
    need_float(q, op)
    bsz, heads, t, d = q.shape
    s = k.shape[2]
    if k.shape != (bsz, heads, s, d):
        raise ShapeError(f"{op}: k must be {shape_str((bsz, heads, s, d))}, got {k}")
    if v.shape[:3] != (bsz, heads, s):
        raise ShapeError(f"{op}: v must be {shape_str((bsz, heads, s))[:-1]}, e], got {v}")
    scores = TensorType((bsz, heads, t, s), "bool")
    for m in masks:
        need_bool(m, op)
        if m.rank > 4 or broadcast_shapes([m, scores]) != scores.shape:
            raise ShapeError(f"{op}: a mask must broadcast to {shape_str(scores.shape)}, got {m}")
    return q, k, v, masks


def _infer(ts, attrs):
    q, k, v, _ = _dims(ts, attrs, "attention")
    bsz, heads, t, _ = q.shape
    return q.with_shape((bsz, t, heads, v.shape[3]))


def _flops(factor):
    def flops(ts, out, attrs):
        q, k, v = ts[0], ts[1], ts[2]
        pairs = numel(q.shape[:3]) * k.shape[2]  # B * H * T * S
        return factor * (2 * pairs * (q.shape[3] + v.shape[3]) + 5 * pairs)

    return flops


def _grad(b, n, g):
    q, k, v, *masks = n.inputs
    qt, kt, vt = b.type_of(q), b.type_of(k), b.type_of(v)
    if kt.shape == qt.shape and vt.shape == qt.shape:
        grads = b.op("attention_grad", q, k, v, *masks, g, **n.attrs)
        out = []
        for i in range(3):
            dx = b.op("index", grads, axis=2, i=i)  # [B, T, H, d]
            out.append(b.op("transpose", dx, perm=(0, 2, 1, 3)))
        return out + [None] * len(masks)
    return _unfused_grad(b, n, g) + [None] * len(masks)


def _unfused_grad(b, n, g):
    """dq, dk, dv from primitives (attention_grad packs the three, so it needs one shape)."""
    q, k, v, *masks = n.inputs
    scale, fills, dt = n.attrs["scale"], n.attrs["fills"], b.type_of(q).dtype

    def swap(x):
        return b.op("transpose", x, perm=(0, 1, 3, 2))

    s = b.op("scale", b.op("matmul", q, swap(k)), c=scale)
    for m, f in zip(masks, fills):
        s = b.op("where", m, s, b.const(f, dt))
    p = b.op("softmax", s, axis=-1)
    go = b.op("transpose", g, perm=(0, 2, 1, 3))
    dv = b.op("matmul", swap(p), go)
    dp = b.op("matmul", go, swap(v))
    row = b.op("sum", b.op("mul", dp, p), axes=(-1,), keepdims=True)
    ds = b.op("mul", p, b.op("sub", dp, row))
    for m in masks:
        ds = b.op("where", m, ds, b.const(0.0, dt))
    ds = b.op("scale", ds, c=scale)
    return [b.op("matmul", ds, k), b.op("matmul", swap(ds), q), dv]


primitive(
    "attention",
    kind="opaque",
    infer=_infer,
    grad=_grad,
    numpy=ak.attention,
    numba="dslc.ops.attention_numba:attention",
    attrs=ATTRS,
    flops=_flops(1),
    doc="(q[B, H, T, d], k[B, H, S, d], v[B, H, S, e], *masks) -> [B, T, H, e]: "
    "softmax(where(mask, q @ k^T * scale, fill)) @ v over the last axis, one mask and fill "
    "per entry of `fills`, applied in order; the result in the layout the heads merge from",
)


def _infer_grad(ts, attrs):
    q, k, v, _ = _dims(ts, attrs, "attention_grad", extra=("the gradient",))
    g = ts[-1]
    bsz, heads, t, d = q.shape
    if k.shape[2] != t or v.shape[3] != d:
        raise ShapeError(
            f"attention_grad: q, k and v must have one shape (self-attention), got {q}, {k}, {v}"
        )
    want = (bsz, t, heads, d)
    if g.shape != want or g.dtype != q.dtype:
        raise ShapeError(
            f"attention_grad: the gradient must be {q.dtype}{shape_str(want)}, got {g}"
        )
    return q.with_shape((bsz, t, 3, heads, d))


primitive(
    "attention_grad",
    kind="opaque",
    infer=_infer_grad,
    grad=no_second_order,
    numpy=ak.attention_grad,
    numba="dslc.ops.attention_numba:attention_grad",
    attrs=ATTRS,
    flops=_flops(3),
    doc="backward of attention: (q, k, v, *masks, g[B, T, H, d]) -> [B, T, 3, H, d]: dq, dk, "
    "dv at index 0, 1, 2 of axis 2, each in attention's result layout (together, the layout "
    "of one [B, T, 3 * H * d] projection's result); the weights are computed again, not stored",
)
