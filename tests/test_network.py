"""The Network object: initialisers (SPEC section 2), parameter views, set_params,
pickle and copy, float32 end to end."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest

import fastbp

BIG = [400, 300, 200]  # 120,000 + 60,000 weights: sample moments within a few %


def _moments(a):
    a = np.asarray(a, dtype=np.float64)
    return float(a.mean()), float(a.std())


@pytest.mark.parametrize("init,w_std,b_std", [
    ("normal_scaled", lambda n_in, n_out: 1 / math.sqrt(n_in), 1.0),
    ("normal", lambda n_in, n_out: 1.0, 1.0),
    ("uniform_fan_in", lambda n_in, n_out: 1 / math.sqrt(n_in) / math.sqrt(3), 0.0),
    ("glorot_uniform", lambda n_in, n_out: math.sqrt(6 / (n_in + n_out)) / math.sqrt(3), 0.0),
    ("glorot_normal", lambda n_in, n_out: math.sqrt(2 / (n_in + n_out)), 0.0),
    ("he_normal", lambda n_in, n_out: math.sqrt(2 / n_in), 0.0),
])
def test_dense_initialisers_distribution(init, w_std, b_std, dtype):
    net = fastbp.Network(BIG, init=init, seed=11, dtype=dtype)
    for l, (W, b) in enumerate(zip(net.weights, net.biases, strict=True)):
        n_in, n_out = BIG[l], BIG[l + 1]
        assert W.shape == (n_out, n_in) and b.shape == (n_out,)
        assert W.dtype == dtype and b.dtype == dtype
        mean, std = _moments(W)
        expected = w_std(n_in, n_out)
        assert std == pytest.approx(expected, rel=0.02), f"layer {l}"
        assert abs(mean) < 0.02 * expected
        if init in ("uniform_fan_in", "glorot_uniform"):
            bound = expected * math.sqrt(3)
            assert np.abs(W).max() <= bound * (1 + 1e-7)
            assert np.abs(W).max() > 0.99 * bound
        if b_std == 0.0:
            assert not np.any(b)
        else:
            assert _moments(b)[1] == pytest.approx(b_std, rel=0.15)


def test_sparse_initialiser():
    """Martens' sparse init: exactly 15 non-zero N(0, 1) incoming weights per unit, b = 0."""
    net = fastbp.Network([100, 80, 40, 10], init="sparse", seed=3)
    for W, b in zip(net.weights, net.biases, strict=True):
        np.testing.assert_array_equal(np.count_nonzero(W, axis=1), 15)
        assert not np.any(b)
    nz = np.concatenate([W[W != 0] for W in net.weights])
    assert _moments(nz)[1] == pytest.approx(1.0, rel=0.06)
    # the chosen inputs differ between units
    W0 = net.weights[0]
    assert len({tuple(np.flatnonzero(row)) for row in W0}) > 70


def test_sparse_initialiser_narrow_layers():
    """With n_in <= 15 every incoming weight is drawn."""
    net = fastbp.Network([10, 12, 3], init="sparse", seed=3)
    assert np.all(net.weights[0] != 0) and np.all(net.weights[1] != 0)


def test_float32_holds_float64_values_rounded():
    """The same seed gives the same float64 values whatever the dtype (documented)."""
    a = fastbp.Network([5, 7, 3], seed=9, dtype="float64")
    b = fastbp.Network([5, 7, 3], seed=9, dtype="float32")
    np.testing.assert_array_equal(b.params, a.params.astype(np.float32))


def test_explicit_init_and_views(rng):
    W = [rng.standard_normal((4, 3)), rng.standard_normal((2, 4))]
    b = [rng.standard_normal(4), rng.standard_normal(2)]
    net = fastbp.Network([3, 4, 2], init=(W, b))
    for got, exp in zip(net.weights, W, strict=True):
        np.testing.assert_array_equal(got, exp)
    W[0][0, 0] = 99.0  # the network holds a copy
    assert net.weights[0][0, 0] != 99.0
    assert net.sizes == (3, 4, 2)


def test_writing_into_views_changes_the_network(backend, rng):
    net = fastbp.Network([3, 4, 2], seed=0)
    X = rng.standard_normal((5, 3))
    out = net.forward(X)
    net.weights[1][...] = 0.0
    net.biases[1][...] = [10.0, -10.0]
    np.testing.assert_allclose(net.forward(X), np.tile(1 / (1 + np.exp([-10.0, 10.0])), (5, 1)),
                               rtol=1e-15)
    assert not np.allclose(out, net.forward(X))
    net.weights[0] = np.ones((4, 3))  # element assignment is checked and copied in
    np.testing.assert_array_equal(net.weights[0], 1.0)
    with pytest.raises(ValueError, match="weights"):
        net.weights[0] = np.ones((3, 4))
    # the flat view reflects the same buffer
    assert net.params[0] == 1.0
    with pytest.raises(ValueError):
        net.params[0] = 5.0  # read-only


def test_set_params(backend, rng):
    net = fastbp.Network([3, 4, 2], seed=0)
    W = [rng.standard_normal((4, 3)), rng.standard_normal((2, 4))]
    b = [rng.standard_normal(4), rng.standard_normal(2)]
    net.set_params(W, b)
    other = fastbp.Network([3, 4, 2], init=(W, b))
    np.testing.assert_array_equal(net.params, other.params)
    X = rng.standard_normal((3, 3))
    np.testing.assert_array_equal(net.forward(X), other.forward(X))


