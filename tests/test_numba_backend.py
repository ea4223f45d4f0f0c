"""The Numba backend and backend selection (issue 3): what the parametrised suite does not cover.

The whole backend-parametrised suite already runs on ``numba`` (the ``backend`` and
``backend_mod`` fixtures of conftest.py): agreement with the reference and with numpy
(SPEC section 6), statistics, non-finite values, optimisers.  Here:

* ``import fastbp`` does not import Numba;
* one compiled specialisation per dtype, whatever the network, batch size, record
  mode or optimiser, and read-only / memory-mapped / other-dtype inputs;
* the ``@njit`` options (all from ``fastbp/_config.py``, no fastmath flag that assumes
  no NaN/Inf), the cache (``NUMBA_CACHE_DIR``, an unwritable cache directory, the
  switch), a Numba that fails to import;
* selection without the compiled extension: numba is chosen with one warning naming
  the reason; without Numba either, numpy with a warning; an installation built
  without the extension on purpose does not warn;
* two threads training two networks at once; ``NUMBA_DISABLE_JIT=1`` (coverage mode).

``FASTBP_REQUIRE_NUMBA=1`` (set by CI) makes a missing Numba a failure, not a skip.
Installing from a wheel and without the extension: tests/test_install.py (slow).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest

import fastbp
from fastbp import _backends as registry
from fastbp import _contract as C

ROOT = Path(__file__).resolve().parent.parent
FASTBP_DIR = Path(fastbp.__file__).resolve().parent
NUMBA_INFO = fastbp.backends()["numba"]
requires_numba = pytest.mark.skipif(
    not NUMBA_INFO.available,
    reason=f'numba backend unavailable ({NUMBA_INFO.reason}); run `pip install ".[numba]"`',
)


def _python(code, env=None, cwd=None, timeout=600):
    """Run ``code`` in a fresh interpreter (the installed fastbp); returns the process."""
    full_env = {k: v for k, v in os.environ.items() if k != "FASTBP_BACKEND"}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout,
    )  # fmt: skip


def _ok(proc):
    assert proc.returncode == 0, f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc.stdout


# --------------------------------------------------------------------------- import


def test_import_fastbp_does_not_import_numba():
    """``python -X importtime -c "import fastbp"`` lists no numba or llvmlite module, and
    creating a network (no computation yet) does not import them either."""
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import fastbp"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")]
    assert "fastbp" in imported
    heavy = [m for m in imported if m.split(".")[0] in ("numba", "llvmlite")]
    assert not heavy, f"import fastbp imported {heavy[:5]}"
    out = _ok(_python("""
        import sys, fastbp
        net = fastbp.Network([3, 4, 2], seed=0)
        print(sorted(m for m in sys.modules if m.split('.')[0] in ('numba', 'llvmlite')))
    """))
    assert out.strip() == "[]"


def test_numba_required_in_ci():
    """CI sets FASTBP_REQUIRE_NUMBA=1: a missing Numba must fail there, not skip."""
    if os.environ.get("FASTBP_REQUIRE_NUMBA", "") != "1":
        pytest.skip("FASTBP_REQUIRE_NUMBA is not set (CI sets it)")
    assert NUMBA_INFO.available, f"the numba backend is unavailable: {NUMBA_INFO.reason}"


# --------------------------------------------------------------------------- compilation


def _problem(rng, sizes, activation, output, cost, dtype, n):
    X = rng.standard_normal((n, sizes[0]))
    if output == "linear":
        y = rng.standard_normal((n, sizes[-1]))
    else:
        y = rng.integers(0, sizes[-1], n)
    net = fastbp.Network(sizes, activation=activation, output=output, cost=cost, dtype=dtype,
                         seed=1)
    return net, X, y


def _signatures_by_dtype(dispatcher):
    """dtype name -> number of compiled signatures whose first float array has that dtype."""
    from numba import types

    counts = {}
    for sig in dispatcher.signatures:
        arrays = [t for t in sig if isinstance(t, types.Array) and str(t.dtype).startswith("float")]
        key = str(arrays[0].dtype) if arrays else "?"
        counts[key] = counts.get(key, 0) + 1
    return counts


@requires_numba
def test_one_compilation_per_dtype(rng, tmp_path):
    """New networks, batch sizes, record modes, optimisers and input kinds reuse the same
    compiled kernels: at most one specialisation per dtype of each driver."""
    from fastbp._backends import numba_backend as nb

    cases = [
        ([5, 7, 3], "sigmoid", "sigmoid", "cross_entropy", 4, "batch", {}),
        ([6, 4, 4, 2], "relu", "softmax", "log_likelihood", 3, "epoch", {"momentum": 0.9}),
        ([3, 9, 2], "tanh", "linear", "quadratic", 5, None,
         {"momentum": 0.5, "nesterov": True}),
        ([4, 3, 3, 3, 2], "leaky_relu", "sigmoid", "quadratic", 2, "batch",
         {"momentum": fastbp.Sutskever(mu_max=0.9, period=3), "nesterov": True}),
        ([2, 5, 3], "softsign", "softmax", "log_likelihood", 7, "epoch", {}),
        ([3, 4, 2], "linear", "sigmoid", "cross_entropy", 1, "batch", {}),
    ]
    with fastbp.use_backend("numba"):
        for dtype in ("float64", "float32"):
            for sizes, act, out, cost, bs, record, opt in cases:
                net, X, y = _problem(rng, sizes, act, out, cost, dtype, 23)
                Xs = [X, np.asfortranarray(X), X.astype(np.float32)]
                ro = X.copy()
                ro.flags.writeable = False
                Xs.append(ro)
                np.save(tmp_path / "X.npy", X)
                Xs.append(np.load(tmp_path / "X.npy", mmap_mode="r"))
                for Xi in Xs:
                    net.fit(Xi, y, epochs=1, batch_size=bs, eta=0.01, record=record,
                            probe=(Xi[:5], y[:5]), validation=(Xi, y), seed=0, **opt)
                    net.gradient(Xi, y)
                    net.forward(Xi)
    for driver in (nb._train_batches, nb._gradient_all, nb._forward_all, nb._fused_pass,
                   nb._update_layer, nb._hidden_forward, nb._output_delta):
        counts = _signatures_by_dtype(driver)
        assert set(counts) <= {"float64", "float32"}, counts
        assert all(c == 1 for c in counts.values()), (
            f"{driver.py_func.__name__} compiled more than once per dtype: {driver.signatures}")


@requires_numba
def test_readonly_memmap_and_converted_inputs_give_the_same_result(rng, tmp_path, dtype):
    """A read-only array, a memory map and a Fortran-ordered array train exactly as the
    plain C-contiguous array does (the backend normalises them before the jitted call)."""
    X = rng.standard_normal((40, 6))
    y = rng.integers(0, 3, 40)
    np.save(tmp_path / "X.npy", X.astype(dtype))
    variants = {
        "plain": X.astype(dtype),
        "readonly": X.astype(dtype),
        "memmap": np.load(tmp_path / "X.npy", mmap_mode="r"),
        "fortran": np.asfortranarray(X.astype(dtype)),
    }
    variants["readonly"].flags.writeable = False
    results = {}
    with fastbp.use_backend("numba"):
        for name, Xi in variants.items():
            net = fastbp.Network([6, 8, 3], activation="tanh", output="softmax",
                                 cost="log_likelihood", dtype=dtype, seed=2)
            h = net.fit(Xi, y, epochs=2, batch_size=7, eta=0.1, momentum=0.9, record="batch",
                        seed=3)
            results[name] = (net.params.copy(), h.batch["speed"].copy())
    for name, (params, speed) in results.items():
        np.testing.assert_array_equal(params, results["plain"][0], err_msg=name)
        np.testing.assert_array_equal(speed, results["plain"][1], err_msg=name)


@requires_numba
def test_contract_refuses_bad_output_buffers(rng):
    """Buffers the kernels write into are checked (dtype, order, shape, writability), and a
    workspace never processes more rows than it holds."""
    from fastbp._backends import numba_backend as nb

    layout = C.Layout([3, 4, 2], ["tanh", "sigmoid"], "cross_entropy", np.float64)
    ws = nb.make_workspace(layout, 5)
    params = rng.standard_normal(layout.n_params)
    X = rng.standard_normal((6, 3))
    Y = rng.random((6, 2))
    with pytest.raises(TypeError, match="grad"):
        nb.gradient(layout, ws, params, X, Y, np.zeros(layout.n_params, np.float32),
                    np.zeros((C.N_STATS, 2)))
    ro = params.copy()
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="params must be writable"):
        nb.forward(layout, ws, ro, X, np.zeros((6, 2)))
    with pytest.raises(ValueError, match="out must have shape"):
        nb.forward(layout, ws, params, X, np.zeros((5, 2)))
    with pytest.raises(ValueError, match="X must have shape"):
        nb.forward(layout, ws, params, X[:, :2], np.zeros((6, 2)))
    with pytest.raises(ValueError, match="batch_size"):
        nb.train_epoch(layout, ws, params, np.zeros_like(params), X, Y, np.arange(6), 6, 0, 1,
                       C.Hyper(eta=0.1), np.zeros((1, C.N_STATS, 2)), np.zeros((C.N_STATS, 2)),
                       np.zeros(1))
    with pytest.raises(ValueError, match="order"):
        nb.train_epoch(layout, ws, params, np.zeros_like(params), X, Y, np.arange(6) + 1, 3, 0, 2,
                       C.Hyper(eta=0.1), np.zeros((2, C.N_STATS, 2)), np.zeros((C.N_STATS, 2)),
                       np.zeros(2))


# --------------------------------------------------------------------------- options


def test_jit_options_live_in_config_only():
    """STYLE.md practice 13: no module but fastbp/_config.py passes options to Numba."""
    pattern = re.compile(r"fastmath|numba\.(n?jit|vectorize|guvectorize|cfunc)\b|@njit\b|"
                         r"from numba import .*\b(n?jit|vectorize|guvectorize|cfunc)\b")
    offenders = []
    for path in FASTBP_DIR.rglob("*.py"):
        if path.name == "_config.py":
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line) and "_config.EXACT_FASTMATH" not in line:
                offenders.append(f"{path.relative_to(FASTBP_DIR)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_fastmath_flags_keep_nan_and_inf():
    from fastbp import _config

    assert _config.FASTMATH.isdisjoint(_config.FORBIDDEN_FASTMATH)
    assert _config.FASTMATH <= {"reassoc", "nsz", "contract", "arcp"}
    options = _config.jit_options()
    assert options["fastmath"] == set(_config.FASTMATH)
    assert options["nogil"] and not options["parallel"]
    assert options["error_model"] == "numpy"
    assert "cache" not in options  # decided per function by _config.jit


@requires_numba
def test_every_kernel_uses_the_config_options():
    from fastbp import _config
    from fastbp._backends import numba_backend as nb

    kernels = [v for v in vars(nb).values()
               if hasattr(v, "targetoptions") and hasattr(v, "py_func")]
    assert len(kernels) > 10
    exact = {k.py_func.__name__ for k in kernels
             if set(k.targetoptions["fastmath"]) == set(_config.EXACT_FASTMATH)}
    assert exact == {"_vexp"}  # the only range reduction that needs IEEE rounding
    for k in kernels:
        opts = k.targetoptions
        assert set(opts["fastmath"]) in (set(_config.FASTMATH), set(_config.EXACT_FASTMATH))
        assert opts["nogil"] is True and opts["parallel"] is False, k.py_func.__name__
        assert opts["error_model"] == "numpy", k.py_func.__name__


# --------------------------------------------------------------------------- cache


_KERNEL_MODULE = """
from fastbp._config import jit, cache_report

