"""`dslc compile`: summary, --emit ir|json|dot, --mode, --after, --passes, --explain, -o."""

from __future__ import annotations

import glob
import json
import os
import re

import pytest

from dslc.cli.compile_cmd import explanation
from dslc.errors import ErrorList, ShapeError, Span
from dslc.ir.builder import Builder
from dslc.ir.graph import Graph
from dslc.ir.types import TensorType

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.nn")))


def totals(text: str) -> dict[str, str]:
    """The `name   value` lines under the summary table."""
    out = {}
    for line in text.splitlines():
        m = re.fullmatch(r"\s*([A-Za-z][\w -]*?)\s{2,}(\S.*?)\s*", line)
        if m and not line.startswith(("┃", "│")):
            out[m.group(1)] = m.group(2)
    return out


def test_default_is_the_inference_summary(fake, model_file, dslc_cli):
    r = dslc_cli("compile", model_file)
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert out.splitlines()[0].strip() == "TinyMLP (infer)"
    layer0 = next(line for line in out.splitlines() if "layers.0" in line)
    assert "f32[N, 32]" in layer0 and "2,080" in layer0
    layer1 = next(line for line in out.splitlines() if "layers.1" in line)
    assert "f32[N, 10]" in layer1 and "330" in layer1
    assert "log_softmax" not in out  # the loss is not part of the inference graph
    t = totals(out)
    assert t["Parameters"] == "2,410  (9.6kB)"
    assert t["trainable"] == "2,410" and t["non-trainable"] == "0"
    # matmul 2*64*32 + add 32 + relu 32 + matmul 2*32*10 + add 10, per row of N
    assert t["FLOPs per forward pass"] == "4.8k*N"
    # f32 results: [N,32] x3 and [N,10] x2
    assert t["Activation memory"] == "464B*N"
    assert t["Symbolic sizes"] == "N"


def test_summary_of_the_training_graph(fake, model_file, dslc_cli):
    r = dslc_cli("compile", model_file, "--mode", "train", "--depth", "1")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].strip() == "TinyMLP (train)"
    assert "(log_softmax, take_along, mean, neg)" in r.stdout


def test_emit_ir(fake, model_file, dslc_cli):
    r = dslc_cli("compile", model_file, "--emit", "ir")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "# TinyMLP · train graph · lowered"
    assert "  %y: i64[N]  (label)" in lines
    mm = next(line for line in lines if "matmul %x" in line)
    assert re.fullmatch(
        r"  %\d+: f32\[N, 32\] = matmul %x, @layers\.0\.W +# tiny\.nn:4:14  \(layers\.0\)", mm
    ), mm
    assert any(re.fullmatch(r"  loss = %\d+: f32\[\]", line) for line in lines)
    assert "grads:" not in lines


def test_emit_json(fake, model_file, dslc_cli):
    r = dslc_cli("compile", model_file, "--emit", "json", "--set", "hidden=16")
    assert r.exit_code == 0, r.output
    obj = json.loads(r.stdout)
    assert obj["version"] == "1.0"
    assert obj["model"] == {
        "name": "TinyMLP",
        "file": model_file,
        "mode": "train",
        "stage": "lowered",
        "hparams": {"hidden": 16},
        "dims": ["N"],
    }
    assert obj["totals"]["params"] == 64 * 16 + 16 + 16 * 10 + 10
    assert [o["name"] for o in obj["outputs"]] == ["logits", "loss"]
    mm = next(n for n in obj["nodes"] if n["op"] == "matmul")
    assert mm["source"] == {"file": model_file, "line": 4, "col": 14, "end_line": 4, "end_col": 27}
    assert mm["shape"] == ["N", 16] and mm["scope"] == "layers.0"


def test_emit_json_infer_mode(fake, model_file, dslc_cli):
    obj = json.loads(dslc_cli("compile", model_file, "--emit", "json", "--mode", "infer").stdout)
    assert obj["model"]["mode"] == "infer"
    assert [o["name"] for o in obj["outputs"]] == ["logits"]
    assert [i["name"] for i in obj["inputs"]] == ["x"]


def test_emit_dot(fake, model_file, dslc_cli):
    r = dslc_cli("compile", model_file, "--emit", "dot")
    assert r.exit_code == 0, r.output
    assert r.stdout.startswith('digraph "TinyMLP" {')
    assert 'label="layers.0";' in r.stdout
    assert re.search(r'n\d+ -> n\d+ \[label="1"\];', r.stdout)


