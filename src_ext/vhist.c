/* Histogram counting of the histograms statistic group: signed decades for delta and
 * z, linear bins over the activation's range for a (definitions in
 * fastbp/_diagnostics.py).
 *
 * The decade of |x| is floor(log10 |x|), settled against the table of decade edges
 * 10^k (doubles) so that every path gives the bin of the definition exactly.
 * - With AVX-512 (16 floats or 8 doubles per step, no table reads): t = e log10(2) +
 *   p(m) from the exponent e and the mantissa m in [1, 2) of x, p a cubic fit of
 *   log10 on [1, 2] (max error 4.0e-4); floor(t) is the decade unless t lies within
 *   EDGE_BAND (1.5e-3, more than three times the error) of an integer.  Those values
 *   (about 0.3% of values spread over decades) and the special ones (subnormal, inf,
 *   NaN) take decade_exact, one comparison against the edge table.
 * - Without AVX-512: a binary octave [2^e, 2^(e+1)) holds at most one power of ten,
 *   so the cell of x (sign, exponent, top 5 mantissa bits) almost always names its
 *   bin: cells[] holds it, or `ambiguous` for the cells that contain an edge and the
 *   clamped end cells; those values take decade_exact too.
 *
 * Counting: four sub-histograms taken in turn, so that runs of one bin (common:
 * deltas of a layer share a decade or two) do not make one chain of dependent
 * read-modify-writes; summed into h at the end of a call.  The vector paths count
 * one step behind the classification, so the counts read bins that were stored a
 * step earlier (not forwarded from the store just issued).
 *
 * The tests compare the bins of every path with bins computed from floor(log10 |x|)
 * by definition, on, just below and just above every edge.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "vhist.h"
#if defined(__AVX512F__) && defined(__AVX512VL__)
#include <immintrin.h>
#define FASTBP_HIST_AVX512 1
#endif

#include "vcommon.h"

typedef int32_t fastbp_subs[4][FASTBP_HIST_MAX_BINS];

/* The exact signed-decade bin of x; branch-free selects (zeros, signs and
 * out-of-range values are common and unpredictable in relu nets). */
static inline int decade_exact(double x, const fastbp_decades *t)
{
    double ax = fabs(x);
    uint64_t bits;
    int e, i, pos, r;
    memcpy(&bits, &ax, sizeof bits);
    e = (int)(bits >> 52) - 1023 - t->e2_min;
    e = e < 0 ? 0 : e;
    e = e > t->n_e2 - 1 ? t->n_e2 - 1 : e;
    i = t->dec_tbl[e];
    i += ax >= t->edges[i + 1];
    pos = i + 1;
    pos = ax < t->edges[0] ? 0 : pos;
    pos = ax < t->edges[t->n_decades] ? pos : t->n_decades + 1; /* also inf and NaN */
    r = x > 0 ? t->zero_bin + 1 + pos : t->zero_bin - 1 - pos;
    return x == 0 ? t->zero_bin : r;
}

/* The decade bin through the cell table (the path without AVX-512). */
static inline int decade_cell(double x, const fastbp_decades *t)
{
    uint64_t u;
    long e;
    int r;
    memcpy(&u, &x, sizeof u);
    e = (long)((u >> 52) & 0x7ff) - 1023 - t->ce_lo;
    e = e < 0 ? 0 : e;
    e = e > t->n_ce - 1 ? t->n_ce - 1 : e;
    r = t->cells[((long)(u >> 63) * t->n_ce + e) * 32 + (long)((u >> 47) & 31)];
    r = x == 0 ? t->zero_bin : r;
    return r == t->ambiguous ? decade_exact(x, t) : r;
}

static inline int linear_bin(double a, double lo, double hi, double scale, int n_linear)
{
    long i;
    if (a < lo)
        return 0;
    if (!(a <= hi)) /* also NaN */
        return n_linear + 1;
    i = (long)((a - lo) * scale);
    return 1 + (i < n_linear - 1 ? (int)i : n_linear - 1);
}

static inline void count_bins(fastbp_subs sub, const int *bins, ptrdiff_t cnt)
{
    ptrdiff_t i = 0;
    for (; i + 4 <= cnt; i += 4) {
        sub[0][bins[i]] += 1;
        sub[1][bins[i + 1]] += 1;
        sub[2][bins[i + 2]] += 1;
        sub[3][bins[i + 3]] += 1;
    }
    for (; i < cnt; i++)
        sub[0][bins[i]] += 1;
}

static inline void merge_subs(int32_t *h, fastbp_subs sub, int n_bins)
{
    int j;
    for (j = 0; j < n_bins; j++)
        h[j] += sub[0][j] + sub[1][j] + sub[2][j] + sub[3][j];
}

