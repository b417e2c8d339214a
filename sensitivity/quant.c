/*
 * quant.c - scale / zero-point fitting and quantize-dequantize over flat
 * arrays (see quant.h for the grid and the range searches).
 */
#include "quant.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

const char *bp_granularity_name(bp_granularity g)
{
    switch (g) {
    case BP_GRAN_TENSOR: return "per_tensor";
    case BP_GRAN_CHANNEL: return "per_channel";
    case BP_GRAN_GROUP: return "per_group";
    case BP_GRAN_TOKEN: return "per_token";
    }
    return "?";
}

const char *bp_range_name(bp_range r)
{
    switch (r) {
    case BP_RANGE_MSE: return "mse";
    case BP_RANGE_PERCENTILE: return "percentile";
    case BP_RANGE_ERQ_W:
    case BP_RANGE_ERQ_A: return "erq";
    default: return "minmax";
    }
}

/*
 * torch.quantile (linear): rank = q (n - 1) in float32, below = (long) rank,
 * above = ceil(rank), then torch.lerp(v[below], v[above], rank - below):
 * w < 0.5 ? a + w (b - a) : b - (b - a) (1 - w), each a fused multiply-add
 * as PyTorch's CPU kernels (built with FMA contraction) and CUDA compute it.
 */
float bp_quantile(const float *v, size_t n, double q)
{
    if (n == 0)
        return 0.0f;
    float rank = (float)q * (float)(n - 1);
    size_t below = (size_t)rank, above = (size_t)ceilf(rank);
    if (above > n - 1)
        above = n - 1;
    float w = rank - (float)below, a = v[below], b = v[above];
    return fabsf(w) < 0.5f ? fmaf(w, b - a, a) : fmaf(-(b - a), 1.0f - w, b);
}

const char *bp_qkind_name(bp_qkind k)
{
    return k == BP_AQ_LOG2 ? "log2" : k == BP_AQ_PTF ? "ptf" : "uniform";
}

static void min_max(const float *x, size_t n, float *lo, float *hi)
{
    float a = 0.0f, b = 0.0f;     /* the range always includes 0 */
    for (size_t i = 0; i < n; i++) {
        if (x[i] < a) a = x[i];
        if (x[i] > b) b = x[i];
    }
    *lo = a;
    *hi = b;
}

float bp_fp16_step(float s)
{
    if (!(s > 0x1p-24f))
        return 0x1p-24f;
    if (s >= 65504.0f)
        return 65504.0f;
    if (s < 0x1p-14f)                 /* fp16 subnormals: multiples of 2^-24 */
        return ldexpf(ceilf(ldexpf(s, 24)), -24);
    int e;
    float m = frexpf(s, &e);          /* s = m 2^e, m in [0.5, 1): 11 bits kept */
    return ldexpf(ceilf(ldexpf(m, 11)), e - 11);
}

/* Step and zero point for the range [lo, hi] (lo <= 0 <= hi); with half,
 * the step is rounded up to fp16 and the zero point follows it. */
static void params_for_range(float lo, float hi, int bits, int symmetric, int half,
                             float *scale, float *zero)
{
    float levels = (float)((1u << bits) - 1u);
    if (symmetric) {
        float m = fmaxf(-lo, hi);
        if (m <= 0.0f)
            m = 1.0f;
        *scale = 2.0f * m / levels;
        if (half)
            *scale = bp_fp16_step(*scale);
        *zero = (float)(1u << (bits - 1));
        return;
    }
    if (hi - lo <= 0.0f) {        /* all zeros: any step represents them */
        *scale = 1.0f;
        *zero = 0.0f;
        return;
    }
    *scale = (hi - lo) / levels;
    if (half)
        *scale = bp_fp16_step(*scale);
    float z = nearbyintf(-lo / *scale);
    *zero = fminf(fmaxf(z, 0.0f), levels);
}

/*
 * Q(x) = s * (clamp(rne(x / s) + z, 0, 2^b - 1) - z), dividing as the
 * references do (x * (1/s) rounds differently at exact half-steps).
 */
static inline float qdq(float x, float s, float z, float maxq)
{
    float q = nearbyintf(x / s) + z;
    q = q > 0.0f ? q : 0.0f;          /* comparisons, not fmaxf/fminf: those are */
    q = q < maxq ? q : maxq;          /* library calls here (same result, NaN -> 0) */
    return s * (q - z);
}

