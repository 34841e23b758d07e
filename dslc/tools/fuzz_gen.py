"""Input generators for fuzzing the front end; each takes a `random.Random` and returns text.

- `grammar_program`: a random derivation of grammar/nn.lark (syntactically valid, mostly
  meaningless), with tokens drawn from small pools of names and numbers the language uses.
- `structured_program`: a near-valid model: hyper-parameters, inputs, blocks, `repeat`,
  built-in layers, asserts, imports (often of files that do not exist) and a train section.
- `mutated_program`: an example or a built-in layer file (with a small model that uses its
  blocks) after a few token edits: delete, duplicate, swap, insert, change a number or a name.
"""

from __future__ import annotations

import functools
import random
import re
from pathlib import Path

from dslc.layers import LAYERS_DIR

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES_DIR = ROOT / "examples"

NAMES = ["x", "y", "h", "N", "B", "T", "D", "d", "C", "units", "heads", "layers", "dense", "relu",
         "softmax", "cross_entropy", "mse", "repeat", "conv2d", "layer_norm", "attention",
         "embedding", "lstm", "flatten", "prim", "f32", "i64", "float", "int", "any", "training",
         "sqrt", "rank", "range", "shape", "W", "b", "M", "Blk", "zeros", "ones", "normal",
         "adam", "sgd", "lr", "epochs", "batch", "data", "digits", "metrics", "accuracy",
         "reshape", "transpose", "sum", "mean", "gelu", "tanh", "sigmoid", "matmul",
         "concat"]  # fmt: skip
INTS = ["0", "1", "2", "3", "4", "8", "16", "64", "1_000", "00", "7", "999999999999999999999"]
FLOATS = ["0.5", "1e-3", ".5", "1.", "1e308", "1e400", "0.0", "2.5e-1"]
STRINGS = ['"x"', '"blocks.nn"', '"missing.nn"', '"../up.nn"', '"/abs.nn"', "'w.safetensors'",
           '""', '"layers.*"', '"a\\"b"', '"\\n"']  # fmt: skip
GLOBS = ["*", "layers.*", "fc1.W", "a?", "[ab]*", "x-y"]
SPACES = [" ", " ", " ", "\n", "\n    ", "  # note\n", "\t"]


# --- random derivations of the grammar -------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _grammar():
    """(rules: name -> [expansion], terminal name -> PatternStr value or None, min depths)."""
    from lark.lexer import PatternStr

    from dslc.frontend.parse import parser

    p = parser()
    rules: dict[str, list[list[tuple[bool, str]]]] = {}
    for r in p.rules:
        rules.setdefault(r.origin.name, []).append([(s.is_term, s.name) for s in r.expansion])
    literal = {t.name: t.pattern.value for t in p.terminals if isinstance(t.pattern, PatternStr)}
    # the fewest nested rules each symbol needs to finish (a fixed point)
    depth: dict[str, float] = {name: float("inf") for name in rules}
    changed = True
    while changed:
        changed = False
        for name, exps in rules.items():
            for exp in exps:
                d = 1 + max((depth[s] for t, s in exp if not t), default=0)
                if d < depth[name]:
                    depth[name] = d
                    changed = True
    return rules, literal, depth


def _terminal(name: str, literal: dict[str, str], rng: random.Random) -> str:
    if name in literal:
        return literal[name]
    pools = {"NAME": NAMES, "INT": INTS, "FLOAT": FLOATS, "STRING": STRINGS, "GLOB": GLOBS,
             "COMP_OP": ["==", "!=", "<", "<=", ">", ">="], "ADD_OP": ["+", "-"],
             "MUL_OP": ["*", "/", "//", "%", "@"], "POW": ["**"], "ELLIPSIS": ["..."]}  # fmt: skip
    return rng.choice(pools.get(name, NAMES))


def grammar_program(rng: random.Random, max_depth: int = 12, max_tokens: int = 400) -> str:
    """A random sentence of the grammar (it parses unless a keyword and a name run together)."""
    rules, literal, depth = _grammar()
    out: list[str] = []

    def expand(sym: str, level: int) -> None:
        if len(out) > max_tokens:
            level = max_depth  # finish quickly
        exps = rules[sym]
        if level >= max_depth:
            best = min(max((depth[s] for t, s in e if not t), default=0) for e in exps)
            exps = [e for e in exps if max((depth[s] for t, s in e if not t), default=0) == best]
        exp = rng.choice(exps)
        for is_term, s in exp:
            if is_term:
                out.append(_terminal(s, literal, rng))
            else:
                expand(s, level + 1)

    expand("start", 0)
    return "".join(tok + rng.choice(SPACES) for tok in out)


# --- near-valid programs -----------------------------------------------------------------------


