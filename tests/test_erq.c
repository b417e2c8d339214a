/*
 * test_erq.c - ERQ's promises on correlated inputs it was not tuned on:
 *   - Aqer lowers the error that quantized activations cause;
 *   - every kept rounding-refinement flip keeps the proxy from rising;
 *   - the returned weights are exactly on the frozen grid;
 *   - the final output error (quantized weights and activations, bias
 *     included) is below RTN's at the same bits.
 */
#include <stdlib.h>

#include "check.h"
#include "sensitivity/erq.h"

typedef struct data {
    int64_t o, d, n;
    float *W, *b, *X, *Xq;
} data;

static data make_data(int64_t o, int64_t d, int64_t n, int abits, check_rng *r)
{
    data x = {o, d, n, malloc((size_t)(o * d) * sizeof(float)), malloc((size_t)o * sizeof(float)),
              malloc((size_t)(n * d) * sizeof(float)), malloc((size_t)(n * d) * sizeof(float))};
    int64_t k = d / 3 + 1;
    double *M = malloc((size_t)(k * d) * sizeof(double)), *z = malloc((size_t)k * sizeof(double));
    for (int64_t i = 0; i < k * d; i++)
        M[i] = check_normal(r) / sqrt((double)k);
    for (int64_t i = 0; i < n; i++) {
        for (int64_t t = 0; t < k; t++)
            z[t] = check_normal(r);
        for (int64_t j = 0; j < d; j++) {
            double v = 0.5 + 0.2 * check_normal(r);
            for (int64_t t = 0; t < k; t++)
                v += z[t] * M[t * d + j];
            x.X[i * d + j] = (float)(v > 0 ? v : 0.1 * v);     /* leaky-ReLU-like */
        }
    }
    for (int64_t i = 0; i < o * d; i++)
        x.W[i] = (float)(check_normal(r) / sqrt((double)d));
    for (int64_t i = 0; i < o; i++)
        x.b[i] = (float)(0.1 * check_normal(r));
    bp_qspec aq = {abits, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
    bp_quantize_matrix(x.X, x.Xq, n, d, &aq, NULL);
    free(M);
    free(z);
    return x;
}

static void free_data(data *x)
{
    free(x->W);
    free(x->b);
    free(x->X);
    free(x->Xq);
}

/* ||(A Xin^T + c) - (W X^T + b)||^2 / n, directly. */
static double out_err(const data *x, const float *A, const float *c, const float *Xin)
{
    double s = 0.0;
    for (int64_t r = 0; r < x->o; r++)
        for (int64_t i = 0; i < x->n; i++) {
            double e = (double)c[r] - x->b[r];
            for (int64_t j = 0; j < x->d; j++)
                e += (double)A[r * x->d + j] * Xin[i * x->d + j] -
                     (double)x->W[r * x->d + j] * x->X[i * x->d + j];
            s += e * e;
        }
    return s / (double)x->n;
}

static void test_against_rtn(void)
{
    check_rng rng = {0xe2e2ULL};
    bp_error err;
    for (int rep = 0; rep < 3; rep++) {
        data x = make_data(16, 40 + 12 * rep, 512, 4, &rng);
        size_t nw = (size_t)(x.o * x.d);
        float *Wq = malloc(nw * sizeof *Wq), *Wr = malloc(nw * sizeof *Wr);
        float *s = malloc(nw * sizeof *s), *z = malloc(nw * sizeof *z), *bq = malloc((size_t)x.o * 4);
        for (int bits = 2; bits <= 6; bits += 2) {
            bp_qspec q = {bits, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
            bp_erq_opts o;
            bp_erq_opts_init(&o);
            CHECK_MSG(bp_erq_quantize(x.W, x.b, x.o, x.d, x.X, x.Xq, x.n, &q, &o, Wq, bq, s, z,
                                      &err) == 0, "%s", err.msg);
            CHECK(bp_quantize_matrix(x.W, Wr, x.o, x.d, &q, &err) == 0);
            double ee = out_err(&x, Wq, bq, x.Xq), er = out_err(&x, Wr, x.b, x.Xq);
            CHECK_MSG(ee < er, "rep %d bits %d: erq %g vs rtn %g", rep, bits, ee, er);
            if (rep == 0)
                printf("bits %d (4-bit activations): erq/rtn output error %.3f\n", bits, ee / er);
            int on_grid = 1;
            for (size_t i = 0; i < nw; i++) {
                float back;
                bp_fake_quant(&Wq[i], &back, 1, s[i], z[i], bits);
                on_grid &= back == Wq[i];
            }
            CHECK_MSG(on_grid, "bits %d: weights off the frozen grid", bits);
        }
        free(Wq);
        free(Wr);
        free(s);
        free(z);
        free(bq);
        free_data(&x);
    }
}

/* Aqer alone (weights left in float: 16 bits skips everything, so use the
 * huge-bits limit by comparing the activation error before/after with a
 * weight grid too fine to matter). */
static void test_aqer(void)
{
    check_rng rng = {0xa9e7ULL};
    bp_error err;
    data x = make_data(12, 30, 400, 3, &rng);
    size_t nw = (size_t)(x.o * x.d);
    float *Wq = malloc(nw * sizeof *Wq), *bq = malloc((size_t)x.o * sizeof *bq);
    bp_qspec q = {15, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
    bp_erq_opts o;
    bp_erq_opts_init(&o);
    o.lambda1 = 1.0;                          /* light ridge: the data decide */
    CHECK(bp_erq_quantize(x.W, x.b, x.o, x.d, x.X, x.Xq, x.n, &q, &o, Wq, bq, NULL, NULL,
                          &err) == 0);
    double before = out_err(&x, x.W, x.b, x.Xq), after = out_err(&x, Wq, bq, x.Xq);
    printf("aqer: activation-induced error %.4g -> %.4g (3-bit activations)\n", before, after);
    CHECK(after < 0.8 * before);
    /* no bias: still lowers it */
    float *zero = calloc((size_t)x.o, sizeof *zero);
    memcpy(x.b, zero, (size_t)x.o * sizeof *zero);
    CHECK(bp_erq_quantize(x.W, NULL, x.o, x.d, x.X, x.Xq, x.n, &q, &o, Wq, NULL, NULL, NULL,
                          &err) == 0);
    CHECK(out_err(&x, Wq, zero, x.Xq) < out_err(&x, x.W, zero, x.Xq));
    /* no data: a clear error */
    CHECK(bp_erq_quantize(x.W, NULL, x.o, x.d, NULL, NULL, 0, &q, &o, Wq, NULL, NULL, NULL,
                          &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "calibration");
    free(zero);
    free(Wq);
    free(bq);
    free_data(&x);
}

/* Each kept flip never raises d^T C d: run with max_flips = 0, 1, 2, ...
 * and check the proxy sequence. */
static void test_refine(void)
{
    check_rng rng = {0x4e4eULL};
    const int64_t m = 24;
    double C[24 * 24], F[24 * 24], d0[24], d[24], step[24];
    unsigned char up[24], down[24];
    int monotone = 1, total_moves = 0;
    for (int rep = 0; rep < 20; rep++) {
        for (int64_t i = 0; i < m * m; i++)
            F[i] = check_normal(&rng);
        for (int64_t i = 0; i < m; i++)         /* C = F F^T / m + shared mean */
            for (int64_t j = 0; j < m; j++) {
                double s = 0.3;
                for (int64_t k = 0; k < m; k++)
                    s += F[i * m + k] * F[j * m + k] / (double)m;
                C[i * m + j] = s;
            }
        for (int64_t i = 0; i < m; i++) {
            step[i] = 0.1;
            d0[i] = 0.1 * (check_uniform(&rng) - 0.5);
            up[i] = down[i] = 1;
        }
        double prev = INFINITY;
        for (int k = 0; k <= 30; k++) {
            memcpy(d, d0, sizeof d);
            int kept = bp_erq_refine(C, m, d, step, up, down, k);
            double p = 0.0;
            for (int64_t i = 0; i < m; i++)
                for (int64_t j = 0; j < m; j++)
                    p += d[i] * C[i * m + j] * d[j];
            if (p > prev * (1 + 1e-12))
                monotone = 0;
            prev = p;
            if (k == 30)
                total_moves += kept;
            for (int64_t i = 0; i < m; i++) {      /* still one step from the start at most */
                double moved = fabs(d[i] - d0[i]);
                if (moved > 1e-12 && fabs(moved - 0.1) > 1e-12)
                    monotone = 0;
            }
        }
    }
    CHECK(monotone);
    CHECK(total_moves > 0);
}

/* ERQ's rule: the element moves only when |g| = |2 (C delta)_i| is over half
 * a step, even where a full step would lower the proxy. */
static void test_half_step(void)
{
    double step[2] = {0.1, 0.1};
    unsigned char up[2] = {1, 1}, down[2] = {1, 1};
    /* |g| = 0.0312 < 0.05 = half a step, though the flip would lower the proxy */
    double weak[4] = {0.2, 0.19, 0.19, 0.2}, d1[2] = {0.04, 0.04};
    CHECK(bp_erq_refine(weak, 2, d1, step, up, down, 100) == 0);
    CHECK(d1[0] == 0.04 && d1[1] == 0.04);
    /* |g| = 0.152 > 0.05: the first element flips to the other grid point */
    double strong[4] = {1.0, 0.9, 0.9, 1.0}, d2[2] = {0.04, 0.04};
    CHECK(bp_erq_refine(strong, 2, d2, step, up, down, 100) >= 1);
    CHECK(fabs(d2[0] + 0.06) < 1e-12 && d2[1] == 0.04);
    /* an element at the grid's end cannot move: the refinement stops there */
    double d3[2] = {0.04, 0.04};
    unsigned char no_down[2] = {0, 1};
    CHECK(bp_erq_refine(strong, 2, d3, step, up, no_down, 100) == 0);
}

int main(void)
{
    test_half_step();
    test_against_rtn();
    test_aqer();
    test_refine();
    return check_done();
}
