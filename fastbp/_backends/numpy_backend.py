"""NumPy reference backend: the oracle every other backend is tested against.

This module implements the backend contract of :mod:`fastbp._contract`
(``make_workspace``, ``forward``, ``gradient``, ``train_epoch``) in plain,
vectorised NumPy.  It is written to be read: the structure and the names are
those of Nielsen's ``network2.backprop`` (``activations``, ``zs``, ``deltas``,
``nabla_w``, ``nabla_b``), in batch-matrix form with one example per row.

Notation
--------
Code layers ``l = 0 .. L-1`` are the book's weight layers ``1 .. L``.  For a
mini-batch of ``m`` examples, ``A[-1] = X`` is ``(m, n_0)`` and, for each layer,

    Z[l] = A[l-1] @ W[l].T + b[l]          (m, n_{l+1})
    A[l] = f_l(Z[l])
    S[l] = f_l'(Z[l])                      (the "slopes", computed from A[l])

``Delta[l]`` is the ``(m, n_{l+1})`` matrix whose row ``x`` is the book's
``delta^l_x = dC_x / dz^l_x`` (the gradient of the *per-example* cost with
respect to the pre-activation).  The four equations of backpropagation
(Nielsen, ch. 2, BP1-BP4) read, row-wise:

    BP1  Delta[L-1] = dC/dA[L-1] * S[L-1]        (output error; for the valid
         (output, cost) pairs this is A - Y, or (A - Y) * S for sigmoid+quadratic)
    BP2  Delta[l]   = (Delta[l+1] @ W[l+1]) * S[l]
    BP3  dC/db[l]   = Delta[l]                   ->  g_b = Delta[l].sum(0) / m
    BP4  dC/dW[l]   = Delta[l].T @ A[l-1]        ->  g_W = Delta[l].T @ A[l-1] / m

Numerical conventions (shared with the compiled backends)
---------------------------------------------------------
* Per-element arithmetic (activations, slopes, deltas, gradients, updates) is
  done in the network dtype.  Scalars (``eta``, ``lambda/n``, ``1 - eta*lambda/n``,
  ``mu_t``, ``alpha``) are computed in double and then rounded once to the
  network dtype, so a C loop ``c * W[i] - eta * g[i]`` in that dtype gives the
  same bits as the NumPy expression.
* Costs, statistics and norms are reduced in float64: float32 values are cast to
  float64 first.  Norms are scaled by a power of two near ``max|x|`` (see
  :func:`_norm`), so they neither underflow nor overflow.
* Floating-point warnings are silenced inside the backend; non-finite values are
  detected explicitly (SPEC section 5) and reported as ``(layer, phase)``.
"""

from __future__ import annotations

import numpy as np

from .. import _diagnostics as dx
from .._contract import (
    ACTIVATION_CODES,
    CROSS_ENTROPY,
    HIDDEN_ACTIVATIONS,
    LEAKY_RELU,
    LINEAR,
    LOG_LIKELIHOOD,
    MOMENTUM_NONE,
    PHASE_BACKWARD,
    PHASE_FORWARD,
    PHASE_UPDATE,
    QUADRATIC,
    RECORD_BATCH,
    RECORD_EPOCH,
    RELU,
    S_ACT_MEAN,
    S_ACT_STD,
    S_GAIN,
    S_GRAD_NORM,
    S_NONFINITE,
    S_SAT_HIGH,
    S_SAT_LOW,
    S_SLOPE_MEAN,
    S_SPEED,
    S_UPDATE_RATIO,
    S_WEIGHT_NORM,
    SATURATION_FRACTION,
    SIGMOID,
    SOFTMAX,
    SOFTSIGN,
    TANH,
    VALID_PAIRS,
    momentum_at,
)

__all__ = ["make_workspace", "forward", "gradient", "train_epoch"]

_F64 = np.float64
_NAN = _F64(np.nan)

# Maximum of f' for the activations that saturate on both sides; a unit is
# saturated when f'(z) < SATURATION_FRACTION * max f'.
_MAX_SLOPE = {SIGMOID: 0.25, TANH: 1.0, SOFTSIGN: 1.0}
# The activation value at z = 0, which separates "saturated low" from "high".
_MIDPOINT = {SIGMOID: 0.5, TANH: 0.0, SOFTSIGN: 0.0}


# --------------------------------------------------------------------------- #
# Norms and reductions (float64)
# --------------------------------------------------------------------------- #
def _norm(x):
    """Euclidean / Frobenius norm of ``x`` in float64, without underflow or overflow.

    The values are scaled by ``2**-e`` where ``max|x| = f * 2**e`` with
    ``0.5 <= f < 1`` (exact, but for negligible entries that underflow), squared
    and summed, and the square root is scaled back with ``ldexp``.  So a norm of
    ``1e-180`` comes out as ``1e-180``, not 0 as ``sqrt(sum(x**2))`` would give.

    Returns ``0.0`` for an empty or all-zero array, ``inf`` if ``x`` holds an
    infinity and ``nan`` if it holds a NaN.
    """
    x = np.asarray(x, dtype=_F64).ravel()
    if x.size == 0:
        return _F64(0.0)
    biggest = np.max(np.abs(x))
    if biggest == 0.0 or not np.isfinite(biggest):
        return _F64(biggest)
    _, e = np.frexp(biggest)
    y = np.ldexp(x, -e)
    # np.sum (pairwise summation), not np.dot: a threaded BLAS dot is slow on small vectors.
    return _F64(np.ldexp(np.sqrt(np.sum(y * y)), e))


def _div(a, b):
    """``a / b`` with IEEE semantics (x/0 = +-inf, 0/0 = nan), never an exception."""
    return _F64(a) / _F64(b)


