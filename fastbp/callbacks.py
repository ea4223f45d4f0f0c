"""Callbacks of :meth:`fastbp.Network.fit`: live logs of the History as it grows.

Protocol
--------
``Network.fit(..., callbacks=[cb, ...], callback_every=None)`` accepts any callable
``cb(net, history)``:

* ``cb(net, history)`` is called once per epoch, after the epoch's validation (or,
  with ``callback_every=k``, every ``k`` mini-batches), always from Python, outside
  the compiled code.  ``history`` is the :class:`fastbp.History` of the current
  ``fit`` call so far: between two calls its tables grow (the rows already seen are
  unchanged), and a new ``fit`` call starts new tables from row 0.
* If ``cb`` has a method ``on_fit_begin(net)``, it is called when ``fit`` starts,
  before the first mini-batch.
* If ``cb`` has a method ``on_fit_end(net, history)``, it is called when ``fit``
  ends, with the final History (its last probe row included) -- also when ``fit``
  raises, with the History recorded so far (or ``None`` if there is none).

:class:`Callback` is a base class with no-op methods; subclassing it is optional.

Writers
-------
:class:`JSONLinesWriter` appends every new row of the History to a JSON-lines file,
:class:`TensorBoardWriter` writes the statistics as TensorBoard scalars and the
histograms (``fit(stats="histograms")``) as TensorBoard histograms.  Both remember
how many rows of each table they have written in the current ``fit``, so each call
writes only the new rows, and both keep going across ``fit`` calls.  They can also be
driven by hand: ``writer(None, history)`` writes the rows not yet written, and
``writer.on_fit_end(None, history)`` writes the rest and ends the fit (a call after
that starts the next fit).
"""

from __future__ import annotations

import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._history import encode_float, json_rows

__all__ = ["Callback", "JSONLinesWriter", "TensorBoardWriter"]

#: Tables a writer can follow (``"histograms"`` through ``histograms=True``).
STAT_TABLES = ("batch", "epoch", "probe", "validation")
# Index columns: identify a row, never written as statistics.
_INDEX = ("epoch", "batch", "n_sampled")
_TB_HINT = 'pip install "fastbp[tensorboard]" (or pip install tensorboardX)'


class Callback:
    """Base class of the callbacks of :meth:`fastbp.Network.fit` (optional).

    A callback is any callable ``cb(net, history)``; ``fit`` also calls
    ``on_fit_begin`` and ``on_fit_end`` when the object has them.  This class gives
    all three as no-ops, so a subclass overrides only what it needs.

    Examples
    --------
    >>> class PrintCost(Callback):  # doctest: +SKIP
    ...     def __call__(self, net, history):
    ...         if len(history.epoch):
    ...             print(history.epoch["train_cost"][-1])
    >>> net.fit(X, y, epochs=30, batch_size=10, eta=0.1, callbacks=[PrintCost()])  # doctest: +SKIP
    """

    def on_fit_begin(self, net: Any) -> None:
        """Called when ``fit`` starts, before the first mini-batch.

        Parameters
        ----------
        net : fastbp.Network
        """

    def __call__(self, net: Any, history: Any) -> None:
        """Called after every epoch (after its validation) or every ``callback_every``
        mini-batches.

        Parameters
        ----------
        net : fastbp.Network
        history : fastbp.History
            This ``fit`` call's History so far.
        """

    def on_fit_end(self, net: Any, history: Any) -> None:
        """Called when ``fit`` ends, also when it raises.

        Parameters
        ----------
        net : fastbp.Network
        history : fastbp.History or None
            The final History, or what was recorded before the error (``None`` if
            nothing was).
        """


def _check_tables(tables: Iterable[str] | str, histograms: bool) -> tuple[str, ...]:
    if isinstance(tables, str):
        tables = (tables,)
    out = []
    for t in tables:
        if t not in STAT_TABLES and t != "histograms":
            raise ValueError(
                f"unknown table {t!r}; choose among " + ", ".join(repr(s) for s in STAT_TABLES)
            )
        if t not in out:
            out.append(t)
    if histograms and "histograms" not in out:
        out.append("histograms")
    return tuple(out)


