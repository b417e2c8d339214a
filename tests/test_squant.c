/*
 * test_squant.c - SQuant's promises on random weights of several shapes and
 * distributions (normal, heavy-tailed, uniform, with outliers):
 *   after K every kernel's error sum is within 0.5; after C every row's sum
 *   is within 0.5, every kernel sum below 1 and every element error below 1
 *   (where the grid leaves room: with rare 20x outliers at 2 bits most of a
 *   row sits at a grid end, where flips are not allowed; there every
 *   kernel left above 0.5 must have no element that may still move toward
 *   zero);
 *   codes stay on the grid; on average the diagonal-Hessian objective
 *   (element + kernel-sum + row-sum squared errors) and the output error on
 *   inputs with a common mean fall well below plain rounding (a single short
 *   row can lose: one flip may add more element error than it removes from
 *   the row sum); ties break by index.
 */
#include <stdlib.h>

#include "check.h"
#include "planner/formats/safetensors.h"
#include "sensitivity/squant.h"

typedef struct errs {
    double max_elem, max_kernel, max_row, objective;
    int free_rows;            /* rows whose sums were checked */
    int blocked;              /* kernels above 0.5 with no flip left */
    int unblocked;            /* kernels above 0.5 that could still flip */
} errs;

/* Errors in code units, recomputed from the output: e = s w_hat - s w. */
static errs measure(const float *W, const float *Q, int64_t rows, int64_t cols, int64_t ks,
                    int bits, int fp16, int strict)
{
    errs r = {0, 0, 0, 0, 0, 0, 0};
    for (int64_t o = 0; o < rows; o++) {
        const float *w = W + o * cols, *q = Q + o * cols;
        double lo = w[0], hi = w[0];
        for (int64_t j = 1; j < cols; j++)
            lo = fmin(lo, w[j]), hi = fmax(hi, w[j]);
        double s = (ldexp(1.0, bits) - 1.0) / (hi - lo), row = 0.0, mk = 0.0, z16 = 0.0;
        if (fp16) {                          /* the step rounded up to fp16 */
            float step = (float)(1.0 / s);
            CHECK(bp_squant_row_grid(w, cols, bits, 1, &s, &z16) == 1);
            CHECK(1.0 / s >= step && 1.0 / s <= step * (1.0 + 0x1p-10) &&
                  bp_f16_to_f32(bp_f32_to_f16((float)(1.0 / s))) == (float)(1.0 / s));
        }
        double half = ldexp(1.0, bits - 1), z = fp16 ? z16 : nearbyint(s * lo) + half;
        int room = 1;
        for (int64_t k = 0; k < cols / ks; k++) {
            double ksum = 0.0;
            for (int64_t j = k * ks; j < (k + 1) * ks; j++) {
                double e = s * ((double)q[j] - w[j]);
                r.max_elem = fmax(r.max_elem, fabs(e));
                r.objective += e * e;
                ksum += e;
            }
            mk = fmax(mk, fabs(ksum));
            if (!strict && fabs(ksum) > 0.5 + 1e-3) {  /* every possible flip made? */
                int dir = ksum < 0 ? 1 : -1;
                for (int64_t j = k * ks; j < (k + 1) * ks; j++) {
                    double x = s * w[j] - z, e = s * (double)q[j] - s * w[j];
                    int can = dir > 0 ? e < -1e-6 && x < half - 1.0 : e > 1e-6 && x > -half;
                    room &= !can;
                }
                r.blocked += room;
                r.unblocked += !room;
                room = 1;
            }
            r.objective += ksum * ksum;
            row += ksum;
        }
        r.objective += row * row;
        if (strict) {
            r.max_kernel = fmax(r.max_kernel, mk);
            r.max_row = fmax(r.max_row, fabs(row));
            r.free_rows++;
        }
    }
    return r;
}

static float draw(check_rng *r, int dist)
{
    double u = check_uniform(r);
    switch (dist) {
    case 0:
        return (float)check_normal(r);
    case 1:
        return (float)((u < 0.5 ? -1 : 1) * log(1.0 / (1e-12 + check_uniform(r))));  /* laplace */
    case 2:
        return (float)(2 * u - 1);
    default:
        return (float)(check_normal(r) * (u < 0.01 ? 20.0 : 1.0));                 /* outliers */
    }
}

