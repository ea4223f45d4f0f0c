"""The experiments of chapter 5 of Nielsen's *Neural Networks and Deep Learning*, and more.

Each function runs one experiment and returns its data (a dataclass of NumPy arrays
with ``to_dict()`` / ``to_json()``); none prints.  ``fastbp.plotting`` draws them and
the ``fastbp`` command prints them.

=====================================  ===============================================
:func:`per_neuron_gradients`           1. dC/db of the first neurons of each hidden
                                       layer at initialisation (the bar diagram)
:func:`speeds_at_init`                 2. speed of learning ||dC/db^l|| by depth at
                                       initialisation, over several seeds
:func:`speeds_during_training`         3. speeds during training: the book's protocol
                                       (500 full-batch steps on 1,000 images), or
                                       mini-batch SGD
:func:`accuracy_by_depth`              4. validation accuracy per epoch by depth
:func:`unstable_chain`                 5. one neuron per layer: vanishing and exploding
                                       gradients, and Problem 1
:func:`obstacles`                      6. speed and saturation by layer across
                                       activations, initialisers and depths
:func:`momentum_comparison`            7. SGD vs momentum (constant and Sutskever's
                                       schedule, classical and Nesterov)
=====================================  ===============================================

Data: every experiment takes ``data``, a :class:`fastbp.datasets.Dataset` (or None:
:func:`fastbp.datasets.load_best`, the embedded MNIST sample on a fresh machine).
Seeds: every random choice (initialisation, shuffling) is derived from the ``seed``
argument, so a result is reproducible bit for bit on the same backend.

:func:`train` is the training loop the experiments and ``fastbp train`` share: one
:meth:`fastbp.Network.fit` call per epoch (so that a progress callback runs after
each), the first with ``seed=seed`` and the others with ``seed="continue"``, so the
training is bit for bit that of one ``net.fit(X, y, epochs, ..., seed=seed)`` call.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import datasets as _datasets
from ._errors import NonFiniteError
from ._network import Network
from ._schedules import Sutskever

__all__ = [
    "BOOK",
    "AccuracyByDepth",
    "Chain",
    "EpochInfo",
    "InitSpeeds",
    "Momentum",
    "Obstacles",
    "PerNeuron",
    "TrainRun",
    "TrainingSpeeds",
    "accuracy_by_depth",
    "child_seed",
    "momentum_comparison",
    "obstacles",
    "per_neuron_gradients",
    "problem1_width",
    "speeds_at_init",
    "speeds_during_training",
    "train",
    "unstable_chain",
]

#: The chapter's numbers (``shared/CHAPTER5.md``; Nielsen's repository data, commit
#: 72db53d, ``fig/initial_gradient.json`` and ``fig/norms_during_training_*.json``).
BOOK: dict[str, Any] = {
    "initial_gradient": (
        (-0.0040, -0.0032, 0.0081, 0.0126, -0.0265, 0.0018),
        (0.0415, 0.0440, -0.0097, 0.0467, 0.0388, 0.0123),
    ),
    # speeds at initialisation, hidden layer 1 .. last, by number of hidden layers
    "speeds_at_init": {
        2: (0.065741, 0.309218),
        3: (0.011838, 0.059965, 0.283142),
        4: (0.0029753, 0.017077, 0.069539, 0.285139),
    },
    # speeds during the 500 full-batch steps: epoch -> hidden layers
    "speeds_during_training": {
        2: {0: (0.0657, 0.309), 10: (0.00893, 0.0404), 50: (0.00102, 0.00134),
            100: (0.00149, 0.00186), 499: (0.00343, 0.00963)},
        3: {0: (0.0118, 0.0600, 0.283), 10: (0.00200, 0.0104, 0.0596),
            50: (8.5e-5, 3.26e-4, 1.60e-3), 100: (8.05e-5, 2.81e-4, 1.38e-3),
            499: (8.56e-5, 2.18e-4, 1.26e-3)},
        4: {0: (0.00298, 0.0171, 0.0695, 0.285), 10: (2.66e-4, 1.47e-3, 8.40e-3, 0.0366),
            50: (2.06e-5, 4.8e-5, 2.47e-4, 1.04e-3), 100: (1.83e-5, 4.24e-5, 2.22e-4, 9.60e-4),
            499: (8.21e-6, 2.61e-5, 1.83e-4, 9.25e-4)},
    },
    # validation accuracy after 30 epochs, by number of hidden layers
    "accuracy_by_depth": {1: 0.9648, 2: 0.9690, 3: 0.9657, 4: 0.9653},
    "problem1_max": (6.894, 0.4477),  # (|w|, width)
}


# ------------------------------------------------------------------------- helpers


def child_seed(seed: int, *keys: int) -> int:
    """A seed derived from ``seed`` and integer ``keys`` (NumPy's SeedSequence)."""
    ss = np.random.SeedSequence([int(seed), *(int(k) for k in keys)])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def _seeds(seeds: int | Iterable[int]) -> list[int]:
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ValueError(f"seeds={seeds} must be at least 1 (a number of seeds or a list)")
        return list(range(int(seeds)))
    out = [int(s) for s in seeds]
    if not out:
        raise ValueError("seeds is empty; pass a number of seeds or a list of seeds")
    return out


def _sizes(n_in: int, depth: int, width: int, n_out: int) -> list[int]:
    return [int(n_in)] + [int(width)] * int(depth) + [int(n_out)]


def _data(data: Any, min_train: int | None = None) -> _datasets.Dataset:
    if data is None:
        return _datasets.load_best(min_train=min_train)
    if isinstance(data, _datasets.Dataset):
        return data
    if isinstance(data, str):
        return _datasets.load(data, min_train=min_train)
    if isinstance(data, tuple) and len(data) == 2:
        X, y = np.asarray(data[0], dtype=np.float64), np.asarray(data[1])
        return _datasets.Dataset("arrays", (X, y), source="arrays given")
    raise TypeError(
        f"data must be a fastbp.datasets.Dataset, a name ('auto', 'sample', 'mnist', "
        f"'fashion-mnist'), an (X, y) pair or None, got {type(data).__name__}"
    )


def _first(data: _datasets.Dataset, n: int, what: str = "n_images") -> tuple[np.ndarray, ...]:
    X, y = data.train
    if n > X.shape[0]:
        raise ValueError(
            f"{what}={n} but {data.title} has only {X.shape[0]} training examples"
        )
    return X[:n], y[:n]


def _n_classes(data: _datasets.Dataset) -> int:
    return max(len(data.classes), int(np.max(data.train[1])) + 1)


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        if v.dtype.kind == "f":
            obj = v.astype(object)
            obj[np.isnan(v)] = None
            obj[np.isposinf(v)] = "Infinity"
            obj[np.isneginf(v)] = "-Infinity"
            return obj.tolist()
        return v.tolist()
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return None if math.isnan(f) else ("Infinity" if f == math.inf else
                                           "-Infinity" if f == -math.inf else f)
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)}
    return v


