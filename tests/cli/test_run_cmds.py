"""`dslc train / eval / predict / generate` on the real examples, and their error output."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MLP = os.path.join(ROOT, "examples", "mlp_digits.nn")


def rows(run):
    with open(os.path.join(run, "metrics.jsonl")) as fh:
        return [json.loads(line) for line in fh]


def weights(run):
    from dslc.runtime.checkpoint import load_checkpoint

    return load_checkpoint(str(run)).params


def weights_step(run):
    from dslc.runtime.checkpoint import load_checkpoint

    return load_checkpoint(str(run)).meta["step"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short training run of the digits MLP, shared by the read-only tests."""
    from click.testing import CliRunner

    from dslc.cli import main

    run = tmp_path_factory.mktemp("runs") / "mlp"
    r = CliRunner().invoke(main, ["train", MLP, "--epochs", "2", "--out", str(run), "--seed", "1"])
    assert r.exit_code == 0, r.output
    return run, r


def test_train_prints_epochs_and_writes_the_run(trained):
    run, r = trained
    lines = r.stdout.splitlines()
    assert lines[0].startswith("epoch 1/2  step 26  train_loss ")
    assert "val_accuracy" in lines[0] and "val_f1" in lines[0]
    assert lines[-1].startswith("trained DigitsMLP to step 52 (val_accuracy ")
    assert [x["epoch"] for x in rows(run)] == [1, 2]
    assert sorted(os.listdir(run)) == ["checkpoint.safetensors", "metrics.jsonl"]


def test_eval_json_and_text(trained, dslc_cli):
    run, _ = trained
    r = dslc_cli("eval", MLP, "--weights", str(run), "--json")
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert set(res) == {"accuracy", "f1", "examples"} and res["examples"] == 1797
    r = dslc_cli("eval", MLP, "--weights", str(run), "--split", "val", "--metrics", "accuracy")
    assert r.exit_code == 0, r.output
    assert r.stdout.splitlines()[0].startswith("accuracy ")
    assert rows(run)[-1]["val_accuracy"] == pytest.approx(float(r.stdout.split()[1]), abs=1e-4)


def test_predict_to_npz_and_stdout(trained, dslc_cli, tmp_path):
    run, _ = trained
    x = np.random.default_rng(0).random((5, 64)).astype(np.float32) * 16
    np.savez(tmp_path / "in.npz", x=x)
    out = tmp_path / "out.npz"
    r = dslc_cli("predict", MLP, "--weights", str(run), "--input", str(tmp_path / "in.npz"),
                 "-o", str(out))  # fmt: skip
    assert r.exit_code == 0, r.output
    with np.load(out) as f:
        assert f["probs"].shape == (5, 10)
        np.testing.assert_allclose(f["probs"].sum(1), 1, rtol=1e-5)
    r = dslc_cli("predict", MLP, "--weights", str(run), "--input", str(tmp_path / "in.npz"))
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == "# probs: float32[5, 10]" and len(lines[1].split()) == 10


def test_errors_are_reported_without_a_traceback(trained, dslc_cli, tmp_path):
    run, _ = trained
    bad = tmp_path / "bad"
    bad.mkdir()
    data = (run / "checkpoint.safetensors").read_bytes()
    (bad / "checkpoint.safetensors").write_bytes(data[:100])
    results = []

    def call(*args):
        results.append(dslc_cli(*args))
        return results[-1]

    r = call("eval", MLP, "--weights", str(bad))
    assert r.exit_code == 1
    assert "checkpoint error: " in r.stderr and "truncated or corrupt checkpoint" in r.stderr
    assert str(bad / "checkpoint.safetensors") in r.stderr
    r = call("eval", MLP, "--weights", str(run), "--set", "hidden=64")
    assert r.exit_code == 1
    assert "does not fit the model" in r.stderr and "reshaped: h.W" in r.stderr
    r = call("generate", MLP, "--weights", str(run), "--prompt", "hi")
    assert r.exit_code == 1 and "no vocabulary" in r.stderr
    r = call("predict", MLP, "--weights", str(run), "--input", str(tmp_path / "nope.npz"))
    assert r.exit_code == 1 and "no such data file" in r.stderr
    r = call("train", MLP, "--resume", str(tmp_path / "missing"))
    assert r.exit_code == 1 and "no such run directory to resume" in r.stderr
    assert all("Traceback" not in res.output for res in results)


