"""Property-based tests (issue 6): random shapes, dtypes, layouts and values through the
public API, on every backend.

Property: no crash, and either a clean exception (``ValueError`` / ``TypeError`` /
``fastbp.NonFiniteError``) with the same type and message as the NumPy reference
backend, or finite results that agree with it as SPEC section 6 says (one short epoch:
1e-9 norm-wise per layer in float64, 1e-3 in float32; evaluation: 1e-12 / 1e-5).

Profiles (``HYPOTHESIS_PROFILE`` selects one; all have ``deadline=None`` and a
bounded number of examples):

* ``ci`` -- derandomised: the same 40 examples per property on every run.  The
  default, and what ``.ci/run`` uses (it sets ``CI``), so that ``pytest`` is
  deterministic in a shared tree;
* ``dev`` -- 40 random examples per run: exploration;
* ``thorough`` -- 1,000 random examples per property.

A failure prints the ``@reproduce_failure`` blob that replays it.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

import fastbp  # noqa: E402

# database=None: no .hypothesis/ directory in the tree; a failure prints the blob
# (@reproduce_failure) that replays it.
_COMMON = dict(deadline=None, database=None, print_blob=True,
               suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("dev", max_examples=40, **_COMMON)
settings.register_profile("ci", max_examples=40, derandomize=True, **_COMMON)
settings.register_profile("thorough", max_examples=1000, **_COMMON)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

HIDDEN = ["sigmoid", "tanh", "relu", "leaky_relu", "softsign", "linear"]
CLEAN = (ValueError, TypeError, fastbp.NonFiniteError)


# --------------------------------------------------------------------------- strategies


@st.composite
def networks(draw):
    L = draw(st.integers(1, 3))
    sizes = [draw(st.integers(1, 6)) for _ in range(L + 1)]
    output, cost = draw(st.sampled_from(fastbp.VALID_PAIRS))
    if output == "softmax" and sizes[-1] < 2:
        sizes[-1] = 2
    return dict(sizes=sizes, activation=draw(st.sampled_from(HIDDEN)), output=output,
                cost=cost, dtype=draw(st.sampled_from(["float64", "float32"])),
                init=draw(st.sampled_from(["normal_scaled", "glorot_uniform", "he_normal"])),
                seed=draw(st.integers(0, 2**16)))


def _layout(draw, arr):
    """The same values in a random memory layout (or as a list)."""
    kind = draw(st.sampled_from(["C", "F", "strided", "readonly", "list", "swapped"]))
    if kind == "F":
        return np.asfortranarray(arr)
    if kind == "strided" and arr.ndim >= 1:
        big = np.zeros((arr.shape[0] * 2,) + arr.shape[1:], dtype=arr.dtype)
        big[::2] = arr
        return big[::2]
    if kind == "readonly":
        out = arr.copy()
        out.flags.writeable = False
        return out
    if kind == "list":
        return arr.tolist()
    if kind == "swapped" and arr.dtype.kind in "fi":
        return arr.astype(arr.dtype.newbyteorder())
    return arr


@st.composite
def inputs(draw, net_kw):
    """(X, y) mostly valid for the network, sometimes not (shape, dtype, values)."""
    n_in, n_out = net_kw["sizes"][0], net_kw["sizes"][-1]
    n = draw(st.integers(0, 9))
    g = np.random.default_rng(draw(st.integers(0, 2**16)))
    scale = draw(st.sampled_from([1.0, 1.0, 1.0, 1e-3, 30.0]))
    width = n_in if draw(st.integers(0, 9)) else draw(st.integers(0, 7))
    X = g.standard_normal((n, width)) * scale
    x_dtype = draw(st.sampled_from(["float64", "float64", "float32", "int64", "bool"]))
    X = X.astype(x_dtype) if x_dtype != "bool" else X > 0
    if n and width and x_dtype.startswith("float") and draw(st.integers(0, 7)) == 0:
        with np.errstate(over="ignore"):  # 1e300 is inf in a float32 X
            X[draw(st.integers(0, n - 1)), draw(st.integers(0, width - 1))] = draw(
                st.sampled_from([np.nan, np.inf, -np.inf, 1e300]))
    output = net_kw["output"]
    form = draw(st.sampled_from(["labels", "labels", "onehot", "float", "bad-length"]))
    if output == "linear" or form == "float":
        y = g.standard_normal((n, n_out))
    elif form == "onehot":
        y = np.eye(n_out)[g.integers(0, n_out, n)]
    else:
        hi = 2 if n_out == 1 else n_out
        y = g.integers(0, hi + draw(st.sampled_from([0, 0, 0, 1])), n)
    if form == "bad-length":
        y = y[: max(0, n - 1)]
    return _layout(draw, X), _layout(draw, np.asarray(y))


@st.composite
def fit_args(draw):
    return dict(
        epochs=draw(st.sampled_from([0, 1, 1])),
        batch_size=draw(st.sampled_from([1, 2, 3, 5, 100, 0])),
        eta=draw(st.sampled_from([0.5, 0.1, 0.01, 0.0, -1.0, float("nan")])),
        lmbda=draw(st.sampled_from([0.0, 0.0, 1.0, -0.5])),
        momentum=draw(st.sampled_from([0.0, 0.0, 0.5, 0.9, 1.0, fastbp.Sutskever(0.9, 3)])),
        nesterov=draw(st.booleans()),
        record=draw(st.sampled_from(["batch", "epoch", None])),
        on_nonfinite=draw(st.sampled_from(["raise", "skip"])),
        seed=draw(st.integers(0, 100)),
    )


# --------------------------------------------------------------------------- helpers


def _outcome(backend, make, call):
    """Run ``call(net)`` on a fresh network with ``backend``: ("ok", net, result) or
    ("error", type, message)."""
    with fastbp.use_backend(backend):
        net = make()
        try:
            result = call(net)
        except CLEAN as exc:
            return ("error", type(exc), str(exc), net)
        return ("ok", net, result)


def _rel(a, b):
    """||a - b|| / ||b|| (norms scaled first: the values may be huge)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = max(np.max(np.abs(b), initial=0.0), np.max(np.abs(a), initial=0.0))
    if scale == 0:
        return 0.0
    a, b = a / scale, b / scale
    nb = np.linalg.norm(b)
    return np.linalg.norm(a - b) / nb if nb > 0 else np.linalg.norm(a - b)


