/* A layer's weight gradient and its update in one pass (see vfused.c). */
#ifndef FASTBP_VFUSED_H
#define FASTBP_VFUSED_H
#include <stddef.h>
#include <stdint.h>

/* Rows base + idx[r] bytes (r < n) of a row-major array: what the kernel prefetches
 * while it runs (the next mini-batch's inputs); n = 0 for none. */
typedef struct {
    const char *base;
    const int64_t *idx;
    ptrdiff_t n, bytes;
} fastbp_rows;

/* The update's constants (update_loop's of _kernels.pyx): alpha scales the gradient;
 * w_new = c w - eta g (GU_PLAIN), or v = mu v - eta (g + ln w), w_new = w + v
 * (GU_MOMENTUM), or the same with ln times the look-ahead phi and then
 * phi = w_new + mu_next v (GU_NESTEROV); the sums of squares are of values times
 * fsg, fsw, fsd and fsz. */
typedef struct {
    double alpha, c, eta, ln, mu, mu_next, fsg, fsw, fsd, fsz;
    fastbp_rows pf;  /* prefetched spread over the layer's register blocks */
} fastbp_gu_par;

enum { GU_PLAIN = 0, GU_MOMENTUM = 1, GU_NESTEROV = 2 };

/* W (n_out x n_in, row-major) updated in place by g = alpha D^T A (D: m x n_out,
 * A: m x n_in, row-major), with the velocity V and look-ahead F (GU_NESTEROV) as mode
 * says; g is stored in G unless G is NULL, and ||W_new - W0|| summed unless W0 is
 * NULL.  q[0..5] += the scaled sums of squares of g (stats), w_new, w_new - W0,
 * w_new - w_old (stats), v and phi. */
void fastbp_grad_update(const double *D, const double *A, ptrdiff_t m, ptrdiff_t n_out,
                        ptrdiff_t n_in, double *W, double *V, double *F, const double *W0,
                        double *G, int mode, int stats, const fastbp_gu_par *p, double *q);
void fastbp_grad_updatef(const float *D, const float *A, ptrdiff_t m, ptrdiff_t n_out,
                         ptrdiff_t n_in, float *W, float *V, float *F, const float *W0,
                         float *G, int mode, int stats, const fastbp_gu_par *p, double *q);
#endif
