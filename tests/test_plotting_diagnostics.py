"""fastbp.plotting's figures of the optional statistic groups, from synthetic Histories.

The Histories are built by hand as ``fit(stats=...)`` will record them (columns named in
``fastbp/_diagnostics.py``); ``history.histograms`` is set as an attribute, so the tests
do not depend on ``History`` having it yet.
"""

from __future__ import annotations

import numpy as np
import pytest

matplotlib = pytest.importorskip("matplotlib", reason="matplotlib is the optional plot extra")
matplotlib.use("Agg")

from matplotlib.collections import QuadMesh  # noqa: E402
from matplotlib.colors import LogNorm  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from fastbp import _diagnostics as D  # noqa: E402
from fastbp import plotting  # noqa: E402
from fastbp._history import History, Table  # noqa: E402

L = 3
EPOCHS, BATCHES, EVERY, BATCH_SIZE = 2, 7, 3, 10
SETTINGS = {
    "batch_size": BATCH_SIZE,
    "n_train": BATCHES * BATCH_SIZE,
    "record": "batch",
    "stats_every": EVERY,
    "activation": ["sigmoid", "tanh"],
    "output": "sigmoid",
}


def _xstats(rng, n, sampled):
    """Every XSTAT column, (n, L), NaN on the rows not sampled."""
    cols = {}
    for name in D.XSTAT_NAMES:
        v = rng.uniform(0.5, 50.0, (n, L))
        if name == "gsnr_zero":
            v = rng.integers(0, 20, (n, L)).astype(np.float64)
        v[~sampled] = np.nan
        cols[name] = v
    return cols


def _counts(rng, rows, scales):
    """delta, z and a counts of ``rows`` records: normal values of per-layer scales."""
    delta = np.zeros((rows, L, D.N_DECADE_BINS), np.int64)
    z = np.zeros_like(delta)
    a = np.zeros((rows, L, D.N_LINEAR_BINS), np.int64)
    for r in range(rows):
        for l in range(L):
            d = rng.normal(0.0, scales[l] * 10.0 ** (-r / rows), 40)
            d[:3] = 0.0  # a few exact zeros (relu-like)
            delta[r, l] = D.count(D.decade_index(d), D.N_DECADE_BINS)
            z[r, l] = D.count(D.decade_index(rng.normal(0.0, 3.0, 40)), D.N_DECADE_BINS)
            lo, hi = D.activation_range(D.SIGMOID)
            a[r, l] = D.count(D.linear_index(rng.uniform(-0.1, 1.0, 40), lo, hi), D.N_LINEAR_BINS)
    return delta, z, a


def batch_history(settings=SETTINGS, histograms=True, columns=D.XSTAT_NAMES, seed=0):
    """record="batch": EPOCHS x BATCHES mini-batches, every EVERY-th sampled."""
    rng = np.random.default_rng(seed)
    epoch = np.repeat(np.arange(EPOCHS), BATCHES)
    batch = np.tile(np.arange(BATCHES), EPOCHS)
    sampled = batch % EVERY == 0
    x = _xstats(rng, len(epoch), sampled)
    x["noise_scale"][0] = [-3.0, 0.0, 7.0]  # non-positive: left out of a log plot
    cols = {"epoch": epoch, "batch": batch, "cost": rng.random(len(epoch))}
    cols.update({k: v for k, v in x.items() if k in columns})
    h = History(batch=Table(cols, name="batch"), sizes=(5, 4, 4, 2), settings=settings)
    if histograms:
        rows = np.flatnonzero(sampled)
        delta, z, a = _counts(rng, len(rows), scales=(1e-6, 1e-3, 1e-1))
        delta[2] = z[2] = a[2] = 0  # a sampled mini-batch dropped (on_nonfinite="skip")
        h.histograms = Table(
            {"epoch": epoch[rows], "batch": batch[rows], "delta": delta, "z": z, "a": a},
            name="histograms",
        )
    return h


def epoch_history(seed=1):
    """record="epoch": 4 epochs, epoch 2 without a sampled mini-batch."""
    rng = np.random.default_rng(seed)
    n = 4
    cols = {"epoch": np.arange(n), "train_cost": rng.random(n)}
    cols.update(_xstats(rng, n, np.array([True, True, False, True])))
    settings = dict(SETTINGS, record="epoch", a_range=[[0.0, 1.0], [-2.0, 2.0], [0.0, 1.0]])
    h = History(epoch=Table(cols, name="epoch"), sizes=(5, 4, 4, 2), settings=settings)
    delta, z, a = _counts(rng, n, scales=(1e-5, 1e-2, 1.0))
    delta[2] = z[2] = a[2] = 0
    h.histograms = Table(
        {
            "epoch": np.arange(n),
            "n_sampled": np.array([3, 3, 0, 3]),
            "delta": delta,
            "z": z,
            "a": a,
        },
        name="histograms",
    )
    return h