class _Moments:
    """Per-layer sums of one mini-batch (or chunk) that the statistics are built from.

    Attributes (float64 scalars)
    ----------------------------
    count : number of (example, unit) pairs, ``m * n``.
    mean, m2 : mean of the activations and sum of squared deviations from it
        (two-pass), the inputs of Chan et al.'s parallel variance formula.
    n_low, n_high : numbers of pairs saturated low / high (nan where undefined).
    slope_sum : sum of f'(z) over the pairs (nan for softmax).
    """

    __slots__ = ("count", "mean", "m2", "n_low", "n_high", "slope_sum")

    def __init__(self):
        self.clear()

    def clear(self):
        """Reset to the empty set (mean 0, count 0)."""
        self.count = _F64(0.0)
        self.mean = _F64(0.0)
        self.m2 = _F64(0.0)
        self.n_low = _F64(0.0)
        self.n_high = _F64(0.0)
        self.slope_sum = _F64(0.0)

    def merge(self, other):
        """Pool ``other`` into ``self`` (Chan, Golub & LeVeque's parallel formula).

        With ``n = n_a + n_b`` and ``d = mean_b - mean_a``::

            mean = mean_a + d * (n_b / n)
            m2   = m2_a + m2_b + d * d * (n_a * n_b / n)

        Starting from the empty set (count 0, mean 0) the first merge copies
        ``other`` exactly.  Counts and slope sums are added.
        """
        n_a, n_b = self.count, other.count
        n = n_a + n_b
        d = other.mean - self.mean
        self.mean = self.mean + d * (n_b / n)
        self.m2 = self.m2 + other.m2 + d * d * (n_a * n_b / n)
        self.count = n
        self.n_low = self.n_low + other.n_low
        self.n_high = self.n_high + other.n_high
        self.slope_sum = self.slope_sum + other.slope_sum

    def write(self, column):
        """Write act_mean, act_std, sat_low, sat_high, slope_mean into a stats column."""
        column[S_ACT_MEAN] = self.mean if self.count > 0 else _NAN
        column[S_ACT_STD] = np.sqrt(_div(self.m2, self.count))
        column[S_SAT_LOW] = _div(self.n_low, self.count)
        column[S_SAT_HIGH] = _div(self.n_high, self.count)
        column[S_SLOPE_MEAN] = _div(self.slope_sum, self.count)


def _layer_moments(code, z, a, slope, into):
    """Fill ``into`` (a :class:`_Moments`) from one layer's ``z``, ``a``, ``f'(z)``.

    * act mean and m2 over all (example, unit) pairs, two-pass, in float64;
    * sigmoid / tanh / softsign: saturated when ``f'(z) < 0.01 * max f'``
      (compared in float64), low when ``a`` is below the midpoint
      (sigmoid 0.5, otherwise 0), high when above;
    * relu / leaky_relu: ``n_low`` = pairs with ``z <= 0`` (dead units), ``n_high = 0``;
    * linear and softmax: saturation undefined (nan); softmax has no slope (nan).
    """
    a64 = a.astype(_F64).ravel()
    count = _F64(a64.size)
    mean = a64.sum() / count
    deviation = a64 - mean
    into.count = count
    into.mean = _F64(mean)
    into.m2 = _F64(np.sum(deviation * deviation))
    if code in _MAX_SLOPE:
        threshold = SATURATION_FRACTION * _MAX_SLOPE[code]
        saturated = slope.astype(_F64) < threshold
        midpoint = _MIDPOINT[code]
        into.n_low = _F64(np.count_nonzero(saturated & (a < midpoint)))
        into.n_high = _F64(np.count_nonzero(saturated & (a > midpoint)))
    elif code == RELU or code == LEAKY_RELU:
        into.n_low = _F64(np.count_nonzero(z <= 0))
        into.n_high = _F64(0.0)
    else:  # LINEAR, SOFTMAX
        into.n_low = _NAN
        into.n_high = _NAN
    into.slope_sum = _NAN if code == SOFTMAX else _F64(slope.astype(_F64).sum())


# --------------------------------------------------------------------------- #
# Activations, slopes, costs (element-wise, network dtype)
# --------------------------------------------------------------------------- #
def _activate(code, z, a, alpha):
    """``a = f(z)`` into ``a`` (both ``(m, n)``, network dtype).

    sigmoid uses ``e = exp(-|z|)``: ``a = 1/(1+e)`` for ``z >= 0``, ``e/(1+e)``
    otherwise (no overflow for any z).  softmax is row-wise and max-subtracted.
    """
    if code == SIGMOID:
        e = np.exp(-np.abs(z))
        np.divide(np.where(z >= 0, 1, e), 1 + e, out=a)
    elif code == TANH:
        np.tanh(z, out=a)
    elif code == RELU:
        np.maximum(z, 0, out=a)
    elif code == LEAKY_RELU:
        np.copyto(a, np.where(z > 0, z, alpha * z))
    elif code == SOFTSIGN:
        np.divide(z, 1 + np.abs(z), out=a)
    elif code == LINEAR:
        np.copyto(a, z)
    elif code == SOFTMAX:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        np.divide(e, e.sum(axis=1, keepdims=True), out=a)
    else:
        raise ValueError(f"unknown activation code {code}")


