"""Saving and loading networks and checkpoints: an open, versioned file format.

The format
----------
A fastbp file is a NumPy ``.npz`` archive (a ZIP file of ``.npy`` arrays, stored
uncompressed) with one more member, ``header.json``.  Nothing in it is pickled:
fastbp reads it with ``allow_pickle=False`` and any NumPy can read it::

    >>> f = numpy.load("net.npz", allow_pickle=False)   # doctest: +SKIP
    >>> json.loads(f["header.json"])["sizes"]            # bytes of the JSON header
    >>> f["weights_0"]                                   # W of layer 0, (sizes[1], sizes[0])

Members:

``header.json``
    UTF-8 strict JSON (no NaN tokens), an object with ``format`` (``"fastbp.Network"``),
    ``format_version`` (this is version 1), ``fastbp_version``, ``sizes``,
    ``activations`` (one name per weight layer, the output's last), ``output``,
    ``cost``, ``dtype`` (``"float32"`` or ``"float64"``), ``alpha`` (leaky_relu slope),
    ``init`` (name of the initialiser, for the record), ``arrays`` (every array member:
    name -> ``{"dtype", "shape"}``), ``optimizer`` (``null`` or ``{"n_updates",
    "rng"}``) and ``history`` (``null`` or the History's metadata).
``weights_<l>``, ``biases_<l>``
    ``W[l]`` of shape ``(sizes[l+1], sizes[l])`` (the book's n_out x n_in) and ``b[l]``
    of shape ``(sizes[l+1],)``, in the network dtype, for ``l = 0 .. L-1``.
``velocity_weights_<l>``, ``velocity_biases_<l>`` (with the optimiser state)
    The momentum velocity, same shapes.  ``optimizer.n_updates`` is the update count
    ``t`` of the momentum schedule; ``optimizer.rng`` the state of the shuffling
    generator of :meth:`fastbp.Network.fit` (``{"seed", "bit_generator": "PCG64",
    "state"}``, NumPy's ``bit_generator.state``), so that ``fit(..., seed="continue")``
    draws the same permutations as an uninterrupted run.
``history/<table>/<i>`` (with a History)
    Column ``i`` of table ``batch``, ``epoch``, ``probe`` or ``validation``; the
    column names, the tables' hints and the settings are in ``header["history"]``.

Values are stored as their exact bits, so a save/load round trip is exact.  A
reader refuses a ``format_version`` it does not know (newer files say so).

Writing is atomic: the archive is written to a temporary file in the target's
directory, flushed and ``fsync``-ed, then renamed over the target (``os.replace``),
and the directory is ``fsync``-ed.  An interrupted save (an exception, Ctrl-C, a
crash, a power cut) leaves the previous file intact; at worst a hidden
``.<name>.*.tmp`` file is left behind.

Reading never unpickles and never executes anything: the header is parsed as JSON
and validated, every array member is checked against it (name, dtype, shape, size
in the ZIP directory) before it is read, and the ZIP CRC of every member is
verified.  A corrupted, truncated or foreign file raises
:class:`fastbp.FileFormatError`.

network2
--------
:func:`load` also reads the JSON files of Nielsen's ``network2.py`` (``Network.save``:
``sizes``, ``weights``, ``biases`` as column vectors, ``cost`` as
``"CrossEntropyCost"`` or ``"QuadraticCost"``): a float64 sigmoid network.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import zipfile
from collections.abc import Callable
from typing import IO, Any

import numpy as np

from ._contract import COST_CODES, HIDDEN_ACTIVATIONS, OUTPUT_ACTIVATIONS, aligned_zeros
from ._errors import FileFormatError, TooLargeError
from ._history import History, Table, _decode_value, _encode_value
from ._validation import check_memory, check_network_size, describe

__all__ = ["FORMAT", "FORMAT_VERSION", "load", "load_history", "save"]

FORMAT = "fastbp.Network"
FORMAT_VERSION = 1
HEADER = "header.json"
#: Largest header accepted (it holds names and settings, never arrays).
MAX_HEADER_BYTES = 64 << 20
_ZIP_MAGIC = b"PK\x03\x04"
_NETWORK2_COSTS = {"CrossEntropyCost": "cross_entropy", "QuadraticCost": "quadratic"}


# --------------------------------------------------------------------------- writing


def _umask() -> int:
    """The process umask, read without changing it (Linux), else the usual 0o022."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def atomic_write(path: Any, write: Callable[[IO[bytes]], None]) -> None:
    """Write a file atomically: ``write(f)`` into a temporary file next to ``path``,
    flush, fsync, rename over ``path``, fsync the directory.

    On any exception (KeyboardInterrupt included) the temporary file is removed and
    ``path`` is left as it was.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=directory)
    try:
        try:
            mode = os.stat(path).st_mode & 0o7777  # keep the mode of the file replaced
        except OSError:
            mode = 0o666 & ~_umask()
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            fd = -1
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. a platform without directory fds
        return
    try:
        os.fsync(dfd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(dfd)


def _check_path(path: Any, name: str = "path") -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a file path (str or os.PathLike), got {describe(path)}")
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    return path


def check_writable(path: Any, name: str = "checkpoint") -> str:
    """A path whose directory exists and is writable (checked before a long ``fit``)."""
    path = _check_path(path, name)
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{name}={path!r} is a directory; pass a file path such as 'run.npz'")
    if not os.path.isdir(directory):
        raise ValueError(
            f"{name}={path!r}: the directory {directory!r} does not exist; create it first"
        )
    if not os.access(directory, os.W_OK | os.X_OK):
        raise ValueError(f"{name}={path!r}: the directory {directory!r} is not writable")
    return path


def _history_members(history: History) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    meta: dict[str, Any] = {
        "format": "fastbp.History",
        "sizes": list(history.sizes),
        "backend": history.backend,
        "dtype": history.dtype,
        "settings": _encode_value(history.settings),
        "tables": {},
    }
    arrays = {}
    for t in History.TABLES:
        table = getattr(history, t)
        names = list(table.keys())
        meta["tables"][t] = {"hint": table.hint, "columns": names}
        for i, key in enumerate(names):
            arrays[f"history/{t}/{i}"] = np.ascontiguousarray(table[key])
    return meta, arrays


def save(net: Any, path: Any, *, history: History | None = None, optimizer: bool = True) -> None:
    """Write ``net`` (and optionally its optimiser state and a History) to ``path``.

    See :meth:`fastbp.Network.save`.
    """
    from . import __version__

    path = _check_path(path)
    if history is not None and not isinstance(history, History):
        raise TypeError(f"history must be a fastbp.History or None, got {describe(history)}")
    if not isinstance(optimizer, (bool, np.bool_)):
        raise TypeError(f"optimizer must be True or False, got {describe(optimizer)}")
    lay = net.layout
    arrays: dict[str, np.ndarray] = {}
    for l, (W, b) in enumerate(zip(net.weights, net.biases)):
        arrays[f"weights_{l}"] = np.ascontiguousarray(W)
        arrays[f"biases_{l}"] = np.ascontiguousarray(b)
    opt = None
    if optimizer:
        vel = net._velocity
        for l, (W, b) in enumerate(zip(lay.weight_views(vel), lay.bias_views(vel))):
            arrays[f"velocity_weights_{l}"] = np.ascontiguousarray(W)
            arrays[f"velocity_biases_{l}"] = np.ascontiguousarray(b)
        opt = {"n_updates": int(net.n_updates), "rng": net._rng_record()}
        # the state of fit(stats=...): the origin of "distance", the noise averages
        if net._stats_start is not None:
            arrays["stats_start"] = np.ascontiguousarray(net._stats_start)
        arrays["noise_ema"] = np.ascontiguousarray(net._noise_ema)
    hist_meta = None
    if history is not None:
        hist_meta, hist_arrays = _history_members(history)
        arrays.update(hist_arrays)
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "fastbp_version": __version__,
        "sizes": [int(s) for s in lay.sizes],
        "activations": list(lay.activation_names),
        "output": lay.activation_names[-1],
        "cost": lay.cost_name,
        "dtype": lay.dtype.name,
        "alpha": float(lay.alpha),
        "init": net._init_name,
        "arrays": {k: {"dtype": a.dtype.str, "shape": list(a.shape)} for k, a in arrays.items()},
        "optimizer": opt,
        "history": hist_meta,
    }
    header_bytes = json.dumps(header, allow_nan=False, indent=1).encode("utf-8")

    def write(f: IO[bytes]) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            zf.writestr(HEADER, header_bytes)
            for name, arr in arrays.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as member:
                    np.lib.format.write_array(member, arr, allow_pickle=False)

    atomic_write(path, write)


# --------------------------------------------------------------------------- reading


class _Reader:
    """Validated access to one fastbp archive (raises FileFormatError)."""

    def __init__(self, path: str, zf: zipfile.ZipFile) -> None:
        self.path = path
        self.zf = zf
        self.header = self._read_header()

    def fail(self, reason: str) -> FileFormatError:
        return FileFormatError(self.path, reason)

    def _read_header(self) -> dict[str, Any]:
        try:
            info = self.zf.getinfo(HEADER)
        except KeyError:
            raise self.fail(
                f"a ZIP/.npz file without {HEADER!r}: not a fastbp model (written by "
                "np.savez or another program?)"
            ) from None
        if info.file_size > MAX_HEADER_BYTES:
            raise self.fail(f"its {HEADER} is {info.file_size} bytes, too large for a header")
        raw = self.zf.read(info)  # checks the CRC
        try:
            header = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise self.fail(f"{HEADER} is not valid JSON ({exc})") from None
        if not isinstance(header, dict) or header.get("format") != FORMAT:
            raise self.fail(f"{HEADER} does not describe a {FORMAT} (foreign file?)")
        version = header.get("format_version")
        if not isinstance(version, int) or isinstance(version, bool):
            raise self.fail(f"{HEADER} has no valid format_version ({describe(version)})")
        if version > FORMAT_VERSION:
            raise self.fail(
                f"it has format version {version}, written by fastbp "
                f"{header.get('fastbp_version', '?')}; this fastbp reads version "
                f"{FORMAT_VERSION} only: upgrade fastbp"
            )
        if version < 1:
            raise self.fail(f"format_version {version} is not valid")
        return header

    def array(self, name: str, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """Member ``name``: checked against the header and the expected dtype and shape
        before it is read, its CRC verified."""
        declared = self.header["arrays"].get(name)
        if not isinstance(declared, dict):
            raise self.fail(f"the header does not list the array {name!r}")
        if declared.get("dtype") != dtype.str or declared.get("shape") != list(shape):
            raise self.fail(
                f"array {name!r} is declared as {declared.get('dtype')} {declared.get('shape')} "
                f"but should be {dtype.str} {list(shape)}"
            )
        try:
            info = self.zf.getinfo(name + ".npy")
        except KeyError:
            raise self.fail(f"the array {name!r} is missing (truncated file?)") from None
        nbytes = math.prod(shape) * dtype.itemsize
        # an .npy header is at most a few hundred bytes for these arrays
        if not nbytes <= info.file_size <= nbytes + 4096:
            raise self.fail(
                f"the array {name!r} holds {info.file_size} bytes where {nbytes} (+ its "
                "header) are expected"
            )
        with self.zf.open(info) as f:
            arr = np.lib.format.read_array(f, allow_pickle=False)
            if f.read(1):
                raise self.fail(f"the array {name!r} has trailing bytes")
        if arr.dtype != dtype or arr.shape != shape:
            raise self.fail(
                f"the array {name!r} is {arr.dtype} {arr.shape}, the header says {dtype} {shape}"
            )
        return np.ascontiguousarray(arr)


def _require(reader: _Reader, key: str, kind: type | tuple[type, ...]) -> Any:
    value = reader.header.get(key)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise reader.fail(f"header field {key!r} is missing or invalid ({describe(value)})")
    return value


def _read_network(reader: _Reader) -> Any:
    from ._contract import Layout
    from ._network import Network
    from ._validation import check_activation, check_alpha, check_dtype, check_output_cost
    from ._validation import check_sizes as _check_sizes

    sizes = _require(reader, "sizes", list)
    activations = _require(reader, "activations", list)
    cost = _require(reader, "cost", str)
    dtype_name = _require(reader, "dtype", str)
    alpha = _require(reader, "alpha", (int, float))
    init = reader.header.get("init", "loaded")
    try:
        sizes_t = _check_sizes(sizes)
        L = len(sizes_t) - 1
        if len(activations) != L or not all(isinstance(a, str) for a in activations):
            raise ValueError(f"activations={describe(activations)} does not give {L} names")
        if activations[-1] not in OUTPUT_ACTIVATIONS:
            raise ValueError(f"output activation {activations[-1]!r} is unknown")
        hidden = check_activation(list(activations[:-1]), L) if L > 1 else ()
        if any(a not in HIDDEN_ACTIVATIONS for a in hidden):
            raise ValueError(f"activations={activations!r} holds an unknown name")
        if cost not in COST_CODES:
            raise ValueError(f"cost={cost!r} is unknown")
        check_output_cost(activations[-1], cost, sizes_t[-1])
        dtype = check_dtype(dtype_name)
        alpha = check_alpha(alpha)
    except (ValueError, TypeError) as exc:
        raise reader.fail(f"invalid header: {exc}") from None
    check_network_size(sizes_t, dtype)  # TooLargeError before anything is allocated
    layout = Layout(sizes_t, tuple(hidden) + (activations[-1],), cost, dtype, alpha)
    params = aligned_zeros(layout.n_params, dtype)
    for l, (W, b) in enumerate(zip(layout.weight_views(params), layout.bias_views(params))):
        W[...] = reader.array(f"weights_{l}", dtype, W.shape)
        b[...] = reader.array(f"biases_{l}", dtype, b.shape)
    if not np.all(np.isfinite(params)):
        raise reader.fail("the parameters hold NaN or Inf values")
    velocity = aligned_zeros(params.size, params.dtype)  # unmapped until used
    n_updates = 0
    rng = None
    stats_start = noise_ema = None
    opt = reader.header.get("optimizer")
    if opt is not None:
        if not isinstance(opt, dict):
            raise reader.fail("header field 'optimizer' is invalid")
        for l, (W, b) in enumerate(zip(layout.weight_views(velocity), layout.bias_views(velocity))):
            W[...] = reader.array(f"velocity_weights_{l}", dtype, W.shape)
            b[...] = reader.array(f"velocity_biases_{l}", dtype, b.shape)
        if not np.all(np.isfinite(velocity)):
            raise reader.fail("the momentum velocity holds NaN or Inf values")
        n_updates = opt.get("n_updates")
        if not isinstance(n_updates, int) or isinstance(n_updates, bool) or n_updates < 0:
            raise reader.fail(f"optimizer.n_updates={describe(n_updates)} is invalid")
        rng = opt.get("rng")
        arrays = reader.header["arrays"]
        if "stats_start" in arrays:
            stats_start = reader.array("stats_start", dtype, (layout.n_params,))
        if "noise_ema" in arrays:
            noise_ema = reader.array("noise_ema", np.dtype(np.float64), (2, layout.L))
    net = Network.__new__(Network)
    net._setup(layout, params, velocity, n_updates, init if isinstance(init, str) else "loaded")
    if rng is not None:
        try:
            net._rng_restore(rng)
        except (ValueError, TypeError, KeyError, OverflowError) as exc:
            raise reader.fail(f"optimizer.rng is invalid ({exc})") from None
    net._restore_stats_state(stats_start, noise_ema)
    return net


def _read_history(reader: _Reader) -> History | None:
    meta = reader.header.get("history")
    if meta is None:
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("tables"), dict):
        raise reader.fail("header field 'history' is invalid")
    tables = {}
    for t in History.TABLES:
        spec = meta["tables"].get(t)
        if spec is None and t == "histograms":  # files written before it existed
            continue
        if not isinstance(spec, dict) or not isinstance(spec.get("columns"), list):
            raise reader.fail(f"history table {t!r} is missing from the header")
        columns = {}
        for i, key in enumerate(spec["columns"]):
            name = f"history/{t}/{i}"
            declared = reader.header["arrays"].get(name)
            if not isinstance(declared, dict) or not isinstance(key, str):
                raise reader.fail(f"the history column {name!r} is not declared")
            try:
                dtype = np.dtype(declared.get("dtype"))
                shape = tuple(int(s) for s in declared.get("shape"))
            except (TypeError, ValueError):
                raise reader.fail(f"the history column {name!r} is declared badly") from None
            if dtype.kind not in "biuf" or any(s < 0 for s in shape) or len(shape) not in (1, 2, 3):
                raise reader.fail(f"the history column {name!r} has dtype {dtype} {shape}")
            columns[key] = reader.array(name, dtype, shape)
        try:
            tables[t] = Table(columns, name=t, hint=str(spec.get("hint", "")))
        except ValueError as exc:
            raise reader.fail(f"history table {t!r}: {exc}") from None
    return History(
        **tables,
        sizes=tuple(int(s) for s in meta.get("sizes", ())),
        backend=str(meta.get("backend", "")),
        dtype=str(meta.get("dtype", "")),
        settings=_decode_value(meta.get("settings", {})),
    )


def _open(path: Any, what: Callable[[_Reader], Any]) -> Any:
    path = _check_path(path)
    with open(path, "rb") as f:
        magic = f.read(4)
        if magic == _ZIP_MAGIC:
            try:
                with zipfile.ZipFile(f) as zf:
                    return what(_Reader(path, zf))
            except (FileFormatError, TooLargeError):
                raise
            except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as exc:
                raise FileFormatError(path, f"corrupted or truncated archive ({exc})") from None
            except Exception as exc:  # a malformed member: never let it look like a bug
                raise FileFormatError(
                    path, f"corrupted archive ({type(exc).__name__}: {exc})"
                ) from None
        f.seek(0)
        size = os.fstat(f.fileno()).st_size
        if size == 0:
            raise FileFormatError(path, "the file is empty")
        check_memory(size * 8, f"reading {path!r} ({size} bytes) as network2 JSON", "")
        data = f.read()
    return ("network2", data)


def load(path: Any) -> Any:
    """Read a network saved by :meth:`fastbp.Network.save` (or a network2 JSON file).

    Parameters
    ----------
    path : str or os.PathLike
        A fastbp file (any name; ``.npz`` by convention) or a JSON file written by
        Nielsen's ``network2.Network.save``.

    Returns
    -------
    fastbp.Network
        With its parameters bit for bit as saved and, when the file holds it, the
        optimiser state: momentum velocity, ``n_updates`` and the shuffling generator
        (``fit(..., seed="continue")`` continues it).  A network2 file gives a float64
        sigmoid network with network2's cost.

    Raises
    ------
    fastbp.FileFormatError
        If the file is corrupted, truncated, foreign, or of a newer format version.
    fastbp.TooLargeError
        If the network it describes would not fit in memory.
    OSError
        If the file cannot be opened (``FileNotFoundError``, ``PermissionError``, ...).

    See Also
    --------
    load_history : the History stored with a checkpoint.
    """
    result = _open(path, _read_network)
    if isinstance(result, tuple):
        return _load_network2(_check_path(path), result[1])
    return result


def load_history(path: Any) -> History | None:
    """The History stored in a fastbp file (a checkpoint of ``fit``), or None if it has none.

    Parameters
    ----------
    path : str or os.PathLike

    Returns
    -------
    fastbp.History or None

    Raises
    ------
    fastbp.FileFormatError
        As :func:`load` (a network2 file is a FileFormatError here: it has no History).
    """
    result = _open(path, _read_history)
    if isinstance(result, tuple):
        raise FileFormatError(os.fspath(path), "not a fastbp file (network2 files hold no History)")
    return result


def _network2_array(value: Any, name: str) -> np.ndarray:
    try:
        return np.asarray(value, dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name} is not a rectangular array of numbers ({exc})") from None


def _load_network2(path: str, data: bytes) -> Any:
    from ._network import Network

    def fail(reason: str) -> FileFormatError:
        return FileFormatError(path, reason)

    head = data.lstrip()[:1]
    if head != b"{":
        raise fail("neither a fastbp file (a ZIP/.npz archive) nor a network2 JSON file")
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise fail(f"not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or not {"sizes", "weights", "biases", "cost"} <= set(doc):
        raise fail("a JSON file without network2's keys (sizes, weights, biases, cost)")
    cost = _NETWORK2_COSTS.get(doc["cost"]) if isinstance(doc["cost"], str) else None
    if cost is None:
        raise fail(
            f"network2 cost {describe(doc['cost'])} is not one of {', '.join(_NETWORK2_COSTS)}"
        )
    sizes, weights, biases = doc["sizes"], doc["weights"], doc["biases"]
    if not (isinstance(sizes, list) and isinstance(weights, list) and isinstance(biases, list)):
        raise fail("sizes, weights and biases must be JSON lists")
    try:
        from ._validation import check_sizes

        sizes_t = check_sizes(sizes)
        check_network_size(sizes_t, np.dtype(np.float64))
        Ws = [_network2_array(w, f"weights[{l}]") for l, w in enumerate(weights)]
        bs = [_network2_array(b, f"biases[{l}]") for l, b in enumerate(biases)]
        # network2 stores biases as column vectors (n, 1)
        bs = [b.reshape(-1) if b.ndim == 2 and b.shape[1] == 1 else b for b in bs]
        return Network(
            list(sizes_t),
            activation="sigmoid",
            output="sigmoid",
            cost=cost,
            init=(Ws, bs),
            dtype="float64",
        )
    except TooLargeError:
        raise
    except (ValueError, TypeError, OverflowError) as exc:
        raise fail(f"invalid network2 file: {exc}") from None
