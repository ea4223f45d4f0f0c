"""Each statistic of SPEC section 4 against its definition, computed from the reference.

* record="batch": one row per mini-batch (tests/test_vs_reference.py checks it too);
* record="epoch": the epoch reductions (speed and grad_norm are norms of the
  m-weighted mean gradient, gain the mean over mini-batches, update_ratio
  ``||W_end - W_start|| / ||W_start||``, activation and saturation statistics pooled);
* probe: ``gradient()`` statistics at the start of every epoch and after the last
  (epochs + 1 rows);
* a 300-layer sigmoid net whose speeds (~1e-230) underflow a naive norm.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import (
    COST_RTOL,
    assert_layers_close,
    assert_stats_close,
    fit_orders,
    frac_units,
    make_targets,
    reference_of,
    replay_fit,
    table_stats,
)
from reference import (
    HIDDEN_ACTIVATIONS,
    STAT_NAMES,
    VALID_PAIRS,
    epoch_statistics,
    statistics,
    step_statistics,
)

import fastbp

PAIR_IDS = ["-".join(p) for p in VALID_PAIRS]
SIZES = [4, 6, 5, 3]


def _problem(rng, output, cost, n, scale=2.0):
    X = scale * rng.standard_normal((n, SIZES[0]))
    y, Y = make_targets(rng, n, SIZES[-1], output, cost)
    return X, y, Y


@pytest.mark.parametrize("pair", VALID_PAIRS, ids=PAIR_IDS)
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_record_epoch_equals_definitions(backend, rng, activation, pair):
    output, cost = pair
    # large weights (init="normal") saturate units; a linear output would diverge with them
    init = "normal_scaled" if "linear" in (activation, output) else "normal"
    net = fastbp.Network(SIZES, activation=activation, output=output, cost=cost, init=init,
                         seed=5)
    ref = reference_of(net, activation, output, cost)
    n, batch_size, lmbda = 22, 5, 2.0
    eta = 0.01 if output == "linear" else 0.2
    X, y, Y = _problem(rng, output, cost, n)
    h = net.fit(X, y, epochs=2, batch_size=batch_size, eta=eta, lmbda=lmbda, momentum=0.5,
                record="epoch", seed=3)
    epochs = replay_fit(ref, X, Y, 2, batch_size, eta, lmbda, seed=3, momentum=0.5)
    assert len(h.epoch) == 2
    np.testing.assert_array_equal(h.epoch["epoch"], [0, 1])
    for e, (w_start, steps) in enumerate(epochs):
        w_end = epochs[e + 1][0] if e + 1 < len(epochs) else ref.weights
        expected = epoch_statistics(ref, steps, w_start, w_end)
        assert_stats_close(table_stats(h.epoch, e), expected, 1e-10,
                           frac_unit=frac_units(SIZES, n), what=f"epoch {e}")
        # training cost: m-weighted mean of the mini-batch costs + L2 term at the epoch's end
        ms = np.array([s.trace.m for s in steps])
        costs = np.array([s.trace.cost for s in steps])
        l2 = 0.5 * lmbda / n * sum(np.sum(np.asarray(w) ** 2) for w in w_end)
        assert h.epoch["train_cost"][e] == pytest.approx(np.dot(ms, costs) / n + l2, rel=COST_RTOL)
    assert len(h.batch) == 0, "record='epoch' keeps no per-batch statistics"


def test_epoch_reductions_are_not_means_of_batch_values(rng):
    """The data of the epoch test make the reductions distinguishable (the test has teeth):
    the norm of the mean gradient differs from the mean of the per-batch norms, and the
    pooled std from the mean of the per-batch stds."""
    net = fastbp.Network(SIZES, activation="tanh", init="normal", seed=5)
    ref = reference_of(net, "tanh")
    X, y, Y = _problem(rng, "sigmoid", "cross_entropy", 22)
    (w_start, steps), = replay_fit(ref, X, Y, 1, 5, 0.2, 2.0, seed=3)
    expected = epoch_statistics(ref, steps, w_start, ref.weights)
    per_batch = [step_statistics(ref, s) for s in steps]
    for name in ("speed", "grad_norm", "act_std", "update_ratio"):
        mean_of_batches = np.mean([p[name] for p in per_batch], axis=0)
        assert not np.allclose(mean_of_batches, expected[name], rtol=1e-3), name


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_probe_rows_equal_gradient_statistics(backend, rng, activation):
    """probe=(X, y): epochs + 1 rows, row e measured before epoch e, the last after training."""
    net = fastbp.Network(SIZES, activation=activation, seed=8)
    ref = reference_of(net, activation)
    n, epochs = 15, 3
    X, y, Y = _problem(rng, "sigmoid", "cross_entropy", n)
    Xp, yp, Yp = _problem(rng, "sigmoid", "cross_entropy", 9)
    h = net.fit(X, y, epochs=epochs, batch_size=4, eta=0.5, lmbda=0.5, probe=(Xp, yp),
                record=None, seed=21)
    assert len(h.probe) == epochs + 1
    np.testing.assert_array_equal(h.probe["epoch"], np.arange(epochs + 1))
    assert h.probe["speed"].shape == (epochs + 1, len(SIZES) - 1)
    # replay, measuring the probe at the start of each epoch and after the last
    rows = []
    for order in fit_orders(21, n, epochs):
        trace = ref.evaluate(Xp, Yp)
        rows.append((statistics(ref, trace), trace.cost))
        ref.train_epoch(X, Y, order, 4, 0.5, 0.5)
    trace = ref.evaluate(Xp, Yp)
    rows.append((statistics(ref, trace), trace.cost))
    for e, (expected, cost) in enumerate(rows):
        assert_stats_close(table_stats(h.probe, e), expected, 1e-10,
                           frac_unit=frac_units(SIZES, len(Xp)), what=f"probe row {e}")
        assert h.probe["cost"][e] == pytest.approx(cost, rel=COST_RTOL)
    assert np.all(np.isnan(h.probe["update_ratio"]))
    # the final row is exactly what net.gradient() reports on the probe set
    g = net.gradient(Xp, yp)
    for name in STAT_NAMES:
        np.testing.assert_array_equal(h.probe[name][-1], g.stats[name], err_msg=name)


def test_probe_with_zero_epochs(backend, rng):
    """epochs=0 measures only the probe (one row) and changes nothing."""
    net = fastbp.Network(SIZES, seed=1)
    before = net.params.copy()
    X, y, _ = _problem(rng, "sigmoid", "cross_entropy", 6)
    h = net.fit(X, y, epochs=0, batch_size=2, eta=0.1, probe=(X, y))
    assert len(h.probe) == 1 and len(h.epoch) == 0 and len(h.batch) == 0
    np.testing.assert_array_equal(net.params, before)
    assert net.n_updates == 0


def test_record_none_same_training(backend, rng):
    """record=None records no statistics and trains exactly like record='batch'/'epoch'."""
    X, y, _ = _problem(rng, "sigmoid", "cross_entropy", 19)
    params = []
    for record in (None, "batch", "epoch"):
        net = fastbp.Network(SIZES, activation="tanh", seed=2)
        h = net.fit(X, y, epochs=2, batch_size=4, eta=0.3, momentum=0.5, record=record, seed=9)
        params.append(net.params.copy())
        if record is None:
            assert len(h.batch) == 0
            assert "speed" not in h.epoch
            assert len(h.epoch) == 2  # epoch indices and training cost are still there
    np.testing.assert_array_equal(params[0], params[1])
    np.testing.assert_array_equal(params[0], params[2])


def test_batch_statistics_table_layout(backend, rng):
    """record='batch': (rows, L) float64 per statistic; gain NaN for the last layer;
    update_ratio finite; nonfinite 0."""
    X, y, _ = _problem(rng, "sigmoid", "cross_entropy", 10)
    net = fastbp.Network(SIZES, seed=2)
    h = net.fit(X, y, epochs=2, batch_size=3, eta=0.3, record="batch", seed=0)
    L = len(SIZES) - 1
    assert len(h.batch) == 8
    for name in STAT_NAMES:
        col = h.batch[name]
        assert col.shape == (8, L) and col.dtype == np.float64, name
    assert np.all(np.isnan(h.batch["gain"][:, -1]))
    assert np.all(np.isfinite(h.batch["gain"][:, :-1]))
    assert np.all(h.batch["update_ratio"] > 0)
    assert np.all(h.batch["nonfinite"] == 0)
    np.testing.assert_array_equal(h.batch["size"], [3, 3, 3, 1] * 2)


@pytest.mark.parametrize("activation,output,cost", [
    ("linear", "linear", "quadratic"),
    ("tanh", "softmax", "log_likelihood"),
    ("relu", "sigmoid", "quadratic"),
])
def test_undefined_statistics_are_nan(backend, rng, activation, output, cost):
    """Saturation is NaN for linear and softmax layers, slope_mean NaN for softmax;
    relu's sat_high is 0."""
    net = fastbp.Network(SIZES, activation=activation, output=output, cost=cost, seed=0)
    X = rng.standard_normal((8, SIZES[0]))
    y, _ = make_targets(rng, 8, SIZES[-1], output, cost)
    s = net.gradient(X, y).stats
    if activation == "linear":
        assert np.all(np.isnan(s["sat_low"][:-1])) and np.all(np.isnan(s["sat_high"][:-1]))
        np.testing.assert_array_equal(s["slope_mean"][:-1], 1.0)
    if activation == "relu":
        np.testing.assert_array_equal(s["sat_high"][:-1], 0.0)
    if output in ("linear", "softmax"):
        assert np.isnan(s["sat_low"][-1]) and np.isnan(s["sat_high"][-1])
    assert np.isnan(s["slope_mean"][-1]) == (output == "softmax")


