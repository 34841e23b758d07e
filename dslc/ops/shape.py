"""Primitives: data movement (kind `injective`) and sources (kind `source`).

Sizes in attributes may be Dims (`reshape` to `(B*T, d)`, a slice stopping at `T`); kernels
receive them as ints. Slices follow Python semantics; on a symbolic axis a bound is assumed to
lie inside the axis (it is not clamped), and a negative int bound counts from the end.
"""

from __future__ import annotations

from dslc.errors import DTypeError, ShapeError, ValueError_
from dslc.ir.dims import Dim, format_shape, numel, to_dim
from dslc.ir.types import DTYPES, TensorType, np_dtype
from dslc.ops.registry import NONDIFF, primitive, zero_flops
from dslc.ops.rules import norm_axis, put, same_dtype, shape_str

# --- reshape ---------------------------------------------------------------------------------


def _infer_reshape(ts, attrs):
    x = ts[0]
    want = tuple(attrs["shape"])
    holes = [i for i, d in enumerate(want) if isinstance(d, int) and d == -1]
    if len(holes) > 1:
        raise ShapeError(f"reshape: only one size may be -1, got {shape_str(want)}")
    for d in want:
        if isinstance(d, int) and d < -1 or isinstance(d, Dim) and d.is_const and d.value < 0:
            raise ShapeError(f"reshape: negative size in {shape_str(want)}")
    total = numel(x.shape)
    known = numel(tuple(to_dim(d) for i, d in enumerate(want) if i not in holes))
    if holes:
        q = total.exact_div(known) if known != 0 else None
        if q is None:
            raise ShapeError(
                f"cannot reshape {x} to {shape_str(want)}: {total} elements do not divide "
                f"into rows of {known}"
            )
        shape = tuple(q if i in holes else to_dim(d) for i, d in enumerate(want))
    else:
        shape = tuple(to_dim(d) for d in want)
        if known != total:
            raise ShapeError(
                f"cannot reshape {x} ({total} elements) to {shape_str(want)} ({known} elements)"
            )
    return x.with_shape(shape)


def _reshape(xp, x, out=None, shape=()):
    if out is not None and out.flags.c_contiguous and out.size == x.size:
        # one copy straight into the buffer: reshaping a non-contiguous x first would copy
        # it twice (half of a transformer's `reshape` time, measured)
        xp.copyto(out.reshape(x.shape), x, casting="unsafe")
        return out
    return put(xp, xp.reshape(x, tuple(shape)), out)


def _g_reshape(b, n, g):
    return [b.op("reshape", g, shape=b.type_of(n.inputs[0]).shape)]


primitive(
    "reshape",
    kind="injective",
    arity=1,
    infer=_infer_reshape,
    grad=_g_reshape,
    numpy=_reshape,
    attrs={"shape": ()},
    flops=zero_flops,
    doc="same elements in a new shape; one size may be -1",
)

# --- transpose -------------------------------------------------------------------------------


def _perm(perm, rank):
    return tuple(range(rank - 1, -1, -1)) if perm is None else tuple(int(p) for p in perm)


def _infer_transpose(ts, attrs):
    x = ts[0]
    perm = _perm(attrs["perm"], x.rank)
    in_range = all(-x.rank <= p < x.rank for p in perm)  # negative axes count from the end
    if (
        len(perm) != x.rank
        or not in_range
        or sorted(p % x.rank for p in perm) != list(range(x.rank))
    ):
        raise ShapeError(f"transpose: {perm} is not a permutation of the {x.rank} axes of {x}")
    return x.with_shape(tuple(x.shape[p] for p in perm))


def _transpose(xp, x, out=None, perm=None):
    return put(xp, xp.transpose(x, _perm(perm, x.ndim)), out)


def _g_transpose(b, n, g):
    perm = [p % len(n.shape) for p in _perm(n.attrs["perm"], len(n.shape))]
    inv = tuple(sorted(range(len(perm)), key=lambda i: perm[i]))
    return [b.op("transpose", g, perm=inv)]


