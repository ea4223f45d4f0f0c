"""Numba backend: the compiled backend's fused pass, JIT-compiled where no extension exists.

This module implements the backend contract of :mod:`fastbp._contract`
(``make_workspace``, ``forward``, ``gradient``, ``train_epoch``) with Numba.  It
is the fallback for installations without the compiled extension (a platform
with no wheel and no compiler, a source checkout, a failed build) and is imported
only when that backend is asked for or selected: ``import fastbp`` never imports
Numba.

Design
------
It mirrors ``src_ext/_kernels.pyx`` (read its Design block first); where the two
differ, this module follows the NumPy reference (``numpy_backend.py``), whose
expression forms and dtype rounding it reproduces.

Layering:

1. element and vector helpers (``_norm``, ``_pow2_exponent``, ``_momentum_at``);
2. per-layer loops: ``_hidden_forward`` / ``_output_forward`` (activation, slopes,
   finiteness flag, the sums behind act_mean / slope_mean / saturation),
   ``_output_delta`` / ``_hidden_delta`` (deltas, cost, column sums for g_b, sum of
   squares of the deltas, second pass of the activation variance) and
   ``_update_layer`` (the update of SPEC section 3 with the norms of the
   statistics and of the overflow bounds in the same pass over W);
3. drivers ``_train_batches``, ``_gradient_all``, ``_forward_all``: the only
   jitted functions called from Python, each once per call (a whole epoch, or a
   chunk of mini-batches, runs inside one call without the GIL);
4. the four contract functions, in Python: they check the buffer contract,
   normalise the inputs and pick the numbers out of :class:`fastbp._contract.Hyper`.

One compiled specialisation per dtype.  Activation, cost, record mode, momentum
kind, Nesterov and the skip policy are runtime values (codes of ``_contract``);
network sizes live in arrays.  Inputs are normalised before the jitted boundary:
``X``, ``Y`` and ``order`` are made C-contiguous, of the network dtype (int64 for
``order``) and passed as *read-only* plain-ndarray views (a zero-copy view of a
writable array), so a read-only or memory-mapped input has exactly the type of an
ordinary one.  Hence a new network, a new batch size or a memmap never triggers a
recompilation; ``tests/test_numba_backend.py`` checks it.

Matrices are row-major, one example per row; the products go to BLAS through
``np.dot(a, b, out)`` (Numba calls SciPy's ``cython_blas``, the BLAS of the
compiled backend), on C- or F-ordered views, so nothing is copied:

* forward   ``Z (m, n_out) = A (m, n_in) @ W.T``
* backward  ``D_prev (m, n_in) = D (m, n_out) @ W``
* gradient  ``G (n_out, n_in) = D.T @ A``  (sums; divided by m in the update loop)

Where this module follows the reference rather than the compiled backend (all
within SPEC section 6's tolerances): g_b is the column sum of the deltas in the
network dtype divided by m (not a float64 sum); softmax normalises with a sum in
the network dtype; W_new - W_old of update_ratio is taken in float64; ``gradient()``
also checks the averaged gradient for overflow (phase backward); act_mean is NaN
when no pair was seen.  The sigmoid's exp is vectorised (:func:`_vexp`, the method
of ``src_ext/vmath.c``); tanh and the costs use libm.

Non-finite values (SPEC section 5) are detected with ``not (abs(z) <= top)``
(``top`` the dtype's largest finite value; false for NaN and Inf) in the forward
and delta loops; an update is refused when cheap norm bounds say it could
overflow, exactly as in the compiled backend; no parameter is written before
every check of a mini-batch passed.

Optional statistic groups (``train_epoch(..., diag)``, ``fastbp/_diagnostics.py``):
computed inside ``_train_batches`` on each sampled, accepted mini-batch after its
update (``_diag_batch``), from the workspace's deltas, activations, output ``z`` and
gradient sums; without ``diag`` the driver gets fixed-type empty placeholders and
``groups = 0`` (one compiled driver either way, one test per mini-batch).  A hidden
layer's ``z`` is overwritten by its activation, so on sampled mini-batches of the
histogram group its counts are taken in ``_forward_layers`` (``ZH``) and added only
once the mini-batch is accepted.  The moments' float64 scratch is made at its first use.

Memory: every buffer lives in the :class:`Workspace` (allocated once per network
and batch size); inside the drivers only array views are made, nothing is
allocated per mini-batch.  (Each view costs two atomic reference-count updates,
a few percent of an epoch of the chapter's workload: the main difference in speed
from the compiled backend.)

Threading: no ``prange``.  The drivers release the GIL (``nogil=True``), so
two threads training two networks run at once; a workspace must not be used by
two threads at once (a ``Network`` owns its workspaces).

Compilation: lazily, at the first call of each driver per dtype, and cached on
disk where possible (``fastbp/_config.py``; ``fastbp.backends()["numba"].detail``
says where).
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np

from .. import _config
from .. import _diagnostics as dx
from .._contract import (
    ACTIVATION_CODES,
    CROSS_ENTROPY,
    HIDDEN_ACTIVATIONS,
    LEAKY_RELU,
    LINEAR,
    LOG_LIKELIHOOD,
    MOMENTUM_CONSTANT,
    MOMENTUM_NONE,
    N_STATS,
    PHASE_BACKWARD,
    PHASE_FORWARD,
    PHASE_UPDATE,
    QUADRATIC,
    RECORD_BATCH,
    RECORD_EPOCH,
    RECORD_NONE,
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
    aligned_zeros,
)

numba = _config.import_numba()  # ImportError with the reason if Numba is unusable
jit = _config.jit

__all__ = ["make_workspace", "forward", "gradient", "train_epoch", "DETAIL", "Workspace"]

# Saturation thresholds (SPEC section 4), compared in float64 as the reference does.
_THR_SIGMOID = SATURATION_FRACTION * 0.25
_THR_UNIT = SATURATION_FRACTION * 1.0

# Per-layer accumulators of one mini-batch (rows of ``bacc``, shape (N_B, L)).
B_SUMA = 0  # sum of a
B_M2 = 1  # sum of (a - mean)^2
B_SUMS = 2  # sum of slopes
B_LOW = 3  # saturated-low count
B_HIGH = 4  # saturated-high count
B_SSQD = 5  # scaled sum of squares of the deltas ...
B_EXPD = 6  # ... and its power-of-two exponent
B_NRMA = 7  # bound on ||A||_F (sqrt(m n) for activations bounded by 1)
B_CNT = 8  # number of (example, unit) pairs
B_GNORM = 9  # ||g_W||_F (from the update loop)
B_WNORM = 10  # ||W_new||_F
B_DNORM = 11  # ||W_new - W_old||_F
B_WOLD = 12  # ||W_old||_F
B_GB = 13  # bound on |g| of the layer
B_VB = 14  # bound on |W_new - W_old|
B_PB = 15  # bound on |W_new|
N_B = 16

# Per-layer accumulators of an epoch (``eacc``) or of a gradient() call (``gacc``).
E_CNT = 0  # pooled count of pairs
E_MEAN = 1  # pooled mean of a
E_M2 = 2  # pooled M2 of a
E_SUMS = 3
E_LOW = 4
E_HIGH = 5
E_GAIN = 6  # sum of per-batch gains
E_NGAIN = 7  # number of batches in E_GAIN
E_NRMP = 8  # ||theta_l|| (W and b): bound on max |theta| for the overflow check
E_NRMV = 9  # ||v_l||
E_NRMF = 10  # ||phi_l|| (Nesterov look-ahead point)
N_E = 11

# ``state`` entries (float64): examples and skipped mini-batches of the current epoch.
ST_EPOCH_M = 0
ST_SKIPPED = 1

# Norms are recomputed with scaling when a plain sum of squares leaves this range.
SAFE_LO = 2.0**-900
SAFE_HI = 2.0**900

# Optional statistic groups (``fastbp/_diagnostics.py``): bits of ``Diag.groups`` ...
G_PER_EXAMPLE = dx.G_PER_EXAMPLE
G_NOISE = dx.G_NOISE
G_MOMENTS = dx.G_MOMENTS
G_HIST = dx.G_HIST
G_DISTANCE = dx.G_DISTANCE
G_ALL = G_PER_EXAMPLE | G_NOISE | G_MOMENTS | G_HIST | G_DISTANCE
G_ROWS = G_PER_EXAMPLE | G_NOISE | G_MOMENTS | G_DISTANCE  # the groups with XSTAT rows
# ... rows of an extra-statistics block (N_X, L) ...
N_X = dx.N_X
X_PE_MEAN = dx.X_PE_MEAN
X_PE_MAX = dx.X_PE_MAX
X_TRACE = dx.X_TRACE
X_NOISE = dx.X_NOISE
X_GSNR = dx.X_GSNR
X_GSNR_ZERO = dx.X_GSNR_ZERO
X_DISTANCE = dx.X_DISTANCE
# ... histogram bins ...
N_HIST = dx.N_HIST
H_DELTA = dx.H_DELTA
H_Z = dx.H_Z
H_A = dx.H_A
N_DECADE_BINS = dx.N_DECADE_BINS
DEC_ZERO = dx.N_DECADES + 2  # the zero bin of a signed-decade histogram
DEC_MIN = dx.DECADE_MIN
N_LINEAR = dx.N_LINEAR
# ... and the rows of the per-epoch sums ``dacc`` (N_DA, L) (``numpy_backend._DiagEpoch``)
DA_PE = 0  # sum of m * pe_norm_mean
DA_M = 1  # examples of the sampled mini-batches
DA_TRACE = 2  # sum of trace_cov (m > 1)
DA_NTRACE = 3  # mini-batches in DA_TRACE
DA_GSNR = 4  # sum of the finite gsnr
DA_NGSNR = 5  # mini-batches in DA_GSNR
DA_ZERO = 6  # sum of gsnr_zero (m > 1)
DA_NZERO = 7  # mini-batches in DA_ZERO
DA_PEMAX = 8  # max of pe_norm_max (-inf: none yet)
N_DA = 9

# Rows of the int64 description array ``net`` (shape (N_META, L + 1)).
M_SIZES = 0  # units per layer, input first (L + 1 entries)
M_ACTS = 1  # activation code of each weight layer (L entries)
M_WOFF = 2  # offset of W[l] in a params buffer
M_BOFF = 3  # offset of b[l] in a params buffer
M_AOFF = 4  # offset of layer l's (m_max, n_{l+1}) block in A, S and D
N_META = 5

#: The network's description and buffers, one per workspace.  The drivers receive
#: it as a plain tuple (``Workspace.args``) and unpack it once at their top, in this
#: order; the helpers they call receive plain arrays, which keeps Numba's compile
#: time down (a many-field tuple passed to every call site costs seconds of
#: compilation).  A plain tuple, not the namedtuple: Numba types a plain tuple of
#: arrays in C at each call, a namedtuple through Python ``typeof``.
_Work = namedtuple(
    "_Work",
    [
        # description
        "net",  # int64 (N_META, L + 1), see M_*
        "cost", "alpha", "top", "m_max",
        # network-dtype buffers
        "A",  # activations of every layer, layer l at net[M_AOFF, l], (m, n_{l+1}) each
        "S",  # slopes f'(z) of hidden layers (same layout)
        "D",  # deltas (same layout)
        "ZL",  # output pre-activations (m_max, n_L), flat
        "Xb",  # gathered mini-batch / chunk input (m_max, n_0), flat
        "Yb",  # gathered targets (m_max, n_L), flat
        "G",  # gradient sums, params layout
        "P0",  # params at the start of the epoch (record="epoch")
        "PHI",  # Nesterov look-ahead point
        # float64 accumulators
        "bacc",  # (N_B, L)
        "eacc",  # (N_E, L)
        "gacc",  # (N_E, L)
        "Gacc",  # (n_params,): sum over the epoch of m_k g_k
        "gsum",  # (n_params,): gradient() sums over the chunks
        "ssq_g",  # (2, L): scaled sums of squares of Delta over a gradient() call
        "q",  # (2, 6): sums of squares of one layer's update loops
        "state",  # (2,): ST_EPOCH_M, ST_SKIPPED
        # optional statistic groups (small; the moment buffers are made lazily)
        "edges",  # float64 (61,): fastbp._diagnostics.DECADE_EDGES
        "ZH",  # int64 (L, N_DECADE_BINS): counts of the hidden z of the current mini-batch
        "dacc",  # float64 (N_DA, L): epoch sums (record="epoch")
        "xrow",  # float64 (N_X, L): a mini-batch's values when not recorded per batch
    ],
)

#: The numbers of :class:`fastbp._contract.Hyper`, typed once (float64, int64, bool),
#: passed to ``_train_batches`` as a plain tuple in this order.
_Hyp = namedtuple(
    "_Hyp", ["eta", "lmbda_n", "kind", "mu", "mu_max", "period", "nesterov", "record", "skip"]
)


# --------------------------------------------------------------------------- #
# Layer 1: element and vector helpers
# --------------------------------------------------------------------------- #
@jit
def _pow2_exponent(x):
    """e such that 2**e is within a factor 2 of x (x > 0 finite), clamped to +-1000; else 0."""
    if not (x > 0.0) or x == np.inf:
        return 0
    e = math.frexp(x)[1]
    if e > 1000:
        return 1000
    if e < -1000:
        return -1000
    return e


@jit
def _norm(x):
    """||x||_2 in float64 of a 1-D array of any float dtype, scaled by a power of two.

    Two passes: max |x|, then the sum of squares of ``x * 2**-e``; 0 for an empty or
    all-zero array, inf if x holds an infinity (and no NaN), NaN if it holds a NaN.
    """
    mx = 0.0
    for i in range(x.shape[0]):
        v = abs(np.float64(x[i]))
        if v > mx or v != v:
            mx = v
    if mx == 0.0 or mx != mx or mx == np.inf:
        return mx
    sc = math.ldexp(1.0, -_pow2_exponent(mx))
    s = 0.0
    for i in range(x.shape[0]):
        v = np.float64(x[i]) * sc
        s += v * v
    return math.sqrt(s) / sc


@jit
def _norm_diff(x, y):
    """||x - y||_2 in float64 (the difference taken in float64, as the reference does)."""
    mx = 0.0
    for i in range(x.shape[0]):
        v = abs(np.float64(x[i]) - np.float64(y[i]))
        if v > mx or v != v:
            mx = v
    if mx == 0.0 or mx != mx or mx == np.inf:
        return mx
    sc = math.ldexp(1.0, -_pow2_exponent(mx))
    s = 0.0
    for i in range(x.shape[0]):
        v = (np.float64(x[i]) - np.float64(y[i])) * sc
        s += v * v
    return math.sqrt(s) / sc


@jit
def _ssq_norm(ssq, e):
    """The norm whose square is carried as ``ssq * 4**e``."""
    return math.ldexp(math.sqrt(ssq), int(e))


@jit
def _ssq_add(acc_ssq, acc_e, ssq, e):
    """(acc_ssq, acc_e) + (ssq, e) for sums of squares carried as ``ssq * 4**e``."""
    if ssq == 0.0:
        return acc_ssq, acc_e
    if acc_ssq == 0.0:
        return ssq, e
    big = acc_e if acc_e > e else e
    total = math.ldexp(acc_ssq, int(2 * (acc_e - big))) + math.ldexp(ssq, int(2 * (e - big)))
    return total, big


@jit
def _momentum_at(kind, mu, mu_max, period, t):
    """mu_t of SPEC section 3 (``fastbp._contract.momentum_at``)."""
    if kind == MOMENTUM_NONE:
        return 0.0
    if kind == MOMENTUM_CONSTANT:
        return mu
    mu_t = 1.0 - 1.0 / (2.0 * ((t // period) + 1))
    return mu_t if mu_t < mu_max else mu_max


# exp by vmath.c's method (src_ext/vmath.c): x = k ln2 + r, |r| <= ln2/2, exp(r) by its
# Taylor polynomial of degree 13, times 2**k built from the exponent bits in two
# factors (so that subnormal results are right); inputs clamped to [-1100, 710].
_SHIFTER = 6755399441055744.0  # 1.5 * 2**52: (x + _SHIFTER) - _SHIFTER rounds x
_LOG2E = 1.4426950408889634
_LN2HI = 6.93147180369123816490e-01  # ln 2 in 32 significant bits ...
_LN2LO = 1.90821492927058770002e-10  # ... and the rest (Cody-Waite)
_SHIFTER_BITS = 0x4338000000000000  # the bits of _SHIFTER


@jit(exact=True)
def _vexp(x):
    """``x[i] = exp(x[i])`` for a 1-D float array, in float64, rounded once to x's dtype.

    Written for LLVM to vectorise it (no calls, no branches: libm's ``exp`` is a
    scalar call that keeps the sigmoid loop scalar): within 2 ulp of libm in
    float64, NaN propagates, ``exp(-inf) = 0``.  Compiled without reassociation
    (``_config.EXACT_FASTMATH``): the range reduction needs IEEE rounding.
    """
    for i in range(x.shape[0]):
        v = np.float64(x[i])
        c = -1100.0 if v < -1100.0 else (710.0 if v > 710.0 else v)  # NaN stays NaN
        t = c * _LOG2E + _SHIFTER
        kd = t - _SHIFTER  # round(c / ln 2), exactly
        ki = np.float64(t).view(np.int64) - _SHIFTER_BITS  # the same integer
        r = (c - kd * _LN2HI) - kd * _LN2LO
        p = 1.0 / 6227020800.0
        p = p * r + 1.0 / 479001600.0
        p = p * r + 1.0 / 39916800.0
        p = p * r + 1.0 / 3628800.0
        p = p * r + 1.0 / 362880.0
        p = p * r + 1.0 / 40320.0
        p = p * r + 1.0 / 5040.0
        p = p * r + 1.0 / 720.0
        p = p * r + 1.0 / 120.0
        p = p * r + 1.0 / 24.0
        p = p * r + 1.0 / 6.0
        p = p * r + 0.5
        p = p * r + 1.0
        p = p * r + 1.0
        kh = ki >> 1
        scale_1 = np.int64((kh + 1023) << 52).view(np.float64)
        scale_2 = np.int64((ki - kh + 1023) << 52).view(np.float64)
        x[i] = x.dtype.type(p * scale_1 * scale_2)


@jit
def _rows(buf, off, m, n):
    """The ``(m, n)`` C-ordered view of ``buf[off : off + m*n]``."""
    return buf[off : off + m * n].reshape(m, n)


# --------------------------------------------------------------------------- #
# Layer 2: per-layer loops
# --------------------------------------------------------------------------- #
@jit
def _hidden_forward(code, alpha, Z, S, b, stats, acc, l, top):
    """``Z`` (m, n) holds ``A_prev @ W.T``: make it ``a = f(Z + b)`` in place, slopes into ``S``.

    Also the bound on ``||A||_F`` for the overflow check and, with ``stats``, the
    sums behind act_mean, slope_mean and the saturation fractions.  Returns True
    if a pre-activation is not finite.
    """
    m, n = Z.shape
    one = Z.dtype.type(1.0)
    zero = Z.dtype.type(0.0)
    bad = False
    if code == SIGMOID:
        # e = exp(-|z|) (never overflows) for the whole block by the vectorised exp,
        # with S as scratch; then a and the slope from e
        for i in range(m):
            for j in range(n):
                z = Z[i, j] + b[j]
                bad |= not (abs(z) <= top)
                Z[i, j] = z
                S[i, j] = -abs(z)
        _vexp(S.reshape(m * n))
        for i in range(m):
            for j in range(n):
                z = Z[i, j]
                e = S[i, j]
                a = one / (one + e) if z >= zero else e / (one + e)
                Z[i, j] = a
                # sigma'(z) = a (1 - a) = e / (1 + e)^2: the latter keeps its digits when
                # the unit saturates (1 - a cancels in float32 from z ~ 10 on)
                S[i, j] = e / ((one + e) * (one + e))
    elif code == TANH:
        for i in range(m):
            for j in range(n):
                z = Z[i, j] + b[j]
                bad |= not (abs(z) <= top)
                a = math.tanh(z)
                Z[i, j] = a
                S[i, j] = one - a * a
    elif code == RELU:
        for i in range(m):
            for j in range(n):
                z = Z[i, j] + b[j]
                bad |= not (abs(z) <= top)
                Z[i, j] = z if z > zero else zero
                S[i, j] = one if z > zero else zero
    elif code == LEAKY_RELU:
        for i in range(m):
            for j in range(n):
                z = Z[i, j] + b[j]
                bad |= not (abs(z) <= top)
                Z[i, j] = z if z > zero else alpha * z
                S[i, j] = one if z > zero else alpha
    elif code == SOFTSIGN:
        for i in range(m):
            for j in range(n):
                z = Z[i, j] + b[j]
                bad |= not (abs(z) <= top)
                a = z / (one + abs(z))
                u = one - abs(a)
                Z[i, j] = a
                S[i, j] = u * u
    else:  # LINEAR
        for i in range(m):
            for j in range(n):
                z = Z[i, j] + b[j]
                bad |= not (abs(z) <= top)
                Z[i, j] = z
                S[i, j] = one
    # |a| <= 1 for sigmoid, tanh and softsign, so ||A||_F <= sqrt(m n)
    acc[B_NRMA, l] = _act_norm_bound(Z, code == RELU or code == LEAKY_RELU or code == LINEAR)
    if stats:
        suma = 0.0
        sums = 0.0
        low = 0
        high = 0
        if code == RELU or code == LEAKY_RELU:
            for i in range(m):
                for j in range(n):
                    a = np.float64(Z[i, j])
                    suma += a
                    sums += np.float64(S[i, j])
                    low += 1 if a <= 0.0 else 0  # z <= 0 (alpha >= 0)
        elif code == LINEAR:
            for i in range(m):
                for j in range(n):
                    suma += np.float64(Z[i, j])
            sums = np.float64(m * n)
        else:
            thr = _THR_SIGMOID if code == SIGMOID else _THR_UNIT
            mid = 0.5 if code == SIGMOID else 0.0
            for i in range(m):
                for j in range(n):
                    a = np.float64(Z[i, j])
                    s = np.float64(S[i, j])
                    suma += a
                    sums += s
                    low += 1 if (s < thr and a < mid) else 0
                    high += 1 if (s < thr and a > mid) else 0
        _store_act_acc(acc, l, m * n, suma, sums, low, high)
    return bad


@jit
def _row_lse(Z, i):
    """log sum_j exp(Z[i, j]) in float64, max-subtracted."""
    n = Z.shape[1]
    zmax = -np.inf
    for j in range(n):
        zj = np.float64(Z[i, j])
        if zj > zmax:
            zmax = zj
    s = 0.0
    for j in range(n):
        s += math.exp(np.float64(Z[i, j]) - zmax)
    return zmax + math.log(s)


@jit
def _act_norm_bound(A, unbounded):
    """A bound on ||A||_F for the overflow check: ||A||_F itself for an unbounded
    activation, sqrt(m n) for one bounded by 1."""
    m, n = A.shape
    if not unbounded:
        return math.sqrt(np.float64(m * n))
    ssqa = 0.0
    for i in range(m):
        for j in range(n):
            v = np.float64(A[i, j])
            ssqa += v * v
    return math.sqrt(ssqa)


@jit
def _store_act_acc(acc, l, cnt, suma, sums, low, high):
    """The activation accumulators of one block (M2 follows in the delta pass)."""
    acc[B_SUMA, l] = suma
    acc[B_SUMS, l] = sums
    acc[B_LOW, l] = low
    acc[B_HIGH, l] = high
    acc[B_CNT, l] = cnt
    acc[B_M2, l] = 0.0


@jit
def _output_forward(code, Z, A, b, stats, acc, l, top):
    """``Z`` (m, n) holds ``A_prev @ W.T``: add ``b`` (z stays in ``Z``), ``a = f(z)`` into ``A``.

    softmax is row-wise and max-subtracted, its sum in the network dtype (as the
    reference).  Returns True if a pre-activation is not finite.
    """
    m, n = Z.shape
    one = Z.dtype.type(1.0)
    zero = Z.dtype.type(0.0)
    bad = False
    if code == SOFTMAX:
        for i in range(m):
            zmax = -np.inf
            for j in range(n):
                z = Z[i, j] + b[j]
                Z[i, j] = z
                bad |= not (abs(z) <= top)
                if z > zmax:
                    zmax = z
            zm = Z.dtype.type(zmax)
            tot = zero
            for j in range(n):
                e = math.exp(Z[i, j] - zm)
                A[i, j] = e
                tot += e
            for j in range(n):
                A[i, j] = A[i, j] / tot
    elif code == SIGMOID:
        for i in range(m):
            for j in range(n):
                z = Z[i, j] + b[j]
                Z[i, j] = z
                bad |= not (abs(z) <= top)
                e = math.exp(-abs(z))
                A[i, j] = one / (one + e) if z >= zero else e / (one + e)
    else:  # LINEAR
        for i in range(m):
            for j in range(n):
                z = Z[i, j] + b[j]
                Z[i, j] = z
                bad |= not (abs(z) <= top)
                A[i, j] = z
    acc[B_NRMA, l] = _act_norm_bound(A, code == LINEAR)
    if stats:
        suma = 0.0
        sums = 0.0
        low = 0
        high = 0
        if code == SIGMOID:
            for i in range(m):
                for j in range(n):
                    e = math.exp(-abs(Z[i, j]))
                    a = np.float64(A[i, j])
                    s = np.float64(e / ((one + e) * (one + e)))
                    suma += a
                    sums += s
                    low += 1 if (s < _THR_SIGMOID and a < 0.5) else 0
                    high += 1 if (s < _THR_SIGMOID and a > 0.5) else 0
        else:
            for i in range(m):
                for j in range(n):
                    suma += np.float64(A[i, j])
            sums = np.float64(m * n)  # linear: f' = 1 (softmax: unused, NaN)
        _store_act_acc(acc, l, m * n, suma, sums, low, high)
    return bad


@jit
def _delta_ssq(D, ssq):
    """(sum of squares of D, exponent e), carried as ``ssq * 4**e``.

    The plain sum (computed by the caller) is exact enough inside [2^-900, 2^900];
    otherwise (deltas of a very deep net, or huge ones) the in-cache block is read
    again, scaled by a power of two near its max.
    """
    if ssq >= SAFE_LO and ssq <= SAFE_HI:
        return ssq, 0
    m, n = D.shape
    mx = 0.0
    for i in range(m):
        for j in range(n):
            v = abs(np.float64(D[i, j]))
            if v > mx:
                mx = v
    e = _pow2_exponent(mx)
    sc = math.ldexp(1.0, -e)
    s = 0.0
    for i in range(m):
        for j in range(n):
            v = np.float64(D[i, j]) * sc
            s += v * v
    return s, e


@jit
def _output_delta(act, cost, Z, A, Y, D, gb, stats, acc, l, top):
    """Output deltas into ``D`` (m, n), their column sums into ``gb`` (network dtype).

    ``a - y`` (for sigmoid + cross-entropy written ``(1 - y) a - y sigma(-z)``, exact
    for 0/1 targets when ``a`` rounds to 1), or ``(a - y) * sigma'(z)`` for sigmoid +
    quadratic.  Also the sum of squares of the deltas and, with ``stats``, the second
    pass of the activation variance.  Returns ``(summed data cost (float64, from z), bad)``.
    """
    m, n = D.shape
    one = D.dtype.type(1.0)
    zero = D.dtype.type(0.0)
    bad = False
    total = 0.0
    ssq = 0.0
    m2 = 0.0
    mean = acc[B_SUMA, l] / acc[B_CNT, l] if stats else 0.0
    for j in range(n):
        gb[j] = D.dtype.type(0.0)
    for i in range(m):
        lse = _row_lse(Z, i) if cost == LOG_LIKELIHOOD else 0.0
        for j in range(n):
            a = A[i, j]
            y = Y[i, j]
            z64 = np.float64(Z[i, j])
            y64 = np.float64(y)
            if cost == CROSS_ENTROPY:
                total += (max(z64, 0.0) + math.log1p(math.exp(-abs(z64)))) - y64 * z64
            elif cost == LOG_LIKELIHOOD:
                total += y64 * (lse - z64)
            else:
                diff = np.float64(a) - y64
                total += 0.5 * (diff * diff)
            if act == SIGMOID and cost == CROSS_ENTROPY:
                # a - y written as (1 - y) sigma(z) - y sigma(-z): exact for 0/1 targets
                # even where a rounds to 1 (saturated float32 units), as the reference
                zt = Z[i, j]
                e = math.exp(-abs(zt))
                a_neg = (e if zt >= zero else one) / (one + e)  # sigma(-z)
                d = (one - y) * a - y * a_neg
            else:
                d = a - y
            if act == SIGMOID and cost == QUADRATIC:
                e = math.exp(-abs(Z[i, j]))
                d = d * (e / ((one + e) * (one + e)))
            D[i, j] = d
            bad |= not (abs(d) <= top)
            d64 = np.float64(d)
            ssq += d64 * d64
            gb[j] += d
            if stats:
                t = np.float64(a) - mean
                m2 += t * t
    if stats:
        acc[B_M2, l] = m2
    s_e = _delta_ssq(D, ssq)
    acc[B_SSQD, l] = s_e[0]
    acc[B_EXPD, l] = s_e[1]
    return total, bad


@jit
def _hidden_delta(D, S, A, gb, stats, acc, l, top):
    """``D`` (m, n) holds ``delta_next @ W_next``: multiply by the slopes in place (BP2).

    Column sums into ``gb`` (network dtype), the sum of squares of the deltas and,
    with ``stats``, the second pass of the activation variance.  Returns True if a
    delta is not finite.
    """
    m, n = D.shape
    bad = False
    ssq = 0.0
    for j in range(n):
        gb[j] = D.dtype.type(0.0)
    for i in range(m):
        for j in range(n):
            d = D[i, j] * S[i, j]
            D[i, j] = d
            bad |= not (abs(d) <= top)
            d64 = np.float64(d)
            ssq += d64 * d64
            gb[j] += d
    if stats:
        mean = acc[B_SUMA, l] / acc[B_CNT, l]
        m2 = 0.0
        for i in range(m):
            for j in range(n):
                t = np.float64(A[i, j]) - mean
                m2 += t * t
        acc[B_M2, l] = m2
    s_e = _delta_ssq(D, ssq)
    acc[B_SSQD, l] = s_e[0]
    acc[B_EXPD, l] = s_e[1]
    return bad


# --------------------------------------------------------------------------- #
# One pass over a block of examples: forward, output delta, backward, gradient sums
# --------------------------------------------------------------------------- #
@jit
def _forward_layers(net, P, X, A, S, ZL, acc, alpha, top, stats, ZH, edges, want_z):
    """Forward pass of the rows of ``X`` (m, n_0); returns the first non-finite layer or -1.

    Hidden activations go to ``A`` (slopes to ``S``), the output's pre-activations to
    ``ZL`` and its activations to ``A``.  A hidden layer's ``z`` is overwritten by its
    activation, so with ``want_z`` (a sampled mini-batch of the histogram group) its
    signed-decade counts go to ``ZH[l]`` before that.
    """
    m = X.shape[0]
    L = net.shape[1] - 1
    for l in range(L):
        n_in = net[M_SIZES, l]
        n_out = net[M_SIZES, l + 1]
        W = _rows(P, net[M_WOFF, l], n_out, n_in)
        b = P[net[M_BOFF, l] : net[M_BOFF, l] + n_out]
        A_l = _rows(A, net[M_AOFF, l], m, n_out)
        Z = ZL[: m * n_out].reshape(m, n_out) if l == L - 1 else A_l
        if l == 0:
            np.dot(X, W.T, Z)
        else:
            np.dot(_rows(A, net[M_AOFF, l - 1], m, n_in), W.T, Z)
        if l < L - 1:
            if want_z:
                _count_z(Z, b, edges, ZH[l])
            S_l = _rows(S, net[M_AOFF, l], m, n_out)
            bad = _hidden_forward(net[M_ACTS, l], alpha, Z, S_l, b, stats, acc, l, top)
        else:
            bad = _output_forward(net[M_ACTS, l], Z, A_l, b, stats, acc, l, top)
        if bad:
            return l
    return -1


@jit
def _fused_pass(net, cost, P, X, Y, A, S, D, ZL, G, acc, alpha, top, stats, ZH, edges, want_z):
    """Forward, output delta, backward and gradient sums over the rows of ``X`` (m, n_0).

    ``G`` receives ``Delta.T @ A_prev`` (weights) and ``Delta.sum(0)`` (biases),
    network dtype, not yet divided by m.  Returns ``(phase, layer, summed cost)``:
    ``phase = -1`` if every value is finite, else the ``PHASE_*`` code.
    """
    m = X.shape[0]
    L = net.shape[1] - 1
    fault = _forward_layers(net, P, X, A, S, ZL, acc, alpha, top, stats, ZH, edges, want_z)
    if fault >= 0:
        return PHASE_FORWARD, fault, np.nan
    total = 0.0
    for l in range(L - 1, -1, -1):
        n_in = net[M_SIZES, l]
        n_out = net[M_SIZES, l + 1]
        D_l = _rows(D, net[M_AOFF, l], m, n_out)
        if l == L - 1:  # BP1
            Z_L = ZL[: m * n_out].reshape(m, n_out)
            A_L = _rows(A, net[M_AOFF, l], m, n_out)
            g_b = G[net[M_BOFF, l] : net[M_BOFF, l] + n_out]
            total, bad = _output_delta(
                net[M_ACTS, l], cost, Z_L, A_L, Y, D_l, g_b, stats, acc, l, top
            )
            if bad:
                return PHASE_BACKWARD, l, total
        GW = _rows(G, net[M_WOFF, l], n_out, n_in)
        if l > 0:
            # BP2: delta_{l-1} (m, n_in) = delta_l (m, n_out) @ W_l, then times the slopes
            A_prev = _rows(A, net[M_AOFF, l - 1], m, n_in)
            D_prev = _rows(D, net[M_AOFF, l - 1], m, n_in)
            np.dot(D_l, _rows(P, net[M_WOFF, l], n_out, n_in), D_prev)
            gb = G[net[M_BOFF, l - 1] : net[M_BOFF, l - 1] + n_in]
            S_prev = _rows(S, net[M_AOFF, l - 1], m, n_in)
            if _hidden_delta(D_prev, S_prev, A_prev, gb, stats, acc, l - 1, top):
                return PHASE_BACKWARD, l - 1, total
            np.dot(D_l.T, A_prev, GW)  # BP4 (sums)
        else:
            np.dot(D_l.T, X, GW)
    return -1, -1, total


# --------------------------------------------------------------------------- #
# Statistics blocks
# --------------------------------------------------------------------------- #
@jit
def _act_stats_into(code, cnt, mean, m2, sums, low, high, out, l):
    """act_mean, act_std, sat_low, sat_high, slope_mean of layer ``l`` into ``out`` (N_STATS, L)."""
    out[S_ACT_MEAN, l] = mean if cnt > 0 else np.nan
    out[S_ACT_STD, l] = math.sqrt(m2 / cnt)
    if code == LINEAR or code == SOFTMAX:
        out[S_SAT_LOW, l] = np.nan
        out[S_SAT_HIGH, l] = np.nan
    else:
        out[S_SAT_LOW, l] = low / cnt
        out[S_SAT_HIGH, l] = high / cnt
    out[S_SLOPE_MEAN, l] = np.nan if code == SOFTMAX else sums / cnt


@jit
def _gain(acc, l, L):
    """``||Delta_l|| / ||Delta_{l+1}||`` from a mini-batch's accumulators (NaN for l = L-1)."""
    if l == L - 1:
        return np.nan
    return _ssq_norm(acc[B_SSQD, l], acc[B_EXPD, l]) / _ssq_norm(
        acc[B_SSQD, l + 1], acc[B_EXPD, l + 1]
    )


