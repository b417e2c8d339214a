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
#include "common/bp_threads.h"
#include "gram.h"

void bp_gptq_opts_init(bp_gptq_opts *o)
{
    o->block_size = 128;
    o->damp = 0.01;
    o->act_order = 0;
    o->precision = BP_GPTQ_SINGLE;
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

/* U = upper Cholesky factor of (H permuted)^-1, in place over Hp, in
 * 2/3 d^3 flops (the Cholesky factor, then its inverse) rather than the
 * 4/3 of factor, invert, factor again.  With J the order-reversing
 * permutation and J Hp J = L L^T, Hp^-1 = (J L^-1 J)^T (J L^-1 J) and J L^-1 J
 * is upper triangular with a positive diagonal: the factor, by uniqueness.
 * J A J of a row-major square matrix is its elements in reverse order, and
 * the row-major lower triangle is LAPACK's column-major upper, so nothing
 * is transposed. */
static void reverse(double *A, int64_t n)
{
    for (int64_t i = 0, j = n - 1; i < j; i++, j--) {
        double t = A[i];
        A[i] = A[j], A[j] = t;
    }
}

static int gptq_inverse_factor(double *Hp, int64_t d, bp_error *err)
{
    lapack_int n = (lapack_int)d;
    reverse(Hp, d * d);                         /* J Hp J */
    lapack_int info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', n, Hp, n);   /* row-major: L */
    bp_profile_flops(BP_STAGE_WEIGHTS, 2.0 / 3.0 * (double)d * (double)d * (double)d);
    if (info != 0)
        return bp_fail(err, "gptq: the damped Hessian is not positive definite (LAPACK info "
                       "%d); raise the damping", (int)info);
    info = LAPACKE_dtrtri(LAPACK_COL_MAJOR, 'U', 'N', n, Hp, n);       /* row-major: L^-1 */
    if (info != 0)
        return bp_fail(err, "gptq: the damped Hessian's Cholesky factor is singular (LAPACK "
                       "info %d); raise the damping", (int)info);
    reverse(Hp, d * d);                         /* J L^-1 J: upper */
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < i; j++)
            Hp[i * d + j] = 0.0;
    return 0;
}

typedef struct gptq_state {
    int64_t rows, cols;
    double *Wd;                /* rows x cols working weights (permuted columns), double */
    float *Wf;                 /* or single precision */
    const double *Ud;          /* cols x cols, the factor's U in the same precision */
    const float *Uf;
    float *scale, *zero;       /* per row */
    float *tmp;                /* scratch, max(rows, cols) floats */
    bp_qspec spec;
    float *es, *ez;            /* the grid per row and scale group (rows x ng, groups in
                                * GPTQ's column order), or NULL */
    int64_t ng;                /* scale groups per row: 1, or ceil(cols / group_size) */
    const float *fixed;        /* per-tensor {scale, zero} given, or NULL */
    float *Wb;                 /* single precision: the block's columns, bw x rows */
    int64_t b1, b2;            /* the block held in Wb: columns [b1, b2) */
    double flops;              /* of the block updates, for the profile */
} gptq_state;

/* The working weight (r, c), wherever it lives now. */
static float w_at(const gptq_state *s, int64_t r, int64_t c)
{
    if (!s->Wf)
        return (float)s->Wd[r * s->cols + c];
    if (c >= s->b1 && c < s->b2)
        return s->Wb[(c - s->b1) * s->rows + r];
    return s->Wf[r * s->cols + c];
}

static int gptq_fit_params(gptq_state *s, int64_t c0, int64_t c1, bp_error *err);

/* The grid just fitted for columns [c0, ...) (a scale group's first
 * column, or 0) into the caller's, row by row. */
static void gptq_record(gptq_state *s, int64_t c0)
{
    int64_t g = s->spec.granularity == BP_GRAN_GROUP ? c0 / s->spec.group_size : 0;
    for (int64_t r = 0; s->es && r < s->rows; r++)
        s->es[r * s->ng + g] = s->scale[r], s->ez[r * s->ng + g] = s->zero[r];
}

/* Fit per-row (or per-tensor) parameters on columns [c0, c1) of W, and
 * record them as the grid of those columns. */
