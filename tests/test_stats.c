/*
 * test_stats.c - sensitivity from calibration statistics (sums of X^T X,
 * Xbar^T Xbar, Xbar^T X and column sums, layer.h) equals sensitivity from
 * the rows they summarise: every metric of every candidate within 1e-9
 * relative, for RTN, SQuant, GPTQ and ERQ (with a bias: its augmented
 * inputs), float and quantized activations (a per-tensor and a
 * power-of-two-factor grid), a grouped conv and a K-FAC output factor; in
 * single precision within the 1e-6 gram.h promises.
 */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "sensitivity/sensctx.h"
#include "sensitivity/sensitivity.h"

/* Correlated inputs with a non-zero mean and one outlier column. */
static float *make_inputs(check_rng *r, int64_t n, int64_t d)
{
    float *X = malloc((size_t)(n * d) * sizeof *X);
    for (int64_t i = 0; i < n; i++) {
        double z = check_normal(r);
        for (int64_t j = 0; j < d; j++)
            X[i * d + j] = (float)(0.4 + 0.6 * z + check_normal(r) * (j == 3 ? 8.0 : 1.0));
    }
    return X;
}

/* Sums over the rows, per group of `in` of the in * groups columns. */
static void group_sums(const float *A, const float *B, int64_t n, int64_t in, int groups,
                       double *AtB, double *asum)
{
    int64_t ld = in * groups;
    double *a = malloc((size_t)(n * in) * sizeof *a), *b = malloc((size_t)(n * in) * sizeof *b);
    for (int j = 0; j < groups; j++) {
        for (int64_t i = 0; i < n; i++)
            for (int64_t k = 0; k < in; k++) {
                a[i * in + k] = A[i * ld + j * in + k];
                b[i * in + k] = B[i * ld + j * in + k];
            }
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)in, (int)in, (int)n, 1.0, a,
                    (int)in, b, (int)in, 0.0, AtB + (int64_t)j * in * in, (int)in);
        for (int64_t k = 0; asum && k < in; k++) {
            double s = 0.0;
            for (int64_t i = 0; i < n; i++)
                s += a[i * in + k];
            asum[(int64_t)j * in + k] = s;
        }
    }
    free(a);
    free(b);
}

/* The statistics of X (n x in*groups) at every activation width of spec. */
typedef struct stats_fixture {
    bp_stats st;
    bp_stats_grid grid[4];
    double *buf[16];
    float *xq;
} stats_fixture;

static void make_stats(stats_fixture *f, const float *X, int64_t n, int64_t in, int groups,
                       const bp_sens_spec *spec)
{
    int64_t dd = (int64_t)groups * in * in, ds = (int64_t)groups * in;
    int nb = 0;
    memset(f, 0, sizeof *f);
    f->xq = malloc((size_t)(n * in * groups) * sizeof *f->xq);
    double *xtx = f->buf[nb++] = malloc((size_t)dd * sizeof(double));
    double *xsum = f->buf[nb++] = malloc((size_t)ds * sizeof(double));
    group_sums(X, X, n, in, groups, xtx, xsum);
    f->st = (bp_stats){n, xtx, xsum, f->grid, f};
    for (size_t a = 0; a < spec->n_abits; a++) {
        if (spec->abits[a] >= BP_BITS_FLOAT)
            continue;
        bp_qspec q = spec->acts;
        bp_error err;
        q.bits = spec->abits[a];
        CHECK(bp_quantize_matrix(X, f->xq, n, in * groups, &q, &err) == 0);
        double *qtq = f->buf[nb++] = malloc((size_t)dd * sizeof(double));
        double *qtx = f->buf[nb++] = malloc((size_t)dd * sizeof(double));
        double *qsum = f->buf[nb++] = malloc((size_t)ds * sizeof(double));
        group_sums(f->xq, f->xq, n, in, groups, qtq, qsum);
        group_sums(f->xq, X, n, in, groups, qtx, NULL);
        f->grid[a] = (bp_stats_grid){qtq, qtx, qsum};
    }
}

static void free_stats(stats_fixture *f)
{
    for (int i = 0; i < 16; i++)
        free(f->buf[i]);
    free(f->xq);
}

