"""The optional statistic groups of ``fit(stats=...)`` against a direct computation.

The direct computation forms every per-example gradient explicitly from the
network2-style reference (``tests/reference.py``: one backprop per example), then
applies the definitions of ``fastbp/_diagnostics.py`` literally: norms of the
``g_n``, the trace of their sample covariance as ``sum ||g_n - g||^2 / (m - 1)``,
per-parameter variances by ``np.var(ddof=1)``, ``||W - W_0||``, and histogram bins
from ``floor(log10 |x|)``.  None of the kernels' shortcuts (rank-one norms, the
squared-matrix product, power-of-two scaling) appears here.
"""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from helpers import fit_orders, kernel_variants, make_targets, reference_of

import fastbp
from fastbp import _diagnostics as dx

# float64: the fused pass and the reference differ by round-off only; trace_cov and
# the variances are differences of sums of squares (cancellation of a few digits).
# float32: the network trains in float32 while the reference runs in float64, and
# the two trajectories drift apart by ~1e-6 per step; the first mini-batches agree
# to a few 1e-4, and the variance-based ratios (gsnr, noise_scale) amplify it.
RTOL = {np.float64: 1e-8, np.float32: 3e-3}
RTOL_RATIO = {np.float64: 1e-7, np.float32: 3e-2}


def per_example_grads(trace, x, l):
    """``(m, n_out * n_in + n_out)`` per-example gradients of layer ``l`` (W then b)."""
    d = trace.deltas[l]
    a = x if l == 0 else trace.activations[l - 1]
    gw = d[:, :, None] * a[:, None, :]
    return np.concatenate([gw.reshape(len(d), -1), d], axis=1)


def signed_decade(v):
    """Bin of each value by the definition (independent of fastbp's searchsorted)."""
    out = []
    zero = dx.N_DECADES + 2
    for x in np.asarray(v, dtype=np.float64).ravel():
        if x == 0:
            out.append(zero)
            continue
        ax = abs(x)
        if ax < float(f"1e{dx.DECADE_MIN}"):
            pos = 0
        elif ax >= float(f"1e{dx.DECADE_MAX + 1}"):
            pos = dx.N_DECADES + 1
        else:
            k = math.floor(math.log10(ax))
            while ax < float(f"1e{k}"):
                k -= 1
            while ax >= float(f"1e{k + 1}"):
                k += 1
            pos = k - dx.DECADE_MIN + 1
        out.append(zero + 1 + pos if x > 0 else zero - 1 - pos)
    return np.bincount(out, minlength=dx.N_DECADE_BINS)


def linear_bins(v, lo, hi):
    out = []
    for x in np.asarray(v, dtype=np.float64).ravel():
        if x < lo:
            out.append(0)
        elif x > hi:
            out.append(dx.N_LINEAR + 1)
        else:
            out.append(1 + min(int((x - lo) * (dx.N_LINEAR / (hi - lo))), dx.N_LINEAR - 1))
    return np.bincount(out, minlength=dx.N_LINEAR_BINS)


def direct(steps, X, order, batch_size, w_first, beta, every, ema=None):
    """Per mini-batch dicts of every group's values, from explicit per-example gradients."""
    L = len(w_first)
    ema = np.zeros((2, L)) if ema is None else ema
    rows = []
    for k, step in enumerate(steps):
        idx = np.asarray(order)[k * batch_size : (k + 1) * batch_size]
        x = np.asarray(X[idx], dtype=np.float64)
        m = len(idx)
        if k % every:
            rows.append(None)
            continue
        row = {c: np.full(L, np.nan) for c in dx.XSTAT_NAMES}
        hist = np.zeros((L, dx.N_HIST), dtype=np.int64)
        for l in range(L):
            g = per_example_grads(step.trace, x, l)
            gbar = g.mean(axis=0)
            norms = np.linalg.norm(g, axis=1)
            row["pe_norm_mean"][l] = norms.mean()
            row["pe_norm_max"][l] = norms.max()
            if m > 1:
                tr = np.sum((g - gbar) ** 2) / (m - 1)
                row["trace_cov"][l] = tr
                ema[0, l] = beta * ema[0, l] + (1 - beta) * tr
                ema[1, l] = beta * ema[1, l] + (1 - beta) * (gbar @ gbar - tr / m)
                var = np.var(g, axis=0, ddof=1)
                # a parameter whose gradient is the same for every example has zero
                # variance; the kernels see it as <= 0 after round-off
                zero = np.all(g == g[:1], axis=0)
                row["gsnr"][l] = np.mean(gbar[~zero] ** 2 / var[~zero])
                row["gsnr_zero"][l] = np.count_nonzero(zero)
            with np.errstate(invalid="ignore", divide="ignore"):
                row["noise_scale"][l] = ema[0, l] / ema[1, l]
            row["distance"][l] = np.linalg.norm(step.w_new[l] - w_first[l])
            hist[l, dx.H_DELTA : dx.H_Z] = signed_decade(step.trace.deltas[l])
            hist[l, dx.H_Z : dx.H_A] = signed_decade(step.trace.zs[l])
        rows.append((row, hist, m))
    return rows, ema


