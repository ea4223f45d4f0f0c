"""Helpers shared by the test modules.

Targets for every (output, cost) pair, the reference built from a Network, norm-wise
comparisons of parameters and statistics (with the tolerances' reasoning), finite
differences, and drivers of the backend contract and of ``fit``'s documented order.
"""

from __future__ import annotations

import math

import numpy as np
from reference import CONTINUOUS_STATS, DISCRETE_STATS, Reference, one_hot, rel_norm_diff


def backend_report():
    """The backend registry's report (name -> BackendInfo), as ``fastbp.backends()``."""
    from fastbp._backends import backends

    return backends()


def compiled_available():
    """Whether the compiled backend loads (``fastbp.backends()["cython"].available``)."""
    return backend_report()["cython"].available


def kernel_variants():
    """(name, module) of every compiled variant (baseline / avx2 / avx512) this CPU runs
    and this build has; raises ImportError when the compiled backend is not built."""
    import importlib

    from fastbp._backends import cython_backend as cb

    variants = getattr(cb, "VARIANTS", {"baseline": ("fastbp._kernels", ())})
    features = cb._cpu_features() if hasattr(cb, "_cpu_features") else {}
    out = []
    for name, (module, needs) in variants.items():
        if not all(features.get(f, False) for f in needs):
            continue  # not runnable on this CPU
        try:
            importlib.import_module(module)
        except ImportError:
            continue
        out.append((name, module))
    return out


# ---------------------------------------------------------------------------
# Problems
# ---------------------------------------------------------------------------


def make_targets(rng, n, width, output, cost, kind="auto"):
    """Targets for a valid (output, cost) pair.

    Returns ``(y, Y)``: ``y`` as fastbp accepts it and ``Y`` the dense float64
    ``(n, width)`` matrix the reference uses.

    kind: "labels" (integer labels), "onehot", "soft" ([0, 1] targets, sigmoid only),
    "float" (regression) or "auto" (labels for classification, float for linear).
    """
    if kind == "auto":
        kind = "float" if output == "linear" else "labels"
    if kind == "labels":
        y = rng.integers(0, width, size=n)
        return y, one_hot(y, width)
    if kind == "onehot":
        y = rng.integers(0, width, size=n)
        Y = one_hot(y, width)
        return Y.copy(), Y
    if kind == "soft":
        Y = rng.uniform(0.0, 1.0, size=(n, width))
        return Y.copy(), Y
    if kind == "float":
        Y = rng.standard_normal((n, width))
        return Y.copy(), Y
    raise ValueError(kind)






def reference_of(net, activation="sigmoid", output="sigmoid", cost="cross_entropy", alpha=0.01):
    """A :class:`tests.reference.Reference` with the parameters of ``net`` (float64 copies)."""
    sizes = [net.weights[0].shape[1]] + [w.shape[0] for w in net.weights]
    return Reference(sizes, [np.array(w, dtype=np.float64) for w in net.weights],
                     [np.array(b, dtype=np.float64) for b in net.biases],
                     activation, output, cost, alpha)


# ---------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------

#: Mean costs against the per-example reference: the reference tolerance of SPEC
#: section 6 (1e-10).  A cost is a sum of per-example terms computed in a different
#: order (and from z of a different matmul), so it carries round-off of the size of
#: its largest terms, not of its value.
COST_RTOL = 1e-10


def assert_layers_close(got, expected, rtol, what="W"):
    """Per layer, ||got - expected||_F / ||expected||_F <= rtol (scaled norms)."""
    assert len(got) == len(expected), f"{what}: {len(got)} layers, expected {len(expected)}"
    for l, (g, e) in enumerate(zip(got, expected, strict=True)):
        g = np.asarray(g, dtype=np.float64)
        e = np.asarray(e, dtype=np.float64)
        assert g.shape == e.shape, f"{what}[{l}]: shape {g.shape}, expected {e.shape}"
        assert np.all(np.isfinite(g)), f"{what}[{l}] has non-finite entries"
        err = rel_norm_diff(g, e)
        assert err <= rtol, f"{what}[{l}]: relative error {err:.3e} > {rtol:.0e}"


