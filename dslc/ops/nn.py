"""Primitives: convolution, pooling and recurrent scans (kind `opaque`), NCHW layout.

`stride`, `padding`, `dilation` and `kernel` take an int or an (h, w) pair; a pool's `stride`
defaults to its kernel. Kernels live in `conv_kernels` and `scan_kernels`.
"""

from __future__ import annotations

from dslc.errors import InternalError, ShapeError, ValueError_
from dslc.ir.dims import Dim, numel, to_dim
from dslc.ir.types import TensorType
from dslc.ops import conv_kernels as ck
from dslc.ops import scan_kernels as sk
from dslc.ops.registry import primitive
from dslc.ops.rules import need_float, pair, same_dtype


def no_second_order(b, node, g):
    """The gradient rule of a backward-only primitive: differentiating it is not supported."""
    raise InternalError(f"`{node.op}` has no gradient rule (no second derivatives of it)")


# --- attribute forms -------------------------------------------------------------------------

CONV_ATTRS = {"stride": 1, "padding": 0, "dilation": 1, "groups": 1}
POOL_ATTRS = {"kernel": 2, "stride": None, "padding": 0}


def _ints(v, what, op, least):
    p = pair(v, what, op)
    for x in p:
        if not isinstance(x, int) or x < least:
            raise ValueError_(f"{op}: `{what}` must be integers >= {least}, got {v}")
    return p


def conv_attrs(attrs, op="conv2d"):
    """Concrete (stride, padding, dilation) pairs and groups from a conv node's attrs."""
    groups = attrs["groups"]
    if not isinstance(groups, int) or groups < 1:
        raise ValueError_(f"{op}: `groups` must be a positive integer, got {groups}")
    return dict(
        stride=_ints(attrs["stride"], "stride", op, 1),
        padding=_ints(attrs["padding"], "padding", op, 0),
        dilation=_ints(attrs["dilation"], "dilation", op, 1),
        groups=groups,
    )


def pool_attrs(attrs, op):
    kernel = _ints(attrs["kernel"], "kernel", op, 1)
    stride = kernel if attrs["stride"] is None else _ints(attrs["stride"], "stride", op, 1)
    padding = _ints(attrs["padding"], "padding", op, 0)
    if any(2 * p > k for p, k in zip(padding, kernel)):
        raise ValueError_(f"{op}: padding {padding} is more than half the kernel {kernel}")
    return dict(kernel=kernel, stride=stride, padding=padding)


