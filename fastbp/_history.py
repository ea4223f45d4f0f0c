"""What :meth:`fastbp.Network.fit` records: four tables of NumPy columns.

A :class:`Table` maps column names to arrays with one row per record.  Index and
scalar columns are 1-D; a per-layer statistic (``"speed"``, ``"gain"``, ...; see
``fastbp.STAT_NAMES``) is a 2-D ``(rows, L)`` float64 array, column ``l`` being the
layer of ``net.weights[l]``.

JSON
----
:meth:`History.to_json` writes strict JSON (no ``NaN`` or ``Infinity`` tokens, so any
parser reads it): a float that is NaN is written as ``null`` and an infinite one as
the string ``"Infinity"`` or ``"-Infinity"``.  Every column stores its dtype and
shape, and floats are written with Python's shortest round-tripping repr, so
:meth:`History.from_json` restores every value, NaN included, bit for bit.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from ._contract import STAT_NAMES

__all__ = ["History", "Table"]

_FORMAT = "fastbp.History"
_VERSION = 1


class Table:
    """Named columns of equal length, one row per record.

    Behaves like a read-only mapping from column name to array, with pandas'
    conventions for the sizes: ``len(table)`` is the number of **rows** and iterating
    over a table yields the **column names**.

    Parameters
    ----------
    columns : mapping of str to array_like, optional
        The columns, in display order; all must have the same length (first axis).
    name : str, optional
        Name of the table (``"batch"``, ``"epoch"``, ``"probe"``, ``"validation"``).
    hint : str, optional
        Why the table is empty (shown when a missing column is asked for).

    Examples
    --------
    >>> h.epoch["speed"].shape  # doctest: +SKIP
    (30, 3)
    >>> list(h.validation)  # doctest: +SKIP
    ['epoch', 'accuracy', 'cost']
    """

    def __init__(
        self, columns: Mapping[str, Any] | None = None, name: str = "", hint: str = ""
    ) -> None:
        self.name = name
        self.hint = hint
        self._columns: dict[str, np.ndarray] = {}
        n_rows = None
        for key, value in (columns or {}).items():
            arr = np.asarray(value).view()  # a view: freezing it leaves the caller's array alone
            if arr.ndim == 0:
                raise ValueError(f"column {key!r} of table {name!r} is a scalar")
            if n_rows is None:
                n_rows = arr.shape[0]
            elif arr.shape[0] != n_rows:
                raise ValueError(
                    f"column {key!r} of table {name!r} has {arr.shape[0]} rows, expected {n_rows}"
                )
            arr.flags.writeable = False
            self._columns[str(key)] = arr
        self._n_rows = 0 if n_rows is None else int(n_rows)

    def __getitem__(self, key: str) -> np.ndarray:
        try:
            return self._columns[key]
        except KeyError:
            cols = ", ".join(self._columns) or "none"
            msg = f"table {self.name!r} has no column {key!r}; columns: {cols}"
            if self.hint:
                msg += f" ({self.hint})"
            raise KeyError(msg) from None

    def __contains__(self, key: object) -> bool:
        return key in self._columns

    def __iter__(self) -> Iterator[str]:
        return iter(self._columns)

    def __len__(self) -> int:
        return self._n_rows

    def keys(self):
        """Column names, in order."""
        return self._columns.keys()

    def items(self):
        """``(name, array)`` pairs, in order."""
        return self._columns.items()

    @property
    def n_rows(self) -> int:
        """Number of rows (same as ``len(table)``)."""
        return self._n_rows

    def to_dict(self, flat: bool = False) -> dict[str, np.ndarray]:
        """The columns as a dict of (writeable) copies.

        Parameters
        ----------
        flat : bool, default False
            Split every 2-D per-layer column ``"speed"`` into 1-D columns ``"speed[0]"``,
            ``"speed[1]"``, ... (handy for ``pandas.DataFrame(table.to_dict(flat=True))``).

        Returns
        -------
        dict of str to ndarray
        """
        out: dict[str, np.ndarray] = {}
        for key, arr in self._columns.items():
            if flat and arr.ndim == 2:
                for l in range(arr.shape[1]):
                    out[f"{key}[{l}]"] = arr[:, l].copy()
            else:
                out[key] = arr.copy()
        return out

    def __eq__(self, other: object) -> bool:
        """Same columns, shapes, dtypes and values (NaN equal to NaN)."""
        if not isinstance(other, Table):
            return NotImplemented
        if list(self._columns) != list(other._columns) or self.name != other.name:
            return False
        for key, a in self._columns.items():
            b = other._columns[key]
            if a.dtype != b.dtype or a.shape != b.shape:
                return False
            if not np.array_equal(a, b, equal_nan=a.dtype.kind == "f"):
                return False
        return True

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        cols = ", ".join(
            k if a.ndim == 1 else f"{k}{list(a.shape[1:])}" for k, a in self._columns.items()
        )
        return f"<Table {self.name!r}: {self._n_rows} rows; columns: {cols or 'none'}>"


class History:
    """Everything one :meth:`fastbp.Network.fit` call recorded.

    Epochs and mini-batches are numbered from 0 within the ``fit`` call.

    Attributes
    ----------
    batch : Table
        ``record="batch"`` only: one row per mini-batch with columns ``epoch``,
        ``batch`` (index within the epoch), ``size`` (examples in it), ``cost`` (its
        mean data cost with the parameters before its update; NaN if skipped) and
        every statistic of ``STAT_NAMES`` as ``(rows, L)``.
    epoch : Table
        One row per completed epoch: ``epoch``, ``train_cost`` (see
        :meth:`fastbp.Network.fit`), ``n_skipped`` (mini-batches dropped with
        ``on_nonfinite="skip"``) and, with ``record="epoch"``, every statistic
        reduced over the epoch.
    probe : Table
        With ``probe=``: rows ``epoch = 0 .. epochs``, row ``e`` measured at the start
        of epoch ``e`` (the last one after training): ``epoch``, ``cost`` (mean data
        cost on the probe set, no L2 term) and every statistic.
    validation : Table
        With ``validation=``: one row per epoch, measured at its end: ``epoch``,
        ``accuracy`` (fraction; NaN for a linear output), ``cost`` (mean data cost
        plus the L2 term ``0.5 * lmbda / len(X_val) * sum ||W||^2``, as network2).
    histograms : Table
        With ``fit(stats="histograms")``: counts of delta, z and a per layer
        (``fastbp/_diagnostics.py`` gives the bins).  ``record="batch"``: one row per
        sampled mini-batch, columns ``epoch``, ``batch``, ``delta`` and ``z``
        ``(rows, L, N_DECADE_BINS)``, ``a`` ``(rows, L, N_LINEAR_BINS)``;
        ``record="epoch"``: one row per epoch (``epoch``, ``n_sampled`` and the
        counts summed over the epoch's sampled mini-batches).
    sizes : tuple of int
        Layer widths of the network.
    backend : str
        Backend that ran the training.
    dtype : str
        ``"float64"`` or ``"float32"``.
    settings : dict
        The ``fit`` arguments that define the run (``eta``, ``lmbda``, ``batch_size``,
        ``momentum``, ``nesterov``, ``record``, ``on_nonfinite``, ``seed`` -- the
        seed actually used, also when ``seed=None`` was passed -- ...).
    """

    TABLES = ("batch", "epoch", "probe", "validation", "histograms")
    stat_names = STAT_NAMES

    def __init__(
        self,
        batch: Table | None = None,
        epoch: Table | None = None,
        probe: Table | None = None,
        validation: Table | None = None,
        sizes: tuple[int, ...] = (),
        backend: str = "",
        dtype: str = "",
        settings: Mapping[str, Any] | None = None,
        histograms: Table | None = None,
    ) -> None:
        self.batch = batch if batch is not None else Table(name="batch")
        self.epoch = epoch if epoch is not None else Table(name="epoch")
        self.probe = probe if probe is not None else Table(name="probe")
        self.validation = validation if validation is not None else Table(name="validation")
        self.histograms = histograms if histograms is not None else Table(name="histograms")
        self.sizes = tuple(int(s) for s in sizes)
        self.backend = str(backend)
        self.dtype = str(dtype)
        self.settings = dict(settings or {})

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, History):
            return NotImplemented
        return (
            all(getattr(self, t) == getattr(other, t) for t in self.TABLES)
            and self.sizes == other.sizes
            and self.backend == other.backend
            and self.dtype == other.dtype
            and self.settings == other.settings
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        rows = ", ".join(f"{t}={len(getattr(self, t))}" for t in self.TABLES)
        return (
            f"<History sizes={list(self.sizes)} backend={self.backend!r} "
            f"dtype={self.dtype!r} rows: {rows}>"
        )

    # ---------------------------------------------------------------- concatenation

    @classmethod
    def concatenate(cls, histories: Sequence[History]) -> History:
        """One History from consecutive parts of a run.

        For example the History stored in a checkpoint (``fit(..., checkpoint=path)``,
        read back with :func:`fastbp.load_history`) and the History of the ``fit``
        that resumed from it (``seed="continue"``): the result equals, bit for bit,
        the History of the whole run done in one call.

        Parameters
        ----------
        histories : sequence of History
            Consecutive parts, each ending at an epoch boundary, recorded with the
            same ``record`` mode and the same network sizes and dtype.

        Returns
        -------
        History
            Epochs renumbered from 0 across the parts.  Each part but the last
            contributes one probe row per epoch (a complete ``fit`` measures the probe
            once more after its last epoch, which is the next part's first row).
            ``settings`` are the first part's, with ``epochs`` the total number of
            epochs and ``n_updates_end`` the last part's.

        Raises
        ------
        ValueError
            If the parts do not have the same sizes, dtype and columns.
        """
        parts = list(histories)
        if not parts:
            raise ValueError("History.concatenate needs at least one History")
        for h in parts:
            if not isinstance(h, History):
                raise TypeError(f"History.concatenate takes History objects, got {type(h)}")
        first, last = parts[0], parts[-1]
        for h in parts[1:]:
            if h.sizes != first.sizes or h.dtype != first.dtype:
                raise ValueError(
                    "cannot concatenate Histories of different networks: sizes "
                    f"{first.sizes} / {h.sizes}, dtype {first.dtype} / {h.dtype}"
                )
        offsets = []
        total = 0
        for h in parts:
            offsets.append(total)
            total += len(h.epoch)
        tables = {}
        for name in cls.TABLES:
            pieces = []
            for i, h in enumerate(parts):
                table = getattr(h, name)
                rows = len(table)
                if name == "probe" and i < len(parts) - 1:
                    rows = min(rows, len(h.epoch))
                pieces.append((table, rows, offsets[i]))
            tables[name] = _concat_tables(name, pieces)
        backends = []
        for h in parts:
            if h.backend not in backends:
                backends.append(h.backend)
        settings = dict(first.settings)
        if "epochs" in settings:
            settings["epochs"] = total
        if "n_updates_end" in last.settings:
            settings["n_updates_end"] = last.settings["n_updates_end"]
        return cls(
            **tables,
            sizes=first.sizes,
            backend="+".join(backends),
            dtype=first.dtype,
            settings=settings,
        )

    # ---------------------------------------------------------------------- export

    def to_pandas(self, table: str = "batch"):
        """One table as a tidy long :class:`pandas.DataFrame` (needs ``fastbp[pandas]``).

        Columns ``epoch, batch, layer, statistic, value``: one row per record, layer and
        statistic (see ``fastbp/_export.py`` for scalar columns and the histograms table).

        Parameters
        ----------
        table : {"batch", "epoch", "probe", "validation", "histograms"}, default "batch"
        """
        from ._export import history_to_pandas

        return history_to_pandas(self, table=table)

    def to_csv(self, path: Any, table: str = "batch") -> None:
        """Write one table in the long format of :meth:`to_pandas` as CSV (no pandas needed).

        Parameters
        ----------
        path : str or os.PathLike
        table : {"batch", "epoch", "probe", "validation", "histograms"}, default "batch"
        """
        from ._export import history_to_csv

        history_to_csv(self, path, table=table)

    # ------------------------------------------------------------------------ JSON

    def to_json(self, indent: int | None = None) -> str:
        """Serialise to a strict JSON string (see the module docstring for NaN/Inf).

        Parameters
        ----------
        indent : int, optional
            Passed to :func:`json.dumps`.

        Returns
        -------
        str
        """
        doc = {
            "format": _FORMAT,
            "version": _VERSION,
            "sizes": list(self.sizes),
            "backend": self.backend,
            "dtype": self.dtype,
            "settings": _encode_value(self.settings),
            "tables": {
                t: {
                    "hint": getattr(self, t).hint,
                    "columns": {k: _encode_array(a) for k, a in getattr(self, t).items()},
                }
                for t in self.TABLES
            },
        }
        return json.dumps(doc, indent=indent, allow_nan=False)

    @classmethod
    def from_json(cls, s: str | bytes) -> History:
        """Rebuild a :class:`History` written by :meth:`to_json`.

        Parameters
        ----------
        s : str or bytes

        Returns
        -------
        History
        """
        doc = json.loads(s)
        if not isinstance(doc, dict) or doc.get("format") != _FORMAT:
            raise ValueError("not a fastbp History JSON document (missing 'format')")
        if doc.get("version") != _VERSION:
            raise ValueError(
                f"History JSON version {doc.get('version')!r} is not supported "
                f"(expected {_VERSION})"
            )
        tables = {
            t: Table(
                {k: _decode_array(v) for k, v in doc["tables"][t]["columns"].items()},
                name=t,
                hint=doc["tables"][t].get("hint", ""),
            )
            for t in cls.TABLES
            if t in doc["tables"]  # "histograms" is absent from older documents
        }
        return cls(
            **tables,
            sizes=tuple(doc["sizes"]),
            backend=doc["backend"],
            dtype=doc["dtype"],
            settings=_decode_value(doc["settings"]),
        )


def _concat_tables(name: str, pieces: list[tuple[Table, int, int]]) -> Table:
    """Rows ``[:rows]`` of each table, the ``epoch`` column shifted by its offset."""
    filled = [(t, r, o) for t, r, o in pieces if len(t.keys())]
    if not filled:
        return Table(name=name, hint=pieces[0][0].hint)
    keys = list(filled[0][0].keys())
    for t, _, _ in filled:
        if list(t.keys()) != keys:
            raise ValueError(
                f"cannot concatenate Histories: table {name!r} has columns {keys} in one part "
                f"and {list(t.keys())} in another (record= differs?)"
            )
    columns = {}
    for key in keys:
        arrays = []
        for t, rows, offset in filled:
            a = t[key][:rows]
            if key == "epoch":
                a = a + offset
            arrays.append(a)
        columns[key] = np.concatenate(arrays)
    return Table(columns, name=name, hint=filled[0][0].hint)


def encode_float(x: float) -> Any:
    """A float as strict JSON: NaN -> None, +-inf -> "Infinity"/"-Infinity"."""
    if x != x:
        return None
    if x == float("inf"):
        return "Infinity"
    if x == float("-inf"):
        return "-Infinity"
    return x


def _decode_float(x: Any) -> float:
    if x is None:
        return float("nan")
    if isinstance(x, str):
        return float("inf") if x == "Infinity" else float("-inf")
    return float(x)


def json_rows(a: np.ndarray) -> list[Any]:
    """``a.tolist()`` as strict JSON values: NaN -> None, +-inf -> "Infinity"/"-Infinity"
    (also used by :class:`fastbp.callbacks.JSONLinesWriter`)."""
    if a.dtype.kind == "f":
        a64 = np.asarray(a, dtype=np.float64)
        obj = a64.astype(object)  # Python floats: json writes their shortest exact repr
        obj[np.isnan(a64)] = None
        obj[a64 == np.inf] = "Infinity"
        obj[a64 == -np.inf] = "-Infinity"
        return obj.tolist()
    return a.tolist()


def _encode_array(a: np.ndarray) -> dict[str, Any]:
    return {"dtype": a.dtype.str, "shape": list(a.shape), "data": json_rows(a)}


def _decode_array(d: Mapping[str, Any]) -> np.ndarray:
    dtype = np.dtype(d["dtype"])
    shape = tuple(int(s) for s in d["shape"])
    if dtype.kind == "f":
        obj = np.array(d["data"], dtype=object).reshape(-1)
        nan = np.equal(obj, None)
        obj[nan] = 0.0
        out = obj.astype(np.float64)  # float("Infinity") == inf
        out[nan] = np.nan
        return out.astype(dtype).reshape(shape)
    return np.array(d["data"], dtype=dtype).reshape(shape)


def _encode_value(v: Any) -> Any:
    """Settings values: plain JSON, floats with the NaN/Inf convention."""
    if isinstance(v, dict):
        return {str(k): _encode_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_encode_value(x) for x in v]
    if isinstance(v, float):
        return {"float": encode_float(v)} if not np.isfinite(v) else v
    return v


def _decode_value(v: Any) -> Any:
    if isinstance(v, dict):
        if set(v) == {"float"}:
            return _decode_float(v["float"])
        return {k: _decode_value(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_decode_value(x) for x in v]
    return v
