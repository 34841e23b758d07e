"""Wrong programs: each asserts the error class, file:line:col and the wording of the message.

Every case is a whole `.nn` file; `where` is (line, col) of the reported span; `says` are
substrings of the message; `hint` (optional) a substring of the hint or a note.
"""

from __future__ import annotations

import textwrap

import pytest

from dslc.errors import (
    ArgumentError,
    AssertionFailed,
    ConfigError,
    DslcError,
    DTypeError,
    ErrorList,
    NameError_,
    ShapeError,
    SyntaxError_,
    ValueError_,
    render,
)
from dslc.frontend import check, load_program

MLP = """
model M(hidden = 16) {
    input x: f32[N, 8]
    label y: i64[N]
    %s
}
"""


def body(*lines: str) -> str:
    """A model M(hidden = 16) with x: f32[N, 8] and y: i64[N]; the lines start at line 4."""
    return MLP % "\n    ".join(lines)


CASES = [
    # --- syntax -----------------------------------------------------------------------------
    (
        "missing_paren",
        body("h = x |> dense(10", "output h"),
        SyntaxError_,
        (5, 5),
        ["unexpected `output`", "expected `)` or `,`"],
        "bracket opened on an earlier line",
    ),
    (
        "unclosed_brace",
        "model M {\n    input x: f32[N, 4]\n",
        SyntaxError_,
        (2, 23),
        ["unexpected end of file", "`}`"],
        "never closed",
    ),
    (
        "assign_in_assert",
        body("assert 3 = 3"),
        SyntaxError_,
        (4, 14),
        ["unexpected `=`"],
        "use `==` to compare",
    ),
    (
        "bad_character",
        "model M {\n    input x: f32[N, $4]\n}\n",
        SyntaxError_,
        (2, 21),
        ["unexpected character `$`", "expected an expression"],
        None,
    ),
    (
        "unterminated_string",
        body('assert true, "oops'),
        SyntaxError_,
        (4, 18),
        ["unterminated string"],
        None,
    ),
    (
        "def_keyword",
        "def f(x) {\n}\n",
        SyntaxError_,
        (1, 1),
        ["unexpected `def`", "expected `block`, `import`, `model`, `train`"],
        "definitions start with",
    ),
    (
        "missing_type",
        body("param w = ones"),
        SyntaxError_,
        (4, 13),
        ["unexpected `=`", "`:`"],
        None,
    ),
    (
        "keyword_as_name",
        body("loss = 3"),
        SyntaxError_,
        (4, 10),
        ["unexpected `=`", "expected an expression"],
        None,
    ),
    (
        "two_ellipsis_subscripts",
        body("h = x[..., ...]", "output h"),
        ValueError_,
        (4, 9),
        ["`...` only once"],
        None,
    ),
    # --- names ------------------------------------------------------------------------------
    (
        "unknown_name",
        body("h = x |> dense(hiden)", "output h"),
        NameError_,
        (4, 20),
        ["unknown name `hiden`"],
        "did you mean `hidden`?",
    ),
    (
        "unknown_layer",
        body("h = x |> dens(10)", "output h"),
        NameError_,
        (4, 14),
        ["unknown name `dens`"],
        "did you mean `dense`?",
    ),
    (
        "use_before_definition",
        body("output h", "h = x"),
        NameError_,
        (4, 5),
        ["unknown name `h`"],
        None,
    ),
    (
        "assign_hyperparameter",
        body("hidden = 3"),
        NameError_,
        (4, 5),
        ["`hidden` is a hyper-parameter and cannot be assigned"],
        "let hidden2",
    ),
    (
        "let_twice",
        body("let a = 1", "let a = 2"),
        NameError_,
        (5, 5),
        ["`a` is already defined"],
        None,
    ),
    (
        "output_twice",
        body("output x", "output x"),
        NameError_,
        (5, 5),
        ["output `x` is declared twice"],
        None,
    ),
    (
        "loss_twice",
        body("loss mean(x)", "loss mean(x)"),
        NameError_,
        (5, 5),
        ["a model has one `loss`"],
        None,
    ),
    (
        "input_twice",
        body("input x: f32[N, 8]"),
        NameError_,
        (4, 5),
        ["input `x` is declared twice"],
        None,
    ),
    (
        "block_twice",
        "block B() (x: f32[N]) { return x }\nblock B() (x: f32[N]) { return x }\n"
        "model M { input x: f32[N]\n output y = x |> B }\n",
        NameError_,
        (2, 1),
        ["`B` is defined twice in this file"],
        "first defined at",
    ),
    (
        "no_model",
        "block B() (x: f32[N]) { return x }\n",
        NameError_,
        (1, 1),
        ["defines no model"],
        None,
    ),
    (
        "train_unknown_model",
        body("output x") + "train Mm { epochs 1 }\n",
        NameError_,
        (6, 1),
        ["`train Mm` names no model"],
        "did you mean `M`?",
    ),
    (
        "unknown_prim",
        body("h = prim.matmull(x, x)", "output h"),
        NameError_,
        (4, 9),
        ["there is no primitive `matmull`"],
        "prim.matmul",
    ),
    (
        "prim_layer_norm_gamma",
        body("h = prim.layer_norm(x, x, x)", "output h"),
        ShapeError,
        (4, 9),
        ["layer_norm: gamma must be [8], got f32[N, 8]"],
        None,
    ),
    (
        "prim_attention_rank",
        body("h = prim.attention(x, x, x)", "output h"),
        ShapeError,
        (4, 9),
        ["attention: q must be [B, heads, T, d], got f32[N, 8]"],
        None,
    ),
    (
        "prim_lstm_scan_operands",
        body("h = prim.lstm_scan(x, x)", "output h"),
        ShapeError,
        (4, 9),
        ["lstm_scan takes xw, u, h0, c0 and an optional bias, got 2"],
        None,
    ),
    (
        "prim_lstm_scan_bias",
        body(
            "s = prim.lstm_scan(reshape(x, [N, 1, 8]), zeros([2, 8]), zeros([N, 2]), "
            "zeros([N, 2]), zeros([4]))",
            "output s",
        ),
        ShapeError,
        (4, 9),
        ["lstm_scan: the bias must be f32[8], got f32[4]"],
        None,
    ),
    (
        "tensor_attribute",
        body("h = x.size", "output h"),
        NameError_,
        (4, 9),
        ["a tensor has no attribute `size`"],
        None,
    ),
    ("return_in_model", body("return x"), NameError_, (4, 5), ["`return` is for blocks"], None),
    (
        "input_in_block",
        "block B() (x: f32[N]) {\n    input z: f32[N]\n    return x\n}\n"
        "model M { input x: f32[N]\n output y = x |> B }\n",
        NameError_,
        (2, 5),
        ["`input` declares a model input"],
        None,
    ),
    (
        "local_hides_layer",
        "model M(dropout = 0.1) {\n    input x: f32[N, 4]\n"
        "    output y = x |> dropout(dropout)\n}\n",
        ValueError_,
        (3, 21),
        ["`dropout` is a number, not a function"],
        "hides the built-in `dropout`",
    ),
    # --- arguments --------------------------------------------------------------------------
    (
        "unknown_keyword",
        body("h = x |> dense(10, bais = false)", "output h"),
        ArgumentError,
        (4, 24),
        ["`dense` has no argument `bais`"],
        "did you mean `bias`?",
    ),
    (
        "missing_argument",
        body("h = x |> dense", "output h"),
        ArgumentError,
        (4, 14),
        ["`dense` is missing argument `units`"],
        "signature: dense(units, bias = true)",
    ),
    (
        "too_many_arguments",
        body("h = x |> dense(10, true, 3)", "output h"),
        ArgumentError,
        (4, 14),
        ["`dense` takes 1 tensor and 2 arguments"],
        None,
    ),
    (
        "keyword_twice",
        body("h = x |> dense(10, bias = true, bias = false)", "output h"),
        ArgumentError,
        (4, 37),
        ["keyword `bias` is given twice"],
        None,
    ),
    (
        "builtin_missing",
        body("h = softmax()", "output h"),
        ArgumentError,
        (4, 9),
        ["`softmax` is missing argument `x`"],
        None,
    ),
    (
        "builtin_keyword",
        body("h = softmax(x, axes = 0)", "output h"),
        ArgumentError,
        (4, 20),
        ["`softmax` has no argument `axes`"],
        "did you mean `axis`?",
    ),
    (
        "missing_tensor",
        body("loss cross_entropy(x)"),
        ArgumentError,
        (4, 10),
        ["missing its tensor input `labels`"],
        None,
    ),
    (
        "repeat_without_input",
        body("h = repeat(2, dense(4))", "output h"),
        ArgumentError,
        (4, 9),
        ["`repeat(n, layer)` needs an input"],
        None,
    ),
    (
        "layer_not_tensor",
        body("h = dense(4)", "output h"),
        ValueError_,
        (5, 5),
        ["an output must be a tensor, got a layer `dense`"],
        "waiting for its input",
    ),
    (
        "unknown_initialiser",
        body("param w: f32[4] = xavier", "output x"),
        ValueError_,
        (4, 23),
        ["`xavier` is not an initialiser"],
        None,
    ),
    (
        "initialiser_keyword",
        body("param w: f32[4] = normal(0, sd = 1)", "output x"),
        ArgumentError,
        (4, 23),
        ["initialiser `normal` has no argument `sd`"],
        "`std`",
    ),
    # --- shapes and types -------------------------------------------------------------------
    (
        "missing_flatten",
        """
     model CNN {
         input image: f32[N, 1, 28, 28]
         label y:     i64[N]
         x = image |> conv2d(32, kernel = 3) |> relu |> max_pool(2) |> dense(10)
         loss cross_entropy(x, y)
     }
     """,
        ShapeError,
        (5, 10),
        ["cross_entropy: class-index labels must have the logits' shape"],
        "insert `flatten` before `dense` (line 4)",
    ),
    (
        "matmul_inner",
        body("input w: f32[4, 3]", "output h = x @ w"),
        ShapeError,
        (5, 16),
        ["matmul", "64" if False else "8"],
        None,
    ),
    (
        "broadcast",
        body("input z: f32[N, 3]", "output h = x + z"),
        ShapeError,
        (5, 16),
        ["cannot broadcast"],
        None,
    ),
    (
        "signature_value",
        "block B(d) (x: f32[N, d]) -> f32[N, d] { return x }\n"
        "model M { input x: f32[N, 64]\n output y = x |> B(32) }\n",
        ShapeError,
        (3, 18),
        ["`B` expects `x` to be f32[N, d], got f32[N, 64]: d is 32 but the tensor has 64"],
        "where d = 32",
    ),
    (
        "signature_rank",
        "block B() (x: f32[B, T, D]) { return x }\n"
        "model M { input x: f32[N, 64]\n output y = x |> B }\n",
        ShapeError,
        (3, 18),
        ["`B` expects `x` to be f32[B, T, D], got f32[N, 64]: rank 2 instead of 3"],
        None,
    ),
    (
        "signature_repeated_symbol",
        "block B() (a: f32[N, K], b: f32[N, K]) { return a + b }\n"
        "model M { input x: f32[N, 4]\n input z: f32[N, 5]\n output y = B(x, z) }\n",
        ShapeError,
        (4, 13),
        ["`B` expects `b` to be f32[N, K]", "K is 4 but the tensor has 5"],
        None,
    ),
    (
        "signature_dtype",
        body("h = x |> embedding(10, 4)", "output h"),
        DTypeError,
        (4, 14),
        ["`embedding` expects `tokens` to be int[...], got f32[N, 8]"],
        None,
    ),
    (
        "return_type",
        "block B(d) (x: f32[N, d]) -> f32[N, d] {\n    return x |> dense(2 * d)\n}\n"
        "model M { input x: f32[N, 4]\n output y = x |> B(4) }\n",
        ShapeError,
        (2, 5),
        ["`B` declares it returns f32[N, d], got f32[N, 8]"],
        None,
    ),
    (
        "symbolic_param",
        body("param g: f32[N] = ones", "output x"),
        ShapeError,
        (4, 18),
        ["the shape of param `g` must be known at compile time"],
        None,
    ),
    (
        "loss_not_scalar",
        body("loss x"),
        ShapeError,
        (4, 10),
        ["the loss must be a scalar, got f32[N, 8]"],
        "mean(",
    ),
    (
        "reshape",
        body("h = reshape(x, [N, 3])", "output h"),
        ShapeError,
        (4, 9),
        ["cannot reshape f32[N, 8]"],
        None,
    ),
    (
        "index_range",
        body("h = x[:, 9]", "output h"),
        ShapeError,
        (4, 9),
        ["index 9 is out of range for axis 1"],
        None,
    ),
    (
        "int_tensor_fraction",
        body("h = y * 0.5", "output h"),
        DTypeError,
        (4, 9),
        ["cannot combine a i64 tensor with the fraction 0.5"],
        "cast",
    ),
    (
        "dtype_mix",
        body('output h = x + cast(y, "i64") * 2 + y'),
        DTypeError,
        (4, 16),
        ["add"],
        None,
    ),
    (
        "attention_heads",
        "model M(d = 100, heads = 3) {\n    input x: f32[B, T, d]\n"
        "    output y = x |> attention(heads)\n}\n",
        ValueError_,
        (3, 21),
        ["attention: the model width d must divide into heads"],
        None,
    ),
    (
        "dropout_range",
        body("h = x |> dropout(1.5)", "output h"),
        ValueError_,
        (4, 14),
        ["dropout: dropout probability must be in [0, 1)"],
        None,
    ),
    (
        "same_padding_stride",
        """
     model M {
         input x: f32[N, 1, 8, 8]
         output y = x |> conv2d(4, kernel = 3, stride = 2, padding = "same")
     }
     """,
        ValueError_,
        (3, 21),
        ['conv2d: padding "same" needs stride 1'],
        None,
    ),
    # --- compile-time values ----------------------------------------------------------------
    (
        "assert_false",
        body('assert hidden % 3 == 0, "hidden must divide by 3"'),
        AssertionFailed,
        (4, 5),
        ["hidden must divide by 3"],
        "hidden = 16",
    ),
    (
        "assert_no_message",
        body("assert hidden < 4"),
        AssertionFailed,
        (4, 5),
        ["assert hidden < 4"],
        None,
    ),
    (
        "assert_tensor",
        body("assert x"),
        ValueError_,
        (4, 12),
        ["`assert` needs a condition known at compile time"],
        None,
    ),
    (
        "if_symbolic",
        body("if N > 3 {", "}"),
        ValueError_,
        (4, 8),
        ["cannot compare the symbolic sizes N and 3"],
        None,
    ),
    (
        "division_by_zero",
        body("let z = hidden / 0"),
        ValueError_,
        (4, 13),
        ["division by zero"],
        None,
    ),
    (
        "unpack",
        body("a, b = [1, 2, 3]"),
        ValueError_,
        (4, 12),
        ["cannot unpack a list into 2 names (it has 3 items)"],
        None,
    ),
    (
        "no_return",
        "block B() (x: f32[N]) { y = x }\nmodel M { input x: f32[N]\n output y = x |> B }\n",
        ValueError_,
        (1, 1),
        ["block `B` ends without `return`"],
        None,
    ),
    (
        "recursion",
        "block B() (x: f32[N]) { return x |> B }\n"
        "model M { input x: f32[N]\n output y = x |> B }\n",
        ValueError_,
        (1, 37),
        ["blocks nest more than 64 deep"],
        None,
    ),
    (
        "unknown_dtype",
        body("input z: f31[N]"),
        DTypeError,
        (4, 14),
        ["unknown element type `f31`"],
        "did you mean `f32`?",
    ),
    (
        "hparam_without_default",
        "model M(d) {\n    input x: f32[N, d]\n    output x\n}\n",
        ConfigError,
        (1, 9),
        ["hyper-parameter `d` has no default"],
        None,
    ),
    # --- the train section ------------------------------------------------------------------
    (
        "train_unknown_field",
        body("output x") + "train M {\n    epoch 3\n}\n",
        NameError_,
        (7, 5),
        ["unknown train setting `epoch`"],
        "did you mean `epochs`?",
    ),
    (
        "train_epochs",
        body("output x") + "train M {\n    epochs 0\n}\n",
        ValueError_,
        (7, 5),
        ["`epochs` must be at least 1, got 0"],
        None,
    ),
    (
        "train_optimizer",
        body("output x") + "train M {\n    optimizer adm(lr = 1)\n}\n",
        NameError_,
        (7, 15),
        ["unknown optimizer `adm`"],
        "did you mean `adam`?",
    ),
    (
        "train_optimizer_arg",
        body("output x") + "train M {\n    optimizer sgd(lr = 1, momentun = 0.9)\n}\n",
        ArgumentError,
        (7, 27),
        ["optimizer `sgd` has no argument `momentun`"],
        "did you mean `momentum`?",
    ),
    (
        "train_metric",
        body("output x") + "train M {\n    metrics accuracy, f2\n}\n",
        NameError_,
        (7, 23),
        ["unknown metric `f2`"],
        "did you mean `f1`?",
    ),
    (
        "train_dataset",
        body("output x") + "train M {\n    data digit\n}\n",
        NameError_,
        (7, 10),
        ["unknown built-in data set `digit`"],
        "did you mean `digits`?",
    ),
    (
        "train_twice",
        body("output x") + "train M {\n    epochs 2\n    epochs 3\n}\n",
        NameError_,
        (8, 5),
        ["`epochs` is set twice"],
        None,
    ),
    (
        "freeze_nothing",
        body("h = x |> dense(4)", "output h") + "train M {\n    freeze dens.*\n}\n",
        NameError_,
        (8, 5),
        ["`freeze dens.*` matches no parameter"],
        None,
    ),
    (
        "val_split",
        body("output x") + "train M {\n    val_split 1.5\n}\n",
        ValueError_,
        (7, 5),
        ["`val_split` must be below 1"],
        None,
    ),
]