primitive(
    "transpose",
    kind="injective",
    arity=1,
    infer=_infer_transpose,
    grad=_g_transpose,
    numpy=_transpose,
    attrs={"perm": None},
    flops=zero_flops,
    doc="permute axes (None reverses them)",
)

# --- broadcast_to ----------------------------------------------------------------------------


def _infer_broadcast_to(ts, attrs):
    x = ts[0]
    shape = tuple(to_dim(d) for d in attrs["shape"])
    lead = len(shape) - x.rank
    if lead < 0 or any(d != 1 and d != shape[lead + i] for i, d in enumerate(x.shape)):
        raise ShapeError(f"cannot broadcast {x} to {format_shape(shape)}")
    return x.with_shape(shape)


def _broadcast_to(xp, x, out=None, shape=()):
    return put(xp, xp.broadcast_to(x, tuple(shape)), out)


def _g_broadcast_to(b, n, g):
    return [b.op("sum_to", g, shape=b.type_of(n.inputs[0]).shape)]


primitive(
    "broadcast_to",
    kind="injective",
    arity=1,
    infer=_infer_broadcast_to,
    grad=_g_broadcast_to,
    numpy=_broadcast_to,
    attrs={"shape": ()},
    flops=zero_flops,
)

# --- slice -----------------------------------------------------------------------------------


def _bound(v, length: Dim, default: Dim) -> Dim:
    if v is None:
        return default
    v = to_dim(v)
    if v.is_const and v.value < 0:
        return length + v
    return v


