"""The statistics cost in instruction counts: record="batch" vs record=None, under callgrind.

    python benchmarks/callgrind_stats.py [--workloads A,B,C] [--kernels avx512]
    python benchmarks/callgrind_stats.py --diag      # issue 7's rows on the chapter's net

For each workload and dtype (A float64 and float32, B float32, C float32 and
float64 -- the issue's statistics-cost goals: record="batch" at most 1.10x (A),
1.05x (B, C) record=None) the compiled backend's ``train_epoch`` runs the first
``k`` mini-batches of the workload's shapes under ``valgrind --tool=callgrind``,
once per record mode, with collection switched on only inside the ``train_epoch``
wrapper of the extension (``--toggle-collect``), so data generation, imports and the
interpreter are not counted.  Instruction counts do not depend on the machine's load
(the same binary and inputs give the same count), so the ratio is noise-free; it is
the cost in instructions, not in time (memory stalls and vector width are not
weighed).  Valgrind runs no AVX-512: the counts are of the avx2 variant, with
OpenBLAS's Haswell kernels.  Needs valgrind (Debian: ``apt-get install
valgrind``).  Runs take a minute or two (callgrind is ~50x slower than native).

``--diag`` counts the rows of ``test_diagnostics_cost.py`` instead (record=None,
core, +per_example+noise_scale+distance, all groups, all groups every 16th
mini-batch) through the public ``Network.fit`` on the chapter's net, 320 mini-batches
of 10, both dtypes; only the compiled ``train_epoch`` calls are counted, so ``fit``'s
validation and Python bookkeeping are not.  The avx2 variant has no AVX-512 paths:
its histograms take the portable cell table and its moments the portable loop.
"""

from __future__ import annotations

import argparse
import glob
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import replace

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

#: workload -> ((dtype, ...), mini-batches counted)
PLAN = {
    "A": (("float64", "float32"), 300),
    "B": (("float32",), 3),
    "C": (("float32", "float64"), 20),
}
GOAL = {"A": 1.10, "B": 1.05, "C": 1.05}
#: issue 7's goals for the rows of test_diagnostics_cost.FASTBP_ROWS (the others: no goal)
DIAG_K = 320
DIAG_GOALS = {"pe+noise+distance": 1.25, "all": 1.6, "all-every16": 1.1}


def diag_child(dtype: str, row: str) -> None:
    """320 mini-batches of the chapter's net through ``Network.fit`` with a row's stats."""
    import numpy as np
    from test_diagnostics_cost import FASTBP_ROWS
    from threadpoolctl import threadpool_limits

    import fastbp

    rng = np.random.default_rng(0)
    n = DIAG_K * 10
    X = rng.random((n, 784)).astype(dtype)
    y = rng.integers(0, 10, n)
    net = fastbp.Network([784, 30, 30, 30, 30, 10], activation="sigmoid",
                         cost="cross_entropy", dtype=dtype, seed=1)  # fmt: skip
    # one compiled call for all the mini-batches, as a native run of this length: fit
    # sizes its calls by time (~20 ms each), and callgrind's ~50x slowdown would
    # otherwise split the run into calls of a few mini-batches, each paying its
    # per-call argument checks
    net._chunk = DIAG_K
    # loaded first (SciPy's OpenBLAS with it), so that the thread limit covers it
    from fastbp._backends import get_backend

    get_backend("cython")
    with threadpool_limits(limits=1), fastbp.use_backend("cython"):
        net.fit(X, y, epochs=1, batch_size=10, eta=0.1, lmbda=5.0, seed=7,
                **FASTBP_ROWS[row][1])  # fmt: skip


