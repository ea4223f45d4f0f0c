"""A :class:`fastbp.History` table as a tidy long table: pandas DataFrame or CSV file.

:func:`history_to_pandas` and :func:`history_to_csv` write the same rows, in the same
order; the CSV writer needs no pandas.

Statistic tables (``"batch"``, ``"epoch"``, ``"probe"``, ``"validation"``)
    One row per ``(record, statistic, layer)``, columns ``epoch, batch, layer,
    statistic, value``, ordered by record, then by the table's column order, then by
    layer.  ``epoch`` and ``batch`` come from the table's index columns of the same
    names; the tables without a ``batch`` column (all but ``"batch"``) give a missing
    ``batch``.  A per-layer column ``(rows, L)`` (``"speed"``, ``"gain"``, ...) gives
    ``L`` rows per record with ``layer = 0 .. L-1`` (the layer of ``net.weights[l]``);
    a scalar column (``cost``, ``size``, ``train_cost``, ``n_skipped``, ``accuracy``)
    gives one row with a missing ``layer``.  ``value`` is float64 (integer columns
    such as ``size`` and ``n_skipped`` are converted exactly).
Histogram table (``"histograms"``, ``fit(stats="histograms")``)
    One row per ``(record, quantity, layer, bin)``, columns ``epoch, batch, layer,
    quantity, bin, lo, hi, count``, in that order of nesting; ``quantity`` is
    ``"delta"``, ``"z"`` or ``"a"``, ``bin`` the bin's index within its quantity
    (``0 .. N_DECADE_BINS-1`` for ``delta`` and ``z``, ``0 .. N_LINEAR_BINS-1`` for
    ``a``), ``lo`` and ``hi`` its edges (below).  With ``record="epoch"`` the rows are
    epochs and ``batch`` is missing (the table's ``n_sampled`` column, the number of
    mini-batches summed, is not exported: read it from ``history.histograms``).

Missing values
--------------
In a DataFrame the integer columns ``epoch``, ``batch`` and ``layer`` have pandas'
nullable ``Int64`` dtype and a missing value is ``<NA>``; in a CSV file it is an
empty field (``pandas.read_csv`` reads it as NaN, or as ``<NA>`` with
``dtype={"batch": "Int64", "layer": "Int64"}``).  A NaN *value* is ``NaN`` in the
DataFrame and ``nan`` in the CSV file, infinities ``inf`` / ``-inf``; every float is
written with Python's shortest round-tripping ``repr``, so reading the file back gives
the same doubles, bit for bit.

Histogram edges
---------------
``delta`` and ``z`` (signed decades, see ``fastbp/_diagnostics.py``): ``lo`` is
``_diagnostics.decade_edges()[0]`` and ``hi`` the next bin's ``lo`` (``inf`` for the
last bin), so a positive bin holds ``lo <= x < hi``, a negative one ``lo < x <= hi``,
the zero bin ``lo = hi = 0``, the negative overflow bin ``lo = -inf`` and the
positive underflow bin ``0 < x < 1e-45``.  ``a``: bin 0 is ``(-inf, lo_a)``, bins
``1 .. N_LINEAR`` the equal bins of ``_diagnostics.linear_edges(lo_a, hi_a)`` and the
last ``(hi_a, inf)``, where ``(lo_a, hi_a)`` is the layer's range: from
``history.settings["a_range"]`` (a list of ``[lo, hi]`` per layer) when present, else
from the activation names in ``history.settings["activation"]`` (hidden layers) and
``history.settings["output"]`` through ``_diagnostics.activation_range``.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from . import _diagnostics
from ._contract import ACTIVATION_CODES

__all__ = ["histogram_bins", "history_to_csv", "history_to_pandas"]

#: Tables that :func:`history_to_pandas` and :func:`history_to_csv` accept.
EXPORT_TABLES = ("batch", "epoch", "probe", "validation", "histograms")
#: Columns of the long table of a statistic table.
STAT_COLUMNS = ("epoch", "batch", "layer", "statistic", "value")
#: Columns of the long table of the histogram table.
HIST_COLUMNS = ("epoch", "batch", "layer", "quantity", "bin", "lo", "hi", "count")
HIST_QUANTITIES = ("delta", "z", "a")

# Index columns of a History table (not exported as statistics).
_INDEX = ("epoch", "batch", "n_sampled")
# What fills a table, for the error on an empty one whose Table has no hint.
_FILLED_BY = {
    "batch": "per mini-batch rows are recorded with fit(record='batch')",
    "epoch": "fit() adds one row per completed epoch; none was completed",
    "probe": "pass probe=(X, y) to fit()",
    "validation": "pass validation=(X, y) to fit()",
    "histograms": "histograms are recorded with fit(stats='histograms')",
}
# Output rows per chunk of the CSV writer (bounds its memory).
_CHUNK_ROWS = 1 << 17

_PANDAS_HINT = 'pip install "fastbp[pandas]" (or pip install pandas)'


def _require_pandas() -> Any:
    try:
        import pandas as pd
    except ImportError as exc:
        raise ImportError(f"exporting a History to pandas needs pandas: {_PANDAS_HINT}") from exc
    return pd


def _table(history: Any, table: str) -> Any:
    """The non-empty table ``table`` of ``history`` (ValueError naming what fills it)."""
    if not isinstance(table, str) or table not in EXPORT_TABLES:
        raise ValueError(
            f"table={table!r} is not a History table; choose one of "
            + ", ".join(repr(t) for t in EXPORT_TABLES)
        )
    t = getattr(history, table, None)
    if t is None or len(t) == 0:
        hint = (getattr(t, "hint", "") if t is not None else "") or _FILLED_BY[table]
        raise ValueError(f"the {table!r} table of this History is empty: {hint}")
    return t


def _index(t: Any, name: str, r0: int, r1: int) -> np.ndarray:
    """Rows ``r0:r1`` of index column ``name`` as int64, ``-1`` (missing) if absent."""
    if name in t:
        return np.asarray(t[name][r0:r1], dtype=np.int64)
    return np.full(r1 - r0, -1, dtype=np.int64)


# ------------------------------------------------------------------ statistic tables
class _StatPlan:
    """Per-record pattern of the long rows of a statistic table."""

    def __init__(self, t: Any, table: str) -> None:
        self.t = t
        self.columns: list[tuple[str, np.ndarray]] = []
        names: list[str] = []
        layers: list[int] = []
        for key, arr in t.items():
            if key in _INDEX:
                continue
            if arr.dtype.kind not in "biuf":
                raise TypeError(f"column {key!r} of table {table!r} is not numeric ({arr.dtype})")
            if arr.ndim == 1:
                names.append(key)
                layers.append(-1)
            elif arr.ndim == 2:
                names += [key] * arr.shape[1]
                layers += list(range(arr.shape[1]))
            else:
                raise ValueError(
                    f"column {key!r} of table {table!r} has shape {arr.shape}; "
                    "a statistic column is 1-D (scalar) or 2-D (rows, layers)"
                )
            self.columns.append((key, arr))
        self.k = len(names)
        self.names = np.array(names, dtype=object)
        self.layers = np.array(layers, dtype=np.int64)

    def chunk(self, r0: int, r1: int) -> dict[str, np.ndarray]:
        n, k = r1 - r0, self.k
        if k:
            values = np.concatenate(
                [np.asarray(a[r0:r1], dtype=np.float64).reshape(n, -1) for _, a in self.columns],
                axis=1,
            ).ravel()
        else:
            values = np.empty(0, dtype=np.float64)
        return {
            "epoch": np.repeat(_index(self.t, "epoch", r0, r1), k),
            "batch": np.repeat(_index(self.t, "batch", r0, r1), k),
            "layer": np.tile(self.layers, n),
            "statistic": np.tile(self.names, n),
            "value": values,
        }


# ------------------------------------------------------------------- histogram table
def _activation_ranges(history: Any, n_layers: int) -> np.ndarray:
    """``(L, 2)`` ranges of the ``a`` histograms (see the module docstring)."""
    settings = getattr(history, "settings", None) or {}
    if settings.get("a_range") is not None:
        ranges = np.asarray(settings["a_range"], dtype=np.float64)
        if ranges.shape != (n_layers, 2):
            raise ValueError(
                f'history.settings["a_range"] has shape {ranges.shape}; expected '
                f"({n_layers}, 2), one [lo, hi] per layer"
            )
        return ranges
    hidden, output = settings.get("activation"), settings.get("output")
    if hidden is None or output is None:
        raise ValueError(
            "cannot compute the edges of the 'a' histograms: history.settings has neither "
            '"a_range" nor "activation" and "output"'
        )
    names = [hidden] * (n_layers - 1) if isinstance(hidden, str) else list(hidden)
    names.append(output)
    if len(names) != n_layers:
        raise ValueError(f"history.settings names {len(names)} activations for {n_layers} layers")
    try:
        codes = [ACTIVATION_CODES[name] for name in names]
    except KeyError as exc:
        raise ValueError(f"unknown activation {exc.args[0]!r} in history.settings") from None
    return np.array([_diagnostics.activation_range(c) for c in codes], dtype=np.float64)


def _decade_bins() -> tuple[np.ndarray, np.ndarray]:
    lo, _ = _diagnostics.decade_edges()
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.append(lo[1:], np.inf)
    return lo, hi


def _linear_bins(lo_a: float, hi_a: float) -> tuple[np.ndarray, np.ndarray]:
    inner = np.asarray(_diagnostics.linear_edges(lo_a, hi_a), dtype=np.float64)
    lo = np.concatenate([[-np.inf], inner[:-1], [inner[-1]]])
    hi = np.concatenate([[inner[0]], inner[1:], [np.inf]])
    return lo, hi


def histogram_bins(history: Any) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Edges of every histogram bin of ``history.histograms``.

    Parameters
    ----------
    history : History
        With a non-empty ``histograms`` table.

    Returns
    -------
    dict
        ``{"delta": (lo, hi), "z": (lo, hi), "a": (lo, hi)}``; ``lo`` and ``hi`` are
        ``(L, n_bins)`` float64 arrays (see the module docstring).
    """
    t = _table(history, "histograms")
    return _HistPlan(history, t).edges


