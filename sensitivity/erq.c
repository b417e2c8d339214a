/*
 * erq.c - ERQ's Aqer and Wqer (see erq.h).  Every product goes through one
 * Gram G = A^T A of the augmented quantized inputs (dsyrk); the ridge
 * systems are solved with LAPACKE's Cholesky (dposv), never by inversion.
 */
#include "erq.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/bp_profile.h"
#include "gram.h"

void bp_erq_opts_init(bp_erq_opts *o)
{
    o->lambda1 = 0.1 * 20000.0;
    o->lambda2 = 0.1 * 20000.0;
    o->max_flips = 100;
}

int bp_erq_refine(const double *C, int64_t m, double *delta, const double *step,
                  const unsigned char *room_up, const unsigned char *room_down,
                  int max_flips)
{
    double *Cd = malloc((size_t)m * sizeof *Cd);
    if (!Cd)
        return 0;
    double p = 0.0;
    for (int64_t i = 0; i < m; i++) {
        double s = 0.0;
        for (int64_t j = 0; j < m; j++)
            s += C[i * m + j] * delta[j];
        Cd[i] = s;
        p += delta[i] * s;
    }
    int kept = 0;
    while (kept < max_flips) {
        int64_t best = -1;
        for (int64_t i = 0; i < m; i++) {      /* g = 2 C delta; delta_i g_i > 0 only */
            double g = 2.0 * Cd[i];
            if (delta[i] * g > 0.0 && (best < 0 || fabs(g) > fabs(2.0 * Cd[best])))
                best = i;
        }
        if (best < 0)
            break;
        /* ERQ's step: v = delta - g snapped to the nearer of the element's two
         * grid errors (ceil on a tie); it flips only when |g| exceeds half a
         * step, and an element that cannot move (the grid's end) ends it too */
        double g = 2.0 * Cd[best], v = delta[best] - g;
        int down = delta[best] > 0.0;
        double other = down ? delta[best] - step[best] : delta[best] + step[best];
        double ceil_e = down ? delta[best] : other, floor_e = down ? other : delta[best];
        double pick = fabs(v - ceil_e) <= fabs(v - floor_e) ? ceil_e : floor_e;
        if (pick == delta[best] || !(down ? room_down[best] : room_up[best]))
            break;
        double move = pick - delta[best];
        double np = p + 2.0 * move * Cd[best] + move * move * C[best * m + best];
        if (np > p)
            break;                               /* the first rejected flip ends it */
        delta[best] += move;
        for (int64_t i = 0; i < m; i++)
            Cd[i] += move * C[i * m + best];
        p = np;
        kept++;
    }
    free(Cd);
    return kept;
}

/* Solve (S + lambda I) Y^T = B^T for Y (rows x k), S k x k from G[idx, idx],
 * B rows x k, in place in B; -1 when not positive definite. */
static int erq_ridge(const double *G, int64_t da, const int64_t *idx, int64_t k, double lambda,
                     double *B, int64_t rows, bp_error *err)
{
    double *S = bp_malloc((size_t)(k * k) * sizeof(double), err);
    double *Bt = bp_malloc((size_t)(k * rows) * sizeof(double), err);
    int rc = -1;
    if (S && Bt) {
        for (int64_t i = 0; i < k; i++)
            for (int64_t j = 0; j < k; j++)
                S[i * k + j] = G[idx[i] * da + idx[j]] + (i == j ? lambda : 0.0);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = 0; i < k; i++)
                Bt[i * rows + r] = B[r * k + i];
        lapack_int info = LAPACKE_dposv(LAPACK_ROW_MAJOR, 'U', (lapack_int)k,
                                        (lapack_int)rows, S, (lapack_int)k, Bt,
                                        (lapack_int)rows);
        bp_profile_flops(BP_STAGE_WEIGHTS, (double)k * (double)k * ((double)k / 3.0 +
                                                                   2.0 * (double)rows));
        if (info == 0) {
            for (int64_t r = 0; r < rows; r++)
                for (int64_t i = 0; i < k; i++)
                    B[r * k + i] = Bt[i * rows + r];
            rc = 0;
        } else {
            bp_fail(err, "erq: the ridge system is not positive definite (LAPACK info %d); "
                    "raise lambda", (int)info);
        }
    }
    free(S);
    free(Bt);
    return rc;
}

