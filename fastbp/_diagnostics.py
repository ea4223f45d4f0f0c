"""Optional statistic groups ("diagnostics"): definitions, bins and the reference code.

``fit(stats=...)`` adds these groups to the core statistics of SPEC section 4.  Every
group is computed per layer (``W`` and ``b`` of the layer together unless said) from
the mini-batch's deltas and activations while they are still in the workspace, on
*sampled* mini-batches: mini-batch ``k`` of an epoch is sampled when
``k % stats_every == 0``.

Groups and the columns they add (``XSTAT_NAMES``), for a mini-batch of ``m`` examples
with per-example gradients ``g_n`` of the data cost (no L2 term) and mean ``g``:

``per_example``
    ``||g_n||^2 = ||delta_n||^2 (||a_n||^2 + 1)`` (the weight gradient of one example
    is the rank-one ``delta_n a_n^T``, the ``+ 1`` is the bias), without forming
    ``g_n``.  ``pe_norm_mean`` = mean of ``||g_n||``, ``pe_norm_max`` = max,
    ``trace_cov`` = ``tr Sigma = (sum_n ||g_n||^2 - m ||g||^2) / (m - 1)`` (NaN when
    ``m = 1``).
``noise_scale``
    McCandlish et al. (2018), "An empirical model of large-batch training",
    appendix A: ``S = tr Sigma`` and ``|G|^2 = ||g||^2 - tr Sigma / m`` (unbiased),
    each smoothed by an exponential moving average with coefficient ``noise_ema``
    (``s <- beta s + (1 - beta) S``) over the sampled mini-batches (``m >= 2``),
    then ``noise_scale`` = ``B_simple = s / |G|^2_ema``.  Both averages start at 0,
    so their ratio needs no bias correction.  The averages persist across epochs and
    ``fit`` calls (``Network.reset_stats`` clears them).
``moments``
    The element-wise second moment ``sum_n g_n^2`` of every parameter, from one
    extra product ``(delta^2)^T (a^2)`` (bias: column sums of ``delta^2``), gives the
    per-parameter variance ``v = (sum_n g_n^2 - m g^2) / (m - 1)`` and the gradient
    signal-to-noise ratio ``g^2 / v`` (Liu et al. 2020).  ``gsnr`` = its mean over
    the layer's parameters with ``v > 0``; ``gsnr_zero`` = the number left out
    (``v <= 0``: parameters whose gradient is the same for every example, such as
    weights from an input pixel that is 0 in the whole mini-batch).  NaN for ``m = 1``.
``distance``
    ``distance`` = ``||W - W_0||_F``, ``W_0`` the weights when the network's first
    ``fit`` started (or since ``Network.reset_stats``).
``histograms``
    Counts of ``delta``, ``z`` and ``a`` of every layer.  ``delta`` and ``z`` in
    signed decades: decade ``k`` holds ``10^k <= |x| < 10^(k+1)`` for ``k`` in
    ``DECADE_MIN .. DECADE_MAX``, one set per sign, plus a zero bin, an underflow bin
    per sign (``0 < |x| < 10^DECADE_MIN``) and an overflow bin per sign
    (``|x| >= 10^(DECADE_MAX+1)``, infinities included): ``N_DECADE_BINS`` bins in
    ascending order of value.  ``a`` in ``N_LINEAR`` equal bins over the activation's
    range (``activation_range``; the last bin includes the upper end) plus a bin below
    and a bin above it.  The edges are the doubles ``float("1e<k>")``; float32 values
    are compared as doubles.

Per epoch (``record="epoch"``): ``pe_norm_mean`` over all examples of the sampled
mini-batches, ``pe_norm_max`` their max, ``trace_cov``, ``gsnr`` and ``gsnr_zero`` the
mean over sampled mini-batches (``m >= 2``), ``noise_scale`` the ratio of the averages
and ``distance`` at the end of the epoch; histograms summed over the sampled
mini-batches.  A mini-batch dropped by ``on_nonfinite="skip"`` contributes nothing.

Squares are taken of values pre-scaled by powers of two chosen from the layer's norms,
so ``noise_scale`` and ``gsnr`` do not underflow in very deep nets; ``trace_cov`` itself
is a double and underflows below about 1e-308.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ._contract import RELU, SIGMOID, SOFTMAX, SOFTSIGN, TANH

# Groups, in display order, and their bits in Diag.groups.
GROUPS = ("per_example", "noise_scale", "moments", "histograms", "distance")
G_PER_EXAMPLE, G_NOISE, G_MOMENTS, G_HIST, G_DISTANCE = (1 << i for i in range(len(GROUPS)))
GROUP_BITS = dict(zip(GROUPS, (G_PER_EXAMPLE, G_NOISE, G_MOMENTS, G_HIST, G_DISTANCE)))

# Rows of an extra-statistics block (N_X, L), float64.
XSTAT_NAMES = (
    "pe_norm_mean",
    "pe_norm_max",
    "trace_cov",
    "noise_scale",
    "gsnr",
    "gsnr_zero",
    "distance",
)
N_X = len(XSTAT_NAMES)
X_PE_MEAN, X_PE_MAX, X_TRACE, X_NOISE, X_GSNR, X_GSNR_ZERO, X_DISTANCE = range(N_X)
GROUP_COLUMNS = {
    "per_example": ("pe_norm_mean", "pe_norm_max", "trace_cov"),
    "noise_scale": ("noise_scale",),
    "moments": ("gsnr", "gsnr_zero"),
    "histograms": (),
    "distance": ("distance",),
}

# Histogram bins.
DECADE_MIN, DECADE_MAX = -45, 14
N_DECADES = DECADE_MAX - DECADE_MIN + 1
N_DECADE_BINS = 2 * N_DECADES + 5
N_LINEAR = 20
N_LINEAR_BINS = N_LINEAR + 2
# A histogram row of one layer: [delta (N_DECADE_BINS) | z (N_DECADE_BINS) | a (N_LINEAR_BINS)]
H_DELTA, H_Z, H_A = 0, N_DECADE_BINS, 2 * N_DECADE_BINS
N_HIST = 2 * N_DECADE_BINS + N_LINEAR_BINS
# 10^k as the correctly rounded double, k = DECADE_MIN .. DECADE_MAX + 1
DECADE_EDGES = np.array([float(f"1e{k}") for k in range(DECADE_MIN, DECADE_MAX + 2)])

# Linear range of a per activation code (unbounded ones: a documented window).
_RANGES = {
    SIGMOID: (0.0, 1.0),
    SOFTMAX: (0.0, 1.0),
    TANH: (-1.0, 1.0),
    SOFTSIGN: (-1.0, 1.0),
    RELU: (0.0, 4.0),
}
_UNBOUNDED_RANGE = (-4.0, 4.0)  # leaky_relu, linear


def activation_range(code: int) -> tuple[float, float]:
    """``(lo, hi)`` of the linear histogram of ``a`` for an activation code.

    The activation's range where it is bounded (sigmoid and softmax [0, 1], tanh and
    softsign [-1, 1]); relu [0, 4]; leaky_relu and linear [-4, 4] (values outside go to
    the below/above bins).
    """
    return _RANGES.get(int(code), _UNBOUNDED_RANGE)


def a_ranges(layout) -> np.ndarray:
    """``(L, 2)`` float64 histogram ranges of every layer's activation."""
    return np.array([activation_range(c) for c in layout.acts], dtype=np.float64).reshape(-1, 2)


