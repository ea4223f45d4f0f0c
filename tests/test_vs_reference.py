"""The public API against the network2-style per-example reference (float64).

SPEC section 6: ``gradient()`` equal to the reference to 1e-10 norm-wise per layer;
the same for one step of ``fit`` and for a few epochs of mini-batches (the order of
``fit(seed=s)`` is documented: one ``Generator(PCG64(s))`` per call, one permutation
per epoch).  Also forward / predict / accuracy / cost.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import (
    COST_RTOL,
    assert_layers_close,
    assert_stats_close,
    frac_units,
    make_targets,
    reference_of,
    replay_fit,
    table_stats,
)
from reference import HIDDEN_ACTIVATIONS, VALID_PAIRS, statistics, step_statistics

import fastbp

PAIR_IDS = ["-".join(p) for p in VALID_PAIRS]
SIZES = [5, 7, 6, 3]


def _net(activation, output, cost, seed=0, sizes=SIZES, **kw):
    return fastbp.Network(sizes, activation=activation, output=output, cost=cost, seed=seed, **kw)


def _eta(output):
    return 0.02 if output == "linear" else 0.3


@pytest.mark.parametrize("pair", VALID_PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_gradient_equals_reference(backend, rng, activation, pair):
    output, cost = pair
    net = _net(activation, output, cost, seed=int(rng.integers(1000)))
    ref = reference_of(net, activation, output, cost)
    X = 2 * rng.standard_normal((17, SIZES[0]))
    y, Y = make_targets(rng, 17, SIZES[-1], output, cost)
    g = net.gradient(X, y)
    trace = ref.evaluate(X, Y)
    assert_layers_close(g.weights, trace.nabla_w, 1e-10, "dW")
    assert_layers_close(g.biases, trace.nabla_b, 1e-10, "db")
    assert g.cost == pytest.approx(trace.cost, rel=COST_RTOL)
    assert_stats_close(g.stats, statistics(ref, trace), 1e-10, frac_unit=frac_units(SIZES, 17))
    assert set(g.stats) == set(fastbp.STAT_NAMES)


@pytest.mark.parametrize("kind", ["labels", "onehot"])
@pytest.mark.parametrize("pair", VALID_PAIRS, ids=PAIR_IDS)
def test_forward_predict_accuracy_cost_equal_reference(backend, rng, pair, kind):
    output, cost = pair
    net = _net("tanh", output, cost, seed=4)
    ref = reference_of(net, "tanh", output, cost)
    X = rng.standard_normal((23, SIZES[0]))
    y, Y = make_targets(rng, 23, SIZES[-1], output, cost, "float" if output == "linear" else kind)
    out = net.forward(X)
    assert out.shape == (23, SIZES[-1]) and out.dtype == np.float64
    np.testing.assert_allclose(out, ref.feedforward_batch(X), rtol=1e-12, atol=1e-15)
    lmbda = 3.0
    assert net.cost(X, y) == pytest.approx(ref.total_cost(X, Y), rel=COST_RTOL)
    assert net.cost(X, y, lmbda=lmbda) == pytest.approx(ref.total_cost(X, Y, lmbda), rel=COST_RTOL)
    if output != "linear":
        expected_labels = np.argmax(ref.feedforward_batch(X), axis=1)
        np.testing.assert_array_equal(net.predict(X), expected_labels)
        acc = net.accuracy(X, y)
        assert acc == pytest.approx(np.mean(expected_labels == np.argmax(Y, axis=1)), abs=0)
        assert 0.0 <= acc <= 1.0


def test_single_sigmoid_output_unit_labels(backend, rng):
    """One sigmoid unit: labels are 0/1, predict is a > 0.5."""
    net = _net("relu", "sigmoid", "cross_entropy", sizes=[3, 4, 1], seed=2)
    ref = reference_of(net, "relu", "sigmoid", "cross_entropy")
    X = rng.standard_normal((30, 3))
    y = rng.integers(0, 2, 30)
    a = ref.feedforward_batch(X)[:, 0]
    np.testing.assert_array_equal(net.predict(X), (a > 0.5).astype(int))
    assert net.accuracy(X, y) == pytest.approx(np.mean((a > 0.5) == y), abs=0)
    assert net.cost(X, y) == pytest.approx(ref.total_cost(X, y.reshape(-1, 1).astype(float)),
                                           rel=COST_RTOL)


@pytest.mark.parametrize("pair", VALID_PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_one_fit_step_equals_reference(backend, rng, activation, pair):
    """fit(epochs=1, batch_size=n): one network2 update (L2 decay included) and its stats."""
    output, cost = pair
    net = _net(activation, output, cost, seed=int(rng.integers(1000)))
    ref = reference_of(net, activation, output, cost)
    n, lmbda, eta = 12, 4.0, _eta(output)
    X = 2 * rng.standard_normal((n, SIZES[0]))
    y, Y = make_targets(rng, n, SIZES[-1], output, cost)
    h = net.fit(X, y, epochs=1, batch_size=n, eta=eta, lmbda=lmbda, record="batch", seed=1)
    step = ref.update_mini_batch(X, Y, eta, lmbda, n)
    assert_layers_close(net.weights, ref.weights, 1e-10, "W")
    assert_layers_close(net.biases, ref.biases_1d, 1e-10, "b")
    assert net.n_updates == 1
    assert len(h.batch) == 1
    assert_stats_close(table_stats(h.batch, 0), step_statistics(ref, step), 1e-10,
                       frac_unit=frac_units(SIZES, n))
    assert h.batch["cost"][0] == pytest.approx(step.trace.cost, rel=COST_RTOL)
    # the epoch's training cost: mean of the mini-batch costs + L2 term at the end (documented)
    l2 = 0.5 * lmbda / n * sum(np.sum(w ** 2) for w in ref.weights)
    assert h.epoch["train_cost"][0] == pytest.approx(step.trace.cost + l2, rel=COST_RTOL)


@pytest.mark.parametrize("opt", ["sgd", "momentum", "nesterov"])
@pytest.mark.parametrize("pair", VALID_PAIRS, ids=PAIR_IDS)
def test_fit_mini_batches_equal_reference(backend, rng, pair, opt):
    """3 epochs of mini-batches (the last one shorter), replayed example by example."""
    output, cost = pair
    net = _net("sigmoid", output, cost, seed=7)
    ref = reference_of(net, "sigmoid", output, cost)
    n, batch_size, lmbda, eta = 14, 4, 1.0, _eta(output)
    X = rng.standard_normal((n, SIZES[0]))
    y, Y = make_targets(rng, n, SIZES[-1], output, cost)
    kw = {"sgd": {}, "momentum": {"momentum": 0.8},
          "nesterov": {"momentum": 0.8, "nesterov": True}}[opt]
    h = net.fit(X, y, epochs=3, batch_size=batch_size, eta=eta, lmbda=lmbda, record="batch",
                seed=11, **kw)
    epochs = replay_fit(ref, X, Y, 3, batch_size, eta, lmbda, seed=11, **kw)
    steps = [s for _, ss in epochs for s in ss]
    assert net.n_updates == len(steps) == 12
    assert_layers_close(net.weights, ref.weights, 1e-10, "W")
    assert_layers_close(net.biases, ref.biases_1d, 1e-10, "b")
    assert len(h.batch) == 12
    np.testing.assert_array_equal(h.batch["epoch"], np.repeat([0, 1, 2], 4))
    np.testing.assert_array_equal(h.batch["batch"], np.tile([0, 1, 2, 3], 3))
    for k, step in enumerate(steps):
        assert_stats_close(table_stats(h.batch, k), step_statistics(ref, step), 1e-10,
                           frac_unit=frac_units(SIZES, step.trace.m), what=f"row {k}")
    np.testing.assert_allclose(h.batch["cost"], [s.trace.cost for s in steps], rtol=COST_RTOL)
    if opt != "sgd":
        from helpers import flatten

        np.testing.assert_allclose(net.velocity, flatten(ref.velocity_w, ref.velocity_b),
                                   rtol=1e-10, atol=1e-14)