/* Largest relative difference between two tables' values (NaN where both). */
static double table_diff(const bp_table *a, const bp_table *b)
{
    double worst = 0.0;
    CHECK(a->n == b->n);
    for (size_t i = 0; i < a->n && i < b->n; i++)
        for (int m = 0; m < BP_METRIC_COUNT; m++) {
            double x = a->rows[i].value[m], y = b->rows[i].value[m];
            if (isnan(x) || isnan(y)) {
                CHECK(isnan(x) && isnan(y));
                continue;
            }
            double s = fmax(fabs(x), fabs(y));
            if (s > 0.0)
                worst = fmax(worst, fabs(x - y) / s);
        }
    return worst;
}

/* n weights ~ N(0, scale^2). */
static float *random_weights(check_rng *r, int64_t n, double scale)
{
    float *W = malloc((size_t)n * sizeof *W);
    for (int64_t i = 0; i < n; i++)
        W[i] = (float)(check_normal(r) * scale);
    return W;
}

/* A spec over the given widths (quantizer set per comparison). */
static bp_sens_spec spec_of(int *wbits, size_t nw, int *abits, size_t na, bp_qspec w,
                            bp_qspec a, bp_metric metric, int precision)
{
    bp_sens_spec s = {wbits, nw, abits, na, w, a, metric, BP_WQ_RTN,
                      {128, 0.01, 0, BP_GPTQ_DOUBLE, NULL}, 3, {2000.0, 2000.0, 100},
                      BP_XFIT_OFF, 0, precision, NULL};
    return s;
}

/* Weights per group of 128 (symmetric or not), activations per tensor,
 * min-max grids, in double. */
static bp_sens_spec group128_spec(int *wbits, size_t nw, int *abits, size_t na, int symmetric,
                                  bp_metric metric)
{
    return spec_of(wbits, nw, abits, na,
                   (bp_qspec){0, BP_GRAN_GROUP, 128, symmetric, BP_RANGE_MINMAX, 2.0,
                              BP_AQ_UNIFORM, 0},
                   (bp_qspec){0, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0},
                   metric, BP_PREC_DOUBLE);
}

static void compare(const char *what, const bp_layer *rows, const bp_layer *stats,
                    bp_sens_spec *spec, double tol)
{
    static const bp_wquantizer qs[] = {BP_WQ_RTN, BP_WQ_SQUANT, BP_WQ_GPTQ, BP_WQ_ERQ};
    for (size_t k = 0; k < sizeof qs / sizeof *qs; k++) {
        if (qs[k] == BP_WQ_ERQ && rows->groups > 1)
            continue;
        bp_table tr, ts;
        bp_error err = {""};
        bp_table_init(&tr);
        bp_table_init(&ts);
        spec->quantizer = qs[k];
        CHECK_MSG(bp_sensitivity_layer(rows, spec, &tr, &err) == 0, "%s", err.msg);
        CHECK_MSG(bp_sensitivity_layer(stats, spec, &ts, &err) == 0, "%s", err.msg);
        double d = table_diff(&tr, &ts);
        printf("%-28s %-6s rows vs statistics: %zu rows, max relative difference %.2e\n", what,
               bp_wquantizer_name(qs[k]), ts.n, d);
        CHECK_MSG(d <= tol, "%s %s: %.3e > %.0e", what, bp_wquantizer_name(qs[k]), d, tol);
        bp_table_free(&tr);
        bp_table_free(&ts);
    }
}

