"""The long-format export of a History (``fastbp/_export.py``): pandas and CSV.

* every table gives one row per (record, statistic, layer) -- or (record, quantity,
  layer, bin) for the histograms -- in the documented order, with the documented
  missing values (``<NA>`` in pandas, an empty CSV field);
* values are exact: the CSV holds Python's round-tripping repr (NaN as ``nan``), so
  the csv module and ``pandas.read_csv`` give back the same doubles, bit for bit;
* the histogram edges are those of ``fastbp._diagnostics``;
* the CSV writer needs no pandas, and is atomic; without pandas ``history_to_pandas``
  says how to install it; an empty table says which ``fit`` argument fills it.

The Histories are built by hand with known values (no training), except one test
that exports what ``Network.fit`` returns.
"""

from __future__ import annotations

import csv
import math
import os
import struct
import sys

import numpy as np
import pytest

from fastbp import History, Table, _diagnostics, _export
from fastbp._export import HIST_COLUMNS, STAT_COLUMNS, history_to_csv, history_to_pandas

L = 3
NB = 2  # mini-batches per epoch
EPOCHS = 2
ND, NA = _diagnostics.N_DECADE_BINS, _diagnostics.N_LINEAR_BINS

# Values that test the float formatting: NaN, infinities, -0.0, subnormals, repr edge cases.
SPECIAL = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 0.1 + 0.2, 1e-300, 123456789.125]


def _values(rng, shape, special=False):
    v = rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 5, size=shape)
    if special:
        flat = v.reshape(-1)
        flat[: len(SPECIAL)] = SPECIAL[: flat.size]
    return v


def make_history(seed=0, hist_mode="batch", settings=None):
    rng = np.random.default_rng(seed)
    nrow = EPOCHS * NB
    batch = Table(
        {
            "epoch": np.repeat(np.arange(EPOCHS), NB),
            "batch": np.tile(np.arange(NB), EPOCHS),
            "size": np.array([10, 7] * EPOCHS, dtype=np.int64),
            "cost": np.array([0.5, math.nan, 0.25, 2.0**-40]),
            "speed": _values(rng, (nrow, L), special=True),
            "gain": _values(rng, (nrow, L)),
        },
        name="batch",
    )
    epoch = Table(
        {
            "epoch": np.arange(EPOCHS),
            "train_cost": np.array([1.5, 0.75]),
            "n_skipped": np.array([0, 3], dtype=np.int64),
            "speed": _values(rng, (EPOCHS, L)),
        },
        name="epoch",
    )
    probe = Table(
        {
            "epoch": np.arange(EPOCHS + 1),
            "cost": np.array([2.0, 1.0, math.inf]),
            "speed": _values(rng, (EPOCHS + 1, L)),
        },
        name="probe",
    )
    validation = Table(
        {
            "epoch": np.arange(EPOCHS),
            "accuracy": np.array([0.5, math.nan]),
            "cost": np.array([0.3, 0.2]),
        },
        name="validation",
    )
    if hist_mode == "batch":  # mini-batch 0 of each epoch sampled
        index = {"epoch": np.arange(EPOCHS), "batch": np.zeros(EPOCHS, dtype=np.int64)}
    else:
        index = {"epoch": np.arange(EPOCHS), "n_sampled": np.full(EPOCHS, NB, dtype=np.int64)}
    histograms = Table(
        {
            **index,
            "delta": rng.integers(0, 1000, size=(EPOCHS, L, ND)),
            "z": rng.integers(0, 1000, size=(EPOCHS, L, ND)),
            "a": rng.integers(0, 1000, size=(EPOCHS, L, NA)),
        },
        name="histograms",
    )
    if settings is None:
        settings = {"activation": ["tanh", "relu"], "output": "softmax"}
    return History(
        batch,
        epoch,
        probe,
        validation,
        sizes=(4, 5, 5, 2),
        backend="numpy",
        dtype="float64",
        settings=settings,
        histograms=histograms,
    )