def test_saturation_counts_hand_made(backend):
    """A sigmoid layer with known pre-activations: z in {-10, -1, 0.5, 8} (1% of max f' is
    0.0025; sigma'(-10) = 4.5e-5 and sigma'(8) = 3.4e-4 saturate, sigma'(-1) = 0.197 does not)."""
    W = [np.array([[1.0], [1.0], [1.0], [1.0]]), np.zeros((2, 4))]
    b = [np.array([-10.0, -1.0, 0.5, 8.0]), np.zeros(2)]
    net = fastbp.Network([1, 4, 2], activation="sigmoid", init=(W, b))
    X = np.zeros((3, 1))
    s = net.gradient(X, [0, 1, 0]).stats
    assert s["sat_low"][0] == 0.25 and s["sat_high"][0] == 0.25
    # the output layer: z = 0 everywhere, not saturated
    assert s["sat_low"][1] == 0.0 and s["sat_high"][1] == 0.0
    expected_slope = np.mean([1 / (1 + math.exp(-z)) * (1 - 1 / (1 + math.exp(-z)))
                              for z in (-10.0, -1.0, 0.5, 8.0)])
    assert s["slope_mean"][0] == pytest.approx(expected_slope, rel=1e-14)
    assert s["slope_mean"][1] == pytest.approx(0.25, rel=1e-15)
    a = 1 / (1 + np.exp(-b[0]))
    assert s["act_mean"][0] == pytest.approx(a.mean(), rel=1e-14)
    assert s["act_std"][0] == pytest.approx(a.std(), rel=1e-13)


