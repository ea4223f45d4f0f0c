# cython: language_level=3, embedsignature=True
"""Compiled backend of fastbp: the fused backprop pass.

Design
------
Layering (as in scikit-learn's loss kernels):

1. per-element primitives (activation, slope, softplus) are ``cdef inline
   noexcept nogil`` functions of the ``floating`` fused type;
2. per-layer loops (activation + statistics, delta + statistics, update +
   norms) and the mini-batch driver are ``cdef ... noexcept nogil`` functions;
3. the four ``def`` functions of the backend contract (``fastbp/_contract.py``)
   take Python objects, check the buffer contract once, take raw pointers and
   run the whole epoch (or chunk of mini-batches) inside one ``with nogil``.

Contiguity contract: every array reaching this module is C-contiguous and of
the network dtype (float32 or float64), ``order`` is int64, records are
float64.  The Python layer guarantees it; ``_check`` below re-asserts it
cheaply (once per call, never per mini-batch) so that a misuse raises instead
of reading out of bounds.

Matrices are row-major with one example per row.  BLAS (column-major) is
called through ``scipy.linalg.cython_blas`` (or, for the large products, oneMKL's:
fastbp.set_blas) by reading each row-major matrix as its column-major transpose:

* forward      ``Z (m, n_out) = A (m, n_in) @ W.T``  ->  ``gemm('T','N')``
* backward     ``D_prev (m, n_in) = D (m, n_out) @ W``  ->  ``gemm('N','N')``
* gradient     ``G (n_out, n_in) = D.T @ A / m``  ->  ``gemm('N','T')``

Statistics are accumulated in double inside the loops that already touch the
data: the activation loop (sum of a, slopes, saturation counts, and ||A|| for
unbounded activations), the delta loop (column sums for g_b, sum of squares of
the deltas, M2 of the activations using the mean known from the forward loop:
a two-pass variance whose second pass is the backward loop), and the update
loop (||g_W||, ||W_new||, ||W_new - W_old||, ||v||).  Rows are processed in
groups of about 2048 values so that a group's statistics loops read it again
while it is in L1.  Norms are scaled by powers of two so that they neither
underflow nor overflow: the update-loop norms use a scale known before the loop
(a bound on the values); the delta norms fall back to a rescaled pass over the
in-cache block only when the plain sum of squares leaves [2^-900, 2^900].

Transcendentals: sigmoid and tanh call the vectorisable exp/expm1 of vmath.c
(compiled without reassociation, accuracy tested in tests/test_vmath.py); the
sigmoid slope is e r^2 with e = exp(-|z|) and r = 1/(1+e) (one division per value),
exact where a(1-a) cancels.

Non-finite values (SPEC section 5) are detected with
``bad |= not (fabs(z) <= FLOAT_MAX)`` (false for NaN and Inf; a comparison, so
the reassociation flags of the build cannot fold it away), per layer, in the
forward and delta loops; an update is refused when a cheap bound says it could
overflow: |sum_x delta a| <= ||Delta|| ||A|| (Cauchy-Schwarz) for the gradient,
||W||, ||v|| and ||phi|| (each a bound on its max) for the parameters.  No
parameter is written before all checks of a mini-batch passed.

Instruction sets: the module is compiled three times (baseline, AVX2,
AVX-512; see CMakeLists.txt) and fastbp/_backends/cython_backend.py imports the
best variant the CPU supports.

Threading contract: the functions release the GIL for the whole computation.
A workspace must not be used by two threads at once (a ``Network`` owns its
workspaces); BLAS may use its own threads.
"""

cimport cython
from cython cimport floating
from libc.math cimport exp, log, log1p, tanh, fabs, sqrt, frexp, ldexp, NAN, INFINITY
from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.string cimport memcpy, memset
from libc.float cimport DBL_MAX, FLT_MAX
from scipy.linalg.cython_blas cimport dgemm, sgemm

import numpy as np

from fastbp import _contract as _C
from fastbp import _diagnostics as _DX

cdef extern from "vmath.h" nogil:
    void fastbp_vexp(double* x, Py_ssize_t n) noexcept
    void fastbp_vexpf(float* x, Py_ssize_t n) noexcept
    void fastbp_vtanh(double* x, Py_ssize_t n) noexcept
    void fastbp_vtanhf(float* x, Py_ssize_t n) noexcept
    double fastbp_maxabs(const double* x, Py_ssize_t n) noexcept

cdef extern from "vstats.h" nogil:
    double fastbp_gsnr_sum(const double* g, const double* gm, Py_ssize_t n, double ss,
                           double m, Py_ssize_t* zero) noexcept
    double fastbp_gsnr_sumf(const float* g, const float* gm, Py_ssize_t n, float ss, float m,
                            Py_ssize_t* zero) noexcept
    double fastbp_moments_gsnr(const double* g, const double* a2, const double* d2, Py_ssize_t m,
                               Py_ssize_t n_in, Py_ssize_t n_out, double ss,
                               Py_ssize_t* zero) noexcept
    double fastbp_moments_gsnrf(const float* g, const float* a2, const float* d2, Py_ssize_t m,
                                Py_ssize_t n_in, Py_ssize_t n_out, float ss,
                                Py_ssize_t* zero) noexcept

cdef extern from * nogil:
    """
    static inline void fastbp_prefetch_l2(const void *p) { __builtin_prefetch(p, 0, 1); }
    """
    void prefetch_l2 "fastbp_prefetch_l2"(const void* p) noexcept


cdef extern from "vfused.h" nogil:
    ctypedef struct fastbp_rows:
        const char* base
        const int64_t* idx
        Py_ssize_t n, bytes
    ctypedef struct fastbp_gu_par:
        double alpha, c, eta, ln, mu, mu_next, fsg, fsw, fsd, fsz
        fastbp_rows pf
    enum: GU_PLAIN, GU_MOMENTUM, GU_NESTEROV
    void fastbp_grad_update(const double* D, const double* A, Py_ssize_t m, Py_ssize_t n_out,
                            Py_ssize_t n_in, double* W, double* V, double* F, const double* W0,
                            double* G, int mode, int stats, const fastbp_gu_par* p,
                            double* q) noexcept
    void fastbp_grad_updatef(const float* D, const float* A, Py_ssize_t m, Py_ssize_t n_out,
                             Py_ssize_t n_in, float* W, float* V, float* F, const float* W0,
                             float* G, int mode, int stats, const fastbp_gu_par* p,
                             double* q) noexcept

cdef extern from "vhist.h" nogil:
    enum: FASTBP_HIST_MAX_BINS
    ctypedef struct fastbp_decades:
        const int* cells
        const double* edges
        const int* dec_tbl
        int ce_lo, n_ce, e2_min, n_e2, decade_min, n_decades, zero_bin, ambiguous, n_bins
    void fastbp_hist_decades(const double* x, const double* b, Py_ssize_t rows, Py_ssize_t n,
                             const fastbp_decades* t, int32_t* h) noexcept
    void fastbp_hist_decadesf(const float* x, const float* b, Py_ssize_t rows, Py_ssize_t n,
                              const fastbp_decades* t, int32_t* h) noexcept
    void fastbp_hist_linear(const double* x, Py_ssize_t n, double lo, double hi, double scale,
                            int n_linear, int32_t* h) noexcept
    void fastbp_hist_linearf(const float* x, Py_ssize_t n, double lo, double hi, double scale,
                             int n_linear, int32_t* h) noexcept

# --------------------------------------------------------------------------
# Codes (checked against fastbp._contract at import time, below).
# --------------------------------------------------------------------------
cdef enum:
    SIGMOID = 0
    TANH = 1
    RELU = 2
    LEAKY_RELU = 3
    SOFTSIGN = 4
    LINEAR = 5
    SOFTMAX = 6

cdef enum:
    CROSS_ENTROPY = 0
    QUADRATIC = 1
    LOG_LIKELIHOOD = 2

cdef enum:
    RECORD_NONE = 0
    RECORD_BATCH = 1
    RECORD_EPOCH = 2

cdef enum:
    MOMENTUM_NONE = 0
    MOMENTUM_CONSTANT = 1
    MOMENTUM_SUTSKEVER = 2

cdef enum:
    PHASE_FORWARD = 0
    PHASE_BACKWARD = 1
    PHASE_UPDATE = 2

cdef enum:
    S_SPEED = 0
    S_GRAD_NORM = 1
    S_GAIN = 2
    S_WEIGHT_NORM = 3
    S_UPDATE_RATIO = 4
    S_ACT_MEAN = 5
    S_ACT_STD = 6
    S_SAT_LOW = 7
    S_SAT_HIGH = 8
    S_SLOPE_MEAN = 9
    S_NONFINITE = 10
    N_STATS = 11

# Per-layer accumulators of one mini-batch (or of one gradient() call):
# index F * L + l.
cdef enum:
    B_SUMA = 0      # sum of a
    B_M2 = 1        # sum of (a - mean)^2
    B_SUMS = 2      # sum of slopes
    B_LOW = 3       # saturated-low count
    B_HIGH = 4      # saturated-high count
    B_SSQD = 5      # scaled sum of squares of the deltas ...
    B_EXPD = 6      # ... and its power-of-two exponent
    B_NRMA = 7      # bound on ||A||_F (sqrt(m n) for activations bounded by 1)
    B_DIST = 8      # ||W_new - W_start||_F (distance group, sampled mini-batches)
    B_CNT = 9       # number of (example, unit) pairs
    B_GNORM = 10    # ||g_W||_F (from the update loop)
    B_WNORM = 11    # ||W_new||_F
    B_DNORM = 12    # ||W_new - W_old||_F
    B_WOLD = 13     # ||W_old||_F
    B_GB = 14       # bound on |g| of the layer
    B_VB = 15       # bound on |W_new - W_old|
    B_PB = 16       # bound on |W_new|
    N_B = 17

# Per-layer accumulators of one epoch.
cdef enum:
    E_CNT = 0       # pooled count of pairs
    E_MEAN = 1      # pooled mean of a
    E_M2 = 2        # pooled M2 of a
    E_SUMS = 3
    E_LOW = 4
    E_HIGH = 5
    E_GAIN = 6      # sum of per-batch gains
    E_NGAIN = 7     # number of batches in E_GAIN
    E_NRMP = 8      # ||theta_l|| (W and b), a bound on max |theta| for the overflow check
    E_NRMV = 9      # ||v_l||
    E_NRMF = 10     # ||phi_l|| (Nesterov look-ahead point)
    E_NRMW = 11     # ||W_l||_F (weights only): the next update's ||W_old||
    N_E = 12

# Optional statistic groups (fastbp/_diagnostics.py): bits, rows of a block, bins.
cdef enum:
    G_PER_EXAMPLE = 1
    G_NOISE = 2
    G_MOMENTS = 4
    G_HIST = 8
    G_DISTANCE = 16

cdef enum:
    X_PE_MEAN = 0
    X_PE_MAX = 1
    X_TRACE = 2
    X_NOISE = 3
    X_GSNR = 4
    X_GSNR_ZERO = 5
    X_DISTANCE = 6
    N_X = 7

cdef enum:
    DECADE_MIN = -45
    N_DECADES = 60
    N_DECADE_BINS = 125
    ZERO_BIN = 62
    N_LINEAR = 20
    N_LINEAR_BINS = 22
    H_DELTA = 0
    H_Z = 125
    H_A = 250
    N_HIST = 272
    UPDATE_BLOCK = 512  # values per dtype partial sum of update_loop
    STAT_BLOCK = 1024   # values per dtype partial sum of the activation statistics
    MOMENTS_FUSED_M = 32  # moments: up to this mini-batch size, no BLAS product
    CE_LO = -152        # exponents of the cell table: 2^-152 .. 2^55
    N_CE = 208
    AMBIGUOUS = 255  # a cell of the float32 table that needs the exact path
    E2_MIN = -150   # binary exponents of the decade table (10^-45 .. 10^15)
    N_E2 = 200

# Per-layer epoch sums of the optional groups: index F * L + l.
cdef enum:
    D_PE_SUM = 0
    D_PE_N = 1
    D_PE_MAX = 2
    D_TR_SUM = 3
    D_TR_N = 4
    D_GS_SUM = 5
    D_GS_N = 6
    D_ZERO_SUM = 7
    N_D = 8

# BLAS transpose flags as chars
cdef enum:
    CH_N = 78  # 'N'
    CH_T = 84  # 'T'

cdef double SAFE_LO = 2.0 ** -900
cdef double SAFE_HI = 2.0 ** 900
cdef double UNSCALED_LO = 2.0 ** -200  # unscaled_safe's range of scales
cdef double UNSCALED_HI = 2.0 ** 200
# the powers of two a float holds as normal numbers
cdef double FLT_POW2_LO = 2.0 ** -126
cdef double FLT_POW2_HI = 2.0 ** 127


def _check_codes():
    """Fail loudly at import if the C enums drifted from fastbp._contract."""
    pairs = [
        (SIGMOID, _C.SIGMOID), (TANH, _C.TANH), (RELU, _C.RELU), (LEAKY_RELU, _C.LEAKY_RELU),
        (SOFTSIGN, _C.SOFTSIGN), (LINEAR, _C.LINEAR), (SOFTMAX, _C.SOFTMAX),
        (CROSS_ENTROPY, _C.CROSS_ENTROPY), (QUADRATIC, _C.QUADRATIC),
        (LOG_LIKELIHOOD, _C.LOG_LIKELIHOOD), (RECORD_NONE, _C.RECORD_NONE),
        (RECORD_BATCH, _C.RECORD_BATCH), (RECORD_EPOCH, _C.RECORD_EPOCH),
        (MOMENTUM_NONE, _C.MOMENTUM_NONE), (MOMENTUM_CONSTANT, _C.MOMENTUM_CONSTANT),
        (MOMENTUM_SUTSKEVER, _C.MOMENTUM_SUTSKEVER), (PHASE_FORWARD, _C.PHASE_FORWARD),
        (PHASE_BACKWARD, _C.PHASE_BACKWARD), (PHASE_UPDATE, _C.PHASE_UPDATE),
        (S_SPEED, _C.S_SPEED), (S_NONFINITE, _C.S_NONFINITE), (N_STATS, _C.N_STATS),
        (G_PER_EXAMPLE, _DX.G_PER_EXAMPLE), (G_NOISE, _DX.G_NOISE), (G_MOMENTS, _DX.G_MOMENTS),
        (G_HIST, _DX.G_HIST), (G_DISTANCE, _DX.G_DISTANCE), (X_PE_MEAN, _DX.X_PE_MEAN),
        (X_PE_MAX, _DX.X_PE_MAX), (X_TRACE, _DX.X_TRACE), (X_NOISE, _DX.X_NOISE),
        (X_GSNR, _DX.X_GSNR), (X_GSNR_ZERO, _DX.X_GSNR_ZERO), (X_DISTANCE, _DX.X_DISTANCE),
        (N_X, _DX.N_X), (DECADE_MIN, _DX.DECADE_MIN), (N_DECADES, _DX.N_DECADES),
        (N_DECADE_BINS, _DX.N_DECADE_BINS), (ZERO_BIN, _DX.N_DECADES + 2),
        (N_LINEAR, _DX.N_LINEAR), (N_LINEAR_BINS, _DX.N_LINEAR_BINS), (H_DELTA, _DX.H_DELTA),
        (H_Z, _DX.H_Z), (H_A, _DX.H_A), (N_HIST, _DX.N_HIST),
    ]
    if max(N_DECADE_BINS, N_LINEAR_BINS) > FASTBP_HIST_MAX_BINS:
        raise ImportError("vhist.h holds at most FASTBP_HIST_MAX_BINS bins; raise it")
    for mine, theirs in pairs:
        if mine != theirs:
            raise ImportError("fastbp._kernels was built against another version of fastbp._contract; rebuild it")