def expected_stat_rows(history, table):
    """The long rows, written the obvious way: (epoch, batch, layer, statistic, value)."""
    t = getattr(history, table)
    rows = []
    for r in range(len(t)):
        e = int(t["epoch"][r])
        b = int(t["batch"][r]) if "batch" in t else None
        for key in t:
            if key in ("epoch", "batch"):
                continue
            a = t[key]
            if a.ndim == 1:
                rows.append((e, b, None, key, float(a[r])))
            else:
                for l in range(a.shape[1]):
                    rows.append((e, b, l, key, float(a[r, l])))
    return rows


def expected_edges(history):
    """(lo, hi) per quantity and layer, from _diagnostics' documented bins."""
    d_lo = list(_diagnostics.decade_edges()[0])
    d_hi = d_lo[1:] + [math.inf]
    settings = history.settings
    if "a_range" in settings:
        ranges = [tuple(r) for r in settings["a_range"]]
    else:
        names = list(settings["activation"]) + [settings["output"]]
        codes = [_export.ACTIVATION_CODES[n] for n in names]
        ranges = [_diagnostics.activation_range(c) for c in codes]
    out = {"delta": [], "z": [], "a": []}
    for l in range(L):
        out["delta"].append((d_lo, d_hi))
        out["z"].append((d_lo, d_hi))
        e = list(_diagnostics.linear_edges(*ranges[l]))
        out["a"].append(([-math.inf] + e, e + [math.inf]))
    return out


def expected_hist_rows(history):
    t = history.histograms
    edges = expected_edges(history)
    rows = []
    for r in range(len(t)):
        e = int(t["epoch"][r])
        b = int(t["batch"][r]) if "batch" in t else None
        for q in ("delta", "z", "a"):
            for l in range(L):
                lo, hi = edges[q][l]
                for k in range(t[q].shape[2]):
                    rows.append((e, b, l, q, k, lo[k], hi[k], int(t[q][r, l, k])))
    return rows


def same(a, b):
    """Equal rows, floats compared bit for bit (NaN equal to NaN, -0.0 not 0.0)."""
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert len(x) == len(y)
        for u, v in zip(x, y):
            if isinstance(u, float) or isinstance(v, float):
                assert isinstance(u, float) and isinstance(v, float), (x, y)
                assert struct.pack("<d", u) == struct.pack("<d", v), (x, y)
            else:
                assert u == v, (x, y)


def frame_rows(df):
    """DataFrame rows as tuples of Python values (None for <NA>)."""
    pd = pytest.importorskip("pandas")
    out = []
    for row in df.itertuples(index=False):
        out.append(
            tuple(
                None
                if v is pd.NA
                else float(v)
                if isinstance(v, (float, np.floating))
                else int(v)
                if isinstance(v, (int, np.integer))
                else v
                for v in row
            )
        )
    return out


def csv_rows(path, floats):
    """The CSV rows parsed by the csv module alone: '' -> None, float columns by float()."""
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = []
        for fields in reader:
            row = []
            for name, s in zip(header, fields):
                if s == "":
                    row.append(None)
                elif name in floats:
                    row.append(float(s))
                elif name in ("statistic", "quantity"):
                    row.append(s)
                else:
                    row.append(int(s))
            rows.append(tuple(row))
    return header, rows


STAT_TABLES = ["batch", "epoch", "probe", "validation"]


# --------------------------------------------------------------------------- pandas
@pytest.mark.parametrize("table", STAT_TABLES)
def test_statistic_table_long_format(table):
    pd = pytest.importorskip("pandas")
    h = make_history()
    df = history_to_pandas(h, table)
    assert list(df.columns) == list(STAT_COLUMNS)
    for c in ("epoch", "batch", "layer"):
        assert df[c].dtype == pd.Int64Dtype()
    assert df["value"].dtype == np.float64
    t = getattr(h, table)
    per_record = sum(
        1 if t[k].ndim == 1 else t[k].shape[1] for k in t if k not in ("epoch", "batch")
    )
    assert len(df) == len(t) * per_record
    same(frame_rows(df), expected_stat_rows(h, table))


