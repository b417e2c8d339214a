/*
 * gptq.c - GPTQ with lazy block updates (see gptq.h).
 */
#include "gptq.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/bp_profile.h"
#include "gram.h"

void bp_gptq_opts_init(bp_gptq_opts *o)
{
    o->block_size = 128;
    o->damp = 0.01;
    o->act_order = 0;
    o->tensor_grid = NULL;
}

/* Column order for act-order: by descending diag H, ties by lower index. */
typedef struct gptq_col {
    double h;
    int64_t index;
} gptq_col;

static int gptq_cmp(const void *a, const void *b)
{
    const gptq_col *x = a, *y = b;
    if (x->h != y->h)
        return x->h > y->h ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

static int gptq_order(const double *H, int64_t d, int act_order, int64_t *perm, bp_error *err)
{
    gptq_col *cols = bp_malloc((size_t)d * sizeof *cols, err);
    if (!cols)
        return -1;
    for (int64_t j = 0; j < d; j++)
        cols[j] = (gptq_col){H[j * d + j], j};
    if (act_order)
        qsort(cols, (size_t)d, sizeof *cols, gptq_cmp);
    for (int64_t j = 0; j < d; j++)
        perm[j] = cols[j].index;
    free(cols);
    return 0;
}

/* U = upper Cholesky factor of (H permuted)^-1, in place over Hp. */
static int gptq_inverse_factor(double *Hp, int64_t d, bp_error *err)
{
    lapack_int info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', (lapack_int)d, Hp, (lapack_int)d);
    bp_profile_flops(BP_STAGE_WEIGHTS, 4.0 / 3.0 * (double)d * (double)d * (double)d);
    if (info == 0)
        info = LAPACKE_dpotri(LAPACK_ROW_MAJOR, 'U', (lapack_int)d, Hp, (lapack_int)d);
    if (info == 0) {
        for (int64_t i = 0; i < d; i++)        /* potri filled the upper triangle */
            for (int64_t j = 0; j < i; j++)
                Hp[i * d + j] = Hp[j * d + i];
        info = LAPACKE_dpotrf(LAPACK_ROW_MAJOR, 'U', (lapack_int)d, Hp, (lapack_int)d);
    }
    if (info != 0)
        return bp_fail(err, "gptq: the damped Hessian is not positive definite (LAPACK info "
                       "%d); raise the damping", (int)info);
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < i; j++)
            Hp[i * d + j] = 0.0;
    return 0;
}

typedef struct gptq_state {
    int64_t rows, cols;
    double *W;                 /* rows x cols working weights (permuted columns) */
    double *U;                 /* cols x cols */
    float *scale, *zero;       /* per row */
    float *tmp;                /* scratch, max(rows, cols) floats */
    bp_qspec spec;
    float *es, *ez;            /* per element grid (permuted columns), or NULL */
    const float *fixed;        /* per-tensor {scale, zero} given, or NULL */
} gptq_state;

/* Fit per-row (or per-tensor) parameters on columns [c0, c1) of W. */
static int gptq_fit(gptq_state *s, int64_t c0, int64_t c1, bp_error *err)
{
    const bp_qspec *q = &s->spec;
    if (q->granularity == BP_GRAN_TENSOR && s->fixed) {
        for (int64_t r = 0; r < s->rows; r++)
            s->scale[r] = s->fixed[0], s->zero[r] = s->fixed[1];
        return 0;
    }
    if (q->granularity == BP_GRAN_TENSOR) {
        float *all = bp_malloc((size_t)(s->rows * s->cols) * sizeof(float), err);
        if (!all)
            return -1;
        for (int64_t i = 0; i < s->rows * s->cols; i++)
            all[i] = (float)s->W[i];
        float sc, z;
        bp_qparams_fit(all, (size_t)(s->rows * s->cols), q->bits, q->symmetric, q->range,
                       q->mse_norm, &sc, &z);
        for (int64_t r = 0; r < s->rows; r++)
            s->scale[r] = sc, s->zero[r] = z;
        free(all);
        return 0;
    }
    for (int64_t r = 0; r < s->rows; r++) {
        for (int64_t c = c0; c < c1; c++)
            s->tmp[c - c0] = (float)s->W[r * s->cols + c];
        bp_qparams_fit(s->tmp, (size_t)(c1 - c0), q->bits, q->symmetric, q->range,
                       q->mse_norm, &s->scale[r], &s->zero[r]);
    }
    return 0;
}

