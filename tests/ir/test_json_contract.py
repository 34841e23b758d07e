"""The JSON contract of docs/ir-json.md: keys, their order, their values."""

from __future__ import annotations

import json

import numpy as np
from ir_graphs import SRC, N, sp

from dslc.ir.builder import Builder
from dslc.ir.dims import Dim
from dslc.ir.graph import Graph
from dslc.ir.json_export import VERSION, to_json, to_json_obj, value_json
from dslc.ir.types import TensorType

TOP_KEYS = [
    "version",
    "model",
    "nodes",
    "edges",
    "inputs",
    "outputs",
    "params",
    "grads",
    "updates",
    "totals",
]
NODE_KEYS = ["id", "op", "shape", "dtype", "param", "scope", "attrs", "source", "flops"]


def export(g, **kw):
    """What a consumer sees: the JSON text parsed back."""
    return json.loads(to_json(g, **kw))


def by_op(obj, op):
    return [n for n in obj["nodes"] if n["op"] == op]


def test_top_level_keys_in_order(mlp):
    obj = export(mlp, name="TinyMLP", file=SRC, mode="train", hparams={"hidden": 32})
    assert list(obj) == TOP_KEYS
    assert obj["version"] == VERSION == "1.0"
    assert obj["model"] == {
        "name": "TinyMLP",
        "file": SRC,
        "mode": "train",
        "stage": "lowered",
        "hparams": {"hidden": 32},
        "dims": ["N"],
    }


def test_nodes(mlp):
    obj = export(mlp)
    assert all(list(n) == NODE_KEYS for n in obj["nodes"])
    assert [n["id"] for n in obj["nodes"]] == mlp.topo_order()
    (mm, _) = by_op(obj, "matmul")
    assert mm == {
        "id": 4,
        "op": "matmul",
        "shape": ["N", 32],
        "dtype": "f32",
        "param": None,
        "scope": "layers.0",
        "attrs": {},
        "source": {"file": SRC, "line": 3, "col": 9, "end_line": 3, "end_col": 12},
        "flops": "4096*N",
    }
    w = next(n for n in obj["nodes"] if n["param"] == "layers.0.W")
    assert (w["op"], w["shape"], w["attrs"]["init"]) == ("param", [64, 32], "glorot_uniform")
    mean = by_op(obj, "mean")[0]
    assert mean["attrs"] == {"axes": [0], "keepdims": False}
    assert mean["shape"] == [] and mean["flops"] == "N"


def test_edges_keep_operand_order(mlp):
    obj = export(mlp)
    assert {"src": 0, "dst": 4, "operand": 0} in obj["edges"]
    assert {"src": 2, "dst": 4, "operand": 1} in obj["edges"]
    take = by_op(obj, "take_along")[0]["id"]
    assert [e for e in obj["edges"] if e["dst"] == take] == [
        {"src": 12, "dst": take, "operand": 0},
        {"src": 1, "dst": take, "operand": 1},
    ]
    assert len(obj["edges"]) == sum(len(mlp.data(n)["inputs"]) for n in mlp.g.nodes)


def test_tables(mlp):
    mlp.grads["layers.1.b"] = 10
    obj = export(mlp)
    assert obj["inputs"] == [
        {"name": "x", "node": 0, "shape": ["N", 64], "dtype": "f32", "role": "input"},
        {"name": "y", "node": 1, "shape": ["N"], "dtype": "i64", "role": "label"},
    ]
    assert obj["outputs"] == [
        {"name": "logits", "node": 10, "shape": ["N", 10], "dtype": "f32"},
        {"name": "loss", "node": 15, "shape": [], "dtype": "f32"},
    ]
    assert obj["params"][0] == {
        "name": "layers.0.W",
        "node": 2,
        "shape": [64, 32],
        "dtype": "f32",
        "count": 2048,
        "trainable": True,
        "state": False,
        "frozen": False,
        "init": "glorot_uniform",
        "init_args": [],
    }
    state = obj["params"][-1]
    assert (state["name"], state["trainable"], state["state"]) == ("norm.mean", False, True)
    assert obj["grads"] == [{"param": "layers.1.b", "node": 10}]
    assert obj["updates"] == []