def test_batch_table_values_by_hand():
    """A few rows spelled out: scalar columns have no layer, per-layer ones L rows."""
    pytest.importorskip("pandas")
    h = make_history()
    df = history_to_pandas(h)
    rows = frame_rows(df)
    per_record = 2 + 2 * L  # size, cost, speed x L, gain x L
    assert len(rows) == EPOCHS * NB * per_record
    assert rows[0] == (0, 0, None, "size", 10.0)
    assert rows[1] == (0, 0, None, "cost", 0.5)
    assert rows[2][:4] == (0, 0, 0, "speed") and math.isnan(rows[2][4])
    assert rows[3] == (0, 0, 1, "speed", math.inf)
    assert rows[4] == (0, 0, 2, "speed", -math.inf)
    assert rows[5][:4] == (0, 0, 0, "gain")
    second = rows[per_record : 2 * per_record]
    assert second[0] == (0, 1, None, "size", 7.0)
    assert second[1][:4] == (0, 1, None, "cost") and math.isnan(second[1][4])
    assert second[2] == (0, 1, 0, "speed", -0.0) and math.copysign(1, second[2][4]) == -1
    assert second[3] == (0, 1, 1, "speed", 5e-324)
    last = rows[-per_record:]
    assert last[0][:2] == (1, 1)
    # tables without mini-batches: batch is <NA> on every row
    assert df["batch"].notna().all()
    for table in ("epoch", "probe", "validation"):
        assert history_to_pandas(h, table)["batch"].isna().all()
    v = history_to_pandas(h, "validation")
    assert list(v["statistic"]) == ["accuracy", "cost"] * EPOCHS
    assert v["layer"].isna().all()


@pytest.mark.parametrize("mode", ["batch", "epoch"])
def test_histograms_long_format(mode):
    pd = pytest.importorskip("pandas")
    h = make_history(hist_mode=mode)
    df = history_to_pandas(h, "histograms")
    assert list(df.columns) == list(HIST_COLUMNS)
    assert len(df) == EPOCHS * L * (2 * ND + NA)
    for c in ("epoch", "batch", "layer"):
        assert df[c].dtype == pd.Int64Dtype()
    assert df["count"].dtype == np.int64 and df["bin"].dtype == np.int64
    assert df["batch"].isna().all() == (mode == "epoch")
    same(frame_rows(df), expected_hist_rows(h))


def test_histogram_edges():
    pytest.importorskip("pandas")
    h = make_history()
    df = history_to_pandas(h, "histograms")
    first = df[(df.epoch == 0)]
    delta0 = first[(first.quantity == "delta") & (first.layer == 0)]
    assert list(delta0["bin"]) == list(range(ND))
    zero = ND // 2  # the zero bin sits in the middle
    assert delta0["lo"].iloc[zero] == 0.0 and delta0["hi"].iloc[zero] == 0.0
    assert delta0["lo"].iloc[0] == -math.inf and delta0["hi"].iloc[-1] == math.inf
    assert delta0["hi"].iloc[zero + 1] == 1e-45 and delta0["lo"].iloc[-1] == 1e15
    assert (np.diff(delta0["lo"].to_numpy()) >= 0).all()
    # a: tanh [-1, 1], relu [0, 4], softmax [0, 1], N_LINEAR equal bins plus below/above
    for layer, (lo, hi) in enumerate([(-1.0, 1.0), (0.0, 4.0), (0.0, 1.0)]):
        a = first[(first.quantity == "a") & (first.layer == layer)]
        assert a["lo"].iloc[0] == -math.inf and a["hi"].iloc[0] == lo
        assert a["lo"].iloc[1] == lo and a["hi"].iloc[-2] == hi
        assert a["lo"].iloc[-1] == hi and a["hi"].iloc[-1] == math.inf
        np.testing.assert_allclose(
            np.diff(a["lo"].to_numpy()[1:]), (hi - lo) / _diagnostics.N_LINEAR
        )


