"""Mutated examples either compile or fail with dslc's own located error (a seeded smoke run;
the full fuzzing campaign lives with the hardening work)."""

from __future__ import annotations

import random
import re
from pathlib import Path

from dslc.errors import DslcError, ErrorList
from dslc.frontend import load_program

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
TOKEN = re.compile(r'"[^"\n]*"|[A-Za-z_]\w*|\d+\.?\d*(?:e-?\d+)?|\|>|->|\*\*|==|//|\.\.\.|\S')
INSERTS = ["0", "-1", "1.5", "N", "x", "none", "[1, 2]", '"s"', "true", "(", ")", "]", "...",
           ":", ",", "|>", "dense", "repeat", "prim.relu", "h", "d", "T"]  # fmt: skip


def mutate(src: str, rng: random.Random) -> str:
    for _ in range(rng.randint(1, 3)):
        spans = [(m.start(), m.end()) for m in TOKEN.finditer(src)]
        a, b = rng.choice(spans)
        r = rng.random()
        if r < 0.35:
            src = src[:a] + src[b:]
        elif r < 0.55:
            src = src[:a] + src[a:b] + " " + src[a:b] + src[b:]
        elif r < 0.7:
            c, d = rng.choice(spans)
            if c > b:
                src = src[:a] + src[c:d] + src[b:c] + src[a:b] + src[d:]
        else:
            src = src[:a] + rng.choice(INSERTS) + src[b:]
    return src


def test_mutated_examples_fail_cleanly(tmp_path):
    rng = random.Random(1234)
    sources = [p.read_text() for p in sorted(EXAMPLES.glob("*.nn"))]
    path = tmp_path / "m.nn"
    for _ in range(300):
        path.write_text(mutate(rng.choice(sources), rng))
        try:
            load_program(str(path))
        except ErrorList as el:
            assert all(e.span is not None for e in el.errors if e.kind != "config error")
        except DslcError as e:
            assert e.span is not None or e.kind == "config error", str(e)
