/* The per-parameter sum of the gradient signal-to-noise ratio (moments group).
 *
 * For n parameters with mean gradient g (scaled by ss) and sum of squared
 * per-example gradients gm over m examples, the sum over the parameters with
 * var = gm - m v^2 > 0 (v = g ss; var is m - 1 times the variance) of v^2 / var,
 * and the count of the others in *zero.
 *
 * One division per parameter is what costs.  Measured here (Zen 5), a masked
 * vector division beats a reciprocal estimate refined by Newton steps (0.50 against
 * 0.77 cycles per double, 0.19 against 0.29 per float) and is exact.  What matters
 * as much is that nothing waits on one chain: two sum accumulators, and the count of
 * lanes with var > 0 kept in a vector, not popcounted into a scalar every step.
 * float32 sums its terms in float over blocks of 32 steps per accumulator lane
 * (relative error below 32 ulp, far inside what float32 variances resolve), the
 * blocks in double.  Without AVX-512 the plain loop, which the compiler vectorises.
 */
#include <stddef.h>
#include <stdint.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "vcommon.h"

#if defined(__AVX512F__)
/* v^2 / var of 8 parameters where var > 0 (0 elsewhere); cnt += 1 in those lanes. */
static inline __m512d gsnr8(const double *g, const double *gm, __m512d vss, __m512d vm,
                            __m512i *cnt)
{
    __m512d v = _mm512_mul_pd(_mm512_loadu_pd(g), vss);
    __m512d v2 = _mm512_mul_pd(v, v);
    __m512d var = _mm512_fnmadd_pd(vm, v2, _mm512_loadu_pd(gm));
    __mmask8 pos = _mm512_cmp_pd_mask(var, _mm512_setzero_pd(), _CMP_GT_OQ);
    *cnt = _mm512_mask_add_epi64(*cnt, pos, *cnt, _mm512_set1_epi64(1));
    return _mm512_maskz_div_pd(pos, v2, var);
}

static inline __m512 gsnr16f(const float *g, const float *gm, __m512 vss, __m512 vm,
                             __m512i *cnt)
{
    __m512 v = _mm512_mul_ps(_mm512_loadu_ps(g), vss);
    __m512 v2 = _mm512_mul_ps(v, v);
    __m512 var = _mm512_fnmadd_ps(vm, v2, _mm512_loadu_ps(gm));
    __mmask16 pos = _mm512_cmp_ps_mask(var, _mm512_setzero_ps(), _CMP_GT_OQ);
    *cnt = _mm512_mask_add_epi32(*cnt, pos, *cnt, _mm512_set1_epi32(1));
    return _mm512_maskz_div_ps(pos, v2, var);
}
#endif

FASTBP_HIDDEN double fastbp_gsnr_sum(const double *g, const double *gm, ptrdiff_t n,
                                     double ss, double m, ptrdiff_t *zero)
{
    double sum = 0.0;
    ptrdiff_t z = 0, i = 0;
#if defined(__AVX512F__)
    const __m512d vss = _mm512_set1_pd(ss), vm = _mm512_set1_pd(m);
    __m512d acc0 = _mm512_setzero_pd(), acc1 = _mm512_setzero_pd();
    __m512i cnt = _mm512_setzero_si512();
    for (; i + 16 <= n; i += 16) {
        acc0 = _mm512_add_pd(acc0, gsnr8(g + i, gm + i, vss, vm, &cnt));
        acc1 = _mm512_add_pd(acc1, gsnr8(g + i + 8, gm + i + 8, vss, vm, &cnt));
    }
    for (; i + 8 <= n; i += 8)
        acc0 = _mm512_add_pd(acc0, gsnr8(g + i, gm + i, vss, vm, &cnt));
    sum = _mm512_reduce_add_pd(_mm512_add_pd(acc0, acc1));
    z = i - (ptrdiff_t)_mm512_reduce_add_epi64(cnt);
#endif
    for (; i < n; i++) {
        double v = g[i] * ss, var = gm[i] - m * v * v;
        z += !(var > 0);
        sum += var > 0 ? v * v / var : 0.0;
    }
    *zero += z;
    return sum;
}