class _HistPlan:
    """Per-record pattern of the long rows of the histogram table."""

    def __init__(self, history: Any, t: Any) -> None:
        self.t = t
        expected = {
            "delta": _diagnostics.N_DECADE_BINS,
            "z": _diagnostics.N_DECADE_BINS,
            "a": _diagnostics.N_LINEAR_BINS,
        }
        n_layers = None
        for q, n_bins in expected.items():
            if q not in t:
                raise ValueError(f"the 'histograms' table has no {q!r} column")
            shape = t[q].shape
            if (
                len(shape) != 3
                or shape[2] != n_bins
                or (n_layers is not None and shape[1] != n_layers)
            ):
                raise ValueError(
                    f"column {q!r} of the 'histograms' table has shape {shape}; expected "
                    f"(rows, layers, {n_bins})"
                )
            n_layers = shape[1]
        assert n_layers is not None
        d_lo, d_hi = _decade_bins()
        ranges = _activation_ranges(history, n_layers)
        a_bins = [_linear_bins(float(lo), float(hi)) for lo, hi in ranges]
        self.edges = {
            "delta": (np.tile(d_lo, (n_layers, 1)), np.tile(d_hi, (n_layers, 1))),
            "z": (np.tile(d_lo, (n_layers, 1)), np.tile(d_hi, (n_layers, 1))),
            "a": (
                np.array([b[0] for b in a_bins]).reshape(n_layers, -1),
                np.array([b[1] for b in a_bins]).reshape(n_layers, -1),
            ),
        }
        quantity, layer, bins, lo, hi = [], [], [], [], []
        for q in HIST_QUANTITIES:
            q_lo, q_hi = self.edges[q]
            n_bins = q_lo.shape[1]
            quantity.append(np.full(n_layers * n_bins, q, dtype=object))
            layer.append(np.repeat(np.arange(n_layers, dtype=np.int64), n_bins))
            bins.append(np.tile(np.arange(n_bins, dtype=np.int64), n_layers))
            lo.append(q_lo.ravel())
            hi.append(q_hi.ravel())
        self.quantity = np.concatenate(quantity)
        self.layer = np.concatenate(layer)
        self.bin = np.concatenate(bins)
        self.lo = np.concatenate(lo)
        self.hi = np.concatenate(hi)
        self.k = len(self.bin)

    def chunk(self, r0: int, r1: int) -> dict[str, np.ndarray]:
        n, k = r1 - r0, self.k
        counts = np.concatenate(
            [np.asarray(self.t[q][r0:r1], dtype=np.int64).reshape(n, -1) for q in HIST_QUANTITIES],
            axis=1,
        ).ravel()
        return {
            "epoch": np.repeat(_index(self.t, "epoch", r0, r1), k),
            "batch": np.repeat(_index(self.t, "batch", r0, r1), k),
            "layer": np.tile(self.layer, n),
            "quantity": np.tile(self.quantity, n),
            "bin": np.tile(self.bin, n),
            "lo": np.tile(self.lo, n),
            "hi": np.tile(self.hi, n),
            "count": counts,
        }