/* Without AVX-512: each value's bin through the cell table, counted in turn. */
#define FASTBP_DECADES_PORTABLE(T, x, b, rows, n, t, sub)                                   \
    do {                                                                                  \
        ptrdiff_t r_, j_, c_ = 0;                                                         \
        for (r_ = 0; r_ < (rows); r_++)                                                   \
            for (j_ = 0; j_ < (n); j_++, c_++) {                                          \
                T v_ = (b) ? (T)((x)[r_ * (n) + j_] + (b)[j_]) : (x)[r_ * (n) + j_];      \
                (sub)[c_ & 3][decade_cell((double)v_, (t))] += 1;                         \
            }                                                                             \
    } while (0)

#if defined(FASTBP_HIST_AVX512)
/* log10 m ~ P0 + m (P1 + m (P2 + m P3)) on [1, 2] (Chebyshev fit, max error 4.0e-4) */
#define P0 -0.64234067
#define P1 0.90631649
#define P2 -0.30990622
#define P3 0.04633226
#define LOG10_2 0.30102999566398120
#define EDGE_BAND 1.5e-3

/* Bins of 16 floats; *exact gets the lanes of k that decade_exact must settle. */
static inline __m512i decade_bins16(__m512 v, __mmask16 k, const fastbp_decades *t,
                                    __mmask16 *exact)
{
    const __m512i mff = _mm512_set1_epi32(0xff), one = _mm512_set1_epi32(1);
    const __m512i zb = _mm512_set1_epi32(t->zero_bin);
    __m512i u = _mm512_castps_si512(v);
    __m512i ef = _mm512_and_si512(_mm512_srli_epi32(u, 23), mff);
    __m512 m = _mm512_castsi512_ps(_mm512_or_si512(
        _mm512_and_si512(u, _mm512_set1_epi32(0x7fffff)), _mm512_set1_epi32(0x3f800000)));
    __m512 p = _mm512_fmadd_ps(_mm512_set1_ps((float)P3), m, _mm512_set1_ps((float)P2));
    p = _mm512_fmadd_ps(p, m, _mm512_set1_ps((float)P1));
    p = _mm512_fmadd_ps(p, m, _mm512_set1_ps((float)P0));
    __m512 tt = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(ef, _mm512_set1_epi32(127))),
                                _mm512_set1_ps((float)LOG10_2), p);
    __m512 kf = _mm512_roundscale_ps(tt, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512 fr = _mm512_sub_ps(tt, kf);
    __mmask16 zero = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_EQ_OQ);
    __mmask16 near = _mm512_cmp_ps_mask(fr, _mm512_set1_ps((float)EDGE_BAND), _CMP_LT_OQ)
                     | _mm512_cmp_ps_mask(fr, _mm512_set1_ps((float)(1 - EDGE_BAND)), _CMP_GT_OQ)
                     | _mm512_cmpeq_epi32_mask(ef, _mm512_setzero_si512())
                     | _mm512_cmpeq_epi32_mask(ef, mff);
    /* pos = clamp(decade - decade_min + 1, 0, n_decades + 1) */
    __m512i pos = _mm512_sub_epi32(_mm512_cvtps_epi32(kf), _mm512_set1_epi32(t->decade_min - 1));
    pos = _mm512_min_epi32(_mm512_max_epi32(pos, _mm512_setzero_si512()),
                           _mm512_set1_epi32(t->n_decades + 1));
    /* zero_bin + 1 + pos for x > 0, zero_bin - 1 - pos for x < 0 */
    __m512i neg = _mm512_srai_epi32(u, 31), p1 = _mm512_add_epi32(pos, one);
    __m512i r = _mm512_add_epi32(zb, _mm512_sub_epi32(_mm512_xor_si512(p1, neg), neg));
    *exact = (__mmask16)(near & ~zero & k);
    return _mm512_mask_mov_epi32(r, zero, zb);
}