def assert_close(got, want, rtol, what):
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    assert np.array_equal(np.isnan(got), np.isnan(want)), (what, got, want)
    ok = ~np.isnan(want)
    np.testing.assert_allclose(got[ok], want[ok], rtol=rtol, atol=0, err_msg=what)


def hist_close(got, want, total, what):
    """Equal totals; bins may differ only where a value sits on a bin edge within
    round-off, which random data makes rare: at most 1% of the values move."""
    assert got.sum() == want.sum() == total, (what, got.sum(), want.sum(), total)
    assert np.abs(got - want).sum() <= max(2, total // 100), (what, got, want)


CASES = [
    ("sigmoid", "sigmoid", "cross_entropy"),
    ("tanh", "softmax", "log_likelihood"),
    ("relu", "linear", "quadratic"),
]


@pytest.mark.parametrize("m", [8, 20, 40])  # the compiled moments: vstats.c's fused
# loop up to 32 examples, after a gradient formed inside the update (8, and the short
# last batches of 5) or by BLAS (20), and a BLAS product above 32 (40)
@pytest.mark.parametrize("activation,output,cost", CASES)
def test_groups_match_direct_computation(backend, dtype, activation, output, cost, m, rng):
    sizes = [11, 9, 7, 4]
    n, every, epochs = 45, 2, 2
    net = fastbp.Network(sizes, activation, output, cost, dtype=dtype, seed=3)
    if activation == "relu":
        net.set_params(net.weights, [b * 0 + 0.1 for b in net.biases])
    X = rng.uniform(-1, 1, (n, sizes[0])).astype(dtype)
    X[:, 2] = 0.0  # an input that is 0 for every example: zero-variance weights
    y, Y = make_targets(rng, n, sizes[-1], output, cost)
    ref = reference_of(net, activation, output, cost)
    w_first = [w.copy() for w in ref.weights]
    h = net.fit(X, y, epochs, m, eta=0.3, lmbda=0.5, record="batch", stats="all",
                stats_every=every, noise_ema=0.9, seed=7)  # fmt: skip
    rtol, rtol_ratio = RTOL[dtype.type], RTOL_RATIO[dtype.type]
    ema = None
    nb = -(-n // m)
    hist_row = 0
    for e, order in enumerate(fit_orders(7, n, epochs)):
        steps = ref.train_epoch(X.astype(np.float64), Y, order, m, 0.3, 0.5)
        rows, ema = direct(steps, X, order, m, w_first, 0.9, every, ema)
        for k, r in enumerate(rows):
            i = e * nb + k
            if r is None:
                for c in dx.XSTAT_NAMES:
                    assert np.isnan(h.batch[c][i]).all(), (c, i)
                continue
            if dtype == np.float32 and (e, k) != (0, 0):
                hist_row += 1
                continue  # float32: compare where the trajectories have not drifted
            row, hist, mb = r
            for c in ("pe_norm_mean", "pe_norm_max", "trace_cov", "distance"):
                assert_close(h.batch[c][i], row[c], rtol, f"{c} batch {i}")
            for c in ("gsnr", "noise_scale"):
                assert_close(h.batch[c][i], row[c], rtol_ratio, f"{c} batch {i}")
            if dtype == np.float64:
                assert_close(h.batch["gsnr_zero"][i], row["gsnr_zero"], 0, f"gsnr_zero {i}")
            else:  # the zero-input weights at least (float32 variances of others may round to 0)
                assert (h.batch["gsnr_zero"][i][0] >= sizes[1]).all()
            got = h.histograms
            assert got["epoch"][hist_row] == e and got["batch"][hist_row] == k
            for l in range(len(sizes) - 1):
                width = sizes[l + 1]
                for name, lo, hi in (("delta", dx.H_DELTA, dx.H_Z), ("z", dx.H_Z, dx.H_A)):
                    hist_close(got[name][hist_row, l], hist[l, lo:hi], mb * width, f"{name} {l}")
                a_lo, a_hi = h.settings["a_range"][l]
                want_a = linear_bins(steps[k].trace.activations[l], a_lo, a_hi)
                hist_close(got["a"][hist_row, l], want_a, mb * width, f"a {l}")
            hist_row += 1
    assert hist_row == len(h.histograms)


def test_statistics_do_not_change_training(backend, dtype, rng):
    X = rng.uniform(0, 1, (60, 10)).astype(dtype)
    y = rng.integers(0, 3, 60)
    nets = [fastbp.Network([10, 8, 8, 3], dtype=dtype, seed=1) for _ in range(3)]
    nets[0].fit(X, y, 2, 7, 0.5, momentum=0.5, record=None, seed=0)
    nets[1].fit(X, y, 2, 7, 0.5, momentum=0.5, record="batch", stats="all", seed=0)
    nets[2].fit(X, y, 2, 7, 0.5, momentum=0.5, record="epoch", stats="all", seed=0)
    for other in nets[1:]:
        assert np.array_equal(other.params, nets[0].params)


def test_epoch_mode_reduces_the_batch_rows(backend, rng):
    X = rng.uniform(0, 1, (70, 10))
    y = rng.integers(0, 3, 70)
    kw = dict(epochs=2, batch_size=8, eta=0.5, stats="all", stats_every=3, seed=4)
    a = fastbp.Network([10, 6, 3], seed=2)
    b = fastbp.Network([10, 6, 3], seed=2)
    hb = a.fit(X, y, record="batch", **kw)
    he = b.fit(X, y, record="epoch", **kw)
    nb = 9
    sizes = hb.batch["size"]
    for e in range(2):
        rows = slice(e * nb, (e + 1) * nb)
        sampled = np.arange(nb) % 3 == 0
        m = sizes[rows][sampled]
        pe = hb.batch["pe_norm_mean"][rows][sampled]
        np.testing.assert_allclose(he.epoch["pe_norm_mean"][e], (m[:, None] * pe).sum(0) / m.sum())
        np.testing.assert_allclose(
            he.epoch["pe_norm_max"][e], hb.batch["pe_norm_max"][rows][sampled].max(0)
        )
        for c in ("trace_cov", "gsnr", "gsnr_zero"):
            np.testing.assert_allclose(he.epoch[c][e], hb.batch[c][rows][sampled].mean(0))
        last = (e + 1) * nb - 1 - (nb - 1) % 3  # the epoch's last sampled mini-batch
        np.testing.assert_allclose(he.epoch["noise_scale"][e], hb.batch["noise_scale"][last])
        np.testing.assert_allclose(
            he.epoch["distance"][e], [np.linalg.norm(w - w0) for w, w0 in
                                      zip(b.weights, fastbp.Network([10, 6, 3], seed=2).weights)]
        ) if e == 1 else None  # fmt: skip
        for q in ("delta", "z", "a"):
            got = he.histograms[q][e]
            want = hb.histograms[q][hb.histograms["epoch"] == e].sum(0)
            np.testing.assert_array_equal(got, want)
    assert list(he.histograms["n_sampled"]) == [3, 3]


def test_one_example_batches_give_nan_spreads(backend, rng):
    X = rng.uniform(0, 1, (5, 4))
    y = rng.integers(0, 2, 5)
    net = fastbp.Network([4, 3, 2], seed=0)
    h = net.fit(X, y, 1, 1, 0.1, record="batch", stats="all")
    assert np.isfinite(h.batch["pe_norm_mean"]).all()
    assert np.array_equal(h.batch["pe_norm_mean"], h.batch["pe_norm_max"])
    for c in ("trace_cov", "gsnr", "gsnr_zero", "noise_scale"):
        assert np.isnan(h.batch[c]).all(), c


def test_short_last_batch_of_one(backend, rng):
    """A last mini-batch of one example: its spreads are NaN, the averages unchanged."""
    X = rng.uniform(0, 1, (9, 4))
    y = rng.integers(0, 2, 9)
    h = fastbp.Network([4, 3, 2], seed=0).fit(X, y, 1, 4, 0.1, record="batch", stats="all")
    assert np.isnan(h.batch["trace_cov"][2]).all()
    np.testing.assert_array_equal(h.batch["noise_scale"][2], h.batch["noise_scale"][1])


def test_deep_net_ratios_do_not_underflow(backend):
    """60 sigmoid layers in float64: the first layer's gradients are ~1e-30 and their
    squares (1e-60) would lose everything in float32-like ranges; the ratios, computed
    from scaled values, stay finite and agree with the NumPy reference backend."""
    rng = np.random.default_rng(0)
    X = rng.uniform(0, 1, (40, 6))
    y = rng.integers(0, 2, 40)
    sizes = [6] + [5] * 60 + [2]
    out = {}
    for name in ("numpy", backend):
        with fastbp.use_backend(name):
            net = fastbp.Network(sizes, seed=1)
            out[name] = net.fit(X, y, 1, 10, 0.1, record="batch", stats="all", seed=0)
    h = out[backend]
    assert h.batch["pe_norm_mean"][0, 0] < 1e-25
    assert np.isfinite(h.batch["gsnr"]).all() and (h.batch["gsnr"] > 0).all()
    assert np.isfinite(h.batch["noise_scale"][:, 0]).all()
    for c in ("pe_norm_mean", "trace_cov", "gsnr", "noise_scale"):
        np.testing.assert_allclose(h.batch[c], out["numpy"].batch[c], rtol=1e-6, err_msg=c)


def test_distance_state_persists_and_resets(backend, rng):
    X = rng.uniform(0, 1, (30, 5))
    y = rng.integers(0, 2, 30)
    net = fastbp.Network([5, 4, 2], seed=0)
    w0 = [w.copy() for w in net.weights]
    net.fit(X, y, 1, 5, 0.5, record=None)  # no stats: the origin is not set yet
    w1 = [w.copy() for w in net.weights]
    net.fit(X, y, 1, 5, 0.5, record="epoch", stats="distance", seed=0)
    h = net.fit(X, y, 1, 5, 0.5, record="epoch", stats="distance", seed=1)
    want = [np.linalg.norm(w - o) for w, o in zip(net.weights, w1)]
    np.testing.assert_allclose(h.epoch["distance"][0], want, rtol=1e-12)
    clone = pickle.loads(pickle.dumps(net))
    hc = clone.fit(X, y, 1, 5, 0.5, record="epoch", stats="all", seed=2)
    h2 = net.fit(X, y, 1, 5, 0.5, record="epoch", stats="all", seed=2)
    assert hc == h2 or np.array_equal(hc.epoch["noise_scale"], h2.epoch["noise_scale"])
    net.reset_stats()
    start = [w.copy() for w in net.weights]
    h = net.fit(X, y, 1, 5, 0.5, record="epoch", stats="distance", seed=0)
    want = [np.linalg.norm(w - o) for w, o in zip(net.weights, start)]
    np.testing.assert_allclose(h.epoch["distance"][0], want, rtol=1e-12)
    assert not np.allclose(want, [np.linalg.norm(w - o) for w, o in zip(net.weights, w0)])


def test_checkpoint_resume_with_statistics_is_bit_for_bit(tmp_path, rng):
    X = rng.uniform(0, 1, (40, 6))
    y = rng.integers(0, 3, 40)
    kw = dict(batch_size=6, eta=0.4, momentum=0.3, record="batch", stats="all")
    whole = fastbp.Network([6, 5, 3], seed=0).fit(X, y, 4, seed=3, **kw)
    path = tmp_path / "ck.npz"
    fastbp.Network([6, 5, 3], seed=0).fit(X, y, 2, seed=3, checkpoint=path, **kw)
    net = fastbp.load(path)
    more = net.fit(X, y, 2, seed="continue", **kw)
    joined = fastbp.History.concatenate([fastbp.load_history(path), more])
    for c in ("noise_scale", "distance", "gsnr"):
        np.testing.assert_array_equal(joined.batch[c], whole.batch[c])
    np.testing.assert_array_equal(joined.histograms["delta"], whole.histograms["delta"])
    np.testing.assert_array_equal(joined.histograms["epoch"], whole.histograms["epoch"])


def test_history_json_round_trip_with_histograms(rng):
    X = rng.uniform(0, 1, (20, 4))
    y = rng.integers(0, 2, 20)
    h = fastbp.Network([4, 3, 2], seed=0).fit(X, y, 2, 5, 0.1, record="epoch", stats="all")
    back = fastbp.History.from_json(h.to_json())
    assert back == h
    assert back.histograms["a"].shape == (2, 2, dx.N_LINEAR_BINS)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(stats="speed"), "unknown statistic group 'speed'"),
        (dict(stats=("per_example", 3)), "unknown statistic group 3"),
        (dict(stats="all", record=None), "needs record='batch' or record='epoch'"),
        (dict(stats="all", stats_every=0), "stats_every=0 must be >= 1"),
        (dict(stats="all", noise_ema=1.0), r"noise_ema=1.0 must be in \[0, 1\)"),
        (dict(callback_every=0, callbacks=print), "callback_every=0 must be >= 1"),
    ],
)
def test_bad_arguments(kwargs, match):
    net = fastbp.Network([3, 2, 2], seed=0)
    kw = dict(record="epoch") | kwargs
    with pytest.raises(ValueError, match=match):
        net.fit(np.zeros((4, 3)), [0, 1, 0, 1], 1, 2, 0.1, **kw)


