"""Sample operands and attributes for every primitive: the table the generated tests run.

A new primitive without an entry here fails `test_every_primitive_has_a_case`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class Arg:
    """One operand: its shape and the domain its values are drawn from."""

    shape: tuple[int, ...]
    kind: str = "f"  # f: normal, pos: in [0.5, 2], idx: ints in [0, high), bool
    high: int = 0

    def dtype(self, float_dtype: str = "f64") -> str:
        return {"idx": "i64", "bool": "bool"}.get(self.kind, float_dtype)

    def sample(self, rng: np.random.Generator, float_dtype: str = "f64") -> np.ndarray:
        if self.kind == "idx":
            return rng.integers(0, self.high, size=self.shape).astype(np.int64)
        if self.kind == "bool":
            return rng.random(self.shape) < 0.5
        if self.kind == "pos":
            x = rng.uniform(0.5, 2.0, size=self.shape)
        else:
            x = rng.standard_normal(self.shape)
        return x.astype(np.float64 if float_dtype == "f64" else np.float32)


def F(*shape):
    return Arg(shape)


def P(*shape):
    return Arg(shape, "pos")


def I(high, *shape):  # noqa: N802, E743
    return Arg(shape, "idx", high)


def B(*shape):
    return Arg(shape, "bool")


@dataclass
class Case:
    args: tuple[Arg, ...]
    attrs: dict = field(default_factory=dict)
    fd: bool = True  # run the finite-difference check (off for very slow cases only)

    def __str__(self) -> str:
        shapes = ",".join(f"{a.kind}{list(a.shape)}" for a in self.args)
        return f"{shapes}{self.attrs or ''}".replace(" ", "")


def C(*args, fd=True, **attrs) -> Case:
    return Case(tuple(args), attrs, fd)


UNARY = dict.fromkeys(
    ["neg", "exp", "abs", "relu", "tanh", "sigmoid", "softplus", "sin", "cos", "square", "erf",
     "sign"],
    [C(F(3, 4))],
)  # fmt: skip
POSITIVE = dict.fromkeys(["log", "sqrt", "rsqrt", "reciprocal", "log1p"], [C(P(3, 4))])
BINARY = dict.fromkeys(
    ["add", "sub", "mul", "maximum", "minimum", "eq", "ne", "lt", "le", "gt", "ge"],
    [C(F(3, 4), F(4)), C(F(2, 1, 3), F(4, 1)), C(F(), F(2, 3))],
)
REDUCE = dict.fromkeys(
    ["sum", "mean", "max", "min", "var", "logsumexp"],
    [C(F(3, 4)), C(F(3, 4), axes=(1,), keepdims=True), C(F(2, 3, 4), axes=(0, -1))],
)

CASES: dict[str, list[Case]] = {
    **UNARY,
    **POSITIVE,
    **BINARY,
    **REDUCE,
    "gelu": [C(F(3, 4)), C(F(3, 4), approximate="tanh")],
    "leaky_relu": [C(F(3, 4), alpha=0.1)],
    "clip": [C(F(3, 4), lo=-0.5, hi=0.7), C(F(5), hi=0.2)],
    "cast": [C(F(3, 4), dtype="f64"), C(F(3, 4), dtype="i64"), C(F(2), dtype="f32", fd=False)],
    "scale": [C(F(3, 4), c=2.5)],
    "add_scalar": [C(F(3, 4), c=-1.5)],
    "pow_scalar": [C(P(3, 4), p=2.5), C(P(3), p=-1.0)],
    "div": [C(F(3, 4), P(4)), C(F(3, 1), P(1, 4))],
    "pow": [C(P(3, 4), F(4))],
    "logical_and": [C(B(3, 4), B(4))],
    "logical_or": [C(B(3, 4), B(4))],
    "logical_not": [C(B(3, 4))],
    "where": [C(B(3, 4), F(3, 4), F(4)), C(B(4), F(3, 1), F())],
    "argmax": [C(F(3, 4), axis=1), C(F(3, 4), axis=0, keepdims=True)],
    "softmax": [C(F(3, 4)), C(F(3, 4), axis=0)],
    "log_softmax": [C(F(3, 4)), C(F(2, 3, 4), axis=1)],
    "sum_to": [C(F(2, 3, 4), shape=(3, 1)), C(F(3, 4), shape=(4,)), C(F(3, 4), shape=(3, 4))],
    "reshape": [C(F(2, 3, 4), shape=(6, -1)), C(F(2, 3, 4), shape=(24,)), C(F(6), shape=(2, 3))],
    "transpose": [C(F(2, 3, 4), perm=(2, 0, 1)), C(F(2, 3))],
    "broadcast_to": [C(F(3, 1), shape=(2, 3, 4)), C(F(), shape=(2,))],
    "slice": [
        C(F(5, 6), axis_slices=((0, 1, 4, 1), (1, -1, None, -2))),
        C(F(6), axis_slices=((0, None, None, -1),)),
        C(F(4, 7), axis_slices=((1, 1, None, 3),)),
        C(F(4, 7), axis_slices=((-1, -3, 100, 1),)),
    ],
    "slice_grad": [C(F(3, 2), shape=(5, 6), axis_slices=((0, 1, 4, 1), (1, 0, 6, 3)))],
    "concat": [C(F(2, 3), F(2, 1), F(2, 2), axis=1), C(F(1, 3), F(2, 3))],
    "pad": [C(F(2, 3), pads=((1, 0), (2, 1)), value=0.5)],
    "index": [C(F(3, 4), axis=1, i=-1), C(F(3, 4), axis=0, i=1), C(F(2, 3, 4), axis=1, i=2)],
    "arange": [C(n=5), C(n=3, dtype="f32")],
    "full": [C(shape=(2, 3), value=1.5), C(shape=(), value=7, dtype="i64")],
    "zeros_like": [C(F(2, 3))],
    "ones_like": [C(F(2, 3))],
    "matmul": [
        C(F(3, 4), F(4, 5)),
        C(F(2, 3, 4), F(4, 5)),
        C(F(2, 1, 3, 4), F(3, 4, 2)),
        C(F(4), F(4, 5)),
        C(F(2, 3, 4), F(4)),
        C(F(4), F(4)),
    ],
    "gather": [C(F(5, 3), I(5, 2, 4)), C(F(4, 2, 2), I(4, 3))],
    "scatter_add_rows": [C(F(2, 4, 3), I(5, 2, 4), n=5)],
    "take_along": [C(F(3, 5), I(5, 3), axis=-1), C(F(4, 3), I(4, 3), axis=0)],
    "put_along": [C(F(3), I(5, 3), axis=1, n=5), C(F(2, 3), I(4, 2, 3), axis=0, n=4)],
    "one_hot": [C(I(4, 3, 2), depth=4)],
    "conv2d": [
        C(F(2, 3, 5, 6), F(4, 3, 3, 2)),
        C(F(1, 2, 6, 5), F(2, 2, 2, 3), stride=2, padding=(1, 2), dilation=(1, 2)),
        C(F(2, 4, 4, 4), F(6, 2, 3, 3), padding=1, groups=2),
    ],
    "conv2d_grad_input": [
        C(F(2, 4, 3, 5), F(4, 3, 3, 2), in_size=(5, 6)),
        C(F(1, 2, 4, 3), F(2, 2, 2, 3), in_size=(6, 5), stride=2, padding=(1, 2), dilation=(1, 2)),
        C(F(2, 6, 4, 4), F(6, 2, 3, 3), in_size=(4, 4), padding=1, groups=2),
    ],
    "conv2d_grad_weight": [
        C(F(2, 3, 5, 6), F(2, 4, 3, 5), kernel=(3, 2)),
        C(F(1, 2, 6, 5), F(1, 2, 4, 3), kernel=(2, 3), stride=2, padding=(1, 2), dilation=(1, 2)),
        C(F(2, 4, 4, 4), F(2, 6, 4, 4), kernel=(3, 3), padding=1, groups=2),
    ],
    "max_pool2d": [
        C(F(2, 3, 4, 6)),
        C(F(1, 2, 5, 5), kernel=3, stride=2, padding=1),
        C(F(1, 2, 5, 4), kernel=(2, 3), stride=1),
    ],
    "max_pool2d_grad": [C(F(2, 3, 4, 6), F(2, 3, 2, 3), F(2, 3, 2, 3))],
    "avg_pool2d": [C(F(2, 3, 4, 6)), C(F(1, 2, 5, 5), kernel=3, stride=2, padding=1)],
    "avg_pool2d_grad": [
        C(F(2, 3, 2, 3), in_size=(4, 6)),
        C(F(1, 2, 3, 3), in_size=(5, 5), kernel=3, stride=2, padding=1),
    ],
    "lstm_scan": [
        C(F(2, 3, 8), F(2, 8), F(2, 2), F(2, 2)),
        C(F(2, 3, 8), F(2, 8), F(2, 2), F(2, 2), gates=True, fd=False),  # set after autodiff
        C(F(2, 3, 8), F(2, 8), F(2, 2), F(2, 2), F(8)),  # with the bias
    ],
    "lstm_scan_grad": [
        C(F(2, 3, 8), F(2, 8), F(2, 2), F(2, 2), F(2, 3, 2, 2), F(2, 3, 2, 2)),
        C(F(2, 3, 8), F(2, 8), F(2, 2), F(2, 2), F(2, 3, 6, 2), F(2, 3, 2, 2)),  # stored gates
        C(F(2, 3, 8), F(2, 8), F(2, 2), F(2, 2), F(2, 3, 2, 2), F(2, 3, 2, 2), F(8)),  # bias
    ],
    "gru_scan": [C(F(2, 3, 6), F(2, 6), F(6), F(2, 2))],
    "gru_scan_grad": [C(F(2, 3, 6), F(2, 6), F(6), F(2, 2), F(2, 3, 2), F(2, 3, 2))],
    "rnn_scan": [C(F(2, 4, 3), F(3, 3), F(2, 3)), C(F(1, 1, 2), F(2, 2), F(1, 2))],
    "rnn_scan_grad": [C(F(3, 3), F(2, 4, 3), F(2, 4, 3))],
    "attention": [
        C(F(2, 2, 3, 4), F(2, 2, 5, 4), F(2, 2, 5, 3), scale=0.5),  # cross-attention, no mask
        C(F(2, 2, 4, 3), F(2, 2, 4, 3), F(2, 2, 4, 3), B(4, 4), scale=0.7, fills=(-1e9,)),
        C(F(1, 2, 4, 3), F(1, 2, 4, 3), F(1, 2, 4, 3), B(4, 4), B(1, 1, 1, 4), fills=(-1e9, -3.0)),
    ],
    "attention_grad": [
        C(F(2, 2, 4, 3), F(2, 2, 4, 3), F(2, 2, 4, 3), F(2, 4, 2, 3), scale=0.5),
        C(
            F(1, 2, 4, 3),
            F(1, 2, 4, 3),
            F(1, 2, 4, 3),
            B(4, 4),
            B(1, 1, 1, 4),
            F(1, 4, 2, 3),
            fills=(-1e9, -3.0),
        ),  # fmt: skip
    ],
    "layer_norm": [
        C(F(3, 5), F(5), F(5)),
        C(F(2, 3, 4), F(4), F(4), eps=0.1),
    ],
    "layer_norm_grad": [
        C(F(3, 5), F(5), F(3, 5)),
        C(F(2, 3, 4), F(4), F(2, 3, 4), eps=0.1),
    ],
    "dropout_mask": [C(F(3, 4), p=0.3), C(F(2, 3, 4), p=0.5, broadcast_axes=(1,))],
}
