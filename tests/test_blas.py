"""fastbp.set_blas: the BLAS library of the compiled backend's large products.

The routing itself (a product of at least ``min_size`` multiply-adds to the other
library's gemm, the smaller ones to SciPy's) is tested twice: with SciPy's own
OpenBLAS reached through its exported symbols (so the alternative path gives the
same bits as the default one), and with oneMKL when it is installed (the test extra
installs it on x86-64), whose verbose mode shows which products it computed.
"""

from __future__ import annotations

import ctypes
import glob
import os
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp import _blas

try:
    from fastbp._backends import cython_backend as _cb
except ImportError:  # the compiled backend is not built
    _cb = None

needs_kernels = pytest.mark.skipif(_cb is None, reason="compiled backend not built")


@pytest.fixture(autouse=True)
def _restore():
    yield
    fastbp.set_blas("scipy", min_size=_blas.DEFAULT_MIN_SIZE)


def _mkl_or_none():
    try:
        return _blas._load_mkl()
    except (ImportError, OSError):
        return None


def _problem(dtype="float64", n=256, sizes=(64, 96, 80, 10)):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((n, sizes[0])).astype(dtype)
    y = rng.integers(0, sizes[-1], n)
    return sizes, X, y


def _train(sizes, X, y, dtype="float64", batch=64):
    net = fastbp.Network(list(sizes), activation="tanh", output="softmax", cost="log_likelihood",
                         init="glorot_uniform", dtype=dtype, seed=3)  # fmt: skip
    hist = net.fit(X, y, epochs=2, batch_size=batch, eta=0.05, momentum=0.5,
                   record="batch", seed=1)  # fmt: skip
    return net.params.copy(), hist


# ------------------------------------------------------------------ the public API
@pytest.mark.parametrize("name", ["openblas", "", None, 3, "mkl2"])
def test_unknown_name_is_refused(name):
    with pytest.raises(ValueError, match=r"set_blas: name must be one of 'scipy', 'mkl'"):
        fastbp.set_blas(name)
    assert fastbp.blas_info()["name"] == "scipy"


@pytest.mark.parametrize("size", [0, -5, 1.5, True, "big"])
def test_min_size_must_be_a_positive_integer(size):
    with pytest.raises(ValueError, match="min_size must be a positive integer"):
        fastbp.set_blas("scipy", min_size=size)
    assert fastbp.blas_info()["min_size"] == _blas.DEFAULT_MIN_SIZE


def test_missing_mkl_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setattr(_blas, "_mkl", {})
    monkeypatch.setenv(_blas.MKL_PATH_VAR, str(tmp_path / "libmkl_rt.so.3"))
    with pytest.raises(ImportError, match=r'pip install "fastbp\[mkl\]"') as info:
        fastbp.set_blas("mkl")
    assert str(tmp_path) in str(info.value)
    assert fastbp.blas_info() == {"name": "scipy", "min_size": _blas.DEFAULT_MIN_SIZE}


def test_default_is_scipy_and_reported():
    assert fastbp.blas_info() == {"name": "scipy", "min_size": _blas.DEFAULT_MIN_SIZE}
    if _cb is not None:
        assert fastbp.backends()["cython"].detail.endswith("BLAS: SciPy's")


# ------------------------------------------------------- the routing inside the kernels
def _scipy_openblas_gemms():
    """Addresses of dgemm/sgemm of the OpenBLAS SciPy's wheel carries (the library
    behind scipy.linalg.cython_blas), through its exported Fortran symbols."""
    import scipy

    libs = glob.glob(os.path.join(os.path.dirname(scipy.__file__), os.pardir, "scipy.libs",
                                  "libscipy_openblas*"))  # fmt: skip
    for path in libs:
        lib = ctypes.CDLL(path)
        try:
            return tuple(ctypes.cast(getattr(lib, f), ctypes.c_void_p).value
                         for f in ("scipy_dgemm_", "scipy_sgemm_"))  # fmt: skip
        except AttributeError:
            continue
    return None