def decade_edges() -> tuple[np.ndarray, list[str]]:
    """Lower edges and labels of the ``N_DECADE_BINS`` signed-decade bins, ascending.

    Returns ``(lo, labels)``: ``lo[i]`` is the smallest value of bin ``i`` (``-inf``
    for the negative overflow bin; for a negative decade bin, ``-10^(k+1)`` exclusive).
    """
    k = np.arange(DECADE_MAX, DECADE_MIN - 1, -1)
    lo = [-np.inf]
    labels = [f"<= -1e{DECADE_MAX + 1}"]
    lo += [-float(f"1e{kk + 1}") for kk in k]
    labels += [f"-[1e{kk},1e{kk + 1})" for kk in k]
    lo += [-float(f"1e{DECADE_MIN}"), 0.0, 0.0]
    labels += [f"-(0,1e{DECADE_MIN})", "0", f"+(0,1e{DECADE_MIN})"]
    lo += [float(f"1e{kk}") for kk in k[::-1]]
    labels += [f"+[1e{kk},1e{kk + 1})" for kk in k[::-1]]
    lo += [float(f"1e{DECADE_MAX + 1}")]
    labels += [f">= 1e{DECADE_MAX + 1}"]
    return np.array(lo), labels


def linear_edges(lo: float, hi: float) -> np.ndarray:
    """The ``N_LINEAR + 1`` edges of the interior bins of an ``a`` histogram."""
    return lo + (hi - lo) * np.arange(N_LINEAR + 1) / N_LINEAR


