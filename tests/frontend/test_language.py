"""Language features: overrides, imports, asserts, derived values, unification, scopes, train."""

from __future__ import annotations

import math

import pytest

from dslc.errors import ConfigError, ErrorList, ImportError_, ShapeError
from dslc.frontend import load_program
from dslc.frontend.parse import parse_text, parser


def types(graph) -> dict[str, str]:
    return {n: str(graph.data(i)["type"]) for n, i in graph.params.items()}


def out_type(p, name: str, graph: str = "train") -> str:
    g = p.train_graph if graph == "train" else p.infer_graph
    return str(g.data(g.outputs[name])["type"])


# --- parsing ---------------------------------------------------------------------------------


def test_parser_is_lalr_and_cached():
    assert parser() is parser()
    assert parser().options.parser == "lalr"


def test_pipes_comments_and_continuation_lines():
    m = parse_text(
        """
        # a comment
        model M {   # another
            input x: f32[N, 4]
            h = x |> dense(8)     # trailing
                  |> relu
                  |> dropout(0.5)
            output h
        }
        """,
        "t.nn",
    )
    (model,) = m.models
    assign = model.body[1]
    assert assign.targets == ("h",)
    call = assign.value  # dropout(relu(dense(x, 8)), 0.5)
    assert call.piped and call.func.name == "dropout"
    assert call.args[0].func.name == "relu"
    assert call.args[0].args[0].func.name == "dense"
    assert call.span.line == 7  # a pipe stage is located at its own text


def test_precedence():
    (model,) = parse_text("model M { let a = -2 ** 2 + 3 * 4 @ 5 }", "t.nn").models
    e = model.body[0].value
    assert e.op == "+" and e.left.op == "-" and e.left.operand.op == "**"
    assert e.right.op == "@" and e.right.left.op == "*"


# --- hyper-parameters and overrides ---------------------------------------------------------

MODEL = """
model M(hidden = 16, act = "relu", deep = false) {
    input x: f32[N, 8]
    label y: i64[N]
    h = x |> dense(hidden)
    if deep {
        h = h |> relu |> dense(hidden, name = "extra")
    }
    logits = h |> dense(3)
    output logits
    loss cross_entropy(logits, y)
}
train M {
    optimizer sgd(lr = 0.1, momentum = 0.9)
    epochs 4
    batch 8
    metrics accuracy
    data digits
}
"""


def test_hparam_override(nn_file):
    path = nn_file(MODEL)
    assert types(load_program(path).train_graph)["h.W"] == "f32[8, 16]"
    p = load_program(path, {"hidden": "32", "deep": "true"})
    assert p.hparams == {"hidden": 32, "act": "relu", "deep": True}
    assert types(p.train_graph)["extra.W"] == "f32[32, 32]"


def test_train_overrides(nn_file):
    p = load_program(nn_file(MODEL), {"epochs": 3, "lr": "0.01", "batch": "32", "seed": 7})
    t = p.train
    assert (t.epochs, t.batch, t.lr, t.seed) == (3, 32, 0.01, 7)
    assert t.optimizer == "sgd" and t.optimizer_args["momentum"] == 0.9
    assert t.metrics == ["accuracy"] and t.dataset == "digits"
    p = load_program(nn_file(MODEL), {"optimizer": "adam", "train.metrics": "accuracy,f1"})
    assert p.train.optimizer == "adam" and p.train.optimizer_args == {"lr": 0.1}
    assert p.train.metrics == ["accuracy", "f1"]


def test_unknown_override_lists_names(nn_file):
    with pytest.raises(ConfigError) as info:
        load_program(nn_file(MODEL), {"hiden": 3})
    e = info.value
    assert "no hyper-parameter or training setting `hiden`" in e.message
    assert e.hint == "did you mean `hidden`?"
    assert "hyper-parameters: hidden, act, deep" in e.notes[0]
    assert "epochs" in e.notes[1]


def test_override_type_checked(nn_file):
    with pytest.raises(ConfigError, match="expected a number"):
        load_program(nn_file(MODEL), {"hidden": "wide"})
    with pytest.raises(ConfigError, match="`epochs` must be at least 1"):
        load_program(nn_file(MODEL), {"epochs": 0})


def test_hparam_defaults_use_earlier_ones(nn_file):
    p = load_program(
        nn_file(
            """
            model M(d = 8, hidden = 4 * d) {
                input x: f32[N, d]
                output y = x |> dense(hidden)
            }
            """
        ),
        {"d": 2},
    )
    assert types(p.train_graph)["y.W"] == "f32[2, 8]"


