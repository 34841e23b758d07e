"""`dslc check`: OK line with the parameter count, or located errors and exit status 1."""

from __future__ import annotations

import glob
import os

import pytest

import dslc.frontend
from dslc.errors import ErrorList, NameError_, ShapeError, Span

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.nn")))


def test_ok_line(fake, model_file, dslc_cli):
    r = dslc_cli("check", model_file)
    assert r.exit_code == 0, r.output
    assert r.stdout == f"OK: {model_file} (TinyMLP, 2,410 parameters)\n"
    assert fake.calls == [(model_file, {})]


def test_non_trainable_count(fake, model_file, dslc_cli, monkeypatch):
    real = fake.__call__

    def with_state(path, overrides=None):
        p = real(path, overrides)
        from dslc.ir.builder import Builder
        from dslc.ir.types import TensorType

        Builder(p.train_graph).param("bn.mean", TensorType((32,)), trainable=False)
        return p

    monkeypatch.setattr(dslc.frontend, "load_program", with_state)
    r = dslc_cli("check", model_file)
    assert r.stdout == f"OK: {model_file} (TinyMLP, 2,410 parameters, 32 non-trainable)\n"


def test_overrides_reach_the_front_end(fake, model_file, dslc_cli):
    r = dslc_cli("check", model_file, "--set", "hidden=64", "--set", "act=gelu", "--set", "p=0.1")
    assert r.exit_code == 0, r.output
    assert fake.calls == [(model_file, {"hidden": 64, "act": "gelu", "p": 0.1})]
    # 64*64 + 64 + 64*10 + 10
    assert "(TinyMLP, 4,810 parameters)" in r.stdout


def test_errors_are_located_with_a_caret(fake, model_file, dslc_cli):
    fake.error = ErrorList(
        [
            NameError_(
                "unknown name `hiden`",
                Span(model_file, 4, 20, 4, 25),
                hint="did you mean `hidden`?",
            ),
            ShapeError(
                "`dense` expects a rank-2 input, got f32[N, 8, 8]",
                Span(model_file, 5, 19, 5, 28),
                notes=["x: f32[N, 8, 8] (line 2)"],
                hint="insert `flatten` before `dense`",
            ),
        ]
    )
    r = dslc_cli("check", model_file)
    assert r.exit_code == 1
    assert r.stdout == ""
    assert "Traceback" not in r.output
    assert r.stderr.splitlines() == [
        f"{model_file}:4:20: name error: unknown name `hiden`",
        "   4 |     h = x |> dense(hidden) |> relu",
        "                          ^^^^^",
        "  hint: did you mean `hidden`?",
        f"{model_file}:5:19: shape error: `dense` expects a rank-2 input, got f32[N, 8, 8]",
        "   5 |     logits = h |> dense(10)",
        "                         ^^^^^^^^^",
        "  note: x: f32[N, 8, 8] (line 2)",
        "  hint: insert `flatten` before `dense`",
    ]


def test_bad_set_is_a_config_error(fake, model_file, dslc_cli):
    r = dslc_cli("check", model_file, "--set", "hidden")
    assert r.exit_code == 1
    assert r.stderr == "config error: --set expects name=value, got 'hidden'\n"
    assert fake.calls == []


def test_a_bug_is_reported_without_a_traceback(fake, model_file, dslc_cli, monkeypatch):
    monkeypatch.delenv("DSLC_DEBUG", raising=False)
    fake.error = KeyError("oops")
    r = dslc_cli("check", model_file)
    assert r.exit_code == 2
    assert "Traceback" not in r.output
    assert r.stderr.startswith("internal error: KeyError: 'oops'\n")


def test_help_mentions_set(dslc_cli):
    r = dslc_cli("check", "--help")
    assert r.exit_code == 0 and "--set NAME=VALUE" in r.stdout


# --- the examples, through the real front end ---------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p) for p in EXAMPLES])
def test_examples_pass(path, dslc_cli):
    r = dslc_cli("check", path)
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith(f"OK: {path} (") and r.stdout.endswith(" parameters)\n")


def test_wrong_program(tmp_path, dslc_cli):
    bad = tmp_path / "bad.nn"
    bad.write_text("model Bad {\n    input x: f32[N, 4]\n    output y = x |> nosuchlayer(3)\n}\n")
    r = dslc_cli("check", str(bad))
    assert r.exit_code == 1
    assert r.stdout == ""
    assert "Traceback" not in r.output
    assert r.stderr.splitlines()[:3] == [
        f"{bad}:3:21: name error: unknown name `nosuchlayer`",
        "   3 |     output y = x |> nosuchlayer(3)",
        "                           ^^^^^^^^^^^",
    ]


def test_missing_file_is_a_usage_error(fake, tmp_path, dslc_cli):
    r = dslc_cli("check", str(tmp_path / "nope.nn"))
    assert r.exit_code == 2
    assert "Traceback" not in r.output
    assert f"File '{tmp_path / 'nope.nn'}' does not exist." in r.stderr
    assert fake.calls == []