static void test_linear(bp_qkind kind, int precision, double tol)
{
    check_rng r = {97 + kind};
    enum { O = 24, D = 40, N = 3000 };
    float *X = make_inputs(&r, N, D), *W = random_weights(&r, O * D, 0.2), bias[O];
    for (int i = 0; i < O; i++)
        bias[i] = (float)check_normal(&r);
    float F[O * O];                               /* a dense output factor: K-FAC */
    for (int i = 0; i < O; i++)
        for (int j = 0; j < O; j++)
            F[i * O + j] = (float)(i == j ? 2.0 + i * 0.1 : 0.3 / (1 + abs(i - j)));
    bp_ofactor of = {1, O, 0, F, NULL, NULL, NULL, NULL};
    float g2[O];
    for (int i = 0; i < O; i++)
        g2[i] = F[i * O + i];
    int wbits[] = {3, 4, 8}, abits[] = {4, 8, 16};
    bp_sens_spec spec = spec_of(wbits, 3, abits, 3,
                                (bp_qspec){0, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0,
                                           BP_AQ_UNIFORM, 0},
                                (bp_qspec){0, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MSE, 2.0, kind, 0},
                                BP_METRIC_KFAC, precision);
    stats_fixture f;
    make_stats(&f, X, N, D, 1, &spec);
    bp_layer rows = {"fc", O, D, 1, 1, 1, W, bias, N, X, g2, &of, NULL, NULL, NULL};
    bp_layer st = {"fc", O, D, 1, 1, 1, W, bias, N, NULL, g2, &of, &f.st, NULL, NULL};
    compare(kind == BP_AQ_PTF ? "linear, ptf grid" : "linear, uniform grid", &rows, &st, &spec,
            tol);
    /* the weights exported for a candidate are the same too */
    float *a = malloc(O * D * sizeof *a), *b = malloc(O * D * sizeof *b), ba[O], bb[O];
    float *s1 = malloc(O * D * sizeof *s1), *z1 = malloc(O * D * sizeof *z1);
    bp_error err = {""};
    spec.quantizer = BP_WQ_ERQ;
    CHECK_MSG(bp_quantize_candidate(&rows, &spec, 4, 8, a, ba, s1, z1, NULL, &err) == 0, "%s",
              err.msg);
    CHECK_MSG(bp_quantize_candidate(&st, &spec, 4, 8, b, bb, s1, z1, NULL, &err) == 0, "%s",
              err.msg);
    int same = 0;
    for (int i = 0; i < O * D; i++)
        same += a[i] == b[i];
    printf("erq 4/8 weights from rows and statistics: %d of %d identical\n", same, O * D);
    CHECK(same >= O * D - 2);
    /* cross-fitting cannot split statistics: a clear error, not a silent change */
    spec.quantizer = BP_WQ_GPTQ;
    spec.cross_fit = BP_XFIT_ON;
    bp_table t;
    bp_table_init(&t);
    CHECK(bp_sensitivity_layer(&st, &spec, &t, &err) < 0 && strstr(err.msg, "cross_fit"));
    bp_table_free(&t);
    free(a);
    free(b);
    free(s1);
    free(z1);
    free_stats(&f);
    free(X);
    free(W);
}

static void test_grouped_conv(void)
{
    check_rng r = {5};
    enum { G = 2, OG = 6, IN = 18, N = 900 };
    float *X = make_inputs(&r, N, G * IN), *W = random_weights(&r, G * OG * IN, 1.0);
    int wbits[] = {2, 4}, abits[] = {16, 6};
    bp_sens_spec spec = spec_of(wbits, 2, abits, 2,
                                (bp_qspec){0, BP_GRAN_CHANNEL, 0, 0, BP_RANGE_MSE, 2.0,
                                           BP_AQ_UNIFORM, 0},
                                (bp_qspec){0, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0,
                                           BP_AQ_UNIFORM, 0},
                                BP_METRIC_MSE, BP_PREC_DOUBLE);
    stats_fixture f;
    make_stats(&f, X, N, IN, G, &spec);
    bp_layer rows = {"conv", G * OG, IN, 3, 3, G, W, NULL, N, X, NULL, NULL, NULL, NULL, NULL};
    bp_layer st = {"conv", G * OG, IN, 3, 3, G, W, NULL, N, NULL, NULL, NULL, &f.st, NULL, NULL};
    compare("grouped conv (2 groups)", &rows, &st, &spec, 1e-9);
    free_stats(&f);
    free(X);
    free(W);
}

/* Wide enough for single precision (in >= 512): the check reads qtq. */
static void test_single_wide(void)
{
    check_rng r = {11};
    enum { O = 16, D = 520, N = 1200 };
    float *X = make_inputs(&r, N, D), *W = random_weights(&r, O * D, 1.0);
    int wbits[] = {3, 6}, abits[] = {8, 16};
    bp_sens_spec spec = group128_spec(wbits, 2, abits, 2, 1, BP_METRIC_MSE);
    stats_fixture f;
    make_stats(&f, X, N, D, 1, &spec);
    bp_layer rows = {"wide", O, D, 1, 1, 1, W, NULL, N, X, NULL, NULL, NULL, NULL, NULL};
    bp_layer st = {"wide", O, D, 1, 1, 1, W, NULL, N, NULL, NULL, NULL, &f.st, NULL, NULL};
    compare("in 520, double", &rows, &st, &spec, 1e-9);
    bp_table td, ts;
    bp_error err = {""};
    bp_table_init(&td);
    bp_table_init(&ts);
    spec.quantizer = BP_WQ_RTN;
    CHECK(bp_sensitivity_layer(&rows, &spec, &td, &err) == 0);
    spec.precision = BP_PREC_SINGLE;
    CHECK(bp_sensitivity_layer(&st, &spec, &ts, &err) == 0);
    double d = table_diff(&td, &ts);
    printf("in 520, statistics in single precision vs rows in double: %.2e\n", d);
    CHECK(d <= 1e-6);
    bp_table_free(&td);
    bp_table_free(&ts);
    free_stats(&f);
    free(X);
    free(W);
}

