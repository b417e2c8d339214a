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

#include <stdint.h>
#include <stdio.h>

#include "../../common/bp_error.h"
#include "safetensors.h"

/* A file being built: its entries and metadata, and the memory they point
 * at (owned here until bp_qfile_free).  Zero-initialise. */
typedef struct bp_qfile {
    bp_st_entry *e;
    size_t n, cap;
    bp_st_meta *meta;
    size_t n_meta, cap_meta;
    void **owned;
    size_t n_owned, cap_owned;
} bp_qfile;

void bp_qfile_free(bp_qfile *f);
/* Keep p until the file is freed; returns p (NULL when p is NULL or on out
 * of memory, p freed). */
void *bp_qfile_own(bp_qfile *f, void *p);
/* The tensor NAME SUFFIX: rank 1 ([r0]) or 2 ([r0, r1]) of dtype dt. */
int bp_qfile_add(bp_qfile *f, const char *name, const char *suffix, bp_dtype dt, int64_t r0,
                 int64_t r1, int rank, void *data, size_t nbytes, bp_error *err);
/* Metadata LAYER.KEY = value. */
int bp_qfile_meta(bp_qfile *f, const char *layer, const char *key, const char *value,
                  bp_error *err);

/* The grid a layer's codes are on. */
typedef struct bp_qgrid {
    int bits;                 /* 2..15 */
    int per_tensor;           /* one step for the whole matrix */
    int64_t group_size;       /* columns per scale group; 0: one per row */
    int fp16_scales;          /* NAME.scales as F16 (else F32) */
    const char *granularity;  /* its name, for messages */
} bp_qgrid;

/* A layer quantized on a grid: its dequantized weights What (out x in,
 * replaced by the exact values the codes give), each row's step and zero
 * point per scale group as the quantizer reports them (S, Z: out x G, G =
 * ceil(in / group_size) per group, else 1; per tensor the same in every
 * row) and each column's scale group per conv group (g_idx, groups x in). */
typedef struct bp_qlayer {
    const char *name;
    int64_t out, in;
    int groups;
    float *What;
    const float *S, *Z;
    const int32_t *g_idx;
} bp_qlayer;

/* NAME.qweight, NAME.scales, NAME.zeros, NAME.g_idx (when the groups are
 * not column / group_size) and, with dequantized, NAME.weight; an element
 * off its grid, a per-tensor grid that differs between rows, a zero point
 * that is not an integer or a step that is not an fp16 value (with fp16
 * scales) is an error. */
int bp_qfile_add_codes(bp_qfile *f, const bp_qlayer *l, const bp_qgrid *g, int dequantized,
                       bp_error *err);
/* Write the file atomically (metadata format = bitplan-quantized/2). */
int bp_qfile_write(bp_qfile *f, const char *path, bp_error *err);

/* Read a file in this layout back and check it: codes within [0, 2^b - 1],
 * shapes consistent, and (when NAME.weight is present) the dequantized
 * weights equal scales * (codes - zeros).  One line per layer to out. */
int bp_check_quantized(const char *path, FILE *out, bp_error *err);

#endif