def _spatial(size: Dim, k, s, p, d, op, what) -> Dim:
    """Output length of a window of k (dilation d) sliding by s over size + 2p."""
    num = to_dim(size) + 2 * p - d * (k - 1) - 1
    if num.is_const:
        if num.value < 0:
            raise ShapeError(
                f"{op}: the window ({d * (k - 1) + 1}) is larger than the padded {what} "
                f"({to_dim(size) + 2 * p})"
            )
        return Dim.const(num.value // s + 1)
    q = num.exact_div(s)
    if q is None:
        raise ShapeError(
            f"{op}: cannot tell the output {what}: {num} is not known to be a multiple of "
            f"the stride {s}"
        )
    return q + 1


def _need_nchw(t, op, what="the input"):
    if t.rank != 4:
        raise ShapeError(f"{op} expects {what} as [N, C, H, W], got {t}")


# --- conv2d ----------------------------------------------------------------------------------


def _infer_conv2d(ts, attrs):
    x, w = ts
    dtype = same_dtype(ts, "conv2d")
    need_float(x, "conv2d")
    _need_nchw(x, "conv2d")
    if w.rank != 4:
        raise ShapeError(f"conv2d expects a weight [O, C/groups, kh, kw], got {w}")
    a = conv_attrs(attrs)
    groups = a["groups"]
    if x.shape[1] != w.shape[1] * groups:
        raise ShapeError(
            f"conv2d: the input {x} has {x.shape[1]} channels but the weight {w} expects "
            f"{w.shape[1] * groups}"
            + (f" ({w.shape[1]} per group, {groups} groups)" if groups > 1 else "")
        )
    if w.shape[0].exact_div(groups) is None:
        raise ShapeError(f"conv2d: {w.shape[0]} output channels do not split into {groups} groups")
    return TensorType((x.shape[0], w.shape[0]) + _conv_out_hw(x.shape[2:], w.shape[2:], a), dtype)


def _conv_out_hw(hw, khw, a):
    return tuple(
        _spatial(
            hw[k],
            int(khw[k]),
            a["stride"][k],
            a["padding"][k],
            a["dilation"][k],
            "conv2d",
            ("height", "width")[k],
        )
        for k in range(2)
    )


def _conv2d(xp, x, w, out=None, **attrs):
    return ck.conv2d(xp, x, w, out=out, **conv_attrs(attrs))


def _g_conv2d(b, n, g):
    x, w = n.inputs
    xt, wt = b.type_of(x), b.type_of(w)
    dx = b.op("conv2d_grad_input", g, w, in_size=xt.shape[2:], **n.attrs)
    dw = b.op("conv2d_grad_weight", x, g, kernel=wt.shape[2:], **n.attrs)
    return [dx, dw]


def _flops_conv(ts, out, attrs):
    # 2 * N * O * Ho * Wo * (C/groups) * kh * kw
    return 2 * numel(out.shape) * numel(ts[1].shape[1:])


primitive(
    "conv2d",
    kind="opaque",
    arity=2,
    infer=_infer_conv2d,
    grad=_g_conv2d,
    numpy=_conv2d,
    numba="dslc.ops.conv_numba:conv2d",
    attrs=dict(CONV_ATTRS),
    flops=_flops_conv,
    doc="x[N, C, H, W] * w[O, C/groups, kh, kw] (cross-correlation, as torch)",
)


def _infer_conv_grad_input(ts, attrs):
    g, w = ts
    dtype = same_dtype(ts, "conv2d_grad_input")
    _need_nchw(g, "conv2d_grad_input", "the gradient")
    a = conv_attrs(attrs, "conv2d_grad_input")
    hw = tuple(to_dim(d) for d in attrs["in_size"])
    if _conv_out_hw(hw, w.shape[2:], a) != g.shape[2:] or g.shape[1] != w.shape[0]:
        raise ShapeError(f"conv2d_grad_input: {g} is not the output of a conv2d by {w}")
    return TensorType((g.shape[0], w.shape[1] * a["groups"]) + hw, dtype)


def _conv2d_grad_input(xp, g, w, out=None, in_size=(0, 0), **attrs):
    return ck.conv2d_grad_input(xp, g, w, out=out, in_size=tuple(in_size), **conv_attrs(attrs))


def _g_conv2d_grad_input(b, n, gg):
    # the op is g -> conv2d^T(g; w): bilinear in (g, w)
    g, w = n.inputs
    attrs = {k: n.attrs[k] for k in CONV_ATTRS}
    dg = b.op("conv2d", gg, w, **attrs)
    dw = b.op("conv2d_grad_weight", gg, g, kernel=b.type_of(w).shape[2:], **attrs)
    return [dg, dw]


primitive(
    "conv2d_grad_input",
    kind="opaque",
    arity=2,
    infer=_infer_conv_grad_input,
    grad=_g_conv2d_grad_input,
    numpy=_conv2d_grad_input,
    numba="dslc.ops.conv_numba:conv2d_grad_input",
    attrs={**CONV_ATTRS, "in_size": (0, 0)},
    flops=lambda ts, o, a: _flops_conv([o, ts[1]], ts[0], a),
    doc="d conv2d / d x: g[N, O, Ho, Wo], w -> [N, C, H, W] with (H, W) = in_size",
)


def _infer_conv_grad_weight(ts, attrs):
    x, g = ts
    dtype = same_dtype(ts, "conv2d_grad_weight")
    _need_nchw(x, "conv2d_grad_weight")
    _need_nchw(g, "conv2d_grad_weight", "the gradient")
    a = conv_attrs(attrs, "conv2d_grad_weight")
    kh, kw = (to_dim(d) for d in attrs["kernel"])
    groups = a["groups"]
    cg = x.shape[1].exact_div(groups)
    if cg is None or _conv_out_hw(x.shape[2:], (kh, kw), a) != g.shape[2:]:
        raise ShapeError(f"conv2d_grad_weight: {g} is not the output of a conv2d of {x}")
    return TensorType((g.shape[1], cg, kh, kw), dtype)


def _conv2d_grad_weight(xp, x, g, out=None, kernel=(1, 1), **attrs):
    return ck.conv2d_grad_weight(xp, x, g, out=out, kernel=tuple(kernel), **conv_attrs(attrs))


def _g_conv2d_grad_weight(b, n, gw):
    # the op is (x, g) -> sum over images of g (x) cols(x): bilinear in (x, g)
    x, g = n.inputs
    attrs = {k: n.attrs[k] for k in CONV_ATTRS}
    dx = b.op("conv2d_grad_input", g, gw, in_size=b.type_of(x).shape[2:], **attrs)
    dg = b.op("conv2d", x, gw, **attrs)
    return [dx, dg]


primitive(
    "conv2d_grad_weight",
    kind="opaque",
    arity=2,
    infer=_infer_conv_grad_weight,
    grad=_g_conv2d_grad_weight,
    numpy=_conv2d_grad_weight,
    numba="dslc.ops.conv_numba:conv2d_grad_weight",
    attrs={**CONV_ATTRS, "kernel": (1, 1)},
    flops=lambda ts, o, a: 2 * numel(ts[1].shape) * numel(o.shape[1:]),
    doc="d conv2d / d w: x, g[N, O, Ho, Wo] -> [O, C/groups, kh, kw]",
)

# --- pooling ---------------------------------------------------------------------------------


def _pool_out(x, attrs, op):
    a = pool_attrs(attrs, op)
    hw = tuple(
        _spatial(
            x.shape[2 + k],
            a["kernel"][k],
            a["stride"][k],
            a["padding"][k],
            1,
            op,
            ("height", "width")[k],
        )
        for k in range(2)
    )
    return x.shape[:2] + hw


def _infer_pool(op):
    def infer(ts, attrs):
        (x,) = ts
        need_float(x, op)
        _need_nchw(x, op)
        return x.with_shape(_pool_out(x, attrs, op))

    return infer


def _pool_flops(ts, out, attrs):
    k = pair(attrs["kernel"], "kernel", "pool")
    return numel(out.shape) * k[0] * k[1]


def _max_pool2d(xp, x, out=None, **attrs):
    return ck.max_pool2d(xp, x, out=out, **pool_attrs(attrs, "max_pool2d"))


def _g_max_pool2d(b, n, g):
    return [b.op("max_pool2d_grad", n.inputs[0], n.id, g, **n.attrs)]


primitive(
    "max_pool2d",
    kind="opaque",
    arity=1,
    infer=_infer_pool("max_pool2d"),
    grad=_g_max_pool2d,
    numpy=_max_pool2d,
    numba="dslc.ops.pool_numba:max_pool2d",
    attrs=dict(POOL_ATTRS),
    flops=_pool_flops,
    doc="max over kernel windows; padding counts as -inf",
)


def _infer_max_pool_grad(ts, attrs):
    x, y, g = ts
    same_dtype(ts, "max_pool2d_grad")
    _need_nchw(x, "max_pool2d_grad")
    if y.shape != _pool_out(x, attrs, "max_pool2d_grad") or g.shape != y.shape:
        raise ShapeError(f"max_pool2d_grad: {y} and {g} are not the pooled shape of {x}")
    return x


def _max_pool2d_grad(xp, x, y, g, out=None, **attrs):
    return ck.max_pool2d_grad(xp, x, y, g, out=out, **pool_attrs(attrs, "max_pool2d_grad"))


primitive(
    "max_pool2d_grad",
    kind="opaque",
    arity=3,
    infer=_infer_max_pool_grad,
    grad=no_second_order,
    numpy=_max_pool2d_grad,
    numba="dslc.ops.pool_numba:max_pool2d_grad",
    attrs=dict(POOL_ATTRS),
    flops=lambda ts, o, a: _pool_flops([o], ts[1], a),
    doc="(x, y, g): g routed to the first maximum of each window",
)


def _avg_pool2d(xp, x, out=None, **attrs):
    return ck.avg_pool2d(xp, x, out=out, **pool_attrs(attrs, "avg_pool2d"))


def _g_avg_pool2d(b, n, g):
    return [b.op("avg_pool2d_grad", g, in_size=b.type_of(n.inputs[0]).shape[2:], **n.attrs)]


primitive(
    "avg_pool2d",
    kind="opaque",
    arity=1,
    infer=_infer_pool("avg_pool2d"),
    grad=_g_avg_pool2d,
    numpy=_avg_pool2d,
    attrs=dict(POOL_ATTRS),
    flops=_pool_flops,
    doc="mean over kernel windows; padding counts as 0 (count_include_pad)",
)


def _infer_avg_pool_grad(ts, attrs):
    (g,) = ts
    _need_nchw(g, "avg_pool2d_grad", "the gradient")
    x = g.with_shape(g.shape[:2] + tuple(to_dim(d) for d in attrs["in_size"]))
    if _pool_out(x, attrs, "avg_pool2d_grad") != g.shape:
        raise ShapeError(f"avg_pool2d_grad: {g} is not the pooled shape of {x}")
    return x


def _avg_pool2d_grad(xp, g, out=None, in_size=(0, 0), **attrs):
    return ck.avg_pool2d_grad(
        xp, g, out=out, in_size=tuple(in_size), **pool_attrs(attrs, "avg_pool2d_grad")
    )


def _g_avg_pool2d_grad(b, n, gg):
    # linear: the adjoint of the adjoint of pooling is pooling
    return [b.op("avg_pool2d", gg, **{k: n.attrs[k] for k in POOL_ATTRS})]


primitive(
    "avg_pool2d_grad",
    kind="opaque",
    arity=1,
    infer=_infer_avg_pool_grad,
    grad=_g_avg_pool2d_grad,
    numpy=_avg_pool2d_grad,
    attrs={**POOL_ATTRS, "in_size": (0, 0)},
    flops=lambda ts, o, a: _pool_flops([o], ts[0], a),
    doc="d avg_pool2d / d x: g -> [N, C, H, W] with (H, W) = in_size",
)

# --- recurrent scans -------------------------------------------------------------------------


def _expect(t, shape, op, what):
    want = TensorType(shape, t.dtype)
    if t.shape != want.shape:
        raise ShapeError(f"{op}: {what} must be {want}, got {t}")


def _scan_dims(xw, u, k, op):
    """B, T, H of a scan whose projected input xw is [B, T, k*H] and u is [H, k*H]."""
    need_float(xw, op)
    if xw.rank != 3:
        raise ShapeError(f"{op}: the projected input must be [B, T, {k}*H], got {xw}")
    if u.rank != 2:
        raise ShapeError(f"{op}: the recurrent weight must be [H, {k}*H], got {u}")
    h = u.shape[0]
    _expect(u, (h, k * h), op, "the recurrent weight")
    _expect(xw, (xw.shape[0], xw.shape[1], k * h), op, f"the projected input for H = {h}")
    return xw.shape[0], xw.shape[1], h


def _infer_lstm(ts, attrs):
    if len(ts) not in (4, 5):
        raise ShapeError(f"lstm_scan takes xw, u, h0, c0 and an optional bias, got {len(ts)}")
    xw, u, h0, c0 = ts[:4]
    same_dtype(ts, "lstm_scan")
    bsz, steps, h = _scan_dims(xw, u, 4, "lstm_scan")
    _expect(h0, (bsz, h), "lstm_scan", "the initial state h0")
    _expect(c0, (bsz, h), "lstm_scan", "the initial cell c0")
    if len(ts) == 5:
        _expect(ts[4], (4 * h,), "lstm_scan", "the bias")
    return xw.with_shape((bsz, steps, 6 if attrs.get("gates") else 2, h))


def _scan_flops(factor=1):
    """One [B, H] @ [H, kH] GEMM per step plus the gate math; backward does twice that."""

    def flops(ts, out, attrs):
        xw, u = ts[0], ts[1]
        return factor * (2 * numel(xw.shape) * u.shape[0] + 10 * numel(xw.shape))

    return flops


def prev_states(b, h0, seq, bsz, steps, h):
    """[B, T, H]: the state entering each step (h0, then seq[:, :T-1])."""
    first = b.op("reshape", h0, shape=(bsz, 1, h))
    rest = b.op("slice", seq, axis_slices=((1, 0, steps - 1, 1),))
    return b.op("concat", first, rest, axis=1)


def weight_grad(b, hprev, dpre, bsz, steps, h, width):
    """sum over b, t of hprev[b, t]^T dpre[b, t]: one GEMM over all steps."""
    hp = b.op("reshape", hprev, shape=(bsz * steps, h))
    dp = b.op("reshape", dpre, shape=(bsz * steps, width))
    return b.op("matmul", b.op("transpose", hp, perm=(1, 0)), dp)


def _g_lstm(b, n, g):
    if n.attrs.get("gates"):
        raise InternalError(
            "lstm_scan with gates=true has no gradient rule: the scan_gates pass sets it "
            "after autodiff, on scans whose backward is already built"
        )
    xw, u, h0, c0 = n.inputs[:4]
    bias = n.inputs[4:]
    bsz, steps, _, h = n.shape
    grads = b.op("lstm_scan_grad", xw, u, h0, c0, n.id, g, *bias)  # [B*T + B, 4H]
    rows = bsz * steps
    dxw = b.op("slice", grads, axis_slices=((0, 0, rows, 1),))
    dxw = b.op("reshape", dxw, shape=(bsz, steps, 4 * h))
    last = b.op("slice", grads, axis_slices=((0, rows, rows + bsz, 1),))
    dh0 = b.op("slice", last, axis_slices=((1, 0, h, 1),))
    dc0 = b.op("slice", last, axis_slices=((1, h, 2 * h, 1),))
    hs = b.op("index", n.id, axis=2, i=0)
    du = weight_grad(b, prev_states(b, h0, hs, bsz, steps, h), dxw, bsz, steps, h, 4 * h)
    if bias:  # added to every step's pre-activation: the sum of d xw over batch and steps
        return [dxw, du, dh0, dc0, b.op("sum_to", dxw, shape=(4 * h,))]
    return [dxw, du, dh0, dc0]


primitive(
    "lstm_scan",
    kind="opaque",
    arity=None,
    infer=_infer_lstm,
    grad=_g_lstm,
    numpy=lambda xp, xw, u, h0, c0, *bias, out=None, gates=False: sk.lstm_scan(
        xp, xw, u, h0, c0, *bias, out=out, gates=gates
    ),
    numba="dslc.ops.scan_numba:lstm_scan",
    attrs={"gates": False},
    flops=_scan_flops(),
    doc="(xw[B, T, 4H], u[H, 4H], h0, c0[, bias[4H]]) -> [B, T, 2, H]: h and c of every step; "
    "gates i, f, g, o of xw + bias + h @ u (the bias added in the step's loop). With "
    "gates=true, [B, T, 6, H]: h, c and the activated gates, which lstm_scan_grad then reads "
    "instead of computing them again (the `scan_gates` pass sets it)",
)


def _infer_lstm_grad(ts, attrs):
    if len(ts) not in (6, 7):
        raise ShapeError(
            f"lstm_scan_grad takes xw, u, h0, c0, y, g and an optional bias, got {len(ts)}"
        )
    xw, u, h0, c0, y, g = ts[:6]
    out = _infer_lstm(ts[:4] + ts[6:], {})
    if y.rank == 4 and y.shape[2] == 6:
        b, t, _, h = out.shape
        _expect(y, (b, t, 6, h), "lstm_scan_grad", "the states and gates")
    else:
        _expect(y, out.shape, "lstm_scan_grad", "the states")
    _expect(g, out.shape, "lstm_scan_grad", "the gradient")
    bsz, steps, h4 = xw.shape
    return xw.with_shape((bsz * steps + bsz, h4))


primitive(
    "lstm_scan_grad",
    kind="opaque",
    arity=None,
    infer=_infer_lstm_grad,
    grad=no_second_order,
    numpy=lambda xp, xw, u, h0, c0, y, g, *bias, out=None: sk.lstm_scan_grad(
        xp, xw, u, h0, c0, y, g, *bias, out=out
    ),
    numba="dslc.ops.scan_numba:lstm_scan_grad",
    flops=_scan_flops(2),
    doc="BPTT of lstm_scan: (xw, u, h0, c0, y, g[, bias]) -> [B*T + B, 4H]: d xw[b, t] in row "
    "b*T + t, then [dh0, dc0, 0, 0] per batch row; y is lstm_scan's value, with or without "
    "the gates",
)


def _infer_gru(ts, attrs):
    xw, u, bu, h0 = ts
    same_dtype(ts, "gru_scan")
    bsz, steps, h = _scan_dims(xw, u, 3, "gru_scan")
    _expect(bu, (3 * h,), "gru_scan", "the recurrent bias")
    _expect(h0, (bsz, h), "gru_scan", "the initial state h0")
    return xw.with_shape((bsz, steps, h))


def _g_gru(b, n, g):
    xw, u, bu, h0 = n.inputs
    bsz, steps, h = n.shape
    grads = b.op("gru_scan_grad", xw, u, bu, h0, n.id, g)
    body = b.op("slice", grads, axis_slices=((1, 0, steps, 1),))
    dxw = b.op("index", body, axis=2, i=0)
    dhu = b.op("index", body, axis=2, i=1)
    last = b.op("index", b.op("index", grads, axis=1, i=-1), axis=1, i=0)
    dh0 = b.op("slice", last, axis_slices=((1, 0, h, 1),))
    du = weight_grad(b, prev_states(b, h0, n.id, bsz, steps, h), dhu, bsz, steps, h, 3 * h)
    dbu = b.op("sum", dhu, axes=(0, 1))
    return [dxw, du, dbu, dh0]


primitive(
    "gru_scan",
    kind="opaque",
    arity=4,
    infer=_infer_gru,
    grad=_g_gru,
    numpy=lambda xp, xw, u, bu, h0, out=None: sk.gru_scan(xp, xw, u, bu, h0, out=out),
    numba="dslc.ops.scan_numba:gru_scan",
    flops=_scan_flops(),
    doc="(xw[B, T, 3H], u[H, 3H], bu[3H], h0) -> [B, T, H]; gates r, z, n as torch",
)


def _infer_gru_grad(ts, attrs):
    xw, u, bu, h0, y, g = ts
    out = _infer_gru(ts[:4], attrs)
    _expect(y, out.shape, "gru_scan_grad", "the states")
    _expect(g, out.shape, "gru_scan_grad", "the gradient")
    bsz, steps, h3 = xw.shape
    return xw.with_shape((bsz, steps + 1, 2, h3))


primitive(
    "gru_scan_grad",
    kind="opaque",
    arity=6,
    infer=_infer_gru_grad,
    grad=no_second_order,
    numpy=lambda xp, xw, u, bu, h0, y, g, out=None: sk.gru_scan_grad(
        xp, xw, u, bu, h0, y, g, out=out
    ),
    numba="dslc.ops.scan_numba:gru_scan_grad",
    flops=_scan_flops(2),
    doc="BPTT of gru_scan -> [B, T+1, 2, 3H]: per step d xw and d(h @ u + bu); "
    "dh0 in [:, T, 0, :H]",
)


def _infer_rnn(ts, attrs):
    xw, u, h0 = ts
    same_dtype(ts, "rnn_scan")
    bsz, steps, h = _scan_dims(xw, u, 1, "rnn_scan")
    _expect(h0, (bsz, h), "rnn_scan", "the initial state h0")
    return xw


def _g_rnn(b, n, g):
    xw, u, h0 = n.inputs
    bsz, steps, h = n.shape
    grads = b.op("rnn_scan_grad", u, n.id, g)
    dxw = b.op("slice", grads, axis_slices=((1, 0, steps, 1),))
    dh0 = b.op("index", grads, axis=1, i=-1)
    du = weight_grad(b, prev_states(b, h0, n.id, bsz, steps, h), dxw, bsz, steps, h, h)
    return [dxw, du, dh0]


primitive(
    "rnn_scan",
    kind="opaque",
    arity=3,
    infer=_infer_rnn,
    grad=_g_rnn,
    numpy=lambda xp, xw, u, h0, out=None: sk.rnn_scan(xp, xw, u, h0, out=out),
    numba="dslc.ops.scan_numba:rnn_scan",
    flops=_scan_flops(),
    doc="(xw[B, T, H], u[H, H], h0) -> [B, T, H], tanh",
)


def _infer_rnn_grad(ts, attrs):
    u, y, g = ts
    same_dtype(ts, "rnn_scan_grad")
    if y.rank != 3 or g.shape != y.shape or u.shape != (y.shape[2], y.shape[2]):
        raise ShapeError(f"rnn_scan_grad: {u}, {y} and {g} do not fit together")
    return y.with_shape((y.shape[0], y.shape[1] + 1, y.shape[2]))


primitive(
    "rnn_scan_grad",
    kind="opaque",
    arity=3,
    infer=_infer_rnn_grad,
    grad=no_second_order,
    numpy=lambda xp, u, y, g, out=None: sk.rnn_scan_grad(xp, u, y, g, out=out),
    numba="dslc.ops.scan_numba:rnn_scan_grad",
    flops=lambda ts, o, a: 2 * numel(o.shape) * o.shape[2],
    doc="BPTT of rnn_scan: (u, y, g) -> [B, T+1, H]: d xw per step, then dh0",
)