class _Result:
    """Mixin: ``to_dict()`` (plain lists and numbers, NaN as None) and ``to_json()``."""

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON-able values (NaN -> None, inf -> "Infinity")."""
        d = _jsonable(self)
        d["experiment"] = type(self).__name__
        return d

    def to_json(self, indent: int | None = 1) -> str:
        """Strict JSON of :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent, allow_nan=False)


# ---------------------------------------------------------------- training loop


@dataclass(frozen=True)
class EpochInfo:
    """What :func:`train` passes to its ``on_epoch`` callback after each epoch."""

    epoch: int  # 0-based
    epochs: int
    accuracy: float  # validation accuracy (NaN without validation data)
    cost: float  # validation cost (NaN without validation data)
    speed: np.ndarray  # (L,) speed of every layer over the epoch (record="epoch")
    seconds: float  # wall-clock time of the epoch


@dataclass
class TrainRun(_Result):
    """The record of :func:`train`: one row per epoch.

    Attributes
    ----------
    sizes : list of int
    settings : dict
        Everything that defines the run (hyper-parameters, seed, data).
    accuracy, val_cost, train_cost : ndarray, shape (epochs,)
        Validation accuracy and cost at the end of each epoch (NaN without
        validation data); the training cost of the epoch (see ``Network.fit``).
    speed : ndarray, shape (epochs, L)
        ``||mean over the epoch of dC/db^l||`` for every weight layer (last column:
        the output layer); NaN with ``record=None``.
    sat_low, sat_high : ndarray, shape (epochs, L)
        Fraction of saturated (unit, example) pairs over the epoch.
    seconds : ndarray, shape (epochs,)
        Wall-clock time of each epoch, validation included (the mean over the epochs
        when they ran in one ``fit`` call, i.e. without a callback).
    diverged : int or None
        Epoch at which a NaN/Inf stopped the training (rows from it on are NaN).
    """

    sizes: list[int]
    settings: dict[str, Any]
    accuracy: np.ndarray
    val_cost: np.ndarray
    train_cost: np.ndarray
    speed: np.ndarray
    sat_low: np.ndarray
    sat_high: np.ndarray
    seconds: np.ndarray
    diverged: int | None = None

    @property
    def final_accuracy(self) -> float:
        return float(self.accuracy[-1]) if len(self.accuracy) else math.nan

    @property
    def best_accuracy(self) -> float:
        ok = ~np.isnan(self.accuracy)
        return float(np.max(self.accuracy[ok])) if ok.any() else math.nan


def train(
    net: Network,
    data: _datasets.Dataset,
    epochs: int,
    batch_size: int,
    eta: float,
    lmbda: float = 0.0,
    momentum: float | Sutskever = 0.0,
    nesterov: bool = False,
    seed: int = 0,
    record: str | None = "epoch",
    n_train: int | None = None,
    on_epoch: Callable[[EpochInfo], None] | None = None,
    raise_nonfinite: bool = False,
) -> TrainRun:
    """Train ``net`` on ``data.train``, evaluating on ``data.validation`` after each epoch.

    Parameters
    ----------
    net : fastbp.Network
    data : fastbp.datasets.Dataset
    epochs, batch_size, eta, lmbda, momentum, nesterov
        As :meth:`fastbp.Network.fit`.
    seed : int
        Seed of the shuffling: the run equals ``net.fit(X, y, epochs, ..., seed=seed)``.
    record : {"epoch", None}
        ``"epoch"`` records the per-layer speeds and saturations of every epoch.
    n_train : int, optional
        Use only the first ``n_train`` training examples.
    on_epoch : callable, optional
        Called with an :class:`EpochInfo` after every epoch (e.g. a progress bar).
    raise_nonfinite : bool, default False
        Re-raise :class:`fastbp.NonFiniteError`; by default the run stops there and
        ``diverged`` holds the epoch.

    Returns
    -------
    TrainRun

    Notes
    -----
    With ``on_epoch``, one ``fit`` call per epoch makes the callback possible; the
    momentum velocity, the update count and the shuffling generator
    (``seed="continue"``) carry over between the calls, so the parameters are those
    of a single ``fit`` call over all the epochs, bit for bit.  Without it the epochs
    run in one call (``seconds`` is then the mean time per epoch).
    """
    if record not in ("epoch", None):
        raise ValueError(f"record={record!r}: train() records 'epoch' or None")
    X, y = data.train
    if n_train is not None:
        X, y = _first(data, int(n_train), "n_train")
    # cast once here, so that the per-epoch fit calls do not copy the data again
    X = np.ascontiguousarray(X, dtype=net.dtype)
    validation = None
    if data.validation is not None:
        validation = (np.ascontiguousarray(data.validation[0], dtype=net.dtype),
                      data.validation[1])
    L = net.n_layers
    acc = np.full(epochs, np.nan)
    val_cost = np.full(epochs, np.nan)
    train_cost = np.full(epochs, np.nan)
    speed = np.full((epochs, L), np.nan)
    sat_low = np.full((epochs, L), np.nan)
    sat_high = np.full((epochs, L), np.nan)
    seconds = np.full(epochs, np.nan)
    settings = {
        "epochs": int(epochs),
        "batch_size": int(batch_size),
        "eta": float(eta),
        "lmbda": float(lmbda),
        "momentum": (
            {"schedule": "sutskever", "mu_max": momentum.mu_max, "period": momentum.period}
            if isinstance(momentum, Sutskever)
            else float(momentum)
        ),
        "nesterov": bool(nesterov),
        "seed": int(seed),
        "n_train": int(X.shape[0]),
        "n_validation": 0 if validation is None else int(validation[0].shape[0]),
        "data": data.summary(),
        "activation": net.activation,
        "output": net.output,
        "cost": net.cost_name,
        "dtype": net.dtype.name,
    }
    diverged = None
    # with a callback: one fit call per epoch; without: one call for all the epochs
    # (the same training, and no re-validation of the inputs at every epoch)
    step = 1 if on_epoch is not None else max(1, epochs)
    e0 = 0
    while e0 < epochs:
        k = min(step, epochs - e0)
        start = time.perf_counter()
        try:
            h = net.fit(
                X, y, k, batch_size, eta, lmbda=lmbda, momentum=momentum, nesterov=nesterov,
                validation=validation, record=record, seed=seed if e0 == 0 else "continue",
            )
        except NonFiniteError as exc:
            if raise_nonfinite:
                raise
            h = exc.history
            diverged = e0 + (int(exc.epoch) if exc.epoch is not None else 0)
        r = len(h.epoch)  # completed epochs of this call
        if r:
            sl = slice(e0, e0 + r)
            seconds[sl] = (time.perf_counter() - start) / r
            train_cost[sl] = h.epoch["train_cost"][:r]
            if validation is not None and len(h.validation) >= r:
                acc[sl] = h.validation["accuracy"][:r]
                val_cost[sl] = h.validation["cost"][:r]
            if record == "epoch":
                speed[sl] = h.epoch["speed"][:r]
                sat_low[sl] = h.epoch["sat_low"][:r]
                sat_high[sl] = h.epoch["sat_high"][:r]
        if on_epoch is not None and r:
            on_epoch(EpochInfo(e0, epochs, float(acc[e0]), float(val_cost[e0]),
                               speed[e0].copy(), float(seconds[e0])))
        if diverged is not None:
            break
        e0 += k
    return TrainRun(list(net.sizes), settings, acc, val_cost, train_cost, speed, sat_low,
                    sat_high, seconds, diverged)


