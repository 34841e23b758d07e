"""Write docs/primitives.md from the registry: `python -m dslc.ops.doc > docs/primitives.md`."""

from __future__ import annotations

import inspect

from dslc.ops import NONDIFF, all_primitives
from dslc.ops.registry import EXPR_FUNCTIONS

KIND_ORDER = ("elementwise", "broadcast", "reduction", "injective", "opaque", "source")

HEADER = """\
# Primitives

The one set of operations every `.nn` model lowers to. Each is declared once in
`dslc/ops/` with its shape rule, gradient rule, NumPy/CuPy kernel, FLOP count and, for
elementwise ones, a scalar expression template for generated kernels. This file is generated
from the registry (`python -m dslc.ops.doc > docs/primitives.md`); a test keeps it current.

Conventions:

- Shapes are symbolic. Two dims fit when they are the same polynomial in the size symbols,
  or (broadcasting) one of them is 1. Operand dtypes must agree; cast explicitly.
- Sizes in attributes may be Dims (`reshape` to `(B*T, d)`, `slice` stopping at `T`,
  `full(value=N)`); the runtime substitutes ints before calling a kernel.
- `axes` is None (all), an int or a tuple; negative axes count from the end. `slice`'s
  `axis_slices` is a tuple of `(axis, start, stop, step)` with Python semantics.
- Gradient: `yes`, `none` (no gradient flows: comparisons, integer results, random
  masks), or `first order` (a backward-only primitive; differentiating it again is an error).
- Kernels: `kernel(xp, *arrays, out=None, **attrs)`; random ones also get `rng=`.
- Expression templates call only: {functions}, and `cast_<dtype>`.

"""


def _grad(p) -> str:
    if p.grad is NONDIFF:
        return "none"
    if p.grad.__name__ == "no_second_order":
        return "first order"
    return "yes"


def _operands(p) -> str:
    if p.arity is None:
        return "x, ... (variadic)"
    params = list(inspect.signature(p.numpy).parameters)[1:]
    names = [n for n in params if n not in ("out", "rng")][: p.arity]
    return ", ".join(names) if names else "-"


def _attrs(p) -> str:
    return ", ".join(f"`{k}={v!r}`" for k, v in p.attrs.items()) or "-"


def render() -> str:
    out = [HEADER.format(functions=" ".join(f"`{f}`" for f in sorted(EXPR_FUNCTIONS)))]
    prims = all_primitives()
    for kind in KIND_ORDER:
        group = [p for p in prims if p.kind == kind]
        if not group:
            continue
        out.append(f"## {kind}\n\n")
        out.append("| name | operands | attributes | gradient | expression | notes |\n")
        out.append("|---|---|---|---|---|---|\n")
        for p in group:
            expr = f"`{p.expr}`".replace("|", "\\|") if p.expr else "-"
            doc = p.doc.replace("|", "\\|") or "-"
            out.append(
                f"| `{p.name}` | {_operands(p)} | {_attrs(p)} | {_grad(p)} | {expr} | {doc} |\n"
            )
        out.append("\n")
    return "".join(out).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(render(), end="")
