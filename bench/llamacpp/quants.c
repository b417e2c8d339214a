/*
 * quants.c - bitplan's ggml types (sensitivity/ggml.c) against ggml's own
 * quantize functions, byte for byte.
 *
 * For every type bitplan quantizes, on matrices of several kinds (Gaussian,
 * heavy-tailed, outlier columns, rows with all-zero blocks, tiny and huge
 * magnitudes, a transformer-like weight with a few loud channels), with and
 * without importance weights (positive, spread over 5 orders of magnitude,
 * as an imatrix's mean squared inputs are): ggml_quantize_chunk (what
 * llama-quantize calls) against bp_ggml_quantize_row, row by row; the
 * blocks compared byte for byte, and the rows dequantized by ggml's own
 * to_float against bp_ggml_dequantize_row.  Prints one line per type:
 * rows identical, blocks differing, the largest dequantized difference, and
 * the relative squared error of each side (weighted by the importance
 * weights where used: what the quantizers minimise).  Exits 1 when any byte differs.
 *
 * With --golden: the digests of tests/test_ggml.c instead.
 *
 * Built and run by bench/llamacpp/quants.sh against a built llama.cpp.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ggml.h"

#include "planner/sha256.h"
#include "sensitivity/ggml.h"
#include "tests/ggml_golden.h"

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static double uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((rng >> 11) + 0.5) / 9007199254740992.0;
}

static double gauss(void)
{
    return sqrt(-2 * log(uniform())) * cos(6.283185307179586 * uniform());
}

/* Matrix kind k, rows x cols. */
static void fill(int k, float *x, int64_t rows, int64_t cols)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) {
            double v = gauss();
            switch (k) {
            case 1: v = v * v * v; break;                              /* heavy tails */
            case 2: v *= (c % 97 == 3) ? 40 : 1; break;                /* outlier columns */
            case 3: v = (c / 32) % 3 == 1 ? 0 : v; break;              /* all-zero blocks */
            case 4: v *= 1e-6; break;                                  /* tiny */
            case 5: v *= 3e3; break;                                   /* large */
            case 6: v = 0.02 * v * (1 + 30 * (c % 211 == 5)) + 0.001 * (r % 7); break;
            }
            x[r * cols + c] = (float)v;
        }
}

static const char *kinds[] = {"gauss", "cubed", "outlier-cols", "zero-blocks", "tiny", "large",
                              "transformer"};

/* The SHA-256 of ggml's bytes of the golden rows (tests/ggml_golden.h), per
 * type, without and with importance weights: tests/test_ggml.c's vectors. */
static void golden(const int *types, size_t n)
{
    static float x[GOLDEN_ROWS * GOLDEN_COLS], qw[GOLDEN_COLS];
    golden_fill(x, qw);
    for (size_t t = 0; t < n; t++)
        for (int with_qw = 0; with_qw < 2; with_qw++) {
            size_t bytes = (size_t)bp_ggml_row_bytes(types[t], GOLDEN_COLS) * GOLDEN_ROWS;
            unsigned char *q = malloc(bytes), d[32];
            char hex[65];
            bp_sha256 sh;
            ggml_quantize_chunk((enum ggml_type)types[t], x, q, 0, GOLDEN_ROWS, GOLDEN_COLS,
                                with_qw ? qw : NULL);
            bp_sha256_init(&sh);
            bp_sha256_update(&sh, q, bytes);
            bp_sha256_final(&sh, d);
            bp_sha256_hex(d, hex);
            printf("    {\"%s\", %d, \"%s\"},\n", bp_ggml_type_name(types[t]), with_qw, hex);
            free(q);
        }
}

int main(int argc, char **argv)
{
    const int64_t rows = argc > 1 ? atoll(argv[1]) : 64, cols = 1024;
    const int types[] = {BP_GGML_Q2_K, BP_GGML_Q3_K, BP_GGML_Q4_K, BP_GGML_Q5_K, BP_GGML_Q6_K,
                         BP_GGML_Q8_0, BP_GGML_Q4_0, BP_GGML_Q4_1, BP_GGML_Q5_0, BP_GGML_Q5_1,
                         BP_GGML_IQ4_NL, BP_GGML_IQ4_XS, BP_GGML_F16, BP_GGML_BF16};
    const int nk = (int)(sizeof kinds / sizeof *kinds);
    if (argc > 1 && strcmp(argv[1], "--golden") == 0) {
        golden(types, sizeof types / sizeof *types);
        return 0;
    }
    float *x = malloc(sizeof(float) * rows * cols), *qw = malloc(sizeof(float) * cols);
    float *ya = malloc(sizeof(float) * cols), *yb = malloc(sizeof(float) * cols);
    uint8_t *a = malloc(rows * cols * 4), *b = malloc(cols * 4);
    int bad = 0;
    printf("| type | imatrix | rows | identical rows | differing blocks | max |dequant diff| | "
           "relative error ggml | relative error bitplan |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n");
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        const int type = types[t];
        int64_t blck;
        size_t bbytes;
        bp_ggml_block(type, &blck, &bbytes);
        for (int with_qw = 0; with_qw < 2; with_qw++) {
            int64_t same_rows = 0, diff_blocks = 0, total = 0;
            double maxd = 0, ea = 0, eb = 0, ex = 0;
            for (int k = 0; k < nk; k++) {
                fill(k, x, rows, cols);
                for (int64_t c = 0; c < cols; c++)
                    qw[c] = (float)exp(2.5 * gauss());
                const float *w = with_qw ? qw : NULL;
                size_t rb = (size_t)bp_ggml_row_bytes(type, cols);
                ggml_quantize_chunk((enum ggml_type)type, x, a, 0, rows, cols, w);
                const struct ggml_type_traits *tr = ggml_get_type_traits((enum ggml_type)type);
                for (int64_t r = 0; r < rows; r++) {
                    const float *xr = x + r * cols;
                    bp_ggml_quantize_row(type, xr, cols, w, b);
                    int same = memcmp(a + r * rb, b, rb) == 0;
                    same_rows += same;
                    if (!same)
                        for (size_t o = 0; o < rb; o += bbytes)
                            diff_blocks += memcmp(a + r * rb + o, b + o, bbytes) != 0;
                    tr->to_float(a + r * rb, ya, cols);
                    bp_ggml_dequantize_row(type, b, cols, yb);
                    for (int64_t c = 0; c < cols; c++) {
                        double wc = w ? w[c] : 1;
                        maxd = fmax(maxd, fabs((double)ya[c] - yb[c]));
                        ea += wc * ((double)ya[c] - xr[c]) * ((double)ya[c] - xr[c]);
                        eb += wc * ((double)yb[c] - xr[c]) * ((double)yb[c] - xr[c]);
                        ex += wc * (double)xr[c] * xr[c];
                    }
                    total++;
                }
            }
            bad |= same_rows != total;
            printf("| %s | %s | %lld | %lld | %lld | %.3g | %.6g | %.6g |\n",
                   bp_ggml_type_name(type), with_qw ? "yes" : "no", (long long)total,
                   (long long)same_rows, (long long)diff_blocks, maxd, ea / ex, eb / ex);
        }
    }
    free(x), free(qw), free(ya), free(yb), free(a), free(b);
    return bad;
}