def test_output_file(fake, model_file, dslc_cli, tmp_path):
    out = tmp_path / "g.json"
    r = dslc_cli("compile", model_file, "--emit", "json", "-o", str(out))
    assert r.exit_code == 0, r.output
    assert r.stdout == ""
    assert r.stderr == f"wrote {out}\n"
    assert json.loads(out.read_text())["model"]["name"] == "TinyMLP"
    summary = tmp_path / "s.txt"
    dslc_cli("compile", model_file, "-o", str(summary))
    assert "FLOPs per forward pass" in summary.read_text()
    assert "\x1b[" not in summary.read_text()  # plain text, no colour codes


def test_after_pass(fake, model_file, dslc_cli):
    r = dslc_cli("compile", model_file, "--emit", "ir", "--after", "autodiff")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "# TinyMLP · train graph · autodiff"
    grads = lines[lines.index("grads:") + 1 :]
    assert [g.split(" = ")[0].strip() for g in grads] == [
        "@layers.0.W",
        "@layers.0.b",
        "@layers.1.W",
        "@layers.1.b",
    ]
    obj = json.loads(dslc_cli("compile", model_file, "--emit", "json", "--after", "dce").stdout)
    assert obj["model"]["stage"] == "dce"
    assert len(obj["grads"]) == 4


def test_unknown_pass(fake, model_file, dslc_cli):
    r = dslc_cli("compile", model_file, "--emit", "ir", "--after", "nosuch")
    assert r.exit_code == 1
    assert "Traceback" not in r.output
    assert r.stderr.startswith(
        "config error: no pass named 'nosuch'; the passes are attention, layer_norm, sink_slices, "
        "pack_qkv, project_tables, autodiff"
    )


def test_passes_table(fake, model_file, dslc_cli):
    from dslc.passes import PASS_NAMES

    r = dslc_cli("compile", model_file, "--passes")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    header = next(line for line in lines if "Pass" in line)
    for col in ("Nodes", "Kernels", "Peak memory"):
        assert col in header
    rows = [line for line in lines if line.startswith("│")]
    assert [row.split("│")[1].strip() for row in rows] == PASS_NAMES
    autodiff = next(row for row in rows if row.split("│")[1].strip() == "autodiff")
    # autodiff adds the backward graph: more nodes and kernels than before, more memory
    m = re.search(r"(\d+) -> (\d+) \(\+(\d+)\)", autodiff)
    assert m and int(m.group(2)) - int(m.group(1)) == int(m.group(3)) > 0
    assert re.search(r"256B\*N -> \d+B\*N", autodiff)
    fuse = next(row for row in rows if row.split("│")[1].strip() == "fuse")
    assert re.search(r"(\d+) -> (\d+) \(-\d+\)", fuse.split("│")[3])  # fewer kernels
    assert "FLOPs per forward pass" not in r.stdout  # no summary unless --emit asks


def test_passes_with_emit(fake, model_file, dslc_cli):
    r = dslc_cli("compile", model_file, "--passes", "--emit", "ir")
    assert "Peak memory" in r.stdout and "grads:" in r.stdout


def test_explain(fake, model_file, dslc_cli):
    r = dslc_cli("compile", model_file, "--explain")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    n = int(lines[0].split()[0])
    assert lines[0] == f"{n} fused kernel(s)" and n > 0
    # relu's backward (gt + where) is one kernel, traced to the line with `relu`
    i = next(i for i, line in enumerate(lines) if "= fused gt + where" in line)
    assert lines[i + 1] == "    tiny.nn:4     | h = x |> dense(hidden) |> relu"
    declined = lines[lines.index(next(x for x in lines if "fusion(s) not made" in x)) + 1 :]
    assert declined and all(
        re.match(r"  tiny\.nn:\d+:\d+: `\w+` \(%\d+\) not fused", x) for x in declined
    )
    assert "FLOPs per forward pass" not in r.stdout


