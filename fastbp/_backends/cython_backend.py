"""The compiled backend: the Cython kernels, in the best variant this CPU runs.

The extension is built from one source (``src_ext/_kernels.pyx``) several times
with different instruction sets (see ``CMakeLists.txt``): ``fastbp._kernels``
(baseline x86-64 or the native target elsewhere), ``fastbp._kernels_avx2``
(x86-64-v3: AVX2, FMA) and ``fastbp._kernels_avx512`` (x86-64-v4: AVX-512).
The best variant that both exists and is supported by the running CPU is
imported; ``FASTBP_KERNELS=baseline|avx2|avx512`` forces one (for testing and
benchmarking).  :data:`VARIANT` and :data:`DETAIL` say which one runs.

The names of :data:`fastbp._backends.PUBLIC_API` are pulled from the extension in
one loop, so the list of functions is written down once.  If the extension was not
compiled, importing this module raises the original ``ImportError``; the registry
turns it into :class:`fastbp.BackendUnavailableError` with instructions.
"""

from __future__ import annotations

import importlib
import os

from .. import _blas
from . import PUBLIC_API

#: variant name -> (module, CPU features it needs, as named by NumPy's CPU dispatcher)
VARIANTS = {
    "avx512": (
        "fastbp._kernels_avx512",
        ("AVX512F", "AVX512CD", "AVX512BW", "AVX512DQ", "AVX512VL"),
    ),
    "avx2": ("fastbp._kernels_avx2", ("AVX2", "FMA3", "F16C")),
    "baseline": ("fastbp._kernels", ()),
}


def _cpu_features() -> dict[str, bool]:
    try:  # NumPy's own runtime detection (the table behind np.show_runtime())
        from numpy._core._multiarray_umath import __cpu_features__
    except ImportError:  # pragma: no cover - older NumPy
        try:
            from numpy.core._multiarray_umath import __cpu_features__
        except ImportError:
            return {}
    return dict(__cpu_features__)


def _choose():
    features = _cpu_features()
    forced = os.environ.get("FASTBP_KERNELS", "").strip().lower()
    if forced and forced not in VARIANTS:
        raise ImportError(f"FASTBP_KERNELS={forced!r} is not one of {', '.join(VARIANTS)}")
    errors = []
    for name, (module, needs) in VARIANTS.items():
        if forced and name != forced:
            continue
        if not all(features.get(f, False) for f in needs):
            errors.append(f"{name}: CPU lacks {', '.join(f for f in needs if not features.get(f))}")
            continue
        try:
            return name, importlib.import_module(module)
        except ImportError as exc:
            errors.append(f"{name}: {exc}")
    raise ImportError("no compiled kernel variant could be loaded (" + "; ".join(errors) + ")")


VARIANT, _kernels = _choose()
DETAIL = f"kernels {VARIANT} ({_kernels.__name__})"

# the BLAS library of the large products (fastbp/_blas.py): FASTBP_BLAS, or the
# choice made before this import
_blas.on_kernels_loaded(_kernels)


def blas_detail() -> str:
    """Which BLAS library the kernels call (for ``fastbp.backends()``)."""
    return _blas.describe()


for _name in PUBLIC_API:
    try:
        globals()[_name] = getattr(_kernels, _name)
    except AttributeError:
        raise ImportError(
            f"{_kernels.__name__} does not provide {_name!r} (a stale build?)"
        ) from None
del _name

__all__ = [*PUBLIC_API, "VARIANT", "DETAIL", "blas_detail"]