def test_callbacks_not_callable():
    net = fastbp.Network([3, 2, 2], seed=0)
    with pytest.raises(TypeError, match=r"callbacks\[1\] is int, not callable"):
        net.fit(np.zeros((4, 3)), [0, 1, 0, 1], 1, 2, 0.1, callbacks=[print, 3])


class Recorder:
    def __init__(self):
        self.calls = []
        self.events = []

    def on_fit_begin(self, net):
        self.events.append("begin")

    def __call__(self, net, history):
        self.calls.append((len(history.batch), len(history.epoch), len(history.histograms)))

    def on_fit_end(self, net, history):
        self.events.append(("end", None if history is None else len(history.epoch)))


def test_callbacks_every_epoch_and_every_n_batches(backend, rng):
    X = rng.uniform(0, 1, (50, 4))
    y = rng.integers(0, 2, 50)
    net = fastbp.Network([4, 3, 2], seed=0)
    net._chunk = 4  # calls of 4 mini-batches: a callback due inside one must split it
    cb = Recorder()
    h = net.fit(X, y, 2, 5, 0.1, record="batch", stats="histograms", callbacks=[cb],
                callback_every=3)  # fmt: skip
    # 10 mini-batches per epoch: calls after 3, 6, 9 and at the epoch's end
    want = []
    for e in range(2):
        want += [(e * 10 + k, e, e * 10 + k) for k in (3, 6, 9)] + [
            ((e + 1) * 10, e + 1, (e + 1) * 10)
        ]
    assert cb.calls == want
    assert cb.events == ["begin", ("end", 2)]
    assert len(h.batch) == 20
    cb2 = Recorder()
    net.fit(X, y, 3, 5, 0.1, callbacks=cb2)
    assert [c[1] for c in cb2.calls] == [1, 2, 3]


