/*
 * gram.c - Gram matrices of calibration inputs (dsyrk or checked ssyrk, in
 * row chunks), the cross terms, and the quadratic forms that turn them into
 * exact per-row output errors (dsymm, or ssymm with double sums).
 */
#include "gram.h"

#include "common/bp_profile.h"
#include "common/bp_threads.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GRAM_CHUNK_ROWS 1024

int bp_gram_build(bp_gram *g, const float *X, const float *Xq, int64_t n,
                  int64_t ld, int64_t col0, int64_t d, bp_error *err)
{
    return bp_gram_build_mode(g, X, Xq, n, ld, col0, d, n < d, err);
}

int bp_gram_single_pays(int64_t n, int64_t d, int64_t rows, size_t n_cand)
{
    if (d < BP_GRAM_SINGLE_MIN_IN)
        return 0;
    double nn = (double)n, dd = (double)d, c = (double)n_cand;
    double saved = 0.5 * (nn * dd * dd + c * 2.0 * (double)rows * dd * dd);
    double check = c * 9.0 * nn * dd;    /* 4 rows exactly, from the rows in double */
    return saved > check;
}

double bp_gram_kept_flops(int64_t n, int64_t d, int64_t rows, size_t n_cand, int64_t f_rows)
{
    double nn = (double)n, dd = (double)d, o = (double)rows, c = (double)n_cand;
    return (c + 1.0) * 2.0 * nn * dd * o + c * 2.0 * (double)f_rows * (double)f_rows * nn;
}

int bp_gram_keep_rows(int64_t n, int64_t d, int64_t rows, int quantized, size_t n_cand,
                      int64_t f_rows, int single)
{
    double nn = (double)n, dd = (double)d, o = (double)rows, c = (double)n_cand;
    double f2 = 2.0 * (double)f_rows * (double)f_rows, h = single ? 0.5 : 1.0;
    double cross = fmin(3.0 * nn * dd * dd + 4.0 * o * dd * dd, 4.0 * nn * dd * o);
    double gram = h * nn * dd * dd + (quantized ? cross : 0.0)   /* Gb; c and e0 */
                  + 2.0 * o * dd * dd                             /* the energy */
                  + c * (h * 2.0 * o * dd * dd + f2 * dd);        /* per candidate */
    return bp_gram_kept_flops(n, d, rows, n_cand, f_rows) < gram;  /* W X^T once, What Xbar^T */
}

/* Are g's inputs quantized (cross terms c and e0 exist)? */
static int quantized(const bp_gram *g)
{
    return g->st ? g->st->qtx != NULL : g->Xq != NULL;
}

/* Let go of Q (freed unless another gram's, bp_gram_use_totals). */
static void drop_q(bp_gram *g)
{
    if (!g->q_borrowed)
        free(g->Q);
    g->Q = NULL, g->q_borrowed = 0, g->totals = 0;
}

/* m rows of columns [col0, col0 + d) in double: Xbar (Xq, or X without it)
 * into B and, with Xq and D, dX = Xq - X into D. */
static void fill_chunk(double *B, double *D, const float *X, const float *Xq, int64_t m,
                       int64_t ld, int64_t col0, int64_t d)
{
    for (int64_t i = 0; i < m; i++) {
        const float *x = X + i * ld + col0;
        double *b = B + i * d;
        if (!Xq) {
            for (int64_t j = 0; j < d; j++)
                b[j] = x[j];
            continue;
        }
        const float *xq = Xq + i * ld + col0;
        for (int64_t j = 0; j < d; j++)
            b[j] = xq[j];
        if (!D)
            continue;
        double *dx = D + i * d;
        for (int64_t j = 0; j < d; j++)
            dx[j] = (double)xq[j] - (double)x[j];
    }
}

int bp_gram_build_mode(bp_gram *g, const float *X, const float *Xq, int64_t n, int64_t ld,
                       int64_t col0, int64_t d, int keep_rows, bp_error *err)
{
    return bp_gram_build_prec(g, X, Xq, n, ld, col0, d, keep_rows, 0, err);
}

/* Gb in double: dsyrk over 1024-row chunks of Xbar (g's inputs), or
 * qtq / n from statistics. */
static int build_double(bp_gram *g, bp_error *err)
{
    int64_t d = g->d, n = g->n, chunk = n < GRAM_CHUNK_ROWS ? n : GRAM_CHUNK_ROWS;
    if (g->st) {
        if (!(g->G = bp_malloc((size_t)(d * d) * sizeof(double), err)))
            return -1;
        for (int64_t i = 0; i < d * d; i++)
            g->G[i] = g->st->qtq[i] / (double)n;
        return 0;
    }
    g->G = bp_calloc((size_t)(d * d), sizeof(double), err);
    double *B = bp_malloc((size_t)(chunk * d) * sizeof(double), err);
    if (!g->G || !B) {
        free(B);
        return -1;
    }
    for (int64_t r = 0; r < n; r += chunk) {
        int64_t m = n - r < chunk ? n - r : chunk;
        fill_chunk(B, NULL, g->X + r * g->ld, g->Xq ? g->Xq + r * g->ld : NULL, m, g->ld,
                   g->col0, d);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)m, 1.0 / (double)n, B,
                    (int)d, 1.0, g->G, (int)d);
        bp_profile_flops(BP_STAGE_ERRORS, (double)m * (double)d * (double)(d + 1));
    }
    free(B);
    return 0;
}

/* One thread's chunk of build_single: the centred rows B in float and
 * their ssyrk C. */
typedef struct single_part {
    const bp_gram *g;
    int64_t r, m;              /* rows [r, r + m) */
    float *B, *C;
} single_part;

static void *single_chunk(void *arg)
{
    single_part *p = arg;
    const bp_gram *g = p->g;
    int64_t d = g->d;
    const float *src = g->Xq ? g->Xq : g->X;
    if (p->m <= 0)
        return NULL;
    for (int64_t i = 0; i < p->m; i++)
        for (int64_t j = 0; j < d; j++)
            p->B[i * d + j] = (float)((double)src[(p->r + i) * g->ld + g->col0 + j] - g->mu[j]);
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)p->m, 1.0f, p->B, (int)d,
                0.0f, p->C, (int)d);
    return NULL;
}

/* Threads for the chunks of build_single: bitplan's own where OpenBLAS has
 * one thread (its chunks' products side by side, each on one thread; the
 * sums in chunk order, as on one thread) and their buffers stay small. */
static int single_threads(int64_t n, int64_t d, int64_t chunk)
{
    int nt = openblas_get_num_threads() == 1 ? bp_threads() : 1;
    int64_t chunks = (n + chunk - 1) / chunk;
    if (nt > chunks)
        nt = (int)chunks;
    while (nt > 1 && (double)nt * (double)(d * d + chunk * d) * sizeof(float) > 512.0 * (1 << 20))
        nt--;
    return nt;
}

