/*
 * qweights.h - the quantized weights of a plan, as one safetensors file.
 *
 * Layout ("format": "bitplan-quantized/2" in the metadata), per layer NAME
 * quantized at b < 16 bits:
 *   NAME.qweight  U8 (b <= 8) or U16, [out, in]: codes in [0, 2^b - 1]
 *                 (conv kernels flattened in (channel, row, column) order)
 *   NAME.scales   F16 [out, G] (weights.scales: fp32: F32): grid step per
 *                 output row and scale group (G = 1 per channel,
 *                 ceil(in / group_size) per group; a per-tensor grid is
 *                 [1, 1]), as the sizes count it
 *   NAME.zeros    U8 (b <= 8) or U16 [out, G]: zero point in code units
 *                 (I32 when one lies off the codes, as ERQ's grid allows)
 * Format 1 (earlier) had F32 scales and zeros; the checker reads both.
 *   NAME.bias     F32 [out], when the layer has one (ERQ's updated bias)
 *   NAME.weight   F32 [out, in] dequantized, only with output.dequantized
 * so that weight[r, j] = scales[r, g(j)] * (qweight[r, j] - zeros[r, g(j)]).
 * A layer kept at 16 bits has NAME.weight (F32, the original) only.
 * Metadata per layer: NAME.wbits, NAME.abits, NAME.quantizer,
 * NAME.granularity, NAME.group_size, NAME.shape (the original weight shape).
 * Layers with abits < 16 also carry the activation grid the plan measured
 * (fitted on the calibration inputs as the sensitivity stage did):
 *   NAME.act_scale, NAME.act_zero  F32 [1], or [in * groups] for ptf (one
 *                 per input column); log2 keeps its maximum m in act_scale
 *   metadata NAME.act_quantizer (uniform | log2 | ptf), NAME.act_granularity
 *                 (per_tensor | per_token: fitted per row at run time, no
 *                 tensors), NAME.act_symmetric, NAME.act_range
 * so that x_hat = s * (clamp(rne(x / s) + z, 0, 2^a - 1) - z) per
 * element (column c uses s[c], z[c] for ptf), computed in float32.
 */
#ifndef BP_QWEIGHTS_H
#define BP_QWEIGHTS_H

#include <stdio.h>

#include "../../common/bp_error.h"
#include "../config.h"
#include "../pipeline.h"
#include "plan.h"

/* Quantize every layer of the plan again with its chosen candidate and
 * write the file atomically; progress (may be NULL) is called per layer. */
int bp_write_quantized(const bp_config *cfg, const bp_plan *plan, const char *path,
                       int dequantized, bp_progress_fn progress, void *ctx, bp_error *err);

/* Read a file in this layout back and check it: codes within [0, 2^b - 1],
 * shapes consistent, and (when NAME.weight is present) the dequantized
 * weights equal scales * (codes - zeros).  One line per layer to out. */
int bp_check_quantized(const char *path, FILE *out, bp_error *err);

#endif
