"""Helpers shared by the primitive declarations: shape rules, attribute forms, kernel glue.

Shape rules treat symbols as free sizes: two dims fit when they are the same polynomial, or
one of them is the constant 1 (broadcasting). `N` against `M` or `N` against `64` does not
fit, because the result type could not be written down for every value of the symbols.
"""

from __future__ import annotations

from dslc.errors import DTypeError, ShapeError, ValueError_
from dslc.ir.dims import Dim, Shape, format_shape, numel, to_dim
from dslc.ir.types import INT_DTYPES, TensorType, is_float

# --- formatting ------------------------------------------------------------------------------


def join_types(types: list[TensorType]) -> str:
    """`f32[N, 4]`, `f32[N, 4] with f32[4]`, `a, b and c` for the messages."""
    names = [str(t) for t in types]
    if len(names) == 2:
        return f"{names[0]} with {names[1]}"
    if len(names) > 2:
        return ", ".join(names[:-1]) + " and " + names[-1]
    return names[0] if names else "()"


# --- attributes ------------------------------------------------------------------------------


def pair(v, what: str, op: str) -> tuple:
    """An int (or Dim) or a pair of them, as a pair."""
    if isinstance(v, (tuple, list)):
        if len(v) != 2:
            raise ValueError_(f"{op}: `{what}` must be one number or two, got {tuple(v)}")
        return tuple(v)
    return (v, v)


def norm_axis(axis: int, rank: int, op: str) -> int:
    if not -rank <= axis < rank:
        raise ShapeError(f"{op}: axis {axis} is out of range for a tensor of rank {rank}")
    return axis % rank


def norm_axes(axes, rank: int, op: str) -> tuple[int, ...]:
    """`None` (all axes), an int, or a sequence of ints -> sorted non-negative axes."""
    if axes is None:
        return tuple(range(rank))
    if isinstance(axes, int):
        axes = (axes,)
    out = sorted({norm_axis(int(a), rank, op) for a in axes})
    if len(out) != len(tuple(axes)):
        raise ShapeError(f"{op}: axes {tuple(axes)} name an axis twice")
    return tuple(out)


# --- type rules ------------------------------------------------------------------------------


def need_float(t: TensorType, op: str) -> None:
    if not is_float(t.dtype):
        raise DTypeError(f"{op} needs a floating-point tensor, got {t}; cast it first")


def need_index(t: TensorType, op: str, what: str = "indices") -> None:
    if t.dtype not in INT_DTYPES:
        raise DTypeError(f"{op}: {what} must be integers (i32 or i64), got {t}")


def need_bool(t: TensorType, op: str) -> None:
    if t.dtype != "bool":
        raise DTypeError(f"{op} needs a bool tensor, got {t}")


def need_numeric(t: TensorType, op: str) -> None:
    if t.dtype == "bool":
        raise DTypeError(f"{op} needs a numeric tensor, got {t}; cast it first")


def same_dtype(types: list[TensorType], op: str) -> str:
    dtypes = {t.dtype for t in types}
    if len(dtypes) > 1:
        raise DTypeError(
            f"{op}: operand types differ: {join_types(types)}; cast one of them to match"
        )
    return types[0].dtype


def broadcast_shapes(types: list[TensorType]) -> Shape:
    """NumPy broadcasting over symbolic dims: equal polynomials, or 1 against anything."""
    rank = max(t.rank for t in types)
    out = []
    for axis in range(rank):
        dims = [t.shape[axis - rank + t.rank] for t in types if axis - rank + t.rank >= 0]
        big = [d for d in dims if d != 1]
        d = big[0] if big else Dim.const(1)
        for other in big[1:]:
            if other != d:
                raise ShapeError(
                    f"cannot broadcast {join_types(types)}: dimension {axis} is {d} vs {other}"
                )
        out.append(d)
    return tuple(out)


def reduced_shape(shape: Shape, axes: tuple[int, ...], keepdims: bool) -> Shape:
    if keepdims:
        return tuple(Dim.const(1) if i in axes else d for i, d in enumerate(shape))
    return tuple(d for i, d in enumerate(shape) if i not in axes)


def count(shape: Shape, axes: tuple[int, ...]) -> Dim:
    return numel(tuple(shape[i] for i in axes))


def shape_str(shape) -> str:
    return format_shape(tuple(to_dim(d) for d in shape))


# --- kernel glue -----------------------------------------------------------------------------


def put(xp, result, out):
    """Return `result`, copied into `out` when a buffer was given."""
    if out is None:
        return result
    xp.copyto(out, result, casting="unsafe")
    return out


def is_cupy(xp) -> bool:
    return getattr(xp, "__name__", "") == "cupy"