/* Gb = Gc + mu mu^T: the column means in double, the centred chunks'
 * products in float (ssyrk), summed in double, kept in float. */
static int build_single(bp_gram *g, bp_error *err)
{
    int64_t d = g->d, n = g->n, chunk = n < GRAM_CHUNK_ROWS ? n : GRAM_CHUNK_ROWS;
    int nt = single_threads(n, d, chunk);
    const float *src = g->Xq ? g->Xq : g->X;
    double *acc = bp_calloc((size_t)(d * d), sizeof(double), err);
    single_part part[BP_THREADS_MAX] = {{0}};
    int rc = -1, got = 1;
    for (int t = 0; t < nt; t++) {
        part[t].g = g;
        part[t].B = bp_malloc((size_t)(chunk * d) * sizeof(float), err);
        part[t].C = bp_malloc((size_t)(d * d) * sizeof(float), err);
        got &= part[t].B && part[t].C;
    }
    g->Gf = bp_malloc((size_t)(d * d) * sizeof(float), err);
    g->mu = bp_calloc((size_t)d, sizeof(double), err);
    g->gsd = bp_malloc((size_t)d * sizeof(double), err);
    if (!acc || !got || !g->Gf || !g->mu || !g->gsd)
        goto out;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < d; j++)
            g->mu[j] += src[i * g->ld + g->col0 + j];
    for (int64_t j = 0; j < d; j++)
        g->mu[j] /= (double)n;
    double fd = (double)d;
    for (int64_t r = 0; r < n; r += nt * chunk) {
        for (int t = 0; t < nt; t++) {
            int64_t r0 = r + t * chunk;
            part[t].r = r0, part[t].m = r0 >= n ? 0 : n - r0 < chunk ? n - r0 : chunk;
        }
        bp_parallel(nt, single_chunk, part, sizeof part[0]);
        for (int t = 0; t < nt && part[t].m > 0; t++) {      /* in chunk order */
            bp_profile_flops(BP_STAGE_ERRORS, (double)part[t].m * fd * (fd + 1.0));
            const float *C = part[t].C;
            for (int64_t i = 0; i < d; i++)
                for (int64_t j = i; j < d; j++)
                    acc[i * d + j] += C[i * d + j];
        }
    }
    for (int64_t i = 0; i < d; i++) {
        for (int64_t j = i; j < d; j++)
            g->Gf[i * d + j] = (float)(acc[i * d + j] / (double)n);
        g->gsd[i] = sqrt(acc[i * d + i] / (double)n);
    }
    rc = 0;
out:
    free(acc);
    for (int t = 0; t < nt; t++) {
        free(part[t].B);
        free(part[t].C);
    }
    return rc;
}

int bp_gram_build_prec(bp_gram *g, const float *X, const float *Xq, int64_t n, int64_t ld,
                       int64_t col0, int64_t d, int keep_rows, int single, bp_error *err)
{
    memset(g, 0, sizeof *g);
    if (n <= 0)
        return bp_fail(err, "no calibration rows");
    g->d = d;
    if (keep_rows) {                 /* keep the rows: cheaper than their Gram */
        double s = 1.0 / sqrt((double)n);
        g->n = n;
        g->Z = bp_malloc((size_t)(n * d) * sizeof(double), err);
        if (Xq)                      /* Xbar = X + dX = Xq, for What Xbar^T */
            g->Xb = bp_malloc((size_t)(n * d) * sizeof(double), err);
        if (!g->Z || (Xq && !g->Xb)) {
            bp_gram_free(g);
            return -1;
        }
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < d; j++) {
                g->Z[i * d + j] = s * X[i * ld + col0 + j];
                if (Xq)
                    g->Xb[i * d + j] = s * Xq[i * ld + col0 + j];
            }
        return 0;
    }
    g->X = X, g->Xq = Xq, g->ld = ld, g->col0 = col0, g->n = n;
    if (single) {
        g->single = 1;
        if (build_single(g, err) < 0) {
            bp_gram_free(g);
            return -1;
        }
        return 0;
    }
    if (build_double(g, err) < 0) {
        bp_gram_free(g);
        return -1;
    }
    return 0;
}

/* Single precision from statistics: Gc = qtq / n - mu mu^T in float. */
static int build_single_stats(bp_gram *g, bp_error *err)
{
    int64_t d = g->d;
    double n = (double)g->n;
    g->Gf = bp_malloc((size_t)(d * d) * sizeof(float), err);
    g->mu = bp_malloc((size_t)d * sizeof(double), err);
    g->gsd = bp_malloc((size_t)d * sizeof(double), err);
    if (!g->Gf || !g->mu || !g->gsd)
        return -1;
    for (int64_t j = 0; j < d; j++)
        g->mu[j] = g->st->qsum[j] / n;
    for (int64_t i = 0; i < d; i++) {
        for (int64_t j = i; j < d; j++)
            g->Gf[i * d + j] = (float)(g->st->qtq[i * d + j] / n - g->mu[i] * g->mu[j]);
        g->gsd[i] = sqrt(fmax(g->st->qtq[i * d + i] / n - g->mu[i] * g->mu[i], 0.0));
    }
    return 0;
}

int bp_gram_build_stats(bp_gram *g, const bp_gram_stats *st, int single, bp_error *err)
{
    memset(g, 0, sizeof *g);
    if (st->n <= 0)
        return bp_fail(err, "no calibration rows");
    g->d = st->d, g->n = st->n, g->st = st, g->single = single;
    if ((single ? build_single_stats(g, err) : build_double(g, err)) < 0) {
        bp_gram_free(g);
        return -1;
    }
    return 0;
}

int bp_gram_hessian(const bp_gram *g, double alpha, double *H, bp_error *err)
{
    int64_t d = g->d;
    if (g->Z || (!g->G && !g->Gf))
        return bp_fail(err, "internal: a Hessian needs a Gram-mode gram");
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = i; j < d; j++) {
            double v = g->G ? g->G[i * d + j]
                            : (double)g->Gf[i * d + j] + g->mu[i] * g->mu[j];
            H[i * d + j] = H[j * d + i] = alpha * v;
        }
    return 0;
}

int bp_gram_borrow(bp_gram *dst, const bp_gram *src, const float *X, const float *Xq,
                   int64_t ld, int64_t col0, bp_error *err)
{
    memset(dst, 0, sizeof *dst);
    if (src->Z || (!src->G && !src->Gf))
        return bp_fail(err, "internal: only a Gram-mode gram can be shared");
    dst->d = src->d;
    dst->n = src->n;
    dst->X = X, dst->Xq = Xq, dst->ld = ld, dst->col0 = col0;
    dst->single = src->single, dst->fell_back = src->fell_back;
    dst->G = src->G, dst->Gf = src->Gf, dst->mu = src->mu, dst->gsd = src->gsd;
    dst->base_borrowed = 1, dst->G_lent = src->G;
    return 0;
}

