"""fit(): determinism, mini-batch sizes, tables, History JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import COST_RTOL, assert_stats_close, make_targets, reference_of, table_stats
from reference import step_statistics

import fastbp
from fastbp import History, Table


def _data(rng, n=20, n_in=4, n_out=3):
    X = rng.standard_normal((n, n_in))
    y = rng.integers(0, n_out, n)
    return X, y


def _train(X, y, seed, record="batch", dtype="float64", **kw):
    net = fastbp.Network([4, 6, 5, 3], activation="tanh", output="softmax", cost="log_likelihood",
                         dtype=dtype, seed=7)
    h = net.fit(X, y, epochs=3, batch_size=6, eta=0.2, lmbda=1.0, momentum=0.5, record=record,
                validation=(X[:7], y[:7]), probe=(X[:5], y[:5]), seed=seed, **kw)
    return net, h


@pytest.mark.parametrize("record", ["batch", "epoch", None])
def test_same_seed_same_bits(backend, rng, dtype, record):
    """Same seed, same backend: identical parameters and History, bit for bit."""
    X, y = _data(rng)
    net1, h1 = _train(X, y, seed=123, record=record, dtype=dtype)
    net2, h2 = _train(X, y, seed=123, record=record, dtype=dtype)
    np.testing.assert_array_equal(net1.params, net2.params)
    np.testing.assert_array_equal(net1.velocity, net2.velocity)
    assert h1 == h2
    for t in History.TABLES:
        for col in getattr(h1, t):
            a, b = getattr(h1, t)[col], getattr(h2, t)[col]
            assert a.tobytes() == b.tobytes(), f"{t}[{col}] differs"
    # a different seed shuffles differently (the comparison above is not vacuous)
    net3, h3 = _train(X, y, seed=124, record=record, dtype=dtype)
    assert not np.array_equal(net1.params, net3.params)


def test_same_seed_same_initialisation(dtype):
    a = fastbp.Network([5, 7, 3], seed=42, dtype=dtype)
    b = fastbp.Network([5, 7, 3], seed=42, dtype=dtype)
    c = fastbp.Network([5, 7, 3], seed=43, dtype=dtype)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)


def test_seed_none_is_recorded_and_reproducible(backend, rng):
    X, y = _data(rng)
    net = fastbp.Network([4, 5, 3], seed=1)
    h = net.fit(X, y, epochs=2, batch_size=3, eta=0.1)
    seed = h.settings["seed"]
    assert isinstance(seed, int)
    again = fastbp.Network([4, 5, 3], seed=1)
    again.fit(X, y, epochs=2, batch_size=3, eta=0.1, seed=seed)
    np.testing.assert_array_equal(net.params, again.params)


def test_last_mini_batch_is_shorter_and_averaged_over_its_size(backend):
    """n = 10, batch_size = 4: mini-batches of 4, 4 and 2, each gradient divided by its own m.

    All examples are identical, so the mean gradient of any mini-batch is the gradient of
    one example, whatever the order: with g = (1/m) sum the three steps are the same
    per-example step; dividing the last one by batch_size instead would halve it.
    """
    X = np.tile([[0.3, -1.2, 0.8]], (10, 1))
    y = np.zeros(10, dtype=int)
    net = fastbp.Network([3, 4, 2], activation="tanh", seed=2)
    ref = reference_of(net, "tanh")
    h = net.fit(X, y, epochs=1, batch_size=4, eta=0.5, lmbda=0.7, record="batch", seed=0)
    np.testing.assert_array_equal(h.batch["size"], [4, 4, 2])
    Y = np.tile([[1.0, 0.0]], (10, 1))
    steps = [ref.update_mini_batch(X[:m], Y[:m], 0.5, 0.7, n=10) for m in (4, 4, 2)]
    for got, exp in zip(net.weights, ref.weights, strict=True):
        np.testing.assert_allclose(got, exp, rtol=1e-12, atol=1e-15)
    for got, exp in zip(net.biases, ref.biases_1d, strict=True):
        np.testing.assert_allclose(got, exp, rtol=1e-12, atol=1e-15)
    for k, step in enumerate(steps):
        assert_stats_close(table_stats(h.batch, k), step_statistics(ref, step), 1e-10,
                           what=f"batch {k}")


@pytest.mark.parametrize("n,batch_size,expected", [(10, 10, [10]), (10, 1, [1] * 10),
                                                   (10, 3, [3, 3, 3, 1]), (7, 5, [5, 2])])
def test_mini_batch_sizes(backend, rng, n, batch_size, expected):
    X, y = _data(rng, n=n)
    net = fastbp.Network([4, 3], seed=0, output="softmax", cost="log_likelihood")
    h = net.fit(X, y, epochs=2, batch_size=batch_size, eta=0.1, record="batch", seed=0)
    np.testing.assert_array_equal(h.batch["size"], expected * 2)
    np.testing.assert_array_equal(h.batch["batch"], list(range(len(expected))) * 2)
    assert net.n_updates == 2 * len(expected)


def test_batch_size_larger_than_n_is_an_error(backend, rng):
    X, y = _data(rng, n=5)
    net = fastbp.Network([4, 3], seed=0)
    before = net.params.copy()
    with pytest.raises(ValueError, match="batch_size"):
        net.fit(X, y, epochs=1, batch_size=6, eta=0.1)
    np.testing.assert_array_equal(net.params, before)


def test_tables_shapes(backend, rng):
    X, y = _data(rng)
    net, h = _train(X, y, seed=0, record="batch")
    L = 3
    assert len(h.batch) == 3 * 4  # ceil(20 / 6) = 4 mini-batches per epoch
    assert h.batch["speed"].shape == (12, L)
    assert len(h.epoch) == 3
    assert set(h.validation) >= {"epoch", "accuracy", "cost"}
    assert len(h.validation) == 3
    np.testing.assert_array_equal(h.validation["epoch"], [0, 1, 2])
    assert len(h.probe) == 4
    assert h.probe["speed"].shape == (4, L)
    assert h.sizes == (4, 6, 5, 3)
    assert h.backend == backend
    assert h.dtype == "float64"


def test_validation_values(backend, rng):
    """Validation accuracy and cost at the end of each epoch (cost with the L2 term over
    N = len(X_val), as network2's monitor)."""
    X, y = _data(rng)
    Xv, yv = _data(rng, n=9)
    net = fastbp.Network([4, 6, 3], output="softmax", cost="log_likelihood", seed=3)
    h = net.fit(X, y, epochs=2, batch_size=20, eta=0.3, lmbda=2.0, validation=(Xv, yv), seed=0)
    ref = reference_of(net, "sigmoid", "softmax", "log_likelihood")  # final parameters
    Yv = np.eye(3)[yv]
    assert h.validation["cost"][-1] == pytest.approx(ref.total_cost(Xv, Yv, 2.0), rel=COST_RTOL)
    acc = np.mean(np.argmax(ref.feedforward_batch(Xv), axis=1) == yv)
    assert h.validation["accuracy"][-1] == acc
    assert h.validation["accuracy"][-1] == net.accuracy(Xv, yv)


def test_validation_accuracy_nan_for_regression(backend, rng):
    X = rng.standard_normal((8, 3))
    y = rng.standard_normal((8, 2))
    net = fastbp.Network([3, 4, 2], output="linear", cost="quadratic", seed=0)
    h = net.fit(X, y, epochs=2, batch_size=4, eta=0.01, validation=(X, y), seed=0)
    assert np.all(np.isnan(h.validation["accuracy"]))
    assert np.all(np.isfinite(h.validation["cost"]))


def test_history_json_round_trip(backend, rng):
    X, y = _data(rng)
    for record in ("batch", "epoch", None):
        _, h = _train(X, y, seed=5, record=record)
        s = h.to_json()
        json.loads(s)  # strict JSON: no NaN / Infinity tokens
        assert "NaN" not in s
        back = History.from_json(s)
        assert back == h
        for t in History.TABLES:
            for col in getattr(h, t):
                a, b = getattr(h, t)[col], getattr(back, t)[col]
                assert a.dtype == b.dtype and a.shape == b.shape
                np.testing.assert_array_equal(a, b)  # NaN == NaN here
        assert back.settings == h.settings


def test_history_json_keeps_infinities_and_nans():
    t = Table({"epoch": np.arange(3), "x": np.array([[np.inf, -np.inf], [np.nan, 1e-300],
                                                     [0.1, -0.0]])}, name="epoch")
    h = History(epoch=t, sizes=(2, 2), backend="numpy", dtype="float64", settings={"eta": 0.1})
    back = History.from_json(h.to_json())
    np.testing.assert_array_equal(back.epoch["x"], t["x"])
    assert np.signbit(back.epoch["x"][2, 1])
    assert back == h


def test_tables_are_indexable_by_column_name(backend, rng):
    X, y = _data(rng)
    _, h = _train(X, y, seed=5, record="batch")
    assert "speed" in h.batch and "cost" in h.batch
    with pytest.raises(KeyError, match="speed"):
        h.epoch["speed"]  # record="batch": no per-epoch statistics
    assert isinstance(h.batch["epoch"], np.ndarray)


def test_fit_float32_keeps_dtype(backend, rng):
    X, y = _data(rng)
    net = fastbp.Network([4, 5, 3], dtype="float32", seed=0)
    net.fit(X, y, epochs=1, batch_size=5, eta=0.1, seed=0)
    assert net.params.dtype == np.float32
    assert all(w.dtype == np.float32 for w in net.weights)
    assert net.forward(X).dtype == np.float32
    assert net.gradient(X, y).weights[0].dtype == np.float32


@pytest.mark.parametrize("kind", ["labels", "onehot", "soft"])
def test_target_forms_train_identically(backend, rng, kind):
    """Integer labels and their one-hot rows are the same targets."""
    X = rng.standard_normal((12, 4))
    y, Y = make_targets(rng, 12, 3, "sigmoid", "cross_entropy", kind)
    a = fastbp.Network([4, 5, 3], seed=0)
    b = fastbp.Network([4, 5, 3], seed=0)
    a.fit(X, y, epochs=2, batch_size=5, eta=0.3, seed=1)
    b.fit(X, Y, epochs=2, batch_size=5, eta=0.3, seed=1)
    np.testing.assert_array_equal(a.params, b.params)
