/* The GSNR sum of the moments statistic group (see vstats.c). */
#ifndef FASTBP_VSTATS_H
#define FASTBP_VSTATS_H
#include <stddef.h>
double fastbp_gsnr_sum(const double *g, const double *gm, ptrdiff_t n, double ss, double m,
                       ptrdiff_t *zero);
double fastbp_gsnr_sumf(const float *g, const float *gm, ptrdiff_t n, float ss, float m,
                        ptrdiff_t *zero);
/* The same with the second moments (d2)^T (a2) formed on the fly, for small m. */
double fastbp_moments_gsnr(const double *g, const double *a2, const double *d2, ptrdiff_t m,
                           ptrdiff_t n_in, ptrdiff_t n_out, double ss, ptrdiff_t *zero);
double fastbp_moments_gsnrf(const float *g, const float *a2, const float *d2, ptrdiff_t m,
                            ptrdiff_t n_in, ptrdiff_t n_out, float ss, ptrdiff_t *zero);
#endif