/* DA = dX^T A (d x da) over the rows: dX = Xq - X, A = [Xq | 1] (da > d) or Xq. */
static int erq_delta_gram(const float *X, const float *Xq, int64_t n, int64_t d, int64_t da,
                          double *DA, bp_error *err)
{
    enum { CHUNK = 1024 };
    int64_t chunk = n < CHUNK ? n : CHUNK;
    double *dX = bp_malloc((size_t)(chunk * d) * sizeof(double), err);
    double *Ab = bp_malloc((size_t)(chunk * da) * sizeof(double), err);
    int rc = dX && Ab ? 0 : -1;
    memset(DA, 0, (size_t)(d * da) * sizeof(double));
    for (int64_t r0 = 0; rc == 0 && r0 < n; r0 += chunk) {  /* DA += dX_chunk^T A_chunk */
        int64_t m = n - r0 < chunk ? n - r0 : chunk;
        for (int64_t i = 0; i < m; i++) {
            const float *xq = Xq + (r0 + i) * d, *x = X + (r0 + i) * d;
            for (int64_t a = 0; a < d; a++) {
                dX[i * d + a] = (double)xq[a] - (double)x[a];
                Ab[i * da + a] = xq[a];
            }
            if (da > d)
                Ab[i * da + d] = 1.0;
        }
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)da, (int)m, 1.0, dX,
                    (int)d, Ab, (int)da, 1.0, DA, (int)da);
        bp_profile_flops(BP_STAGE_WEIGHTS, 2.0 * (double)d * (double)da * (double)m);
    }
    free(dX);
    free(Ab);
    return rc;
}

/*
 * Aqer on Wc (o x da, bias in the last column when da > d):
 * M = W dX^T A = W DA, then Wc -= M (G + l1 I)^-1.
 */
static int erq_aqer(double *Wc, int64_t o, int64_t d, int64_t da, const double *DA,
                    const double *G, double lambda, bp_error *err)
{
    double *M = bp_malloc((size_t)(o * da) * sizeof(double), err);
    double *Wd = bp_malloc((size_t)(o * d) * sizeof(double), err);
    int64_t *all = bp_malloc((size_t)da * sizeof *all, err);
    int rc = -1;
    if (!M || !Wd || !all)
        goto out;
    for (int64_t r = 0; r < o; r++)
        for (int64_t j = 0; j < d; j++)
            Wd[r * d + j] = Wc[r * da + j];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)o, (int)da, (int)d, 1.0, Wd,
                (int)d, DA, (int)da, 0.0, M, (int)da);
    bp_profile_flops(BP_STAGE_WEIGHTS, 2.0 * (double)o * (double)da * (double)d);
    for (int64_t j = 0; j < da; j++)
        all[j] = j;
    if (erq_ridge(G, da, all, da, lambda, M, o, err) < 0)
        goto out;
    for (int64_t i = 0; i < o * da; i++)
        Wc[i] -= M[i];
    rc = 0;
out:
    free(M);
    free(Wd);
    free(all);
    return rc;
}

/* Frozen grid parameters per element, fitted on the Aqer weights. */
static int erq_freeze(const double *Wc, int64_t o, int64_t d, int64_t da, const bp_qspec *q,
                      float *es, float *ez, bp_error *err)
{
    float *row = bp_malloc((size_t)(o * d) * sizeof(float), err);
    if (!row)
        return -1;
    for (int64_t r = 0; r < o; r++)
        for (int64_t j = 0; j < d; j++)
            row[r * d + j] = (float)Wc[r * da + j];
    float s, z;
    if (q->granularity == BP_GRAN_TENSOR) {
        bp_qspec_fit(q, row, (size_t)(o * d), &s, &z);
        for (int64_t i = 0; i < o * d; i++)
            es[i] = s, ez[i] = z;
    } else {
        int64_t g = q->granularity == BP_GRAN_GROUP && q->group_size > 0 ? q->group_size : d;
        for (int64_t r = 0; r < o; r++)
            for (int64_t c = 0; c < d; c += g) {
                int64_t w = d - c < g ? d - c : g;
                bp_qspec_fit(q, row + r * d + c, (size_t)w, &s, &z);
                for (int64_t j = c; j < c + w; j++)
                    es[r * d + j] = s, ez[r * d + j] = z;
            }
    }
    free(row);
    return 0;
}

