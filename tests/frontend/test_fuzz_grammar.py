"""Fuzzing the front end: every input compiles or fails with dslc's own located error.

A seeded share of `python -m dslc.tools.fuzz` (docs/fuzzing.md records the long runs):
strings drawn from the grammar by Hypothesis, random derivations of the grammar, near-valid
programs, and token mutations of every example and built-in layer file. Inputs that ever
broke the front end live in fuzz_corpus/ and are replayed by test_corpus_input.
"""

from __future__ import annotations

import random
import tempfile
import time
from pathlib import Path

import pytest
from dslc.grammar import GRAMMAR_PATH
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.lark import from_lark
from lark import Lark

from dslc.tools import fuzz
from dslc.tools.fuzz_gen import (
    grammar_program,
    mutate,
    mutated_program,
    seed_sources,
    structured_program,
)

CORPUS = sorted(Path(__file__).with_name("fuzz_corpus").glob("*.nn"))
LIMIT = 20.0  # seconds per input (a shared, loaded machine)


def assert_clean(text: str, workdir, deep: bool = False) -> fuzz.Outcome:
    out = fuzz.check_text(text, str(workdir), deep=deep, limit=LIMIT)
    assert out.kind != "internal", f"{out.detail}\n--- input ---\n{text}"
    return out


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_corpus_input(path, work):
    assert_clean(path.read_text(encoding="utf-8"), work, deep=True)


def test_the_corpus_is_not_empty():
    assert len(CORPUS) >= 1  # every bug the fuzzers found keeps its input here


_HYPO_DIR = tempfile.TemporaryDirectory(prefix="dslc-fuzz-")  # one per module (given-tests
# cannot take a function-scoped fixture)
_TERMINALS = {  # explicit strategies for the regex terminals: short, mostly meaningful
    "NAME": st.sampled_from(["x", "y", "N", "d", "dense", "relu", "f32", "i64", "M", "prim"])
    | st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,6}\Z"),
    "INT": st.sampled_from(["0", "1", "2", "8", "64", "1_0"]),
    "FLOAT": st.sampled_from(["0.5", "1e-3", ".5", "1e400"]),
    "STRING": st.sampled_from(['"x"', '"missing.nn"', "'a'", '""', '"../x.nn"']),
    "GLOB": st.sampled_from(["*", "fc.*", "a?b"]),
}


