/*
 * test_ggml.c - llama.cpp's weight types (sensitivity/ggml.c).
 *
 * Conformance: the bytes bitplan writes for the golden rows
 * (tests/ggml_golden.h) hash to the digests of the bytes llama.cpp's own
 * ggml_quantize_chunk wrote for them (bench/llamacpp/quants.c --golden,
 * llama.cpp d32676d), for every type, without and with importance weights.
 * Properties on data the vectors did not see: storage is the type's block
 * bytes; dequantization reproduces every block's grid (codes within range,
 * a zero row stays zero); more bits never cost more error across each
 * family; importance weights lower the error they weight; the half
 * conversions round to nearest even.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "ggml_golden.h"
#include "../planner/sha256.h"
#include "../sensitivity/ggml.h"

static const struct {
    const char *type;
    int with_qw;
    const char *sha256;
} vectors[] = {
    {"q2_K", 0, "2be665f7c4436402798b70259daa86fce0c9156fd1a20125aee34f7624a2ec41"},
    {"q2_K", 1, "fb237521f1e4b3df6377d642c1e3628d2766add8b10a276b2cfb87ab5ab708e5"},
    {"q3_K", 0, "ccaaf9b7a395d27e014c146e1f70112e8cd5b6321952462a1b1c7d5559b4c679"},
    {"q3_K", 1, "e13ca99b1b3f124c071da97b9c0a792569fad85cc87e0beacac2d0deb7c8b3da"},
    {"q4_K", 0, "597df7ddef2646edaaa23d7d393de70019ab6088a093b82203ea117d70f23e16"},
    {"q4_K", 1, "f6d9c9b9b0aa355e7d8e62a1c09a706d47b7fcecf7d02c31d4933249cb2b42bf"},
    {"q5_K", 0, "b1710caf74ad04a8f316ca5df99428b0057e941e3f133973e5280dfc532bc5a0"},
    {"q5_K", 1, "5e2d290defa56c9e52e6699e34640d39b4ec00d3133313d75b922334517aa395"},
    {"q6_K", 0, "7fae12a7b308a64a29534c07a02994db3b40c7025343c33d85d4c535715a2873"},
    {"q6_K", 1, "3abeb900a51d868631468801d7027e7e4440b896441e36ab3334819a7618c864"},
    {"q8_0", 0, "a5fcab8c3b2698ae8b625c08bcee202f14702cdcb9f35d3fc9e75b2d9872d413"},
    {"q8_0", 1, "a5fcab8c3b2698ae8b625c08bcee202f14702cdcb9f35d3fc9e75b2d9872d413"},
    {"q4_0", 0, "a3ade78194489a56890035ac1a60fe0a627a7cb2adf923b2f0dd52b18d2ffb83"},
    {"q4_0", 1, "2cb867ba317444e874ce27695ee2d6de19e5b81df9157c6d173093a952b1dcee"},
    {"q4_1", 0, "2bae055e48804925323a473348311a9f4b7c045ff645705c289e108d6d2f2a89"},
    {"q4_1", 1, "ee173f40d199c4a066d103dc3b6a71efb979a8f8c5c9d79c9ba8caac0e82510e"},
    {"q5_0", 0, "9097a73a58aac9ee0110d10e5c14fcf34ea4a4388678ede86c7104355afb1198"},
    {"q5_0", 1, "3cffeff27ffa4bdf0a9df53592225a2186aadc39028540ca4e53e46aad42f791"},
    {"q5_1", 0, "25b3b937877c913e1266678b056231689f1e14c76ead5aec9286ea9ee46ca165"},
    {"q5_1", 1, "9f32ef912fa0058ebed97f593d860d915a3d9c4827651cc648ea1035c225ac48"},
    {"iq4_nl", 0, "185714e3c47d7ffd55f265e9c41b9c5357f15018bfea6a73c603e2b19da378ef"},
    {"iq4_nl", 1, "619144f4fa9e9e2d964497eb57cce02ad3642e7d5bc9a62c8ca8e92b90f74636"},
    {"iq4_xs", 0, "4b50051f6d299a4f97605e3f9f91c75991a36e08b6a71a15f55d169b98ad2722"},
    {"iq4_xs", 1, "53034c0a05e1a6f55f52972bdcbb9c8797ad0973c33d30182fa451c120b69c3a"},
    {"f16", 0, "de627ae11d635e7f036937c464468a3fe7d430af3bc89d14bfe4c876d7e49ce2"},
    {"f16", 1, "de627ae11d635e7f036937c464468a3fe7d430af3bc89d14bfe4c876d7e49ce2"},
    {"bf16", 0, "d0e9cc993e50d46747d86bd2e13031e18a3d5b527345d535bda0532aba3d032c"},
    {"bf16", 1, "d0e9cc993e50d46747d86bd2e13031e18a3d5b527345d535bda0532aba3d032c"},
};

static void test_conformance(void)
{
    static float x[GOLDEN_ROWS * GOLDEN_COLS], qw[GOLDEN_COLS];
    golden_fill(x, qw);
    for (size_t v = 0; v < sizeof vectors / sizeof *vectors; v++) {
        int type = bp_ggml_type_parse(vectors[v].type);
        CHECK(bp_ggml_can_quantize(type));
        uint64_t rb = bp_ggml_row_bytes(type, GOLDEN_COLS);
        unsigned char *q = malloc(rb * GOLDEN_ROWS), d[32];
        char hex[65];
        for (int r = 0; r < GOLDEN_ROWS; r++)
            CHECK(bp_ggml_quantize_row(type, x + r * GOLDEN_COLS, GOLDEN_COLS,
                                       vectors[v].with_qw ? qw : NULL, q + r * rb) == rb);
        bp_sha256 s;
        bp_sha256_init(&s);
        bp_sha256_update(&s, q, rb * GOLDEN_ROWS);
        bp_sha256_final(&s, d);
        bp_sha256_hex(d, hex);
        CHECK_MSG(strcmp(hex, vectors[v].sha256) == 0, "%s %s: bytes differ from llama.cpp's",
                  vectors[v].type, vectors[v].with_qw ? "with imatrix" : "without imatrix");
        free(q);
    }
}

static uint64_t rng = 88172645463325252ull;

static double gauss(void)
{
    double u[2];
    for (int k = 0; k < 2; k++) {
        rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
        u[k] = ((rng >> 11) + 0.5) / 9007199254740992.0;
    }
    return sqrt(-2 * log(u[0])) * cos(6.283185307179586 * u[1]);
}

/* sum_j w_j (xhat_j - x_j)^2 over a row quantized to type with qw. */
static double row_error(int type, const float *x, int64_t n, const float *qw, const float *w)
{
    unsigned char *q = malloc(bp_ggml_row_bytes(type, n));
    float *y = malloc(sizeof(float) * n);
    bp_ggml_quantize_row(type, x, n, qw, q);
    bp_ggml_dequantize_row(type, q, n, y);
    double e = 0;
    for (int64_t j = 0; j < n; j++)
        e += (w ? w[j] : 1.0) * ((double)y[j] - x[j]) * ((double)y[j] - x[j]);
    free(q), free(y);
    return e;
}