@jit
def _pool(pooled, l, cnt, mean, m2, sums, low, high):
    """Merge one block's moments into ``pooled[:, l]`` (Chan, Golub & LeVeque), as the reference.

    ``mean = mean_a + d * (n_b / n)``, ``m2 = m2_a + m2_b + d * d * (n_a * n_b / n)``.
    """
    n_a = pooled[E_CNT, l]
    n = n_a + cnt
    d = mean - pooled[E_MEAN, l]
    pooled[E_MEAN, l] = pooled[E_MEAN, l] + d * (cnt / n)
    pooled[E_M2, l] = pooled[E_M2, l] + m2 + d * d * (n_a * cnt / n)
    pooled[E_CNT, l] = n
    pooled[E_SUMS, l] += sums
    pooled[E_LOW, l] += low
    pooled[E_HIGH, l] += high


# --------------------------------------------------------------------------- #
# The update of one layer, with its norms, in one pass over W
# --------------------------------------------------------------------------- #
@jit
def _update_loop(kind, nesterov, stats, W, VW, FW, GW, f_m, f_c, f_eta, f_ln, f_mu, f_mun, sg, sw,
                 sd, q):
    """One update loop over ``W`` (the weights or the biases of a layer).

    ``g = GW[i] / f_m`` (the mini-batch mean, network dtype), then SPEC section 3::

        plain     W <- c W - eta g
        momentum  v <- mu v - eta (g + lmbda_n W_at);  W <- W + v   (W_at = W or phi)
        Nesterov  also phi <- W_new + mu_next v (the next mini-batch's look-ahead point)

    Sums of squares, pre-scaled by powers of two chosen from bounds, are added to
    ``q[0..5] = (g, W_new, W_old, W_new - W_old, v, phi)``.
    """
    qg = 0.0
    qw = 0.0
    qo = 0.0
    qd = 0.0
    qv = 0.0
    qf = 0.0
    for i in range(W.shape[0]):
        g = GW[i] / f_m
        w_old = W[i]
        if kind == MOMENTUM_NONE:
            w_new = f_c * w_old - f_eta * g
        else:
            if nesterov:
                v = f_mu * VW[i] - f_eta * (g + f_ln * FW[i])
            else:
                v = f_mu * VW[i] - f_eta * (g + f_ln * w_old)
            VW[i] = v
            w_new = w_old + v
            t = np.float64(v) * sd
            qv += t * t
            if nesterov:
                ph = w_new + f_mun * v
                FW[i] = ph
                t = np.float64(ph) * sw
                qf += t * t
        W[i] = w_new
        t = np.float64(w_new) * sw
        qw += t * t
        if stats:
            t = np.float64(g) * sg
            qg += t * t
            t = np.float64(w_old) * sw
            qo += t * t
            t = (np.float64(w_new) - np.float64(w_old)) * sd
            qd += t * t
    q[0] += qg
    q[1] += qw
    q[2] += qo
    q[3] += qd
    q[4] += qv
    q[5] += qf