_check_codes()


# --------------------------------------------------------------------------
# Layer 1: per-element primitives.
# --------------------------------------------------------------------------
cdef inline floating f_act(int code, floating z, floating alpha) noexcept nogil:
    """a = f(z) for the element-wise activations (not softmax)."""
    cdef floating e
    cdef floating one = 1  # (see sigmoid_rows)
    if code == SIGMOID:
        # exp(-|z|) never overflows; both branches are exact to round-off.
        e = <floating> exp(-fabs(z))
        if z >= 0:
            return one / (one + e)
        return e / (one + e)
    elif code == TANH:
        return <floating> tanh(z)
    elif code == RELU:
        return z if z > 0 else 0
    elif code == LEAKY_RELU:
        return z if z > 0 else alpha * z
    elif code == SOFTSIGN:
        return z / (one + <floating> fabs(z))
    return z


cdef inline floating f_slope(int code, floating z, floating a, floating alpha) noexcept nogil:
    """f'(z), computed from a where the activation allows it."""
    cdef floating e
    cdef floating one = 1  # (see sigmoid_rows)
    if code == SIGMOID:
        e = <floating> exp(-fabs(z))
        return e / ((one + e) * (one + e))
    elif code == TANH:
        return one - a * a
    elif code == RELU:
        return 1 if z > 0 else 0
    elif code == LEAKY_RELU:
        return 1 if z > 0 else alpha
    elif code == SOFTSIGN:
        return (one - <floating> fabs(a)) * (one - <floating> fabs(a))
    return 1


cdef inline double softplus(double z) noexcept nogil:
    """log(1 + e^z), finite for every finite z."""
    return (z if z > 0 else 0.0) + log1p(exp(-fabs(z)))


cdef inline int exponent_of(double x) noexcept nogil:
    """frexp's exponent of a finite x != 0 (x = f 2^e, 0.5 <= |f| < 1): read from the
    bits for normal numbers (no libm call: this runs several times per layer and
    mini-batch), frexp for subnormal ones."""
    cdef uint64_t bits
    cdef int e = 0
    memcpy(&bits, &x, sizeof(double))
    e = <int> ((bits >> 52) & 0x7ff)
    if e == 0:
        frexp(x, &e)
        return e
    return e - 1022


cdef inline double pow2(int k) noexcept nogil:
    """2^k, exactly: built from its bits in the normal range, else libm's ldexp."""
    cdef uint64_t bits
    cdef double r
    if k < -1022 or k > 1023:
        return ldexp(1.0, k)
    bits = (<uint64_t> (k + 1023)) << 52
    memcpy(&r, &bits, sizeof(double))
    return r


cdef inline double scale2(double x, int k) noexcept nogil:
    """ldexp(x, k): one multiplication by 2^k when 2^k is a normal number (the product
    is then x 2^k correctly rounded, as ldexp's), else libm's ldexp."""
    if k < -1022 or k > 1023:
        return ldexp(x, k)
    return x * pow2(k)


cdef inline double pow2_exponent(double x) noexcept nogil:
    """e such that 2^e is within a factor 2 of x (x > 0 finite), clamped."""
    cdef int e = 0
    if not (x > 0) or x == INFINITY:
        return 0.0
    e = exponent_of(x)
    if e > 1000:
        e = 1000
    elif e < -1000:
        e = -1000
    return <double> e


cdef inline void ssq_add(double* acc_ssq, double* acc_exp, double ssq, double e) noexcept nogil:
    """(acc_ssq, acc_exp) += (ssq, e): sums of squares carried as ssq * 4^e."""
    cdef double E
    if ssq == 0:
        return
    if acc_ssq[0] == 0:
        acc_ssq[0] = ssq
        acc_exp[0] = e
        return
    E = acc_exp[0] if acc_exp[0] > e else e
    acc_ssq[0] = (scale2(acc_ssq[0], <int> (2 * (acc_exp[0] - E)))
                  + scale2(ssq, <int> (2 * (e - E))))
    acc_exp[0] = E


cdef inline double ssq_norm(double ssq, double e) noexcept nogil:
    return scale2(sqrt(ssq), <int> e)


cdef double norm_dtype(const floating* x, Py_ssize_t n) noexcept nogil:
    """||x||_2 of a dtype vector (float64 outside a safe range: scaled by a power of two).

    float32 needs no scaling: the squares of float32 numbers, taken in double, lie in
    [2e-90, 1.2e77] and sum without overflow or underflow: one pass (scaling by a
    power of two is exact, so only the order of the sums can differ)."""
    cdef Py_ssize_t i
    cdef double mx, v, s = 0, sc
    for i in range(n):
        v = x[i]
        s += v * v
    if floating is float:
        return sqrt(s)
    # float64: the plain sum is exact enough when it lies in [2^-900, 2^900] (a square
    # that underflowed is then below 2^-122 of it); else again, scaled
    if s >= SAFE_LO and s <= SAFE_HI:
        return sqrt(s)
    s = 0
    mx = fastbp_maxabs(x, n)
    if mx == 0 or mx != mx:
        return mx
    if mx == INFINITY:
        return INFINITY
    sc = pow2(-<int> pow2_exponent(mx))
    for i in range(n):
        v = x[i] * sc
        s += v * v
    return sqrt(s) / sc


cdef double norm_diff(const floating* x, const floating* y, Py_ssize_t n) noexcept nogil:
    """||x - y||_2 (difference taken in the dtype, as the update applied it)."""
    cdef Py_ssize_t i
    cdef double mx = 0, v, s = 0, sc
    cdef floating d
    for i in range(n):
        d = x[i] - y[i]
        v = fabs(d)
        if not (v <= mx):
            mx = v
    if mx == 0 or mx != mx or mx == INFINITY:
        return mx
    sc = pow2(-<int> pow2_exponent(mx))
    for i in range(n):
        d = x[i] - y[i]
        v = d * sc
        s += v * v
    return sqrt(s) / sc


cdef double norm_double(const double* x, Py_ssize_t n, double mult) noexcept nogil:
    """mult * ||x||_2 of a double vector, scaled (two passes)."""
    cdef Py_ssize_t i
    cdef double mx = 0, v, s = 0, sc
    for i in range(n):
        v = fabs(x[i])
        if not (v <= mx):
            mx = v
    if mx == 0 or mx != mx or mx == INFINITY:
        return mx
    sc = pow2(-<int> pow2_exponent(mx))
    for i in range(n):
        v = x[i] * sc
        s += v * v
    return (sqrt(s) / sc) * mult


cdef inline double copy_ssq(floating* dst, const floating* src, Py_ssize_t n,
                            double ssq) noexcept nogil:
    """dst[:n] = src[:n]; returns ssq + sum src^2 (inputs are finite and moderate)."""
    cdef Py_ssize_t i
    cdef floating v
    for i in range(n):
        v = src[i]
        dst[i] = v
        ssq += v * <double> v
    return ssq


ctypedef fused sum_t:
    float
    double


cdef inline double sq_dev(const floating* x, Py_ssize_t n, sum_t mean) noexcept nogil:
    """sum (x - mean)^2 over n values, computed and summed in sum_t (mean's type).

    The four quarters are summed side by side: four independent chains of adds (one
    vector accumulator each) instead of one whose latency would bound the loop (on
    C's 32-wide layers, 4 cycles per vector).
    """
    cdef Py_ssize_t j, q = n // 4
    cdef sum_t d, s0 = 0, s1 = 0, s2 = 0, s3 = 0
    for j in range(q):
        d = x[j] - mean
        s0 += d * d
        d = x[j + q] - mean
        s1 += d * d
        d = x[j + 2 * q] - mean
        s2 += d * d
        d = x[j + 3 * q] - mean
        s3 += d * d
    for j in range(4 * q, n):
        d = x[j] - mean
        s0 += d * d
    return (s0 + s1) + (s2 + s3)


# The BLAS products: SciPy's (its OpenBLAS), or those of at least gemm_min
# multiply-adds (M N K) through another library's Fortran dgemm_/sgemm_ (the same
# LP64 interface), installed by fastbp._blas through _set_gemm.
ctypedef void (*dgemm_fn)(char*, char*, int*, int*, int*, double*, double*, int*,
                          double*, int*, double*, double*, int*) noexcept nogil
ctypedef void (*sgemm_fn)(char*, char*, int*, int*, int*, float*, float*, int*,
                          float*, int*, float*, float*, int*) noexcept nogil
cdef dgemm_fn dgemm_alt = NULL
cdef sgemm_fn sgemm_alt = NULL
cdef int64_t gemm_min = 0


def _set_gemm(size_t d_addr=0, size_t s_addr=0, int64_t min_macs=0):
    """Send the products of at least ``min_macs`` multiply-adds to the dgemm and
    sgemm at these addresses (Fortran interface, 32-bit integers); 0, 0: every
    product to SciPy's.  Returns the previous triple."""
    global dgemm_alt, sgemm_alt, gemm_min
    old = (<size_t> dgemm_alt, <size_t> sgemm_alt, gemm_min)
    if (d_addr == 0) != (s_addr == 0):
        raise ValueError("_set_gemm: give both addresses or neither")
    if min_macs < 0:
        raise ValueError(f"_set_gemm: min_macs must be >= 0, got {min_macs}")
    dgemm_alt = <dgemm_fn> d_addr
    sgemm_alt = <sgemm_fn> s_addr
    gemm_min = min_macs
    return old


cdef inline void gemm(char ta, char tb, int M, int N, int K, floating alpha,
                      const floating* A, int lda, const floating* B, int ldb,
                      floating beta, floating* C, int ldc) noexcept nogil:
    """C = alpha op(A) op(B) + beta C, column-major BLAS (SciPy's, or _set_gemm's)."""
    cdef bint alt = dgemm_alt != NULL and <int64_t> M * N * K >= gemm_min
    cdef dgemm_fn d
    cdef sgemm_fn s
    if floating is double:
        d = dgemm_alt if alt else dgemm
        d(&ta, &tb, &M, &N, &K, &alpha, <double*> A, &lda, <double*> B, &ldb, &beta, C, &ldc)
    else:
        s = sgemm_alt if alt else sgemm
        s(&ta, &tb, &M, &N, &K, &alpha, <float*> A, &lda, <float*> B, &ldb, &beta, C, &ldc)


# --------------------------------------------------------------------------
# The network and its workspace, as plain C data.
# --------------------------------------------------------------------------
ctypedef struct Net:
    int L
    const int64_t* sizes
    const int* acts
    int cost
    double alpha
    const int64_t* w_off
    const int64_t* b_off
    Py_ssize_t n_params
    Py_ssize_t m_max
    # workspace (dtype buffers as void*, cast in the fused functions)
    void* A           # activations, layer l at act_off[l], (m, n_{l+1})
    void* S           # slopes of hidden layers
    void* D           # deltas
    void* ZL          # output pre-activations (m, n_L)
    void* Xb          # gathered mini-batch input (m, n_0)
    void* Yb          # gathered mini-batch targets (m, n_L)
    void* G           # gradient, params layout
    void* P0          # params at epoch start
    void* PHI         # Nesterov look-ahead parameters
    const int64_t* act_off
    const int64_t* unit_off   # offset of layer l's units in per-unit arrays
    double* colsum    # per-unit sums of deltas (this batch / this call)
    double* colsum_e  # per-unit sums of deltas over the epoch
    double* Gacc      # sum over the epoch of m_k g_W,k (params layout)
    double* bacc      # N_B * L
    double* eacc      # N_E * L
    double* gacc      # N_E * L, pooled accumulators of gradient()
    double* colsum_g  # per-unit sums of deltas over a gradient() call
    double* ssq_g     # 2 * L: scaled sums of squares of Delta over a gradient() call
    double epoch_m    # examples that contributed to this epoch so far
    int epoch_skipped # mini-batches skipped in this epoch so far
    # optional statistic groups
    double nrmX       # ||X_b|| of the current mini-batch
    double* xssq      # (m_max) ||x||^2 of each row of the current mini-batch
    const void* w0    # start weights while a sampled mini-batch updates with G_DISTANCE
    fastbp_rows pf    # the next mini-batch's input rows, prefetched during the first
                      # layer's fused update (pf.n = 0: none)
    double* nrm0      # (L) ||W_start|| per layer
    int32_t* hz       # z histograms of the hidden layers (L, N_DECADE_BINS) while
                      # a sampled mini-batch runs with G_HIST, else NULL
    int32_t* hz_buf
    double* dacc      # N_D * L epoch sums
    double* xrow      # N_X * L scratch row (record="epoch")
    fastbp_decades dec   # the decade tables (vhist.h): the N_DECADES + 1 edges 10^k,
                         # the edge index of each 2^e (e = E2_MIN ..), the bin of each
                         # double cell (sign, exponent, 5 mantissa bits) or AMBIGUOUS
    void* D2          # moments: (m_max, max width) squared scaled deltas,
    void* A2          # squared scaled activations,
    void* GM          # (max n_out * n_in) second moments of one layer
    double* c2        # (max width) column sums of D2


ctypedef struct DiagC:
    int groups
    Py_ssize_t every
    double beta
    double* rec       # this call's rows (RECORD_BATCH) or NULL
    double* epoch_out # (N_X, L) (RECORD_EPOCH, last chunk) or NULL
    int32_t* hist     # this epoch's histogram rows (H, L, N_HIST)
    double* ema       # (2, L)
    const void* start # params at the first fit
    const double* a_range  # (L, 2)