def decade_index(x: np.ndarray) -> np.ndarray:
    """Bin index (0 .. N_DECADE_BINS-1) of every value of ``x``; NaN gives -1."""
    x = np.asarray(x, dtype=np.float64).ravel()
    ax = np.abs(x)
    # pos = number of edges <= |x|: 0 underflow, 1..N_DECADES decade, N_DECADES+1 overflow
    pos = np.searchsorted(DECADE_EDGES, ax, side="right")
    zero = N_DECADES + 2
    idx = np.where(x > 0, zero + 1 + pos, zero - 1 - pos)
    idx = np.where(x == 0, zero, idx)
    return np.where(np.isnan(x), -1, idx)


def linear_index(a: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Bin index (0 .. N_LINEAR_BINS-1) of every value of ``a``; NaN gives -1."""
    a = np.asarray(a, dtype=np.float64).ravel()
    scale = N_LINEAR / (hi - lo)
    with np.errstate(invalid="ignore"):
        inner = np.minimum(np.floor((a - lo) * scale), N_LINEAR - 1)
    idx = np.where(a < lo, 0, np.where(a > hi, N_LINEAR + 1, 1 + np.nan_to_num(inner)))
    return np.where(np.isnan(a), -1, idx).astype(np.int64)


def count(idx: np.ndarray, n_bins: int) -> np.ndarray:
    """Counts of bin indices (``-1``, NaN, is not counted)."""
    return np.bincount(idx[idx >= 0], minlength=n_bins).astype(np.int64)


# ---------------------------------------------------------------------------- the selector
def parse_stats(stats: Any) -> tuple[str, ...]:
    """The groups selected by ``fit(stats=...)``, in ``GROUPS`` order.

    ``None`` or ``"core"``: none (the core statistics only); ``"all"``: every group;
    a group name or an iterable of them (``"core"`` allowed among them).
    """
    if stats is None:
        return ()
    if isinstance(stats, str):
        names = [stats]
    else:
        try:
            names = list(stats)
        except TypeError:
            names = [stats]
    chosen = set()
    for name in names:
        if name == "all" and isinstance(name, str):
            chosen.update(GROUPS)
        elif name == "core":
            continue
        elif isinstance(name, str) and name in GROUPS:
            chosen.add(name)
        else:
            raise ValueError(
                f"stats={stats!r}: unknown statistic group {name!r}; choose 'core', 'all' "
                f"or any of {', '.join(repr(g) for g in GROUPS)}"
            )
    return tuple(g for g in GROUPS if g in chosen)


def group_mask(groups: Iterable[str]) -> int:
    """Bit mask of group names (``noise_scale`` needs the per-example sums)."""
    mask = 0
    for g in groups:
        mask |= GROUP_BITS[g]
    return mask


def columns_of(groups: Iterable[str]) -> tuple[str, ...]:
    """The ``XSTAT_NAMES`` columns the groups add, in ``XSTAT_NAMES`` order."""
    cols = {c for g in groups for c in GROUP_COLUMNS[g]}
    return tuple(c for c in XSTAT_NAMES if c in cols)


def pow2_scale(x: float) -> float:
    """A power of two ``s`` with ``s * x`` in [0.5, 1) (1.0 for 0 or non-finite x)."""
    if not (np.isfinite(x) and x > 0):
        return 1.0
    return float(np.ldexp(1.0, -int(np.frexp(x)[1])))
