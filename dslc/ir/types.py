"""Tensor types: a shape of symbolic dims and an element type."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dslc.ir.dims import Dim, Shape, format_shape, shape_of

DTYPES = {
    "f16": np.float16,
    "f32": np.float32,
    "f64": np.float64,
    "i32": np.int32,
    "i64": np.int64,
    "bool": np.bool_,
}
FLOAT_DTYPES = ("f16", "f32", "f64")
INT_DTYPES = ("i32", "i64")


def is_float(dtype: str) -> bool:
    return dtype in FLOAT_DTYPES


def np_dtype(dtype: str) -> np.dtype:
    return np.dtype(DTYPES[dtype])


def dtype_name(dt) -> str:
    """The dslc name of a NumPy dtype (`float32` -> `f32`)."""
    dt = np.dtype(dt)
    for name, t in DTYPES.items():
        if np.dtype(t) == dt:
            return name
    raise KeyError(str(dt))


@dataclass(frozen=True)
class TensorType:
    """The type of one IR value: `f32[N, 128]`."""

    shape: Shape
    dtype: str = "f32"

    def __post_init__(self):
        object.__setattr__(self, "shape", shape_of(self.shape))
        if self.dtype not in DTYPES:
            raise ValueError(f"unknown dtype {self.dtype}")

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_float(self) -> bool:
        return is_float(self.dtype)

    def with_shape(self, shape) -> TensorType:
        return TensorType(shape_of(shape), self.dtype)

    def with_dtype(self, dtype: str) -> TensorType:
        return TensorType(self.shape, dtype)

    @property
    def symbols(self) -> set[str]:
        out: set[str] = set()
        for d in self.shape:
            out |= d.symbols
        return out

    def __str__(self) -> str:
        return f"{self.dtype}{format_shape(self.shape)}"


def scalar(dtype: str = "f32") -> TensorType:
    return TensorType((), dtype)


__all__ = ["TensorType", "Dim", "DTYPES", "is_float", "np_dtype", "dtype_name", "scalar"]
