/*
 * test_qweights.c - codes of the quantized-weights file from a grid per row
 * and scale group (bp_qfile_add_codes), and that grid from a per-element
 * one (bp_grid_compact):
 *   - every code is round-half-even of w / step + zero point, clamped to the
 *     code range, computed here independently with nearbyint in double, and
 *     NAME.weight is step * (code - zero) exactly;
 *   - per group (a partial last group, 16-bit codes) and per tensor;
 *   - a weight off its grid, a weight that is not a number, a per-tensor
 *     grid that changes from row to row and a column's group out of range
 *     are errors naming the layer, with no codes;
 *   - the compact grid is the per-element one's, and a per-element grid
 *     that changes inside its block is an error naming the layer.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "planner/formats/qweights.h"
#include "sensitivity/sensitivity.h"

enum { OUT = 7, IN = 40, GS = 16, NG = (IN + GS - 1) / GS };

/* The weights, their grid per element (es, ez) and per row and group (S, Z:
 * OUT x NG per group, OUT x 1 per tensor), the columns' groups. */
typedef struct layer {
    float What[OUT * IN], es[OUT * IN], ez[OUT * IN], S[OUT * NG], Z[OUT * NG];
    int32_t g_idx[IN];
} layer;

/* Weights on a per-group grid of `bits`: steps and zero points per (row,
 * group), codes over the whole range (both ends and ties included). */
static void make_layer(layer *L, int bits, int per_tensor, check_rng *r)
{
    int maxq = (1 << bits) - 1;
    float s0 = (float)(0.01 + 0.1 * check_uniform(r)), z0 = (float)(maxq / 3);
    for (int j = 0; j < IN; j++)
        L->g_idx[j] = j / GS;
    for (int row = 0; row < OUT; row++)
        for (int g = 0; g * GS < IN; g++) {
            float s = per_tensor ? s0 : (float)(0.01 + 0.1 * check_uniform(r));
            float z = per_tensor ? z0 : (float)(check_next(r) % (unsigned)(maxq + 1));
            L->S[per_tensor ? row : row * NG + g] = s, L->Z[per_tensor ? row : row * NG + g] = z;
            for (int j = g * GS; j < IN && j < (g + 1) * GS; j++) {
                int i = row * IN + j;
                int c = j == g * GS ? 0 : j == g * GS + 1 ? maxq
                                                          : (int)(check_next(r) % (unsigned)(maxq + 1));
                L->es[i] = s, L->ez[i] = z;
                L->What[i] = s * ((float)c - z);
                if (j == g * GS + 2)                 /* a little off: rounds back */
                    L->What[i] += 0.1e-6f * s;
            }
        }
}

static const bp_st_entry *entry(const bp_qfile *f, const char *name)
{
    for (size_t i = 0; i < f->n; i++)
        if (!strcmp(f->e[i].name, name))
            return &f->e[i];
    return NULL;
}

static void test_codes(int bits, int per_tensor, check_rng *r)
{
    layer L;
    make_layer(&L, bits, per_tensor, r);
    float w0[OUT * IN];
    memcpy(w0, L.What, sizeof w0);
    bp_qfile f = {0};
    bp_error err;
    bp_qlayer q = {"blk.fc", OUT, IN, 1, L.What, L.S, L.Z, L.g_idx};
    bp_qgrid g = {bits, per_tensor, per_tensor ? 0 : GS, 0, per_tensor ? "per_tensor"
                                                                       : "per_group"};
    CHECK(bp_qfile_add_codes(&f, &q, &g, 1, &err) == 0);
    const bp_st_entry *c = entry(&f, "blk.fc.qweight"), *w = entry(&f, "blk.fc.weight");
    CHECK(c && w && c->dtype == (bits <= 8 ? BP_DT_U8 : BP_DT_U16));
    int bad_codes = 0, bad_values = 0;
    double maxq = (double)((1 << bits) - 1);
    for (int i = 0; c && w && i < OUT * IN; i++) {
        double u = nearbyint((double)(w0[i] / L.es[i]) + (double)L.ez[i]);
        u = u < 0.0 ? 0.0 : u > maxq ? maxq : u;
        double got = bits <= 8 ? ((const unsigned char *)c->data)[i]
                               : ((const uint16_t *)c->data)[i];
        bad_codes += got != u;
        bad_values += ((const float *)w->data)[i] != L.es[i] * ((float)got - L.ez[i]);
    }
    CHECK_MSG(bad_codes == 0 && bad_values == 0, "bits %d tensor %d: %d codes, %d values wrong",
              bits, per_tensor, bad_codes, bad_values);
    bp_qfile_free(&f);
}