void bp_fake_quant(const float *x, float *out, size_t n, float scale,
                   float zero, int bits)
{
    float maxq = (float)((1u << bits) - 1u);
    for (size_t i = 0; i < n; i++)
        out[i] = qdq(x[i], scale, zero, maxq);
}

double bp_quant_loss(const float *x, size_t n, float scale, float zero,
                     int bits, double norm)
{
    float maxq = (float)((1u << bits) - 1u);
    double sum = 0.0;
    if (norm == 2.0) {
        for (size_t i = 0; i < n; i++) {
            double e = (double)qdq(x[i], scale, zero, maxq) - x[i];
            sum += e * e;
        }
    } else {
        for (size_t i = 0; i < n; i++)
            sum += pow(fabs((double)qdq(x[i], scale, zero, maxq) - x[i]), norm);
    }
    return sum;
}

static int cmp_float(const void *a, const void *b)
{
    float x = *(const float *)a, y = *(const float *)b;
    return x < y ? -1 : x > y;
}

static float *sorted_copy(const float *x, size_t n)
{
    float *v = malloc((n ? n : 1) * sizeof *v);
    if (!v)
        return NULL;
    memcpy(v, x, n * sizeof *v);
    qsort(v, n, sizeof *v, cmp_float);
    return v;
}

/*
 * Percentile clipping: for p in a fixed grid, clip at the (1-p) and p
 * quantiles (interpolated, widened to include 0) and keep the lowest squared
 * error; p = 1 (min-max) is the starting point, so only strict gains clip.
 */
static void percentile_fit(const float *x, size_t n, int bits, int symmetric, int half,
                           float *scale, float *zero)
{
    static const double ps[] = {0.99999, 0.9999, 0.999, 0.995, 0.99, 0.98, 0.97};
    float *v = sorted_copy(x, n);
    if (!v)
        return;                     /* keep the min-max parameters */
    double best = bp_quant_loss(x, n, *scale, *zero, bits, 2.0);
    for (size_t k = 0; k < sizeof ps / sizeof *ps; k++) {
        float lo = fminf(bp_quantile(v, n, 1.0 - ps[k]), 0.0f);
        float hi = fmaxf(bp_quantile(v, n, ps[k]), 0.0f), s, z;
        if (!(hi > lo))
            continue;
        params_for_range(lo, hi, bits, symmetric, half, &s, &z);
        double loss = bp_quant_loss(x, n, s, z, bits, 2.0);
        if (loss < best)
            best = loss, *scale = s, *zero = z;
    }
    free(v);
}

/*
 * ERQ's grid (its UniformQuantizer.init_quantization_scale): for each p,
 * lo, hi = the (1-p) and p quantiles (not widened to 0), s = (hi - lo) /
 * (2^b - 1) (rounded up to fp16 with half), z = rne(-lo / s) (not clamped);
 * keep the p with the lowest mean squared error, the first of equals.  Falls
 * back to min-max when every p gives an empty range.
 */
static void erq_fit(const float *x, size_t n, int bits, int act, int half, float *scale,
                    float *zero)
{
    static const double pw[] = {0.97, 0.98, 0.99, 0.995, 0.9995, 0.9997, 0.9999, 0.99995,
                                0.99999, 1.0};
    static const double pa[] = {0.999, 0.9999, 0.99999};
    const double *ps = act ? pa : pw;
    size_t np = act ? sizeof pa / sizeof *pa : sizeof pw / sizeof *pw;
    float *v = sorted_copy(x, n);
    if (!v)
        return;                     /* keep the min-max parameters */
    double best = INFINITY;
    float levels = (float)((1u << bits) - 1u);
    for (size_t k = 0; k < np; k++) {
        float hi = bp_quantile(v, n, ps[k]), lo = bp_quantile(v, n, 1.0 - ps[k]);
        float s = (hi - lo) / levels;
        if (!(s > 0.0f))
            continue;
        if (half)
            s = bp_fp16_step(s);
        float z = nearbyintf(-lo / s);
        double loss = bp_quant_loss(x, n, s, z, bits, 2.0) / (double)n;
        if (loss < best)
            best = loss, *scale = s, *zero = z;
    }
    free(v);
}

