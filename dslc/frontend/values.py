"""The values a `.nn` program computes with at compile time.

Numbers, bools, strings, `none`, lists and Dims are ordinary Python values (a Dim that turns
out constant is an int). A `Tensor` is a node of the graph being built, with the chain of
shapes that led to it for error messages. Blocks, layers (blocks with their arguments bound)
and built-in functions are callable values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dslc.errors import Span
from dslc.frontend import ast as A
from dslc.ir.dims import Dim
from dslc.ir.types import TensorType

HIST_LEN = 11  # steps of the shape chain kept for messages


@dataclass(frozen=True)
class Step:
    """One step of a shape chain: `conv2d -> f32[N, 32, 26, 26]`."""

    label: str
    type: TensorType | None
    flag: str = ""  # e.g. 'dense-on-image': a rank-4 tensor went into `dense`
    line: int = 0


@dataclass(frozen=True)
class Tensor:
    nid: int
    type: TensorType
    hist: tuple[Step, ...] = ()

    def then(self, label: str, nid: int, type: TensorType, flag: str = "", line: int = 0):
        """A new tensor one step further along this one's chain."""
        hist = self.hist + (Step(label, type, flag, line),)
        if len(hist) > HIST_LEN:
            hist = hist[:3] + (Step("...", None),) + hist[-(HIST_LEN - 4) :]
            hist = _dedupe_dots(hist)
        return Tensor(nid, type, hist)


def _dedupe_dots(hist):
    out = []
    for s in hist:
        if s.label == "..." and out and out[-1].label == "...":
            continue
        out.append(s)
    return tuple(out)


def chain_text(t: Tensor) -> str:
    """`x: f32[N, 64] -> dense -> f32[N, 128] -> relu -> ...`"""
    parts: list[str] = []
    last = None
    for s in t.hist:
        if s.type is None:
            parts.append(s.label)
            continue
        if not parts:
            parts.append(f"{s.label}: {s.type}")
        elif s.type == last:
            parts.append(s.label)
        else:
            parts.append(f"{s.label} -> {s.type}")
        last = s.type
    return " -> ".join(parts) if parts else str(t.type)


def chain_flags(t: Tensor) -> list[Step]:
    return [s for s in t.hist if s.flag]


@dataclass(frozen=True)
class BlockValue:
    """A block definition, callable; `ns` is the module it was defined in."""

    bdef: A.BlockDef
    ns: Any

    @property
    def name(self) -> str:
        return self.bdef.name


@dataclass(frozen=True)
class Layer:
    """A block with its (non-tensor) arguments bound: `TransformerBlock(d, heads)`."""

    block: BlockValue
    params: tuple[tuple[str, Any], ...]
    label: str
    span: Span
    scope_name: str | None = None  # from `name = "..."`

    @property
    def name(self) -> str:
        return self.block.name


@dataclass(frozen=True)
class Builtin:
    """A built-in function: `sig` lists (name, default) with REQUIRED for required ones."""

    name: str
    sig: tuple[tuple[str, Any], ...]
    fn: Any
    doc: str = ""
    variadic: bool = False  # extra positional arguments go to the first parameter as a list


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED = _Required()


@dataclass(frozen=True)
class Namespace:
    """`prim` (every primitive by its registry name) or an `import ... as m` module."""

    name: str
    members: Any = None  # a function name -> value, or None for prim
    kind: str = "module"


@dataclass(frozen=True)
class InitSpec:
    """A parameter initialiser after the front end has normalised it."""

    name: str
    args: tuple[float, ...] = ()


@dataclass(frozen=True)
class Poison:
    """Stands in for a value whose statement already failed; uses of it stay silent."""

    name: str = ""


@dataclass
class Scope:
    """Names of child scopes already used inside one block activation."""

    used: dict[str, int] = field(default_factory=dict)


def kind_of(v: Any) -> str:
    """A word for the kind of a value, for messages."""
    if isinstance(v, Tensor):
        return f"a tensor {v.type}"
    if isinstance(v, bool):
        return "a bool"
    if isinstance(v, int):
        return "a number"
    if isinstance(v, float):
        return "a number"
    if isinstance(v, Dim):
        return f"a size ({v})"
    if isinstance(v, str):
        return "a string"
    if v is None:
        return "`none`"
    if isinstance(v, list):
        return "a list"
    if isinstance(v, BlockValue):
        return f"the block `{v.name}`"
    if isinstance(v, Layer):
        return f"a layer `{v.label}`"
    if isinstance(v, Builtin):
        return f"the function `{v.name}`"
    if isinstance(v, Namespace):
        return f"the namespace `{v.name}`"
    if isinstance(v, InitSpec):
        return "an initialiser"
    return type(v).__name__


def show(v: Any) -> str:
    """A value as it would be written in a `.nn` file."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    if isinstance(v, str):
        return f'"{v}"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(show(x) for x in v) + "]"
    if isinstance(v, Tensor):
        return str(v.type)
    if isinstance(v, int | float | Dim):
        return str(v)
    return kind_of(v)
