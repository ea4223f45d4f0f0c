"""Numerical faults (issue 6): finite, warning-free values for any finite input, and the
exploding-gradient constructions of the chapter handled exactly as SPEC section 5 says.

``pyproject.toml`` turns every ``RuntimeWarning`` into an error, so a single overflow or
invalid-value warning anywhere (Python layer or NumPy backend) fails these tests.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from reference import cost_fn_from_z

import fastbp

HIDDEN = ["sigmoid", "tanh", "relu", "leaky_relu", "softsign", "linear"]
PAIRS = list(fastbp.VALID_PAIRS)

#: Pre-activations from tiny to the largest that keep every cost representable.
Z_VALUES = {
    "float64": [0.0, 1e-300, 1e-8, 1.0, 20.0, 40.0, 710.0, 745.0, 1e5, 1e100, 1e300],
    "float32": [0.0, 1e-38, 1e-8, 1.0, 15.0, 20.0, 89.0, 104.0, 1e5, 1e20, 3e38],
}


def _z_grid(dtype, output, n_out):
    """Rows of output pre-activations: every value of Z_VALUES with both signs."""
    values = [v for z in Z_VALUES[dtype.name] for v in (z, -z)]
    if output == "linear":
        # the quadratic cost 0.5 (z - y)^2 must itself be representable
        limit = 1e150 if dtype == np.float64 else 1e18
        values = [v for v in values if abs(v) <= limit]
    rows = []
    for i, v in enumerate(values):
        row = np.zeros(n_out)
        row[i % n_out] = v
        row[(i + 1) % n_out] = -v / 2
        rows.append(row)
    return np.array(rows)


@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_output_layer_extreme_z(backend, dtype, pair):
    """A single weight layer with z = W x + b = the grid (x = e_i): outputs, costs and the
    gradient are finite, warning-free, and the costs equal the exact value from z."""
    output, cost = pair
    n_out = 3
    Z = _z_grid(dtype, output, n_out)
    N = len(Z)
    # x = e_i selects column i of W: W = Z.T, b = 0, so z of example i is Z[i]
    W = Z.T.copy()
    net = fastbp.Network([N, n_out], output=output, cost=cost, dtype=dtype,
                         init=([W], [np.zeros(n_out)]))
    X = np.eye(N)
    g = np.random.default_rng(0)
    if output == "linear":
        y = g.standard_normal((N, n_out))
        Y = y
    else:
        y = g.integers(0, n_out, N)
        Y = np.eye(n_out)[y]
    A = net.forward(X)
    assert np.all(np.isfinite(A))
    if output == "softmax":
        np.testing.assert_allclose(A.sum(axis=1), 1.0, rtol=1e-6)
    c = net.cost(X, y)
    assert math.isfinite(c)
    z = net.weights[0].T.astype(np.float64)  # the dtype-rounded grid
    exact = np.mean([cost_fn_from_z(output, cost, z[i][:, None], Y[i][:, None])
                     for i in range(N)])
    assert c == pytest.approx(exact, rel=1e-5 if dtype == np.float32 else 1e-12)
    grad = net.gradient(X, y)
    assert np.all(np.isfinite(grad.flat)) and math.isfinite(grad.cost)
    # one training step with a small eta is finite too (no NonFiniteError) -- as long as
    # the weights are below dtype max / 4: the compiled backend refuses updates of larger
    # parameters (a cheap overflow bound, SPEC section 5), the NumPy backend does not
    keep = np.max(np.abs(Z), axis=1) <= np.finfo(dtype).max / 8
    small = fastbp.Network([N, n_out], output=output, cost=cost, dtype=dtype,
                           init=([W * keep[None, :]], [np.zeros(n_out)]))
    small.fit(X, y, epochs=1, batch_size=N, eta=1e-30, seed=0)
    assert np.all(np.isfinite(small.params))


@pytest.mark.parametrize("activation", HIDDEN)
def test_hidden_layer_extreme_z(backend, dtype, activation):
    """Hidden pre-activations over the whole grid (both signs): activations, slopes and
    statistics finite and warning-free; the output layer scales unbounded activations
    down so that its own z stays finite."""
    Z = _z_grid(dtype, "sigmoid", 4)
    N = len(Z)
    W1 = Z.T.copy()
    unbounded = activation in ("relu", "leaky_relu", "linear")
    w2 = 1e-300 if unbounded and dtype == np.float64 else (1e-38 if unbounded else 1.0)
    W2 = np.full((2, 4), w2)
    net = fastbp.Network([N, 4, 2], activation=activation, output="sigmoid", dtype=dtype,
                         init=([W1, W2], [np.zeros(4), np.zeros(2)]))
    X = np.eye(N)
    y = np.arange(N) % 2
    assert np.all(np.isfinite(net.forward(X)))
    assert math.isfinite(net.cost(X, y))
    g = net.gradient(X, y)
    assert np.all(np.isfinite(g.flat))
    for name in ("speed", "grad_norm", "weight_norm", "act_mean", "slope_mean"):
        assert np.all(np.isfinite(g.stats[name])), name
    # act_std accumulates squared deviations: finite while a**2 is representable
    if not unbounded:
        assert np.all(np.isfinite(g.stats["act_std"]))


# ------------------------------------------------------------------ exploding gradients


def _chain(L, dtype="float64"):
    """The chapter's exploding-gradient construction: a chain of single neurons with
    w = 100 and biases making every z = 0 (b_1 = -100 x with x = 1, then b = -100 * 0.5),
    so every factor w sigma'(z) is 100 / 4 = 25 going backwards."""
    W = [np.array([[100.0]]) for _ in range(L)]
    b = [np.array([-100.0])] + [np.array([-50.0]) for _ in range(L - 1)]
    return fastbp.Network([1] * (L + 1), init=(W, b), dtype=dtype)