/* ||(Q - W) X^T||^2 with inputs of mean 1 (as after a ReLU), per element. */
static double out_err(const float *W, const float *Q, int64_t rows, int64_t cols,
                      check_rng *r)
{
    double s = 0.0;
    float *x = malloc((size_t)cols * sizeof *x);
    for (int t = 0; t < 64; t++) {
        for (int64_t j = 0; j < cols; j++)
            x[j] = (float)(1.0 + 0.3 * check_normal(r));
        for (int64_t o = 0; o < rows; o++) {
            double e = 0.0;
            for (int64_t j = 0; j < cols; j++)
                e += ((double)Q[o * cols + j] - W[o * cols + j]) * x[j];
            s += e * e;
        }
    }
    free(x);
    return s;
}

static void test_properties(void)
{
    static const int64_t shapes[][3] = {{16, 8 * 9, 9}, {8, 3 * 25, 25}, {32, 100, 1},
                                        {4, 16 * 9, 9}, {6, 7, 1}};
    check_rng rng = {0x51a7ULL};
    bp_error err;
    double gain_obj = 0.0, gain_out = 0.0;
    int cases = 0, free_rows = 0, all_rows = 0;
    for (int fp16 = 0; fp16 <= 1; fp16++)
    for (size_t sh = 0; sh < sizeof shapes / sizeof *shapes; sh++)
        for (int dist = 0; dist < 4; dist++)
            for (int bits = 2; bits <= 8; bits += 2) {
                int64_t rows = shapes[sh][0], cols = shapes[sh][1], ks = shapes[sh][2];
                size_t n = (size_t)(rows * cols);
                float *W = malloc(n * sizeof *W), *Q[4];
                int32_t *codes = malloc(n * sizeof *codes);
                for (size_t i = 0; i < n; i++)
                    W[i] = draw(&rng, dist) * 0.1f;
                for (int mode = 0; mode < 4; mode++) {
                    Q[mode] = malloc(n * sizeof *Q[mode]);
                    CHECK(bp_squant_quantize(W, rows, cols, ks, bits, mode, fp16, Q[mode], codes,
                                             &err) == 0);
                }
                errs e = measure(W, Q[0], rows, cols, ks, bits, fp16, 1);
                errs k = measure(W, Q[BP_SQ_K], rows, cols, ks, bits, fp16, dist != 3);
                errs c = measure(W, Q[BP_SQ_K | BP_SQ_C], rows, cols, ks, bits, fp16, dist != 3);
                const double tol = 1e-3;     /* float outputs, in code units */
                CHECK(e.max_elem <= 0.5 + tol);
                if (ks > 1)
                    CHECK_MSG(k.max_kernel <= 0.5 + tol, "shape %zu dist %d bits %d: kernel "
                              "sum %g after K", sh, dist, bits, k.max_kernel);
                CHECK_MSG(c.max_row <= 0.5 + tol, "shape %zu dist %d bits %d: row sum %g",
                          sh, dist, bits, c.max_row);
                CHECK_MSG(c.max_kernel < 1.0 + tol, "kernel sum %g after C", c.max_kernel);
                CHECK_MSG(c.max_elem < 1.0 + tol, "element error %g after C", c.max_elem);
                if (ks > 1)
                    CHECK_MSG(k.unblocked == 0, "%d kernels above 0.5 could still flip",
                              k.unblocked);
                free_rows += c.free_rows;
                all_rows += (int)rows;
                int32_t lo = -(1 << (bits - 1)), hi = (1 << (bits - 1)) - 1, in_grid = 1;
                for (size_t i = 0; i < n; i++)
                    in_grid &= codes[i] >= lo && codes[i] <= hi;
                CHECK(in_grid);
                gain_obj += c.objective / e.objective;
                check_rng a = {99}, b = {99};
                double oe = out_err(W, Q[0], rows, cols, &a);
                double oc = out_err(W, Q[BP_SQ_K | BP_SQ_C], rows, cols, &b);
                gain_out += oc / oe;
                cases++;
                /* same input, same output */
                float *again = malloc(n * sizeof *again);
                CHECK(bp_squant_quantize(W, rows, cols, ks, bits, BP_SQ_K | BP_SQ_C, fp16, again,
                                         NULL, &err) == 0);
                CHECK(memcmp(again, Q[3], n * sizeof *again) == 0);
                free(again);
                for (int mode = 0; mode < 4; mode++)
                    free(Q[mode]);
                free(W);
                free(codes);
            }
    printf("squant ekc / rounding: objective %.3f, output error (mean-1 inputs) %.3f "
           "(averages over %d cases)\n", gain_obj / cases, gain_out / cases, cases);
    printf("sums checked on %d of %d rows\n", free_rows, all_rows);
    CHECK(free_rows >= all_rows * 3 / 4);
    CHECK(gain_obj / cases < 0.8);
    CHECK(gain_out / cases < 0.5);
}

