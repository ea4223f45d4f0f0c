"""Momentum, Nesterov and the Sutskever schedule against steps computed by hand.

The network is one linear unit with the quadratic cost, ``a = w x + b``, trained on the
single example ``x = 1, y = 0`` with ``eta = 0.1`` from ``w = 1, b = 0``, so that
``dC/dw = dC/db = a = w + b`` and every step can be written down (n = 1, batch of 1).
"""

from __future__ import annotations

import numpy as np
import pytest

import fastbp

X1 = np.array([[1.0]])
Y1 = np.array([[0.0]])
RTOL = {np.dtype("float64"): 1e-12, np.dtype("float32"): 1e-6}


def _unit(dtype="float64", w=1.0, b=0.0):
    return fastbp.Network([1, 1], output="linear", cost="quadratic", dtype=dtype,
                          init=([np.array([[w]])], [np.array([b])]))


def _wb(net):
    return float(net.weights[0][0, 0]), float(net.biases[0][0])


def _run(net, steps, **kw):
    path = []
    for _ in range(steps):
        net.fit(X1, Y1, epochs=1, batch_size=1, eta=0.1, record=None, seed=0, **kw)
        path.append(_wb(net))
    return path


def _assert_path(path, expected, rtol):
    np.testing.assert_allclose(np.array(path), np.array(expected), rtol=rtol, atol=rtol)


def test_plain_sgd_hand_computed(backend, dtype):
    """a = 1 -> (0.9, -0.1); a = 0.8 -> (0.82, -0.18); a = 0.64 -> (0.756, -0.244)."""
    _assert_path(_run(_unit(dtype), 3), [(0.9, -0.1), (0.82, -0.18), (0.756, -0.244)],
                 RTOL[dtype])


def test_plain_sgd_with_l2_hand_computed(backend):
    """network2: w <- (1 - eta*lmbda/n) w - eta g_w with lmbda = 1, n = 1:
    step 1: a = 1, w = 0.9*1 - 0.1 = 0.8, b = -0.1;
    step 2: a = 0.7, w = 0.9*0.8 - 0.07 = 0.65, b = -0.17."""
    _assert_path(_run(_unit(), 2, lmbda=1.0), [(0.8, -0.1), (0.65, -0.17)], 1e-12)


def test_classical_momentum_hand_computed(backend, dtype):
    """mu = 0.5: v <- 0.5 v - 0.1 a (a = w + b), then (w, b) += v.
    step 1: a = 1,    v = -0.1               -> (0.9, -0.1)
    step 2: a = 0.8,  v = -0.05 - 0.08 = -0.13  -> (0.77, -0.23)
    step 3: a = 0.54, v = -0.065 - 0.054 = -0.119 -> (0.651, -0.349)"""
    _assert_path(_run(_unit(dtype), 3, momentum=0.5),
                 [(0.9, -0.1), (0.77, -0.23), (0.651, -0.349)], RTOL[dtype])


def test_classical_momentum_with_l2_hand_computed(backend):
    """mu = 0.5, lmbda = 1 (n = 1): v_w <- 0.5 v_w - 0.1 (a + w); v_b <- 0.5 v_b - 0.1 a.
    step 1: a = 1:    v_w = -0.2,  v_b = -0.1  -> (0.8, -0.1)
    step 2: a = 0.7:  v_w = -0.1 - 0.15 = -0.25,  v_b = -0.05 - 0.07 = -0.12 -> (0.55, -0.22)
    step 3: a = 0.33: v_w = -0.125 - 0.088 = -0.213, v_b = -0.06 - 0.033 = -0.093
            -> (0.337, -0.313)"""
    _assert_path(_run(_unit(), 3, momentum=0.5, lmbda=1.0),
                 [(0.8, -0.1), (0.55, -0.22), (0.337, -0.313)], 1e-12)