def _pick(rng: random.Random, good: list[str], bad: list[str], p_bad: float = 0.05) -> str:
    """Mostly a good choice; now and then one that should be rejected."""
    return rng.choice(bad if bad and rng.random() < p_bad else good)


_ACTS = [
    "relu",
    "gelu",
    "tanh",
    "sigmoid",
    "softmax",
    "layer_norm",
    "dropout(0.1)",
    "rms_norm",
    "dense(units)",
    "dense(d)",
    "dense(4, bias = false)",
    'dense(4, name = "fc")',
    "prim.relu",
    "prim.exp",
    "Blk(d)",
    "repeat(2, Blk(d))",
    "repeat(layers, Blk(d))",
]
_BAD_ACTS = ["dropout(1.5)", "dense(0)", "dense(-1)", "repeat(0, Blk(d))", "attention(heads)",
             "attention(heads, causal = true)", "lstm(8)", "gru(4)", "rnn(4)", "flatten",
             "conv2d(4, kernel = 3)", "max_pool(2)", "global_avg_pool", "batch_norm",
             "dense(4, nme = 1)", "reshape([-1])", "transpose", "mean(axis = -1)", "sum",
             "missing_layer", "embedding(10, 4)", "dense", "dense(3.5)", "dense(\"a\")",
             "spatial_dropout(0.2)", "positional_embedding", "softmax(axis = 5)"]  # fmt: skip
_DIMS = ["B", "d", "T", "4"]
_BAD_DIMS = ["N", "D", "64", "1", "0", "...", "d * 2", "-1", "units", "N + 1"]
_TYPES = ["f32"]
_BAD_TYPES = ["f64", "i64", "i32", "bool", "float", "int", "f16", "u8", "str"]


def _shape(rng: random.Random, good: str) -> str:
    if rng.random() > 0.15:
        return good
    dims = [_pick(rng, _DIMS, _BAD_DIMS, 0.4) for _ in range(rng.choice([0, 1, 2, 2, 3, 4]))]
    if rng.random() < 0.1:
        return _pick(rng, _TYPES, _BAD_TYPES, 0.5)
    return f"{_pick(rng, _TYPES, _BAD_TYPES, 0.3)}[{', '.join(dims)}]"


def _expr(rng: random.Random, names: list[str], level: int = 0) -> str:
    r = rng.random()
    if level > 2 or r < 0.25:
        return _pick(rng, names[-2:], ["1", "2.0", "d", "units", "y", "nothing"], 0.1)
    if r < 0.65:
        chain = " |> ".join(_pick(rng, _ACTS, _BAD_ACTS, 0.1) for _ in range(rng.randint(1, 3)))
        return f"({_expr(rng, names, level + 1)} |> {chain})"
    if r < 0.8:
        op = _pick(rng, ["+", "-", "*"], ["/", "@", "**", "//", "%"], 0.2)
        return f"({_expr(rng, names, level + 1)} {op} {_expr(rng, names, level + 1)})"
    if r < 0.88:
        idx = _pick(rng, [":, :", "..., :"], ["0", ":, 0", "..., -1", "1:", "::2", "none",
                                               ":, :, 0", "x", "5:2"], 0.5)  # fmt: skip
        return f"{_expr(rng, names, level + 1)}[{idx}]"
    fn = _pick(rng, ["softmax", "relu", "tanh"], ["concat", "matmul", "mse", "cross_entropy",
                                                 "shape", "rank", "zeros_like", "sum", "max",
                                                 "where"], 0.3)  # fmt: skip
    args = ", ".join(_expr(rng, names, level + 1) for _ in range(_pick(rng, [1], [2, 3])))
    return f"{fn}({args})"


def _block(rng: random.Random) -> str:
    body = ["    h = x |> dense(d) |> relu"]
    if rng.random() < 0.5:
        cond = _pick(rng, ["d > 0", "d % 2 == 0"], ["d == 0", "d", "x", "d % 0"])
        body.insert(0, f"    assert {cond}" + (', "d must fit"' if rng.random() < 0.5 else ""))
    if rng.random() < 0.3:
        dim = _pick(rng, ["d"], ["D", "0", "-d", "x"])
        init = _pick(rng, ["ones", "zeros", "normal(0, 1)"], ["uniform(1, 0)", "bogus", "1"])
        body.append(f"    param g: f32[{dim}] = {init}")
        body.append("    h = h * g")
    if rng.random() < 0.2:
        cond = _pick(rng, ["training", "d > 2", "true"], ["x", "none"])
        body.append(f"    if {cond} {{ h = h + x }}")
    body.append(f"    return {_pick(rng, ['h', 'x + h', 'h |> dense(d)'], ['h[0]', 'y', 'd'])}")
    ret = _pick(rng, ["-> f32[B, d]", "-> f32[..., d]", ""], ["-> f32[B, 2]", "-> i64[B]"])
    args = _pick(rng, ["(d)", "(d = 4)", "(d, heads = 2)"], ["()", "(d, d)"])
    xin = _pick(rng, ["f32[B, d]", "f32[..., d]", "float[..., d]"], ["f32[B]", "i64[B, d]"])
    return f"block Blk{args} (x: {xin}) {ret} {{\n" + "\n".join(body) + "\n}\n"


