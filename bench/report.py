"""A Markdown table from the JSON lines of `bench/run.py --json` (for docs/benchmarks.md).

python bench/run.py --json > results.jsonl && python bench/report.py results.jsonl
"""

from __future__ import annotations

import json
import sys


def fmt(v, digits=2) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 100 else f"{v:.0f}"
    return str(v)


def table(rows: list[dict]) -> str:
    head = ("| workload | mode | dslc ms | torch ms | dslc/torch | dslc peak MB | torch peak MB "
            "| cpu share dslc / torch | other cores dslc / torch | reruns dslc / torch "
            "| contended kept dslc / torch |")  # fmt: skip
    lines = [head, "|" + "---|" * 11]
    for r in rows:
        cells = [
            r["workload"], r["mode"], fmt(r["dslc_ms"]), fmt(r["torch_ms"]), fmt(r["ratio"]),
            fmt(r["dslc_peak_mb"], 1), fmt(r["torch_peak_mb"], 1),
            f"{fmt(r['dslc_cpu_share'])} / {fmt(r.get('torch_cpu_share'))}",
            f"{fmt(r['dslc_other_cores'])} / {fmt(r.get('torch_other_cores'))}",
            f"{r['dslc_reruns']} / {r.get('torch_reruns', '-')}",
            f"{r['dslc_contended_kept']} / {r.get('torch_contended_kept', '-')}",
        ]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    rows = []
    for path in argv:
        with open(path, encoding="utf-8") as fh:
            rows += [json.loads(line) for line in fh if line.strip().startswith("{")]
    if not rows:
        print("no rows", file=sys.stderr)
        return 1
    threads = sorted({r["threads"] for r in rows})
    print(f"threads: {', '.join(map(str, threads))}; samples per framework and mode: "
          f"{rows[0]['samples']} (medians)\n")  # fmt: skip
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
