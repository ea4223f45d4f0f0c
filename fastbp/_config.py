"""Configuration of the Numba backend: every ``@njit`` option, in one place.

No other module of fastbp passes options to Numba: the kernels of
``fastbp/_backends/numba_backend.py`` are decorated with :func:`jit` (or
``jit(entry=True)`` / ``jit(exact=True)``) from here, and a test rejects any
``fastmath=`` or direct ``numba.njit``/``numba.jit`` elsewhere (STYLE.md, practice 13).

This module does not import Numba at import time; :func:`import_numba` does, and
turns every way Numba can fail to import (not installed, a NumPy it does not
support, a broken llvmlite) into an ``ImportError`` carrying the reason, which the
backend registry reports in ``fastbp.backends()``.

The options
-----------
``numba.njit``
    Kernels never fall back to object mode (``nopython`` is implied).
``nogil=True``
    The kernels release the GIL, like the compiled backend: two Python threads
    training two networks run in parallel.
``parallel=False``
    No ``prange``.  A mini-batch of the chapter's workload is ~30 us of work: far
    too little to share between threads, so nothing is parallelised inside a
    kernel and no Numba threading layer is ever started (which also means two
    Python threads can call the kernels at once, whatever layer is installed).
``error_model="numpy"``
    Division by zero gives IEEE results (x/0 = +-inf, 0/0 = NaN), as the
    statistics need (e.g. the gain of a layer whose deltas vanished), instead of
    raising ``ZeroDivisionError``.
``boundscheck``
    Off; ``FASTBP_NUMBA_BOUNDSCHECK=1`` turns it on to hunt an indexing error (the
    counterpart of ``FASTBP_DEBUG_CYTHON``).  Numba's on-disk cache does not key on
    this option, so the checked kernels are compiled in memory, never cached (a
    cached unchecked kernel would otherwise be loaded, or the checked one stored).
``fastmath`` = :data:`FASTMATH`
    An explicit set of LLVM fast-math flags, never ``fastmath=True``:

    * ``reassoc`` -- reassociate sums, so that LLVM vectorises the reductions of
      the statistics (the ``-fassociative-math`` of the compiled backend);
    * ``nsz`` -- ignore the sign of zero (needed with ``reassoc``, as
      ``-fno-signed-zeros`` is with ``-fassociative-math``);
    * ``contract`` -- fuse ``a*b + c`` into an FMA where the CPU has one;
    * ``arcp`` -- ``x / y`` may become ``x * (1/y)``: the division by the mini-batch
      size inside the update loop becomes a multiplication, as the compiled
      backend's ``gemm(alpha=1/m)`` does.

    Left out on purpose: ``nnan`` and ``ninf`` (LLVM could then assume that no
    value is NaN or infinite, fold away the finiteness checks and the NaN
    propagation that the statistics and SPEC section 5 rely on) and ``afn``
    (approximate ``exp``/``log``/``tanh``).  These flags move results by an ulp
    or so; SPEC section 6's tolerances are far wider.

    Kernels decorated ``@jit(exact=True)`` get :data:`EXACT_FASTMATH` (``contract``
    only) instead: the vectorised ``exp`` relies on the exact rounding of
    ``(x*log2e + 1.5*2**52) - 1.5*2**52`` and on a Cody-Waite split of ln 2, which
    reassociation would destroy (the compiled backend builds ``vmath.c`` with
    ``-fno-associative-math`` for the same reason).  Numba does not inline one
    kernel into another at LLVM level, so these flags stay with their function.
``cache``
    ``True`` when Numba finds a writable cache directory (``NUMBA_CACHE_DIR`` if
    set, else ``__pycache__`` next to the source, else the user-wide cache
    directory); otherwise the kernels are compiled in memory at each process start
    and :func:`cache_report` says so.  ``FASTBP_NUMBA_CACHE=0`` disables caching.
"""

from __future__ import annotations

import os
import threading
from typing import Any

__all__ = [
    "BOUNDSCHECK",
    "CACHE_ENV_VAR",
    "EXACT_FASTMATH",
    "FASTMATH",
    "cache_report",
    "import_numba",
    "jit",
    "jit_options",
]

#: LLVM fast-math flags of every kernel (see the module docstring): no nnan, ninf, afn.
FASTMATH = frozenset({"reassoc", "nsz", "contract", "arcp"})

#: Flags of the ``exact=True`` kernels (range reductions that need IEEE rounding).
EXACT_FASTMATH = frozenset({"contract"})

#: Flags that must never appear in :data:`FASTMATH` (NaN/Inf must keep their meaning).
FORBIDDEN_FASTMATH = frozenset({"nnan", "ninf", "afn", "fast"})

#: ``FASTBP_NUMBA_BOUNDSCHECK=1`` compiles the kernels with bounds checks.
BOUNDSCHECK = os.environ.get("FASTBP_NUMBA_BOUNDSCHECK", "").strip() in ("1", "true", "on")