# --- derived values and asserts ---------------------------------------------------------------


def test_derived_values(nn_file):
    p = load_program(
        nn_file(
            """
            model Yolo(classes = 3, anchors = 3) {
                let filters = (classes + 5) * anchors
                half = filters // 2
                assert filters == 24, "arithmetic"
                assert half * 2 == filters and filters % anchors == 0
                input x: f32[N, 4, 6, 6]
                output y = x |> conv2d(filters, kernel = 1)
            }
            """
        )
    )
    assert types(p.train_graph)["y.W"] == "f32[24, 4, 1, 1]"


def test_assert_reports_values(nn_file):
    with pytest.raises(Exception) as info:
        load_program(
            nn_file(
                """
                model M(d = 10, heads = 4) {
                    assert d % heads == 0, "d must divide into heads"
                    input x: f32[N, d]
                    output x
                }
                """
            )
        )
    e = info.value
    assert e.kind == "assertion failed" and e.message == "d must divide into heads"
    assert (e.span.line, e.span.col) == (2, 5)
    assert e.notes == ["d = 10", "heads = 4"]


# --- shapes: symbols, unification -------------------------------------------------------------


def test_symbolic_dims_flow(nn_file):
    p = load_program(
        nn_file(
            """
            block Head(units) (x: f32[B, T, d]) -> f32[B, units] {
                return x[:, -1] |> dense(units)
            }
            model M(vocab = 20) {
                input tokens: i64[B, T]
                h = tokens |> embedding(vocab, 6)
                z = reshape(h, [B * T, 6])
                first = h[:, :T - 1]
                output y = h |> Head(3)
                output z
                output first
                output tail = h[..., 2:]
            }
            """
        )
    )
    assert out_type(p, "y") == "f32[B, 3]"
    assert out_type(p, "z") == "f32[B*T, 6]"
    assert out_type(p, "first") == "f32[B, T - 1, 6]"
    assert out_type(p, "tail") == "f32[B, T, 4]"


def test_unification_binds_symbols_and_checks_params(nn_file):
    src = """
    block Pair() (a: f32[N, K], b: f32[N, K]) -> f32[N, K] { return a * b }
    block Fixed(d) (x: f32[..., d]) -> f32[..., d] { return x }
    model M {
        input x: f32[B, 4]
        input z: f32[B, 4]
        output y = Pair(x, z) |> Fixed(4)
    }
    """
    p = load_program(nn_file(src))
    assert out_type(p, "y") == "f32[B, 4]"
    bad = src.replace("input z: f32[B, 4]", "input z: f32[C, 4]")
    with pytest.raises(ShapeError, match="N is B but the tensor has C"):
        load_program(nn_file(bad))


def test_ellipsis_matches_any_leading_dims(nn_file):
    p = load_program(
        nn_file(
            """
            block RMSNorm(eps = 1e-6) (x: f32[..., D]) -> f32[..., D] {
                param g: f32[D] = ones
                return x * rsqrt(mean(x * x, axis = -1, keepdims = true) + eps) * g
            }
            model M {
                input a: f32[N, 5]
                input b: f32[B, T, 5]
                output y = a |> RMSNorm
                output z = b |> RMSNorm
            }
            """
        )
    )
    assert out_type(p, "y") == "f32[N, 5]" and out_type(p, "z") == "f32[B, T, 5]"
    assert set(p.train_graph.params) == {"y.g", "z.g"}


# --- scopes and parameter names ---------------------------------------------------------------


def test_scope_rules(nn_file):
    p = load_program(
        nn_file(
            """
            block Block(d) (x: f32[N, d]) -> f32[N, d] {
                return x + (x |> dense(d) |> relu)
            }
            model M(layers = 3) {
                input x: f32[N, 4]
                a = x |> dense(4)                         # the target names it: a.W
                b = a |> dense(4) |> dense(4)             # two layers: dense, dense_1
                c = b |> repeat(layers, Block(4))         # the count's name: layers.0 ...
                d = c |> repeat(2, Block(4))              # a literal count: the target, d.0
                e = d |> dense(4, name = "proj")          # explicit
                output e
            }
            """
        )
    )
    names = set(p.train_graph.params)
    assert {"a.W", "dense.W", "dense_1.W", "proj.W", "d.1.dense.b"} <= names
    assert {f"layers.{i}.dense.W" for i in range(3)} <= names
    scopes = {n.scope for n in p.train_graph.nodes()}
    assert "layers.2.dense" in scopes