enum { SPOIL_WEIGHT, SPOIL_ROW_STEP, SPOIL_GROUP };

/* One element spoiled (a weight moved by `steps` of its step, a per-tensor
 * row on another step, or a column's group out of range): the call fails,
 * naming the layer and the problem. */
static void expect_error(const char *what, int element, float steps, int spoil, int tensor,
                         check_rng *r)
{
    layer L;
    make_layer(&L, 4, tensor, r);
    const char *want = "off its grid";
    if (spoil == SPOIL_ROW_STEP)
        L.S[element / IN] *= 1.5f, want = "not constant";
    else if (spoil == SPOIL_GROUP)
        L.g_idx[element % IN] = NG, want = "out of range";
    else
        L.What[element] += steps * L.es[element];
    bp_qfile f = {0};
    bp_error err = {{0}};
    bp_qlayer q = {"blk.fc", OUT, IN, 1, L.What, L.S, L.Z, L.g_idx};
    bp_qgrid g = {4, tensor, tensor ? 0 : GS, 0, tensor ? "per_tensor" : "per_group"};
    CHECK_MSG(bp_qfile_add_codes(&f, &q, &g, 0, &err) < 0, "%s: accepted", what);
    CHECK_MSG(strstr(err.msg, "blk.fc") && strstr(err.msg, want), "%s: message '%s'", what,
              err.msg);
    CHECK_MSG(!entry(&f, "blk.fc.qweight"), "%s: codes written", what);
    bp_qfile_free(&f);
}

/* The per-element grid compacted: the per-row-and-group one it was made
 * from; one element's step or zero point changed inside its block: an error
 * naming the layer, per group and per channel. */
static void test_compact(check_rng *r)
{
    layer L;
    make_layer(&L, 4, 0, r);
    bp_qspec q = {4, BP_GRAN_GROUP, GS, 0, BP_RANGE_MINMAX, 2.0, BP_AQ_UNIFORM, 0};
    float S[OUT * NG], Z[OUT * NG];
    bp_error err = {{0}};
    CHECK(bp_grid_groups(&q, IN) == NG);
    CHECK(bp_grid_compact(L.es, L.ez, OUT, IN, &q, S, Z, "blk.fc", &err) == 0);
    CHECK(memcmp(S, L.S, sizeof S) == 0 && memcmp(Z, L.Z, sizeof Z) == 0);
    for (int k = 0; k < 2; k++) {
        layer M = L;
        if (k)
            M.ez[4 * IN + 18] += 1.0f;               /* group 1's zero point, one element */
        else
            M.es[4 * IN + 39] *= 1.5f;               /* the partial last group's step */
        CHECK_MSG(bp_grid_compact(M.es, M.ez, OUT, IN, &q, S, Z, "blk.fc", &err) < 0,
                  "spoiled %d: accepted", k);
        CHECK_MSG(strstr(err.msg, "blk.fc") && strstr(err.msg, "not constant"), "'%s'",
                  err.msg);
    }
    q.granularity = BP_GRAN_CHANNEL;                 /* per channel: groups differ in a row */
    CHECK(bp_grid_groups(&q, IN) == 1);
    CHECK_MSG(bp_grid_compact(L.es, L.ez, OUT, IN, &q, S, Z, "blk.fc", &err) < 0,
              "per-group grid accepted as per channel");
}

int main(void)
{
    check_rng r = {0x9e1d0c5ULL};
    for (int bits = 2; bits <= 8; bits++)
        test_codes(bits, 0, &r);
    test_codes(4, 1, &r);
    test_codes(12, 0, &r);
    expect_error("off the grid", 3 * IN + 21, 0.37f, SPOIL_WEIGHT, 0, &r);
    expect_error("a weight past the code range", 5 * IN + 33, 1000.0f, SPOIL_WEIGHT, 0, &r);
    expect_error("not a number", 2 * IN + 7, NAN, SPOIL_WEIGHT, 0, &r);
    expect_error("a column's group out of range", 17, 0.0f, SPOIL_GROUP, 0, &r);
    expect_error("per tensor, one row on another step", 4 * IN, 0.0f, SPOIL_ROW_STEP, 1, &r);
    expect_error("per tensor, off the grid", 6 * IN + 39, -0.45f, SPOIL_WEIGHT, 1, &r);
    test_compact(&r);
    return check_done();
}