/* Bins of 8 doubles, as above. */
static inline __m256i decade_bins8(__m512d v, __mmask8 k, const fastbp_decades *t,
                                   __mmask8 *exact)
{
    const __m512i m7ff = _mm512_set1_epi64(0x7ff);
    const __m256i zb = _mm256_set1_epi32(t->zero_bin);
    __m512i u = _mm512_castpd_si512(v);
    __m512i ef = _mm512_and_si512(_mm512_srli_epi64(u, 52), m7ff);
    __m512d m = _mm512_castsi512_pd(_mm512_or_si512(
        _mm512_and_si512(u, _mm512_set1_epi64(0xfffffffffffffLL)),
        _mm512_set1_epi64(0x3ff0000000000000LL)));
    __m512d p = _mm512_fmadd_pd(_mm512_set1_pd(P3), m, _mm512_set1_pd(P2));
    p = _mm512_fmadd_pd(p, m, _mm512_set1_pd(P1));
    p = _mm512_fmadd_pd(p, m, _mm512_set1_pd(P0));
    __m512d tt = _mm512_fmadd_pd(_mm512_cvtepi64_pd(_mm512_sub_epi64(ef, _mm512_set1_epi64(1023))),
                                 _mm512_set1_pd(LOG10_2), p);
    __m512d kf = _mm512_roundscale_pd(tt, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC);
    __m512d fr = _mm512_sub_pd(tt, kf);
    __mmask8 zero = _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_EQ_OQ);
    __mmask8 near = _mm512_cmp_pd_mask(fr, _mm512_set1_pd(EDGE_BAND), _CMP_LT_OQ)
                    | _mm512_cmp_pd_mask(fr, _mm512_set1_pd(1 - EDGE_BAND), _CMP_GT_OQ)
                    | _mm512_cmpeq_epi64_mask(ef, _mm512_setzero_si512())
                    | _mm512_cmpeq_epi64_mask(ef, m7ff);
    __m256i pos = _mm256_sub_epi32(_mm512_cvtpd_epi32(kf), _mm256_set1_epi32(t->decade_min - 1));
    pos = _mm256_min_epi32(_mm256_max_epi32(pos, _mm256_setzero_si256()),
                           _mm256_set1_epi32(t->n_decades + 1));
    __m256i neg = _mm512_cvtepi64_epi32(_mm512_srai_epi64(u, 63));
    __m256i p1 = _mm256_add_epi32(pos, _mm256_set1_epi32(1));
    __m256i r = _mm256_add_epi32(zb, _mm256_sub_epi32(_mm256_xor_si256(p1, neg), neg));
    *exact = (__mmask8)(near & ~zero & k);
    return _mm256_mask_mov_epi32(r, zero, zb);
}
#endif

#if defined(FASTBP_HIST_AVX512)
/* One step of 8 doubles (w of them; plus b if not NULL): their bins into bins[]. */
static inline void decade_step8(const double *x, const double *b, ptrdiff_t w,
                                const fastbp_decades *t, int *bins)
{
    __mmask8 k = (__mmask8)((1u << w) - 1u), ex;
    __m512d v = _mm512_maskz_loadu_pd(k, x);
    double vals[8];
    if (b)
        v = _mm512_add_pd(v, _mm512_maskz_loadu_pd(k, b));
    _mm256_storeu_si256((__m256i *)bins, decade_bins8(v, k, t, &ex));
    if (ex) {
        _mm512_storeu_pd(vals, v);
        for (; ex; ex &= (__mmask8)(ex - 1))
            bins[__builtin_ctz((unsigned)ex)] = decade_exact(vals[__builtin_ctz((unsigned)ex)], t);
    }
}

/* The same for 16 floats, classified from their own bits. */
static inline void decade_step16(const float *x, const float *b, ptrdiff_t w,
                                 const fastbp_decades *t, int *bins)
{
    __mmask16 k = (__mmask16)((1u << w) - 1u), ex;
    __m512 v = _mm512_maskz_loadu_ps(k, x);
    float vals[16];
    if (b)
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(k, b));
    _mm512_storeu_si512(bins, decade_bins16(v, k, t, &ex));
    if (ex) {
        _mm512_storeu_ps(vals, v);
        for (; ex; ex &= (__mmask16)(ex - 1))
            bins[__builtin_ctz((unsigned)ex)] =
                decade_exact((double)vals[__builtin_ctz((unsigned)ex)], t);
    }
}
#endif

/* Both dtypes in one body (f32 a constant once inlined): rows x n values, plus the row
 * b if not NULL, counted one step behind their classification. */
static inline __attribute__((always_inline)) void hist_decades_any(
    const void *x, const void *b, const int f32, ptrdiff_t rows, ptrdiff_t n,
    const fastbp_decades *t, int32_t *h)
{
    const double *xd = (const double *)x, *bd = (const double *)b;
    const float *xf = (const float *)x, *bf = (const float *)b;
    fastbp_subs sub;
    memset(sub, 0, sizeof sub);
#if defined(FASTBP_HIST_AVX512)
    {
        const ptrdiff_t W = f32 ? 16 : 8;
        int bins[2][16];
        ptrdiff_t r, j, w_prev = 0;
        int cur = 0;
        for (r = 0; r < rows; r++) {
            for (j = 0; j < n; j += W) {
                ptrdiff_t w = n - j < W ? n - j : W;
                if (f32)
                    decade_step16(xf + r * n + j, bf ? bf + j : NULL, w, t, bins[cur]);
                else
                    decade_step8(xd + r * n + j, bd ? bd + j : NULL, w, t, bins[cur]);
                count_bins(sub, bins[cur ^ 1], w_prev);
                w_prev = w;
                cur ^= 1;
            }
        }
        count_bins(sub, bins[cur ^ 1], w_prev);
    }
#else
    if (f32)
        FASTBP_DECADES_PORTABLE(float, xf, bf, rows, n, t, sub);
    else
        FASTBP_DECADES_PORTABLE(double, xd, bd, rows, n, t, sub);
#endif
    merge_subs(h, sub, t->n_bins);
}