int bp_gram_borrow_stats(bp_gram *dst, const bp_gram *src, const bp_gram_stats *st,
                         bp_error *err)
{
    if (bp_gram_borrow(dst, src, NULL, NULL, 0, 0, err) < 0)
        return -1;
    dst->st = st;
    return 0;
}

void bp_gram_lend(bp_gram *owner, bp_gram *g)
{
    memset(owner, 0, sizeof *owner);
    owner->d = g->d;
    owner->n = g->n;
    owner->single = g->single, owner->fell_back = g->fell_back;
    owner->G = g->G, owner->Gf = g->Gf, owner->mu = g->mu, owner->gsd = g->gsd;
    owner->st = NULL;                /* the statistics belong to the layer, not the owner */
    g->base_borrowed = 1, g->G_lent = g->G;
}

void bp_ycache_free(bp_ycache *c)
{
    free(c->Y);
    memset(c, 0, sizeof *c);
}

void bp_gram_attach_y(bp_gram *g, bp_ycache *c)
{
    g->yc = c;
}

void bp_gram_free(bp_gram *g)
{
    if (!g->base_borrowed || g->G != g->G_lent)      /* G made here (e.g. by to_double) */
        free(g->G);
    if (!g->base_borrowed) {
        free(g->Gf);
        free(g->mu);
        free(g->gsd);
    }
    if (!g->q_borrowed)
        free(g->Q);
    free(g->e0);
    free(g->Z);
    free(g->Xb);
    if (!g->y_borrowed)
        free(g->Y);
    free(g->A);
    free(g->M);
    free(g->Vf);
    free(g->Mf);
    memset(g, 0, sizeof *g);
}

/* M = V Gb; out[r] = v_r M_r.  Single precision: M = V Gc in SSYMM plus
 * (V mu) mu^T in double, the dots in double. */
static int quad_forms(bp_gram *g, const double *V, int64_t rows, double *M, double *out,
                      bp_error *err)
{
    int64_t k = g->d;
    if (g->single) {
        size_t rk = (size_t)(rows * k);
        if (!g->Vf)
            g->Vf = bp_malloc(rk * sizeof(float), err);
        if (!g->Mf)
            g->Mf = bp_malloc(rk * sizeof(float), err);
        if (!g->Vf || !g->Mf)
            return -1;
        for (size_t i = 0; i < rk; i++)
            g->Vf[i] = (float)V[i];
        cblas_ssymm(CblasRowMajor, CblasRight, CblasUpper, (int)rows, (int)k, 1.0f, g->Gf,
                    (int)k, g->Vf, (int)k, 0.0f, g->Mf, (int)k);
        bp_profile_flops(BP_STAGE_ERRORS, 2.0 * (double)rows * (double)k * (double)(k + 1));
        for (int64_t r = 0; r < rows; r++) {
            double vm = cblas_ddot((int)k, V + r * k, 1, g->mu, 1);
            for (int64_t j = 0; j < k; j++)
                M[r * k + j] = (double)g->Mf[r * k + j] + vm * g->mu[j];
            out[r] = cblas_ddot((int)k, V + r * k, 1, M + r * k, 1);
        }
        return 0;
    }
    cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, (int)rows, (int)k, 1.0,
                g->G, (int)k, V, (int)k, 0.0, M, (int)k);
    bp_profile_flops(BP_STAGE_ERRORS, 2.0 * (double)rows * (double)k * (double)(k + 1));
    for (int64_t r = 0; r < rows; r++)
        out[r] = cblas_ddot((int)k, V + r * k, 1, M + r * k, 1);
    return 0;
}

/* The remainder P D P instead of D, P = I - n n^T:
 * *s += -2 (D n)^T E n + (n^T D n)(n^T E n), with E n the symmetric part of
 * A B^T applied to n: (A (B^T n) + B (A^T n)) / 2. */
static int null_correction(const bp_gram_fisher *f, const double *A, const double *B,
                           int64_t rows, int64_t m, double *s, bp_error *err)
{
    double *t = bp_malloc((size_t)(m + 2 * rows) * sizeof(double), err);
    if (!t)
        return -1;
    double *En = t + m, *Et = En + rows, nDn = 0.0, nEn = 0.0, DnEn = 0.0;
    cblas_dgemv(CblasRowMajor, CblasTrans, (int)rows, (int)m, 1.0, B, (int)m, f->n, 1, 0.0, t, 1);
    cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)rows, (int)m, 1.0, A, (int)m, t, 1, 0.0, En, 1);
    if (A != B) {
        cblas_dgemv(CblasRowMajor, CblasTrans, (int)rows, (int)m, 1.0, A, (int)m, f->n, 1, 0.0,
                    t, 1);
        cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)rows, (int)m, 1.0, B, (int)m, t, 1, 0.0,
                    Et, 1);
        for (int64_t r = 0; r < rows; r++)
            En[r] = 0.5 * (En[r] + Et[r]);
    }
    for (int64_t r = 0; r < rows; r++) {
        nDn += f->n[r] * f->d[r] * f->n[r];
        nEn += f->n[r] * En[r];
        DnEn += f->d[r] * f->n[r] * En[r];
    }
    *s += -2.0 * DnEn + nDn * nEn;
    free(t);
    return 0;
}

/*
 * 1/2 tr(F A B^T) for rows x m matrices A, B (E = A B^T, up to an
 * antisymmetric part F does not see, is the error covariance or a term of
 * it), and row_err[r] = E_rr.
 * Dense: sum (F A) o B.  Low rank: sum_i s_i (u_i^T A)(u_i^T B) + sum_r d_r E_rr.
 */
