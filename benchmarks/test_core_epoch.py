"""Workload A of the chapter: one epoch of [784, 30, 30, 30, 30, 10], side by side.

Sigmoid, cross-entropy, network2's default initialisation, mini-batch 10,
eta = 0.1, lambda = 5 (n = 50,000), one epoch of 50,000 examples.  Rows:

* ``cython`` and ``numpy`` backends through the backend contract, with
  ``record="batch"`` (every statistic of every mini-batch), and ``cython``
  with ``record=None`` (the baseline the statistics cost is measured against);
* ``numpy-loop``: a plain NumPy mini-batch loop written here, recording only
  the chapter's speed of learning ||g_b|| per layer and mini-batch.

Only the epoch is timed: arrays are prepared (validated, cast, one-hot) before
the timed region, and parameters are reset from the same start before each
round.  Every row's result is checked against the NumPy reference backend after
it has been timed, so a fast wrong kernel cannot win.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from fastbp import _contract as C
from fastbp._backends import numpy_backend

SMOKE = os.environ.get("FASTBP_BENCH_SIZE", "full") == "smoke"

try:  # the best kernel variant for this CPU, as fastbp itself selects it
    from fastbp._backends import cython_backend
except ImportError as exc:  # pragma: no cover - reported as a skip
    cython_backend = None
    CYTHON_MISSING = str(exc)

SIZES = [784, 30, 30, 30, 30, 10]
N = 500 if SMOKE else 50_000
BATCH = 10
ETA = 0.1
LMBDA = 5.0
ROUNDS = 1 if SMOKE else 5


def make_problem(dtype):
    """Seeded synthetic data of MNIST's shape, start parameters and the epoch order."""
    rng = np.random.Generator(np.random.PCG64(20261127))
    X = rng.random((N, SIZES[0])).astype(dtype)
    labels = rng.integers(0, SIZES[-1], N)
    Y = np.eye(SIZES[-1], dtype=dtype)[labels]
    layout = C.Layout(SIZES, ["sigmoid"] * (len(SIZES) - 1), "cross_entropy", dtype)
    params = np.empty(layout.n_params, dtype=dtype)
    for W, b in zip(layout.weight_views(params), layout.bias_views(params)):
        W[...] = rng.standard_normal(W.shape) / np.sqrt(W.shape[1])
        b[...] = rng.standard_normal(b.shape)
    order = rng.permutation(N).astype(np.int64)
    return layout, X, Y, params, order


PROBLEMS = {}


def problem(dtype):
    key = np.dtype(dtype).name
    if key not in PROBLEMS:
        PROBLEMS[key] = make_problem(dtype)
    return PROBLEMS[key]


def contract_epoch(backend, layout, X, Y, params, order, record):
    """A callable running one epoch through the backend contract, and its outputs."""
    n_batches = -(-N // BATCH)
    ws = backend.make_workspace(layout, BATCH)
    velocity = np.zeros_like(params)
    rec_batch = np.empty((n_batches, C.N_STATS, layout.L))
    rec_epoch = np.empty((C.N_STATS, layout.L))
    batch_cost = np.empty(n_batches)
    work = params.copy()
    hyper = C.Hyper(eta=ETA, lmbda_n=LMBDA / N, record=record)

    def reset():
        work[...] = params
        return (), {}

    def run():
        return backend.train_epoch(
            layout,
            ws,
            work,
            velocity,
            X,
            Y,
            order,
            BATCH,
            0,
            n_batches,
            hyper,
            rec_batch,
            rec_epoch,
            batch_cost,
        )

    return reset, run, work, rec_batch


def numpy_loop(layout, X, Y, params, order):
    """A plain NumPy mini-batch SGD loop (network2's update, vectorised over the batch)."""
    dtype = params.dtype
    n_batches = -(-N // BATCH)
    work = params.copy()
    Ws = layout.weight_views(work)
    bs = layout.bias_views(work)
    speeds = np.empty((n_batches, layout.L))
    decay = dtype.type(1 - ETA * LMBDA / N)
    eta = dtype.type(ETA)

    def reset():
        work[...] = params
        return (), {}

    def run():
        with np.errstate(over="ignore"):
            for k in range(n_batches):
                idx = order[k * BATCH : (k + 1) * BATCH]
                a = X[idx]
                activations = [a]
                for W, b in zip(Ws, bs):
                    a = 1 / (1 + np.exp(-(a @ W.T + b)))
                    activations.append(a)
                delta = a - Y[idx]
                m = len(idx)
                for l in range(layout.L - 1, -1, -1):
                    nabla_w = delta.T @ activations[l] / dtype.type(m)
                    nabla_b = delta.mean(axis=0)
                    speeds[k, l] = np.linalg.norm(nabla_b)
                    if l > 0:
                        a_prev = activations[l]
                        delta = (delta @ Ws[l]) * (a_prev * (1 - a_prev))
                    Ws[l] *= decay
                    Ws[l] -= eta * nabla_w
                    bs[l] -= eta * nabla_b

    return reset, run, work, speeds


REFERENCE = {}


def reference(dtype):
    """Parameters and records after the epoch, from the NumPy reference backend."""
    key = np.dtype(dtype).name
    if key not in REFERENCE:
        layout, X, Y, params, order = problem(dtype)
        reset, run, work, rec = contract_epoch(
            numpy_backend, layout, X, Y, params, order, C.RECORD_BATCH
        )
        reset()
        run()
        REFERENCE[key] = (work.copy(), rec.copy())
    return REFERENCE[key]


def check_params(layout, got, want, dtype):
    # Over a whole epoch round-off drifts; a wrong kernel differs by O(1).
    tol = 1e-7 if dtype == np.float64 else 2e-2
    for Wg, Ww in zip(layout.weight_views(got), layout.weight_views(want)):
        assert np.linalg.norm(Wg - Ww) <= tol * np.linalg.norm(Ww)


IMPLEMENTATIONS = ["cython", "cython-record-none", "numpy-backend", "numpy-loop"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_workload_a_epoch(benchmark, single_thread_blas, impl, dtype):
    if impl.startswith("cython") and cython_backend is None:
        pytest.skip(f"compiled backend not built: {CYTHON_MISSING}")
    if impl == "numpy-backend" and dtype == np.float32 and not SMOKE:
        pytest.skip(
            "the reference backend is timed in float64 only (its speed does not depend on dtype)"
        )
    layout, X, Y, params, order = problem(dtype)
    benchmark.group = f"A {np.dtype(dtype).name}: [784,30,30,30,30,10] batch 10, {N} examples"
    benchmark.extra_info["examples"] = N
    if impl.startswith("cython"):
        benchmark.extra_info["kernels"] = cython_backend.VARIANT
    if impl == "numpy-loop":
        reset, run, work, speeds = numpy_loop(layout, X, Y, params, order)
    else:
        backend = numpy_backend if impl == "numpy-backend" else cython_backend
        record = C.RECORD_NONE if impl == "cython-record-none" else C.RECORD_BATCH
        reset, run, work, rec = contract_epoch(backend, layout, X, Y, params, order, record)
    benchmark.pedantic(run, setup=reset, rounds=ROUNDS, iterations=1, warmup_rounds=0)

    want_params, want_rec = reference(dtype)
    check_params(layout, work, want_params, dtype)
    if impl == "numpy-loop":
        first = want_rec[0, C.S_SPEED]
        np.testing.assert_allclose(speeds[0], first, rtol=1e-10 if dtype == np.float64 else 1e-4)
    elif impl != "cython-record-none":
        np.testing.assert_allclose(rec[0], want_rec[0], rtol=1e-10 if dtype == np.float64 else 1e-4)