@pytest.fixture(scope="module")
def hb():
    return batch_history()


@pytest.fixture(scope="module")
def he():
    return epoch_history()


def _finite_positive(x, y):
    keep = np.isfinite(y) & (y > 0)
    return x[keep], y[keep]


# ------------------------------------------------------------------ noise scale, GSNR


def test_noise_scale_lines_are_the_sampled_values(hb, tmp_path):
    png = tmp_path / "ns.png"
    fig = plotting.plot_noise_scale(hb, path=png)
    assert isinstance(fig, Figure) and png.read_bytes()[:4] == b"\x89PNG"
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and ax.get_xlabel() == "mini-batch"
    lines = ax.get_lines()
    assert len(lines) == L + 1  # one per layer, then the batch size
    ns = hb.batch["noise_scale"]
    x = np.arange(len(ns), dtype=float)
    for l, line in enumerate(lines[:L]):
        xe, ye = _finite_positive(x, ns[:, l])
        np.testing.assert_array_equal(line.get_xdata(), xe)
        np.testing.assert_array_equal(line.get_ydata(), ye)
        assert not np.isnan(line.get_ydata()).any()
    # row 0 holds -3 and 0 for layers 1 and 2: left out; 7 for layer 3: kept
    assert lines[0].get_xdata()[0] > 0 and lines[2].get_xdata()[0] == 0
    np.testing.assert_array_equal(lines[L].get_ydata(), [BATCH_SIZE, BATCH_SIZE])
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["layer 1", "layer 2", "layer 3", f"batch size {BATCH_SIZE}"]


def test_noise_scale_epoch_table_and_layer_selection(he):
    fig = plotting.plot_noise_scale(he, layers=[-1, 1], show_batch_size=False)
    (ax,) = fig.axes
    assert ax.get_xlabel() == "epoch"
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines] == ["layer 3", "layer 1"]
    assert lines[0].get_color() == "C2" and lines[1].get_color() == "C0"  # colour of the layer
    ns = he.epoch["noise_scale"]
    xe, ye = _finite_positive(np.arange(4.0), ns[:, 2])
    np.testing.assert_array_equal(lines[0].get_xdata(), xe)
    np.testing.assert_array_equal(lines[0].get_ydata(), ye)
    assert 2.0 not in lines[0].get_xdata()  # the epoch without a sampled mini-batch


def test_default_table_falls_back_to_epoch(he):
    fig = plotting.plot_gsnr(he)
    assert fig.axes[0].get_xlabel() == "epoch"


def test_gsnr_with_zero_variance_panel(hb):
    fig = plotting.plot_gsnr(hb, show_zero=True)
    assert len(fig.axes) == 2
    top, bottom = fig.axes
    assert top.get_yscale() == "log" and bottom.get_yscale() == "linear"
    x = np.arange(len(hb.batch), dtype=float)
    for l in range(L):
        xe, ye = _finite_positive(x, hb.batch["gsnr"][:, l])
        np.testing.assert_array_equal(top.get_lines()[l].get_ydata(), ye)
        np.testing.assert_array_equal(top.get_lines()[l].get_xdata(), xe)
        z = hb.batch["gsnr_zero"][:, l]
        keep = np.isfinite(z)  # zeros are drawn on the linear panel
        np.testing.assert_array_equal(bottom.get_lines()[l].get_xdata(), x[keep])
        np.testing.assert_array_equal(bottom.get_lines()[l].get_ydata(), z[keep])
    assert bottom.get_xlabel() == "mini-batch"
    assert len(plotting.plot_gsnr(hb).axes) == 1


def test_into_callers_axes_and_figure(hb):
    fig = Figure()
    ax1, ax2, ax3 = fig.subplots(1, 3)
    assert plotting.plot_noise_scale(hb, ax=ax1) is fig
    assert plotting.plot_gsnr(hb, show_zero=True, ax=[ax2, ax3]) is fig
    assert len(ax1.get_lines()) == L + 1 and len(ax3.get_lines()) == L
    sub = Figure().subfigures(1, 2)[1]
    assert plotting.plot_gradient_flow(hb, fig=sub) is sub.figure
    assert len(sub.axes) == L + 1
    with pytest.raises(ValueError, match="needs 2 Axes"):
        plotting.plot_gsnr(hb, show_zero=True, ax=ax1)
    with pytest.raises(ValueError, match="not both"):
        plotting.plot_noise_scale(hb, ax=ax1, fig=fig)