static void fit(const float *x, size_t n, int bits, int symmetric, bp_range range,
                double norm, int half, float *scale, float *zero)
{
    float lo, hi;
    min_max(x, n, &lo, &hi);
    params_for_range(lo, hi, bits, symmetric, half, scale, zero);
    if (range == BP_RANGE_MINMAX || hi - lo <= 0.0f || n == 0)
        return;
    if (range == BP_RANGE_PERCENTILE) {
        percentile_fit(x, n, bits, symmetric, half, scale, zero);
        return;
    }
    if (range == BP_RANGE_ERQ_W || range == BP_RANGE_ERQ_A) {
        erq_fit(x, n, bits, range == BP_RANGE_ERQ_A, half, scale, zero);
        return;
    }
    /* Shrink the range by p = 1.00, 0.99, ..., 0.20; keep strict gains. */
    double best = bp_quant_loss(x, n, *scale, *zero, bits, norm);
    for (int i = 1; i <= 80; i++) {
        float p = 1.0f - 0.01f * (float)i, s, z;
        params_for_range(p * lo, p * hi, bits, symmetric, half, &s, &z);
        double loss = bp_quant_loss(x, n, s, z, bits, norm);
        if (loss < best) {
            best = loss;
            *scale = s;
            *zero = z;
        }
    }
}

void bp_qparams_fit(const float *x, size_t n, int bits, int symmetric,
                    bp_range range, double norm, float *scale, float *zero)
{
    fit(x, n, bits, symmetric, range, norm, 0, scale, zero);
}

void bp_qspec_fit(const bp_qspec *q, const float *x, size_t n, float *scale, float *zero)
{
    fit(x, n, q->bits, q->symmetric, q->range, q->mse_norm, q->fp16_scales, scale, zero);
}

/* Quantize one contiguous block with its own fitted parameters (recorded
 * per element in es/ez when given). */
static void quantize_block(const float *x, float *out, size_t n, const bp_qspec *q, float *es,
                           float *ez)
{
    float s, z;
    bp_qspec_fit(q, x, n, &s, &z);
    bp_fake_quant(x, out, n, s, z, q->bits);
    for (size_t i = 0; es && i < n; i++)
        es[i] = s, ez[i] = z;
}

void bp_log2_quant(const float *x, float *out, size_t n, float m, int bits)
{
    double maxq = ldexp(1.0, bits) - 1.0;
    for (size_t i = 0; i < n; i++) {
        double q = x[i] > 0.0f ? nearbyint(-log2((double)x[i] / m)) : maxq;
        q = fmin(fmax(q, 0.0), maxq);
        out[i] = (float)(m * exp2(-q));
    }
}

/* Squared error of column c under step s and zero point z. */
static double column_loss(const float *x, int64_t rows, int64_t cols, int64_t c, float s,
                          float z, int bits)
{
    float maxq = (float)((1u << bits) - 1u);
    double sum = 0.0;
    for (int64_t r = 0; r < rows; r++) {
        double e = (double)qdq(x[r * cols + c], s, z, maxq) - x[r * cols + c];
        sum += e * e;
    }
    return sum;
}

/*
 * FQ-ViT's power-of-two factor: the tensor's min-max step s8 covers the
 * widest channel with alpha = 3; channel c uses s8 / 2^(3 - alpha_c), the
 * alpha with the lowest squared error on that column (ties: larger alpha).
 * Fits each column's step and zero point (and alpha, when not NULL).
 */
static void ptf_fit(const float *x, int64_t rows, int64_t cols, int bits, float *sc, float *zc,
                    int *alpha)
{
    float lo, hi, s8, z8;
    min_max(x, (size_t)(rows * cols), &lo, &hi);
    params_for_range(lo, hi, bits, 0, 0, &s8, &z8);
    float maxq = (float)((1u << bits) - 1u);
    for (int64_t c = 0; c < cols; c++) {
        int best_a = 3;
        float best_s = s8, best_z = z8;
        double best = column_loss(x, rows, cols, c, s8, z8, bits);
        for (int a = 2; a >= 0; a--) {
            float s = ldexpf(s8, a - 3);
            float z = fminf(fmaxf(nearbyintf(-lo / s), 0.0f), maxq);
            double loss = column_loss(x, rows, cols, c, s, z, bits);
            if (loss < best)
                best = loss, best_a = a, best_s = s, best_z = z;
        }
        sc[c] = best_s, zc[c] = best_z;
        if (alpha)
            alpha[c] = best_a;
    }
}

