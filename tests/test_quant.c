/*
 * test_quant.c - the uniform grid: codes on the grid, zero exact, error
 * bounded by half a step inside the range, MSE search never worse than
 * min-max, round-half-to-even, honest storage bits, fp16 steps.
 */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "planner/formats/safetensors.h"
#include "sensitivity/quant.h"

static void fill_normal(check_rng *r, float *x, size_t n, double scale, double shift)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * check_normal(r) + shift);
}

/* Every output is s * (q - z) for an integer q in [0, 2^b - 1]. */
static int on_grid(const float *y, size_t n, float s, float z, int bits)
{
    for (size_t i = 0; i < n; i++) {
        double q = (double)y[i] / s + z;
        if (fabs(q - nearbyint(q)) > 1e-3 || q < -1e-3 || q > (1 << bits) - 1 + 1e-3)
            return 0;
    }
    return 1;
}

static void test_grid_properties(void)
{
    check_rng r = {42};
    float x[257], y[257];
    for (int trial = 0; trial < 40; trial++) {
        int bits = 2 + trial % 7, sym = trial % 2;
        fill_normal(&r, x, 257, 0.1 + trial, trial % 3 == 0 ? 2.0 : 0.0);
        x[0] = 0.0f;
        float s, z;
        bp_qparams_fit(x, 257, bits, sym, BP_RANGE_MINMAX, 2.0, &s, &z);
        bp_fake_quant(x, y, 257, s, z, bits);
        CHECK(on_grid(y, 257, s, z, bits));
        CHECK(y[0] == 0.0f);                       /* zero is exact */
        double worst = 0;
        for (int i = 0; i < 257; i++)
            worst = fmax(worst, fabs((double)y[i] - x[i]));
        CHECK_MSG(worst <= 0.5 * s * (1 + 1e-5), "bits %d sym %d worst %g step %g", bits,
                  sym, worst, s);
        if (sym)
            CHECK(z == (float)(1 << (bits - 1)));
        float y2[257];                             /* idempotent */
        bp_fake_quant(y, y2, 257, s, z, bits);
        CHECK(memcmp(y, y2, sizeof y) == 0);
    }
}

static void test_round_half_even(void)
{
    /* step 1, zero 8: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2, -0.5 -> 0 */
    float x[] = {0.5f, 1.5f, 2.5f, -0.5f, -1.5f}, y[5];
    bp_fake_quant(x, y, 5, 1.0f, 8.0f, 4);
    CHECK(y[0] == 0.0f && y[1] == 2.0f && y[2] == 2.0f && y[3] == 0.0f && y[4] == -2.0f);
    /* clamping to the grid ends: codes 0..15 with zero 8 -> [-8, 7] */
    float big[] = {100.0f, -100.0f}, yb[2];
    bp_fake_quant(big, yb, 2, 1.0f, 8.0f, 4);
    CHECK(yb[0] == 7.0f && yb[1] == -8.0f);
}

static void test_mse_search(void)
{
    check_rng r = {7};
    float x[1000];
    for (int trial = 0; trial < 20; trial++) {
        /* Gaussian data: at 2-3 bits the MSE-optimal clip is well inside the
         * extremes, so the search must find a strictly better range */
        for (int i = 0; i < 1000; i++)
            x[i] = (float)check_normal(&r);
        int bits = 2 + trial % 5;
        double norm = trial % 2 ? 2.4 : 2.0;
        float s0, z0, s1, z1;
        bp_qparams_fit(x, 1000, bits, trial % 3 == 0, BP_RANGE_MINMAX, norm, &s0, &z0);
        bp_qparams_fit(x, 1000, bits, trial % 3 == 0, BP_RANGE_MSE, norm, &s1, &z1);
        double l0 = bp_quant_loss(x, 1000, s0, z0, bits, norm);
        double l1 = bp_quant_loss(x, 1000, s1, z1, bits, norm);
        CHECK(l1 <= l0);
        if (bits <= 3)
            CHECK_MSG(l1 < l0, "MSE search should clip heavy tails at %d bits", bits);
        CHECK(s1 <= s0 * (1 + 1e-6));
    }
}

