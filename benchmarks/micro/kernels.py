"""Time the C helpers of the compiled kernels in isolation (benchmarks/micro/kernels.c).

    python benchmarks/micro/kernels.py [--cc gcc]

Compiles ``kernels.c`` with ``src_ext/vstats.c``, ``src_ext/vhist.c`` and
``src_ext/vmath.c`` and the avx512 variant's flags (CMakeLists.txt), on the chapter's
first-layer shapes: the fused moments + GSNR sum (10 examples, 30 x 784 weights) and
the histogram counting of 300 deltas (decade and linear bins); and the vectorised tanh
and exp on 32 x 32 pre-activations (one layer of workload C); float64 and float32.
The decade tables come from the installed extension, so the bins are fastbp's own.
Needs a C compiler and an AVX-512 CPU; prints the time per call or per value (best of
5).  Not part of the suite.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(HERE, "..", "..", "src_ext")
FLAGS = ["-O3", "-march=x86-64-v4", "-mprefer-vector-width=512", "-fno-math-errno",
         "-fno-trapping-math", "-fassociative-math", "-fno-signed-zeros"]  # fmt: skip


def write_inputs(d: str) -> None:
    from fastbp import _diagnostics as dx

    k = importlib.import_module("fastbp._kernels_avx512")
    lay = k._decade_layout()
    names = ("ce_lo", "n_ce", "e2_min", "n_e2", "decade_min", "n_decades", "zero_bin",
             "ambiguous", "n_bins")  # fmt: skip (the order kernels.c reads)
    meta = np.array([lay[n] for n in names] + [0], np.intc)
    tables = {"meta": meta, "cells": k._cell_table(), "dec_tbl": k._decade_table(),
              "edges": np.asarray(dx.DECADE_EDGES, np.float64)}  # fmt: skip
    rng = np.random.default_rng(0)
    data = {
        "g": rng.uniform(-0.05, 0.05, 30 * 784),
        "a2": rng.random(10 * 784) ** 2,
        "d2": rng.random(10 * 30) ** 2,
        # deltas of a sigmoid layer: signs mixed, magnitudes over three decades
        "delta": rng.standard_normal(300) * 10.0 ** rng.uniform(-4, -1, 300),
        # pre-activations of a tanh layer: most in the linear part, some saturated
        "z": rng.standard_normal(32 * 32) * 2.0,
    }
    for name, arr in {**tables, **data}.items():
        np.ascontiguousarray(arr).tofile(os.path.join(d, f"{name}.bin"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cc", default=os.environ.get("CC", "gcc"))
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        write_inputs(d)
        exe = os.path.join(d, "kernels")
        srcs = [os.path.join(HERE, "kernels.c"), os.path.join(SRC, "vstats.c"),
                os.path.join(SRC, "vhist.c")]  # fmt: skip
        # vmath.c without reassociation, as CMakeLists.txt compiles it
        vmath = os.path.join(d, "vmath.o")
        subprocess.run([args.cc, *FLAGS, "-fno-associative-math", "-c", "-I", SRC,
                        os.path.join(SRC, "vmath.c"), "-o", vmath], check=True)  # fmt: skip
        subprocess.run([args.cc, *FLAGS, "-I", SRC, *srcs, vmath, "-o", exe, "-lm"],
                       check=True)  # fmt: skip
        return subprocess.run([exe, d], check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