# -------------------------------------------------------------- 1. per neuron


@dataclass
class PerNeuron(_Result):
    """∂C/∂b of the first neurons of each hidden layer at initialisation.

    Attributes
    ----------
    gradients : list of ndarray, one (n_neurons,) array per hidden layer
        Signed ∂C/∂b_j, averaged over the images (the book's bars).
    speeds : ndarray, shape (hidden layers,)
        ``||∂C/∂b^l||`` over all the layer's neurons.
    """

    data: dict[str, Any]
    sizes: list[int]
    seed: int
    n_images: int
    gradients: list[np.ndarray]
    speeds: np.ndarray
    book: Any = field(default_factory=lambda: BOOK["initial_gradient"])


def per_neuron_gradients(
    data: Any = None,
    sizes: Sequence[int] = (784, 30, 30, 10),
    n_images: int = 1000,
    n_neurons: int = 6,
    seed: int = 0,
) -> PerNeuron:
    """Experiment 1: the chapter's bar diagram (∂C/∂b for the top neurons, at init).

    Parameters
    ----------
    data : Dataset, optional
    sizes : sequence of int, default [784, 30, 30, 10]
    n_images : int, default 1000
        The first ``n_images`` training images (the book's ``full_td[:1000]``).
    n_neurons : int, default 6
    seed : int
        Seed of the network's initialisation (network2's default initialiser).
    """
    d = _data(data, n_images)
    X, y = _first(d, n_images)
    net = Network(list(sizes), seed=child_seed(seed, 1))
    g = net.gradient(X, y)
    hidden = g.biases[:-1]
    return PerNeuron(
        d.summary(), list(net.sizes), int(seed), int(n_images),
        [np.array(b[:n_neurons]) for b in hidden], np.array(g.stats["speed"][:-1]),
    )


# ---------------------------------------------------------- 2. speeds at init


@dataclass
class InitSpeeds(_Result):
    """Speed of learning by layer at initialisation, by depth, over seeds.

    Attributes
    ----------
    depths : list of int
        Numbers of hidden layers.
    sizes : list of list of int
    seeds : list of int
    speeds : list of ndarray, one (n_seeds, depth) array per depth
        ``||∂C/∂b^l||`` of the hidden layers, averaged gradient over the images.
    mean, std : list of ndarray, one (depth,) array per depth
        Over the seeds (std with ddof=1; NaN for one seed).
    ratio : list of ndarray, one (n_seeds,) array per depth
        Last hidden layer / first hidden layer.
    """

    data: dict[str, Any]
    depths: list[int]
    sizes: list[list[int]]
    seeds: list[int]
    n_images: int
    init: str
    activation: str
    speeds: list[np.ndarray]
    mean: list[np.ndarray]
    std: list[np.ndarray]
    ratio: list[np.ndarray]
    book: Any = field(default_factory=lambda: BOOK["speeds_at_init"])

    def ratio_summary(self) -> list[tuple[float, float, float]]:
        """Per depth: (mean, min, max) of the last/first ratio over the seeds."""
        return [(float(np.mean(r)), float(np.min(r)), float(np.max(r))) for r in self.ratio]


