"""Scaling sweeps: one factor at a time around [784, 30x4, 10], batch 10, 10,000 examples.

Base point: sigmoid hidden layers, sigmoid output with cross-entropy, network2's
initialisation, eta = 0.1, lambda = 5, float64, 1 thread.  Sweeps:

* depth: L = 2 ... 1,000 weight layers, sizes [784, 30 x (L-1), 10];
* width: [784, w x 4, 10], w = 16 ... 2,048;
* batch size: 1 ... 1,024.

Rows per point (one group each): fastbp's cython backend with record="batch" and
record=None, the NumPy reference backend, and the peers (record none).  Large
points would take minutes per implementation, so every implementation of a point
is timed over the same first ``k`` full mini-batches of the epoch (``k`` chosen so
that the slowest vectorised peer needs about ``SWEEP_SECONDS``; network2 over fewer),
and extrapolated to the 10,000-example epoch: ``extra_info["scale"]`` is the
factor, and the report multiplies by it.  Each row is checked against the NumPy
reference backend over the same mini-batches.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from _harness import (
    SMOKE,
    Workload,
    annotate,
    backend_detail,
    backend_or_skip,
    check_fastbp,
    check_peer,
    contract_runner,
    is_installed,
    problem,
    run_once,
    time_runner,
)
from _peers import FACTORIES, NEEDS

pytestmark = pytest.mark.scaling

BASE = Workload(
    "base", (784, 30, 30, 30, 30, 10), "sigmoid", "sigmoid", "cross_entropy",
    "normal_scaled", 10, 0.1, 5.0, 200 if SMOKE else 10_000,
)  # fmt: skip
DTYPE = "float64"

if SMOKE:
    SWEEPS = {"depth": (2, 20), "width": (16, 64), "batch": (1, 10)}
else:
    SWEEPS = {
        "depth": (2, 3, 5, 10, 20, 50, 100, 200, 500, 1000),
        "width": (16, 32, 64, 128, 256, 512, 1024, 2048),
        "batch": (1, 2, 4, 10, 32, 128, 512, 1024),
    }

IMPLS = (
    "fastbp-cython", "fastbp-cython-none", "fastbp-numpy",
    "network2", "numpy-loop", "sklearn", "torch", "jax-loop", "jax-scan",
)  # fmt: skip

#: Seconds one timed run of the slowest vectorised peer aims at (network2: half).
SWEEP_SECONDS = 0.4
#: JAX unrolls every layer into one XLA graph: ~8 s of compilation per jitted function
#: at 100 layers, growing with depth; deeper points are skipped.
JAX_MAX_DEPTH = 200


def point(sweep: str, x: int) -> Workload:
    if sweep == "depth":
        return replace(BASE, key=f"depth={x}", sizes=(784,) + (30,) * (x - 1) + (10,))
    if sweep == "width":
        return replace(BASE, key=f"width={x}", sizes=(784,) + (x,) * 4 + (10,))
    return replace(BASE, key=f"batch={x}", batch=x)


def timed_batches(w: Workload, impl: str) -> int:
    """Full mini-batches timed at this point (the same for every implementation but network2)."""
    full = w.n // w.batch
    if SMOKE:
        return full
    macs = sum(a * b for a, b in zip(w.sizes[:-1], w.sizes[1:]))
    if impl == "network2":  # one example at a time: ~15 us per layer and example, 1 GFLOP/s
        per_example = 15e-6 * w.L + 6 * macs / 1e9
        return max(1, min(full, int(SWEEP_SECONDS / 2 / per_example) // w.batch))
    # PyTorch eager: ~100 us per layer and mini-batch (autograd), 10 GFLOP/s on the products
    per_batch = 100e-6 * w.L + 6 * w.batch * macs / 10e9
    return max(4, min(full, int(SWEEP_SECONDS / per_batch)))


def _params():
    out = []
    for sweep, xs in SWEEPS.items():
        for x in xs:
            for impl in IMPLS:
                marks = [pytest.mark.peer] if not impl.startswith("fastbp") else []
                out.append(pytest.param(sweep, x, impl, id=f"{sweep}={x}-{impl}", marks=marks))
    return out


@pytest.mark.parametrize(("sweep", "x", "impl"), _params())
def test_scaling(benchmark, sweep, x, impl):
    w = point(sweep, x)
    if impl.startswith("jax") and sweep == "depth" and x > JAX_MAX_DEPTH:
        pytest.skip(f"JAX: XLA compilation of a {x}-layer unrolled graph is too slow for the sweep")
    peer = not impl.startswith("fastbp")
    if peer and NEEDS[impl] is not None:
        reason = is_installed(NEEDS[impl])
        if reason:
            pytest.skip(reason)
    p = problem(w, DTYPE)
    k = timed_batches(w, impl)
    benchmark.group = f"scaling {sweep}={x:>4}: {w.describe()}, {DTYPE}, 1 thread"
    if peer:
        runner = FACTORIES[impl](p, k, "none")
        time_runner(benchmark, runner, 1, budget=1.5)
        annotate(benchmark, p, runner, impl, record="none", threads=1, sweep=sweep, x=x)
        rerun = lambda kk: run_once(FACTORIES[impl](p, kk, "none"))  # noqa: E731
        benchmark.extra_info.update(check_peer(p, runner.result(), k, rerun))
        return
    backend = "numpy" if impl == "fastbp-numpy" else "cython"
    record = "none" if impl.endswith("-none") else "batch"
    module = backend_or_skip(backend)
    runner = contract_runner(module, p, record, k)
    time_runner(benchmark, runner, 1, budget=1.5)
    annotate(
        benchmark, p, runner, f"fastbp-{backend}", record=record, threads=1, sweep=sweep, x=x,
        kernels=backend_detail(backend),
    )  # fmt: skip
    rerun = lambda kk: run_once(contract_runner(module, p, record, kk))  # noqa: E731
    benchmark.extra_info.update(check_fastbp(p, runner.result(), k, record, rerun))
