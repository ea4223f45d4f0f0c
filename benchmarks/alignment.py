"""What the placement of the kernels' arrays costs: an epoch with every array the
compiled kernels stream through on a cache line, and 16 bytes past one.

    python benchmarks/alignment.py [--workload A|B|C] [--dtype float64|float32] [--rounds 7]

fastbp allocates its parameters, velocity and workspace buffers on 64-byte boundaries
(``fastbp._contract.aligned_zeros``); NumPy's own allocations are only 16-byte
aligned, which is the ``+16`` row: the workspace made with ``offset=16`` and the
parameters and velocity placed 16 bytes past a boundary.  One BLAS thread, the
harness's data, start parameters and order, record="batch"; the two rows run in turn
within every round and the ratio is the median over rounds of the per-round ratio.
Run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, as the rest of the suite.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
from _harness import RECORDS, WORKLOADS, problem
from threadpoolctl import threadpool_limits

from fastbp import _contract as C
from fastbp._backends import cython_backend


def epoch_runner(p, offset: int):
    """A function timing one epoch with every kernel array ``offset`` bytes off a line."""
    w, layout = p.workload, p.layout
    ws = cython_backend._kernels.Workspace(layout, w.batch, offset)
    P = C.aligned_zeros(p.params0.size, p.params0.dtype, offset)
    V = C.aligned_zeros(p.params0.size, p.params0.dtype, offset)
    k = w.n_batches
    rec = np.full((k, C.N_STATS, layout.L), np.nan)
    rec_epoch = np.full((C.N_STATS, layout.L), np.nan)
    cost = np.full(k, np.nan)
    hyper = C.Hyper(eta=w.eta, lmbda_n=w.lmbda / w.n, record=RECORDS["batch"])

    def run() -> float:
        P[...] = p.params0
        hyper.t = 0
        t0 = time.perf_counter()
        ret = cython_backend.train_epoch(layout, ws, P, V, p.X, p.Y, p.order, w.batch, 0, k,
                                         hyper, rec, rec_epoch, cost)  # fmt: skip
        elapsed = time.perf_counter() - t0
        assert ret[0] == k and ret[2] == -1, ret
        return elapsed

    return run


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="A", choices=sorted(WORKLOADS))
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    p = problem(WORKLOADS[args.workload], args.dtype)
    rows = {"aligned": epoch_runner(p, 0), "+16": epoch_runner(p, 16)}
    times: dict[str, list[float]] = {name: [] for name in rows}
    with threadpool_limits(limits=1):
        for run in rows.values():
            run()  # warm-up
        for r in range(args.rounds):
            order = list(rows) if r % 2 == 0 else list(rows)[::-1]
            for name in order:
                times[name].append(rows[name]())
    ratio = np.median(np.array(times["+16"]) / np.array(times["aligned"]))
    print(f"workload {args.workload}, {args.dtype}, {args.rounds} rounds: median s/epoch")
    for name, ts in times.items():
        print(f"  {name:8s} {np.median(ts):.4f}")
    print(f"  +16 / aligned: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
