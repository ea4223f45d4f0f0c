"""Non-finite values (SPEC section 5): NonFiniteError with epoch / batch / layer / phase,
the parameters of the last good step, and the "skip" policy.

Each fault is built so that exactly one phase of one layer overflows, with values
that are exact in binary (powers of two), so every backend must report the same place.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from helpers import assert_stats_close, fit_orders, make_targets, reference_of, table_stats
from reference import step_statistics

import fastbp

BIG = 2.0 ** 600  # ~4e180: BIG * BIG overflows, BIG * 0.5 is exact


def _forward_fault_net():
    """Linear layers: z of layer 2 = BIG * BIG * ... overflows in the forward pass."""
    W = [np.eye(2), BIG * np.eye(2), BIG * np.eye(2)]
    b = [np.zeros(2)] * 3
    return fastbp.Network([2, 2, 2, 2], activation="linear", output="linear", cost="quadratic",
                          init=(W, b))


def _backward_fault_net():
    """Forward exact and finite, delta of layer 0 = BIG*BIG*2.25 - BIG*BIG*2.25 = inf - inf.

    a0 = [0.5, 0.5]; z1 = BIG*0.5 - BIG*0.5 + 0.25 = 0.25 (exact); z2 = [0.5, -0.25];
    a3 = 0.5 + 2*(-0.25) + 0.75 = 0.75, delta3 = 0.75 (y = 0); delta2 = [0.75, 1.5];
    delta1 = [2.25 BIG, -2.25 BIG] (finite); delta0 = W1^T delta1 overflows.
    The weight gradients of layers 1..3 are finite (delta * a with a <= 0.75).
    """
    M = np.array([[BIG, -BIG], [BIG, -BIG]])
    W = [np.zeros((2, 1)), M, M.copy(), np.array([[1.0, 2.0]])]
    b = [np.array([0.5, 0.5]), np.array([0.25, 0.25]), np.array([0.5, -0.25]), np.array([0.75])]
    return fastbp.Network([1, 2, 2, 2, 1], activation="linear", output="linear",
                          cost="quadratic", init=(W, b))


def _unit(w=1.0, b=0.0):
    return fastbp.Network([1, 1], output="linear", cost="quadratic",
                          init=([np.array([[w]])], [np.array([b])]))


def _check_error(err, epoch, batch, layer, phase):
    assert isinstance(err, FloatingPointError)
    assert (err.epoch, err.batch, err.layer, err.phase) == (epoch, batch, layer, phase), (
        f"got epoch={err.epoch} batch={err.batch} layer={err.layer} phase={err.phase!r}")
    assert phase in str(err) and f"layer {layer}" in str(err)


@pytest.mark.parametrize("record", ["batch", "epoch", None])
def test_forward_fault(backend, record):
    net = _forward_fault_net()
    before = net.params.copy()
    X = np.ones((3, 2))
    y = np.zeros((3, 2))
    with pytest.raises(fastbp.NonFiniteError) as info:
        net.fit(X, y, epochs=2, batch_size=3, eta=0.1, record=record, seed=0)
    _check_error(info.value, 0, 0, 2, "forward")
    np.testing.assert_array_equal(net.params, before)
    assert net.n_updates == 0
    h = info.value.history
    assert isinstance(h, fastbp.History)
    assert len(h.batch) == 0 and len(h.epoch) == 0


def test_forward_fault_in_gradient(backend):
    net = _forward_fault_net()
    with pytest.raises(fastbp.NonFiniteError) as info:
        net.gradient(np.ones((3, 2)), np.zeros((3, 2)))
    _check_error(info.value, None, None, 2, "forward")


def test_backward_fault(backend):
    net = _backward_fault_net()
    before = net.params.copy()
    X = np.ones((2, 1))
    y = np.zeros((2, 1))
    # the forward pass is finite and exact
    np.testing.assert_array_equal(net.forward(X), [[0.75], [0.75]])
    with pytest.raises(fastbp.NonFiniteError) as info:
        net.fit(X, y, epochs=1, batch_size=2, eta=0.1, seed=0)
    _check_error(info.value, 0, 0, 0, "backward")
    np.testing.assert_array_equal(net.params, before)
    with pytest.raises(fastbp.NonFiniteError) as info:
        net.gradient(X, y)
    _check_error(info.value, None, None, 0, "backward")


def test_update_fault_first_step(backend):
    """One linear unit, a = 1, y = -3: g = 4, eta * g = 4e308 overflows the update."""
    net = _unit()
    before = net.params.copy()
    with pytest.raises(fastbp.NonFiniteError) as info:
        net.fit([[1.0]], [[-3.0]], epochs=1, batch_size=1, eta=1e308, seed=0)
    _check_error(info.value, 0, 0, 0, "update")
    np.testing.assert_array_equal(net.params, before)
    assert net.n_updates == 0


@pytest.mark.parametrize("momentum", [0.0, 0.5])
def test_fault_after_good_steps_keeps_last_good_step(backend, momentum):
    """3 identical examples, batch 1, eta = 1e200: step 1 gives w = b ~ -1e200 (finite),
    step 2 has g ~ 2e200 and eta * g overflows.  The parameters (and velocity) are those
    after step 1; the History holds the first mini-batch."""
    net = _unit()
    X = np.ones((3, 1))
    y = np.zeros((3, 1))
    with pytest.raises(fastbp.NonFiniteError) as info:
        net.fit(X, y, epochs=2, batch_size=1, eta=1e200, momentum=momentum, record="batch",
                seed=0)
    _check_error(info.value, 0, 1, 0, "update")
    # step 1 by hand: a = 1, g_w = g_b = 1, v = -1e200 (mu * 0 + ...), theta += v
    assert float(net.weights[0][0, 0]) == 1.0 - 1e200
    assert float(net.biases[0][0]) == -1e200
    assert net.n_updates == 1
    if momentum:
        np.testing.assert_array_equal(net.velocity, [-1e200, -1e200])
    h = info.value.history
    assert len(h.batch) == 1
    assert h.batch["cost"][0] == 0.5
    assert np.all(h.batch["nonfinite"][0] == 0)


def test_exploding_training_stops_at_last_good_step(backend, rng):
    """A sigmoid net with eta = 1e300 explodes within a few mini-batches.  Whatever the
    phase, the error names a real place and the parameters equal the reference replayed
    up to the faulty mini-batch."""
    sizes = [3, 5, 4, 2]
    net = fastbp.Network(sizes, activation="tanh", output="linear", cost="quadratic", seed=3)
    ref = reference_of(net, "tanh", "linear", "quadratic")
    X = rng.standard_normal((12, 3))
    y, Y = make_targets(rng, 12, 2, "linear", "quadratic")
    with pytest.raises(fastbp.NonFiniteError) as info:
        net.fit(X, y, epochs=3, batch_size=4, eta=1e300, seed=5)
    err = info.value
    assert err.phase in ("forward", "backward", "update")
    assert 0 <= err.layer < 3 and 0 <= err.epoch < 3 and 0 <= err.batch < 3
    n_good = err.epoch * 3 + err.batch
    assert n_good >= 1, "the first step should be finite with these values"
    assert net.n_updates == n_good
    assert np.all(np.isfinite(net.params))
    with np.errstate(all="ignore"):
        done = 0
        for order in fit_orders(5, 12, 3):
            for k in range(3):
                if done == n_good:
                    break
                idx = order[4 * k:4 * k + 4]
                ref.update_mini_batch(X[idx], Y[idx], 1e300, 0.0, 12)
                done += 1
    for got, exp in zip(net.weights, ref.weights, strict=True):
        np.testing.assert_allclose(got, exp, rtol=1e-10)
    for got, exp in zip(net.biases, ref.biases_1d, strict=True):
        np.testing.assert_allclose(got, exp, rtol=1e-10)


def test_skip_policy_counts_and_goes_on(backend):
    """on_nonfinite='skip': faulty mini-batches are dropped (parameters, velocity and
    n_updates untouched), counted per epoch, flagged in the statistics."""
    X = np.ones((3, 1))
    y = np.zeros((3, 1))
    net = _unit()
    h = net.fit(X, y, epochs=2, batch_size=1, eta=1e200, momentum=0.5, record="batch",
                on_nonfinite="skip", seed=0)
    assert net.n_updates == 1
    assert float(net.weights[0][0, 0]) == 1.0 - 1e200
    np.testing.assert_array_equal(net.velocity, [-1e200, -1e200])
    np.testing.assert_array_equal(h.epoch["n_skipped"], [2, 3])
    np.testing.assert_array_equal(h.batch["nonfinite"][:, 0], [0, 1, 1, 1, 1, 1])
    assert np.all(np.isnan(h.batch["cost"][1:])) and h.batch["cost"][0] == 0.5
    assert np.all(np.isnan(h.batch["speed"][1:]))
    # record="epoch": nonfinite is the number of flagged mini-batches of the epoch
    net = _unit()
    h = net.fit(X, y, epochs=2, batch_size=1, eta=1e200, record="epoch", on_nonfinite="skip",
                seed=0)
    np.testing.assert_array_equal(h.epoch["nonfinite"][:, 0], [2, 3])
    np.testing.assert_array_equal(h.epoch["n_skipped"], [2, 3])


def test_skip_policy_statistics_of_good_batches(backend, rng):
    """With 'skip', the statistics of an epoch whose batches were all good are exact."""
    X = rng.standard_normal((8, 3))
    y = rng.integers(0, 2, 8)
    net = fastbp.Network([3, 4, 2], seed=1)
    ref = reference_of(net)
    h = net.fit(X, y, epochs=1, batch_size=8, eta=0.3, record="batch", on_nonfinite="skip",
                seed=0)
    step = ref.update_mini_batch(X, np.eye(2)[y], 0.3, 0.0, 8)
    assert_stats_close(table_stats(h.batch, 0), step_statistics(ref, step), 1e-10)


def test_nonfinite_error_pickles():
    err = fastbp.NonFiniteError(1, 2, 3, "backward")
    back = pickle.loads(pickle.dumps(err))
    assert (back.epoch, back.batch, back.layer, back.phase) == (1, 2, 3, "backward")
    assert isinstance(back, FloatingPointError)


def _probe_fault_case():
    """Training data is harmless; the probe inputs (1e300, finite and valid) overflow z of
    layer 1: z0 = 10 * 1e300 = 1e301 (finite), z1 = 1e10 * 1e301 = inf."""
    W = [10.0 * np.eye(2), 1e10 * np.eye(2)]
    b = [np.zeros(2), np.zeros(2)]
    net = fastbp.Network([2, 2, 2], activation="linear", output="linear", cost="quadratic",
                         init=(W, b))
    X = np.ones((4, 2))
    y = np.zeros((4, 2))
    return net, X, y, np.full((3, 2), 1e300), np.zeros((3, 2))


def test_probe_fault_raises(backend):
    net, X, y, Xp, yp = _probe_fault_case()
    before = net.params.copy()
    with pytest.raises(fastbp.NonFiniteError) as info:
        net.fit(X, y, epochs=2, batch_size=2, eta=1e-30, probe=(Xp, yp), seed=0)
    err = info.value
    assert (err.epoch, err.batch, err.layer, err.phase) == (0, None, 1, "forward")
    np.testing.assert_array_equal(net.params, before)  # the probe runs before epoch 0
    assert err.history is not None and len(err.history.epoch) == 0


def test_probe_fault_skipped(backend):
    net, X, y, Xp, yp = _probe_fault_case()
    h = net.fit(X, y, epochs=2, batch_size=2, eta=1e-30, probe=(Xp, yp), on_nonfinite="skip",
                seed=0)
    assert len(h.probe) == 3
    np.testing.assert_array_equal(h.probe["nonfinite"], 1.0)
    assert np.all(np.isnan(h.probe["speed"]))
    assert net.n_updates == 4  # training itself went on
