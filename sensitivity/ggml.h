/*
 * ggml.h - llama.cpp's weight types as bitplan candidates: each type's
 * reference quantizer, written here from ggml's published algorithms so
 * that a row quantized here is the row llama-quantize writes (the same
 * bytes), with and without an importance matrix, and its dequantizer.
 *
 * Types: q4_0, q4_1, q5_0, q5_1, q8_0 (blocks of 32), q2_K, q3_K, q4_K,
 * q5_K, q6_K (super-blocks of 256), iq4_nl (32), iq4_xs (256), and the
 * float types f32, f16, bf16 (a tensor left unquantized).  The importance
 * weights qw of a row are llama.cpp's: per column, the mean squared input
 * (imatrix in_sum2 / counts); with qw the quantizers minimise
 * sum_j qw_j * (x_j - xhat_j)^2 (times a per-element term some types add),
 * without it an error weighted by the values themselves.
 *
 * Which algorithm a type runs (ggml_quantize_chunk):
 *   q4_0 q5_0      amax / -8 (-16) per block, codes by truncation of x/d + 8.5
 *                  (with qw: make_qx_quants, 19 scales tried, least squares)
 *   q4_1 q5_1      min-max per block (with qw: make_qkx3_quants)
 *   q8_0           amax / 127, roundf (qw ignored)
 *   q2_K           per 16: make_qkx2_quants (|x| weights), 4-bit scales and
 *                  mins (with qw: make_qkx3_quants, scales by make_qp_quants)
 *   q3_K           per 16: make_q3_quants, 6-bit signed scales (with qw:
 *                  make_qx_quants for values and scales)
 *   q4_K q5_K      per 32: make_qkx2_quants (av_x + |x| weights), 6-bit scales
 *                  and mins (with qw: make_qkx3_quants and make_qp_quants)
 *   q6_K           per 16: make_qx_quants, 8-bit scales
 *   iq4_nl iq4_xs  the non-linear 16-value grid, 15 scales tried per 32
 *                  (iq4_xs: 6-bit scales per 32 under an fp16 one)
 * Compiled without floating-point contraction, as ggml's reference C is.
 */
#ifndef BP_SENS_GGML_H
#define BP_SENS_GGML_H

#include <stdint.h>

#include "../common/bp_ggml.h"

/* Does bitplan quantize to this type? */
int bp_ggml_can_quantize(int type);

/*
 * Quantize one row x of n elements (n a multiple of the type's block) into
 * dst, bp_ggml_row_bytes(type, n) bytes laid out as ggml's blocks; qw (n
 * floats) the row's importance weights or NULL.  Returns the bytes written,
 * 0 for a type it does not quantize or a bad n.
 */
uint64_t bp_ggml_quantize_row(int type, const float *x, int64_t n, const float *qw, void *dst);

/* The row back as floats (y: n floats); -1 for a type it does not know. */
int bp_ggml_dequantize_row(int type, const void *src, int64_t n, float *y);

#endif
