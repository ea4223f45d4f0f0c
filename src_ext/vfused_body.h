/* The gradient-and-update kernel for one dtype, included by vfused.c with T (the
 * dtype), VT / VTU (its vector, aligned / unaligned), ACCT (the vector the squares
 * are summed in: double lanes), WIDEN (VT to ACCT), FMA / FNMA (a b + c and c - a b),
 * LD / ST (loads and stores of the first n lanes), SCALED (whether the squares are of
 * values pre-scaled by powers of two) and SFX (name suffix) defined; undefines them
 * at its end.  No include guard: included once per dtype. */

#define NL ((ptrdiff_t)(sizeof(VT) / sizeof(T)))

/* the sums of squares in the dtype's lanes: SCALED, over a few register blocks, then
 * added to gu_acc's double lanes; otherwise the sums themselves (gu_acc) */
typedef struct {
    VT g, w, z, d, v, f;
} SFX(gu_vacc);

#if SCALED
typedef struct {
    ACCT g, w, z, d, v, f;
} SFX(gu_acc);
#else
typedef SFX(gu_vacc) SFX(gu_acc);
#endif

typedef struct {
    VT alpha, c, ea, eln, mu, mun, ag, fsw, fsd, fsz;
    const T *W0;  /* start weights (distance) or NULL */
    T *G;         /* where to store the gradient, or NULL */
} SFX(gu_vpar);

#define LDU(x) ((VT) * (const VTU *)(x))

FB_INLINE VT SFX(gu_bc)(T x)
{
    VT r = {0};
    return r + x;
}

#if SCALED
#define SCALE(x, s) ((x) * (s))
#else
#define SCALE(x, s) (x)
#endif

/* Rows 0..rb-1 of W (and V, F), columns 0..2 NL-1 from off (D offset to the block's
 * first row's column, A to its first column); with msk, only the first n0 (n1)
 * lanes of the first (second) vector of each row. */
FB_INLINE void SFX(gu_block)(const T *D, const T *A, ptrdiff_t m, ptrdiff_t n_out,
                             ptrdiff_t n_in, ptrdiff_t off, T *W, T *V, T *F, const int rb,
                             const int msk, int n0, int n1, const int mode, const int st,
                             const int ex, const SFX(gu_vpar) *p, SFX(gu_vacc) *acc)
{
    VT g[FB_RB][2];
    for (int r = 0; r < rb; r++)
        for (int v = 0; v < 2; v++)
            g[r][v] = (VT){0};
    for (ptrdiff_t n = 0; n < m; n++) {
        VT a[2];
        const T *dn = D + n * n_out;
        for (int v = 0; v < 2; v++)
            a[v] = msk ? LD(A + n * n_in + v * NL, (v ? n1 : n0)) : LDU(A + n * n_in + v * NL);
        for (int r = 0; r < rb; r++) {
            VT d = SFX(gu_bc)(dn[r]);
            for (int v = 0; v < 2; v++)
                g[r][v] = FMA(d, a[v], g[r][v]);
        }
    }
    VT sg = acc->g, sw = acc->w, sz = acc->z, sd = acc->d, sv = acc->v, sf = acc->f;
    /* unrolled, so that g stays in registers (the masked copy exceeds GCC's own
     * unrolling limits otherwise) */
#pragma GCC unroll 8
    for (int r = 0; r < rb; r++) {
#pragma GCC unroll 2
        for (int v = 0; v < 2; v++) {
            ptrdiff_t i = off + r * n_in + v * NL;
            VT gs = g[r][v], wo, wn, t;
            wo = msk ? LD(W + i, (v ? n1 : n0)) : LDU(W + i);
            if (ex && p->G) {
                if (msk)
                    ST(p->G + i, gs * p->alpha, (v ? n1 : n0));
                else
                    *(VTU *)(p->G + i) = gs * p->alpha;
            }
            if (mode == GU_PLAIN) {
                wn = FNMA(p->ea, gs, wo * p->c);
            } else {
                VT vel, base = wo, vo;
                if (mode == GU_NESTEROV)
                    base = msk ? LD(F + i, (v ? n1 : n0)) : LDU(F + i);
                vo = msk ? LD(V + i, (v ? n1 : n0)) : LDU(V + i);
                vel = FNMA(p->ea, gs, FNMA(p->eln, base, vo * p->mu));
                if (msk)
                    ST(V + i, vel, (v ? n1 : n0));
                else
                    *(VTU *)(V + i) = vel;
                wn = wo + vel;
                t = SCALE(vel, p->fsd);
                sv = FMA(t, t, sv);
                if (mode == GU_NESTEROV) {
                    VT ph = FMA(p->mun, vel, wn);
                    if (msk)
                        ST(F + i, ph, (v ? n1 : n0));
                    else
                        *(VTU *)(F + i) = ph;
                    t = SCALE(ph, p->fsw);
                    sf = FMA(t, t, sf);
                }
            }
            if (msk)
                ST(W + i, wn, (v ? n1 : n0));
            else
                *(VTU *)(W + i) = wn;
            t = SCALE(wn, p->fsw);
            sw = FMA(t, t, sw);
            if (st) {
                t = SCALE(gs, p->ag);
                sg = FMA(t, t, sg);
                t = SCALE(wn - wo, p->fsd);
                sd = FMA(t, t, sd);
            }
            if (ex && p->W0) {
                VT w0 = msk ? LD(p->W0 + i, (v ? n1 : n0)) : LDU(p->W0 + i);
                t = SCALE(wn - w0, p->fsz);
                sz = FMA(t, t, sz);
            }
        }
    }
    acc->g = sg;
    acc->w = sw;
    acc->z = sz;
    acc->d = sd;
    acc->v = sv;
    acc->f = sf;
}