static void test_granularity(void)
{
    check_rng r = {3};
    enum { O = 6, D = 40 };
    float W[O * D], Q[O * D];
    for (int o = 0; o < O; o++)
        for (int d = 0; d < D; d++)
            W[o * D + d] = (float)(check_normal(&r) * (o + 1) * (d < 20 ? 1 : 10));
    bp_qspec q = {4, BP_GRAN_GROUP, 20, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
    CHECK(bp_quantize_matrix(W, Q, O, D, &q, NULL) == 0);
    /* each group of 20 columns has its own step: the first group's error is
     * bounded by its own (much smaller) range */
    for (int o = 0; o < O; o++) {
        float lo = 0, hi = 0;
        for (int d = 0; d < 20; d++) {
            lo = fminf(lo, W[o * D + d]);
            hi = fmaxf(hi, W[o * D + d]);
        }
        double step = (hi - lo) / 15.0;
        for (int d = 0; d < 20; d++)
            CHECK(fabs(Q[o * D + d] - W[o * D + d]) <= 0.5 * step * (1 + 1e-5));
    }
    /* per-channel beats per-tensor on rows of very different scale */
    float Qc[O * D], Qt[O * D];
    bp_qspec qc = {4, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0}, qt = qc;
    qt.granularity = BP_GRAN_TENSOR;
    bp_quantize_matrix(W, Qc, O, D, &qc, NULL);
    bp_quantize_matrix(W, Qt, O, D, &qt, NULL);
    double ec = 0, et = 0;
    for (int i = 0; i < O * D; i++) {
        ec += (Qc[i] - W[i]) * (Qc[i] - W[i]);
        et += (Qt[i] - W[i]) * (Qt[i] - W[i]);
    }
    CHECK(ec < et);
    /* 16 bits passes through unchanged */
    bp_qspec q16 = {16, BP_GRAN_CHANNEL, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
    bp_quantize_matrix(W, Q, O, D, &q16, NULL);
    CHECK(memcmp(W, Q, sizeof W) == 0);
    /* bad group size is an error */
    bp_error err;
    bp_qspec bad = {4, BP_GRAN_GROUP, 0, 1, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
    CHECK(bp_quantize_matrix(W, Q, O, D, &bad, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "group size");
}

static void test_storage_bits(void)
{
    for (int half = 0; half <= 1; half++) {
        int sb = half ? 16 : 32;                   /* bits per stored scale */
        bp_qspec q = {4, BP_GRAN_CHANNEL, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, half};
        CHECK(bp_weight_storage_bits(3, 10, &q) == 3 * 10 * 4 + 3 * (sb + 4));
        q.symmetric = 1;
        CHECK(bp_weight_storage_bits(3, 10, &q) == 3 * 10 * 4 + 3 * sb);
        q.granularity = BP_GRAN_GROUP;
        q.group_size = 4;                          /* 10 columns -> 3 groups */
        CHECK(bp_weight_storage_bits(3, 10, &q) == 120 + 3 * 3 * sb);
        q.granularity = BP_GRAN_TENSOR;
        CHECK(bp_weight_storage_bits(3, 10, &q) == 120 + sb);
        q.bits = 16;
        CHECK(bp_weight_storage_bits(3, 10, &q) == 3 * 10 * 16);
    }
}

static int is_fp16(float v)
{
    return bp_f16_to_f32(bp_f32_to_f16(v)) == v;
}

/* bp_fp16_step: the smallest fp16 value >= s, within fp16's positive range. */
static void test_fp16_step(void)
{
    check_rng r = {2027};
    for (int i = 0; i < 20000; i++) {
        float s = (float)exp(-24.0 + 36.0 * check_uniform(&r));      /* 4e-11 .. 1.6e5 */
        float h = bp_fp16_step(s);
        CHECK(is_fp16(h) && h > 0.0f && h <= 65504.0f);
        if (s <= 65504.0f && s >= 0x1p-24f) {
            CHECK_MSG(h >= s, "step %.9g -> %.9g", s, h);
            uint16_t below = (uint16_t)(bp_f32_to_f16(h) - 1u);     /* the fp16 value under h */
            CHECK_MSG(bp_f16_to_f32(below) < s, "step %.9g -> %.9g is not the smallest", s, h);
        }
        if (is_fp16(s) && s >= 0x1p-24f && s <= 65504.0f)
            CHECK(h == s);
    }
    CHECK(bp_fp16_step(0x1p-30f) == 0x1p-24f && bp_fp16_step(0.0f) == 0x1p-24f);
    CHECK(bp_fp16_step(1e9f) == 65504.0f);
    CHECK(bp_fp16_step(1.0f) == 1.0f && bp_fp16_step(nextafterf(1.0f, 2.0f)) == 1.0f + 0x1p-10f);
    CHECK(bp_fp16_step(3e-6f) == 0x1p-24f * 51.0f);                 /* subnormal: 50.33 -> 51 */
}

/* With fp16 scales every range search keeps steps that are fp16 values and
 * integer zero points; min-max still covers its range (the step rounds up),
 * even at 15 bits where a nearest-fp16 step would clip by several steps, and
 * costs at most a 2^-10 wider step (one 2^-24 quantum for fp16 subnormals);
 * the MSE search is never worse than it. */
static void test_fp16_grids(void)
{
    check_rng r = {99};
    enum { R = 6, C = 96 };
    float x[R * C], y[R * C], es[R * C], ez[R * C], y32[R * C], es32[R * C], ez32[R * C];
    const bp_range ranges[] = {BP_RANGE_MINMAX, BP_RANGE_MSE, BP_RANGE_PERCENTILE, BP_RANGE_ERQ_W};
    const int widths[] = {2, 3, 4, 8, 12, 15};
    double sum16[16] = {0}, sum32[16] = {0};
    for (int trial = 0; trial < 48; trial++) {
        fill_normal(&r, x, R * C, pow(10.0, -3.0 + trial % 5), trial % 3 == 0 ? 0.02 : 0.0);
        for (size_t k = 0; k < sizeof ranges / sizeof *ranges; k++) {
            bp_qspec q = {widths[trial % 6], trial % 2 ? BP_GRAN_CHANNEL : BP_GRAN_GROUP, 32,
                          ranges[k] == BP_RANGE_ERQ_W ? 0 : trial % 4 < 2, ranges[k], 2.0,
                          BP_AQ_UNIFORM, 1};
            CHECK(bp_quantize_matrix_grid(x, y, R, C, &q, es, ez, NULL) == 0);
            bp_qspec q32 = q;
            q32.fp16_scales = 0;
            CHECK(bp_quantize_matrix_grid(x, y32, R, C, &q32, es32, ez32, NULL) == 0);
            double l16 = 0, l32 = 0;
            int normal = 1;
            float maxq = (float)((1u << q.bits) - 1u);
            for (int i = 0; i < R * C; i++) {
                CHECK_MSG(is_fp16(es[i]), "range %d: step %.9g", (int)k, es[i]);
                CHECK(ez[i] == nearbyintf(ez[i]));
                float code = nearbyintf(x[i] / es[i]) + ez[i];
                code = fminf(fmaxf(code, 0.0f), maxq);
                CHECK(y[i] == es[i] * (code - ez[i]));                /* the stored grid */
                l16 += (double)(y[i] - x[i]) * (y[i] - x[i]);
                l32 += (double)(y32[i] - x[i]) * (y32[i] - x[i]);
                normal &= es32[i] >= 0x1p-14f;
                if (ranges[k] == BP_RANGE_MINMAX) {   /* within one fp16 quantum above */
                    CHECK(es[i] >= es32[i] && es[i] <= fmaxf(es32[i] * (1.0f + 0x1p-10f),
                                                             es32[i] + 0x1p-24f));
                    if (!q.symmetric)             /* asymmetric min-max: no clipping */
                        CHECK_MSG(fabsf(y[i] - x[i]) <= 0.5f * es[i] * (1.0f + 1e-5f),
                                  "%d bits: error %g, step %g", q.bits, fabsf(y[i] - x[i]),
                                  es[i]);
                }
            }
            if (ranges[k] == BP_RANGE_MINMAX && normal)   /* normal fp16 steps */
                sum16[q.bits] += l16, sum32[q.bits] += l32;
            if (ranges[k] == BP_RANGE_MSE) {
                bp_qspec mm = q;
                mm.range = BP_RANGE_MINMAX;
                CHECK(bp_quantize_matrix_grid(x, y32, R, C, &mm, es32, ez32, NULL) == 0);
                double lmm = 0;
                for (int i = 0; i < R * C; i++)
                    lmm += (double)(y32[i] - x[i]) * (y32[i] - x[i]);
                CHECK(l16 <= lmm * (1 + 1e-9));
            }
        }
    }
    /* the wider step costs ~2^-10 of the squared error; above 8 bits a code
     * moves by up to 2^(b-11) steps, so errors decorrelate (a few % noise) */
    for (int b = 2; b < 16; b++)
        CHECK_MSG(sum16[b] <= sum32[b] * (b <= 8 ? 1.01 : 1.05), "%d bits: %g vs %g", b,
                  sum16[b], sum32[b]);
}

static void test_all_zero(void)
{
    float x[8] = {0}, y[8];
    float s, z;
    for (int sym = 0; sym < 2; sym++) {
        bp_qparams_fit(x, 8, 3, sym, BP_RANGE_MSE, 2.0, &s, &z);
        CHECK(s > 0 && isfinite(s));
        bp_fake_quant(x, y, 8, s, z, 3);
        CHECK(memcmp(x, y, sizeof x) == 0);
    }
}

static double mse(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
    return s / (double)n;
}

/* Inputs after a LayerNorm-like layer whose channels' ranges differ 50x:
 * PTF beats one per-tensor uniform grid at 4 and 6 bits, and gives the
 * widest channels the largest factor. */
static void test_ptf(void)
{
    check_rng r = {424242};
    bp_error err;
    const int64_t n = 512, d = 64;
    float *x = malloc((size_t)(n * d) * sizeof *x), *a = malloc((size_t)(n * d) * sizeof *a);
    float *b = malloc((size_t)(n * d) * sizeof *b);
    double spread[64];
    int alpha[64];
    for (int64_t c = 0; c < d; c++)
        spread[c] = c % 8 == 0 ? 50.0 : 1.0 + 2.0 * check_uniform(&r);
    for (int64_t i = 0; i < n; i++)
        for (int64_t c = 0; c < d; c++)
            x[i * d + c] = (float)(spread[c] * (0.2 + check_normal(&r)));
    for (int bits = 4; bits <= 6; bits += 2) {
        bp_qspec uni = {bits, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
        bp_qspec ptf = uni;
        ptf.kind = BP_AQ_PTF;
        CHECK(bp_quantize_matrix(x, a, n, d, &uni, &err) == 0);
        CHECK(bp_quantize_matrix(x, b, n, d, &ptf, &err) == 0);
        double eu = mse(a, x, (size_t)(n * d)), ep = mse(b, x, (size_t)(n * d));
        printf("ptf/uniform mse at %d bits: %.3f\n", bits, ep / eu);
        CHECK_MSG(ep < eu, "%d bits: ptf %g vs uniform %g", bits, ep, eu);
    }
    bp_ptf_quant(x, b, n, d, 4, alpha);
    int wide_ok = 1, narrow_small = 1;
    for (int64_t c = 0; c < d; c++) {
        if (spread[c] == 50.0)
            wide_ok &= alpha[c] == 3;
        else
            narrow_small &= alpha[c] < 3;
    }
    CHECK(wide_ok);
    CHECK(narrow_small);
    free(x);
    free(a);
    free(b);
}

/* log2: every value within [m 2^-(2^b - 1), m] is within a factor sqrt(2);
 * zero maps to the smallest level; on heavy-tailed non-negative inputs
 * (like attention probabilities) the relative error beats a uniform grid. */
static void test_log2(void)
{
    check_rng r = {31337};
    bp_error err;
    const size_t n = 4096;
    float *x = malloc(n * sizeof *x), *l = malloc(n * sizeof *l), *u = malloc(n * sizeof *u);
    for (size_t i = 0; i < n; i++) {
        double v = check_uniform(&r);
        x[i] = (float)(v * v * v * v * v * v);          /* mass near 0, few large */
    }
    x[0] = 0.0f;
    bp_qspec lq = {4, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_LOG2, 0}, uq = lq;
    uq.kind = BP_AQ_UNIFORM;
    CHECK(bp_quantize_matrix(x, l, 1, (int64_t)n, &lq, &err) == 0);
    CHECK(bp_quantize_matrix(x, u, 1, (int64_t)n, &uq, &err) == 0);
    float m = 0.0f;
    for (size_t i = 0; i < n; i++)
        m = fmaxf(m, x[i]);
    int bounded = 1;
    double rl = 0.0, ru = 0.0;
    size_t counted = 0;
    for (size_t i = 1; i < n; i++) {
        if (x[i] < m * ldexpf(1.0f, -15))
            continue;
        bounded &= fabs(log2((double)l[i] / x[i])) <= 0.5 + 1e-6;
        rl += fabs((double)l[i] - x[i]) / x[i];
        ru += fabs((double)u[i] - x[i]) / x[i];
        counted++;
    }
    CHECK(bounded);
    CHECK(l[0] == m * ldexpf(1.0f, -15));
    printf("log2 vs uniform, mean relative error at 4 bits: %.3f vs %.3f\n", rl / counted,
           ru / counted);
    CHECK(rl < 0.5 * ru);
    free(x);
    free(l);
    free(u);
}

/* Percentile clipping: a thin tail of outliers (0.1%) no longer stretches
 * the grid; a lone outlier is kept when clipping it would cost more; on
 * outlier-free data it never does worse than min-max. */
static void test_percentile(void)
{
    check_rng r = {2718};
    const size_t n = 20000;
    float *x = malloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)check_normal(&r);
    for (int bits = 3; bits <= 8; bits++) {
        float s1, z1, s2, z2;
        bp_qparams_fit(x, n, bits, 0, BP_RANGE_MINMAX, 2.0, &s1, &z1);
        bp_qparams_fit(x, n, bits, 0, BP_RANGE_PERCENTILE, 2.0, &s2, &z2);
        CHECK(bp_quant_loss(x, n, s2, z2, bits, 2.0) <= bp_quant_loss(x, n, s1, z1, bits, 2.0));
    }
    for (size_t i = 0; i < 20; i++)
        x[i * 997] = i % 2 ? 8.0f : -8.0f;
    float s1, z1, s2, z2;
    bp_qparams_fit(x, n, 4, 0, BP_RANGE_MINMAX, 2.0, &s1, &z1);
    bp_qparams_fit(x, n, 4, 0, BP_RANGE_PERCENTILE, 2.0, &s2, &z2);
    double l1 = bp_quant_loss(x, n, s1, z1, 4, 2.0), l2 = bp_quant_loss(x, n, s2, z2, 4, 2.0);
    CHECK_MSG(l2 < 0.5 * l1, "percentile %g vs minmax %g", l2, l1);
    CHECK(s2 < 0.6f * s1);
    x[0] = 200.0f;                      /* one huge value: clipping it costs more */
    bp_qparams_fit(x, n, 4, 0, BP_RANGE_MINMAX, 2.0, &s1, &z1);
    bp_qparams_fit(x, n, 4, 0, BP_RANGE_PERCENTILE, 2.0, &s2, &z2);
    CHECK(bp_quant_loss(x, n, s2, z2, 4, 2.0) <= bp_quant_loss(x, n, s1, z1, 4, 2.0));
    free(x);
}

/* bp_quantile is torch.quantile's linear rule: exact at the order
 * statistics, linear between them; on a 96-wide row p = 0.99 .. 0.99999
 * give distinct values between the two largest elements. */
static void test_quantile(void)
{
    enum { N = 96 };
    float v[N];
    for (int i = 0; i < N; i++)
        v[i] = (float)(i * i) * 0.25f - 3.0f;          /* sorted, uneven gaps */
    CHECK(bp_quantile(v, N, 0.0) == v[0]);
    CHECK(bp_quantile(v, N, 1.0) == v[N - 1]);
    CHECK(bp_quantile(v, N, 0.5) == v[47] + 0.5f * (v[48] - v[47]) ||
          fabsf(bp_quantile(v, N, 0.5) - 0.5f * (v[47] + v[48])) < 1e-4f);
    for (int k = 0; k < N; k++)                     /* exact at rank k */
        CHECK(bp_quantile(v, N, (double)k / (N - 1)) == v[k] ||
              fabsf(bp_quantile(v, N, (double)k / (N - 1)) - v[k]) < 1e-4f * (1 + fabsf(v[k])));
    static const double ps[] = {0.99, 0.995, 0.999, 0.9999, 0.99999};
    float prev = -INFINITY;
    for (size_t k = 0; k < sizeof ps / sizeof *ps; k++) {
        float q = bp_quantile(v, N, ps[k]);
        CHECK(q > prev && q > v[N - 3] && q < v[N - 1]);
        double rank = ps[k] * (N - 1), w = rank - floor(rank);
        double want = v[(int)rank] + w * (v[(int)rank + 1] - v[(int)rank]);
        CHECK_MSG(fabs(q - want) < 1e-5 * fabs(want), "p %g: %g vs %g", ps[k], q, want);
        prev = q;
    }
    float one = 2.5f;
    CHECK(bp_quantile(&one, 1, 0.3) == 2.5f);
}

/* The mean squared error of an ERQ candidate: lo, hi the (1-p, p)
 * quantiles, s = (hi - lo) / (2^b - 1), z = rne(-lo / s). */
static double erq_candidate(const float *x, const float *sorted, size_t n, int bits, double p,
                            float *s, float *z)
{
    float hi = bp_quantile(sorted, n, p), lo = bp_quantile(sorted, n, 1.0 - p);
    *s = (hi - lo) / (float)((1 << bits) - 1);
    *z = nearbyintf(-lo / *s);
    return bp_quant_loss(x, n, *s, *z, bits, 2.0) / (double)n;
}

static int cmp_f(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

/* ERQ's ranges: the fitted grid is one of the candidates and none of the
 * candidates has a lower error; the zero point is not widened to 0 (data
 * away from zero keeps its whole grid: z outside [0, 2^b - 1]). */
static void test_erq_range(void)
{
    check_rng r = {8128};
    enum { N = 4000 };
    float *x = malloc(N * sizeof *x), *v = malloc(N * sizeof *v);
    static const double pw[] = {0.97, 0.98, 0.99, 0.995, 0.9995, 0.9997, 0.9999, 0.99995,
                                0.99999, 1.0};
    static const double pa[] = {0.999, 0.9999, 0.99999};
    for (int trial = 0; trial < 3; trial++) {
        fill_normal(&r, x, N, trial == 2 ? 1.0 : 1.0 + trial, trial == 2 ? 20.0 : 0.3 * trial);
        for (int i = 0; i < 8; i++)
            x[(size_t)i * 431] *= trial == 2 ? 1.2f : 6.0f;   /* a thin tail */
        memcpy(v, x, N * sizeof *v);
        qsort(v, N, sizeof *v, cmp_f);
        for (int bits = 2; bits <= 8; bits += 2)
            for (int act = 0; act < 2; act++) {
                const double *ps = act ? pa : pw;
                size_t np = act ? 3 : 10;
                float s, z, cs, cz;
                bp_qparams_fit(x, N, bits, 0, act ? BP_RANGE_ERQ_A : BP_RANGE_ERQ_W, 2.0, &s, &z);
                double got = bp_quant_loss(x, N, s, z, bits, 2.0) / N, best = INFINITY;
                int found = 0;
                for (size_t k = 0; k < np; k++) {
                    double l = erq_candidate(x, v, N, bits, ps[k], &cs, &cz);
                    best = fmin(best, l);
                    found |= cs == s && cz == z;
                }
                CHECK_MSG(found, "trial %d bits %d act %d: fit is not a candidate", trial, bits, act);
                CHECK(got <= best);
                if (trial == 2)                    /* every value in 15 .. 30 */
                    CHECK(z < 0.0f);
            }
    }
    free(x);
    free(v);
}

/* The exported activation grid reproduces bp_quantize_matrix bit for bit:
 * x_hat = s (clamp(rne(x (1/s)) + z, 0, 2^b - 1) - z) per tensor (any range
 * setting), per column for ptf; log2 from its maximum. */
static void test_act_grid(void)
{
    check_rng r = {31337};
    enum { N = 300, D = 12 };
    float x[N * D], want[N * D], got[N * D], S[D], Z[D];
    for (int i = 0; i < N * D; i++)
        x[i] = (float)(check_normal(&r) * (1 + i % D) + 0.3 * (i % 3));
    bp_qspec specs[] = {
        {4, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0},
        {6, BP_GRAN_TENSOR, 0, 1, BP_RANGE_MSE, 2.4, BP_AQ_UNIFORM, 0},
        {8, BP_GRAN_TENSOR, 0, 0, BP_RANGE_PERCENTILE, 2.0, BP_AQ_UNIFORM, 0},
        {4, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_PTF, 0},
    };
    for (size_t k = 0; k < sizeof specs / sizeof *specs; k++) {
        bp_qspec *q = &specs[k];
        CHECK(bp_quantize_matrix(x, want, N, D, q, NULL) == 0);
        int64_t m = bp_act_grid(x, N, D, q, S, Z);
        CHECK(m == (q->kind == BP_AQ_PTF ? D : 1));
        for (int i = 0; i < N * D; i++) {
            int c = m == 1 ? 0 : i % D;
            bp_fake_quant(&x[i], &got[i], 1, S[c], Z[c], q->bits);
        }
        CHECK(memcmp(want, got, sizeof want) == 0);
    }
    for (int i = 0; i < N * D; i++)
        x[i] = fabsf(x[i]);
    bp_qspec lg = {4, BP_GRAN_TENSOR, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_LOG2, 0};
    CHECK(bp_quantize_matrix(x, want, N, D, &lg, NULL) == 0);
    CHECK(bp_act_grid(x, N, D, &lg, S, Z) == 1);
    bp_log2_quant(x, got, N * D, S[0], 4);
    CHECK(memcmp(want, got, sizeof want) == 0);
    bp_qspec tok = {8, BP_GRAN_TOKEN, 0, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
    CHECK(bp_act_grid(x, N, D, &tok, S, Z) == 0);       /* fitted per row at run time */
}

int main(void)
{
    test_quantile();
    test_erq_range();
    test_act_grid();
    test_ptf();
    test_log2();
    test_percentile();
    test_grid_properties();
    test_round_half_even();
    test_mse_search();
    test_granularity();
    test_storage_bits();
    test_fp16_step();
    test_fp16_grids();
    test_all_zero();
    return check_done();
}
