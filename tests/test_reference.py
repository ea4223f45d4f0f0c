"""Checks of the oracle itself (tests/reference.py), independent of fastbp.

If the reference were wrong, every comparison with it would be meaningless; so it is
checked here against finite differences, a hand-worked network and closed forms.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import away_from_kinks, fd_gradient, flatten, unflatten
from reference import (
    HIDDEN_ACTIVATIONS,
    VALID_PAIRS,
    Reference,
    cost_fn_from_z,
    cost_fn_network2,
    epoch_statistics,
    nrm2,
    one_hot,
    statistics,
    sutskever_mu,
)


def _random_reference(rng, sizes, activation, output, cost, scale=1.0):
    weights = [scale * rng.standard_normal((n_out, n_in)) / math.sqrt(n_in)
               for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True)]
    biases = [rng.standard_normal(n_out) for n_out in sizes[1:]]
    return Reference(sizes, weights, biases, activation, output, cost)


def _targets(rng, n, width, output):
    if output == "linear":
        return rng.standard_normal((n, width))
    if output == "softmax":
        return one_hot(rng.integers(0, width, n), width)
    return rng.uniform(0, 1, (n, width))  # soft targets in [0, 1] for sigmoid


@pytest.mark.parametrize("pair", VALID_PAIRS, ids=["-".join(p) for p in VALID_PAIRS])
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_reference_backprop_matches_finite_differences(rng, activation, pair):
    """BP1-BP4 as written in the reference equal 4th-order central differences of its cost."""
    output, cost = pair
    sizes = [3, 4, 3, 2]
    ref = _random_reference(rng, sizes, activation, output, cost)
    X = rng.standard_normal((300, sizes[0]))
    Y = _targets(rng, 300, sizes[-1], output)
    X, Y, _ = away_from_kinks(ref, X, Y, margin=0.05, keep=5)

    def f(theta):
        w, b = unflatten(theta, sizes)
        return Reference(sizes, w, b, activation, output, cost).total_cost(X, Y)

    theta = flatten(ref.weights, ref.biases)
    fd = fd_gradient(f, theta, h=1e-4)
    trace = ref.evaluate(X, Y)
    g = flatten(trace.nabla_w, trace.nabla_b)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-9)


def test_reference_total_cost_l2_term(rng):
    """total_cost adds 0.5 * lmbda / N * sum ||W||^2 (network2), N = len(X)."""
    sizes = [3, 2, 2]
    ref = _random_reference(rng, sizes, "tanh", "sigmoid", "cross_entropy")
    X = rng.standard_normal((7, 3))
    Y = _targets(rng, 7, 2, "sigmoid")
    sq = sum(float(np.sum(w ** 2)) for w in ref.weights)
    expected = ref.total_cost(X, Y) + 0.5 * 3.0 / 7 * sq
    assert ref.total_cost(X, Y, lmbda=3.0) == pytest.approx(expected, rel=1e-14)


def test_reference_hand_worked_network():
    """A 2-1-1 sigmoid net worked by hand.

    W1 = [[1, -1]], b1 = [0], x = [2, 2]: z1 = 0, a1 = 0.5, sigma'(z1) = 0.25.
    W2 = [[2]], b2 = [-1]: z2 = 2*0.5 - 1 = 0, a2 = 0.5.
    Cross-entropy with y = 1: C = ln 2; delta2 = a2 - y = -0.5 (BP1),
    dC/dW2 = delta2 * a1 = -0.25 (BP4), delta1 = W2 * delta2 * sigma'(z1) = 2 * -0.5 * 0.25
    = -0.25 (BP2), dC/db1 = -0.25 (BP3), dC/dW1 = delta1 * x = [-0.5, -0.5] (BP4).
    """
    ref = Reference([2, 1, 1], [np.array([[1.0, -1.0]]), np.array([[2.0]])],
                    [np.array([0.0]), np.array([-1.0])], "sigmoid", "sigmoid", "cross_entropy")
    trace = ref.evaluate(np.array([[2.0, 2.0]]), np.array([[1.0]]))
    assert trace.cost == pytest.approx(math.log(2), rel=1e-15)
    assert trace.cost_network2 == pytest.approx(math.log(2), rel=1e-15)
    np.testing.assert_allclose(trace.nabla_b[1], [-0.5], rtol=1e-15)
    np.testing.assert_allclose(trace.nabla_w[1], [[-0.25]], rtol=1e-15)
    np.testing.assert_allclose(trace.nabla_b[0], [-0.25], rtol=1e-15)
    np.testing.assert_allclose(trace.nabla_w[0], [[-0.5, -0.5]], rtol=1e-15)


@pytest.mark.parametrize("pair", VALID_PAIRS, ids=["-".join(p) for p in VALID_PAIRS])
def test_reference_cost_forms_agree_where_network2_is_finite(rng, pair):
    """fastbp's cost from z equals network2's cost from a where a is well inside (0, 1)."""
    output, cost = pair
    for _ in range(20):
        z = rng.standard_normal((4, 1)) * 3
        y = _targets(rng, 1, 4, output).reshape(-1, 1)
        from reference import activation_fn

        a = activation_fn(output, z) if output != "softmax" else activation_fn("softmax", z)
        assert cost_fn_from_z(output, cost, z, y) == pytest.approx(cost_fn_network2(cost, a, y),
                                                                   rel=1e-12, abs=1e-14)


def test_reference_cost_from_z_is_finite_where_network2_saturates():
    """Where a rounds to 1, network2 returns nan_to_num's 1.8e308; the z form the true value."""
    z = np.array([[40.0]])
    y = np.array([[0.0]])
    a = np.array([[1.0]])  # sigmoid(40) rounds to 1 in float64
    assert cost_fn_network2("cross_entropy", a, y) == np.finfo(np.float64).max
    assert cost_fn_from_z("sigmoid", "cross_entropy", z, y) == pytest.approx(40.0, rel=1e-15)


