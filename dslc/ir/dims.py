"""Symbolic dimensions: polynomials in named sizes with integer coefficients.

A `Dim` is a sum of terms `c * s1^p1 * s2^p2 ...`. Plain ints are Dims with one constant
term, and compare equal to ints, so shapes may mix both freely. Division is exact or fails.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from fractions import Fraction

Monomial = tuple[tuple[str, int], ...]  # sorted (symbol, power) pairs; () is the constant


def _mono_mul(a: Monomial, b: Monomial) -> Monomial:
    powers = dict(a)
    for s, p in b:
        powers[s] = powers.get(s, 0) + p
    return tuple(sorted((s, p) for s, p in powers.items() if p))


class Dim:
    """An exact polynomial size; immutable and hashable."""

    __slots__ = ("terms", "_hash")

    def __init__(self, terms: Mapping[Monomial, int] | None = None):
        self.terms: dict[Monomial, int] = {m: c for m, c in (terms or {}).items() if c}
        self._hash = hash(frozenset(self.terms.items()))

    # --- constructors -------------------------------------------------------------
    @staticmethod
    def sym(name: str) -> Dim:
        return Dim({((name, 1),): 1})

    @staticmethod
    def const(n: int) -> Dim:
        return Dim({(): int(n)})

    # --- queries ----------------------------------------------------------------
    @property
    def is_const(self) -> bool:
        return all(m == () for m in self.terms)

    @property
    def value(self) -> int:
        """The integer value of a constant Dim; raises if symbolic."""
        if not self.is_const:
            raise ValueError(f"dimension {self} is symbolic")
        return self.terms.get((), 0)

    @property
    def symbols(self) -> set[str]:
        return {s for m in self.terms for s, _ in m}

    @property
    def is_symbol(self) -> bool:
        """True when this Dim is exactly one symbol, like `N`."""
        if len(self.terms) != 1:
            return False
        ((m, c),) = self.terms.items()
        return c == 1 and len(m) == 1 and m[0][1] == 1

    def evaluate(self, env: Mapping[str, int]) -> int:
        """The integer value with every symbol bound by `env`."""
        total = 0
        for m, c in self.terms.items():
            v = c
            for s, p in m:
                v *= env[s] ** p
            total += v
        return total

    def substitute(self, env: Mapping[str, Dim | int]) -> Dim:
        """Replace symbols by Dims (or ints); unbound symbols stay."""
        out = Dim()
        for m, c in self.terms.items():
            term = Dim.const(c)
            for s, p in m:
                base = to_dim(env[s]) if s in env else Dim.sym(s)
                for _ in range(p):
                    term = term * base
            out = out + term
        return out

    # --- arithmetic ---------------------------------------------------------------
    def __add__(self, other: Dim | int) -> Dim:
        o = to_dim(other)
        terms = dict(self.terms)
        for m, c in o.terms.items():
            terms[m] = terms.get(m, 0) + c
        return Dim(terms)

    __radd__ = __add__

    def __neg__(self) -> Dim:
        return Dim({m: -c for m, c in self.terms.items()})

    def __sub__(self, other: Dim | int) -> Dim:
        return self + (-to_dim(other))

    def __rsub__(self, other: Dim | int) -> Dim:
        return to_dim(other) - self

    def __mul__(self, other: Dim | int) -> Dim:
        o = to_dim(other)
        terms: dict[Monomial, int] = {}
        for m1, c1 in self.terms.items():
            for m2, c2 in o.terms.items():
                m = _mono_mul(m1, m2)
                terms[m] = terms.get(m, 0) + c1 * c2
        return Dim(terms)

    __rmul__ = __mul__

    def exact_div(self, other: Dim | int) -> Dim | None:
        """self / other when the quotient is a polynomial with integer coefficients, else None."""
        o = to_dim(other)
        if not o.terms:
            return None
        if len(o.terms) != 1:
            if self == o:
                return Dim.const(1)
            return None
        ((om, oc),) = o.terms.items()
        opow = dict(om)
        terms: dict[Monomial, int] = {}
        for m, c in self.terms.items():
            q = Fraction(c, oc)
            if q.denominator != 1:
                return None
            powers = dict(m)
            for s, p in opow.items():
                if powers.get(s, 0) < p:
                    return None
                powers[s] -= p
            terms[tuple(sorted((s, p) for s, p in powers.items() if p))] = int(q)
        return Dim(terms)

    def __floordiv__(self, other: Dim | int) -> Dim:
        q = self.exact_div(other)
        if q is None:
            raise ValueError(f"{self} is not divisible by {to_dim(other)}")
        return q

    # --- comparison -----------------------------------------------------------------
    def __eq__(self, other: object) -> bool:
        if isinstance(other, int):
            return self.is_const and self.value == other
        if isinstance(other, Dim):
            return self.terms == other.terms
        return NotImplemented

    def __hash__(self) -> int:
        # equal to hash(int) for constants, so {Dim.const(3), 3} has one member
        return hash(self.value) if self.is_const else self._hash

    def __int__(self) -> int:
        return self.value

    def __index__(self) -> int:
        return self.value

    # --- printing --------------------------------------------------------------------
    def __str__(self) -> str:
        if not self.terms:
            return "0"

        def mono_key(item: tuple[Monomial, int]):
            m, _ = item
            return (-sum(p for _, p in m), m)

        parts = []
        for m, c in sorted(self.terms.items(), key=mono_key):
            factors = [s if p == 1 else f"{s}^{p}" for s, p in m]
            if not factors:
                parts.append(str(c))
            elif c == 1:
                parts.append("*".join(factors))
            elif c == -1:
                parts.append("-" + "*".join(factors))
            else:
                parts.append(f"{c}*" + "*".join(factors))
        text = " + ".join(parts)
        return text.replace("+ -", "- ")

    def __repr__(self) -> str:
        return f"Dim({self})"

    def format(self, compact: bool = True, unit: str = "") -> str:
        """Human form with k/M/G suffixes on large coefficients: `1.2M*N*T + 40k*N*T^2`.

        `unit` follows every coefficient, shown even when it is 1: `1.2MB*N + 4B`.
        """
        if not compact:
            return str(self)
        parts = []
        items = sorted(self.terms.items(), key=lambda it: (-sum(p for _, p in it[0]), it[0]))
        for m, c in items:
            factors = [s if p == 1 else f"{s}^{p}" for s, p in m]
            coef = human(c) + unit
            if not factors:
                parts.append(coef)
            elif c == 1 and not unit:
                parts.append("*".join(factors))
            else:
                parts.append(coef + "*" + "*".join(factors))
        return (" + ".join(parts) if parts else "0" + unit).replace("+ -", "- ")


def human(n: int | float) -> str:
    """12345678 -> '12.3M'."""
    a = abs(n)
    for div, suf in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if a >= div:
            v = n / div
            s = f"{v:.1f}" if abs(v) < 100 else f"{v:.0f}"
            return s.rstrip("0").rstrip(".") + suf if "." in s else s + suf
    return str(int(n)) if float(n).is_integer() else f"{n:.3g}"


def to_dim(x: Dim | int) -> Dim:
    if isinstance(x, Dim):
        return x
    if isinstance(x, bool):
        raise TypeError("a bool is not a dimension")
    if isinstance(x, int):
        return Dim.const(x)
    raise TypeError(f"not a dimension: {x!r}")


Shape = tuple[Dim, ...]


def shape_of(dims: Iterable[Dim | int]) -> Shape:
    return tuple(to_dim(d) for d in dims)


def numel(shape: Shape) -> Dim:
    out = Dim.const(1)
    for d in shape:
        out = out * d
    return out


def format_shape(shape: Shape) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def evaluate_shape(shape: Shape, env: Mapping[str, int]) -> tuple[int, ...]:
    return tuple(d.evaluate(env) for d in shape)


def evaluate_value(v, env: Mapping[str, int]):
    """An attribute value with its Dims evaluated, through tuples and lists."""
    if isinstance(v, Dim):
        return v.evaluate(env)
    if isinstance(v, tuple | list):
        return type(v)(evaluate_value(x, env) for x in v)
    return v
