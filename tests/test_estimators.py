"""The scikit-learn estimators of ``fastbp.estimators`` (skipped without scikit-learn)."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn", minversion="1.6")

from sklearn.datasets import load_digits, make_classification  # noqa: E402
from sklearn.model_selection import GridSearchCV, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import fastbp  # noqa: E402
from fastbp.estimators import MLPClassifier, MLPRegressor  # noqa: E402

# ------------------------------------------------------------------ scikit-learn's checks


@parametrize_with_checks(
    [
        MLPClassifier(),
        MLPClassifier(output="softmax", activation="tanh", hidden_layer_sizes=(20, 20)),
        MLPRegressor(),
    ]
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# ---------------------------------------------------------------------------- helpers


def _blobs(n=120, n_classes=3, seed=0):
    X, y = make_classification(
        n_samples=n,
        n_features=6,
        n_informative=4,
        n_redundant=0,
        n_classes=n_classes,
        n_clusters_per_class=1,
        class_sep=2.0,
        random_state=seed,
    )
    return X, y


# --------------------------------------------------------------------------- learning


@pytest.mark.parametrize("output", ["sigmoid", "softmax"])
def test_digits_accuracy(output):
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X / 16.0, y, test_size=0.3, random_state=0, stratify=y
    )
    clf = MLPClassifier(hidden_layer_sizes=(30,), output=output, random_state=0)
    clf.fit(X_train, y_train)
    assert clf.score(X_test, y_test) > 0.9
    assert clf.network_.sizes == (64, 30, 10)
    assert clf.network_.output == output
    assert clf.loss_curve_[-1] < clf.loss_curve_[0]


def test_string_labels_and_probabilities():
    X, y = _blobs()
    names = np.array(["cat", "dog", "emu"])[y]
    for output, n_out in (("sigmoid", 3), ("softmax", 3)):
        clf = MLPClassifier(output=output, random_state=0).fit(X, names)
        assert list(clf.classes_) == ["cat", "dog", "emu"]
        assert clf.network_.sizes[-1] == n_out
        proba = clf.predict_proba(X)
        assert proba.dtype == np.float64
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
        assert np.all(proba >= 0)
        np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
        assert clf.score(X, names) > 0.9


def test_binary_uses_one_sigmoid_unit():
    X, y = _blobs(n_classes=2)
    labels = np.where(y == 1, "yes", "no")
    clf = MLPClassifier(random_state=0).fit(X, labels)
    assert clf.network_.sizes[-1] == 1
    p = clf.network_.forward(X)[:, 0]
    proba = clf.predict_proba(X)
    np.testing.assert_array_equal(proba[:, 1], p)
    np.testing.assert_array_equal(proba[:, 0], 1 - p)
    np.testing.assert_array_equal(clf.predict(X), np.where(p > 0.5, "yes", "no"))
    softmax = MLPClassifier(output="softmax", random_state=0).fit(X, labels)
    assert softmax.network_.sizes[-1] == 2


def test_one_class_is_an_error():
    X, _ = _blobs()
    with pytest.raises(ValueError, match="at least 2 classes.*1 class"):
        MLPClassifier().fit(X, np.zeros(len(X)))


@pytest.mark.parametrize(
    ("y_shape", "pred_shape"), [((80,), (80,)), ((80, 1), (80, 1)), ((80, 3), (80, 3))]
)
def test_regressor_shapes(y_shape, pred_shape):
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, size=(80, 4))
    y = np.tanh(X[:, :3] @ rng.normal(size=(3, 3)))
    y = y[:, 0] if len(y_shape) == 1 else y[:, : y_shape[1]]
    reg = MLPRegressor(random_state=0).fit(X, y)
    assert reg.network_.output == "linear" and reg.network_.cost_name == "quadratic"
    assert reg.n_outputs_ == (1 if len(y_shape) == 1 else y_shape[1])
    assert reg.predict(X).shape == pred_shape


def test_regressor_learns():
    rng = np.random.default_rng(1)
    X = rng.uniform(-1, 1, size=(400, 2))
    y = np.sin(2 * X[:, 0]) + X[:, 1] ** 2
    reg = MLPRegressor(hidden_layer_sizes=(30,), max_iter=60, random_state=0).fit(X, y)
    assert reg.score(X, y) > 0.9


def test_float32():
    X, y = _blobs()
    clf = MLPClassifier(dtype="float32", random_state=0).fit(X, y)
    assert clf.network_.dtype == np.float32
    assert clf.predict_proba(X).dtype == np.float64
    reg = MLPRegressor(dtype="float32", random_state=0).fit(X, y.astype(float))
    assert reg.predict(X).dtype == np.float32


# ------------------------------------------------------------------ fastbp's extras


def test_history_has_statistics():
    X, y = _blobs()
    clf = MLPClassifier(hidden_layer_sizes=(10, 10), max_iter=7, random_state=0).fit(X, y)
    h = clf.history_
    assert isinstance(h, fastbp.History)
    assert clf.n_iter_ == 7
    assert h.epoch["speed"].shape == (7, 3)
    assert np.all(np.isfinite(h.epoch["speed"])) and np.all(h.epoch["speed"] > 0)
    for name in fastbp.STAT_NAMES:
        assert h.epoch[name].shape == (7, 3)
    assert clf.loss_ == h.epoch["train_cost"][-1]
    assert clf.loss_curve_ == list(h.epoch["train_cost"])
    assert h.settings["eta"] == 0.1 and h.settings["batch_size"] == 10
    assert h.settings["n_train"] == len(X)

    batch = MLPClassifier(max_iter=2, batch_size=40, record="batch", random_state=0).fit(X, y)
    assert batch.history_.batch["speed"].shape == (2 * 3, 2)
    none = MLPClassifier(max_iter=2, record=None, random_state=0).fit(X, y)
    assert "speed" not in none.history_.epoch
    assert len(none.history_.epoch["train_cost"]) == 2


def test_stats_are_passed_on():
    X, y = _blobs()
    clf = MLPClassifier(max_iter=2, stats="distance", random_state=0).fit(X, y)
    assert clf.history_.epoch["distance"].shape == (2, 2)
    assert (clf.history_.epoch["distance"] > 0).all()
    clf = MLPClassifier(max_iter=2, record="batch", stats="all", stats_every=2, random_state=0)
    h = clf.fit(X, y).history_
    assert np.isnan(h.batch["gsnr"][1::2]).all() and np.isfinite(h.batch["gsnr"][::2]).all()


def test_alpha_is_lmbda():
    X, y = _blobs()
    clf = MLPClassifier(max_iter=3, alpha=5.0, momentum=0.5, nesterov=True, random_state=0)
    h = clf.fit(X, y).history_
    assert h.settings["lmbda"] == 5.0
    assert h.settings["momentum"] == 0.5 and h.settings["nesterov"] is True
    # the reported cost includes network2's L2 term 0.5 * lmbda / n * sum ||W||^2
    l2 = 0.5 * 5.0 / len(X) * sum(float(np.sum(W**2)) for W in clf.network_.weights)
    data_cost = clf.network_.cost(X, y)
    assert clf.network_.cost(X, y, lmbda=5.0) == pytest.approx(data_cost + l2)


def test_batch_size_clipped_with_warning():
    X, y = _blobs(n=30)
    clf = MLPClassifier(batch_size=100, max_iter=2, random_state=0)
    with pytest.warns(UserWarning, match="larger than sample size. It is going to be clipped"):
        clf.fit(X, y)
    assert clf.history_.settings["batch_size"] == 30
    assert clf.batch_size == 100  # the parameter itself is left alone
    reg = MLPRegressor(batch_size=31, max_iter=2, random_state=0)
    with pytest.warns(UserWarning, match="It is going to be clipped"):
        reg.fit(X, y.astype(float))


def test_random_state_makes_fit_repeatable():
    X, y = _blobs()
    a = MLPClassifier(random_state=3).fit(X, y)
    b = MLPClassifier(random_state=3).fit(X, y)
    c = MLPClassifier(random_state=4).fit(X, y)
    np.testing.assert_array_equal(a.network_.params, b.network_.params)
    assert not np.array_equal(a.network_.params, c.network_.params)
    rs = np.random.RandomState(0)
    MLPClassifier(random_state=rs, max_iter=1).fit(X, y)  # a RandomState works too


def test_warm_start_continues_training():
    X, y = _blobs()
    once = MLPClassifier(max_iter=6, momentum=0.9, random_state=0).fit(X, y)
    warm = MLPClassifier(max_iter=3, momentum=0.9, random_state=0, warm_start=True)
    warm.fit(X, y)
    net = warm.network_
    warm.fit(X, y)
    assert warm.network_ is net
    assert warm.history_.settings["n_updates_start"] == 3 * 12
    # weights, momentum and the shuffling continue: the same bits as one long fit
    np.testing.assert_array_equal(warm.network_.params, once.network_.params)
    warm.set_params(hidden_layer_sizes=(5,))
    with pytest.raises(ValueError, match="warm_start"):
        warm.fit(X, y)
    warm.set_params(hidden_layer_sizes=(30,))
    with pytest.raises(ValueError, match="unseen labels"):
        warm.fit(X, y + 1)
    with pytest.raises(ValueError, match="features"):
        warm.fit(X[:, :3], y)


@pytest.mark.parametrize("Estimator", [MLPClassifier, MLPRegressor])
def test_pickle_round_trip(Estimator):
    X, y = _blobs()
    est = Estimator(hidden_layer_sizes=(10, 10), random_state=0).fit(X, y)
    copy = pickle.loads(pickle.dumps(est))
    np.testing.assert_array_equal(copy.predict(X), est.predict(X))
    if hasattr(est, "predict_proba"):
        np.testing.assert_array_equal(copy.predict_proba(X), est.predict_proba(X))
    np.testing.assert_array_equal(copy.network_.params, est.network_.params)
    np.testing.assert_array_equal(copy.history_.epoch["speed"], est.history_.epoch["speed"])
    assert copy.get_params() == est.get_params()
    assert copy.n_features_in_ == est.n_features_in_ == X.shape[1]


def test_grid_search_and_pipeline():
    X, y = _blobs(n=150)
    pipe = make_pipeline(StandardScaler(), MLPClassifier(max_iter=10, random_state=0))
    grid = GridSearchCV(
        pipe,
        {
            "mlpclassifier__learning_rate_init": [0.05, 0.5],
            "mlpclassifier__hidden_layer_sizes": [(10,), (10, 10)],
        },
        cv=3,
    )
    grid.fit(X, y)
    assert grid.best_score_ > 0.8
    assert len(grid.cv_results_["params"]) == 4
    best = grid.best_estimator_[-1]
    assert best.history_.epoch["speed"].shape[0] == 10
    assert grid.score(X, y) > 0.8

    reg = make_pipeline(StandardScaler(), MLPRegressor(max_iter=10, random_state=0))
    Xr = X[:, :3]
    reg.fit(Xr, Xr @ np.array([0.5, -0.2, 0.1]))
    assert reg.predict(Xr).shape == (len(X),)


@pytest.mark.parametrize(
    ("param", "value", "error", "match"),
    [
        ("activation", "foo", ValueError, "activation='foo' is unknown"),
        ("activation", "softmax", ValueError, "activation='softmax'"),
        ("activation", ("tanh", "relu"), ValueError, "activation"),
        ("hidden_layer_sizes", (30, 0), ValueError, r"hidden_layer_sizes\[1\]=0"),
        ("hidden_layer_sizes", "30", TypeError, "hidden_layer_sizes"),
        ("init", "zeros", ValueError, "init='zeros' is unknown"),
        ("max_iter", 0, ValueError, "max_iter=0"),
        ("max_iter", 2.5, TypeError, "max_iter"),
        ("batch_size", 0, ValueError, "batch_size=0"),
        ("learning_rate_init", 0.0, ValueError, "learning_rate_init"),
        ("alpha", -1.0, ValueError, "alpha"),
        ("momentum", 1.0, ValueError, "momentum"),
        ("nesterov", "yes", TypeError, "nesterov"),
        ("dtype", "float16", ValueError, "dtype"),
        ("record", "all", ValueError, "record"),
        ("stats_every", 0, ValueError, "stats_every"),
        ("warm_start", 1, TypeError, "warm_start"),
        ("output", "linear", ValueError, "output='linear'"),
        ("random_state", "seed", ValueError, "random_state|RandomState"),
    ],
)
def test_bad_parameters_name_the_argument(param, value, error, match):
    X, y = _blobs(n=30)
    clf = MLPClassifier(**{param: value})  # no validation in __init__ (sklearn's rule)
    with pytest.raises(error, match=match):
        clf.fit(X, y)
    if param != "output":
        reg = MLPRegressor().set_params(**{param: value})
        with pytest.raises(error, match=match):
            reg.fit(X, y.astype(float))


def test_not_fitted():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        MLPClassifier().predict(np.zeros((2, 3)))


# -------------------------------------------------------------------- optional import


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_import_fastbp_does_not_import_sklearn():
    r = _run("import sys, fastbp; print('sklearn' in sys.modules)")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "False"


def test_clear_error_without_sklearn():
    r = _run(
        "import sys; sys.modules['sklearn'] = None\n"
        "try:\n"
        "    import fastbp.estimators\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    assert r.returncode == 0, r.stderr
    assert 'pip install "fastbp[sklearn]"' in r.stdout