@jit
def _update_layer(net, l, P, V, PHI, G, Gacc, acc, eacc, q, m, eta, lmbda_n, kind, nesterov, mu,
                  mu_next, record):
    """Apply SPEC section 3's update to layer ``l``, computing its norms in the same pass.

    ``G`` holds the weight sums (divided by m here) and ``g_b``; ``q`` is a (2, 6)
    float64 scratch block (weights, biases).  The norms of the updated parameters,
    velocity and look-ahead point feed the next mini-batch's overflow bound
    (``eacc``); with statistics, ||g_W||, ||W_new||, ||W_old|| and ||W_new - W_old||
    go to ``acc``; with record="epoch", ``m * g`` is added to ``Gacc``.
    """
    n_in = net[M_SIZES, l]
    n_out = net[M_SIZES, l + 1]
    w0, w1 = net[M_WOFF, l], net[M_WOFF, l] + n_out * n_in
    b0, b1 = net[M_BOFF, l], net[M_BOFF, l] + n_out
    ft = P.dtype.type
    f_c = ft(1.0 - eta * lmbda_n)
    f_eta = ft(eta)
    f_m = ft(m)
    one = ft(1.0)
    stats = record != RECORD_NONE
    # power-of-two scales from bounds on |g|, |W| and |W_new - W_old| known before the
    # loop: no overflow, and no underflow of tiny updates
    sg = math.ldexp(1.0, -_pow2_exponent(acc[B_GB, l]))
    sw = math.ldexp(1.0, -_pow2_exponent(acc[B_PB, l]))
    sd = math.ldexp(1.0, -_pow2_exponent(acc[B_VB, l]))
    q[:, :] = 0.0
    for part in range(2):  # weights (with the L2 term and the statistics), then biases
        lo, hi = (w0, w1) if part == 0 else (b0, b1)
        _update_loop(
            kind, nesterov, stats and part == 0, P[lo:hi], V[lo:hi], PHI[lo:hi], G[lo:hi],
            f_m if part == 0 else one, f_c if part == 0 else one, f_eta,
            ft(lmbda_n) if part == 0 else ft(0.0), ft(mu), ft(mu_next), sg, sw, sd, q[part],
        )
    if record == RECORD_EPOCH:
        dm = np.float64(m)
        for i in range(w0, w1):
            Gacc[i] += dm * np.float64(G[i] / f_m)
        for i in range(b0, b1):
            Gacc[i] += dm * np.float64(G[i])
    eacc[E_NRMP, l] = math.sqrt(q[0, 1] + q[1, 1]) / sw
    eacc[E_NRMV, l] = math.sqrt(q[0, 4] + q[1, 4]) / sd
    eacc[E_NRMF, l] = math.sqrt(q[0, 5] + q[1, 5]) / sw
    if stats:
        acc[B_GNORM, l] = math.sqrt(q[0, 0]) / sg
        acc[B_WNORM, l] = math.sqrt(q[0, 1]) / sw
        acc[B_WOLD, l] = math.sqrt(q[0, 2]) / sw
        acc[B_DNORM, l] = math.sqrt(q[0, 3]) / sd


