"""Shared fixtures of the fastbp test suite.

* ``backend``: every available backend, forced with :func:`fastbp.use_backend` for the
  duration of the test (a context variable, so it cannot leak into other tests).  The
  compiled and Numba backends appear as skipped parameters, with the reason, when they
  are not built / installed.
* ``backend_mod``: modules implementing ``fastbp/_contract.py`` -- numpy, numba and each
  compiled variant this CPU runs (baseline, avx2, avx512) -- for tests that drive the
  contract directly (their own mini-batch order).
* ``dtype``: float32 and float64.
* ``seed`` / ``rng``: a seed fixture in the style of scikit-learn's
  ``global_random_seed`` (``FASTBP_TEST_SEED`` overrides it); nothing seeds a global RNG.

Helpers (problems, norm-wise comparisons) live in ``tests/helpers.py`` and the
network2-style oracle in ``tests/reference.py``.  The suite has no ``__init__.py``:
pytest puts ``tests/`` on ``sys.path``, so test modules ``import helpers, reference``.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

import fastbp
from fastbp._backends import backends as _backend_report


def _backend_params():
    params = []
    for name, info in _backend_report().items():
        if info.available:
            params.append(pytest.param(name, id=name))
        elif name == "cython":
            params.append(
                pytest.param(
                    name,
                    id=name,
                    marks=pytest.mark.skip(
                        reason=f"compiled backend not built ({info.reason}); run `pip install .`"
                    ),
                )
            )
        elif name == "numba":
            params.append(
                pytest.param(
                    name,
                    id=name,
                    marks=pytest.mark.skip(
                        reason=f"numba backend unavailable ({info.reason}); "
                        'run `pip install ".[numba]"`'
                    ),
                )
            )
    return params


BACKEND_PARAMS = _backend_params()


@pytest.fixture(params=BACKEND_PARAMS)
def backend(request):
    """The name of a backend, forced (``fastbp.use_backend``) for the duration of the test."""
    with fastbp.use_backend(request.param):
        yield request.param


def _kernel_variant_params():
    """numpy, numba, plus every compiled variant (baseline / avx2 / avx512) this CPU can run.

    The compiled backend imports the best variant only; the contract tests drive each
    variant module directly, since they are built with different instruction sets and
    optimisation flags (see CMakeLists.txt).
    """
    from helpers import kernel_variants

    params = [pytest.param("numpy", id="numpy")]
    numba_info = _backend_report()["numba"]
    if numba_info.available:
        params.append(pytest.param("numba", id="numba"))
    else:
        reason = f'numba backend unavailable ({numba_info.reason}); run `pip install ".[numba]"`'
        params.append(pytest.param("numba", id="numba", marks=pytest.mark.skip(reason=reason)))
    try:
        variants = kernel_variants()
    except ImportError as exc:
        return params + [pytest.param("cython", id="cython", marks=pytest.mark.skip(
            reason=f"compiled backend not built ({exc}); run `pip install .`"))]
    return params + [pytest.param(module, id=f"cython-{name}") for name, module in variants]


@pytest.fixture(params=_kernel_variant_params())
def backend_mod(request):
    """A module implementing the contract (``make_workspace``, ``forward``, ``gradient``,
    ``train_epoch``): the NumPy backend, the Numba backend or one compiled variant."""
    import importlib

    from fastbp._backends import get_backend

    if request.param in ("numpy", "numba"):
        return get_backend(request.param)
    return importlib.import_module(request.param)


@pytest.fixture(params=[pytest.param(n, id=n) for n in ("float64", "float32")])
def dtype(request):
    return np.dtype(request.param)


_SEED = int(os.environ.get("FASTBP_TEST_SEED", "0"))


@pytest.fixture
def seed():
    """The suite's seed (``FASTBP_TEST_SEED`` to vary it); never seeds a global RNG."""
    return _SEED


@pytest.fixture
def rng(seed):
    """A fresh ``numpy.random.Generator`` per test."""
    return np.random.default_rng(seed)
