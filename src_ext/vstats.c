/* The per-parameter sum of the gradient signal-to-noise ratio (moments group).
 *
 * For n parameters with mean gradient g (scaled by ss) and sum of squared
 * per-example gradients gm over m examples, the sum over the parameters with
 * var = gm - m v^2 > 0 (v = g ss; var is m - 1 times the variance) of v^2 / var,
 * and the count of the others in *zero.  One division per parameter is what costs:
 * with AVX-512 it is a reciprocal estimate (14 bits) refined by Newton-Raphson steps
 * (two in double: ~1e-16 relative, as good as the division; one in float), a few
 * fused multiply-adds instead of a long-latency divide.  Lanes with var below the
 * smallest normal number (rcp14 flushes them) take the exact division.  Without
 * AVX-512 the plain loop, which the compiler vectorises with its divide.
 */
#include <stddef.h>
#include <float.h>
#include <string.h>
#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#if defined(__GNUC__) || defined(__clang__)
#define FASTBP_HIDDEN __attribute__((visibility("hidden")))
#else
#define FASTBP_HIDDEN
#endif

FASTBP_HIDDEN double fastbp_gsnr_sum(const double *g, const double *gm, ptrdiff_t n,
                                     double ss, double m, ptrdiff_t *zero)
{
    double sum = 0.0;
    ptrdiff_t z = 0, i = 0;
#if defined(__AVX512F__)
    const __m512d vss = _mm512_set1_pd(ss), vm = _mm512_set1_pd(m);
    const __m512d two = _mm512_set1_pd(2.0), tiny = _mm512_set1_pd(DBL_MIN);
    __m512d acc = _mm512_setzero_pd();
    for (; i + 8 <= n; i += 8) {
        __m512d v = _mm512_mul_pd(_mm512_loadu_pd(g + i), vss);
        __m512d v2 = _mm512_mul_pd(v, v);
        __m512d var = _mm512_fnmadd_pd(vm, v2, _mm512_loadu_pd(gm + i));
        __mmask8 pos = _mm512_cmp_pd_mask(var, _mm512_setzero_pd(), _CMP_GT_OQ);
        __mmask8 normal = _mm512_cmp_pd_mask(var, tiny, _CMP_GE_OQ);
        __m512d r = _mm512_rcp14_pd(var);
        r = _mm512_mul_pd(r, _mm512_fnmadd_pd(var, r, two));
        r = _mm512_mul_pd(r, _mm512_fnmadd_pd(var, r, two));
        __m512d q = _mm512_mul_pd(v2, r);
        if (pos != normal)  /* 0 < var < DBL_MIN: divide exactly */
            q = _mm512_mask_div_pd(q, (__mmask8)(pos & ~normal), v2, var);
        acc = _mm512_mask_add_pd(acc, pos, acc, q);
        z += 8 - __builtin_popcount((unsigned)pos);
    }
    sum = _mm512_reduce_add_pd(acc);
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
    const __m512 two = _mm512_set1_ps(2.0f), tiny = _mm512_set1_ps(FLT_MIN);
    __m512d acc = _mm512_setzero_pd();
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_mul_ps(_mm512_loadu_ps(g + i), vss);
        __m512 v2 = _mm512_mul_ps(v, v);
        __m512 var = _mm512_fnmadd_ps(vm, v2, _mm512_loadu_ps(gm + i));
        __mmask16 pos = _mm512_cmp_ps_mask(var, _mm512_setzero_ps(), _CMP_GT_OQ);
        __mmask16 normal = _mm512_cmp_ps_mask(var, tiny, _CMP_GE_OQ);
        __m512 r = _mm512_rcp14_ps(var);
        r = _mm512_mul_ps(r, _mm512_fnmadd_ps(var, r, two));
        __m512 q = _mm512_mul_ps(v2, r);
        if (pos != normal)
            q = _mm512_mask_div_ps(q, (__mmask16)(pos & ~normal), v2, var);
        q = _mm512_maskz_mov_ps(pos, q);
        /* the sum in double: 16 float terms promoted per step */
        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm512_castps512_ps256(q)));
        acc = _mm512_add_pd(acc, _mm512_cvtps_pd(_mm256_castpd_ps(
            _mm512_extractf64x4_pd(_mm512_castps_pd(q), 1))));
        z += 16 - __builtin_popcount((unsigned)pos);
    }
    sum = _mm512_reduce_add_pd(acc);
#endif
    for (; i < n; i++) {
        float v = g[i] * ss, var = gm[i] - m * v * v;
        z += !(var > 0);
        sum += var > 0 ? (double)(v * v / var) : 0.0;
    }
    *zero += z;
    return sum;
}

/* Signed-decade bins, first step: the cell of each double x[i] (sign, exponent
 * clamped to [ce_lo, ce_lo + n_ce - 1], 5 mantissa bits) looked up in cells[] (its
 * bin, or AMBIGUOUS for the caller to settle exactly), zeros given zero_bin.  With
 * AVX-512: 8 values per step, the table read by a gather. */
FASTBP_HIDDEN void fastbp_decade_cells(const double *x, ptrdiff_t n, const int *cells,
                                       int ce_lo, int n_ce, int zero_bin, int *bins)
{
    ptrdiff_t i = 0;
#if defined(__AVX512F__) && defined(__AVX512VL__)
    const __m512i m7ff = _mm512_set1_epi64(0x7ff), bias = _mm512_set1_epi64(1023 + ce_lo);
    const __m512i zero = _mm512_setzero_si512(), top = _mm512_set1_epi64(n_ce - 1);
    const __m512i nce = _mm512_set1_epi64(n_ce), m31 = _mm512_set1_epi64(31);
    const __m256i zb = _mm256_set1_epi32(zero_bin);
    for (; i + 8 <= n; i += 8) {
        __m512d v = _mm512_loadu_pd(x + i);
        __m512i u = _mm512_castpd_si512(v);
        __m512i e = _mm512_sub_epi64(_mm512_and_si512(_mm512_srli_epi64(u, 52), m7ff), bias);
        e = _mm512_min_epi64(_mm512_max_epi64(e, zero), top);
        __m512i s = _mm512_and_si512(_mm512_sub_epi64(zero, _mm512_srli_epi64(u, 63)), nce);
        __m512i idx = _mm512_add_epi64(_mm512_slli_epi64(_mm512_add_epi64(s, e), 5),
                                       _mm512_and_si512(_mm512_srli_epi64(u, 47), m31));
        __m256i r = _mm256_i32gather_epi32(cells, _mm512_cvtepi64_epi32(idx), 4);
        __mmask8 z = _mm512_cmp_pd_mask(v, _mm512_setzero_pd(), _CMP_EQ_OQ);
        _mm256_storeu_si256((__m256i *)(bins + i), _mm256_mask_mov_epi32(r, z, zb));
    }
#endif
    for (; i < n; i++) {
        unsigned long long u;
        long long e;
        memcpy(&u, x + i, sizeof u);
        e = (long long)((u >> 52) & 0x7ff) - 1023 - ce_lo;
        e = e < 0 ? 0 : e;
        e = e > n_ce - 1 ? n_ce - 1 : e;
        bins[i] = x[i] == 0 ? zero_bin
                            : cells[((long long)(u >> 63) * n_ce + e) * 32 + (long long)((u >> 47) & 31)];
    }
}