@jit
def _norm_layers(net, P, out):
    """``out[l] = ||params of layer l||`` (W and b): a bound on their max |.|."""
    for l in range(net.shape[1] - 1):
        n = net[M_SIZES, l + 1] * (net[M_SIZES, l] + 1)
        out[l] = _norm(P[net[M_WOFF, l] : net[M_WOFF, l] + n])


# --------------------------------------------------------------------------- #
# Optional statistic groups (fastbp/_diagnostics.py defines them; the reference
# is numpy_backend._diag_batch / _diag_hist / _diag_accumulate / _diag_epoch_end)
# --------------------------------------------------------------------------- #
@jit
def _pow2_scale(x):
    """``fastbp._diagnostics.pow2_scale``: 2**-e with ``x * 2**-e`` in [0.5, 1); 1 if x is
    0, negative or not finite."""
    if not (x > 0.0) or x == np.inf:
        return 1.0
    return math.ldexp(1.0, -math.frexp(x)[1])


@jit
def _max_abs(M):
    """max |M| in float64 of a 2-D block (NaN if it holds a NaN, as ``np.max``).

    Taken over the bit patterns of the doubles ``|x|`` (ordered as their values, with
    NaN above inf): an integer max, which vectorises where a float one would not
    (without the ``nnan`` flag).
    """
    mx = 0
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            bits = np.float64(M[i, j]).view(np.int64) & 0x7FFFFFFFFFFFFFFF
            mx = bits if bits > mx else mx
    return np.int64(mx).view(np.float64)