cdef class Workspace:
    """Buffers for processing up to ``m_max`` examples at once (see the contract)."""

    cdef readonly object layout
    cdef readonly Py_ssize_t m_max
    cdef object _arrays
    cdef Py_ssize_t _offset
    cdef Net net

    def __init__(self, layout, Py_ssize_t m_max, Py_ssize_t offset=0):
        if m_max < 1:
            raise ValueError(f"m_max must be >= 1, got {m_max}")
        self.layout = layout
        self.m_max = m_max
        dt = np.dtype(layout.dtype)
        if dt != np.float32 and dt != np.float64:
            raise TypeError(f"layout.dtype must be float32 or float64, got {dt}")
        if offset < 0 or offset % 8 != 0:
            raise ValueError(f"offset must be a non-negative multiple of 8, got {offset}")

        def z(n, dtype):
            # the buffers the kernels stream through start on cache lines (``offset``
            # bytes past one: for `benchmarks/ab.py alignment`)
            return _C.aligned_zeros(n, dtype, offset)
        self._offset = offset
        sizes = np.ascontiguousarray(layout.sizes, dtype=np.int64)
        acts = np.ascontiguousarray(layout.acts, dtype=np.intc)
        w_off = np.ascontiguousarray(layout.w_off, dtype=np.int64)
        b_off = np.ascontiguousarray(layout.b_off, dtype=np.int64)
        L = len(sizes) - 1
        widths = sizes[1:]
        act_off = np.zeros(L, dtype=np.int64)
        act_off[1:] = np.cumsum(widths[:L - 1] * m_max)
        unit_off = np.zeros(L, dtype=np.int64)
        unit_off[1:] = np.cumsum(widths[:L - 1])
        n_act = int(widths.sum()) * m_max
        n_units = int(widths.sum())
        P = int(layout.n_params)
        arrays = dict(
            sizes=sizes, acts=acts, w_off=w_off, b_off=b_off, act_off=act_off, unit_off=unit_off,
            A=z(n_act, dt), S=z(n_act, dt), D=z(n_act, dt), ZL=z(m_max * int(sizes[L]), dt),
            Xb=z(m_max * int(sizes[0]), dt), Yb=z(m_max * int(sizes[L]), dt), G=z(P, dt),
            P0=z(P, dt), PHI=z(P, dt), colsum=np.zeros(n_units), colsum_e=np.zeros(n_units),
            Gacc=z(P, np.float64), bacc=np.zeros(N_B * L), eacc=np.zeros(N_E * L),
            gacc=np.zeros(N_E * L), colsum_g=np.zeros(n_units), ssq_g=np.zeros(2 * L),
            hz_buf=np.zeros(L * N_DECADE_BINS, np.int32), dacc=np.zeros(N_D * L),
            nrm0=np.zeros(L), xssq=np.zeros(m_max), dec_tbl=_decade_table(), cells=_CELLS,
            xrow=np.full(N_X * L, np.nan), edges=np.ascontiguousarray(_DX.DECADE_EDGES),
        )
        self._arrays = arrays
        self.net.L = L
        self.net.sizes = <const int64_t*> _ptr(sizes)
        self.net.acts = <const int*> _ptr(acts)
        self.net.cost = int(layout.cost)
        self.net.alpha = float(layout.alpha)
        self.net.w_off = <const int64_t*> _ptr(w_off)
        self.net.b_off = <const int64_t*> _ptr(b_off)
        self.net.n_params = P
        self.net.m_max = m_max
        self.net.A = _ptr(arrays["A"])
        self.net.S = _ptr(arrays["S"])
        self.net.D = _ptr(arrays["D"])
        self.net.ZL = _ptr(arrays["ZL"])
        self.net.Xb = _ptr(arrays["Xb"])
        self.net.Yb = _ptr(arrays["Yb"])
        self.net.G = _ptr(arrays["G"])
        self.net.P0 = _ptr(arrays["P0"])
        self.net.PHI = _ptr(arrays["PHI"])
        self.net.act_off = <const int64_t*> _ptr(act_off)
        self.net.unit_off = <const int64_t*> _ptr(unit_off)
        self.net.colsum = <double*> _ptr(arrays["colsum"])
        self.net.colsum_e = <double*> _ptr(arrays["colsum_e"])
        self.net.Gacc = <double*> _ptr(arrays["Gacc"])
        self.net.bacc = <double*> _ptr(arrays["bacc"])
        self.net.eacc = <double*> _ptr(arrays["eacc"])
        self.net.gacc = <double*> _ptr(arrays["gacc"])
        self.net.colsum_g = <double*> _ptr(arrays["colsum_g"])
        self.net.ssq_g = <double*> _ptr(arrays["ssq_g"])
        self.net.epoch_m = 0
        self.net.epoch_skipped = 0
        self.net.nrmX = 0
        self.net.w0 = NULL
        self.net.pf.n = 0
        self.net.nrm0 = <double*> _ptr(arrays["nrm0"])
        self.net.xssq = <double*> _ptr(arrays["xssq"])
        self.net.hz = NULL
        self.net.hz_buf = <int32_t*> _ptr(arrays["hz_buf"])
        self.net.dacc = <double*> _ptr(arrays["dacc"])
        self.net.xrow = <double*> _ptr(arrays["xrow"])
        self.net.dec.edges = <const double*> _ptr(arrays["edges"])
        self.net.dec.dec_tbl = <const int*> _ptr(arrays["dec_tbl"])
        self.net.dec.cells = <const int*> _ptr(arrays["cells"])
        self.net.dec.ce_lo = CE_LO
        self.net.dec.n_ce = N_CE
        self.net.dec.e2_min = E2_MIN
        self.net.dec.n_e2 = N_E2
        self.net.dec.decade_min = DECADE_MIN
        self.net.dec.n_decades = N_DECADES
        self.net.dec.zero_bin = ZERO_BIN
        self.net.dec.ambiguous = AMBIGUOUS
        self.net.dec.n_bins = N_DECADE_BINS
        self.net.D2 = NULL
        self.net.A2 = NULL
        self.net.GM = NULL
        self.net.c2 = NULL

    def _ensure_moments(self):
        """Allocate the buffers of the moments group (once per workspace)."""
        if "GM" in self._arrays:
            return
        lay = self.layout
        dt = np.dtype(lay.dtype)
        sizes = [int(s) for s in lay.sizes]
        widest = max(sizes)
        prod = max(sizes[l] * sizes[l + 1] for l in range(len(sizes) - 1))
        off = self._offset
        extra = dict(D2=_C.aligned_zeros(self.m_max * widest, dt, off),
                     A2=_C.aligned_zeros(self.m_max * widest, dt, off),
                     GM=_C.aligned_zeros(prod if self.m_max > MOMENTS_FUSED_M else 1, dt, off),
                     c2=np.zeros(widest))
        self._arrays.update(extra)
        self.net.D2 = _ptr(extra["D2"])
        self.net.A2 = _ptr(extra["A2"])
        self.net.GM = _ptr(extra["GM"])
        self.net.c2 = <double*> _ptr(extra["c2"])

    @property
    def nbytes(self):
        """Bytes held by the workspace buffers."""
        return sum(a.nbytes for a in self._arrays.values())


# Mini-batches of at most this many examples form the weight gradients inside the
# update (vfused.c) instead of through BLAS, per dtype; _set_fused_m_max changes the
# bounds (tests and benchmarks/ab.py compare the two paths).  Measured with
# `ab.py fused` (blas / fused, epoch time; benchmarks/README.md, 2026-12-07 evening):
# A (m = 10) 1.15 float64, 1.08-1.15 float32; C (m = 32) 1.00 float64, 1.00-1.04
# float32, which stays on BLAS: there the fused path's statistics cost 1.051x in
# instructions (callgrind_stats.py), over issue 4's 1.05, for at most 4% of speed.
cdef Py_ssize_t fused_m_max_d = 16
cdef Py_ssize_t fused_m_max_f = 16


def _set_fused_m_max(Py_ssize_t m64, m32=None):
    """Set the largest mini-batch of the fused gradient-and-update path, float64 and
    float32 (``m32`` defaults to ``m64``; 0: never); returns the previous pair."""
    global fused_m_max_d, fused_m_max_f
    old = (fused_m_max_d, fused_m_max_f)
    fused_m_max_d = m64
    fused_m_max_f = m64 if m32 is None else m32
    return old


# Whether the fused path prefetches the next mini-batch's input rows while it updates
# the first layer (benchmarks/ab.py prefetch compares).
cdef bint prefetch_rows = True


def _set_prefetch(bint on):
    """Turn the prefetch of the next mini-batch's rows on or off; returns the old
    setting."""
    global prefetch_rows
    old = prefetch_rows
    prefetch_rows = on
    return old


cdef double _EMPTY[1]


def _cell_table():
    """Decade bin of every double cell (sign, exponent, 5 mantissa bits), or AMBIGUOUS.

    Index ((sign * N_CE) + e - CE_LO) * 32 + m for x = +-(1 + m/32 + ...) 2^e; the
    exponent is clamped to [CE_LO, CE_LO + N_CE - 1] and the two end cells (what the
    clamp gathers: zero, subnormals, huge values, inf, NaN) are AMBIGUOUS, as is a cell
    whose values do not all share one bin (it holds a decade edge other than at its
    lower end).  Exact: no rounding, float32 values are converted to double first.
    """
    with np.errstate(all="ignore"):
        sign = np.repeat([1.0, -1.0], N_CE * 32)
        e = np.tile(np.repeat(np.arange(N_CE) + CE_LO, 32), 2).astype(np.float64)
        m = np.tile(np.arange(32), 2 * N_CE).astype(np.float64)
        lo = np.ldexp(1.0 + m / 32.0, e.astype(int))
        top = np.nextafter(np.ldexp(1.0 + (m + 1.0) / 32.0, e.astype(int)), 0.0)
        a = _DX.decade_index(sign * lo)
        b = _DX.decade_index(sign * top)
        out = np.where(a == b, a, AMBIGUOUS)
        ends = (e == CE_LO) | (e == CE_LO + N_CE - 1)
        out[ends] = AMBIGUOUS
    return np.ascontiguousarray(out, dtype=np.intc)


_CELLS = _cell_table()


def _decade_table():
    """Index i of the largest decade edge <= 2^e (clamped to 0), e = E2_MIN .. + N_E2."""
    p = np.ldexp(1.0, np.arange(E2_MIN, E2_MIN + N_E2))
    i = np.searchsorted(_DX.DECADE_EDGES, p, side="right") - 1
    return np.ascontiguousarray(np.clip(i, 0, N_DECADES - 1), dtype=np.intc)


def _decade_layout():
    """The constants of fastbp_decades (vhist.h) besides its tables, as the workspace
    sets them (for benchmarks/micro/kernels.py, which drives vhist.c alone)."""
    return dict(ce_lo=CE_LO, n_ce=N_CE, e2_min=E2_MIN, n_e2=N_E2, decade_min=DECADE_MIN,
                n_decades=N_DECADES, zero_bin=ZERO_BIN, ambiguous=AMBIGUOUS,
                n_bins=N_DECADE_BINS)


cdef void* _ptr(arr) except NULL:
    cdef const unsigned char[::1] mv
    if arr.size == 0:
        # a zero-length buffer still needs a valid address
        return <void*> _EMPTY
    mv = arr.reshape(-1).view(np.uint8)
    return <void*> &mv[0]


ctypedef void (*vfun_d)(double*, Py_ssize_t) noexcept nogil
ctypedef void (*vfun_f)(float*, Py_ssize_t) noexcept nogil


cdef object _apply_vmath(x, vfun_d fd, vfun_f ff):
    out = np.array(x, copy=True, order="C")
    cdef double[::1] d
    cdef float[::1] f
    if out.dtype == np.float64:
        d = out.reshape(-1)
        with nogil:
            fd(&d[0], d.shape[0])
    elif out.dtype == np.float32:
        f = out.reshape(-1)
        with nogil:
            ff(&f[0], f.shape[0])
    else:
        raise TypeError(f"x must be float32 or float64, got {out.dtype}")
    return out


def _vexp(x):
    """exp of a float32/float64 array by vmath.c's vectorised exp (a twin for tests)."""
    return _apply_vmath(x, fastbp_vexp, fastbp_vexpf)


def _vtanh(x):
    """tanh of a float32/float64 array by vmath.c's vectorised tanh (a twin for tests)."""
    return _apply_vmath(x, fastbp_vtanh, fastbp_vtanhf)


def make_workspace(layout, m_max, offset=0):
    """Allocate the buffers for ``layout`` and up to ``m_max`` rows at once (``offset``:
    bytes past a cache line, for `benchmarks/ab.py alignment`)."""
    return Workspace(layout, int(m_max), int(offset))


# --------------------------------------------------------------------------
# Layer 2: per-layer loops.
# --------------------------------------------------------------------------
cdef inline double dtype_max(floating x) noexcept nogil:
    """Largest finite value of x's type."""
    if floating is double:
        return DBL_MAX
    return FLT_MAX


cdef inline int act_row(int code, floating* Zr, floating* Sr, const floating* b,
                             Py_ssize_t n, floating alpha) noexcept nogil:
    """a = f(z + b) in place over one row, slopes into Sr; returns sum of (z - z)."""
    cdef Py_ssize_t j
    cdef floating z, a
    cdef int bad = 0
    cdef double top = dtype_max(alpha)
    for j in range(n):
        z = Zr[j] + b[j]
        bad |= not (fabs(z) <= top)
        a = f_act(code, z, alpha)
        Zr[j] = a
        Sr[j] = f_slope(code, z, a, alpha)
    return bad


cdef inline int sigmoid_rows(floating* Z, floating* S, const floating* b, Py_ssize_t rows,
                             Py_ssize_t n) noexcept nogil:
    """Sigmoid over rows (n values each, contiguous) with the vectorised exp of vmath.c
    (S is scratch).  The bias is added row by row, exp and the quotients run over the
    rows as one flat array: a layer of 30 units would otherwise leave 6 of every 30
    values to the loops' scalar remainders."""
    cdef Py_ssize_t i, j, cnt = rows * n
    cdef floating z, e, a, r
    cdef floating one = 1  # a typed 1: a literal would make the float32 arithmetic double
    cdef int bad = 0
    cdef double top = dtype_max(<floating> 0)
    cdef floating* Zr
    cdef floating* Sr
    for i in range(rows):
        Zr = Z + i * n
        Sr = S + i * n
        for j in range(n):
            z = Zr[j] + b[j]
            bad |= not (fabs(z) <= top)
            Zr[j] = z
            Sr[j] = -fabs(z)
    if floating is double:
        fastbp_vexp(S, cnt)
    else:
        fastbp_vexpf(S, cnt)
    for j in range(cnt):
        z = Z[j]
        e = S[j]  # exp(-|z|): never overflows
        # one division (a vector division costs as much as the rest of the loop):
        # sigma(z) = r or e r with r = 1 / (1 + e), and sigma'(z) = a (1 - a) = e r^2,
        # which keeps its digits when the unit saturates (1 - a cancels in float32
        # from z ~ 10 on)
        r = one / (one + e)
        a = r if z >= 0 else e * r
        Z[j] = a
        S[j] = (e * r) * r
    return bad


