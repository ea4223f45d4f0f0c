"""What each optional statistic group costs alone, on the chapter's net.

    python benchmarks/group_costs.py [--dtype float32|float64] [--rounds 7]

One epoch of ``Network.fit`` on workload A's shapes ([784, 30, 30, 30, 30, 10],
sigmoid, cross-entropy, mini-batch 10, eta 0.1, lambda 5, 50,000 uniform random
examples), one BLAS thread, for record=None, record="batch" without groups, each
group alone, ``stats="all"``, ``stats="all"`` with ``stats_every=16``, moments and
histograms alone with ``stats_every=16``, and ``stats="all"`` on the first mini-batch
only (``stats_every`` = the epoch's mini-batches); the rows run in turn within every
round and each ratio is the median over rounds of the row's time over record=None's
in the same round (the machine's speed drifts over minutes).
The times are of the training: ``fit`` minus its validation of ``X`` and ``y``, a
fixed cost of every row alike (``_harness.validation_timer``).  Run with
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, as the rest of the suite.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _harness import Result, Runner, interleaved_rounds, validation_timer
from threadpoolctl import threadpool_limits

import fastbp
from fastbp import _diagnostics as dx
from fastbp._backends import get_backend

N, BATCH = 50_000, 10  # examples per epoch, examples per mini-batch
ROWS = [("record=None", None, None, 1), ("core", "batch", None, 1)]
ROWS += [(g, "batch", g, 1) for g in dx.GROUPS] + [("all", "batch", "all", 1)]
ROWS += [("all/16", "batch", "all", 16)]  # the groups on every 16th mini-batch
# the two costly groups on every 16th mini-batch, and every group on the first
# mini-batch only: what a sampled mini-batch costs when its data has gone cold, and
# what having the groups on costs the others
ROWS += [("moments/16", "batch", "moments", 16), ("histograms/16", "batch", "histograms", 16)]
ROWS += [("all/first", "batch", "all", -(-N // BATCH))]


def fit_row(net, start, X, y, record, stats, every) -> Runner:
    """One epoch of ``fit`` with a row's statistics; ``info["validation_s"]`` after a run."""
    info: dict = {}

    def reset():
        net.set_params(*start)
        net.reset_optimizer()
        net.reset_stats()

    def run():
        with validation_timer() as checks:
            net.fit(X, y, epochs=1, batch_size=BATCH, eta=0.1, lmbda=5.0, record=record,
                    stats=stats, stats_every=every, seed=7)  # fmt: skip
        info["validation_s"] = checks[0]

    return Runner(reset, run, lambda: Result(net.params.copy()), 0, len(X), info)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    X = rng.random((N, 784), dtype=args.dtype)
    y = rng.integers(0, 10, N)
    net = fastbp.Network([784, 30, 30, 30, 30, 10], activation="sigmoid",
                         cost="cross_entropy", init="normal_scaled", dtype=args.dtype, seed=1)
    start = ([w.copy() for w in net.weights], [b.copy() for b in net.biases])  # not views
    runners = {row[0]: fit_row(net, start, X, y, *row[1:]) for row in ROWS}
    # the compiled backend, and with it SciPy's OpenBLAS, loaded before the thread
    # limit is set: threadpoolctl limits only the libraries already loaded
    get_backend("cython")
    with threadpool_limits(limits=1):
        interleaved_rounds(runners, rounds=1)  # warm-up
        walls, infos, _ = interleaved_rounds(runners, rounds=args.rounds)
    times = {k: np.asarray(walls[k]) - [i["validation_s"] for i in infos[k]] for k in runners}
    base = times["record=None"]
    print(f"chapter net, {args.dtype}, {args.rounds} rounds: median s/epoch, ratio to record=None")
    for label, t in times.items():
        print(f"  {label:<12} {np.median(t):8.4f}   {np.median(t / base):6.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