#: ``FASTBP_NUMBA_CACHE=0`` compiles in memory even where a cache directory is writable.
CACHE_ENV_VAR = "FASTBP_NUMBA_CACHE"

_lock = threading.Lock()
# Where the kernels are cached: one entry per decorated function (its cache
# directory, or None when compiled in memory), and the reasons caching failed.
_cache_dirs: dict[str, str | None] = {}
_cache_failures: list[str] = []


def import_numba():
    """Import Numba, or raise ``ImportError`` with the reason (never anything else).

    Numba refuses to import next to a NumPy it does not support (it raises
    ``ImportError`` naming both versions); a missing or broken llvmlite can raise
    other exceptions, which are converted here.
    """
    try:
        import numba
    except ImportError as exc:
        raise ImportError(f"numba could not be imported: {exc}") from exc
    except Exception as exc:  # e.g. an llvmlite built for another LLVM raises OSError
        raise ImportError(f"numba could not be imported: {type(exc).__name__}: {exc}") from exc
    return numba


def _cache_wanted() -> bool:
    if BOUNDSCHECK:
        return False
    return os.environ.get(CACHE_ENV_VAR, "1").strip().lower() not in ("0", "false", "off", "no")


def jit_options(entry: bool = False, exact: bool = False) -> dict[str, Any]:
    """The options given to ``numba.njit`` (without ``cache``, decided per function).

    Parameters
    ----------
    entry : bool
        The function is called from Python (a driver).  Other kernels are called
        only from compiled code and are built without the CPython and C-callback
        wrappers (``no_cpython_wrapper``, ``no_cfunc_wrapper``), which saves a good
        part of the compile time.
    exact : bool
        Use :data:`EXACT_FASTMATH` (no reassociation) instead of :data:`FASTMATH`.
    """
    options: dict[str, Any] = dict(
        nogil=True,
        parallel=False,
        error_model="numpy",
        boundscheck=BOUNDSCHECK,
        fastmath=set(EXACT_FASTMATH if exact else FASTMATH),
    )
    if not entry:
        options["no_cpython_wrapper"] = True
        options["no_cfunc_wrapper"] = True
    return options


def jit(func=None, *, entry: bool = False, exact: bool = False):
    """Decorate a kernel with :func:`jit_options`, cached where a directory is writable.

    Usable as ``@jit`` (a kernel called from compiled code only),
    ``@jit(entry=True)`` (a driver called from Python) or ``@jit(exact=True)`` (see
    :data:`EXACT_FASTMATH`).  Caching is tried first; when
    Numba finds no writable cache location it raises ``RuntimeError`` at decoration,
    and the kernel is then compiled in memory (recorded for :func:`cache_report`).
    """
    if func is None:
        return lambda f: jit(f, entry=entry, exact=exact)
    numba = import_numba()
    options = jit_options(entry=entry, exact=exact)
    name = f"{func.__module__}.{func.__qualname__}"
    if getattr(numba.config, "DISABLE_JIT", False):
        return numba.njit(**options)(func)
    if _cache_wanted():
        try:
            dispatcher = numba.njit(cache=True, **options)(func)
        except RuntimeError as exc:  # "cannot cache function ...: no locator available"
            with _lock:
                _cache_dirs[name] = None
                _cache_failures.append(str(exc))
        else:
            cache = getattr(dispatcher, "_cache", None)
            with _lock:
                _cache_dirs[name] = str(getattr(cache, "_cache_path", "") or "unknown directory")
            return dispatcher
    else:
        with _lock:
            _cache_dirs[name] = None
    return numba.njit(cache=False, **options)(func)


def cache_report() -> str:
    """Where the kernels decorated so far are cached, or why they are compiled in memory."""
    numba = import_numba()
    if getattr(numba.config, "DISABLE_JIT", False):
        return "JIT disabled (NUMBA_DISABLE_JIT=1): kernels run as Python"
    with _lock:
        dirs = sorted({d for d in _cache_dirs.values() if d is not None})
        in_memory = [n for n, d in _cache_dirs.items() if d is None]
        failures = list(_cache_failures)
    if not _cache_dirs:
        return "no kernel decorated yet"
    if not in_memory:
        return "cache: " + ", ".join(dirs)
    if BOUNDSCHECK:
        why = "caching disabled with FASTBP_NUMBA_BOUNDSCHECK=1"
    elif not _cache_wanted():
        why = f"caching disabled by {CACHE_ENV_VAR}=0"
    else:
        why = "no writable cache directory" + (f" ({failures[0]})" if failures else "")
    if dirs:
        return f"cache: {', '.join(dirs)}; {len(in_memory)} kernels compiled in memory: {why}"
    return f"compiled in memory at each start: {why}; set NUMBA_CACHE_DIR to a writable directory"