def slice_length(length, start, stop, step, op="slice") -> Dim:
    """The length of `range(length)[start:stop:step]`, symbolically where it can be."""
    if step == 0:
        raise ValueError_(f"{op}: slice step cannot be zero")
    length = to_dim(length)
    bounds = [v for v in (start, stop) if v is not None]
    if length.is_const and all(to_dim(v).is_const for v in bounds):
        s = None if start is None else to_dim(start).value
        e = None if stop is None else to_dim(stop).value
        return Dim.const(len(range(*slice(s, e, step).indices(length.value))))
    if step > 0:
        diff = _bound(stop, length, length) - _bound(start, length, Dim.const(0))
    else:
        diff = _bound(start, length, length - 1) - _bound(stop, length, Dim.const(-1))
    k = abs(step)
    if diff.is_const:
        return Dim.const(max(0, -(-diff.value // k)))
    q = diff.exact_div(k)
    if q is None:
        raise ShapeError(f"{op}: cannot tell the length of a slice of {diff} with step {step}")
    return q


def _infer_slice(ts, attrs):
    x = ts[0]
    shape = list(x.shape)
    seen = set()
    for axis, start, stop, step in attrs["axis_slices"]:
        a = norm_axis(axis, x.rank, "slice")
        if a in seen:
            raise ShapeError(f"slice: axis {axis} is sliced twice")
        seen.add(a)
        shape[a] = slice_length(x.shape[a], start, stop, step)
    return x.with_shape(tuple(shape))


def _index_tuple(ndim, axis_slices):
    idx = [slice(None)] * ndim
    for axis, start, stop, step in axis_slices:
        idx[axis] = slice(start, stop, step)
    return tuple(idx)


def _slice(xp, x, out=None, axis_slices=()):
    return put(xp, x[_index_tuple(x.ndim, axis_slices)], out)


def _g_slice(b, n, g):
    x = n.inputs[0]
    return [b.op("slice_grad", g, shape=b.type_of(x).shape, axis_slices=n.attrs["axis_slices"])]


primitive(
    "slice",
    kind="injective",
    arity=1,
    infer=_infer_slice,
    grad=_g_slice,
    numpy=_slice,
    attrs={"axis_slices": ()},
    flops=zero_flops,
    doc="(axis, start, stop, step) per sliced axis, Python semantics",
)


def _infer_slice_grad(ts, attrs):
    g = ts[0]
    full = TensorType(attrs["shape"], g.dtype)
    sliced = _infer_slice([full], attrs)
    if sliced.shape != g.shape:
        raise ShapeError(f"slice_grad: {g} is not the shape of a slice {sliced} of {full}")
    return full


def _slice_grad(xp, g, out=None, shape=(), axis_slices=()):
    if out is None:
        out = xp.zeros(tuple(shape), dtype=g.dtype)
    else:
        out.fill(0)
    out[_index_tuple(out.ndim, axis_slices)] = g
    return out


def _g_slice_grad(b, n, g):
    return [b.op("slice", g, axis_slices=n.attrs["axis_slices"])]


primitive(
    "slice_grad",
    kind="injective",
    arity=1,
    infer=_infer_slice_grad,
    grad=_g_slice_grad,
    numpy=_slice_grad,
    attrs={"shape": (), "axis_slices": ()},
    flops=zero_flops,
    doc="zeros of `shape` with the operand written into the slice (gradient of slice)",
)

# --- concat ----------------------------------------------------------------------------------


def _infer_concat(ts, attrs):
    if not ts:
        raise ShapeError("concat needs at least one operand")
    dtype = same_dtype(ts, "concat")
    first = ts[0]
    axis = norm_axis(attrs["axis"], first.rank, "concat")
    total = Dim.const(0)
    for k, t in enumerate(ts):
        if t.rank != first.rank:
            raise ShapeError(f"concat: operand {k} is {t}, of rank {t.rank}; operand 0 is {first}")
        for i, (d, e) in enumerate(zip(first.shape, t.shape)):
            if i != axis and d != e:
                raise ShapeError(
                    f"concat along axis {axis}: operand {k} is {t} but operand 0 is {first}: "
                    f"dimension {i} is {e} vs {d}"
                )
        total = total + t.shape[axis]
    shape = list(first.shape)
    shape[axis] = total
    return TensorType(tuple(shape), dtype)


def _concat(xp, *xs, out=None, axis=0):
    return xp.concatenate(xs, axis=axis, out=out)


def _g_concat(b, n, g):
    axis = n.attrs["axis"]
    grads, start = [], Dim.const(0)
    for x in n.inputs:
        t = b.type_of(x)
        a = axis % t.rank
        stop = start + t.shape[a]
        grads.append(b.op("slice", g, axis_slices=((a, start, stop, 1),)))
        start = stop
    return grads


primitive(
    "concat",
    kind="injective",
    arity=None,
    infer=_infer_concat,
    grad=_g_concat,
    numpy=_concat,
    attrs={"axis": 0},
    flops=zero_flops,
    doc="join along `axis`",
)

# --- pad -------------------------------------------------------------------------------------


def _infer_pad(ts, attrs):
    x = ts[0]
    pads = tuple(attrs["pads"])
    if len(pads) != x.rank:
        raise ShapeError(f"pad: {len(pads)} (before, after) pairs for {x} of rank {x.rank}")
    shape = []
    for d, (lo, hi) in zip(x.shape, pads):
        for p in (lo, hi):
            if to_dim(p).is_const and to_dim(p).value < 0:
                raise ShapeError(f"pad: negative padding {tuple(pads)}")
        shape.append(d + lo + hi)
    return x.with_shape(tuple(shape))


def _pad(xp, x, out=None, pads=(), value=0.0):
    if out is None:
        out = xp.empty(tuple(d + lo + hi for d, (lo, hi) in zip(x.shape, pads)), dtype=x.dtype)
    out.fill(value)
    out[tuple(slice(lo, lo + d) for d, (lo, _) in zip(x.shape, pads))] = x
    return out


def _g_pad(b, n, g):
    t = b.type_of(n.inputs[0])
    sl = tuple(
        (a, lo, lo + d, 1)
        for a, (d, (lo, hi)) in enumerate(zip(t.shape, n.attrs["pads"]))
        if to_dim(lo) != 0 or to_dim(hi) != 0
    )
    return [b.op("slice", g, axis_slices=sl) if sl else g]


primitive(
    "pad",
    kind="injective",
    arity=1,
    infer=_infer_pad,
    grad=_g_pad,
    numpy=_pad,
    attrs={"pads": (), "value": 0.0},
    flops=zero_flops,
    doc="(before, after) per axis, filled with `value`",
)

# --- index -----------------------------------------------------------------------------------


def _infer_index(ts, attrs):
    x = ts[0]
    axis = norm_axis(attrs["axis"], x.rank, "index")
    i, d = attrs["i"], x.shape[axis]
    if isinstance(i, int) and d.is_const and not -d.value <= i < d.value:
        raise ShapeError(f"index {i} is out of range for axis {axis} of {x} (size {d})")
    return x.with_shape(x.shape[:axis] + x.shape[axis + 1 :])


def _index(xp, x, out=None, axis=0, i=0):
    return put(xp, x[(slice(None),) * (axis % x.ndim) + (i,)], out)


def _g_index(b, n, g):
    x = n.inputs[0]
    t = b.type_of(x)
    axis, i = n.attrs["axis"] % t.rank, n.attrs["i"]
    kept = b.op("reshape", g, shape=t.shape[:axis] + (1,) + t.shape[axis + 1 :])
    stop = None if isinstance(i, int) and i == -1 else i + 1
    return [b.op("slice_grad", kept, shape=t.shape, axis_slices=((axis, i, stop, 1),))]


primitive(
    "index",
    kind="injective",
    arity=1,
    infer=_infer_index,
    grad=_g_index,
    numpy=_index,
    attrs={"axis": 0, "i": 0},
    flops=zero_flops,
    doc="take position `i` of `axis` and drop the axis",
)

# --- sources ---------------------------------------------------------------------------------


def _need_dtype(dtype, op):
    if dtype not in DTYPES:
        raise DTypeError(f"{op}: unknown dtype {dtype!r}; use one of {', '.join(DTYPES)}")


def _infer_arange(ts, attrs):
    _need_dtype(attrs["dtype"], "arange")
    n = to_dim(attrs["n"])
    if n.is_const and n.value < 0:
        raise ShapeError(f"arange: negative length {n}")
    return TensorType((n,), attrs["dtype"])


def _arange(xp, out=None, n=0, dtype="i64"):
    return put(xp, xp.arange(n, dtype=np_dtype(dtype)), out)


primitive(
    "arange",
    kind="source",
    arity=0,
    infer=_infer_arange,
    grad=NONDIFF,
    numpy=_arange,
    attrs={"n": 0, "dtype": "i64"},
    flops=zero_flops,
    doc="0, 1, ..., n-1",
)


def _infer_full(ts, attrs):
    _need_dtype(attrs["dtype"], "full")
    return TensorType(tuple(attrs["shape"]), attrs["dtype"])


def _full(xp, out=None, shape=(), value=0.0, dtype="f32"):
    if out is None:
        return xp.full(tuple(shape), value, dtype=np_dtype(dtype))
    out.fill(value)
    return out


primitive(
    "full",
    kind="source",
    arity=0,
    infer=_infer_full,
    grad=NONDIFF,
    numpy=_full,
    attrs={"shape": (), "value": 0.0, "dtype": "f32"},
    flops=zero_flops,
    doc="a tensor filled with `value` (which may be a Dim: an element count)",
)


def _like(fill):
    def kernel(xp, x, out=None):
        if out is None:
            return xp.full(x.shape, fill, dtype=x.dtype)
        out.fill(fill)
        return out

    return kernel


primitive(
    "zeros_like",
    kind="source",
    arity=1,
    infer=lambda ts, a: ts[0],
    grad=NONDIFF,
    numpy=_like(0),
    flops=zero_flops,
)
primitive(
    "ones_like",
    kind="source",
    arity=1,
    infer=lambda ts, a: ts[0],
    grad=NONDIFF,
    numpy=_like(1),
    flops=zero_flops,
)
