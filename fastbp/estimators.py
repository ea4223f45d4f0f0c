"""scikit-learn estimators on fastbp networks: :class:`MLPClassifier`, :class:`MLPRegressor`.

Both wrap a :class:`fastbp.Network` trained by :meth:`fastbp.Network.fit` (mini-batch
SGD, shuffled every epoch), so they fit into scikit-learn's tools -- pipelines, grid
searches, cross-validation, cloning, pickling -- and keep fastbp's per-layer statistics:
the :class:`fastbp.History` of the last ``fit`` is the fitted attribute ``history_``.

>>> from fastbp.estimators import MLPClassifier
>>> clf = MLPClassifier(hidden_layer_sizes=(30, 30), random_state=0)
>>> # clf.fit(X, y).history_.epoch["speed"]: (max_iter, 3) array, ||dC/db|| per layer

scikit-learn is an optional dependency of fastbp (``pip install "fastbp[sklearn]"``):
``import fastbp`` never imports it, this module does.

Differences from :class:`sklearn.neural_network.MLPClassifier` / ``MLPRegressor``
--------------------------------------------------------------------------------
* The optimiser is fastbp's plain mini-batch SGD (optionally with momentum and
  Nesterov), always with shuffling; there is no Adam, L-BFGS, early stopping, ``tol``
  or learning-rate schedule, and ``max_iter`` epochs always run (no
  ``ConvergenceWarning``).
* ``alpha`` is fastbp's ``lmbda`` (Nielsen's network2 L2 coefficient), whose scale
  differs from scikit-learn's: fastbp decays the weights by ``eta * alpha / n`` per
  mini-batch, ``n`` the number of **training samples**, where scikit-learn's SGD uses
  ``alpha / m``, ``m`` the **mini-batch** size.  ``alpha_fastbp = alpha_sklearn * n / m``
  gives the same decay.
* The defaults are the book's (sigmoid units, ``normal_scaled`` initialisation,
  ``batch_size=10``, ``learning_rate_init=0.1``, 30 epochs), not scikit-learn's.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace
from typing import Any

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.preprocessing import LabelEncoder
    from sklearn.utils import check_random_state
    from sklearn.utils.multiclass import check_classification_targets
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as exc:  # not installed, or older than 1.6 (no validate_data)
    raise ImportError(
        "fastbp.estimators needs scikit-learn >= 1.6 "
        f'({exc}); install it with: pip install "fastbp[sklearn]"'
    ) from exc

from ._history import History
from ._init import INITIALISERS
from ._network import Network
from ._validation import (
    check_activation,
    check_bool,
    check_choice,
    check_dtype,
    check_int,
    check_momentum,
    check_real,
    describe,
)

__all__ = ["MLPClassifier", "MLPRegressor"]

_BATCH_CLIP_MESSAGE = (
    "Got `batch_size` less than 1 or larger than sample size. It is going to be clipped"
)
_RECORD_CHOICES = ("epoch", "batch", None)


def _check_hidden_layer_sizes(value: Any) -> tuple[int, ...]:
    """``hidden_layer_sizes`` as a tuple of positive ints (an int means one layer)."""
    fix = "pass the width of every hidden layer, e.g. (30,) or (30, 30); () for none"
    if isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)):
        value = (value,)
    if isinstance(value, (str, bytes)) or not isinstance(value, (tuple, list, np.ndarray)):
        raise TypeError(f"hidden_layer_sizes={describe(value)} is not a sequence of ints; {fix}")
    sizes = []
    for i, s in enumerate(value):
        sizes.append(check_int(s, f"hidden_layer_sizes[{i}]", 1, fix=fix))
    return tuple(sizes)


class _BaseMLP(BaseEstimator):
    """What :class:`MLPClassifier` and :class:`MLPRegressor` share (not public)."""

    # set by the subclasses
    _multi_output: bool = False

    # ------------------------------------------------------------------ validation

    def _hyperparameters(self) -> SimpleNamespace:
        """Every constructor parameter, checked; errors name the parameter."""
        try:
            return self._check_hyperparameters()
        except (TypeError, ValueError) as exc:
            if type(exc) not in (TypeError, ValueError):
                raise
            raise type(exc)(f"{type(self).__name__}: {exc}") from None

    def _check_hyperparameters(self) -> SimpleNamespace:
        hidden = _check_hidden_layer_sizes(self.hidden_layer_sizes)
        activation = check_activation(self.activation, len(hidden) + 1)
        if not isinstance(self.init, str) or self.init not in INITIALISERS:
            raise ValueError(
                f"init={describe(self.init)} is unknown; valid names: {', '.join(INITIALISERS)}"
            )
        max_iter = check_int(
            self.max_iter, "max_iter", 1, fix="pass the number of epochs (passes over the data)"
        )
        batch_size = check_int(
            self.batch_size, "batch_size", 1, fix="pass the mini-batch size, e.g. 10"
        )
        eta = check_real(
            self.learning_rate_init,
            "learning_rate_init",
            0.0,
            strict=True,
            fix="pass a positive learning rate (fastbp's eta) such as 0.1",
        )
        lmbda = check_real(
            self.alpha, "alpha", 0.0, fix="pass 0.0 (no L2) or a positive L2 coefficient"
        )
        check_momentum(self.momentum)
        nesterov = check_bool(self.nesterov, "nesterov")
        dtype = check_dtype(self.dtype)
        record = check_choice(self.record, "record", _RECORD_CHOICES)
        stats_every = check_int(self.stats_every, "stats_every", 1)
        warm_start = check_bool(self.warm_start, "warm_start")
        random_state = check_random_state(self.random_state)
        return SimpleNamespace(
            hidden=hidden,
            activation=activation,
            max_iter=max_iter,
            batch_size=batch_size,
            eta=eta,
            lmbda=lmbda,
            nesterov=nesterov,
            dtype=dtype,
            record=record,
            stats_every=stats_every,
            warm_start=warm_start,
            random_state=random_state,
        )

    # --------------------------------------------------------------------- fitting

    def _fit_network(
        self, X: np.ndarray, Y: np.ndarray, hp: SimpleNamespace, n_out: int, output: str, cost: str
    ) -> None:
        """Build (or, with warm start, continue) ``network_`` and train it on (X, Y)."""
        n, n_features = X.shape
        sizes = (n_features, *hp.hidden, n_out)
        init_seed, shuffle_seed = (
            int(s) for s in hp.random_state.randint(np.iinfo(np.int32).max, size=2)
        )
        net = self._warm_network(hp, sizes, output, cost)
        if net is None:
            net = Network(
                sizes,
                activation=hp.activation,
                output=output,
                cost=cost,
                init=self.init,
                dtype=hp.dtype,
                seed=init_seed,
            )
            seed: int | str = shuffle_seed
        else:
            seed = "continue"  # the shuffling continues where the previous fit stopped

        batch_size = hp.batch_size
        if batch_size > n:
            warnings.warn(
                f"{_BATCH_CLIP_MESSAGE} (batch_size={batch_size}, {n} samples: "
                f"using batch_size={n})",
                UserWarning,
                stacklevel=3,
            )
            batch_size = n

        kwargs: dict[str, Any] = {
            "epochs": hp.max_iter,
            "batch_size": batch_size,
            "eta": hp.eta,
            "lmbda": hp.lmbda,
            "momentum": self.momentum,
            "nesterov": hp.nesterov,
            "record": hp.record,
            "seed": seed,
            "stats": self.stats,
            "stats_every": hp.stats_every,
        }
        history: History = net.fit(X, Y, **kwargs)

        self.network_ = net
        self.history_ = history
        self.n_iter_ = hp.max_iter
        self.loss_curve_ = [float(c) for c in history.epoch["train_cost"]]
        self.loss_ = self.loss_curve_[-1]
        self.n_outputs_ = n_out

    def _warm_network(
        self, hp: SimpleNamespace, sizes: tuple[int, ...], output: str, cost: str
    ) -> Network | None:
        """The fitted network to continue (``warm_start=True``), else None."""
        if not hp.warm_start or not hasattr(self, "network_"):
            return None
        net: Network = self.network_
        hidden = hp.activation if hp.hidden else None
        have = (net.sizes, net.activation, net.output, net.cost_name, net.dtype)
        want = (sizes, _one_or_all(hidden), output, cost, hp.dtype)
        if have != want:
            raise ValueError(
                f"{type(self).__name__}: warm_start=True continues the fitted network_ "
                f"{net!r}, but the parameters and data ask for sizes={list(sizes)}, "
                f"activation={want[1]!r}, output={output!r}, cost={cost!r}, "
                f"dtype={hp.dtype.name!r}; set warm_start=False to fit a new network"
            )
        return net

    def _validate_X_y(self, X: Any, y: Any, hp: SimpleNamespace):
        """sklearn's validation of the training data (the messages the checks expect)."""
        warm = hp.warm_start and hasattr(self, "network_")
        return validate_data(
            self,
            X,
            y,
            reset=not warm,
            dtype=hp.dtype,
            order="C",
            multi_output=self._multi_output,
            y_numeric=self._multi_output,
        )

    def _outputs(self, X: Any) -> np.ndarray:
        """The network's outputs for X (validated as sklearn does), shape (n, n_out)."""
        check_is_fitted(self)
        X = validate_data(self, X, reset=False, dtype=self.network_.dtype, order="C")
        return self.network_.forward(X)


