"""Bad input beyond tests/test_validation.py (issue 6, "Bad input").

* memory layouts: Fortran-order, strided, read-only, memory-mapped and non-native
  byte-order arrays give the same bits as C-contiguous ones, and are copied at most once;
* arrays that alias the parameters are refused by ``fit`` (it writes them while
  reading its inputs), and handled by ``set_params``;
* absurd sizes are refused with the memory they would need, before allocating;
* every refusal is the same exception, with the same message, on every backend.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import fastbp
from fastbp import _validation
from fastbp._backends import backends

SIZES = [6, 5, 3]
AVAILABLE = [name for name, info in backends().items() if info.available]


def _data(n=24, seed=0):
    g = np.random.default_rng(seed)
    return g.standard_normal((n, SIZES[0])), g.integers(0, SIZES[-1], n)


def _net(dtype="float64"):
    return fastbp.Network(SIZES, output="softmax", cost="log_likelihood", dtype=dtype, seed=0)


def _layouts(X, tmp_path):
    """The same values in other memory layouts."""
    F = np.asfortranarray(X)
    big = np.zeros((X.shape[0] * 2, X.shape[1] * 3))
    big[::2, ::3] = X
    strided = big[::2, ::3]
    ro = X.copy()
    ro.flags.writeable = False
    mm = np.lib.format.open_memmap(tmp_path / "X.npy", mode="w+", dtype=X.dtype, shape=X.shape)
    mm[...] = X
    mm.flush()
    mm_ro = np.load(tmp_path / "X.npy", mmap_mode="r")
    swapped = X.astype(X.dtype.newbyteorder())
    return {"fortran": F, "strided": strided, "readonly": ro, "memmap": mm,
            "memmap-readonly": mm_ro, "byteswapped": swapped, "list": X.tolist()}


@pytest.mark.parametrize("layout", ["fortran", "strided", "readonly", "memmap",
                                    "memmap-readonly", "byteswapped", "list"])
def test_memory_layouts_give_the_same_bits(backend, dtype, tmp_path, layout):
    X, y = _data()
    Xl = _layouts(X.astype(dtype), tmp_path)[layout]
    yl = y.copy()
    yl.flags.writeable = False
    ref, net = _net(dtype), _net(dtype)
    np.testing.assert_array_equal(net.forward(Xl), ref.forward(X.astype(dtype)))
    assert net.cost(Xl, yl) == ref.cost(X.astype(dtype), y)
    assert net.accuracy(Xl, yl) == ref.accuracy(X.astype(dtype), y)
    np.testing.assert_array_equal(net.gradient(Xl, yl).flat, ref.gradient(X, y).flat)
    h1 = net.fit(Xl, yl, epochs=2, batch_size=5, eta=0.1, validation=(Xl, yl),
                 probe=(Xl, yl), record="batch", seed=0)
    h2 = ref.fit(X.astype(dtype), y, epochs=2, batch_size=5, eta=0.1,
                 validation=(X.astype(dtype), y), probe=(X.astype(dtype), y), record="batch",
                 seed=0)
    np.testing.assert_array_equal(net.params, ref.params)
    assert h1 == h2


def _peak(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_inputs_are_copied_at_most_once(backend):
    """A C-contiguous array of the network dtype is used in place; any other is cast once
    (fit), or chunk by chunk (the evaluation methods)."""
    g = np.random.default_rng(0)
    X = g.standard_normal((60000, 40))  # 19 MB
    y = g.integers(0, 3, len(X))
    F = np.asfortranarray(X)
    F32 = F.astype(np.float32)
    net = fastbp.Network([40, 8, 3], output="softmax", cost="log_likelihood", seed=0)
    net.cost(X[:2000], y[:2000])  # workspaces made outside the measurement
    fit = dict(epochs=1, batch_size=200, eta=0.1, record=None, seed=0)
    net.fit(X[:2000], y[:2000], **fit)
    # fit: one-hot targets (1.4 MB), the order, the records: no copy of X
    assert _peak(lambda: net.fit(X, y, **fit)) < X.nbytes / 4
    # a Fortran-order X is copied exactly once
    peak = _peak(lambda: net.fit(F, y, **fit))
    assert X.nbytes <= peak < 1.5 * X.nbytes
    # evaluation: chunks, never the whole X, whatever its layout
    assert _peak(lambda: net.cost(F, y)) < X.nbytes / 4
    assert _peak(lambda: net.accuracy(F32, y)) < X.nbytes / 4
    assert _peak(lambda: net.forward(F32)) < X.nbytes / 4  # the (60000, 3) result: 1.4 MB


# --------------------------------------------------------------------------- aliasing


def test_fit_refuses_inputs_that_alias_the_parameters(backend):
    net = fastbp.Network([5, 5, 5], activation="linear", output="linear", cost="quadratic",
                         seed=0)
    before = net.params.copy()
    W = net.weights[0]  # (5, 5): a valid X, and a view of the parameters
    cases = [
        dict(X=W, y=np.zeros((5, 5))),
        dict(X=np.ones((5, 5)), y=net.weights[1]),
        dict(X=np.ones((5, 5)), y=np.zeros((5, 5)), validation=(W, np.zeros((5, 5)))),
        dict(X=np.ones((5, 5)), y=np.zeros((5, 5)), probe=(np.ones((5, 5)), net.weights[1])),
        dict(X=net.params[:25].reshape(5, 5), y=np.zeros((5, 5))),
    ]
    for kwargs in cases:
        with pytest.raises(ValueError, match="shares memory with the network's parameters"):
            net.fit(epochs=1, batch_size=1, eta=0.1, **kwargs)
    np.testing.assert_array_equal(net.params, before)
    assert net.n_updates == 0
    # reading methods only read: a view is fine there
    np.testing.assert_array_equal(net.forward(W), net.forward(W.copy()))


def test_set_params_with_views_of_itself(backend):
    net = fastbp.Network([4, 4, 4, 4], activation="linear", output="linear", cost="quadratic",
                         seed=0)
    W = [w.copy() for w in net.weights]
    b = [x.copy() for x in net.biases]
    net.set_params(net.weights, net.biases)  # a no-op
    for got, exp in zip(net.weights, W):
        np.testing.assert_array_equal(got, exp)
    # rotate the layers: every source is read before any destination is written
    net.set_params(net.weights[1:] + net.weights[:1], net.biases[1:] + net.biases[:1])
    for got, exp in zip(net.weights, W[1:] + W[:1]):
        np.testing.assert_array_equal(got, exp)
    for got, exp in zip(net.biases, b[1:] + b[:1]):
        np.testing.assert_array_equal(got, exp)


# --------------------------------------------------------------------------- sizes


def test_absurd_network_sizes_refused_before_allocating():
    with pytest.raises(fastbp.TooLargeError) as info:
        fastbp.Network([10**6, 10**6, 10**6, 10])
    err = info.value
    assert isinstance(err, MemoryError) and isinstance(err, ValueError)
    assert err.needed > 10**13 and "TiB" in str(err) and "sizes" in str(err)
    assert "float32" in str(err)  # a fix is offered
    with pytest.raises(ValueError, match="32-bit"):
        fastbp.Network([3, 2**31, 2])
    with pytest.raises(ValueError, match="32-bit"):
        fastbp.Network([3, 10**30, 2])


def test_memory_limit_is_what_the_checks_use(monkeypatch):
    """The refusals follow ``memory_limit()`` (physical memory or the cgroup limit)."""
    assert _validation.memory_limit() > 2**20
    monkeypatch.setattr(_validation, "memory_limit", lambda: 10**6)
    with pytest.raises(fastbp.TooLargeError, match="977 KiB"):
        fastbp.Network([300, 300, 10])
    fastbp.Network([30, 30, 10])  # 30 KB: fine


def test_fit_records_too_large(backend, monkeypatch):
    X, y = _data(100)
    net = _net()
    monkeypatch.setattr(_validation, "memory_limit", lambda: 50 << 20)
    with pytest.raises(fastbp.TooLargeError, match="record='epoch'"):
        net.fit(X, y, epochs=10**5, batch_size=1, eta=0.1, record="batch")
    net.fit(X, y, epochs=3, batch_size=1, eta=0.1, record="batch")
    with pytest.raises(fastbp.TooLargeError, match="fit"):
        net.fit(X, y, epochs=10**9, batch_size=1, eta=0.1, record=None)
    assert net.n_updates == 300


def test_wide_layers_get_a_small_evaluation_workspace(backend, monkeypatch):
    """Evaluation workspaces are bounded in bytes: wide layers process fewer rows at once
    (same results)."""
    X, y = _data(50)
    net = _net()
    expected = net.forward(X)
    monkeypatch.setattr(fastbp.Network, "_EVAL_BYTES", 1)
    assert net._eval_rows(50) == 1
    np.testing.assert_allclose(net.forward(X), expected, rtol=1e-14)  # BLAS: other blocks


# --------------------------------------------------------------------------- same everywhere

_BAD_CALLS = {
    "X-nan-last-row": lambda net, X, y: net.forward(np.vstack([X, [np.nan] * 6])),
    "X-nan-fit": lambda net, X, y: net.fit(np.where(X > 2, np.inf, X), y, 1, 2, 0.1),
    "X-nan-cost": lambda net, X, y: net.cost(np.vstack([X, X, [np.nan] * 6]), np.r_[y, y, 0]),
    "X-width": lambda net, X, y: net.forward(X[:, :3]),
    "y-label": lambda net, X, y: net.accuracy(X, y + 3),
    "y-length": lambda net, X, y: net.gradient(X, y[:-1]),
    "eta": lambda net, X, y: net.fit(X, y, 1, 2, -1.0),
    "batch": lambda net, X, y: net.fit(X, y, 1, 10**6, 0.1),
    "momentum": lambda net, X, y: net.fit(X, y, 1, 2, 0.1, momentum=1.0),
    "record": lambda net, X, y: net.fit(X, y, 1, 2, 0.1, record="all"),
    "alias": lambda net, X, y: net.fit(net.weights[0].T, y[:6], 1, 2, 0.1),
    "seed": lambda net, X, y: net.fit(X, y, 1, 2, 0.1, seed="continue"),
}


@pytest.mark.parametrize("case", list(_BAD_CALLS))
def test_same_exception_and_message_on_every_backend(case):
    X, y = _data()
    seen = {}
    for name in AVAILABLE:
        net = _net()
        with fastbp.use_backend(name):
            try:
                _BAD_CALLS[case](net, X, y)
            except Exception as exc:  # noqa: BLE001 - compared below
                seen[name] = (type(exc), str(exc))
            else:
                seen[name] = None
            assert net.n_updates == 0
    values = list(seen.values())
    assert values[0] is not None, f"{case}: no exception"
    assert issubclass(values[0][0], (ValueError, TypeError))
    assert all(v == values[0] for v in values), seen


def test_nan_position_reported_in_whole_array_indices(backend):
    """Chunked evaluation reports the first bad value with the indices of the whole X."""
    X = np.zeros((10_000, 6))
    X[9_876, 4] = np.nan
    with pytest.raises(ValueError, match=r"X\[9876, 4\]"):
        _net().forward(X)