typedef struct erq_step {
    int64_t *J, *K;
    int64_t nj, nk;
    double *C, *delta, *step, *B;
    unsigned char *up, *down;
} erq_step;

/* Round row r's columns J, refine, write the grid values into Wc. */
static void erq_round_row(double *Wc, int64_t da, int64_t r, int64_t d, const float *es,
                          const float *ez, int bits, const bp_erq_opts *opt, erq_step *t)
{
    float maxq = (float)((1u << bits) - 1u);
    for (int64_t a = 0; a < t->nj; a++) {
        int64_t j = t->J[a];
        float w = (float)Wc[r * da + j], s = es[r * d + j], z = ez[r * d + j], q;
        bp_fake_quant(&w, &q, 1, s, z, bits);
        double code = nearbyint((double)q / s) + z;
        t->delta[a] = (double)q - Wc[r * da + j];
        t->step[a] = s;
        t->up[a] = code + 1.0 <= maxq;
        t->down[a] = code - 1.0 >= 0.0;
    }
    bp_erq_refine(t->C, t->nj, t->delta, t->step, t->up, t->down, opt->max_flips);
    for (int64_t a = 0; a < t->nj; a++) {
        int64_t j = t->J[a];
        float s = es[r * d + j], z = ez[r * d + j];
        double v = Wc[r * da + j] + t->delta[a];
        float g = (float)(s * (nearbyint(v / s + z) - z));   /* snap exactly onto the grid */
        t->delta[a] = (double)g - Wc[r * da + j];
        Wc[r * da + j] = g;
    }
}

/* One Wqer step over the columns J (all rows), then ridge on K. */
static int erq_wqer_step(double *Wc, int64_t o, int64_t d, int64_t da, const double *G,
                         int64_t n, const float *es, const float *ez, int bits,
                         const bp_erq_opts *opt, erq_step *t, bp_error *err)
{
    for (int64_t a = 0; a < t->nj; a++)
        for (int64_t b = 0; b < t->nj; b++)
            t->C[a * t->nj + b] = G[t->J[a] * da + t->J[b]] / (double)n;
    double *D = bp_malloc((size_t)(o * (t->nj ? t->nj : 1)) * sizeof(double), err);
    if (!D)
        return -1;
    for (int64_t r = 0; r < o; r++) {
        erq_round_row(Wc, da, r, d, es, ez, bits, opt, t);
        memcpy(D + r * t->nj, t->delta, (size_t)t->nj * sizeof(double));
    }
    int rc = 0;
    if (t->nk > 0) {                 /* B = D (A_J^T A_K), then solve */
        double *GJK = bp_malloc((size_t)(t->nj * t->nk) * sizeof(double), err);
        rc = GJK ? 0 : -1;
        if (rc == 0) {
            for (int64_t a = 0; a < t->nj; a++)
                for (int64_t b = 0; b < t->nk; b++)
                    GJK[a * t->nk + b] = G[t->J[a] * da + t->K[b]];
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)o, (int)t->nk,
                        (int)t->nj, 1.0, D, (int)t->nj, GJK, (int)t->nk, 0.0, t->B,
                        (int)t->nk);
            bp_profile_flops(BP_STAGE_WEIGHTS, 2.0 * (double)o * (double)t->nk * (double)t->nj);
            rc = erq_ridge(G, da, t->K, t->nk, opt->lambda2, t->B, o, err);
        }
        for (int64_t r = 0; rc == 0 && r < o; r++)
            for (int64_t b = 0; b < t->nk; b++)
                Wc[r * da + t->K[b]] -= t->B[r * t->nk + b];
        free(GJK);
    }
    free(D);
    return rc;
}