@jit
def _dist(x, y):
    """||x - y||_2 in float64 (``_norm_diff``) in one vectorised pass where no scaling is
    needed (the sum of squares inside [SAFE_LO, SAFE_HI]); else the scaled two passes."""
    s = 0.0
    for i in range(x.shape[0]):
        v = np.float64(x[i]) - np.float64(y[i])
        s += v * v
    if s >= SAFE_LO and s <= SAFE_HI:
        return math.sqrt(s)
    return _norm_diff(x, y)


@jit
def _decade_bin(x, edges):
    """Signed-decade bin of the double ``x`` (``fastbp._diagnostics.decade_index``); -1 for NaN.

    ``pos`` = the number of edges ``<= |x|`` (searchsorted side="right"), found from a
    guess by the binary exponent (``floor(e2 log10 2)`` as ``(e2 * 1233) >> 12``) and
    corrected against the edges table, so the result is exactly the table's.
    """
    if x != x:
        return -1
    if x == 0.0:
        return DEC_ZERO
    ax = abs(x)
    n_e = edges.shape[0]
    e2 = ((np.float64(ax).view(np.int64) >> 52) & 0x7FF) - 1023
    pos = ((e2 * 1233) >> 12) - DEC_MIN + 1
    if pos < 0:
        pos = 0
    elif pos > n_e:
        pos = n_e
    while pos < n_e and edges[pos] <= ax:
        pos += 1
    while pos > 0 and edges[pos - 1] > ax:
        pos -= 1
    return DEC_ZERO + 1 + pos if x > 0.0 else DEC_ZERO - 1 - pos


@jit
def _count_decades(M, edges, out):
    """Add the signed-decade counts of the 2-D block ``M`` (compared as doubles) to ``out``."""
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            k = _decade_bin(np.float64(M[i, j]), edges)
            if k >= 0:
                out[k] += 1


@jit
def _count_z(Z, b, edges, out):
    """``out`` = signed-decade counts of ``z = Z + b`` (formed as ``_hidden_forward`` does)."""
    out[:] = 0
    for i in range(Z.shape[0]):
        for j in range(Z.shape[1]):
            k = _decade_bin(np.float64(Z[i, j] + b[j]), edges)
            if k >= 0:
                out[k] += 1


@jit
def _count_linear(M, lo, hi, out):
    """Add the linear-bin counts of ``M`` over ``[lo, hi]`` (``dx.linear_index``) to ``out``."""
    scale = N_LINEAR / (hi - lo)
    for i in range(M.shape[0]):
        for j in range(M.shape[1]):
            a = np.float64(M[i, j])
            if a != a:
                continue
            if a < lo:
                k = 0
            elif a > hi:
                k = N_LINEAR + 1
            else:
                f = math.floor((a - lo) * scale)
                k = 1 + (int(f) if f < N_LINEAR - 1 else N_LINEAR - 1)
            out[k] += 1


@jit
def _diag_layer(groups, l, m, Dl, Ap, GW, gb, f_m, beta, ema, row, D2, AS2, SW, W, W0):
    """The XSTAT rows of the selected groups for layer ``l`` into ``row`` (N_X, L).

    ``Dl`` (m, n_out) the deltas, ``Ap`` (m, n_in) the layer's input, ``GW`` the weight
    sums (``/ f_m`` is the mean gradient, as in the update) and ``gb`` the bias mean,
    ``W``/``W0`` the weights after the update and at the start.  Squares are taken of
    the deltas (and, for the moments, the inputs) scaled by powers of two chosen from
    their max, as the reference's ``_scaled``; ``D2``, ``AS2`` and ``SW`` are float64
    scratch for the moments' product ``(delta^2)^T (a^2)``.
    """
    n_out = Dl.shape[1]
    n_in = Ap.shape[1]
    dm = np.float64(m)
    sd = _pow2_scale(_max_abs(Dl))
    ss = sd * sd
    if groups & (G_PER_EXAMPLE | G_NOISE):
        # ||g_n||^2 = ||delta_n||^2 (||a_n||^2 + 1), scaled by sd^2
        qsum = 0.0
        nsum = 0.0
        nmax = -np.inf
        for i in range(m):
            dd = 0.0
            for j in range(n_out):
                t = np.float64(Dl[i, j]) * sd
                dd += t * t
            aa = 0.0
            for j in range(n_in):
                t = np.float64(Ap[i, j])
                aa += t * t
            qn = dd * (aa + 1.0)
            qsum += qn
            nr = math.sqrt(qn) / sd
            nsum += nr
            if nr > nmax or nr != nr:
                nmax = nr
        g2 = 0.0
        for i in range(GW.shape[0]):
            t = np.float64(GW[i] / f_m) * sd
            g2 += t * t
        for j in range(n_out):
            t = np.float64(gb[j]) * sd
            g2 += t * t
        tr = (qsum - dm * g2) / (dm - 1.0) if m > 1 else np.nan
        if groups & G_PER_EXAMPLE:
            row[X_PE_MEAN, l] = nsum / dm
            row[X_PE_MAX, l] = nmax
            row[X_TRACE, l] = tr / ss
        if groups & G_NOISE:
            if m > 1:
                ema[0, l] = beta * ema[0, l] + (1.0 - beta) * (tr / ss)
                ema[1, l] = beta * ema[1, l] + (1.0 - beta) * ((g2 - tr / dm) / ss)
            row[X_NOISE, l] = ema[0, l] / ema[1, l]
    if groups & G_MOMENTS:
        if m > 1:
            sa = _pow2_scale(_max_abs(Ap))
            Q = AS2[: m * n_in].reshape(m, n_in)
            R = D2[: m * n_out].reshape(m, n_out)
            for i in range(m):
                for j in range(n_in):
                    t = np.float64(Ap[i, j]) * sa
                    Q[i, j] = t * t
                for j in range(n_out):
                    t = np.float64(Dl[i, j]) * sd
                    R[i, j] = t * t
            SWv = SW[: n_out * n_in].reshape(n_out, n_in)
            np.dot(R.T, Q, SWv)  # sum_n g_n^2 of the weights, scaled by (sd sa)^2
            inv = 1.0 / (dm - 1.0)
            tot = 0.0
            kept = 0.0
            SWf = SW[: n_out * n_in]  # SWv, flat: the order of GW
            for i in range(n_out * n_in):
                mw = (np.float64(GW[i] / f_m) * sd) * sa
                sig = mw * mw
                v = (SWf[i] - dm * sig) * inv
                # g^2 / v over the v > 0, written with a 0/1 factor instead of a branch
                # (so that the loop vectorises; v is finite: the mini-batch was checked)
                keep = np.float64(v > 0.0)
                tot += keep * (sig / (v * keep + (1.0 - keep)))
                kept += keep
            for j in range(n_out):
                sb = 0.0
                for i in range(m):
                    sb += R[i, j]
                t = np.float64(gb[j]) * sd
                sig = t * t
                v = (sb - dm * sig) * inv
                if v > 0.0:
                    tot += sig / v
                    kept += 1.0
            row[X_GSNR, l] = tot / kept if kept > 0.0 else np.nan
            row[X_GSNR_ZERO, l] = n_out * (n_in + 1) - kept
        else:
            row[X_GSNR, l] = np.nan
            row[X_GSNR_ZERO, l] = np.nan
    if groups & G_DISTANCE:
        row[X_DISTANCE, l] = _dist(W, W0)