/* One block [i1, i2): quantize its columns into Q, collect errors in E. */
static void gptq_block(gptq_state *s, int64_t i1, int64_t i2, float *Q, double *E)
{
    int64_t d = s->cols, g = s->spec.granularity == BP_GRAN_GROUP ? s->spec.group_size : 0;
    int64_t bw = i2 - i1;
    for (int64_t j = i1; j < i2; j++) {
        if (g > 0 && j % g == 0)
            gptq_fit(s, j, j + g < d ? j + g : d, NULL);     /* per row: no allocation */
        double ujj = s->U[j * d + j];
        for (int64_t r = 0; r < s->rows; r++) {
            float w = (float)s->W[r * d + j], q;
            bp_fake_quant(&w, &q, 1, s->scale[r], s->zero[r], s->spec.bits);
            Q[r * d + j] = q;
            if (s->es)
                s->es[r * d + j] = s->scale[r], s->ez[r * d + j] = s->zero[r];
            double e = ((double)w - q) / ujj;
            E[r * bw + (j - i1)] = e;
            for (int64_t k = j + 1; k < i2; k++)
                s->W[r * d + k] -= e * s->U[j * d + k];
        }
    }
    if (i2 < d)         /* W[:, i2:] -= E * U[i1:i2, i2:] */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)s->rows, (int)(d - i2),
                    (int)bw, -1.0, E, (int)bw, s->U + i1 * d + i2, (int)d, 1.0,
                    s->W + i2, (int)d);
    bp_profile_flops(BP_STAGE_WEIGHTS, 2.0 * (double)s->rows * (double)(d - i2) * (double)bw);
}

static int gptq_run(gptq_state *s, const bp_gptq_opts *o, float *Qp, bp_error *err)
{
    int64_t d = s->cols, bs = o->block_size > 0 ? o->block_size : 128;
    double *E = bp_malloc((size_t)(s->rows * (bs < d ? bs : d)) * sizeof(double), err);
    if (!E)
        return -1;
    if (s->spec.granularity != BP_GRAN_GROUP && gptq_fit(s, 0, d, err) < 0) {
        free(E);
        return -1;
    }
    for (int64_t i1 = 0; i1 < d; i1 += bs)
        gptq_block(s, i1, i1 + bs < d ? i1 + bs : d, Qp, E);
    free(E);
    return 0;
}

/* Hessian, dead columns, damping, ordering: fills s->W, s->U and perm. */
static int gptq_prepare(gptq_state *s, const float *W, const float *X, int64_t n, int64_t ldx,
                        int64_t xoff, const bp_gptq_opts *o, int64_t *perm, bp_error *err)
{
    int64_t d = s->cols;
    double *H = bp_malloc((size_t)(d * d) * sizeof(double), err);
    if (!H || bp_input_gram(X, n, ldx, xoff, d, 0, 2.0 / (double)n, H, err) < 0) {
        free(H);
        return -1;
    }
    /* dead inputs (always zero): H_jj = 1 and the weight column dropped */
    unsigned char *dead = bp_calloc((size_t)d, 1, err);
    if (!dead) {
        free(H);
        return -1;
    }
    double mean = 0.0;
    for (int64_t j = 0; j < d; j++) {
        if (H[j * d + j] == 0.0)
            H[j * d + j] = 1.0, dead[j] = 1;
        mean += H[j * d + j];
    }
    mean /= (double)d;
    for (int64_t j = 0; j < d; j++)
        H[j * d + j] += o->damp * mean;
    if (gptq_order(H, d, o->act_order, perm, err) < 0) {
        free(H);
        free(dead);
        return -1;
    }
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++)
            s->U[i * d + j] = H[perm[i] * d + perm[j]];
    for (int64_t r = 0; r < s->rows; r++)
        for (int64_t j = 0; j < d; j++)
            s->W[r * d + j] = dead[perm[j]] ? 0.0 : W[r * d + perm[j]];
    free(dead);
    free(H);
    return gptq_inverse_factor(s->U, d, err);
}