FASTBP_HIDDEN double fastbp_gsnr_sumf(const float *g, const float *gm, ptrdiff_t n, float ss,
                                      float m, ptrdiff_t *zero)
{
    double sum = 0.0;
    ptrdiff_t z = 0, i = 0;
#if defined(__AVX512F__)
    const __m512 vss = _mm512_set1_ps(ss), vm = _mm512_set1_ps(m);
    __m512d acc = _mm512_setzero_pd();
    __m512i cnt = _mm512_setzero_si512();
    while (i + 16 <= n) {
        __m512 f0 = _mm512_setzero_ps(), f1 = _mm512_setzero_ps(), f;
        ptrdiff_t end = i + 32 * 32 < n ? i + 32 * 32 : n;
        for (; i + 32 <= end; i += 32) {
            f0 = _mm512_add_ps(f0, gsnr16f(g + i, gm + i, vss, vm, &cnt));
            f1 = _mm512_add_ps(f1, gsnr16f(g + i + 16, gm + i + 16, vss, vm, &cnt));
        }
        if (i + 16 <= end) {
            f0 = _mm512_add_ps(f0, gsnr16f(g + i, gm + i, vss, vm, &cnt));
            i += 16;
        }
        f = _mm512_add_ps(f0, f1);
        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(f)));
        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_castpd_ps(
            _mm512_extractf64x4_pd(_mm512_castps_pd(f), 1))));
    }
    sum = _mm512_reduce_add_pd(acc);
    z = i - (ptrdiff_t)_mm512_reduce_add_epi32(cnt);
#endif
    for (; i < n; i++) {
        float v = g[i] * ss, var = gm[i] - m * v * v;
        z += !(var > 0);
        sum += var > 0 ? (double)(v * v / var) : 0.0;
    }
    *zero += z;
    return sum;
}

/* The same sum, with the second moments gm = (d2)^T (a2) formed on the fly and never
 * stored: gm[j, k] = sum_n d2[n, j] a2[n, k] for the n_out x n_in weights, d2 (m x
 * n_out) and a2 (m x n_in) the squared scaled deltas and activations of m examples.
 * For small mini-batches (the caller uses it up to m = 32), where a BLAS product with
 * an inner dimension of m runs far from peak and its n_out x n_in result would be
 * written and read again: here each block of 4 rows x 16 (float: 32) columns keeps its
 * 8 sums in registers through the m steps, then goes straight into the divisions,
 * which overlap the next block's multiply-adds.  Columns outer, rows inner: the
 * m x 16 slice of a2 stays in L1 while every row uses it. */
#if defined(__AVX512F__)
#define FASTBP_INLINE static inline __attribute__((always_inline))

FASTBP_INLINE __m512d mom_ratio8(const double *g, __m512d s, __mmask8 k, __m512d vss,
                                 __m512d vm, __m512i *cnt)
{
    __m512d v = _mm512_mul_pd(_mm512_maskz_loadu_pd(k, g), vss);
    __m512d v2 = _mm512_mul_pd(v, v);
    __m512d var = _mm512_fnmadd_pd(vm, v2, s);
    __mmask8 pos = _mm512_mask_cmp_pd_mask(k, var, _mm512_setzero_pd(), _CMP_GT_OQ);
    *cnt = _mm512_mask_add_epi64(*cnt, pos, *cnt, _mm512_set1_epi64(1));
    return _mm512_maskz_div_pd(pos, v2, var);
}

/* Rows j .. j + R - 1 (R a constant once inlined), columns k .. k + 15 (masks k0, k1). */
FASTBP_INLINE void mom_block(const double *g, const double *a2, const double *d2,
                             ptrdiff_t m, ptrdiff_t n_in, ptrdiff_t n_out, ptrdiff_t j,
                             ptrdiff_t k, __mmask8 k0, __mmask8 k1, const int R, __m512d vss,
                             __m512d vm, __m512d *acc0, __m512d *acc1, __m512i *cnt)
{
    __m512d s0[4], s1[4];
    ptrdiff_t n;
    int r;
    for (r = 0; r < R; r++)
        s0[r] = s1[r] = _mm512_setzero_pd();
    for (n = 0; n < m; n++) {
        __m512d x0 = _mm512_maskz_loadu_pd(k0, a2 + n * n_in + k);
        __m512d x1 = _mm512_maskz_loadu_pd(k1, a2 + n * n_in + k + 8);
        for (r = 0; r < R; r++) {
            __m512d d = _mm512_set1_pd(d2[n * n_out + j + r]);
            s0[r] = _mm512_fmadd_pd(d, x0, s0[r]);
            s1[r] = _mm512_fmadd_pd(d, x1, s1[r]);
        }
    }
    for (r = 0; r < R; r++) {
        const double *gr = g + (j + r) * n_in + k;
        *acc0 = _mm512_add_pd(*acc0, mom_ratio8(gr, s0[r], k0, vss, vm, cnt));
        *acc1 = _mm512_add_pd(*acc1, mom_ratio8(gr + 8, s1[r], k1, vss, vm, cnt));
    }
}