_X1, _Y0 = np.ones((1, 1)), np.zeros((1, 1))


def test_chain_gradient_grows_by_25_per_layer(backend, dtype):
    net = _chain(4, dtype.name)
    g = net.gradient(_X1, _Y0)
    # delta^L = a - y = 1/2, then x25 per layer back; dC/dW = delta * a_prev
    np.testing.assert_array_equal(g.stats["speed"], [0.5 * 25**3, 0.5 * 25**2, 12.5, 0.5])
    np.testing.assert_array_equal([w[0, 0] for w in g.weights], [7812.5, 156.25, 6.25, 0.25])


def test_thousand_layer_chain_backward_overflow(backend, dtype):
    """1,000 layers: delta of layer L-1-k is 0.5 * 25**k, which overflows at k = 221 in
    float64 (k = 28 in float32): a NonFiniteError in the backward phase at exactly that
    layer, nothing written; with "skip" every mini-batch is dropped and counted."""
    L = 1000
    k = 221 if dtype == np.float64 else 28
    net = _chain(L, dtype.name)
    before = net.params.copy()
    with pytest.raises(fastbp.NonFiniteError) as info:
        net.fit(_X1, _Y0, epochs=2, batch_size=1, eta=0.1, seed=0)
    err = info.value
    assert (err.epoch, err.batch, err.layer, err.phase) == (0, 0, L - 1 - k, "backward")
    np.testing.assert_array_equal(net.params, before)
    assert net.n_updates == 0 and len(err.history.epoch) == 0
    with pytest.raises(fastbp.NonFiniteError) as info:
        net.gradient(_X1, _Y0)
    assert (info.value.layer, info.value.phase) == (L - 1 - k, "backward")
    X = np.ones((3, 1))
    h = net.fit(X, np.zeros((3, 1)), epochs=2, batch_size=2, eta=0.1, seed=0,
                on_nonfinite="skip", record="batch")
    np.testing.assert_array_equal(h.epoch["n_skipped"], [2, 2])
    assert np.all(h.batch["nonfinite"] == 1)
    np.testing.assert_array_equal(net.params, before)
    assert net.n_updates == 0


def test_chain_update_overflow_with_large_eta(backend, dtype):
    """eta large enough that eta * dC/dW overflows on the first step: phase "update" at
    layer 0 (the largest gradient), nothing written."""
    eta = 1e306 if dtype == np.float64 else 1e38
    net = _chain(4, dtype.name)
    before = net.params.copy()
    with pytest.raises(fastbp.NonFiniteError) as info:
        net.fit(_X1, _Y0, epochs=1, batch_size=1, eta=eta, seed=0)
    err = info.value
    assert (err.epoch, err.batch, err.layer, err.phase) == (0, 0, 0, "update")
    np.testing.assert_array_equal(net.params, before)


def test_linear_chain_explodes_during_training(backend, dtype):
    """A linear chain with w = 2 and eta = 10 grows double-exponentially: the first steps
    are finite, then a forward value overflows.  The error names that mini-batch (the
    same place on every backend), the network holds the last good step (equal to a run
    of exactly that many steps), and "skip" keeps it and counts the rest."""
    def chain():
        return fastbp.Network([1] * 5, activation="linear", output="linear", cost="quadratic",
                              init=([np.array([[2.0]])] * 4, [np.zeros(1)] * 4), dtype=dtype)

    where = {"float64": (0, 3, 1, "forward"), "float32": (0, 2, 1, "forward")}[dtype.name]
    X, Y = np.ones((4, 1)), np.zeros((4, 1))
    net = chain()
    with pytest.raises(fastbp.NonFiniteError) as info:
        net.fit(X, Y, epochs=3, batch_size=1, eta=10.0, seed=0, record="batch")
    err = info.value
    assert (err.epoch, err.batch, err.layer, err.phase) == where
    good = where[1]
    assert net.n_updates == good and len(err.history.batch) == good
    assert np.all(np.isfinite(net.params))
    twin = chain()  # all examples are equal: any `good` of them make the same steps
    twin.fit(X[:good], Y[:good], epochs=1, batch_size=1, eta=10.0, seed=0)
    np.testing.assert_array_equal(net.params, twin.params)
    h = net.fit(X, Y, epochs=2, batch_size=1, eta=10.0, seed=0, on_nonfinite="skip")
    np.testing.assert_array_equal(net.params, twin.params)
    np.testing.assert_array_equal(h.epoch["n_skipped"], [4, 4])
