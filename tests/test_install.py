"""Installing fastbp as users do, in fresh virtual environments (issue 3): slow.

* The wheel: ``.ci/run`` builds it once and points ``FASTBP_WHEEL`` at it; it is
  installed into a fresh virtual environment outside the source tree, fastbp is
  imported from there and the compiled backend is the one selected.
* Without the extension: ``FASTBP_BUILD_EXTENSION=OFF pip install ".[numba]"`` into a
  fresh virtual environment: no compiled module is installed, numba is selected
  without a warning (the choice is reported by ``fastbp.backends()``), and a small
  training agrees with the NumPy backend; with no writable cache directory (the
  read-only site-packages case) the kernels compile in memory and say so; with
  ``NUMBA_CACHE_DIR`` they are cached there and the next process loads them.

These tests need the network (PyPI) and minutes, so they run only with
``FASTBP_RUN_SLOW=1`` (``.ci/run`` sets it).  Without ``FASTBP_WHEEL`` the wheel is
built here, from a copy of the working tree (tracked and untracked, not ignored,
files).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        os.environ.get("FASTBP_RUN_SLOW", "") != "1",
        reason="slow install tests (fresh virtual environments, PyPI): set FASTBP_RUN_SLOW=1 "
        "(.ci/run does)",
    ),
]


def _run(cmd, env=None, cwd=None, timeout=1800):
    clean = {k: v for k, v in os.environ.items()
             if k not in ("PYTHONPATH", "FASTBP_BACKEND", "VIRTUAL_ENV", "PYTHONHOME")}
    clean.update(env or {})
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=clean,
                          cwd=cwd, timeout=timeout)
    assert proc.returncode == 0, (
        f"{' '.join(map(str, cmd))} failed ({proc.returncode})\nstdout:\n{proc.stdout[-4000:]}"
        f"\nstderr:\n{proc.stderr[-4000:]}"
    )
    return proc


def copy_tree(dst: Path) -> Path:
    """The working tree's files (tracked and untracked, not ignored) copied into ``dst``."""
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    return dst


def make_venv(path: Path) -> Path:
    """A fresh virtual environment (no system site-packages); returns its python."""
    _run([sys.executable, "-m", "venv", path])
    python = path / "bin" / "python"
    _run([python, "-m", "pip", "install", "--quiet", "--upgrade", "pip"])
    return python


def venv_python(python: Path, code: str, cwd: Path, env=None):
    """Run ``code`` with the venv's interpreter from ``cwd`` (outside the source tree)."""
    return _run([python, "-c", textwrap.dedent(code)], env=env, cwd=cwd)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel .ci/run built (``FASTBP_WHEEL``), else one built here from a copy."""
    given = os.environ.get("FASTBP_WHEEL", "")
    if given:
        path = Path(given)
        assert path.is_file(), f"FASTBP_WHEEL={given} does not exist"
        return path
    tmp = tmp_path_factory.mktemp("wheel")
    src = copy_tree(tmp / "src")
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp / "dist", src],
         env={"FASTBP_BUILD_EXTENSION": "ON"})
    (found,) = (tmp / "dist").glob("fastbp-*.whl")
    return found


def test_wheel_installs_and_selects_the_compiled_backend(wheel, tmp_path):
    python = make_venv(tmp_path / "venv")
    _run([python, "-m", "pip", "install", "--quiet", wheel])
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = venv_python(python, """
        import json, os, sys, warnings
        warnings.simplefilter("error")  # no fallback warning may be issued
        import numpy as np
        import fastbp
        report = fastbp.backends()
        net = fastbp.Network([6, 8, 3], seed=0)
        rng = np.random.default_rng(0)
        h = net.fit(rng.standard_normal((40, 6)), rng.integers(0, 3, 40), epochs=2,
                    batch_size=5, eta=0.1, record="batch")
        print(json.dumps({
            "file": fastbp.__file__, "prefix": sys.prefix, "backend": h.backend,
            "selected": [n for n, i in report.items() if i.selected],
            "cython": report["cython"].detail, "numba_imported": "numba" in sys.modules,
            "finite": bool(np.isfinite(h.batch["speed"]).all()),
        }))
    """, cwd=work)
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(info["file"]).resolve().is_relative_to(Path(info["prefix"]).resolve())
    assert not Path(info["file"]).resolve().is_relative_to(ROOT)
    assert info["selected"] == ["cython"] and info["backend"] == "cython", info
    assert info["cython"]  # which kernel variant runs
    assert not info["numba_imported"]
    assert info["finite"]


_NO_EXTENSION_CHECK = """
    import json, os, sys, time, warnings
    warnings.simplefilter("error")  # a deliberate pure-Python install must not warn
    import numpy as np
    import fastbp
    pkg = os.path.dirname(fastbp.__file__)
    report = fastbp.backends()
    rng = np.random.default_rng(0)
    X = rng.standard_normal((60, 7))
    y = rng.integers(0, 3, 60)
    t0 = time.perf_counter()
    res = {}
    for name in ("numba", "numpy"):
        with fastbp.use_backend(name):
            net = fastbp.Network([7, 9, 9, 3], activation="tanh", output="softmax",
                                 cost="log_likelihood", seed=1)
            h = net.fit(X, y, epochs=2, batch_size=6, eta=0.1, momentum=0.9, record="batch",
                        seed=2)
            res[name] = (net.params, h.batch["speed"])
        if name == "numba":
            first = time.perf_counter() - t0
    print(json.dumps({
        "file": fastbp.__file__, "prefix": sys.prefix,
        "compiled_files": sorted(f for f in os.listdir(pkg) if f.endswith((".so", ".pyd"))),
        "marker": os.path.exists(os.path.join(pkg, "_no_extension")),
        "cython_reason": report["cython"].reason, "numba": report["numba"].available,
        "selected": [n for n, i in report.items() if i.selected],
        "detail": fastbp.backends()["numba"].detail,
        "param_diff": float(np.max(np.abs(res["numba"][0] - res["numpy"][0]))),
        "speed_diff": float(np.max(np.abs(res["numba"][1] - res["numpy"][1])
                                   / np.abs(res["numpy"][1]))),
        "first_numba_fit_s": first,
    }))