@settings(max_examples=40, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(from_lark(Lark.open(str(GRAMMAR_PATH), parser="lalr"), start="start", explicit=_TERMINALS))
def test_strings_from_the_grammar(text):
    assert_clean(text, _HYPO_DIR.name)


def test_random_derivations_of_the_grammar(work):
    rng = random.Random(11)
    for _ in range(100):
        assert_clean(grammar_program(rng), work)


def test_near_valid_programs(work):
    rng = random.Random(12)
    kinds = [assert_clean(structured_program(rng), work, deep=i % 4 == 0).kind
             for i in range(120)]  # fmt: skip
    # the generator is close enough to valid programs to reach lowering and the passes
    assert kinds.count("compiled") >= 10, kinds.count("compiled")
    assert kinds.count("rejected") >= 40


@pytest.mark.parametrize("name", [n for n, _ in seed_sources()])
def test_mutations_of_each_example_and_layer_file(name, work):
    src = dict(seed_sources())[name]
    assert assert_clean(src, work, deep=True).kind == "compiled"  # the unmutated source
    rng = random.Random(name)
    for i in range(15):
        assert_clean(mutate(src, rng), work, deep=i % 8 == 0)


def test_mixed_mutations(work):
    rng = random.Random(13)
    for _ in range(60):
        assert_clean(mutated_program(rng), work)


def test_a_hang_and_a_crash_are_failures(work, monkeypatch):
    import dslc.frontend

    monkeypatch.setattr(dslc.frontend, "load_program", lambda p: time.sleep(5))
    t0 = time.perf_counter()
    out = fuzz.check_text("model M {}", str(work), limit=0.2)
    assert out.kind == "internal" and out.detail.startswith("hang")
    assert time.perf_counter() - t0 < 2

    def boom(path):
        raise KeyError("x")

    monkeypatch.setattr(dslc.frontend, "load_program", boom)
    out = fuzz.check_text("model M {}", str(work))
    assert out.kind == "internal" and out.detail.startswith("KeyError")

    def unlocated(path):
        from dslc.errors import ShapeError

        raise ShapeError("no span")

    monkeypatch.setattr(dslc.frontend, "load_program", unlocated)
    assert fuzz.check_text("model M {}", str(work)).kind == "internal"


def test_the_runner_prints_a_summary(capsys, tmp_path):
    assert fuzz.main(["--count", "30", "--seed", "5", "--corpus", str(tmp_path),
                      "--progress", "0"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "inputs run:                      30" in out
    assert "internal errors (bugs):          0" in out
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "name, message",
    [
        ("transpose-axis-out-of-range", "4:9: shape error: `transpose`: [0, 2, 4] is not a "
                                        "permutation of the 3 axes of f32[B, T, 4]"),
        ("repeat-of-a-number", "9:14: argument error: `Blk`: input `x` must be a tensor, "
                               "got a number"),
        ("symbolic-size-minus-a-fraction", "4:13: value error: cannot combine the symbolic "
                                           "size N with the fraction 0.5 at compile time"),
        ("list-indexed-by-none", "4:13: value error: a list index must be a whole number, "
                                 "got none"),
        ("initialiser-argument-none", "4:23: argument error: initialiser `uniform`: `hi` "
                                      "must be a number known at compile time, got none"),
        ("dtype-given-a-list", "4:9: argument error: `zeros`: dtype must be one of f16, f32, "
                               "f64, i32, i64, bool, got [1]"),
        ("mean-over-an-empty-axis", "5:16: shape error: `mean` over an axis of size 0 of "
                                    "f32[N, 4, 0]"),
        ("prim-attribute-of-the-wrong-kind", "5:10: argument error: `prim.conv2d`: `groups` "
                                             "must be a whole number, got true"),
        ("load-without-into", None),
    ],
)  # fmt: skip
def test_fixed_corpus_inputs_say_what_is_wrong(name, message):
    path = Path(__file__).with_name("fuzz_corpus") / f"{name}.nn"
    out = fuzz.check_file(str(path))
    if message is None:
        assert out.kind == "compiled", out.detail
    else:
        assert out.kind == "rejected" and out.detail == f"{path}:{message}"


@pytest.mark.parametrize(
    "stmt, message",
    [
        ("let a = 10 ** 100000000", "4:13: value error: number too large: more than "
                                    "9,223,372,036,854,775,807"),
        ("let a = 2 ** 62 * 4", "4:13: value error: number too large"),
        ("let a = pow(3, 99)", "4:13: value error: number too large"),
        ("let a = [0] * 100000000000", "4:13: value error: a list of more than 1,000,000 "
                                       "elements"),
        ("let a = range(10000000)", "4:13: value error: `range`: more than 1,000,000 elements"),
        ("let a = range(0, 10, 0)", "4:13: value error: `range`: the step must not be zero"),
        ("let a = (-8) ** 0.5", "4:13: value error: a negative number to a fractional power"),
        ("let a = 99999999999999999999", "4:13: syntax error: the number 999999999999999999"
                                         "99 is too large (more than 2**63 - 1)"),
        ("h = x |> repeat(1e40, Blk(d))", "4:14: value error: `repeat`: `n` is too large"),
        ("h = x |> repeat(20000, Blk(d))", "4:14: value error: `repeat`: at most 10,000 "
                                           "copies, got 20,000"),
    ],
)  # fmt: skip
def test_compile_time_values_are_bounded(stmt, message, nn_file):
    path = nn_file(f"""\
        block Blk(d) (x: f32[B, d]) -> f32[B, d] {{ return x }}
        model M(d = 4) {{
            input x: f32[B, d]
            {stmt}
            loss x |> sum
        }}
        """)  # fmt: skip
    out = fuzz.check_file(path)
    assert out.kind == "rejected" and out.detail.startswith(f"{path}:{message}"), out.detail


def test_a_graph_too_large_is_a_located_error(nn_file, monkeypatch):
    from dslc.frontend import lower

    monkeypatch.setattr(lower, "MAX_NODES", 40)
    path = nn_file("""\
        model M {
            input x: f32[B, 4]
            loss x |> repeat(30, Twice) |> sum
        }
        block Twice() (x: f32[B, 4]) -> f32[B, 4] { return relu(x) + x }
        """)  # fmt: skip
    out = fuzz.check_file(path)
    assert out.detail.startswith(f"{path}:5:") and "more than 40 graph nodes" in out.detail
    monkeypatch.setattr(lower, "MAX_NODES", 100)
    assert fuzz.check_file(path).kind == "compiled"