def _trained(rng):
    net = fastbp.Network([3, 5, 2], activation="leaky_relu", alpha=0.05, seed=1)
    X = rng.standard_normal((10, 3))
    y = rng.integers(0, 2, 10)
    net.fit(X, y, epochs=2, batch_size=3, eta=0.2, momentum=0.9, seed=0)
    return net, X, y


@pytest.mark.parametrize("how", ["pickle", "deepcopy", "copy"])
def test_pickle_and_copy(backend, rng, how):
    net, X, y = _trained(rng)
    dup = {"pickle": lambda n: pickle.loads(pickle.dumps(n)), "deepcopy": copy.deepcopy,
           "copy": copy.copy}[how](net)
    np.testing.assert_array_equal(dup.params, net.params)
    np.testing.assert_array_equal(dup.velocity, net.velocity)
    assert dup.n_updates == net.n_updates
    assert dup.alpha == 0.05 and dup.sizes == net.sizes
    np.testing.assert_array_equal(dup.forward(X), net.forward(X))
    # independent: training the copy leaves the original alone, and both continue alike
    before = net.params.copy()
    dup.fit(X, y, epochs=1, batch_size=3, eta=0.2, momentum=0.9, seed=4)
    np.testing.assert_array_equal(net.params, before)
    net.fit(X, y, epochs=1, batch_size=3, eta=0.2, momentum=0.9, seed=4)
    np.testing.assert_array_equal(dup.params, net.params)


@pytest.mark.parametrize("activation", ["sigmoid", "leaky_relu"])
def test_per_layer_activations_and_alpha(backend, rng, activation):
    """A list of hidden activations, and leaky_relu's alpha, reach the backend."""
    from helpers import reference_of
    from reference import Reference

    net = fastbp.Network([3, 4, 4, 2], activation=["tanh", activation], alpha=0.2, seed=0)
    ref = reference_of(net, "tanh", alpha=0.2)
    ref.layer_activations = ["tanh", activation, "sigmoid"]
    X = rng.standard_normal((6, 3))
    np.testing.assert_allclose(net.forward(X), Reference.feedforward_batch(ref, X), rtol=1e-12)
    Y = np.eye(2)[rng.integers(0, 2, 6)]
    g = net.gradient(X, Y)
    trace = ref.evaluate(X, Y)
    for got, exp in zip(g.weights, trace.nabla_w, strict=True):
        np.testing.assert_allclose(got, exp, rtol=1e-10, atol=1e-14)


def test_package_metadata():
    import importlib.metadata
    import pathlib

    assert fastbp.__version__ == importlib.metadata.version("fastbp")
    assert (pathlib.Path(fastbp.__file__).parent / "py.typed").exists()
    assert set(fastbp.STAT_NAMES) == {
        "speed", "grad_norm", "gain", "weight_norm", "update_ratio", "act_mean", "act_std",
        "sat_low", "sat_high", "slope_mean", "nonfinite"}


def _on_cache_line(a):
    return a.ctypes.data % 64 == 0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_parameters_and_velocity_start_on_cache_lines(tmp_path, rng, dtype):
    # NumPy aligns to 16 bytes only; the kernels' 64-byte vectors are slower across lines
    net = fastbp.Network([7, 5, 3], dtype=dtype, seed=0)
    assert _on_cache_line(net._params) and _on_cache_line(net._velocity)
    X = rng.random((20, 7))
    y = rng.integers(0, 3, 20)
    net.fit(X, y, epochs=1, batch_size=5, eta=0.1, momentum=0.5, stats="distance", seed=1)
    assert _on_cache_line(net._stats_start)
    for other in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        assert _on_cache_line(other._params) and _on_cache_line(other._velocity)
        np.testing.assert_array_equal(other._params, net._params)
        np.testing.assert_array_equal(other._velocity, net._velocity)
        assert _on_cache_line(other._stats_start)
    net.save(tmp_path / "net.fbp")
    loaded = fastbp.load(tmp_path / "net.fbp")
    assert _on_cache_line(loaded._params) and _on_cache_line(loaded._velocity)
    np.testing.assert_array_equal(loaded._params, net._params)


def test_aligned_zeros_places_and_aligned_copies():
    from fastbp._contract import aligned, aligned_zeros

    for n, dt in ((0, np.float64), (1, np.float32), (1001, np.float64)):
        for off in (0, 16, 40):
            a = aligned_zeros(n, dt, off)
            assert a.shape == (n,) and a.dtype == dt and not a.any()
            assert n == 0 or a.ctypes.data % 64 == off
            a[...] = 1  # writable, and the whole length is owned
    b = np.arange(10.0)[1:]  # 8 bytes past NumPy's alignment: never on a cache line
    c = aligned(b)
    assert c.ctypes.data % 64 == 0 and np.array_equal(c, b)
    assert aligned(c) is c
    d = aligned(c, copy=True)  # a copy even when already aligned
    assert d is not c and d.ctypes.data % 64 == 0 and np.array_equal(d, c)
    d[0] = -1.0
    assert c[0] == b[0]
