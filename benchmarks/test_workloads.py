"""Workloads A, B and C of issue 4, side by side: fastbp's backends and the peers.

Groups (``--benchmark-group-by=group``) are one workload, dtype and thread count,
e.g. ``B float32, 2 threads: ...``; each holds

* fastbp through the backend contract (``train_epoch`` on prepared arrays: the
  epoch only), for every backend (cython, numba when available, numpy), every
  record mode (``batch`` = all statistics of every mini-batch, ``epoch``,
  ``none``) -- the statistics cost is record=batch over record=none;
* one row through the public ``Network.fit`` (validation, one-hot and recorder
  included), for reference;
* the peers of ``_peers.py`` without recording (``none``) and recording ||g_b|| of
  every layer and mini-batch (``speed``);
* for B: the same matrix products done alone with SciPy's BLAS (``gemm-only``).

The rows of workload A that issue 2 asked for (cython record batch/none, the numpy
backend, the NumPy loop with speeds, 1 thread) are in ``test_core_epoch.py``, in
the same groups.  Every row is checked against the NumPy reference backend.
"""

from __future__ import annotations

import numpy as np
import pytest
from _harness import (
    DTYPES,
    MAX_ROUNDS,
    PEER_THREADS,
    ROUND_BUDGET,
    SMOKE,
    WORKLOADS,
    annotate,
    backend_detail,
    backend_or_skip,
    check_fastbp,
    check_peer,
    contract_runner,
    fit_runner,
    group_name,
    interleaved_rounds,
    is_installed,
    mkl_or_reason,
    peak_runner,
    pinned_threads,
    problem,
    run_once,
    time_runner,
    with_blas,
)
from _peers import FACTORIES, NEEDS, PEERS, gemm_only


def in_core_epoch(key, impl, record, threads):
    """Rows timed by test_core_epoch.py (not repeated here)."""
    return (
        key == "A"
        and threads == 1
        and (impl, record)
        in {("cython", "batch"), ("cython", "none"), ("numpy", "batch"), ("numpy-loop", "speed")}
    )


def _fastbp_params():
    out = []
    for key, dtypes in DTYPES.items():
        for dtype in dtypes:
            for backend in ("cython", "numba", "numpy"):
                records = ("batch",) if backend == "numpy" else ("batch", "none", "epoch")
                # BLAS threads matter only for B's large products (A and C are
                # single-threaded work at these sizes); the reference backend is
                # timed on A (test_core_epoch.py), elsewhere it is only the oracle.
                threads = (1,) if backend == "numpy" else PEER_THREADS[key]
                if backend == "numpy" and key != "A" and not SMOKE:
                    continue
                for record in records:
                    for t in threads:
                        if in_core_epoch(key, backend, record, t):
                            continue
                        out.append(
                            pytest.param(
                                key,
                                dtype,
                                t,
                                backend,
                                record,
                                id=f"{key}-{dtype}-{t}t-{backend}-{record}",
                            )
                        )
    return out


@pytest.mark.parametrize(("key", "dtype", "threads", "backend", "record"), _fastbp_params())
def test_fastbp(benchmark, key, dtype, threads, backend, record):
    module = backend_or_skip(backend)
    w = WORKLOADS[key]
    p = problem(w, dtype)
    runner = contract_runner(module, p, record)
    benchmark.group = group_name(w, dtype, threads)
    time_runner(benchmark, runner, threads)
    annotate(
        benchmark, p, runner, f"fastbp-{backend}", record=record, threads=threads,
        kernels=backend_detail(backend),
    )  # fmt: skip
    rerun = lambda k: run_once(contract_runner(module, p, record, k))  # noqa: E731
    benchmark.extra_info.update(check_fastbp(p, runner.result(), runner.batches, record, rerun))


