"""What the placement of the kernels' arrays costs: an epoch with every array the
compiled kernels stream through on a cache line, and 16 bytes past one.

    python benchmarks/alignment.py [--workload A|B|C] [--dtype float64|float32] [--rounds 7]

fastbp allocates its parameters, velocity and workspace buffers on 64-byte boundaries
(``fastbp._contract.aligned_zeros``); NumPy's own allocations are only 16-byte
aligned, which is the ``+16`` row: the workspace, parameters and velocity placed 16
bytes past a boundary (``contract_runner(..., offset=16)``).  One BLAS thread, the
harness's data, start parameters and order, record="batch"; the two rows run in turn
within every round (``interleaved_rounds``) and the ratio is the median over rounds of
the per-round ratio; both rows' parameters are checked against the reference.  Run
with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, as the rest of the suite.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from _harness import (
    WORKLOADS,
    backend_or_skip,
    check_fastbp,
    contract_runner,
    interleaved_rounds,
    pinned_threads,
    problem,
)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="A", choices=sorted(WORKLOADS))
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args(argv)
    backend = backend_or_skip("cython")
    p = problem(WORKLOADS[args.workload], args.dtype)
    rows = {"aligned": 0, "+16": 16}
    runners = {name: contract_runner(backend, p, "batch", offset=off) for name, off in rows.items()}
    with pinned_threads(1):
        for r in runners.values():  # warm-up
            r.reset()
            r.run()
        times, _, rounds = interleaved_rounds(runners, rounds=args.rounds)
    for r in runners.values():
        check_fastbp(p, r.result(), r.batches, "batch")
    ratio = np.median(np.asarray(times["+16"]) / np.asarray(times["aligned"]))
    print(f"workload {args.workload}, {args.dtype}, {rounds} rounds: median s/epoch")
    for name, ts in times.items():
        print(f"  {name:8s} {np.median(ts):.4f}")
    print(f"  +16 / aligned: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