# ----------------------------------------------------------------------- errors


def test_missing_columns_say_how_to_record_them(hb):
    plain = History(batch=Table({"epoch": [0], "speed": np.ones((1, L))}, name="batch"))
    with pytest.raises(ValueError, match=r"no 'noise_scale' column: fit with stats=\("):
        plotting.plot_noise_scale(plain)
    with pytest.raises(ValueError, match=r"stats=\('moments',\) or stats='all'"):
        plotting.plot_gsnr(plain)
    with pytest.raises(ValueError, match=r"history has no histograms: fit with stats="):
        plotting.plot_gradient_flow(plain)  # no histograms attribute at all
    plain.histograms = Table(name="histograms")
    with pytest.raises(ValueError, match=r"stats=\('histograms',\) or stats='all'"):
        plotting.plot_gradient_flow(plain)  # an empty table
    no_zero = batch_history(columns=("gsnr",), histograms=False)
    plotting.plot_gsnr(no_zero)
    with pytest.raises(ValueError, match="no 'gsnr_zero' column"):
        plotting.plot_gsnr(no_zero, show_zero=True)
    with pytest.raises(ValueError, match=r"history.epoch has no 'noise_scale' column: .*record="):
        plotting.plot_noise_scale(hb, table="epoch")
    with pytest.raises(ValueError, match="table='probe'"):
        plotting.plot_noise_scale(hb, table="probe")


def test_bad_arguments(hb):
    with pytest.raises(ValueError, match="no layer 0; layers are numbered 1 .. 3"):
        plotting.plot_noise_scale(hb, layers=0)
    with pytest.raises(ValueError, match="no layer 4"):
        plotting.plot_gradient_flow(hb, layers=[1, 4])
    with pytest.raises(TypeError, match="not an int"):
        plotting.plot_gsnr(hb, layers=[1.0])
    with pytest.raises(ValueError, match="quantity='speed'"):
        plotting.plot_gradient_flow(hb, quantity="speed")
    empty = batch_history()
    empty.histograms = Table(
        {k: np.zeros_like(v) for k, v in empty.histograms.items()}, name="histograms"
    )
    with pytest.raises(ValueError, match="holds no count"):
        plotting.plot_gradient_flow(empty)


# ---------------------------------------------------------------- gradient flow


def _meshes(fig):
    return [[c for c in ax.collections if isinstance(c, QuadMesh)] for ax in fig.axes]


def _fractions(counts):
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts / counts.sum(axis=2, keepdims=True)


@pytest.mark.parametrize("quantity", ["delta", "z", "a"])
def test_gradient_flow_images_are_the_normalised_counts(hb, tmp_path, quantity):
    fig = plotting.plot_gradient_flow(hb, quantity, path=tmp_path / "gf.png")
    assert (tmp_path / "gf.png").stat().st_size > 1000
    assert len(fig.axes) == L + 1  # one panel per layer and the colour bar
    counts = hb.histograms[quantity]
    keep = counts.sum(axis=(1, 2)) > 0
    frac = _fractions(counts[keep])
    for l, meshes in enumerate(_meshes(fig)[:L]):
        (mesh,) = meshes
        img = mesh.get_array()
        assert img.shape == (counts.shape[2], int(keep.sum()))
        np.testing.assert_allclose(img.filled(0.0), frac[:, l, :].T, rtol=0, atol=0)
        np.testing.assert_array_equal(img.mask, counts[keep][:, l, :].T == 0)
        assert fig.axes[l].get_title(loc="left") == f"layer {l + 1}"


def test_gradient_flow_time_axis_is_the_mini_batch(hb):
    fig = plotting.plot_gradient_flow(hb)
    counts = hb.histograms["delta"]
    keep = counts.sum(axis=(1, 2)) > 0
    # the histogram rows' (epoch, batch) are rows of history.batch
    rows = [
        int(np.flatnonzero((hb.batch["epoch"] == e) & (hb.batch["batch"] == b))[0])
        for e, b in zip(hb.histograms["epoch"][keep], hb.histograms["batch"][keep])
    ]
    (mesh,) = _meshes(fig)[0]
    x_edges = mesh.get_coordinates()[0, :, 0]
    np.testing.assert_array_equal(x_edges[:-1], rows)
    assert x_edges[-1] - x_edges[-2] == np.median(np.diff(rows))
    assert fig.axes[L - 1].get_xlabel() == "mini-batch"
    # without history.batch: from the settings' batch size and number of examples
    bare = History(sizes=hb.sizes, settings=hb.settings)
    bare.histograms = hb.histograms
    (mesh,) = _meshes(plotting.plot_gradient_flow(bare))[0]
    np.testing.assert_array_equal(mesh.get_coordinates()[0, :-1, 0], rows)


