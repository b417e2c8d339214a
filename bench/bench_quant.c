/*
 * bench_quant.c - the weight quantizers side by side, and the speed of the
 * BLAS-heavy paths against plain OpenBLAS, in one run:
 *
 *   bench_quant [MODEL.safetensors CALIB.safetensors]
 *
 * (default: the demo model in configs/demo/).  For every layer of the model
 * and of a transformer-shaped set (384->1152, 384->1536, 1536->384 with
 * heavy-tailed, correlated inputs): the output error ||W_hat X^T - W X^T||^2
 * of squant, gptq and erq relative to rtn at 2, 3, 4, 6 and 8 bits
 * (per-channel symmetric min-max grids, activations unquantized) and the
 * time per layer; then the GFLOP/s reached by the Gram build and by GPTQ
 * next to a plain dgemm/sgemm of the same machine.  Prints Markdown.
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/bp_profile.h"
#include "planner/model.h"
#include "sensitivity/gram.h"
#include "sensitivity/sensitivity.h"

static const int bench_bits[5] = {2, 3, 4, 6, 8};

/* xorshift64*: a fixed, portable stream of uniforms in [0, 1). */
static unsigned long long bench_state = 88172645463325252ULL;
static void bench_seed(unsigned long long s)
{
    bench_state = s * 2685821657736338717ULL + 1;
}
static double bench_uniform(void)
{
    bench_state ^= bench_state >> 12;
    bench_state ^= bench_state << 25;
    bench_state ^= bench_state >> 27;
    return (double)((bench_state * 2685821657736338717ULL) >> 11) * 0x1.0p-53;
}

static double out_error(const bp_layer *l, const float *What, bp_error *err)
{
    bp_gram g;
    double *row = malloc((size_t)l->out * sizeof *row), s = 0.0;
    if (!row || bp_gram_build(&g, l->X, NULL, l->n, l->in, 0, l->in, err) < 0) {
        free(row);
        return NAN;
    }
    bp_gram_row_errors(&g, l->W, What, l->out, l->in, row, err);
    for (int64_t r = 0; r < l->out; r++)
        s += row[r];
    bp_gram_free(&g);
    free(row);
    return s;
}