def _slope(code, z, a, slope, alpha):
    """``slope = f'(z)`` into ``slope``, computed from the activation ``a`` where exact.

    sigmoid ``e/(1+e)**2`` with ``e = exp(-|z|)`` (equal to ``a*(1-a)``, but without
    the cancellation in ``1-a`` that loses float32 digits for saturated units); tanh
    ``1-a*a``; relu ``1 if a > 0 else 0`` (f'(0) = 0);
    leaky_relu ``1 if z > 0 else alpha``; softsign ``(1-|a|)**2``; linear 1.
    (Softmax has no element-wise slope and is never passed here.)
    """
    if code == SIGMOID:
        e = np.exp(-np.abs(z))
        np.divide(e, (1 + e) * (1 + e), out=slope)
    elif code == TANH:
        np.subtract(1, a * a, out=slope)
    elif code == RELU:
        slope[...] = a > 0
    elif code == LEAKY_RELU:
        np.copyto(slope, np.where(z > 0, 1, alpha))
    elif code == SOFTSIGN:
        u = 1 - np.abs(a)
        np.multiply(u, u, out=slope)
    elif code == LINEAR:
        slope.fill(1)
    else:
        raise ValueError(f"activation code {code} has no element-wise slope")


def _cost_sum(cost, z, a, y):
    """Sum over the rows of the per-example data cost, float64, from ``z`` where exact.

    * cross_entropy: ``sum_j softplus(z_j) - y_j z_j``, with
      ``softplus(z) = max(z, 0) + log1p(exp(-|z|))`` (finite for every finite z);
    * log_likelihood: ``sum_j y_j (logsumexp(z) - z_j)``;
    * quadratic: ``0.5 * sum_j (a_j - y_j)**2``.
    """
    z = z.astype(_F64)
    y = y.astype(_F64)
    if cost == CROSS_ENTROPY:
        softplus = np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))
        per_example = (softplus - y * z).sum(axis=1)
    elif cost == LOG_LIKELIHOOD:
        z_max = z.max(axis=1, keepdims=True)
        logsumexp = z_max + np.log(np.exp(z - z_max).sum(axis=1, keepdims=True))
        per_example = (y * (logsumexp - z)).sum(axis=1)
    elif cost == QUADRATIC:
        diff = a.astype(_F64) - y
        per_example = 0.5 * (diff * diff).sum(axis=1)
    else:
        raise ValueError(f"unknown cost code {cost}")
    return _F64(per_example.sum())


# --------------------------------------------------------------------------- #
# Workspace
# --------------------------------------------------------------------------- #
class _EpochAccumulators:
    """Running sums of one epoch for ``record == RECORD_EPOCH`` (reset at batch 0).

    Skipped mini-batches contribute only to ``n_skipped``.
    """

    def __init__(self, layout):
        L = layout.L
        self.w_start = np.full(layout.n_params, np.nan, dtype=layout.dtype)  # params at batch 0
        self.grad_sum = np.zeros(layout.n_params, dtype=_F64)  # sum_k m_k * g_k
        self.grad_sum_w = layout.weight_views(self.grad_sum)
        self.grad_sum_b = layout.bias_views(self.grad_sum)
        self.moments = [_Moments() for _ in range(L)]
        self.gain_sum = np.zeros(L, dtype=_F64)
        self.n_examples = 0  # sum_k m_k over applied mini-batches
        self.n_batches = 0  # applied mini-batches
        self.n_skipped = 0

    def reset(self, params):
        """Start a new epoch at the parameters ``params``."""
        np.copyto(self.w_start, params)
        self.grad_sum.fill(0.0)
        for moments in self.moments:
            moments.clear()
        self.gain_sum.fill(0.0)
        self.n_examples = 0
        self.n_batches = 0
        self.n_skipped = 0


class Workspace:
    """Every buffer needed to process up to ``m_max`` examples at once.

    Per layer ``l`` (lists of ``(m_max, n_{l+1})`` arrays, network dtype):
    ``zs``, ``activations``, ``slopes`` (f'(z)) and ``deltas``; a mini-batch of
    ``m`` rows uses the first ``m`` rows of each.  Flat ``(n_params,)`` buffers in
    the parameter layout: ``grad`` (the mini-batch gradient, ``nabla_w``/``nabla_b``
    are its views), ``lookahead`` (Nesterov's ``theta + mu v``), ``new_params``
    and ``new_velocity`` (the proposed update, written to the caller's buffers
    only once it is known to be finite), and ``grad_sum`` (float64, the sums of
    :func:`gradient`).  ``epoch`` holds the per-epoch accumulators.
    """

    def __init__(self, layout, m_max):
        m_max = int(m_max)
        if m_max < 1:
            raise ValueError(f"m_max must be at least 1, got {m_max}")
        names = layout.activation_names
        if (names[-1], layout.cost_name) not in VALID_PAIRS:
            pair = (names[-1], layout.cost_name)
            raise ValueError(f"invalid (output, cost) pair {pair}; valid pairs: {VALID_PAIRS}")
        for name in names[:-1]:
            if name not in HIDDEN_ACTIVATIONS:
                raise ValueError(f"invalid hidden activation {name!r}; valid: {HIDDEN_ACTIVATIONS}")
        dt = layout.dtype
        widths = [int(n) for n in layout.sizes]
        self.m_max = m_max
        self.dtype = dt
        self.alpha = dt.type(layout.alpha)
        self.codes = [ACTIVATION_CODES[name] for name in names]
        self.x = np.empty((m_max, widths[0]), dtype=dt)
        self.y = np.empty((m_max, widths[-1]), dtype=dt)
        self.zs = [np.empty((m_max, n), dtype=dt) for n in widths[1:]]
        self.activations = [np.empty((m_max, n), dtype=dt) for n in widths[1:]]
        self.slopes = [np.empty((m_max, n), dtype=dt) for n in widths[1:]]
        self.deltas = [np.empty((m_max, n), dtype=dt) for n in widths[1:]]
        self.grad = np.empty(layout.n_params, dtype=dt)
        self.nabla_w = layout.weight_views(self.grad)
        self.nabla_b = layout.bias_views(self.grad)
        self.lookahead = np.empty(layout.n_params, dtype=dt)
        self.new_params = np.empty(layout.n_params, dtype=dt)
        self.new_velocity = np.empty(layout.n_params, dtype=dt)
        self.grad_sum = np.empty(layout.n_params, dtype=_F64)
        self.moments = [_Moments() for _ in widths[1:]]
        self.epoch = _EpochAccumulators(layout)
        self.diag_epoch = _DiagEpoch(layout.L)