# ------------------------------------------------------------------------- the rows
def _plan(history: Any, table: str) -> tuple[Any, tuple[str, ...], Any]:
    t = _table(history, table)
    if table == "histograms":
        return t, HIST_COLUMNS, _HistPlan(history, t)
    return t, STAT_COLUMNS, _StatPlan(t, table)


def _chunks(t: Any, plan: Any, max_rows: int | None) -> Iterator[dict[str, np.ndarray]]:
    n = len(t)
    step = n if max_rows is None else max(1, max_rows // max(plan.k, 1))
    for r0 in range(0, n, step):
        yield plan.chunk(r0, min(n, r0 + step))


# Integer columns that may be missing (-1 internally).
_NULLABLE = ("epoch", "batch", "layer")


def history_to_pandas(history: Any, table: str = "batch") -> Any:
    """One table of a History as a tidy long :class:`pandas.DataFrame`.

    Parameters
    ----------
    history : History
        What :meth:`fastbp.Network.fit` returned (or :func:`fastbp.load_history` read).
    table : {"batch", "epoch", "probe", "validation", "histograms"}, default "batch"
        The table to export.

    Returns
    -------
    pandas.DataFrame
        Statistic tables: columns ``epoch, batch, layer, statistic, value``, one row
        per record, statistic and layer; histograms: ``epoch, batch, layer, quantity,
        bin, lo, hi, count``, one row per record, quantity, layer and bin.  ``epoch``,
        ``batch`` and ``layer`` are nullable ``Int64``: ``batch`` is ``<NA>`` in the
        tables without mini-batch rows, ``layer`` is ``<NA>`` for the scalar columns
        (``cost``, ``size``, ``train_cost``, ``n_skipped``, ``accuracy``).  See the
        module docstring of ``fastbp._export`` for the order and the histogram edges.

    Raises
    ------
    ImportError
        If pandas is not installed (``pip install "fastbp[pandas]"``).
    ValueError
        If ``table`` is not a table name, or the table is empty (the message names the
        ``fit`` argument that records it).

    See Also
    --------
    history_to_csv : the same rows written to a CSV file, without pandas.

    Examples
    --------
    >>> df = history_to_pandas(history, "batch")  # doctest: +SKIP
    >>> df[df.statistic == "speed"].groupby("layer").value.mean()  # doctest: +SKIP
    """
    pd = _require_pandas()
    t, columns, plan = _plan(history, table)
    data = next(_chunks(t, plan, None), None)
    if data is None:  # pragma: no cover - _table refuses empty tables
        data = {c: np.empty(0) for c in columns}
    frame = {}
    for name in columns:
        arr = data[name]
        if name in _NULLABLE:
            frame[name] = pd.arrays.IntegerArray(arr.astype(np.int64), arr < 0)
        else:
            frame[name] = arr
    return pd.DataFrame(frame, columns=list(columns))


def _format(name: str, arr: np.ndarray) -> list[str] | np.ndarray:
    """Column ``name`` of a chunk as CSV fields."""
    if name in _NULLABLE:
        return np.where(arr < 0, "", arr.astype(str)).tolist()
    if arr.dtype.kind == "f":
        return list(map(repr, arr.tolist()))  # shortest round trip; nan, inf, -inf
    return arr.tolist()


def history_to_csv(history: Any, path: str | os.PathLike[str], table: str = "batch") -> Path:
    """Write one table of a History to a CSV file in the long format; no pandas needed.

    The rows and columns are those of :func:`history_to_pandas`, with a header line.
    Floats are written with Python's shortest round-tripping ``repr`` (NaN as ``nan``,
    infinities as ``inf`` / ``-inf``) and a missing ``epoch``, ``batch`` or ``layer``
    as an empty field.  The file is written atomically: to a temporary file in the
    same directory, then renamed over ``path``, so a failed or interrupted write
    leaves any previous file intact.

    Parameters
    ----------
    history : History
    path : str or os.PathLike
        The CSV file to write (replaced if it exists).
    table : {"batch", "epoch", "probe", "validation", "histograms"}, default "batch"

    Returns
    -------
    pathlib.Path
        ``path``.

    Raises
    ------
    ValueError
        If ``table`` is not a table name, or the table is empty (the message names the
        ``fit`` argument that records it).

    Examples
    --------
    >>> history_to_csv(history, "speeds.csv", table="probe")  # doctest: +SKIP
    >>> pandas.read_csv("speeds.csv", dtype={"batch": "Int64", "layer": "Int64"})  # doctest: +SKIP
    """
    from ._io import _check_path, atomic_write

    target = _check_path(path)
    t, columns, plan = _plan(history, table)  # before touching the file system

    def write(f: Any) -> None:
        text = io.TextIOWrapper(f, encoding="utf-8", newline="")
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(columns)
        for data in _chunks(t, plan, _CHUNK_ROWS):
            writer.writerows(zip(*(_format(c, data[c]) for c in columns)))
        text.flush()
        text.detach()  # atomic_write flushes, fsyncs and closes the binary file

    atomic_write(target, write)
    return Path(target)