static int fisher_trace(const bp_gram_fisher *f, const double *A, const double *B,
                        int64_t rows, int64_t m, const double *row_err, double *kfac,
                        bp_error *err)
{
    int64_t kr = f->rank ? f->rank : rows;
    double *T = bp_malloc((size_t)(kr * m * (f->rank ? 2 : 1)) * sizeof(double), err);
    if (!T)
        return -1;
    double s = 0.0;
    if (!f->rank) {
        cblas_dsymm(CblasRowMajor, CblasLeft, CblasUpper, (int)rows, (int)m, 1.0, f->F,
                    (int)rows, A, (int)m, 0.0, T, (int)m);
        for (int64_t i = 0; i < rows * m; i++)
            s += T[i] * B[i];
        bp_profile_flops(BP_STAGE_ERRORS, 2.0 * (double)rows * (double)rows * (double)m);
    } else {
        double *P = T, *Q = T + kr * m;
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)kr, (int)m, (int)rows, 1.0,
                    f->U, (int)rows, A, (int)m, 0.0, P, (int)m);
        if (B != A)
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)kr, (int)m, (int)rows,
                        1.0, f->U, (int)rows, B, (int)m, 0.0, Q, (int)m);
        for (int64_t i = 0; i < kr; i++)
            s += f->s[i] * cblas_ddot((int)m, P + i * m, 1, (B != A ? Q : P) + i * m, 1);
        for (int64_t r = 0; r < rows; r++)
            s += f->d[r] * row_err[r];
        bp_profile_flops(BP_STAGE_ERRORS, 4.0 * (double)kr * (double)rows * (double)m);
        if (f->n && null_correction(f, A, B, rows, m, &s, err) < 0) {
            free(T);
            return -1;
        }
    }
    *kfac = 0.5 * s;
    free(T);
    return 0;
}

/* fisher_trace for every factor of fs present (out[i] = 0 where absent). */
static int factors_trace(const bp_gram_factors *fs, const double *A, const double *B,
                         int64_t rows, int64_t m, const double *row_err, double *out,
                         bp_error *err)
{
    for (int i = 0; i < BP_GRAM_FACTORS; i++) {
        out[i] = 0.0;
        if (fs && fs->f[i] && fisher_trace(fs->f[i], A, B, rows, m, row_err, &out[i], err) < 0)
            return -1;
    }
    return 0;
}

static int has_factors(const bp_gram_factors *fs)
{
    for (int i = 0; fs && i < BP_GRAM_FACTORS; i++)
        if (fs->f[i])
            return 1;
    return 0;
}

/* Were the per-weights traces kfac0 formed with exactly these factors? */
static int same_factors(const bp_gram *g, const bp_gram_factors *fs)
{
    for (int i = 0; i < BP_GRAM_FACTORS; i++)
        if (g->f_of[i] != (fs ? (const void *)fs->f[i] : NULL))
            return 0;
    return 1;
}

/* Kept rows: the work buffers and Y = W X^T / sqrt(n), once per weights. */
static int direct_prepare(bp_gram *g, const float *W, int64_t rows, int64_t ldw, bp_error *err)
{
    int64_t d = g->d, n = g->n;
    if (!g->A)                       /* work buffers, reused for every candidate */
        g->A = bp_malloc((size_t)(rows * d) * sizeof(double), err);
    if (!g->M)
        g->M = bp_malloc((size_t)(rows * n) * sizeof(double), err);
    if (!g->A || !g->M)
        return -1;
    if (g->y_of == W)
        return 0;
    if (!g->y_borrowed)
        free(g->Y);
    g->Y = NULL, g->y_borrowed = 0, g->y_of = NULL;
    if (g->yc && g->yc->W == W && g->yc->Y) {    /* formed for another Gram of these X */
        g->Y = g->yc->Y, g->y_borrowed = 1, g->y_of = W;
        return 0;
    }
    if (!(g->Y = bp_malloc((size_t)(rows * n) * sizeof(double), err)))
        return -1;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < d; j++)
            g->A[r * d + j] = W[r * ldw + j];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)n, (int)d, 1.0, g->A,
                (int)d, g->Z, (int)d, 0.0, g->Y, (int)n);
    bp_profile_flops(BP_STAGE_ERRORS, 2.0 * (double)rows * (double)n * (double)d);
    g->y_of = W;
    if (g->yc) {                     /* hand it to the cache for the next Gram */
        free(g->yc->Y);
        g->yc->W = W, g->yc->Y = g->Y, g->y_borrowed = 1;
    }
    return 0;
}

/* Kept rows: e_r = ||What_r Xbar^T - W_r X^T||^2 / n with W X^T cached
 * (and, with f, the K-FAC trace of D = (What Xbar^T - W X^T) / sqrt(n)). */
static int direct_errors(bp_gram *g, const float *W, const float *What, int64_t rows,
                         int64_t ldw, const bp_gram_factors *fs, double *row_err,
                         double *traces, bp_error *err)
{
    int64_t d = g->d, n = g->n;
    int rc = direct_prepare(g, W, rows, ldw, err);
    double *A = g->A, *M = g->M;
    for (int64_t r = 0; rc == 0 && r < rows; r++)
        for (int64_t j = 0; j < d; j++)
            A[r * d + j] = What[r * ldw + j];
    if (rc == 0) {                   /* M = What Xbar^T / sqrt(n); e_r = ||M_r - Y_r||^2 */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)n, (int)d, 1.0,
                    A, (int)d, g->Xb ? g->Xb : g->Z, (int)d, 0.0, M, (int)n);
        bp_profile_flops(BP_STAGE_ERRORS, (2.0 * (double)d + 3.0) * (double)rows * (double)n);
        for (int64_t r = 0; r < rows; r++) {          /* M := D */
            double *m = M + r * n;
            const double *y = g->Y + r * n;
            double s = 0.0;
            for (int64_t i = 0; i < n; i++) {
                m[i] -= y[i];
                s += m[i] * m[i];
            }
            row_err[r] = s;
        }
        rc = factors_trace(fs, M, M, rows, n, row_err, traces, err);
    }
    return rc;
}

int bp_gram_row_errors(bp_gram *g, const float *W, const float *What,
                       int64_t rows, int64_t ldw, double *row_err, bp_error *err)
{
    double traces[BP_GRAM_FACTORS];
    return bp_gram_row_errors_factors(g, W, What, rows, ldw, NULL, row_err, traces, err);
}

/* H = Xbar^T dX / n (d x d) and S = dX^T dX / n (upper triangle; full from
 * statistics), from the sums or the rows in 1,024-row chunks. */
static int cross_grams(const bp_gram *g, double *H, double *S, bp_error *err)
{
    int64_t d = g->d, n = g->n, chunk = n < GRAM_CHUNK_ROWS ? n : GRAM_CHUNK_ROWS;
    double a = 1.0 / (double)n, fd = (double)d;
    if (g->st) {
        const bp_gram_stats *t = g->st;
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < d; j++) {
                double h = t->qtq[i * d + j] - t->qtx[i * d + j];
                H[i * d + j] = a * h;
                S[i * d + j] = a * (h - t->qtx[j * d + i] + t->xtx[i * d + j]);
            }
        return 0;
    }
    double *B = bp_malloc((size_t)(chunk * d) * sizeof(double), err);
    double *D = bp_malloc((size_t)(chunk * d) * sizeof(double), err);
    if (!B || !D) {
        free(B);
        free(D);
        return -1;
    }
    memset(H, 0, (size_t)(d * d) * sizeof(double));
    memset(S, 0, (size_t)(d * d) * sizeof(double));
    for (int64_t r = 0; r < n; r += chunk) {
        int64_t m = n - r < chunk ? n - r : chunk;
        fill_chunk(B, D, g->X + r * g->ld, g->Xq + r * g->ld, m, g->ld, g->col0, d);
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)d, (int)m, a, B,
                    (int)d, D, (int)d, 1.0, H, (int)d);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)m, a, D, (int)d, 1.0, S,
                    (int)d);
        bp_profile_flops(BP_STAGE_ERRORS, (double)m * fd * (3.0 * fd + 1.0));
    }
    free(B);
    free(D);
    return 0;
}

