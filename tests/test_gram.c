/*
 * test_gram.c - the Gram-matrix error equals the directly computed output
 * error ||What Xbar^T - W X^T||^2 / n to 1e-9 relative, for linear layers,
 * grouped convs, quantized and unquantized activations, both metrics.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "check.h"
#include "sensitivity/gram.h"
#include "sensitivity/sensctx.h"
#include "sensitivity/sensitivity.h"

/* Correlated inputs: X = Z A with a random mixing matrix A. */
static float *make_inputs(check_rng *r, int64_t n, int64_t d)
{
    float *X = malloc((size_t)(n * d) * sizeof *X);
    double *A = malloc((size_t)(d * d) * sizeof *A), *z = malloc((size_t)d * sizeof *z);
    for (int64_t i = 0; i < d * d; i++)
        A[i] = check_normal(r) / sqrt((double)d) + (i % (d + 1) == 0 ? 1.0 : 0.0);
    for (int64_t i = 0; i < n; i++) {
        for (int64_t k = 0; k < d; k++)
            z[k] = check_normal(r);
        for (int64_t j = 0; j < d; j++) {
            double s = 0.3;                           /* non-zero mean */
            for (int64_t k = 0; k < d; k++)
                s += z[k] * A[k * d + j];
            X[i * d + j] = (float)s;
        }
    }
    free(A);
    free(z);
    return X;
}

/* Reference: sum over groups, rows and samples of the squared difference. */
static double direct_error(const float *W, const float *Wq, const float *X, const float *Xq,
                           int64_t out, int64_t in, int groups, int64_t n)
{
    long double total = 0;
    int64_t og = out / groups, ld = in * groups;
    for (int64_t i = 0; i < n; i++)
        for (int64_t o = 0; o < out; o++) {
            int64_t c0 = (o / og) * in;
            long double y = 0, yq = 0;
            for (int64_t k = 0; k < in; k++) {
                y += (long double)W[o * in + k] * X[i * ld + c0 + k];
                yq += (long double)Wq[o * in + k] * Xq[i * ld + c0 + k];
            }
            total += (yq - y) * (yq - y);
        }
    return (double)(total / n);
}

static double direct_energy(const float *W, const float *X, int64_t out, int64_t in,
                            int groups, int64_t n)
{
    float *zero = calloc((size_t)(out * in), sizeof *zero);
    double e = direct_error(W, zero, X, X, out, in, groups, n);
    free(zero);
    return e;
}

static void test_case(uint64_t seed, int64_t out, int64_t in, int groups, int64_t n)
{
    check_rng r = {seed};
    int64_t width = in * groups;
    float *X = make_inputs(&r, n, width);
    float *W = malloc((size_t)(out * in) * sizeof *W), *Wq = malloc((size_t)(out * in) * sizeof *Wq);
    float *Xq = malloc((size_t)(n * width) * sizeof *Xq);
    for (int64_t i = 0; i < out * in; i++)
        W[i] = (float)check_normal(&r);
    int wbits[] = {3, 8}, abits[] = {4, 16};
    bp_sens_spec spec = {wbits, 2, abits, 2,
                         {0, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0},
                         {0, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0}, BP_METRIC_MSE, BP_WQ_RTN, {128, 0.01, 0, BP_GPTQ_SINGLE, NULL}, 3, {2000.0, 2000.0, 100}, BP_XFIT_OFF, 0, BP_PREC_DOUBLE, NULL};
    bp_layer l = {"layer", out, in, 1, 1, groups, W, NULL, n, X, NULL, NULL, NULL, NULL, NULL};
    for (int metric = 0; metric < 2; metric++) {
        bp_table t;
        bp_table_init(&t);
        spec.metric = metric ? BP_METRIC_RELATIVE : BP_METRIC_MSE;
        CHECK(bp_sensitivity_layer(&l, &spec, &t, NULL) == 0);
        CHECK(t.n == 4);
        double energy = direct_energy(W, X, out, in, groups, n);
        for (size_t row = 0; row < t.n; row++) {
            bp_qspec wq = spec.weights, aq = spec.acts;
            wq.bits = t.rows[row].wbits;
            aq.bits = t.rows[row].abits;
            bp_quantize_matrix(W, Wq, out, in, &wq, NULL);
            bp_quantize_matrix(X, Xq, n, width, &aq, NULL);
            double want = direct_error(W, Wq, X, Xq, out, in, groups, n);
            if (metric)
                want /= energy;
            CHECK_REL(t.rows[row].error, want, 1e-9);
            CHECK(t.rows[row].params == out * in);
            CHECK(t.rows[row].macs == out * in);
        }
        bp_table_free(&t);
    }
    free(X);
    free(W);
    free(Wq);
    free(Xq);
}

