"""fastbp.plotting: every figure renders (Agg) from small experiment results, PNG and SVG."""

from __future__ import annotations

import pytest

matplotlib = pytest.importorskip("matplotlib", reason="matplotlib is the optional plot extra")
matplotlib.use("Agg")

from matplotlib.figure import Figure  # noqa: E402

from fastbp import datasets, plotting  # noqa: E402
from fastbp import experiments as ex  # noqa: E402


@pytest.fixture(scope="module")
def results():
    d = datasets.load_sample()
    return {
        "per_neuron": ex.per_neuron_gradients(d, n_images=200),
        "init": ex.speeds_at_init(d, depths=(2, 3), n_images=200, seeds=2),
        "full": ex.speeds_during_training(d, depths=(2, 3), n_images=200, epochs=5),
        "mini": ex.speeds_during_training(d, depths=(2,), n_images=200, epochs=3, batch_size=20),
        "acc": ex.accuracy_by_depth(d, depths=(1, 2), epochs=2, seeds=2, n_train=300),
        "chain": ex.unstable_chain(lengths=(2, 4, 6), n_random=50),
        "obst": ex.obstacles(d, activations=("sigmoid", "relu"), inits=("normal_scaled",),
                             depths=(2, 3), epochs=1, n_train=200, n_probe=50, window=4),
        "mom": ex.momentum_comparison(d, epochs=2, etas=(0.1,), methods=("sgd", "cm-0.9"),
                                      n_train=200),
    }


CASES = [
    ("training_speed", "full", {}),
    ("training_speed", "full", {"depth": 3}),
    ("training_speed", "mini", {}),
    ("per_neuron", "per_neuron", {}),
    ("speeds_at_init", "init", {}),
    ("saturation", "full", {"depth": 2}),
    ("saturation", "obst", {"activation": "sigmoid", "depth": 3}),
    ("accuracy_by_depth", "acc", {}),
    ("problem1", "chain", {}),
    ("chain", "chain", {}),
    ("obstacles", "obst", {}),
    ("momentum", "mom", {}),
]


@pytest.mark.parametrize(("func", "key", "kw"), CASES,
                         ids=[f"{c[0]}-{c[1]}-{len(c[2])}" for c in CASES])
def test_figure_renders_and_saves(results, tmp_path, func, key, kw):
    png = tmp_path / "f.png"
    fig = getattr(plotting, func)(results[key], path=png, **kw)
    assert isinstance(fig, Figure) and fig.axes
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 1000


def test_svg(results, tmp_path):
    fig = plotting.speeds_at_init(results["init"])
    plotting.save(fig, tmp_path / "f.svg")
    assert b"<svg" in (tmp_path / "f.svg").read_bytes()[:400]


def test_training_speed_is_the_books_figure(results):
    fig = plotting.training_speed(results["full"], depth=3)
    (ax,) = fig.axes
    assert ax.get_yscale() == "log"
    assert ax.get_xlabel() == "Number of epochs of training"
    assert "Speed of learning: 3 hidden layers" in ax.get_title()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == [
        "Hidden layer 1", "Hidden layer 2", "Hidden layer 3"]


def test_bad_selection(results):
    with pytest.raises(ValueError, match="depth=7 was not run"):
        plotting.training_speed(results["full"], depth=7)
    with pytest.raises(ValueError, match="no configuration"):
        plotting.saturation(results["obst"], activation="tanh")


def test_available():
    assert plotting.available() is True