cdef inline int tanh_rows(floating* Z, floating* S, const floating* b, Py_ssize_t rows,
                          Py_ssize_t n) noexcept nogil:
    """tanh over rows with the vectorised tanh of vmath.c (flat, as sigmoid_rows)."""
    cdef Py_ssize_t i, j, cnt = rows * n
    cdef floating z, a
    cdef floating one = 1  # (see sigmoid_rows)
    cdef int bad = 0
    cdef double top = dtype_max(<floating> 0)
    cdef floating* Zr
    for i in range(rows):
        Zr = Z + i * n
        for j in range(n):
            z = Zr[j] + b[j]
            bad |= not (fabs(z) <= top)
            Zr[j] = z
    if floating is double:
        fastbp_vtanh(Z, cnt)
    else:
        fastbp_vtanhf(Z, cnt)
    for j in range(cnt):
        a = Z[j]
        S[j] = one - a * a
    return bad


cdef int hidden_forward(Net* c, int l, floating* Z, const floating* b, Py_ssize_t m,
                        bint stats) noexcept nogil:
    """Z (m, n) holds W a_prev; make it a = f(Z + b) in place, slopes into S.

    Also stores a bound on max |a| (for the overflow check) and, with ``stats``,
    the sums behind act_mean, slope_mean and the saturation fractions.
    Returns 1 if a pre-activation is not finite.
    """
    cdef Py_ssize_t n = c.sizes[l + 1], i, j, low = 0, high = 0, i0, i1, cnt
    cdef int code = c.acts[l]
    cdef floating alpha = <floating> c.alpha
    cdef floating* S = <floating*> c.S + c.act_off[l]
    cdef floating* Zr
    cdef floating* Sr
    cdef floating a, s, thr, mid, fa, fs
    cdef int bad = 0, nlo, nsat
    cdef Py_ssize_t j0, j1, wlo, wsat
    cdef double suma = 0, sums = 0, ssqa = 0
    cdef double* acc = c.bacc
    cdef int L = c.L
    cdef bint relu_like = code == RELU or code == LEAKY_RELU
    cdef bint unbounded = relu_like or code == LINEAR
    thr = <floating> (0.0025 if code == SIGMOID else 0.01)
    mid = <floating> (0.5 if code == SIGMOID else 0.0)
    i0 = 0
    while i0 < m:
        # rows in groups of about 2048 values: the statistics then read the group
        # again while it is in L1, in one flat (well vectorised) loop
        i1 = group_end(i0, m, n)
        if c.hz != NULL:  # a sampled mini-batch with histograms: z before it becomes a
            hist_decades(Z + i0 * n, b, i1 - i0, n, c.hz + l * N_DECADE_BINS, &c.dec)
        # one specialised, branch-free loop per activation
        if code == SIGMOID:
            bad |= sigmoid_rows(Z + i0 * n, S + i0 * n, b, i1 - i0, n)
        elif code == TANH:
            bad |= tanh_rows(Z + i0 * n, S + i0 * n, b, i1 - i0, n)
        else:
            for i in range(i0, i1):
                Zr = Z + i * n
                Sr = S + i * n
                if code == RELU:
                    bad |= act_row(RELU, Zr, Sr, b, n, alpha)
                elif code == LEAKY_RELU:
                    bad |= act_row(LEAKY_RELU, Zr, Sr, b, n, alpha)
                elif code == SOFTSIGN:
                    bad |= act_row(SOFTSIGN, Zr, Sr, b, n, alpha)
                else:
                    bad |= act_row(LINEAR, Zr, Sr, b, n, alpha)
        Zr = Z + i0 * n
        Sr = S + i0 * n
        cnt = (i1 - i0) * n
        if unbounded:
            for j in range(cnt):
                ssqa += Zr[j] * <double> Zr[j]
        if stats:
            if relu_like:
                for j in range(cnt):
                    a = Zr[j]
                    suma += a
                    sums += Sr[j]
                    low += a <= 0
            elif unbounded:
                for j in range(cnt):
                    suma += Zr[j]
                    sums += Sr[j]
            else:
                # |a| <= 1 and 0 <= slope <= 1: summed in the dtype over blocks of
                # STAT_BLOCK values (64 per float32 vector lane), the blocks in double,
                # the counts in integer lanes as wide as the data's (32-bit for
                # float32, 64-bit for float64: a compare mask is then added as it is)
                j0 = 0
                while j0 < cnt:
                    j1 = min(j0 + STAT_BLOCK, cnt)
                    fa = 0
                    fs = 0
                    nlo = 0
                    nsat = 0
                    wlo = 0
                    wsat = 0
                    for j in range(j0, j1):
                        a = Zr[j]
                        s = Sr[j]
                        fa += a
                        fs += s
                        # saturated: slope < thr, low below the midpoint, high the
                        # rest (the slope is largest at the midpoint: never < thr there)
                        if floating is double:
                            wsat += s < thr
                            wlo += (s < thr) & (a < mid)
                        else:
                            nsat += s < thr
                            nlo += (s < thr) & (a < mid)
                    suma += fa
                    sums += fs
                    low += nlo + wlo
                    high += (nsat - nlo) + (wsat - wlo)
                    j0 = j1
        i0 = i1
    # |a| <= 1 for sigmoid, tanh and softsign, so ||A||_F <= sqrt(m n)
    acc[B_NRMA * L + l] = sqrt(ssqa) if unbounded else sqrt(<double> (m * n))
    if stats:
        store_act_acc(acc, L, l, m * n, suma, sums, low, high)
    return bad


cdef inline void pool_act(const double* acc, double* ea, int L, int l) noexcept nogil:
    """Add a block's activation accumulators of layer l to pooled ones.

    (count, mean, M2) are combined with Chan et al.'s parallel formula; slope sums
    and saturation counts simply add.
    """
    cdef double cnt = acc[B_CNT * L + l]
    cdef double tot = ea[E_CNT * L + l] + cnt
    cdef double dmean = acc[B_SUMA * L + l] / cnt - ea[E_MEAN * L + l]
    ea[E_M2 * L + l] += acc[B_M2 * L + l] + dmean * dmean * ea[E_CNT * L + l] * cnt / tot
    ea[E_MEAN * L + l] += dmean * cnt / tot
    ea[E_CNT * L + l] = tot
    ea[E_SUMS * L + l] += acc[B_SUMS * L + l]
    ea[E_LOW * L + l] += acc[B_LOW * L + l]
    ea[E_HIGH * L + l] += acc[B_HIGH * L + l]