# ---------------------------------------------------------------------------
# A deep sigmoid network: tiny speeds, never zero
# ---------------------------------------------------------------------------

DEEP = [5] * 300 + [2]  # 300 weight layers of width 5


@pytest.fixture(scope="module")
def deep_case():
    net = fastbp.Network(DEEP, seed=1)
    rng = np.random.default_rng(12)
    X = rng.standard_normal((10, DEEP[0]))
    y = rng.integers(0, 2, 10)
    ref = reference_of(net)
    trace = ref.evaluate(X, np.eye(2)[y])
    expected = statistics(ref, trace)
    # the case is meaningful only if the speeds underflow a naive sqrt(sum(x**2)) ...
    assert expected["speed"].min() < 1e-160
    assert np.sqrt(np.sum(trace.nabla_b[0] ** 2)) == 0.0
    # ... while staying normal float64 numbers
    assert expected["speed"].min() > 1e-300
    return net, X, y, ref, trace, expected


def test_deep_sigmoid_gradient_speeds_tiny_not_zero(backend, deep_case):
    net, X, y, ref, trace, expected = deep_case
    g = net.gradient(X, y)
    for name in ("speed", "grad_norm", "gain"):
        got = g.stats[name]
        finite = ~np.isnan(expected[name])
        assert np.all(got[finite] > 0), f"{name} is zero in layers {np.where(got <= 0)[0]}"
        np.testing.assert_allclose(got[finite], expected[name][finite], rtol=1e-6, err_msg=name)
    # the bias gradient itself is right, not only its norm (scaled comparison per layer)
    assert_layers_close(g.biases, trace.nabla_b, 1e-6, "db")
    # speeds fall by >100 orders of magnitude from the last layer to the first
    assert g.stats["speed"][0] < 1e-100 * g.stats["speed"][-1]