def make_workspace(layout, m_max):
    """Allocate a :class:`Workspace` for ``layout`` and up to ``m_max`` rows at once."""
    return Workspace(layout, m_max)


def _layer_slice(layout, l):
    """The slice of a flat parameter buffer holding layer ``l`` (``W[l]`` then ``b[l]``)."""
    return slice(int(layout.w_off[l]), int(layout.b_off[l] + layout.sizes[l + 1]))


# --------------------------------------------------------------------------- #
# The passes over one mini-batch (rows 0 .. m-1 of the workspace)
# --------------------------------------------------------------------------- #
def _feedforward(layout, ws, weights, biases, x, m, with_slopes, check):
    """Forward pass of the ``m`` rows of ``x``: ``zs``, ``activations`` (and ``slopes``).

    ``Z[l] = A[l-1] @ W[l].T + b[l]``, ``A[l] = f(Z[l])``.  With ``check``, returns the
    first layer whose ``z`` holds a NaN/Inf (and stops there), else -1.
    """
    activation = x
    for l in range(layout.L):
        code = ws.codes[l]
        z = ws.zs[l][:m]
        np.matmul(activation, weights[l].T, out=z)
        z += biases[l]
        if check and not np.isfinite(z).all():
            return l
        a = ws.activations[l][:m]
        _activate(code, z, a, ws.alpha)
        if with_slopes and code != SOFTMAX:
            _slope(code, z, a, ws.slopes[l][:m], ws.alpha)
        activation = a
    return -1


def _backprop(layout, ws, weights, y, m):
    """Backward pass: all ``deltas`` from the given weights (BP1, BP2).

    Output: ``a - y`` for softmax+log_likelihood and linear+quadratic, computed as
    ``(1 - y) sigma(z) - y sigma(-z)`` for sigmoid+cross_entropy; ``(a - y) * slope``
    for sigmoid+quadratic.  Hidden:
    ``Delta[l] = (Delta[l+1] @ W[l+1]) * S[l]``.  Checks each delta as it is made,
    from the last layer down, and returns the first non-finite layer, else -1.
    """
    L = layout.L
    delta = ws.deltas[L - 1][:m]
    a = ws.activations[L - 1][:m]
    if ws.codes[L - 1] == SIGMOID and layout.cost == CROSS_ENTROPY:
        # a - y written as (1 - y) sigma(z) - y sigma(-z): exact for 0/1 targets even
        # where a rounds to 1 (saturated float32 units)
        z = ws.zs[L - 1][:m]
        e = np.exp(-np.abs(z))
        a_neg = np.where(z >= 0, e, 1) / (1 + e)  # sigma(-z)
        np.subtract((1 - y) * a, y * a_neg, out=delta)
    else:
        np.subtract(a, y, out=delta)
    if ws.codes[L - 1] == SIGMOID and layout.cost == QUADRATIC:
        delta *= ws.slopes[L - 1][:m]
    if not np.isfinite(delta).all():
        return L - 1
    for l in range(L - 2, -1, -1):
        delta = ws.deltas[l][:m]
        np.matmul(ws.deltas[l + 1][:m], weights[l + 1], out=delta)
        delta *= ws.slopes[l][:m]
        if not np.isfinite(delta).all():
            return l
    return -1


def _batch_gradient(layout, ws, x, m):
    """Mini-batch gradient into ``ws.nabla_w``/``ws.nabla_b`` (BP3, BP4, averaged).

    ``g_W = Delta.T @ A_prev / m`` and ``g_b = Delta.sum(0) / m``, network dtype.
    """
    for l in range(layout.L):
        a_prev = x if l == 0 else ws.activations[l - 1][:m]
        delta = ws.deltas[l][:m]
        np.matmul(delta.T, a_prev, out=ws.nabla_w[l])
        ws.nabla_w[l] /= m
        np.sum(delta, axis=0, out=ws.nabla_b[l])
        ws.nabla_b[l] /= m


def _propose_update(layout, ws, params, velocity, w_at, scalars, momentum):
    """New parameters (and velocity) into ``ws.new_params`` / ``ws.new_velocity``.

    Plain SGD (``momentum`` false), ``c = 1 - eta*lmbda_n``::

        W <- c*W - eta*g_W            b <- b - eta*g_b

    Momentum (classical or Nesterov; ``w_at`` is theta's or the look-ahead's W)::

        v_W <- mu*v_W - eta*(g_W + lmbda_n*W_at)    W <- W + v_W
        v_b <- mu*v_b - eta*g_b                     b <- b + v_b

    Nothing is written to ``params``/``velocity``.  Returns the first layer whose
    new values hold a NaN/Inf, else -1.
    """
    eta, lmbda_n, decay, mu = scalars
    W, b = layout.weight_views(params), layout.bias_views(params)
    W_new, b_new = layout.weight_views(ws.new_params), layout.bias_views(ws.new_params)
    g_W, g_b = ws.nabla_w, ws.nabla_b
    if not momentum:
        for l in range(layout.L):
            np.subtract(decay * W[l], eta * g_W[l], out=W_new[l])
            np.subtract(b[l], eta * g_b[l], out=b_new[l])
    else:
        v_W, v_b = layout.weight_views(velocity), layout.bias_views(velocity)
        v_W_new, v_b_new = layout.weight_views(ws.new_velocity), layout.bias_views(ws.new_velocity)
        for l in range(layout.L):
            np.subtract(mu * v_W[l], eta * (g_W[l] + lmbda_n * w_at[l]), out=v_W_new[l])
            np.add(W[l], v_W_new[l], out=W_new[l])
            np.subtract(mu * v_b[l], eta * g_b[l], out=v_b_new[l])
            np.add(b[l], v_b_new[l], out=b_new[l])
    for l in range(layout.L):
        part = _layer_slice(layout, l)
        if not np.isfinite(ws.new_params[part]).all():
            return l
        if momentum and not np.isfinite(ws.new_velocity[part]).all():
            return l
    return -1