def _agree(got, ref, tol, what):
    if got[0] == "error" or ref[0] == "error":
        assert got[0] == ref[0], f"{what}: {got[:3]} vs reference {ref[:3]}"
        assert got[1] is ref[1], f"{what}: {got[1]} vs {ref[1]}"
        if not issubclass(got[1], fastbp.NonFiniteError):
            assert got[2] == ref[2], f"{what}: messages differ"
        return False
    return True


# --------------------------------------------------------------------------- properties


@given(data=st.data())
def test_fit_any_input(backend, data):
    net_kw = data.draw(networks())
    X, y = data.draw(inputs(net_kw))
    kw = data.draw(fit_args())
    tol = 1e-9 if net_kw["dtype"] == "float64" else 1e-3

    def make():
        return fastbp.Network(**net_kw)

    got = _outcome(backend, make, lambda net: net.fit(X, y, **kw))
    ref = _outcome("numpy", make, lambda net: net.fit(X, y, **kw))
    if not _agree(got, ref, tol, "fit"):
        # a refused call leaves the network as it was, whatever the failure
        if got[1] is not fastbp.NonFiniteError:
            assert got[3].n_updates == 0
            np.testing.assert_array_equal(got[3].params, make().params)
        return
    net, h = got[1], got[2]
    rnet, rh = ref[1], ref[2]
    assert np.all(np.isfinite(net.params))
    assert net.n_updates == rnet.n_updates
    for a, b in zip(net.weights, rnet.weights):
        assert _rel(a, b) <= tol
    for a, b in zip(net.biases, rnet.biases):
        assert _rel(a, b) <= tol
    assert len(h.epoch) == len(rh.epoch) == kw["epochs"]
    np.testing.assert_array_equal(h.epoch["n_skipped"], rh.epoch["n_skipped"])


@given(data=st.data())
def test_evaluation_any_input(backend, data):
    net_kw = data.draw(networks())
    X, y = data.draw(inputs(net_kw))
    method = data.draw(st.sampled_from(["forward", "predict", "accuracy", "cost", "gradient"]))
    tol = 1e-12 if net_kw["dtype"] == "float64" else 1e-5
    calls = {
        "forward": lambda net: net.forward(X),
        "predict": lambda net: net.predict(X),
        "accuracy": lambda net: net.accuracy(X, y),
        "cost": lambda net: net.cost(X, y, lmbda=0.5),
        "gradient": lambda net: net.gradient(X, y),
    }

    def make():
        return fastbp.Network(**net_kw)

    got = _outcome(backend, make, calls[method])
    ref = _outcome("numpy", make, calls[method])
    if not _agree(got, ref, tol, method):
        return
    a, b = got[2], ref[2]
    if method == "gradient":
        assert np.all(np.isfinite(a.flat))
        for l in range(len(a.weights)):
            assert _rel(a.weights[l], b.weights[l]) <= max(tol, 1e-10)
            assert _rel(a.biases[l], b.biases[l]) <= max(tol, 1e-10)
        assert a.cost == pytest.approx(b.cost, rel=tol, abs=tol)
    elif method == "predict":
        assert a.dtype == np.int64 and a.shape == b.shape
    elif method in ("accuracy", "cost"):
        assert np.isfinite(a) and a == pytest.approx(b, rel=tol, abs=tol)
    else:
        assert a.dtype == np.dtype(net_kw["dtype"]) and np.all(np.isfinite(a))
        assert _rel(a, b) <= tol
    # layout invariance on the same backend: a C-contiguous copy gives the same bits
    if method in ("forward", "predict") and isinstance(X, np.ndarray):
        with fastbp.use_backend(backend):
            again = getattr(got[1], method)(np.ascontiguousarray(X))
        np.testing.assert_array_equal(again, a)


@given(sizes=st.lists(st.one_of(st.integers(-2, 8),
                                st.sampled_from([2**31, 10**5, 10**12, 2**64])),
                      min_size=0, max_size=4),
       dtype=st.sampled_from(["float64", "float32", "float16", "int8", None, 3]),
       activation=st.sampled_from(HIDDEN + ["softmax", "", None]),
       output=st.sampled_from(["sigmoid", "softmax", "linear", "tanh"]),
       cost=st.sampled_from(["cross_entropy", "quadratic", "log_likelihood", "hinge"]))
def test_constructor_any_arguments(sizes, dtype, activation, output, cost):
    """Any arguments: a Network, or ValueError / TypeError (TooLargeError is one) before
    anything big is allocated (a width of 10**5 passes only next to small layers)."""
    try:
        net = fastbp.Network(sizes, activation=activation, output=output, cost=cost,
                             dtype=dtype, seed=0)
    except (ValueError, TypeError):
        return
    assert net.sizes == tuple(sizes) and np.all(np.isfinite(net.params))
