"""Finite-difference checks of ``net.gradient`` against ``net.cost`` (float64).

For every hidden activation x valid (output, cost) pair x initialiser, on small random
networks, the analytic gradient of the mean data cost equals 4th-order central
differences of ``net.cost`` (scikit-learn's ``test_mlp.py::test_gradient`` with the
stencil of its loss tests).  Inputs are kept away from the kinks at z = 0 (relu and
leaky_relu, whose f' jumps, and softsign, whose f'' jumps): only examples whose such
units all have ``|z| > 0.05`` are used, far more than the largest change of ``z``
caused by a perturbation of ``2h = 2e-4``.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import away_from_kinks, fd_gradient, flatten, make_targets, reference_of, unflatten
from reference import HIDDEN_ACTIVATIONS, VALID_PAIRS

import fastbp

INITIALISERS = ("normal_scaled", "normal", "uniform_fan_in", "glorot_uniform", "glorot_normal",
                "he_normal", "sparse")
SIZES = [3, 4, 3, 2]
TARGET_KIND = {"cross_entropy": "soft", "quadratic": "onehot", "log_likelihood": "labels"}


def _set_theta(net, theta, sizes):
    weights, biases = unflatten(theta, sizes)
    for l in range(len(weights)):
        net.weights[l][...] = weights[l]
        net.biases[l][...] = biases[l]


def _check(net, X, y, sizes, lmbda=0.0, rtol=1e-6, atol=1e-9):
    theta0 = flatten(net.weights, net.biases)

    def f(theta):
        _set_theta(net, theta, sizes)
        return net.cost(X, y, lmbda=lmbda)

    fd = fd_gradient(f, theta0, h=1e-4)
    _set_theta(net, theta0, sizes)
    g = net.gradient(X, y)
    analytic = flatten(g.weights, g.biases)
    if lmbda:
        N = len(X)
        analytic = analytic + flatten([lmbda / N * np.asarray(w) for w in net.weights],
                                      [np.zeros_like(b) for b in net.biases])
    assert np.all(np.isfinite(analytic))
    assert np.linalg.norm(analytic) > 1e-6, "a vanishing gradient would make the check vacuous"
    np.testing.assert_allclose(analytic, fd, rtol=rtol, atol=atol)
    return g


@pytest.mark.parametrize("init", INITIALISERS)
@pytest.mark.parametrize("pair", VALID_PAIRS, ids=["-".join(p) for p in VALID_PAIRS])
@pytest.mark.parametrize("activation", HIDDEN_ACTIVATIONS)
def test_gradient_matches_finite_differences(backend, rng, activation, pair, init):
    output, cost = pair
    seed = int(rng.integers(2**31))
    net = fastbp.Network(SIZES, activation=activation, output=output, cost=cost, init=init,
                         dtype="float64", seed=seed)
    if init in ("uniform_fan_in", "glorot_uniform", "glorot_normal", "he_normal", "sparse"):
        # these initialisers set b = 0; random biases exercise dC/db at generic points
        for b in net.biases:
            b[...] = 0.5 * rng.standard_normal(b.shape)
    ref = reference_of(net, activation, output, cost)
    X = rng.standard_normal((300, SIZES[0]))
    kind = "float" if output == "linear" else TARGET_KIND[cost]
    y, Y = make_targets(rng, 300, SIZES[-1], output, cost, kind)
    X, _, idx = away_from_kinks(ref, X, Y, margin=0.05, keep=6)
    _check(net, X, y[idx], SIZES)


@pytest.mark.parametrize("pair", VALID_PAIRS, ids=["-".join(p) for p in VALID_PAIRS])
def test_cost_with_l2_matches_finite_differences(backend, rng, pair):
    """net.cost(X, y, lmbda) = mean cost + 0.5 lmbda/N sum||W||^2: its gradient is
    gradient() + lmbda/N W (the L2 term only on weights, N = len(X))."""
    output, cost = pair
    net = fastbp.Network([4, 5, 3], activation="tanh", output=output, cost=cost, seed=3)
    X = rng.standard_normal((7, 4))
    y, _ = make_targets(rng, 7, 3, output, cost)
    _check(net, X, y, [4, 5, 3], lmbda=2.5)


def test_gradient_cost_equals_net_cost(backend, rng):
    net = fastbp.Network([3, 6, 4], activation="softsign", output="softmax", cost="log_likelihood",
                         seed=1)
    X = rng.standard_normal((9, 3))
    y = rng.integers(0, 4, 9)
    assert net.gradient(X, y).cost == pytest.approx(net.cost(X, y), rel=1e-13)


@pytest.mark.parametrize("depth", [1, 2, 6])
def test_gradient_of_any_depth(backend, rng, depth):
    """Any depth >= 1 weight layer (a single layer has no hidden activation)."""
    sizes = [3] + [4] * (depth - 1) + [2]
    net = fastbp.Network(sizes, activation="tanh", output="sigmoid", cost="cross_entropy", seed=2)
    X = rng.standard_normal((5, 3))
    y = rng.integers(0, 2, 5)
    _check(net, X, y, sizes)
