"""Large-GEMM throughput with the BLAS fastbp calls (SciPy's OpenBLAS), same run, same build.

``C = A @ B`` with n x n matrices (n = 2048; 256 at smoke size) through
``scipy.linalg.blas.dgemm`` / ``sgemm`` on preallocated arrays, 1 and 2 threads.
The FLOP-bound limit of a workload is its flop count (2*m*n_in*n_out per product,
3 products per layer per mini-batch) divided by the throughput measured here, for
the same dtype and thread count (benchmarks/_report.py).
"""

from __future__ import annotations

import numpy as np
import pytest
from _harness import SMOKE, peak_runner, scipy_blas_kernel, time_runner

N = 256 if SMOKE else 2048


@pytest.mark.parametrize("threads", [1, 2], ids=["1t", "2t"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gemm_peak(benchmark, dtype, threads):
    runner, A, B, Cm = peak_runner(dtype, N)
    benchmark.group = f"peak: {N}^3 GEMM with SciPy's OpenBLAS"
    time_runner(benchmark, runner, threads, budget=2.0)
    # The product is right (a few rows, against NumPy's own BLAS in float64).
    want = A[:4].astype(np.float64) @ B.astype(np.float64)
    np.testing.assert_allclose(Cm[:4], want, rtol=1e-4 if dtype == "float32" else 1e-12)
    benchmark.extra_info.update(
        impl="gemm", dtype=dtype, threads=threads, n=N, flops=2.0 * N**3, scale=1.0,
        blas=scipy_blas_kernel(),
    )  # fmt: skip
