/*
 * gptq.h - GPTQ (Frantar et al., 2023): quantize a weight matrix column by
 * column, spreading each column's rounding error over the columns not yet
 * quantized through the inverse Hessian of the layer's squared output
 * error (ALGORITHMS.md section 3).
 *
 *   H = 2 X^T X / N (double); dead columns (H_jj = 0) get H_jj = 1 and a
 *   zero weight column; H += damp * mean(diag H) * I; optional act-order
 *   (columns by descending diag H); U = upper Cholesky factor of H^-1.
 *   Blocks of `block_size` columns: q = Q(w_j), err = (w_j - q) / U_jj,
 *   w_k -= err * U_jk inside the block, then one GEMM carries the block's
 *   errors to every later column.
 *
 * The Hessian and its factorisation are computed in double.  The column
 * loop and its updates run in single precision by default, as the authors'
 * code does (codes agree with the double loop but for near-ties), or in
 * double (precision BP_GPTQ_DOUBLE), where the result does not depend on
 * the block size beyond rounding in the last bits.  A factor (H's ordering
 * and U) depends only on the inputs, so one serves every weight width.
 */
#ifndef BP_GPTQ_H
#define BP_GPTQ_H

#include <stdint.h>

#include "../common/bp_error.h"
#include "quant.h"

enum { BP_GPTQ_SINGLE = 0, BP_GPTQ_DOUBLE = 1 };

typedef struct bp_gptq_opts {
    int64_t block_size;       /* columns per lazy-update block (128) */
    double damp;              /* fraction of mean(diag H) added (0.01) */
    int act_order;            /* 1: columns by descending diag H */
    int precision;            /* BP_GPTQ_SINGLE (default) or BP_GPTQ_DOUBLE */
    const float *tensor_grid; /* NULL, or {scale, zero} to use for per-tensor
                               * granularity instead of fitting one (the
                               * groups of a grouped conv share one grid) */
} bp_gptq_opts;

void bp_gptq_opts_init(bp_gptq_opts *o);

/*
 * W: rows x cols (row-major); X: n rows of ldx floats, of which columns
 * xoff .. xoff + cols - 1 are this matrix's inputs.  spec gives bits,
 * granularity (tensor, channel or group), symmetry and range setting.
 * out (rows x cols) receives the dequantized weights, on the grid.
 */
int bp_gptq_quantize(const float *W, int64_t rows, int64_t cols, const float *X, int64_t n,
                     int64_t ldx, int64_t xoff, const bp_qspec *spec,
                     const bp_gptq_opts *o, float *out, bp_error *err);

/* The same, also giving the grid: each row's step and zero point per scale
 * group (scale, zero: rows x G each, G = ceil(cols / group_size) per group,
 * else 1; a per-tensor grid is the same in every row), so that
 * out[r, j] = scale[r, g(j)] * (code - zero[r, g(j)]) with integer codes,
 * and (g_idx, cols entries, may be NULL) each column's scale group g(j):
 * groups of group_size columns in the order GPTQ quantizes them, which with
 * act-order is not the columns' own order (GPTQ checkpoints call it g_idx). */
int bp_gptq_quantize_grid(const float *W, int64_t rows, int64_t cols, const float *X,
                          int64_t n, int64_t ldx, int64_t xoff, const bp_qspec *spec,
                          const bp_gptq_opts *o, float *out, float *scale, float *zero,
                          int32_t *g_idx, bp_error *err);

/* What GPTQ keeps of the inputs: the column order (act-order), the dead
 * columns and U, the upper Cholesky factor of the damped, permuted H^-1
 * (float or double by the options' precision). */
typedef struct bp_gptq_factor {
    int64_t d;
    int single;
    int64_t *perm;            /* d: the k-th column quantized is perm[k] */
    unsigned char *dead;      /* d: input never non-zero */
    double *Ud;               /* d x d, double precision, or NULL */
    float *Uf;                /* d x d, single precision, or NULL */
} bp_gptq_factor;

/* The factor of a Hessian H (d x d, full; overwritten): GPTQ's H = 2 X^T X / n. */
int bp_gptq_factor_from_hessian(bp_gptq_factor *f, double *H, int64_t d,
                                const bp_gptq_opts *o, bp_error *err);
/* The factor of columns [xoff, xoff + d) of the n x ldx inputs X (single
 * precision: H from bp_gram_build_prec's single Gram, as the error stage
 * forms it). */
int bp_gptq_factor_build(bp_gptq_factor *f, const float *X, int64_t n, int64_t ldx,
                         int64_t xoff, int64_t d, const bp_gptq_opts *o, bp_error *err);
void bp_gptq_factor_free(bp_gptq_factor *f);

/* bp_gptq_quantize_grid with a built factor (f->d columns); o gives the
 * block size and the tensor grid. */
int bp_gptq_quantize_factored(const bp_gptq_factor *f, const float *W, int64_t rows,
                              const bp_qspec *spec, const bp_gptq_opts *o, float *out,
                              float *scale, float *zero, int32_t *g_idx, bp_error *err);

#endif