/* One table of l under spec's quantizer, through the cache c (or none). */
static void measure_into(const bp_layer *l, const bp_sens_spec *spec, bp_sens_cache *c,
                         bp_table *t)
{
    bp_error err = {""};
    bp_table_init(t);
    CHECK_MSG(bp_sensitivity_layer_cached(l, spec, t, c, &err) == 0, "%s", err.msg);
}

/*
 * The layer totals from statistics (no grad2, no factor): against the rows,
 * with dW^T dW kept across activation widths and not (then contracted with
 * every later width's Gram when first formed, a float width in between);
 * and through a cache, where the quantizers of one layer share W^T W and
 * W H^T: the same tables, and other weights at the same address (changed
 * in place) are not taken for them.
 */
static void test_totals_stats(void)
{
    static const bp_wquantizer qs[] = {BP_WQ_RTN, BP_WQ_SQUANT, BP_WQ_GPTQ, BP_WQ_ERQ};
    check_rng r = {23};
    enum { O = 20, D = 36, N = 1500 };
    float *X = make_inputs(&r, N, D), *W = random_weights(&r, O * D, 0.5), bias[O];
    for (int i = 0; i < O; i++)
        bias[i] = (float)check_normal(&r);
    int wbits[] = {2, 3, 5}, abits[] = {4, 16, 8};
    bp_sens_spec spec = spec_of(wbits, 3, abits, 3,
                                (bp_qspec){0, BP_GRAN_GROUP, 12, 0, BP_RANGE_MINMAX, 2.0,
                                           BP_AQ_UNIFORM, 0},
                                (bp_qspec){0, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0,
                                           BP_AQ_UNIFORM, 0},
                                BP_METRIC_RELATIVE, BP_PREC_DOUBLE);
    stats_fixture f;
    make_stats(&f, X, N, D, 1, &spec);
    bp_layer rows = {"fc", O, D, 1, 1, 1, W, bias, N, X, NULL, NULL, NULL, NULL, NULL};
    bp_layer st = {"fc", O, D, 1, 1, 1, W, bias, N, NULL, NULL, NULL, &f.st, NULL, NULL};
    for (int keep = 0; keep < 2; keep++) {
        bp_sx_set_totals_keep(keep ? (size_t)1 << 30 : 0);
        size_t before = bp_sx_totals_count();
        compare(keep ? "totals, kept" : "totals, contracted ahead", &rows, &st, &spec, 1e-9);
        CHECK(bp_sx_totals_count() > before);
        /* through one cache, quantizer after quantizer: the same tables */
        bp_sens_cache c = {0};
        bp_table alone[4], cached[4];
        for (size_t k = 0; k < 4; k++) {
            spec.quantizer = qs[k];
            measure_into(&st, &spec, NULL, &alone[k]);
            measure_into(&st, &spec, &c, &cached[k]);
            double d = table_diff(&alone[k], &cached[k]);
            printf("totals through the cache, %-6s (keep %d): max relative difference %.2e\n",
                   bp_wquantizer_name(qs[k]), keep, d);
            CHECK(d <= 1e-14);
        }
        CHECK(c.totals_hits >= 3);          /* W^T W (and W H^T) taken from the first */
        /* new weights in the same memory: recognised, measured afresh */
        for (int i = 0; i < D; i++)
            W[3 * D + i] *= 1.75f;
        bp_table moved, fresh;
        spec.quantizer = BP_WQ_RTN;
        measure_into(&st, &spec, &c, &moved);
        measure_into(&st, &spec, NULL, &fresh);
        CHECK(table_diff(&moved, &fresh) <= 1e-14);
        CHECK(table_diff(&moved, &alone[0]) > 1e-3);
        for (int i = 0; i < D; i++)
            W[3 * D + i] /= 1.75f;
        bp_table_free(&moved);
        bp_table_free(&fresh);
        for (size_t k = 0; k < 4; k++) {
            bp_table_free(&alone[k]);
            bp_table_free(&cached[k]);
        }
        bp_sens_cache_free(&c);
    }
    bp_sx_set_totals_keep((size_t)1 << 30);
    free_stats(&f);
    free(X);
    free(W);
}