def _delta_norms(layout, ws, m):
    """``||Delta[l]||_F`` of the current mini-batch, float64, per layer."""
    return [_norm(ws.deltas[l][:m]) for l in range(layout.L)]


def _gains(delta_norms):
    """``gain[l] = ||Delta[l]|| / ||Delta[l+1]||`` (IEEE division), nan for the last layer."""
    L = len(delta_norms)
    return [_div(delta_norms[l], delta_norms[l + 1]) for l in range(L - 1)] + [_NAN]


def _collect_moments(layout, ws, m):
    """Fill ``ws.moments`` from the current mini-batch's ``zs``, ``activations``, ``slopes``."""
    for l in range(layout.L):
        _layer_moments(
            ws.codes[l], ws.zs[l][:m], ws.activations[l][:m], ws.slopes[l][:m], ws.moments[l]
        )


def _batch_statistics(layout, ws, m, params, out):
    """Per-mini-batch statistics (SPEC section 4) into ``out`` ``(N_STATS, L)``.

    Called after the update was accepted: ``params`` still holds the old
    parameters, ``ws.new_params`` the new ones.
    """
    W_old = layout.weight_views(params)
    W_new = layout.weight_views(ws.new_params)
    gains = _gains(_delta_norms(layout, ws, m))
    _collect_moments(layout, ws, m)
    for l in range(layout.L):
        out[S_SPEED, l] = _norm(ws.nabla_b[l])
        out[S_GRAD_NORM, l] = _norm(ws.nabla_w[l])
        out[S_GAIN, l] = gains[l]
        out[S_WEIGHT_NORM, l] = _norm(W_new[l])
        change = W_new[l].astype(_F64) - W_old[l].astype(_F64)
        out[S_UPDATE_RATIO, l] = _div(_norm(change), _norm(W_old[l]))
        ws.moments[l].write(out[:, l])
        out[S_NONFINITE, l] = 0.0


def _accumulate_epoch(layout, ws, m):
    """Fold the current (accepted) mini-batch into ``ws.epoch``."""
    epoch = ws.epoch
    epoch.grad_sum += m * ws.grad.astype(_F64)
    epoch.gain_sum += np.asarray(_gains(_delta_norms(layout, ws, m)), dtype=_F64)
    _collect_moments(layout, ws, m)
    for l in range(layout.L):
        epoch.moments[l].merge(ws.moments[l])
    epoch.n_examples += m
    epoch.n_batches += 1


def _epoch_statistics(layout, ws, params, out):
    """Per-epoch statistics (SPEC section 4, "per epoch") into ``out`` ``(N_STATS, L)``.

    speed / grad_norm: ``||sum_k m_k g_k|| / sum_k m_k``; gain: unweighted mean of
    the mini-batch gains; weight_norm: ``||W_end||``; update_ratio:
    ``||W_end - W_start|| / ||W_start||``; activations and saturation pooled over
    all pairs; nonfinite: number of skipped mini-batches.
    """
    epoch = ws.epoch
    W_end = layout.weight_views(params)
    W_start = layout.weight_views(epoch.w_start)
    for l in range(layout.L):
        out[S_SPEED, l] = _div(_norm(epoch.grad_sum_b[l]), epoch.n_examples)
        out[S_GRAD_NORM, l] = _div(_norm(epoch.grad_sum_w[l]), epoch.n_examples)
        out[S_GAIN, l] = _div(epoch.gain_sum[l], epoch.n_batches) if l < layout.L - 1 else _NAN
        out[S_WEIGHT_NORM, l] = _norm(W_end[l])
        change = W_end[l].astype(_F64) - W_start[l].astype(_F64)
        out[S_UPDATE_RATIO, l] = _div(_norm(change), _norm(W_start[l]))
        epoch.moments[l].write(out[:, l])
        out[S_NONFINITE, l] = float(epoch.n_skipped)


# --------------------------------------------------------------------------- #
# Optional statistic groups (fastbp/_diagnostics.py defines them)
# --------------------------------------------------------------------------- #
class _DiagEpoch:
    """Per-epoch sums of the optional groups (``record == RECORD_EPOCH``)."""

    def __init__(self, L):
        self.sums = np.zeros((6, L), dtype=_F64)  # pe sum, examples, trace, n, gsnr, n
        self.zero = np.zeros((2, L), dtype=_F64)  # gsnr_zero sum, n
        self.pe_max = np.full(L, -np.inf)

    def reset(self):
        self.sums.fill(0.0)
        self.zero.fill(0.0)
        self.pe_max.fill(-np.inf)


def _scaled(v):
    """``(v * s, s)`` in float64 with ``s`` a power of two making ``max|v * s|`` ~ 1."""
    v = np.asarray(v, dtype=_F64)
    s = dx.pow2_scale(float(np.max(np.abs(v)))) if v.size else 1.0
    return v * s, s


