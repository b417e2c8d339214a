/*
 * npy.h - a validating reader of NumPy .npy files (format versions 1-3).
 *
 * Supported: little-endian float32 ('<f4') and float16 ('<f2'), C order
 * (fortran_order False).  The header dict, the shape and the data size are
 * all checked against the file size before any data is touched.
 */
#ifndef BP_NPY_H
#define BP_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "../../common/bp_error.h"
#include "safetensors.h"

typedef struct bp_npy {
    char *path;
    const unsigned char *map;
    size_t size;
    size_t data_start;
    bp_dtype dtype;           /* BP_DT_F32 or BP_DT_F16 */
    int rank;
    int64_t shape[BP_MAX_RANK];
} bp_npy;

int bp_npy_open(bp_npy *npy, const char *path, bp_error *err);
int bp_npy_parse(bp_npy *npy, const unsigned char *buf, size_t size,
                 const char *label, bp_error *err);
void bp_npy_close(bp_npy *npy);
int64_t bp_npy_numel(const bp_npy *npy);

/* Convert to float32 (bp_npy_numel floats); NaN/Inf are errors. */
int bp_npy_read_f32(const bp_npy *npy, float *out, bp_error *err);

#endif