def speeds_at_init(
    data: Any = None,
    depths: Sequence[int] = (2, 3, 4),
    width: int = 30,
    n_images: int = 1000,
    seeds: int | Iterable[int] = 10,
    init: str = "normal_scaled",
    activation: str = "sigmoid",
) -> InitSpeeds:
    """Experiment 2: speed of learning at initialisation, [784, 30 x depth, 10].

    The book's measurement (``generate_gradient.py``): the norm of the average over
    the first ``n_images`` training images of ∂C_x/∂b^l, for each hidden layer of a
    freshly initialised network (sigmoid, cross-entropy, network2's initialiser).
    The book's run was unseeded: here each depth is measured for several seeds.

    Parameters
    ----------
    seeds : int or iterable of int, default 10
        A number of seeds (0, 1, ...) or the seeds themselves.
    """
    d = _data(data, n_images)
    X, y = _first(d, n_images)
    seed_list = _seeds(seeds)
    n_out = _n_classes(d)
    all_sizes, speeds, mean, std, ratio = [], [], [], [], []
    for depth in depths:
        sizes = _sizes(X.shape[1], depth, width, n_out)
        rows = np.empty((len(seed_list), depth))
        for i, s in enumerate(seed_list):
            net = Network(sizes, activation=activation, init=init, seed=child_seed(s, depth))
            rows[i] = net.gradient(X, y).stats["speed"][:-1]
        all_sizes.append(sizes)
        speeds.append(rows)
        mean.append(rows.mean(axis=0))
        std.append(rows.std(axis=0, ddof=1) if len(seed_list) > 1 else np.full(depth, np.nan))
        ratio.append(rows[:, -1] / rows[:, 0])
    return InitSpeeds(d.summary(), [int(x) for x in depths], all_sizes, seed_list,
                      int(n_images), init, activation, speeds, mean, std, ratio)


# ---------------------------------------------------- 3. speeds during training


@dataclass
class TrainingSpeeds(_Result):
    """Speed of learning by hidden layer during training, by depth.

    Attributes
    ----------
    mode : {"full-batch", "mini-batch"}
    epochs : int
        Full-batch: steps (each "epoch" is one step, as the book); mini-batch: epochs.
    speeds : list of ndarray, one (epochs + 1, depth) array per depth
        The book's measurement, ``||∂C/∂b^l||`` over all the training images, before
        each epoch (row ``e``) and after the last (row ``epochs``).
    batch_mean, batch_p10, batch_p90 : list of ndarray (epochs, depth), or None
        Mini-batch mode: per epoch, the mean and the 10th / 90th percentiles of the
        speeds of the individual mini-batches (``record="batch"``): the noisy view.
    sat_low, sat_high, act_mean : list of ndarray, one (epochs + 1, depth) per depth
        Saturation and mean activation of each hidden layer over the training images,
        at the same times as ``speeds``.
    cost : list of ndarray (epochs + 1,)
        Mean cross-entropy over the training images, same times.
    seconds : list of float
        Wall-clock time per depth.
    """

    data: dict[str, Any]
    mode: str
    depths: list[int]
    sizes: list[list[int]]
    n_images: int
    epochs: int
    batch_size: int
    eta: float
    lmbda: float
    seed: int
    speeds: list[np.ndarray]
    sat_low: list[np.ndarray]
    sat_high: list[np.ndarray]
    act_mean: list[np.ndarray]
    cost: list[np.ndarray]
    seconds: list[float]
    batch_mean: list[np.ndarray] | None = None
    batch_p10: list[np.ndarray] | None = None
    batch_p90: list[np.ndarray] | None = None
    book: Any = field(default_factory=lambda: BOOK["speeds_during_training"])

    def ratio(self) -> list[np.ndarray]:
        """Per depth, (epochs + 1,) last hidden layer / first hidden layer."""
        return [s[:, -1] / s[:, 0] for s in self.speeds]


