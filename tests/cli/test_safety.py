"""Nothing user-supplied is executed, and `import` stays inside the model's folder unless
`--allow-imports-outside` (or DSLC_ALLOW_IMPORTS_OUTSIDE=1) says otherwise."""

from __future__ import annotations

import io
import os
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIRS = [ROOT / "dslc", ROOT / "runtime", ROOT / "grammar"]
ENV = "DSLC_ALLOW_IMPORTS_OUTSIDE"

CALLS = {"eval", "exec", "compile", "__import__"}  # built-ins that run or load code
FORBIDDEN = {
    "pickle": re.compile(
        r"^\s*(import|from)\s+(c?pickle|dill|cloudpickle|shelve)\b|pickle\.loads?\(", re.M
    ),
    "allow_pickle=True": re.compile(r"allow_pickle\s*=\s*True"),
    "torch.load": re.compile(r"torch\.load\s*\("),
    "yaml.load": re.compile(r"yaml\.(unsafe_)?load\s*\("),
}


def builtin_calls(text: str) -> list[tuple[int, str]]:
    """(line, name) of every call of eval/exec/compile/__import__ that is not a method."""
    toks = [t for t in tokenize.generate_tokens(io.StringIO(text).readline)
            if t.type not in (tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT)]  # fmt: skip
    out = []
    for prev, tok, nxt in zip([None, *toks], toks, [*toks[1:], None]):
        if tok.type == tokenize.NAME and tok.string in CALLS and nxt and nxt.string == "(":
            if prev is None or prev.string not in (".", "def"):
                out.append((tok.start[0], tok.string + "("))
    return out


def test_the_package_never_evaluates_or_unpickles():
    sources = [p for d in PACKAGE_DIRS for p in sorted(d.rglob("*.py"))]
    assert len(sources) > 40
    hits = []
    for path in sources:
        text = path.read_text(encoding="utf-8")
        hits += [f"{path.relative_to(ROOT)}:{line}: {what}" for line, what in builtin_calls(text)]
        for what, pattern in FORBIDDEN.items():
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                hits.append(f"{path.relative_to(ROOT)}:{line}: {what}")
    assert hits == []


def test_the_scan_finds_what_it_forbids():
    sample = "x = eval(s)\nimport pickle\nnp.load(f, allow_pickle=True)\nexec (code)\n"
    found = {w for w, p in FORBIDDEN.items() if p.search(sample)}
    assert found == {"pickle", "allow_pickle=True"}
    assert builtin_calls(sample) == [(1, "eval("), (4, "exec(")]
    harmless = '"""may compile(...)"""\nast.literal_eval(s)\nmodel.eval()\nre.compile(r)\n'
    assert builtin_calls(harmless) == []
    assert not any(p.search(harmless) for p in FORBIDDEN.values())


BLOCKS = """\
block Twice(d) (x: f32[N, d]) -> f32[N, d] {
    return x |> dense(d) |> dense(d)
}
"""
MODEL = """\
import "../shared/blocks.nn"

model Reg(features = 1) {
    input x: f32[N, features]
    label y: f32[N, 1]
    output prediction = x |> Twice(features) |> dense(1)
    loss mse(prediction, y)
}

train Reg {
    optimizer sgd(lr = 0.01)
    epochs 1
    batch 32
    metrics mse
    data regression
}
"""


@pytest.fixture
def outside(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV, raising=False)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "blocks.nn").write_text(BLOCKS)
    (tmp_path / "model").mkdir()
    path = tmp_path / "model" / "reg.nn"
    path.write_text(MODEL)
    return path


def test_check_and_compile_refuse_then_allow(outside, dslc_cli):
    for cmd in ("check", "compile"):
        r = dslc_cli(cmd, str(outside))
        assert r.exit_code == 1
        assert f"{outside}:1:1: import error: import \"../shared/blocks.nn\" leaves the " \
               "directory of the main file" in r.stderr  # fmt: skip
        assert "--allow-imports-outside" in r.stderr  # the hint names the flag
        r = dslc_cli(cmd, str(outside), "--allow-imports-outside")
        assert r.exit_code == 0, r.output
        assert ENV not in os.environ  # the flag holds for that command only
    assert r.stdout.strip()


def test_train_eval_predict_take_the_flag(outside, dslc_cli, tmp_path):
    run = tmp_path / "run"
    r = dslc_cli("train", str(outside), "--out", str(run), "--quiet")
    assert r.exit_code == 1 and "leaves the directory of the main file" in r.stderr
    r = dslc_cli("train", str(outside), "--out", str(run), "--quiet", "--allow-imports-outside")
    assert r.exit_code == 0, r.output
    r = dslc_cli("eval", str(outside), "--weights", str(run))
    assert r.exit_code == 1 and "leaves the directory" in r.stderr
    r = dslc_cli("eval", str(outside), "--weights", str(run), "--allow-imports-outside")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("mse ")
    np.savez(tmp_path / "in.npz", x=np.ones((3, 1), np.float32))
    args = ["predict", str(outside), "--weights", str(run), "--input", str(tmp_path / "in.npz")]
    assert dslc_cli(*args).exit_code == 1
    r = dslc_cli(*args, "--allow-imports-outside")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith("# prediction: float32[3, 1]")
    r = dslc_cli("generate", str(outside), "--weights", str(run), "--prompt", "a")
    assert r.exit_code == 1 and "leaves the directory" in r.stderr
    r = dslc_cli("generate", str(outside), "--weights", str(run), "--prompt", "a",
                 "--allow-imports-outside")  # fmt: skip
    assert r.exit_code == 1 and "no vocabulary" in r.stderr  # got past the import
    assert ENV not in os.environ


def test_every_command_documents_the_flag(dslc_cli):
    doc = (ROOT / "docs" / "cli.md").read_text()
    assert "--allow-imports-outside" in doc
    for cmd in ("check", "compile", "train", "eval", "predict", "generate"):
        r = dslc_cli(cmd, "--help")
        assert "--allow-imports-outside" in r.stdout, cmd