/* c and e0 through the d x d Grams: Q = W H^T with H = Xbar^T dX / n, WS =
 * W S with S = dX^T dX / n, e0_r = W_r . WS_r.  Wd: W in double. */
static int cross_by_grams(bp_gram *g, const double *Wd, int64_t rows, double *WS, bp_error *err)
{
    int64_t d = g->d;
    double *H = bp_malloc((size_t)(d * d) * sizeof(double), err);
    double *S = bp_malloc((size_t)(d * d) * sizeof(double), err);
    int rc = -1;
    if (!H || !S || cross_grams(g, H, S, err) < 0)
        goto out;
    cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, (int)rows, (int)d, 1.0, S, (int)d, Wd,
                (int)d, 0.0, WS, (int)d);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)d, (int)d, 1.0, Wd,
                (int)d, H, (int)d, 0.0, g->Q, (int)d);
    bp_profile_flops(BP_STAGE_ERRORS, 4.0 * (double)rows * (double)d * (double)d);
    for (int64_t r = 0; r < rows; r++)
        g->e0[r] = cblas_ddot((int)d, Wd + r * d, 1, WS + r * d, 1);
    rc = 0;
out:
    free(H);
    free(S);
    return rc;
}

/* c and e0 from the rows: P = W dX^T / sqrt(n) per chunk, Q += P Xbar /
 * sqrt(n), e0_r += ||P_r||^2 and, per factor F_i of fs, kfac0[i] +=
 * 1/2 tr(F_i P P^T). */
static int cross_by_rows(bp_gram *g, const double *Wd, int64_t rows, const bp_gram_factors *fs,
                         bp_error *err)
{
    int64_t d = g->d, n = g->n, chunk = n < GRAM_CHUNK_ROWS ? n : GRAM_CHUNK_ROWS;
    double *B = bp_malloc((size_t)(chunk * d) * sizeof(double), err);
    double *D = bp_malloc((size_t)(chunk * d) * sizeof(double), err);
    double *P = bp_malloc((size_t)(rows * chunk) * sizeof(double), err);
    double *pe = bp_malloc((size_t)rows * sizeof(double), err);
    int rc = -1;
    if (!B || !D || !P || !pe)
        goto out;
    double s = 1.0 / sqrt((double)n), fd = (double)d, fr = (double)rows;
    memset(g->Q, 0, (size_t)(rows * d) * sizeof(double));
    memset(g->e0, 0, (size_t)rows * sizeof(double));
    for (int i = 0; i < BP_GRAM_FACTORS; i++)
        g->kfac0[i] = 0.0;
    for (int64_t r = 0; r < n; r += chunk) {
        int64_t m = n - r < chunk ? n - r : chunk;
        fill_chunk(B, D, g->X + r * g->ld, g->Xq + r * g->ld, m, g->ld, g->col0, d);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)m, (int)d, s, Wd,
                    (int)d, D, (int)d, 0.0, P, (int)m);
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)d, (int)m, s, P,
                    (int)m, B, (int)d, 1.0, g->Q, (int)d);
        bp_profile_flops(BP_STAGE_ERRORS, 4.0 * (double)m * fd * fr);
        for (int64_t o = 0; o < rows; o++) {
            pe[o] = cblas_ddot((int)m, P + o * m, 1, P + o * m, 1);
            g->e0[o] += pe[o];
        }
        double k[BP_GRAM_FACTORS];
        if (factors_trace(fs, P, P, rows, m, pe, k, err) < 0)
            goto out;
        for (int i = 0; i < BP_GRAM_FACTORS; i++)
            g->kfac0[i] += k[i];
    }
    rc = 0;
out:
    free(B);
    free(D);
    free(P);
    free(pe);
    return rc;
}

/* Grams: the work buffers and, with quantized inputs, the per-weights terms
 * Q = W H^T, e0_r = W_r S W_r^T and (per factor F_i of fs) kfac0[i] =
 * 1/2 tr(F_i W S W^T). */
static int gram_prepare(bp_gram *g, const float *W, int64_t rows, int64_t ldw,
                        const bp_gram_factors *fs, bp_error *err)
{
    int64_t d = g->d;
    size_t rd = (size_t)(rows * d);
    if (!g->A)
        g->A = bp_malloc(rd * sizeof(double), err);
    if (!g->M)
        g->M = bp_malloc(rd * sizeof(double), err);
    if (!g->A || !g->M)
        return -1;
    if (!quantized(g) || (g->w_of == W && !g->totals && (!has_factors(fs) ||
                                                         same_factors(g, fs))))
        return 0;
    double nn = (double)g->n, fd = (double)d, fr = (double)rows;
    int by_rows = !g->st && 4.0 * nn * fd * fr < 3.0 * nn * fd * fd + 4.0 * fr * fd * fd;
    int fresh = g->w_of != W || g->totals;
    g->totals = 0;
    if (fresh || by_rows) {
        drop_q(g);
        free(g->e0);
        g->w_of = NULL;
        for (int i = 0; i < BP_GRAM_FACTORS; i++)
            g->f_of[i] = NULL;
        g->Q = bp_malloc(rd * sizeof(double), err);
        g->e0 = bp_malloc((size_t)rows * sizeof(double), err);
        if (!g->Q || !g->e0)
            return -1;
    }
    double *Wd = bp_malloc(rd * sizeof(double), err);
    double *WS = by_rows ? NULL : bp_malloc(rd * sizeof(double), err);
    int rc = -1;
    if (!Wd || (!by_rows && !WS))
        goto out;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < d; j++)
            Wd[r * d + j] = W[r * ldw + j];
    if (by_rows) {
        if (cross_by_rows(g, Wd, rows, fs, err) < 0)
            goto out;
    } else {
        if (cross_by_grams(g, Wd, rows, WS, err) < 0)
            goto out;
        if (factors_trace(fs, Wd, WS, rows, d, g->e0, g->kfac0, err) < 0)
            goto out;
    }
    g->w_of = W;
    for (int i = 0; i < BP_GRAM_FACTORS; i++)
        g->f_of[i] = fs ? fs->f[i] : NULL;
    rc = 0;