def test_histogram_a_range_from_settings():
    pytest.importorskip("pandas")
    ranges = [[-2.0, 2.0], [0.0, 8.0], [0.0, 0.5]]
    h = make_history(settings={"a_range": ranges, "activation": "sigmoid", "output": "sigmoid"})
    df = history_to_pandas(h, "histograms")
    same(frame_rows(df), expected_hist_rows(h))
    a = df[(df.quantity == "a") & (df.epoch == 0)]
    for layer, (lo, hi) in enumerate(ranges):
        rows = a[a.layer == layer]
        assert rows["hi"].iloc[0] == lo and rows["lo"].iloc[-1] == hi
    # a single hidden activation name applies to every hidden layer
    h = make_history(settings={"activation": "sigmoid", "output": "linear"})
    edges = _export.histogram_bins(h)
    assert edges["a"][0][0, 1] == 0.0 and edges["a"][1][2, -2] == 4.0  # linear: [-4, 4]
    assert edges["a"][1][0, -2] == 1.0 and edges["a"][0][2, 1] == -4.0


def test_histogram_bad_settings():
    h = make_history(settings={})
    with pytest.raises(ValueError, match="a_range"):
        history_to_csv(h, os.devnull, "histograms")
    h = make_history(settings={"a_range": [[0, 1]]})
    with pytest.raises(ValueError, match="one \\[lo, hi\\] per layer"):
        _export.histogram_bins(h)


# ------------------------------------------------------------------------------ CSV
@pytest.mark.parametrize("table", STAT_TABLES + ["histograms"])
def test_csv_read_back_with_csv_module(tmp_path, table):
    h = make_history()
    path = tmp_path / f"{table}.csv"
    assert history_to_csv(h, path, table) == path
    if table == "histograms":
        header, rows = csv_rows(path, floats=("lo", "hi"))
        assert header == list(HIST_COLUMNS)
        same(rows, expected_hist_rows(h))
    else:
        header, rows = csv_rows(path, floats=("value",))
        assert header == list(STAT_COLUMNS)
        same(rows, expected_stat_rows(h, table))


def test_csv_text_format(tmp_path):
    h = make_history()
    path = history_to_csv(h, tmp_path / "b.csv")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "epoch,batch,layer,statistic,value"
    assert lines[1] == "0,0,,size,10.0"
    assert lines[3] == "0,0,0,speed,nan"
    assert lines[4] == "0,0,1,speed,inf"
    assert lines[5] == "0,0,2,speed,-inf"
    assert "0,1,0,speed,-0.0" in lines
    assert "0,1,1,speed,5e-324" in lines
    assert "0,1,2,speed,0.30000000000000004" in lines  # shortest round-trip repr
    assert "1,1,,cost,9.094947017729282e-13" in lines


@pytest.mark.parametrize("table", STAT_TABLES + ["histograms"])
def test_csv_read_back_with_pandas(tmp_path, table):
    pd = pytest.importorskip("pandas")
    h = make_history()
    path = history_to_csv(h, tmp_path / "t.csv", table)
    back = pd.read_csv(path, dtype={"epoch": "Int64", "batch": "Int64", "layer": "Int64"})
    df = history_to_pandas(h, table)
    pd.testing.assert_frame_equal(back, df, check_exact=True)
    same(frame_rows(back), frame_rows(df))


