"""Shape and dtype rules on symbolic shapes, and the wording of their errors."""

from __future__ import annotations

import pytest

from dslc.errors import DTypeError, ShapeError, Span
from dslc.ir.builder import Builder
from dslc.ir.dims import Dim
from dslc.ir.graph import Graph
from dslc.ir.types import TensorType

N, T, B, D = (Dim.sym(s) for s in "NTBD")


@pytest.fixture
def b():
    return Builder(Graph(), span=Span("m.nn", 3, 5))


def inp(b, shape, dtype="f32", name=None):
    return b.input(name or f"x{len(b.graph)}", TensorType(shape, dtype))


def shape(b, nid):
    return b.type_of(nid).shape


def test_broadcast_unifies_symbolic_dims(b):
    x = inp(b, (N, T, 64))
    assert shape(b, b.op("add", x, inp(b, (T, 1)))) == (N, T, 64)
    assert shape(b, b.op("mul", inp(b, (N, 1, 1)), inp(b, (1, T, 64)))) == (N, T, 64)
    assert shape(b, b.op("sub", x, inp(b, ()))) == (N, T, 64)


def test_broadcast_error_names_both_shapes_and_the_dimension(b):
    with pytest.raises(ShapeError) as e:
        b.op("add", inp(b, (N, 64)), inp(b, (N, 10)))
    assert e.value.message == "cannot broadcast f32[N, 64] with f32[N, 10]: dimension 1 is 64 vs 10"
    assert e.value.span == Span("m.nn", 3, 5)


def test_broadcast_of_different_symbols_is_an_error(b):
    with pytest.raises(ShapeError, match=r"dimension 0 is N vs T"):
        b.op("mul", inp(b, (N, 4)), inp(b, (T, 4)))


def test_where_message_lists_three_operands(b):
    with pytest.raises(ShapeError) as e:
        b.op("where", inp(b, (N, 3), "bool"), inp(b, (N, 3)), inp(b, (4,)))
    assert e.value.message == (
        "cannot broadcast bool[N, 3], f32[N, 3] and f32[4]: dimension 1 is 3 vs 4"
    )


def test_operand_dtypes_must_agree(b):
    with pytest.raises(DTypeError) as e:
        b.op("add", inp(b, (N,)), inp(b, (N,), "i64"))
    assert (
        e.value.message
        == "add: operand types differ: f32[N] with i64[N]; cast one of them to match"
    )


def test_float_ops_refuse_integers(b):
    with pytest.raises(DTypeError) as e:
        b.op("exp", inp(b, (N,), "i64"))
    assert e.value.message == "exp needs a floating-point tensor, got i64[N]; cast it first"


def test_matmul_inner_dimension_message(b):
    with pytest.raises(ShapeError) as e:
        b.op("matmul", inp(b, (N, 784)), inp(b, (128, 10)))
    assert (
        e.value.message
        == "matmul: inner dimensions differ: f32[N, 784] @ f32[128, 10] (784 vs 128)"
    )


def test_matmul_symbolic_batch(b):
    q = inp(b, (N, 4, T, 16))
    k = inp(b, (N, 4, 16, T))
    assert shape(b, b.op("matmul", q, k)) == (N, 4, T, T)
    assert shape(b, b.op("matmul", inp(b, (N, T, 8)), inp(b, (8, 3)))) == (N, T, 3)
    assert shape(b, b.op("matmul", inp(b, (8,)), inp(b, (8, 3)))) == (3,)


def test_matmul_flops_are_symbolic(b):
    from dslc.ops import get_primitive

    y = b.op("matmul", inp(b, (N, 784)), inp(b, (784, 128)))
    node = b.graph.node(y)
    ins = [b.type_of(i) for i in node.inputs]
    assert get_primitive("matmul").flops(ins, node.type, node.attrs) == 2 * 784 * 128 * N


def test_reshape_with_symbolic_sizes(b):
    x = inp(b, (B, T, 64))
    assert shape(b, b.op("reshape", x, shape=(B * T, 64))) == (B * T, 64)
    assert shape(b, b.op("reshape", x, shape=(-1, 64))) == (B * T, 64)
    assert shape(b, b.op("reshape", x, shape=(B, T, 4, -1))) == (B, T, 4, 16)
    assert shape(b, b.op("reshape", inp(b, (N, 28, 28)), shape=(N, -1))) == (N, 784)


def test_reshape_errors(b):
    with pytest.raises(ShapeError) as e:
        b.op("reshape", inp(b, (N, 28, 28)), shape=(N, 700))
    assert e.value.message == (
        "cannot reshape f32[N, 28, 28] (784*N elements) to [N, 700] (700*N elements)"
    )
    with pytest.raises(ShapeError) as e:
        b.op("reshape", inp(b, (N, 10)), shape=(-1, 3))
    assert e.value.message == (
        "cannot reshape f32[N, 10] to [-1, 3]: 10*N elements do not divide into rows of 3"
    )
    with pytest.raises(ShapeError, match="only one size may be -1"):
        b.op("reshape", inp(b, (N, 10)), shape=(-1, -1))