_FIELDS = {
    "optimizer": (["adam(lr = 1e-3)", "sgd(lr = 0.1, momentum = 0.9)", "adamw"],
                  ["adam(lr = -1)", "rmsprop(lr = 1e-2)", "nadam", "adam(betas = [0.9])",
                   "adam(1, 2, 3)"]),
    "epochs": (["2", "1"], ["0", "-1", "1.5", "\"x\""]),
    "batch": (["16", "4"], ["0", "N"]),
    "metrics": (["accuracy", "accuracy, f1", "mae"], ["perplexity", "bogus_metric"]),
    "data": (["digits", "regression", "tiny_text(seq = 8)"], ["\"missing.npz\"", "nothing"]),
    "schedule": (["cosine", "warmup_cosine(warmup = 10)"], ["step(every = 0)", "bogus"]),
    "clip_norm": (["1.0"], ["-1", "x"]),
    "val_split": (["0.1", "0"], ["1.5"]),
    "seed": (["1"], ["-3"]),
    "weight_decay": (["0.01"], ["-0.1"]),
    "freeze": (["blk.*"], ["layers.*", "\"nothing.*\"", "fc.W"]),
    "load": ([], ["\"missing.safetensors\"", "\"w.safetensors\" into layers"]),
    "bogus_field": ([], ["1"]),
}  # fmt: skip


def _train(rng: random.Random) -> str:
    chosen = rng.sample(list(_FIELDS), rng.randint(0, 5))
    lines = []
    for k in chosen:
        good, bad = _FIELDS[k]
        if good or rng.random() < 0.2:
            lines.append(f"    {k} {_pick(rng, good or bad, bad)}")
    name = _pick(rng, ["M", ""], ["Other"])
    return f"train {name} {{\n" + "\n".join(lines) + "\n}\n"


def structured_program(rng: random.Random) -> str:
    """A model close to a valid one, with now and then a few things wrong."""
    parts = []
    if rng.random() < 0.08:
        parts.append(f"import {rng.choice(STRINGS)}" + (" as L" if rng.random() < 0.3 else ""))
    parts.append(_block(rng))
    hp = _pick(rng, ["(d = 8, heads = 2, layers = 2, units = 4)", "(d = 4, heads = 1, layers = 1,"
                     " units = 3)"], ["(d = 8, layers = 2, units)", "(d = 8, d = 4)",
                     "(d = 8.5, heads = 2, layers = 2, units = 4)",
                     "(d = 0, heads = 3, layers = -1, units = 4)",
                     "(d = 8, heads = 2, layers = 2, units = 4, name = \"x\")"])  # fmt: skip
    lines = [f"    input x: {_shape(rng, rng.choice(['f32[B, d]', 'f32[B, T, d]']))}"]
    lines.append(f"    label y: {_shape(rng, 'i64[B]')}")
    names = ["x"]
    for i in range(rng.randint(1, 4)):
        stmt = rng.random()
        if stmt < 0.1:
            cond = _pick(rng, ["d > 0", "d % heads == 0", "units < 100"], ["x", "d", "d < 0"])
            lines.append(f"    assert {cond}" + _pick(rng, ["", ', "msg"'], [", 3"]))
        elif stmt < 0.2:
            val = _pick(rng, ["d * 2", "d // 2 + 1"], ["x", "d // 0", "1 / 0", "2 ** 80"])
            lines.append(f"    let k{i} = {val}")
        else:
            lines.append(f"    h{i} = {_expr(rng, names)}")
            names.append(f"h{i}")
    last = names[-1]
    head = f"{last} |> dense(units)"
    if rng.random() < 0.8:
        lines.append(f"    output {_pick(rng, ['p = ' + head, 'logits = ' + head], ['q'])}")
    loss = _pick(rng, [f"cross_entropy({head}, y)", f"({head}) |> sum"],
                 [f"mse({last}, y)", f"cross_entropy({last}, y)", "x", "y |> sum"])  # fmt: skip
    if rng.random() < 0.95:
        lines.append(f"    loss {loss}")
    parts.append(f"model M{hp} {{\n" + "\n".join(lines) + "\n}\n")
    if rng.random() < 0.6:
        parts.append(_train(rng))
    return "\n".join(parts)


# --- mutations of real sources -----------------------------------------------------------------

TOKEN = re.compile(r'"[^"\n]*"|[A-Za-z_]\w*|\d[\d_]*\.?\d*(?:[eE][-+]?\d+)?|\|>|->|\*\*|==|!=|<=|'
                   r">=|//|\.\.\.|\S")  # fmt: skip
