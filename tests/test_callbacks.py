"""The callbacks of ``fit`` (``fastbp/callbacks.py``): JSON lines and TensorBoard.

The writers are driven as ``fit`` drives them -- ``on_fit_begin``, calls with a
History whose tables grow, ``on_fit_end`` with the final History -- for two fits,
with Histories built by hand (known values: NaN, infinities, -0.0, subnormals).
Everything written is read back and compared with the tables: every row exactly
once, in order, with the right ``fit`` index, value and (TensorBoard) step.  One test
runs a real ``fit(callbacks=...)`` when ``fit`` has that argument.
"""

from __future__ import annotations

import inspect
import json
import math
import struct
import sys

import numpy as np
import pytest

from fastbp import History, Table, _diagnostics
from fastbp.callbacks import Callback, JSONLinesWriter, TensorBoardWriter

L = 3
NB = 2
EPOCHS = 3
ND, NA = _diagnostics.N_DECADE_BINS, _diagnostics.N_LINEAR_BINS
SPECIAL = [math.nan, math.inf, -math.inf, -0.0, 5e-324, 0.1 + 0.2, 1e-300, 123456789.125]
TABLES = ("batch", "epoch", "validation", "probe", "histograms")


def full_history(seed, hist_mode="batch"):
    """The History of a whole fit of EPOCHS epochs of NB mini-batches."""
    rng = np.random.default_rng(seed)
    n = EPOCHS * NB
    speed = rng.standard_normal((n, L)) * 10.0 ** rng.integers(-20, 3, size=(n, L))
    speed.reshape(-1)[: len(SPECIAL)] = SPECIAL
    batch = Table(
        {
            "epoch": np.repeat(np.arange(EPOCHS), NB),
            "batch": np.tile(np.arange(NB), EPOCHS),
            "size": np.tile(np.array([10, 5], dtype=np.int64), EPOCHS),
            "cost": rng.random(n),
            "speed": speed,
            "gain": np.where(np.arange(L) == L - 1, np.nan, rng.random((n, L))),
        },
        name="batch",
    )
    epoch = Table(
        {
            "epoch": np.arange(EPOCHS),
            "train_cost": rng.random(EPOCHS),
            "n_skipped": np.arange(EPOCHS, dtype=np.int64),
        },
        name="epoch",
    )
    validation = Table(
        {
            "epoch": np.arange(EPOCHS),
            "accuracy": np.array([0.5, math.nan, 0.75]),
            "cost": rng.random(EPOCHS),
        },
        name="validation",
    )
    probe = Table(
        {
            "epoch": np.arange(EPOCHS + 1),
            "cost": np.array([1.0, 0.5, math.inf, 0.25]),
            "speed": rng.random((EPOCHS + 1, L)),
        },
        name="probe",
    )
    counts = {
        "delta": rng.integers(0, 5, size=(EPOCHS, L, ND)),
        "z": rng.integers(0, 5, size=(EPOCHS, L, ND)),
        "a": rng.integers(0, 5, size=(EPOCHS, L, NA)),
    }
    counts["delta"][0, 2] = 0  # an empty histogram: TensorBoard gets none
    counts["delta"][0, 0] = 0
    counts["delta"][0, 0, [0, ND // 2 - 1, ND // 2, ND // 2 + 1, ND - 1]] = [1, 2, 3, 4, 5]
    if hist_mode == "batch":  # mini-batch 1 of each epoch sampled
        index = {"epoch": np.arange(EPOCHS), "batch": np.ones(EPOCHS, dtype=np.int64)}
    else:
        index = {"epoch": np.arange(EPOCHS), "n_sampled": np.full(EPOCHS, NB, dtype=np.int64)}
    histograms = Table({**index, **counts}, name="histograms")
    return History(
        batch,
        epoch,
        probe,
        validation,
        sizes=(4, 6, 6, 3),
        backend="numpy",
        dtype="float64",
        settings={
            "activation": ["sigmoid", "relu"],
            "output": "softmax",
            "n_train": 15,
            "batch_size": 10,
            "eta": 0.1,
            "momentum": {"schedule": "sutskever", "mu_max": 0.99, "period": 250},
            "seed": 7,
        },
        histograms=histograms,
    )


def head(h, **rows):
    """``h`` with its tables cut to ``rows[name]`` rows (the History of a fit so far)."""
    tables = {}
    for name in TABLES:
        t = getattr(h, name)
        r = rows.get(name, len(t))
        tables[name] = Table({k: v[:r] for k, v in t.items()}, name=name)
    return History(**tables, sizes=h.sizes, backend=h.backend, dtype=h.dtype, settings=h.settings)


def after_epoch(h, e):
    """The History passed to the callback after epoch ``e`` (its validation done)."""
    return head(h, batch=(e + 1) * NB, epoch=e + 1, validation=e + 1, probe=e + 1, histograms=e + 1)


def drive(writer, h, mid_epoch=True):
    """Drive ``writer`` through one fit as ``fit`` does (callback_every=1 if mid_epoch)."""
    writer.on_fit_begin(None)
    for e in range(EPOCHS):
        if mid_epoch:  # after mini-batch 0 of epoch e: no epoch row yet
            writer(
                None,
                head(h, batch=e * NB + 1, epoch=e, validation=e, probe=e + 1, histograms=e),
            )
        writer(None, after_epoch(h, e))
    writer.on_fit_end(None, h)  # the last probe row comes with the final History


# ------------------------------------------------------------------------- JSON lines
def decode(v):
    if v is None:
        return math.nan
    if v == "Infinity":
        return math.inf
    if v == "-Infinity":
        return -math.inf
    if isinstance(v, list):
        return [decode(x) for x in v]
    return v


def assert_same(values, column):
    """JSON values equal a table column: floats bit for bit (NaN as NaN)."""
    got = np.array(decode(values))
    if column.dtype.kind == "f":
        got = got.astype(np.float64)
        assert got.shape == column.shape
        nan = np.isnan(column)
        assert (np.isnan(got) == nan).all()
        assert (got[~nan].view(np.int64) == column[~nan].view(np.int64)).all()
    else:
        assert got.dtype.kind in "iu"
        np.testing.assert_array_equal(got, column)


def read_jsonl(path):
    def no_constants(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    with open(path, encoding="utf-8") as f:
        return [json.loads(line, parse_constant=no_constants) for line in f]


def check_fit_rows(docs, fit, h, tables=TABLES):
    """The rows of ``fit`` in ``docs`` are exactly the tables of ``h``, in order."""
    mine = [d for d in docs if d["fit"] == fit and d["table"] != "header"]
    assert {d["table"] for d in mine} == set(tables)
    for name in tables:
        t = getattr(h, name)
        rows = [d for d in mine if d["table"] == name]
        assert len(rows) == len(t)
        for d in rows:
            assert list(d) == ["fit", "table", *t.keys()]
        for key in t:
            assert_same([d[key] for d in rows], t[key])


def test_jsonl_two_fits_growing_tables(tmp_path):
    path = tmp_path / "run.jsonl"
    h0, h1 = full_history(0), full_history(1)
    w = JSONLinesWriter(path)
    assert w.fit == -1
    drive(w, h0)
    assert w.fit == 0 and w._file is None  # closed at the end of the fit
    drive(w, h1, mid_epoch=False)
    assert w.fit == 1 and w._file is None
    docs = read_jsonl(path)
    check_fit_rows(docs, 0, h0)
    check_fit_rows(docs, 1, h1)
    assert [d["fit"] for d in docs] == sorted(d["fit"] for d in docs)
    n0 = sum(len(getattr(h0, t)) for t in TABLES)
    assert len(docs) == n0 + sum(len(getattr(h1, t)) for t in TABLES)
    # the lines are written as the tables grow: epoch 0's rows before epoch 1's
    first = docs[:n0]
    epochs_seen = [d["epoch"] for d in first if d["table"] == "batch"]
    assert epochs_seen == sorted(epochs_seen)
    i_val0 = next(i for i, d in enumerate(first) if d["table"] == "validation")
    i_batch_e1 = next(i for i, d in enumerate(first) if d["table"] == "batch" and d["epoch"] == 1)
    assert i_val0 < i_batch_e1
    assert first[-1]["table"] == "probe" and first[-1]["epoch"] == EPOCHS  # written at the end


def test_jsonl_values_spelled_out(tmp_path):
    path = tmp_path / "run.jsonl"
    with JSONLinesWriter(path, tables=("batch",), histograms=False) as w:
        w(None, full_history(0))
    lines = path.read_text(encoding="utf-8").splitlines()
    first = json.loads(lines[0])
    assert first["fit"] == 0 and first["table"] == "batch"
    assert first["epoch"] == 0 and first["batch"] == 0 and first["size"] == 10
    assert first["speed"] == [None, "Infinity", "-Infinity"]  # strict JSON, per-layer list
    assert first["gain"][-1] is None
    assert '"speed": [-0.0, 5e-324, 0.30000000000000004]' in lines[1]  # exact repr
    assert "NaN" not in path.read_text()


def test_jsonl_flushes_each_call(tmp_path):
    path = tmp_path / "run.jsonl"
    h = full_history(0)
    w = JSONLinesWriter(path)
    w.on_fit_begin(None)
    w(None, after_epoch(h, 0))
    docs = read_jsonl(path)  # readable while the fit goes on
    assert sum(d["table"] == "batch" for d in docs) == NB
    assert sum(d["table"] == "epoch" for d in docs) == 1
    w(None, after_epoch(h, 0))  # nothing new: nothing written
    assert read_jsonl(path) == docs
    w(None, after_epoch(h, 1))
    assert sum(d["table"] == "batch" for d in read_jsonl(path)) == 2 * NB
    w.on_fit_end(None, h)
    check_fit_rows(read_jsonl(path), 0, h)


def test_jsonl_appends_across_writers_unless_mode_w(tmp_path):
    path = tmp_path / "run.jsonl"
    path.write_text('{"old": 1}\n')
    h = full_history(0)
    drive(JSONLinesWriter(path, tables=("epoch",), histograms=False), h)
    docs = read_jsonl(path)
    assert docs[0] == {"old": 1} and len(docs) == 1 + EPOCHS
    w = JSONLinesWriter(path, tables=("epoch",), histograms=False, mode="w")
    drive(w, h)
    drive(w, h)  # a second fit appends (mode="w" empties the file only once)
    docs = read_jsonl(path)
    assert [d["fit"] for d in docs] == [0] * EPOCHS + [1] * EPOCHS


def test_jsonl_histograms_epoch_mode_and_table_choice(tmp_path):
    path = tmp_path / "run.jsonl"
    h = full_history(3, hist_mode="epoch")
    drive(JSONLinesWriter(path, tables=["probe"], histograms=True), h)
    docs = read_jsonl(path)
    check_fit_rows(docs, 0, h, tables=("probe", "histograms"))
    hist = [d for d in docs if d["table"] == "histograms"]
    assert list(hist[0]) == ["fit", "table", "epoch", "n_sampled", "delta", "z", "a"]
    assert len(hist[0]["a"]) == L and len(hist[0]["a"][0]) == NA
    path2 = tmp_path / "nohist.jsonl"
    drive(JSONLinesWriter(path2, histograms=False), h)
    assert "histograms" not in {d["table"] for d in read_jsonl(path2)}


def test_jsonl_header(tmp_path):
    path = tmp_path / "run.jsonl"
    h = full_history(0)
    w = JSONLinesWriter(path, tables=("epoch",), histograms=False, header=True)
    drive(w, h)
    drive(w, h)
    docs = read_jsonl(path)
    headers = [d for d in docs if d["table"] == "header"]
    assert [d["fit"] for d in headers] == [0, 1]
    assert headers[0]["sizes"] == [4, 6, 6, 3] and headers[0]["backend"] == "numpy"
    assert headers[0]["settings"]["momentum"]["schedule"] == "sutskever"
    assert docs[0]["table"] == "header" and docs[EPOCHS + 1]["table"] == "header"


def test_jsonl_without_fit_hooks_and_after_errors(tmp_path):
    """Calls alone start a fit; on_fit_end(None) (fit raised early) ends it cleanly."""
    path = tmp_path / "run.jsonl"
    h = full_history(0)
    w = JSONLinesWriter(path, tables=("epoch",), histograms=False)
    w(None, after_epoch(h, 0))
    w(None, after_epoch(h, 1))
    w.on_fit_end(None, None)  # fit raised: nothing more to write
    assert w._file is None
    w(None, after_epoch(h, 0))  # the next fit
    w.on_fit_end(None, h)
    docs = read_jsonl(path)
    assert [(d["fit"], d["epoch"]) for d in docs] == [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2)]
    w2 = JSONLinesWriter(tmp_path / "end_only.jsonl", tables=("epoch",), histograms=False)
    w2.on_fit_end(None, h)  # only the end hook: still one fit with every row
    assert [d["epoch"] for d in read_jsonl(tmp_path / "end_only.jsonl")] == [0, 1, 2]


def test_jsonl_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="unknown table 'batches'"):
        JSONLinesWriter(tmp_path / "x.jsonl", tables=("batches",))
    with pytest.raises(ValueError, match="does not exist"):
        JSONLinesWriter(tmp_path / "missing" / "x.jsonl")
    with pytest.raises(ValueError, match="is a directory"):
        JSONLinesWriter(tmp_path)
    with pytest.raises(ValueError, match="mode"):
        JSONLinesWriter(tmp_path / "x.jsonl", mode="r")
    with pytest.raises(TypeError):
        JSONLinesWriter(3)


def test_callback_base_class():
    cb = Callback()
    assert cb.on_fit_begin(None) is None
    assert cb(None, History()) is None
    assert cb.on_fit_end(None, None) is None
    assert issubclass(JSONLinesWriter, Callback) and issubclass(TensorBoardWriter, Callback)


# ------------------------------------------------------------------------ TensorBoard
def read_events(logdir):
    """Every (file, step, tag, value) of the event files, parsed from their records.

    A TensorBoard event file is a sequence of records: uint64 length, masked CRC-32C
    of the length, the serialized ``Event``, masked CRC-32C of the data.
    """
    pytest.importorskip("tensorboardX")
    from tensorboardX.proto import event_pb2
    from tensorboardX.record_writer import masked_crc32c

    out = []
    files = sorted(p for p in logdir.iterdir() if p.name.startswith("events.out.tfevents."))
    for path in files:
        data = path.read_bytes()
        i = 0
        while i < len(data):
            header = data[i : i + 8]
            (n,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[i + 8 : i + 12])[0] == masked_crc32c(header)
            body = data[i + 12 : i + 12 + n]
            assert struct.unpack("<I", data[i + 12 + n : i + 16 + n])[0] == masked_crc32c(body)
            i += 16 + n
            event = event_pb2.Event.FromString(body)
            for v in event.summary.value:
                value = v.histo if v.HasField("histo") else v.simple_value
                out.append((path.name, event.step, v.tag, value))
    return files, out


def f32_equal(a, b):
    a, b = np.float32(a), np.float32(b)
    return (np.isnan(a) and np.isnan(b)) or a == b


def expected_scalars(h, tables, batch_offset, epoch_offset, columns=None):
    """(step, tag, value) of every scalar the writer should write for History ``h``."""
    out = []
    for name in tables:
        t = getattr(h, name)
        for r in range(len(t)):
            if "batch" in t:
                step = batch_offset + int(t["epoch"][r]) * NB + int(t["batch"][r])
            else:
                step = epoch_offset + int(t["epoch"][r])
            for key in t:
                if key in ("epoch", "batch") or (columns and key not in columns):
                    continue
                a = t[key]
                if a.ndim == 1:
                    out.append((step, f"{name}/{key}", float(a[r])))
                else:
                    for l in range(a.shape[1]):
                        out.append((step, f"{name}/{key}/layer_{l}", float(a[r, l])))
    return out


def test_missing_tensorboardx_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboardX", None)
    with pytest.raises(ImportError, match=r'pip install "fastbp\[tensorboard\]"'):
        TensorBoardWriter(tmp_path / "tb")
    assert not (tmp_path / "tb").exists()


def test_tensorboard_scalars_two_fits(tmp_path):
    pytest.importorskip("tensorboardX")
    logdir = tmp_path / "tb"
    h0, h1 = full_history(0), full_history(1)
    w = TensorBoardWriter(logdir, histograms=False)
    assert not logdir.exists()  # nothing opened before the first row
    drive(w, h0)
    assert (w.fit, w.epochs_before, w.batches_before) == (0, EPOCHS, EPOCHS * NB)
    drive(w, h1, mid_epoch=False)
    files, events = read_events(logdir)
    assert len(files) == 2  # one event file per fit, both kept
    tables = ("batch", "epoch", "validation", "probe")
    expected = expected_scalars(h0, tables, 0, 0) + expected_scalars(
        h1, tables, EPOCHS * NB, EPOCHS
    )
    got = [(step, tag, value) for _, step, tag, value in events]
    key = lambda x: (x[1], x[0])  # noqa: E731 - order by tag, then step
    got.sort(key=key)
    expected.sort(key=key)
    assert [(s, t) for s, t, _ in got] == [(s, t) for s, t, _ in expected]
    for (_, tag, g), (_, _, e) in zip(got, expected):
        assert f32_equal(g, e), (tag, g, e)
    tags = {t for _, t, _ in got}
    assert "batch/speed/layer_0" in tags and "validation/accuracy" in tags
    assert "epoch/train_cost" in tags and "probe/speed/layer_2" in tags
    assert not any(t.endswith("/epoch") or t.endswith("/batch") for t in tags)
    # the probe's last row of fit 0 and first row of fit 1 share a step
    probe_steps = sorted(s for s, t, _ in got if t == "probe/cost")
    assert probe_steps == [0, 1, 2, 3, 3, 4, 5, 6]


def test_tensorboard_columns_filter(tmp_path):
    pytest.importorskip("tensorboardX")
    logdir = tmp_path / "tb"
    h = full_history(0)
    with TensorBoardWriter(
        logdir, tables=("batch", "validation"), histograms=False, columns=["speed", "accuracy"]
    ) as w:
        drive(w, h)
    _, events = read_events(logdir)
    assert {tag for _, _, tag, _ in events} == {
        "batch/speed/layer_0",
        "batch/speed/layer_1",
        "batch/speed/layer_2",
        "validation/accuracy",
    }
    expected = expected_scalars(h, ("batch", "validation"), 0, 0, columns=("speed", "accuracy"))
    assert len(events) == len(expected)


def _display(lo, hi):
    lo, hi = list(lo), list(hi)
    if math.isinf(lo[0]):
        lo[0] = hi[0] - (hi[1] - lo[1])
    if math.isinf(hi[-1]):
        hi[-1] = lo[-1] + (hi[-2] - lo[-2])
    return lo, hi


@pytest.mark.parametrize("mode", ["batch", "epoch"])
def test_tensorboard_histograms(tmp_path, mode):
    pytest.importorskip("tensorboardX")
    from fastbp._export import histogram_bins

    logdir = tmp_path / "tb"
    h0, h1 = full_history(0, hist_mode=mode), full_history(1, hist_mode=mode)
    w = TensorBoardWriter(logdir, tables=(), histograms=True)
    drive(w, h0)
    drive(w, h1)
    _, events = read_events(logdir)
    assert all(tag.startswith("histograms/") for _, _, tag, _ in events)
    bins = histogram_bins(h0)
    seen = 0
    for fit, h in enumerate((h0, h1)):
        t = h.histograms
        for r in range(len(t)):
            if mode == "batch":
                step = fit * EPOCHS * NB + int(t["epoch"][r]) * NB + int(t["batch"][r])
            else:
                step = fit * EPOCHS + int(t["epoch"][r])
            for q in ("delta", "z", "a"):
                for l in range(L):
                    counts = t[q][r, l]
                    tag = f"histograms/{q}/layer_{l}"
                    mine = [v for _, s, tg, v in events if s == step and tg == tag]
                    if r == 0 and q == "delta" and l == 2:
                        assert mine == []  # every count 0: no histogram
                        continue
                    assert len(mine) == 1, (step, tag)
                    histo = mine[0]
                    seen += 1
                    nz = np.flatnonzero(counts)
                    first, last = nz[0], nz[-1] + 1
                    assert list(histo.bucket) == counts[first:last].tolist()
                    assert histo.num == counts.sum()
                    limits = np.array(histo.bucket_limit)
                    assert len(limits) == last - first
                    assert np.all(np.diff(limits) > 0) and np.all(np.isfinite(limits))
                    lo, hi = _display(bins[q][0][l], bins[q][1][l])
                    assert histo.min == lo[first] or histo.min < limits[0]
                    assert histo.min < limits[0] and histo.max == limits[-1] == hi[last - 1]
                    for k in range(first, last - 1):  # limits are the upper edges ...
                        if hi[k] != hi[k + 1]:  # ... but the one below the zero bin
                            assert limits[k - first] == hi[k]
                    mid = 0.5 * (np.array(lo) + np.array(hi))[first:last]
                    c = counts[first:last]
                    assert histo.sum == pytest.approx(float(c @ mid), rel=1e-12)
                    assert histo.sum_squares == pytest.approx(float(c @ (mid * mid)), rel=1e-12)
    assert seen == 2 * (EPOCHS * 3 * L - 1)


def test_tensorboard_histogram_of_the_extreme_bins(tmp_path):
    """Overflow bins drawn one neighbour wide; the zero bin's neighbour moved one ulp."""
    pytest.importorskip("tensorboardX")
    logdir = tmp_path / "tb"
    h = full_history(0)
    w = TensorBoardWriter(logdir, tables=(), histograms=True)
    w(None, after_epoch(h, 0))
    w.close()
    _, events = read_events(logdir)
    (histo,) = [v for _, s, tag, v in events if tag == "histograms/delta/layer_0" and s == 1]
    # counts [1, 2, 3, 4, 5] at: negative overflow, negative underflow, zero,
    # positive underflow, positive overflow
    assert histo.num == 15 and len(histo.bucket) == ND
    nonzero = {i: c for i, c in enumerate(histo.bucket) if c}
    assert nonzero == {0: 1, ND // 2 - 1: 2, ND // 2: 3, ND // 2 + 1: 4, ND - 1: 5}
    limits = list(histo.bucket_limit)
    assert limits[0] == -1e15 and histo.min == -1e15 - (1e15 - 1e14)
    assert limits[ND // 2 - 1] == -5e-324 and limits[ND // 2] == 0.0
    assert limits[ND // 2 + 1] == 1e-45 and limits[-1] == histo.max == 1e15 + (1e15 - 1e14)


def test_tensorboard_bad_arguments(tmp_path):
    pytest.importorskip("tensorboardX")
    with pytest.raises(ValueError, match="unknown table"):
        TensorBoardWriter(tmp_path, tables=("weights",))
    with pytest.raises(TypeError, match="filename_suffix"):
        TensorBoardWriter(tmp_path, filename_suffix=".x")


# ----------------------------------------------------------------------- with fit
def test_with_fit(tmp_path):
    """fit(callbacks=...) drives the writers: the JSON lines equal the returned History."""
    import fastbp

    if "callbacks" not in inspect.signature(fastbp.Network.fit).parameters:
        pytest.skip("Network.fit has no callbacks= argument in this tree")
    rng = np.random.default_rng(0)
    X = rng.random((30, 4))
    y = rng.integers(0, 3, 30)
    path = tmp_path / "fit.jsonl"
    w = JSONLinesWriter(path, header=True)
    calls = []
    net = fastbp.Network([4, 5, 5, 3], seed=1)
    with fastbp.use_backend("numpy"):
        histories = [
            net.fit(
                X,
                y,
                epochs=2,
                batch_size=10,
                eta=0.1,
                record="batch",
                probe=(X[:10], y[:10]),
                validation=(X[:10], y[:10]),
                seed=2,
                callbacks=[w, lambda net, h: calls.append(len(h.batch))],
                callback_every=2,
            )  # fmt: skip
            for _ in range(2)
        ]
    docs = read_jsonl(path)
    for fit, h in enumerate(histories):
        check_fit_rows(docs, fit, h, tables=("batch", "epoch", "validation", "probe"))
    assert calls and calls == sorted(calls[: len(calls) // 2]) * 2