class _RowWriter(Callback, ABC):
    """Follows the tables of successive ``fit`` calls and hands on the new rows.

    Subclasses implement ``_write_rows(history, name, table, start, stop)``,
    ``_after_call()`` (flush), ``_end_fit(history)`` and ``close()``.
    """

    def __init__(self, tables: Iterable[str] | str, histograms: bool) -> None:
        self.tables = _check_tables(tables, histograms)
        self.fit = -1
        self._in_fit = False
        self._written: dict[str, int] = {}
        self._last: Any = None

    # protocol
    def on_fit_begin(self, net: Any) -> None:
        """Start a new fit (ending the current one, if any): rows count from 0 again.

        Parameters
        ----------
        net : fastbp.Network or None
        """
        if self._in_fit:
            self._end_fit(self._last)
        self.fit += 1
        self._in_fit = True
        self._written = dict.fromkeys(self.tables, 0)
        self._last = None

    def __call__(self, net: Any, history: Any) -> None:
        """Write the rows of ``history`` not written yet in this fit.

        Parameters
        ----------
        net : fastbp.Network or None
            Not used.
        history : fastbp.History
            The current fit's History so far.
        """
        if not self._in_fit:
            self.on_fit_begin(net)
        self._write_new(history)

    def on_fit_end(self, net: Any, history: Any = None) -> None:
        """Write the last rows, end the fit and close the output.

        Parameters
        ----------
        net : fastbp.Network or None
            Not used.
        history : fastbp.History or None
            The final History (``None``: nothing more to write).
        """
        try:
            if history is not None:
                if not self._in_fit:
                    self.on_fit_begin(net)
                self._write_new(history)
        finally:
            if self._in_fit:
                self._end_fit(history if history is not None else self._last)
            self._in_fit = False
            self.close()

    @abstractmethod
    def close(self) -> None:
        """Close the output (it is reopened when more rows come)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # internals
    def _write_new(self, history: Any) -> None:
        self._last = history
        for name in self.tables:
            table = getattr(history, name, None)
            if table is None:
                continue
            start, stop = self._written[name], len(table)
            if stop > start:
                self._write_rows(history, name, table, start, stop)
                self._written[name] = stop
        self._after_call()

    @abstractmethod
    def _write_rows(self, history: Any, name: str, table: Any, start: int, stop: int) -> None:
        """Write rows ``start:stop`` of table ``name`` of ``history``."""

    def _after_call(self) -> None:
        pass

    def _end_fit(self, history: Any) -> None:
        pass


# ----------------------------------------------------------------------------- JSON
def _json_default(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return str(x)


def _json_value(v: Any) -> Any:
    """Settings values as strict JSON (non-finite floats as in History.to_json)."""
    if isinstance(v, dict):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return encode_float(float(v))
    return v


class JSONLinesWriter(_RowWriter):
    """Append every new row of a fit's History to a JSON-lines file.

    Each line is one strict JSON object (any JSON parser reads it): one row of one
    table, with the fields ``"fit"`` (index of the ``fit`` call, counted by this
    writer from 0), ``"table"`` (``"batch"``, ``"epoch"``, ``"probe"``,
    ``"validation"`` or ``"histograms"``) and the table's columns.  A scalar column
    is a number, a per-layer column ``(rows, L)`` a list of ``L`` numbers (layer
    ``l`` of ``net.weights[l]``), a histogram column ``(rows, L, bins)`` a list of
    ``L`` lists of counts.  A NaN is written as ``null`` and an infinity as the
    string ``"Infinity"`` or ``"-Infinity"`` (the convention of
    :meth:`fastbp.History.to_json`); floats use Python's shortest round-tripping repr.

    Within a fit each row is written once, in table order (``tables``, then
    ``"histograms"``) at each call; the file is flushed after every call and closed at
    the end of the fit, and the next fit appends to it.

    Parameters
    ----------
    path : str or os.PathLike
        The file.  Its directory must exist.
    tables : sequence of str, default ("batch", "epoch", "validation", "probe")
        The tables to write.
    histograms : bool, default True
        Also write the ``"histograms"`` table (``fit(stats="histograms")``).
    mode : {"a", "w"}, default "a"
        ``"a"`` appends to an existing file; ``"w"`` empties it when this writer
        first opens it (later fits still append).
    header : bool, default False
        Before the first row of each fit, write one object with ``"table": "header"``
        and the History's ``sizes``, ``backend``, ``dtype`` and ``settings``.

    Attributes
    ----------
    path : pathlib.Path
    fit : int
        Index of the current (or last) fit, ``-1`` before the first.

    Examples
    --------
    >>> with JSONLinesWriter("run.jsonl") as log:  # doctest: +SKIP
    ...     net.fit(X, y, epochs=30, batch_size=10, eta=0.1, record="batch",
    ...             callbacks=[log])
    >>> rows = [json.loads(line) for line in open("run.jsonl")]  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        tables: Sequence[str] = ("batch", "epoch", "validation", "probe"),
        histograms: bool = True,
        *,
        mode: str = "a",
        header: bool = False,
    ) -> None:
        super().__init__(tables, histograms)
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a file path (str or os.PathLike), got {path!r}")
        if mode not in ("a", "w"):
            raise ValueError(f"mode={mode!r}: choose 'a' (append) or 'w' (truncate)")
        self.path = Path(os.fsdecode(os.fspath(path)))
        directory = self.path.absolute().parent
        if self.path.is_dir():
            raise ValueError(f"path={str(self.path)!r} is a directory; pass a file path")
        if not directory.is_dir():
            raise ValueError(
                f"path={str(self.path)!r}: the directory {str(directory)!r} does not exist"
            )
        self._mode = mode
        self._header = bool(header)
        self._file: Any = None
        self._headed = -1

    def _open(self) -> Any:
        if self._file is None:
            self._file = open(self.path, self._mode, encoding="utf-8")  # noqa: SIM115
            self._mode = "a"
        return self._file

    def _write_new(self, history: Any) -> None:
        if self._header and self._headed != self.fit:
            doc = {
                "fit": self.fit,
                "table": "header",
                "sizes": list(getattr(history, "sizes", ())),
                "backend": getattr(history, "backend", ""),
                "dtype": getattr(history, "dtype", ""),
                "settings": _json_value(dict(getattr(history, "settings", {}) or {})),
            }
            self._open().write(json.dumps(doc, allow_nan=False, default=_json_default) + "\n")
            self._headed = self.fit
        super()._write_new(history)

    def _write_rows(self, history: Any, name: str, table: Any, start: int, stop: int) -> None:
        keys = list(table.keys())
        columns = [json_rows(table[k][start:stop]) for k in keys]
        f = self._open()
        lines = []
        for values in zip(*columns):
            doc = {"fit": self.fit, "table": name}
            doc.update(zip(keys, values))
            lines.append(json.dumps(doc, allow_nan=False))
        f.write("\n".join(lines) + "\n")

    def _after_call(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Close the file (reopened, appending, when more rows come)."""
        if self._file is not None:
            try:
                self._file.close()
            finally:
                self._file = None


# ----------------------------------------------------------------------- TensorBoard
def _display_edges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Finite edges for drawing: an infinite edge makes its bin as wide as its neighbour."""
    lo, hi = lo.astype(np.float64), hi.astype(np.float64)
    if np.isinf(lo[0]) and len(lo) > 1:
        lo[0] = hi[0] - (hi[1] - lo[1])
    if np.isinf(hi[-1]) and len(hi) > 1:
        hi[-1] = lo[-1] + (hi[-2] - lo[-2])
    return lo, hi


def _raw_histogram(counts: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> dict[str, Any] | None:
    """Arguments of ``SummaryWriter.add_histogram_raw`` for one layer's counts.

    ``lo``/``hi`` are the display edges (finite).  Only the bins from the first to the
    last non-empty one are written; ``sum`` and ``sum_squares`` are approximations
    from the bin midpoints.  ``None`` when every count is 0.
    """
    nz = np.flatnonzero(counts)
    if nz.size == 0:
        return None
    first, last = int(nz[0]), int(nz[-1]) + 1
    c = counts[first:last].astype(np.int64)
    b_lo, b_hi = lo[first:last], hi[first:last]
    limits = b_hi.copy()
    # TensorBoard's bucket i spans (limit[i-1], limit[i]]: make the limits strictly
    # increasing (the signed-decade bins have a zero-width bin at 0).
    for j in range(len(limits) - 1, 0, -1):
        if limits[j - 1] >= limits[j]:
            limits[j - 1] = np.nextafter(limits[j], -np.inf)
    vmin, vmax = float(b_lo[0]), float(limits[-1])
    if vmin >= limits[0]:
        vmin = float(np.nextafter(limits[0], -np.inf))
    mid = 0.5 * (b_lo + b_hi)
    return {
        "min": vmin,
        "max": vmax,
        "num": int(c.sum()),
        "sum": float(np.dot(c, mid)),
        "sum_squares": float(np.dot(c, mid * mid)),
        "bucket_limits": limits.tolist(),
        "bucket_counts": c.tolist(),
    }


def _batches_per_epoch(history: Any) -> int | None:
    settings = getattr(history, "settings", None) or {}
    n, bs = settings.get("n_train"), settings.get("batch_size")
    if isinstance(n, (int, np.integer)) and isinstance(bs, (int, np.integer)) and bs > 0:
        return -(-int(n) // int(bs))
    batch = getattr(history, "batch", None)
    if batch is not None and len(batch) and "batch" in batch:
        return int(np.max(batch["batch"])) + 1
    return None


class TensorBoardWriter(_RowWriter):
    """Write a fit's statistics and histograms to TensorBoard event files (tensorboardX).

    Every new row of the followed tables becomes TensorBoard scalars (one per
    statistic and layer) and every new row of ``history.histograms`` TensorBoard
    histograms (one per quantity and layer); see the Notes for the tags, the steps
    and how the histograms are encoded.

    Parameters
    ----------
    logdir : str or os.PathLike
        Directory of the event files (created if missing).
    tables : sequence of str, default ("batch", "epoch", "validation", "probe")
        The statistic tables to write.
    histograms : bool, default True
        Also write the ``"histograms"`` table (``fit(stats="histograms")``).
    columns : sequence of str, optional
        Write only these statistic columns (e.g. ``("speed", "cost")``); default all.
    flush_interval : float, default 1.0
        Minimum seconds between the flushes done by the calls (0: every call).
    **writer_kwargs
        Passed to ``tensorboardX.SummaryWriter`` (``flush_secs``, default 10 here,
        ``max_queue``, ...).

    Attributes
    ----------
    fit : int
        Index of the current (or last) fit, ``-1`` before the first.
    epochs_before, batches_before : int
        ``E`` and ``B`` of the Notes, for the current fit.

    Raises
    ------
    ImportError
        If tensorboardX is not installed (``pip install "fastbp[tensorboard]"``).

    Notes
    -----
    **Tags.** A scalar column: ``"<table>/<column>"``, e.g. ``"validation/accuracy"``,
    ``"epoch/train_cost"``, ``"batch/cost"``; a per-layer column:
    ``"<table>/<column>/layer_<l>"``, e.g. ``"batch/speed/layer_0"`` (layer ``l`` of
    ``net.weights[l]``); a histogram: ``"histograms/<quantity>/layer_<l>"``,
    quantity ``delta``, ``z`` or ``a``.  The table is part of the tag because the
    same statistic (``speed``, ``cost``) is in several tables, on different steps.

    **Steps**, counted by this writer across the ``fit`` calls it sees.  Rows of
    ``"batch"``, and histogram rows of ``record="batch"``: the cumulative mini-batch
    index ``B + epoch * n_batches + batch``, ``B`` the mini-batches of the earlier
    fits (``n_batches`` per epoch from ``settings["n_train"]`` and
    ``settings["batch_size"]``, else from the largest ``batch`` in the ``batch``
    table, or in the table written).  Rows of ``"epoch"``, ``"probe"`` and
    ``"validation"``, and histogram rows of ``record="epoch"``: the cumulative
    epoch ``E + epoch``, ``E`` the epochs completed by the earlier fits.  Probe row
    ``e`` is measured at the start of epoch ``e``, so a fit's last probe row and the
    next fit's first share a step.

    **Scalars** are TensorBoard's ``simple_value``, a float32: a value below about
    1e-45 in magnitude reads back as 0, and about 7 significant digits are kept.
    NaN and infinities are written as they are.

    **Histograms.** Each quantity and layer of a histogram row gives one
    ``add_histogram_raw`` (none when every count is 0) with the bins from the first
    to the last non-empty one: ``bucket_limits`` their upper edges (see
    ``fastbp._export.histogram_bins``), ``bucket_counts`` the counts.  TensorBoard
    needs finite, increasing limits, so an infinite edge (the overflow bins, the
    ``a`` bins below and above the range) is replaced by one that makes the bin as
    wide as its neighbour, and a limit equal to the next one (the bin below the zero
    bin of the signed decades) is moved down by one ulp.  ``min`` and ``max`` are the
    outer edges of the non-empty bins.  ``sum`` and ``sum_squares`` are
    **approximations** from the bin midpoints (the counts are all that is recorded),
    so the mean and standard deviation TensorBoard derives from them are
    approximate.  TensorBoard draws the signed decades of ``delta`` and ``z``, which
    span many orders of magnitude, on a linear axis.

    **Files.** An event file is opened (lazily) per fit and closed at the end of the
    fit, with a name unique to the process and writer, so several writers and fits
    can share ``logdir``; TensorBoard reads them all.  A call flushes the file (an
    ``fsync``) when ``flush_interval`` seconds have passed since the last flush, so
    per-mini-batch callbacks do not wait on the disk each time; tensorboardX's own
    thread flushes every ``flush_secs`` (10 s by default here), and the end of the fit
    flushes everything.  Writing is one Python call per scalar: with ``record="batch"`` on
    long runs, ``columns=`` limits the volume.

    Examples
    --------
    >>> tb = TensorBoardWriter("runs/deep", columns=("speed", "cost"))  # doctest: +SKIP
    >>> net.fit(X, y, epochs=30, batch_size=10, eta=0.1, record="batch",
    ...         callbacks=[tb])  # doctest: +SKIP
    """

    def __init__(
        self,
        logdir: str | os.PathLike[str],
        tables: Sequence[str] = ("batch", "epoch", "validation", "probe"),
        histograms: bool = True,
        *,
        columns: Sequence[str] | None = None,
        flush_interval: float = 1.0,
        **writer_kwargs: Any,
    ) -> None:
        try:
            import tensorboardX
        except ImportError as exc:
            raise ImportError(f"TensorBoardWriter needs tensorboardX: {_TB_HINT}") from exc
        super().__init__(tables, histograms)
        if not isinstance(logdir, (str, os.PathLike)):
            raise TypeError(f"logdir must be a directory path, got {logdir!r}")
        for key in ("logdir", "log_dir", "filename_suffix"):
            if key in writer_kwargs:
                raise TypeError(f"TensorBoardWriter sets {key!r} itself")
        self.logdir = Path(os.fsdecode(os.fspath(logdir)))
        self.columns = (
            None
            if columns is None
            else frozenset([columns] if isinstance(columns, str) else columns)
        )
        from tensorboardX.proto.summary_pb2 import Summary

        self._summary_writer_cls = tensorboardX.SummaryWriter
        self._summary_cls = Summary
        writer_kwargs.setdefault("flush_secs", 10)
        self._writer_kwargs = writer_kwargs
        self.flush_interval = float(flush_interval)
        self._last_flush = -np.inf
        self._writer: Any = None
        self._n_files = 0
        self.epochs_before = 0
        self.batches_before = 0
        self._max_batch_step = -1
        self._nb: int | None = None

    def _sw(self) -> Any:
        if self._writer is None:
            self.logdir.mkdir(parents=True, exist_ok=True)
            suffix = f".fastbp.{os.getpid()}.{id(self):x}.{self._n_files}"
            self._n_files += 1
            self._writer = self._summary_writer_cls(
                logdir=str(self.logdir), filename_suffix=suffix, **self._writer_kwargs
            )
        return self._writer

    def on_fit_begin(self, net: Any) -> None:
        """Start a new fit; its steps continue after the earlier fits' (see Notes).

        Parameters
        ----------
        net : fastbp.Network or None
        """
        super().on_fit_begin(net)
        self._max_batch_step = -1
        self._nb = None

    def _end_fit(self, history: Any) -> None:
        epochs = len(history.epoch) if history is not None and hasattr(history, "epoch") else 0
        nb = self._nb or (_batches_per_epoch(history) if history is not None else None) or 0
        self.batches_before = max(self.batches_before + epochs * nb, self._max_batch_step + 1)
        self.epochs_before += epochs

    def _steps(self, history: Any, table: Any, start: int, stop: int) -> np.ndarray:
        epoch = np.asarray(table["epoch"][start:stop], dtype=np.int64)
        if "batch" not in table:
            return self.epochs_before + epoch
        if self._nb is None:
            self._nb = _batches_per_epoch(history)
        nb = self._nb if self._nb is not None else int(np.max(table["batch"])) + 1
        steps = self.batches_before + epoch * nb + np.asarray(table["batch"][start:stop])
        self._max_batch_step = max(self._max_batch_step, int(steps.max()))
        return steps

    def _write_rows(self, history: Any, name: str, table: Any, start: int, stop: int) -> None:
        steps = self._steps(history, table, start, stop).tolist()
        sw = self._sw()
        if name == "histograms":
            self._write_histograms(history, table, start, stop, steps, sw)
            return
        tags: list[str] = []
        blocks = []
        for key, arr in table.items():
            if key in _INDEX or (self.columns is not None and key not in self.columns):
                continue
            block = np.asarray(arr[start:stop], dtype=np.float64).reshape(len(steps), -1)
            if np.ndim(arr) == 1:
                tags.append(f"{name}/{key}")
            else:
                tags += [f"{name}/{key}/layer_{l}" for l in range(block.shape[1])]
            blocks.append(block)
        if not tags:
            return
        values = np.concatenate(blocks, axis=1).tolist()
        file_writer = getattr(sw, "_get_file_writer", None)
        for step, row in zip(steps, values):
            if file_writer is None:  # pragma: no cover - another tensorboardX
                for tag, v in zip(tags, row):
                    sw.add_scalar(tag, v, step)
            else:
                # One event per row, as add_scalar would write it value by value
                # (six times faster, and no warning per NaN from tensorboardX).
                summary = self._summary_cls(
                    value=[
                        self._summary_cls.Value(tag=tag, simple_value=v)
                        for tag, v in zip(tags, row)
                    ]
                )
                file_writer().add_summary(summary, step)

    def _write_histograms(
        self, history: Any, table: Any, start: int, stop: int, steps: list[int], sw: Any
    ) -> None:
        from ._export import HIST_QUANTITIES, histogram_bins

        bins = histogram_bins(history)
        for q in HIST_QUANTITIES:
            lo, hi = bins[q]
            edges = [_display_edges(lo[l], hi[l]) for l in range(lo.shape[0])]
            block = np.asarray(table[q][start:stop])
            for step, rows in zip(steps, block):
                for l, counts in enumerate(rows):
                    raw = _raw_histogram(counts, *edges[l])
                    if raw is not None:
                        sw.add_histogram_raw(f"histograms/{q}/layer_{l}", global_step=step, **raw)

    def _after_call(self) -> None:
        now = time.monotonic()
        if self._writer is not None and now - self._last_flush >= self.flush_interval:
            self._writer.flush()
            self._last_flush = time.monotonic()

    def close(self) -> None:
        """Flush and close the event file (a new one is opened when more rows come)."""
        if self._writer is not None:
            try:
                self._writer.close()
            finally:
                self._writer = None
