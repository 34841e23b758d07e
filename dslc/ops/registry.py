"""The one registry of primitives: each declared once with all of its rules side by side.

A primitive is a record (JAX's `exp_p` with its rules next to it):

  name     the same name in `.nn` files, the IR, the docs (`matmul`)
  kind     fusion kind, read by the fusion pass (never op names):
           elementwise  same-shape map            (relu, exp, cast)
           broadcast    map with numpy broadcasting (add, mul, where)
           injective    pure data movement        (reshape, transpose, slice, concat)
           reduction    reduces axes              (sum, mean, max, softmax-like rows)
           opaque       anything else             (matmul, conv2d, gather, lstm_scan)
           source       no inputs or randomness   (random_mask, iota)
  infer    (in_types: list[TensorType], attrs: dict) -> TensorType; raises ShapeError or
           DTypeError *without* a span (the Builder attaches the node's span)
  grad     (b: Builder, node: Node, g: int) -> list[int | None], one entry per operand: the
           id of d(loss)/d(operand) given g = d(loss)/d(node). The result may keep the
           *broadcast* output shape; autodiff reduces it to the operand's shape with
           `sum_to`. `None` means no gradient flows to that operand. Use `NONDIFF` for
           primitives with no gradient at all (integer outputs, comparisons).
  numpy    kernel(xp, *arrays, out=None, **attrs) -> array. `xp` is numpy or cupy; when
           `out` is given the kernel writes its result there (and returns it). Kernels of
           primitives with `random=True` also receive `rng=` (an xp random Generator).
  flops    (in_types, out_type, attrs) -> Dim: floating-point operations, symbolic
  numba    optional "module:function" of a compiled CPU kernel with the `numpy` kernel's
           signature, run instead of it when generated kernels are on (`kernels="numba"`);
           imported only then, so the core never needs numba (the recurrent scans)
  expr     for elementwise/broadcast ops: a template of the scalar expression with
           `{0}`, `{1}`... for operands and `{attr_name}` for attributes, in a C-like
           syntax that prints as Python (Numba) and CUDA C alike, e.g. "max({0}, 0)";
           None when the op cannot be fused into generated code. Templates call only
           the functions in EXPR_FUNCTIONS: exp log log1p sqrt tanh erf sin cos abs sign
           max min pow where(c, a, b), and cast_<dtype>(v) (cast_f32, cast_i64...).
           Literals are written as floats (`0.0`); a code generator may retype them, and
           prints attribute values as literals of its language (inf included).
  attrs    allowed attributes and their defaults; any other keyword is an error
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dslc.errors import InternalError
from dslc.ir.dims import Dim, numel
from dslc.ir.types import TensorType

EXPR_FUNCTIONS = frozenset(
    "exp log log1p sqrt tanh erf sin cos abs sign max min pow where".split()
)  # plus cast_<dtype>; code generators define each for Python (Numba) and CUDA C

KINDS = ("elementwise", "broadcast", "injective", "reduction", "opaque", "source")


def NONDIFF(b, node, g):  # noqa: N802 - a sentinel that reads like a constant
    """Marks a primitive through which no gradient flows."""
    return [None] * len(node.inputs)


def elementwise_flops(in_types, out_type, attrs) -> Dim:
    return numel(out_type.shape)


def zero_flops(in_types, out_type, attrs) -> Dim:
    return Dim.const(0)


@dataclass(frozen=True)
class Primitive:
    name: str
    kind: str
    infer: Callable[[list[TensorType], dict], TensorType]
    grad: Callable
    numpy: Callable
    arity: int | None = None  # None: variadic
    attrs: dict[str, Any] = field(default_factory=dict)
    flops: Callable = elementwise_flops
    expr: str | None = None
    numba: str | None = None
    random: bool = False
    doc: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InternalError(f"primitive {self.name}: unknown kind {self.kind!r}")
        for rule in ("infer", "grad", "numpy"):
            if not callable(getattr(self, rule)):
                raise InternalError(f"primitive {self.name}: missing {rule} rule")


REGISTRY: dict[str, Primitive] = {}


def register(prim: Primitive) -> Primitive:
    """Add a primitive; a second declaration of the same name is a bug."""
    if prim.name in REGISTRY:
        raise InternalError(f"primitive {prim.name} declared twice")
    REGISTRY[prim.name] = prim
    return prim


def primitive(name: str, **kw) -> Primitive:
    """Declare and register a primitive in one statement."""
    return register(Primitive(name=name, **kw))


def get(name: str) -> Primitive:
    try:
        return REGISTRY[name]
    except KeyError:
        raise InternalError(f"no primitive named {name!r}") from None


def all_primitives() -> list[Primitive]:
    return sorted(REGISTRY.values(), key=lambda p: p.name)