def test_nrm2_is_scaled():
    """The reference norm neither underflows nor overflows (unlike sqrt(sum(x**2)))."""
    x = np.full(10, 1e-200)
    assert np.sqrt(np.sum(x ** 2)) == 0.0
    assert nrm2(x) == pytest.approx(math.sqrt(10) * 1e-200, rel=1e-14)
    y = np.full(10, 1e200)
    assert nrm2(y) == pytest.approx(math.sqrt(10) * 1e200, rel=1e-14)
    assert nrm2(np.zeros(3)) == 0.0
    assert nrm2(np.array([3.0, -4.0])) == 5.0


def test_sutskever_schedule_values():
    """mu_t = 0.5, 0.75, 5/6, 7/8, ... every 250 updates, capped by mu_max."""
    assert sutskever_mu(0, 0.99) == pytest.approx(0.5, rel=1e-15)
    assert sutskever_mu(249, 0.99) == pytest.approx(0.5, rel=1e-15)
    assert sutskever_mu(250, 0.99) == pytest.approx(0.75, rel=1e-15)
    assert sutskever_mu(500, 0.99) == pytest.approx(5 / 6, rel=1e-15)
    assert sutskever_mu(750, 0.99) == pytest.approx(7 / 8, rel=1e-15)
    assert sutskever_mu(750, 0.8) == 0.8
    assert sutskever_mu(3, 0.99, period=1) == pytest.approx(7 / 8, rel=1e-15)


def test_reference_epoch_statistics_of_one_batch_equal_batch_statistics(rng):
    """With one mini-batch per epoch, the epoch reductions equal the mini-batch statistics."""
    sizes = [3, 5, 4, 2]
    ref = _random_reference(rng, sizes, "tanh", "sigmoid", "cross_entropy", scale=3.0)
    X = rng.standard_normal((9, 3)) * 2
    Y = _targets(rng, 9, 2, "sigmoid")
    w_start = [w.copy() for w in ref.weights]
    step = ref.update_mini_batch(X, Y, eta=0.5, lmbda=1.0, n=9)
    batch = statistics(ref, step.trace, step.w_old, step.w_new)
    epoch = epoch_statistics(ref, [step], w_start, ref.weights)
    for name in batch:
        np.testing.assert_allclose(epoch[name], batch[name], rtol=1e-14, equal_nan=True,
                                   err_msg=name)
    # and the data is not trivial: some units are saturated in some layer
    assert np.nansum(batch["sat_low"]) + np.nansum(batch["sat_high"]) > 0
