"""Which BLAS library computes the compiled backend's large matrix products.

The compiled kernels do their matrix products with SciPy's BLAS (the OpenBLAS that
SciPy's wheels carry).  :func:`set_blas` ``("mkl")`` sends the large ones -- at least
``min_size`` multiply-adds, M N K of a product -- to Intel oneMKL instead, loaded
from the ``mkl`` package of PyPI (``pip install "fastbp[mkl]"``).  The small
products stay on OpenBLAS, whose small-matrix kernels are faster there.

Why: on the wide workload of issue 4 ([784, 1024 x 4, 10], mini-batches of 128,
float32) oneMKL's forward and gradient products are 1.13-1.34x faster than
OpenBLAS's on the benchmark machine (an Intel Xeon with AVX-512) and a training epoch
1.3x faster, which is the difference between fastbp and JAX there; on the chapter's
small layers it is no faster (`benchmarks/blas_compare.py`; `benchmarks/README.md`,
"oneMKL for the large products").  oneMKL's speed on AMD processors is not what it
is on Intel's: measure before choosing it there.

The choice is process-wide (the BLAS is), made before training, and holds for every
``Network`` computing on the compiled backend; the NumPy and Numba backends do not
use it.  ``FASTBP_BLAS=mkl`` in the environment makes the same choice when the
compiled backend is first loaded.  The number of threads of either library is set
as usual, with ``threadpoolctl`` (which knows both) or their environment variables.
Results differ from OpenBLAS's in the last bits (another summation order), never
by more than the tolerances of SPEC section 6.
"""

from __future__ import annotations

import ctypes
import glob
import os
import sys
import threading

__all__ = ["ENV_VAR", "NAMES", "blas_info", "set_blas"]

#: The libraries :func:`set_blas` knows.
NAMES = ("scipy", "mkl")
#: Environment variable read when the compiled backend is first loaded.
ENV_VAR = "FASTBP_BLAS"
#: Environment variable naming oneMKL's runtime library (libmkl_rt) explicitly.
MKL_PATH_VAR = "FASTBP_MKL_RT"
#: Products of fewer multiply-adds stay on OpenBLAS (``min_size``'s default): the
#: first layer of workload C (32 x 32 x 784 = 802,816) does, B's all go to oneMKL.
DEFAULT_MIN_SIZE = 1 << 20

_lock = threading.Lock()
_state = {"name": "scipy", "min_size": DEFAULT_MIN_SIZE}
_mkl: dict = {}  # the loaded library: lib, path, version, addr
_env_read = False


def _mkl_candidates() -> list[str]:
    """Where the ``mkl`` wheel puts libmkl_rt (its data files go to the
    environment's lib/ on Linux, Library/bin on Windows), then the loader's search."""
    explicit = os.environ.get(MKL_PATH_VAR, "").strip()
    if explicit:
        return [explicit]
    found = []
    for prefix in dict.fromkeys((sys.prefix, sys.base_prefix, _user_base())):
        if not prefix:
            continue
        for pattern in ("lib/libmkl_rt.so*", "Library/bin/mkl_rt*.dll", "lib/libmkl_rt*.dylib"):
            found += sorted(glob.glob(os.path.join(prefix, pattern)), reverse=True)
    import ctypes.util

    name = ctypes.util.find_library("mkl_rt")
    if name:
        found.append(name)
    return found


def _user_base() -> str:
    import site

    return getattr(site, "USER_BASE", "") or ""


def _load_mkl() -> dict:
    """Load libmkl_rt once: its Fortran dgemm_/sgemm_ with 32-bit integers (LP64,
    the interface of SciPy's BLAS that the kernels call)."""
    if _mkl:
        return _mkl
    candidates = _mkl_candidates()
    errors = []
    for path in candidates:
        try:
            lib = ctypes.CDLL(path, mode=getattr(ctypes, "RTLD_LOCAL", 0))
        except OSError as exc:
            errors.append(f"{path}: {exc}")
            continue
        # the interface layer must be chosen before any other call into oneMKL; it
        # answers the layer in force, which another user of the library in this
        # process may already have fixed to 64-bit integers (ILP64)
        lib.MKL_Set_Interface_Layer.restype = ctypes.c_int
        layer = lib.MKL_Set_Interface_Layer(0)  # MKL_INTERFACE_LP64
        if layer != 0:
            raise RuntimeError(
                f"oneMKL ({path}) is already in use in this process with 64-bit integers "
                f"(interface layer {layer}); fastbp's kernels need its 32-bit-integer "
                "(LP64) interface: unset MKL_INTERFACE_LAYER, or use set_blas('scipy')"
            )
        buf = ctypes.create_string_buffer(256)
        lib.MKL_Get_Version_String(buf, len(buf))
        addr = tuple(ctypes.cast(getattr(lib, f), ctypes.c_void_p).value
                     for f in ("dgemm_", "sgemm_"))  # fmt: skip
        _mkl.update(lib=lib, path=path, version=buf.value.decode(errors="replace").strip(),
                    addr=addr)  # fmt: skip
        return _mkl
    where = "; ".join(errors) if errors else "no libmkl_rt in this environment"
    raise ImportError(
        f"set_blas('mkl') needs Intel oneMKL's runtime library (libmkl_rt): {where}. "
        f"To get it: pip install \"fastbp[mkl]\" (x86-64), or set {MKL_PATH_VAR} to the "
        "library's path"
    )