@jit
def _diag_batch(net, groups, every, beta, record, k, m, P, G, X, A, D, ZL, ZH, edges, row,
                hist, ema, start, a_range, D2, AS2, SW, dacc):
    """The groups of a sampled, accepted mini-batch ``k``, after its update.

    The XSTAT rows go to ``row`` (the mini-batch's record row, or scratch); with
    record="epoch" they are folded into ``dacc``; histogram counts are added to
    ``hist[k // every]`` (record="batch") or ``hist[0]``.
    """
    L = net.shape[1] - 1
    if groups & G_ROWS:
        f_m = P.dtype.type(m)
        for l in range(L):
            n_in = net[M_SIZES, l]
            n_out = net[M_SIZES, l + 1]
            w0 = net[M_WOFF, l]
            w1 = w0 + n_out * n_in
            b0 = net[M_BOFF, l]
            Dl = _rows(D, net[M_AOFF, l], m, n_out)
            Ap = X if l == 0 else _rows(A, net[M_AOFF, l - 1], m, n_in)
            _diag_layer(groups, l, m, Dl, Ap, G[w0:w1], G[b0 : b0 + n_out], f_m, beta, ema, row,
                        D2, AS2, SW, P[w0:w1], start[w0:w1])
        if record == RECORD_EPOCH:
            for l in range(L):
                dacc[DA_PE, l] += m * row[X_PE_MEAN, l]
                dacc[DA_M, l] += m
                v = row[X_PE_MAX, l]
                if v > dacc[DA_PEMAX, l]:
                    dacc[DA_PEMAX, l] = v
                if m > 1:
                    dacc[DA_TRACE, l] += row[X_TRACE, l]
                    dacc[DA_NTRACE, l] += 1.0
                    v = row[X_GSNR, l]
                    if abs(v) < np.inf:  # finite
                        dacc[DA_GSNR, l] += v
                        dacc[DA_NGSNR, l] += 1.0
                    dacc[DA_ZERO, l] += row[X_GSNR_ZERO, l]
                    dacc[DA_NZERO, l] += 1.0
    if groups & G_HIST:
        hrow = hist[k // every] if record == RECORD_BATCH else hist[0]
        for l in range(L):
            n_out = net[M_SIZES, l + 1]
            _count_decades(_rows(D, net[M_AOFF, l], m, n_out), edges, hrow[l, H_DELTA:H_Z])
            if l < L - 1:
                for i in range(N_DECADE_BINS):
                    hrow[l, H_Z + i] += ZH[l, i]
            else:
                _count_decades(ZL[: m * n_out].reshape(m, n_out), edges, hrow[l, H_Z:H_A])
            _count_linear(_rows(A, net[M_AOFF, l], m, n_out), a_range[l, 0], a_range[l, 1],
                          hrow[l, H_A:])


@jit
def _diag_epoch_end(net, groups, P, start, ema, dacc, out):
    """The epoch values of the selected groups into ``out`` (N_X, L) (``_diag_epoch_end``)."""
    L = net.shape[1] - 1
    for l in range(L):
        if groups & G_PER_EXAMPLE:
            out[X_PE_MEAN, l] = dacc[DA_PE, l] / dacc[DA_M, l]
            out[X_PE_MAX, l] = dacc[DA_PEMAX, l] if dacc[DA_M, l] > 0.0 else np.nan
            out[X_TRACE, l] = dacc[DA_TRACE, l] / dacc[DA_NTRACE, l]
        if groups & G_NOISE:
            out[X_NOISE, l] = ema[0, l] / ema[1, l]
        if groups & G_MOMENTS:
            out[X_GSNR, l] = dacc[DA_GSNR, l] / dacc[DA_NGSNR, l]
            out[X_GSNR_ZERO, l] = dacc[DA_ZERO, l] / dacc[DA_NZERO, l]
        if groups & G_DISTANCE:
            w0 = net[M_WOFF, l]
            w1 = w0 + net[M_SIZES, l + 1] * net[M_SIZES, l]
            out[X_DISTANCE, l] = _norm_diff(P[w0:w1], start[w0:w1])


# --------------------------------------------------------------------------- #
# Layer 3: drivers (called from Python, GIL released)
# --------------------------------------------------------------------------- #
@jit(entry=True)
def _train_batches(w, hp, P, V, X, Y, order, bs, k0, k1, t, rec_batch, rec_epoch, batch_cost, dg):
    """Mini-batches ``k0 .. k1-1`` of an epoch (``fastbp._contract.train_epoch``).

    ``dg`` holds the optional statistic groups (``_diag_args``; ``groups = 0``: none).
    Returns ``(t, n_skipped, fault_batch, fault_layer, fault_phase)``.
    """
    (net, cost_code, alpha_, top, m_max, A, S, D, ZL, Xbuf, Ybuf, G, P0, PHI,
     acc, ea, _, Gacc, _, _, q, state, edges, ZH, dacc, xrow) = w
    eta, lmbda_n, kind, mu_c, mu_max, period, nesterov, record, skip = hp
    (groups, every, beta, drec, depoch, hist, ema, P_first, a_range, D2, AS2, SW) = dg
    hist_on = (groups & G_HIST) != 0
    ft = P.dtype.type
    alpha = ft(alpha_)
    L = net.shape[1] - 1
    N = X.shape[0]
    n0 = net[M_SIZES, 0]
    nL = net[M_SIZES, L]
    n_batches = (N + bs - 1) // bs
    stats = record != RECORD_NONE
    nesterov = nesterov and kind != MOMENTUM_NONE
    lim = top * 0.25
    if k0 == 0:  # a new epoch
        state[ST_EPOCH_M] = 0.0
        state[ST_SKIPPED] = 0.0
        if record == RECORD_EPOCH:
            for i in range(P.shape[0]):
                P0[i] = P[i]
            Gacc[:] = 0.0
            ea[:, :] = 0.0
            dacc[:, :] = 0.0
            dacc[DA_PEMAX, :] = -np.inf
    # bounds for the overflow check, and the look-ahead point, once per call
    _norm_layers(net, P, ea[E_NRMP])
    _norm_layers(net, V, ea[E_NRMV])
    if nesterov:
        f_mu0 = ft(_momentum_at(kind, mu_c, mu_max, period, t))
        for i in range(P.shape[0]):
            PHI[i] = P[i] + f_mu0 * V[i]
        _norm_layers(net, PHI, ea[E_NRMF])
    Pf = PHI if nesterov else P
    n_skipped = 0
    for k in range(k0, k1):
        start = k * bs
        m = min(start + bs, N) - start
        dm = np.float64(m)
        Xb = Xbuf[: m * n0].reshape(m, n0)
        Yb = Ybuf[: m * nL].reshape(m, nL)
        # gather the mini-batch by index; ||X_b|| feeds the overflow bound
        nrm_x = 0.0
        for r in range(m):
            i = order[start + r]
            for j in range(n0):
                v = X[i, j]
                Xb[r, j] = v
                nrm_x += np.float64(v) * np.float64(v)
            for j in range(nL):
                Yb[r, j] = Y[i, j]
        nrm_x = math.sqrt(nrm_x)
        acc[:, :] = 0.0
        mu = _momentum_at(kind, mu_c, mu_max, period, t)
        mu_next = _momentum_at(kind, mu_c, mu_max, period, t + 1)
        sampled = groups != 0 and k % every == 0
        phase, fl, cost = _fused_pass(net, cost_code, Pf, Xb, Yb, A, S, D, ZL, G, acc, alpha, top,
                                      stats, ZH, edges, sampled and hist_on)
        if phase < 0:
            # bounds that make the update safe from overflow (SPEC section 5):
            # |sum_x delta a| <= ||Delta|| ||A|| (Cauchy-Schwarz), max |.| <= ||.||
            for l in range(L):
                nrma = nrm_x if l == 0 else acc[B_NRMA, l - 1]
                nd = _ssq_norm(acc[B_SSQD, l], acc[B_EXPD, l])
                sumb = nd * nrma
                gb = sumb / dm if sumb / dm > nd else nd
                at = ea[E_NRMF, l] if nesterov else ea[E_NRMP, l]
                vb = mu * ea[E_NRMV, l] + eta * (gb + lmbda_n * at)
                pb = ea[E_NRMP, l] * (1.0 + eta * lmbda_n) + vb
                if nesterov:
                    pb = pb + mu_next * vb
                acc[B_GB, l] = gb
                acc[B_VB, l] = vb
                acc[B_PB, l] = pb
                if not (sumb < lim and pb < lim):
                    phase = PHASE_UPDATE
                    fl = l
                    break
        if phase >= 0:
            if not skip:
                return t, n_skipped, k, fl, phase
            n_skipped += 1
            state[ST_SKIPPED] += 1.0
            batch_cost[k - k0] = np.nan
            if record == RECORD_BATCH:
                rec_batch[k - k0, :, :] = np.nan
                rec_batch[k - k0, S_NONFINITE, :] = 1.0
            continue
        batch_cost[k - k0] = cost / dm
        state[ST_EPOCH_M] += dm
        # g_b = column means of the deltas (network dtype, as the reference)
        f_m = ft(m)
        for l in range(L):
            for r in range(net[M_BOFF, l], net[M_BOFF, l] + net[M_SIZES, l + 1]):
                G[r] = G[r] / f_m
        for l in range(L):
            _update_layer(net, l, P, V, PHI, G, Gacc, acc, ea, q, m, eta, lmbda_n, kind, nesterov,
                          mu, mu_next, record)
        t += 1
        if record == RECORD_BATCH:
            row = rec_batch[k - k0]
            for l in range(L):
                b0 = net[M_BOFF, l]
                row[S_SPEED, l] = _norm(G[b0 : b0 + net[M_SIZES, l + 1]])
                row[S_GRAD_NORM, l] = acc[B_GNORM, l]
                row[S_GAIN, l] = _gain(acc, l, L)
                row[S_WEIGHT_NORM, l] = acc[B_WNORM, l]
                row[S_UPDATE_RATIO, l] = acc[B_DNORM, l] / acc[B_WOLD, l]
                cnt = acc[B_CNT, l]
                _act_stats_into(net[M_ACTS, l], cnt, acc[B_SUMA, l] / cnt, acc[B_M2, l],
                                acc[B_SUMS, l], acc[B_LOW, l], acc[B_HIGH, l], row, l)
                row[S_NONFINITE, l] = 0.0
        elif record == RECORD_EPOCH:
            for l in range(L):
                cnt = acc[B_CNT, l]
                _pool(ea, l, cnt, acc[B_SUMA, l] / cnt, acc[B_M2, l], acc[B_SUMS, l],
                      acc[B_LOW, l], acc[B_HIGH, l])
                if l < L - 1:
                    ea[E_GAIN, l] += _gain(acc, l, L)
                    ea[E_NGAIN, l] += 1.0
        if sampled:
            _diag_batch(net, groups, every, beta, record, k, m, P, G, Xb, A, D, ZL, ZH, edges,
                        drec[k - k0] if drec.shape[0] > 0 else xrow, hist, ema, P_first, a_range,
                        D2, AS2, SW, dacc)
    if record == RECORD_EPOCH and k1 == n_batches:
        total_m = state[ST_EPOCH_M]
        for l in range(L):
            n_out = net[M_SIZES, l + 1]
            w0, w1 = net[M_WOFF, l], net[M_WOFF, l] + n_out * net[M_SIZES, l]
            b0, b1 = net[M_BOFF, l], net[M_BOFF, l] + n_out
            rec_epoch[S_SPEED, l] = _norm(Gacc[b0:b1]) / total_m
            rec_epoch[S_GRAD_NORM, l] = _norm(Gacc[w0:w1]) / total_m
            rec_epoch[S_GAIN, l] = np.nan if l == L - 1 else ea[E_GAIN, l] / ea[E_NGAIN, l]
            rec_epoch[S_WEIGHT_NORM, l] = _norm(P[w0:w1])
            rec_epoch[S_UPDATE_RATIO, l] = _norm_diff(P[w0:w1], P0[w0:w1]) / _norm(P0[w0:w1])
            _act_stats_into(net[M_ACTS, l], ea[E_CNT, l], ea[E_MEAN, l], ea[E_M2, l],
                            ea[E_SUMS, l], ea[E_LOW, l], ea[E_HIGH, l], rec_epoch, l)
            rec_epoch[S_NONFINITE, l] = state[ST_SKIPPED]
        if groups != 0:
            _diag_epoch_end(net, groups, P, P_first, ema, dacc, depoch)
    return t, n_skipped, -1, -1, -1


@jit(entry=True)
def _gradient_all(w, P, X, Y, grad, stats):
    """Average gradient over all rows of ``X`` in chunks of ``m_max``, and the probe statistics.

    Per chunk the sums ``Delta.T @ A_prev`` and ``Delta.sum(0)`` are formed in the
    network dtype and accumulated in float64; ``grad = sums / N`` is rounded once
    (as the reference).  Returns ``(cost, fault_layer, fault_phase)``.
    """
    (net, cost_code, alpha_, top, m_max, A, S, D, ZL, Xbuf, Ybuf, G, _, _,
     acc, _, pooled, _, gsum, ssq, _, _, edges, ZH, _, _) = w
    ft = P.dtype.type
    alpha = ft(alpha_)
    L = net.shape[1] - 1
    N = X.shape[0]
    n0 = net[M_SIZES, 0]
    nL = net[M_SIZES, L]
    gsum[:] = 0.0
    pooled[:, :] = 0.0
    ssq[:, :] = 0.0
    total = 0.0
    fault_layer = -1
    fault_phase = -1
    # True, computed at run time: a literal True would make Numba compile a second
    # specialisation of _fused_pass (it specialises on literal arguments)
    with_stats = N > 0
    no_z = N < 0  # False at run time, likewise
    s = 0
    while s < N:
        m = min(m_max, N - s)
        Xb = Xbuf[: m * n0].reshape(m, n0)
        Yb = Ybuf[: m * nL].reshape(m, nL)
        for r in range(m):
            for j in range(n0):
                Xb[r, j] = X[s + r, j]
            for j in range(nL):
                Yb[r, j] = Y[s + r, j]
        acc[:, :] = 0.0
        phase, fl, cost = _fused_pass(net, cost_code, P, Xb, Yb, A, S, D, ZL, G, acc, alpha, top,
                                      with_stats, ZH, edges, no_z)
        if phase >= 0:
            fault_layer, fault_phase = fl, phase
            break
        total += cost
        for i in range(G.shape[0]):
            gsum[i] += np.float64(G[i])
        for l in range(L):
            tot_e = _ssq_add(ssq[0, l], ssq[1, l], acc[B_SSQD, l], acc[B_EXPD, l])
            ssq[0, l] = tot_e[0]
            ssq[1, l] = tot_e[1]
            cnt = acc[B_CNT, l]
            _pool(pooled, l, cnt, acc[B_SUMA, l] / cnt, acc[B_M2, l], acc[B_SUMS, l],
                  acc[B_LOW, l], acc[B_HIGH, l])
        s += m
    if fault_phase < 0:
        for i in range(grad.shape[0]):
            grad[i] = ft(gsum[i] / N)
        for l in range(L - 1, -1, -1):
            for i in range(net[M_WOFF, l], net[M_BOFF, l] + net[M_SIZES, l + 1]):
                if not (abs(grad[i]) <= top) and fault_phase < 0:
                    fault_layer, fault_phase = l, PHASE_BACKWARD
    if fault_phase >= 0:
        grad[:] = np.nan
        stats[:, :] = np.nan
        stats[S_NONFINITE, :] = 1.0
        return np.nan, fault_layer, fault_phase
    for l in range(L):
        n_out = net[M_SIZES, l + 1]
        w0, w1 = net[M_WOFF, l], net[M_WOFF, l] + n_out * net[M_SIZES, l]
        b0 = net[M_BOFF, l]
        stats[S_SPEED, l] = _norm(grad[b0 : b0 + n_out])
        stats[S_GRAD_NORM, l] = _norm(grad[w0:w1])
        if l == L - 1:
            stats[S_GAIN, l] = np.nan
        else:
            stats[S_GAIN, l] = _ssq_norm(ssq[0, l], ssq[1, l]) / _ssq_norm(
                ssq[0, l + 1], ssq[1, l + 1]
            )
        stats[S_WEIGHT_NORM, l] = _norm(P[w0:w1])
        stats[S_UPDATE_RATIO, l] = np.nan
        _act_stats_into(net[M_ACTS, l], pooled[E_CNT, l], pooled[E_MEAN, l], pooled[E_M2, l],
                        pooled[E_SUMS, l], pooled[E_LOW, l], pooled[E_HIGH, l], stats, l)
        stats[S_NONFINITE, l] = 0.0
    return total / N, -1, -1


@jit
def _cost_sum(cost, Z, A, Y):
    """Summed data cost of a block, float64, from ``z`` where exact (see ``_output_delta``)."""
    m, n = Z.shape
    total = 0.0
    for i in range(m):
        lse = _row_lse(Z, i) if cost == LOG_LIKELIHOOD else 0.0
        for j in range(n):
            z64 = np.float64(Z[i, j])
            y64 = np.float64(Y[i, j])
            if cost == CROSS_ENTROPY:
                total += (max(z64, 0.0) + math.log1p(math.exp(-abs(z64)))) - y64 * z64
            elif cost == LOG_LIKELIHOOD:
                total += y64 * (lse - z64)
            else:
                diff = np.float64(A[i, j]) - y64
                total += 0.5 * (diff * diff)
    return total


@jit(entry=True)
def _forward_all(w, P, X, Y, has_y, out):
    """Outputs of the rows of ``X`` into ``out``, in chunks; mean data cost if ``has_y``."""
    (net, cost_code, alpha_, top, m_max, A, S, _, ZL, Xbuf, _, _, _, _, acc, _, _, _, _, _, _,
     _, edges, ZH, _, _) = w
    alpha = P.dtype.type(alpha_)
    L = net.shape[1] - 1
    N = X.shape[0]
    n0 = net[M_SIZES, 0]
    nL = net[M_SIZES, L]
    total = 0.0
    no_stats = N < 0  # False at run time (see _gradient_all)
    s = 0
    while s < N:
        m = min(m_max, N - s)
        Xb = Xbuf[: m * n0].reshape(m, n0)
        for r in range(m):
            for j in range(n0):
                Xb[r, j] = X[s + r, j]
        _forward_layers(net, P, Xb, A, S, ZL, acc, alpha, top, no_stats, ZH, edges, no_stats)
        AL = _rows(A, net[M_AOFF, L - 1], m, nL)
        for r in range(m):
            for j in range(nL):
                out[s + r, j] = AL[r, j]
        if has_y:
            total += _cost_sum(cost_code, ZL[: m * nL].reshape(m, nL), AL, Y[s : s + m])
        s += m
    return total / N if has_y else np.nan


# --------------------------------------------------------------------------- #
# Layer 4: the contract, in Python
# --------------------------------------------------------------------------- #
class Workspace:
    """Every buffer needed to process up to ``m_max`` examples at once (see the contract).

    Parameters
    ----------
    layout : fastbp._contract.Layout
        The network.
    m_max : int
        Rows processed at once (the batch size of ``train_epoch``, the chunk of
        ``forward``/``gradient``).
    """

    def __init__(self, layout, m_max):
        m_max = int(m_max)
        if m_max < 1:
            raise ValueError(f"m_max must be at least 1, got {m_max}")
        names = layout.activation_names
        pair = (names[-1], layout.cost_name)
        if pair not in VALID_PAIRS:
            raise ValueError(f"invalid (output, cost) pair {pair}; valid pairs: {VALID_PAIRS}")
        for name in names[:-1]:
            if name not in HIDDEN_ACTIVATIONS:
                raise ValueError(f"invalid hidden activation {name!r}; valid: {HIDDEN_ACTIVATIONS}")
        dt = np.dtype(layout.dtype)
        if dt != np.float32 and dt != np.float64:
            raise TypeError(f"layout.dtype must be float32 or float64, got {dt}")
        self.layout = layout
        self.m_max = m_max
        self.dtype = dt
        self.L = len(layout.sizes) - 1
        self.n0 = int(layout.sizes[0])
        self.nL = int(layout.sizes[-1])
        self.n_params = int(layout.n_params)
        sizes = np.ascontiguousarray(layout.sizes, dtype=np.int64)
        L = len(sizes) - 1
        widths = sizes[1:]
        n_act = int(widths.sum()) * m_max
        P = int(layout.n_params)
        net = np.zeros((N_META, L + 1), dtype=np.int64)
        net[M_SIZES] = sizes
        net[M_ACTS, :L] = [ACTIVATION_CODES[a] for a in names]
        net[M_WOFF, :L] = layout.w_off
        net[M_BOFF, :L] = layout.b_off
        net[M_AOFF, 1:L] = np.cumsum(widths[: L - 1] * m_max)
        self.work = _Work(
            net=net,
            cost=int(layout.cost),
            alpha=float(layout.alpha),
            top=float(np.finfo(dt).max),
            m_max=m_max,
            # the buffers the kernels stream through start on cache lines
            A=aligned_zeros(n_act, dt),
            S=aligned_zeros(n_act, dt),
            D=aligned_zeros(n_act, dt),
            ZL=aligned_zeros(m_max * int(sizes[L]), dt),
            Xb=aligned_zeros(m_max * int(sizes[0]), dt),
            Yb=aligned_zeros(m_max * int(sizes[L]), dt),
            G=aligned_zeros(P, dt),
            P0=aligned_zeros(P, dt),
            PHI=aligned_zeros(P, dt),
            bacc=np.zeros((N_B, L)),
            eacc=np.zeros((N_E, L)),
            gacc=np.zeros((N_E, L)),
            Gacc=aligned_zeros(P, np.float64),
            gsum=aligned_zeros(P, np.float64),
            ssq_g=np.zeros((2, L)),
            q=np.zeros((2, 6)),
            state=np.zeros(2),
            edges=_readonly(np.ascontiguousarray(dx.DECADE_EDGES, dtype=np.float64)),
            ZH=np.zeros((L, N_DECADE_BINS), dtype=np.int64),
            dacc=np.zeros((N_DA, L)),
            xrow=np.full((N_X, L), np.nan),
        )
        self.args = tuple(self.work)  # what the drivers receive
        # the fixed-type placeholders for absent optional arguments
        self._no_y = _readonly(np.empty((0, int(sizes[L])), dt))
        self._no_rec_batch = np.empty((0, N_STATS, L))
        self._no_rec_epoch = np.empty((N_STATS, L))
        # ... and for the optional statistic groups (same types as the real buffers, so
        # a call with and one without ``diag`` share one compiled driver)
        self._no_diag_rec = np.empty((0, N_X, L))
        self._no_diag_epoch = np.empty((N_X, L))
        self._no_hist = np.zeros((0, L, N_HIST), dtype=np.int32)
        self._no_ema = np.zeros((2, L))
        self._no_start = _readonly(np.empty(0, dt))
        self._no_a_range = _readonly(np.empty((0, 2)))
        self._no_f64 = np.empty(0)
        self._moment_bufs = None  # (D2, AS2, SW), made at the first use of "moments"

    def moment_buffers(self):
        """float64 scratch of the "moments" group, allocated once per workspace.

        ``D2`` (m_max * max n_out) squared scaled deltas, ``AS2`` (m_max * max n_in)
        squared scaled inputs and ``SW`` (max n_out * n_in) their product.
        """
        if self._moment_bufs is None:
            sizes = [int(n) for n in self.layout.sizes]
            self._moment_bufs = (
                np.zeros(self.m_max * max(sizes[1:])),
                np.zeros(self.m_max * max(sizes[:-1])),
                np.zeros(max(a * b for a, b in zip(sizes[:-1], sizes[1:]))),
            )
        return self._moment_bufs

    @property
    def nbytes(self):
        """Bytes held by the workspace buffers."""
        extra = self._moment_bufs or ()
        return sum(a.nbytes for a in (*self.work, *extra) if isinstance(a, np.ndarray))


def make_workspace(layout, m_max):
    """Allocate a :class:`Workspace` for ``layout`` and up to ``m_max`` rows at once."""
    return Workspace(layout, m_max)


def _readonly(arr):
    """A read-only plain-ndarray view of ``arr`` (no copy): one Numba type for every input."""
    view = arr.view(np.ndarray)
    view.flags.writeable = False
    return view


def _input(name, arr, dtype, shape):
    """An input normalised for the kernels: C-contiguous, ``dtype``, read-only view.

    Converts (one copy) an array of another dtype or order; refuses a wrong shape.
    Read-only and memory-mapped arrays are used in place.
    """
    arr = np.asarray(arr)
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    return _readonly(np.ascontiguousarray(arr, dtype=dtype))


def _output(name, arr, dtype, shape):
    """Check a buffer the kernels write into: ndarray, ``dtype``, C-contiguous, writable."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {arr.dtype}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if not arr.flags.writeable:
        raise ValueError(f"{name} must be writable")
    if arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")
    return arr.view(np.ndarray)


def _n_rows(X):
    return X.shape[0] if getattr(X, "ndim", 0) == 2 else -1


def forward(layout, ws, params, X, out, Y=None):
    """Output activations of ``X`` ``(N, n_0)`` into ``out`` ``(N, n_L)``, in chunks.

    Returns the mean data cost over the N examples (float64, from ``z``) if ``Y``
    ``(N, n_L)`` is given, else nan.  No finiteness check: NaN/Inf propagate.
    """
    dt, n0, nL = ws.dtype, ws.n0, ws.nL
    N = _n_rows(X)
    params = _output("params", params, dt, (ws.n_params,))
    X = _input("X", X, dt, (N, n0))
    out = _output("out", out, dt, (N, nL))
    if Y is None:
        Yk, has_y = ws._no_y, False
    else:
        Yk, has_y = _input("Y", Y, dt, (N, nL)), True
    if N == 0:
        return float("nan")
    return float(_forward_all(ws.args, params, X, Yk, has_y, out))


def gradient(layout, ws, params, X, Y, grad, stats):
    """Average gradient over all rows of ``X`` into ``grad``, probe statistics into ``stats``.

    See :func:`fastbp._backends.numpy_backend.gradient` for the exact definitions.
    Returns ``(cost, fault_layer, fault_phase)``.
    """
    dt, L, n0, nL = ws.dtype, ws.L, ws.n0, ws.nL
    N = _n_rows(X)
    params = _output("params", params, dt, (ws.n_params,))
    grad = _output("grad", grad, dt, (ws.n_params,))
    stats = _output("stats", stats, np.dtype(np.float64), (N_STATS, L))
    X = _input("X", X, dt, (N, n0))
    Y = _input("Y", Y, dt, (N, nL))
    if N == 0:
        raise ValueError("X must have at least one row")
    cost, fault_layer, fault_phase = _gradient_all(ws.args, params, X, Y, grad, stats)
    return float(cost), int(fault_layer), int(fault_phase)


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

    ``diag`` (a :class:`fastbp._contract.Diag` or None): the optional statistic
    groups, computed inside the jitted loop on the sampled mini-batches.
    Returns ``(t, n_skipped, fault_batch, fault_layer, fault_phase)``, -1 for "none".
    """
    dt, L, n0, nL = ws.dtype, ws.L, ws.n0, ws.nL
    N = _n_rows(X)
    bs, k0, k1 = int(batch_size), int(batch_start), int(batch_stop)
    n_batches = (N + bs - 1) // bs if bs > 0 else 0
    params = _output("params", params, dt, (ws.n_params,))
    velocity = _output("velocity", velocity, dt, (ws.n_params,))
    X = _input("X", X, dt, (N, n0))
    Y = _input("Y", Y, dt, (N, nL))
    order = _input("order", order, np.int64, (N,))
    if not (1 <= bs <= ws.m_max and bs <= N):
        raise ValueError(f"batch_size must be in [1, min(n, m_max={ws.m_max})], got {bs}")
    if not (0 <= k0 <= k1 <= n_batches):
        raise ValueError(f"need 0 <= batch_start <= batch_stop <= {n_batches}")
    record = int(hyper.record)
    if record not in (RECORD_NONE, RECORD_BATCH, RECORD_EPOCH):
        raise ValueError(f"hyper.record must be a RECORD_* code, got {record}")
    f64 = np.dtype(np.float64)
    if record == RECORD_BATCH:
        rec_batch = _output("rec_batch", rec_batch, f64, (k1 - k0, N_STATS, L))
    else:
        rec_batch = ws._no_rec_batch
    if record == RECORD_EPOCH and k1 == n_batches:
        rec_epoch = _output("rec_epoch", rec_epoch, f64, (N_STATS, L))
    else:
        rec_epoch = ws._no_rec_epoch
    batch_cost = _output("batch_cost", batch_cost, f64, (k1 - k0,))
    if N and (order.min() < 0 or order.max() >= N):
        raise ValueError("order must index rows of X")
    kind = int(hyper.momentum_kind)
    hp = _Hyp(
        eta=float(hyper.eta),
        lmbda_n=float(hyper.lmbda_n),
        kind=kind,
        mu=float(hyper.mu),
        mu_max=float(hyper.mu_max),
        period=int(hyper.period),
        nesterov=bool(hyper.nesterov) and kind != MOMENTUM_NONE,
        record=record,
        skip=bool(hyper.skip_nonfinite),
    )
    dg = _diag_args(ws, diag, record, bs, k0, k1, n_batches)
    t, n_skipped, fault, fault_layer, fault_phase = _train_batches(
        ws.args, tuple(hp), params, velocity, X, Y, order, bs, k0, k1, int(hyper.t), rec_batch,
        rec_epoch, batch_cost, dg,
    )
    return int(t), int(n_skipped), int(fault), int(fault_layer), int(fault_phase)


def _diag_args(ws, diag, record, bs, k0, k1, n_batches):
    """The ``dg`` tuple of ``_train_batches`` for ``diag`` (checked), or the empty one.

    ``(groups, every, beta, rec, epoch, hist, ema, start, a_range, D2, AS2, SW)``:
    buffers of groups not selected, or not written by this call, are the workspace's
    fixed-type placeholders.
    """
    L, f64 = ws.L, np.dtype(np.float64)
    groups = 0 if diag is None else int(diag.groups) & G_ALL
    if not groups:
        return (0, 1, 0.0, ws._no_diag_rec, ws._no_diag_epoch, ws._no_hist, ws._no_ema,
                ws._no_start, ws._no_a_range, ws._no_f64, ws._no_f64, ws._no_f64)
    every = int(diag.every)
    if every < 1:
        raise ValueError(f"diag.every must be >= 1, got {every}")
    beta = float(diag.beta)
    rows = groups & G_ROWS
    rec = ws._no_diag_rec
    if rows and record == RECORD_BATCH:
        rec = _output("diag.rec", diag.rec, f64, (k1 - k0, N_X, L))
    epoch = ws._no_diag_epoch
    if rows and record == RECORD_EPOCH and k1 == n_batches:
        epoch = _output("diag.epoch", diag.epoch, f64, (N_X, L))
    hist, a_range = ws._no_hist, ws._no_a_range
    if groups & G_HIST:
        hist = np.asarray(diag.hist)
        if hist.ndim != 3 or hist.shape[1:] != (L, N_HIST):
            raise ValueError(f"diag.hist must have shape (H, {L}, {N_HIST}), got {hist.shape}")
        hist = _output("diag.hist", hist, np.dtype(np.int32), hist.shape)
        first = -(-k0 // every) * every  # the call's first sampled mini-batch
        if first < k1:
            need = (k1 - 1) // every + 1 if record == RECORD_BATCH else 1
            if hist.shape[0] < need:
                raise ValueError(f"diag.hist needs at least {need} rows, has {hist.shape[0]}")
        a_range = _input("diag.a_range", diag.a_range, f64, (L, 2))
    ema = ws._no_ema
    if groups & G_NOISE:
        ema = _output("diag.ema", diag.ema, f64, (2, L))
    start = ws._no_start
    if groups & G_DISTANCE:
        start = _input("diag.start", diag.start, ws.dtype, (ws.n_params,))
    D2 = AS2 = SW = ws._no_f64
    if groups & G_MOMENTS:
        D2, AS2, SW = ws.moment_buffers()
    return (groups, every, beta, rec, epoch, hist, ema, start, a_range, D2, AS2, SW)


def _describe() -> str:
    return f"numba {numba.__version__}, no prange (nogil kernels); {_config.cache_report()}"


#: What runs, for ``fastbp.backends()["numba"].detail``: Numba's version and where
#: the kernels are cached (or that they are compiled in memory, and why).
DETAIL = _describe()
