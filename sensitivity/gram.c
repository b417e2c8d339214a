/*
 * gram.c - Gram matrices of calibration inputs (dsyrk, in row chunks) and the
 * quadratic forms that turn them into exact per-row output errors (dsymm).
 */
#include "gram.h"

#include "common/bp_profile.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GRAM_CHUNK_ROWS 1024

/* Z[i] = [X[i, col0:col0+d], Xq[i, col0:col0+d] - X[i, col0:col0+d]] */
static void fill_chunk(double *Z, const float *X, const float *Xq, int64_t rows,
                       int64_t ld, int64_t col0, int64_t d, int64_t k)
{
    for (int64_t i = 0; i < rows; i++) {
        const float *x = X + i * ld + col0;
        double *z = Z + i * k;
        for (int64_t j = 0; j < d; j++)
            z[j] = x[j];
        if (Xq) {
            const float *xq = Xq + i * ld + col0;
            for (int64_t j = 0; j < d; j++)
                z[d + j] = (double)xq[j] - (double)x[j];
        }
    }
}

/* G = (1/n) sum over row chunks of Z^T Z */
int bp_gram_build(bp_gram *g, const float *X, const float *Xq, int64_t n,
                  int64_t ld, int64_t col0, int64_t d, bp_error *err)
{
    return bp_gram_build_mode(g, X, Xq, n, ld, col0, d, n < (Xq ? 2 * d : d), err);
}

int bp_gram_build_mode(bp_gram *g, const float *X, const float *Xq, int64_t n, int64_t ld,
                       int64_t col0, int64_t d, int keep_rows, bp_error *err)
{
    memset(g, 0, sizeof *g);
    if (n <= 0)
        return bp_fail(err, "no calibration rows");
    g->d = d;
    g->k = Xq ? 2 * d : d;
    int64_t k = g->k, chunk = n < GRAM_CHUNK_ROWS ? n : GRAM_CHUNK_ROWS;
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
    g->G = bp_calloc((size_t)(k * k), sizeof(double), err);
    double *Z = bp_malloc((size_t)(chunk * k) * sizeof(double), err);
    if (!g->G || !Z) {
        free(Z);
        bp_gram_free(g);
        return -1;
    }
    for (int64_t r = 0; r < n; r += chunk) {
        int64_t m = n - r < chunk ? n - r : chunk;
        fill_chunk(Z, X + r * ld, Xq ? Xq + r * ld : NULL, m, ld, col0, d, k);
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)k, (int)m,
                    1.0 / (double)n, Z, (int)k, 1.0, g->G, (int)k);
        bp_profile_flops(BP_STAGE_ERRORS, (double)m * (double)k * (double)(k + 1));
    }
    free(Z);
    return 0;
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
    free(g->G);
    free(g->Z);
    free(g->Xb);
    if (!g->y_borrowed)
        free(g->Y);
    free(g->A);
    free(g->M);
    memset(g, 0, sizeof *g);
}

/* M = V S with S the leading k x k block of G (ld = g->k); out[r] = v_r M_r. */
static void quad_forms(const bp_gram *g, const double *V, int64_t rows, int64_t k, double *M,
                       double *out)
{
    cblas_dsymm(CblasRowMajor, CblasRight, CblasUpper, (int)rows, (int)k, 1.0,
                g->G, (int)g->k, V, (int)k, 0.0, M, (int)k);
    bp_profile_flops(BP_STAGE_ERRORS, 2.0 * (double)rows * (double)k * (double)(k + 1));
    for (int64_t r = 0; r < rows; r++)
        out[r] = cblas_ddot((int)k, V + r * k, 1, M + r * k, 1);
}

/* The remainder P D P instead of D, P = I - n n^T:
 * *s += -2 (D n)^T E n + (n^T D n)(n^T E n), with E n = A (B^T n). */
static int null_correction(const bp_gram_fisher *f, const double *A, const double *B,
                           int64_t rows, int64_t m, double *s, bp_error *err)
{
    double *t = bp_malloc((size_t)(m + rows) * sizeof(double), err);
    if (!t)
        return -1;
    double *En = t + m, nDn = 0.0, nEn = 0.0, DnEn = 0.0;
    cblas_dgemv(CblasRowMajor, CblasTrans, (int)rows, (int)m, 1.0, B, (int)m, f->n, 1, 0.0, t, 1);
    cblas_dgemv(CblasRowMajor, CblasNoTrans, (int)rows, (int)m, 1.0, A, (int)m, t, 1, 0.0, En, 1);
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
 * 1/2 tr(F A B^T) for rows x m matrices A, B with A B^T symmetric (E = A B^T
 * is the error covariance: V (V G)^T, or D D^T), and row_err[r] = E_rr.
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
                         int64_t ldw, const bp_gram_fisher *f, double *row_err, double *kfac,
                         bp_error *err)
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
        if (f)
            rc = fisher_trace(f, M, M, rows, n, row_err, kfac, err);
    }
    return rc;
}

int bp_gram_row_errors(bp_gram *g, const float *W, const float *What,
                       int64_t rows, int64_t ldw, double *row_err, bp_error *err)
{
    return bp_gram_row_errors_kfac(g, W, What, rows, ldw, NULL, row_err, NULL, err);
}

int bp_gram_row_errors_kfac(bp_gram *g, const float *W, const float *What, int64_t rows,
                            int64_t ldw, const bp_gram_fisher *f, double *row_err,
                            double *kfac, bp_error *err)
{
    if (g->Z)
        return direct_errors(g, W, What, rows, ldw, f, row_err, kfac, err);
    int64_t d = g->d, k = g->k;
    double *V = bp_malloc((size_t)(rows * k) * sizeof(double), err);
    double *M = V ? bp_malloc((size_t)(rows * k) * sizeof(double), err) : NULL;
    if (!M) {
        free(V);
        return -1;
    }
    for (int64_t r = 0; r < rows; r++) {
        const float *w = W + r * ldw, *wq = What + r * ldw;
        double *v = V + r * k;
        for (int64_t j = 0; j < d; j++)
            v[j] = (double)wq[j] - (double)w[j];
        if (k > d)
            for (int64_t j = 0; j < d; j++)
                v[d + j] = wq[j];
    }
    quad_forms(g, V, rows, k, M, row_err);
    int rc = f ? fisher_trace(f, V, M, rows, k, row_err, kfac, err) : 0;
    free(V);
    free(M);
    return rc;
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
    int64_t d = g->d;
    double *V = bp_malloc((size_t)(rows * d) * sizeof(double), err);
    if (!V)
        return -1;
    double *M = bp_malloc((size_t)(rows * d) * sizeof(double), err);
    if (!M) {
        free(V);
        return -1;
    }
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < d; j++)
            V[r * d + j] = W[r * ldw + j];
    quad_forms(g, V, rows, d, M, row_energy);
    free(V);
    free(M);
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
