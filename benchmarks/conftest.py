"""Shared set-up of the benchmark suite.

Run (OpenBLAS variables unset in this command only, see benchmarks/README.md)::

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest benchmarks \
        --benchmark-group-by=group --benchmark-columns=median,iqr,rounds \
        --benchmark-json=.benchmarks/full.json

``FASTBP_BENCH_SIZE=smoke`` shrinks every workload to a few mini-batches and skips
the external peers: that is how CI runs the suite (with ``--benchmark-disable``),
to check that every timed implementation still computes the right numbers.

At the end of a timed run the terminal summary prints the tables of
benchmarks/README.md (seconds per epoch, the FLOP-bound limit, the ratios against
the issue's goals); ``python benchmarks/report.py FILE.json`` prints the same
from a saved run and draws the scaling plot.  ``FASTBP_BENCH_GOALS=assert`` makes
a missed goal fail the session (never at smoke size).
"""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from _harness import SMOKE, blas_report, scipy_blas_kernel  # noqa: E402


def pytest_configure(config):
    config.addinivalue_line("markers", "peer: a row timing a peer library, not fastbp")
    config.addinivalue_line("markers", "scaling: the scaling sweeps (depth, width, batch)")


def pytest_report_header(config):
    env = {k: os.environ.get(k) for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")}
    import scipy.linalg  # noqa: F401 - load SciPy's OpenBLAS so that it is reported

    from fastbp import backends

    lines = [
        f"fastbp benchmarks: size={'smoke' if SMOKE else 'full'}; OpenBLAS env: {env}",
        f"BLAS (threadpoolctl): {blas_report()}",
        f"SciPy's BLAS (fastbp's): {scipy_blas_kernel()}",
        "fastbp backends: "
        + "; ".join(
            f"{name}: {info.detail or 'available'}" if info.available else f"{name}: {info.reason}"
            for name, info in backends().items()
        ),
    ]
    return lines


def _rows(config):
    session = getattr(config, "_benchmarksession", None)
    if session is None or getattr(session, "disabled", True):
        return []
    from _report import Row

    rows = []
    for bench in session.benchmarks:
        if not getattr(bench, "stats", None) or not bench.stats.data:
            continue
        rows.append(Row(bench.group or "", bench.name, bench.stats.median, dict(bench.extra_info)))
    return rows


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    rows = _rows(config)
    if not rows:
        return
    from _report import goals, render

    terminalreporter.write_sep("=", "fastbp benchmark summary (seconds per epoch, medians)")
    terminalreporter.write_line(render(rows, header=False))
    config._fastbp_missed = [g for g in goals(rows) if g.met is False]


def pytest_sessionfinish(session, exitstatus):
    if SMOKE or os.environ.get("FASTBP_BENCH_GOALS", "") != "assert":
        return
    # The summary runs after sessionfinish; compute the goals here for the exit status.
    rows = _rows(session.config)
    if rows:
        from _report import goals

        if any(g.met is False for g in goals(rows)):
            session.exitstatus = 1