int bp_gptq_quantize(const float *W, int64_t rows, int64_t cols, const float *X, int64_t n,
                     int64_t ldx, int64_t xoff, const bp_qspec *spec,
                     const bp_gptq_opts *o, float *out, bp_error *err)
{
    return bp_gptq_quantize_grid(W, rows, cols, X, n, ldx, xoff, spec, o, out, NULL, NULL,
                                 NULL, err);
}

int bp_gptq_quantize_grid(const float *W, int64_t rows, int64_t cols, const float *X,
                          int64_t n, int64_t ldx, int64_t xoff, const bp_qspec *spec,
                          const bp_gptq_opts *o, float *out, float *scale, float *zero,
                          int32_t *g_idx, bp_error *err)
{
    if (spec->bits >= BP_BITS_FLOAT) {
        memcpy(out, W, (size_t)(rows * cols) * sizeof(float));
        return 0;
    }
    if (n <= 0 || !X)
        return bp_fail(err, "gptq needs calibration inputs");
    if (spec->granularity == BP_GRAN_GROUP && spec->group_size <= 0)
        return bp_fail(err, "gptq: group_size must be positive");
    gptq_state s = {rows, cols, NULL, NULL, NULL, NULL, NULL, *spec, NULL, NULL, o->tensor_grid};
    if (scale && zero) {
        s.es = bp_malloc((size_t)(rows * cols) * sizeof(float), err);
        s.ez = bp_malloc((size_t)(rows * cols) * sizeof(float), err);
    }
    int64_t *perm = bp_malloc((size_t)cols * sizeof *perm, err);
    float *Qp = bp_malloc((size_t)(rows * cols) * sizeof(float), err);
    s.W = bp_malloc((size_t)(rows * cols) * sizeof(double), err);
    s.U = bp_malloc((size_t)(cols * cols) * sizeof(double), err);
    s.scale = bp_malloc((size_t)rows * sizeof(float), err);
    s.zero = bp_malloc((size_t)rows * sizeof(float), err);
    s.tmp = bp_malloc((size_t)(rows > cols ? rows : cols) * sizeof(float), err);
    int rc = -1;
    if (perm && Qp && s.W && s.U && s.scale && s.zero && s.tmp &&
        gptq_prepare(&s, W, X, n, ldx, xoff, o, perm, err) == 0 && gptq_run(&s, o, Qp, err) == 0) {
        for (int64_t r = 0; r < rows; r++)
            for (int64_t j = 0; j < cols; j++) {
                out[r * cols + perm[j]] = Qp[r * cols + j];
                if (s.es)
                    scale[r * cols + perm[j]] = s.es[r * cols + j],
                    zero[r * cols + perm[j]] = s.ez[r * cols + j];
            }
        rc = (scale && zero && !s.es) ? -1 : 0;
        int64_t gs = spec->granularity == BP_GRAN_GROUP ? spec->group_size : cols;
        for (int64_t j = 0; g_idx && j < cols; j++)
            g_idx[perm[j]] = (int32_t)(j / gs);
    }
    free(s.es);
    free(s.ez);
    free(perm);
    free(Qp);
    free(s.W);
    free(s.U);
    free(s.scale);
    free(s.zero);
    free(s.tmp);
    return rc;
}
