/* Histogram counting of the histograms statistic group (see vhist.c). */
#ifndef FASTBP_VHIST_H
#define FASTBP_VHIST_H
#include <stddef.h>
#include <stdint.h>

/* The most bins a decade or linear histogram may have (sub-histograms live on the
 * stack); _kernels.pyx checks its bin counts against it at import. */
#define FASTBP_HIST_MAX_BINS 128

/* The signed-decade bins: the tables _kernels.pyx builds, and their constants. */
typedef struct {
    const int *cells;    /* (2, n_ce, 32) bin of each (sign, exponent, 5 mantissa bits)
                            cell of a double, or `ambiguous` */
    const double *edges; /* the n_decades + 1 decade edges 10^k */
    const int *dec_tbl;  /* (n_e2) index of the largest edge <= 2^e, e = e2_min .. */
    int ce_lo, n_ce, e2_min, n_e2, decade_min, n_decades, zero_bin, ambiguous, n_bins;
} fastbp_decades;

void fastbp_hist_decades(const double *x, const double *b, ptrdiff_t rows, ptrdiff_t n,
                         const fastbp_decades *t, int32_t *h);
void fastbp_hist_decadesf(const float *x, const float *b, ptrdiff_t rows, ptrdiff_t n,
                          const fastbp_decades *t, int32_t *h);
void fastbp_hist_linear(const double *x, ptrdiff_t n, double lo, double hi, double scale,
                        int n_linear, int32_t *h);
void fastbp_hist_linearf(const float *x, ptrdiff_t n, double lo, double hi, double scale,
                         int n_linear, int32_t *h);
#endif
