"""Backend registry and selection.

A backend is a module exporting the functions named in :data:`PUBLIC_API`, with
the signatures of ``fastbp/_contract.py``.  Three are known:

``cython``
    ``fastbp._backends.cython_backend``, a thin re-export of the compiled extension
    ``fastbp._kernels`` (the default and the fastest).
``numba``
    ``fastbp._backends.numba_backend``, the same fused pass JIT-compiled by Numba
    (an optional dependency: ``pip install "fastbp[numba]"``), for installations
    without the compiled extension.  Importing it imports Numba, so it is imported
    only when asked for or selected (``import fastbp`` never imports Numba); a Numba
    that fails to import (a NumPy it does not support, a broken llvmlite) makes the
    backend unavailable with that reason.  Its ``detail`` says where the compiled
    kernels are cached (``NUMBA_CACHE_DIR`` is honoured), or that they are compiled
    in memory because no cache directory is writable.
``numpy``
    ``fastbp._backends.numpy_backend``, the readable reference (the tests' oracle).

Selection
---------
The backend is resolved at every call that computes (a ``Network`` does not hold
on to one), in this order of precedence:

1. the innermost active :func:`use_backend` context of the current thread (a
   :class:`contextvars.ContextVar`, so threads and asyncio tasks do not see each
   other's choice);
2. the ``FASTBP_BACKEND`` environment variable (read at each resolution);
3. the first available of ``cython``, ``numba``, ``numpy``.  Falling back past an
   unavailable backend is never silent: the first time it happens in a process, a
   :class:`BackendFallbackWarning` names the backend that is used and why the ones
   before it are unavailable (e.g. the compiled extension was not built).

A backend asked for by name (1 or 2) that cannot be loaded raises
:class:`fastbp.BackendUnavailableError` with the original reason and how to get
it; fastbp never silently falls back to another backend.  An unknown name raises
``ValueError`` listing the valid ones.

Import results (module or failure) are cached for the life of the process.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import os
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType

from .._errors import BackendUnavailableError

__all__ = [
    "BACKEND_NAMES",
    "ENV_VAR",
    "PUBLIC_API",
    "BackendFallbackWarning",
    "BackendInfo",
    "backends",
    "current_backend_name",
    "get_backend",
    "use_backend",
]

#: The functions every backend module provides (see ``fastbp/_contract.py``).
PUBLIC_API = ("make_workspace", "forward", "gradient", "train_epoch")

#: Known backends, in automatic selection order.
BACKEND_NAMES = ("cython", "numba", "numpy")

#: Environment variable forcing a backend.
ENV_VAR = "FASTBP_BACKEND"

# name -> importable module path, or None when the backend is not provided by
# this version (the reason is then in _NOT_PROVIDED).
_MODULES: dict[str, str | None] = {
    "cython": "fastbp._backends.cython_backend",
    "numba": "fastbp._backends.numba_backend",
    "numpy": "fastbp._backends.numpy_backend",
}
_NOT_PROVIDED: dict[str, str] = {}
_REMEDIES = {
    "cython": (
        "reinstall with `pip install .` so the extension is compiled (it needs a C "
        "compiler, Cython >= 3 and SciPy; `pip install -v .` shows the build log)"
    ),
    "numba": (
        "install Numba with `pip install \"fastbp[numba]\"` (pip picks a Numba release "
        "that supports the installed NumPy), or use the 'cython' or 'numpy' backend"
    ),
    "numpy": "reinstall fastbp with `pip install .` (the NumPy backend ships with it)",
}

_forced: contextvars.ContextVar[str | None] = contextvars.ContextVar("fastbp_backend", default=None)
_cache: dict[str, ModuleType | BackendUnavailableError] = {}
_lock = threading.Lock()
_fallback_warned = False


class BackendFallbackWarning(UserWarning):
    """The automatic selection skipped an unavailable backend (issued once per process).

    For instance the compiled extension was not built or failed to import, and
    fastbp runs on Numba (or, without Numba, on the slow NumPy backend).  The
    message names the backend used and the reason of each one skipped.  Silence it
    with ``warnings.filterwarnings("ignore", category=BackendFallbackWarning)``, or
    choose a backend explicitly (``FASTBP_BACKEND``, :func:`use_backend`).
    """


@dataclass(frozen=True)
class BackendInfo:
    """What :func:`backends` reports about one backend.

    Attributes
    ----------
    name : str
        Backend name.
    available : bool
        Whether it can be loaded.
    reason : str
        Why it is unavailable (the text of the original import error); ``""`` when
        available.
    selected : bool
        Whether it is the backend a computation started now would use.
    detail : str
        For an available backend, what exactly runs (for ``cython``: the
        instruction-set variant of the kernels chosen for this CPU).
    """

    name: str
    available: bool
    reason: str
    selected: bool
    detail: str = ""


def _check_name(name: object, source: str) -> str:
    if not isinstance(name, str):
        raise TypeError(
            f"{source} must be a backend name (str), got {name!r} of type "
            f"{type(name).__name__}; valid names: {', '.join(BACKEND_NAMES)}"
        )
    key = name.strip().lower()
    if key not in _MODULES:
        raise ValueError(
            f"{source}={name!r} is not a fastbp backend; valid names: {', '.join(BACKEND_NAMES)}"
        )
    return key


def _import(name: str) -> ModuleType | BackendUnavailableError:
    path = _MODULES[name]
    if path is None:
        return BackendUnavailableError(name, _NOT_PROVIDED[name], _REMEDIES[name])
    try:
        module = importlib.import_module(path)
    except ImportError as exc:
        if name == "cython" and _built_without_extension():
            return BackendUnavailableError(name, _NO_EXTENSION_REASON, _REMEDIES[name])
        return BackendUnavailableError(name, str(exc) or type(exc).__name__, _REMEDIES[name])
    except Exception as exc:  # e.g. a binary-incompatible extension raises ValueError
        return BackendUnavailableError(name, f"{type(exc).__name__}: {exc}", _REMEDIES[name])
    missing = [f for f in PUBLIC_API if not callable(getattr(module, f, None))]
    if missing:
        return BackendUnavailableError(
            name, f"module {path} does not provide {', '.join(missing)}", _REMEDIES[name]
        )
    return module


#: Reason given for the compiled backend when fastbp was installed without it on purpose.
_NO_EXTENSION_REASON = (
    "fastbp was installed without its compiled extension (FASTBP_BUILD_EXTENSION=OFF)"
)


def _built_without_extension() -> bool:
    """Whether this installation was built with ``FASTBP_BUILD_EXTENSION=OFF``.

    CMake then installs the marker file ``fastbp/_no_extension`` (see CMakeLists.txt).
    """
    return os.path.exists(os.path.join(os.path.dirname(os.path.dirname(__file__)), "_no_extension"))


def _load(name: str) -> ModuleType | BackendUnavailableError:
    """The backend module, or the error explaining why it is unavailable (cached)."""
    with _lock:
        result = _cache.get(name)
        if result is None:
            result = _cache[name] = _import(name)
        return result


def _clear_cache() -> None:
    """Forget import results and the fallback warning (for tests that fake an installation)."""
    global _fallback_warned
    with _lock:
        _cache.clear()
        _fallback_warned = False


def _warn_fallback(chosen: str, skipped: list[BackendUnavailableError]) -> None:
    """Say once per process that the automatic selection fell back to ``chosen``.

    Not when the only backend skipped is the compiled one of an installation built
    without it on purpose (``FASTBP_BUILD_EXTENSION=OFF``): ``fastbp.backends()``
    reports that choice, and a warning at every start would be noise.
    """
    global _fallback_warned
    if all(e.reason == _NO_EXTENSION_REASON for e in skipped):
        return
    with _lock:
        if _fallback_warned:
            return
        _fallback_warned = True
    reasons = "; ".join(f"{e.backend}: {e.reason}" for e in skipped)
    slow = ""
    if chosen == "numpy":
        slow = " (slow: install Numba with `pip install \"fastbp[numba]\"`)"
    warnings.warn(
        f"fastbp is using the {chosen!r} backend{slow} because {reasons}. "
        f"To get the compiled backend: {_REMEDIES['cython']}",
        BackendFallbackWarning,
        stacklevel=4,
    )


def _requested() -> str | None:
    """The backend forced by ``use_backend`` or ``FASTBP_BACKEND``, else None."""
    name = _forced.get()
    if name is not None:
        return name
    env = os.environ.get(ENV_VAR, "")
    if env.strip():
        return _check_name(env, ENV_VAR)
    return None


def _resolve() -> tuple[str, ModuleType]:
    """Name and module of the backend to use now (raises if it is unavailable)."""
    name = _requested()
    if name is not None:
        result = _load(name)
        if isinstance(result, BackendUnavailableError):
            raise result
        return name, result
    errors = []
    for candidate in BACKEND_NAMES:
        result = _load(candidate)
        if not isinstance(result, BackendUnavailableError):
            if errors:
                _warn_fallback(candidate, errors)
            return candidate, result
        errors.append(result)
    raise BackendUnavailableError(
        "any", "; ".join(f"{e.backend}: {e.reason}" for e in errors), _REMEDIES["numpy"]
    ) from errors[-1]


def get_backend(name: str | None = None) -> ModuleType:
    """The backend module resolved now (or the one named).

    Parameters
    ----------
    name : str, optional
        A backend name; ``None`` resolves as described in the module docstring.

    Returns
    -------
    module
        A module providing ``make_workspace``, ``forward``, ``gradient`` and
        ``train_epoch``.

    Raises
    ------
    fastbp.BackendUnavailableError
        If the backend asked for cannot be loaded.
    ValueError
        If ``name`` (or ``FASTBP_BACKEND``) is not a backend name.
    """
    if name is None:
        return _resolve()[1]
    result = _load(_check_name(name, "name"))
    if isinstance(result, BackendUnavailableError):
        raise result
    return result


def current_backend_name() -> str:
    """Name of the backend a computation started now would use.

    Raises
    ------
    fastbp.BackendUnavailableError
        If a forced backend is unavailable.
    """
    return _resolve()[0]


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[ModuleType]:
    """Force a backend inside a ``with`` block (per thread / per context).

    The choice lives in a :class:`contextvars.ContextVar`: other threads, including
    threads started inside the block, do not see it (a new thread starts from an
    empty context); asyncio tasks created inside the block do.  It takes precedence
    over ``FASTBP_BACKEND``.  Also usable as a decorator.

    Parameters
    ----------
    name : str
        ``"cython"``, ``"numba"`` or ``"numpy"``.

    Yields
    ------
    module
        The backend module.

    Raises
    ------
    fastbp.BackendUnavailableError
        On entry, if the backend cannot be loaded (no fallback).
    ValueError
        If ``name`` is not a backend name.

    Examples
    --------
    >>> import fastbp
    >>> with fastbp.use_backend("numpy"):
    ...     fastbp.current_backend_name()
    'numpy'
    """
    key = _check_name(name, "name")
    module = get_backend(key)
    token = _forced.set(key)
    try:
        yield module
    finally:
        _forced.reset(token)


def _detail(module: ModuleType) -> str:
    detail = getattr(module, "DETAIL", "")
    blas = getattr(module, "blas_detail", None)  # the compiled backend's BLAS choice
    return f"{detail}; {blas()}" if callable(blas) else detail


def backends() -> dict[str, BackendInfo]:
    """Report every known backend: available or not, why not, and which is selected.

    Returns
    -------
    dict of str to BackendInfo
        In selection order (``cython``, ``numba``, ``numpy``).  ``selected`` is true
        for at most one entry: none when the forced backend is unavailable.
    """
    try:
        selected: str | None = current_backend_name()
    except (BackendUnavailableError, ValueError):
        selected = None
    report = {}
    for name in BACKEND_NAMES:
        result = _load(name)
        ok = not isinstance(result, BackendUnavailableError)
        report[name] = BackendInfo(
            name=name,
            available=ok,
            reason="" if ok else result.reason,
            selected=name == selected,
            detail=_detail(result) if ok else "",
        )
    return report