def _diag_batch(layout, ws, m, x, params, diag, row):
    """The selected groups of the current mini-batch into ``row`` ``(N_X, L)``.

    Called after the update was written to ``params``.  Histograms go straight
    into ``diag.hist``.  ``ws.nabla_w``/``ws.nabla_b`` hold the mean gradient.
    """
    groups = diag.groups
    want_pe = groups & (dx.G_PER_EXAMPLE | dx.G_NOISE)
    for l in range(layout.L):
        a_prev = x if l == 0 else ws.activations[l - 1][:m]
        ds, sd = _scaled(ws.deltas[l][:m])
        a64 = np.asarray(a_prev, dtype=_F64)
        gw = ws.nabla_w[l].astype(_F64) * sd
        gb = ws.nabla_b[l].astype(_F64) * sd
        if want_pe:
            # ||g_n||^2 = ||delta_n||^2 (||a_n||^2 + 1), all scaled by sd^2
            q = np.sum(ds * ds, axis=1) * (np.sum(a64 * a64, axis=1) + 1.0)
            g2 = float(np.sum(gw * gw) + np.sum(gb * gb))
            tr = (float(np.sum(q)) - m * g2) / (m - 1) if m > 1 else np.nan
            norms = np.sqrt(q) / sd
            if groups & dx.G_PER_EXAMPLE:
                row[dx.X_PE_MEAN, l] = np.mean(norms)
                row[dx.X_PE_MAX, l] = np.max(norms)
                row[dx.X_TRACE, l] = tr / (sd * sd)
            if groups & dx.G_NOISE:
                ema = diag.ema
                if m > 1:
                    b = diag.beta
                    ema[0, l] = b * ema[0, l] + (1 - b) * (tr / (sd * sd))
                    ema[1, l] = b * ema[1, l] + (1 - b) * ((g2 - tr / m) / (sd * sd))
                row[dx.X_NOISE, l] = _div(ema[0, l], ema[1, l])
        if groups & dx.G_MOMENTS:
            if m > 1:
                as_, sa = _scaled(a64)
                d2 = ds * ds
                second_w = d2.T @ (as_ * as_)  # sum_n g_n^2, scaled by (sd sa)^2
                second_b = d2.sum(axis=0)
                mean_w = gw * sa
                var_w = (second_w - m * mean_w * mean_w) / (m - 1)
                var_b = (second_b - m * gb * gb) / (m - 1)
                sig = np.concatenate([(mean_w * mean_w).ravel(), gb * gb])
                var = np.concatenate([var_w.ravel(), var_b])
                keep = var > 0
                row[dx.X_GSNR, l] = np.mean(sig[keep] / var[keep]) if keep.any() else np.nan
                row[dx.X_GSNR_ZERO, l] = float(np.count_nonzero(~keep))
            else:
                row[dx.X_GSNR, l] = np.nan
                row[dx.X_GSNR_ZERO, l] = np.nan
        if groups & dx.G_DISTANCE:
            W = layout.weight_views(params)[l]
            W0 = layout.weight_views(diag.start)[l]
            row[dx.X_DISTANCE, l] = _norm(W.astype(_F64) - W0.astype(_F64))


def _diag_hist(layout, ws, m, hist_row, a_range):
    """Add the counts of every layer's delta, z and a to ``hist_row`` ``(L, N_HIST)``."""
    for l in range(layout.L):
        hist_row[l, dx.H_DELTA : dx.H_Z] += dx.count(
            dx.decade_index(ws.deltas[l][:m]), dx.N_DECADE_BINS
        )
        hist_row[l, dx.H_Z : dx.H_A] += dx.count(dx.decade_index(ws.zs[l][:m]), dx.N_DECADE_BINS)
        lo, hi = a_range[l]
        hist_row[l, dx.H_A :] += dx.count(
            dx.linear_index(ws.activations[l][:m], lo, hi), dx.N_LINEAR_BINS
        )


def _diag_accumulate(acc, row, m):
    """Fold one sampled mini-batch's row into the epoch sums."""
    pe = row[dx.X_PE_MEAN]
    acc.sums[0] += m * pe
    acc.sums[1] += m
    acc.pe_max = np.fmax(acc.pe_max, row[dx.X_PE_MAX])
    if m > 1:
        acc.sums[2] += row[dx.X_TRACE]
        acc.sums[3] += 1
        ok = np.isfinite(row[dx.X_GSNR])
        acc.sums[4] += np.where(ok, row[dx.X_GSNR], 0.0)
        acc.sums[5] += ok
        acc.zero[0] += row[dx.X_GSNR_ZERO]
        acc.zero[1] += 1


def _diag_epoch_end(layout, acc, params, diag):
    """The epoch values of the selected groups into ``diag.epoch``."""
    out, g = diag.epoch, diag.groups
    with np.errstate(all="ignore"):
        if g & dx.G_PER_EXAMPLE:
            out[dx.X_PE_MEAN] = acc.sums[0] / acc.sums[1]
            out[dx.X_PE_MAX] = np.where(acc.sums[1] > 0, acc.pe_max, np.nan)
            out[dx.X_TRACE] = acc.sums[2] / acc.sums[3]
        if g & dx.G_NOISE:
            out[dx.X_NOISE] = diag.ema[0] / diag.ema[1]
        if g & dx.G_MOMENTS:
            out[dx.X_GSNR] = acc.sums[4] / acc.sums[5]
            out[dx.X_GSNR_ZERO] = acc.zero[0] / acc.zero[1]
    if g & dx.G_DISTANCE:
        for l in range(layout.L):
            W = layout.weight_views(params)[l]
            W0 = layout.weight_views(diag.start)[l]
            out[dx.X_DISTANCE, l] = _norm(W.astype(_F64) - W0.astype(_F64))