static int gptq_fit(gptq_state *s, int64_t c0, int64_t c1, bp_error *err)
{
    int rc = gptq_fit_params(s, c0, c1, err);
    if (rc == 0)
        gptq_record(s, c0);
    return rc;
}

static int gptq_fit_params(gptq_state *s, int64_t c0, int64_t c1, bp_error *err)
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
        for (int64_t r = 0; r < s->rows; r++)
            for (int64_t c = 0; c < s->cols; c++)
                all[r * s->cols + c] = w_at(s, r, c);
        float sc, z;
        bp_qspec_fit(q, all, (size_t)(s->rows * s->cols), &sc, &z);
        for (int64_t r = 0; r < s->rows; r++)
            s->scale[r] = sc, s->zero[r] = z;
        free(all);
        return 0;
    }
    for (int64_t r = 0; r < s->rows; r++) {
        for (int64_t c = c0; c < c1; c++)
            s->tmp[c - c0] = w_at(s, r, c);
        bp_qspec_fit(q, s->tmp, (size_t)(c1 - c0), &s->scale[r], &s->zero[r]);
    }
    return 0;
}

/* One block [i1, i2) in double: quantize its columns into Q, spread each
 * column's error over the block's later columns, collect the errors in E,
 * then carry them to every later column with one GEMM. */
static void gptq_block_d(gptq_state *s, int64_t i1, int64_t i2, float *Q, double *E)
{
    int64_t d = s->cols, g = s->spec.granularity == BP_GRAN_GROUP ? s->spec.group_size : 0;
    int64_t bw = i2 - i1;
    double *W = s->Wd;
    const double *U = s->Ud;
    for (int64_t j = i1; j < i2; j++) {
        if (g > 0 && j % g == 0)
            gptq_fit(s, j, j + g < d ? j + g : d, NULL);     /* per row: no allocation */
        double ujj = U[j * d + j];
        for (int64_t r = 0; r < s->rows; r++) {
            float w = (float)W[r * d + j], q;
            bp_fake_quant(&w, &q, 1, s->scale[r], s->zero[r], s->spec.bits);
            Q[r * d + j] = q;
            double e = ((double)w - q) / ujj;
            E[r * bw + (j - i1)] = e;
            for (int64_t k = j + 1; k < i2; k++)
                W[r * d + k] -= e * U[j * d + k];
        }
    }
    if (i2 < d)         /* W[:, i2:] -= E * U[i1:i2, i2:] */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)s->rows, (int)(d - i2),
                    (int)bw, -1.0, E, (int)bw, U + i1 * d + i2, (int)d, 1.0, W + i2, (int)d);
    s->flops += 2.0 * (double)s->rows * (double)(d - i2) * (double)bw;
}

/* x clamped to [lo, hi] with comparisons (maxss / minss: vectorised, unlike
 * fmaxf / fminf, whose NaN rules make them library calls; x is finite). */
static inline float clampf(float x, float lo, float hi)
{
    x = x < lo ? lo : x;
    return x > hi ? hi : x;
}

/* rne(x) for |x| < 2^22 in the default rounding mode: adding 1.5 * 2^23
 * leaves no fraction bits, so the sum rounds x half to even (and vectorises).
 * Beyond, the result is still at least 2^22 - 2 in magnitude with x's sign:
 * past any code range once a zero point (below 2^17) is added and clamped. */
static inline float rne_small(float x)
{
    const float magic = 12582912.0f;
    return (x + magic) - magic;
}

/* B (cols x rows, leading dimension ldb) = A^T for A (rows x cols, leading
 * dimension lda), in tiles that stay in cache on both sides. */
static void transpose(const float *A, int64_t lda, int64_t rows, int64_t cols, float *B,
                      int64_t ldb)
{
    enum { T = 32 };
    for (int64_t r0 = 0; r0 < rows; r0 += T)
        for (int64_t c0 = 0; c0 < cols; c0 += T) {
            int64_t r1 = r0 + T < rows ? r0 + T : rows, c1 = c0 + T < cols ? c0 + T : cols;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t c = c0; c < c1; c++)
                    B[c * ldb + r] = A[r * lda + c];
        }
}