def test_totals(mlp):
    totals = export(mlp)["totals"]
    # stub FLOPs: 2*64*32 + 32 + 32 + 2*32*10 + 10 (dense) + 3*10 + 0 + 1 (loss) per row, + 1
    assert totals == {
        "params": 2410,
        "params_non_trainable": 32,
        "param_bytes": 4 * 2442,
        "flops": "4841*N + 1",
        "flops_terms": [{"coef": 4841, "dims": {"N": 1}}, {"coef": 1, "dims": {}}],
        "flops_at": {"dims": {"N": 1}, "flops": 4842},
        "activation_bytes": "508*N + 8",
        "nodes": 16,
    }


def test_frozen_params_are_not_trainable(mlp):
    mlp.data(mlp.params["layers.1.W"])["attrs"]["frozen"] = True
    obj = export(mlp)
    assert obj["totals"]["params"] == 2410 - 320
    assert obj["totals"]["params_non_trainable"] == 32 + 320
    w = next(p for p in obj["params"] if p["name"] == "layers.1.W")
    assert (w["trainable"], w["frozen"], w["state"]) == (False, True, False)


def test_symbolic_attrs_and_constants(stub_registry):
    T = Dim.sym("T")
    g = Graph()
    b = Builder(g, span=sp(2))
    x = b.input("x", TensorType((N, T, 8)))
    r = b.op("reshape", x, shape=(N * T, 8))
    big = b.op("add", r, b.const(np.ones((1, 8)) * np.arange(8)))
    g.outputs["y"] = b.op("mul", big, b.const(float("nan")))
    obj = export(g)
    reshape = by_op(obj, "reshape")[0]
    assert reshape["attrs"] == {"shape": ["N*T", 8]}
    assert reshape["shape"] == ["N*T", 8]
    consts = by_op(obj, "const")
    assert consts[0]["attrs"]["value"] == {
        "dtype": "f32",
        "shape": [1, 8],
        "data": [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]],
    }
    assert consts[1]["attrs"]["value"] == "nan"
    assert obj["model"]["dims"] == ["N", "T"]
    assert obj["totals"]["flops"] == "16*N*T"
    assert obj["totals"]["flops_at"] == {"dims": {"N": 1, "T": 1}, "flops": 16}


def test_value_json():
    assert value_json((Dim.sym("T") + 1, (0, 2))) == ["T + 1", [0, 2]]
    assert value_json(np.zeros(2000, np.float32))["data"] is None
    assert value_json(float("-inf")) == "-inf"
    assert value_json(np.int64(3)) == 3 and type(value_json(np.int64(3))) is int


def test_fused_node_carries_its_body(mlp):
    body = Graph()
    bb = Builder(body, span=sp(3, 9))
    a0 = bb.input("a0", TensorType((N, 32)))
    body.outputs["out"] = bb.op("relu", a0)
    fused = mlp.add("fused", (5,), TensorType((N, 32)), {"body": body}, scope="layers.0")
    mlp.replace_uses(6, fused)
    mlp.remove(6)
    node = next(n for n in export(mlp)["nodes"] if n["op"] == "fused")
    assert list(node) == NODE_KEYS + ["body"]
    assert node["attrs"] == {} and node["flops"] == "32*N"
    assert [n["op"] for n in node["body"]["nodes"]] == ["input", "relu"]
    assert node["body"]["edges"] == [{"src": 0, "dst": 1, "operand": 0}]
    out = {"name": "out", "node": 1, "shape": ["N", 32], "dtype": "f32"}
    assert node["body"]["outputs"] == [out]


def test_output_is_stable(mlp):
    assert to_json(mlp) == to_json(mlp.copy())
    assert to_json_obj(mlp) == json.loads(to_json(mlp))