cdef inline Py_ssize_t group_end(Py_ssize_t i0, Py_ssize_t m, Py_ssize_t n) noexcept nogil:
    """End of the group of rows starting at i0 that holds about 2048 values (>= 1 row)."""
    cdef Py_ssize_t i1 = i0 + (2048 // n if n < 2048 else 1)
    return i1 if i1 < m else m


cdef inline void store_act_acc(double* acc, int L, int l, Py_ssize_t cnt, double suma,
                               double sums, Py_ssize_t low, Py_ssize_t high) noexcept nogil:
    """The activation accumulators of one block (M2 follows in the delta loop)."""
    acc[B_SUMA * L + l] = suma
    acc[B_SUMS * L + l] = sums
    acc[B_LOW * L + l] = <double> low
    acc[B_HIGH * L + l] = <double> high
    acc[B_CNT * L + l] = <double> cnt
    acc[B_M2 * L + l] = 0


cdef int output_forward(Net* c, floating* A, const floating* b, Py_ssize_t m,
                        bint stats) noexcept nogil:
    """ZL (m, nL) holds W a_prev; add b (kept in ZL) and write a = f(z) into A."""
    cdef int l = c.L - 1, L = c.L
    cdef Py_ssize_t n = c.sizes[l + 1], i, j, low = 0, high = 0
    cdef int code = c.acts[l]
    cdef floating* Z = <floating*> c.ZL
    cdef floating* E = <floating*> c.S + c.act_off[l]
    cdef floating z, a, s, zmax, e, r
    cdef floating one = 1  # (see sigmoid_rows)
    cdef int bad = 0
    cdef double top = dtype_max(<floating> 0)
    cdef double suma = 0, sums = 0, ssqa = 0, tot
    cdef double* acc = c.bacc
    cdef floating thr = <floating> 0.0025
    cdef floating mid = <floating> 0.5
    if code == SOFTMAX:
        for i in range(m):
            zmax = -INFINITY
            for j in range(n):
                z = Z[i * n + j] + b[j]
                Z[i * n + j] = z
                bad |= not (fabs(z) <= top)
                if z > zmax:
                    zmax = z
            tot = 0
            for j in range(n):
                a = <floating> exp(Z[i * n + j] - zmax)
                A[i * n + j] = a
                tot += a
            for j in range(n):
                a = <floating> (A[i * n + j] / tot)
                A[i * n + j] = a
                suma += a
    elif code == SIGMOID:
        # e = exp(-|z|) once per unit, kept in the layer's slope buffer: a, sigma(-z),
        # the slope and softplus(z) of the cost all follow from it
        # (exp and the quotients over the m rows as one flat array, as sigmoid_rows)
        for i in range(m):
            for j in range(n):
                z = Z[i * n + j] + b[j]
                Z[i * n + j] = z
                bad |= not (fabs(z) <= top)
                E[i * n + j] = -fabs(z)
        if floating is double:
            fastbp_vexp(E, m * n)
        else:
            fastbp_vexpf(E, m * n)
        for j in range(m * n):
            e = E[j]
            r = one / (one + e)  # (one division: see sigmoid_rows)
            a = r if Z[j] >= 0 else e * r
            A[j] = a
            if stats:
                s = (e * r) * r
                suma += a
                sums += s
                low += (s < thr) & (a < mid)
                high += (s < thr) & (a > mid)
    else:
        for i in range(m):
            for j in range(n):
                z = Z[i * n + j] + b[j]
                Z[i * n + j] = z
                bad |= not (fabs(z) <= top)
                a = f_act(code, z, <floating> 0)
                A[i * n + j] = a
                if code == LINEAR:
                    ssqa += a * <double> a
                if stats:
                    suma += a
                    sums += 1
    acc[B_NRMA * L + l] = sqrt(ssqa) if code == LINEAR else sqrt(<double> (m * n))
    if stats:
        store_act_acc(acc, L, l, m * n, suma, sums, low, high)
    return bad


cdef inline void finish_delta_ssq(Net* c, int l, const floating* D, Py_ssize_t cnt,
                                  double ssq) noexcept nogil:
    """Store the sum of squares of a delta block, carried as ssq * 4^e.

    The plain sum is exact enough when it lies in [2^-900, 2^900]; otherwise
    (deltas of a very deep net, or huge ones) the in-cache block is read again,
    scaled by a power of two near its max.
    """
    cdef double sc, v, s = 0, mx = 0, e = 0
    cdef Py_ssize_t i
    cdef int L = c.L
    if not (ssq >= SAFE_LO and ssq <= SAFE_HI):  # also 0: all zero, or underflow
        for i in range(cnt):
            v = fabs(D[i])
            mx = v if v > mx else mx
        e = pow2_exponent(mx)
        sc = pow2(-<int> e)
        for i in range(cnt):
            v = D[i] * sc
            s += v * v
        ssq = s
    c.bacc[B_SSQD * L + l] = ssq
    c.bacc[B_EXPD * L + l] = e


cdef double output_delta(Net* c, const floating* Y, Py_ssize_t m, bint stats,
                         int* bad) noexcept nogil:
    """delta_L (m, nL) from a, z and y; column sums, ||Delta||; returns the summed cost."""
    cdef int l = c.L - 1, L = c.L
    cdef Py_ssize_t n = c.sizes[l + 1], i, j
    cdef int code = c.acts[l], cost = c.cost
    cdef const floating* A = <floating*> c.A + c.act_off[l]
    cdef const floating* Z = <floating*> c.ZL
    cdef const floating* E = <floating*> c.S + c.act_off[l]
    cdef floating* D = <floating*> c.D + c.act_off[l]
    cdef double* col = c.colsum + c.unit_off[l]
    cdef floating a, y, d, e, z
    cdef floating one = 1  # (see sigmoid_rows)
    cdef int nonfinite = 0
    cdef double top = dtype_max(<floating> 0)
    cdef double total = 0, ssq = 0, zmax, lse = 0, mean = 0, m2 = 0
    if stats:
        mean = c.bacc[B_SUMA * L + l] / (m * n)
    for i in range(m):
        if cost == LOG_LIKELIHOOD:
            zmax = -INFINITY
            for j in range(n):
                if Z[i * n + j] > zmax:
                    zmax = Z[i * n + j]
            lse = 0
            for j in range(n):
                lse += exp(Z[i * n + j] - zmax)
            lse = zmax + log(lse)
        for j in range(n):
            a = A[i * n + j]
            y = Y[i * n + j]
            if cost == CROSS_ENTROPY:
                # sigmoid output: E holds e = exp(-|z|) (output_forward)
                e = E[i * n + j]
                z = Z[i * n + j]
                total += (z if z > 0 else 0) + log1p(e) - y * <double> z
                # a - y = (1 - y) sigma(z) - y sigma(-z): exact for 0/1 targets even
                # when a rounds to 1 (saturated float32 units)
                d = (one - y) * a - y * ((e if z >= 0 else one) / (one + e))
            elif cost == LOG_LIKELIHOOD:
                total += y * (lse - Z[i * n + j])
                d = a - y
            else:
                total += 0.5 * (<double> a - y) * (<double> a - y)
                d = a - y
                if code == SIGMOID:
                    e = E[i * n + j]
                    d = d * (e / ((one + e) * (one + e)))
            D[i * n + j] = d
            nonfinite |= not (fabs(d) <= top)
            ssq += d * <double> d
            col[j] += d
            if stats:
                m2 += (a - mean) * (a - mean)
    if stats:
        c.bacc[B_M2 * L + l] = m2
    finish_delta_ssq(c, l, D, m * n, ssq)
    bad[0] = nonfinite
    return total


cdef int hidden_delta(Net* c, int l, floating* D, Py_ssize_t m, bint stats) noexcept nogil:
    """D (m, n) holds delta_{l+1} @ W_{l+1}; multiply by the slopes in place.

    Also: column sums (for g_b), the sum of squares of the deltas (gain, bounds)
    and, with ``stats``, the second pass of the activation variance.
    """
    cdef Py_ssize_t n = c.sizes[l + 1], i, j, i0, i1, cnt
    cdef int L = c.L
    cdef const floating* S = <floating*> c.S + c.act_off[l]
    cdef const floating* A = <floating*> c.A + c.act_off[l]
    cdef double* col = c.colsum + c.unit_off[l]
    cdef floating* Dr
    cdef const floating* Sr
    cdef const floating* Ar
    cdef floating d
    cdef int bad = 0
    cdef double top = dtype_max(<floating> 0)
    cdef double ssq = 0, mean = 0, m2 = 0
    cdef floating f_mean = 0
    cdef Py_ssize_t j0, j1
    cdef int code = c.acts[l]
    cdef bint bounded = code == SIGMOID or code == TANH or code == SOFTSIGN
    if stats:
        mean = c.bacc[B_SUMA * L + l] / (m * n)
        f_mean = <floating> mean
    i0 = 0
    while i0 < m:
        # rows in groups of about 2048 values, each loop flat over the group (in L1)
        i1 = group_end(i0, m, n)
        cnt = (i1 - i0) * n
        Dr = D + i0 * n
        Sr = S + i0 * n
        for j in range(cnt):
            d = Dr[j] * Sr[j]
            Dr[j] = d
            bad |= not (fabs(d) <= top)
            ssq += d * <double> d
        for i in range(i1 - i0):
            for j in range(n):
                col[j] += Dr[i * n + j]
        if stats:
            Ar = A + i0 * n
            if bounded:  # |a - mean| <= 2: in the dtype over blocks, as hidden_forward
                j0 = 0
                while j0 < cnt:
                    j1 = min(j0 + STAT_BLOCK, cnt)
                    m2 += sq_dev(Ar + j0, j1 - j0, f_mean)
                    j0 = j1
            else:
                m2 += sq_dev(Ar, cnt, mean)
        i0 = i1
    if stats:
        c.bacc[B_M2 * L + l] = m2
    finish_delta_ssq(c, l, D, m * n, ssq)
    return bad


# --------------------------------------------------------------------------
# One pass over a block of examples: forward, output delta, backward, dW.
# --------------------------------------------------------------------------
cdef inline const floating* layer_input(Net* c, int l, const floating* X) noexcept nogil:
    """The input of layer l: X (the m rows of this pass) for the first, else the
    previous layer's activations."""
    return X if l == 0 else <const floating*> c.A + c.act_off[l - 1]


cdef inline void weight_gradient(Net* c, int l, const floating* X, Py_ssize_t m,
                                 floating alpha, floating beta) noexcept nogil:
    """g_W (n_out, n_in) of layer l = alpha delta_l^T a_{l-1} + beta g_W, through BLAS."""
    cdef int n_in = <int> c.sizes[l], n_out = <int> c.sizes[l + 1]
    gemm(CH_N, CH_T, n_in, n_out, <int> m, alpha, layer_input(c, l, X), n_in,
         <floating*> c.D + c.act_off[l], n_out, beta, <floating*> c.G + c.w_off[l], n_in)


cdef int fused_pass(Net* c, const floating* P, const floating* X, const floating* Y,
                    Py_ssize_t m, floating g_alpha, floating g_beta, bint stats,
                    bint defer_w, double* cost, int* fault_layer) noexcept nogil:
    """Forward and backward over m rows; gradient into G with alpha/beta of gemm, the
    weights' part left to the update when defer_w (it forms them in registers).

    Returns -1 if all values are finite, else the PHASE_* code (fault_layer set).
    Column sums of the deltas are *added* to c.colsum (the caller zeroes it).
    """
    cdef int L = c.L, l, bad = 0
    cdef int n_in, n_out
    cdef const floating* Ain
    cdef floating* Z
    cdef floating* Abuf = <floating*> c.A
    cdef floating* Dbuf = <floating*> c.D
    for l in range(L):
        n_in = <int> c.sizes[l]
        n_out = <int> c.sizes[l + 1]
        Ain = layer_input(c, l, X)
        if l < L - 1:
            Z = Abuf + c.act_off[l]
        else:
            Z = <floating*> c.ZL
        gemm(CH_T, CH_N, n_out, <int> m, n_in, 1, P + c.w_off[l], n_in, Ain, n_in, 0, Z, n_out)
        if l < L - 1:
            bad = hidden_forward(c, l, Z, P + c.b_off[l], m, stats)
        else:
            bad = output_forward(c, Abuf + c.act_off[l], P + c.b_off[l], m, stats)
        if bad:
            fault_layer[0] = l
            return PHASE_FORWARD
    cost[0] = output_delta(c, Y, m, stats, &bad)
    if bad:
        fault_layer[0] = L - 1
        return PHASE_BACKWARD
    for l in range(L - 1, -1, -1):
        n_in = <int> c.sizes[l]
        n_out = <int> c.sizes[l + 1]
        if l > 0:
            # delta_{l-1} (m, n_in) = delta_l (m, n_out) @ W_l, then times slopes
            gemm(CH_N, CH_N, n_in, <int> m, n_out, 1, P + c.w_off[l], n_in,
                 Dbuf + c.act_off[l], n_out, 0, Dbuf + c.act_off[l - 1], n_in)
            if hidden_delta(c, l - 1, Dbuf + c.act_off[l - 1], m, stats):
                fault_layer[0] = l - 1
                return PHASE_BACKWARD
        if not defer_w:
            weight_gradient(c, l, X, m, g_alpha, g_beta)
    return -1


cdef void reset_batch_acc(Net* c) noexcept nogil:
    memset(c.bacc, 0, N_B * c.L * sizeof(double))
    cdef Py_ssize_t n_units = c.unit_off[c.L - 1] + c.sizes[c.L]
    memset(c.colsum, 0, n_units * sizeof(double))


# --------------------------------------------------------------------------
# Statistics blocks.
# --------------------------------------------------------------------------
cdef void act_stats_into(Net* c, int l, double cnt, double mean, double m2, double sums,
                         double low, double high, double* out) noexcept nogil:
    """act_mean, act_std, sat_low, sat_high, slope_mean of layer l into a stats block."""
    cdef int L = c.L, code = c.acts[l]
    out[S_ACT_MEAN * L + l] = mean
    out[S_ACT_STD * L + l] = sqrt(m2 / cnt)
    if code == LINEAR or code == SOFTMAX:
        out[S_SAT_LOW * L + l] = NAN
        out[S_SAT_HIGH * L + l] = NAN
    else:
        out[S_SAT_LOW * L + l] = low / cnt
        out[S_SAT_HIGH * L + l] = high / cnt
    out[S_SLOPE_MEAN * L + l] = NAN if code == SOFTMAX else sums / cnt


cdef void gains_into(Net* c, double* out) noexcept nogil:
    """gain_l = ||Delta_l|| / ||Delta_{l+1}|| from the batch accumulators."""
    cdef int L = c.L, l
    cdef double* acc = c.bacc
    for l in range(L):
        if l == L - 1:
            out[S_GAIN * L + l] = NAN
        else:
            out[S_GAIN * L + l] = (ssq_norm(acc[B_SSQD * L + l], acc[B_EXPD * L + l])
                                   / ssq_norm(acc[B_SSQD * L + l + 1], acc[B_EXPD * L + l + 1]))


# --------------------------------------------------------------------------
# The update of one layer, with its norms, in one pass over W.
# --------------------------------------------------------------------------
cdef inline floating pow2_in(double s, floating like) noexcept nogil:
    """The power-of-two scale s of a dtype sum of squares.

    float32: s * 2^56, so that scaled values are <= 2^56 and their squares <= 2^112
    (a block of 128 sums to < 2^119 < FLT_MAX): squares of values far below the bound
    then stay normal numbers (subnormal arithmetic is slow), the exponent clamped to
    +-120 so the scale itself is finite.  The caller rescales by (s / scale)^2.
    """
    cdef int e = 0
    if floating is double:
        return s
    e = exponent_of(s) - 1 + 56
    if e > 120:
        e = 120
    elif e < -120:
        e = -120
    return <floating> pow2(e)


cdef inline void update_loop(int kind, bint nesterov, bint stats, bint dist, floating* W,
                             floating* VW, floating* FW, const floating* GW,
                             const floating* W0, Py_ssize_t n, floating f_c,
                             floating f_eta, floating f_ln, floating f_mu, floating f_mun,
                             double sg, double sw, double sd, double sz,
                             double* q) noexcept nogil:
    """One update loop over n parameters, specialised (after inlining) by its flags.

    Sums of squares, pre-scaled by powers of two chosen from bounds, are added to
    q[0, 1, 2, 3, 4, 5] = (g, W_new, W_new - W_start (with ``dist``), W_new - W_old, v,
    phi); ||W_old|| is the previous update's ||W_new||, kept in E_NRMW.  The squares
    are summed in the dtype over blocks of UPDATE_BLOCK values (a 16-lane float32
    vector lane adds 32 of them: partial sums of positive terms within ~2e-6
    relative) and the blocks in double, so the float32 loop runs at full float32
    vector width (pow2_in keeps the float32 squares out of the slow subnormal range).
    512 rather than 128: each block ends in horizontal sums of its accumulators,
    which at 128 cost about half as much as the loop itself (A float32: 1.7% fewer
    instructions with statistics).
    """
    cdef Py_ssize_t i, i0, i1
    cdef floating g, w, w_new, v, ph, t
    cdef floating pg, pw, pd, pv, pf, pz
    cdef floating zero = 0
    cdef floating fsg = pow2_in(sg, zero), fsw = pow2_in(sw, zero), fsd = pow2_in(sd, zero)
    cdef floating fsz = pow2_in(sz, zero)
    cdef double qg = 0, qw = 0, qd = 0, qv = 0, qf = 0, qz = 0
    i0 = 0
    while i0 < n:
        i1 = i0 + UPDATE_BLOCK if i0 + UPDATE_BLOCK < n else n
        pg = 0
        pw = 0
        pd = 0
        pv = 0
        pf = 0
        pz = 0
        for i in range(i0, i1):
            g = GW[i]
            w = W[i]
            if kind == MOMENTUM_NONE:
                w_new = f_c * w - f_eta * g
            else:
                if nesterov:
                    v = f_mu * VW[i] - f_eta * (g + f_ln * FW[i])
                else:
                    v = f_mu * VW[i] - f_eta * (g + f_ln * w)
                VW[i] = v
                w_new = w + v
                t = v * fsd
                pv += t * t
                if nesterov:
                    ph = w_new + f_mun * v
                    FW[i] = ph
                    t = ph * fsw
                    pf += t * t
            W[i] = w_new
            t = w_new * fsw
            pw += t * t
            if stats:
                t = g * fsg
                pg += t * t
                t = (w_new - w) * fsd
                pd += t * t
            if dist:
                t = (w_new - W0[i]) * fsz
                pz += t * t
        qg += pg
        qw += pw
        qd += pd
        qv += pv
        qf += pf
        qz += pz
        i0 = i1
    # the sums are of values scaled by the dtype scales: rescale to the double ones
    q[0] += qg * (sg / fsg) * (sg / fsg)
    q[1] += qw * (sw / fsw) * (sw / fsw)
    q[2] += qz * (sz / fsz) * (sz / fsz)
    q[3] += qd * (sd / fsd) * (sd / fsd)
    q[4] += qv * (sd / fsd) * (sd / fsd)
    q[5] += qf * (sw / fsw) * (sw / fsw)


cdef inline void update_weights(int kind, bint nesterov, bint stats, bint dist, floating* W,
                               floating* VW, floating* FW, const floating* GW,
                               const floating* W0, Py_ssize_t n, floating f_c, floating f_eta,
                               floating f_ln, floating f_mu, floating f_mun, double sg,
                               double sw, double sd, double sz, double* q) noexcept nogil:
    """update_loop over the weights with every flag a constant: one specialised (and
    vectorised) loop per combination, chosen once per layer."""
    if kind == MOMENTUM_NONE:
        if dist:
            update_loop(MOMENTUM_NONE, False, True, True, W, VW, FW, GW, W0, n, f_c, f_eta,
                        f_ln, f_mu, f_mun, sg, sw, sd, sz, q)
        elif stats:
            update_loop(MOMENTUM_NONE, False, True, False, W, VW, FW, GW, W0, n, f_c, f_eta,
                        f_ln, f_mu, f_mun, sg, sw, sd, sz, q)
        else:
            update_loop(MOMENTUM_NONE, False, False, False, W, VW, FW, GW, W0, n, f_c, f_eta,
                        f_ln, f_mu, f_mun, sg, sw, sd, sz, q)
    elif nesterov:
        if dist:
            update_loop(MOMENTUM_CONSTANT, True, True, True, W, VW, FW, GW, W0, n, f_c, f_eta,
                        f_ln, f_mu, f_mun, sg, sw, sd, sz, q)
        elif stats:
            update_loop(MOMENTUM_CONSTANT, True, True, False, W, VW, FW, GW, W0, n, f_c, f_eta,
                        f_ln, f_mu, f_mun, sg, sw, sd, sz, q)
        else:
            update_loop(MOMENTUM_CONSTANT, True, False, False, W, VW, FW, GW, W0, n, f_c,
                        f_eta, f_ln, f_mu, f_mun, sg, sw, sd, sz, q)
    else:
        if dist:
            update_loop(MOMENTUM_CONSTANT, False, True, True, W, VW, FW, GW, W0, n, f_c, f_eta,
                        f_ln, f_mu, f_mun, sg, sw, sd, sz, q)
        elif stats:
            update_loop(MOMENTUM_CONSTANT, False, True, False, W, VW, FW, GW, W0, n, f_c,
                        f_eta, f_ln, f_mu, f_mun, sg, sw, sd, sz, q)
        else:
            update_loop(MOMENTUM_CONSTANT, False, False, False, W, VW, FW, GW, W0, n, f_c,
                        f_eta, f_ln, f_mu, f_mun, sg, sw, sd, sz, q)


cdef inline bint unscaled_safe(double s) noexcept nogil:
    """Whether the squares of values up to 1/s need no pre-scaling in double: none
    overflows, and every value down to 2^-311 of 1/s squares to a normal number (the
    pre-scaled sums of update_loop: down to 2^-511 of it)."""
    return UNSCALED_LO <= s <= UNSCALED_HI


cdef inline void grad_update(Net* c, int l, floating* W, floating* VW, floating* FW,
                             const floating* W0, floating* GW, Py_ssize_t m, int mode,
                             bint stats, double eta, double lmbda_n, double mu, double mu_next,
                             double sg, double sw, double sd, double sz,
                             double* q) noexcept nogil:
    """Layer l's weight gradient (1/m) delta_l^T a_{l-1} formed and applied in one pass
    (vfused.c; stored in GW unless GW is NULL), update_loop's sums of squares added to
    q in its slots.  float64 sums unscaled squares (the caller checks the scales)."""
    cdef fastbp_gu_par p
    cdef double r[6]
    cdef floating zero = 0
    cdef const floating* Ain = layer_input(c, l, <const floating*> c.Xb)
    cdef const floating* D = <floating*> c.D + c.act_off[l]
    cdef double fsg = 1, fsw = 1, fsd = 1, fsz = 1
    if floating is float:
        fsg = pow2_in(sg, zero)
        fsw = pow2_in(sw, zero)
        fsd = pow2_in(sd, zero)
        fsz = pow2_in(sz, zero)
    p.alpha = 1.0 / <double> m
    p.c = <double> (<floating> (1 - eta * lmbda_n))
    p.eta = eta
    p.ln = lmbda_n
    p.mu = mu
    p.mu_next = mu_next
    p.fsg = fsg
    p.fsw = fsw
    p.fsd = fsd
    p.fsz = fsz
    p.pf.n = 0
    if l == 0:
        p.pf = c.pf
    memset(r, 0, 6 * sizeof(double))
    if floating is double:
        fastbp_grad_update(D, Ain, m, c.sizes[l + 1], c.sizes[l], W, VW, FW, W0, GW, mode,
                           stats, &p, r)
    else:
        fastbp_grad_updatef(D, Ain, m, c.sizes[l + 1], c.sizes[l], W, VW, FW, W0, GW, mode,
                            stats, &p, r)
    q[0] += r[0] * (sg / fsg) * (sg / fsg)
    q[1] += r[1] * (sw / fsw) * (sw / fsw)
    q[2] += r[2] * (sz / fsz) * (sz / fsz)
    q[3] += r[3] * (sd / fsd) * (sd / fsd)
    q[4] += r[4] * (sd / fsd) * (sd / fsd)
    q[5] += r[5] * (sw / fsw) * (sw / fsw)


cdef void update_layer(Net* c, int l, floating* P, floating* V, Py_ssize_t m,
                       int kind, bint nesterov, double eta, double lmbda_n, double mu,
                       double mu_next, int record, bint fused, bint store_g) noexcept nogil:
    """Apply SPEC section 3's update to layer l, computing its norms in the same pass;
    with ``fused`` (fused_pass deferred the weight gradient) forming the gradient too,
    and storing it in G if ``store_g``."""
    cdef int L = c.L
    cdef Py_ssize_t n_w = c.sizes[l + 1] * c.sizes[l], n_b = c.sizes[l + 1], i
    cdef floating* W = P + c.w_off[l]
    cdef floating* B = P + c.b_off[l]
    cdef floating* VW = V + c.w_off[l]
    cdef floating* VB = V + c.b_off[l]
    cdef floating* FW = <floating*> c.PHI + c.w_off[l]
    cdef floating* FB = <floating*> c.PHI + c.b_off[l]
    cdef const floating* GW = <floating*> c.G + c.w_off[l]
    cdef const floating* GB = <floating*> c.G + c.b_off[l]
    cdef double* acc_e = c.Gacc + c.w_off[l]
    cdef floating f_eta = <floating> eta, f_ln = <floating> lmbda_n
    cdef floating f_c = <floating> (1 - eta * lmbda_n)
    cdef floating f_mu = <floating> mu, f_mun = <floating> mu_next
    cdef double sg, sw, sd, sz = 1, dm = <double> m
    cdef const floating* W0 = NULL
    cdef double qw[6]
    cdef double qb[6]
    cdef bint stats = record != RECORD_NONE
    memset(qw, 0, 6 * sizeof(double))
    memset(qb, 0, 6 * sizeof(double))
    # power-of-two scales from bounds on |g|, |W| and |W_new - W_old| known
    # before the loop: no overflow, and no underflow of tiny updates
    sg = pow2(-<int> pow2_exponent(c.bacc[B_GB * L + l]))
    sw = pow2(-<int> pow2_exponent(c.bacc[B_PB * L + l]))
    sd = pow2(-<int> pow2_exponent(c.bacc[B_VB * L + l]))
    if c.w0 != NULL:  # distance: ||W_new - W_start|| <= ||W_new|| + ||W_start||
        sz = pow2(-<int> pow2_exponent(c.bacc[B_PB * L + l] + c.nrm0[l]))
        W0 = <const floating*> c.w0 + c.w_off[l]
    if fused and floating is double and not (unscaled_safe(sg) and unscaled_safe(sw)
                                             and unscaled_safe(sd) and unscaled_safe(sz)):
        # extreme scales: the product now, and the scaled update loop
        weight_gradient(c, l, <const floating*> c.Xb, m, <floating> (1.0 / dm), 0)
        fused = False
    if fused:
        grad_update(c, l, W, VW, FW, W0, <floating*> GW if store_g else NULL, m,
                    GU_PLAIN if kind == MOMENTUM_NONE else (
                        GU_NESTEROV if nesterov else GU_MOMENTUM),
                    stats, eta, lmbda_n, mu, mu_next, sg, sw, sd, sz, qw)
    elif kind == MOMENTUM_NONE:
        update_weights(MOMENTUM_NONE, False, stats, W0 != NULL, W, VW, FW, GW, W0, n_w, f_c,
                       f_eta, f_ln, f_mu, f_mun, sg, sw, sd, sz, qw)
    elif nesterov:
        update_weights(MOMENTUM_CONSTANT, True, stats, W0 != NULL, W, VW, FW, GW, W0, n_w, f_c,
                       f_eta, f_ln, f_mu, f_mun, sg, sw, sd, sz, qw)
    else:
        update_weights(MOMENTUM_CONSTANT, False, stats, W0 != NULL, W, VW, FW, GW, W0, n_w, f_c,
                       f_eta, f_ln, f_mu, f_mun, sg, sw, sd, sz, qw)
    if kind == MOMENTUM_NONE:
        update_loop(MOMENTUM_NONE, False, False, False, B, VB, FB, GB, W0, n_b, <floating> 1,
                    f_eta, f_ln, f_mu, f_mun, sg, sw, sd, sz, qb)
    elif nesterov:
        update_loop(MOMENTUM_CONSTANT, True, False, False, B, VB, FB, GB, W0, n_b, f_c, f_eta,
                    <floating> 0, f_mu, f_mun, sg, sw, sd, sz, qb)
    else:
        update_loop(MOMENTUM_CONSTANT, False, False, False, B, VB, FB, GB, W0, n_b, f_c, f_eta,
                    <floating> 0, f_mu, f_mun, sg, sw, sd, sz, qb)
    if W0 != NULL:
        c.bacc[B_DIST * L + l] = sqrt(qw[2]) / sz
    if record == RECORD_EPOCH:
        for i in range(n_w):
            acc_e[i] += dm * GW[i]
    if stats:
        c.bacc[B_GNORM * L + l] = sqrt(qw[0]) / sg
        c.bacc[B_WNORM * L + l] = sqrt(qw[1]) / sw
        c.bacc[B_WOLD * L + l] = c.eacc[E_NRMW * L + l]
        c.bacc[B_DNORM * L + l] = sqrt(qw[3]) / sd
    c.eacc[E_NRMP * L + l] = sqrt(qw[1] + qb[1]) / sw
    c.eacc[E_NRMW * L + l] = sqrt(qw[1]) / sw
    c.eacc[E_NRMV * L + l] = sqrt(qw[4] + qb[4]) / sd
    c.eacc[E_NRMF * L + l] = sqrt(qw[5] + qb[5]) / sw


cdef void norm_layers(Net* c, const floating* P, int field) noexcept nogil:
    """eacc[field, l] = ||params of layer l|| (W and b), a bound on their max |.|."""
    cdef int L = c.L, l
    for l in range(L):
        c.eacc[field * L + l] = norm_dtype(P + c.w_off[l], c.sizes[l + 1] * (c.sizes[l] + 1))


cdef inline double momentum_at(int kind, double mu, double mu_max, double period,
                               int64_t t) noexcept nogil:
    cdef double k
    if kind == MOMENTUM_NONE:
        return 0.0
    if kind == MOMENTUM_CONSTANT:
        return mu
    k = <double> (t // (<int64_t> period))
    mu = 1.0 - 1.0 / (2.0 * (k + 1.0))
    return mu if mu < mu_max else mu_max


# --------------------------------------------------------------------------
# Optional statistic groups (fastbp/_diagnostics.py has the definitions).
# --------------------------------------------------------------------------
cdef inline void hist_decades(const floating* x, const floating* b, Py_ssize_t rows,
                              Py_ssize_t n, int32_t* h, const fastbp_decades* t) noexcept nogil:
    """Add the signed-decade bins of x (rows x n, plus the row b if not NULL) to h."""
    if floating is double:
        fastbp_hist_decades(x, b, rows, n, t, h)
    else:
        fastbp_hist_decadesf(x, b, rows, n, t, h)


cdef inline void hist_linear(const floating* x, Py_ssize_t n, int32_t* h, double lo,
                             double hi) noexcept nogil:
    """Add the linear bins of x[:n] over [lo, hi] to h."""
    if floating is double:
        fastbp_hist_linear(x, n, lo, hi, N_LINEAR / (hi - lo), N_LINEAR, h)
    else:
        fastbp_hist_linearf(x, n, lo, hi, N_LINEAR / (hi - lo), N_LINEAR, h)


cdef inline double gsnr_sum(const floating* GW, const floating* GM, Py_ssize_t n,
                            floating ss, floating fm, Py_ssize_t* zero) noexcept nogil:
    """sum of g^2 / var over the n weights with var > 0, zero += the others (vstats.c);
    the (m - 1) factors cancel: var there is (m - 1) times the variance."""
    if floating is double:
        return fastbp_gsnr_sum(GW, GM, n, ss, fm, zero) * (fm - 1)
    return fastbp_gsnr_sumf(GW, GM, n, ss, fm, zero) * (fm - 1)


cdef inline double moments_gsnr(const floating* GW, const floating* A2, const floating* D2,
                                Py_ssize_t m, Py_ssize_t n_in, Py_ssize_t n_out,
                                floating ss, Py_ssize_t* zero) noexcept nogil:
    """gsnr_sum with the second moments (D2)^T (A2) formed on the fly (vstats.c)."""
    if floating is double:
        return fastbp_moments_gsnr(GW, A2, D2, m, n_in, n_out, ss, zero) * (m - 1)
    return fastbp_moments_gsnrf(GW, A2, D2, m, n_in, n_out, ss, zero) * (m - 1)


cdef void diag_layer(Net* c, DiagC* dg, int l, const floating* P, const floating* Xb,
                     Py_ssize_t m, double* xrow, int32_t* hrow) noexcept nogil:
    """Every selected group of layer l for the current (accepted) mini-batch.

    Runs after the update: the workspace still holds this mini-batch's deltas,
    activations and mean gradient G; P holds the new parameters.
    """
    cdef int L = c.L, groups = dg.groups
    cdef Py_ssize_t n_in = c.sizes[l], n_out = c.sizes[l + 1], n_w = n_in * n_out, i, j
    cdef Py_ssize_t cnt = 0, zero = 0
    cdef const floating* A = layer_input(c, l, Xb)
    cdef const floating* D = <floating*> c.D + c.act_off[l]
    cdef const floating* G = <floating*> c.G
    cdef const floating* GW
    cdef const floating* Aout
    cdef floating* D2
    cdef floating* A2
    cdef floating* GM
    cdef double* acc = c.bacc
    cdef double dm = <double> m, sd, sa, ss, v, q, qd, qa, sq = 0, pe_sum = 0, pe_max = 0
    cdef double g2, gn, sp, tr = NAN, var, gs = 0, beta = dg.beta
    cdef floating fv, fsa
    # deltas scaled by a power of two near 1 / ||Delta_l|| (carried as ssq * 4^e):
    # squares neither underflow in deep nets nor overflow
    sd = pow2(-<int> (pow2_exponent(sqrt(acc[B_SSQD * L + l])) + acc[B_EXPD * L + l]))
    if groups & (G_PER_EXAMPLE | G_NOISE):
        # ||g_n||^2 = ||delta_n||^2 (||a_n||^2 + 1): the per-example weight gradient
        # delta_n a_n^T has rank one, so no g_n is formed
        for i in range(m):
            qd = 0
            qa = 0
            for j in range(n_out):
                v = D[i * n_out + j] * sd
                qd += v * v
            if l == 0:  # ||x_n||^2, taken while the mini-batch was gathered
                qa = c.xssq[i]
            else:
                for j in range(n_in):
                    v = A[i * n_in + j]
                    qa += v * v
            q = qd * (qa + 1)
            sq += q
            v = sqrt(q)
            pe_sum += v
            if v > pe_max:
                pe_max = v
        gn = acc[B_GNORM * L + l] * sd
        sp = norm_dtype(G + c.b_off[l], n_out) * sd
        g2 = gn * gn + sp * sp
        if m > 1:
            tr = (sq - dm * g2) / (dm - 1)
        if groups & G_PER_EXAMPLE:
            xrow[X_PE_MEAN * L + l] = pe_sum / dm / sd
            xrow[X_PE_MAX * L + l] = pe_max / sd
            xrow[X_TRACE * L + l] = tr / (sd * sd)
        if groups & G_NOISE:
            if m > 1:
                dg.ema[l] = beta * dg.ema[l] + (1 - beta) * (tr / (sd * sd))
                dg.ema[L + l] = beta * dg.ema[L + l] + (1 - beta) * ((g2 - tr / dm) / (sd * sd))
            xrow[X_NOISE * L + l] = dg.ema[l] / dg.ema[L + l]
    if groups & G_MOMENTS:
        if m < 2:
            xrow[X_GSNR * L + l] = NAN
            xrow[X_GSNR_ZERO * L + l] = NAN
        else:
            D2 = <floating*> c.D2
            A2 = <floating*> c.A2
            GM = <floating*> c.GM
            sa = pow2(-<int> pow2_exponent(c.nrmX if l == 0 else acc[B_NRMA * L + l - 1]))
            # the squared scaled deltas, and their column sums (the biases' second
            # moments) in the same pass
            for j in range(n_out):
                c.c2[j] = 0
            for i in range(m):
                for j in range(n_out):
                    v = D[i * n_out + j] * sd
                    D2[i * n_out + j] = <floating> (v * v)
                    c.c2[j] += D2[i * n_out + j]
            if floating is float and FLT_POW2_LO <= sa <= FLT_POW2_HI:
                # in float, 16 lanes and no conversions: the same bits as the double
                # path below, since fsa is a power of two float holds exactly (a
                # scaled value below float's normal range squares to 0 either way)
                fsa = <floating> sa
                for i in range(m * n_in):
                    fv = A[i] * fsa
                    A2[i] = fv * fv
            else:
                for i in range(m * n_in):
                    v = A[i] * sa
                    A2[i] = <floating> (v * v)
            ss = sd * sa
            GW = G + c.w_off[l]
            # sum_n g_n^2 of every weight = (delta^2)^T (a^2), scaled by (sd sa)^2
            if m <= MOMENTS_FUSED_M:  # formed block by block, never stored (vstats.c)
                gs = moments_gsnr(GW, A2, D2, m, n_in, n_out, <floating> ss, &zero)
            else:  # a product that BLAS runs near peak
                gemm(CH_N, CH_T, <int> n_in, <int> n_out, <int> m, <floating> 1, A2, <int> n_in,
                     D2, <int> n_out, <floating> 0, GM, <int> n_in)
                gs = gsnr_sum(GW, GM, n_w, <floating> ss, <floating> dm, &zero)
            for j in range(n_out):
                v = G[c.b_off[l] + j] * sd
                var = c.c2[j] - dm * v * v
                zero += not (var > 0)
                gs += v * v * (dm - 1) / var if var > 0 else 0.0
            cnt = n_w + n_out - zero
            xrow[X_GSNR * L + l] = gs / cnt if cnt else NAN
            xrow[X_GSNR_ZERO * L + l] = <double> zero
    if groups & G_DISTANCE:  # computed in the update loop
        xrow[X_DISTANCE * L + l] = acc[B_DIST * L + l]
    if groups & G_HIST:
        hist_decades(D, <const floating*> NULL, 1, m * n_out, hrow + H_DELTA, &c.dec)
        if l == L - 1:
            hist_decades(<floating*> c.ZL, <const floating*> NULL, 1, m * n_out, hrow + H_Z,
                         &c.dec)
        else:
            for j in range(N_DECADE_BINS):
                hrow[H_Z + j] += c.hz_buf[l * N_DECADE_BINS + j]
        Aout = <floating*> c.A + c.act_off[l]
        hist_linear(Aout, m * n_out, hrow + H_A, dg.a_range[2 * l], dg.a_range[2 * l + 1])


cdef void diag_batch(Net* c, DiagC* dg, const floating* P, const floating* Xb, Py_ssize_t m,
                     Py_ssize_t k, Py_ssize_t k0, int record) noexcept nogil:
    """The selected groups of sampled mini-batch k, into its row or the epoch sums."""
    cdef int L = c.L, l
    cdef double* xrow = dg.rec + (k - k0) * N_X * L if record == RECORD_BATCH else c.xrow
    cdef int32_t* hist = dg.hist + (k // dg.every if record == RECORD_BATCH else 0) * L * N_HIST
    cdef double* d = c.dacc
    cdef double dm = <double> m, v
    for l in range(L):
        diag_layer(c, dg, l, P, Xb, m, xrow, hist + l * N_HIST)
    if record != RECORD_EPOCH:
        return
    for l in range(L):
        d[D_PE_SUM * L + l] += dm * xrow[X_PE_MEAN * L + l]
        d[D_PE_N * L + l] += dm
        v = xrow[X_PE_MAX * L + l]
        if v > d[D_PE_MAX * L + l]:
            d[D_PE_MAX * L + l] = v
        if m > 1:
            d[D_TR_SUM * L + l] += xrow[X_TRACE * L + l]
            d[D_TR_N * L + l] += 1
            v = xrow[X_GSNR * L + l]
            if v == v:
                d[D_GS_SUM * L + l] += v
                d[D_GS_N * L + l] += 1
            d[D_ZERO_SUM * L + l] += xrow[X_GSNR_ZERO * L + l]


cdef void diag_epoch_reset(Net* c) noexcept nogil:
    cdef int l
    memset(c.dacc, 0, N_D * c.L * sizeof(double))
    for l in range(c.L):
        c.dacc[D_PE_MAX * c.L + l] = -INFINITY


cdef void diag_epoch_end(Net* c, DiagC* dg, const floating* P) noexcept nogil:
    """The epoch values of the selected groups into dg.epoch_out."""
    cdef int L = c.L, l, g = dg.groups
    cdef double* d = c.dacc
    cdef double* out = dg.epoch_out
    cdef const floating* W0 = <const floating*> dg.start
    for l in range(L):
        if g & G_PER_EXAMPLE:
            out[X_PE_MEAN * L + l] = d[D_PE_SUM * L + l] / d[D_PE_N * L + l]
            out[X_PE_MAX * L + l] = d[D_PE_MAX * L + l] if d[D_PE_N * L + l] > 0 else NAN
            out[X_TRACE * L + l] = d[D_TR_SUM * L + l] / d[D_TR_N * L + l]
        if g & G_NOISE:
            out[X_NOISE * L + l] = dg.ema[l] / dg.ema[L + l]
        if g & G_MOMENTS:
            out[X_GSNR * L + l] = d[D_GS_SUM * L + l] / d[D_GS_N * L + l]
            out[X_GSNR_ZERO * L + l] = d[D_ZERO_SUM * L + l] / d[D_TR_N * L + l]
        if g & G_DISTANCE:
            out[X_DISTANCE * L + l] = norm_diff(P + c.w_off[l], W0 + c.w_off[l],
                                                c.sizes[l + 1] * c.sizes[l])


# --------------------------------------------------------------------------
# Layer 3 drivers (fused over dtype), called with the GIL released.
# --------------------------------------------------------------------------
cdef int train_batches(Net* c, floating* P, floating* V, const floating* X, const floating* Y,
                       const int64_t* order, Py_ssize_t n, Py_ssize_t bs, Py_ssize_t k0,
                       Py_ssize_t k1, int kind, bint nesterov, double eta,
                       double lmbda_n, double mu_c, double mu_max, double period, int record,
                       bint skip, int64_t* t_io, double* rec, double* bcost, int* n_skipped,
                       int* fault_layer, int* fault_phase, DiagC* dg) noexcept nogil:
    """Mini-batches k0..k1-1 of an epoch; returns the faulty batch index or -1."""
    cdef int L = c.L, l, phase, fl = 0
    cdef Py_ssize_t n0 = c.sizes[0], nL = c.sizes[L], k, i, j, m, r, start, stop
    cdef floating* Xb = <floating*> c.Xb
    cdef floating* Yb = <floating*> c.Yb
    cdef floating* G = <floating*> c.G
    cdef const floating* Pf
    cdef double cost, mu, mu_next, lim, gb, vb, pb, nrma, nd, sumb, dm, nrmX
    cdef double* row
    cdef double* acc = c.bacc
    cdef double* ea = c.eacc
    cdef double cnt
    cdef bint stats = record != RECORD_NONE
    cdef bint sampled, fuse, store
    cdef Py_ssize_t fuse_max
    cdef int64_t t = t_io[0]
    lim = (DBL_MAX if floating is double else <double> FLT_MAX) * 0.25
    if floating is double:
        fuse_max = fused_m_max_d
    else:
        fuse_max = fused_m_max_f
    Pf = <floating*> c.PHI if nesterov else P
    for k in range(k0, k1):
        start = k * bs
        stop = start + bs
        if stop > n:
            stop = n
        m = stop - start
        dm = <double> m
        # gather the mini-batch by index; ||X_b|| feeds the overflow bound.  The rows
        # are in L2 if the previous mini-batch took the fused path, which prefetches
        # them spread over its first layer's update (vfused.c; a burst of prefetches
        # here queued on the L1 miss buffers and was no faster)
        nrmX = 0
        for r in range(m):
            i = order[start + r]
            # each row's ||x||^2 is kept: the per-example norms of layer 1 use it
            c.xssq[r] = copy_ssq(Xb + r * n0, X + i * n0, n0, 0)
            nrmX += c.xssq[r]
            for j in range(nL):  # a few values: no call of memcpy
                Yb[r * nL + j] = Y[i * nL + j]
        nrmX = sqrt(nrmX)
        c.nrmX = nrmX
        c.pf.n = 0
        if prefetch_rows and stop < n:
            # the next mini-batch's rows, fetched from memory during this one's update
            c.pf.base = <const char*> X
            c.pf.idx = order + stop
            c.pf.n = min(bs, n - stop)
            c.pf.bytes = n0 * sizeof(floating)
            # and their targets' rows, a line or two each
            for r in range(c.pf.n):
                i = order[stop + r]
                prefetch_l2(Y + i * nL)
                prefetch_l2(Y + i * nL + nL - 1)
        reset_batch_acc(c)
        sampled = dg != NULL and k % dg.every == 0
        if sampled and (dg.groups & G_HIST):
            memset(c.hz_buf, 0, L * N_DECADE_BINS * sizeof(int32_t))
            c.hz = c.hz_buf
        mu = momentum_at(kind, mu_c, mu_max, period, t)
        mu_next = momentum_at(kind, mu_c, mu_max, period, t + 1)
        # small mini-batches form each weight gradient inside the update (vfused.c)
        fuse = m <= fuse_max
        phase = fused_pass(c, Pf, Xb, Yb, m, <floating> (1.0 / dm), 0, stats, fuse, &cost,
                           &fl)
        c.hz = NULL
        if phase < 0:
            # bounds that make the update safe from overflow (SPEC section 5):
            # |sum_x delta a| <= ||Delta|| ||A|| (Cauchy-Schwarz), max |.| <= ||.||
            for l in range(L):
                nrma = nrmX if l == 0 else acc[B_NRMA * L + l - 1]
                nd = ssq_norm(acc[B_SSQD * L + l], acc[B_EXPD * L + l])
                sumb = nd * nrma
                gb = sumb / dm if sumb / dm > nd else nd
                vb = mu * ea[E_NRMV * L + l] + eta * (
                    gb + lmbda_n * (ea[E_NRMF * L + l] if nesterov else ea[E_NRMP * L + l]))
                pb = ea[E_NRMP * L + l] * (1 + eta * lmbda_n) + vb
                if nesterov:
                    pb = pb + mu_next * vb
                acc[B_GB * L + l] = gb
                acc[B_VB * L + l] = vb
                acc[B_PB * L + l] = pb
                if not (sumb < lim and pb < lim):
                    phase = PHASE_UPDATE
                    fl = l
                    break
        if phase >= 0:
            if not skip:
                fault_layer[0] = fl
                fault_phase[0] = phase
                t_io[0] = t
                return k
            n_skipped[0] += 1
            c.epoch_skipped += 1
            bcost[k - k0] = NAN
            if record == RECORD_BATCH:
                row = rec + (k - k0) * N_STATS * L
                for r in range(N_STATS * L):
                    row[r] = NAN
                for l in range(L):
                    row[S_NONFINITE * L + l] = 1
            continue
        bcost[k - k0] = cost / dm
        c.epoch_m += dm
        # g_b = column means of the deltas
        for l in range(L):
            for r in range(c.sizes[l + 1]):
                G[c.b_off[l] + r] = <floating> (c.colsum[c.unit_off[l] + r] / dm)
        c.w0 = dg.start if (sampled and (dg.groups & G_DISTANCE)) else NULL
        # the weight gradient is stored only where the epoch's sums or the moments
        # group read it: on the other sampled mini-batches that would be a pass over
        # G, cold in cache when stats_every > 1
        store = record == RECORD_EPOCH or (sampled and (dg.groups & G_MOMENTS) != 0)
        for l in range(L):
            update_layer(c, l, P, V, m, kind, nesterov, eta, lmbda_n, mu, mu_next, record, fuse,
                         store)
        c.w0 = NULL
        t += 1
        if sampled:
            diag_batch(c, dg, <const floating*> P, <const floating*> Xb, m, k, k0, record)
        if record == RECORD_BATCH:
            row = rec + (k - k0) * N_STATS * L
            for l in range(L):
                row[S_SPEED * L + l] = norm_dtype(G + c.b_off[l], c.sizes[l + 1])
                row[S_GRAD_NORM * L + l] = acc[B_GNORM * L + l]
                row[S_WEIGHT_NORM * L + l] = acc[B_WNORM * L + l]
                row[S_UPDATE_RATIO * L + l] = acc[B_DNORM * L + l] / acc[B_WOLD * L + l]
                row[S_NONFINITE * L + l] = 0
                cnt = acc[B_CNT * L + l]
                act_stats_into(c, l, cnt, acc[B_SUMA * L + l] / cnt, acc[B_M2 * L + l],
                               acc[B_SUMS * L + l], acc[B_LOW * L + l], acc[B_HIGH * L + l], row)
            gains_into(c, row)
        elif record == RECORD_EPOCH:
            for l in range(L):
                for r in range(c.sizes[l + 1]):
                    c.colsum_e[c.unit_off[l] + r] += c.colsum[c.unit_off[l] + r]
                pool_act(acc, ea, L, l)
                if l < L - 1:
                    ea[E_GAIN * L + l] += (
                        ssq_norm(acc[B_SSQD * L + l], acc[B_EXPD * L + l])
                        / ssq_norm(acc[B_SSQD * L + l + 1], acc[B_EXPD * L + l + 1]))
                    ea[E_NGAIN * L + l] += 1
    t_io[0] = t
    return -1


cdef void epoch_begin(Net* c, const floating* P, const floating* V, bint nesterov, double mu,
                      int record) noexcept nogil:
    cdef Py_ssize_t i, n_units = c.unit_off[c.L - 1] + c.sizes[c.L]
    cdef floating f_mu = <floating> mu
    c.epoch_m = 0
    c.epoch_skipped = 0
    if record == RECORD_EPOCH:
        memcpy(c.P0, P, c.n_params * sizeof(floating))
        memset(c.Gacc, 0, c.n_params * sizeof(double))
        memset(c.colsum_e, 0, n_units * sizeof(double))
        memset(c.eacc, 0, N_E * c.L * sizeof(double))


cdef void call_begin(Net* c, const floating* P, const floating* V, bint nesterov,
                     double mu) noexcept nogil:
    """Bounds for the overflow check and the look-ahead point, once per call."""
    cdef Py_ssize_t i
    cdef floating* F = <floating*> c.PHI
    cdef floating f_mu = <floating> mu
    cdef int l
    norm_layers(c, P, E_NRMP)
    norm_layers(c, V, E_NRMV)
    for l in range(c.L):
        c.eacc[E_NRMW * c.L + l] = norm_dtype(P + c.w_off[l], c.sizes[l + 1] * c.sizes[l])
    if nesterov:
        for i in range(c.n_params):
            F[i] = P[i] + f_mu * V[i]
        norm_layers(c, F, E_NRMF)


cdef void epoch_end(Net* c, const floating* P, double total_m, double* out) noexcept nogil:
    cdef int L = c.L, l
    cdef double* ea = c.eacc
    cdef const floating* P0 = <floating*> c.P0
    cdef Py_ssize_t n_w
    cdef double w0
    for l in range(L):
        n_w = c.sizes[l + 1] * c.sizes[l]
        out[S_SPEED * L + l] = norm_double(c.colsum_e + c.unit_off[l], c.sizes[l + 1], 1.0 / total_m)
        out[S_GRAD_NORM * L + l] = norm_double(c.Gacc + c.w_off[l], n_w, 1.0 / total_m)
        out[S_GAIN * L + l] = NAN if l == L - 1 else ea[E_GAIN * L + l] / ea[E_NGAIN * L + l]
        out[S_WEIGHT_NORM * L + l] = norm_dtype(P + c.w_off[l], n_w)
        w0 = norm_dtype(P0 + c.w_off[l], n_w)
        out[S_UPDATE_RATIO * L + l] = norm_diff(P + c.w_off[l], P0 + c.w_off[l], n_w) / w0
        act_stats_into(c, l, ea[E_CNT * L + l], ea[E_MEAN * L + l], ea[E_M2 * L + l],
                       ea[E_SUMS * L + l], ea[E_LOW * L + l], ea[E_HIGH * L + l], out)


cdef int gradient_all(Net* c, const floating* P, const floating* X, const floating* Y,
                      Py_ssize_t N, double* stats, double* cost, int* fault_layer) noexcept nogil:
    """Average gradient over N rows in chunks of m_max, with the probe statistics."""
    cdef int L = c.L, l, phase = -1
    cdef Py_ssize_t n0 = c.sizes[0], nL = c.sizes[L], s, m, r
    cdef double* acc = c.bacc
    cdef double* ea = c.gacc
    cdef floating* G = <floating*> c.G
    cdef double ccost, total = 0
    cdef double* ssq = c.ssq_g
    cdef Py_ssize_t n_units = c.unit_off[L - 1] + c.sizes[L]
    memset(c.gacc, 0, N_E * L * sizeof(double))
    memset(c.colsum_g, 0, n_units * sizeof(double))
    for l in range(2 * L):
        ssq[l] = 0
    s = 0
    while s < N:
        m = N - s
        if m > c.m_max:
            m = c.m_max
        reset_batch_acc(c)
        phase = fused_pass(c, P, X + s * n0, Y + s * nL, m, <floating> (1.0 / N),
                           <floating> (0.0 if s == 0 else 1.0), True, False, &ccost,
                           fault_layer)
        if phase >= 0:
            return phase
        total += ccost
        for l in range(L):
            for r in range(c.sizes[l + 1]):
                c.colsum_g[c.unit_off[l] + r] += c.colsum[c.unit_off[l] + r]
            ssq_add(&ssq[l], &ssq[L + l], acc[B_SSQD * L + l], acc[B_EXPD * L + l])
            pool_act(acc, ea, L, l)
        s += m
    cost[0] = total / N
    for l in range(L):
        for r in range(c.sizes[l + 1]):
            G[c.b_off[l] + r] = <floating> (c.colsum_g[c.unit_off[l] + r] / N)
    for l in range(L):
        stats[S_SPEED * L + l] = norm_dtype(G + c.b_off[l], c.sizes[l + 1])
        stats[S_GRAD_NORM * L + l] = norm_dtype(G + c.w_off[l], c.sizes[l + 1] * c.sizes[l])
        stats[S_GAIN * L + l] = NAN if l == L - 1 else (
            ssq_norm(ssq[l], ssq[L + l]) / ssq_norm(ssq[l + 1], ssq[L + l + 1]))
        stats[S_WEIGHT_NORM * L + l] = norm_dtype(P + c.w_off[l], c.sizes[l + 1] * c.sizes[l])
        stats[S_UPDATE_RATIO * L + l] = NAN
        stats[S_NONFINITE * L + l] = 0
        act_stats_into(c, l, ea[E_CNT * L + l], ea[E_MEAN * L + l], ea[E_M2 * L + l],
                       ea[E_SUMS * L + l], ea[E_LOW * L + l], ea[E_HIGH * L + l], stats)
    return -1


cdef double forward_all(Net* c, const floating* P, const floating* X, const floating* Y,
                        floating* out, Py_ssize_t N) noexcept nogil:
    """Outputs of N rows in chunks; mean data cost if Y is not NULL."""
    cdef int L = c.L, l, bad = 0
    cdef Py_ssize_t n0 = c.sizes[0], nL = c.sizes[L], s, m, i, j
    cdef floating* Abuf = <floating*> c.A
    cdef floating* AL = Abuf + c.act_off[L - 1]
    cdef const floating* Ain
    cdef floating* Z
    cdef floating* Yl
    cdef double total = 0, lse, zmax
    cdef const floating* ZL = <floating*> c.ZL
    s = 0
    while s < N:
        m = N - s
        if m > c.m_max:
            m = c.m_max
        for l in range(L):
            Ain = X + s * n0 if l == 0 else Abuf + c.act_off[l - 1]
            Z = Abuf + c.act_off[l] if l < L - 1 else <floating*> c.ZL
            gemm(CH_T, CH_N, <int> c.sizes[l + 1], <int> m, <int> c.sizes[l], 1, P + c.w_off[l],
                 <int> c.sizes[l], Ain, <int> c.sizes[l], 0, Z, <int> c.sizes[l + 1])
            if l < L - 1:
                hidden_forward(c, l, Z, P + c.b_off[l], m, False)
            else:
                output_forward(c, AL, P + c.b_off[l], m, False)
        memcpy(out + s * nL, AL, m * nL * sizeof(floating))
        if Y != NULL:
            for i in range(m):
                if c.cost == LOG_LIKELIHOOD:
                    zmax = -INFINITY
                    for j in range(nL):
                        if ZL[i * nL + j] > zmax:
                            zmax = ZL[i * nL + j]
                    lse = 0
                    for j in range(nL):
                        lse += exp(ZL[i * nL + j] - zmax)
                    lse = zmax + log(lse)
                for j in range(nL):
                    if c.cost == CROSS_ENTROPY:
                        total += softplus(ZL[i * nL + j]) - Y[(s + i) * nL + j] * <double> ZL[i * nL + j]
                    elif c.cost == LOG_LIKELIHOOD:
                        total += Y[(s + i) * nL + j] * (lse - ZL[i * nL + j])
                    else:
                        total += 0.5 * (<double> AL[i * nL + j] - Y[(s + i) * nL + j]) ** 2
        s += m
    return total / N if Y != NULL else NAN


# --------------------------------------------------------------------------
# The contract's entry points.
# --------------------------------------------------------------------------
cdef _check(name, arr, dtype, shape=None):
    if not isinstance(arr, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, got {type(arr).__name__}")
    if arr.dtype != dtype:
        raise TypeError(f"{name} must have dtype {dtype}, got {arr.dtype}")
    if not arr.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous")
    if shape is not None and arr.shape != shape:
        raise ValueError(f"{name} must have shape {shape}, got {arr.shape}")


cdef inline void* _data(arr):
    return <void*> (<Py_ssize_t> arr.ctypes.data)


def forward(layout, Workspace ws, params, X, out, Y=None):
    """Output activations of X (N, n0) into out (N, nL); mean data cost if Y is given."""
    dt = ws.layout.dtype
    sizes = ws.layout.sizes
    L = len(sizes) - 1
    N = X.shape[0] if X.ndim == 2 else -1
    _check("params", params, dt, (ws.layout.n_params,))
    _check("X", X, dt, (N, int(sizes[0])))
    _check("out", out, dt, (N, int(sizes[L])))
    if Y is not None:
        _check("Y", Y, dt, (N, int(sizes[L])))
    if N == 0:
        return float("nan")
    cdef Net* c = &ws.net
    cdef void* p = _data(params)
    cdef void* x = _data(X)
    cdef void* o = _data(out)
    cdef void* y = NULL if Y is None else _data(Y)
    cdef Py_ssize_t n = N
    cdef double res
    if dt == np.float64:
        with nogil:
            res = forward_all[double](c, <double*> p, <double*> x, <double*> y, <double*> o, n)
    else:
        with nogil:
            res = forward_all[float](c, <float*> p, <float*> x, <float*> y, <float*> o, n)
    return res


def gradient(layout, Workspace ws, params, X, Y, grad, stats):
    """Average gradient over all rows of X into grad, probe statistics into stats."""
    dt = ws.layout.dtype
    sizes = ws.layout.sizes
    L = len(sizes) - 1
    N = X.shape[0] if X.ndim == 2 else -1
    _check("params", params, dt, (ws.layout.n_params,))
    _check("grad", grad, dt, (ws.layout.n_params,))
    _check("X", X, dt, (N, int(sizes[0])))
    _check("Y", Y, dt, (N, int(sizes[L])))
    _check("stats", stats, np.float64, (N_STATS, L))
    if N == 0:
        raise ValueError("X must have at least one row")
    cdef Net* c = &ws.net
    cdef void* p = _data(params)
    cdef void* x = _data(X)
    cdef void* y = _data(Y)
    cdef double* st = <double*> _data(stats)
    cdef Py_ssize_t n = N
    cdef double cost = NAN
    cdef int phase, fl = -1
    if dt == np.float64:
        with nogil:
            phase = gradient_all[double](c, <double*> p, <double*> x, <double*> y, n, st, &cost, &fl)
    else:
        with nogil:
            phase = gradient_all[float](c, <float*> p, <float*> x, <float*> y, n, st, &cost, &fl)
    G = ws._arrays["G"]
    if phase >= 0:
        stats[:] = np.nan
        stats[S_NONFINITE, :] = 1
        return cost, fl, phase
    grad[:] = G
    return cost, -1, -1


def train_epoch(layout, Workspace ws, params, velocity, X, Y, order, batch_size, batch_start,
                batch_stop, hyper, rec_batch, rec_epoch, batch_cost, diag=None):
    """Mini-batches batch_start..batch_stop-1 of one epoch (see fastbp._contract)."""
    dt = ws.layout.dtype
    sizes = ws.layout.sizes
    cdef int L = len(sizes) - 1
    N = X.shape[0] if X.ndim == 2 else -1
    cdef Py_ssize_t bs = int(batch_size), k0 = int(batch_start), k1 = int(batch_stop)
    cdef Py_ssize_t n_batches = (N + bs - 1) // bs if bs > 0 else 0
    _check("params", params, dt, (ws.layout.n_params,))
    _check("velocity", velocity, dt, (ws.layout.n_params,))
    _check("X", X, dt, (N, int(sizes[0])))
    _check("Y", Y, dt, (N, int(sizes[L])))
    _check("order", order, np.int64, (N,))
    if not (1 <= bs <= ws.m_max and bs <= N):
        raise ValueError(f"batch_size must be in [1, min(n, m_max={ws.m_max})], got {bs}")
    if not (0 <= k0 <= k1 <= n_batches):
        raise ValueError(f"need 0 <= batch_start <= batch_stop <= {n_batches}")
    cdef int record = int(hyper.record)
    if record == RECORD_BATCH:
        _check("rec_batch", rec_batch, np.float64, (k1 - k0, N_STATS, L))
    if record == RECORD_EPOCH and k1 == n_batches:
        _check("rec_epoch", rec_epoch, np.float64, (N_STATS, L))
    _check("batch_cost", batch_cost, np.float64, (k1 - k0,))
    if N and (order.min() < 0 or order.max() >= N):
        raise ValueError("order must index rows of X")
    cdef DiagC dgc
    cdef DiagC* dg = NULL
    if diag is not None and diag.groups and record != RECORD_NONE:
        dg = &dgc
        dgc.groups = int(diag.groups)
        dgc.every = int(diag.every)
        if dgc.every < 1:
            raise ValueError(f"diag.every must be >= 1, got {dgc.every}")
        dgc.beta = float(diag.beta)
        n_hist = (n_batches + dgc.every - 1) // dgc.every if record == RECORD_BATCH else 1
        dgc.rec = NULL
        dgc.epoch_out = NULL
        dgc.hist = NULL
        if record == RECORD_BATCH:
            _check("diag.rec", diag.rec, np.float64, (k1 - k0, N_X, L))
            dgc.rec = <double*> _data(diag.rec)
        elif k1 == n_batches:
            _check("diag.epoch", diag.epoch, np.float64, (N_X, L))
            dgc.epoch_out = <double*> _data(diag.epoch)
        if dgc.groups & G_HIST:
            _check("diag.hist", diag.hist, np.int32, (n_hist, L, N_HIST))
            dgc.hist = <int32_t*> _data(diag.hist)
        _check("diag.ema", diag.ema, np.float64, (2, L))
        dgc.ema = <double*> _data(diag.ema)
        _check("diag.start", diag.start, dt, (ws.layout.n_params,))
        dgc.start = _data(diag.start)
        _check("diag.a_range", diag.a_range, np.float64, (L, 2))
        dgc.a_range = <const double*> _data(diag.a_range)
        if dgc.groups & G_MOMENTS:
            ws._ensure_moments()
        if dgc.groups & G_DISTANCE:
            _check("diag.start_norms", diag.start_norms, np.float64, (L,))
            for l in range(L):
                ws.net.nrm0[l] = diag.start_norms[l]
    cdef Net* c = &ws.net
    cdef void* p = _data(params)
    cdef void* v = _data(velocity)
    cdef void* x = _data(X)
    cdef void* y = _data(Y)
    cdef const int64_t* od = <const int64_t*> _data(order)
    cdef double* rb = <double*> _data(rec_batch) if record == RECORD_BATCH else NULL
    cdef double* re = <double*> _data(rec_epoch) if (record == RECORD_EPOCH and k1 == n_batches) else NULL
    cdef double* bc = <double*> _data(batch_cost)
    cdef int kind = int(hyper.momentum_kind)
    cdef bint nesterov = bool(hyper.nesterov) and kind != MOMENTUM_NONE
    cdef double eta = float(hyper.eta), lmbda_n = float(hyper.lmbda_n), mu = float(hyper.mu)
    cdef double mu_max = float(hyper.mu_max), period = float(hyper.period)
    cdef bint skip = bool(hyper.skip_nonfinite)
    cdef int64_t t = int(hyper.t)
    cdef int n_skipped = 0, fl = -1, fp = -1
    cdef Py_ssize_t fault = -1, n = N
    cdef double mu0 = momentum_at(kind, mu, mu_max, period, t)
    if dt == np.float64:
        with nogil:
            if k0 == 0:
                epoch_begin[double](c, <double*> p, <double*> v, nesterov, mu0, record)
                diag_epoch_reset(c)
            if k0 == 0:
                call_begin[double](c, <double*> p, <double*> v, nesterov, mu0)
            fault = train_batches[double](c, <double*> p, <double*> v, <double*> x, <double*> y,
                                          od, n, bs, k0, k1, kind, nesterov, eta, lmbda_n,
                                          mu, mu_max, period, record, skip, &t, rb, bc,
                                          &n_skipped, &fl, &fp, dg)
    else:
        with nogil:
            if k0 == 0:
                epoch_begin[float](c, <float*> p, <float*> v, nesterov, mu0, record)
                diag_epoch_reset(c)
            if k0 == 0:
                call_begin[float](c, <float*> p, <float*> v, nesterov, mu0)
            fault = train_batches[float](c, <float*> p, <float*> v, <float*> x, <float*> y,
                                         od, n, bs, k0, k1, kind, nesterov, eta, lmbda_n,
                                         mu, mu_max, period, record, skip, &t, rb, bc,
                                         &n_skipped, &fl, &fp, dg)
    if record == RECORD_EPOCH and fault < 0 and k1 == n_batches:
        if dt == np.float64:
            epoch_end[double](c, <double*> p, c.epoch_m, re)
            if dg != NULL:
                diag_epoch_end[double](c, dg, <double*> p)
        else:
            epoch_end[float](c, <float*> p, c.epoch_m, re)
            if dg != NULL:
                diag_epoch_end[float](c, dg, <float*> p)
        rec_epoch[S_NONFINITE, :] = c.epoch_skipped
    return int(t), n_skipped, int(fault), int(fl), int(fp)
