"""fastbp: fused, compiled backpropagation for deep fully-connected networks.

Train a network with mini-batch SGD and get, from the same pass, per-layer
gradient statistics (the speed of learning of Nielsen's *Neural Networks and Deep
Learning*, chapter 5, and more) -- computed by a compiled backend.

>>> import numpy as np, fastbp
>>> net = fastbp.Network([784, 30, 30, 10], seed=0)
>>> # history = net.fit(X, y, epochs=30, batch_size=10, eta=0.1, lmbda=5.0)
>>> # history.epoch["speed"]        # (epochs, 3) array: ||dC/db|| per layer

Importing fastbp is light: numpy only; the backend (and SciPy's BLAS, which the
compiled kernels use) is loaded at the first computation.
"""

from __future__ import annotations

from ._backends import (
    BackendFallbackWarning,
    BackendInfo,
    backends,
    current_backend_name,
    get_backend,
    use_backend,
)
from ._blas import blas_info, set_blas
from ._contract import STAT_NAMES, VALID_PAIRS
from ._errors import (
    BackendUnavailableError,
    FileFormatError,
    NonFiniteError,
    TooLargeError,
    TrainingInterrupted,
)
from ._history import History, Table
from ._io import load, load_history
from ._network import Gradient, Network
from ._schedules import Sutskever

__version__ = "0.1.0"

__all__ = [
    "BackendFallbackWarning",
    "STAT_NAMES",
    "VALID_PAIRS",
    "BackendInfo",
    "BackendUnavailableError",
    "FileFormatError",
    "Gradient",
    "History",
    "Network",
    "NonFiniteError",
    "Sutskever",
    "Table",
    "TooLargeError",
    "TrainingInterrupted",
    "__version__",
    "backends",
    "blas_info",
    "current_backend_name",
    "get_backend",
    "load",
    "load_history",
    "set_blas",
    "use_backend",
    "MLPClassifier",
    "MLPRegressor",
]

# scikit-learn is optional and heavy: the estimators are imported on first use.
_LAZY = {"MLPClassifier": "estimators", "MLPRegressor": "estimators"}


# Submodules with optional dependencies, imported on first attribute access.
_SUBMODULES = ("callbacks", "datasets", "estimators", "experiments", "plotting")


def __getattr__(name: str):
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'fastbp' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