FASTBP_INLINE __m512 mom_ratio16f(const float *g, __m512 s, __mmask16 k, __m512 vss,
                                  __m512 vm, __m512i *cnt)
{
    __m512 v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, g), vss);
    __m512 v2 = _mm512_mul_ps(v, v);
    __m512 var = _mm512_fnmadd_ps(vm, v2, s);
    __mmask16 pos = _mm512_mask_cmp_ps_mask(k, var, _mm512_setzero_ps(), _CMP_GT_OQ);
    *cnt = _mm512_mask_add_epi32(*cnt, pos, *cnt, _mm512_set1_epi32(1));
    return _mm512_maskz_div_ps(pos, v2, var);
}

FASTBP_INLINE void mom_blockf(const float *g, const float *a2, const float *d2, ptrdiff_t m,
                              ptrdiff_t n_in, ptrdiff_t n_out, ptrdiff_t j, ptrdiff_t k,
                              __mmask16 k0, __mmask16 k1, const int R, __m512 vss, __m512 vm,
                              __m512d *acc, __m512i *cnt)
{
    __m512 s0[4], s1[4], f = _mm512_setzero_ps();
    ptrdiff_t n;
    int r;
    for (r = 0; r < R; r++)
        s0[r] = s1[r] = _mm512_setzero_ps();
    for (n = 0; n < m; n++) {
        __m512 x0 = _mm512_maskz_loadu_ps(k0, a2 + n * n_in + k);
        __m512 x1 = _mm512_maskz_loadu_ps(k1, a2 + n * n_in + k + 16);
        for (r = 0; r < R; r++) {
            __m512 d = _mm512_set1_ps(d2[n * n_out + j + r]);
            s0[r] = _mm512_fmadd_ps(d, x0, s0[r]);
            s1[r] = _mm512_fmadd_ps(d, x1, s1[r]);
        }
    }
    for (r = 0; r < R; r++) {
        const float *gr = g + (j + r) * n_in + k;
        f = _mm512_add_ps(f, mom_ratio16f(gr, s0[r], k0, vss, vm, cnt));
        f = _mm512_add_ps(f, mom_ratio16f(gr + 16, s1[r], k1, vss, vm, cnt));
    }
    /* at most 8 float terms per lane, then the sum in double */
    *acc = _mm512_add_pd(*acc, _mm512_cvtps_pd(_mm512_castps512_ps256(f)));
    *acc = _mm512_add_pd(*acc, _mm512_cvtps_pd(_mm256_castpd_ps(
        _mm512_extractf64x4_pd(_mm512_castps_pd(f), 1))));
}

static inline unsigned lane_mask(ptrdiff_t left)
{
    return left >= 16 ? 0xffffu : left <= 0 ? 0u : (1u << left) - 1u;
}
#endif

/* Without AVX-512: 64 columns at a time, their sums in an array the compiler
 * vectorises (T the dtype; uses the arguments and sum, z of the functions below). */
