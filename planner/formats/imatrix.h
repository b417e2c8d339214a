/*
 * imatrix.h - llama.cpp's importance matrices (llama-imatrix), read and
 * validated, as per-column statistics of each matrix's inputs.
 *
 * Two formats:
 *   GGUF (general.type = "imatrix"): per weight W (named as in the model,
 *     "blk.0.attn_q.weight"), W.in_sum2 F32 ne = [in, n_mat] (sums of the
 *     squared inputs of each column, per expert matrix), W.counts F32
 *     ne = [1, n_mat] (rows summed), optionally W.in_sum (sums of the
 *     inputs); keys imatrix.chunk_count, imatrix.chunk_size, imatrix.datasets.
 *   legacy .dat: i32 entries; per entry i32 name length, the name, i32
 *     ncall, i32 nval, nval f32 (mean squared input x ncall); then
 *     optionally i32 chunks and a length-prefixed dataset name.
 * Either way column j of matrix m has mean squared input
 *     d_j = sum2[m][j] / count[m],
 * the weight llama.cpp's quantizers give column j's error: the error they
 * minimise is sum_j d_j |dW_:,j|^2.
 */
#ifndef BP_IMATRIX_H
#define BP_IMATRIX_H

#include <stddef.h>
#include <stdint.h>

#include "../../common/bp_error.h"

typedef struct bp_imatrix_entry {
    char *name;               /* the weight tensor's name */
    int64_t n_mat, in;        /* sum2 is n_mat x in */
    double *sum2;             /* sums of squares per column */
    double *sum;              /* sums per column, or NULL */
    double *count;            /* n_mat rows summed (legacy: ncall) */
} bp_imatrix_entry;

typedef struct bp_imatrix {
    char *path;
    int legacy;               /* 1: the .dat format */
    bp_imatrix_entry *e;      /* sorted by name */
    size_t n;
    int64_t chunks, chunk_size; /* -1 when the file does not say */
    char *dataset;            /* the (last) calibration text named, or NULL */
} bp_imatrix;

/* 1 when path is an imatrix (a GGUF with general.type "imatrix" or tensors
 * named *.in_sum2, or a legacy .dat by its structure); errors opening the
 * file are left to bp_imatrix_open. */
int bp_imatrix_detect(const char *path);
int bp_imatrix_open(bp_imatrix *im, const char *path, bp_error *err);
/* Parse an in-memory legacy .dat (the fuzz and test entry point). */
int bp_imatrix_parse_dat(bp_imatrix *im, const unsigned char *buf, size_t size,
                         const char *label, bp_error *err);
void bp_imatrix_close(bp_imatrix *im);
const bp_imatrix_entry *bp_imatrix_find(const bp_imatrix *im, const char *name);

#endif