/* One quantizer at one width; returns its error, adds its time. */
static double run_one(const bp_layer *l, bp_wquantizer q, int bits, float *What, float *bhat,
                      double *seconds, bp_error *err)
{
    bp_qspec w = {bits, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
    double t0 = bp_now();
    int rc;
    if (q == BP_WQ_GPTQ) {
        bp_gptq_opts o;
        bp_gptq_opts_init(&o);
        rc = bp_gptq_quantize(l->W, l->out, l->in, l->X, l->n, l->in, 0, &w, &o, What, err);
    } else if (q == BP_WQ_ERQ) {
        bp_erq_opts o;
        bp_erq_opts_init(&o);
        rc = bp_erq_quantize(l->W, NULL, l->out, l->in, l->X, l->X, l->n, &w, &o, What, bhat,
                             NULL, NULL, err);
    } else if (q == BP_WQ_SQUANT) {
        rc = bp_squant_quantize(l->W, l->out, l->in, (int64_t)l->kh * l->kw, bits, 3, 0, What,
                                NULL, err);
    } else {
        rc = bp_quantize_matrix(l->W, What, l->out, l->in, &w, err);
    }
    *seconds += bp_now() - t0;
    return rc < 0 ? NAN : out_error(l, What, err);
}

static void bench_layer(const bp_layer *l)
{
    static const bp_wquantizer qs[4] = {BP_WQ_RTN, BP_WQ_SQUANT, BP_WQ_GPTQ, BP_WQ_ERQ};
    float *What = malloc((size_t)(l->out * l->in) * sizeof *What);
    float *bhat = malloc((size_t)l->out * sizeof *bhat);
    double e[4][5], t[4] = {0, 0, 0, 0};
    bp_error err = {""};
    for (int q = 0; q < 4; q++)
        for (int b = 0; b < 5; b++)
            e[q][b] = run_one(l, qs[q], bench_bits[b], What, bhat, &t[q], &err);
    for (int q = 1; q < 4; q++) {
        printf("| %s (%lldx%lld) | %s |", l->name, (long long)l->out, (long long)l->in,
               bp_wquantizer_name(qs[q]));
        for (int b = 0; b < 5; b++)
            printf(" %.3f |", e[q][b] / e[0][b]);
        printf(" %.1f | %.1f |\n", 1e3 * t[q] / 5, 1e3 * t[0] / 5);
    }
    if (err.msg[0])
        fprintf(stderr, "%s: %s\n", l->name, err.msg);
    free(What);
    free(bhat);
}

/* Tokens with a few outlier channels (x20), a shared low-rank part and
 * Student-t-like tails, as inputs of transformer linears look. */
static float *transformer_inputs(int64_t n, int64_t d, unsigned long long seed)
{
    float *X = malloc((size_t)(n * d) * sizeof *X);
    int64_t k = 16;
    double *M = malloc((size_t)(k * d) * sizeof *M), *z = malloc((size_t)k * sizeof *z);
    bench_seed(seed);
    for (int64_t i = 0; i < k * d; i++)
        M[i] = (bench_uniform() - 0.5) * 0.7;
    for (int64_t i = 0; i < n; i++) {
        for (int64_t t = 0; t < k; t++)
            z[t] = bench_uniform() - 0.5;
        for (int64_t j = 0; j < d; j++) {
            double u = bench_uniform() - 0.5, v = 0.2 * u / sqrt(fmax(bench_uniform(), 1e-3));
            for (int64_t t = 0; t < k; t++)
                v += z[t] * M[t * d + j];
            X[i * d + j] = (float)(j % 97 == 5 ? 20.0 * v : v);
        }
    }
    free(M);
    free(z);
    return X;
}

static void bench_transformer(void)
{
    static const int64_t shapes[3][2] = {{1152, 384}, {1536, 384}, {384, 1536}};
    static const char *const names[3] = {"qkv", "fc1", "fc2"};
    for (int s = 0; s < 3; s++) {
        int64_t o = shapes[s][0], d = shapes[s][1], n = 2048;
        float *X = transformer_inputs(n, d, 7 + (unsigned long long)s);
        float *W = malloc((size_t)(o * d) * sizeof *W);
        bench_seed(100 + (unsigned long long)s);
        for (int64_t i = 0; i < o * d; i++)
            W[i] = (float)((bench_uniform() - 0.5) / sqrt((double)d));
        bp_layer l = {names[s], o, d, 1, 1, 1, W, NULL, n, X, NULL, NULL, NULL, NULL, NULL};
        bench_layer(&l);
        free(X);
        free(W);
    }
}

static void bench_model(const char *weights, const char *calib)
{
    bp_model m;
    bp_error err;
    char *all[] = {"*"};
    if (bp_model_open(&m, weights, calib, NULL, all, 1, NULL, 0, &err) < 0) {
        fprintf(stderr, "%s\n", err.msg);
        return;
    }
    for (size_t i = 0; i < m.n_layers; i++) {
        bp_loaded_layer l;
        if (bp_model_load_layer(&m, i, &l, &err) < 0) {
            fprintf(stderr, "%s\n", err.msg);
            break;
        }
        if (l.view.X)
            bench_layer(&l.view);
        bp_loaded_layer_free(&l);
    }
    bp_model_close(&m);
}

/* GFLOP/s of the Gram build and of GPTQ against plain GEMMs. */
static void bench_speed(void)
{
    const int64_t n = 4096, d = 1024, o = 1024;
    float *X = transformer_inputs(n, d, 3), *Xq = malloc((size_t)(n * d) * sizeof *Xq);
    float *W = malloc((size_t)(o * d) * sizeof *W), *Q = malloc((size_t)(o * d) * sizeof *Q);
    double *A = malloc((size_t)(d * d) * sizeof *A), *B = malloc((size_t)(d * d) * sizeof *B);
    double *C = malloc((size_t)(d * d) * sizeof *C);
    float *As = malloc((size_t)(d * d) * sizeof *As), *Cs = malloc((size_t)(d * d) * sizeof *Cs);
    for (int64_t i = 0; i < d * d; i++)
        A[i] = B[i] = As[i] = (float)((i % 13) * 0.01);
    for (int64_t i = 0; i < o * d; i++)
        W[i] = (float)((i % 7) * 0.01 - 0.03);
    bp_qspec aq = {4, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
    bp_quantize_matrix(X, Xq, n, d, &aq, NULL);
    bp_error err;
    double t0 = bp_now();
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)d, (int)d, (int)d, 1.0, A,
                (int)d, B, (int)d, 0.0, C, (int)d);
    double tdg = bp_now() - t0;
    t0 = bp_now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)d, (int)d, (int)d, 1.0f, As,
                (int)d, As, (int)d, 0.0f, Cs, (int)d);
    double tsg = bp_now() - t0;
    bp_gram g;
    t0 = bp_now();
    bp_gram_build(&g, X, Xq, n, d, 0, d, &err);
    double tgr = bp_now() - t0;
    bp_gram_free(&g);
    bp_qspec w = {4, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
    bp_gptq_opts go;
    bp_gptq_opts_init(&go);
    t0 = bp_now();
    bp_gptq_quantize(W, o, d, X, n, d, 0, &w, &go, Q, &err);
    double tgq = bp_now() - t0;
    double gemm = 2.0 * (double)d * d * d;
    double gram = (double)n * (2.0 * d) * (2.0 * d);            /* syrk of [X, dX] */
    double gptq = (double)n * d * d + 2.0 * (double)d * d * d + (double)o * d * d;
    printf("| dgemm %lldx%lldx%lld | %.1f | 1.00 |\n", (long long)d, (long long)d, (long long)d,
           gemm / tdg / 1e9);
    printf("| sgemm %lldx%lldx%lld | %.1f | %.2f |\n", (long long)d, (long long)d, (long long)d,
           gemm / tsg / 1e9, (gemm / tsg) / (gemm / tdg));
    printf("| Gram of [X, dX], n=%lld, d=%lld (double) | %.1f | %.2f |\n", (long long)n,
           (long long)d, gram / tgr / 1e9, (gram / tgr) / (gemm / tdg));
    printf("| GPTQ %lldx%lld, n=%lld (Hessian, Cholesky, lazy updates) | %.1f | %.2f |\n",
           (long long)o, (long long)d, (long long)n, gptq / tgq / 1e9,
           (gptq / tgq) / (gemm / tdg));
    free(X);
    free(Xq);
    free(W);
    free(Q);
    free(A);
    free(B);
    free(C);
    free(As);
    free(Cs);
}

int main(int argc, char **argv)
{
    const char *weights = argc > 2 ? argv[1] : BITPLAN_SOURCE_DIR "/configs/demo/model.safetensors";
    const char *calib = argc > 2 ? argv[2] : BITPLAN_SOURCE_DIR "/configs/demo/calib.safetensors";
    printf("| layer | quantizer | 2 bits | 3 bits | 4 bits | 6 bits | 8 bits | ms/width | rtn ms/width |\n");
    printf("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    bench_model(weights, calib);
    bench_transformer();
    printf("\n| path | GFLOP/s | vs dgemm |\n| --- | ---: | ---: |\n");
    bench_speed();
    return 0;
}