def test_duplicate_explicit_name(nn_file):
    with pytest.raises(Exception, match="layer name `fc` is used twice"):
        load_program(
            nn_file(
                """
                model M {
                    input x: f32[N, 4]
                    a = x |> dense(4, name = "fc")
                    b = a |> dense(4, name = "fc")
                    output b
                }
                """
            )
        )


# --- explicit parameters, initialisers, state ---------------------------------------------------


def test_param_initialisers(nn_file):
    p = load_program(
        nn_file(
            """
            model M(d = 6) {
                input x: f32[N, 4]
                param a: f32[4, d] = glorot_uniform
                param b: f32[d] = normal(0, 0.02)
                param c: f32[d] = constant(0.5)
                param e: f32[d, 4] = he_normal
                param w: f32[8, 4, 3, 3] = uniform(-0.1, 0.1)
                param t: f32[d] = truncated_normal(std = 0.02)
                state s: f32[d] = zeros
                output y = (x @ a + b * c) @ e
            }
            """
        )
    )
    g = p.train_graph
    attrs = {n: g.data(i)["attrs"] for n, i in g.params.items()}
    bound = math.sqrt(6 / (4 + 6))
    assert attrs["a"]["init"] == "uniform"
    assert attrs["a"]["init_args"] == pytest.approx((-bound, bound))
    assert (attrs["b"]["init"], attrs["b"]["init_args"]) == ("normal", (0.0, 0.02))
    assert (attrs["c"]["init"], attrs["c"]["init_args"]) == ("constant", (0.5,))
    assert attrs["e"]["init_args"] == pytest.approx((0.0, math.sqrt(2) / math.sqrt(6)))
    assert attrs["t"]["init_args"] == pytest.approx((0.0, 0.02, -0.04, 0.04))
    assert attrs["s"]["trainable"] is False and attrs["a"]["trainable"] is True


def test_train_and_infer_modes(nn_file):
    p = load_program(
        nn_file(
            """
            model M {
                input x: f32[N, 3, 4, 4]
                label y: i64[N]
                h = x |> batch_norm |> dropout(0.5) |> flatten
                output logits = h |> dense(2)
                loss cross_entropy(logits, y)
            }
            """
        )
    )
    tr, inf = p.train_graph, p.infer_graph
    assert set(tr.updates) == {"h.running_mean", "h.running_var"}
    assert not inf.updates
    tr_ops = {n.op for n in tr.nodes()}
    inf_ops = {n.op for n in inf.nodes()}
    assert "dropout_mask" in tr_ops and "dropout_mask" not in inf_ops
    assert "var" in tr_ops and "var" not in inf_ops  # running statistics when inferring
    assert set(inf.inputs) == {"x"} and set(tr.inputs) == {"x", "y"}
    new_mean = tr.data(tr.updates["h.running_mean"])
    assert str(new_mean["type"]) == "f32[3]"


def test_implicit_prediction_output(nn_file):
    p = load_program(
        nn_file(
            """
            model Line {
                input x: f32[N, 1]
                label y: f32[N, 1]
                loss mse(x |> dense(1), y)
            }
            """
        )
    )
    assert list(p.infer_graph.outputs) == ["prediction"]
    assert out_type(p, "prediction", "infer") == "f32[N, 1]"


# --- imports ---------------------------------------------------------------------------------


def test_imports_plain_and_aliased(nn_file):
    nn_file("block Twice() (x: f32[...]) { return x * 2 }\n", "lib/util.nn")
    nn_file('import "util.nn"\nblock Quad() (x: f32[...]) { return x |> Twice |> Twice }\n',
            "lib/more.nn")  # fmt: skip
    path = nn_file(
        """
        import "lib/more.nn"
        import "lib/util.nn" as u
        model M {
            input x: f32[N]
            output y = x |> Quad |> u.Twice
        }
        """
    )
    p = load_program(path)
    assert [n.op for n in p.infer_graph.nodes() if n.op == "scale"] == ["scale"] * 3
    assert any(f.endswith("util.nn") for f in p.sources)


def test_import_cycle(nn_file):
    nn_file('import "b.nn"\nblock A() (x: f32[N]) { return x }\n', "a.nn")
    nn_file('import "a.nn"\nblock B() (x: f32[N]) { return x }\n', "b.nn")
    path = nn_file('import "a.nn"\nmodel M { input x: f32[N]\n output y = x |> A }\n')
    with pytest.raises(ImportError_) as info:
        load_program(path)
    assert info.value.message == "import cycle: a.nn -> b.nn -> a.nn"
    assert info.value.span.file.endswith("b.nn") and info.value.span.line == 1