/* Layer totals with dW^T dW in float32 (precision single, in >= 512): from
 * the rows and from statistics, kept across widths and contracted ahead,
 * for RTN and SQuant on inputs whose means are 40x their spread, every
 * value within 1e-6 of the double tables, the float path run and kept (its
 * estimate centred: the mean's share stays in double); GPTQ, whose dW is
 * shaped to the Gram, in double (the same table); with a bound of 0 every
 * contraction is redone in double: the double tables bit for bit. */
static void test_totals_single(void)
{
    static const bp_wquantizer qs[] = {BP_WQ_RTN, BP_WQ_SQUANT, BP_WQ_GPTQ};
    check_rng r = {4711};
    enum { O = 512, D = 512, N = 900 };   /* O: the totals cheaper than the kept rows */
    float *X = make_inputs(&r, N, D), *W = random_weights(&r, O * D, 0.05);
    for (int64_t i = 0; i < N; i++)            /* column means 40x the spread */
        for (int64_t j = 0; j < D; j++)
            X[i * D + j] += 40.0f * (float)(1 + j % 5);
    int wbits[] = {2, 4, 8}, abits[] = {8, 16};
    bp_sens_spec spec = group128_spec(wbits, 3, abits, 2, 0, BP_METRIC_RELATIVE);
    stats_fixture f;
    make_stats(&f, X, N, D, 1, &spec);
    bp_layer rows = {"fc", O, D, 1, 1, 1, W, NULL, N, X, NULL, NULL, NULL, NULL, NULL};
    bp_layer st = {"fc", O, D, 1, 1, 1, W, NULL, N, NULL, NULL, NULL, &f.st, NULL, NULL};
    for (int keep = 0; keep < 2; keep++)
        for (int from = 0; from < 2; from++)
            for (size_t k = 0; k < sizeof qs / sizeof qs[0]; k++) {
                const bp_layer *l = from ? &st : &rows;
                bp_table td, ts, tz;
                size_t made0, redone0, made1, redone1;
                bp_sx_set_totals_keep(keep ? (size_t)1 << 30 : 0);
                spec.quantizer = qs[k];
                spec.precision = BP_PREC_DOUBLE;
                measure_into(l, &spec, NULL, &td);
                spec.precision = BP_PREC_SINGLE;
                bp_sx_single_m_counts(&made0, &redone0);
                measure_into(l, &spec, NULL, &ts);
                bp_sx_single_m_counts(&made1, &redone1);
                double d = table_diff(&td, &ts);
                printf("totals, dW^T dW in float32, %-6s from %s (keep %d): %.2e of double; "
                       "%zu formed, %zu redone\n", bp_wquantizer_name(qs[k]),
                       from ? "statistics" : "rows", keep, d, made1 - made0,
                       redone1 - redone0);
                if (qs[k] == BP_WQ_GPTQ) {             /* weights shaped to Gb: double */
                    CHECK(made1 == made0 && d == 0.0);
                } else {
                    CHECK(made1 > made0);
                    /* the centred estimate keeps the float path here (uncentred, the
                     * mean's share sends SQuant back to double) */
                    CHECK_MSG(redone1 == redone0, "%s: %zu redone",
                              bp_wquantizer_name(qs[k]), redone1 - redone0);
                    CHECK_MSG(d <= 1e-6, "%s from %d keep %d: %.2e",
                              bp_wquantizer_name(qs[k]), from, keep, d);
                }
                bp_sx_set_single_m_tol(0.0);           /* every one redone in double */
                measure_into(l, &spec, NULL, &tz);
                bp_sx_set_single_m_tol(1e-6);
                CHECK_MSG(table_diff(&td, &tz) == 0.0, "%s: redone %.2e",
                          bp_wquantizer_name(qs[k]), table_diff(&td, &tz));
                bp_table_free(&td);
                bp_table_free(&ts);
                bp_table_free(&tz);
            }
    bp_sx_set_totals_keep((size_t)1 << 30);
    free_stats(&f);
    free(X);
    free(W);
}

int main(void)
{
    test_linear(BP_AQ_UNIFORM, BP_PREC_DOUBLE, 1e-9);
    test_linear(BP_AQ_PTF, BP_PREC_DOUBLE, 1e-9);
    test_grouped_conv();
    test_single_wide();
    test_totals_stats();
    test_totals_single();
    return check_done();
}