def test_gradient_flow_keeps_empty_records_as_blank_columns(hb):
    fig = plotting.plot_gradient_flow(hb, skip_empty=False, layers=2)
    (mesh,) = _meshes(fig)[0]
    img = mesh.get_array()
    assert img.shape[1] == len(hb.histograms)
    assert img.mask[:, 2].all()  # the dropped mini-batch
    assert len(fig.axes) == 2


def test_gradient_flow_epochs_and_log_colour(he):
    fig = plotting.plot_gradient_flow(he, log=True, layers=[1, 3])
    assert len(fig.axes) == 3
    (mesh,) = _meshes(fig)[0]
    assert isinstance(mesh.norm, LogNorm)
    counts = he.histograms["delta"]
    frac = _fractions(counts)
    assert mesh.norm.vmin == frac[:, [0, 2]][frac[:, [0, 2]] > 0].min()
    np.testing.assert_array_equal(mesh.get_coordinates()[0, :, 0], [0, 1, 3, 4])  # no epoch 2
    np.testing.assert_allclose(mesh.get_array().filled(0), frac[[0, 1, 3], 0].T, atol=0)
    assert fig.axes[1].get_xlabel() == "epoch"
    (mesh,) = _meshes(plotting.plot_gradient_flow(he, log=True, vmin=1e-3))[0]
    assert mesh.norm.vmin == 1e-3


def _decade_boundary(label):
    """Bin index whose lower edge is the decade boundary named by a tick label."""
    lo, _ = D.decade_edges()
    return int(np.flatnonzero(lo == float(label))[0])


@pytest.mark.parametrize("compress", [True, False])
def test_gradient_flow_decade_ticks_sit_on_bin_edges(hb, compress):
    fig = plotting.plot_gradient_flow(hb, compress=compress)
    ax = fig.axes[0]
    (mesh,) = _meshes(fig)[0]
    y_edges = mesh.get_coordinates()[:, 0, 1]
    labels = [t.get_text() for t in ax.get_yticklabels()]
    ticks = ax.get_yticks()
    assert "0" in labels and any(s.startswith("-1e") for s in labels)
    assert any(s.startswith("1e") for s in labels)
    zero = D.decade_edges()[1].index("0")
    for y, s in zip(ticks, labels):
        if s == "0":
            assert y == pytest.approx(0.5 * (y_edges[zero] + y_edges[zero + 1]))
        else:
            assert y == pytest.approx(y_edges[_decade_boundary(s)])
    # the y axis spans the occupied bins and one more each side
    occupied = np.flatnonzero(hb.histograms["delta"].sum(axis=(0, 1)) > 0)
    assert ax.get_ylim() == pytest.approx((y_edges[occupied[0] - 1], y_edges[occupied[-1] + 2]))
    heights = np.diff(y_edges)
    if compress:  # the long empty runs between the two signs are squeezed
        assert heights.min() < 1 and ax.get_ylim()[1] - ax.get_ylim()[0] < 40
    else:
        np.testing.assert_array_equal(heights, 1.0)


def test_gradient_flow_a_ticks_use_the_activation_range(hb, he):
    # from settings["activation"] / ["output"]: sigmoid [0, 1], tanh [-1, 1]
    fig = plotting.plot_gradient_flow(hb, "a")
    first = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    second = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert first == ["0", "0.25", "0.5", "0.75", "1"]
    assert second == ["-1", "-0.5", "0", "0.5", "1"]
    np.testing.assert_array_equal(fig.axes[0].get_yticks(), [1, 6, 11, 16, 21])
    # settings["a_range"] wins
    fig = plotting.plot_gradient_flow(he, "a", layers=2)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["-2", "-1", "0", "1", "2"]
    # unknown activations: bins without values
    bare = History(sizes=hb.sizes)
    bare.histograms = hb.histograms
    fig = plotting.plot_gradient_flow(bare, "a")
    assert "range unknown" in fig.axes[0].get_ylabel()
