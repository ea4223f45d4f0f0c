/* A layer's weight gradient and its update in one pass, for small mini-batches.
 *
 * With m examples, g = alpha D^T A (D: m x n_out deltas, A: m x n_in inputs, both
 * row-major) has n_out n_in entries but only m multiply-adds each.  Through BLAS the
 * gradient is written to memory and read back by the update, and for m = 10 those two
 * passes over the layer cost as much as the products (workload A's first layer:
 * 23,520 weights).  Here each register block of g (FB_RB rows of W times two vectors
 * of columns) is summed over the m examples and applied to W (and the velocity) at
 * once, with the update's sums of squares (SPEC section 4: ||g_W||, ||W||, ||Delta W||,
 * and ||v|| for the overflow bounds of the next step): g never leaves the registers.
 *
 * The update is update_loop's of _kernels.pyx, every rule (plain SGD, momentum,
 * Nesterov's look-ahead) and statistic (the distance from the start weights too), so
 * that statistics never change which path trains; where the gradient is needed
 * afterwards (the diagnostics, record="epoch"'s sums) it is also stored.  The squares
 * are of values pre-scaled by powers of two (fsg, fsw, fsd, fsz), as there; float32
 * squares of four register blocks (at most 8 FB_RB of them per lane) are summed in
 * float, then in double.
 *
 * While it runs over the first layer, the kernel also prefetches the next
 * mini-batch's input rows (fastbp_gu_par's pf), a few cache lines after each
 * register block: gathered from memory at the start of the next mini-batch, ten
 * random rows of workload A cost about a sixth of its time, and a burst of prefetches
 * would wait on the same L1 miss buffers the pass needs.
 *
 * Portable: GCC vector extensions at the target's native width (one source for the
 * baseline, AVX2 and AVX-512 variants of the kernels).
 */
#include <stddef.h>
#include <stdint.h>
#if defined(__AVX512F__) || defined(__FMA__)
#include <immintrin.h>
#endif

#include "vcommon.h"
#include "vfused.h"

#if defined(__AVX512F__)
#define FB_VEC 64
#elif defined(__AVX__)
#define FB_VEC 32
#else
#define FB_VEC 16
#endif
/* rows of W per register block: 2 FB_RB accumulators, two input vectors and a
 * broadcast fit the 16 vector registers of AVX2 and SSE2 */
#define FB_RB 6
#if FB_RB != 4 && FB_RB != 6
#error "the row blocks' remainders (vfused_body.h) are written for FB_RB 4 or 6"
#endif

typedef double fb_vd __attribute__((vector_size(FB_VEC)));
typedef double fb_vdu __attribute__((vector_size(FB_VEC), aligned(8), may_alias));
typedef float fb_vf __attribute__((vector_size(FB_VEC)));
typedef float fb_vfu __attribute__((vector_size(FB_VEC), aligned(4), may_alias));
typedef double fb_vfd __attribute__((vector_size(2 * FB_VEC)));  /* float lanes, widened */

#define FB_INLINE static inline __attribute__((always_inline))

/* __builtin_prefetch's temporal locality hint: 1 (prefetcht2, into L2).  Measured
 * with `benchmarks/ab.py prefetch` on workload A float64 (none / prefetch, 9 rounds):
 * 1.06 with 1, 1.04 with 2 (prefetcht1), 1.02 with 3 (prefetcht0, into L1 as well)
 * and 0.82 with 0 (prefetchnta: evicted again before the gather reads it). */
#ifndef FB_PF_LOCALITY
#define FB_PF_LOCALITY 1
#endif

/* A cursor over the cache lines of the rows to prefetch: `per` lines per register
 * block, so that the misses to memory are spread over the layer's pass (a burst of
 * them would wait on the few L1 miss buffers the pass needs too). */
typedef struct {
    fastbp_rows rows;
    ptrdiff_t r;            /* the next row to start */
    const char *cur, *end;  /* the next line of the current row, and its end */
    int per;
} fb_pf;

FB_INLINE void fb_pf_step(fb_pf *s)
{
    for (int i = 0; i < s->per; i++) {
        if (s->cur >= s->end) {
            const char *row;
            if (s->r >= s->rows.n)
                return;
            row = s->rows.base + s->rows.idx[s->r++] * s->rows.bytes;
            s->cur = (const char *)((uintptr_t)row & ~(uintptr_t)63);
            s->end = row + s->rows.bytes;
        }
        __builtin_prefetch(s->cur, 0, FB_PF_LOCALITY);
        s->cur += 64;
    }
}

/* Every multiply-add is spelled out, and nothing is reassociated (this file is
 * compiled with -ffp-contract=off -fno-associative-math): left to the compiler, which
 * of two products it fuses into an add, or whether eta (g alpha) becomes (eta alpha) g,
 * differs between the specialised copies of the loop, and then training with
 * statistics would not give bit for bit the parameters of training without
 * (tests/test_contract.py, tests/test_interrupt.py). */
