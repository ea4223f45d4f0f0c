"""The ``fastbp`` command (fastbp.cli): output, files, determinism, one-line errors.

Commands run in-process through ``fastbp.cli.main`` on the embedded sample, at small
sizes; one test runs the real ``python -m fastbp.cli`` in a subprocess.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from fastbp import cli

SMALL_SPEEDS = ["speeds", "--data", "sample", "--images", "200", "--steps", "12",
                "--seeds", "2", "--minibatch-epochs", "2", "--no-progress"]


def run(capsys, argv):
    status = cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_speeds_table_and_files(capsys, tmp_path):
    status, out, err = run(capsys, SMALL_SPEEDS + ["--out", str(tmp_path), "--depths", "2,4"])
    assert status == 0 and err == ""
    assert "data: embedded MNIST sample" in out
    assert "Speed of learning ||dC/db|| of each hidden layer at initialisation" in out
    assert "[784,30,30,30,30,10]" in out and "last/first" in out and "book (one run)" in out
    assert "12 full-batch steps" in out and "mini-batch 10, 2 epochs" in out
    doc = json.loads((tmp_path / "speeds.json").read_text())
    assert doc["data"]["name"] == "mnist-sample"
    init = doc["speeds_at_init"]
    assert init["depths"] == [2, 4] and init["seeds"] == [0, 1]
    assert len(doc["training_full_batch"]["speeds"][1]) == 13
    assert doc["training_mini_batch"]["batch_mean"] is not None
    pytest.importorskip("matplotlib")
    for name in ("speed_at_init", "initial_gradient", "training_speed_2_layers",
                 "training_speed_4_layers", "training_speed_minibatch"):
        png = tmp_path / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_speeds_without_matplotlib_writes_json_and_says_how(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "_plotting", lambda: None)
    status, out, _ = run(capsys, SMALL_SPEEDS + ["--out", str(tmp_path), "--depths", "2",
                                                 "--minibatch-epochs", "0"])
    assert status == 0
    assert (tmp_path / "speeds.json").exists() and not list(tmp_path.glob("*.png"))
    hint = [line for line in out.splitlines() if line.startswith("no figures")]
    assert hint == ['no figures: matplotlib is not installed (pip install "fastbp[plot]" to '
                    'get them)']


def test_speeds_is_deterministic(capsys, tmp_path):
    argv = SMALL_SPEEDS + ["--depths", "3", "--no-plots", "--seed", "4"]
    run(capsys, argv + ["--out", str(tmp_path / "a")])
    run(capsys, argv + ["--out", str(tmp_path / "b")])
    a = json.loads((tmp_path / "a" / "speeds.json").read_text())
    b = json.loads((tmp_path / "b" / "speeds.json").read_text())
    for key in ("speeds_at_init", "training_full_batch", "training_mini_batch", "per_neuron"):
        a[key].pop("seconds", None)
        b[key].pop("seconds", None)
        assert a[key] == b[key]
    assert a["speeds_at_init"]["seeds"] == [4, 5]


TRAIN = ["train", "--data", "sample", "--n-train", "600", "--epochs", "2", "--no-progress"]


def test_train_prints_each_epoch_and_is_deterministic(capsys, tmp_path):
    status, out, _ = run(capsys, TRAIN + ["--hidden", "30,30", "--seed", "3",
                                          "--out", str(tmp_path / "a")])
    assert status == 0
    assert "network [784,30,30,10], sigmoid" in out and "seed 3" in out
    rows = [line.split() for line in out.splitlines() if line[:5].strip() in ("1", "2")]
    assert len(rows) == 2 and rows[0][1].endswith("%") and len(rows[0]) == 4 + 3
    run(capsys, TRAIN + ["--hidden", "30,30", "--seed", "3", "--out", str(tmp_path / "b")])
    a = json.loads((tmp_path / "a" / "train.json").read_text())["run"]
    b = json.loads((tmp_path / "b" / "train.json").read_text())["run"]
    assert a["accuracy"] == b["accuracy"] and a["speed"] == b["speed"]
    assert a["settings"]["seed"] == 3 and a["sizes"] == [784, 30, 30, 10]


def test_train_options(capsys):
    status, out, _ = run(capsys, TRAIN + [
        "--sizes", "784,20,10", "--activation", "tanh", "--output", "softmax",
        "--cost", "log_likelihood", "--init", "glorot_uniform", "--momentum", "sutskever:0.9",
        "--nesterov", "--dtype", "float32", "--eta", "0.05", "--lambda", "1"])
    assert status == 0
    assert "Sutskever schedule (mu_max=0.9) (Nesterov)" in out and "float32" in out
    acc = float(out.split("final validation accuracy ")[1].split("%")[0])
    assert acc > 60


def test_train_progress_bar(capsys):
    status, out, err = run(capsys, TRAIN[:-1] + ["--progress"])
    assert status == 0
    assert "\rtrain [" in err and "2/2" in err and "val " in err and "speeds " in err
    assert "\r" not in out


@pytest.mark.parametrize(("argv", "expect"), [
    (["train", "--data", "sample", "--sizes", "10,5,10"], "does not fit the data"),
    (["train", "--data", "sample", "--eta", "-1", "--epochs", "1"], "eta"),
    (["train", "--data", "sample", "--activation", "swish", "--epochs", "1"], "swish"),
    (["train", "--data", "/no/such/folder"], "neither"),
    (["train", "--data", "sample", "--batch-size", "0", "--epochs", "1"], "batch_size"),
    (["speeds", "--data", "sample", "--images", "99999", "--no-plots"], "only 4000"),
])
def test_errors_are_one_line(capsys, argv, expect):
    status, out, err = run(capsys, argv)
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert lines[0].startswith(f"fastbp {argv[0]}: error: ") and expect in lines[0]


@pytest.mark.parametrize("argv", [["train", "--epochs", "x"], ["train", "--momentum", "2x"],
                                  ["speeds", "--depths", "a,b"], ["nope"]])
def test_bad_command_lines_are_one_line(capsys, argv):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "error:" in err[0] and "--help" in err[0]


@pytest.mark.parametrize("command", [[], ["speeds"], ["train"], ["chain"], ["info"]])
def test_help(capsys, command):
    with pytest.raises(SystemExit) as exc:
        cli.main([*command, "--help"])
    assert exc.value.code == 0
    assert "usage: fastbp" in capsys.readouterr().out


def test_no_command_prints_help(capsys):
    assert cli.main([]) == 2
    assert "speeds" in capsys.readouterr().out


def test_chain(capsys, tmp_path):
    status, out, _ = run(capsys, ["chain", "--n", "4", "--out", str(tmp_path)])
    assert status == 0
    assert "exploding: w = 100" in out and "25" in out
    assert "peaks at 0.4477 for |w| = 6.894" in out
    doc = json.loads((tmp_path / "chain.json").read_text())
    assert doc["chain"]["exploding"]["factors"] == [25.0, 25.0, 25.0]
    errs = [line for line in out.splitlines() if "max relative difference" in line]
    assert len(errs) == 2 and all(float(e.split()[-1]) < 1e-13 for e in errs)


def test_info(capsys):
    status, out, _ = run(capsys, ["info"])
    assert status == 0
    assert out.startswith("fastbp ") and "backends:" in out and "numpy" in out
    assert "BLAS" in out and "sample" in out and "fashion-mnist" in out


def test_interrupt_is_one_line(capsys, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.ex, "unstable_chain", boom)
    assert cli.main(["chain"]) == 130
    assert capsys.readouterr().err.strip() == "fastbp chain: interrupted"


def test_module_runs_as_a_program():
    proc = subprocess.run([sys.executable, "-m", "fastbp.cli", "--version"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("fastbp ")


def test_console_script():
    exe = shutil.which("fastbp")
    if exe is None:
        pytest.skip("the fastbp console script is not on PATH (`pip install .` installs it)")
    proc = subprocess.run([exe, "info"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "backends:" in proc.stdout


def test_progress_bar_unit():
    import io

    from fastbp._progress import Progress, format_bytes

    s = io.StringIO()
    with Progress(4, "x", stream=s, enabled=True, min_interval=0) as bar:
        bar.update(2, "half")
        bar.write("a line", file=io.StringIO())
        bar.update(2)
    text = s.getvalue()
    assert "x [############............] 2/4" in text and "4/4" in text and text.endswith("\n")
    quiet = io.StringIO()
    with Progress(3, stream=quiet) as bar:  # not a terminal: nothing drawn
        bar.update(3)
    assert quiet.getvalue() == ""
    assert format_bytes(999) == "999 B" and format_bytes(26_421_880) == "26.4 MB"
    assert np.isfinite(len(Progress(None, "n", stream=s, enabled=True).render()))
