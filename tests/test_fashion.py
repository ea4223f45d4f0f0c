"""Full Fashion-MNIST (Debian's ``dataset-fashion-mnist``): loading, and training parity.

Skipped, with the reason, where the data set is not installed (``.ci/run`` installs it
where apt is available).  The book's full 30-epoch comparison of ``fastbp train`` with
the network2-style reference is ``docs/chapter5/compare_accuracy.py`` (minutes, not run
here); these tests run one epoch of the full 50,000 images per depth.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import fastbp
from fastbp import cli, datasets
from fastbp import experiments as ex

sys.path.insert(0, str(Path(__file__).parent))
import network2_minibatch as n2  # noqa: E402

pytestmark = pytest.mark.skipif(
    datasets.find("fashion-mnist") is None,
    reason="Fashion-MNIST not installed (apt-get install dataset-fashion-mnist; .ci/run "
           "installs it where apt is available)",
)


@pytest.fixture(scope="module")
def fashion():
    return datasets.load_fashion_mnist()


def test_fashion_mnist_book_split(fashion):
    (X, y), (Xv, yv), (Xt, yt) = fashion
    assert X.shape == (50_000, 784) and Xv.shape == (10_000, 784) and Xt.shape == (10_000, 784)
    assert X.dtype == np.float64 and X.min() == 0.0 and X.max() == 1.0
    assert np.all(np.bincount(np.concatenate([y, yv])) == 6000)
    assert np.all(np.bincount(yt) == 1000)
    assert fashion.classes[9] == "Ankle boot"
    assert fashion.source == "/usr/share/datasets/fashion-mnist" or Path(fashion.source).is_dir()


@pytest.mark.parametrize(("depth", "n_train"), [(1, 50_000), (2, 10_000), (3, 10_000),
                                                (4, 10_000)])
def test_one_epoch_equals_the_network2_reference(fashion, depth, n_train):
    """Book settings: same start and shuffles -> same network (the full training set
    for one depth, the first 10,000 images for the others, to keep the test short)."""
    sizes = [784] + [30] * depth + [10]
    net = fastbp.Network(sizes, seed=depth)
    W0, b0 = [W.copy() for W in net.weights], [b.copy() for b in net.biases]
    run = ex.train(net, fashion, 1, 10, 0.1, 5.0, seed=depth, n_train=n_train)
    X, y = fashion.train[0][:n_train], fashion.train[1][:n_train]
    ref = n2.sgd(W0, b0, X, y, 1, 10, 0.1, 5.0, seed=depth, validation=fashion.validation)
    for W, Wr in zip(net.weights, ref["weights"]):
        assert np.linalg.norm(W - Wr) <= 1e-9 * np.linalg.norm(Wr)
    assert abs(run.accuracy[0] - ref["accuracy"][0]) <= 2e-4
    if depth == 1:
        assert run.accuracy[0] > 0.8  # [784,30,10] after one epoch of Fashion-MNIST


def test_fastbp_train_on_fashion(capsys, tmp_path):
    status = cli.main(["train", "--data", "fashion-mnist", "--epochs", "1", "--seed", "0",
                       "--no-progress", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert status == 0 and "Fashion-MNIST (50,000 train / 10,000 validation / 10,000 test)" in out
    run = json.loads((tmp_path / "train.json").read_text())["run"]
    assert run["accuracy"][0] > 0.8 and run["settings"]["data"]["name"] == "fashion-mnist"