def test_nesterov_hand_computed(backend, dtype):
    """mu = 0.5; the gradient is taken at the look-ahead (w + 0.5 v_w, b + 0.5 v_b).
    step 1: v = 0, a = 1: v = -0.1 -> (0.9, -0.1)
    step 2: look-ahead (0.85, -0.15), a = 0.7: v = -0.05 - 0.07 = -0.12 -> (0.78, -0.22)
    step 3: look-ahead (0.72, -0.28), a = 0.44: v = -0.06 - 0.044 = -0.104 -> (0.676, -0.324)
    net.weights shows theta, never the look-ahead point."""
    _assert_path(_run(_unit(dtype), 3, momentum=0.5, nesterov=True),
                 [(0.9, -0.1), (0.78, -0.22), (0.676, -0.324)], RTOL[dtype])


def test_nesterov_l2_at_lookahead_hand_computed(backend):
    """mu = 0.5, lmbda = 1: the L2 term is taken at the look-ahead weight too.
    step 1: (0.8, -0.1), v = (-0.2, -0.1)
    step 2: look-ahead (0.7, -0.15), a = 0.55: v_w = -0.1 - 0.1 (0.55 + 0.7) = -0.225,
            v_b = -0.05 - 0.055 = -0.105 -> (0.575, -0.205)
    step 3: look-ahead (0.4625, -0.2575), a = 0.205:
            v_w = -0.1125 - 0.1 (0.205 + 0.4625) = -0.17925, v_b = -0.0525 - 0.0205 = -0.073
            -> (0.39575, -0.278)
    (With the L2 term at theta, step 2 would give w = 0.565.)"""
    _assert_path(_run(_unit(), 3, momentum=0.5, nesterov=True, lmbda=1.0),
                 [(0.8, -0.1), (0.575, -0.205), (0.39575, -0.278)], 1e-12)


def test_sutskever_schedule_hand_computed(backend):
    """Sutskever(mu_max=0.8, period=1): mu_t = 0.5, 0.75, min(5/6, 0.8) = 0.8 at t = 0, 1, 2.
    step 1: mu 0.5,  a = 1:    v = -0.1                       -> (0.9, -0.1)
    step 2: mu 0.75, a = 0.8:  v = -0.075 - 0.08 = -0.155      -> (0.745, -0.255)
    step 3: mu 0.8,  a = 0.49: v = -0.124 - 0.049 = -0.173     -> (0.572, -0.428)
    Each step is a separate fit call: t (net.n_updates) and the velocity carry over."""
    net = _unit()
    path = _run(net, 3, momentum=fastbp.Sutskever(mu_max=0.8, period=1))
    _assert_path(path, [(0.9, -0.1), (0.745, -0.255), (0.572, -0.428)], 1e-12)
    assert net.n_updates == 3


def _scalar_reference(steps, mu_of_t, x=0.5, y=0.2, w=1.0, b=0.0, eta=1e-3, nesterov=False):
    """The same unit, step by step in plain Python (float64)."""
    vw = vb = 0.0
    for t in range(steps):
        mu = mu_of_t(t)
        lw, lb = (w + mu * vw, b + mu * vb) if nesterov else (w, b)
        a = lw * x + lb
        vw = mu * vw - eta * (a - y) * x
        vb = mu * vb - eta * (a - y)
        w, b = w + vw, b + vb
    return w, b


