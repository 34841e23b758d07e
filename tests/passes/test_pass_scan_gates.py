"""scan_gates: an LSTM scan with a backward keeps its gates; results do not change."""

import numpy as np
from pass_helpers import checked, f64, new_graph, results

from dslc.passes import autodiff, scan_gates

B, T, D, H = 2, 3, 4, 5


def lstm_graph(read_c=False, read_whole=False):
    g, b = new_graph()
    x = b.input("x", f64(B, T, D))
    w = b.param("w", f64(D, 4 * H))
    u = b.param("u", f64(H, 4 * H))
    h0 = b.input("h0", f64(B, H))
    states = b.op("lstm_scan", b.op("matmul", x, w), u, h0, h0)
    h = b.op("index", states, axis=2, i=0)
    loss = b.op("sum", b.op("square", h))
    if read_c:
        loss = b.op("add", loss, b.op("sum", b.op("index", states, axis=-2, i=1)))
    if read_whole:
        loss = b.op("add", loss, b.op("sum", states))
    g.outputs["loss"] = loss
    return g, states


def feeds():
    rng = np.random.default_rng(3)
    return {
        "x": rng.standard_normal((B, T, D)),
        "w": rng.standard_normal((D, 4 * H)) * 0.5,
        "u": rng.standard_normal((H, 4 * H)) * 0.5,
        "h0": rng.standard_normal((B, H)),
    }


def test_a_scan_with_a_backward_keeps_its_gates_and_the_results_stay():
    for read_c in (False, True):
        g, states = lstm_graph(read_c=read_c)
        grad = checked(autodiff, g)
        out = checked(scan_gates, grad)
        node = out.node(states)
        assert node.attrs["gates"] is True
        assert [d.value for d in node.shape] == [B, T, 6, H]
        assert not grad.node(states).attrs.get("gates")  # the input graph is not changed
        want, got = results(grad, feeds()), results(out, feeds())
        assert want.keys() == got.keys()
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-12, atol=1e-12)


def test_a_scan_read_whole_or_without_a_backward_is_left_alone():
    g, states = lstm_graph(read_whole=True)
    out = checked(scan_gates, checked(autodiff, g))
    assert not out.node(states).attrs.get("gates")
    g, states = lstm_graph()
    del g.outputs["loss"]
    g.outputs["h"] = states
    out = checked(scan_gates, g)
    assert not out.node(states).attrs.get("gates")


def test_a_scan_with_gates_has_no_gradient_rule():
    """`gates` is set after autodiff; differentiating such a scan is a bug, said plainly."""
    import pytest

    from dslc.errors import InternalError

    g, b = new_graph()
    x = b.input("x", f64(B, T, 4 * H))
    u = b.param("u", f64(H, 4 * H))
    h0 = b.input("h0", f64(B, H))
    states = b.op("lstm_scan", x, u, h0, h0, gates=True)
    g.outputs["loss"] = b.op("sum", b.op("index", states, axis=2, i=0))
    with pytest.raises(InternalError, match="gates=true has no gradient rule"):
        autodiff(g)
