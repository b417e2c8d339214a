/*
 * squant.h - SQuant (Guo et al., ICLR 2022): data-free quantization by
 * flipping roundings so that the element, kernel-sum and row-sum errors of
 * the diagonal-Hessian objective stay small (ALGORITHMS.md section 3).
 *
 * Per output row an asymmetric min-max grid: s = (2^b - 1) / (max - min),
 * z = rne(s min) + 2^(b-1), real codes x = s w - z, codes r = rne(x),
 * errors e = r - x.  Then
 *   K (conv kernels of more than one element): per kernel, flip the
 *     rne(|sum e|) largest-|e| eligible elements toward a zero sum, and
 *     mark one candidate (the last flip to undo on overshoot, else the next
 *     element to flip);
 *   C (every row): flip rne(|row sum|) candidates toward a zero row sum,
 *     highest priority first (linear layers: all elements of the row).
 * Afterwards |row sum| <= 0.5, every |kernel sum| < 1, every |e| < 1.
 */
#ifndef BP_SQUANT_H
#define BP_SQUANT_H

#include <stdint.h>

#include "../common/bp_error.h"

enum {
    BP_SQ_K = 1,              /* kernel stage */
    BP_SQ_C = 2               /* row ("channel") stage */
};

/* "e", "ek", "ec" or "ekc" -> mask; -1 when unknown. */
int bp_squant_mode_parse(const char *s);
const char *bp_squant_mode_name(int mode);

/*
 * W: rows x cols, each row made of kernels of `ksize` consecutive elements
 * (ksize 1 for linear layers; cols % ksize == 0).  Writes the dequantized
 * weights to out; codes (rows x cols, may be NULL) receive the integer codes
 * in [-2^(b-1), 2^(b-1) - 1], with out = (code + z) / s per row.  With
 * fp16, the step 1 / s is rounded up to the next fp16 value (as stored) and
 * z follows it.
 */
int bp_squant_quantize(const float *W, int64_t rows, int64_t cols, int64_t ksize, int bits,
                       int mode, int fp16, float *out, int32_t *codes, bp_error *err);

/* One row's grid (s, z above) for n weights; 0 when the row is constant
 * (kept exactly, no grid). */
int bp_squant_row_grid(const float *W, int64_t n, int bits, int fp16, double *s, double *z);

#endif