NUMBER = re.compile(r"\d[\d_]*\.?\d*(?:[eE][-+]?\d+)?")
INSERTS = ["0", "-1", "1.5", "N", "x", "none", "[1, 2]", '"s"', "true", "(", ")", "]", "...",
           ":", ",", "|>", "dense", "repeat", "prim.relu", "h", "d", "T", "{", "}", "=", "@",
           "if", "return", "assert", "param", "import", "model", "block", "let"]  # fmt: skip
NEW_NUMBERS = ["0", "1", "-1", "3", "7", "1000000", "0.5", "1e-9", "1e40", "2", "65", "00"]

# a small model per built-in layer file, so a mutated copy of the file has a user
_LAYER_DRIVERS = {
    "core.nn": "model M {\n input x: f32[N, 8]\n label y: i64[N]\n"
               " h = x |> dense(4) |> dropout(0.1)\n"
               " z = reshape(x, [N, 2, 4]) |> spatial_dropout(0.2)\n"
               " e = embedding(y, 10, 4) + positional_embedding(1, 4)\n"
               " loss cross_entropy(h, y) + mse(e, e) + mse(z, z)\n}\n",
    "attention.nn": "model M {\n input x: f32[B, T, 8]\n"
                    " loss attention(x, 2, causal = true) |> sum\n}\n",
    "conv.nn": "model M {\n input x: f32[N, 1, 8, 8]\n label y: i64[N]\n"
               " h = x |> conv2d(2, kernel = 3, padding = 1) |> max_pool(2) |> avg_pool(2)"
               " |> global_avg_pool\n loss cross_entropy(h, y)\n}\n",
    "losses.nn": "model M {\n input x: f32[N, 3]\n label y: i64[N]\n"
                 " loss cross_entropy(x, y, label_smoothing = 0.1) + mse(x, x)"
                 " + binary_cross_entropy(x, x)\n}\n",
    "norm.nn": "model M {\n input x: f32[N, 4, 3]\n"
               " loss (x |> batch_norm |> layer_norm |> rms_norm) |> sum\n}\n",
    "recurrent.nn": "model M {\n input x: f32[B, T, 3]\n"
                    " h = x |> rnn(4) |> lstm(4) |> gru(2, return_sequences = false)\n"
                    " loss h |> sum\n}\n",
}  # fmt: skip


@functools.lru_cache(maxsize=1)
def seed_sources() -> list[tuple[str, str]]:
    """(name, text) of every example and every built-in layer file (with its driver model)."""
    out = [(p.name, p.read_text(encoding="utf-8")) for p in sorted(EXAMPLES_DIR.glob("*.nn"))]
    for p in sorted(LAYERS_DIR.glob("*.nn")):
        driver = _LAYER_DRIVERS.get(p.name, "")
        out.append((f"layers/{p.name}", p.read_text(encoding="utf-8") + "\n" + driver))
    return out


def mutate(src: str, rng: random.Random, edits: int | None = None) -> str:
    """`edits` (default 1-3) random token edits of `src`."""
    for _ in range(edits or rng.randint(1, 3)):
        spans = [(m.start(), m.end()) for m in TOKEN.finditer(src)]
        if not spans:
            return src + rng.choice(INSERTS)
        a, b = rng.choice(spans)
        tok = src[a:b]
        r = rng.random()
        if r < 0.25:  # delete
            src = src[:a] + src[b:]
        elif r < 0.4:  # duplicate
            src = src[:a] + tok + " " + tok + src[b:]
        elif r < 0.55:  # swap with a later token
            c, d = rng.choice(spans)
            if c >= b:
                src = src[:a] + src[c:d] + src[b:c] + tok + src[d:]
        elif r < 0.7:  # change a number (or a token into a number)
            nums = [(m.start(), m.end()) for m in NUMBER.finditer(src)]
            if nums:
                a, b = rng.choice(nums)
            src = src[:a] + rng.choice(NEW_NUMBERS) + src[b:]
        elif r < 0.85:  # change a name into another name of the same source
            names = [s for s in spans if src[s[0]].isalpha() or src[s[0]] == "_"]
            if names:
                a, b = rng.choice(names)
                other = src[slice(*rng.choice(names))]
                src = src[:a] + (other if rng.random() < 0.7 else rng.choice(NAMES)) + src[b:]
        else:  # replace with a random token
            src = src[:a] + rng.choice(INSERTS) + src[b:]
    return src


def mutated_program(rng: random.Random) -> str:
    _, src = rng.choice(seed_sources())
    return mutate(src, rng)


GENERATORS = {
    "grammar": grammar_program,
    "structured": structured_program,
    "mutation": mutated_program,
}
