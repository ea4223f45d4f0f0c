/* Vectorisable elementary functions of fastbp's kernels (see vmath.c). */
#ifndef FASTBP_VMATH_H
#define FASTBP_VMATH_H
#include <stddef.h>
void fastbp_vexp(double *x, ptrdiff_t n);
void fastbp_vexpf(float *x, ptrdiff_t n);
void fastbp_vtanh(double *x, ptrdiff_t n);
void fastbp_vtanhf(float *x, ptrdiff_t n);
double fastbp_maxabs(const double *x, ptrdiff_t n);
#endif