def test_slice_lengths_follow_python_semantics(b):
    x = inp(b, (N, T, 64))
    assert shape(b, b.op("slice", x, axis_slices=((1, 0, T, 1),))) == (N, T, 64)
    assert shape(b, b.op("slice", x, axis_slices=((1, 1, None, 1),))) == (N, T - 1, 64)
    assert shape(b, b.op("slice", x, axis_slices=((1, -3, None, 1),))) == (N, 3, 64)
    assert shape(b, b.op("slice", x, axis_slices=((1, None, -1, 1),))) == (N, T - 1, 64)
    assert shape(b, b.op("slice", x, axis_slices=((2, 0, 32, 2),))) == (N, T, 16)
    assert shape(b, b.op("slice", x, axis_slices=((2, None, None, -1),))) == (N, T, 64)
    table = inp(b, (512, 64))
    assert shape(b, b.op("slice", table, axis_slices=((0, 0, T, 1),))) == (T, 64)
    assert shape(b, b.op("slice", table, axis_slices=((0, 500, 1000, 1),))) == (12, 64)
    with pytest.raises(ShapeError) as e:
        b.op("slice", x, axis_slices=((1, 0, None, 2),))
    assert e.value.message == "slice: cannot tell the length of a slice of T with step 2"


def test_index_drops_the_axis(b):
    x = inp(b, (N, T, 64))
    assert shape(b, b.op("index", x, axis=1, i=-1)) == (N, 64)
    with pytest.raises(ShapeError) as e:
        b.op("index", x, axis=2, i=64)
    assert e.value.message == "index 64 is out of range for axis 2 of f32[N, T, 64] (size 64)"


def test_concat_sums_the_axis(b):
    y = b.op("concat", inp(b, (N, T, 8)), inp(b, (N, 1, 8)), axis=1)
    assert shape(b, y) == (N, T + 1, 8)
    with pytest.raises(ShapeError) as e:
        b.op("concat", inp(b, (N, 4)), inp(b, (T, 4)), axis=1)
    assert e.value.message == (
        "concat along axis 1: operand 1 is f32[T, 4] but operand 0 is f32[N, 4]: "
        "dimension 0 is T vs N"
    )


def test_sources_take_dims(b):
    assert b.type_of(b.op("arange", n=T)) == TensorType((T,), "i64")
    assert b.type_of(b.op("full", shape=(N, 2), value=1.0)) == TensorType((N, 2), "f32")


def test_reductions(b):
    x = inp(b, (N, T, 64))
    assert shape(b, b.op("sum", x, axes=(1,))) == (N, 64)
    assert shape(b, b.op("mean", x, axes=(-1,), keepdims=True)) == (N, T, 1)
    assert shape(b, b.op("max", x)) == ()
    assert b.type_of(b.op("argmax", x)) == TensorType((N, T), "i64")
    assert shape(b, b.op("sum_to", x, shape=(T, 1))) == (T, 1)
    with pytest.raises(ShapeError) as e:
        b.op("sum", x, axes=(3,))
    assert e.value.message == "sum: axis 3 is out of range for a tensor of rank 3"
    with pytest.raises(ShapeError) as e:
        b.op("sum_to", x, shape=(64, 1))
    assert e.value.message == "sum_to: f32[N, T, 64] does not broadcast from [64, 1]"


def test_index_primitives_validate_dtypes(b):
    table = inp(b, (1000, 64))
    ids = inp(b, (N, T), "i64")
    assert shape(b, b.op("gather", table, ids)) == (N, T, 64)
    with pytest.raises(DTypeError) as e:
        b.op("gather", table, inp(b, (N, T), "f32"))
    assert e.value.message == "gather: indices must be integers (i32 or i64), got f32[N, T]"
    logits = inp(b, (N, 10))
    assert shape(b, b.op("take_along", logits, inp(b, (N,), "i32"), axis=1)) == (N,)
    with pytest.raises(DTypeError, match="take_along: indices must be integers"):
        b.op("take_along", logits, inp(b, (N,), "bool"), axis=1)
    with pytest.raises(ShapeError) as e:
        b.op("take_along", logits, inp(b, (T,), "i64"), axis=1)
    assert e.value.message == (
        "take_along axis 1: indices i64[T] must have the shape of f32[N, 10] without axis 1, i64[N]"
    )
    assert b.type_of(b.op("one_hot", ids, depth=10)) == TensorType((N, T, 10), "f32")
    with pytest.raises(DTypeError, match="one_hot: indices must be integers"):
        b.op("one_hot", logits, depth=10)


def test_mean_gradient_over_a_symbolic_axis_divides_by_the_size(b):
    from dslc.ops import get_primitive

    x = inp(b, (N, 4))
    y = b.op("mean", x)
    g = inp(b, ())
    (gx,) = get_primitive("mean").grad(b, b.graph.node(y), g)
    assert shape(b, gx) == (N, 4)
    fulls = [n for n in b.graph.nodes() if n.op == "full"]
    assert [f.attrs["value"] for f in fulls] == [4 * N]


def test_dropout_mask_shape(b):
    x = inp(b, (N, T, 64))
    m = b.op("dropout_mask", x, p=0.2, broadcast_axes=(1,))
    assert shape(b, m) == (N, 1, 64)
    from dslc.errors import ValueError_

    with pytest.raises(ValueError_, match=r"dropout: the drop probability must be in \[0, 1\)"):
        b.op("dropout_mask", x, p=1.0)


def test_transpose_refuses_an_axis_past_the_rank(b):
    x = inp(b, (N, T, 4))
    assert shape(b, b.op("transpose", x, perm=(0, -1, 1))) == (N, 4, T)
    with pytest.raises(ShapeError, match=r"not a permutation of the 3 axes"):
        b.op("transpose", x, perm=(0, 1, 5))