def test_csv_without_pandas(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    h = make_history()
    path = history_to_csv(h, tmp_path / "p.csv", "probe")
    _, rows = csv_rows(path, floats=("value",))
    same(rows, expected_stat_rows(h, "probe"))


def test_csv_in_chunks(tmp_path, monkeypatch):
    """The writer's chunks (bounded memory) give the same file as one chunk."""
    h = make_history()
    whole = history_to_csv(h, tmp_path / "whole.csv", "histograms").read_bytes()
    monkeypatch.setattr(_export, "_CHUNK_ROWS", 7)
    assert history_to_csv(h, tmp_path / "chunks.csv", "histograms").read_bytes() == whole
    whole = history_to_csv(h, tmp_path / "whole.csv").read_bytes()
    monkeypatch.setattr(_export, "_CHUNK_ROWS", 1)
    assert history_to_csv(h, tmp_path / "chunks.csv").read_bytes() == whole


def test_csv_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "out.csv"
    path.write_text("previous\n")
    # an empty table fails before anything is written
    with pytest.raises(ValueError):
        history_to_csv(History(), path, "probe")
    # a failure half way leaves the previous file and no temporary file
    calls = []

    def failing(name, arr):
        calls.append(name)
        if len(calls) > 3:
            raise RuntimeError("disk full")
        return arr.tolist()

    monkeypatch.setattr(_export, "_format", failing)
    with pytest.raises(RuntimeError, match="disk full"):
        history_to_csv(make_history(), path)
    assert path.read_text() == "previous\n"
    assert os.listdir(tmp_path) == ["out.csv"]
    monkeypatch.undo()
    history_to_csv(make_history(), path)
    assert path.read_text().startswith("epoch,batch,layer,statistic,value\n")
    assert os.listdir(tmp_path) == ["out.csv"]


# --------------------------------------------------------------------------- errors
def test_missing_pandas_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r'pip install "fastbp\[pandas\]"'):
        history_to_pandas(make_history())


@pytest.mark.parametrize(
    ("table", "hint"),
    [
        ("batch", "record='batch'"),
        ("epoch", "completed epoch"),
        ("probe", "probe=(X, y)"),
        ("validation", "validation=(X, y)"),
        ("histograms", "stats='histograms'"),
    ],
)
def test_empty_table_names_the_fit_argument(tmp_path, table, hint):
    h = History()  # tables without hints: the exporter's own
    with pytest.raises(ValueError, match=f"{table!r} table .* empty.*" + _re(hint)):
        history_to_csv(h, tmp_path / "x.csv", table)
    assert not (tmp_path / "x.csv").exists()
    # a table's own hint (what fit() stores) wins
    empty = Table(name=table, hint=f"custom hint for {table}")
    h = History(**{table: empty})
    with pytest.raises(ValueError, match=f"custom hint for {table}"):
        history_to_csv(h, tmp_path / "x.csv", table)
    # columns but no rows (an interrupted fit) is empty too
    with pytest.raises(ValueError, match="empty"):
        history_to_csv(History(**{table: Table({"epoch": []}, name=table)}), os.devnull, table)


def test_empty_table_with_pandas():
    pytest.importorskip("pandas")
    with pytest.raises(ValueError, match=r"pass probe=\(X, y\) to fit\(\)"):
        history_to_pandas(History(), "probe")


def test_unknown_table():
    with pytest.raises(ValueError, match="not a History table"):
        history_to_csv(make_history(), os.devnull, "batches")


def _re(s):
    import re

    return re.escape(s)


# ------------------------------------------------------------------------ with fit
def test_export_what_fit_records(tmp_path):
    """The History of a real fit exports with the documented number of rows."""
    pd = pytest.importorskip("pandas")
    import fastbp

    rng = np.random.default_rng(0)
    X = rng.random((30, 4))
    y = rng.integers(0, 3, 30)
    net = fastbp.Network([4, 5, 5, 3], seed=1)
    with fastbp.use_backend("numpy"):  # the oracle: no compiled extension needed
        h = net.fit(
            X, y, epochs=2, batch_size=10, eta=0.1, record="batch",
            probe=(X[:10], y[:10]), validation=(X[:10], y[:10]), seed=2,
        )  # fmt: skip
    n_layers = 3
    df = history_to_pandas(h, "batch")
    n_stats = len(fastbp.STAT_NAMES)
    assert len(df) == 6 * (2 + n_stats * n_layers)  # size, cost + every statistic per layer
    speed = df[df.statistic == "speed"].sort_values(["epoch", "batch", "layer"])
    np.testing.assert_array_equal(speed["value"].to_numpy(), h.batch["speed"].ravel())
    for table in ("epoch", "probe", "validation"):
        path = history_to_csv(h, tmp_path / f"{table}.csv", table)
        back = pd.read_csv(path, dtype={"epoch": "Int64", "batch": "Int64", "layer": "Int64"})
        pd.testing.assert_frame_equal(back, history_to_pandas(h, table), check_exact=True)