out:
    free(Wd);
    free(WS);
    return rc;
}

/* Single precision gave way: Gb in double from the rows, as without it. */
static int to_double(bp_gram *g, bp_error *err)
{
    if (build_double(g, err) < 0)
        return -1;
    g->single = 0, g->fell_back = 1;
    return 0;
}

/* A row's bound on its form's float error, up to the roundoff factor:
 * (sum_j |v_j| sqrt(Gc_jj))^2. */
static double row_bound(const bp_gram *g, const double *v)
{
    double b = 0.0;
    for (int64_t j = 0; j < g->d; j++)
        b += fabs(v[j]) * g->gsd[j];
    return b * b;
}

/* The single-precision check of gram.h: may the forms (form, rows) stand
 * for the row errors e?  1 yes, 0 no, -1 out of memory. */
static int single_ok(const bp_gram *g, const double *V, int64_t rows, const double *form,
                     const double *e, bp_error *err)
{
    enum { NS = 4 };
    int64_t d = g->d, n = g->n, chunk = n < GRAM_CHUNK_ROWS ? n : GRAM_CHUNK_ROWS;
    int64_t pick[NS] = {0, rows / 3, 2 * rows / 3, rows - 1};
    const float *src = g->Xq ? g->Xq : g->X;
    double *B = bp_malloc((size_t)((g->st ? 1 : chunk) * d) * sizeof(double), err);
    double *Vs = bp_malloc((size_t)(d * NS) * sizeof(double), err);
    double *P = bp_malloc((size_t)(chunk * NS) * sizeof(double), err);
    double exact[NS] = {0.0};
    int rc = -1;
    if (!B || !Vs || !P)
        goto out;
    for (int s = 0; g->st && s < NS; s++) {    /* v_s qtq v_s^T, in double */
        const double *v = V + pick[s] * d;
        cblas_dsymv(CblasRowMajor, CblasUpper, (int)d, 1.0, g->st->qtq, (int)d, v, 1, 0.0, B, 1);
        exact[s] = cblas_ddot((int)d, v, 1, B, 1);
        bp_profile_flops(BP_STAGE_ERRORS, 2.0 * (double)d * (double)d);
    }
    n = g->st ? 0 : n;               /* statistics: no rows to read */
    for (int s = 0; s < NS; s++)               /* Vs: d x NS, the sampled rows */
        for (int64_t j = 0; j < d; j++)
            Vs[j * NS + s] = V[pick[s] * d + j];
    for (int64_t r = 0; r < n; r += chunk) {   /* ||V_s Xbar^T||^2, in double */
        int64_t m = n - r < chunk ? n - r : chunk;
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < d; j++)
                B[i * d + j] = src[(r + i) * g->ld + g->col0 + j];
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, NS, (int)d, 1.0, B,
                    (int)d, Vs, NS, 0.0, P, NS);
        for (int64_t i = 0; i < m * NS; i++)
            exact[i % NS] += P[i] * P[i];
        bp_profile_flops(BP_STAGE_ERRORS, 2.0 * (double)m * (double)d * NS);
    }
    double ueff = 6e-8 / (double)d;            /* float's unit roundoff over d terms */
    for (int s = 0; s < NS; s++) {
        double bound = row_bound(g, V + pick[s] * d);
        if (bound > 0.0)
            ueff = fmax(ueff, fabs(form[pick[s]] - exact[s] / (double)g->n) / bound);
    }
    rc = 1;
    for (int64_t r = 0; rc == 1 && r < rows; r++)
        if (4.0 * ueff * row_bound(g, V + r * d) > 1e-6 * fabs(e[r]))
            rc = 0;
out:
    free(B);
    free(Vs);
    free(P);
    return rc;
}

int bp_gram_row_errors_kfac(bp_gram *g, const float *W, const float *What, int64_t rows,
                            int64_t ldw, const bp_gram_fisher *f, double *row_err,
                            double *kfac, bp_error *err)
{
    bp_gram_factors fs = {{f, NULL}};
    double traces[BP_GRAM_FACTORS];
    if (bp_gram_row_errors_factors(g, W, What, rows, ldw, &fs, row_err, traces, err) < 0)
        return -1;
    if (f)
        *kfac = traces[0];
    return 0;
}

int bp_gram_row_errors_factors(bp_gram *g, const float *W, const float *What, int64_t rows,
                               int64_t ldw, const bp_gram_factors *fs, double *row_err,
                               double traces[BP_GRAM_FACTORS], bp_error *err)
{
    for (int i = 0; i < BP_GRAM_FACTORS; i++)
        traces[i] = 0.0;
    if (g->Z)
        return direct_errors(g, W, What, rows, ldw, fs, row_err, traces, err);
    if (gram_prepare(g, W, rows, ldw, fs, err) < 0)
        return -1;
    int64_t d = g->d;
    double *V = g->A, *M = g->M;
    for (int64_t r = 0; r < rows; r++) {
        const float *w = W + r * ldw, *wq = What + r * ldw;
        double *v = V + r * d;
        for (int64_t j = 0; j < d; j++)
            v[j] = (double)wq[j] - (double)w[j];
    }
    double *form = bp_malloc((size_t)rows * sizeof(double), err);
    if (!form)
        return -1;
    int rc;
    for (;;) {                                  /* once, or twice after a failed check */
        if ((rc = quad_forms(g, V, rows, M, form, err)) < 0)   /* dW_r Gb dW_r^T */
            break;
        for (int64_t r = 0; r < rows; r++)      /* + 2 dW_r c_r + e0_r */
            row_err[r] = form[r] + (quantized(g) ? 2.0 * cblas_ddot((int)d, V + r * d, 1,
                                                             g->Q + r * d, 1) + g->e0[r]
                                          : 0.0);
        if (!g->single)
            break;
        if ((rc = single_ok(g, V, rows, form, row_err, err)) != 0 || (rc = to_double(g, err)) < 0)
            break;
    }
    if (rc >= 0 && has_factors(fs)) {           /* K-FAC over E without W S W^T, then kfac0 */
        for (int64_t r = 0; quantized(g) && r < rows; r++) {
            double *m = M + r * d;
            const double *q = g->Q + r * d;
            for (int64_t j = 0; j < d; j++)
                m[j] += 2.0 * q[j];
            form[r] = row_err[r] - g->e0[r];
        }
        rc = factors_trace(fs, V, M, rows, d, quantized(g) ? form : row_err, traces, err);
        for (int i = 0; quantized(g) && i < BP_GRAM_FACTORS; i++)
            if (fs->f[i])
                traces[i] += g->kfac0[i];
    }
    free(form);
    return rc < 0 ? -1 : 0;
}