# --------------------------------------------------------------------------- #
# Contract functions
# --------------------------------------------------------------------------- #
def forward(layout, ws, params, X, out, Y=None):
    """Output activations of ``X`` ``(N, n_0)`` into ``out`` ``(N, n_L)``, in chunks.

    Returns the mean data cost over the N examples (float64, from ``z``) if ``Y``
    ``(N, n_L)`` is given, else nan.  No finiteness check: NaN/Inf propagate.
    """
    with np.errstate(all="ignore"):
        weights, biases = layout.weight_views(params), layout.bias_views(params)
        N = X.shape[0]
        L = layout.L
        cost_sum = _F64(0.0)
        for start in range(0, N, ws.m_max):
            m = min(ws.m_max, N - start)
            _feedforward(layout, ws, weights, biases, X[start : start + m], m, False, False)
            out[start : start + m] = ws.activations[L - 1][:m]
            if Y is not None:
                cost_sum += _cost_sum(
                    layout.cost, ws.zs[L - 1][:m], ws.activations[L - 1][:m], Y[start : start + m]
                )
        return float(_div(cost_sum, N)) if Y is not None else float("nan")


def gradient(layout, ws, params, X, Y, grad, stats):
    """Average gradient of the mean data cost over all N rows of ``X``, and probe stats.

    The rows are processed in chunks of ``ws.m_max``; per chunk the sums
    ``Delta.T @ A_prev`` and ``Delta.sum(0)`` are formed in the network dtype and
    accumulated in float64, and ``grad = sums / N`` is rounded to the network
    dtype at the end (no L2 term).  ``stats`` ``(N_STATS, L)`` gets the probe column
    of SPEC section 4: speed ``||g_b||`` and grad_norm ``||g_W||`` of ``grad``, gain
    ``||Delta[l]|| / ||Delta[l+1]||`` over all N rows (chunk norms combined with
    ``hypot``), weight_norm ``||W||``, update_ratio nan, pooled activation and
    saturation statistics, nonfinite 0.

    Returns ``(cost, fault_layer, fault_phase)``: the mean data cost and ``-1, -1``,
    or, at the first non-finite value (chunks in order; within a chunk the ``z``
    of layers 0..L-1, then the deltas from layer L-1 down; finally the averaged
    gradient from layer L-1 down, reported as ``PHASE_BACKWARD``), ``nan``, the
    layer and the phase, with ``grad`` and ``stats`` set to nan except
    ``stats[S_NONFINITE] = 1``.
    """
    with np.errstate(all="ignore"):
        L = layout.L
        N = X.shape[0]
        weights, biases = layout.weight_views(params), layout.bias_views(params)
        ws.grad_sum.fill(0.0)
        pooled = [_Moments() for _ in range(L)]
        delta_norms = [_F64(0.0)] * L
        cost_sum = _F64(0.0)

        def fault(layer, phase):
            grad.fill(np.nan)
            stats.fill(np.nan)
            stats[S_NONFINITE, :] = 1.0
            return float("nan"), int(layer), int(phase)

        for start in range(0, N, ws.m_max):
            m = min(ws.m_max, N - start)
            x, y = X[start : start + m], Y[start : start + m]
            layer = _feedforward(layout, ws, weights, biases, x, m, True, True)
            if layer >= 0:
                return fault(layer, PHASE_FORWARD)
            cost_sum += _cost_sum(layout.cost, ws.zs[L - 1][:m], ws.activations[L - 1][:m], y)
            layer = _backprop(layout, ws, weights, y, m)
            if layer >= 0:
                return fault(layer, PHASE_BACKWARD)
            for l in range(L):
                a_prev = x if l == 0 else ws.activations[l - 1][:m]
                delta = ws.deltas[l][:m]
                # ws.nabla_w / nabla_b serve as network-dtype scratch for the chunk sums
                np.matmul(delta.T, a_prev, out=ws.nabla_w[l])
                np.sum(delta, axis=0, out=ws.nabla_b[l])
                delta_norms[l] = np.hypot(delta_norms[l], _norm(delta))
            ws.grad_sum += ws.grad
            _collect_moments(layout, ws, m)
            for l in range(L):
                pooled[l].merge(ws.moments[l])

        np.divide(ws.grad_sum, N, out=ws.grad_sum)
        np.copyto(grad, ws.grad_sum, casting="same_kind")
        for l in range(L - 1, -1, -1):
            if not np.isfinite(grad[_layer_slice(layout, l)]).all():
                return fault(l, PHASE_BACKWARD)

        g_W, g_b = layout.weight_views(grad), layout.bias_views(grad)
        gains = _gains(delta_norms)
        for l in range(L):
            stats[S_SPEED, l] = _norm(g_b[l])
            stats[S_GRAD_NORM, l] = _norm(g_W[l])
            stats[S_GAIN, l] = gains[l]
            stats[S_WEIGHT_NORM, l] = _norm(weights[l])
            stats[S_UPDATE_RATIO, l] = np.nan
            pooled[l].write(stats[:, l])
            stats[S_NONFINITE, l] = 0.0
        return float(_div(cost_sum, N)), -1, -1


