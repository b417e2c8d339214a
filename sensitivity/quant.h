/*
 * quant.h - uniform quantizer primitives shared by every quantizer:
 * scale / zero-point fitting (min-max or MSE search), quantize-dequantize,
 * granularity (per-tensor, per-channel, per-group) and honest bit counts.
 *
 * Grid (ALGORITHMS.md section 1): codes q in [0, 2^b - 1],
 *   Q(x) = s * (clamp(rne(x / s) + z, 0, 2^b - 1) - z)
 * asymmetric: s = (hi - lo) / (2^b - 1), z = rne(-lo / s), range [lo, hi]
 *             widened to include 0 so that 0 is exactly representable;
 * symmetric:  s = 2 m / (2^b - 1), z = 2^(b-1), m = max |x|
 *             (the zero point sits at the grid middle, as in GPTQ).
 * MSE range search shrinks the range by p = 1.00, 0.99, ..., 0.20 and keeps
 * the p with the lowest sum |Q(x) - x|^norm (strict improvement only, so
 * ties keep the widest range).
 * Weight grids stored with fp16 scales (fp16_scales) round every candidate
 * step up to the next fp16 value (within [2^-24, 65504]) before the zero
 * point and the loss are computed, so that the grid measured is the grid
 * stored and the fitted range stays covered.
 */
#ifndef BP_QUANT_H
#define BP_QUANT_H

#include <stddef.h>
#include <stdint.h>

#include "../common/bp_error.h"

#define BP_BITS_FLOAT 16      /* "16 bits" means kept in 16-bit float */

typedef enum bp_granularity {
    BP_GRAN_TENSOR = 0,
    BP_GRAN_CHANNEL,          /* one scale per output row (weights) */
    BP_GRAN_GROUP,            /* one scale per group of input columns */
    BP_GRAN_TOKEN             /* one scale per calibration row (activations) */
} bp_granularity;

typedef enum bp_range {
    BP_RANGE_MINMAX = 0,
    BP_RANGE_MSE,
    BP_RANGE_PERCENTILE,      /* clip at the p / 1-p quantiles, best p by MSE */
    BP_RANGE_ERQ_W,           /* ERQ's weight grid: asymmetric over the (1-p, p)
                               * quantiles, p in 0.97 .. 1, zero point rne(-lo/s)
                               * (range not widened to 0), lowest mean squared
                               * error, ties to the smaller p */
    BP_RANGE_ERQ_A            /* the same for activations, p in 0.999 .. 0.99999 */
} bp_range;

/* The q-th quantile of n sorted values, linearly interpolated between order
 * statistics exactly as torch.quantile computes it in float32. */
float bp_quantile(const float *sorted, size_t n, double q);

/* What kind of grid (activations may use the non-uniform ones). */
typedef enum bp_qkind {
    BP_AQ_UNIFORM = 0,        /* the affine grid above */
    BP_AQ_LOG2,               /* x_hat = m 2^-q, q = clamp(rne(-log2(x / m)), 0, 2^b - 1) */
    BP_AQ_PTF                 /* per-tensor step s, per-column factor 2^alpha, alpha 0..3 */
} bp_qkind;

const char *bp_qkind_name(bp_qkind k);

/* How to quantize one tensor (weights or activations) at `bits`. */
typedef struct bp_qspec {
    int bits;                 /* 2..15; BP_BITS_FLOAT = unquantized */
    bp_granularity granularity;
    int64_t group_size;       /* columns per group for BP_GRAN_GROUP */
    int symmetric;
    bp_range range;
    double mse_norm;          /* exponent of the MSE search, 2.0 or 2.4 */
    bp_qkind kind;            /* uniform unless an activation asks otherwise */
    int fp16_scales;          /* steps are fp16 values (stored and counted as 16
                               * bits); 0: float32 steps, counted as 32 bits */
} bp_qspec;

const char *bp_granularity_name(bp_granularity g);
const char *bp_range_name(bp_range r);

/* Fit step and zero point for n values of x (float32 steps). */
void bp_qparams_fit(const float *x, size_t n, int bits, int symmetric,
                    bp_range range, double norm, float *scale, float *zero);

/* The same under q's bits, symmetry, range search and step precision. */
void bp_qspec_fit(const bp_qspec *q, const float *x, size_t n, float *scale, float *zero);

/* The smallest fp16 value >= s, kept within fp16's positive finite range
 * [2^-24, 65504] (a step outside it cannot be stored as fp16). */
float bp_fp16_step(float s);

/* out[i] = Q(x[i]) with the given step and zero point (out may alias x). */
void bp_fake_quant(const float *x, float *out, size_t n, float scale,
                   float zero, int bits);

/* sum |Q(x) - x|^norm for the given parameters (norm 2 has a fast path). */
double bp_quant_loss(const float *x, size_t n, float scale, float zero,
                     int bits, double norm);

/* Quantize-dequantize a rows x cols matrix with the spec's granularity
 * (per-tensor, per-row "channel"/"token", or per-group of columns); log2
 * works per tensor and PTF per tensor with a factor per column. */
int bp_quantize_matrix(const float *x, float *out, int64_t rows, int64_t cols,
                       const bp_qspec *spec, bp_error *err);

/* The same for a uniform grid, also giving each element's step and zero
 * point (es, ez: rows x cols) so that out = es * (code - ez). */
int bp_quantize_matrix_grid(const float *x, float *out, int64_t rows, int64_t cols,
                            const bp_qspec *spec, float *es, float *ez, bp_error *err);

/* log2 quantization of n values with maximum m > 0 (negative values are
 * treated as 0, which maps to the largest code). */
void bp_log2_quant(const float *x, float *out, size_t n, float m, int bits);

/* Power-of-two-factor quantization of a rows x cols matrix (columns are the
 * channels); alpha (cols entries, may be NULL) receives each factor. */
void bp_ptf_quant(const float *x, float *out, int64_t rows, int64_t cols, int bits,
                  int *alpha);

/* The static grid an activation quantizer fits on x (rows x cols) at spec,
 * as bp_quantize_matrix uses it: uniform per-tensor: one step and zero point;
 * ptf: one per column (the tensor step times its power-of-two factor); log2:
 * the maximum m in scale[0].  scale and zero hold cols entries.  Returns the
 * number of (scale, zero) pairs; 0 when the grid is fitted per row as the
 * data comes (per-token) or the width is 16. */
int64_t bp_act_grid(const float *x, int64_t rows, int64_t cols, const bp_qspec *spec,
                    float *scale, float *zero);

/* Bits to store a rows x cols weight matrix under spec, including its
 * scales (16 bits each with fp16_scales, else 32) and, for asymmetric
 * grids, b-bit zero points. */
int64_t bp_weight_storage_bits(int64_t rows, int64_t cols, const bp_qspec *spec);

#endif
