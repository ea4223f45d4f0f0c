/* Microbenchmarks of the C helpers of the compiled kernels on the chapter's shapes:
 * the fused moments + GSNR sum of the first layer (10 examples, 30 x 784 weights),
 * the histogram counting of one layer's deltas (300 values), and the vectorised tanh
 * and exp on one layer of workload C (32 examples x 32 units).  Built and run by
 * benchmarks/micro/kernels.py, which writes the decade tables and the data into DIR. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "vhist.h"
#include "vmath.h"
#include "vstats.h"

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + 1e-9 * t.tv_nsec;
}

static void *load(const char *dir, const char *name, size_t bytes)
{
    char path[4096];
    void *buf = malloc(bytes);
    FILE *f;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    f = fopen(path, "rb");
    if (!f || fread(buf, 1, bytes, f) != bytes) {
        fprintf(stderr, "cannot read %s\n", path);
        exit(1);
    }
    fclose(f);
    return buf;
}

/* best of 5 repetitions of `reps` calls, in seconds per call */
#define BEST(reps, call)                                                                \
    ({                                                                                  \
        double best_ = 1e9;                                                             \
        for (int r_ = 0; r_ < 5; r_++) {                                                \
            double t0_ = now();                                                         \
            for (int i_ = 0; i_ < (reps); i_++)                                         \
                call;                                                                   \
            double t_ = (now() - t0_) / (reps);                                         \
            best_ = t_ < best_ ? t_ : best_;                                            \
        }                                                                               \
        best_;                                                                          \
    })

int main(int argc, char **argv)
{
    const char *dir = argc > 1 ? argv[1] : ".";
    const int m = 10, n_in = 784, n_out = 30, nd = 300, nz = 32 * 32;
    fastbp_decades t;
    int *meta = load(dir, "meta.bin", 10 * sizeof(int));
    double *g = load(dir, "g.bin", sizeof(double) * n_in * n_out);
    double *a2 = load(dir, "a2.bin", sizeof(double) * m * n_in);
    double *d2 = load(dir, "d2.bin", sizeof(double) * m * n_out);
    double *delta = load(dir, "delta.bin", sizeof(double) * nd);
    double *z = load(dir, "z.bin", sizeof(double) * nz), *zb = malloc(sizeof(double) * nz);
    float *zf = malloc(sizeof(float) * nz), *zbf = malloc(sizeof(float) * nz);
    float *gf = malloc(sizeof(float) * n_in * n_out), *a2f = malloc(sizeof(float) * m * n_in);
    float *d2f = malloc(sizeof(float) * m * n_out), *deltaf = malloc(sizeof(float) * nd);
    int32_t h[FASTBP_HIST_MAX_BINS] = {0};
    ptrdiff_t zero = 0;
    double sink = 0, s;
    int i;
    t.ce_lo = meta[0], t.n_ce = meta[1], t.e2_min = meta[2], t.n_e2 = meta[3];
    t.decade_min = meta[4], t.n_decades = meta[5], t.zero_bin = meta[6];
    t.ambiguous = meta[7], t.n_bins = meta[8];
    t.cells = load(dir, "cells.bin", sizeof(int) * 2 * t.n_ce * 32);
    t.dec_tbl = load(dir, "dec_tbl.bin", sizeof(int) * t.n_e2);
    t.edges = load(dir, "edges.bin", sizeof(double) * (t.n_decades + 1));
    for (i = 0; i < n_in * n_out; i++)
        gf[i] = (float)g[i];
    for (i = 0; i < m * n_in; i++)
        a2f[i] = (float)a2[i];
    for (i = 0; i < m * n_out; i++)
        d2f[i] = (float)d2[i];
    for (i = 0; i < nd; i++)
        deltaf[i] = (float)delta[i];
    for (i = 0; i < nz; i++)
        zf[i] = (float)z[i];

    s = BEST(20000, sink += fastbp_moments_gsnr(g, a2, d2, m, n_in, n_out, 1.0, &zero));
    printf("moments + GSNR, 10 x (30 x 784), float64: %7.3f us per call\n", s * 1e6);
    s = BEST(20000, sink += fastbp_moments_gsnrf(gf, a2f, d2f, m, n_in, n_out, 1.0f, &zero));
    printf("moments + GSNR, 10 x (30 x 784), float32: %7.3f us per call\n", s * 1e6);
    s = BEST(200000, fastbp_hist_decades(delta, NULL, 1, nd, &t, h));
    printf("decade bins, 300 values, float64:         %7.3f ns per value\n", s * 1e9 / nd);
    s = BEST(200000, fastbp_hist_decadesf(deltaf, NULL, 1, nd, &t, h));
    printf("decade bins, 300 values, float32:         %7.3f ns per value\n", s * 1e9 / nd);
    s = BEST(200000, fastbp_hist_linear(delta, nd, -1.0, 1.0, 10.0, 20, h));
    printf("linear bins, 300 values, float64:         %7.3f ns per value\n", s * 1e9 / nd);
    s = BEST(200000, fastbp_hist_linearf(deltaf, nd, -1.0, 1.0, 10.0, 20, h));
    printf("linear bins, 300 values, float32:         %7.3f ns per value\n", s * 1e9 / nd);
    /* each call on a fresh copy of the inputs; the copy's own time is subtracted */
#define PER_VALUE(label, fn, buf, src)                                                  \
    do {                                                                                \
        s = BEST(200000, {                                                              \
            memcpy(buf, src, sizeof(*buf) * nz); fn(buf, nz); sink += buf[7]; });      \
        s -= BEST(200000, { memcpy(buf, src, sizeof(*buf) * nz); sink += buf[7]; });   \
        printf("%-42s%7.3f ns per value\n", label, s * 1e9 / nz);                     \
    } while (0)
    PER_VALUE("tanh, 1,024 values, float64:", fastbp_vtanh, zb, z);
    PER_VALUE("tanh, 1,024 values, float32:", fastbp_vtanhf, zbf, zf);
    PER_VALUE("exp, 1,024 values, float64:", fastbp_vexp, zb, z);
    PER_VALUE("exp, 1,024 values, float32:", fastbp_vexpf, zbf, zf);
    return sink == 42.0 && h[0] == -1; /* keeps the results alive */
}