@pytest.mark.parametrize(
    ("key", "dtype"), [pytest.param(k, d, id=f"{k}-{d}") for k, ds in DTYPES.items() for d in ds]
)
def test_fastbp_fit(benchmark, key, dtype):
    """The public API, one epoch of ``Network.fit(record="batch")`` with the default backend."""
    w = WORKLOADS[key]
    p = problem(w, dtype)
    runner = fit_runner(p, "batch")
    benchmark.group = group_name(w, dtype, 1)
    time_runner(benchmark, runner, 1)
    annotate(benchmark, p, runner, "fastbp-fit", record="batch", threads=1)
    benchmark.extra_info.update(check_fastbp(p, runner.result(), runner.batches, "batch"))


#: network2 is timed over the first 1/FRACTION of the epoch and extrapolated.
NETWORK2_FRACTION = {"A": 10, "B": 50, "C": 10}


def peer_batches(peer, w):
    if peer == "network2" and not SMOKE:
        return max(2, w.n_batches // NETWORK2_FRACTION[w.key])
    return w.n_batches


def _peer_params():
    out = []
    for key, dtypes in DTYPES.items():
        for dtype in dtypes:
            for t in PEER_THREADS[key]:
                for peer in PEERS:
                    for record in ("none", "speed") if t == 1 else ("none",):
                        if in_core_epoch(key, peer, record, t):
                            continue
                        out.append(
                            pytest.param(
                                key,
                                dtype,
                                t,
                                peer,
                                record,
                                id=f"{key}-{dtype}-{t}t-{peer}-{record}",
                            )
                        )
    return out


@pytest.mark.peer
@pytest.mark.parametrize(("key", "dtype", "threads", "peer", "record"), _peer_params())
def test_peer(benchmark, key, dtype, threads, peer, record):
    if NEEDS[peer] is not None:
        reason = is_installed(NEEDS[peer])
        if reason:
            pytest.skip(reason)
    w = WORKLOADS[key]
    p = problem(w, dtype)
    runner = FACTORIES[peer](p, peer_batches(peer, w), record)
    benchmark.group = group_name(w, dtype, threads)
    time_runner(benchmark, runner, threads)
    annotate(benchmark, p, runner, peer, record=record, threads=threads)
    rerun = lambda k: run_once(FACTORIES[peer](p, k, record))  # noqa: E731
    benchmark.extra_info.update(check_peer(p, runner.result(), runner.batches, rerun))


@pytest.mark.parametrize("threads", [1, 2], ids=["1t", "2t"])
@pytest.mark.parametrize("dtype", DTYPES["B"])
def test_gemm_only(benchmark, dtype, threads):
    """B's matrix products alone (SciPy's BLAS): the throughput goal's denominator."""
    w = WORKLOADS["B"]
    p = problem(w, dtype)
    runner = gemm_only(p, w.n_batches)
    benchmark.group = group_name(w, dtype, threads)
    time_runner(benchmark, runner, threads)
    annotate(
        benchmark, p, runner, "gemm-only", record="none", threads=threads, gemm_flops=w.gemm_flops()
    )


#: "A float64" -> (median per-round ratio record=batch / record=None, rounds)
INTERLEAVED: dict = {}


@pytest.mark.parametrize(
    ("key", "dtype"), [pytest.param(k, d, id=f"{k}-{d}") for k, ds in DTYPES.items() for d in ds]
)
def test_stats_cost_interleaved(benchmark, key, dtype):
    """The statistics cost, record="batch" against record=None (compiled backend, 1
    thread), the two in turn within every round (each round starting with the other):
    the ratio is the median over rounds of the two times of the same round, steadier
    on a shared machine than a ratio of two rows timed minutes apart."""
    module = backend_or_skip("cython")
    w = WORKLOADS[key]
    p = problem(w, dtype)
    rows = ("none", "batch")
    runners = {r: contract_runner(module, p, r) for r in rows}
    benchmark.group = group_name(w, dtype, 1) + " (interleaved)"
    with pinned_threads(1):
        times, _, rounds = interleaved_rounds(
            runners, benchmark, budget=4 * ROUND_BUDGET, max_rounds=2 * MAX_ROUNDS
        )
    for r in rows:
        check_fastbp(p, runners[r].result(), runners[r].batches, r)
    ratio = float(np.median(np.asarray(times["batch"]) / np.asarray(times["none"])))
    INTERLEAVED[f"{key} {dtype}"] = (ratio, rounds)
    annotate(benchmark, p, runners["batch"], "fastbp-cython-interleaved", record="batch",
             threads=1, stats_cost_interleaved=ratio, rounds=rounds)  # fmt: skip


#: "B float32 2t" -> {row: median seconds}, {goal: median per-round ratio}, rounds
B_INTERLEAVED: dict = {}

#: B's interleaved rows: fastbp's goal row and what its goals compare it with.
B_PEERS = ("jax-loop", "jax-scan")


@pytest.mark.parametrize("threads", PEER_THREADS["B"], ids=[f"{t}t" for t in PEER_THREADS["B"]])
def test_b_interleaved(benchmark, threads):
    """B's goals with every row timed in turn within each round: fastbp (record="batch",
    compiled backend), the same products alone with SciPy's BLAS and JAX's two
    programs (the fastest peers; PyTorch is twice as slow).  The ratios are medians
    over rounds of ratios within a round: under the drift of a shared machine,
    two-thread rows timed minutes apart differ by more than the goals' margins."""
    module = backend_or_skip("cython")
    w = WORKLOADS["B"]
    dtype = DTYPES["B"][0]
    p = problem(w, dtype)
    runners = {"fastbp": contract_runner(module, p, "batch")}
    runners["gemm-only"] = gemm_only(p, w.n_batches)
    mkl = mkl_or_reason() is None  # fastbp.set_blas("mkl") rows, where oneMKL is installed
    if mkl:
        runners["fastbp-mkl"] = with_blas(contract_runner(module, p, "batch"), "mkl")
        runners["gemm-only-mkl"] = gemm_only(p, w.n_batches, blas="mkl")
    for peer in B_PEERS:
        if is_installed(NEEDS[peer]) is None:
            runners[peer] = FACTORIES[peer](p, w.n_batches, "none")
    benchmark.group = group_name(w, dtype, threads) + " (interleaved)"
    with pinned_threads(threads):
        times, _, rounds = interleaved_rounds(runners, benchmark, budget=4 * ROUND_BUDGET)
    check_fastbp(p, runners["fastbp"].result(), runners["fastbp"].batches, "batch")
    if mkl:
        check_fastbp(p, runners["fastbp-mkl"].result(), runners["fastbp-mkl"].batches, "batch")
    t = {name: np.asarray(v) for name, v in times.items()}
    ratios = {"GEMM-alone / fastbp": float(np.median(t["gemm-only"] / t["fastbp"]))}
    if mkl:
        ratios["GEMM-alone / fastbp, oneMKL"] = float(
            np.median(t["gemm-only-mkl"] / t["fastbp-mkl"]))
    peers = [name for name in B_PEERS if name in t]
    if peers:
        fastest = np.min(np.stack([t[name] for name in peers]), axis=0)
        ratios["fastbp / fastest peer"] = float(np.median(t["fastbp"] / fastest))
        if mkl:
            ratios["fastbp, oneMKL / fastest peer"] = float(np.median(t["fastbp-mkl"] / fastest))
    medians = {name: float(np.median(v)) for name, v in t.items()}
    B_INTERLEAVED[f"B {dtype} {threads}t"] = (medians, ratios, rounds)
    annotate(benchmark, p, runners["fastbp"], "fastbp-cython-interleaved", record="batch",
             threads=threads, interleaved_medians=medians, interleaved_ratios=ratios,
             rounds=rounds)  # fmt: skip


#: "A float64" -> {row: median seconds}, {goal: median per-round ratio}, rounds
AC_INTERLEAVED: dict = {}

#: A's and C's interleaved rows: the peers their goals name.
AC_PEERS = ("jax-scan", "torch")

#: the large product of test_peak.py, timed in the same rounds for the FLOP-bound limit
PEAK_N = 256 if SMOKE else 2048


@pytest.mark.peer
@pytest.mark.parametrize(
    ("key", "dtype"),
    [("A", "float64"), ("A", "float32"), ("C", "float32"), ("C", "float64")],
    ids=["A-float64", "A-float32", "C-float32", "C-float64"],
)
def test_ac_interleaved(benchmark, key, dtype):
    """A's and C's goals with every row timed in turn within each round: fastbp
    (record="batch", compiled backend), JAX's lax.scan epoch and PyTorch eager (record
    nothing), and the 2048^3 product of test_peak.py, whose throughput in the same round
    gives the FLOP-bound limit.  Each ratio is the median over rounds of the ratio
    within a round: rows timed minutes apart on this shared machine differ by more
    than the goals' margins (the large product's throughput moved by 20% between two
    runs of one afternoon)."""
    module = backend_or_skip("cython")
    w = WORKLOADS[key]
    p = problem(w, dtype)
    runners = {"fastbp": contract_runner(module, p, "batch")}
    peers = [peer for peer in AC_PEERS if is_installed(NEEDS[peer]) is None]
    for peer in peers:
        runners[peer] = FACTORIES[peer](p, w.n_batches, "none")
    runners["gemm-peak"] = peak_runner(dtype, PEAK_N)[0]
    benchmark.group = group_name(w, dtype, 1) + " (interleaved)"
    with pinned_threads(1):
        times, _, rounds = interleaved_rounds(runners, benchmark, budget=4 * ROUND_BUDGET)
    check_fastbp(p, runners["fastbp"].result(), runners["fastbp"].batches, "batch")
    for peer in peers:
        rerun = lambda k, peer=peer: run_once(FACTORIES[peer](p, k, "none"))  # noqa: E731
        check_peer(p, runners[peer].result(), runners[peer].batches, rerun)
    t = {name: np.asarray(v) for name, v in times.items()}
    # the limit of each round: the epoch's flops at that round's large-GEMM throughput
    limit = p.workload.flops() * t["gemm-peak"] / (2.0 * PEAK_N**3)
    ratios = {f"fastbp / {peer}": float(np.median(t["fastbp"] / t[peer])) for peer in peers}
    ratios["fastbp / FLOP-bound limit"] = float(np.median(t["fastbp"] / limit))
    medians = {name: float(np.median(v)) for name, v in t.items()}
    medians["FLOP-bound limit"] = float(np.median(limit))
    AC_INTERLEAVED[f"{key} {dtype}"] = (medians, ratios, rounds)
    annotate(benchmark, p, runners["fastbp"], "fastbp-cython-interleaved", record="batch",
             threads=1, interleaved_medians=medians, interleaved_ratios=ratios,
             rounds=rounds)  # fmt: skip


@pytest.fixture(scope="module", autouse=True)
def _print_interleaved():
    yield
    if INTERLEAVED:
        print("\nStatistics cost, record=batch / record=None, interleaved rounds (median):")
        for name, (ratio, rounds) in INTERLEAVED.items():
            print(f"  {name:<12} {ratio:6.3f}  ({rounds} rounds)")
    _print_rows(
        AC_INTERLEAVED,
        "A and C, rows interleaved round by round (seconds per epoch, median; goals: A fastbp"
        " / jax-scan <= 0.4, / torch <= 0.1, / limit <= 2.5; C <= 0.6, <= 0.15):",
    )
    _print_rows(
        B_INTERLEAVED,
        "B, rows interleaved round by round (seconds per epoch, median; goals: "
        "fastbp / fastest peer <= 1.0, GEMM-alone / fastbp >= 0.75):",
    )


def _print_rows(table: dict, title: str) -> None:
    """One line per entry of an interleaved table: its medians and its goal ratios."""
    if not table:
        return
    print("\n" + title)
    for name, (medians, ratios, rounds) in table.items():
        rows = ", ".join(f"{row} {sec:.3g}" for row, sec in medians.items())
        goals = ", ".join(f"{goal} {r:.3f}" for goal, r in ratios.items())
        print(f"  {name} ({rounds} rounds): {rows}; {goals}")