def _kernel_modules():
    return [m for n, m in list(sys.modules.items())
            if n.startswith("fastbp._kernels") and hasattr(m, "_set_gemm")]  # fmt: skip


def _apply(module) -> None:
    """The choice in force into one kernel module (its _set_gemm)."""
    if _state["name"] == "mkl":
        module._set_gemm(*_mkl["addr"], _state["min_size"])
    else:
        module._set_gemm(0, 0, 0)


def _choose(name: str, min_size: int) -> str:
    """Make ``name`` (valid; oneMKL loaded if "mkl") the choice of every kernel module
    loaded; returns the previous name."""
    global _env_read
    with _lock:
        _env_read = True  # an explicit choice wins over the environment
        old = _state["name"]
        _state.update(name=name, min_size=min_size)
        for module in _kernel_modules():
            _apply(module)
    return old


def _check_min_size(min_size) -> int:
    import numbers

    if isinstance(min_size, bool) or not isinstance(min_size, numbers.Integral) or min_size < 1:
        raise ValueError(
            "set_blas: min_size must be a positive integer (multiply-adds M*N*K of the "
            f"smallest product sent to the library), got {min_size!r}"
        )
    return int(min_size)


def set_blas(name: str = "scipy", *, min_size: int | None = None) -> str:
    """Choose the BLAS library of the compiled backend's large matrix products.

    Parameters
    ----------
    name : {"scipy", "mkl"}
        ``"scipy"`` (the default): every product through SciPy's BLAS (OpenBLAS).
        ``"mkl"``: products of at least ``min_size`` multiply-adds through Intel
        oneMKL (``pip install "fastbp[mkl]"``), the others through SciPy's.
    min_size : int, optional
        Multiply-adds (M N K) of the smallest product sent to oneMKL; default
        :data:`DEFAULT_MIN_SIZE` (2**20), or the value set before.

    Returns
    -------
    str
        The name in force before the call.

    Raises
    ------
    ValueError
        An unknown ``name`` or a ``min_size`` that is not a positive integer.
    ImportError
        ``"mkl"`` asked for but oneMKL's runtime library is not installed, or the
        compiled backend (the only one using a BLAS library) is unavailable.
    """
    if not isinstance(name, str) or name.strip().lower() not in NAMES:
        raise ValueError(
            f"set_blas: name must be one of {', '.join(map(repr, NAMES))}, got {name!r}"
        )
    name = name.strip().lower()
    size = _state["min_size"] if min_size is None else _check_min_size(min_size)
    if name == "mkl":
        from ._backends import get_backend

        get_backend("cython")  # loads the kernels (and reads the environment) first
        _load_mkl()
    return _choose(name, size)


def blas_info() -> dict:
    """The BLAS choice in force: ``name`` (``"scipy"`` or ``"mkl"``), ``min_size``,
    and for oneMKL its ``library`` path and ``version``."""
    info = {"name": _state["name"], "min_size": _state["min_size"]}
    if _state["name"] == "mkl":
        info.update(library=_mkl["path"], version=_mkl["version"])
    return info


def describe() -> str:
    """One line for ``fastbp.backends()``'s detail of the compiled backend."""
    if _state["name"] == "mkl":
        size = _state["min_size"]
        return f"BLAS: oneMKL for products of >= {size:,} multiply-adds, SciPy's below"
    return "BLAS: SciPy's"


def on_kernels_loaded(module) -> None:
    """Called by the compiled backend once its kernels are imported: apply
    :data:`ENV_VAR` the first time (unless :func:`set_blas` was called), then the
    choice in force."""
    global _env_read
    with _lock:
        first = not _env_read
    value = os.environ.get(ENV_VAR, "").strip().lower()
    if first and value and value != _state["name"]:
        if value not in NAMES:
            raise ValueError(f"{ENV_VAR}={value!r} is not one of {', '.join(NAMES)}")
        if value == "mkl":
            _load_mkl()
        _choose(value, _state["min_size"])  # applies it to this module too
    else:
        with _lock:
            _env_read = True
            _apply(module)