@needs_kernels
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_alternative_path_with_the_same_library_gives_the_same_bits(dtype):
    addr = _scipy_openblas_gemms()
    if addr is None:
        pytest.skip("this SciPy does not carry its own OpenBLAS with exported symbols")
    sizes, X, y = _problem(dtype)
    want, hist_want = _train(sizes, X, y, dtype)
    old = _cb._kernels._set_gemm(*addr, 1)  # every product through the pointers
    try:
        got, hist_got = _train(sizes, X, y, dtype)
    finally:
        _cb._kernels._set_gemm(*old)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(hist_got.batch["speed"], hist_want.batch["speed"])


@needs_kernels
def test_set_gemm_refuses_half_a_pair():
    with pytest.raises(ValueError, match="both addresses or neither"):
        _cb._kernels._set_gemm(1, 0, 0)
    with pytest.raises(ValueError, match="min_macs must be >= 0"):
        _cb._kernels._set_gemm(0, 0, -1)


# ------------------------------------------------------------------------ oneMKL
needs_mkl = pytest.mark.skipif(
    _cb is None or _mkl_or_none() is None,
    reason='oneMKL not installed (pip install "fastbp[mkl]")',
)


def _verbose_lines(capfd, fn):
    """Run fn with oneMKL's verbose mode on; the gemm calls it reports."""
    lib = _blas._load_mkl()["lib"]
    capfd.readouterr()
    old = lib.MKL_Verbose(1)
    try:
        out = fn()
    finally:
        lib.MKL_Verbose(max(old, 0))
    text = capfd.readouterr().out
    return out, [ln for ln in text.splitlines() if "GEMM" in ln.upper() and "MKL_VERBOSE" in ln]


@needs_mkl
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_mkl_trains_as_openblas_does(dtype, capfd):
    sizes, X, y = _problem(dtype)
    want, hist_want = _train(sizes, X, y, dtype)
    assert fastbp.set_blas("mkl") == "scipy"
    info = fastbp.blas_info()
    assert info["name"] == "mkl" and "Math Kernel Library" in info["version"]
    assert "oneMKL for products of >= 1,048,576" in fastbp.backends()["cython"].detail
    # 64 x 96 x 80 = 491,520 multiply-adds per product at most: all below the default
    (got, _), lines = _verbose_lines(capfd, lambda: _train(sizes, X, y, dtype))
    assert lines == []
    np.testing.assert_array_equal(got, want)
    # every product of at least 64 x 64 x 10 (the output layer's) to oneMKL
    fastbp.set_blas("mkl", min_size=64 * 64 * 10)
    (got, hist_got), lines = _verbose_lines(capfd, lambda: _train(sizes, X, y, dtype))
    kind = "DGEMM" if dtype == "float64" else "SGEMM"
    assert lines and all(kind in ln.upper() for ln in lines)
    # 8 mini-batches: 3 forward, 3 gradient and 2 backward products each, and the
    # forward passes of the epochs' ends (record="batch" evaluates nothing more)
    assert len(lines) >= 8 * 8
    rtol = 1e-10 if dtype == "float64" else 2e-4
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * np.abs(want).max())
    np.testing.assert_allclose(hist_got.batch["speed"], hist_want.batch["speed"], rtol=rtol * 100)
    # back to SciPy's: the same bits as before
    assert fastbp.set_blas("scipy") == "mkl"
    again, _ = _train(sizes, X, y, dtype)
    np.testing.assert_array_equal(again, want)


def _run(code: str, cwd, **env) -> subprocess.CompletedProcess:
    # (from another directory: in a source checkout "import fastbp" would otherwise
    # import the uncompiled source tree instead of the installed package)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, **env}, cwd=cwd, timeout=120)  # fmt: skip


@needs_kernels
def test_environment_variable_is_read_at_load(tmp_path):
    bad = _run("import fastbp; fastbp.get_backend('cython')", tmp_path, FASTBP_BLAS="openblas")
    assert bad.returncode != 0
    assert "FASTBP_BLAS='openblas' is not one of scipy, mkl" in bad.stderr
    if _mkl_or_none() is None:
        return
    ok = _run("import fastbp; fastbp.get_backend('cython'); print(fastbp.blas_info()['name'])",
              tmp_path, FASTBP_BLAS="mkl")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "mkl"
