"""Input checking for the public API, done before any backend code runs.

Every check raises ``TypeError`` (wrong kind of object) or ``ValueError`` (right
kind, bad value) with a message naming the argument, the value and the fix.

Arrays
------
Inputs ``X`` are cast **once** to the network dtype as a C-contiguous array
(``numpy.ascontiguousarray(X, dtype=net.dtype)``): no copy is made when ``X`` already
is a C-contiguous array of that dtype, so passing float32 data to a float32 network
(or float64 data to a float64 one) costs nothing.  Integer and boolean inputs are
accepted and converted; complex, string, object and date arrays are refused.
Finiteness is checked after the cast, so float64 values beyond the float32 range are
reported for a float32 network.

Targets reach the backends as a dense ``(N, n_L)`` matrix of the network dtype;
integer labels are one-hot encoded once, here.  Accepted forms, by output layer:

* ``sigmoid`` / ``softmax`` output:

  - integer labels, shape ``(N,)``: an integer (or boolean) array, or floats with
    integral values, in ``[0, n_L)``.  For a single sigmoid output unit (``n_L == 1``)
    the labels are 0 or 1 and the target is the label itself;
  - a 2-D array of width ``n_L``: for sigmoid, values in ``[0, 1]`` (one-hot, or soft
    and multi-label targets); for softmax, one-hot rows (0/1, one 1 per row).
    The label of a row (for accuracy) is its argmax, or ``y > 0.5`` for one unit;

* ``linear`` output (regression): float targets of shape ``(N, n_L)``, or ``(N,)``
  when ``n_L == 1``.  There are no labels, so accuracy is undefined.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from ._contract import (
    COST_CODES,
    HIDDEN_ACTIVATIONS,
    MOMENTUM_CONSTANT,
    MOMENTUM_NONE,
    MOMENTUM_SUTSKEVER,
    N_STATS,
    OUTPUT_ACTIVATIONS,
    RECORD_BATCH,
    RECORD_EPOCH,
    RECORD_NONE,
    VALID_PAIRS,
    Layout,
)
from ._errors import TooLargeError, format_bytes
from ._init import INITIALISERS
from ._schedules import Sutskever

RECORD_MODES = {"batch": RECORD_BATCH, "epoch": RECORD_EPOCH, None: RECORD_NONE}
#: Widest layer: BLAS takes matrix sizes as 32-bit ints.
MAX_WIDTH = 2**31 - 1
NONFINITE_POLICIES = ("raise", "skip")
DTYPES = (np.dtype(np.float32), np.dtype(np.float64))

_NUMERIC_KINDS = "biuf"


# ----------------------------------------------------------------------------- helpers


def describe(value: Any) -> str:
    """Short description of a value for an error message (never a whole array)."""
    if isinstance(value, np.ndarray):
        return f"an array of shape {value.shape} and dtype {value.dtype}"
    if isinstance(value, (list, tuple)) and len(value) > 8:
        return f"a {type(value).__name__} of length {len(value)}"
    text = repr(value)
    if len(text) > 80:
        text = text[:77] + "..."
    return text


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def check_int(
    value: Any, name: str, minimum: int, maximum: int | None = None, fix: str = ""
) -> int:
    """An integer in ``[minimum, maximum]``."""
    if not _is_int(value):
        raise TypeError(
            f"{name} must be an int, got {describe(value)} of type {type(value).__name__}"
            + (f"; {fix}" if fix else "")
        )
    value = int(value)
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"{name}={value} must be {bound}" + (f"; {fix}" if fix else ""))
    return value


def check_real(value: Any, name: str, minimum: float, strict: bool = False, fix: str = "") -> float:
    """A finite real ``>= minimum`` (``> minimum`` if ``strict``)."""
    if not _is_real(value):
        raise TypeError(
            f"{name} must be a real number, got {describe(value)} of type {type(value).__name__}"
            + (f"; {fix}" if fix else "")
        )
    value = float(value)
    ok = math.isfinite(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        bound = f"> {minimum:g}" if strict else f">= {minimum:g}"
        raise ValueError(
            f"{name}={value!r} must be finite and {bound}" + (f"; {fix}" if fix else "")
        )
    return value


def check_fraction(value: Any, name: str) -> float:
    """A real in ``[0, 1)``."""
    value = check_real(value, name, 0.0, fix="pass a number in [0, 1)")
    if value >= 1.0:
        raise ValueError(f"{name}={value!r} must be in [0, 1); pass a number below 1")
    return value


def check_bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {describe(value)}")
    return bool(value)


def check_choice(value: Any, name: str, choices: Sequence[Any]) -> Any:
    if not any(value is c or (isinstance(value, str) and value == c) for c in choices):
        valid = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name}={describe(value)} is not valid; use one of {valid}")
    return value


def check_seed(seed: Any, name: str = "seed") -> tuple[np.random.Generator, int]:
    """A ``Generator(PCG64(seed))`` and the integer seed that reproduces it.

    ``seed=None`` draws fresh entropy from the operating system; the returned integer
    is that entropy, so the run can be repeated by passing it back.
    """
    if seed is None:
        entropy = np.random.SeedSequence().entropy
        return np.random.Generator(np.random.PCG64(entropy)), int(entropy)
    seed = check_int(seed, name, 0, fix="pass a non-negative int, or None for fresh entropy")
    return np.random.Generator(np.random.PCG64(seed)), seed


# ------------------------------------------------------------------------ architecture


def check_sizes(sizes: Any) -> tuple[int, ...]:
    fix = "give the width of every layer, input first, e.g. sizes=[784, 30, 10]"
    if isinstance(sizes, (str, bytes)) or not isinstance(sizes, (Sequence, np.ndarray)):
        raise TypeError(f"sizes must be a sequence of ints, got {describe(sizes)}; {fix}")
    sizes = list(sizes)
    if len(sizes) < 2:
        raise ValueError(f"sizes={sizes!r} has fewer than 2 entries; {fix}")
    out = []
    for i, s in enumerate(sizes):
        if not _is_int(s):
            raise TypeError(f"sizes[{i}]={describe(s)} is not an int; {fix}")
        if s < 1:
            raise ValueError(f"sizes[{i}]={int(s)} is not a positive width; {fix}")
        if s > MAX_WIDTH:
            raise ValueError(
                f"sizes[{i}]={int(s)} is wider than {MAX_WIDTH} units, the largest width the "
                f"BLAS matrix products take (a 32-bit int); {fix}"
            )
        out.append(int(s))
    return tuple(out)


def _check_name(value: Any, name: str, valid: Sequence[str], extra: str = "") -> str:
    if not isinstance(value, str):
        raise TypeError(
            f"{name} must be a name (str), got {describe(value)}; valid names: {', '.join(valid)}"
        )
    if value not in valid:
        raise ValueError(f"{name}={value!r} is unknown; valid names: {', '.join(valid)}" + extra)
    return value


def check_activation(activation: Any, n_layers: int) -> tuple[str, ...]:
    """Hidden activations, one per hidden layer (``n_layers - 1`` names)."""
    extra = " (softmax is an output activation: pass output='softmax')"
    if isinstance(activation, str):
        name = _check_name(activation, "activation", HIDDEN_ACTIVATIONS, extra)
        return (name,) * (n_layers - 1)
    if isinstance(activation, Sequence):
        if len(activation) != n_layers - 1:
            raise ValueError(
                f"activation={describe(activation)} gives {len(activation)} names but the "
                f"network has {n_layers - 1} hidden layer(s); pass one name, or one per "
                "hidden layer"
            )
        return tuple(
            _check_name(a, f"activation[{i}]", HIDDEN_ACTIVATIONS, extra)
            for i, a in enumerate(activation)
        )
    raise TypeError(
        f"activation must be a name (str) or a sequence of names, got {describe(activation)}; "
        f"valid names: {', '.join(HIDDEN_ACTIVATIONS)}"
    )


def check_output_cost(output: Any, cost: Any, n_out: int) -> tuple[str, str]:
    output = _check_name(output, "output", OUTPUT_ACTIVATIONS)
    cost = _check_name(cost, "cost", tuple(COST_CODES))
    if (output, cost) not in VALID_PAIRS:
        pairs = ", ".join(f"(output={o!r}, cost={c!r})" for o, c in VALID_PAIRS)
        raise ValueError(
            f"output={output!r} with cost={cost!r} is not a valid pair (its output delta is not "
            f"the one fastbp implements); valid pairs: {pairs}"
        )
    if output == "softmax" and n_out < 2:
        raise ValueError(
            f"output='softmax' needs at least 2 output units, but sizes[-1]={n_out}; use "
            "output='sigmoid' for a single unit"
        )
    return output, cost


def check_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(
            f"dtype={describe(dtype)} is not a dtype; use 'float64' or 'float32'"
        ) from None
    if dt not in DTYPES:
        raise ValueError(
            f"dtype={describe(dtype)} ({dt}) is not supported; use 'float64' or 'float32'"
        )
    return dt


def check_alpha(alpha: Any) -> float:
    return check_real(alpha, "alpha", 0.0, fix="the leaky_relu slope below zero, e.g. 0.01")


# --------------------------------------------------------------------------- parameters


def check_layer_array(value: Any, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """One weight matrix or bias vector: numeric, the given shape, finite in ``dtype``."""
    arr = _as_numeric(value, name)
    if arr.shape != shape:
        raise ValueError(
            f"{name} has shape {arr.shape} but this network needs {shape} "
            "(W[l] is (sizes[l+1], sizes[l]) and b[l] is (sizes[l+1],), as in the book)"
        )
    out = _cast(arr, dtype)
    _check_finite(out, arr, name, dtype)
    return out


def check_params(
    weights: Any, biases: Any, layout: Layout
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Explicit ``(weights, biases)``: two sequences of ``L`` arrays in the book's shapes."""
    L = layout.L
    out = []
    for what, seq in (("weights", weights), ("biases", biases)):
        if isinstance(seq, np.ndarray) or not isinstance(seq, Sequence):
            raise TypeError(
                f"{what} must be a list of {L} arrays (one per layer), got {describe(seq)}"
            )
        if len(seq) != L:
            raise ValueError(
                f"{what} has {len(seq)} entries but the network has {L} weight layer(s); "
                f"give one array per layer"
            )
        arrays = []
        for l, a in enumerate(seq):
            n_in, n_out = int(layout.sizes[l]), int(layout.sizes[l + 1])
            shape = (n_out, n_in) if what == "weights" else (n_out,)
            arrays.append(check_layer_array(a, f"{what}[{l}]", shape, layout.dtype))
        out.append(arrays)
    return out[0], out[1]


