"""The primitive registry, populated by importing each group of primitives."""

from dslc.ops import (  # noqa: F401  (imported for their registrations)
    attention,
    elementwise,
    linalg,
    nn,
    norm,
    random,
    reduce,
    shape,
)
from dslc.ops.registry import NONDIFF, REGISTRY, Primitive, all_primitives, primitive
from dslc.ops.registry import get as get_primitive

__all__ = ["REGISTRY", "Primitive", "NONDIFF", "all_primitives", "primitive", "get_primitive"]
