"""The compiled kernels' fused gradient-and-update path (src_ext/vfused.c) against the
path through BLAS that it replaces for small mini-batches: same parameters, velocity and
statistics, for every update rule, record mode, dtype and kernel variant, with widths
that exercise the full and the masked vectors and the row blocks' remainders."""

from __future__ import annotations

import contextlib
import importlib

import numpy as np
import pytest
from helpers import contract_setup, kernel_variants, run_train_epoch

import fastbp
from fastbp._contract import (
    MOMENTUM_CONSTANT,
    MOMENTUM_NONE,
    RECORD_BATCH,
    RECORD_EPOCH,
    RECORD_NONE,
    STAT_NAMES,
    Hyper,
)

try:
    VARIANTS = kernel_variants()
except ImportError:  # the compiled backend is not built
    VARIANTS = []

pytestmark = pytest.mark.skipif(not VARIANTS, reason="compiled backend not built")

# 37 inputs: two full steps of 16 float64 lanes and 5 masked ones (float32: one full
# step of 32, then 5); 19 and 40 rows: three row blocks of 6 and a remainder
SIZES = [37, 19, 40, 3]
RULES = {
    "sgd": dict(momentum_kind=MOMENTUM_NONE),
    "momentum": dict(momentum_kind=MOMENTUM_CONSTANT, mu=0.8),
    "nesterov": dict(momentum_kind=MOMENTUM_CONSTANT, mu=0.8, nesterov=True),
}
RECORDS = {"none": RECORD_NONE, "batch": RECORD_BATCH, "epoch": RECORD_EPOCH}


@contextlib.contextmanager
def fused_bound(mod, m):
    old = mod._set_fused_m_max(m)
    try:
        yield
    finally:
        mod._set_fused_m_max(*old)


@pytest.fixture(params=[pytest.param(m, id=n) for n, m in VARIANTS] or [None])
def kernels(request):
    return importlib.import_module(request.param)


def _train(mod, bound, layout, params, X, Y, order, batch_size, hyper_kw, epochs=2):
    p, v = params.copy(), np.zeros_like(params)
    recs = []
    with fused_bound(mod, bound):
        for _ in range(epochs):
            hyper = Hyper(**hyper_kw)
            out = run_train_epoch(mod, layout, p, v, X, Y, order, batch_size, hyper)
            hyper_kw = dict(hyper_kw, t=out[0][0])
            recs.append(out[1:4])
    return p, v, recs


@pytest.mark.parametrize("record", list(RECORDS))
@pytest.mark.parametrize("rule", list(RULES))
def test_fused_path_matches_blas_path(kernels, dtype, rule, record, rng):
    layout, params, _ = contract_setup(rng, SIZES, "tanh", "softmax", "log_likelihood",
                                       dtype=dtype)
    n, bs = 30, 7  # the last mini-batch has 2 examples
    X = rng.standard_normal((n, SIZES[0])).astype(dtype)
    Y = np.eye(SIZES[-1], dtype=dtype)[rng.integers(0, SIZES[-1], n)]
    order = rng.permutation(n).astype(np.int64)
    kw = dict(eta=0.3, lmbda_n=0.01, record=RECORDS[record], **RULES[rule])
    pf, vf, rf = _train(kernels, 1 << 20, layout, params, X, Y, order, bs, kw)
    pb, vb, rb = _train(kernels, 0, layout, params, X, Y, order, bs, kw)
    tol = dict(rtol=1e-12, atol=1e-14) if dtype == "float64" else dict(rtol=2e-5, atol=1e-6)
    assert not np.array_equal(pf, params)
    np.testing.assert_allclose(pf, pb, **tol)
    np.testing.assert_allclose(vf, vb, **tol)
    srtol = 1e-11 if dtype == "float64" else 1e-4
    for (batch_f, epoch_f, cost_f), (batch_b, epoch_b, cost_b) in zip(rf, rb, strict=True):
        np.testing.assert_allclose(cost_f, cost_b, rtol=srtol)
        if record == "batch":
            np.testing.assert_allclose(batch_f, batch_b, rtol=srtol, atol=1e-30)
        if record == "epoch":
            np.testing.assert_allclose(epoch_f, epoch_b, rtol=srtol, atol=1e-30)


def _sigmoid_problem(rng, dtype, n):
    """A sigmoid net of SIZES with n random examples: layout, params, X, Y, order."""
    layout, params, _ = contract_setup(rng, SIZES, "sigmoid", "sigmoid", "cross_entropy",
                                       dtype=dtype)
    X = rng.standard_normal((n, SIZES[0])).astype(dtype)
    Y = rng.uniform(0, 1, (n, SIZES[-1])).astype(dtype)
    return layout, params, X, Y, rng.permutation(n).astype(np.int64)


