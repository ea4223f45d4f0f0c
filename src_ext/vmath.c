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

#include "vcommon.h"

static inline double pow2i(int64_t k)
{
    uint64_t bits = (uint64_t)(k + 1023) << 52;
    double d;
    memcpy(&d, &bits, sizeof d);
    return d;
}

/* Range reduction shared by exp and tanh: c (in [-1100, 710], or NaN) = k ln2 + r
 * with |r| <= ln2/2; returns r and stores k. */
static inline double reduce(double c, int64_t *k)
{
    const double shifter = 6755399441055744.0;          /* 1.5 * 2^52 */
    const double log2e = 1.4426950408889634;
    const double ln2hi = 6.93147180369123816490e-01;     /* 32 significant bits */
    const double ln2lo = 1.90821492927058770002e-10;
    double t = c * log2e + shifter;
    double kd = t - shifter;                              /* round(c / ln2) */
    int64_t ki;
    memcpy(&ki, &t, sizeof ki);
    *k = ki - 0x4338000000000000LL;                       /* the same integer */
    return (c - kd * ln2hi) - kd * ln2lo;
}

/* expm1(r) for |r| <= ln2/2: the Taylor polynomial of degree 13 without its
 * constant term (truncation error < 5e-18 relative). */
static inline double expm1_poly(double r)
{
    double p = 1.0 / 6227020800.0;                        /* 1/13! */
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
    return p * r;
}

static inline double exp_one(double v)
{
    int64_t ki, kh;
    /* exp is 0 below -1100 and +inf above 710; NaN passes the clamp */
    double c = v < -1100.0 ? -1100.0 : (v > 710.0 ? 710.0 : v);
    double p = expm1_poly(reduce(c, &ki)) + 1.0;
    kh = ki >> 1;
    return p * pow2i(kh) * pow2i(ki - kh);
}

/* float32: the same method in float arithmetic (16 lanes per AVX-512 register):
 * degree-7 polynomials, truncation error < 6e-9 relative, below float's 6e-8. */
static inline float pow2if(int32_t k)
{
    uint32_t bits = (uint32_t)(k + 127) << 23;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline float reduce_f(float c, int32_t *k)
{
    const float shifter = 12582912.0f;                    /* 1.5 * 2^23 */
    const float log2e = 1.44269502f;
    const float ln2hi = 0.693145751953125f;               /* 16 significant bits */
    const float ln2lo = 1.42860676533018704e-06f;
    float t = c * log2e + shifter;
    float kd = t - shifter;
    int32_t ki;
    memcpy(&ki, &t, sizeof ki);
    *k = ki - 0x4B400000;
    return (c - kd * ln2hi) - kd * ln2lo;
}

static inline float expm1_poly_f(float r)
{
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    return p * r;
}

static inline float exp_one_f(float v)
{
    int32_t ki, kh;
    float c = v < -104.0f ? -104.0f : (v > 89.0f ? 89.0f : v);
    float p = expm1_poly_f(reduce_f(c, &ki)) + 1.0f;
    kh = ki >> 1;
    return p * pow2if(kh) * pow2if(ki - kh);
}

/* x[i] = tanh(x[i]) for i < n: tanh|x| = -e / (2 + e) with e = expm1(-2|x|)
 * = 2^k expm1(r) + (2^k - 1), which keeps full relative accuracy for tiny x (k = 0:
 * 2^0 expm1(r) + 0 is expm1(r) exactly, no case of its own).  |x| is first clamped
 * to 20 (tanh is 1 in double from 19.1 on; NaN passes the clamp), so -2|x| lies in
 * [-40, 0]: exp's clamps are not needed and 2^k (k >= -58) is one normal number.
 * Half the vector operations of exp's general clamps and scaling, which is what
 * bounds this loop (the division overlaps them): 0.79 against 1.18 ns per double,
 * 0.28 against 0.51 per float, on the Intel Xeon of benchmarks/README.md
 * (python benchmarks/micro/kernels.py). */
static inline double tanh_one(double v)
{
    double a = v < 0 ? -v : v, r, s, e;
    int64_t ki;
    a = a > 20.0 ? 20.0 : a;
    r = reduce(-2.0 * a, &ki);
    s = pow2i(ki);
    e = s * expm1_poly(r) + (s - 1.0);
    a = -e / (2.0 + e);
    return v < 0 ? -a : a;
}

FASTBP_HIDDEN void fastbp_vtanh(double *x, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        x[i] = tanh_one(x[i]);
}

/* The same in float32: |x| clamped to 10 (tanh is 1 in float from 9.1 on), so
 * -2|x| lies in [-20, 0] and 2^k >= 2^-29. */
FASTBP_HIDDEN void fastbp_vtanhf(float *x, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++) {
        float v = x[i], a = v < 0 ? -v : v, r, s, e;
        int32_t ki;
        a = a > 10.0f ? 10.0f : a;
        r = reduce_f(-2.0f * a, &ki);
        s = pow2if(ki);
        e = s * expm1_poly_f(r) + (s - 1.0f);
        a = -e / (2.0f + e);
        x[i] = v < 0 ? -a : a;
    }
}

/* x[i] = exp(x[i]) for i < n. */
FASTBP_HIDDEN void fastbp_vexp(double *x, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        x[i] = exp_one(x[i]);
}

/* x[i] = exp(x[i]) for i < n, in float32 arithmetic. */
FASTBP_HIDDEN void fastbp_vexpf(float *x, ptrdiff_t n)
{
    for (ptrdiff_t i = 0; i < n; i++)
        x[i] = exp_one_f(x[i]);
}

/* max |x[i]| for i < n (0 for n = 0; NaN if any x[i] is NaN), vectorisable: the
 * bit patterns of non-negative doubles order like their values, and NaN's lie
 * above +inf's, so an integer max over |x|'s bits needs no branch. */
FASTBP_HIDDEN double fastbp_maxabs(const double *x, ptrdiff_t n)
{
    uint64_t m = 0, b;
    double r;
    for (ptrdiff_t i = 0; i < n; i++) {
        memcpy(&b, x + i, sizeof b);
        b &= 0x7FFFFFFFFFFFFFFFULL;
        m = b > m ? b : m;
    }
    memcpy(&r, &m, sizeof r);
    return r;
}
