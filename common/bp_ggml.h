/*
 * bp_ggml.h - the facts of ggml's tensor types that every stage shares: the
 * type numbers of ggml.h, their names as ggml spells them, elements and
 * bytes per block (ggml.c's type traits), and the half-precision
 * conversions ggml stores scales in (IEEE binary16 and bfloat16, rounded to
 * nearest even, as GGML_FP32_TO_FP16 does).
 */
#ifndef BP_GGML_H
#define BP_GGML_H

#include <stddef.h>
#include <stdint.h>

/* ggml tensor types by their numbers in ggml.h (gaps are removed types). */
enum {
    BP_GGML_F32 = 0, BP_GGML_F16 = 1, BP_GGML_Q4_0 = 2, BP_GGML_Q4_1 = 3, BP_GGML_Q5_0 = 6,
    BP_GGML_Q5_1 = 7, BP_GGML_Q8_0 = 8, BP_GGML_Q8_1 = 9, BP_GGML_Q2_K = 10,
    BP_GGML_Q3_K = 11, BP_GGML_Q4_K = 12, BP_GGML_Q5_K = 13, BP_GGML_Q6_K = 14,
    BP_GGML_Q8_K = 15, BP_GGML_IQ4_NL = 20, BP_GGML_IQ4_XS = 23, BP_GGML_I8 = 24,
    BP_GGML_I16 = 25, BP_GGML_I32 = 26, BP_GGML_I64 = 27, BP_GGML_F64 = 28,
    BP_GGML_BF16 = 30, BP_GGML_TYPES = 40
};

/* A type's name ("q4_K"), or NULL for a number that is no type. */
const char *bp_ggml_type_name(int type);
/* Elements and bytes per block; -1 (and zeros) for no type. */
int bp_ggml_block(int type, int64_t *elems, size_t *bytes);
/* The type named s (as ggml spells it, any case), or -1. */
int bp_ggml_type_parse(const char *s);
/* Bytes of a row of n elements (n a multiple of the block; 0 otherwise). */
uint64_t bp_ggml_row_bytes(int type, int64_t n);
/* A block-quantized type (not F32/F16/BF16/F64 or an integer type)? */
int bp_ggml_is_quantized(int type);

/* Half precision: binary16 and bfloat16 to float exactly; float to
 * binary16 rounded to nearest even (overflow to infinity, NaN kept). */
float bp_f16_to_f32(uint16_t h);
float bp_bf16_to_f32(uint16_t h);
uint16_t bp_f32_to_f16(float f);

#endif