def stat_array(stats, name):
    """stats[name] as float64 array, for a dict-like statistics block."""
    return np.asarray(stats[name], dtype=np.float64)


def summation_scales(ref, X, Y):
    """Magnitudes of the sums behind speed and grad_norm, per layer (float64, reference).

    ``speed = ||mean_x delta_x||`` and ``grad_norm = ||mean_x delta_x a_x^T||`` are norms of
    sums whose terms may cancel; two correct implementations that add in different
    orders differ by about eps times the sum of the magnitudes of the terms, not eps
    times the result.  Returns ``{"speed": ||mean_x |delta_x| ||, "grad_norm":
    ||mean_x |delta_x| |a_x|^T||}`` (each >= the statistic, equal when nothing cancels).
    """
    from reference import nrm2

    trace = ref.evaluate(X, Y)
    a_prev = [np.asarray(X, dtype=np.float64)] + trace.activations[:-1]
    speed = [nrm2(np.abs(D).mean(axis=0)) for D in trace.deltas]
    grad = [nrm2(np.abs(D).T @ np.abs(A) / trace.m)
            for D, A in zip(trace.deltas, a_prev, strict=True)]
    return {"speed": np.array(speed), "grad_norm": np.array(grad)}


def assert_stats_close(got, expected, rtol, frac_unit=None, names=None, what="stats",
                       n_crossings=1, abs_scale=None):
    """Compare two statistics blocks (name -> (..., L) arrays).

    Continuous statistics: per entry ``|got - expected| <= rtol * |expected|``, except
    ``act_mean`` whose scale is that of the activations (``|expected| + act_std``) and
    ``update_ratio`` whose error is that of the parameters relative to ``||W||``
    (``rtol * (|expected| + 1)``; a relative test of the ratio itself would ask the
    parameters to agree to ``rtol * update_ratio``, beyond SPEC section 6).
    ``abs_scale`` (name -> (L,)) raises the scale of a statistic to the magnitude of the
    terms it sums (see :func:`summation_scales`).
    NaN must be at the same places.  Fractions (sat_low, sat_high): within
    ``n_crossings * frac_unit`` (per layer, ``1 / (m * width)``; exactly equal when
    ``frac_unit`` is None).  ``nonfinite`` counts: exactly equal.
    """
    names = tuple(names) if names is not None else CONTINUOUS_STATS + DISCRETE_STATS
    for name in names:
        g = stat_array(got, name)
        e = stat_array(expected, name)
        assert g.shape == e.shape, f"{what}[{name}]: shape {g.shape}, expected {e.shape}"
        nan_g, nan_e = np.isnan(g), np.isnan(e)
        assert np.array_equal(nan_g, nan_e), (
            f"{what}[{name}]: NaN at {np.argwhere(nan_g).ravel().tolist()}, "
            f"expected at {np.argwhere(nan_e).ravel().tolist()}: got {g}, expected {e}"
        )
        ok = ~nan_e
        if name in DISCRETE_STATS:
            if name == "nonfinite" or frac_unit is None:
                tol = np.zeros_like(e)
            else:
                tol = np.broadcast_to(n_crossings * np.asarray(frac_unit, dtype=np.float64)
                                      * (1 + 1e-12), e.shape)
            diff = np.abs(g - e)
            assert np.all(diff[ok] <= tol[ok]), (
                f"{what}[{name}]: got {g}, expected {e} (tolerance {tol})")
            continue
        if name == "act_mean":
            scale = np.abs(e) + np.abs(stat_array(expected, "act_std"))
        elif name == "update_ratio":
            # ||W_new - W_old|| / ||W_old|| is a difference of nearby parameters: an error
            # of rtol * ||W_new|| in W_new (SPEC section 6's parameter test) moves it by up to
            # rtol * ||W_new|| / ||W_old|| ~ rtol, however small the ratio itself is.
            scale = np.abs(e) + 1.0
        else:
            scale = np.abs(e)
        if abs_scale is not None and name in abs_scale:
            scale = np.maximum(scale, np.asarray(abs_scale[name], dtype=np.float64))
        scale = scale[ok]
        diff = np.abs(g[ok] - e[ok])
        bad = diff > rtol * scale
        if np.any(bad):
            rel = np.max(diff / np.where(scale > 0, scale, math.inf))
            raise AssertionError(
                f"{what}[{name}]: max relative error {rel:.3e} > {rtol:.0e}\n got      {g}\n"
                f" expected {e}"
            )