static void test_storage_and_zero(void)
{
    const int types[] = {BP_GGML_Q2_K, BP_GGML_Q3_K, BP_GGML_Q4_K, BP_GGML_Q5_K, BP_GGML_Q6_K,
                         BP_GGML_Q8_0, BP_GGML_Q4_0, BP_GGML_Q4_1, BP_GGML_Q5_0, BP_GGML_Q5_1,
                         BP_GGML_IQ4_NL, BP_GGML_IQ4_XS, BP_GGML_F16, BP_GGML_BF16, BP_GGML_F32};
    /* bits per weight as ALGORITHMS.md section 7 lists them */
    const double bpw[] = {2.625, 3.4375, 4.5, 5.5, 6.5625, 8.5, 4.5, 5.0, 5.5, 6.0, 4.5, 4.25,
                          16, 16, 32};
    float zero[512] = {0}, y[512];
    unsigned char q[2048];
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        CHECK(bp_ggml_row_bytes(types[t], 512) * 8 == (uint64_t)(bpw[t] * 512));
        CHECK(bp_ggml_quantize_row(types[t], zero, 512, NULL, q) == bp_ggml_row_bytes(types[t], 512));
        bp_ggml_dequantize_row(types[t], q, 512, y);
        int all_zero = 1;
        for (int j = 0; j < 512; j++)
            all_zero &= y[j] == 0;
        CHECK_MSG(all_zero, "%s: a zero row does not stay zero", bp_ggml_type_name(types[t]));
    }
    CHECK(bp_ggml_row_bytes(BP_GGML_Q4_K, 100) == 0);          /* not a multiple of 256 */
    CHECK(bp_ggml_quantize_row(BP_GGML_Q4_K, zero, 100, NULL, q) == 0);
    CHECK(!bp_ggml_can_quantize(BP_GGML_Q8_K) && !bp_ggml_can_quantize(18));
    CHECK(bp_ggml_dequantize_row(18, q, 256, y) == -1);
}