/* fisher: 1/2 the output errors weighted per channel by grad2, against a direct sum */
static void test_fisher(void)
{
    check_rng r = {4242};
    enum { O = 3, D = 5, N = 40 };
    float W[O * D], X[N * D], Wq[O * D], g2[O] = {1.0f, 0.0f, 5.0f};
    for (int i = 0; i < O * D; i++)
        W[i] = (float)check_normal(&r);
    for (int i = 0; i < N * D; i++)
        X[i] = (float)check_normal(&r);
    int wbits[] = {3}, abits[] = {16};
    bp_sens_spec spec = {wbits, 1, abits, 1, {0, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0},
                         {0, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0}, BP_METRIC_FISHER, BP_WQ_RTN, {128, 0.01, 0, BP_GPTQ_SINGLE, NULL}, 3, {2000.0, 2000.0, 100}, BP_XFIT_OFF, 0, BP_PREC_DOUBLE, NULL};
    bp_layer l = {"fc", O, D, 1, 1, 1, W, NULL, N, X, g2, NULL, NULL, NULL, NULL};
    bp_table t;
    bp_error err;
    bp_table_init(&t);
    CHECK_MSG(bp_sensitivity_layer(&l, &spec, &t, &err) == 0, "%s", err.msg);
    bp_qspec q = spec.weights;
    q.bits = 3;
    bp_quantize_matrix(W, Wq, O, D, &q, NULL);
    double want = 0.0;
    for (int o = 0; o < O; o++) {
        double e = 0.0;
        for (int i = 0; i < N; i++) {
            double y = 0.0;
            for (int j = 0; j < D; j++)
                y += ((double)Wq[o * D + j] - W[o * D + j]) * X[i * D + j];
            e += y * y / N;
        }
        want += 0.5 * g2[o] * e;
    }
    CHECK(t.n == 1);
    if (t.n == 1)
        CHECK_REL(t.rows[0].error, want, 1e-9);
    l.grad2 = NULL;
    CHECK(bp_sensitivity_layer(&l, &spec, &t, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "fc.grad2");
    bp_table_free(&t);
}

/* Both ways of reading the errors, forced, against the direct computation;
 * with Grams, both ways of forming the cross terms (by rows when outputs
 * are few, O = 6; by d x d Grams when they are many, O = 40). */
static void test_modes(void)
{
    check_rng r = {777};
    enum { OMAX = 40, D = 10, N = 90 };
    float *X = make_inputs(&r, N, D), Xq[N * D], W[OMAX * D], Wq[OMAX * D];
    bp_qspec aq = {4, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
    bp_qspec wq = {3, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
    for (int i = 0; i < OMAX * D; i++)
        W[i] = (float)check_normal(&r);
    bp_quantize_matrix(X, Xq, N, D, &aq, NULL);
    bp_quantize_matrix(W, Wq, OMAX, D, &wq, NULL);
    int outs[] = {6, OMAX};
    for (int oi = 0; oi < 2; oi++) {
        int O = outs[oi];
        double want = direct_error(W, Wq, X, Xq, O, D, 1, N);
        for (int keep = 0; keep < 2; keep++) {
            bp_gram g;
            double row[OMAX], e = 0.0, energy[OMAX], en = 0.0;
            CHECK(bp_gram_build_mode(&g, X, Xq, N, D, 0, D, keep, NULL) == 0);
            CHECK((g.Z != NULL) == keep);
            CHECK(bp_gram_row_errors(&g, W, Wq, O, D, row, NULL) == 0);
            CHECK(bp_gram_row_energy(&g, W, O, D, energy, NULL) == 0);
            for (int o = 0; o < O; o++)
                e += row[o], en += energy[o];
            CHECK_REL(e, want, 1e-9);
            CHECK_REL(en, direct_energy(W, X, O, D, 1, N), 1e-9);
            bp_gram_free(&g);
        }
    }
    free(X);
}

/* The cost model: Grams win with many rows per input, kept rows with few;
 * quantized inputs make Grams dearer (their cross terms), never cheaper. */
static void test_keep_rows_choice(void)
{
    CHECK(bp_gram_keep_rows(100, 768, 768, 1, 5, 0, 0));
    CHECK(!bp_gram_keep_rows(8192, 768, 2304, 1, 5, 0, 0));
    CHECK(!bp_gram_keep_rows(8192, 768, 768, 0, 5, 0, 0));
    for (int64_t n = 64; n <= 65536; n *= 2)
        CHECK(bp_gram_keep_rows(n, 3072, 768, 0, 5, 0, 0) <= bp_gram_keep_rows(n, 3072, 768, 1, 5, 0, 0));
    for (int64_t n = 64; n <= 65536; n *= 2)     /* cheaper single products favour the Grams */
        CHECK(bp_gram_keep_rows(n, 3072, 768, 1, 5, 0, 1) <= bp_gram_keep_rows(n, 3072, 768, 1, 5, 0, 0));
    int64_t prev = 1;                        /* more rows: once Grams win they keep winning */
    for (int64_t n = 16; n <= 1 << 20; n *= 2) {
        int k = bp_gram_keep_rows(n, 512, 512, 1, 5, 0, 0);
        CHECK(k <= prev);
        prev = k;
    }
}

/*
 * Single precision against double, every row within 1e-6 relative, on
 * random inputs, large means (centring), outlier channels and a
 * near-cancellation built to defeat float32 (two almost equal inputs whose
 * weight errors are opposite, so the output error is tiny against its
 * terms): there the check must give way to double.
 */
static void test_single(void)
{
    enum { O = 24, D = 96, N = 3000 };
    const char *names[] = {"random", "large mean", "outlier channels", "near-cancellation"};
    for (int c = 0; c < 4; c++) {
        check_rng r = {9000 + c};
        float *X = make_inputs(&r, N, D), *Xq = malloc((size_t)N * D * sizeof(float));
        float W[O * D], Wq[O * D];
        for (int i = 0; i < N * D; i++) {
            if (c == 1)
                X[i] += 40.0f;                          /* mean 40x the spread */
            if (c == 2 && i % D < 3)
                X[i] *= 150.0f;
        }
        if (c == 3)
            for (int i = 0; i < N; i++)                 /* x_1 = x_0 + 1e-4 noise */
                X[i * D + 1] = X[i * D] + (float)(1e-4 * check_normal(&r));
        for (int i = 0; i < O * D; i++)
            W[i] = (float)check_normal(&r);
        bp_qspec wq = {4, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
        bp_quantize_matrix(W, Wq, O, D, &wq, NULL);
        if (c == 3)
            for (int o = 0; o < O; o++) {               /* only the opposite errors remain */
                for (int j = 0; j < D; j++)
                    Wq[o * D + j] = W[o * D + j];
                Wq[o * D] = W[o * D] + 0.25f, Wq[o * D + 1] = W[o * D + 1] - 0.25f;
            }
        bp_qspec aq = {8, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
        bp_quantize_matrix(X, Xq, N, D, &aq, NULL);
        for (int q = 0; q < 2; q++) {
            const float *xq = q ? Xq : NULL;
            bp_gram gd, gs;
            double ed[O], es[O], nd[O], ns[O];
            CHECK(bp_gram_build_prec(&gd, X, xq, N, D, 0, D, 0, 0, NULL) == 0);
            CHECK(bp_gram_build_prec(&gs, X, xq, N, D, 0, D, 0, 1, NULL) == 0);
            CHECK(gs.single == 1 && gs.G == NULL);
            CHECK(bp_gram_row_errors(&gd, W, Wq, O, D, ed, NULL) == 0);
            CHECK(bp_gram_row_errors(&gs, W, Wq, O, D, es, NULL) == 0);
            CHECK(bp_gram_row_energy(&gd, W, O, D, nd, NULL) == 0);
            CHECK(bp_gram_row_energy(&gs, W, O, D, ns, NULL) == 0);
            double worst = 0.0, want0 = direct_error(W, Wq, X, xq ? xq : X, 1, D, 1, N);
            for (int o = 0; o < O; o++) {
                worst = fmax(worst, fabs(es[o] - ed[o]) / ed[o]);
                CHECK_REL(ns[o], nd[o], 1e-6);
            }
            /* the double path is the exact one, but for the near-cancellation: there
             * the form (6e-10) is summed from terms of order 1, and even double Grams
             * are 1e-7 off the directly summed error */
            if (c < 3)
                CHECK_REL(ed[0], want0, 1e-9);
            printf("single vs double, %s%s: worst row %.1e%s\n", names[c],
                   q ? ", 8-bit inputs" : "", worst, gs.fell_back ? " (fell back to double)" : "");
            CHECK_MSG(worst <= 1e-6, "%s: %g", names[c], worst);
            if (c <= 1)
                CHECK(!gs.fell_back);                /* float32 suffices there */
            if (c == 3)
                CHECK(gs.fell_back);                 /* and not here */
            bp_gram_free(&gd);
            bp_gram_free(&gs);
        }
        free(X);
        free(Xq);
    }
}

/* Layers reading the same inputs (q, k, v) share Grams and GPTQ factors
 * through a bp_sens_cache: the same table to the bit as measured alone,
 * with the Grams formed once (every later measurement reuses them). */
/* The single Gram's chunks side by side on bitplan's threads (OpenBLAS at
 * one thread): the same Gram, means and norms bit for bit as on one thread,
 * with a short last chunk and more threads than a wave fills. */
static void test_single_threads(void)
{
    enum { D = 40, N = 2600 };
    check_rng r = {0x5eed7};
    float *X = make_inputs(&r, N, D);
    const char *saved = getenv("BITPLAN_THREADS");
    int blas = openblas_get_num_threads();
    openblas_set_num_threads(1);
    bp_gram g1, g3;
    setenv("BITPLAN_THREADS", "1", 1);
    CHECK(bp_gram_build_prec(&g1, X, NULL, N, D, 0, D, 0, 1, NULL) == 0);
    setenv("BITPLAN_THREADS", "4", 1);
    CHECK(bp_gram_build_prec(&g3, X, NULL, N, D, 0, D, 0, 1, NULL) == 0);
    int diff = 0;
    for (int i = 0; i < D; i++) {
        diff += g1.mu[i] != g3.mu[i] || g1.gsd[i] != g3.gsd[i];
        for (int j = i; j < D; j++)
            diff += g1.Gf[i * D + j] != g3.Gf[i * D + j];
    }
    CHECK_MSG(diff == 0, "%d values differ between 1 and 4 threads", diff);
    bp_gram_free(&g1);
    bp_gram_free(&g3);
    if (saved)
        setenv("BITPLAN_THREADS", saved, 1);
    else
        unsetenv("BITPLAN_THREADS");
    openblas_set_num_threads(blas);
    free(X);
}

static void test_shared_inputs(void)
{
    check_rng r = {4711};
    enum { O = 20, D = 24, N = 400 };
    float *X = make_inputs(&r, N, D), W[3][O * D];
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < O * D; i++)
            W[k][i] = (float)check_normal(&r);
    int wbits[] = {3, 4}, abits[] = {6, 16};
    bp_sens_spec spec = {wbits, 2, abits, 2,
                         {0, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0},
                         {0, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0},
                         BP_METRIC_MSE, BP_WQ_RTN, {128, 0.01, 0, BP_GPTQ_SINGLE, NULL}, 3,
                         {2000.0, 2000.0, 100}, BP_XFIT_OFF, 0, BP_PREC_SINGLE, NULL};
    static const char *names[3] = {"q", "k", "v"};
    bp_wquantizer quants[2] = {BP_WQ_RTN, BP_WQ_GPTQ};
    bp_table alone, shared;
    bp_table_init(&alone);
    bp_table_init(&shared);
    bp_sens_cache c = {0};
    bp_error err = {""};
    size_t formed = 0, hits_q = 0;
    for (int k = 0; k < 3; k++) {
        for (int q = 0; q < 2; q++) {
            bp_layer l = {names[k], O, D, 1, 1, 1, W[k], NULL, N, X, NULL, NULL, NULL, NULL, NULL};
            spec.quantizer = quants[q];
            CHECK_MSG(bp_sensitivity_layer(&l, &spec, &alone, &err) == 0, "%s", err.msg);
            CHECK_MSG(bp_sensitivity_layer_cached(&l, &spec, &shared, &c, &err) == 0, "%s",
                      err.msg);
        }
        if (k == 0)
            formed = c.n, hits_q = c.hits;
        else                                 /* k and v form nothing, reuse everything */
            CHECK(c.n == formed && c.hits >= hits_q + k * formed);
    }
    CHECK(alone.n == shared.n && alone.n == 3 * 2 * 4);
    for (size_t i = 0; i < alone.n; i++)
        CHECK(memcmp(alone.rows[i].value, shared.rows[i].value, sizeof alone.rows[i].value) == 0);
    printf("shared inputs: %zu reuses, %zu Grams and factors formed\n", c.hits, c.n);
    CHECK(formed >= 4 && hits_q >= 2);       /* gptq on q reused rtn's Grams already */
    bp_sens_cache_reset(&c);                 /* new inputs: nothing to reuse */
    size_t before = c.hits;
    bp_layer l = {"other", O, D, 1, 1, 1, W[0], NULL, N / 2, X, NULL, NULL, NULL, NULL, NULL};
    spec.quantizer = BP_WQ_RTN;
    CHECK(bp_sensitivity_layer_cached(&l, &spec, &shared, &c, &err) == 0);
    CHECK(c.hits == before);
    bp_sens_cache_free(&c);
    bp_table_free(&alone);
    bp_table_free(&shared);
    free(X);
}

/* Errors of What at one activation width through a double Gram (exact to
 * 1e-9, test_case), summed over rows. */
static double gram_error(const float *X, const float *xq, int64_t n, int64_t d,
                         const float *W, const float *What, int64_t o)
{
    bp_gram g;
    double *row = malloc((size_t)o * sizeof *row), e = 0.0;
    CHECK(bp_gram_build_prec(&g, X, xq, n, d, 0, d, 0, 0, NULL) == 0);
    CHECK(bp_gram_row_errors(&g, W, What, o, d, row, NULL) == 0);
    for (int64_t r = 0; r < o; r++)
        e += row[r];
    bp_gram_free(&g);
    free(row);
    return e;
}

/* The sensitivity table in single precision (where it pays: many rows and
 * outputs, in >= 512, and rows are needed: here grad2) equals the double
 * one within 1e-6, every metric; small layers are measured in double
 * (bp_gram_single_pays).  Where no row is needed the layer totals form
 * dW^T dW in float32 (test_stats.c holds them to their bound): within 1e-6
 * of double too, and not equal to it (the float path ran). */
static void test_single_table(void)
{
    check_rng r = {31};
    enum { O = 256, D = 512, N = 1024 };
    float *X = make_inputs(&r, N, D), *W = malloc((size_t)O * D * sizeof *W), g2[O];
    for (int i = 0; i < O * D; i++)
        W[i] = (float)check_normal(&r);
    for (int i = 0; i < O; i++)
        g2[i] = (float)(0.5 + check_uniform(&r));
    int wbits[] = {2, 4}, abits[] = {6, 16};
    bp_sens_spec spec = {wbits, 2, abits, 2,
                         {0, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0},
                         {0, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0},
                         BP_METRIC_MSE, BP_WQ_RTN, {128, 0.01, 0, BP_GPTQ_SINGLE, NULL}, 3,
                         {2000.0, 2000.0, 100}, BP_XFIT_OFF, 0, BP_PREC_DOUBLE, NULL};
    CHECK(bp_gram_single_pays(N, D, O, 2));
    CHECK(!bp_gram_single_pays(3000, 256, 768, 5));     /* below BP_GRAM_SINGLE_MIN_IN */
    bp_layer l = {"big", O, D, 1, 1, 1, W, NULL, N, X, NULL, NULL, NULL, NULL, NULL};
    bp_table td, ts;
    bp_table_init(&td);
    bp_table_init(&ts);
    CHECK(bp_sensitivity_layer(&l, &spec, &td, NULL) == 0);
    spec.precision = BP_PREC_SINGLE;
    CHECK(bp_sensitivity_layer(&l, &spec, &ts, NULL) == 0);
    CHECK(td.n == ts.n && td.n == 4);
    double tworst = 0.0;
    for (size_t i = 0; i < td.n && i < ts.n; i++)
        for (int m = 0; m < BP_METRIC_COUNT; m++) {
            double a = td.rows[i].value[m], b = ts.rows[i].value[m];
            if (!isnan(a))
                tworst = fmax(tworst, fabs(a - b) / fmax(fabs(a), 1e-300));
        }
    printf("single-precision totals: worst metric %.1e of double\n", tworst);
    CHECK_MSG(tworst <= 1e-6 && tworst > 0.0, "no rows needed: totals %.2e of double", tworst);
    bp_table_free(&td);
    bp_table_free(&ts);
    bp_table_init(&td);
    bp_table_init(&ts);
    l.grad2 = g2;                                 /* rows needed: single pays */
    spec.precision = BP_PREC_DOUBLE;
    CHECK(bp_sensitivity_layer(&l, &spec, &td, NULL) == 0);
    spec.precision = BP_PREC_SINGLE;
    CHECK(bp_sensitivity_layer(&l, &spec, &ts, NULL) == 0);
    CHECK(td.n == ts.n && td.n == 4);
    double worst = 0.0;
    for (size_t i = 0; i < td.n; i++)
        for (int m = 0; m < BP_METRIC_COUNT; m++) {
            double a = td.rows[i].value[m], b = ts.rows[i].value[m];
            if (!isnan(a))
                worst = fmax(worst, fabs(a - b) / fmax(fabs(a), 1e-300));
        }
    printf("single-precision table: worst metric %.1e of double\n", worst);
    CHECK(worst <= 1e-6 && worst > 0.0);         /* > 0: the float path did run */
    /* GPTQ with the cache takes its Hessian from the error stage's Gram: its
     * weights are still those bp_quantize_candidate makes alone (the plan's) */
    bp_sens_cache c = {0};
    bp_table tg;
    bp_table_init(&tg);
    spec.quantizer = BP_WQ_GPTQ;
    CHECK(bp_sensitivity_layer_cached(&l, &spec, &tg, &c, NULL) == 0);
    CHECK(bp_sensitivity_layer_cached(&l, &spec, &tg, &c, NULL) == 0);   /* all from the cache */
    CHECK(c.hits > 0);
    float *Wq = malloc((size_t)O * D * sizeof *Wq), *Xq = malloc((size_t)N * D * sizeof *Xq);
    for (size_t i = 0; i < tg.n; i++) {
        int wb = tg.rows[i].wbits, ab = tg.rows[i].abits;
        CHECK(bp_quantize_candidate(&l, &spec, wb, ab, Wq, NULL, NULL, NULL, NULL, NULL) == 0);
        bp_qspec aq = spec.acts;
        aq.bits = ab;
        if (ab < 16)
            bp_quantize_matrix(X, Xq, N, D, &aq, NULL);
        CHECK_REL(tg.rows[i].value[BP_METRIC_MSE],
                  gram_error(X, ab < 16 ? Xq : NULL, N, D, W, Wq, O), 1e-6);
    }
    free(Wq);
    free(Xq);
    bp_table_free(&tg);
    bp_sens_cache_free(&c);
    bp_table_free(&td);
    bp_table_free(&ts);
    free(W);
    free(X);
}

/* Layer totals (no row needed: no grad2, no factor) against the rows' route
 * (the same layer with grad2, which needs them), in double: every
 * candidate's mse and relative within 1e-9, for weights made once (RTN,
 * grouped), per activation width (GPTQ, also cross-fitted) and with a bias
 * (ERQ, the augmented layer), the d x d matrices kept across widths or
 * formed again per width; with grad2 = 1 the fisher column is half the mse. */
static void test_totals(void)
{
    struct { bp_wquantizer q; int groups; int bias; int xfit; } cases[] = {
        {BP_WQ_RTN, 2, 0, 0}, {BP_WQ_RTN, 1, 1, 0}, {BP_WQ_GPTQ, 1, 0, 0}, {BP_WQ_ERQ, 1, 1, 0},
        {BP_WQ_GPTQ, 1, 0, 1},                 /* cross-fitted: two folds, weights per fold */
    };
    enum { O = 24, D = 40, N = 300 };
    int checked = 0;
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++)
        for (int keep = 0; keep < 2; keep++) {
            check_rng r = {900 + k};
            int g = cases[k].groups;
            int64_t in = D / g;
            float *X = make_inputs(&r, N, D), *W = malloc((size_t)O * in * sizeof *W);
            float b[O], ones[O];
            for (int64_t i = 0; i < O * in; i++)
                W[i] = (float)check_normal(&r);
            for (int i = 0; i < O; i++)
                b[i] = (float)check_normal(&r), ones[i] = 1.0f;
            int wbits[] = {2, 3, 5}, abits[] = {4, 6, 16};
            bp_sens_spec spec = {wbits, 3, abits, 3,
                                 {0, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0},
                                 {0, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0},
                                 BP_METRIC_MSE, cases[k].q, {16, 0.01, 0, BP_GPTQ_DOUBLE, NULL},
                                 3, {2000.0, 2000.0, 100},
                                 cases[k].xfit ? BP_XFIT_ON : BP_XFIT_OFF, 0, BP_PREC_DOUBLE,
                                 NULL};
            bp_layer l = {"t", O, in, 1, 1, g, W, cases[k].bias ? b : NULL, N, X, NULL, NULL,
                          NULL, NULL, NULL};
            bp_table tt, tr;
            bp_error err;
            bp_table_init(&tt);
            bp_table_init(&tr);
            bp_sx_set_totals_keep(keep ? (size_t)1 << 30 : 0);
            size_t before = bp_sx_totals_count();
            CHECK_MSG(bp_sensitivity_layer(&l, &spec, &tt, &err) == 0, "%s", err.msg);
            CHECK(bp_sx_totals_count() > before);          /* the totals did run */
            l.grad2 = ones;
            before = bp_sx_totals_count();
            CHECK_MSG(bp_sensitivity_layer(&l, &spec, &tr, &err) == 0, "%s", err.msg);
            CHECK(bp_sx_totals_count() == before);         /* and the rows here */
            CHECK(tt.n == 9 && tr.n == 9);
            for (size_t i = 0; i < tt.n && i < tr.n; i++) {
                CHECK(isnan(tt.rows[i].value[BP_METRIC_FISHER]));
                CHECK_REL(tt.rows[i].value[BP_METRIC_MSE], tr.rows[i].value[BP_METRIC_MSE], 1e-9);
                CHECK_REL(tt.rows[i].value[BP_METRIC_RELATIVE],
                          tr.rows[i].value[BP_METRIC_RELATIVE], 1e-9);
                CHECK_REL(tr.rows[i].value[BP_METRIC_FISHER],
                          0.5 * tr.rows[i].value[BP_METRIC_MSE], 1e-9);
                checked++;
            }
            bp_table_free(&tt);
            bp_table_free(&tr);
            free(X);
            free(W);
        }
    bp_sx_set_totals_keep((size_t)1 << 30);
    /* few rows, wide inputs: the kept rows are cheaper than any d x d work */
    check_rng r = {77};
    enum { N2 = 16, D2 = 400 };
    float *X = make_inputs(&r, N2, D2), *W = malloc((size_t)8 * D2 * sizeof *W);
    for (int i = 0; i < 8 * D2; i++)
        W[i] = (float)check_normal(&r);
    int wbits[] = {3}, abits[] = {16};
    bp_sens_spec spec = {wbits, 1, abits, 1,
                         {0, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0},
                         {0, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0},
                         BP_METRIC_MSE, BP_WQ_RTN, {16, 0.01, 0, BP_GPTQ_DOUBLE, NULL}, 3,
                         {2000.0, 2000.0, 100}, BP_XFIT_OFF, 0, BP_PREC_DOUBLE, NULL};
    bp_layer l = {"wide", 8, D2, 1, 1, 1, W, NULL, N2, X, NULL, NULL, NULL, NULL, NULL};
    bp_table t;
    bp_table_init(&t);
    size_t before = bp_sx_totals_count();
    CHECK(bp_sensitivity_layer(&l, &spec, &t, NULL) == 0);
    CHECK(bp_sx_totals_count() == before);
    bp_table_free(&t);
    free(X);
    free(W);
    printf("layer totals against rows: %d candidates\n", checked);
}

/* Kept rows over several activation widths share one W X^T through a
 * bp_ycache: every width still gives the direct error, and the cache's Y is
 * the one each later Gram uses (formed once). */
static void test_ycache(void)
{
    check_rng r = {4242};
    enum { O = 12, D = 24, N = 30 };
    float *X = make_inputs(&r, N, D), Xq[N * D], W[O * D], Wq[O * D];
    bp_qspec wq = {3, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
    for (int i = 0; i < O * D; i++)
        W[i] = (float)check_normal(&r);
    bp_quantize_matrix(W, Wq, O, D, &wq, NULL);
    bp_ycache yc = {0};
    const double *first = NULL;
    int abits[] = {16, 4, 6, 8};
    for (int a = 0; a < 4; a++) {
        const float *xq = NULL;
        if (abits[a] < 16) {
            bp_qspec aq = {abits[a], BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
            bp_quantize_matrix(X, Xq, N, D, &aq, NULL);
            xq = Xq;
        }
        bp_gram g;
        double row[O], e = 0.0, energy[O], en = 0.0;
        CHECK(bp_gram_build_mode(&g, X, xq, N, D, 0, D, 1, NULL) == 0);
        bp_gram_attach_y(&g, &yc);
        CHECK(bp_gram_row_energy(&g, W, O, D, energy, NULL) == 0);
        CHECK(bp_gram_row_errors(&g, W, Wq, O, D, row, NULL) == 0);
        for (int o = 0; o < O; o++)
            e += row[o], en += energy[o];
        CHECK_REL(e, direct_error(W, Wq, X, xq ? xq : X, O, D, 1, N), 1e-9);
        CHECK_REL(en, direct_energy(W, X, O, D, 1, N), 1e-9);
        CHECK(yc.W == W && yc.Y == g.Y);
        if (a == 0)
            first = yc.Y;
        CHECK(yc.Y == first);                    /* formed once, then reused */
        bp_gram_free(&g);
    }
    bp_ycache_free(&yc);
    free(X);
}

static void test_missing_data(void)
{
    float W[4] = {1, 2, 3, 4};
    int wbits[] = {4}, abits[] = {16};
    bp_sens_spec spec = {wbits, 1, abits, 1, {0, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0},
                         {0, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0}, BP_METRIC_MSE, BP_WQ_RTN, {128, 0.01, 0, BP_GPTQ_SINGLE, NULL}, 3, {2000.0, 2000.0, 100}, BP_XFIT_OFF, 0, BP_PREC_DOUBLE, NULL};
    bp_layer l = {"fc.no_data", 2, 2, 1, 1, 1, W, NULL, 0, NULL, NULL, NULL, NULL, NULL, NULL};
    bp_table t;
    bp_error err;
    bp_table_init(&t);
    CHECK(bp_sensitivity_layer(&l, &spec, &t, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "fc.no_data");
    /* the data-free metric works and equals the weight MSE */
    spec.metric = BP_METRIC_WEIGHT;
    CHECK(bp_sensitivity_layer(&l, &spec, &t, &err) == 0);
    float Wq[4];
    bp_qspec q = spec.weights;
    q.bits = 4;
    bp_quantize_matrix(W, Wq, 2, 2, &q, NULL);
    double mse = 0;
    for (int i = 0; i < 4; i++)
        mse += ((double)Wq[i] - W[i]) * ((double)Wq[i] - W[i]) / 4.0;
    CHECK(t.n == 1);
    CHECK_REL(t.rows[0].error, mse, 1e-12);
    CHECK(mse > 0);
    /* hawq: (2 ||X||^2 / (n in)) * ||What - W||^2, here by hand */
    float X[6] = {1, 2, -1, 0.5f, 3, -2};          /* 3 samples x 2 inputs */
    bp_layer ld = {"fc.hawq", 2, 2, 1, 1, 1, W, NULL, 3, X, NULL, NULL, NULL, NULL, NULL};
    spec.metric = BP_METRIC_HAWQ;
    CHECK(bp_sensitivity_layer(&ld, &spec, &t, &err) == 0);
    double xx = 1 + 4 + 1 + 0.25 + 9 + 4;
    CHECK(t.n == 2);
    CHECK_REL(t.rows[1].error, 2.0 * xx / (3 * 2) * mse * 4.0, 1e-12);
    bp_table_free(&t);
}

/* 1/2 E_n[dy^T F dy] per group, dy = (Wq xq + bq) - (W x + b), directly. */
static double direct_kfac(const float *W, const float *b, const float *Wq, const float *bq,
                          const float *X, const float *Xq, const double *F, int64_t out,
                          int64_t in, int groups, int64_t n)
{
    int64_t og = out / groups, ld = in * groups;
    long double total = 0;
    double *dy = malloc((size_t)og * sizeof *dy);
    for (int64_t i = 0; i < n; i++)
        for (int g = 0; g < groups; g++) {
            for (int64_t o = 0; o < og; o++) {
                int64_t r = g * og + o;
                long double y = b ? b[r] : 0, yq = bq ? bq[r] : 0;
                for (int64_t k = 0; k < in; k++) {
                    y += (long double)W[r * in + k] * X[i * ld + g * in + k];
                    yq += (long double)Wq[r * in + k] * Xq[i * ld + g * in + k];
                }
                dy[o] = (double)(yq - y);
            }
            for (int64_t o = 0; o < og; o++)
                for (int64_t p = 0; p < og; p++)
                    total += (long double)dy[o] * F[(g * og + o) * og + p] * dy[p];
        }
    free(dy);
    return (double)(0.5L * total / n);
}

/* A random symmetric PSD matrix per group (A A^T / og), as float and double. */
static void random_fisher(check_rng *r, int64_t groups, int64_t og, float *Ff, double *Fd)
{
    for (int64_t g = 0; g < groups; g++) {
        double *A = malloc((size_t)(og * og) * sizeof *A);
        for (int64_t i = 0; i < og * og; i++)
            A[i] = check_normal(r);
        for (int64_t i = 0; i < og; i++)
            for (int64_t j = 0; j < og; j++) {
                double v = 0;
                for (int64_t k = 0; k < og; k++)
                    v += A[i * og + k] * A[j * og + k];
                Ff[(g * og + i) * og + j] = (float)(v / (double)og);
            }
        free(A);
    }
    for (int64_t i = 0; i < groups * og * og; i++)
        Fd[i] = Ff[i];
}

/*
 * kfac: 1/2 tr(F E[dy dy^T]) equals the direct sum over samples, for dense
 * and low-rank factors, in both error modes, for grouped convs, quantized
 * activations and ERQ's changed bias; a factor that ignores the common
 * direction (F = I - 11^T/o, as before a softmax) charges only the
 * centred error.
 */
static void test_kfac(void)
{
    struct { int64_t out, in; int groups; int64_t n; int quant; } cases[] = {
        {7, 13, 1, 50, BP_WQ_RTN},    /* kept rows */
        {30, 12, 1, 600, BP_WQ_RTN},  /* Gram */
        {8, 9, 2, 300, BP_WQ_GPTQ},   /* grouped, GPTQ */
        {6, 11, 1, 200, BP_WQ_ERQ},   /* bias changed by ERQ */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        check_rng r = {100 + c};
        int64_t out = cases[c].out, in = cases[c].in, n = cases[c].n, g = cases[c].groups;
        int64_t og = out / g, width = in * g;
        float *X = make_inputs(&r, n, width), *W = malloc((size_t)(out * in) * sizeof *W);
        float bias[64], *Ff = malloc((size_t)(g * og * og) * sizeof *Ff);
        double *Fd = malloc((size_t)(g * og * og) * sizeof *Fd);
        for (int64_t i = 0; i < out * in; i++)
            W[i] = (float)check_normal(&r);
        for (int64_t i = 0; i < out; i++)
            bias[i] = (float)check_normal(&r);
        random_fisher(&r, g, og, Ff, Fd);
        bp_ofactor of = {g, og, 0, Ff, NULL, NULL, NULL, NULL};
        int wbits[] = {3, 6}, abits[] = {4, 16};
        bp_sens_spec spec = {wbits, 2, abits, 2,
                             {0, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0},
                             {0, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0},
                             BP_METRIC_KFAC, (bp_wquantizer)cases[c].quant, {128, 0.01, 0, BP_GPTQ_SINGLE, NULL},
                             3, {2000.0, 2000.0, 100}, BP_XFIT_OFF, 0, BP_PREC_DOUBLE, NULL};
        bp_layer l = {"k", out, in, 1, 1, (int)g, W, cases[c].quant == BP_WQ_ERQ ? bias : NULL,
                      n, X, NULL, &of, NULL, NULL, NULL};
        bp_table t;
        bp_error err = {""};
        bp_table_init(&t);
        CHECK_MSG(bp_sensitivity_layer(&l, &spec, &t, &err) == 0, "%s", err.msg);
        float *Wq = malloc((size_t)(out * in) * sizeof *Wq), bq[64];
        float *es = malloc((size_t)(out * in) * sizeof *es), *ez = malloc((size_t)(out * in) * sizeof *ez);
        float *Xq = malloc((size_t)(n * width) * sizeof *Xq);
        for (size_t row = 0; row < t.n; row++) {
            int wb = t.rows[row].wbits, ab = t.rows[row].abits;
            bp_qspec aq = spec.acts;
            aq.bits = ab;
            CHECK(bp_quantize_candidate(&l, &spec, wb, ab, Wq, bq, es, ez, NULL, NULL) == 0);
            bp_quantize_matrix(X, Xq, n, width, &aq, NULL);
            double want = direct_kfac(W, l.bias, Wq, l.bias ? bq : NULL, X, Xq, Fd, out, in,
                                      (int)g, n);
            CHECK_REL(t.rows[row].error, want, 1e-9);
            CHECK(t.rows[row].value[BP_METRIC_KFAC] == t.rows[row].error);
            CHECK(isnan(t.rows[row].value[BP_METRIC_FISHER]));   /* no grad2 given */
            CHECK(!isnan(t.rows[row].value[BP_METRIC_RELATIVE]));
        }
        free(Wq), free(es), free(ez), free(Xq), free(X), free(W), free(Ff), free(Fd);
        bp_table_free(&t);
    }

    /* low rank + diagonal = the dense factor it stands for, both modes */
    check_rng r = {555};
    enum { O = 9, D = 14, N = 40, K = 3 };
    float *X = make_inputs(&r, N, D), Xq[N * D], W[O * D], Wq[O * D];
    float U[K * O], S[K] = {2.0f, 0.5f, 0.25f}, Dg[O], Fl[O * O];
    double Fe[O * O], Ud[K * O], Sd[K], Dd[O], Fdd[O * O], Pc[O * O];
    bp_qspec aq = {5, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
    bp_qspec wq = {3, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
    for (int i = 0; i < O * D; i++)
        W[i] = (float)check_normal(&r);
    for (int i = 0; i < K * O; i++)
        U[i] = (float)check_normal(&r), Ud[i] = U[i];
    for (int i = 0; i < O; i++)
        Dg[i] = (float)(0.1 + check_uniform(&r)), Dd[i] = Dg[i];
    for (int i = 0; i < K; i++)
        Sd[i] = S[i];
    for (int i = 0; i < O; i++)
        for (int j = 0; j < O; j++) {
            double v = i == j ? Dd[i] : 0.0;
            for (int k = 0; k < K; k++)
                v += Ud[k * O + i] * Sd[k] * Ud[k * O + j];
            Fe[i * O + j] = v;
            Fl[i * O + j] = (float)v, Fdd[i * O + j] = Fl[i * O + j];
            Pc[i * O + j] = (i == j) - 1.0 / O;     /* ignores the common direction */
        }
    bp_quantize_matrix(X, Xq, N, D, &aq, NULL);
    bp_quantize_matrix(W, Wq, O, D, &wq, NULL);
    double want = direct_kfac(W, NULL, Wq, NULL, X, Xq, Fe, O, D, 1, N);
    double centred = 0.0;          /* 1/2 E ||dy - mean(dy)||^2 */
    for (int i = 0; i < N; i++) {
        double dy[O], mean = 0.0;
        for (int o = 0; o < O; o++) {
            dy[o] = 0.0;
            for (int k = 0; k < D; k++)
                dy[o] += (double)Wq[o * D + k] * Xq[i * D + k] - (double)W[o * D + k] * X[i * D + k];
            mean += dy[o] / O;
        }
        for (int o = 0; o < O; o++)
            centred += 0.5 * (dy[o] - mean) * (dy[o] - mean) / N;
    }
    bp_gram_fisher lr = {K, NULL, Ud, Sd, Dd, NULL}, dense = {0, Fdd, NULL, NULL, NULL, NULL};
    bp_gram_fisher proj = {0, Pc, NULL, NULL, NULL, NULL};
    /* with a null direction n = 1/sqrt(O): F = U^T S U + P D P, U orthogonal to n */
    double Un[K * O], nv[O], Fn[O * O];
    for (int k = 0; k < K; k++) {
        double mean = 0.0;
        for (int i = 0; i < O; i++)
            mean += Ud[k * O + i] / O;
        for (int i = 0; i < O; i++)
            Un[k * O + i] = Ud[k * O + i] - mean;
    }
    for (int i = 0; i < O; i++)
        nv[i] = 1.0 / sqrt((double)O);
    for (int i = 0; i < O; i++)
        for (int j = 0; j < O; j++) {
            double v = 0.0;
            for (int k = 0; k < K; k++)
                v += Un[k * O + i] * Sd[k] * Un[k * O + j];
            for (int a = 0; a < O; a++)       /* (P D P)_ij = sum_a P_ia D_a P_aj */
                v += ((i == a) - 1.0 / O) * Dd[a] * ((a == j) - 1.0 / O);
            Fn[i * O + j] = v;
        }
    double want_n = direct_kfac(W, NULL, Wq, NULL, X, Xq, Fn, O, D, 1, N);
    bp_gram_fisher lrn = {K, NULL, Un, Sd, Dd, nv};
    /* an error that is a common offset of every output costs nothing under it */
    float Wc[O * D];
    for (int o = 0; o < O; o++)
        for (int k = 0; k < D; k++)
            Wc[o * D + k] = W[o * D + k] + (k == 0 ? 0.75f : 0.0f);
    for (int keep = 0; keep < 2; keep++) {
        bp_gram g;
        double row[O], k_lr = 0, k_dense = 0, k_proj = 0;
        CHECK(bp_gram_build_mode(&g, X, Xq, N, D, 0, D, keep, NULL) == 0);
        CHECK(bp_gram_row_errors_kfac(&g, W, Wq, O, D, &lr, row, &k_lr, NULL) == 0);
        CHECK(bp_gram_row_errors_kfac(&g, W, Wq, O, D, &dense, row, &k_dense, NULL) == 0);
        CHECK(bp_gram_row_errors_kfac(&g, W, Wq, O, D, &proj, row, &k_proj, NULL) == 0);
        CHECK_REL(k_lr, want, 1e-9);
        CHECK_REL(k_dense, want, 1e-6);           /* the float copy of F */
        CHECK_REL(k_proj, centred, 1e-9);
        double k_n = 0, k_off = 0, k_off_plain = 0;
        CHECK(bp_gram_row_errors_kfac(&g, W, Wq, O, D, &lrn, row, &k_n, NULL) == 0);
        CHECK_REL(k_n, want_n, 1e-9);
        /* two factors in one call (the loss and the decision Fisher): each trace as
         * alone, the row errors unchanged, either slot empty or both */
        double row2[O], tr[BP_GRAM_FACTORS];
        bp_gram_factors both = {{&lr, &lrn}}, second = {{NULL, &proj}}, none = {{NULL, NULL}};
        CHECK(bp_gram_row_errors_factors(&g, W, Wq, O, D, &both, row2, tr, NULL) == 0);
        CHECK_REL(tr[0], want, 1e-9);
        CHECK_REL(tr[1], want_n, 1e-9);
        for (int o = 0; o < O; o++)
            CHECK_REL(row2[o], row[o], 1e-12);
        CHECK(bp_gram_row_errors_factors(&g, W, Wq, O, D, &second, row2, tr, NULL) == 0);
        CHECK(tr[0] == 0.0);
        CHECK_REL(tr[1], centred, 1e-9);
        CHECK(bp_gram_row_errors_factors(&g, W, Wq, O, D, &none, row2, tr, NULL) == 0);
        CHECK(tr[0] == 0.0 && tr[1] == 0.0);
        CHECK(bp_gram_row_errors_factors(&g, W, Wq, O, D, &both, row2, tr, NULL) == 0);
        CHECK_REL(tr[0], want, 1e-9);             /* the cached terms follow the factors */
        CHECK_REL(tr[1], want_n, 1e-9);
        bp_gram_free(&g);
        CHECK(bp_gram_build_mode(&g, X, NULL, N, D, 0, D, keep, NULL) == 0);
        CHECK(bp_gram_row_errors_kfac(&g, W, Wc, O, D, &lrn, row, &k_off, NULL) == 0);
        CHECK(bp_gram_row_errors_kfac(&g, W, Wc, O, D, &lr, row, &k_off_plain, NULL) == 0);
        CHECK_MSG(fabs(k_off) <= 1e-12 * k_off_plain && k_off_plain > 0, "%g vs %g", k_off,
                  k_off_plain);
        bp_gram_free(&g);
    }
    free(X);
}

/* More bits never increase the error (same granularity, min-max). */
static void test_monotone(void)
{
    check_rng r = {99};
    int64_t out = 16, in = 24, n = 300;
    float *X = make_inputs(&r, n, in), W[16 * 24];
    for (int i = 0; i < out * in; i++)
        W[i] = (float)check_normal(&r);
    int wbits[] = {2, 3, 4, 6, 8, 16}, abits[] = {16};
    bp_sens_spec spec = {wbits, 6, abits, 1, {0, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0},
                         {0, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0}, BP_METRIC_MSE, BP_WQ_RTN, {128, 0.01, 0, BP_GPTQ_SINGLE, NULL}, 3, {2000.0, 2000.0, 100}, BP_XFIT_OFF, 0, BP_PREC_DOUBLE, NULL};
    bp_layer l = {"m", out, in, 1, 1, 1, W, NULL, n, X, NULL, NULL, NULL, NULL, NULL};
    bp_table t;
    bp_table_init(&t);
    CHECK(bp_sensitivity_layer(&l, &spec, &t, NULL) == 0);
    for (size_t i = 1; i < t.n; i++)
        CHECK(t.rows[i].error < t.rows[i - 1].error);
    CHECK(t.rows[5].error == 0.0);                  /* 16 bits: unquantized */
    bp_table_free(&t);
    free(X);
}

int main(void)
{
    test_single_threads();
    test_case(1, 7, 13, 1, 50);          /* fewer samples than 2d */
    test_case(2, 32, 40, 1, 700);        /* linear */
    test_case(3, 8, 18, 2, 300);         /* grouped conv, 2 groups */
    test_case(4, 6, 9, 6, 200);          /* depthwise 3x3 */
    test_case(5, 5, 300, 1, 2500);       /* more than one Gram chunk of rows */
    test_case(6, 9, 40, 1, 30);          /* fewer rows than Gram columns: kept rows */
    test_case(7, 8, 18, 2, 20);          /* the same, grouped */
    test_case(8, 200, 16, 1, 400);       /* many outputs: the Gram is cheaper */
    test_modes();
    test_keep_rows_choice();
    test_single();
    test_shared_inputs();
    test_single_table();
    test_totals();
    test_ycache();
    test_missing_data();
    test_fisher();
    test_kfac();
    test_monotone();
    return check_done();
}