def train_epoch(
    layout,
    ws,
    params,
    velocity,
    X,
    Y,
    order,
    batch_size,
    batch_start,
    batch_stop,
    hyper,
    rec_batch,
    rec_epoch,
    batch_cost,
    diag=None,
):
    """Run mini-batches ``batch_start .. batch_stop-1`` of one epoch (see the contract).

    For each mini-batch ``k`` (rows ``X[order[k*batch_size:(k+1)*batch_size]]``):

    1. ``mu_t = momentum_at(hyper, t)``; with Nesterov, the look-ahead point
       ``phi = theta + mu_t * v`` (weights and biases) is where steps 2-4 run;
    2. feedforward, checking every ``z`` (phase forward, first layer in order);
       the mini-batch cost (at the point of step 1) goes to ``batch_cost``;
    3. backprop, all deltas from the old weights, checked from the last layer
       down (phase backward);
    4. the mini-batch gradient and the proposed update, into temporaries; a
       non-finite new parameter or velocity refuses it (phase update, first
       layer in order);
    5. statistics (``record``), then the new values are written and ``t += 1``.

    A fault returns at once when ``hyper.skip_nonfinite`` is false; otherwise the
    mini-batch is dropped (``batch_cost`` nan, its ``rec_batch`` row nan except
    ``nonfinite = 1``) and counted.  Returns
    ``(t, n_skipped, fault_batch, fault_layer, fault_phase)``, -1 for "none".
    """
    with np.errstate(all="ignore"):
        return _train_epoch(
            layout,
            ws,
            params,
            velocity,
            X,
            Y,
            order,
            int(batch_size),
            int(batch_start),
            int(batch_stop),
            hyper,
            rec_batch,
            rec_epoch,
            batch_cost,
            diag,
        )


def _train_epoch(
    layout,
    ws,
    params,
    velocity,
    X,
    Y,
    order,
    batch_size,
    batch_start,
    batch_stop,
    hyper,
    rec_batch,
    rec_epoch,
    batch_cost,
    diag,
):
    """Body of :func:`train_epoch` (floating-point warnings already silenced)."""
    if batch_size > ws.m_max:
        raise ValueError(f"batch_size {batch_size} exceeds the workspace's m_max {ws.m_max}")
    dt = layout.dtype.type
    L = layout.L
    N = order.shape[0]
    n_batches = -(-N // batch_size)
    record = hyper.record
    momentum = hyper.momentum_kind != MOMENTUM_NONE
    nesterov = momentum and bool(hyper.nesterov)
    eta = dt(hyper.eta)
    lmbda_n = dt(hyper.lmbda_n)
    decay = dt(1.0 - float(hyper.eta) * float(hyper.lmbda_n))
    t = int(hyper.t)
    n_skipped = 0

    theta_W, theta_b = layout.weight_views(params), layout.bias_views(params)
    phi_W, phi_b = layout.weight_views(ws.lookahead), layout.bias_views(ws.lookahead)
    if record == RECORD_EPOCH and batch_start == 0:
        ws.epoch.reset(params)
        ws.diag_epoch.reset()
    if diag is not None and not diag.groups:
        diag = None
    xrow = np.full((dx.N_X, L), np.nan)

    for k in range(batch_start, batch_stop):
        i = k - batch_start
        rows = order[k * batch_size : min((k + 1) * batch_size, N)]
        m = rows.shape[0]
        x, y = ws.x[:m], ws.y[:m]
        np.take(X, rows, axis=0, out=x)
        np.take(Y, rows, axis=0, out=y)

        mu = dt(momentum_at(hyper, t)) if momentum else dt(0.0)
        if nesterov:
            np.add(params, mu * velocity, out=ws.lookahead)  # phi = theta + mu_t v
            weights, biases = phi_W, phi_b
        else:
            weights, biases = theta_W, theta_b

        phase = -1
        layer = _feedforward(layout, ws, weights, biases, x, m, True, True)
        if layer >= 0:
            phase = PHASE_FORWARD
        else:
            batch_cost[i] = _div(
                _cost_sum(layout.cost, ws.zs[L - 1][:m], ws.activations[L - 1][:m], y), m
            )
            layer = _backprop(layout, ws, weights, y, m)
            if layer >= 0:
                phase = PHASE_BACKWARD
            else:
                _batch_gradient(layout, ws, x, m)
                layer = _propose_update(
                    layout, ws, params, velocity, weights, (eta, lmbda_n, decay, mu), momentum
                )
                if layer >= 0:
                    phase = PHASE_UPDATE

        if phase >= 0:
            batch_cost[i] = np.nan
            if not hyper.skip_nonfinite:
                return t, n_skipped, k, int(layer), int(phase)
            n_skipped += 1
            if record == RECORD_BATCH:
                rec_batch[i].fill(np.nan)
                rec_batch[i, S_NONFINITE, :] = 1.0
            elif record == RECORD_EPOCH:
                ws.epoch.n_skipped += 1
            continue

        if record == RECORD_BATCH:
            _batch_statistics(layout, ws, m, params, rec_batch[i])
        elif record == RECORD_EPOCH:
            _accumulate_epoch(layout, ws, m)
        np.copyto(params, ws.new_params)
        if momentum:
            np.copyto(velocity, ws.new_velocity)
        t += 1
        if diag is not None and k % diag.every == 0:
            row = diag.rec[i] if record == RECORD_BATCH else xrow
            _diag_batch(layout, ws, m, x, params, diag, row)
            if record == RECORD_EPOCH:
                _diag_accumulate(ws.diag_epoch, row, m)
            if diag.groups & dx.G_HIST:
                h = k // diag.every if record == RECORD_BATCH else 0
                _diag_hist(layout, ws, m, diag.hist[h], diag.a_range)

    if record == RECORD_EPOCH and batch_stop == n_batches:
        _epoch_statistics(layout, ws, params, rec_epoch)
        if diag is not None:
            _diag_epoch_end(layout, ws.diag_epoch, params, diag)
    return t, n_skipped, -1, -1, -1
