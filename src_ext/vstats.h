/* The GSNR sum of the moments statistic group (see vstats.c). */
#ifndef FASTBP_VSTATS_H
#define FASTBP_VSTATS_H
#include <stddef.h>
double fastbp_gsnr_sum(const double *g, const double *gm, ptrdiff_t n, double ss, double m,
                       ptrdiff_t *zero);
double fastbp_gsnr_sumf(const float *g, const float *gm, ptrdiff_t n, float ss, float m,
                        ptrdiff_t *zero);
#endif
