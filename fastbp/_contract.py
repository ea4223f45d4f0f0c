"""The backend contract: codes, the parameter layout and the functions every backend provides.

This module is the single place where the Python layer and the backends meet.
The Python layer (``fastbp/_network.py``) owns every policy decision (defaults,
validation, dtypes, seeds, shuffling, records); a backend owns arithmetic only.
A backend receives C-contiguous arrays of the network's dtype and plain numbers,
writes into buffers it is given, and allocates nothing per mini-batch.

Conventions
-----------
* Layers ``l = 0 .. L-1`` in code are the book's weight layers ``1 .. L``.
  ``W[l]`` has shape ``(sizes[l+1], sizes[l])`` (n_out x n_in, as in the book),
  ``b[l]`` has shape ``(sizes[l+1],)``.
* A mini-batch is a matrix with one example per row: ``X`` is ``(m, sizes[0])``,
  activations ``A[l]`` are ``(m, sizes[l+1])``, so ``Z = A_prev @ W.T + b``.
* ``delta`` is the gradient of the *per-example* cost with respect to the
  pre-activation ``z`` (the book's delta, scikit-learn's "deltas").
* Targets ``Y`` always reach a backend as a dense float matrix ``(N, sizes[-1])``
  of the network dtype (the Python layer one-hot encodes integer labels once).

Parameter layout
----------------
All parameters live in one flat C-contiguous buffer ``params`` of length
``layout.n_params``.  Layer ``l`` occupies ``params[w_off[l] : w_off[l] + n_out*n_in]``
(``W[l]`` row-major) followed by ``params[b_off[l] : b_off[l] + n_out]`` (``b[l]``).
Momentum velocities use the same layout in a buffer of the same length, and so
does the gradient buffer of :func:`gradient`.

Backend functions (module-level, same names in every backend)
-------------------------------------------------------------
``make_workspace(layout, m_max) -> ws``
    Allocate every buffer needed to process up to ``m_max`` examples at once
    (activations, slopes, deltas, gathered batch, gradient, accumulators).
    Opaque to the Python layer.  Called once per (network layout, m_max).

``forward(layout, ws, params, X, out, Y=None) -> float``
    Output activations of ``X`` ``(N, n0)`` into ``out`` ``(N, nL)``, processed in
    chunks of ``ws`` rows.  If ``Y`` ``(N, nL)`` is given, return the mean data
    cost over the N examples (computed from ``z`` as SPEC section 1 says), else NaN.

``gradient(layout, ws, params, X, Y, grad, stats) -> (cost, fault_layer, fault_phase)``
    The average gradient of the mean data cost (no L2 term) over all N examples
    into ``grad`` (params layout), and the probe statistics into ``stats``
    ``(N_STATS, L)`` float64 (the "probe" column of SPEC section 4: update_ratio is
    NaN, weight_norm is ``||W||_F``, nonfinite is 0/1).  Returns the mean data cost and,
    if a non-finite value was met, the layer index and a ``PHASE_*`` code
    (``fault_layer = -1`` when all values are finite).

``train_epoch(layout, ws, params, velocity, X, Y, order, batch_size, batch_start,
batch_stop, hyper, rec_batch, rec_epoch, batch_cost)``
``-> (t, n_skipped, fault_batch, fault_layer, fault_phase)``
(and an optional trailing ``diag``, see below)
    Run mini-batches ``batch_start .. batch_stop-1`` of one epoch.  Mini-batch ``k``
    is the rows ``X[order[k*batch_size : (k+1)*batch_size]]`` (the last one may be
    shorter); ``order`` is an int64 permutation of ``range(N)``.  For each
    mini-batch: gather, forward, output delta, backward (all deltas from the old
    weights), finiteness check, update (SPEC section 3), statistics (SPEC section 4).

    * ``hyper`` is a :class:`Hyper`.  ``hyper.t`` (updates so far) is read at
      entry; the new count is returned as ``t``.
    * ``rec_batch``: ``(batch_stop - batch_start, N_STATS, L)`` float64 written when
      ``hyper.record == RECORD_BATCH`` (row ``i`` is mini-batch ``batch_start + i``),
      else ignored (may be an empty array).
    * ``rec_epoch``: ``(N_STATS, L)`` float64, written when
      ``hyper.record == RECORD_EPOCH`` and ``batch_stop`` is the epoch's last
      mini-batch.  The epoch accumulators live in ``ws`` and are reset when
      ``batch_start == 0``, so an epoch may be run as several chunks.  Between
      the chunks of one epoch the caller must not change ``params`` or
      ``velocity``: the norms the overflow check uses and the Nesterov
      look-ahead point are set up at ``batch_start == 0`` and then kept up to
      date by the updates themselves.
    * ``batch_cost``: ``(batch_stop - batch_start,)`` float64: the mean data cost of
      each mini-batch with the parameters before its update (NaN if skipped).
    * Non-finite values (SPEC section 5): with ``hyper.skip_nonfinite`` false the
      call stops *before* writing any parameter of the faulty mini-batch and
      returns its index in ``fault_batch`` (``-1`` if none), the layer and the
      ``PHASE_*`` code; rows of ``rec_batch``/``batch_cost`` from that mini-batch on
      are unspecified.  ``fault_batch`` is the index of the mini-batch within the
      epoch (not relative to ``batch_start``); ``n_skipped`` counts this call only.
      With ``skip_nonfinite`` true the mini-batch is dropped
      (parameters, velocity and t untouched), its ``rec_batch`` row is NaN except
      ``nonfinite = 1``, and it is counted in ``n_skipped``.
    * Nesterov: the gradient is taken at ``theta + mu_t * v``; ``params`` always
      holds ``theta`` on return.

Optional statistic groups (``diag``, a :class:`Diag`, or None)
---------------------------------------------------------------
``fastbp/_diagnostics.py`` defines every quantity.  With ``diag`` given, on each
accepted mini-batch ``k`` with ``k % diag.every == 0`` (a *sampled* one) and after its
update, the backend computes the groups of ``diag.groups`` from the workspace's
deltas, activations, pre-activations and gradient (no extra pass over ``X``):

* ``record == RECORD_BATCH``: the ``XSTAT_NAMES`` rows of the selected groups into
  ``diag.rec[k - batch_start]`` (rows of other mini-batches and groups untouched;
  the caller fills them with NaN);
* ``record == RECORD_EPOCH``: accumulated in the workspace (reset with the epoch's
  other accumulators at ``batch_start == 0``) and written to ``diag.epoch`` when
  ``batch_stop`` is the epoch's last mini-batch;
* histograms: counts *added* to ``diag.hist[k // every]`` (batch) or ``diag.hist[0]``
  (epoch), ``(L, N_HIST)`` int32 per row;
* the noise-scale averages in ``diag.ema`` are updated in place (state that persists
  across calls); ``distance`` reads the start weights in ``diag.start``.

Statistics (rows of a stats block, float64, one column per layer)
----------------------------------------------------------------
See ``STAT_NAMES`` and the README for definitions; in short, per mini-batch:
``speed`` ||g_b||; ``grad_norm`` ||g_W||_F (data term); ``gain``
||Delta_l||_F/||Delta_{l+1}||_F (NaN for the last layer); ``weight_norm`` ||W||_F
after the update; ``update_ratio`` ||W_new - W_old||_F/||W_old||_F; ``act_mean`` and
``act_std`` (population std, ddof=0) over all (example, unit) pairs; ``sat_low`` /
``sat_high`` fractions; ``slope_mean`` mean f'(z); ``nonfinite`` 0/1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Byte boundary on which fastbp places the arrays its kernels stream through
#: (parameters, velocity, workspace buffers): one cache line.
ALIGN = 64


def aligned_zeros(n: int, dtype, offset: int = 0) -> np.ndarray:
    """n zeros of ``dtype`` whose first element lies ``offset`` bytes past a 64-byte boundary.

    NumPy aligns its allocations to 16 bytes.  A kernel array that does not start on a
    cache line makes every 64-byte vector load or store of it span two lines: with every
    such array 16 bytes off a line, an epoch of workload A took 1.20x as long in float64
    and 1.12-1.14x in float32 (``python benchmarks/ab.py alignment``).  The bytes come from
    ``np.zeros``, so pages not yet written stay unmapped (an unused velocity costs no
    memory).  ``offset`` (a multiple of the itemsize) exists for that benchmark.
    """
    dt = np.dtype(dtype)
    nbytes = int(n) * dt.itemsize
    raw = np.zeros(nbytes + ALIGN + offset, np.uint8)
    start = (-raw.ctypes.data) % ALIGN + offset
    return raw[start : start + nbytes].view(dt)


def aligned(a: np.ndarray, copy: bool = False) -> np.ndarray:
    """``a`` itself if it starts on a 64-byte boundary (and ``copy`` is false), else a
    C-contiguous aligned copy."""
    if not copy and a.ctypes.data % ALIGN == 0:
        return a
    out = aligned_zeros(a.size, a.dtype).reshape(a.shape)
    out[...] = a
    return out


# Activation codes (hidden and output layers share one code space).
SIGMOID, TANH, RELU, LEAKY_RELU, SOFTSIGN, LINEAR, SOFTMAX = range(7)
ACTIVATION_CODES = {
    "sigmoid": SIGMOID,
    "tanh": TANH,
    "relu": RELU,
    "leaky_relu": LEAKY_RELU,
    "softsign": SOFTSIGN,
    "linear": LINEAR,
    "softmax": SOFTMAX,
}
HIDDEN_ACTIVATIONS = ("sigmoid", "tanh", "relu", "leaky_relu", "softsign", "linear")
OUTPUT_ACTIVATIONS = ("sigmoid", "softmax", "linear")

# Cost codes.
CROSS_ENTROPY, QUADRATIC, LOG_LIKELIHOOD = range(3)
COST_CODES = {
    "cross_entropy": CROSS_ENTROPY,
    "quadratic": QUADRATIC,
    "log_likelihood": LOG_LIKELIHOOD,
}

# The valid (output, cost) pairs of SPEC section 1.
VALID_PAIRS = (
    ("sigmoid", "cross_entropy"),
    ("sigmoid", "quadratic"),
    ("softmax", "log_likelihood"),
    ("linear", "quadratic"),
)

# Record modes.
RECORD_NONE, RECORD_BATCH, RECORD_EPOCH = range(3)

# Momentum kinds.
MOMENTUM_NONE, MOMENTUM_CONSTANT, MOMENTUM_SUTSKEVER = range(3)

# Phases of a non-finite fault.
PHASE_FORWARD, PHASE_BACKWARD, PHASE_UPDATE = range(3)
PHASE_NAMES = ("forward", "backward", "update")

# Rows of a statistics block.
STAT_NAMES = (
    "speed",
    "grad_norm",
    "gain",
    "weight_norm",
    "update_ratio",
    "act_mean",
    "act_std",
    "sat_low",
    "sat_high",
    "slope_mean",
    "nonfinite",
)
N_STATS = len(STAT_NAMES)
(
    S_SPEED,
    S_GRAD_NORM,
    S_GAIN,
    S_WEIGHT_NORM,
    S_UPDATE_RATIO,
    S_ACT_MEAN,
    S_ACT_STD,
    S_SAT_LOW,
    S_SAT_HIGH,
    S_SLOPE_MEAN,
    S_NONFINITE,
) = range(N_STATS)

# A unit is saturated when f'(z) is below this fraction of max f'.
SATURATION_FRACTION = 0.01


class Layout:
    """Shapes and codes of a network, as every backend needs them.

    Parameters
    ----------
    sizes : sequence of int, length L+1
        Units per layer, input first.
    activations : sequence of str, length L
        Activation of each weight layer (the last one is the output's).
    cost : str
        Cost name (see ``COST_CODES``).
    dtype : numpy dtype
        float32 or float64.
    alpha : float
        Slope of leaky_relu below zero.
    """

    def __init__(self, sizes, activations, cost, dtype, alpha=0.01):
        self.sizes = np.ascontiguousarray(sizes, dtype=np.int64)
        self.L = len(self.sizes) - 1
        self.acts = np.ascontiguousarray([ACTIVATION_CODES[a] for a in activations], dtype=np.int32)
        self.activation_names = tuple(activations)
        self.cost = COST_CODES[cost]
        self.cost_name = cost
        self.dtype = np.dtype(dtype)
        self.alpha = float(alpha)
        w_off = np.empty(self.L, dtype=np.int64)
        b_off = np.empty(self.L, dtype=np.int64)
        off = 0
        for l in range(self.L):
            n_in, n_out = int(self.sizes[l]), int(self.sizes[l + 1])
            w_off[l] = off
            off += n_out * n_in
            b_off[l] = off
            off += n_out
        self.w_off = w_off
        self.b_off = b_off
        self.n_params = off

    def weight_views(self, buf):
        """Per-layer ``(n_out, n_in)`` views of ``W`` into a flat buffer ``buf``."""
        return [
            buf[self.w_off[l] : self.w_off[l] + self.sizes[l + 1] * self.sizes[l]].reshape(
                int(self.sizes[l + 1]), int(self.sizes[l])
            )
            for l in range(self.L)
        ]

    def bias_views(self, buf):
        """Per-layer ``(n_out,)`` views of ``b`` into a flat buffer ``buf``."""
        return [buf[self.b_off[l] : self.b_off[l] + self.sizes[l + 1]] for l in range(self.L)]

    def __eq__(self, other):
        return (
            isinstance(other, Layout)
            and np.array_equal(self.sizes, other.sizes)
            and np.array_equal(self.acts, other.acts)
            and self.cost == other.cost
            and self.dtype == other.dtype
            and self.alpha == other.alpha
        )

    def __hash__(self):
        return hash(
            (
                tuple(self.sizes.tolist()),
                tuple(self.acts.tolist()),
                self.cost,
                self.dtype.str,
                self.alpha,
            )
        )


@dataclass
class Hyper:
    """Hyper-parameters of :func:`train_epoch`, as plain numbers.

    Attributes
    ----------
    eta : float
        Learning rate.
    lmbda_n : float
        L2 coefficient divided by the number of training examples (lambda / n).
    momentum_kind : int
        ``MOMENTUM_NONE`` (plain SGD, velocity untouched), ``MOMENTUM_CONSTANT``
        (mu) or ``MOMENTUM_SUTSKEVER`` (mu_t = min(1 - 1/(2 (floor(t/period)+1)), mu_max)).
    mu, mu_max : float
        Constant momentum, and the cap of the Sutskever schedule.
    period : int
        Updates per step of the Sutskever schedule (250 in the paper).
    nesterov : bool
        Take the gradient at the look-ahead point theta + mu_t v.
    record : int
        ``RECORD_NONE``, ``RECORD_BATCH`` or ``RECORD_EPOCH``.
    skip_nonfinite : bool
        Drop faulty mini-batches instead of stopping.
    t : int
        Updates applied so far (input of the schedule).
    """

    eta: float
    lmbda_n: float = 0.0
    momentum_kind: int = MOMENTUM_NONE
    mu: float = 0.0
    mu_max: float = 0.0
    period: int = 250
    nesterov: bool = False
    record: int = RECORD_EPOCH
    skip_nonfinite: bool = False
    t: int = 0


@dataclass
class Diag:
    """Buffers and settings of the optional statistic groups (see the module docstring).

    Attributes
    ----------
    groups : int
        Bit mask of ``fastbp._diagnostics.G_*``.
    every : int
        Mini-batch ``k`` of an epoch is sampled when ``k % every == 0``.
    beta : float
        Coefficient of the noise scale's exponential moving averages.
    rec : ndarray (rows, N_X, L) float64
        This call's rows (row ``i`` is mini-batch ``batch_start + i``) with
        ``RECORD_BATCH``, else empty.
    epoch : ndarray (N_X, L) float64
        Written at the epoch's end with ``RECORD_EPOCH``.
    hist : ndarray (H, L, N_HIST) int32
        This epoch's histogram rows (counts are added).
    ema : ndarray (2, L) float64
        Noise-scale averages ``[tr Sigma, |G|^2]``, updated in place.
    start : ndarray (n_params,) network dtype
        Parameters at the start of the first ``fit`` (``distance`` uses the weights).
    a_range : ndarray (L, 2) float64
        ``(lo, hi)`` of the linear histogram of each layer's activation.
    start_norms : ndarray (L,) float64
        ``||W_start||_F`` per layer (a bound the compiled kernel scales with).
    """

    groups: int
    every: int
    beta: float
    rec: np.ndarray
    epoch: np.ndarray
    hist: np.ndarray
    ema: np.ndarray
    start: np.ndarray
    a_range: np.ndarray
    start_norms: np.ndarray


def momentum_at(hyper: Hyper, t: int) -> float:
    """mu_t of SPEC section 3 (the reference formula; kernels compute the same)."""
    if hyper.momentum_kind == MOMENTUM_NONE:
        return 0.0
    if hyper.momentum_kind == MOMENTUM_CONSTANT:
        return hyper.mu
    return min(1.0 - 1.0 / (2.0 * (t // hyper.period + 1)), hyper.mu_max)
