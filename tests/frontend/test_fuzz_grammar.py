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
LIMIT = 10.0  # seconds per input


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


@settings(max_examples=60, deadline=None, derandomize=True,
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
    assert_clean(src, work, deep=True)  # the unmutated source compiles
    rng = random.Random(name)
    for i in range(20):
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
    ],
)  # fmt: skip
def test_fixed_corpus_inputs_say_what_is_wrong(name, message):
    path = Path(__file__).with_name("fuzz_corpus") / f"{name}.nn"
    out = fuzz.check_file(str(path))
    assert out.kind == "rejected" and out.detail == f"{path}:{message}"