int bp_gram_row_energy(bp_gram *g, const float *W, int64_t rows,
                       int64_t ldw, double *row_energy, bp_error *err)
{
    if (g->Z) {                      /* ||W_r X^T||^2 / n from the cached Y */
        if (direct_prepare(g, W, rows, ldw, err) < 0)
            return -1;
        for (int64_t r = 0; r < rows; r++)
            row_energy[r] = cblas_ddot((int)g->n, g->Y + r * g->n, 1, g->Y + r * g->n, 1);
        return 0;
    }
    if (gram_prepare(g, W, rows, ldw, NULL, err) < 0)
        return -1;
    int64_t d = g->d;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < d; j++)
            g->A[r * d + j] = W[r * ldw + j];
    if (quad_forms(g, g->A, rows, g->M, row_energy, err) < 0)
        return -1;
    /* X = Xbar - dX: X^T X = Gb - H - H^T + S */
    for (int64_t r = 0; quantized(g) && r < rows; r++)
        row_energy[r] += g->e0[r] - 2.0 * cblas_ddot((int)d, g->A + r * d, 1, g->Q + r * d, 1);
    return 0;
}

int bp_input_gram(const float *X, int64_t n, int64_t ldx, int64_t xoff, int64_t d, int ones,
                  double alpha, double *G, bp_error *err)
{
    enum { CHUNK = 1024 };
    int64_t da = d + (ones ? 1 : 0);
    double *buf = bp_malloc((size_t)CHUNK * (size_t)da * sizeof(double), err);
    if (!buf)
        return -1;
    memset(G, 0, (size_t)(da * da) * sizeof(double));
    for (int64_t r0 = 0; r0 < n; r0 += CHUNK) {
        int64_t m = n - r0 < CHUNK ? n - r0 : CHUNK;
        for (int64_t i = 0; i < m; i++) {
            for (int64_t j = 0; j < d; j++)
                buf[i * da + j] = X[(r0 + i) * ldx + xoff + j];
            if (ones)
                buf[i * da + d] = 1.0;
        }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)da, (int)m, alpha, buf,
                    (int)da, 1.0, G, (int)da);
        bp_profile_flops(BP_STAGE_WEIGHTS, (double)m * (double)da * (double)(da + 1));
    }
    for (int64_t i = 0; i < da; i++)
        for (int64_t j = 0; j < i; j++)
            G[i * da + j] = G[j * da + i];
    free(buf);
    return 0;
}

/*
 * Layer totals without rows (gram.h): sum_r e_r = <dW^T dW, Gb> + 2 <dW, Q>
 * + sum_r e0_r, with dW^T dW formed once per weights (dsyrk, rows d^2 flops,
 * half of what the rows' dsymm costs per candidate) and shared by every
 * activation width; <A, B> over upper triangles.
 */
int bp_gram_outer(const float *W, const float *What, int64_t rows, int64_t ldw, int64_t d,
                  double *M, bp_error *err)
{
    int64_t chunk = rows < GRAM_CHUNK_ROWS ? rows : GRAM_CHUNK_ROWS;
    double *B = bp_malloc((size_t)(chunk * d) * sizeof(double), err);
    if (!B)
        return -1;
    memset(M, 0, (size_t)(d * d) * sizeof(double));
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        int64_t m = rows - r0 < chunk ? rows - r0 : chunk;
        for (int64_t i = 0; i < m; i++) {
            const float *w = W + (r0 + i) * ldw, *wq = What ? What + (r0 + i) * ldw : NULL;
            double *b = B + i * d;
            for (int64_t j = 0; j < d; j++)
                b[j] = wq ? (double)wq[j] - (double)w[j] : (double)w[j];
        }
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)m, 1.0, B, (int)d, 1.0,
                    M, (int)d);
        bp_profile_flops(BP_STAGE_ERRORS, (double)m * (double)d * (double)(d + 1));
    }
    free(B);
    return 0;
}

int bp_gram_outer_single(const float *W, const float *What, int64_t rows, int64_t ldw,
                         int64_t d, double *M, bp_error *err)
{
    int64_t chunk = rows < GRAM_CHUNK_ROWS ? rows : GRAM_CHUNK_ROWS;
    float *B = bp_malloc((size_t)(chunk * d) * sizeof(float), err);
    float *C = bp_malloc((size_t)(d * d) * sizeof(float), err);
    if (!B || !C) {
        free(B);
        free(C);
        return -1;
    }
    memset(M, 0, (size_t)(d * d) * sizeof(double));
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        int64_t m = rows - r0 < chunk ? rows - r0 : chunk;
        for (int64_t i = 0; i < m; i++) {
            const float *w = W + (r0 + i) * ldw, *wq = What + (r0 + i) * ldw;
            float *b = B + i * d;
            for (int64_t j = 0; j < d; j++)
                b[j] = (float)((double)wq[j] - (double)w[j]);
        }
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)m, 1.0f, B, (int)d,
                    0.0f, C, (int)d);
        bp_profile_flops(BP_STAGE_ERRORS, (double)m * (double)d * (double)(d + 1));
        for (int64_t i = 0; i < d; i++) {
            double *mi = M + i * d;
            const float *ci = C + i * d;
            for (int64_t j = i; j < d; j++)
                mi[j] += ci[j];
        }
    }
    free(B);
    free(C);
    return 0;
}

void bp_gram_centred_diag(const double *Gb, double gs, const double *mu, int64_t d, double *c)
{
    for (int64_t j = 0; j < d; j++) {
        double v = gs * Gb[j * d + j] - mu[j] * mu[j];
        c[j] = v > 0.0 ? v : 0.0;
    }
}

double bp_gram_t1_centred(const double *M, const double *Gb, double gs, const double *mu,
                          const double *c, const float *W, const float *What, int64_t rows,
                          int64_t ldw, int64_t d, double *sigma)
{
    double diag = 0.0, off = 0.0, dwmu = 0.0, var = 0.0;
    for (int64_t i = 0; i < d; i++) {        /* <M, gs Gb - mu mu^T>, upper triangles */
        const double *mi = M + i * d, *gi = Gb + i * d;
        double ui = mu[i], t = 0.0;
        diag += mi[i] * (gs * gi[i] - ui * ui);
        for (int64_t j = i + 1; j < d; j++)
            t += mi[j] * (gs * gi[j] - ui * mu[j]);
        off += t;
    }
    for (int64_t r = 0; r < rows; r++) {     /* ||dW mu||^2 and the estimate's sum */
        const float *w = W + r * ldw, *wq = What + r * ldw;
        double p = 0.0, q = 0.0;
        for (int64_t j = 0; j < d; j++) {
            double v = (double)wq[j] - (double)w[j];
            p += v * mu[j];
            q += c[j] * v * v;
        }
        dwmu += p * p;
        var += q * q;
    }
    bp_profile_flops(BP_STAGE_ERRORS, 3.0 * (double)d * (double)d + 6.0 * (double)rows * (double)d);
    double k = (double)(rows < GRAM_CHUNK_ROWS ? rows : GRAM_CHUNK_ROWS);
    *sigma = 2.0 * 0x1p-24 * sqrt(k) * sqrt(var);
    return diag + 2.0 * off + dwmu;
}

