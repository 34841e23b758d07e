"""dce: Before/Expected on small graphs."""

from pass_helpers import checked, f32, new_graph, ops_of

from dslc.passes import dce


def test_removes_what_no_root_reads():
    g, b = new_graph()
    x = b.input("x", f32(3))
    dead = b.op("exp", x)
    b.op("log", dead)
    g.outputs["y"] = b.op("relu", x)
    out = checked(dce, g)
    assert ops_of(out) == ["relu"]


def test_keeps_updates_grads_inputs_and_params():
    g, b = new_graph()
    x = b.input("x", f32(3))
    unused_in = b.input("mask", f32(3))
    stat = b.param("stat", f32(3), trainable=False)
    w = b.param("w", f32(3))
    unused_p = b.param("unused", f32(3))
    g.outputs["y"] = b.op("mul", x, w)
    g.updates["stat"] = b.op("add", b.op("scale", stat, c=0.9), b.op("scale", x, c=0.1))
    g.grads["w"] = b.op("neg", x)
    b.op("exp", x)  # dead
    out = checked(dce, g)
    assert sorted(ops_of(out)) == ["add", "mul", "neg", "scale", "scale"]
    for nid in (unused_in, unused_p, stat):
        assert nid in out
    assert out.updates == g.updates


def test_removes_dead_consts():
    g, b = new_graph()
    x = b.input("x", f32(3))
    c = b.const(2.0)
    g.outputs["y"] = b.op("exp", x)
    out = checked(dce, g)
    assert c not in out and c in g
