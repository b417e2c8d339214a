/*
 * ggml_golden.h - the inputs of the ggml conformance vectors: rows made from
 * integers alone (no libm, so every platform makes the same floats), shared
 * by tests/test_ggml.c and bench/llamacpp/quants.c, which prints the
 * SHA-256 of the bytes llama.cpp's own quantizers write for them.
 */
#ifndef BP_GGML_GOLDEN_H
#define BP_GGML_GOLDEN_H

#include <stdint.h>

#define GOLDEN_ROWS 8
#define GOLDEN_COLS 512

/* Row r of the matrix: Gaussian-like (a sum of 4 uniforms), cubed in rows
 * 2-3 (heavy tails), one loud column in 97 in rows 4-5, whole blocks of 32
 * zero in row 6, and 1e-3 scale in row 7; qw (cols) positive, spread over
 * ~4 orders of magnitude. */
static inline void golden_fill(float *x, float *qw)
{
    uint32_t s = 12345u;
    for (int r = 0; r < GOLDEN_ROWS; r++)
        for (int c = 0; c < GOLDEN_COLS; c++) {
            int32_t acc = 0;
            for (int k = 0; k < 4; k++) {
                s = s * 1664525u + 1013904223u;
                acc += (int32_t)(s >> 16) - 32768;
            }
            float v = (float)acc / 37837.0f;             /* ~ unit variance */
            if (r == 2 || r == 3)
                v = v * v * v;
            if ((r == 4 || r == 5) && c % 97 == 3)
                v *= 40.0f;
            if (r == 6 && (c / 32) % 3 == 1)
                v = 0.0f;
            if (r == 7)
                v *= 1e-3f;
            x[r * GOLDEN_COLS + c] = v;
        }
    for (int c = 0; c < GOLDEN_COLS; c++) {
        s = s * 1664525u + 1013904223u;
        int e = (int)(s >> 28);                         /* 0..15 */
        qw[c] = (float)(1 + (s >> 20 & 255)) * (float)(1u << e) / 4096.0f;
    }
}

#endif