#if SCALED
/* The float sums of squares into the double ones (the sums each rule and flag make),
 * and zeroed. */
FB_INLINE void SFX(gu_flush)(SFX(gu_vacc) *va, SFX(gu_acc) *acc, const int mode,
                             const int st, const int ex)
{
    acc->w += WIDEN(va->w);
    if (mode != GU_PLAIN)
        acc->v += WIDEN(va->v);
    if (mode == GU_NESTEROV)
        acc->f += WIDEN(va->f);
    if (st) {
        acc->g += WIDEN(va->g);
        acc->d += WIDEN(va->d);
    }
    if (ex)
        acc->z += WIDEN(va->z);
    va->g = va->w = va->z = va->d = va->v = va->f = (VT){0};
}

/* register blocks whose float squares are summed before they go to double: at most
 * 4 x 2 FB_RB = 48 terms per lane (update_loop's blocks: 64) */
#define FB_FLUSH 4
#endif

/* Rows j .. j + rb - 1, all columns: two vectors at a time, then the last n_in mod
 * 2 NL masked.  Rows outer, columns inner: each row block streams its rows of W in
 * order (the prefetchers follow FB_RB streams, not n_out), and A's rows come from L1
 * or L2 again for every block. */
FB_INLINE void SFX(gu_rows)(const T *D, const T *A, ptrdiff_t m, ptrdiff_t n_out,
                            ptrdiff_t n_in, T *W, T *V, T *F, ptrdiff_t j, const int rb,
                            const int mode, const int st, const int ex,
                            const SFX(gu_vpar) *p, SFX(gu_acc) *acc, fb_pf *pf)
{
    ptrdiff_t k = 0, rem;
#if SCALED
    SFX(gu_vacc) va = {{0}, {0}, {0}, {0}, {0}, {0}};
    int nb = 0;
#define VA (&va)
#else
#define VA acc
#endif
    for (; k + 2 * NL <= n_in; k += 2 * NL) {
        SFX(gu_block)(D + j, A + k, m, n_out, n_in, j * n_in + k, W, V, F, rb, 0, 0, 0, mode,
                      st, ex, p, VA);
        fb_pf_step(pf);
#if SCALED
        if (++nb == FB_FLUSH) {
            SFX(gu_flush)(&va, acc, mode, st, ex);
            nb = 0;
        }
#endif
    }
    rem = n_in - k;
    if (rem > 0)
        SFX(gu_block)(D + j, A + k, m, n_out, n_in, j * n_in + k, W, V, F, rb, 1,
                      rem < NL ? (int)rem : (int)NL, rem < NL ? 0 : (int)(rem - NL), mode, st,
                      ex, p, VA);
#if SCALED
    SFX(gu_flush)(&va, acc, mode, st, ex);
#endif
#undef VA
}

