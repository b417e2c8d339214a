/*
 * test_ties.c - tied groups through the whole solve path (bp_solve_table on
 * a table, with pins and ties), against enumerating every plan that honours
 * the ties: same optimum, every tie respected, every budget met; plus the
 * errors a user can make.
 */
#include <stdlib.h>

#include "check.h"
#include "planner/problem.h"

static const char *const names[6] = {"b0.q", "b0.k", "b0.v", "b1.q", "b1.k", "b1.v"};

/* 6 layers x (wbits 2,4,8) x (abits 8,16), random errors and sizes. */
static void make_table(bp_table *t, check_rng *r)
{
    static const int wb[3] = {2, 4, 8}, ab[2] = {8, 16};
    bp_error err;
    bp_table_init(t);
    for (int l = 0; l < 6; l++) {
        int64_t params = 100 + (int64_t)(400 * check_uniform(r));
        for (int w = 0; w < 3; w++)
            for (int a = 0; a < 2; a++) {
                bp_table_row row = {(char *)names[l], wb[w], ab[a], "rtn",
                                    check_uniform(r) * params / (double)(1 << (2 * w)) *
                                        (a ? 1.0 : 1.3),
                                    params, params * wb[w] + 16 * (1 + w), params, {0}};
                bp_table_add(t, &row, &err);
            }
    }
}

/* Best error over all plans with equal wbits (and abits when tie_a) within
 * each block's q/k/v, under the bits limit; -1 when none. */
static double enumerate(const bp_table *t, int tie_a, double limit)
{
    double best = -1;
    int pick[6] = {0};
    for (;;) {
        int ok = 1;
        double bits = 0, e = 0;
        for (int l = 0; l < 6; l++) {
            const bp_table_row *r = &t->rows[l * 6 + pick[l]];
            const bp_table_row *head = &t->rows[(l / 3) * 18 + pick[(l / 3) * 3]];
            ok &= r->wbits == head->wbits && (!tie_a || r->abits == head->abits);
            bits += (double)r->weight_bits, e += r->error;
        }
        if (ok && bits <= limit && (best < 0 || e < best))
            best = e;
        int l = 0;
        while (l < 6 && ++pick[l] == 6)
            pick[l] = 0, l++;
        if (l == 6)
            return best;
    }
}

static void test_against_enumeration(void)
{
    check_rng rng = {0x7135ULL};
    bp_tie tie = {"^(b[0-9])\\.(q|k|v)$", 1, 0};
    int solved = 0;
    for (int rep = 0; rep < 60; rep++) {
        bp_table t;
        make_table(&t, &rng);
        tie.abits = rep % 2;
        int64_t params = 0;
        for (int l = 0; l < 6; l++)
            params += t.rows[l * 6].params;
        double avg = 2.5 + 5.0 * check_uniform(&rng);
        bp_solve_request req = {{avg, 0, -1.0, 0, 0, BP_MIN_AUTO, 0, 0}, NULL, 0, &tie, 1, NULL, 0, NULL,
                                60.0, 0.0, NULL, 0, 1.0, NULL};
        bp_solve_result res;
        bp_error err = {""};
        double want = enumerate(&t, tie.abits, floor(avg * (double)params + 1e-6));
        int rc = bp_solve_table(&t, &req, &res, &err);
        if (want < 0) {
            CHECK_MSG(rc < 0 && res.infeasible, "rep %d: expected infeasible", rep);
        } else {
            CHECK_MSG(rc == 0, "rep %d: %s", rep, err.msg);
            if (rc == 0) {
                CHECK_MSG(fabs(res.total_error - want) <= 1e-9 * want, "rep %d: %.17g vs %.17g",
                          rep, res.total_error, want);
                for (int l = 0; l < 6; l++) {
                    const bp_table_row *r = &t.rows[res.chosen[l]], *h = &t.rows[res.chosen[(l / 3) * 3]];
                    CHECK(strcmp(r->layer, names[l]) == 0);
                    CHECK(r->wbits == h->wbits && (!tie.abits || r->abits == h->abits));
                }
                CHECK((double)res.total_weight_bits <= floor(avg * (double)params + 1e-6));
                solved++;
            }
        }
        bp_solve_result_free(&res);
        bp_table_free(&t);
    }
    CHECK(solved > 30);
}

static void test_errors(void)
{
    check_rng rng = {5};
    bp_table t;
    bp_error err;
    bp_solve_result res;
    make_table(&t, &rng);
    bp_tie bad[] = {{"^(b0", 1, 0}, {"^nothing$", 1, 0}, {"^b0", 1, 0}};
    bp_solve_request req = {{8, 0, -1.0, 0, 0, BP_MIN_AUTO, 0, 0}, NULL, 0, bad, 1, NULL, 0, NULL,
                            60.0, 0.0, NULL, 0, 1.0, NULL};
    CHECK(bp_solve_table(&t, &req, &res, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "not a valid extended regular expression");
    req.ties = bad + 1;
    CHECK(bp_solve_table(&t, &req, &res, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "matches no layer");
    bp_tie twice[] = {{"^b0", 1, 0}, {"^b0\\.q$", 1, 0}};
    req.ties = twice, req.n_ties = 2;
    CHECK(bp_solve_table(&t, &req, &res, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "already tied");
    /* pins that leave no agreeing combination */
    bp_pin pins[] = {{"b0.q", 2, 0}, {"b0.k", 8, 0}};
    req.ties = bad + 2, req.n_ties = 1, req.pins = pins, req.n_pins = 2;
    CHECK(bp_solve_table(&t, &req, &res, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "no combination");
    bp_table_free(&t);
}

int main(void)
{
    test_against_enumeration();
    test_errors();
    return check_done();
}
