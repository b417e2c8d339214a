/*
 * bp_ggml.c - ggml's type traits and half-precision conversions (bp_ggml.h).
 */
#include "bp_ggml.h"

#include <math.h>
#include <string.h>
#include <strings.h>

static const struct {
    const char *name;
    int64_t blck;
    size_t bytes;
} ggml_types[BP_GGML_TYPES] = {
    [0] = {"f32", 1, 4},        [1] = {"f16", 1, 2},        [2] = {"q4_0", 32, 18},
    [3] = {"q4_1", 32, 20},     [6] = {"q5_0", 32, 22},     [7] = {"q5_1", 32, 24},
    [8] = {"q8_0", 32, 34},     [9] = {"q8_1", 32, 36},     [10] = {"q2_K", 256, 84},
    [11] = {"q3_K", 256, 110},  [12] = {"q4_K", 256, 144},  [13] = {"q5_K", 256, 176},
    [14] = {"q6_K", 256, 210},  [15] = {"q8_K", 256, 292},  [16] = {"iq2_xxs", 256, 66},
    [17] = {"iq2_xs", 256, 74}, [18] = {"iq3_xxs", 256, 98}, [19] = {"iq1_s", 256, 50},
    [20] = {"iq4_nl", 32, 18},  [21] = {"iq3_s", 256, 110}, [22] = {"iq2_s", 256, 82},
    [23] = {"iq4_xs", 256, 136}, [24] = {"i8", 1, 1},       [25] = {"i16", 1, 2},
    [26] = {"i32", 1, 4},       [27] = {"i64", 1, 8},       [28] = {"f64", 1, 8},
    [29] = {"iq1_m", 256, 56},  [30] = {"bf16", 1, 2},      [34] = {"tq1_0", 256, 54},
    [35] = {"tq2_0", 256, 66},  [39] = {"mxfp4", 32, 17},
};

const char *bp_ggml_type_name(int type)
{
    return type >= 0 && type < BP_GGML_TYPES ? ggml_types[type].name : NULL;
}

int bp_ggml_block(int type, int64_t *elems, size_t *bytes)
{
    if (!bp_ggml_type_name(type))
        return *elems = 0, *bytes = 0, -1;
    *elems = ggml_types[type].blck;
    *bytes = ggml_types[type].bytes;
    return 0;
}

int bp_ggml_type_parse(const char *s)
{
    for (int t = 0; t < BP_GGML_TYPES; t++)
        if (ggml_types[t].name && strcasecmp(ggml_types[t].name, s) == 0)
            return t;
    return -1;
}

uint64_t bp_ggml_row_bytes(int type, int64_t n)
{
    int64_t blck;
    size_t bytes;
    if (bp_ggml_block(type, &blck, &bytes) < 0 || n < 0 || n % blck)
        return 0;
    return (uint64_t)(n / blck) * bytes;
}

int bp_ggml_is_quantized(int type)
{
    return bp_ggml_type_name(type) && ggml_types[type].blck > 1;
}

/* ---- half precision ------------------------------------------------------ */

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float bp_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = h >> 10 & 31, man = h & 1023;
    if (exp == 31)
        return bits_f32(sign | 0x7f800000u | man << 13);
    if (exp == 0) {
        float v = ldexpf((float)man, -24);
        return sign ? -v : v;
    }
    return bits_f32(sign | (exp + 112) << 23 | man << 13);
}

float bp_bf16_to_f32(uint16_t h)
{
    return bits_f32((uint32_t)h << 16);
}

uint16_t bp_f32_to_f16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    uint16_t sign = (uint16_t)(u >> 16 & 0x8000);
    uint32_t exp = u >> 23 & 255, man = u & 0x7fffff;
    if (exp == 255)
        return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31)
        return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {                       /* subnormal or zero */
        if (e < -10)
            return sign;
        man |= 0x800000;
        int shift = 14 - e;
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t half = (uint32_t)e << 10 | man >> 13, rem = man & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (half & 1)))
        half++;                         /* may carry into the exponent: correct */
    return (uint16_t)(sign | half);
}