def test_callbacks_see_the_end_of_a_failed_fit(rng):
    X = rng.uniform(0, 1, (10, 4))
    net = fastbp.Network([4, 3, 2], seed=0)
    cb = Recorder()
    with pytest.raises(fastbp.NonFiniteError):  # the first update overflows
        net.fit(X, rng.integers(0, 2, 10), 1, 2, 1e308, callbacks=cb)
    assert cb.events == ["begin", ("end", 0)]


@pytest.mark.parametrize("dt", [np.float64, np.float32])
def test_decade_bins_exact_at_the_edges(backend, dt):
    """z = W x + b with x = 1 and b = 0 is W itself: place values on, just below and
    just above every decade edge (both signs), zeros, denormals and huge values, and
    the z histogram must equal the definition exactly (no round-off allowance)."""
    vals = [0.0, -0.0]
    for p in dx.DECADE_EDGES:
        p = dt(p)
        for v in (np.nextafter(p, dt(0)), p, np.nextafter(p, dt(np.inf))):
            vals += [float(v), -float(v)]
    vals += [float(np.finfo(dt).smallest_subnormal), 3e-46, 1e30, -1e38, 123.0, -0.5]
    # float32: weights near FLT_MAX would trip the update's overflow bound
    top = 1e300 if dt == np.float64 else 1e20
    vals = np.array([v for v in vals if abs(v) < top], dtype=dt)
    n = len(vals)
    W1 = vals.reshape(n, 1)
    W2 = np.zeros((2, n))
    net = fastbp.Network([1, n, 2], init=([W1, W2], [np.zeros(n), np.zeros(2)]), dtype=dt)
    X = np.ones((3, 1), dtype=dt)
    h = net.fit(X, [0, 1, 0], 1, 3, 1e-30, record="batch", stats="histograms")
    want = 3 * dx.count(dx.decade_index(vals), dx.N_DECADE_BINS)
    np.testing.assert_array_equal(h.histograms["z"][0, 0], want)


