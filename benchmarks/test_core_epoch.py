"""Workload A of the chapter (issue 2's benchmark): one epoch of [784, 30, 30, 30, 30, 10].

Sigmoid, cross-entropy, network2's default initialisation, mini-batch 10,
eta = 0.1, lambda = 5 (n = 50,000), one epoch of 50,000 examples, 1 thread.  Rows:

* ``cython`` and ``numpy-backend`` through the backend contract, with
  ``record="batch"`` (every statistic of every mini-batch), and ``cython``
  with ``record=None`` (the baseline the statistics cost is measured against);
* ``numpy-loop``: a plain NumPy mini-batch loop (``_peers.numpy_loop``), recording
  the chapter's speed of learning ||g_b|| per layer and mini-batch.

Issue 2's goal: cython >= 4x faster than the numpy backend and than the NumPy loop.
Only the epoch is timed: arrays are prepared (validated, cast, one-hot) before the
timed region, and parameters are reset to the same start before each round.
Every row's result is checked against the NumPy reference backend after it has
been timed, so a fast wrong kernel cannot win.  The rows land in the same groups
as ``test_workloads.py``'s rows for A (the other backends, record modes, thread
counts and the peers).
"""

from __future__ import annotations

import numpy as np
import pytest
from _harness import (
    SMOKE,
    WORKLOADS,
    annotate,
    backend_detail,
    backend_or_skip,
    check_fastbp,
    check_peer,
    contract_runner,
    group_name,
    problem,
    run_once,
    time_runner,
)
from _peers import numpy_loop

IMPLEMENTATIONS = ["cython", "cython-record-none", "numpy-backend", "numpy-loop"]


@pytest.mark.parametrize("dtype", [np.float64, np.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_workload_a_epoch(benchmark, impl, dtype):
    if impl == "numpy-backend" and dtype == np.float32 and not SMOKE:
        pytest.skip(
            "the reference backend is timed in float64 only (its speed does not depend on dtype)"
        )
    w = WORKLOADS["A"]
    p = problem(w, dtype)
    benchmark.group = group_name(w, p.dtype.name, 1)
    if impl == "numpy-loop":
        runner = numpy_loop(p, w.n_batches, "speed")
        time_runner(benchmark, runner, 1)
        annotate(benchmark, p, runner, "numpy-loop", record="speed", threads=1)
        rerun = lambda k: run_once(numpy_loop(p, k, "speed"))  # noqa: E731
        benchmark.extra_info.update(check_peer(p, runner.result(), runner.batches, rerun))
        return
    backend = "numpy" if impl == "numpy-backend" else "cython"
    record = "none" if impl == "cython-record-none" else "batch"
    module = backend_or_skip(backend)
    runner = contract_runner(module, p, record)
    time_runner(benchmark, runner, 1)
    annotate(
        benchmark, p, runner, f"fastbp-{backend}", record=record, threads=1,
        kernels=backend_detail(backend),
    )  # fmt: skip
    rerun = lambda k: run_once(contract_runner(module, p, record, k))  # noqa: E731
    benchmark.extra_info.update(check_fastbp(p, runner.result(), runner.batches, record, rerun))