static int erq_wqer(double *Wc, int64_t o, int64_t d, int64_t da, const double *G, int64_t n,
                    const float *es, const float *ez, int bits, const bp_erq_opts *opt,
                    bp_error *err)
{
    erq_step t = {bp_malloc((size_t)da * sizeof(int64_t), err),
                  bp_malloc((size_t)da * sizeof(int64_t), err), 0, 0,
                  bp_malloc((size_t)(d * d) * sizeof(double), err),
                  bp_malloc((size_t)d * sizeof(double), err),
                  bp_malloc((size_t)d * sizeof(double), err),
                  bp_malloc((size_t)(o * da) * sizeof(double), err),
                  bp_malloc((size_t)d, err), bp_malloc((size_t)d, err)};
    int rc = t.J && t.K && t.C && t.delta && t.step && t.B && t.up && t.down ? 0 : -1;
    int64_t first = 0;               /* columns first..d-1 (+ bias) remain */
    while (rc == 0 && first < d) {
        int64_t left = d - first + (da - d);          /* remaining, bias included */
        int64_t take = left == 1 ? 1 : left / 2;
        t.nj = take, t.nk = left - take;
        for (int64_t a = 0; a < take; a++)
            t.J[a] = first + a;
        for (int64_t b = 0; b < t.nk; b++)
            t.K[b] = first + take + b;
        rc = erq_wqer_step(Wc, o, d, da, G, n, es, ez, bits, opt, &t, err);
        first += take;
    }
    free(t.J);
    free(t.K);
    free(t.C);
    free(t.delta);
    free(t.step);
    free(t.B);
    free(t.up);
    free(t.down);
    return rc;
}

int bp_erq_quantize(const float *W, const float *bias, int64_t o, int64_t d, const float *X,
                    const float *Xq, int64_t n, const bp_qspec *wspec, const bp_erq_opts *opt,
                    float *Wout, float *bout, float *scale, float *zero, bp_error *err)
{
    if (!X || !Xq || n <= 0)
        return bp_fail(err, "erq needs calibration inputs");
    if (wspec->bits >= BP_BITS_FLOAT)
        return bp_erq_quantize_sums(W, bias, o, d, NULL, NULL, n, wspec, opt, Wout, bout, scale,
                                    zero, err);
    int64_t da = d + (bias ? 1 : 0);
    double *G = bp_malloc((size_t)(da * da) * sizeof(double), err);
    double *DA = bp_malloc((size_t)(d * da) * sizeof(double), err);
    int rc = -1;
    if (G && DA && bp_input_gram(Xq, n, d, 0, d, da > d, 1.0, G, err) == 0 &&
        erq_delta_gram(X, Xq, n, d, da, DA, err) == 0)
        rc = bp_erq_quantize_sums(W, bias, o, d, G, DA, n, wspec, opt, Wout, bout, scale, zero,
                                  err);
    free(G);
    free(DA);
    return rc;
}

int bp_erq_quantize_sums(const float *W, const float *bias, int64_t o, int64_t d,
                         const double *G, const double *DA, int64_t n, const bp_qspec *wspec,
                         const bp_erq_opts *opt, float *Wout, float *bout, float *scale,
                         float *zero, bp_error *err)
{
    if (wspec->bits >= BP_BITS_FLOAT) {
        memcpy(Wout, W, (size_t)(o * d) * sizeof *Wout);
        if (bias && bout)
            memcpy(bout, bias, (size_t)o * sizeof *bout);
        return 0;
    }
    if (!G || !DA || n <= 0)
        return bp_fail(err, "erq needs calibration inputs");
    int64_t da = d + (bias ? 1 : 0);
    double *Wc = bp_malloc((size_t)(o * da) * sizeof(double), err);
    float *es = bp_malloc((size_t)(o * d) * sizeof(float), err);
    float *ez = bp_malloc((size_t)(o * d) * sizeof(float), err);
    int rc = -1;
    if (!Wc || !es || !ez)
        goto out;
    for (int64_t r = 0; r < o; r++) {
        for (int64_t j = 0; j < d; j++)
            Wc[r * da + j] = W[r * d + j];
        if (bias)
            Wc[r * da + d] = bias[r];
    }
    if (erq_aqer(Wc, o, d, da, DA, G, opt->lambda1, err) < 0 ||
        erq_freeze(Wc, o, d, da, wspec, es, ez, err) < 0 ||
        erq_wqer(Wc, o, d, da, G, n, es, ez, wspec->bits, opt, err) < 0)
        goto out;
    for (int64_t r = 0; r < o; r++) {
        for (int64_t j = 0; j < d; j++)
            Wout[r * d + j] = (float)Wc[r * da + j];
        if (bias && bout)
            bout[r] = (float)Wc[r * da + d];
    }
    if (scale)
        memcpy(scale, es, (size_t)(o * d) * sizeof *scale);
    if (zero)
        memcpy(zero, ez, (size_t)(o * d) * sizeof *zero);
    rc = 0;
out:
    free(Wc);
    free(es);
    free(ez);
    return rc;
}
