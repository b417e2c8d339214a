/*
 * test_frontier.c - the exact Pareto frontier against exhaustive search,
 * and the integer program against the frontier: on random instances with
 * ties and pins, the IP's optimum under a size budget is the error of the
 * frontier's last point within that budget; hull points are the ones a
 * Lagrangian sweep reaches.
 */
#include <stdlib.h>

#include "check.h"
#include "solvers/frontier.h"

#define ML 6
#define MC 5

typedef struct inst {
    size_t n_layers, first[ML + 1];
    double err[ML * MC], bits[ML * MC];
    unsigned char allowed[ML * MC];
} inst;

static void make(inst *in, check_rng *r, int ties, int pins)
{
    memset(in, 0, sizeof *in);
    in->n_layers = 1 + (size_t)(check_uniform(r) * ML);
    for (size_t l = 0; l < in->n_layers; l++) {
        size_t k = 1 + (size_t)(check_uniform(r) * MC);
        in->first[l + 1] = in->first[l] + k;
        double params = 10 + floor(100 * check_uniform(r));
        for (size_t c = in->first[l]; c < in->first[l + 1]; c++) {
            int w = 2 + (int)(check_uniform(r) * 7);
            in->bits[c] = ties ? 8.0 * (1 + (int)(check_uniform(r) * 3)) : params * w + 16;
            in->err[c] = ties ? 0.5 * (1 + (int)(check_uniform(r) * 3))
                              : params * check_uniform(r) / (double)(1 << w);
            in->allowed[c] = !pins || check_uniform(r) < 0.6;
        }
        in->allowed[in->first[l]] = 1;
    }
}

static bp_problem problem(inst *in, int pins)
{
    bp_problem p = {in->n_layers, in->first, {in->err, in->bits}, pins ? in->allowed : NULL};
    return p;
}

/* Every plan's (bits, error), summed in layer order. */
static size_t all_plans(const inst *in, int pins, double *rb, double *re)
{
    size_t choice[ML], n = 0;
    for (size_t l = 0; l < in->n_layers; l++)
        choice[l] = in->first[l];
    for (;;) {
        int ok = 1;
        double b = 0, e = 0;
        for (size_t l = 0; l < in->n_layers; l++) {
            ok &= !pins || in->allowed[choice[l]];
            b += in->bits[choice[l]], e += in->err[choice[l]];
        }
        if (ok)
            rb[n] = b, re[n] = e, n++;
        size_t l = 0;
        while (l < in->n_layers && ++choice[l] == in->first[l + 1])
            choice[l] = in->first[l], l++;
        if (l == in->n_layers)
            return n;
    }
}

static void test_against_enumeration(void)
{
    check_rng rng = {0xf407ULL};
    bp_error err;
    static double rb[16000], re[16000];
    int compared = 0;
    for (int rep = 0; rep < 300; rep++) {
        inst in;
        int ties = rep % 3 == 0, pins = rep % 2;
        make(&in, &rng, ties, pins);
        bp_problem p = problem(&in, pins);
        bp_frontier f;
        CHECK_MSG(bp_pareto_frontier(&p, BP_RES_BITS, 100000, &f, &err) == 0, "%s", err.msg);
        size_t n = all_plans(&in, pins, rb, re), nd = 0;
        /* the non-dominated distinct points of the enumeration */
        int same = 1;
        for (size_t i = 0; i < n; i++) {
            int dominated = 0, dup_before = 0;
            for (size_t j = 0; j < n && !dominated; j++) {
                dominated = (rb[j] <= rb[i] && re[j] < re[i]) || (rb[j] < rb[i] && re[j] <= re[i]);
                dup_before |= j < i && rb[j] == rb[i] && re[j] == re[i];
            }
            if (dominated || dup_before)
                continue;
            nd++;
            int found = 0;
            for (size_t k = 0; k < f.n; k++)
                found |= f.p[k].res == rb[i] && f.p[k].error == re[i];
            same &= found;
        }
        CHECK_MSG(same && nd == f.n, "rep %d: frontier %zu points, enumeration %zu", rep, f.n, nd);
        /* each point's plan gives its totals */
        int plans_ok = 1;
        for (size_t k = 0; k < f.n; k++) {
            double b = 0, e = 0;
            for (size_t l = 0; l < in.n_layers; l++) {
                size_t c = f.choice[k * in.n_layers + l];
                plans_ok &= c >= in.first[l] && c < in.first[l + 1] && (!pins || in.allowed[c]);
                b += in.bits[c], e += in.err[c];
            }
            plans_ok &= b == f.p[k].res && e == f.p[k].error;
        }
        CHECK(plans_ok);
        compared++;
        bp_frontier_free(&f);
    }
    CHECK(compared == 300);
}