def _one_or_all(activation: tuple[str, ...] | None) -> str | tuple[str, ...] | None:
    """Hidden activations as :attr:`fastbp.Network.activation` reports them."""
    if not activation:
        return None
    if len(set(activation)) == 1:
        return activation[0]
    return tuple(activation)


_COMMON_PARAMETERS = """\
    hidden_layer_sizes : int or sequence of int, default (30,)
        Units of each hidden layer; ``()`` for none (a linear model of the output
        activation).
    activation : str or sequence of str, default "sigmoid"
        Hidden activation: ``"sigmoid"``, ``"tanh"``, ``"relu"``, ``"leaky_relu"``
        (slope 0.01 below zero), ``"softsign"`` or ``"linear"``; one name for all
        hidden layers or one per hidden layer."""

_TRAINING_PARAMETERS = """\
    init : str, default "normal_scaled"
        fastbp initialiser: ``"normal_scaled"`` (network2's N(0, 1/n_in) weights),
        ``"normal"``, ``"uniform_fan_in"``, ``"glorot_uniform"``, ``"glorot_normal"``,
        ``"he_normal"`` or ``"sparse"``.
    max_iter : int, default 30
        Number of **epochs** (passes over the training data); all of them run, there
        is no stopping criterion.
    batch_size : int, default 10
        Mini-batch size.  Larger than the number of samples, it is clipped to it with
        a ``UserWarning`` (as in scikit-learn).
    learning_rate_init : float, default 0.1
        The constant learning rate (fastbp's ``eta``), > 0.
    alpha : float, default 0.0
        L2 coefficient: fastbp's ``lmbda`` (Nielsen's network2).  The weights decay
        by ``eta * alpha / n`` per mini-batch with ``n`` the number of training
        samples; scikit-learn's ``alpha`` uses the mini-batch size instead, so
        ``alpha_sklearn * n / batch_size`` here gives scikit-learn's decay.
    momentum : float in [0, 1) or fastbp.Sutskever, default 0.0
        Momentum coefficient, or the Sutskever schedule; 0 is plain SGD.
    nesterov : bool, default False
        Nesterov's accelerated gradient.
    dtype : {"float64", "float32"}, default "float64"
        Dtype of the network's parameters and computations (and of the predictions).
    record : {"epoch", "batch", None}, default "epoch"
        Per-layer statistics in ``history_``: per epoch, per mini-batch, or none
        (fastest).
    stats : None, str or sequence of str, default None
        Optional statistic groups of :meth:`fastbp.Network.fit` (``"per_example"``,
        ``"noise_scale"``, ``"moments"``, ``"histograms"``, ``"distance"``, ``"all"``);
        they need ``record`` "batch" or "epoch".
    stats_every : int, default 1
        Compute the ``stats`` groups on every ``stats_every``-th mini-batch.
    random_state : int, numpy.random.RandomState or None, default None
        Draws the initialisation seed and the shuffling seed of every ``fit`` (an int
        makes ``fit`` repeatable: the compiled training gives the same bits).
    warm_start : bool, default False
        If True and the estimator is fitted, ``fit`` continues training ``network_``
        (weights, momentum and shuffling generator) for ``max_iter`` more epochs
        instead of starting anew; the architecture, dtype and number of features
        must not change."""

