"""Time single matrix products with SciPy's OpenBLAS and with oneMKL, side by side.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/blas_compare.py

The products are the compiled kernels' own calls (column-major BLAS, the transposes
of src_ext/_kernels.pyx: forward ``gemm('T','N')``, backward ``('N','N')``, weight
gradient ``('N','T')``) at the shapes of workloads A, B and C, then a sweep of sizes
around ``fastbp.set_blas``'s ``min_size`` (2**20 multiply-adds).  Both libraries are
called the same way (ctypes, through their Fortran symbols: SciPy's OpenBLAS exports
``scipy_dgemm_``), one thread, best of 5 repetitions; the ratio is OpenBLAS's time over
oneMKL's (> 1: oneMKL faster).  The calls' own overhead (a few microseconds) is in
both columns: read the small products' ratios with that in mind.
"""

from __future__ import annotations

import argparse
import ctypes
import glob
import os
import sys
import time

import numpy as np


def scipy_openblas():
    import scipy

    for path in glob.glob(os.path.join(os.path.dirname(scipy.__file__), os.pardir,
                                       "scipy.libs", "libscipy_openblas*")):  # fmt: skip
        lib = ctypes.CDLL(path)
        if hasattr(lib, "scipy_dgemm_"):
            return lib, "scipy_"
    raise SystemExit("this SciPy does not carry its own OpenBLAS with exported symbols")


def kernel_products(n_in, n_out, m):
    """fastbp's three products of one layer: (label, ta, tb, M, N, K, lda, ldb, ldc)."""
    return [
        (f"forward  {m} x {n_in} -> {n_out}", b"T", b"N", n_out, m, n_in, n_in, n_in, n_out),
        (f"backward {m} x {n_out} -> {n_in}", b"N", b"N", n_in, m, n_out, n_in, n_out, n_in),
        (f"gradient {n_out} x {n_in} over {m}", b"N", b"T", n_in, n_out, m, n_in, n_out, n_in),
    ]


CASES = {
    "A (10 x 784 -> 30)": kernel_products(784, 30, 10),
    "B (128 x 1024 -> 1024)": kernel_products(1024, 1024, 128),
    "B's first layer (128 x 784 -> 1024)": kernel_products(784, 1024, 128),
    "C (32 x 32 -> 32)": kernel_products(32, 32, 32),
    "C's first layer (32 x 784 -> 32)": kernel_products(784, 32, 32),
    "sweep": [(f"forward  {m} x {n} -> {n}", b"T", b"N", n, m, n, n, n, n)
              for m, n in ((32, 128), (64, 128), (64, 256), (128, 256), (128, 512),
                           (10, 1024), (32, 1024))],  # fmt: skip
}


def best_time(call, args, macs):
    reps = max(3, int(2e7 / macs))
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps):
            call(*args)
        best = min(best, (time.perf_counter() - t) / reps)
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dtype", choices=("float32", "float64", "both"), default="both")
    args = ap.parse_args(argv)
    from _harness import fortran_gemm, mkl_gemm
    from threadpoolctl import threadpool_info, threadpool_limits

    from fastbp import _blas

    ob, prefix = scipy_openblas()
    mkl = _blas._load_mkl()
    dtypes = ("float32", "float64") if args.dtype == "both" else (args.dtype,)
    rng = np.random.default_rng(0)
    with threadpool_limits(limits=1):
        for info in threadpool_info():
            print(f"# {info.get('internal_api')} {info.get('version')} "
                  f"{info.get('architecture') or info.get('threading_layer')}, "
                  f"{info.get('num_threads')} thread(s): {info.get('filepath')}")  # fmt: skip
        print(f"# oneMKL: {mkl['version']}")
        for dtype in map(np.dtype, dtypes):
            ch = "d" if dtype == np.float64 else "s"
            o = fortran_gemm(getattr(ob, f"{prefix}{ch}gemm_"), dtype)
            k = fortran_gemm(mkl_gemm(dtype), dtype)
            print(f"\n{dtype}: microseconds per product (OpenBLAS, oneMKL, ratio)")
            for group, products in CASES.items():
                print(f"  {group}")
                for label, ta, tb, M, N, K, lda, ldb, ldc in products:
                    A = rng.random((M * K + lda,)).astype(dtype)
                    B = rng.random((K * N + ldb,)).astype(dtype)
                    C1 = np.zeros(ldc * N, dtype)
                    C2 = np.zeros(ldc * N, dtype)
                    argv1 = (ta, tb, M, N, K, A, lda, B, ldb, C1, ldc)
                    argv2 = (ta, tb, M, N, K, A, lda, B, ldb, C2, ldc)
                    o(*argv1)
                    k(*argv2)
                    scale = np.abs(C1).max()
                    if not np.allclose(C1, C2, rtol=1e-3, atol=1e-4 * scale):
                        raise SystemExit(f"{label}: the two libraries disagree")
                    t1, t2 = best_time(o, argv1, M * N * K), best_time(k, argv2, M * N * K)
                    print(f"    {label:34s} {M * N * K:>12,} MACs  {t1 * 1e6:9.1f}  "
                          f"{t2 * 1e6:9.1f}  {t1 / t2:5.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