def test_import_outside_root(nn_file, tmp_path, monkeypatch):
    nn_file("block Z() (x: f32[N]) { return x }\n", "shared.nn")
    path = nn_file('import "../shared.nn"\nmodel M { input x: f32[N]\n output y = x |> Z }\n',
                   "proj/m.nn")  # fmt: skip
    with pytest.raises(ImportError_, match="leaves the directory of the main file") as info:
        load_program(path)
    assert "DSLC_ALLOW_IMPORTS_OUTSIDE" in info.value.hint
    load_program(path, allow_imports_outside=True)
    monkeypatch.setenv("DSLC_ALLOW_IMPORTS_OUTSIDE", "1")
    load_program(path)


def test_import_absolute_refused(nn_file, tmp_path):
    lib = nn_file("block Z() (x: f32[N]) { return x }\n", "z.nn")
    path = nn_file(f'import "{lib}"\nmodel M {{ input x: f32[N]\n output y = x |> Z }}\n')
    with pytest.raises(ImportError_, match="absolute paths are not allowed"):
        load_program(path)


def test_import_name_clash(nn_file):
    nn_file("block Z() (x: f32[N]) { return x }\n", "z.nn")
    path = nn_file('import "z.nn"\nblock Z() (x: f32[N]) { return x }\n'
                   "model M { input x: f32[N]\n output y = x |> Z }\n")  # fmt: skip
    with pytest.raises(Exception, match="defined here and also imported"):
        load_program(path)


def test_syntax_error_in_import_is_located(nn_file):
    nn_file("block Z( { }\n", "z.nn")
    path = nn_file('import "z.nn"\nmodel M { input x: f32[N]\n output x }\n')
    with pytest.raises(Exception) as info:
        load_program(path)
    assert info.value.span.file.endswith("z.nn") and info.value.kind == "syntax error"


# --- the train section ------------------------------------------------------------------------


def test_train_section(nn_file, tmp_path):
    p = load_program(
        nn_file(
            """
            model M {
                input x: f32[N, 4]
                label y: i64[N]
                h = x |> dense(8)
                logits = h |> dense(2)
                output logits
                loss cross_entropy(logits, y, label_smoothing = 0.1)
            }
            train M {
                optimizer adamw(lr = 3e-4, betas = [0.9, 0.95], weight_decay = 0.05)
                schedule  warmup_cosine(warmup = 10, min_lr = 1e-5)
                epochs    2
                batch     16
                metrics   accuracy, f1
                clip_norm 1.0
                data      tiny_text(seq = 32)
                val_split 0.2
                seed      3
                freeze    h.*
                load      "w.safetensors" into "h"
            }
            """
        )
    )
    t = p.train
    assert t.optimizer == "adamw" and t.optimizer_args == {"lr": 3e-4, "betas": [0.9, 0.95]}
    assert t.weight_decay == 0.05
    assert t.schedule == "warmup_cosine" and t.schedule_args == {"warmup": 10, "min_lr": 1e-5}
    assert (t.epochs, t.batch, t.clip_norm, t.val_split, t.seed) == (2, 16, 1.0, 0.2, 3)
    assert t.dataset == "tiny_text" and t.dataset_args == {"seq": 32}
    assert t.freeze == ["h.*"]
    assert t.load == [(str(tmp_path / "w.safetensors"), "h")]
    g = p.train_graph
    frozen = {n for n, i in g.params.items() if g.data(i)["attrs"]["frozen"]}
    assert frozen == {"h.W", "h.b"}
    assert "h.W" not in g.trainable_params()


def test_several_models_need_a_train_section(nn_file):
    two = "model A { input x: f32[N]\n output x }\nmodel B { input x: f32[N]\n output x }\n"
    with pytest.raises(Exception, match="defines several models"):
        load_program(nn_file(two))
    assert load_program(nn_file(two + "train B { epochs 1 }\n")).name == "B"


def test_model_hash(nn_file):
    a = load_program(nn_file(MODEL)).model_hash
    assert a == load_program(nn_file(MODEL.replace("epochs 4", "epochs 9"))).model_hash
    assert a == load_program(nn_file("# comment\n" + MODEL)).model_hash
    assert a != load_program(nn_file(MODEL), {"hidden": 17}).model_hash


def test_error_list_renders_every_error(nn_file):
    path = nn_file("model M {\n    input x: f32[N]\n    a = x |> nope\n    b = x |> nada\n}\n")
    with pytest.raises(ErrorList) as info:
        load_program(path)
    assert [e.span.line for e in info.value.errors] == [3, 4]