#define MOMENTS_PORTABLE(T)                                                               \
    do {                                                                                \
        T s_[64];                                                                       \
        ptrdiff_t k0_, n_, w_, i_;                                                      \
        for (k0_ = 0; k0_ < n_in; k0_ += 64) {                                          \
            w_ = n_in - k0_ < 64 ? n_in - k0_ : 64;                                     \
            for (j = 0; j < n_out; j++) {                                               \
                for (i_ = 0; i_ < w_; i_++)                                             \
                    s_[i_] = 0;                                                         \
                for (n_ = 0; n_ < m; n_++) {                                            \
                    T d_ = d2[n_ * n_out + j];                                          \
                    const T *ar_ = a2 + n_ * n_in + k0_;                                \
                    for (i_ = 0; i_ < w_; i_++)                                         \
                        s_[i_] += d_ * ar_[i_];                                         \
                }                                                                       \
                for (i_ = 0; i_ < w_; i_++) {                                           \
                    T v_ = g[j * n_in + k0_ + i_] * ss, var_ = s_[i_] - (T)m * v_ * v_; \
                    z += !(var_ > 0);                                                   \
                    sum += var_ > 0 ? (double)(v_ * v_ / var_) : 0.0;                   \
                }                                                                       \
            }                                                                           \
        }                                                                               \
    } while (0)

FASTBP_HIDDEN double fastbp_moments_gsnr(const double *g, const double *a2, const double *d2,
                                         ptrdiff_t m, ptrdiff_t n_in, ptrdiff_t n_out,
                                         double ss, ptrdiff_t *zero)
{
    double sum = 0.0;
    ptrdiff_t z = 0, j, k;
#if defined(__AVX512F__)
    const __m512d vss = _mm512_set1_pd(ss), vm = _mm512_set1_pd((double)m);
    __m512d acc0 = _mm512_setzero_pd(), acc1 = _mm512_setzero_pd();
    __m512i cnt = _mm512_setzero_si512();
    for (k = 0; k < n_in; k += 16) {
        unsigned lm = lane_mask(n_in - k);
        __mmask8 k0 = (__mmask8)(lm & 0xff), k1 = (__mmask8)(lm >> 8);
        for (j = 0; j + 4 <= n_out; j += 4)
            mom_block(g, a2, d2, m, n_in, n_out, j, k, k0, k1, 4, vss, vm, &acc0, &acc1, &cnt);
        for (; j + 2 <= n_out; j += 2)
            mom_block(g, a2, d2, m, n_in, n_out, j, k, k0, k1, 2, vss, vm, &acc0, &acc1, &cnt);
        for (; j < n_out; j++)
            mom_block(g, a2, d2, m, n_in, n_out, j, k, k0, k1, 1, vss, vm, &acc0, &acc1, &cnt);
    }
    sum = _mm512_reduce_add_pd(_mm512_add_pd(acc0, acc1));
    z = n_in * n_out - (ptrdiff_t)_mm512_reduce_add_epi64(cnt);
#else
    MOMENTS_PORTABLE(double);
    (void)k;
#endif
    *zero += z;
    return sum;
}

FASTBP_HIDDEN double fastbp_moments_gsnrf(const float *g, const float *a2, const float *d2,
                                          ptrdiff_t m, ptrdiff_t n_in, ptrdiff_t n_out,
                                          float ss, ptrdiff_t *zero)
{
    double sum = 0.0;
    ptrdiff_t z = 0, j, k;
#if defined(__AVX512F__)
    const __m512 vss = _mm512_set1_ps(ss), vm = _mm512_set1_ps((float)m);
    __m512d acc = _mm512_setzero_pd();
    __m512i cnt = _mm512_setzero_si512();
    for (k = 0; k < n_in; k += 32) {
        __mmask16 k0 = (__mmask16)lane_mask(n_in - k), k1 = (__mmask16)lane_mask(n_in - k - 16);
        for (j = 0; j + 4 <= n_out; j += 4)
            mom_blockf(g, a2, d2, m, n_in, n_out, j, k, k0, k1, 4, vss, vm, &acc, &cnt);
        for (; j + 2 <= n_out; j += 2)
            mom_blockf(g, a2, d2, m, n_in, n_out, j, k, k0, k1, 2, vss, vm, &acc, &cnt);
        for (; j < n_out; j++)
            mom_blockf(g, a2, d2, m, n_in, n_out, j, k, k0, k1, 1, vss, vm, &acc, &cnt);
    }
    sum = _mm512_reduce_add_pd(acc);
    z = n_in * n_out - (ptrdiff_t)_mm512_reduce_add_epi32(cnt);
#else
    MOMENTS_PORTABLE(float);
    (void)k;
#endif
    *zero += z;
    return sum;
}