def _ids():
    return [c[0] for c in CASES]


@pytest.mark.parametrize("case", CASES, ids=_ids())
def test_wrong_program(case, nn_file):
    name, source, cls, (line, col), says, hint = case
    path = nn_file(textwrap.dedent(source))
    with pytest.raises((DslcError, ErrorList)) as info:
        load_program(path)
    err = info.value
    if isinstance(err, ErrorList):
        err = err.errors[0]
    assert type(err) is cls, render(err)
    assert err.span is not None, render(err)
    assert err.span.file == path
    assert (err.span.line, err.span.col) == (line, col), render(err)
    for s in says:
        assert s in err.message, render(err)
    if hint is not None:
        assert hint in (err.hint or "") + "\n".join(err.notes), render(err)
    text = render(err)  # renders with the source line and a caret
    assert f"{path}:{line}:{col}:" in text and "^" in text


def test_at_least_forty_cases():
    assert len(CASES) >= 40


def test_several_errors_in_one_run(nn_file):
    path = nn_file(
        """
        model M(hidden = 8) {
            input x: f32[N, 4]
            a = x |> dense(hiden)
            b = x |> foo
            c = a + 1              # `a` failed: no second error from it
            hidden = 2
            output x
        }
        train M {
            epoch 3
        }
        """
    )
    with pytest.raises(ErrorList) as info:
        check(path)
    errs = info.value.errors
    assert [(e.span.line, type(e)) for e in errs] == [
        (3, NameError_),
        (4, NameError_),
        (6, NameError_),
        (10, NameError_),
    ]


def test_check_wraps_single_error(nn_file):
    path = nn_file(body("h = x |> dens(4)", "output h"))
    with pytest.raises(ErrorList) as info:
        check(path)
    assert len(info.value.errors) == 1


def test_missing_file_is_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no such model file"):
        load_program(str(tmp_path / "nope.nn"))


def test_shape_chain_note(nn_file):
    path = nn_file(CASES[[c[0] for c in CASES].index("missing_flatten")][1])
    with pytest.raises(ShapeError) as info:
        load_program(path)
    notes = "\n".join(info.value.notes)
    assert "image: f32[N, 1, 28, 28] -> conv2d -> f32[N, 32, 26, 26] -> relu -> max_pool" in notes
    assert "dense -> f32[N, 32, 13, 10]" in notes