def test_deep_sigmoid_probe_and_batch_speeds(backend, deep_case):
    net, X, y, ref, trace, expected = deep_case
    net = fastbp.Network(DEEP, seed=1)
    h = net.fit(X, y, epochs=1, batch_size=len(X), eta=1e-3, record="batch", probe=(X, y),
                seed=0)
    np.testing.assert_allclose(h.probe["speed"][0], expected["speed"], rtol=1e-6)
    # the one mini-batch is the whole set: its gradient is the probe's
    np.testing.assert_allclose(h.batch["speed"][0], expected["speed"], rtol=1e-6)
    np.testing.assert_allclose(h.batch["grad_norm"][0], expected["grad_norm"], rtol=1e-6)
    assert np.all(h.probe["speed"] > 0) and np.all(h.batch["speed"] > 0)


def test_float32_statistics_are_float64_reductions_of_float32_values(backend, rng):
    """SPEC section 4: in float32, each statistic is within 1e-6 relative of the same
    quantity computed in float64 from the float32 values (gradient, weights, outputs)."""
    from reference import nrm2

    sizes = [20, 30, 25, 10]
    net = fastbp.Network(sizes, activation="tanh", dtype="float32", seed=4)
    X = rng.standard_normal((64, 20))
    y = rng.integers(0, 10, 64)
    g = net.gradient(X, y)
    for l in range(3):
        assert g.stats["speed"][l] == pytest.approx(nrm2(g.biases[l]), rel=1e-6)
        assert g.stats["grad_norm"][l] == pytest.approx(nrm2(g.weights[l]), rel=1e-6)
        assert g.stats["weight_norm"][l] == pytest.approx(nrm2(net.weights[l]), rel=1e-6)
    out = net.forward(X).astype(np.float64)
    assert g.stats["act_mean"][-1] == pytest.approx(out.mean(), rel=1e-6)
    assert g.stats["act_std"][-1] == pytest.approx(out.std(), rel=1e-6)
    w_old = [np.array(w) for w in net.weights]
    h = net.fit(X, y, epochs=1, batch_size=64, eta=0.5, lmbda=1.0, record="batch", seed=0)
    for l in range(3):
        w_new = np.asarray(net.weights[l])
        assert h.batch["weight_norm"][0, l] == pytest.approx(nrm2(w_new), rel=1e-6)
        change = w_new.astype(np.float64) - w_old[l].astype(np.float64)
        assert h.batch["update_ratio"][0, l] == pytest.approx(nrm2(change) / nrm2(w_old[l]),
                                                              rel=1e-6)