/* Columns of a block done one by one before the rest of the block is
 * updated with one SGEMM. */
#define GPTQ_SUB 16

/* y -= a x over n floats. */
static inline void axpy_neg(float *restrict y, const float *restrict x, float a, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] -= a * x[i];
}

/*
 * The same in single precision, as the authors' code runs it, with the
 * block's columns transposed (Wb: bw x rows) so that every step is a vector
 * over the rows: the column on its grid, its errors Et (bw x rows), and one
 * axpy per later column of the block; then one SGEMM with Et^T carries the
 * block to every later column.  Codes are those of bp_fake_quant.
 */
static void gptq_block_f(gptq_state *s, int64_t i1, int64_t i2, float *Q, float *Et)
{
    int64_t d = s->cols, rows = s->rows, bw = i2 - i1;
    int64_t g = s->spec.granularity == BP_GRAN_GROUP ? s->spec.group_size : 0;
    float *W = s->Wf, *Wb = s->Wb;
    const float *U = s->Uf, *sc = s->scale, *zp = s->zero;
    float qmax = (float)((1u << s->spec.bits) - 1u);
    transpose(W + i1, d, rows, bw, Wb, rows);
    s->b1 = i1, s->b2 = i2;
    for (int64_t j1 = i1; j1 < i2; j1 += GPTQ_SUB) {
        int64_t j2 = j1 + GPTQ_SUB < i2 ? j1 + GPTQ_SUB : i2;
        for (int64_t j = j1; j < j2; j++) {
            if (g > 0 && j % g == 0)
                gptq_fit(s, j, j + g < d ? j + g : d, NULL);     /* per row: no allocation */
            float *w = Wb + (j - i1) * rows, *e = Et + (j - i1) * rows;
            float inv = 1.0f / U[j * d + j];
            for (int64_t r = 0; r < rows; r++) {
                float c = clampf(rne_small(w[r] / sc[r]) + zp[r], 0.0f, qmax);
                float q = sc[r] * (c - zp[r]);
                e[r] = (w[r] - q) * inv;
                w[r] = q;                         /* the column is done: keep its value */
            }
            for (int64_t k = j + 1; k < j2; k++)
                axpy_neg(Wb + (k - i1) * rows, e, U[j * d + k], rows);
        }
        if (j2 < i2)    /* the block's later columns: Wb[j2:i2] -= U[j1:j2, j2:i2]^T Et[j1:j2] */
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(i2 - j2), (int)rows,
                        (int)(j2 - j1), -1.0f, U + j1 * d + j2, (int)d, Et + (j1 - i1) * rows,
                        (int)rows, 1.0f, Wb + (j2 - i1) * rows, (int)rows);
    }
    transpose(Wb, rows, bw, rows, Q + i1, d);
    s->b1 = s->b2 = 0;
    if (i2 < d)         /* W[:, i2:] -= Et^T U[i1:i2, i2:] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)rows, (int)(d - i2), (int)bw,
                    -1.0f, Et, (int)rows, U + i1 * d + i2, (int)d, 1.0f, W + i2, (int)d);
    s->flops += 2.0 * (double)rows * (double)(d - i2) * (double)bw;
}

static int gptq_run(gptq_state *s, const bp_gptq_opts *o, float *Qp, bp_error *err)
{
    int64_t d = s->cols, bs = o->block_size > 0 ? o->block_size : 128;
    size_t ne = (size_t)(s->rows * (bs < d ? bs : d));
    void *E = bp_malloc(ne * (s->Wf ? sizeof(float) : sizeof(double)), err);
    if (s->Wf)
        s->Wb = bp_malloc(ne * sizeof(float), err);
    s->tmp = bp_malloc((size_t)(s->rows > d ? s->rows : d) * sizeof(float), err);
    int rc = E && (!s->Wf || s->Wb) && s->tmp ? 0 : -1;
    if (rc == 0 && s->spec.granularity != BP_GRAN_GROUP)
        rc = gptq_fit(s, 0, d, err);
    for (int64_t i1 = 0; rc == 0 && i1 < d; i1 += bs) {
        int64_t i2 = i1 + bs < d ? i1 + bs : d;
        if (s->Wf)
            gptq_block_f(s, i1, i2, Qp, E);
        else
            gptq_block_d(s, i1, i2, Qp, E);
    }
    free(E);
    free(s->Wb);
    free(s->tmp);
    s->Wb = NULL, s->tmp = NULL;
    return rc;
}

/* Rows per pass of gptq_run (a multiple of 16: whole vectors in the block
 * loops): its block of columns (bw x rows floats, 128 KiB at 128 x 256)
 * stays in the core's cache while the column loop sweeps it again and
 * again, and the rows' weights (256 x in) mostly do from one block to the
 * next, where all the rows at once (3,072 x 768) went to memory each time. */
