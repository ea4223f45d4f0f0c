"""Bad input (issue 2, "Bad input"): every public function validates before any backend
code runs, and raises ValueError / TypeError whose message names the argument.

Each case is checked on every backend (the compiled one must never see bad data), and
the network must be unchanged afterwards.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import fastbp

SIZES = [3, 4, 2]


def _net(**kw):
    kw.setdefault("seed", 0)
    return fastbp.Network(SIZES, **kw)


def _X(n=6):
    return np.random.default_rng(0).standard_normal((n, 3))


def _y(n=6):
    return np.arange(n) % 2


# --------------------------------------------------------------------------- constructor

CONSTRUCTOR_CASES = [
    # (id, kwargs, exception, text the message must contain)
    ("sizes-one-entry", dict(sizes=[3]), ValueError, "sizes"),
    ("sizes-empty", dict(sizes=[]), ValueError, "sizes"),
    ("sizes-zero-width", dict(sizes=[3, 0, 2]), ValueError, "sizes"),
    ("sizes-negative", dict(sizes=[3, -4, 2]), ValueError, "sizes"),
    ("sizes-float", dict(sizes=[3, 2.5, 2]), TypeError, "sizes"),
    ("sizes-str", dict(sizes="3,4,2"), TypeError, "sizes"),
    ("sizes-none", dict(sizes=None), TypeError, "sizes"),
    ("activation-unknown", dict(activation="relu6"), ValueError, "activation"),
    ("activation-softmax-hidden", dict(activation="softmax"), ValueError, "activation"),
    ("activation-not-str", dict(activation=3), TypeError, "activation"),
    ("activation-wrong-count", dict(activation=["tanh", "relu"]), ValueError, "activation"),
    ("output-unknown", dict(output="tanh"), ValueError, "output"),
    ("cost-unknown", dict(cost="hinge"), ValueError, "cost"),
    ("init-unknown", dict(init="xavier"), ValueError, "init"),
    ("init-not-a-pair", dict(init=3), TypeError, "init"),
    ("dtype-float16", dict(dtype="float16"), ValueError, "dtype"),
    ("dtype-int", dict(dtype="int32"), ValueError, "dtype"),
    ("dtype-garbage", dict(dtype="floaty"), TypeError, "dtype"),
    ("seed-negative", dict(seed=-1), ValueError, "seed"),
    ("seed-float", dict(seed=1.5), TypeError, "seed"),
    ("alpha-negative", dict(alpha=-0.1), ValueError, "alpha"),
    ("alpha-nan", dict(alpha=float("nan")), ValueError, "alpha"),
    ("softmax-one-unit", dict(sizes=[3, 1], output="softmax", cost="log_likelihood"), ValueError,
     "softmax"),
]

INVALID_PAIRS = [(o, c) for o, c in itertools.product(("sigmoid", "softmax", "linear"),
                                                      ("cross_entropy", "quadratic",
                                                       "log_likelihood"))
                 if (o, c) not in fastbp.VALID_PAIRS]


@pytest.mark.parametrize("kwargs,exc,text", [c[1:] for c in CONSTRUCTOR_CASES],
                         ids=[c[0] for c in CONSTRUCTOR_CASES])
def test_constructor_rejects(kwargs, exc, text):
    kwargs = dict(kwargs)
    sizes = kwargs.pop("sizes", SIZES)
    with pytest.raises(exc, match=text):
        fastbp.Network(sizes, **kwargs)


@pytest.mark.parametrize("output,cost", INVALID_PAIRS, ids=["-".join(p) for p in INVALID_PAIRS])
def test_incoherent_output_cost_pair(output, cost):
    """An invalid (output, cost) pair is a ValueError listing the valid pairs."""
    assert len(INVALID_PAIRS) == 5
    with pytest.raises(ValueError) as info:
        fastbp.Network(SIZES, output=output, cost=cost)
    msg = str(info.value)
    assert output in msg and cost in msg
    for o, c in fastbp.VALID_PAIRS:
        assert o in msg and c in msg, f"valid pair ({o}, {c}) not listed in: {msg}"


EXPLICIT_INIT_CASES = [
    ("weights-wrong-shape", lambda W, b: ([W[0].T, W[1]], b), ValueError, "weights"),
    ("biases-wrong-shape", lambda W, b: (W, [b[0][:-1], b[1]]), ValueError, "biases"),
    ("too-few-layers", lambda W, b: (W[:1], b), ValueError, "weights"),
    ("weights-nan", lambda W, b: ([W[0] * np.nan, W[1]], b), ValueError, "weights"),
    ("biases-inf", lambda W, b: (W, [b[0], b[1] + np.inf]), ValueError, "biases"),
    ("weights-strings", lambda W, b: ([np.full(W[0].shape, "a"), W[1]], b), TypeError, "weights"),
    ("weights-not-a-list", lambda W, b: (W[0], b), TypeError, "weights"),
]


@pytest.mark.parametrize("make,exc,text", [c[1:] for c in EXPLICIT_INIT_CASES],
                         ids=[c[0] for c in EXPLICIT_INIT_CASES])
def test_explicit_parameters_rejected(make, exc, text):
    W = [np.ones((4, 3)), np.ones((2, 4))]
    b = [np.zeros(4), np.zeros(2)]
    with pytest.raises(exc, match=text):
        fastbp.Network(SIZES, init=make(W, b))
    net = _net()
    before = net.params.copy()
    with pytest.raises(exc, match=text):
        net.set_params(*make(W, b))
    np.testing.assert_array_equal(net.params, before)


def test_float32_out_of_range_parameters():
    W = [np.full((4, 3), 1e300), np.ones((2, 4))]
    b = [np.zeros(4), np.zeros(2)]
    with pytest.raises(ValueError, match="weights"):
        fastbp.Network(SIZES, dtype="float32", init=(W, b))


# --------------------------------------------------------------------------- data

def _bad_X():
    X = _X()
    nan, inf = X.copy(), X.copy()
    nan[2, 1] = np.nan
    inf[0, 0] = -np.inf
    return [
        ("X-wrong-width", _X()[:, :2], ValueError, "X"),
        ("X-1d", _X()[0], ValueError, "X"),
        ("X-3d", _X()[None], ValueError, "X"),
        ("X-nan", nan, ValueError, "X"),
        ("X-inf", inf, ValueError, "X"),
        ("X-complex", _X() + 1j, TypeError, "X"),
        ("X-strings", np.full((6, 3), "x"), TypeError, "X"),
        ("X-ragged", [[1.0, 2.0, 3.0], [1.0]], ValueError, "X"),
        ("X-none", None, TypeError, "X"),
        ("X-empty", np.empty((0, 3)), ValueError, "X"),
    ]


def _bad_y():
    return [
        ("y-too-short", _y(5), ValueError, "y"),
        ("y-label-too-big", np.array([0, 1, 2, 0, 1, 0]), ValueError, "y"),
        ("y-label-negative", np.array([0, 1, -1, 0, 1, 0]), ValueError, "y"),
        ("y-non-integral", np.array([0, 1, 0.5, 0, 1, 0]), ValueError, "y"),
        ("y-nan-label", np.array([0, 1, np.nan, 0, 1, 0]), ValueError, "y"),
        ("y-onehot-wrong-width", np.eye(3)[[0, 1, 2, 0, 1, 2]], ValueError, "y"),
        ("y-targets-above-one", np.full((6, 2), 1.5), ValueError, "y"),
        ("y-targets-nan", np.full((6, 2), np.nan), ValueError, "y"),
        ("y-strings", np.array(list("abcdef")), TypeError, "y"),
        ("y-scalar", 1, ValueError, "y"),
    ]


@pytest.mark.parametrize("X,exc,text", [c[1:] for c in _bad_X()], ids=[c[0] for c in _bad_X()])
@pytest.mark.parametrize("method", ["fit", "gradient", "cost", "accuracy", "forward", "predict"])
def test_bad_X(backend, method, X, exc, text):
    net = _net()
    before = net.params.copy()
    call = {
        "fit": lambda: net.fit(X, _y(), epochs=1, batch_size=2, eta=0.1),
        "gradient": lambda: net.gradient(X, _y()),
        "cost": lambda: net.cost(X, _y()),
        "accuracy": lambda: net.accuracy(X, _y()),
        "forward": lambda: net.forward(X),
        "predict": lambda: net.predict(X),
    }[method]
    if method in ("forward", "predict") and isinstance(X, np.ndarray) and X.shape == (0, 3):
        assert len(call()) == 0  # an empty batch is a valid (empty) prediction
        return
    with pytest.raises(exc, match=text):
        call()
    np.testing.assert_array_equal(net.params, before)


@pytest.mark.parametrize("y,exc,text", [c[1:] for c in _bad_y()], ids=[c[0] for c in _bad_y()])
@pytest.mark.parametrize("method", ["fit", "gradient", "cost", "accuracy"])
def test_bad_y(backend, method, y, exc, text):
    net = _net()
    before = net.params.copy()
    X = _X()
    call = {
        "fit": lambda: net.fit(X, y, epochs=1, batch_size=2, eta=0.1),
        "gradient": lambda: net.gradient(X, y),
        "cost": lambda: net.cost(X, y),
        "accuracy": lambda: net.accuracy(X, y),
    }[method]
    with pytest.raises(exc, match="Y" if method == "gradient" and text == "y" else text):
        call()
    np.testing.assert_array_equal(net.params, before)


def test_softmax_targets_must_be_one_hot(backend):
    net = fastbp.Network([3, 3], output="softmax", cost="log_likelihood", seed=0)
    soft = np.full((6, 3), 1 / 3)
    with pytest.raises(ValueError, match="y"):
        net.fit(_X(), soft, epochs=1, batch_size=2, eta=0.1)


def test_regression_targets_shape(backend):
    net = fastbp.Network([3, 2], output="linear", cost="quadratic", seed=0)
    with pytest.raises(ValueError, match="y"):
        net.fit(_X(), np.zeros((6, 3)), epochs=1, batch_size=2, eta=0.1)
    with pytest.raises(ValueError, match="predict"):
        net.predict(_X())  # no labels for a regression output


def test_float32_net_rejects_values_beyond_float32(backend):
    net = _net(dtype="float32")
    X = _X()
    X[0, 0] = 1e300
    with pytest.raises(ValueError, match="X"):
        net.fit(X, _y(), epochs=1, batch_size=2, eta=0.1)


# --------------------------------------------------------------------------- fit arguments

FIT_CASES = [
    ("epochs-negative", dict(epochs=-1), ValueError, "epochs"),
    ("epochs-float", dict(epochs=1.5), TypeError, "epochs"),
    ("batch_size-zero", dict(batch_size=0), ValueError, "batch_size"),
    ("batch_size-negative", dict(batch_size=-2), ValueError, "batch_size"),
    ("batch_size-above-n", dict(batch_size=7), ValueError, "batch_size"),
    ("batch_size-float", dict(batch_size=2.0), TypeError, "batch_size"),
    ("eta-zero", dict(eta=0.0), ValueError, "eta"),
    ("eta-negative", dict(eta=-0.1), ValueError, "eta"),
    ("eta-inf", dict(eta=float("inf")), ValueError, "eta"),
    ("eta-nan", dict(eta=float("nan")), ValueError, "eta"),
    ("eta-str", dict(eta="0.1"), TypeError, "eta"),
    ("lmbda-negative", dict(lmbda=-1.0), ValueError, "lmbda"),
    ("lmbda-nan", dict(lmbda=float("nan")), ValueError, "lmbda"),
    ("lmbda-inf", dict(lmbda=float("inf")), ValueError, "lmbda"),
    ("momentum-one", dict(momentum=1.0), ValueError, "momentum"),
    ("momentum-negative", dict(momentum=-0.1), ValueError, "momentum"),
    ("momentum-nan", dict(momentum=float("nan")), ValueError, "momentum"),
    ("momentum-str", dict(momentum="0.9"), TypeError, "momentum"),
    ("nesterov-str", dict(nesterov="yes"), TypeError, "nesterov"),
    ("record-unknown", dict(record="step"), ValueError, "record"),
    ("on_nonfinite-unknown", dict(on_nonfinite="ignore"), ValueError, "on_nonfinite"),
    ("seed-negative", dict(seed=-3), ValueError, "seed"),
    ("validation-not-pair", dict(validation=_X()), TypeError, "validation"),
    ("validation-bad-X", dict(validation=(_X()[:, :2], _y())), ValueError, "validation"),
    ("validation-bad-y", dict(validation=(_X(), _y(4))), ValueError, "validation"),
    ("probe-bad-label", dict(probe=(_X(), _y() + 5)), ValueError, "probe"),
    ("probe-nan", dict(probe=(_X() * np.nan, _y())), ValueError, "probe"),
]


@pytest.mark.parametrize("kwargs,exc,text", [c[1:] for c in FIT_CASES],
                         ids=[c[0] for c in FIT_CASES])
def test_fit_rejects(backend, kwargs, exc, text):
    net = _net()
    before = net.params.copy()
    args = dict(epochs=1, batch_size=2, eta=0.1)
    args.update(kwargs)
    with pytest.raises(exc, match=text):
        net.fit(_X(), _y(), **args)
    np.testing.assert_array_equal(net.params, before)
    assert net.n_updates == 0


def test_cost_rejects_negative_lmbda(backend):
    with pytest.raises(ValueError, match="lmbda"):
        _net().cost(_X(), _y(), lmbda=-1.0)


# --------------------------------------------------------------------------- backends

def test_unknown_backend_name():
    with pytest.raises(ValueError, match="numpy"):  # the message lists the valid names
        with fastbp.use_backend("fortran"):
            pass


def test_unknown_backend_in_environment(monkeypatch):
    monkeypatch.setenv("FASTBP_BACKEND", "fortran")
    with pytest.raises(ValueError, match="FASTBP_BACKEND"):
        _net().forward(_X())


@pytest.fixture
def missing_numba(monkeypatch):
    """Pretend the numba backend is not installed (its module cannot be imported)."""
    from fastbp import _backends

    monkeypatch.setitem(_backends._MODULES, "numba", "fastbp._backends._not_installed_for_test")
    _backends._clear_cache()
    yield "numba"
    monkeypatch.undo()
    _backends._clear_cache()


def test_unavailable_backend_is_an_error_never_a_downgrade(monkeypatch, missing_numba):
    name = missing_numba
    info = fastbp.backends()[name]
    assert not info.available and info.reason
    with pytest.raises(fastbp.BackendUnavailableError) as err:
        with fastbp.use_backend(name):
            pass
    assert name in str(err.value) and "To get it" in str(err.value)
    assert isinstance(err.value, ImportError)
    monkeypatch.setenv("FASTBP_BACKEND", name)
    with pytest.raises(fastbp.BackendUnavailableError):
        _net().forward(_X())


# --------------------------------------------------------------------------- fuzz

def test_random_inputs_never_crash(backend):
    """Random shapes, dtypes and values: either a result, or ValueError / TypeError /
    NonFiniteError -- never another exception and never a crash of the process."""
    g = np.random.default_rng(2024)
    net = fastbp.Network([3, 4, 2], seed=0)
    choices = [np.float64, np.float32, np.int64, np.bool_, np.complex128, np.uint8]
    for _ in range(150):
        n = int(g.integers(0, 5))
        shape_X = tuple(int(s) for s in g.integers(0, 5, size=int(g.integers(0, 4))))
        dt = choices[int(g.integers(len(choices)))]
        with np.errstate(all="ignore"):
            X = (g.standard_normal(shape_X) * 10 ** float(g.integers(-3, 300))).astype(dt)
        y = g.integers(-1, 3, size=(n,) if g.random() < 0.5 else (n, int(g.integers(1, 4))))
        kw = dict(epochs=int(g.integers(0, 3)), batch_size=int(g.integers(-1, 5)),
                  eta=float(g.choice([0.1, -1.0, np.inf, 1e300])))
        calls = (lambda X=X: net.forward(X), lambda X=X, y=y: net.gradient(X, y),
                 lambda X=X, y=y, kw=kw: net.fit(X, y, **kw), lambda X=X, y=y: net.cost(X, y))
        for call in calls:
            try:
                call()
            except (ValueError, TypeError, fastbp.NonFiniteError):
                pass


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_finiteness_check_is_exact_where_the_sum_overflows(dtype):
    """The one-pass check sums in the dtype: a finite array whose sum overflows must
    still pass, and a single NaN or Inf anywhere must still be caught."""
    from fastbp._validation import all_finite

    big = np.full((64, 33), np.finfo(dtype).max, dtype=dtype)
    assert all_finite(big)
    assert all_finite(np.concatenate([big, -big]))
    for bad in (np.nan, np.inf, -np.inf):
        x = big.copy()
        x[63, 32] = bad
        assert not all_finite(x)
        x = np.zeros((5, 7), dtype=dtype)
        x[2, 3] = bad
        assert not all_finite(x)
