"""Two ways of running the same kernels, timed in turn: what one implementation choice
is worth.

    python benchmarks/ab.py alignment [--workload A|B|C] [--dtype float64|float32] [--rounds 7]
    python benchmarks/ab.py fused     [--workload A|B|C] [--dtype float64|float32] [--rounds 7]
    python benchmarks/ab.py prefetch  [--workload A|B|C] [--dtype float64|float32] [--rounds 7]

``alignment``: every array the compiled kernels stream through on a cache line (as
fastbp allocates them, ``fastbp._contract.aligned_zeros``) against 16 bytes past one,
NumPy's own alignment (``contract_runner(..., offset=16)``).

``fused``: each weight gradient formed inside the update (src_ext/vfused.c, the
path of mini-batches up to ``_set_fused_m_max``'s bounds: by default float64's up to
16 examples) against the BLAS product written to memory and read back by the update
loop (the bound set to 0), whatever the default for the dtype.

``prefetch``: the fused path prefetching the next mini-batch's input rows while it
updates the first layer (the default) against no prefetch (``_set_prefetch``); only
mini-batches on the fused path prefetch.

One BLAS thread unless ``--threads`` says otherwise (``--blas mkl``: oneMKL for the
large products, ``fastbp.set_blas``), the harness's data, start parameters and order,
record="batch"; the two rows run in turn within every round (``interleaved_rounds``)
and the ratio is the median over rounds of the per-round ratio; both rows' results
are checked against the reference.  Run with OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE
unset, as the rest of the suite.
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


def _with_setting(runner, setter, value):
    """The runner, with ``setter(value)`` around each run (setter returns the old
    value; a tuple is passed back unpacked)."""
    inner = runner.run

    def run():
        old = setter(value)
        try:
            inner()
        finally:
            setter(*old) if isinstance(old, tuple) else setter(old)

    runner.run = run
    return runner


def runners_for(compare, backend, p):
    """The two rows of a comparison, (slower candidate, baseline) by name."""
    if compare == "alignment":
        rows = {"aligned": 0, "+16": 16}
        return {name: contract_runner(backend, p, "batch", offset=off)
                for name, off in rows.items()}
    kernels = backend._kernels
    if compare == "prefetch":
        return {
            "prefetch": _with_setting(contract_runner(backend, p, "batch"),
                                      kernels._set_prefetch, True),
            "none": _with_setting(contract_runner(backend, p, "batch"),
                                  kernels._set_prefetch, False),
        }  # fmt: skip
    return {
        "fused": _with_setting(contract_runner(backend, p, "batch"),
                               kernels._set_fused_m_max, 1 << 30),
        "blas": _with_setting(contract_runner(backend, p, "batch"), kernels._set_fused_m_max, 0),
    }  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("compare", choices=("alignment", "fused", "prefetch"))
    ap.add_argument("--workload", default="A", choices=sorted(WORKLOADS))
    ap.add_argument("--dtype", default="float64", choices=("float64", "float32"))
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--blas", default="scipy", choices=("scipy", "mkl"))
    args = ap.parse_args(argv)
    backend = backend_or_skip("cython")
    import fastbp

    fastbp.set_blas(args.blas)
    p = problem(WORKLOADS[args.workload], args.dtype)
    runners = runners_for(args.compare, backend, p)
    with pinned_threads(args.threads):
        for r in runners.values():  # warm-up
            r.reset()
            r.run()
        times, _, rounds = interleaved_rounds(runners, rounds=args.rounds)
    for r in runners.values():
        check_fastbp(p, r.result(), r.batches, "batch")
    first, second = runners
    ratio = np.median(np.asarray(times[second]) / np.asarray(times[first]))
    print(f"{args.compare}: workload {args.workload}, {args.dtype}, {args.threads} thread(s), "
          f"BLAS {args.blas}, {rounds} rounds: median s/epoch")
    for name, ts in times.items():
        print(f"  {name:8s} {np.median(ts):.4f}")
    print(f"  {second} / {first}: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