#if defined(__AVX512F__)
#define FMA_D(a, b, c) ((fb_vd)_mm512_fmadd_pd((__m512d)(a), (__m512d)(b), (__m512d)(c)))
#define FMA_F(a, b, c) ((fb_vf)_mm512_fmadd_ps((__m512)(a), (__m512)(b), (__m512)(c)))
#define FNMA_D(a, b, c) ((fb_vd)_mm512_fnmadd_pd((__m512d)(a), (__m512d)(b), (__m512d)(c)))
#define FNMA_F(a, b, c) ((fb_vf)_mm512_fnmadd_ps((__m512)(a), (__m512)(b), (__m512)(c)))
#elif defined(__FMA__)
#define FMA_D(a, b, c) ((fb_vd)_mm256_fmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(c)))
#define FMA_F(a, b, c) ((fb_vf)_mm256_fmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#define FNMA_D(a, b, c) ((fb_vd)_mm256_fnmadd_pd((__m256d)(a), (__m256d)(b), (__m256d)(c)))
#define FNMA_F(a, b, c) ((fb_vf)_mm256_fnmadd_ps((__m256)(a), (__m256)(b), (__m256)(c)))
#else
#define FMA_D(a, b, c) ((a) * (b) + (c))
#define FMA_F(a, b, c) ((a) * (b) + (c))
#define FNMA_D(a, b, c) ((c) - (a) * (b))
#define FNMA_F(a, b, c) ((c) - (a) * (b))
#endif

/* The first n lanes of a vector (the last columns of a row), the others zero; and
 * the store of the first n lanes. */
#if defined(__AVX512F__)
#define FB_MASKED(sfx, T, VT, MASK, LOADZ, STORE, RAW)                              \
    FB_INLINE VT ld_##sfx(const T *x, int n)                                        \
    {                                                                               \
        return (VT)LOADZ((MASK)((1u << n) - 1), x);                                 \
    }                                                                               \
    FB_INLINE void st_##sfx(T *x, VT v, int n)                                      \
    {                                                                               \
        STORE(x, (MASK)((1u << n) - 1), (RAW)v);                                    \
    }
#else
#define FB_MASKED(sfx, T, VT, MASK, LOADZ, STORE, RAW)                              \
    FB_INLINE VT ld_##sfx(const T *x, int n)                                        \
    {                                                                               \
        VT r = {0};                                                                 \
        for (int i = 0; i < n; i++)                                                 \
            r[i] = x[i];                                                            \
        return r;                                                                   \
    }                                                                               \
    FB_INLINE void st_##sfx(T *x, VT v, int n)                                      \
    {                                                                               \
        for (int i = 0; i < n; i++)                                                 \
            x[i] = v[i];                                                            \
    }
#endif
FB_MASKED(d, double, fb_vd, __mmask8, _mm512_maskz_loadu_pd, _mm512_mask_storeu_pd, __m512d)
FB_MASKED(f, float, fb_vf, __mmask16, _mm512_maskz_loadu_ps, _mm512_mask_storeu_ps, __m512)
#undef FB_MASKED

/* double */
#define T double
#define VT fb_vd
#define VTU fb_vdu
#define ACCT fb_vd
#define WIDEN(x) (x)
#define FMA FMA_D
#define FNMA FNMA_D
#define LD ld_d
#define ST st_d
#define SCALED 0
#define SFX(name) name##_d
#include "vfused_body.h"  /* undefines the parameters above */

/* float */
#define T float
#define VT fb_vf
#define VTU fb_vfu
#define ACCT fb_vfd
#define WIDEN(x) __builtin_convertvector((x), fb_vfd)
#define FMA FMA_F
#define FNMA FNMA_F
#define LD ld_f
#define ST st_f
#define SCALED 1
#define SFX(name) name##_f
#include "vfused_body.h"  /* undefines the parameters above */

FASTBP_HIDDEN void fastbp_grad_update(const double *D, const double *A, ptrdiff_t m,
                                      ptrdiff_t n_out, ptrdiff_t n_in, double *W, double *V,
                                      double *F, const double *W0, double *G, int mode,
                                      int stats, const fastbp_gu_par *p, double *q)
{
    gu_dispatch_d(D, A, m, n_out, n_in, W, V, F, W0, G, mode, stats, p, q);
}

FASTBP_HIDDEN void fastbp_grad_updatef(const float *D, const float *A, ptrdiff_t m,
                                       ptrdiff_t n_out, ptrdiff_t n_in, float *W, float *V,
                                       float *F, const float *W0, float *G, int mode,
                                       int stats, const fastbp_gu_par *p, double *q)
{
    gu_dispatch_f(D, A, m, n_out, n_in, W, V, F, W0, G, mode, stats, p, q);
}