static void test_ip_on_frontier(void)
{
    check_rng rng = {0x1f1fULL};
    bp_error err;
    int checked = 0;
    for (int rep = 0; rep < 150; rep++) {
        inst in;
        int pins = rep % 2;
        make(&in, &rng, rep % 3 == 0, pins);
        bp_problem p = problem(&in, pins);
        bp_frontier f;
        if (bp_pareto_frontier(&p, BP_RES_BITS, 100000, &f, &err) < 0)
            continue;
        for (size_t k = 0; k < f.n; k++) {
            /* budget exactly at the point, and just below the next point */
            double limits[2] = {f.p[k].res, k + 1 < f.n ? f.p[k + 1].res - 0.5 : f.p[k].res + 7};
            for (int t = 0; t < 2; t++) {
                bp_budget b = {BP_RES_BITS, limits[t]};
                bp_solve_opts o;
                bp_solution sol;
                bp_solve_opts_init(&o);
                o.budgets = &b;
                o.n_budgets = 1;
                CHECK(bp_solve_ip(&p, &o, &sol, &err) == 0);
                CHECK_MSG(sol.status == BP_SOLVE_OPTIMAL && sol.objective == f.p[k].error,
                          "rep %d point %zu: ip %.17g vs frontier %.17g", rep, k, sol.objective,
                          f.p[k].error);
                bp_solution_free(&sol);
                checked++;
            }
        }
        /* hull: the minimum of error + lambda * bits is always at a hull point */
        for (int t = 0; t < 20; t++) {
            double lam = pow(10.0, -4 + 4 * check_uniform(&rng)), best = INFINITY;
            int on_hull = 0;
            for (size_t k = 0; k < f.n; k++) {
                double v = f.p[k].error + lam * f.p[k].res;
                if (v < best)
                    best = v, on_hull = f.p[k].on_hull;
            }
            CHECK(on_hull);
        }
        CHECK(f.p[0].on_hull && f.p[f.n - 1].on_hull);
        bp_frontier_free(&f);
    }
    printf("ip vs frontier: %d budgets\n", checked);
    CHECK(checked > 300);
}

/* BOPs as a third resource: budgets on size and BOPs at once, and BOPs as
 * the objective under an error budget, against enumeration. */