#define GPTQ_ROWS_PASS 256

/* Rows [r0, r0 + n) of s: the same state over them (no flops counted yet). */
static gptq_state gptq_rows_of(const gptq_state *s, int64_t r0, int64_t n)
{
    gptq_state p = *s;
    p.rows = n, p.flops = 0.0;
    if (s->Wd)
        p.Wd = s->Wd + r0 * s->cols;
    if (s->Wf)
        p.Wf = s->Wf + r0 * s->cols;
    p.scale = s->scale + r0, p.zero = s->zero + r0;
    if (s->es)
        p.es = s->es + r0 * s->ng, p.ez = s->ez + r0 * s->ng;
    return p;
}

/* gptq_run over rows [0, s->rows) in passes of GPTQ_ROWS_PASS rows (rows
 * are independent under GPTQ: every row meets the same factor), except
 * where the grid is still to be fitted over all rows (per tensor). */
static int gptq_run_passes(gptq_state *s, const bp_gptq_opts *o, float *Qp, bp_error *err)
{
    int64_t d = s->cols;
    if (s->spec.granularity == BP_GRAN_TENSOR && !s->fixed)
        return gptq_run(s, o, Qp, err);
    for (int64_t r0 = 0; r0 < s->rows; r0 += GPTQ_ROWS_PASS) {
        gptq_state p = gptq_rows_of(s, r0, s->rows - r0 < GPTQ_ROWS_PASS ? s->rows - r0
                                                                         : GPTQ_ROWS_PASS);
        int rc = gptq_run(&p, o, Qp + r0 * d, err);
        s->flops += p.flops;
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* A part of the rows on one thread, with its own scratch. */
typedef struct gptq_part {
    gptq_state s;
    const bp_gptq_opts *o;
    float *Qp;
    int rc;
    bp_error err;
} gptq_part;

static void *gptq_part_run(void *arg)
{
    gptq_part *p = arg;
    p->rc = gptq_run_passes(&p->s, p->o, p->Qp, &p->err);
    return NULL;
}

/* Below this many flops of block updates a layer is not worth a thread. */
#define GPTQ_SPLIT_FLOPS 5e7

/* gptq_run over the rows on bp_threads() threads, each taking whole passes
 * of GPTQ_ROWS_PASS rows, with OpenBLAS on one thread throughout: every
 * pass then makes the same calls (the same BLAS shapes, single-threaded)
 * at any thread count of either, so the result is the same bit for bit
 * (BLAS does not promise a row the same rounding in products of other
 * shapes or split over its own threads).  A per-tensor grid is fitted
 * over all rows first, then given to the passes. */
static int gptq_run_rows(gptq_state *s, const bp_gptq_opts *o, float *Qp, bp_error *err)
{
    gptq_state all = *s;
    float fixed[2];
    if (all.spec.granularity == BP_GRAN_TENSOR && !all.fixed) {
        if (gptq_fit_params(&all, 0, all.cols, err) < 0)
            return -1;
        fixed[0] = all.scale[0], fixed[1] = all.zero[0];
        all.fixed = fixed;
    }
    int nt = bp_threads();
    int64_t passes = (all.rows + GPTQ_ROWS_PASS - 1) / GPTQ_ROWS_PASS;
    double work = (double)all.rows * (double)all.cols * (double)all.cols;
    if (nt > passes)
        nt = (int)passes;
    if (work < GPTQ_SPLIT_FLOPS)
        nt = 1;
    gptq_part p[BP_THREADS_MAX];
    int64_t d = all.cols;
    for (int i = 0; i < nt; i++) {
        int64_t r0 = passes * i / nt * GPTQ_ROWS_PASS;
        int64_t r1 = i + 1 < nt ? passes * (i + 1) / nt * GPTQ_ROWS_PASS : all.rows;
        p[i] = (gptq_part){gptq_rows_of(&all, r0, r1 - r0), o, Qp + r0 * d, 0, {{0}}};
    }
    int blas = openblas_get_num_threads();
    if (nt == 1 && blas > 1)         /* bp_parallel holds it for more threads */
        openblas_set_num_threads(1);
    bp_parallel(nt, gptq_part_run, p, sizeof p[0]);
    if (nt == 1 && blas > 1)
        openblas_set_num_threads(blas);
    int rc = 0;
    for (int i = 0; i < nt; i++) {
        bp_profile_flops(BP_STAGE_WEIGHTS, p[i].s.flops);
        if (p[i].rc < 0 && rc == 0)
            rc = -1, *err = p[i].err;
    }
    return rc;
}

void bp_gptq_factor_free(bp_gptq_factor *f)
{
    free(f->perm);
    free(f->dead);
    free(f->Ud);
    free(f->Uf);
    memset(f, 0, sizeof *f);
}

/* Dead columns, damping, ordering, U from the Hessian H (d x d, consumed). */
int bp_gptq_factor_from_hessian(bp_gptq_factor *f, double *H, int64_t d,
                                const bp_gptq_opts *o, bp_error *err)
{
    memset(f, 0, sizeof *f);
    f->d = d;
    f->single = o->precision != BP_GPTQ_DOUBLE;
    f->Ud = bp_malloc((size_t)(d * d) * sizeof(double), err);
    f->perm = bp_malloc((size_t)d * sizeof *f->perm, err);
    f->dead = bp_calloc((size_t)d, 1, err);
    if (!f->Ud || !f->perm || !f->dead)
        goto fail;
    /* dead inputs (always zero): H_jj = 1 and the weight column dropped */
    double mean = 0.0;
    for (int64_t j = 0; j < d; j++) {
        if (H[j * d + j] == 0.0)
            H[j * d + j] = 1.0, f->dead[j] = 1;
        mean += H[j * d + j];
    }
    mean /= (double)d;
    for (int64_t j = 0; j < d; j++)
        H[j * d + j] += o->damp * mean;
    if (gptq_order(H, d, o->act_order, f->perm, err) < 0)
        goto fail;
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++)
            f->Ud[i * d + j] = H[f->perm[i] * d + f->perm[j]];
    if (gptq_inverse_factor(f->Ud, d, err) < 0)
        goto fail;
    if (f->single) {                 /* U in float; the factorisation stays in double */
        if (!(f->Uf = bp_malloc((size_t)(d * d) * sizeof(float), err)))
            goto fail;
        for (int64_t i = 0; i < d * d; i++)
            f->Uf[i] = (float)f->Ud[i];
        free(f->Ud);
        f->Ud = NULL;
    }
    return 0;
fail:
    bp_gptq_factor_free(f);
    return -1;
}

/* H = 2 X^T X / n: in double (dsyrk), or in single precision as the error
 * Gram of the same inputs is formed (bp_gram_build_prec), so that the two
 * can be one. */
int bp_gptq_factor_build(bp_gptq_factor *f, const float *X, int64_t n, int64_t ldx,
                         int64_t xoff, int64_t d, const bp_gptq_opts *o, bp_error *err)
{
    memset(f, 0, sizeof *f);
    if (n <= 0 || !X)
        return bp_fail(err, "gptq needs calibration inputs");
    double *H = bp_malloc((size_t)(d * d) * sizeof(double), err);
    int rc = H ? 0 : -1;
    if (rc == 0 && o->precision == BP_GPTQ_DOUBLE) {
        rc = bp_input_gram(X, n, ldx, xoff, d, 0, 2.0 / (double)n, H, err);
    } else if (rc == 0) {
        bp_gram g;
        rc = bp_gram_build_prec(&g, X, NULL, n, ldx, xoff, d, 0, 1, err);
        if (rc == 0)
            rc = bp_gram_hessian(&g, 2.0, H, err);
        bp_gram_free(&g);
    }
    if (rc == 0)
        rc = bp_gptq_factor_from_hessian(f, H, d, o, err);
    free(H);
    return rc;
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
    bp_gptq_factor f;
    if (bp_gptq_factor_build(&f, X, n, ldx, xoff, cols, o, err) < 0)
        return -1;
    int rc = bp_gptq_quantize_factored(&f, W, rows, spec, o, out, scale, zero, g_idx, err);
    bp_gptq_factor_free(&f);
    return rc;
}

int bp_gptq_quantize_factored(const bp_gptq_factor *f, const float *W, int64_t rows,
                              const bp_qspec *spec, const bp_gptq_opts *o, float *out,
                              float *scale, float *zero, int32_t *g_idx, bp_error *err)
{
    int64_t cols = f->d;
    if (spec->bits >= BP_BITS_FLOAT) {
        memcpy(out, W, (size_t)(rows * cols) * sizeof(float));
        return 0;
    }
    if (spec->granularity == BP_GRAN_GROUP && spec->group_size <= 0)
        return bp_fail(err, "gptq: group_size must be positive");
    int64_t ng = spec->granularity == BP_GRAN_GROUP ? (cols + spec->group_size - 1) /
                                                       spec->group_size : 1;
    gptq_state s = {rows, cols, NULL, NULL, f->Ud, f->Uf, NULL, NULL, NULL, *spec,
                    scale && zero ? scale : NULL, scale && zero ? zero : NULL, ng,
                    o->tensor_grid, NULL, 0, 0, 0.0};
    const int64_t *perm = f->perm;
    int in_order = 1;                /* no act-order permutation: no gathers */
    for (int64_t j = 0; j < cols; j++)
        in_order &= perm[j] == j;
    float *Qp = in_order ? out : bp_malloc((size_t)(rows * cols) * sizeof(float), err);
    /* In order and in single precision the weights are worked on in out:
     * a block's codes are written over its columns once the later columns
     * no longer need them. */
    if (f->single)
        s.Wf = in_order ? out : bp_malloc((size_t)(rows * cols) * sizeof(float), err);
    else
        s.Wd = bp_malloc((size_t)(rows * cols) * sizeof(double), err);
    s.scale = bp_malloc((size_t)rows * sizeof(float), err);
    s.zero = bp_malloc((size_t)rows * sizeof(float), err);
    int rc = -1;
    if (Qp && (s.Wf || s.Wd) && s.scale && s.zero) {
        if (in_order && s.Wf && s.Wf != W)
            memcpy(s.Wf, W, (size_t)(rows * cols) * sizeof(float));
        for (int64_t r = 0; !(in_order && s.Wf) && r < rows; r++)
            for (int64_t j = 0; j < cols; j++) {
                float w = W[r * cols + perm[j]];
                if (s.Wf)
                    s.Wf[r * cols + j] = w;
                else
                    s.Wd[r * cols + j] = w;
            }
        for (int64_t j = 0; j < cols; j++)          /* dead inputs: a zero weight column */
            for (int64_t r = 0; f->dead[perm[j]] && r < rows; r++) {
                if (s.Wf)
                    s.Wf[r * cols + j] = 0.0f;
                else
                    s.Wd[r * cols + j] = 0.0;
            }
        rc = gptq_run_rows(&s, o, Qp, err);
    }
    if (rc == 0) {
        for (int64_t r = 0; !in_order && r < rows; r++)
            for (int64_t j = 0; j < cols; j++)
                out[r * cols + perm[j]] = Qp[r * cols + j];
        int64_t gs = spec->granularity == BP_GRAN_GROUP ? spec->group_size : cols;
        for (int64_t j = 0; g_idx && j < cols; j++)
            g_idx[perm[j]] = (int32_t)(j / gs);
    }
    if (Qp != out)
        free(Qp);
    free(s.Wd);
    if (s.Wf != out)
        free(s.Wf);
    free(s.scale);
    free(s.zero);
    return rc;
}