def test_explanation_maps_kernels_to_source_lines(tmp_path):
    src = tmp_path / "m.nn"
    src.write_text("model M:\n    input x: f32[4]\n    y = relu(x + 1)\n    z = y * 2\n")
    body = Graph()
    b = Builder(body, span=Span(str(src), 3, 9))
    a0 = b.input("in0", TensorType((4,)))
    h = b.op("relu", b.op("add", a0, b.const(1.0)))
    with b.at(span=Span(str(src), 4, 9)):
        body.outputs["out"] = b.op("mul", h, b.const(2.0))
    g = Graph()
    x = Builder(g).input("x", TensorType((4,)))
    attrs = {"body": body, "pattern": "elementwise"}
    fused = g.add("fused", (x,), TensorType((4,)), attrs, Span(str(src), 3, 9), "blk")
    g.outputs["z"] = fused
    g.meta["fusion_report"] = [
        {
            "producer": 7,
            "producer_op": "matmul",
            "consumer_op": "add",
            "group": fused,
            "span": Span(str(src), 4, 9),
            "reason": "`matmul` (opaque) runs as its own kernel",
        },
        {
            "producer": 0,
            "producer_op": "input",
            "consumer_op": None,
            "group": fused,
            "span": Span(str(src), 2, 5),
            "reason": "not a computation",
        },
    ]
    assert explanation(g).splitlines() == [
        "1 fused kernel(s)",
        "",
        "%1: f32[4] = fused add + relu + mul  [elementwise]  (blk)",
        "    m.nn:3     | y = relu(x + 1)",
        "    m.nn:4     | z = y * 2",
        "",
        "2 fusion(s) not made",
        "  m.nn:2:5: `input` (%0) not fused into (%1): not a computation",
        "  m.nn:4:9: `matmul` (%7) not fused into `add` (%1): `matmul` (opaque) runs as its "
        "own kernel",
    ]


def test_errors_exit_1_without_traceback(fake, model_file, dslc_cli):
    fake.error = ErrorList([ShapeError("mismatch", Span(model_file, 5, 19, 5, 28))])
    r = dslc_cli("compile", model_file, "--emit", "json")
    assert r.exit_code == 1
    assert r.stdout == ""
    assert "Traceback" not in r.output
    assert r.stderr.splitlines()[:3] == [
        f"{model_file}:5:19: shape error: mismatch",
        "   5 |     logits = h |> dense(10)",
        "                         ^^^^^^^^^",
    ]


# --- the examples, through the real front end ---------------------------------------------


@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p) for p in EXAMPLES])
def test_examples_compile(path, dslc_cli):
    r = dslc_cli("compile", path)
    assert r.exit_code == 0, r.output
    assert "FLOPs per forward pass" in r.stdout
    obj = json.loads(dslc_cli("compile", path, "--emit", "json").stdout)
    assert isinstance(obj["totals"]["params"], int) and obj["totals"]["params"] > 0
    assert len(obj["edges"]) == sum(
        len([e for e in obj["edges"] if e["dst"] == n["id"]]) for n in obj["nodes"]
    )
    check = dslc_cli("check", path).stdout
    assert f"{obj['totals']['params']:,} parameters" in check


def explain_bert(dslc_cli, layers: int) -> list[str]:
    """The lines of `dslc compile --explain` for a small BERT classifier without dropout."""
    path = os.path.join(ROOT, "examples", "bert_classifier.nn")
    sets = ["--set", "vocab=50", "--set", f"layers={layers}", "--set", "drop=0.0"]
    r = dslc_cli("compile", path, "--explain", *sets)
    assert r.exit_code == 0, r.output
    return r.stdout.splitlines()


def test_explain_lists_the_operations_cut_to_the_positions_read(dslc_cli):
    lines = explain_bert(dslc_cli, 1)
    i = next(i for i, x in enumerate(lines) if "computed only for the positions" in x)
    assert re.match(r"\d+ operation\(s\) computed only for the positions a slice keeps", lines[i])
    cut = "\n".join(lines[i + 1 : lines.index("", i + 1)])
    assert "bert_classifier.nn:8     | f = x |> dense(ffn" in cut
    assert "matmul (axis 1)" in cut and "gelu (axis 1)" in cut and "attention (axis 1)" in cut


def test_explain_lists_the_packed_projections_and_the_attention_left(dslc_cli):
    lines = explain_bert(dslc_cli, 2)
    i = lines.index("1 attention(s) with q, k and v projected by one matmul")
    assert lines[i + 1].startswith("    bert_classifier.nn:6     | a = x |> attention(heads")
    assert lines[i + 1].endswith("(layers.0.attn)")
    # the last layer's queries are cut to the [CLS] row: its q is not k's and v's input
    assert re.match(
        r"  bert_classifier\.nn:6:\d+: attention \(%\d+\) keeps three projections: q, k and v "
        r"are projected from different tensors",
        lines[i + 2],
    )


def test_explain_lists_the_lookups_of_a_projected_table_in_inference(dslc_cli):
    path = os.path.join(ROOT, "examples", "lstm_sentiment.nn")
    r = dslc_cli("compile", path, "--explain", "--mode", "infer")
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    i = lines.index("1 lookup(s) reading rows of a projected table (computed once)")
    assert lines[i + 1].startswith("    lstm_sentiment.nn:") and lines[i + 1].endswith("(lstm)")
    train = dslc_cli("compile", path, "--explain", "--mode", "train")
    assert "projected table" not in train.stdout  # training changes the parameters every step