def test_resume_continues_to_the_uninterrupted_weights(dslc_cli, tmp_path):
    whole, part = tmp_path / "whole", tmp_path / "part"
    args = ["--set", "hidden=16", "--seed", "2", "--quiet"]
    assert dslc_cli("train", MLP, "--epochs", "3", "--out", str(whole), *args).exit_code == 0
    assert dslc_cli("train", MLP, "--epochs", "1", "--out", str(part), *args).exit_code == 0
    r = dslc_cli("train", MLP, "--epochs", "3", "--resume", str(part))  # settings from the run
    assert r.exit_code == 0, r.output
    a, b = weights(whole), weights(part)
    for n in a:
        np.testing.assert_array_equal(a[n], b[n])
    assert [x["step"] for x in rows(part)] == [26, 52, 78]


def start_and_kill(cmd: list[str], out, ckpt, epochs: int) -> bool:
    """Start `cmd --epochs E --out out`, SIGSTOP it as soon as its first checkpoint exists,
    then SIGKILL it. True when it was still running at the stop (killed mid-run)."""
    proc = subprocess.Popen([*cmd, "--epochs", str(epochs), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    deadline = time.time() + 120
    try:
        while not ckpt.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        proc.send_signal(signal.SIGSTOP)  # freeze it: no step can pass between check and kill
        running = proc.poll() is None
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    return running and ckpt.exists()


@pytest.mark.slow
def test_a_killed_process_resumes_to_the_same_weights(tmp_path):
    """Kill -9 a real `dslc train` mid-run, resume it, compare with an uninterrupted run.

    The run is frozen (SIGSTOP) the moment its first checkpoint appears and then killed, so
    it is cut mid-run however fast or slow the machine; should a loaded machine still let
    the whole run finish before the stop, the attempt is repeated with a longer run."""
    dslc = [sys.executable, "-c", "from dslc.cli import main; main()"]
    cmd = [*dslc, "train", MLP, "--quiet", "--checkpoint-every", "7", "--set", "hidden=32"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    ckpt = cut / "checkpoint.safetensors"
    for epochs in (12, 48, 192):
        if cut.exists():
            shutil.rmtree(cut)
        if start_and_kill(cmd, cut, ckpt, epochs) and 0 < weights_step(cut) < epochs * 26:
            break  # killed mid-run
    else:
        pytest.fail("the run finished before it could be stopped, three times")
    cmd = [*cmd, "--epochs", str(epochs)]
    subprocess.run([*cmd, "--out", str(whole)], check=True, capture_output=True)
    subprocess.run([*cmd, "--resume", str(cut)], check=True, capture_output=True)
    a, b = weights(whole), weights(cut)
    for n in a:
        np.testing.assert_array_equal(a[n], b[n])
    assert rows(cut) == [dict(r, seconds=c["seconds"]) for r, c in zip(rows(whole), rows(cut))]


BAD = """\
model Bad {
    input x: f32[N, 2]
    label y: f32[N, 1]
    output p = log(x |> dense(1))
    loss mse(p, y)
}

train Bad {
    optimizer sgd(lr = 0.1)
    epochs 1
    batch 4
}
"""


@pytest.mark.parametrize("flag", [[], ["--detect-anomaly"]])
def test_a_nan_names_the_node_and_source_line(dslc_cli, tmp_path, flag):
    (tmp_path / "bad.nn").write_text(BAD)
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.standard_normal((16, 2)).astype(np.float32),
             y=rng.standard_normal((16, 1)).astype(np.float32))  # fmt: skip
    run = tmp_path / "run"
    r = dslc_cli("train", str(tmp_path / "bad.nn"), "--data", str(tmp_path / "d.npz"),
                 "--out", str(run), *flag)  # fmt: skip
    assert r.exit_code == 1
    lines = r.stderr.splitlines()
    assert re.fullmatch(
        re.escape(f"{tmp_path / 'bad.nn'}:4:16: numerical anomaly: node %")
        + r"\d+ \(`log`\) produced NaN",
        lines[0],
    )
    assert lines[1] == "   4 |     output p = log(x |> dense(1))"
    assert "at step 0 (epoch 1, batch 1)" in r.stderr
    assert "training stopped; no checkpoint was written" in r.stderr
    assert "Traceback" not in r.output
    assert not (run / "checkpoint.safetensors").exists()