/* <A, B> for symmetric d x d matrices of which the upper triangles are read. */
static double dot_upper(const double *A, const double *B, int64_t d)
{
    double s = 0.0, diag = 0.0;
    for (int64_t i = 0; i < d; i++) {
        diag += A[i * d + i] * B[i * d + i];
        if (i + 1 < d)
            s += cblas_ddot((int)(d - i - 1), A + i * d + i + 1, 1, B + i * d + i + 1, 1);
    }
    bp_profile_flops(BP_STAGE_ERRORS, (double)d * (double)(d + 1));
    return diag + 2.0 * s;
}

/* With quantized inputs: Q = W H^T and sum_r e0_r = <W^T W, S>, once per W
 * (by the rows where that is cheaper, as gram_prepare decides). */
static int totals_prepare(bp_gram *g, const float *W, int64_t rows, int64_t ldw,
                          const double *MW, bp_error *err)
{
    if (!quantized(g) || (g->w_of == W && g->totals))
        return 0;
    int64_t d = g->d;
    size_t rd = (size_t)(rows * d);
    double nn = (double)g->n, fd = (double)d, fr = (double)rows;
    int by_rows = !g->st && 4.0 * nn * fd * fr < 3.0 * nn * fd * fd + 2.0 * fr * fd * fd;
    drop_q(g);
    free(g->e0);
    g->e0 = NULL, g->w_of = NULL;
    double *Wd = bp_malloc(rd * sizeof(double), err);
    double *H = by_rows ? NULL : bp_malloc((size_t)(d * d) * sizeof(double), err);
    double *S = by_rows ? NULL : bp_malloc((size_t)(d * d) * sizeof(double), err);
    int rc = -1;
    g->Q = bp_malloc(rd * sizeof(double), err);
    if (by_rows)
        g->e0 = bp_malloc((size_t)rows * sizeof(double), err);
    if (!Wd || !g->Q || (by_rows ? !g->e0 : !H || !S))
        goto out;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < d; j++)
            Wd[r * d + j] = W[r * ldw + j];
    if (by_rows) {
        if (cross_by_rows(g, Wd, rows, NULL, err) < 0)
            goto out;
        g->e0_total = 0.0;
        for (int64_t r = 0; r < rows; r++)
            g->e0_total += g->e0[r];
    } else {
        if (cross_grams(g, H, S, err) < 0)
            goto out;
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)d, (int)d, 1.0, Wd,
                    (int)d, H, (int)d, 0.0, g->Q, (int)d);
        bp_profile_flops(BP_STAGE_ERRORS, 2.0 * fr * fd * fd);
        g->e0_total = dot_upper(MW, S, d);
    }
    g->w_of = W, g->totals = 1;
    rc = 0;
out:
    free(Wd);
    free(H);
    free(S);
    return rc;
}

/* sum_r <dW_r, Q_r>, dW = What - W (What NULL: dW = -W, the energy's term). */
static double dot_q(const bp_gram *g, const float *W, const float *What, int64_t rows,
                    int64_t ldw)
{
    double s = 0.0;
    int64_t d = g->d;
    for (int64_t r = 0; r < rows; r++) {
        const float *w = W + r * ldw, *a = What ? What + r * ldw : NULL;
        const double *q = g->Q + r * d;
        double t = 0.0;
        for (int64_t j = 0; j < d; j++)
            t += ((a ? (double)a[j] : 0.0) - (double)w[j]) * q[j];
        s += t;
    }
    bp_profile_flops(BP_STAGE_ERRORS, 2.0 * (double)rows * (double)d);
    return s;
}

/* <M, Gb> + 2 <dW, Q> + sum_r e0_r with M = dW^T dW: the layer's error
 * (What), or its energy (What NULL, M = W^T W: X = Xbar - dX); M NULL:
 * the cross terms alone. */
static int total_of(bp_gram *g, const float *W, const float *What, int64_t rows, int64_t ldw,
                    const double *MW, const double *M, double *out, bp_error *err)
{
    if (g->Z || !g->G)
        return bp_fail(err, "internal: layer totals need a double-precision Gram");
    if (totals_prepare(g, W, rows, ldw, MW, err) < 0)
        return -1;
    *out = M ? dot_upper(M, g->G, g->d) : 0.0;
    if (quantized(g))
        *out += 2.0 * dot_q(g, W, What, rows, ldw) + g->e0_total;
    return 0;
}

double bp_gram_contract(const double *A, const double *B, int64_t d)
{
    return dot_upper(A, B, d);
}

int bp_gram_total_cross(bp_gram *g, const float *W, const float *What, int64_t rows,
                        int64_t ldw, const double *MW, double *cross, bp_error *err)
{
    return total_of(g, W, What, rows, ldw, MW, NULL, cross, err);
}

void bp_gram_share_totals(bp_gram *owner, bp_gram *g)
{
    if (!g->totals || !g->Q || g->q_borrowed || owner == g)
        return;
    bp_gram_drop_totals(owner);
    owner->Q = g->Q, owner->w_of = g->w_of, owner->e0_total = g->e0_total;
    owner->totals = 1;
    g->q_borrowed = 1;
}

int bp_gram_use_totals(bp_gram *g, const bp_gram *owner, const float *W)
{
    if (!owner->totals || !owner->Q || owner->w_of != W || g->Q)
        return 0;
    g->Q = owner->Q, g->q_borrowed = 1, g->w_of = W, g->e0_total = owner->e0_total;
    g->totals = 1;
    return 1;
}

void bp_gram_drop_totals(bp_gram *owner)
{
    drop_q(owner);
    owner->w_of = NULL;
}

int bp_gram_total_error(bp_gram *g, const float *W, const float *What, int64_t rows,
                        int64_t ldw, const double *MW, const double *MdW, double *total,
                        bp_error *err)
{
    return total_of(g, W, What, rows, ldw, MW, MdW, total, err);
}

int bp_gram_total_energy(bp_gram *g, const float *W, int64_t rows, int64_t ldw,
                         const double *MW, double *energy, bp_error *err)
{
    return total_of(g, W, NULL, rows, ldw, MW, MW, energy, err);
}