_COMMON_ATTRIBUTES = """\
    network_ : fastbp.Network
        The trained network (``network_.weights``, ``network_.gradient(X, Y)``, ...).
    history_ : fastbp.History
        What the last ``fit`` recorded: ``history_.epoch["train_cost"]`` and, with
        ``record="epoch"``, the per-layer statistics such as ``history_.epoch["speed"]``
        (shape ``(max_iter, n_layers)``), ``history_.batch`` with ``record="batch"``.
    n_iter_ : int
        Epochs run by the last ``fit`` (``max_iter``).
    loss_ : float
        Training cost of the last epoch: the mean of its mini-batch costs plus the L2
        term ``0.5 * alpha / n * sum ||W||^2`` (``history_.epoch["train_cost"][-1]``).
    loss_curve_ : list of float
        Training cost of every epoch of the last ``fit``.
    n_outputs_ : int
        Output units of the network.
    n_features_in_ : int
        Number of features seen during ``fit``.
    feature_names_in_ : ndarray of str
        Feature names seen during ``fit``, if X had string column names (a DataFrame)."""


class MLPClassifier(ClassifierMixin, _BaseMLP):
    __doc__ = f"""A fully-connected network classifier trained by fastbp's compiled SGD.

    Parameters
    ----------
{_COMMON_PARAMETERS}
    output : {{"sigmoid", "softmax"}}, default "sigmoid"
        Output layer and cost: ``"sigmoid"`` units with the cross-entropy cost (the
        book's), or ``"softmax"`` with the log-likelihood cost.  With ``"sigmoid"``
        a two-class problem uses a single output unit (logistic), more classes one
        unit per class (one-vs-rest); ``"softmax"`` always has one unit per class.
{_TRAINING_PARAMETERS}

    Attributes
    ----------
    classes_ : ndarray, shape (n_classes,)
        The class labels (sorted; any labels, strings too).
{_COMMON_ATTRIBUTES}

    Notes
    -----
    ``predict_proba`` gives, for a softmax output, the softmax; for a single sigmoid
    unit ``[1 - p, p]``; for one sigmoid unit per class, the unit activations (each a
    one-vs-rest probability) normalised to sum to one per row.  ``predict`` is the
    class of the largest probability.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from fastbp.estimators import MLPClassifier
    >>> X, y = load_digits(return_X_y=True)
    >>> clf = MLPClassifier(hidden_layer_sizes=(30,), random_state=0).fit(X / 16, y)
    >>> clf.history_.epoch["speed"].shape
    (30, 2)
    """

    def __init__(
        self,
        hidden_layer_sizes=(30,),
        activation="sigmoid",
        output="sigmoid",
        init="normal_scaled",
        max_iter=30,
        batch_size=10,
        learning_rate_init=0.1,
        alpha=0.0,
        momentum=0.0,
        nesterov=False,
        dtype="float64",
        record="epoch",
        stats=None,
        stats_every=1,
        random_state=None,
        warm_start=False,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.output = output
        self.init = init
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.alpha = alpha
        self.momentum = momentum
        self.nesterov = nesterov
        self.dtype = dtype
        self.record = record
        self.stats = stats
        self.stats_every = stats_every
        self.random_state = random_state
        self.warm_start = warm_start

    def _check_hyperparameters(self) -> SimpleNamespace:
        hp = super()._check_hyperparameters()
        hp.output = check_choice(self.output, "output", ("sigmoid", "softmax"))
        return hp

    def fit(self, X, y):
        """Train a new network on (X, y) (or continue ``network_``, with ``warm_start``).

        Parameters
        ----------
        X : array_like, shape (n_samples, n_features)
            Training inputs; cast to ``dtype``.
        y : array_like, shape (n_samples,)
            Class labels, at least two classes (any hashable, sortable labels).

        Returns
        -------
        self : MLPClassifier
            The fitted estimator.

        Raises
        ------
        ValueError, TypeError
            For a bad parameter (the message names it) or bad data.
        fastbp.NonFiniteError
            If training diverges (a NaN or Inf appears): lower ``learning_rate_init``.
        """
        hp = self._hyperparameters()
        X, y = self._validate_X_y(X, y, hp)
        check_classification_targets(y)
        if hp.warm_start and hasattr(self, "classes_"):
            encoder = LabelEncoder()
            encoder.classes_ = self.classes_
            classes = self.classes_
        else:
            encoder = LabelEncoder().fit(y)
            classes = encoder.classes_
        if len(classes) < 2:
            raise ValueError(
                f"{type(self).__name__} needs samples of at least 2 classes in y, but y has "
                f"1 class ({classes[0]!r})"
            )
        labels = encoder.transform(y).astype(np.int64, copy=False)
        if hp.output == "softmax":
            n_out, cost = len(classes), "log_likelihood"
        else:
            n_out, cost = (1 if len(classes) == 2 else len(classes)), "cross_entropy"
        self._fit_network(X, labels, hp, n_out, hp.output, cost)
        self.classes_ = classes
        return self

    def predict_proba(self, X):
        """Class probabilities.

        Parameters
        ----------
        X : array_like, shape (n_samples, n_features)

        Returns
        -------
        ndarray of float64, shape (n_samples, n_classes)
            Rows sum to 1; columns in the order of ``classes_`` (see the Notes of the
            class for what they are with a sigmoid output).
        """
        out = np.asarray(self._outputs(X), dtype=np.float64)
        if out.shape[1] == 1:  # a single sigmoid unit: P(classes_[1])
            p = out[:, 0]
            return np.column_stack([1.0 - p, p])
        total = out.sum(axis=1, keepdims=True)
        zero = total[:, 0] <= 0  # every sigmoid unit underflowed: no preference
        if np.any(zero):
            out[zero] = 1.0
            total[zero] = out.shape[1]
        return out / total

    def predict(self, X):
        """Predicted class labels.

        Parameters
        ----------
        X : array_like, shape (n_samples, n_features)

        Returns
        -------
        ndarray, shape (n_samples,)
            ``classes_[argmax(predict_proba(X))]`` for every row.
        """
        proba = self.predict_proba(X)  # checks that the estimator is fitted
        return self.classes_[np.argmax(proba, axis=1)]


class MLPRegressor(RegressorMixin, _BaseMLP):
    __doc__ = f"""A fully-connected network regressor trained by fastbp's compiled SGD.

    The output layer is linear and the cost quadratic (``0.5 * ||a - y||^2`` per
    sample).  There is no target scaling: standardise large targets (for example with
    :class:`sklearn.compose.TransformedTargetRegressor`), or SGD with the default
    learning rate may diverge (:class:`fastbp.NonFiniteError`).

    Parameters
    ----------
{_COMMON_PARAMETERS}
{_TRAINING_PARAMETERS}

    Attributes
    ----------
{_COMMON_ATTRIBUTES}

    Examples
    --------
    >>> import numpy as np
    >>> from fastbp.estimators import MLPRegressor
    >>> X = np.random.default_rng(0).uniform(-1, 1, size=(200, 2))
    >>> reg = MLPRegressor(hidden_layer_sizes=(20,), random_state=0).fit(X, X[:, 0] * X[:, 1])
    >>> reg.predict(X[:3]).shape
    (3,)
    """

    _multi_output = True

    def __init__(
        self,
        hidden_layer_sizes=(30,),
        activation="sigmoid",
        init="normal_scaled",
        max_iter=30,
        batch_size=10,
        learning_rate_init=0.1,
        alpha=0.0,
        momentum=0.0,
        nesterov=False,
        dtype="float64",
        record="epoch",
        stats=None,
        stats_every=1,
        random_state=None,
        warm_start=False,
    ):
        self.hidden_layer_sizes = hidden_layer_sizes
        self.activation = activation
        self.init = init
        self.max_iter = max_iter
        self.batch_size = batch_size
        self.learning_rate_init = learning_rate_init
        self.alpha = alpha
        self.momentum = momentum
        self.nesterov = nesterov
        self.dtype = dtype
        self.record = record
        self.stats = stats
        self.stats_every = stats_every
        self.random_state = random_state
        self.warm_start = warm_start

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def fit(self, X, y):
        """Train a new network on (X, y) (or continue ``network_``, with ``warm_start``).

        Parameters
        ----------
        X : array_like, shape (n_samples, n_features)
            Training inputs; cast to ``dtype``.
        y : array_like, shape (n_samples,) or (n_samples, n_targets)
            Real targets.

        Returns
        -------
        self : MLPRegressor
            The fitted estimator.

        Raises
        ------
        ValueError, TypeError
            For a bad parameter (the message names it) or bad data.
        fastbp.NonFiniteError
            If training diverges (a NaN or Inf appears): lower ``learning_rate_init``
            or scale the targets.
        """
        hp = self._hyperparameters()
        X, y = self._validate_X_y(X, y, hp)
        y = np.asarray(y)
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        self._fit_network(X, Y, hp, Y.shape[1], "linear", "quadratic")
        self._y_1d = y.ndim == 1
        return self

    def predict(self, X):
        """Predicted targets.

        Parameters
        ----------
        X : array_like, shape (n_samples, n_features)

        Returns
        -------
        ndarray, shape (n_samples,) or (n_samples, n_targets)
            1-D when ``fit`` was given a 1-D ``y``; of the network's dtype.
        """
        out = self._outputs(X)
        return out[:, 0] if self._y_1d else out