/* More bits, less error: on Gaussian rows (fresh data) each family's error
 * falls with its width, with and without importance weights. */
static void test_monotone(void)
{
    const int n = 4096;
    float *x = malloc(sizeof(float) * n), *qw = malloc(sizeof(float) * n);
    for (int j = 0; j < n; j++) {
        x[j] = (float)(0.02 * gauss());
        qw[j] = (float)exp(2.0 * gauss());
    }
    const int k[] = {BP_GGML_Q2_K, BP_GGML_Q3_K, BP_GGML_Q4_K, BP_GGML_Q5_K, BP_GGML_Q6_K,
                     BP_GGML_Q8_0, BP_GGML_F16};
    const int legacy[] = {BP_GGML_Q4_0, BP_GGML_Q5_0, BP_GGML_Q8_0};
    const int legacy1[] = {BP_GGML_Q4_1, BP_GGML_Q5_1};
    for (int w = 0; w < 2; w++) {
        const float *q = w ? qw : NULL;
        for (size_t i = 1; i < sizeof k / sizeof *k; i++)
            CHECK_MSG(row_error(k[i], x, n, q, q) < row_error(k[i - 1], x, n, q, q), "%s vs %s",
                      bp_ggml_type_name(k[i]), bp_ggml_type_name(k[i - 1]));
        for (size_t i = 1; i < 3; i++)
            CHECK(row_error(legacy[i], x, n, q, q) < row_error(legacy[i - 1], x, n, q, q));
        CHECK(row_error(legacy1[1], x, n, q, q) < row_error(legacy1[0], x, n, q, q));
        CHECK(row_error(BP_GGML_IQ4_XS, x, n, q, q) < row_error(BP_GGML_Q3_K, x, n, q, q));
    }
    free(x), free(qw);
}

/* The importance weights steer the error: weighted by qw, the error of rows
 * quantized with qw is lower than without, for every type that uses them
 * (summed over rows: a single block may go the other way). */
static void test_importance(void)
{
    const int n = 2048, rows = 16;
    float *x = malloc(sizeof(float) * n), *qw = malloc(sizeof(float) * n);
    const int types[] = {BP_GGML_Q2_K, BP_GGML_Q3_K, BP_GGML_Q4_K, BP_GGML_Q5_K, BP_GGML_Q6_K,
                         BP_GGML_Q4_0, BP_GGML_Q4_1, BP_GGML_Q5_0, BP_GGML_Q5_1, BP_GGML_IQ4_NL,
                         BP_GGML_IQ4_XS};
    for (size_t t = 0; t < sizeof types / sizeof *types; t++) {
        double with = 0, without = 0;
        for (int r = 0; r < rows; r++) {
            for (int j = 0; j < n; j++) {
                x[j] = (float)gauss();
                qw[j] = (float)exp(3.0 * gauss());
            }
            with += row_error(types[t], x, n, qw, qw);
            without += row_error(types[t], x, n, NULL, qw);
        }
        CHECK_MSG(with < without, "%s: weighted error %g with the imatrix, %g without",
                  bp_ggml_type_name(types[t]), with, without);
    }
    /* q8_0 ignores them, as llama.cpp's does */
    for (int j = 0; j < n; j++)
        x[j] = (float)gauss(), qw[j] = (float)exp(gauss());
    CHECK(row_error(BP_GGML_Q8_0, x, n, qw, NULL) == row_error(BP_GGML_Q8_0, x, n, NULL, NULL));
    free(x), free(qw);
}

static void test_half(void)
{
    CHECK(bp_f32_to_f16(1.0f + 0x1p-11f) == 0x3c00);        /* tie to even: down */
    CHECK(bp_f32_to_f16(1.0f + 3 * 0x1p-11f) == 0x3c02);    /* tie to even: up */
    CHECK(bp_f32_to_f16(65520.0f) == 0x7c00);                /* rounds to infinity */
    CHECK(bp_f32_to_f16(0x1p-25f) == 0x0000 && bp_f32_to_f16(0x1.8p-25f) == 0x0001);
    CHECK(bp_f16_to_f32(bp_f32_to_f16(-0.0f)) == 0 && signbit(bp_f16_to_f32(0x8000)));
}

int main(void)
{
    test_conformance();
    test_storage_and_zero();
    test_monotone();
    test_importance();
    test_half();
    return check_done();
}