static void test_three_resources(void)
{
    check_rng rng = {0xb0b5ULL};
    bp_error err;
    int compared = 0;
    for (int rep = 0; rep < 200; rep++) {
        inst in;
        double bops[ML * MC];
        make(&in, &rng, rep % 4 == 0, rep % 2);
        for (size_t c = 0; c < in.first[in.n_layers]; c++)
            bops[c] = floor(1000 * check_uniform(&rng)) * (rep % 4 == 0 ? 0 : 1) + 64 * (c % 3);
        int pins = rep % 2;
        bp_problem p = {in.n_layers, in.first, {in.err, in.bits, bops, NULL},
                        pins ? in.allowed : NULL};
        /* limits: somewhere between each resource's extremes */
        double lo[3] = {0}, hi[3] = {0};
        const double *v[3] = {in.err, in.bits, bops};
        for (size_t l = 0; l < in.n_layers; l++)
            for (int r = 0; r < 3; r++) {
                double a = INFINITY, b = -INFINITY;
                for (size_t c = in.first[l]; c < in.first[l + 1]; c++)
                    if (!pins || in.allowed[c])
                        a = fmin(a, v[r][c]), b = fmax(b, v[r][c]);
                lo[r] += a, hi[r] += b;
            }
        for (int mode = 0; mode < 2; mode++) {
            bp_budget b[2];
            bp_solve_opts o;
            bp_solve_opts_init(&o);
            if (mode == 0) {             /* min error s.t. bits and bops */
                b[0] = (bp_budget){BP_RES_BITS, lo[1] + (hi[1] - lo[1]) * check_uniform(&rng)};
                b[1] = (bp_budget){BP_RES_BOPS, lo[2] + (hi[2] - lo[2]) * check_uniform(&rng)};
                o.n_budgets = 2;
            } else {                     /* min bops s.t. error */
                o.objective = BP_RES_BOPS;
                b[0] = (bp_budget){BP_RES_ERROR, lo[0] + (hi[0] - lo[0]) * check_uniform(&rng)};
                o.n_budgets = 1;
            }
            o.budgets = b;
            /* enumerate */
            size_t choice[ML];
            double best = INFINITY;
            for (size_t l = 0; l < in.n_layers; l++)
                choice[l] = in.first[l];
            for (;;) {
                int ok = 1;
                double t[3] = {0, 0, 0};
                for (size_t l = 0; l < in.n_layers; l++) {
                    ok &= !pins || in.allowed[choice[l]];
                    for (int r = 0; r < 3; r++)
                        t[r] += v[r][choice[l]];
                }
                for (size_t k = 0; ok && k < o.n_budgets; k++)
                    ok &= t[b[k].resource == BP_RES_ERROR ? 0 : b[k].resource == BP_RES_BITS ? 1 : 2]
                          <= b[k].limit;
                if (ok)
                    best = fmin(best, t[mode == 0 ? 0 : 2]);
                size_t l = 0;
                while (l < in.n_layers && ++choice[l] == in.first[l + 1])
                    choice[l] = in.first[l], l++;
                if (l == in.n_layers)
                    break;
            }
            bp_solution sol;
            CHECK(bp_solve_ip(&p, &o, &sol, &err) == 0);
            if (best == INFINITY) {
                CHECK_MSG(sol.status == BP_SOLVE_INFEASIBLE, "rep %d mode %d: status %s", rep,
                          mode, bp_solve_status_name(sol.status));
            } else {
                CHECK_MSG(sol.status == BP_SOLVE_OPTIMAL &&
                          fabs(sol.objective - best) <= 1e-9 * fmax(1.0, fabs(best)),
                          "rep %d mode %d: %.17g vs %.17g", rep, mode, sol.objective, best);
                for (size_t k = 0; sol.choice && k < o.n_budgets; k++)
                    CHECK(sol.totals[b[k].resource] <= b[k].limit);
            }
            bp_solution_free(&sol);
            compared++;
        }
    }
    CHECK(compared == 400);
}

static void test_limits(void)
{
    /* 12 layers x 5 candidates whose plans all lie on one line (distinct
     * sizes c * 5^l, error falling exactly as size grows): all 5^12 plans are
     * on the frontier; a small cap fails clearly instead of eating memory */
    static size_t first[13];
    static double e[60], b[60];
    for (size_t l = 0; l < 12; l++) {
        first[l + 1] = first[l] + 5;
        for (size_t c = 0; c < 5; c++) {
            b[l * 5 + c] = (double)c * pow(5.0, (double)l);
            e[l * 5 + c] = 1e9 - b[l * 5 + c];
        }
    }
    bp_problem p = {12, first, {e, b}, NULL};
    bp_frontier f;
    bp_error err;
    err.msg[0] = '\0';
    int rc = bp_pareto_frontier(&p, BP_RES_BITS, 1000, &f, &err);
    CHECK(rc < 0);
    CHECK_STR_CONTAINS(err.msg, "too large");
    CHECK(f.p == NULL && f.n == 0);
    if (rc == 0)
        bp_frontier_free(&f);
    /* with room, the 5^5 points of 5 such layers all come out */
    p.n_layers = 5;
    CHECK(bp_pareto_frontier(&p, BP_RES_BITS, 100000, &f, &err) == 0);
    CHECK(f.n == 3125);
    bp_frontier_free(&f);
}

int main(void)
{
    test_against_enumeration();
    test_ip_on_frontier();
    test_three_resources();
    test_limits();
    return check_done();
}
