"""Run epochs of a workload through the compiled backend, for a profiler to watch.

    perf record -F 10000 -o epoch.data python benchmarks/profile_epoch.py C float64 --epochs 30
    perf report -i epoch.data -n --no-children --sort symbol

One BLAS thread (``--blas mkl``: oneMKL for the large products), the harness's data,
start parameters and order (workload A, B or C), record="batch" unless ``--record``
says otherwise; nothing is timed or checked here.  Compare two builds by the sample
counts of a function (``-n``): the work is the same.
"""

from __future__ import annotations

import argparse
import sys

from _harness import WORKLOADS, contract_runner, problem
from threadpoolctl import threadpool_limits

from fastbp._backends import get_backend


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("key", choices=sorted(WORKLOADS))
    ap.add_argument("dtype", choices=("float32", "float64"))
    ap.add_argument("--record", default="batch", choices=("batch", "epoch", "none"))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--blas", default="scipy", choices=("scipy", "mkl"),
                    help="fastbp.set_blas's choice for the large products")  # fmt: skip
    args = ap.parse_args(argv)
    import fastbp

    fastbp.set_blas(args.blas)
    runner = contract_runner(get_backend("cython"), problem(WORKLOADS[args.key], args.dtype),
                             args.record)
    with threadpool_limits(limits=1):
        for _ in range(args.epochs):
            runner.reset()
            runner.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
