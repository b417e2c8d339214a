/*
 * quant.c - scale / zero-point fitting and quantize-dequantize over flat
 * arrays (see quant.h for the grid and the range searches).
 */
#include "quant.h"

#include <float.h>
#include <math.h>
#include <stdlib.h>

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
    return r == BP_RANGE_MSE ? "mse" : "minmax";
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

/* Step and zero point for the range [lo, hi] (lo <= 0 <= hi). */
static void params_for_range(float lo, float hi, int bits, int symmetric,
                             float *scale, float *zero)
{
    float levels = (float)((1u << bits) - 1u);
    if (symmetric) {
        float m = fmaxf(-lo, hi);
        if (m <= 0.0f)
            m = 1.0f;
        *scale = 2.0f * m / levels;
        *zero = (float)(1u << (bits - 1));
        return;
    }
    if (hi - lo <= 0.0f) {        /* all zeros: any step represents them */
        *scale = 1.0f;
        *zero = 0.0f;
        return;
    }
    *scale = (hi - lo) / levels;
    float z = nearbyintf(-lo / *scale);
    *zero = fminf(fmaxf(z, 0.0f), levels);
}

/*
 * Q(x) = s * (clamp(rne(x / s) + z, 0, 2^b - 1) - z)
 */
static inline float qdq(float x, float inv, float s, float z, float maxq)
{
    float q = nearbyintf(x * inv) + z;
    q = fminf(fmaxf(q, 0.0f), maxq);
    return s * (q - z);
}

void bp_fake_quant(const float *x, float *out, size_t n, float scale,
                   float zero, int bits)
{
    float maxq = (float)((1u << bits) - 1u), inv = 1.0f / scale;
    for (size_t i = 0; i < n; i++)
        out[i] = qdq(x[i], inv, scale, zero, maxq);
}

double bp_quant_loss(const float *x, size_t n, float scale, float zero,
                     int bits, double norm)
{
    float maxq = (float)((1u << bits) - 1u), inv = 1.0f / scale;
    double sum = 0.0;
    if (norm == 2.0) {
        for (size_t i = 0; i < n; i++) {
            double e = (double)qdq(x[i], inv, scale, zero, maxq) - x[i];
            sum += e * e;
        }
    } else {
        for (size_t i = 0; i < n; i++)
            sum += pow(fabs((double)qdq(x[i], inv, scale, zero, maxq) - x[i]), norm);
    }
    return sum;
}

void bp_qparams_fit(const float *x, size_t n, int bits, int symmetric,
                    bp_range range, double norm, float *scale, float *zero)
{
    float lo, hi;
    min_max(x, n, &lo, &hi);
    params_for_range(lo, hi, bits, symmetric, scale, zero);
    if (range != BP_RANGE_MSE || hi - lo <= 0.0f)
        return;
    /* Shrink the range by p = 1.00, 0.99, ..., 0.20; keep strict gains. */
    double best = bp_quant_loss(x, n, *scale, *zero, bits, norm);
    for (int i = 1; i <= 80; i++) {
        float p = 1.0f - 0.01f * (float)i, s, z;
        params_for_range(p * lo, p * hi, bits, symmetric, &s, &z);
        double loss = bp_quant_loss(x, n, s, z, bits, norm);
        if (loss < best) {
            best = loss;
            *scale = s;
            *zero = z;
        }
    }
}

/* Quantize one contiguous block with its own fitted parameters. */
static void quantize_block(const float *x, float *out, size_t n, const bp_qspec *q)
{
    float s, z;
    bp_qparams_fit(x, n, q->bits, q->symmetric, q->range, q->mse_norm, &s, &z);
    bp_fake_quant(x, out, n, s, z, q->bits);
}

int bp_quantize_matrix(const float *x, float *out, int64_t rows, int64_t cols,
                       const bp_qspec *spec, bp_error *err)
{
    if (spec->bits >= BP_BITS_FLOAT) {
        for (int64_t i = 0; i < rows * cols; i++)
            out[i] = x[i];
        return 0;
    }
    if (spec->bits < 1 || spec->bits > 15)
        return bp_fail(err, "unsupported bit width %d (expected 2..16)", spec->bits);
    switch (spec->granularity) {
    case BP_GRAN_TENSOR:
        quantize_block(x, out, (size_t)(rows * cols), spec);
        return 0;
    case BP_GRAN_CHANNEL:
    case BP_GRAN_TOKEN:
        for (int64_t r = 0; r < rows; r++)
            quantize_block(x + r * cols, out + r * cols, (size_t)cols, spec);
        return 0;
    case BP_GRAN_GROUP: {
        int64_t g = spec->group_size;
        if (g <= 0)
            return bp_fail(err, "group size must be positive, got %lld", (long long)g);
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < cols; c += g) {
                int64_t w = cols - c < g ? cols - c : g;
                quantize_block(x + r * cols + c, out + r * cols + c, (size_t)w, spec);
            }
        return 0;
    }
    }
    return bp_fail(err, "unknown granularity");
}

/*
 * bits = rows*cols*b + (number of scale groups) * (16 + [asymmetric] * b)
 */
int64_t bp_weight_storage_bits(int64_t rows, int64_t cols, const bp_qspec *spec)
{
    int64_t params = rows * cols;
    if (spec->bits >= BP_BITS_FLOAT)
        return params * BP_BITS_FLOAT;
    int64_t per_scale = BP_SCALE_BITS + (spec->symmetric ? 0 : spec->bits);
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