def test_statistics_do_not_change_the_fused_training(kernels, dtype, rng):
    """With and without statistics the fused path gives the same bits."""
    layout, params, X, Y, order = _sigmoid_problem(rng, dtype, 21)
    out = [
        _train(kernels, 1 << 20, layout, params, X, Y, order, 5,
               dict(eta=0.5, lmbda_n=0.02, record=rec, momentum_kind=MOMENTUM_CONSTANT, mu=0.5))
        for rec in RECORDS.values()
    ]
    for p, v, _ in out[1:]:
        np.testing.assert_array_equal(p, out[0][0])
        np.testing.assert_array_equal(v, out[0][1])


def test_prefetching_the_next_rows_changes_nothing(kernels, dtype, rng):
    """The fused path's prefetch of the next mini-batch's rows (on by default) is a
    hint: the same bits with it off, for rows that are not whole cache lines."""
    layout, params, X, Y, order = _sigmoid_problem(rng, dtype, 23)
    hyper = dict(eta=0.5, lmbda_n=0.02, record=RECORD_BATCH)
    out = []
    for on in (True, False):
        old = kernels._set_prefetch(on)
        try:
            out.append(_train(kernels, 1 << 20, layout, params, X, Y, order, 4, hyper))
        finally:
            kernels._set_prefetch(old)
    np.testing.assert_array_equal(out[0][0], out[1][0])
    np.testing.assert_array_equal(out[0][2][0][0], out[1][2][0][0])


def test_extreme_weights_take_the_scaled_path(kernels, rng):
    """float64 weights near 1e70: squares beyond the unscaled range, so the update
    forms the product through BLAS and runs the scaled loop: bit for bit the BLAS
    path's result, and finite norms."""
    layout, params, _ = contract_setup(rng, SIZES, "tanh", "linear", "quadratic", w_scale=1e70)
    n = 14
    X = rng.standard_normal((n, SIZES[0]))
    Y = rng.standard_normal((n, SIZES[-1]))
    order = rng.permutation(n).astype(np.int64)
    kw = dict(eta=1e-80, record=RECORD_BATCH)
    pf, vf, rf = _train(kernels, 1 << 20, layout, params, X, Y, order, 7, kw, epochs=1)
    pb, vb, rb = _train(kernels, 0, layout, params, X, Y, order, 7, kw, epochs=1)
    np.testing.assert_array_equal(pf, pb)
    np.testing.assert_array_equal(rf[0][0], rb[0][0])
    wnorm = rf[0][0][:, STAT_NAMES.index("weight_norm")]
    assert np.all(np.isfinite(wnorm)) and np.all(wnorm > 1e69)


@pytest.mark.parametrize(
    ("stats", "names"),
    [
        ("all", ("distance", "gsnr", "pe_norm_max")),
        # no moments: the sampled mini-batches do not store the fused weight gradient
        (("per_example", "distance", "histograms"), ("distance", "pe_norm_max")),
    ],
    ids=["all", "no-moments"],
)
def test_fit_with_every_group_fused_and_not(dtype, rng, stats, names):
    """Network.fit with statistic groups on every second mini-batch (with moments, those
    store the fused gradient) through the selected compiled variant, both paths."""
    X = rng.standard_normal((40, SIZES[0])).astype(dtype)
    y = rng.integers(0, 3, 40)
    from fastbp._backends import cython_backend

    kernels = cython_backend._kernels  # the variant fit runs
    hist = {}
    for bound in (1 << 20, 0):
        net = fastbp.Network([SIZES[0], 19, 3], dtype=dtype, seed=3)
        with fastbp.use_backend("cython"), fused_bound(kernels, bound):
            h = net.fit(X, y, 2, 6, 0.4, momentum=0.6, record="batch", stats=stats,
                        stats_every=2, seed=1)
        hist[bound] = (net.params.copy(), h)
    (pf, hf), (pb, hb) = hist[1 << 20], hist[0]
    tol = 1e-12 if dtype == "float64" else 1e-4
    np.testing.assert_allclose(pf, pb, rtol=tol, atol=tol)
    sampled = np.tile(np.arange(7) % 2 == 0, 2)  # 7 mini-batches per epoch, every 2nd
    for name in names:
        assert np.isfinite(hf.batch[name][sampled]).all()
        assert np.isnan(hf.batch[name][~sampled]).all()
    for name in ("speed", "grad_norm", "update_ratio", *names):
        np.testing.assert_allclose(hf.batch[name], hb.batch[name], rtol=100 * tol, atol=1e-12)