# ---------------------------------------------------------------------------
# Finite differences
# ---------------------------------------------------------------------------


def fd_gradient(f, theta, h=1e-4):
    """Fourth-order central differences of ``f`` at the flat float64 vector ``theta``.

    ``f'(x) ~ (-f(x+2h) + 8 f(x+h) - 8 f(x-h) + f(x-2h)) / (12 h)``: truncation error
    O(h^4), round-off about eps |f| / h.  ``f`` receives a modified copy of ``theta``.
    """
    theta = np.array(theta, dtype=np.float64)
    g = np.empty_like(theta)
    for i in range(theta.size):
        vals = []
        for k in (2, 1, -1, -2):
            t = theta.copy()
            t[i] += k * h
            vals.append(f(t))
        g[i] = (-vals[0] + 8 * vals[1] - 8 * vals[2] + vals[3]) / (12 * h)
    return g


def flatten(weights, biases):
    """fastbp's flat layout (per layer: W row-major, then b) of lists of W and b."""
    parts = []
    for w, b in zip(weights, biases, strict=True):
        parts.append(np.asarray(w, dtype=np.float64).ravel())
        parts.append(np.asarray(b, dtype=np.float64).ravel())
    return np.concatenate(parts)


def unflatten(theta, sizes):
    """Inverse of :func:`flatten` for layer widths ``sizes``."""
    weights, biases = [], []
    off = 0
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        weights.append(theta[off:off + n_out * n_in].reshape(n_out, n_in))
        off += n_out * n_in
        biases.append(theta[off:off + n_out])
        off += n_out
    return weights, biases


#: Activations that are not smooth at z = 0: relu and leaky_relu (f' jumps) and softsign
#: (f'' jumps: f'(z) = 1/(1+|z|)^2), which spoils a 4th-order difference across 0.
KINKED = ("relu", "leaky_relu", "softsign")


def kink_margin(ref, X):
    """min |z| over all units with a kink at 0 (see KINKED) and examples (inf if none)."""
    margin = np.inf
    kinked = [l for l, a in enumerate(ref.layer_activations) if a in KINKED]
    if not kinked:
        return margin
    for x in X:
        _, zs = ref.feedforward(np.asarray(x, dtype=np.float64).reshape(-1, 1))
        for l in kinked:
            margin = min(margin, float(np.min(np.abs(zs[l]))))
    return margin


def away_from_kinks(ref, X, Y, margin, keep):
    """The first ``keep`` rows of (X, Y) whose kinked units (KINKED) all have |z| > margin."""
    good = [i for i in range(len(X)) if kink_margin(ref, X[i:i + 1]) > margin]
    assert len(good) >= keep, f"only {len(good)} examples with |z| > {margin} at relu kinks"
    idx = np.array(good[:keep])
    return X[idx], Y[idx], idx


def frac_units(sizes, m):
    """One unit of a fraction over the (example, unit) pairs of each layer: 1 / (m * width)."""
    return 1.0 / (m * np.asarray(sizes[1:], dtype=np.float64))


# ---------------------------------------------------------------------------
# Driving the backend contract directly (fastbp/_contract.py)
# ---------------------------------------------------------------------------