def check_init(init: Any) -> str | tuple[Any, Any]:
    """An initialiser name, or an explicit ``(weights, biases)`` pair (checked later)."""
    if isinstance(init, str):
        return _check_name(init, "init", tuple(INITIALISERS), " (or pass (weights, biases))")
    if isinstance(init, (tuple, list)) and len(init) == 2:
        return init[0], init[1]
    raise TypeError(
        f"init must be an initialiser name or a (weights, biases) pair, got {describe(init)}; "
        f"valid names: {', '.join(INITIALISERS)}"
    )


# ------------------------------------------------------------------------------- data


def _as_numeric(value: Any, name: str) -> np.ndarray:
    if value is None:
        raise TypeError(f"{name} is None; pass an array")
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as exc:
        raise ValueError(
            f"{name} cannot be read as an array ({exc}); pass a rectangular array"
        ) from None
    if arr.dtype.kind == "O":
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (ValueError, TypeError):
            raise TypeError(
                f"{name} is an object array that is not numeric; pass a numeric array"
            ) from None
    if arr.dtype.kind not in _NUMERIC_KINDS:
        raise TypeError(
            f"{name} has dtype {arr.dtype}, which is not numeric; pass real numbers "
            "(float, int or bool)"
        )
    return arr


def _cast(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    with np.errstate(over="ignore", invalid="ignore"):
        return np.ascontiguousarray(arr, dtype=dtype)


def _all_finite(arr: np.ndarray) -> bool:
    if arr.dtype.kind != "f" or arr.size == 0:
        return True
    # One pass: any NaN or Inf makes the sum non-finite.  float32 and float64 are
    # summed in their own dtype (SIMD pairwise summation, 2.6x faster than summing
    # float32 in double: 8 against 22 ms for 50,000 x 784); a finite array whose sum
    # overflows only falls through to the exact check below.
    acc = arr.dtype if arr.dtype.itemsize >= 4 else np.float64
    with np.errstate(over="ignore", invalid="ignore"):
        s = np.add.reduce(arr, axis=None, dtype=acc)
    if math.isfinite(s):
        return True
    return bool(np.isfinite(arr).all())


def all_finite(arr: np.ndarray) -> bool:
    """Whether every value of a float array is finite (no temporary array when it is,
    unless its sum in its own dtype overflows)."""
    return _all_finite(arr)


def _check_finite(
    out: np.ndarray, source: np.ndarray, name: str, dtype: np.dtype, row0: int = 0
) -> None:
    if _all_finite(out):
        return
    bad = ~np.isfinite(out)
    first = tuple(int(i) for i in np.argwhere(bad)[0])
    if first and row0:
        first = (first[0] + row0,) + first[1:]
    where = f"{name}[{', '.join(map(str, first))}]" if first else name
    if _all_finite(source):
        raise ValueError(
            f"{name} has {int(bad.sum())} values outside the {dtype} range (the first at "
            f"{where}); rescale the data or use dtype='float64'"
        )
    raise ValueError(
        f"{name} contains {int(bad.sum())} non-finite values (NaN or Inf), the first at "
        f"{where}; remove or impute them"
    )


def check_X(
    X: Any, layout: Layout, name: str = "X", allow_empty: bool = False, cast: bool = True
) -> np.ndarray:
    """Inputs ``(N, sizes[0])``, returned C-contiguous in the network dtype (cast once).

    With ``cast=False`` only the shape and kind are checked and the array is returned
    as given (no copy): :func:`cast_rows` then casts and checks it chunk by chunk.
    """
    arr = _as_numeric(X, name)
    n_in = int(layout.sizes[0])
    if arr.ndim != 2:
        hint = "; for a single example use X.reshape(1, -1)" if arr.ndim == 1 else ""
        raise ValueError(f"{name} must be 2-D (n_examples, {n_in}), got shape {arr.shape}{hint}")
    if arr.shape[1] != n_in:
        raise ValueError(
            f"{name} has {arr.shape[1]} columns but the network's input layer has "
            f"sizes[0]={n_in} units; pass one example per row with {n_in} features"
        )
    if arr.shape[0] == 0 and not allow_empty:
        raise ValueError(f"{name} has no rows (shape {arr.shape}); pass at least one example")
    if not cast:
        return arr
    if needs_copy(arr, layout.dtype):
        check_memory(
            arr.shape[0] * n_in * layout.dtype.itemsize,
            f"a {layout.dtype} copy of {name} (shape {arr.shape}, dtype {arr.dtype})",
            f"pass {name} as a C-contiguous {layout.dtype} array, or fewer rows",
        )
    out = _cast(arr, layout.dtype)
    _check_finite(out, arr, name, layout.dtype)
    return out


def needs_copy(arr: np.ndarray, dtype: np.dtype) -> bool:
    """Whether ``numpy.ascontiguousarray(arr, dtype)`` copies."""
    return arr.dtype != dtype or not arr.flags.c_contiguous


def cast_rows(arr: np.ndarray, start: int, stop: int, dtype: np.dtype, name: str) -> np.ndarray:
    """Rows ``start:stop`` of an array checked by ``check_X(..., cast=False)``: cast to
    ``dtype`` (C-contiguous; no copy when already so) and checked for finiteness, with
    the same message as :func:`check_X` would give (indices of the whole array)."""
    part = arr[start:stop]
    out = _cast(part, dtype)
    _check_finite(out, part, name, dtype, row0=start)
    return out


def check_targets(
    y: Any, layout: Layout, n: int, name: str = "y", x_name: str = "X"
) -> tuple[np.ndarray, np.ndarray | None]:
    """Targets as a dense ``(n, n_L)`` matrix of the network dtype, and the labels.

    Returns
    -------
    Y : ndarray, shape (n, n_L)
        C-contiguous, network dtype.
    labels : ndarray of int64, shape (n,), or None
        Class labels (for accuracy); ``None`` for a linear (regression) output.
    """
    arr = _as_numeric(y, name)
    output = layout.activation_names[-1]
    n_out = int(layout.sizes[-1])
    if arr.ndim == 0:
        raise ValueError(f"{name} is a scalar ({describe(y)}); pass one target per row of {x_name}")
    if arr.shape[0] != n:
        raise ValueError(
            f"{name} has {arr.shape[0]} rows but {x_name} has {n}; pass one target per example"
        )
    if output == "linear":
        if arr.ndim == 1 and n_out == 1:
            arr = arr.reshape(-1, 1)
        if arr.ndim != 2 or arr.shape[1] != n_out:
            raise ValueError(
                f"{name} has shape {arr.shape}, but a linear (regression) output of {n_out} "
                f"units needs float targets of shape ({n}, {n_out}); for class labels use "
                "output='sigmoid' or 'softmax'"
            )
        Y = _cast(arr, layout.dtype)
        _check_finite(Y, arr, name, layout.dtype)
        return Y, None

    if arr.ndim == 1:
        labels = _check_labels(arr, name, output, n_out)
        check_memory(
            n * n_out * layout.dtype.itemsize,
            f"the one-hot targets of {name} ({n} labels x {n_out} classes)",
            "use fewer examples per call",
        )
        Y = np.zeros((n, n_out), dtype=layout.dtype)
        if n_out == 1:
            Y[:, 0] = labels
        else:
            Y[np.arange(n), labels] = 1
        return Y, labels

    if arr.ndim != 2 or arr.shape[1] != n_out:
        raise ValueError(
            f"{name} has shape {arr.shape}; pass integer labels of shape ({n},) or a one-hot "
            f"array of shape ({n}, {n_out}) (width = sizes[-1])"
        )
    Y = _cast(arr, layout.dtype)
    _check_finite(Y, arr, name, layout.dtype)
    if n and not (Y.min() >= 0 and Y.max() <= 1):
        raise ValueError(
            f"{name} has values outside [0, 1] (min {Y.min():g}, max {Y.max():g}); "
            f"a {output} output needs targets in [0, 1]: pass labels or one-hot rows"
        )
    if output == "softmax":
        ok = np.all((Y == 0) | (Y == 1)) and np.all(Y.sum(axis=1) == 1)
        if not ok:
            raise ValueError(
                f"{name} is not one-hot: a softmax output with the log-likelihood cost needs "
                "rows of 0s with a single 1; pass integer labels instead"
            )
    if n_out == 1:
        labels = (Y[:, 0] > 0.5).astype(np.int64)
    else:
        labels = np.argmax(Y, axis=1).astype(np.int64)
    return Y, labels


def _check_labels(arr: np.ndarray, name: str, output: str, n_out: int) -> np.ndarray:
    hi = 2 if n_out == 1 else n_out
    rng = "0 or 1 (a single sigmoid unit)" if n_out == 1 else f"in [0, {n_out})"
    if arr.dtype.kind == "f":
        if not _all_finite(arr):
            raise ValueError(f"{name} contains NaN or Inf; labels must be integers {rng}")
        if arr.size and not np.all(arr == np.floor(arr)):
            raise ValueError(
                f"{name} holds non-integral floats; labels must be integers {rng}"
                + (" (for soft targets pass a 2-D array of width 1)" if n_out == 1 else "")
            )
    if arr.size:
        lo_v, hi_v = arr.min(), arr.max()
        if lo_v < 0 or hi_v >= hi:
            raise ValueError(
                f"{name} has labels from {lo_v} to {hi_v}, but labels must be {rng} "
                f"(sizes[-1]={n_out} output units)"
            )
    return arr.astype(np.int64)


def check_dataset(
    pair: Any, name: str, layout: Layout
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """An ``(X, y)`` pair such as ``validation=`` or ``probe=``: (X, Y, labels)."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2:
        raise TypeError(f"{name} must be a pair (X, y), got {describe(pair)}")
    X = check_X(pair[0], layout, f"{name}[0]")
    Y, labels = check_targets(pair[1], layout, X.shape[0], f"{name}[1]", f"{name}[0]")
    return X, Y, labels


# ----------------------------------------------------------------------- hyper-parameters


def check_momentum(momentum: Any) -> tuple[int, float, float, int]:
    """``momentum=`` -> ``(momentum_kind, mu, mu_max, period)`` of :class:`Hyper`."""
    if isinstance(momentum, Sutskever):
        return MOMENTUM_SUTSKEVER, 0.0, momentum.mu_max, momentum.period
    fix = "use a value in [0, 1) such as 0.9, or fastbp.Sutskever(mu_max=0.99)"
    if not _is_real(momentum):
        raise TypeError(
            f"momentum must be a real number or a fastbp.Sutskever, got {describe(momentum)}; {fix}"
        )
    mu = float(momentum)
    if not (math.isfinite(mu) and 0.0 <= mu < 1.0):
        raise ValueError(f"momentum={mu!r} is outside [0, 1); {fix}")
    if mu == 0.0:
        return MOMENTUM_NONE, 0.0, 0.0, 250
    return MOMENTUM_CONSTANT, mu, mu, 250


def check_eta(eta: Any) -> float:
    return check_real(eta, "eta", 0.0, strict=True, fix="pass a positive learning rate such as 0.1")


def check_lmbda(lmbda: Any) -> float:
    return check_real(
        lmbda, "lmbda", 0.0, fix="pass 0.0 (no L2) or a positive L2 coefficient such as 5.0"
    )


def check_batch_size(batch_size: Any, n: int) -> int:
    fix = f"pass a mini-batch size from 1 to the number of training examples ({n})"
    if not _is_int(batch_size):
        raise TypeError(f"batch_size must be an int, got {describe(batch_size)}; {fix}")
    if not 1 <= batch_size <= n:
        raise ValueError(f"batch_size={int(batch_size)} is outside [1, {n}]; {fix}")
    return int(batch_size)


def check_epochs(epochs: Any) -> int:
    return check_int(epochs, "epochs", 0, fix="pass the number of passes over the data, e.g. 30")


# ------------------------------------------------------------------------------ memory


def memory_limit() -> int:
    """Bytes of memory this process may use: physical memory, or the cgroup's limit if lower.

    Requests larger than this cannot succeed and are refused before allocating
    (:class:`fastbp.TooLargeError`).  Returns a huge number when it cannot be found.
    """
    limit = 1 << 62
    try:
        limit = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, OSError, ValueError):  # pragma: no cover - not POSIX
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit():
            limit = min(limit, int(text))
    return limit


def check_memory(nbytes: int, what: str, fix: str) -> None:
    """Refuse (before allocating) a request of ``nbytes`` larger than :func:`memory_limit`."""
    available = memory_limit()
    if nbytes > available:
        raise TooLargeError(what, nbytes, available, fix)


def network_nbytes(sizes: Sequence[int], dtype: np.dtype) -> int:
    """Bytes of a network's parameters and momentum velocity (two buffers)."""
    n_params = sum(int(a) * int(b) + int(b) for a, b in zip(sizes[:-1], sizes[1:]))
    return 2 * n_params * np.dtype(dtype).itemsize


def check_network_size(sizes: Sequence[int], dtype: np.dtype) -> None:
    """A network of these sizes must fit in memory (checked before allocating it)."""
    need = network_nbytes(sizes, dtype)
    # the initialiser draws one layer at a time in float64
    need += max(int(a) * int(b) for a, b in zip(sizes[:-1], sizes[1:])) * 8
    shown = describe(list(sizes))
    check_memory(
        need,
        f"a {np.dtype(dtype)} network with sizes={shown} "
        f"({format_bytes(network_nbytes(sizes, dtype) // 2)} of parameters, twice that "
        "with the momentum velocity)",
        "use fewer or narrower layers, or dtype='float32'",
    )


def workspace_nbytes(layout: Layout, m_max: int) -> int:
    """Bytes of a backend workspace for ``m_max`` rows (an upper bound for every backend)."""
    sizes = [int(s) for s in layout.sizes]
    item = layout.dtype.itemsize
    units = sum(sizes[1:])
    per_row = 4 * units + sizes[0] + 2 * sizes[-1]  # activations, slopes, deltas, z; gathered batch
    n_params = layout.n_params
    return item * (m_max * per_row + 4 * n_params) + 8 * (n_params + 4 * units + 64 * len(sizes))


def check_fit_size(
    layout: Layout, n: int, batch_size: int, epochs: int, record: Any, extra: int = 0
) -> None:
    """Everything ``fit`` allocates (workspace, records, shuffling order) must fit."""
    L = layout.L
    n_batches = -(-n // batch_size)
    rows = epochs * n_batches
    records = 8 * rows  # per mini-batch costs
    records += 8 * (epochs + 1) * N_STATS * L * 2  # epoch and probe statistics
    if record == RECORD_BATCH:
        records += 8 * rows * N_STATS * L
    need = workspace_nbytes(layout, batch_size) + records + 8 * n + extra
    check_memory(
        need,
        f"fit(epochs={epochs}, batch_size={batch_size}, record={record!r}) on {n} examples "
        f"({format_bytes(records)} of records)",
        "record fewer statistics (record='epoch' or None), train for fewer epochs per call, "
        "or use a smaller batch_size",
    )


def check_not_aliasing(arr: Any, name: str, buffers: Sequence[np.ndarray]) -> None:
    """``fit`` writes the parameters while it reads its inputs: refuse inputs that
    share memory with the parameters or the velocity (they would change under it)."""
    if isinstance(arr, np.ndarray) and any(np.may_share_memory(arr, b) for b in buffers):
        raise ValueError(
            f"{name} shares memory with the network's parameters (a view of net.weights, "
            "net.biases or net.params); fit() updates them while reading it, so pass a "
            f"copy: {name}.copy()"
        )