static void test_ties_and_edges(void)
{
    bp_error err;
    /* 2 bits over [0, 3]: s = 1, z = 2, x = w - 2; w = 0.5 and 2.5 both have
     * e = -0.5 after rounding to even codes... choose values whose rounding
     * errors tie: row sum -1 needs one up-flip; the lower index must win. */
    float W[4] = {0.0f, 0.5f, 1.5f, 3.0f}, Q[4];
    int32_t codes[4];
    CHECK(bp_squant_quantize(W, 1, 4, 1, 2, BP_SQ_C, 0, Q, codes, &err) == 0);
    /* x = -2, -1.5, -0.5, 1 -> r = -2, -2, -0, 1 (ties to even): e = 0, -0.5, 0.5, 0:
     * sum 0, nothing flips */
    CHECK(codes[0] == -2 && codes[1] == -2 && codes[2] == 0 && codes[3] == 1);
    float W2[4] = {0.0f, 0.4f, 1.4f, 3.0f};
    CHECK(bp_squant_quantize(W2, 1, 4, 1, 2, BP_SQ_C, 0, Q, codes, &err) == 0);
    /* x = -2, -1.6, -0.6, 1: r = -2, -2, -1, 1; e = 0, -0.4, -0.4, 0: sum -0.8 -> one
     * up-flip among the tied -0.4s: index 1 */
    CHECK(codes[1] == -1 && codes[2] == -1);
    /* a constant row is kept exactly */
    float C[3] = {0.25f, 0.25f, 0.25f};
    CHECK(bp_squant_quantize(C, 1, 3, 1, 4, 3, 0, Q, NULL, &err) == 0);
    CHECK(Q[0] == 0.25f && Q[2] == 0.25f);
    CHECK(bp_squant_quantize(C, 1, 3, 2, 4, 3, 0, Q, NULL, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "kernels");
    CHECK(bp_squant_mode_parse("ekc") == 3 && bp_squant_mode_parse("ek") == 1 &&
          bp_squant_mode_parse("ec") == 2 && bp_squant_mode_parse("e") == 0 &&
          bp_squant_mode_parse("kc") == -1);
}

/* The same promises on real trained weights: the demo model's layers. */
static void test_real_weights(void)
{
    static const struct {
        const char *name;
        int64_t ks;
    } layers[] = {{"conv1.weight", 9}, {"conv2.weight", 9}, {"fc1.weight", 1}, {"fc2.weight", 1}};
    bp_safetensors st;
    bp_error err;
    int checked = 0;
    if (bp_st_open(&st, BP_SOURCE_DIR "/configs/demo/model.safetensors", &err) < 0) {
        CHECK_MSG(0, "%s", err.msg);
        return;
    }
    for (size_t i = 0; i < sizeof layers / sizeof *layers; i++) {
        const bp_st_tensor *t = bp_st_find(&st, layers[i].name);
        CHECK(t != NULL);
        if (!t)
            continue;
        int64_t n = bp_st_numel(t), rows = t->shape[0], cols = n / rows;
        float *W = malloc((size_t)n * sizeof *W), *Q = malloc((size_t)n * sizeof *Q);
        CHECK(bp_st_read_f32(&st, t, W, &err) == 0);
        for (int bits = 2; bits <= 8; bits++) {
            CHECK(bp_squant_quantize(W, rows, cols, layers[i].ks, bits, BP_SQ_K, 0, Q, NULL, &err) == 0);
            errs k = measure(W, Q, rows, cols, layers[i].ks, bits, 0, 1);
            if (layers[i].ks > 1)
                CHECK_MSG(k.max_kernel <= 0.5 + 1e-3, "%s %d bits: kernel sum %g", layers[i].name,
                          bits, k.max_kernel);
            CHECK(bp_squant_quantize(W, rows, cols, layers[i].ks, bits, BP_SQ_K | BP_SQ_C, 0, Q, NULL,
                                     &err) == 0);
            errs c = measure(W, Q, rows, cols, layers[i].ks, bits, 0, 1);
            CHECK_MSG(c.max_row <= 0.5 + 1e-3 && c.max_kernel < 1.0 + 1e-3 &&
                      c.max_elem < 1.0 + 1e-3, "%s %d bits: row %g kernel %g element %g",
                      layers[i].name, bits, c.max_row, c.max_kernel, c.max_elem);
            checked++;
        }
        free(W);
        free(Q);
    }
    CHECK(checked == 28);
    bp_st_close(&st);
}

int main(void)
{
    test_properties();
    test_real_weights();
    test_ties_and_edges();
    return check_done();
}