def child(key: str, dtype: str, record: str, k: int) -> None:
    """Run k mini-batches of the workload through the compiled backend (under valgrind)."""
    import _harness
    import numpy as np
    from _harness import WORKLOADS, contract_runner, problem

    from fastbp._backends import get_backend

    w = replace(WORKLOADS[key], n=k * WORKLOADS[key].batch)
    # Small data of the workload's shapes (the master data set would be slow under valgrind).
    rng = np.random.default_rng(0)
    X = rng.random((w.n, 784)).astype(dtype)
    labels = rng.integers(0, 10, w.n)
    _harness._DATA[np.dtype(dtype).name] = (X, np.eye(10, dtype=dtype)[labels], labels)
    _harness.WORKLOADS["A"] = replace(WORKLOADS["A"], n=w.n)  # dataset() sizes its master by A
    p = problem(w, dtype)
    from threadpoolctl import threadpool_limits

    runner = contract_runner(get_backend("cython"), p, record, k)
    runner.reset()
    with threadpool_limits(limits=1):
        runner.run()
    runner.result()


def count(key: str, dtype: str, record: str, kernels: str | None) -> int:
    k = PLAN[key][1]
    return _callgrind(["--child", key, dtype, record, str(k)], kernels)


def _callgrind(child_args: list, kernels: str | None) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cg.out")
        env = dict(os.environ)
        if kernels:
            env["FASTBP_KERNELS"] = kernels
        env.pop("OPENBLAS_CORETYPE", None)
        env.pop("OPENBLAS_L2_SIZE", None)
        cmd = [
            "valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
            "--collect-atstart=no", "--toggle-collect=__pyx_pw_*train_epoch",
            sys.executable, os.path.abspath(__file__), *child_args,
        ]  # fmt: skip
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        total = 0
        for path in glob.glob(out + "*"):
            with open(path) as fh:
                for line in fh:
                    m = re.match(r"(?:summary|totals):\s+(\d+)", line)
                    if m:
                        total = max(total, int(m.group(1)))
        return total


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workloads", default="A,B,C")
    ap.add_argument("--kernels", default=None, help="FASTBP_KERNELS variant (default: best)")
    ap.add_argument(
        "--child", nargs=4, metavar=("W", "DTYPE", "RECORD", "K"), help=argparse.SUPPRESS
    )
    ap.add_argument("--diag", action="store_true", help="issue 7's rows on the chapter's net")
    ap.add_argument("--diag-child", nargs=2, metavar=("DTYPE", "ROW"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.diag_child:
        diag_child(*args.diag_child)
        return 0
    if args.diag:
        return diag_main(args.kernels)
    if args.child:
        key, dtype, record, k = args.child
        child(key, dtype, record, int(k))
        return 0
    print("| workload | mini-batches | Ir record=batch | Ir record=None | batch / None | goal |")
    print("|---|---|---|---|---|---|")
    for key in args.workloads.split(","):
        dtypes, k = PLAN[key]
        for dtype in dtypes:
            batch = count(key, dtype, "batch", args.kernels)
            none = count(key, dtype, "none", args.kernels)
            ratio = batch / none
            ok = "met" if ratio <= GOAL[key] else f"missed by {ratio / GOAL[key]:.3f}x"
            cells = [f"{key} {dtype}", str(k), f"{batch:,}", f"{none:,}", f"{ratio:.3f}"]
            cells.append(f"<= {GOAL[key]:.2f} ({ok})")
            print("| " + " | ".join(cells) + " |", flush=True)
    return 0


def diag_main(kernels: str | None) -> int:
    from test_diagnostics_cost import FASTBP_ROWS

    print(f"Chapter net, {DIAG_K} mini-batches of 10, instructions in train_epoch:")
    print("| dtype | row | Ir | / record=None | goal |")
    print("|---|---|---|---|---|")
    for dtype in ("float64", "float32"):
        base = None
        for row in FASTBP_ROWS:
            goal = DIAG_GOALS.get(row)
            ir = _callgrind(["--diag-child", dtype, row], kernels)
            base = base or ir
            ratio = ir / base
            verdict = ""
            if goal is not None:
                ok = "met" if ratio <= goal else f"missed by {ratio / goal:.3f}x"
                verdict = f"<= {goal} ({ok})"
            print(f"| {dtype} | {row} | {ir:,} | {ratio:.3f} | {verdict} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