def contract_setup(rng, sizes, activation="sigmoid", output="sigmoid", cost="cross_entropy",
                   dtype="float64", w_scale=1.0, b_scale=1.0, alpha=0.01):
    """A Layout, a flat params buffer with random N(0,1)*w_scale/sqrt(n_in) weights, and the
    Reference holding the same values (the dtype-rounded values, promoted to float64)."""
    from fastbp._contract import Layout

    L = len(sizes) - 1
    layout = Layout(sizes, [activation] * (L - 1) + [output], cost, np.dtype(dtype), alpha)
    params = np.zeros(layout.n_params, dtype=dtype)
    views = zip(layout.weight_views(params), layout.bias_views(params), strict=True)
    for l, (W, b) in enumerate(views):
        W[...] = w_scale * rng.standard_normal(W.shape) / math.sqrt(sizes[l])
        b[...] = b_scale * rng.standard_normal(b.shape)
    ref = Reference(sizes, [w.astype(np.float64) for w in layout.weight_views(params)],
                    [b.astype(np.float64) for b in layout.bias_views(params)],
                    activation, output, cost, alpha)
    return layout, params, ref


def stats_block_to_dict(block):
    """A ``(N_STATS, L)`` block -> dict name -> (L,) (STAT_NAMES order of _contract)."""
    from fastbp._contract import STAT_NAMES

    return {name: np.asarray(block[i], dtype=np.float64) for i, name in enumerate(STAT_NAMES)}


def run_train_epoch(mod, layout, params, velocity, X, Y, order, batch_size, hyper,
                    chunks=None, m_max=None):
    """Call ``mod.train_epoch`` over a whole epoch (optionally in chunks of mini-batches).

    Returns ``(result_tuple_of_last_call, rec_batch, rec_epoch, batch_cost, ws)``.
    """
    from fastbp._contract import N_STATS

    N = len(order)
    n_batches = -(-N // batch_size)
    ws = mod.make_workspace(layout, m_max or batch_size)
    rec_batch = np.full((n_batches, N_STATS, layout.L), -7.0)
    rec_epoch = np.full((N_STATS, layout.L), -7.0)
    batch_cost = np.full(n_batches, -7.0)
    bounds = [0, n_batches] if chunks is None else list(chunks)
    t0 = hyper.t
    result = None
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        rb = np.full((stop - start, N_STATS, layout.L), -7.0)
        bc = np.full(stop - start, -7.0)
        result = mod.train_epoch(layout, ws, params, velocity, X, Y, order, batch_size, start,
                                 stop, hyper, rb, rec_epoch, bc)
        rec_batch[start:stop] = rb
        batch_cost[start:stop] = bc
        hyper.t = result[0]
    hyper.t = t0
    return result, rec_batch, rec_epoch, batch_cost, ws


def fit_orders(seed, n, epochs):
    """The mini-batch orders of ``net.fit(..., seed=seed)`` as its docstring documents them:
    one ``Generator(PCG64(seed))`` per call, one ``permutation(n)`` per epoch."""
    g = np.random.Generator(np.random.PCG64(seed))
    return [g.permutation(n) for _ in range(epochs)]


def replay_fit(ref, X, Y, epochs, batch_size, eta, lmbda=0.0, seed=0, **kw):
    """Replay ``net.fit`` with the reference; returns a list (per epoch) of (w_start, steps)."""
    out = []
    for order in fit_orders(seed, len(X), epochs):
        w_start = [w.copy() for w in ref.weights]
        steps = ref.train_epoch(X, Y, order, batch_size, eta, lmbda, **kw)
        out.append((w_start, steps))
    return out


def table_stats(table, row):
    """Row ``row`` of a History table as a dict stat name -> (L,) array."""
    from reference import STAT_NAMES

    return {name: np.asarray(table[name][row], dtype=np.float64) for name in STAT_NAMES}
