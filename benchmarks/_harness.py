"""Shared machinery of the benchmark suite: workloads, data, runners, checks, threads.

Everything a benchmark module needs lives here so that every row -- fastbp's
backends, the public ``Network.fit`` and the peers of ``_peers.py`` -- is timed
and checked the same way:

* a :class:`Workload` is one of the issue's problems (A, B, C) or a point of a
  scaling sweep; :func:`problem` turns it into seeded data, start parameters and
  the epoch's mini-batch order, cached per (workload, dtype) and shared by all
  rows, so they all start from the same parameters and see the same order;
* a :class:`Runner` is ``reset`` (restore the start, untimed), ``run`` (the timed
  epoch, or the first ``k`` mini-batches of it) and ``result`` (what to check);
* :func:`time_runner` warms up once, picks the number of rounds from a time
  budget and times with ``benchmark.pedantic``; the result is checked *after* the
  timed rounds (each round starts from the same parameters, so the last round's
  parameters are those of one epoch);
* :func:`check_fastbp` / :func:`check_peer` compare against the NumPy reference
  backend run over the same mini-batches, so that a fast wrong implementation
  cannot win;
* :func:`pinned_threads` fixes the number of threads of every pool (threadpoolctl,
  PyTorch) and the CPU affinity of every thread of the process (the only way to
  hold JAX/XLA's thread pool to one core at run time).
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import pytest

from fastbp import _contract as C
from fastbp._backends import BACKEND_NAMES, get_backend
from fastbp._errors import BackendUnavailableError

#: ``FASTBP_BENCH_SIZE=smoke``: tiny shapes, external peers skipped, one round each.
SMOKE = os.environ.get("FASTBP_BENCH_SIZE", "full").strip().lower() == "smoke"

#: Seconds of timed work aimed at per row (rounds = budget / one epoch, clamped).
ROUND_BUDGET = float(os.environ.get("FASTBP_BENCH_BUDGET", "3.0"))
MIN_ROUNDS = int(os.environ.get("FASTBP_BENCH_MIN_ROUNDS", "3"))
MAX_ROUNDS = int(os.environ.get("FASTBP_BENCH_MAX_ROUNDS", "15"))

#: The epoch's order is ``Generator(PCG64(ORDER_SEED)).permutation(n)``: exactly the
#: first permutation ``Network.fit(..., seed=ORDER_SEED)`` draws.
ORDER_SEED = 7
DATA_SEED = 20261127


# --------------------------------------------------------------------------- workloads
@dataclass(frozen=True)
class Workload:
    """One training problem: network, hyper-parameters and epoch size.

    ``init`` is ``"normal_scaled"`` (W ~ N(0,1)/sqrt(n_in), b ~ N(0,1), network2's
    default) or ``"glorot_uniform"`` (W ~ U(-r, r), r = sqrt(6/(n_in+n_out)), b = 0).
    """

    key: str
    sizes: tuple[int, ...]
    hidden: str
    output: str
    cost: str
    init: str
    batch: int
    eta: float
    lmbda: float
    n: int
    note: str = ""

    @property
    def L(self) -> int:
        return len(self.sizes) - 1

    @property
    def activations(self) -> list[str]:
        return [self.hidden] * (self.L - 1) + [self.output]

    @property
    def n_batches(self) -> int:
        return -(-self.n // self.batch)

    def flops(self, examples: int | None = None) -> float:
        """2*m*n_in*n_out per product, 3 products per layer per mini-batch (the issue's count)."""
        examples = self.n if examples is None else examples
        return 6.0 * examples * sum(a * b for a, b in zip(self.sizes[:-1], self.sizes[1:]))

    def gemm_flops(self, examples: int | None = None) -> float:
        """The products training needs: no delta is propagated into the input layer."""
        examples = self.n if examples is None else examples
        pairs = list(zip(self.sizes[:-1], self.sizes[1:]))
        return self.flops(examples) - 2.0 * examples * pairs[0][0] * pairs[0][1]

    def shape(self) -> str:
        """``[784,30x4,10]``-style compact sizes."""
        parts, i, s = [], 0, self.sizes
        while i < len(s):
            j = i
            while j + 1 < len(s) and s[j + 1] == s[i]:
                j += 1
            parts.append(f"{s[i]}x{j - i + 1}" if j > i else str(s[i]))
            i = j + 1
        return "[" + ",".join(parts) + "]"

    def describe(self) -> str:
        return (
            f"{self.shape()} {self.hidden}/{self.output}+{self.cost}, batch {self.batch}, "
            f"eta {self.eta:g}, lambda {self.lmbda:g}, {self.n} examples"
        )


def _workloads() -> dict[str, Workload]:
    A = Workload(
        "A", (784, 30, 30, 30, 30, 10), "sigmoid", "sigmoid", "cross_entropy",
        "normal_scaled", 10, 0.1, 5.0, 50_000,
    )  # fmt: skip
    B = Workload(
        "B", (784, 1024, 1024, 1024, 1024, 10), "relu", "softmax", "log_likelihood",
        "glorot_uniform", 128, 0.01, 0.0, 20_000,
    )  # fmt: skip
    Cw = Workload(
        "C", (784,) + (32,) * 100 + (10,), "tanh", "softmax", "log_likelihood",
        "glorot_uniform", 32, 0.01, 0.0, 10_000,
    )  # fmt: skip
    if SMOKE:
        A = replace(A, n=500)
        B = replace(B, sizes=(784, 64, 64, 64, 64, 10), n=512)
        Cw = replace(Cw, sizes=(784,) + (32,) * 10 + (10,), n=320)
    return {"A": A, "B": B, "C": Cw}


WORKLOADS = _workloads()

#: dtypes and thread counts measured per workload (the issue's table).
DTYPES = {"A": ("float64", "float32"), "B": ("float32",), "C": ("float32", "float64")}
PEER_THREADS = {"A": (1,), "B": (1, 2), "C": (1,)}


def group_name(w: Workload, dtype: str, threads: int) -> str:
    t = "1 thread" if threads == 1 else f"{threads} threads"
    return f"{w.key} {dtype}, {t}: {w.describe()}"


# --------------------------------------------------------------------------- data
_DATA: dict = {}


def dataset(n: int, dtype: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The first ``n`` rows of one seeded data set: X (n, 784) in [0, 1), one-hot Y, labels.

    One master array per dtype (as many rows as the largest request so far), so all
    workloads share memory; rows are C-contiguous views.
    """
    key = np.dtype(dtype).name
    have = _DATA.get(key)
    if have is None or have[0].shape[0] < n:
        rng = np.random.Generator(np.random.PCG64(DATA_SEED))
        n_all = max(n, WORKLOADS["A"].n)
        X = rng.random((n_all, 784)).astype(key)
        labels = rng.integers(0, 10, n_all)
        Y = np.eye(10, dtype=key)[labels]
        have = _DATA[key] = (X, Y, labels)
    X, Y, labels = have
    return X[:n], Y[:n], labels[:n]


@dataclass
class Problem:
    workload: Workload
    dtype: np.dtype
    layout: C.Layout
    X: np.ndarray
    Y: np.ndarray
    labels: np.ndarray
    params0: np.ndarray
    order: np.ndarray
    cache: dict = field(default_factory=dict)  # per-problem caches of the peers (device copies)

    def weights(self, flat: np.ndarray | None = None) -> list[np.ndarray]:
        return self.layout.weight_views(self.params0 if flat is None else flat)

    def biases(self, flat: np.ndarray | None = None) -> list[np.ndarray]:
        return self.layout.bias_views(self.params0 if flat is None else flat)

    def batch_indices(self, k: int) -> list[np.ndarray]:
        m = self.workload.batch
        return [self.order[i * m : (i + 1) * m] for i in range(k)]


_PROBLEMS: dict = {}


def problem(w: Workload, dtype) -> Problem:
    """Data, start parameters and order of a workload (cached)."""
    dt = np.dtype(dtype)
    key = (w, dt.name)
    if key in _PROBLEMS:
        return _PROBLEMS[key]
    assert w.sizes[0] == 784 and w.sizes[-1] == 10
    X, Y, labels = dataset(w.n, dt.name)
    layout = C.Layout(list(w.sizes), w.activations, w.cost, dt)
    params = np.empty(layout.n_params, dtype=np.float64)
    rng = np.random.Generator(np.random.PCG64([DATA_SEED, w.L, sum(w.sizes)]))
    for W, b in zip(layout.weight_views(params), layout.bias_views(params)):
        n_out, n_in = W.shape
        if w.init == "normal_scaled":
            W[...] = rng.standard_normal(W.shape) / np.sqrt(n_in)
            b[...] = rng.standard_normal(b.shape)
        elif w.init == "glorot_uniform":
            r = np.sqrt(6.0 / (n_in + n_out))
            W[...] = rng.uniform(-r, r, W.shape)
            b[...] = 0.0
        else:  # pragma: no cover
            raise ValueError(w.init)
    order = np.random.Generator(np.random.PCG64(ORDER_SEED)).permutation(w.n).astype(np.int64)
    p = Problem(w, dt, layout, X, Y, labels, params.astype(dt), order)
    if len(_PROBLEMS) > 8:  # bound memory over a sweep
        _PROBLEMS.clear()
    _PROBLEMS[key] = p
    return p


# --------------------------------------------------------------------------- runners
@dataclass
class Result:
    """What a run leaves behind, in fastbp's conventions, for the checks."""

    params: np.ndarray  # flat, fastbp's layout
    costs: np.ndarray | None = None  # mean data cost of each mini-batch, before its update
    speeds: np.ndarray | None = None  # (k, L): ||g_b|| of each mini-batch and layer
    rec: np.ndarray | None = None  # fastbp's rec_batch (k, N_STATS, L)


@dataclass
class Runner:
    reset: Callable[[], object]
    run: Callable[[], object]
    result: Callable[[], Result]
    batches: int  # mini-batches one run processes (from the start of the epoch)
    examples: int  # examples one run processes
    info: dict = field(default_factory=dict)


RECORDS = {"batch": C.RECORD_BATCH, "epoch": C.RECORD_EPOCH, "none": C.RECORD_NONE}


def backend_or_skip(name: str):
    """The backend module, or a pytest skip with fastbp's own reason."""
    try:
        return get_backend(name)
    except BackendUnavailableError as exc:
        pytest.skip(f"fastbp backend {name!r} unavailable: {exc}")


def backend_detail(name: str) -> str:
    from fastbp import backends

    return backends()[name].detail


def contract_runner(
    backend, p: Problem, record: str, k: int | None = None, offset: int = 0
) -> Runner:
    """Mini-batches ``0 .. k-1`` of the epoch through the backend contract's ``train_epoch``.

    The parameters, velocity and workspace start on cache lines, as ``Network``'s do
    (``fastbp._contract.aligned_zeros``), or ``offset`` bytes past one (the compiled
    backend only: ``benchmarks/ab.py alignment``).
    """
    w, layout = p.workload, p.layout
    k = w.n_batches if k is None else k
    if offset:
        ws = backend.make_workspace(layout, w.batch, offset)
    else:
        ws = backend.make_workspace(layout, w.batch)
    velocity = C.aligned_zeros(p.params0.size, p.params0.dtype, offset)
    mode = RECORDS[record]
    rec_batch = np.full((k if mode == C.RECORD_BATCH else 0, C.N_STATS, layout.L), np.nan)
    rec_epoch = np.full((C.N_STATS, layout.L), np.nan)
    batch_cost = np.full(k, np.nan)
    work = C.aligned_zeros(p.params0.size, p.params0.dtype, offset)
    work[...] = p.params0
    hyper = C.Hyper(eta=w.eta, lmbda_n=w.lmbda / w.n, record=mode)
    out = {}

    def reset():
        work[...] = p.params0
        hyper.t = 0
        return (), {}

    def run():
        out["ret"] = backend.train_epoch(
            layout, ws, work, velocity, p.X, p.Y, p.order, w.batch, 0, k, hyper,
            rec_batch, rec_epoch, batch_cost,
        )  # fmt: skip

    def result():
        t, n_skipped, fault_batch, fault_layer, fault_phase = out["ret"]
        assert fault_batch == -1, f"non-finite value in mini-batch {fault_batch}"
        assert t == k and n_skipped == 0
        return Result(
            work.copy(),
            costs=batch_cost.copy(),
            speeds=rec_batch[:, C.S_SPEED].copy() if mode == C.RECORD_BATCH else None,
            rec=rec_batch.copy() if mode == C.RECORD_BATCH else None,
        )

    return Runner(reset, run, result, k, min(k * w.batch, w.n))


def fit_runner(p: Problem, record: str) -> Runner:
    """One epoch through the public ``Network.fit`` (validation and one-hot included)."""
    import fastbp

    w = p.workload
    net = fastbp.Network(
        list(w.sizes), activation=w.hidden, output=w.output, cost=w.cost, dtype=p.dtype.name
    )
    weights = [W.copy() for W in p.weights()]
    biases = [b.copy() for b in p.biases()]
    out = {}

    def reset():
        net.set_params(weights, biases)
        net.reset_optimizer()
        return (), {}

    def run():
        out["h"] = net.fit(
            p.X, p.labels, epochs=1, batch_size=w.batch, eta=w.eta, lmbda=w.lmbda,
            record=None if record == "none" else record, seed=ORDER_SEED,
        )  # fmt: skip

    def result():
        h = out["h"]
        speeds = np.asarray(h.batch["speed"]) if record == "batch" else None
        return Result(net.params.copy(), speeds=speeds)

    return Runner(reset, run, result, w.n_batches, w.n)


# --------------------------------------------------------------------------- reference
_REFERENCE: dict = {}


def reference(p: Problem, k: int) -> Result:
    """The NumPy reference backend over mini-batches ``0 .. k-1``, record="batch" (cached)."""
    key = (p.workload, p.dtype.name, k)
    if key not in _REFERENCE:
        if len(_REFERENCE) > 8:
            _REFERENCE.clear()
        r = contract_runner(get_backend("numpy"), p, "batch", k)
        r.reset()
        from threadpoolctl import threadpool_limits

        with threadpool_limits(limits=1):
            r.run()
        _REFERENCE[key] = r.result()
    return _REFERENCE[key]


def param_error(p: Problem, got: np.ndarray, want: np.ndarray) -> float:
    """||got - want|| / ||want - start||: the error relative to how far training moved.

    A wrong kernel (a missing decay, a wrong learning rate, a wrong derivative) is off
    by a sizeable fraction of the whole move; round-off over an epoch is not.
    """
    start = p.params0.astype(np.float64)
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    moved = np.linalg.norm(want - start)
    assert moved > 0, "training did not move the parameters: nothing is checked"
    return float(np.linalg.norm(got - want) / moved)


#: Largest accepted :func:`param_error` after the timed run, per dtype.  The float64
#: rows are the strict check (round-off is ~1e-14 of the move over an epoch).
TOL = {"float64": 1e-6, "float32": 1e-3}
#: float32 only: round-off grows chaotically (a ReLU or tanh unit of one example
#: switches on in one implementation and off in another, then the trajectories
#: part), so two correct float32 implementations of B end 0.13 of the move apart
#: after an epoch and up to 4e-3 after 3 mini-batches (PyTorch, JAX vs NumPy, measured).
#: Such a drift is accepted up to TOL_F32_EPOCH when the same implementation, re-run
#: over the first K_SHORT mini-batches, is within TOL_F32_SHORT of the reference.  The
#: same code runs in float64, where it must meet TOL["float64"].
TOL_F32_EPOCH = 0.5
#: Absolute tolerance of statistics: below float64's normal range (2.2e-308).
DENORMAL = 1e-300
TOL_F32_SHORT = 2e-2
K_SHORT = 3


def _check_params(p: Problem, got: np.ndarray, k: int, rerun: Callable[[int], Result]) -> dict:
    ref = reference(p, k)
    err = param_error(p, got, ref.params)
    out = {"param_error": err}
    if err <= TOL[p.dtype.name]:
        return out
    assert p.dtype == np.float32, f"parameters off the reference by {err:.3g} of the move"
    assert err <= TOL_F32_EPOCH, f"float32 parameters off the reference by {err:.3g} of the move"
    k_short = min(K_SHORT, k)
    err_short = param_error(p, rerun(k_short).params, reference(p, k_short).params)
    assert err_short <= TOL_F32_SHORT, (
        f"float32 parameters off the reference by {err_short:.3g} of the move after "
        f"{k_short} mini-batches (and {err:.3g} after {k})"
    )
    out["param_error_short"] = err_short
    return out


def run_once(runner: Runner) -> Result:
    """Reset, run (untimed, one BLAS thread) and return the result."""
    from threadpoolctl import threadpool_limits

    runner.reset()
    with threadpool_limits(limits=1):
        runner.run()
    return runner.result()


def check_fastbp(
    p: Problem, res: Result, k: int, record: str, rerun: Callable[[int], Result] | None = None
) -> dict:
    """A fastbp backend's result against the reference over the same mini-batches.

    ``rerun(k)`` runs the same implementation over the first ``k`` mini-batches
    (default: the compiled backend through the contract).
    """
    if rerun is None:
        rerun = lambda kk: run_once(contract_runner(get_backend("cython"), p, record, kk))  # noqa: E731
    out = _check_params(p, res.params, k, rerun)
    ref = reference(p, k)
    f64 = p.dtype == np.float64
    if res.costs is not None:
        np.testing.assert_allclose(res.costs[0], ref.costs[0], rtol=1e-10 if f64 else 1e-4)
        np.testing.assert_allclose(res.costs, ref.costs, rtol=1e-6 if f64 else 5e-2)
    # Statistics of very deep nets reach the subnormal range (speeds of 1e-320 at layer 34
    # of 500), where float64 keeps fewer digits: DENORMAL absolute tolerance there.
    if res.rec is not None:
        np.testing.assert_allclose(
            res.rec[0], ref.rec[0], rtol=1e-9 if f64 else 1e-3, atol=DENORMAL
        )
    if res.speeds is not None:
        np.testing.assert_allclose(
            res.speeds[0], ref.speeds[0], rtol=1e-9 if f64 else 1e-3, atol=DENORMAL
        )
    return out


def check_peer(p: Problem, res: Result, k: int, rerun: Callable[[int], Result]) -> dict:
    """A peer's result against the reference from the same start and order."""
    out = _check_params(p, res.params, k, rerun)
    ref = reference(p, k)
    f64 = p.dtype == np.float64
    if res.costs is not None:
        np.testing.assert_allclose(res.costs[0], ref.costs[0], rtol=1e-9 if f64 else 1e-4)
        np.testing.assert_allclose(res.costs, ref.costs, rtol=1e-5 if f64 else 5e-2)
    if res.speeds is not None:
        np.testing.assert_allclose(
            res.speeds[0], ref.speeds[0], rtol=1e-8 if f64 else 1e-3, atol=DENORMAL
        )
    return out


# --------------------------------------------------------------------------- interleaved
def interleaved_rounds(
    runners: dict, benchmark=None, rounds: int | None = None, budget: float = ROUND_BUDGET,
    max_rounds: int = MAX_ROUNDS,
) -> tuple[dict, dict, int]:
    """Time the runners in turn within every round, for ratios that the drift of a shared
    machine's speed over minutes does not bias.

    Round r runs every runner once (after its reset), starting with the r-th (mod their
    number).  Returns ``(walls, infos, rounds)``: per runner, the seconds of each
    counted run and a copy of its ``info`` after the run (what a run reports about
    itself, e.g. ``validation_s``).  Unless ``rounds`` is given, a warm-up round, not
    counted, sizes them to about ``budget`` seconds (between MIN_ROUNDS and
    ``max_rounds``); one round at smoke size or when ``benchmark`` has timing
    disabled.  With a pytest-benchmark fixture the rounds run through its pedantic mode.
    """
    names = list(runners)
    walls: dict = {name: [] for name in names}
    infos: dict = {name: [] for name in names}
    turn = [0]

    def one_round():
        r = turn[0]
        turn[0] += 1
        for i in range(len(names)):
            name = names[(r + i) % len(names)]
            runners[name].reset()
            t0 = time.perf_counter()
            runners[name].run()
            walls[name].append(time.perf_counter() - t0)
            infos[name].append(dict(runners[name].info))

    if rounds is None:
        if SMOKE or (benchmark is not None and benchmark.disabled):
            rounds = 1
        else:
            one_round()  # warm-up, not counted
            warm = sum(w.pop() for w in walls.values())
            for i in infos.values():
                i.pop()
            turn[0] = 0
            rounds = max(MIN_ROUNDS, min(max_rounds, math.ceil(budget / max(warm, 1e-9))))
    if benchmark is None:
        for _ in range(rounds):
            one_round()
    else:
        benchmark.pedantic(one_round, rounds=rounds, iterations=1)
    return walls, infos, rounds


# --------------------------------------------------------------------------- timing
@contextlib.contextmanager
def validation_timer() -> Iterator[list]:
    """Seconds ``Network.fit`` spends validating ``X`` and ``y`` inside the block.

    Yields a one-element list holding the running total.  ``fit`` checks the whole of
    ``X`` for NaN/Inf on every call (a pass over 157 MB for workload A in float32):
    a fixed cost of every row alike, which would dilute a ratio of training times, so
    the statistics-cost rows subtract it.
    """
    from fastbp import _network

    spent = [0.0]
    originals = {name: getattr(_network, name) for name in ("check_X", "check_targets")}

    def timed(fn):
        def wrapper(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - t0

        return wrapper

    for name, fn in originals.items():
        setattr(_network, name, timed(fn))
    try:
        yield spent
    finally:
        for name, fn in originals.items():
            setattr(_network, name, fn)


# --------------------------------------------------------------------------- threads
def _thread_ids() -> list[int]:
    try:
        return [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:  # pragma: no cover - not Linux
        return [0]


@contextlib.contextmanager
def pinned_threads(n: int) -> Iterator[None]:
    """Run with ``n`` threads: BLAS/OpenMP pools (threadpoolctl), PyTorch, CPU affinity.

    The affinity of every existing thread of the process is set to the first ``n``
    allowed CPUs (threads started inside inherit it) and restored afterwards; this
    is what holds JAX's XLA thread pool, which cannot be resized at run time, to
    ``n`` cores.
    """
    from threadpoolctl import threadpool_limits

    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < n:
        pytest.skip(f"{n} threads asked for, this process may use {len(allowed)} CPU(s)")
    mask = set(allowed[:n])

    def set_all(cpus):
        for tid in _thread_ids():
            with contextlib.suppress(OSError):
                os.sched_setaffinity(tid, cpus)

    torch = sys.modules.get("torch")
    torch_threads = torch.get_num_threads() if torch is not None else None
    if not SMOKE:  # smoke size times nothing: leave the scheduler free
        set_all(mask)
    if SMOKE:
        # Nothing is timed at smoke size: one thread everywhere, because OpenBLAS's
        # hand-offs between threads cost seconds per row on a loaded machine.
        n = 1
    try:
        with threadpool_limits(limits=n):
            if torch is not None:
                torch.set_num_threads(n)
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(torch_threads)
        if not SMOKE:
            set_all(set(allowed))


# --------------------------------------------------------------------------- timing
def time_runner(benchmark, runner: Runner, threads: int = 1, budget: float | None = None) -> None:
    """Warm up once, then time ``runner.run`` over enough rounds (each after ``reset``).

    The number of rounds is ``budget / (warm-up time)`` clamped to
    [``MIN_ROUNDS``, ``MAX_ROUNDS``]; at smoke size one round and no warm-up.
    """
    budget = ROUND_BUDGET if budget is None else budget
    with pinned_threads(threads):
        if SMOKE or benchmark.disabled:
            rounds = 1
        else:
            runner.reset()
            t0 = time.perf_counter()
            runner.run()
            dt = time.perf_counter() - t0
            rounds = max(MIN_ROUNDS, min(MAX_ROUNDS, math.ceil(budget / max(dt, 1e-9))))
        benchmark.pedantic(runner.run, setup=runner.reset, rounds=rounds, iterations=1)


def annotate(benchmark, p: Problem, runner: Runner, impl: str, **extra) -> None:
    """extra_info every row carries: what ran, and the factor to a whole epoch."""
    w = p.workload
    benchmark.extra_info.update(
        workload=w.key,
        dtype=p.dtype.name,
        impl=impl,
        sizes=w.shape(),
        batch=w.batch,
        n=w.n,
        batches_timed=runner.batches,
        examples_timed=runner.examples,
        # seconds per epoch = median * scale (1 when the whole epoch is timed)
        scale=w.n / runner.examples,
        flops=w.flops(),
        **runner.info,
        **extra,
    )


# --------------------------------------------------------------------------- BLAS
def blas_report() -> str:
    """Which BLAS libraries and kernels are loaded (threadpoolctl), one per entry."""
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


def scipy_blas_kernel() -> str:
    """Architecture threadpoolctl reports for SciPy's OpenBLAS (the one fastbp calls)."""
    import scipy.linalg  # noqa: F401 - loads SciPy's OpenBLAS
    from threadpoolctl import threadpool_info

    for info in threadpool_info():
        if "scipy.libs" in info.get("filepath", "") or "scipy_openblas-" in info.get(
            "filepath", ""
        ):
            return f"{info.get('internal_api')} {info.get('version')} {info.get('architecture')}"
    return "unknown"


def gemm_into(gemm, Cm: np.ndarray, A: np.ndarray, B: np.ndarray, ta=False, tb=False, beta=0.0):
    """``Cm = op(A) @ op(B) (+ beta*Cm)`` with SciPy's BLAS, all arrays C-contiguous, no copy.

    SciPy's wrappers are Fortran-ordered, so the row-major product is computed as
    ``Cm.T = op(B).T @ op(A).T`` on the transposed (F-contiguous) views.
    """
    gemm(1.0, B.T, A.T, beta=beta, c=Cm.T, trans_a=int(tb), trans_b=int(ta), overwrite_c=1)


def peak_runner(dtype, n: int) -> tuple[Runner, np.ndarray, np.ndarray, np.ndarray]:
    """The large product of the FLOP-bound limit: ``C = A @ B``, n x n, SciPy's BLAS,
    on preallocated arrays.  Returns the runner and A, B, C (for a check)."""
    rng = np.random.default_rng(0)
    A = rng.random((n, n)).astype(dtype)
    B = rng.random((n, n)).astype(dtype)
    Cm = np.empty((n, n), dtype=dtype)
    gemm = blas_gemm(dtype)
    runner = Runner(lambda: ((), {}), lambda: gemm_into(gemm, Cm, A, B), lambda: None, 1, n)
    return runner, A, B, Cm


def blas_gemm(dtype):
    from scipy.linalg import blas

    return blas.dgemm if np.dtype(dtype) == np.float64 else blas.sgemm


def mkl_or_reason() -> str | None:
    """None if fastbp.set_blas("mkl") can be used, else the reason (for a skip)."""
    from fastbp import _blas

    try:
        _blas._load_mkl()
    except (ImportError, OSError, RuntimeError) as exc:
        return str(exc)
    return None


def with_blas(runner: Runner, name: str) -> Runner:
    """The runner with fastbp's large products on BLAS library ``name`` (fastbp.set_blas)
    while it runs, and SciPy's again after: interleaved with other rows, it leaves them
    SciPy's."""
    import fastbp

    def run():
        old = fastbp.set_blas(name)
        try:
            return runner.run()
        finally:
            fastbp.set_blas(old)

    return replace(runner, run=run, info={**runner.info, "blas": name})


def mkl_gemm(dtype):
    """oneMKL's Fortran dgemm_/sgemm_ (the functions fastbp.set_blas("mkl") installs)."""
    from fastbp import _blas

    lib = _blas._load_mkl()["lib"]
    return lib.dgemm_ if np.dtype(dtype) == np.float64 else lib.sgemm_


def fortran_gemm(fn, dtype):
    """A caller of the Fortran ?gemm_ ``fn`` (32-bit integers) through ctypes:
    ``call(ta, tb, M, N, K, A, lda, B, ldb, C, ldc)``, C = op(A) op(B) column-major,
    on the arrays' data (no copy, no check)."""
    import ctypes

    scalar = ctypes.c_double if np.dtype(dtype) == np.float64 else ctypes.c_float
    one, zero = scalar(1.0), scalar(0.0)

    def call(ta, tb, M, N, K, A, lda, B, ldb, C, ldc):
        ints = [ctypes.c_int(v) for v in (M, N, K, lda, ldb, ldc)]
        fn(ta, tb, *(ctypes.byref(i) for i in ints[:3]), ctypes.byref(one),
           ctypes.c_void_p(A.ctypes.data), ctypes.byref(ints[3]), ctypes.c_void_p(B.ctypes.data),
           ctypes.byref(ints[4]), ctypes.byref(zero), ctypes.c_void_p(C.ctypes.data),
           ctypes.byref(ints[5]))  # fmt: skip

    return call


def product_into(blas: str, dtype):
    """``into(Cm, A, B, ta=False, tb=False)``: ``Cm = op(A) @ op(B)`` on C-contiguous
    rows, no copy, through SciPy's BLAS (``blas="scipy"``, :func:`gemm_into`) or oneMKL
    (``"mkl"``: the same column-major transposes through :func:`fortran_gemm`)."""
    if blas != "mkl":
        gemm = blas_gemm(dtype)
        return lambda Cm, A, B, ta=False, tb=False: gemm_into(gemm, Cm, A, B, ta, tb)
    call = fortran_gemm(mkl_gemm(dtype), dtype)

    def into(Cm, A, B, ta=False, tb=False):
        k = A.shape[0] if ta else A.shape[1]
        call(b"T" if tb else b"N", b"T" if ta else b"N", Cm.shape[1], Cm.shape[0], k,
             B, B.shape[1], A, A.shape[1], Cm, Cm.shape[1])  # fmt: skip

    return into


def is_installed(module: str) -> str | None:
    """None if ``module`` imports, else the reason (for a skip)."""
    import importlib

    if SMOKE:
        return "external peers are skipped at FASTBP_BENCH_SIZE=smoke"
    try:
        importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken install
        return f"{module} not installed ({type(exc).__name__}: {exc}); pip install '.[bench]'"
    return None


__all__ = [
    "BACKEND_NAMES",
    "DTYPES",
    "PEER_THREADS",
    "SMOKE",
    "WORKLOADS",
    "Problem",
    "Result",
    "Runner",
    "Workload",
    "annotate",
    "backend_detail",
    "backend_or_skip",
    "blas_gemm",
    "blas_report",
    "check_fastbp",
    "check_peer",
    "run_once",
    "contract_runner",
    "dataset",
    "fit_runner",
    "gemm_into",
    "group_name",
    "is_installed",
    "fortran_gemm",
    "mkl_gemm",
    "product_into",
    "mkl_or_reason",
    "with_blas",
    "pinned_threads",
    "problem",
    "reference",
    "scipy_blas_kernel",
    "time_runner",
]
