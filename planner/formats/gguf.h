/*
 * gguf.h - a validating, mmap-based reader and an atomic writer of GGUF,
 * llama.cpp's model file (versions 2 and 3, little-endian).
 *
 * File layout: "GGUF", u32 version, u64 tensor count, u64 key count; the
 * keys (string key, u32 value type, value; an array is u32 element type,
 * u64 length, elements; strings are u64 length + bytes); the tensor infos
 * (string name, u32 n_dims <= 4, u64 ne[n_dims] with ne[0] the contiguous
 * dimension, u32 ggml type, u64 offset into the data section); padding to
 * general.alignment (u32, a power of two, default 32); the data section.
 *
 * bp_gguf_parse checks everything before returning: every length within
 * the file, known value and ggml types, no nested arrays, no duplicate
 * keys or tensor names, names under 64 bytes, ne non-negative with a
 * representable product and ne[0] a multiple of the type's block, offsets
 * aligned, each tensor's bytes inside the data section and no two
 * overlapping.  Nothing in the data section is read.
 */
#ifndef BP_GGUF_H
#define BP_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "../../common/bp_error.h"
#include "../../common/bp_ggml.h"
#include "safetensors.h"

enum {
    BP_GGUF_U8 = 0, BP_GGUF_I8, BP_GGUF_U16, BP_GGUF_I16, BP_GGUF_U32, BP_GGUF_I32,
    BP_GGUF_F32, BP_GGUF_BOOL, BP_GGUF_STRING, BP_GGUF_ARRAY, BP_GGUF_U64, BP_GGUF_I64,
    BP_GGUF_F64, BP_GGUF_TYPES
};

/* ggml's types (numbers, names, blocks): common/bp_ggml.h */

typedef struct bp_gguf_kv {
    char *key;
    int type;                 /* BP_GGUF_*; for an array, BP_GGUF_ARRAY */
    int elem;                 /* an array's element type */
    uint64_t n;               /* an array's length (1 for a scalar) */
    const unsigned char *val; /* the value's bytes in the mapping */
} bp_gguf_kv;

typedef struct bp_gguf_tensor {
    char *name;
    int n_dims;
    int64_t ne[4];            /* ne[0] contiguous; unused dims are 1 */
    int type;                 /* BP_GGML_* */
    uint64_t offset, nbytes;  /* in the data section */
} bp_gguf_tensor;

typedef struct bp_gguf {
    char *path;
    const unsigned char *map;
    size_t size;
    uint32_t version, alignment;
    size_t data_start;
    bp_gguf_kv *kv;
    size_t n_kv;
    bp_gguf_tensor *tensors;  /* in header order */
    size_t n_tensors;
} bp_gguf;

/* 1 when the buffer starts with GGUF's magic. */
int bp_gguf_is(const unsigned char *buf, size_t size);
/* 1 when path is a regular file that starts with it (errors: 0, left to
 * the reader that opens it). */
int bp_gguf_file(const char *path);
int bp_gguf_open(bp_gguf *g, const char *path, bp_error *err);
int bp_gguf_parse(bp_gguf *g, const unsigned char *buf, size_t size, const char *label,
                  bp_error *err);
void bp_gguf_close(bp_gguf *g);

const bp_gguf_kv *bp_gguf_find(const bp_gguf *g, const char *key);
/* A string value (a new NUL-terminated copy), or NULL when absent or not a string. */
char *bp_gguf_string(const bp_gguf *g, const char *key);
/* An integer scalar of any integer type; 0 when present and integer. */
int bp_gguf_int(const bp_gguf *g, const char *key, int64_t *out);
/* A value rendered for people: scalars in full, strings up to max bytes,
 * arrays as "[n <type>] first, second, ..."; returns a new string. */
char *bp_gguf_render(const bp_gguf_kv *kv, size_t max);
const char *bp_gguf_type_name(int type);
/* The bytes a key takes in a GGUF: its name, its type and its value (an
 * array's element type, length and elements). */
uint64_t bp_gguf_kv_bytes(const bp_gguf_kv *kv);

/*
 * The tensors as a safetensors view over the same mapping (rows first:
 * shape = ne reversed; F32, F16, BF16, F64 and integer tensors), scalar
 * keys as string metadata.  A quantized tensor is an error naming it and
 * saying why: bitplan plans from the float model.  st borrows g's mapping
 * (st->path stays NULL) and must be closed before g.
 */
int bp_gguf_as_safetensors(const bp_gguf *g, bp_safetensors *st, bp_error *err);

/* One key to write: scalar value (or array elements) at data; strings are
 * const char * (arrays: const char *const *). */
typedef struct bp_gguf_wkv {
    const char *key;
    int type, elem;           /* elem for arrays */
    uint64_t n;               /* array length */
    const void *data;
} bp_gguf_wkv;

typedef struct bp_gguf_wtensor {
    const char *name;
    int type, n_dims;
    int64_t ne[4];
    const void *data;         /* bp_ggml_row_bytes(type, ne[0]) * rows bytes */
} bp_gguf_wtensor;

/* Write a version-3 GGUF atomically (alignment 32, or general.alignment
 * when one of kv sets it). */
int bp_gguf_write(const char *path, const bp_gguf_wkv *kv, size_t n_kv,
                  const bp_gguf_wtensor *t, size_t n_t, bp_error *err);

#endif
