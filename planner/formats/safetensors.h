/*
 * safetensors.h - a validating, mmap-based reader of the safetensors format.
 *
 * File layout: 8-byte little-endian header length n, n bytes of UTF-8 JSON
 * header, then the data buffer.  The header maps tensor names to
 * {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
 * data buffer) plus an optional "__metadata__" object of string -> string.
 *
 * bp_st_open validates everything before returning: header length within the
 * file, well-formed JSON, known dtypes, shape products without overflow,
 * shape x dtype size == end - begin, offsets inside the data buffer, no two
 * tensors overlapping, no duplicate names.  Tensors are listed in ascending
 * data offset (file order), which is the order models are written in.
 */
#ifndef BP_SAFETENSORS_H
#define BP_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "../../common/bp_error.h"
#include "../../common/bp_ggml.h"

#define BP_MAX_RANK 8

typedef enum bp_dtype {
    BP_DT_BOOL, BP_DT_U8, BP_DT_I8, BP_DT_F8_E5M2, BP_DT_F8_E4M3,
    BP_DT_I16, BP_DT_U16, BP_DT_F16, BP_DT_BF16,
    BP_DT_I32, BP_DT_U32, BP_DT_F32,
    BP_DT_I64, BP_DT_U64, BP_DT_F64,
    BP_DT_COUNT
} bp_dtype;

typedef struct bp_st_tensor {
    char *name;
    bp_dtype dtype;
    int rank;
    int64_t shape[BP_MAX_RANK];
    uint64_t begin, end;      /* byte offsets relative to the data buffer */
} bp_st_tensor;

typedef struct bp_st_meta {
    char *key;
    char *value;
} bp_st_meta;

typedef struct bp_safetensors {
    char *path;
    const unsigned char *map; /* whole file, read-only mapping */
    size_t size;              /* file size in bytes */
    size_t data_start;        /* 8 + header length */
    bp_st_tensor *tensors;    /* sorted by begin offset */
    size_t n_tensors;
    bp_st_meta *meta;
    size_t n_meta;
} bp_safetensors;

const char *bp_dtype_name(bp_dtype dt);
size_t bp_dtype_size(bp_dtype dt);

/* Open and validate; on failure st is left empty and err names the file. */
int bp_st_open(bp_safetensors *st, const char *path, bp_error *err);

/* Parse and validate an in-memory buffer (the mapping is not owned).
 * Used by bp_st_open and by the fuzz targets. */
int bp_st_parse(bp_safetensors *st, const unsigned char *buf, size_t size,
                const char *label, bp_error *err);

void bp_st_close(bp_safetensors *st);

const bp_st_tensor *bp_st_find(const bp_safetensors *st, const char *name);
const char *bp_st_meta_get(const bp_safetensors *st, const char *key);
int64_t bp_st_numel(const bp_st_tensor *t);

/* Convert a F32/F16/BF16 tensor to float32 into out (bp_st_numel floats).
 * Other dtypes, and NaN or Inf values, are errors naming the tensor. */
int bp_st_read_f32(const bp_safetensors *st, const bp_st_tensor *t,
                   float *out, bp_error *err);
/* The same into doubles, from F64 (exactly) or any of the float types. */
int bp_st_read_f64(const bp_safetensors *st, const bp_st_tensor *t,
                   double *out, bp_error *err);

/* Convert n little-endian F32/F16/BF16 values at src to float32; other
 * dtypes and NaN/Inf are errors naming label and the tensor. */
int bp_to_f32(bp_dtype dt, const unsigned char *src, int64_t n, float *out,
              const char *label, const char *name, bp_error *err);

/* One tensor to write: data is nbytes of little-endian elements. */
typedef struct bp_st_entry {
    const char *name;
    bp_dtype dtype;
    int rank;
    int64_t shape[BP_MAX_RANK];
    const void *data;
    size_t nbytes;
} bp_st_entry;

/* Write a safetensors file atomically (temp file in the same directory,
 * fsync, rename).  Entries are written in the given order; the header is
 * padded with spaces to a multiple of 8 bytes.  meta may be NULL. */
int bp_st_write(const char *path, const bp_st_entry *entries, size_t n,
                const bp_st_meta *meta, size_t n_meta, bp_error *err);

/* Half precision (bp_f16_to_f32, bp_bf16_to_f32, bp_f32_to_f16): common/bp_ggml.h */

#endif
