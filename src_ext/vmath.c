/* Vectorisable exp for the sigmoid activations of fastbp's kernels.
 *
 * libm's exp is a scalar call, which keeps the whole activation loop from being
 * vectorised.  This one is written so that the compiler vectorises it (no calls,
 * no branches, bit casts through memcpy).  It lives in its own C file because it
 * must NOT be compiled with -fassociative-math (used for the kernels' sums): its
 * range reduction relies on the exact rounding of (x*log2e + 1.5*2^52) - 1.5*2^52
 * and on the Cody-Waite split of ln 2, which reassociation would destroy.
 *
 * Method: x = k ln2 + r with |r| <= ln2/2, exp(r) by its Taylor polynomial of
 * degree 13 (truncation error < 5e-18 relative), scaled by 2^k as 2^(k/2) 2^(k-k/2)
 * so that results in the subnormal range are right too.  Inputs are clamped to
 * [-1100, 710] (exp is 0, resp. +inf, beyond), NaN propagates.  Maximum error
 * measured against glibc's exp on [-745, 709]: see tests/test_vmath.py.
 */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if defined(__GNUC__) || defined(__clang__)
#define FASTBP_HIDDEN __attribute__((visibility("hidden")))
#else
#define FASTBP_HIDDEN
#endif

static inline double pow2i(int64_t k)
{
    uint64_t bits = (uint64_t)(k + 1023) << 52;
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

static inline double exp_one(double v)
{
    const double shifter = 6755399441055744.0;          /* 1.5 * 2^52 */
    const double log2e = 1.4426950408889634;
    const double ln2hi = 6.93147180369123816490e-01;     /* 32 significant bits */
    const double ln2lo = 1.90821492927058770002e-10;
    double c = v < -1100.0 ? -1100.0 : (v > 710.0 ? 710.0 : v);  /* NaN stays NaN */
    double t = c * log2e + shifter;
    double kd = t - shifter;                              /* round(c / ln2) */
    int64_t ki, kh;
    double r, p;
    memcpy(&ki, &t, sizeof ki);
    ki -= 0x4338000000000000LL;                           /* the same integer */
    r = (c - kd * ln2hi) - kd * ln2lo;
    p = 1.0 / 6227020800.0;                               /* 1/13! */
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    kh = ki >> 1;
    return p * pow2i(kh) * pow2i(ki - kh);
}

/* x[i] = exp(x[i]) for i < n. */
FASTBP_HIDDEN void fastbp_vexp(double *x, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        x[i] = exp_one(x[i]);
}

/* x[i] = exp(x[i]) for i < n, float32 storage (computed in double, rounded once). */
FASTBP_HIDDEN void fastbp_vexpf(float *x, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        x[i] = (float)exp_one((double)x[i]);
}