FASTBP_HIDDEN void fastbp_hist_decades(const double *x, const double *b, ptrdiff_t rows,
                                       ptrdiff_t n, const fastbp_decades *t, int32_t *h)
{
    hist_decades_any(x, b, 0, rows, n, t, h);
}

FASTBP_HIDDEN void fastbp_hist_decadesf(const float *x, const float *b, ptrdiff_t rows,
                                        ptrdiff_t n, const fastbp_decades *t, int32_t *h)
{
    hist_decades_any(x, b, 1, rows, n, t, h);
}

#if defined(FASTBP_HIST_AVX512)
/* Linear bins of 8 doubles (lanes k), the same arithmetic as linear_bin. */
static inline __m256i linear_bins8(__m512d a, __mmask8 k, __m512d vlo, __m512d vhi,
                                   __m512d vscale, int n_linear)
{
    __m256i q = _mm512_cvttpd_epi32(_mm512_mul_pd(_mm512_sub_pd(a, vlo), vscale));
    q = _mm256_min_epi32(_mm256_max_epi32(q, _mm256_setzero_si256()),
                         _mm256_set1_epi32(n_linear - 1));
    q = _mm256_add_epi32(q, _mm256_set1_epi32(1));
    q = _mm256_mask_mov_epi32(q, _mm512_mask_cmp_pd_mask(k, a, vlo, _CMP_LT_OQ),
                              _mm256_setzero_si256());
    return _mm256_mask_mov_epi32(q, _mm512_mask_cmp_pd_mask(k, a, vhi, _CMP_NLE_UQ),
                                 _mm256_set1_epi32(n_linear + 1));
}
#endif

/* Both dtypes in one body: f32 is a constant once inlined, so each entry point keeps
 * only its own loads (float32 is converted to double, 8 values per step: the bins are
 * computed in double either way). */
static inline __attribute__((always_inline)) void hist_linear_any(
    const void *x, const int f32, ptrdiff_t n, double lo, double hi, double scale,
    int n_linear, int32_t *h)
{
    const double *xd = (const double *)x;
    const float *xf = (const float *)x;
    fastbp_subs sub;
    ptrdiff_t i = 0;
    memset(sub, 0, sizeof sub);
#if defined(FASTBP_HIST_AVX512)
    {
        int bins[2][8];
        const __m512d vlo = _mm512_set1_pd(lo), vhi = _mm512_set1_pd(hi);
        const __m512d vscale = _mm512_set1_pd(scale);
        ptrdiff_t w_prev = 0;
        int cur = 0;
        for (; i < n; i += 8) {
            ptrdiff_t w = n - i < 8 ? n - i : 8;
            __mmask8 k = (__mmask8)((1u << w) - 1u);
            __m512d a = f32 ? _mm512_cvtps_pd(_mm256_maskz_loadu_ps(k, xf + i))
                            : _mm512_maskz_loadu_pd(k, xd + i);
            _mm256_storeu_si256((__m256i *)bins[cur],
                                linear_bins8(a, k, vlo, vhi, vscale, n_linear));
            count_bins(sub, bins[cur ^ 1], w_prev);
            w_prev = w;
            cur ^= 1;
        }
        count_bins(sub, bins[cur ^ 1], w_prev);
    }
#endif
    for (; i < n; i++)
        sub[i & 3][linear_bin(f32 ? (double)xf[i] : xd[i], lo, hi, scale, n_linear)] += 1;
    merge_subs(h, sub, n_linear + 2);
}

FASTBP_HIDDEN void fastbp_hist_linear(const double *x, ptrdiff_t n, double lo, double hi,
                                      double scale, int n_linear, int32_t *h)
{
    hist_linear_any(x, 0, n, lo, hi, scale, n_linear, h);
}

FASTBP_HIDDEN void fastbp_hist_linearf(const float *x, ptrdiff_t n, double lo, double hi,
                                       double scale, int n_linear, int32_t *h)
{
    hist_linear_any(x, 1, n, lo, hi, scale, n_linear, h);
}