def _kernel_variants():
    """Every compiled variant (baseline / avx2 / avx512) this CPU runs, by module name."""
    try:
        return [pytest.param(module, id=name) for name, module in kernel_variants()]
    except ImportError as exc:
        return [pytest.param(None, marks=pytest.mark.skip(reason=f"not compiled: {exc}"))]


@pytest.mark.parametrize("module", _kernel_variants())
@pytest.mark.parametrize("m", [8, 20, 40])  # as test_groups_match_direct_computation
def test_every_kernel_variant_matches_numpy(module, m, dtype, monkeypatch, rng):
    """The compiled backend imports its best variant only; each variant has its own
    vector paths (the histograms, the GSNR and the moments in vhist.c / vstats.c have
    AVX-512 and portable versions).  Each variant, put in the backend's place, must
    give the NumPy backend's statistics and histograms."""
    import importlib

    from fastbp._backends import PUBLIC_API
    from fastbp._backends import cython_backend as cb

    mod = importlib.import_module(module)
    sizes = [11, 9, 7, 4]
    X = rng.uniform(-1, 1, (45, sizes[0])).astype(dtype)
    X[:, 2] = 0.0
    y = rng.integers(0, sizes[-1], 45)
    kw = dict(record="batch", stats="all", stats_every=2, seed=7)
    out = {}
    for name in ("numpy", "cython"):
        if name == "cython":
            for f in PUBLIC_API:
                monkeypatch.setattr(cb, f, getattr(mod, f))
        net = fastbp.Network(sizes, "tanh", "softmax", "log_likelihood", dtype=dtype, seed=3)
        with fastbp.use_backend(name):
            out[name] = net.fit(X, y, 2, m, eta=0.3, lmbda=0.5, **kw)
    got, want = out["cython"], out["numpy"]
    # the first sampled mini-batch, before the float32 trajectories drift apart
    rows = slice(None) if dtype == np.float64 else slice(0, 1)
    tol = {np.float64: (1e-9, 1e-7), np.float32: (1e-4, 1e-3)}[dtype.type]
    for c in dx.XSTAT_NAMES:
        rtol = tol[1] if c in ("gsnr", "noise_scale") else tol[0]
        if c == "gsnr_zero":
            rtol = 0
        np.testing.assert_allclose(got.batch[c][rows], want.batch[c][rows], rtol=rtol,
                                   err_msg=c)  # fmt: skip
    for c in ("delta", "z", "a"):
        g, w = got.histograms[c][rows], want.histograms[c][rows]
        for i in range(len(g)):
            for l in range(len(sizes) - 1):
                hist_close(g[i, l], w[i, l], w[i, l].sum(), f"{c} row {i} layer {l}")
