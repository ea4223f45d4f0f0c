"""fastbp.experiments at small sizes on the embedded sample: shapes, and the science.

The science checked (issue 5's acceptance): at initialisation the speed of learning
increases from the first hidden layer to the last in the 3- and 4-hidden-layer nets,
and the last/first ratio grows with depth; under the exploding construction the
chain's gradient grows by a factor 25 per layer; the one-neuron product formula
equals the network's gradient to round-off; Problem 1's maximum.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import fastbp
from fastbp import datasets
from fastbp import experiments as ex

sys.path.insert(0, str(Path(__file__).parent))
import network2_minibatch as n2  # noqa: E402


@pytest.fixture(scope="module")
def sample():
    return datasets.load_sample()


def _strict_json(result):
    text = result.to_json()
    json.loads(text)  # strict: no NaN / Infinity tokens
    assert "NaN" not in text
    return json.loads(text)


# ------------------------------------------------------------------ 2. at init


def test_speeds_at_init_increase_with_layer_and_ratio_with_depth(sample):
    r = ex.speeds_at_init(sample, depths=(2, 3, 4), n_images=1000, seeds=4)
    assert [s.shape for s in r.speeds] == [(4, 2), (4, 3), (4, 4)]
    for k, depth in enumerate(r.depths):
        if depth >= 3:
            # every seed: strictly increasing from hidden layer 1 to the last
            assert np.all(np.diff(r.speeds[k], axis=1) > 0), r.speeds[k]
    means = [np.mean(rat) for rat in r.ratio]
    assert means[0] < means[1] < means[2]
    # the chapter's orders of magnitude (CHAPTER5.md E3): 4.7, 24, 96 for one run
    assert 2 < means[0] < 12 and 10 < means[1] < 60 and 40 < means[2] < 400
    np.testing.assert_allclose(r.mean[2], r.speeds[2].mean(axis=0))
    d = _strict_json(r)
    assert d["experiment"] == "InitSpeeds" and d["book"]["4"][0] == 0.0029753


def test_speeds_at_init_is_the_gradient_of_a_fresh_net(sample):
    r = ex.speeds_at_init(sample, depths=(2,), n_images=300, seeds=[5])
    X, y = sample.train[0][:300], sample.train[1][:300]
    net = fastbp.Network([784, 30, 30, 10], seed=ex.child_seed(5, 2))
    g = net.gradient(X, y)
    expect = [np.linalg.norm(b) for b in g.biases[:-1]]
    np.testing.assert_allclose(r.speeds[0][0], expect, rtol=1e-12)
    assert np.isnan(r.std[0]).all()  # one seed: no spread


def test_per_neuron_bars(sample):
    r = ex.per_neuron_gradients(sample, n_images=500, n_neurons=6, seed=1)
    assert [g.shape for g in r.gradients] == [(6,), (6,)]
    assert np.all(r.speeds >= [np.linalg.norm(g) for g in r.gradients])
    assert np.any(r.gradients[0] < 0) or np.any(r.gradients[1] < 0)  # signed, as the book
    _strict_json(r)


# ------------------------------------------------------------- 3. training


def test_speeds_during_training_full_batch(sample):
    r = ex.speeds_during_training(sample, depths=(2, 4), n_images=200, epochs=12)
    assert r.mode == "full-batch" and r.batch_size == 200 and r.batch_mean is None
    assert [s.shape for s in r.speeds] == [(13, 2), (13, 4)]
    # row 0 is the untrained network (the book's entry 0)
    X, y = sample.train[0][:200], sample.train[1][:200]
    net = fastbp.Network([784, 30, 30, 30, 30, 10], seed=ex.child_seed(0, 4, 1))
    np.testing.assert_allclose(r.speeds[1][0], net.gradient(X, y).stats["speed"][:-1],
                               rtol=1e-12)
    # the first layer is the slowest all along in the 4-hidden-layer net
    assert np.all(r.speeds[1][:, 0] < r.speeds[1][:, -1])
    # training lowers the cost on the training images
    assert r.cost[1][-1] < r.cost[1][0]
    assert np.all((r.sat_low[0] >= 0) & (r.sat_low[0] <= 1))
    assert r.ratio()[1].shape == (13,)
    _strict_json(r)


def test_speeds_during_training_chunks_change_nothing(sample):
    kw = dict(depths=(3,), n_images=100, epochs=9, batch_size=10)
    seen = []
    a = ex.speeds_during_training(sample, **kw)
    b = ex.speeds_during_training(sample, **kw, chunk=4,
                                  on_progress=lambda d, e, s: seen.append((d, e, s.shape)))
    assert seen == [(3, 4, (3,)), (3, 8, (3,)), (3, 9, (3,))]
    for name in ("speeds", "cost", "batch_mean", "batch_p90"):
        for x, y in zip(getattr(a, name), getattr(b, name)):
            np.testing.assert_array_equal(x, y)


def test_speeds_during_training_mini_batch(sample):
    r = ex.speeds_during_training(sample, depths=(3,), n_images=200, epochs=4, batch_size=10)
    assert r.mode == "mini-batch" and r.speeds[0].shape == (5, 3)
    assert r.batch_mean[0].shape == (4, 3)
    assert np.all(r.batch_p10[0] <= r.batch_mean[0] + 1e-300)
    assert np.all(r.batch_mean[0] <= r.batch_p90[0] * (1 + 1e-12))
    # a mini-batch's gradient is noisier, so larger, than the gradient over all images
    assert np.all(r.batch_mean[0][1:] > r.speeds[0][1:-1])


# ------------------------------------------------------------ training loop


def test_train_equals_one_fit_call_and_the_network2_reference(sample):
    net1 = fastbp.Network([784, 30, 30, 10], seed=3)
    net2 = fastbp.Network([784, 30, 30, 10], seed=3)
    W0, b0 = [W.copy() for W in net1.weights], [b.copy() for b in net1.biases]
    calls = []
    run = ex.train(net1, sample, 2, 10, 0.1, 5.0, seed=7, n_train=1000, on_epoch=calls.append)
    h = net2.fit(sample.train[0][:1000], sample.train[1][:1000], 2, 10, 0.1, 5.0,
                 validation=sample.validation, seed=7)
    np.testing.assert_array_equal(net1.params, net2.params)
    np.testing.assert_array_equal(run.accuracy, h.validation["accuracy"])
    np.testing.assert_array_equal(run.speed, h.epoch["speed"])
    assert [c.epoch for c in calls] == [0, 1] and calls[1].accuracy == run.accuracy[1]
    # network2's algorithm in plain NumPy, same start and shuffles: same parameters
    ref = n2.sgd(W0, b0, sample.train[0][:1000], sample.train[1][:1000], 2, 10, 0.1, 5.0,
                 seed=7, validation=sample.validation)
    for W, Wr in zip(net1.weights, ref["weights"]):
        assert np.linalg.norm(W - Wr) <= 1e-12 * np.linalg.norm(Wr)
    np.testing.assert_array_equal(run.accuracy, ref["accuracy"])
    assert run.settings["data"]["name"] == "mnist-sample" and run.diverged is None
    _strict_json(run)


def test_train_with_and_without_callback_is_the_same_training(sample):
    nets = [fastbp.Network([784, 30, 30, 10], seed=2) for _ in range(2)]
    a = ex.train(nets[0], sample, 3, 10, 0.1, 5.0, momentum=fastbp.Sutskever(0.9),
                 seed=5, n_train=600)
    b = ex.train(nets[1], sample, 3, 10, 0.1, 5.0, momentum=fastbp.Sutskever(0.9),
                 seed=5, n_train=600, on_epoch=lambda info: None)
    np.testing.assert_array_equal(nets[0].params, nets[1].params)
    for name in ("accuracy", "val_cost", "train_cost", "speed", "sat_low"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert np.all(a.seconds > 0) and np.all(b.seconds > 0)


@pytest.mark.parametrize("callback", [False, True])
def test_train_stops_at_divergence(sample, callback):
    # eta = 1e308: the first update would overflow, so fit refuses it
    cb = (lambda info: None) if callback else None
    run = ex.train(fastbp.Network([784, 30, 10], seed=0), sample, 3, 10, 1e308, seed=0,
                   n_train=500, on_epoch=cb)
    assert run.diverged == 0 and np.isnan(run.accuracy).all()
    with pytest.raises(fastbp.NonFiniteError):
        ex.train(fastbp.Network([784, 30, 10], seed=0), sample, 1, 10, 1e308, seed=0,
                 n_train=500, raise_nonfinite=True)


def test_accuracy_by_depth(sample):
    r = ex.accuracy_by_depth(sample, depths=(1, 2), epochs=2, seeds=2, n_train=2000)
    assert [a.shape for a in r.accuracy] == [(2, 2), (2, 2)]
    assert [s.shape for s in r.speed] == [(2, 2, 1), (2, 2, 2)]
    assert r.final.shape == (2, 2) and np.all(r.best >= r.final)
    assert np.all(r.final[0] > 0.6)  # [784,30,10] learns the digits fast
    assert r.seconds.shape == (2, 2) and np.all(r.seconds > 0)
    # seed s is `fastbp train --seed s`: Network(sizes, seed=s) and train(seed=s)
    net = fastbp.Network([784, 30, 10], seed=1)
    run = ex.train(net, sample, 2, 10, 0.1, 5.0, seed=1, n_train=2000)
    np.testing.assert_array_equal(r.accuracy[0][1], run.accuracy)
    _strict_json(r)


# ------------------------------------------------------------------ 5. chain


def test_chain_exploding_factor_25_per_layer():
    r = ex.unstable_chain(n=6, lengths=(), n_random=1)
    e = r.exploding
    np.testing.assert_allclose(e.z, 0.0, atol=1e-12)
    np.testing.assert_array_equal(e.factors, 25.0)
    np.testing.assert_allclose(e.dC_db[:-1] / e.dC_db[1:], 25.0, rtol=1e-14)
    np.testing.assert_allclose(e.dC_db_network[:-1] / e.dC_db_network[1:], 25.0, rtol=1e-12)


@pytest.mark.parametrize("n", [2, 4, 9])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_chain_product_formula_equals_the_network_gradient(n, seed):
    r = ex.unstable_chain(n=n, seed=seed, lengths=(), n_random=1)
    for case in (r.vanishing, r.exploding):
        assert case.rel_error < 1e-13, (case.name, case.rel_error)


def test_chain_vanishing_and_problem1():
    r = ex.unstable_chain(lengths=(2, 5, 10, 20), n_random=500)
    v = r.vanishing
    assert abs(v.dC_db[0]) < abs(v.dC_db[-1])
    # with N(0,1) weights |w sigma'(z)| is typically well below 1/4 ...
    assert r.typical_factor < 0.25
    # ... so the ratio dC/db_1 / dC/db_n shrinks exponentially with the length
    assert np.all(np.diff(r.log10_ratio_median) < 0) and r.log10_ratio_median[-1] < -10
    # Problem 1: maximum 0.4477 at |w| = 6.894 (CHAPTER5.md)
    assert r.problem1_argmax == pytest.approx(6.894, abs=1e-3)
    assert r.problem1_max == pytest.approx(0.4477, abs=1e-4)
    np.testing.assert_allclose(r.problem1_width_formula, r.problem1_width_numeric, atol=1e-12)
    assert ex.problem1_width(3.9)[()] == 0.0 and ex.problem1_width(4.0)[()] == 0.0
    d = _strict_json(r)
    assert d["exploding"]["factors"] == [25.0, 25.0, 25.0]


# -------------------------------------------------------------- 6. obstacles


def test_obstacles_table(sample):
    r = ex.obstacles(sample, activations=("sigmoid", "relu"),
                     inits=("normal_scaled", "he_normal"), depths=(2, 20), epochs=1,
                     n_train=300, n_probe=100, window=5)
    assert len(r.rows) == 8
    rows = {(x["activation"], x["init"], x["depth"]): x for x in r.rows}
    sig = rows[("sigmoid", "normal_scaled", 20)]
    relu = rows[("relu", "he_normal", 20)]
    assert sig["speed"].shape == (2, 20) and sig["batch_sat_low"].shape == (6, 20)
    # 20 sigmoid layers with network2's init: the first layer is vastly slower ...
    assert sig["ratio_init"] > 1e6
    # ... while relu with He's init keeps the layers within a small factor
    assert 0.1 < relu["ratio_init"] < 10
    # relu: about half the units are off (sat_low counts z <= 0), none saturate high
    assert 0.3 < relu["sat_low"][0].mean() < 0.7 and np.all(relu["sat_high"] == 0)
    table = r.table()
    assert {"ratio_init", "top_sat_low_end", "accuracy"} <= set(table[0])
    _strict_json(r)


# --------------------------------------------------------------- 7. momentum


def test_momentum_comparison(sample):
    r = ex.momentum_comparison(sample, epochs=1, etas=(0.05, 0.1),
                               methods=("sgd", "nag-sutskever-0.99"), n_train=500)
    assert list(r.methods) == ["sgd", "nag-sutskever-0.99"]
    m = r.methods["nag-sutskever-0.99"]
    assert m["nesterov"] is True and m["momentum"]["mu_max"] == 0.99
    assert m["best_eta"] in (0.05, 0.1) and m["speed"].shape == (1, 4)
    assert r.sizes == [784, 30, 30, 30, 30, 10]
    with pytest.raises(ValueError, match="unknown method"):
        ex.momentum_comparison(sample, methods=("adam",), epochs=1)
    _strict_json(r)


def test_data_argument_forms(sample):
    X, y = sample.train[0][:50], sample.train[1][:50]
    r = ex.speeds_at_init((X, y), depths=(2,), n_images=50, seeds=1)
    assert r.data["name"] == "arrays"
    with pytest.raises(ValueError, match="only 50 training examples"):
        ex.speeds_at_init((X, y), n_images=100)
    with pytest.raises(TypeError, match="data must be"):
        ex.speeds_at_init(42)
    with pytest.raises(ValueError, match="seeds"):
        ex.speeds_at_init(sample, seeds=0)
