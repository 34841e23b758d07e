"""Fuzz the front end: `python -m dslc.tools.fuzz --count 100000 --seed 1`.

Every input must either compile (parse, resolve, check and lower; for a share of them also
autodiff and the pass pipeline with the verifier) or raise dslc's own DslcError carrying a
location. Any other exception, an error without a location, or an input that takes longer
than the time limit is a failure; failing inputs are written to a corpus directory, one file
each, so that tests/frontend/test_fuzz_corpus.py replays them.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import random
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from dslc.errors import DslcError, ErrorList
from dslc.tools.fuzz_gen import GENERATORS

CORPUS_DIR = Path(__file__).resolve().parents[2] / "tests" / "frontend" / "fuzz_corpus"


# The passes with the verifier after each take ~2 ms a node: a 128-layer GPT (8,500 nodes)
# needs 16 s, so larger graphs are lowered but not sent through the passes.
DEEP_MAX_NODES = 4000


class Hang(Exception):
    """An input ran past the time limit."""


@dataclass
class Outcome:
    """What one input did: `compiled`, `rejected` (located DslcError) or `internal`."""

    kind: str
    detail: str = ""
    deep: bool = False


@contextlib.contextmanager
def time_limit(seconds: float):
    """Raise Hang in the main thread after `seconds` (SIGALRM; no limit where unavailable)."""
    if seconds <= 0 or not hasattr(signal, "setitimer"):
        yield
        return

    def on_alarm(signum, frame):
        raise Hang(f"took longer than {seconds:g} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _unlocated(errors: list[DslcError]) -> list[DslcError]:
    return [e for e in errors if e.span is None or not e.span.file or e.span.line < 1]


def check_file(path: str, *, deep: bool = False, limit: float = 10.0) -> Outcome:
    """Compile the `.nn` file at `path` and classify what happened (never raises but Hang
    is caught too)."""
    from dslc.frontend import load_program
    from dslc.passes import run_pipeline

    try:
        with time_limit(limit):
            try:
                program = load_program(path)
                graphs = (program.train_graph, program.infer_graph)  # both modes lower
            except ErrorList as el:
                bad = _unlocated(el.errors)
                if bad:
                    return Outcome("internal", f"error without a location: {bad[0]}")
                return Outcome("rejected", str(el.errors[0]))
            except DslcError as e:
                if _unlocated([e]):
                    return Outcome("internal", f"error without a location: {e}")
                return Outcome("rejected", str(e))
            deep = deep and len(program.train_graph) <= DEEP_MAX_NODES
            if deep:
                for g in graphs:
                    run_pipeline(g, check=True)
            return Outcome("compiled", deep=deep)
    except Hang as e:
        return Outcome("internal", f"hang: {e}")
    except RecursionError:
        return Outcome("internal", "RecursionError")
    except DslcError as e:  # raised by the passes: a located one still counts as rejected
        if _unlocated([e]):
            return Outcome("internal", f"pass error without a location: {e}")
        return Outcome("rejected", str(e), deep=True)
    except Exception as e:  # noqa: BLE001 - the point: anything else is a bug
        e = getattr(e, "orig_exc", e)  # lark wraps errors raised while building the AST
        tb = traceback.extract_tb(e.__traceback__)[-1]
        where = f"{os.path.basename(tb.filename)}:{tb.lineno}"
        return Outcome("internal", f"{type(e).__name__} at {where}: {e}")


def check_text(text: str, workdir: str, **kw) -> Outcome:
    """Write `text` to `workdir/m.nn` and check it."""
    path = os.path.join(workdir, "m.nn")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    return check_file(path, **kw)


def save_to_corpus(text: str, outcome: Outcome, corpus: Path = CORPUS_DIR) -> Path:
    """One file per failing input, named by its content hash; the first line says why."""
    corpus.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = corpus / f"{digest}.nn"
    if not path.exists():
        why = outcome.detail.splitlines()[0][:200] if outcome.detail else outcome.kind
        path.write_text(f"# fuzz: {why}\n{text}", encoding="utf-8")
    return path


@dataclass
class Summary:
    inputs: int = 0
    compiled: int = 0
    deep: int = 0
    rejected: int = 0
    internal: int = 0
    by_generator: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    seconds: float = 0.0

    def add(self, gen: str, out: Outcome) -> None:
        self.inputs += 1
        self.by_generator[f"{gen}:{out.kind}"] += 1
        if out.kind == "compiled":
            self.compiled += 1
            self.deep += out.deep
        elif out.kind == "rejected":
            self.rejected += 1
        else:
            self.internal += 1
            self.failures[out.detail.splitlines()[0][:120]] += 1

    def report(self) -> str:
        lines = [
            f"inputs run:                      {self.inputs}",
            f"compiled:                        {self.compiled} "
            f"({self.deep} also through autodiff and the passes)",
            f"rejected with a located error:   {self.rejected}",
            f"internal errors (bugs):          {self.internal}",
            f"time:                            {self.seconds:.0f} s",
            "per generator: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_generator.items())),
        ]
        for detail, n in self.failures.most_common(20):
            lines.append(f"  {n:>6} x {detail}")
        return "\n".join(lines)


def run(count: int, seed: int, *, deep_every: int = 10, limit: float = 10.0,
        corpus: Path | None = None, progress: int = 0, log=None) -> Summary:  # fmt: skip
    """Run `count` inputs, round-robin over the generators, from one seed."""
    log = log or (lambda msg: print(msg, flush=True))
    rng = random.Random(seed)
    gens = list(GENERATORS.items())
    summary = Summary()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dslc-fuzz-") as work:
        for i in range(count):
            name, gen = gens[i % len(gens)]
            text = gen(random.Random(rng.getrandbits(64)))
            out = check_text(text, work, deep=(i // len(gens)) % deep_every == 0, limit=limit)
            summary.add(name, out)
            if out.kind == "internal" and corpus is not None:
                save_to_corpus(text, out, corpus)
            if progress and (i + 1) % progress == 0:
                summary.seconds = time.perf_counter() - t0
                log(
                    f"[{i + 1}/{count}] compiled {summary.compiled}, rejected "
                    f"{summary.rejected}, internal {summary.internal}, "
                    f"{summary.seconds:.0f} s"
                )
    summary.seconds = time.perf_counter() - t0
    return summary


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m dslc.tools.fuzz", description=__doc__.split("\n")[0]
    )
    ap.add_argument("--count", type=int, default=1000, help="inputs to run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--deep-every",
        type=int,
        default=10,
        help="also run autodiff and the passes on every K-th input of a generator",
    )
    ap.add_argument("--limit", type=float, default=10.0, help="seconds per input")
    ap.add_argument(
        "--corpus", default=str(CORPUS_DIR), help="where to save failing inputs ('' for nowhere)"
    )
    ap.add_argument("--progress", type=int, default=1000, help="print a line every K inputs")
    args = ap.parse_args(argv)
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 3000))
    corpus = Path(args.corpus) if args.corpus else None
    summary = run(args.count, args.seed, deep_every=max(1, args.deep_every), limit=args.limit,
                  corpus=corpus, progress=args.progress)  # fmt: skip
    print(summary.report())
    return 1 if summary.internal else 0


if __name__ == "__main__":
    sys.exit(main())
