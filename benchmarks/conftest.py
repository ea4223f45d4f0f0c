"""Shared set-up of the benchmark suite.

Run (OpenBLAS variables unset in this command only, see benchmarks/README.md)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest benchmarks \
        --benchmark-group-by=group --benchmark-columns=median,iqr,rounds

``FASTBP_BENCH_SIZE=smoke`` shrinks every workload to a few mini-batches: that is
how CI runs the suite (with ``--benchmark-disable``), to check that every timed
implementation still computes the right numbers.
"""

from __future__ import annotations

import os

import pytest

SMOKE = os.environ.get("FASTBP_BENCH_SIZE", "full") == "smoke"


def blas_report() -> str:
    """Which BLAS libraries and kernels are loaded (threadpoolctl), one line each."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:  # pragma: no cover - threadpoolctl is in the test extra
        return "threadpoolctl not installed"
    rows = []
    for info in threadpool_info():
        rows.append(
            f"{info.get('internal_api')} {info.get('version')} "
            f"arch={info.get('architecture')} threads={info.get('num_threads')} "
            f"({os.path.basename(info.get('filepath', ''))})"
        )
    return "; ".join(rows)


def pytest_report_header(config):
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    return [
        f"fastbp benchmarks: size={'smoke' if SMOKE else 'full'}; OpenBLAS env: {env}",
        f"BLAS: {blas_report()}",
    ]


@pytest.fixture(scope="session")
def single_thread_blas():
    """Pin every BLAS/OpenMP pool to one thread for the session."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover
        yield
        return
    with threadpool_limits(limits=1):
        yield