@jit(entry=True)
def add_one(x):
    return x + 1.0
"""


def _kernel_dir(tmp_path, block_pycache=False):
    mod_dir = tmp_path / "mod"
    mod_dir.mkdir()
    (mod_dir / "tiny_kernel.py").write_text(_KERNEL_MODULE)
    if block_pycache:
        (mod_dir / "__pycache__").write_text("a file where Numba wants a directory\n")
    return mod_dir


@requires_numba
def test_numba_cache_dir_is_honoured(tmp_path):
    mod_dir = _kernel_dir(tmp_path)
    cache = tmp_path / "numba-cache"
    out = _ok(_python("""
        import tiny_kernel
        assert tiny_kernel.add_one(1.0) == 2.0
        print(tiny_kernel.cache_report())
    """, env={"NUMBA_CACHE_DIR": str(cache), "PYTHONPATH": str(mod_dir)}))
    assert str(cache) in out
    assert list(cache.rglob("*.nbi")), "no index file written in NUMBA_CACHE_DIR"


@requires_numba
def test_unwritable_cache_compiles_in_memory(tmp_path):
    """No writable cache location (NUMBA_CACHE_DIR, __pycache__ and the user cache all
    unusable -- files where directories are needed, which defeats even root): the kernel
    compiles in memory, works, and the report says so."""
    mod_dir = _kernel_dir(tmp_path, block_pycache=True)
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    env = {"PYTHONPATH": str(mod_dir), "NUMBA_CACHE_DIR": str(blocker / "cache"),
           "HOME": str(blocker), "XDG_CACHE_HOME": str(blocker / "xdg"),
           "PYTHONDONTWRITEBYTECODE": "1"}
    out = _ok(_python("""
        import tiny_kernel
        assert tiny_kernel.add_one(1.0) == 2.0
        print(tiny_kernel.cache_report())
    """, env=env))
    assert "compiled in memory" in out and "no writable cache directory" in out, out


@requires_numba
def test_cache_switch_off(tmp_path):
    mod_dir = _kernel_dir(tmp_path)
    cache = tmp_path / "numba-cache"
    out = _ok(_python("""
        import tiny_kernel
        assert tiny_kernel.add_one(1.0) == 2.0
        print(tiny_kernel.cache_report())
    """, env={"PYTHONPATH": str(mod_dir), "NUMBA_CACHE_DIR": str(cache),
              "FASTBP_NUMBA_CACHE": "0"}))
    assert "caching disabled by FASTBP_NUMBA_CACHE=0" in out
    assert not list(cache.rglob("*.nbi"))


@requires_numba
def test_backends_report_says_where_the_kernels_are_cached():
    detail = fastbp.backends()["numba"].detail
    assert detail.startswith("numba ")
    assert "cache: " in detail or "compiled in memory" in detail or "JIT disabled" in detail


# --------------------------------------------------------------------------- import failures


@pytest.mark.parametrize(
    "body,expected",
    [
        ("raise ImportError('Numba needs NumPy 2.5 or less. Got NumPy 9.9.')",
         "Numba needs NumPy 2.5 or less"),
        ("raise OSError('libllvmlite.so: cannot open shared object file')",
         "OSError: libllvmlite.so"),
    ],
    ids=["numpy-clash", "broken-llvmlite"],
)
def test_numba_import_failure_is_reported_not_raised(tmp_path, body, expected):
    """A Numba that fails to import makes the backend unavailable with the reason; nothing
    crashes, forcing it raises BackendUnavailableError saying how to get it."""
    fake = tmp_path / "fake"
    (fake / "numba").mkdir(parents=True)
    (fake / "numba" / "__init__.py").write_text(body + "\n")
    out = _ok(_python("""
        import warnings, fastbp
        info = fastbp.backends()["numba"]
        print("available", info.available)
        print("reason", info.reason)
        try:
            with fastbp.use_backend("numba"):
                pass
        except fastbp.BackendUnavailableError as exc:
            print("error", exc)
    """, env={"PYTHONPATH": str(fake)}))
    assert "available False" in out
    assert expected in out
    assert "error" in out and "fastbp[numba]" in out


# --------------------------------------------------------------------------- selection


_KERNEL_MODULES = ("fastbp._kernels", "fastbp._kernels_avx2", "fastbp._kernels_avx512")


@pytest.fixture
def hide(monkeypatch):
    """Make backends unimportable in this process (as on an installation without them)."""
    monkeypatch.delenv("FASTBP_BACKEND", raising=False)

    def hide_(*names):
        for name in names:
            if name == "cython":
                monkeypatch.delitem(sys.modules, "fastbp._backends.cython_backend", raising=False)
                for mod in _KERNEL_MODULES:
                    monkeypatch.setitem(sys.modules, mod, None)
            elif name == "numba":
                monkeypatch.delitem(sys.modules, "fastbp._backends.numba_backend", raising=False)
                monkeypatch.setitem(sys.modules, "numba", None)
        registry._clear_cache()

    yield hide_
    monkeypatch.undo()
    registry._clear_cache()


@requires_numba
def test_without_compiled_extension_numba_is_selected_with_one_warning(hide):
    hide("cython")
    with pytest.warns(registry.BackendFallbackWarning) as record:
        assert fastbp.current_backend_name() == "numba"
    assert len(record) == 1
    message = str(record[0].message)
    assert "'numba'" in message and "cython" in message
    assert "no compiled kernel variant could be loaded" in message  # the original reason
    report = fastbp.backends()
    assert not report["cython"].available and report["numba"].selected
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once per process: no second warning
        net = fastbp.Network([3, 4, 2], seed=0)
        h = net.fit(np.zeros((6, 3)), [0, 1, 0, 1, 1, 0], epochs=1, batch_size=3, eta=0.1)
    assert h.backend == "numba"


def test_without_compiled_extension_and_numba_numpy_is_selected_with_a_warning(hide):
    hide("cython", "numba")
    with pytest.warns(registry.BackendFallbackWarning, match="slow") as record:
        assert fastbp.current_backend_name() == "numpy"
    message = str(record[0].message)
    assert "cython:" in message and "numba:" in message
    report = fastbp.backends()
    assert not report["numba"].available and "numba" in report["numba"].reason
    with pytest.raises(fastbp.BackendUnavailableError, match=r"fastbp\[numba\]"):
        with fastbp.use_backend("numba"):
            pass


@requires_numba
def test_forced_numba_without_compiled_extension_does_not_warn(hide, monkeypatch):
    hide("cython")
    monkeypatch.setenv("FASTBP_BACKEND", "numba")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fastbp.current_backend_name() == "numba"
        with fastbp.use_backend("numba"):
            assert fastbp.current_backend_name() == "numba"
    monkeypatch.setenv("FASTBP_BACKEND", "cython")
    with pytest.raises(fastbp.BackendUnavailableError, match="pip install"):
        fastbp.current_backend_name()


@requires_numba
def test_built_without_extension_on_purpose_does_not_warn(hide, monkeypatch):
    """FASTBP_BUILD_EXTENSION=OFF installs a marker: the choice is reported, not warned."""
    monkeypatch.setattr(registry, "_built_without_extension", lambda: True)
    hide("cython")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fastbp.current_backend_name() == "numba"
    assert "FASTBP_BUILD_EXTENSION=OFF" in fastbp.backends()["cython"].reason


# --------------------------------------------------------------------------- threads


@requires_numba
def test_two_threads_train_two_networks_at_once(rng):
    """The kernels release the GIL and use no threading layer: two threads training two
    networks at once get exactly the results of training them one after the other."""
    X = rng.standard_normal((300, 10))
    y = rng.integers(0, 3, 300)
    kw = dict(epochs=3, batch_size=5, eta=0.05, momentum=0.9, record="batch", seed=4)

    def make(seed):
        return fastbp.Network([10, 16, 16, 3], activation="tanh", output="softmax",
                              cost="log_likelihood", seed=seed)

    with fastbp.use_backend("numba"):
        sequential = [make(s) for s in (1, 2)]
        for net in sequential:
            net.fit(X, y, **kw)
    nets = [make(s) for s in (1, 2)]
    errors = []
    barrier = threading.Barrier(2)

    def train(net):
        try:
            with fastbp.use_backend("numba"):  # per thread: a context variable
                barrier.wait()
                net.fit(X, y, **kw)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=train, args=(n,)) for n in nets]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for got, want in zip(nets, sequential):
        np.testing.assert_array_equal(got.params, want.params)
    from fastbp._backends import numba_backend as nb

    assert nb._train_batches.targetoptions["nogil"] is True


# --------------------------------------------------------------------------- coverage mode


@requires_numba
def test_disable_jit_runs_the_kernels_as_python():
    """NUMBA_DISABLE_JIT=1 (how coverage measures the kernels): the same code runs as
    Python and agrees with the NumPy reference."""
    out = _ok(_python("""
        import numpy as np, fastbp
        rng = np.random.default_rng(0)
        X = rng.standard_normal((12, 4)); y = rng.integers(0, 3, 12)
        res = {}
        for name in ("numba", "numpy"):
            with fastbp.use_backend(name):
                net = fastbp.Network([4, 5, 3], activation="relu", output="softmax",
                                     cost="log_likelihood", seed=1)
                h = net.fit(X, y, epochs=2, batch_size=5, eta=0.1, momentum=0.5,
                            nesterov=True, record="batch", probe=(X, y), seed=2)
                res[name] = (net.params, h.batch["speed"], h.probe["gain"])
        for a, b in zip(res["numba"], res["numpy"]):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-15)
        print(fastbp.backends()["numba"].detail)
    """, env={"NUMBA_DISABLE_JIT": "1"}))
    assert "JIT disabled" in out


# --------------------------------------------------------------------------- vectorised exp


@requires_numba
def test_vectorised_exp_matches_libm():
    """The sigmoid's exp (vmath.c's method): within 2 ulp of libm in float64 (1 ulp is
    the largest error measured), correctly rounded in float32 on these points, exact
    special values and gradual underflow."""
    import math

    import numba

    from fastbp import _config
    from fastbp._backends import numba_backend as nb

    vexp = numba.njit(**_config.jit_options(entry=True, exact=True))(nb._vexp.py_func)
    rng = np.random.default_rng(20261127)
    x = np.concatenate([rng.uniform(-708.0, 709.0, 100_000), rng.uniform(-1.0, 1.0, 20_000),
                        np.arange(-1000, 1001) * math.log(2) / 2])
    x = x[(x > -708.0) & (x < 709.0)]
    got = x.copy()
    vexp(got)
    want = np.array([math.exp(v) for v in x])
    assert (np.abs(got - want) / np.spacing(want)).max() <= 2.0
    special = np.array([0.0, -0.0, -np.inf, np.nan, -745.0, -1200.0, 1e-300])
    vexp(special)
    np.testing.assert_array_equal(special, [1.0, 1.0, 0.0, np.nan, math.exp(-745.0), 0.0, 1.0])
    x32 = rng.uniform(-87.0, 0.0, 50_000).astype(np.float32)
    got32 = x32.copy()
    vexp(got32)
    np.testing.assert_array_equal(got32, np.exp(x32.astype(np.float64)).astype(np.float32))