"""


def test_install_without_extension_runs_on_numba(tmp_path):
    src = copy_tree(tmp_path / "src")
    python = make_venv(tmp_path / "venv")
    _run([python, "-m", "pip", "install", "--quiet", f"{src}[numba]"],
         env={"FASTBP_BUILD_EXTENSION": "OFF"})
    work = tmp_path / "elsewhere"
    work.mkdir()

    def check(env):
        out = venv_python(python, _NO_EXTENSION_CHECK, cwd=work, env=env)
        info = json.loads(out.stdout.strip().splitlines()[-1])
        assert Path(info["file"]).resolve().is_relative_to(Path(info["prefix"]).resolve())
        assert info["compiled_files"] == [] and info["marker"], info
        assert "FASTBP_BUILD_EXTENSION=OFF" in info["cython_reason"]
        assert info["numba"] and info["selected"] == ["numba"], info
        assert info["param_diff"] < 1e-9 and info["speed_diff"] < 1e-9, info
        return info

    # 1. No writable cache location (read-only site-packages, unusable home): the
    #    kernels compile in memory, without an error, and the report says so.  Files
    #    where directories are needed stop even root.
    site_cache = Path(
        _run([python, "-c", "import fastbp._backends as b, os; print(os.path.dirname(b.__file__))"],
             cwd=work).stdout.strip()
    ) / "__pycache__"
    shutil.rmtree(site_cache, ignore_errors=True)
    site_cache.write_text("stands for a read-only site-packages\n")
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    info = check({"NUMBA_CACHE_DIR": str(blocker / "c"), "HOME": str(blocker),
                  "XDG_CACHE_HOME": str(blocker / "x"), "PYTHONDONTWRITEBYTECODE": "1"})
    assert "compiled in memory" in info["detail"], info["detail"]

    # 2. NUMBA_CACHE_DIR: compiled once, cached there; 3. the next process loads it.
    cache = tmp_path / "numba-cache"
    cold = check({"NUMBA_CACHE_DIR": str(cache)})
    assert str(cache) in cold["detail"] and list(cache.rglob("*.nbi"))
    t0 = time.perf_counter()
    warm = check({"NUMBA_CACHE_DIR": str(cache)})
    print(f"\nfirst numba fit (float64): {cold['first_numba_fit_s']:.1f} s with an empty cache, "
          f"{warm['first_numba_fit_s']:.2f} s with a warm cache "
          f"(whole process {time.perf_counter() - t0:.1f} s)")
    assert warm["first_numba_fit_s"] < cold["first_numba_fit_s"]