def speeds_during_training(
    data: Any = None,
    depths: Sequence[int] = (2, 3, 4),
    width: int = 30,
    n_images: int = 1000,
    epochs: int = 500,
    batch_size: int | None = None,
    eta: float = 0.1,
    lmbda: float = 5.0,
    seed: int = 0,
    on_progress: Callable[[int, int, np.ndarray], None] | None = None,
    chunk: int = 25,
) -> TrainingSpeeds:
    """Experiment 3: speed of learning during training (the ``training_speed`` figures).

    ``batch_size=None`` is the book's protocol: ``epochs`` full-batch gradient steps
    on the first ``n_images`` training images (``net.SGD(td, 1, 1000, 0.1, lmbda=5.0)``
    500 times), speeds recorded before each step.  With a ``batch_size`` it is
    mini-batch SGD for ``epochs`` epochs on the same images: the speeds on all the
    images before each epoch, and each mini-batch's own speed (``record="batch"``)
    summarised per epoch -- the chapter's "noisier" picture.

    In full-batch mode the speeds before each step come from the training pass itself
    (``record="batch"``: the one mini-batch is all the images, and its statistics are
    taken before its update), so no second pass over the data is made; only the row
    after the last step is a :meth:`~fastbp.Network.gradient` call.

    Parameters
    ----------
    data : Dataset, optional
    depths : sequence of int, default (2, 3, 4)
        Numbers of hidden layers of ``width`` sigmoid units.
    n_images : int, default 1000
    epochs : int, default 500
    batch_size : int, optional
        None: full batch (the book).  An int: mini-batch SGD.
    eta, lmbda : float, default 0.1 and 5.0
        The L2 term uses n = n_images, so the weight decay per step is 1 - eta*lmbda/n.
    seed : int
    on_progress : callable, optional
        ``on_progress(depth, epochs_done, speeds)`` every ``chunk`` epochs, with the
        latest hidden-layer speeds.  The training is then run as several ``fit`` calls
        (``seed="continue"``); the result is the same, bit for bit.
    chunk : int, default 25
        Epochs per ``fit`` call when ``on_progress`` is given.
    """
    d = _data(data, n_images)
    X, y = _first(d, n_images)
    X = np.ascontiguousarray(X)
    n_out = _n_classes(d)
    full = batch_size is None
    m = n_images if full else int(batch_size)
    out: dict[str, list] = {k: [] for k in ("sizes", "speeds", "sat_low", "sat_high",
                                             "act_mean", "cost", "seconds", "bm", "b10",
                                             "b90")}
    for depth in depths:
        sizes = _sizes(X.shape[1], depth, width, n_out)
        net = Network(sizes, seed=child_seed(seed, depth, 1))
        start = time.perf_counter()
        step = epochs if on_progress is None else max(1, int(chunk))
        hs = []
        done = 0
        while done < epochs or not hs:
            k = min(step, epochs - done)
            # full batch: the statistics of the one mini-batch (all the images, before
            # its update) are the book's measurement, so the training pass itself gives
            # them (record="batch"), and no probe pass is needed
            hs.append(net.fit(X, y, epochs=k, batch_size=m, eta=eta, lmbda=lmbda,
                              record="batch", probe=None if full else (X, y),
                              seed=child_seed(seed, depth, 2) if not hs else "continue"))
            done += k
            if on_progress is not None:
                last = hs[-1].batch["speed"] if full else hs[-1].probe["speed"]
                on_progress(depth, done, np.array(last[-1, :-1]))
        if full:
            g = net.gradient(X, y)  # after the last step
            final = {**g.stats, "cost": np.float64(g.cost)}
        out["seconds"].append(time.perf_counter() - start)
        out["sizes"].append(sizes)

        def rows(col: str, hs=hs, final=final if full else None) -> np.ndarray:
            if full:
                parts = [np.asarray(h.batch[col]) for h in hs]
                return np.concatenate([*parts, np.asarray(final[col])[None]])
            # each call measures before each of its epochs and after its last: the
            # row after one call's last epoch is the first row of the next call
            parts = [np.asarray(h.probe[col]) for h in hs]
            return np.concatenate([p[:-1] for p in parts[:-1]] + [parts[-1]])

        out["speeds"].append(rows("speed")[:, :-1])
        out["sat_low"].append(rows("sat_low")[:, :-1])
        out["sat_high"].append(rows("sat_high")[:, :-1])
        out["act_mean"].append(rows("act_mean")[:, :-1])
        out["cost"].append(rows("cost"))
        if not full:
            nb = -(-n_images // m)
            bs = np.concatenate([np.asarray(h.batch["speed"]) for h in hs])
            b = bs[:, :-1].reshape(epochs, nb, depth)
            out["bm"].append(b.mean(axis=1))
            out["b10"].append(np.percentile(b, 10, axis=1))
            out["b90"].append(np.percentile(b, 90, axis=1))
    return TrainingSpeeds(
        d.summary(), "full-batch" if full else "mini-batch", [int(x) for x in depths],
        out["sizes"], int(n_images), int(epochs), int(m), float(eta), float(lmbda), int(seed),
        out["speeds"], out["sat_low"], out["sat_high"], out["act_mean"], out["cost"],
        out["seconds"],
        None if full else out["bm"], None if full else out["b10"], None if full else out["b90"],
    )


# ---------------------------------------------------------- 4. accuracy by depth


@dataclass
class AccuracyByDepth(_Result):
    """Validation accuracy per epoch by depth (the chapter's 96.48 / 96.90 / ... table).

    Attributes
    ----------
    accuracy : list of ndarray, one (n_seeds, epochs) array per depth
    speed : list of ndarray, one (n_seeds, epochs, depth) array per depth
        Per-epoch speeds of the hidden layers (norm of the epoch's mean gradient).
    seconds : ndarray, shape (n_depths, n_seeds)
        Wall-clock time of each training run.
    """

    data: dict[str, Any]
    depths: list[int]
    sizes: list[list[int]]
    seeds: list[int]
    epochs: int
    batch_size: int
    eta: float
    lmbda: float
    accuracy: list[np.ndarray]
    speed: list[np.ndarray]
    seconds: np.ndarray
    book: Any = field(default_factory=lambda: BOOK["accuracy_by_depth"])

    @property
    def final(self) -> np.ndarray:
        """(n_depths, n_seeds): accuracy after the last epoch."""
        return np.array([a[:, -1] for a in self.accuracy])

    @property
    def best(self) -> np.ndarray:
        """(n_depths, n_seeds): best accuracy over the epochs."""
        return np.array([np.nanmax(a, axis=1) for a in self.accuracy])


def accuracy_by_depth(
    data: Any = None,
    depths: Sequence[int] = (1, 2, 3, 4),
    width: int = 30,
    epochs: int = 30,
    batch_size: int = 10,
    eta: float = 0.1,
    lmbda: float = 5.0,
    seeds: int | Iterable[int] = (0,),
    n_train: int | None = None,
    on_epoch: Callable[[int, int, EpochInfo], None] | None = None,
) -> AccuracyByDepth:
    """Experiment 4: [784, 30, 10] ... [784, 30, 30, 30, 30, 10], the book's settings.

    ``net.SGD(training_data, 30, 10, 0.1, lmbda=5.0, evaluation_data=validation_data)``:
    30 epochs, mini-batch 10, eta = 0.1, lambda = 5, validation accuracy per epoch.
    Network ``Network(sizes, seed=s)`` and shuffling ``train(..., seed=s)`` for each
    seed ``s``: the same as ``fastbp train --seed s``.

    Parameters
    ----------
    on_epoch : callable, optional
        ``on_epoch(depth, seed, EpochInfo)`` after every epoch.
    """
    d = _data(data)
    if d.validation is None:
        raise ValueError(f"{d.title} has no validation part; accuracy_by_depth needs one")
    seed_list = _seeds(seeds)
    n_out = _n_classes(d)
    n_in = d.train[0].shape[1]
    all_sizes, acc, spd = [], [], []
    secs = np.zeros((len(depths), len(seed_list)))
    for i, depth in enumerate(depths):
        sizes = _sizes(n_in, depth, width, n_out)
        a = np.full((len(seed_list), epochs), np.nan)
        s_ = np.full((len(seed_list), epochs, depth), np.nan)
        for j, s in enumerate(seed_list):
            net = Network(sizes, seed=s)
            cb = None if on_epoch is None else (
                lambda info, _d=depth, _s=s: on_epoch(_d, _s, info))
            run = train(net, d, epochs, batch_size, eta, lmbda, seed=s, n_train=n_train,
                        on_epoch=cb)
            a[j] = run.accuracy
            s_[j] = run.speed[:, :-1]
            secs[i, j] = float(np.nansum(run.seconds))
        all_sizes.append(sizes)
        acc.append(a)
        spd.append(s_)
    return AccuracyByDepth(d.summary(), [int(x) for x in depths], all_sizes, seed_list,
                           int(epochs), int(batch_size), float(eta), float(lmbda), acc, spd,
                           secs)


# ------------------------------------------------------------ 5. unstable chain


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _sigmoid_prime(z: np.ndarray) -> np.ndarray:
    s = _sigmoid(z)
    return s * (1.0 - s)


def problem1_width(w: float | np.ndarray) -> np.ndarray:
    """The chapter's eq. (123): width of the interval of inputs a with |w σ'(wa+b)| >= 1.

    ``(2/|w|) ln(|w| (1 + sqrt(1 - 4/|w|)) / 2 - 1)`` for ``|w| >= 4``, 0 below.
    """
    aw = np.abs(np.asarray(w, dtype=np.float64))
    out = np.zeros_like(aw)
    ok = aw >= 4.0
    a = aw[ok]
    out[ok] = 2.0 / a * np.log(a * (1.0 + np.sqrt(1.0 - 4.0 / a)) / 2.0 - 1.0)
    return out


def _problem1_numeric(aw: float) -> float:
    """Same width, found by root-finding on σ'(z) = 1/|w| (an independent check)."""
    from scipy.optimize import brentq

    if aw < 4.0:
        return 0.0
    if aw == 4.0:
        return 0.0
    zstar = brentq(lambda z: _sigmoid_prime(np.float64(z)) - 1.0 / aw, 0.0, 60.0,
                   xtol=1e-14, rtol=1e-15)
    return 2.0 * zstar / aw  # z = wa + b in [-z*, z*]  <=>  a in an interval of 2 z*/|w|


@dataclass
class ChainCase(_Result):
    """One chain of one neuron per layer: x -> neuron 1 -> ... -> neuron n -> C.

    Attributes
    ----------
    w, b, z, a : ndarray (n,)
        Weights, biases, pre-activations and activations of neurons 1..n.
    factors : ndarray (n - 1,)
        ``w_j σ'(z_j)`` for j = 2..n (the terms of eq. 122).
    dC_db : ndarray (n,)
        ∂C/∂b_j from the product formula σ'(z_j) Π_{k>j} w_k σ'(z_k) · ∂C/∂a_n.
    dC_db_network : ndarray (n,)
        The same, from ``fastbp.Network(...).gradient`` on the chain built as a network.
    rel_error : float
        ``max_j |formula - network| / |network|``.
    """

    name: str
    x: float
    y: float
    w: np.ndarray
    b: np.ndarray
    z: np.ndarray
    a: np.ndarray
    factors: np.ndarray
    dC_db: np.ndarray
    dC_db_network: np.ndarray
    rel_error: float


@dataclass
class Chain(_Result):
    """Experiment 5: the unstable gradient in a chain of one neuron per layer.

    Attributes
    ----------
    vanishing : ChainCase
        Weights ~ N(0, 1), biases ~ N(0, 1) (the book's "standard" init).
    exploding : ChainCase
        w_j = 100 and biases making every z_j = 0: each factor is 100 x 1/4 = 25.
    lengths : ndarray (k,)
        Chain lengths n of the random-chain statistics.
    log10_ratio_median, log10_ratio_p10, log10_ratio_p90 : ndarray (k,)
        Over ``n_random`` N(0, 1) chains of length n: log10 |∂C/∂b_1 / ∂C/∂b_n|.
    typical_factor : float
        exp(E[ln |w σ'(z)|]) over those chains: the typical shrink per layer.
    problem1_w, problem1_width_formula, problem1_width_numeric : ndarray
        Problem 1: |w| grid, eq. (123), and the width found by root-finding.
    problem1_argmax, problem1_max : float
        Where the width peaks, and its value (the book: 0.45 at |w| ≈ 6.9).
    """

    n: int
    seed: int
    vanishing: ChainCase
    exploding: ChainCase
    lengths: np.ndarray
    log10_ratio_median: np.ndarray
    log10_ratio_p10: np.ndarray
    log10_ratio_p90: np.ndarray
    typical_factor: float
    problem1_w: np.ndarray
    problem1_width_formula: np.ndarray
    problem1_width_numeric: np.ndarray
    problem1_argmax: float
    problem1_max: float
    book: Any = field(default_factory=lambda: BOOK["problem1_max"])


def _chain_case(name: str, w: np.ndarray, b: np.ndarray, x: float, y: float) -> ChainCase:
    n = len(w)
    z = np.empty(n)
    a = np.empty(n)
    prev = x
    for j in range(n):
        z[j] = w[j] * prev + b[j]
        a[j] = _sigmoid(z[j])
        prev = a[j]
    sp = _sigmoid_prime(z)
    # cross-entropy C = -y ln a_n - (1 - y) ln(1 - a_n): dC/da_n = (a_n - y) / (a_n (1 - a_n))
    dC_da = (a[-1] - y) / (a[-1] * (1.0 - a[-1]))
    factors = w[1:] * sp[1:]
    dC_db = np.empty(n)
    for j in range(n):
        dC_db[j] = sp[j] * np.prod(factors[j:]) * dC_da
    net = Network([1] * (n + 1), init=([np.array([[wj]]) for wj in w],
                                        [np.array([bj]) for bj in b]))
    g = net.gradient(np.array([[x]]), np.array([[y]]))
    dnet = np.array([gb[0] for gb in g.biases])
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = float(np.max(np.abs(dC_db - dnet) / np.abs(dnet)))
    return ChainCase(name, float(x), float(y), w, b, z, a, factors, dC_db, dnet, rel)


def unstable_chain(
    n: int = 4,
    seed: int = 0,
    x: float = 0.5,
    y: float = 1.0,
    lengths: Sequence[int] = tuple(range(2, 21)),
    n_random: int = 2000,
) -> Chain:
    """Experiment 5: ∂C/∂b_1 as a product of w_j σ'(z_j) factors, and Problem 1.

    Parameters
    ----------
    n : int, default 4
        Neurons in the chain (the book's figure has 4: three hidden and the output).
    seed : int
        Seed of the N(0, 1) weights and biases of the vanishing case and of the
        random chains.
    x, y : float
        Input and target (cross-entropy cost on the last neuron).
    lengths : sequence of int
        Chain lengths for the random-chain statistics.
    n_random : int
        Random chains per length.
    """
    if n < 2:
        raise ValueError(f"n={n}: a chain needs at least 2 neurons")
    rng = np.random.Generator(np.random.PCG64(child_seed(seed, 5)))
    vanishing = _chain_case("vanishing", rng.standard_normal(n), rng.standard_normal(n), x, y)
    w = np.full(n, 100.0)
    b = np.empty(n)
    prev = x
    for j in range(n):  # z_j = 0, so a_j = 1/2 and b_{j+1} = -100 * 1/2
        b[j] = -w[j] * prev
        prev = 0.5
    exploding = _chain_case("exploding", w, b, x, y)

    lengths_a = np.array([int(k) for k in lengths])
    med, p10, p90 = [], [], []
    logs = []
    for k in lengths_a:
        W = rng.standard_normal((n_random, k))
        B = rng.standard_normal((n_random, k))
        prev = np.full(n_random, x)
        Z = np.empty((n_random, k))
        for j in range(k):
            Z[:, j] = W[:, j] * prev + B[:, j]
            prev = _sigmoid(Z[:, j])
        F = np.abs(W[:, 1:] * _sigmoid_prime(Z[:, 1:]))
        # dC/db_1 / dC/db_n = sigma'(z_1) / sigma'(z_n) * prod_{j=2..n} w_j sigma'(z_j)
        lr = (np.log10(_sigmoid_prime(Z[:, 0])) - np.log10(_sigmoid_prime(Z[:, -1]))
              + np.log10(F).sum(axis=1))
        med.append(np.median(lr))
        p10.append(np.percentile(lr, 10))
        p90.append(np.percentile(lr, 90))
        logs.append(np.log(F).ravel())
    typical = float(np.exp(np.mean(np.concatenate(logs)))) if logs else math.nan

    from scipy.optimize import minimize_scalar

    wgrid = np.linspace(4.0, 30.0, 521)
    formula = problem1_width(wgrid)
    numeric = np.array([_problem1_numeric(v) for v in wgrid])
    opt = minimize_scalar(lambda v: -problem1_width(v)[()], bounds=(4.0, 30.0),
                          method="bounded", options={"xatol": 1e-10})
    return Chain(int(n), int(seed), vanishing, exploding, lengths_a, np.array(med),
                 np.array(p10), np.array(p90), typical, wgrid, formula, numeric,
                 float(opt.x), float(-opt.fun))


# ------------------------------------------------------------------ 6. obstacles


@dataclass
class Obstacles(_Result):
    """Experiment 6: speed and saturation by layer across activations, inits and depths.

    ``rows`` holds one dict per (activation, init, depth):

    * ``speed``, ``sat_low``, ``sat_high``, ``act_mean``: (epochs + 1, depth) arrays of
      the hidden layers, measured on the probe set before each epoch and at the end;
    * ``accuracy``: (epochs,) validation accuracy;
    * ``batch_sat_low``, ``batch_act_mean``: (points, depth), the training mini-batches'
      own statistics averaged over windows of ``window`` mini-batches (the fine
      timeline of saturation, as Glorot and Bengio's figure 2);
    * ``ratio_init``, ``ratio_end``: last/first hidden-layer speed at the start / end;
    * ``diverged``: the epoch at which a NaN/Inf stopped training, or None.
    """

    data: dict[str, Any]
    activations: list[str]
    inits: list[str]
    depths: list[int]
    width: int
    epochs: int
    batch_size: int
    eta: float
    n_train: int
    n_probe: int
    window: int
    output: str
    cost: str
    seed: int
    rows: list[dict[str, Any]]

    def table(self) -> list[dict[str, Any]]:
        """One summary dict per configuration (scalars only)."""
        out = []
        for r in self.rows:
            out.append({
                "activation": r["activation"], "init": r["init"], "depth": r["depth"],
                "ratio_init": r["ratio_init"], "ratio_end": r["ratio_end"],
                "top_sat_low_init": float(r["sat_low"][0, -1]),
                "top_sat_low_end": float(r["sat_low"][-1, -1]),
                "max_sat_init": float(np.nanmax(r["sat_low"][0] + r["sat_high"][0])),
                "accuracy": float(r["accuracy"][-1]) if len(r["accuracy"]) else math.nan,
                "diverged": r["diverged"],
            })
        return out


def obstacles(
    data: Any = None,
    activations: Sequence[str] = ("sigmoid", "tanh", "softsign", "relu"),
    inits: Sequence[str] = ("normal", "normal_scaled", "uniform_fan_in", "glorot_uniform",
                            "he_normal", "sparse"),
    depths: Sequence[int] = (2, 5, 10, 20),
    width: int = 30,
    epochs: int = 3,
    batch_size: int = 10,
    eta: float = 0.05,
    n_train: int | None = None,
    n_probe: int = 300,
    window: int = 20,
    output: str = "softmax",
    cost: str = "log_likelihood",
    seed: int = 0,
) -> Obstacles:
    """Experiment 6: the table the chapter's "other obstacles" section points at.

    For every activation x initialiser x depth: a network of ``depth`` hidden layers
    of ``width`` units with a softmax output and the log-likelihood cost (Glorot and
    Bengio's setup), trained by plain SGD; measured on ``n_probe`` validation images
    (Glorot and Bengio used 300) before each epoch and at the end: the speed of
    each hidden layer and its saturation (low and high); plus the training
    mini-batches' own saturation over time and the validation accuracy.

    Parameters
    ----------
    n_train : int, optional
        Training examples used (default all).
    window : int
        Mini-batches per point of the fine saturation timeline.
    """
    d = _data(data)
    X, y = d.train if n_train is None else _first(d, int(n_train), "n_train")
    if d.validation is not None:
        Xp, yp = d.validation[0][:n_probe], d.validation[1][:n_probe]
    else:
        Xp, yp = X[-n_probe:], y[-n_probe:]
    n_out = _n_classes(d)
    X = np.ascontiguousarray(X)
    rows = []
    for ia, act in enumerate(activations):
        for ii, init in enumerate(inits):
            for depth in depths:
                sizes = _sizes(X.shape[1], depth, width, n_out)
                net = Network(sizes, activation=act, output=output, cost=cost, init=init,
                              seed=child_seed(seed, ia, ii, depth))
                start = time.perf_counter()
                diverged = None
                try:
                    h = net.fit(X, y, epochs, batch_size, eta, record="batch", probe=(Xp, yp),
                                validation=d.validation, seed=child_seed(seed, ia, ii, depth, 7))
                except NonFiniteError as exc:
                    h = exc.history
                    diverged = int(exc.epoch) if exc.epoch is not None else 0
                secs = time.perf_counter() - start
                p = h.probe
                speed = np.full((epochs + 1, depth), np.nan)
                sl, sh, am = speed.copy(), speed.copy(), speed.copy()
                r = len(p)
                if r:
                    speed[:r] = p["speed"][:, :-1]
                    sl[:r] = p["sat_low"][:, :-1]
                    sh[:r] = p["sat_high"][:, :-1]
                    am[:r] = p["act_mean"][:, :-1]
                acc = np.full(epochs, np.nan)
                if len(h.validation):
                    acc[: len(h.validation)] = h.validation["accuracy"]
                bsl = np.zeros((0, depth))
                bam = np.zeros((0, depth))
                if len(h.batch):
                    k = (len(h.batch) // window) * window
                    if k:
                        bsl = np.nanmean(h.batch["sat_low"][:k, :-1].reshape(-1, window, depth),
                                         axis=1)
                        bam = np.nanmean(h.batch["act_mean"][:k, :-1].reshape(-1, window, depth),
                                         axis=1)
                with np.errstate(divide="ignore", invalid="ignore"):
                    ratio0 = float(speed[0, -1] / speed[0, 0])
                    last = r - 1 if r else 0
                    ratio1 = float(speed[last, -1] / speed[last, 0])
                rows.append({
                    "activation": act, "init": init, "depth": int(depth), "sizes": sizes,
                    "speed": speed, "sat_low": sl, "sat_high": sh, "act_mean": am,
                    "accuracy": acc, "batch_sat_low": bsl, "batch_act_mean": bam,
                    "ratio_init": ratio0, "ratio_end": ratio1, "diverged": diverged,
                    "seconds": secs,
                })
    return Obstacles(d.summary(), list(activations), list(inits), [int(x) for x in depths],
                     int(width), int(epochs), int(batch_size), float(eta), int(X.shape[0]),
                     int(Xp.shape[0]), int(window), output, cost, int(seed), rows)


# ------------------------------------------------------------------ 7. momentum


#: The methods of :func:`momentum_comparison`: name -> (momentum, nesterov).
MOMENTUM_METHODS: dict[str, tuple[float | Sutskever, bool]] = {
    "sgd": (0.0, False),
    "cm-0.9": (0.9, False),
    "nag-0.9": (0.9, True),
    "cm-sutskever-0.99": (Sutskever(mu_max=0.99), False),
    "nag-sutskever-0.99": (Sutskever(mu_max=0.99), True),
}


@dataclass
class Momentum(_Result):
    """Experiment 7: plain SGD vs momentum, each with its best η from a grid.

    ``methods`` maps a method name to a dict: ``etas`` tried, ``final`` accuracy for
    each (NaN if it diverged), ``best_eta``, and for the best run ``accuracy``
    (epochs,) and ``speed`` (epochs, hidden layers).
    """

    data: dict[str, Any]
    sizes: list[int]
    epochs: int
    batch_size: int
    lmbda: float
    seed: int
    etas: list[float]
    methods: dict[str, dict[str, Any]]


def momentum_comparison(
    data: Any = None,
    sizes: Sequence[int] | None = None,
    epochs: int = 10,
    batch_size: int = 10,
    lmbda: float = 5.0,
    etas: Sequence[float] = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3),
    methods: Sequence[str] | None = None,
    seed: int = 0,
    n_train: int | None = None,
) -> Momentum:
    """Experiment 7: momentum on [784, 30, 30, 30, 30, 10], η tuned per method.

    Every method starts from the same initial network (``seed``) and sees the same
    shuffles; η is picked from ``etas`` by the final validation accuracy (so the
    accuracies are optimistic by the selection, equally for every method).

    Parameters
    ----------
    methods : sequence of str, optional
        Keys of :data:`MOMENTUM_METHODS` (default all: SGD, CM and NAG with μ = 0.9,
        CM and NAG with Sutskever's schedule capped at μ_max = 0.99).
    """
    d = _data(data)
    if d.validation is None:
        raise ValueError(f"{d.title} has no validation part; momentum_comparison needs one")
    n_out = _n_classes(d)
    if sizes is None:
        sizes = _sizes(d.train[0].shape[1], 4, 30, n_out)
    names = list(MOMENTUM_METHODS) if methods is None else list(methods)
    for m in names:
        if m not in MOMENTUM_METHODS:
            raise ValueError(f"unknown method {m!r}; known: {', '.join(MOMENTUM_METHODS)}")
    res: dict[str, dict[str, Any]] = {}
    for name in names:
        mom, nest = MOMENTUM_METHODS[name]
        runs = []
        for eta in etas:
            net = Network(list(sizes), seed=seed)
            runs.append(train(net, d, epochs, batch_size, eta, lmbda, momentum=mom,
                              nesterov=nest, seed=seed, n_train=n_train))
        finals = np.array([r.final_accuracy for r in runs])
        best = int(np.nanargmax(finals)) if np.any(~np.isnan(finals)) else 0
        res[name] = {
            "momentum": runs[best].settings["momentum"],
            "nesterov": nest,
            "etas": [float(e) for e in etas],
            "final": finals,
            "best_eta": float(etas[best]),
            "accuracy": runs[best].accuracy,
            "speed": runs[best].speed[:, :-1],
            "seconds": float(np.nansum([np.nansum(r.seconds) for r in runs])),
        }
    return Momentum(d.summary(), list(sizes), int(epochs), int(batch_size), float(lmbda),
                    int(seed), [float(e) for e in etas], res)