void bp_ptf_quant(const float *x, float *out, int64_t rows, int64_t cols, int bits,
                  int *alpha)
{
    float *sc = malloc((size_t)cols * 2 * sizeof *sc);
    if (!sc) {                       /* out of memory: no factors, one per-tensor grid */
        float s, z;
        bp_qparams_fit(x, (size_t)(rows * cols), bits, 0, BP_RANGE_MINMAX, 2.0, &s, &z);
        bp_fake_quant(x, out, (size_t)(rows * cols), s, z, bits);
        for (int64_t c = 0; alpha && c < cols; c++)
            alpha[c] = 3;
        return;
    }
    float *zc = sc + cols, maxq = (float)((1u << bits) - 1u);
    ptf_fit(x, rows, cols, bits, sc, zc, alpha);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            out[r * cols + c] = qdq(x[r * cols + c], sc[c], zc[c], maxq);
    free(sc);
}

int64_t bp_act_grid(const float *x, int64_t rows, int64_t cols, const bp_qspec *spec,
                    float *scale, float *zero)
{
    if (spec->bits >= BP_BITS_FLOAT)
        return 0;
    if (spec->kind == BP_AQ_LOG2) {
        float m = 0.0f;
        for (int64_t i = 0; i < rows * cols; i++)
            m = fmaxf(m, x[i]);
        scale[0] = m, zero[0] = 0.0f;
        return 1;
    }
    if (spec->kind == BP_AQ_PTF) {
        ptf_fit(x, rows, cols, spec->bits, scale, zero, NULL);
        return cols;
    }
    if (spec->granularity != BP_GRAN_TENSOR)
        return 0;
    bp_qspec_fit(spec, x, (size_t)(rows * cols), &scale[0], &zero[0]);
    return 1;
}

int bp_quantize_matrix(const float *x, float *out, int64_t rows, int64_t cols,
                       const bp_qspec *spec, bp_error *err)
{
    return bp_quantize_matrix_grid(x, out, rows, cols, spec, NULL, NULL, err);
}

int bp_quantize_matrix_grid(const float *x, float *out, int64_t rows, int64_t cols,
                            const bp_qspec *spec, float *es, float *ez, bp_error *err)
{
    if (spec->bits >= BP_BITS_FLOAT) {
        for (int64_t i = 0; i < rows * cols; i++)
            out[i] = x[i];
        return 0;
    }
    if (spec->bits < 1 || spec->bits > 15)
        return bp_fail(err, "unsupported bit width %d (expected 2..16)", spec->bits);
    if (spec->kind == BP_AQ_LOG2) {
        float m = 0.0f;
        for (int64_t i = 0; i < rows * cols; i++)
            m = fmaxf(m, x[i]);
        if (m > 0.0f)
            bp_log2_quant(x, out, (size_t)(rows * cols), m, spec->bits);
        else
            for (int64_t i = 0; i < rows * cols; i++)
                out[i] = 0.0f;
        return 0;
    }
    if (spec->kind == BP_AQ_PTF) {
        bp_ptf_quant(x, out, rows, cols, spec->bits, NULL);
        return 0;
    }
    switch (spec->granularity) {
    case BP_GRAN_TENSOR:
        quantize_block(x, out, (size_t)(rows * cols), spec, es, ez);
        return 0;
    case BP_GRAN_CHANNEL:
    case BP_GRAN_TOKEN:
        for (int64_t r = 0; r < rows; r++)
            quantize_block(x + r * cols, out + r * cols, (size_t)cols, spec,
                           es ? es + r * cols : NULL, ez ? ez + r * cols : NULL);
        return 0;
    case BP_GRAN_GROUP: {
        int64_t g = spec->group_size;
        if (g <= 0)
            return bp_fail(err, "group size must be positive, got %lld", (long long)g);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c += g) {
                int64_t w = cols - c < g ? cols - c : g;
                int64_t at = r * cols + c;
                quantize_block(x + at, out + at, (size_t)w, spec, es ? es + at : NULL,
                               ez ? ez + at : NULL);
            }
        return 0;
    }
    }
    return bp_fail(err, "unknown granularity");
}

/*
 * bits = rows*cols*b + (number of scale groups) * (16 or 32 + [asymmetric] * b)
 */
int64_t bp_weight_storage_bits(int64_t rows, int64_t cols, const bp_qspec *spec)
{
    int64_t params = rows * cols;
    if (spec->bits >= BP_BITS_FLOAT)
        return params * BP_BITS_FLOAT;
    int64_t per_scale = (spec->fp16_scales ? 16 : 32) + (spec->symmetric ? 0 : spec->bits);
    int64_t scales;
    switch (spec->granularity) {
    case BP_GRAN_TENSOR: scales = 1; break;
    case BP_GRAN_GROUP:
        scales = rows * ((cols + spec->group_size - 1) / spec->group_size);
        break;
    default: scales = rows; break;
    }
    return params * spec->bits + scales * per_scale;
}