@pytest.mark.parametrize("nesterov", [False, True], ids=["classical", "nesterov"])
def test_sutskever_schedule_over_600_updates(backend, nesterov):
    """period 250: mu = 0.5 for t < 250, 0.75 for t < 500, then min(5/6, mu_max); 600 updates
    in 2 epochs of 300 identical examples (the order cannot matter)."""
    n = 300
    X = np.full((n, 1), 0.5)
    y = np.full((n, 1), 0.2)
    net = fastbp.Network([1, 1], output="linear", cost="quadratic",
                         init=([np.array([[1.0]])], [np.array([0.0])]))
    net.fit(X, y, epochs=2, batch_size=1, eta=1e-3, momentum=fastbp.Sutskever(0.8),
            nesterov=nesterov, record=None, seed=0)
    assert net.n_updates == 600

    def schedule(t):
        return min(1 - 1 / (2 * (t // 250 + 1)), 0.8)

    w, b = _scalar_reference(600, schedule, nesterov=nesterov)
    assert _wb(net) == pytest.approx((w, b), rel=1e-12)
    # teeth: a constant mu = 0.5, or the schedule without the cap, ends elsewhere
    w5, _ = _scalar_reference(600, lambda t: 0.5, nesterov=nesterov)
    w99, _ = _scalar_reference(600, lambda t: min(1 - 1 / (2 * (t // 250 + 1)), 0.99),
                               nesterov=nesterov)
    assert abs(w5 - w) > 1e-3 and abs(w99 - w) > 1e-4


def test_sutskever_values_and_validation():
    s = fastbp.Sutskever(mu_max=0.9)
    assert s.period == 250
    assert [s.mu_at(t) for t in (0, 249, 250, 499, 500, 750, 10_000)] == pytest.approx(
        [0.5, 0.5, 0.75, 0.75, 5 / 6, 0.875, 0.9], rel=1e-15)
    for bad in (1.0, -0.1, float("nan"), 1.5):
        with pytest.raises(ValueError, match="mu_max"):
            fastbp.Sutskever(mu_max=bad)
    with pytest.raises(ValueError, match="period"):
        fastbp.Sutskever(0.9, period=0)
    with pytest.raises(TypeError, match="period"):
        fastbp.Sutskever(0.9, period=2.5)


def test_velocity_and_updates_persist_across_fit_calls(backend, rng):
    """Three fit calls of one epoch each == one call of three epochs (same orders)."""
    X = rng.standard_normal((12, 3))
    y = rng.integers(0, 2, 12)
    a = fastbp.Network([3, 4, 2], seed=1)
    b = fastbp.Network([3, 4, 2], seed=1)
    kw = dict(batch_size=12, eta=0.5, momentum=0.9, nesterov=True, record=None)
    a.fit(X, y, epochs=3, seed=0, **kw)
    for _ in range(3):
        b.fit(X, y, epochs=1, seed=0, **kw)  # one batch per epoch: the order does not matter
    np.testing.assert_allclose(b.params, a.params, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(b.velocity, a.velocity, rtol=1e-14, atol=1e-15)
    assert a.n_updates == b.n_updates == 3
    assert np.any(a.velocity != 0)


def test_reset_optimizer(backend, rng):
    X = rng.standard_normal((6, 3))
    y = rng.integers(0, 2, 6)
    net = fastbp.Network([3, 4, 2], seed=1)
    net.fit(X, y, epochs=2, batch_size=6, eta=0.5, momentum=0.9, seed=0)
    assert net.n_updates == 2 and np.any(net.velocity != 0)
    net.reset_optimizer()
    assert net.n_updates == 0
    assert not np.any(net.velocity)
    fresh = fastbp.Network([3, 4, 2], init=(list(net.weights), list(net.biases)))
    for m in (net, fresh):
        m.fit(X, y, epochs=1, batch_size=6, eta=0.5, momentum=0.9, seed=0)
    np.testing.assert_array_equal(net.params, fresh.params)
    np.testing.assert_array_equal(net.velocity, fresh.velocity)


def test_plain_sgd_leaves_velocity_alone(backend, rng):
    """momentum=0 is network2's plain SGD: the velocity is not touched (SPEC section 3)."""
    X = rng.standard_normal((6, 3))
    y = rng.integers(0, 2, 6)
    net = fastbp.Network([3, 4, 2], seed=1)
    net.fit(X, y, epochs=1, batch_size=6, eta=0.5, momentum=0.9, seed=0)
    v = net.velocity.copy()
    net.fit(X, y, epochs=1, batch_size=3, eta=0.5, seed=0)
    np.testing.assert_array_equal(net.velocity, v)
    assert net.n_updates == 3


def test_momentum_zero_equals_plain_sgd(backend, rng):
    """With mu = 0 classical momentum is exactly plain SGD (to round-off)."""
    X = rng.standard_normal((9, 3))
    y = rng.integers(0, 2, 9)
    a = fastbp.Network([3, 4, 2], seed=1)
    b = fastbp.Network([3, 4, 2], seed=1)
    a.fit(X, y, epochs=2, batch_size=4, eta=0.5, lmbda=2.0, seed=3)
    b.fit(X, y, epochs=2, batch_size=4, eta=0.5, lmbda=2.0, seed=3,
          momentum=fastbp.Sutskever(mu_max=0.0))
    np.testing.assert_allclose(b.params, a.params, rtol=1e-13, atol=1e-15)