FB_INLINE void SFX(gu_layer)(const T *D, const T *A, ptrdiff_t m, ptrdiff_t n_out,
                             ptrdiff_t n_in, T *W, T *V, T *F, const T *W0, T *G,
                             const int mode, const int st, const int ex,
                             const fastbp_gu_par *par, double *q)
{
    SFX(gu_vpar) p;
    SFX(gu_acc) acc;
    ptrdiff_t j, blocks = ((n_out + FB_RB - 1) / FB_RB) * ((n_in + 2 * NL - 1) / (2 * NL));
    double tq[6];
    fb_pf pf = {par->pf, 0, NULL, NULL, 0};
    if (pf.rows.n > 0)  /* lines per block: every row's, one more where it straddles */
        pf.per = (int)((pf.rows.n * (pf.rows.bytes / 64 + 2) + blocks - 1) / blocks);
    p.alpha = SFX(gu_bc)((T)par->alpha);
    p.c = SFX(gu_bc)((T)par->c);
    p.ea = SFX(gu_bc)((T)(par->eta * par->alpha));
    p.eln = SFX(gu_bc)((T)(par->eta * par->ln));
    p.mu = SFX(gu_bc)((T)par->mu);
    p.mun = SFX(gu_bc)((T)par->mu_next);
    p.ag = SFX(gu_bc)((T)(par->alpha * par->fsg));
    p.fsw = SFX(gu_bc)((T)par->fsw);
    p.fsd = SFX(gu_bc)((T)par->fsd);
    p.fsz = SFX(gu_bc)((T)par->fsz);
    p.W0 = W0;
    p.G = G;
    acc.g = acc.w = acc.z = acc.d = acc.v = acc.f = (ACCT){0};
    for (j = 0; j + FB_RB <= n_out; j += FB_RB)
        SFX(gu_rows)(D, A, m, n_out, n_in, W, V, F, j, FB_RB, mode, st, ex, &p, &acc, &pf);
#define FB_TAIL(rb)                                                                \
    case rb:                                                                       \
        SFX(gu_rows)(D, A, m, n_out, n_in, W, V, F, j, rb, mode, st, ex, &p, &acc, &pf); \
        break;
    switch (n_out - j) {
        FB_TAIL(1)
        FB_TAIL(2)
        FB_TAIL(3)
#if FB_RB > 4
        FB_TAIL(4)
        FB_TAIL(5)
#endif
    default:
        break;
    }
#undef FB_TAIL
    for (j = 0; j < 6; j++)
        tq[j] = 0;
    for (j = 0; j < (ptrdiff_t)(sizeof(ACCT) / sizeof(double)); j++) {
        tq[0] += acc.g[j];
        tq[1] += acc.w[j];
        tq[2] += acc.z[j];
        tq[3] += acc.d[j];
        tq[4] += acc.v[j];
        tq[5] += acc.f[j];
    }
#if !SCALED
    tq[0] *= par->alpha * par->alpha;  /* the squares of the unscaled sums */
#endif
    for (j = 0; j < 6; j++)
        q[j] += tq[j];
}

/* One specialised loop nest per update rule, statistics flag and whether the gradient
 * is stored or the distance summed (ex: only on mini-batches the diagnostics sample,
 * so that the others run without a test of G and W0 per vector). */
static void SFX(gu_dispatch)(const T *D, const T *A, ptrdiff_t m, ptrdiff_t n_out,
                             ptrdiff_t n_in, T *W, T *V, T *F, const T *W0, T *G, int mode,
                             int stats, const fastbp_gu_par *p, double *q)
{
#define GU_LAYER(md, st, ex) \
    SFX(gu_layer)(D, A, m, n_out, n_in, W, V, F, W0, G, md, st, ex, p, q)
#define GU_CALL(md)                                   \
    do {                                              \
        if (G || W0) {                                \
            if (stats)                                \
                GU_LAYER(md, 1, 1);                   \
            else                                      \
                GU_LAYER(md, 0, 1);                   \
        } else if (stats) {                           \
            GU_LAYER(md, 1, 0);                       \
        } else {                                      \
            GU_LAYER(md, 0, 0);                       \
        }                                             \
    } while (0)
    switch (mode) {
    case GU_NESTEROV:
        GU_CALL(GU_NESTEROV);
        break;
    case GU_MOMENTUM:
        GU_CALL(GU_MOMENTUM);
        break;
    default:
        GU_CALL(GU_PLAIN);
    }
#undef GU_CALL
#undef GU_LAYER
}

#undef SCALE
#undef LDU
#ifdef FB_FLUSH
#undef FB_FLUSH
#endif
#undef NL
/* the parameters of this inclusion */
#undef T
#undef VT
#undef VTU
#undef ACCT
#undef WIDEN
#undef FMA
#undef FNMA
#undef LD
#undef ST
#undef SCALED
#undef SFX
