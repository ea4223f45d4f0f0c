"""The statistics cost in instruction counts: record="batch" vs record=None, under callgrind.

    python benchmarks/callgrind_stats.py [--workloads A,B,C] [--kernels avx512]

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
            sys.executable, os.path.abspath(__file__), "--child", key, dtype, record, str(k),
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
    args = ap.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
