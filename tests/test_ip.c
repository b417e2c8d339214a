/*
 * test_ip.c - the GLPK integer program against exhaustive search.
 *
 * Hundreds of small random instances (2-6 layers, 2-6 candidates) with
 * every objective/budget combination, pins, deliberate ties and budgets set
 * exactly at some plan's total are solved both by bp_solve_ip and by
 * enumerating every plan; the optimum, the lexicographic tie-break and
 * every budget are checked independently.  Also: infeasibility reports,
 * bad inputs, badly scaled data, time limits, determinism, and one
 * 2,000-layer x 20-candidate instance (its time is printed, not asserted).
 */
#include <stdlib.h>

#include "check.h"
#include "common/bp_profile.h"
#include "solvers/ip.h"

#define MAX_L 6
#define MAX_C 6

typedef struct inst {
    size_t n_layers;
    size_t first[MAX_L + 1];
    double err[MAX_L * MAX_C];
    double bits[MAX_L * MAX_C];
    unsigned char allowed[MAX_L * MAX_C];
    int use_allowed;
} inst;

/* What enumerating every plan says. */
typedef struct truth {
    int feasible;
    double best[2];          /* (objective, other resource) lex-minimum */
    int single;              /* first budget that alone is infeasible, or -1 */
    double single_min;
} truth;

static bp_problem inst_problem(const inst *in)
{
    bp_problem p = {in->n_layers, in->first, {in->err, in->bits},
                    in->use_allowed ? in->allowed : NULL};
    return p;
}

static int cand_ok(const inst *in, size_t c)
{
    return !in->use_allowed || in->allowed[c];
}

/* total of one resource in layer order (as the solver promises) */
static double plan_total(const inst *in, const double *v, const size_t *choice)
{
    double s = 0.0;
    for (size_t l = 0; l < in->n_layers; l++)
        s += v[choice[l]];
    return s;
}

static const double *res_of(const inst *in, bp_resource r)
{
    return r == BP_RES_ERROR ? in->err : in->bits;
}

static int plan_meets(const inst *in, const bp_budget *b, size_t nb, const size_t *choice)
{
    for (size_t i = 0; i < nb; i++)
        if (plan_total(in, res_of(in, b[i].resource), choice) > b[i].limit)
            return 0;
    return 1;
}

/* Next plan in mixed radix over allowed candidates; 0 when done. */
static int next_plan(const inst *in, size_t *choice)
{
    for (size_t l = 0; l < in->n_layers; l++) {
        size_t c = choice[l] + 1;
        while (c < in->first[l + 1] && !cand_ok(in, c))
            c++;
        if (c < in->first[l + 1]) {
            choice[l] = c;
            return 1;
        }
        c = in->first[l];
        while (!cand_ok(in, c))
            c++;
        choice[l] = c;
    }
    return 0;
}

static void first_plan(const inst *in, size_t *choice)
{
    for (size_t l = 0; l < in->n_layers; l++) {
        size_t c = in->first[l];
        while (!cand_ok(in, c))
            c++;
        choice[l] = c;
    }
}

static double min_total(const inst *in, const double *v)
{
    double s = 0.0;
    for (size_t l = 0; l < in->n_layers; l++) {
        double m = INFINITY;
        for (size_t c = in->first[l]; c < in->first[l + 1]; c++)
            if (cand_ok(in, c) && v[c] < m)
                m = v[c];
        s += m;
    }
    return s;
}

/* Objective values within this of the optimum count as ties for stage 2. */
static double lex_slack(bp_resource obj, double best)
{
    return obj == BP_RES_BITS ? 0.0 : 1e-12 * fabs(best);
}

static truth exhaustive(const inst *in, const bp_solve_opts *o)
{
    truth t = {0, {INFINITY, INFINITY}, -1, NAN};
    const double *vo = res_of(in, o->objective), *vs = res_of(in, 1 - o->objective);
    size_t choice[MAX_L];
    for (size_t b = 0; b < o->n_budgets && t.single < 0; b++) {
        double m = min_total(in, res_of(in, o->budgets[b].resource));
        if (m > o->budgets[b].limit)
            t.single = (int)b, t.single_min = m;
    }
    first_plan(in, choice);
    do {       /* pass 1: best objective */
        if (plan_meets(in, o->budgets, o->n_budgets, choice)) {
            t.feasible = 1;
            t.best[0] = fmin(t.best[0], plan_total(in, vo, choice));
        }
    } while (next_plan(in, choice));
    first_plan(in, choice);
    do {       /* pass 2: best other resource among optimal plans */
        if (plan_meets(in, o->budgets, o->n_budgets, choice) &&
            plan_total(in, vo, choice) <= t.best[0] + lex_slack(o->objective, t.best[0]))
            t.best[1] = fmin(t.best[1], plan_total(in, vs, choice));
    } while (next_plan(in, choice));
    return t;
}

static int rel_eq(double a, double b, double tol)
{
    return fabs(a - b) <= tol * fmax(fabs(a), fabs(b)) || a == b;
}

static int choice_valid(const inst *in, const size_t *choice)
{
    for (size_t l = 0; l < in->n_layers; l++)
        if (choice[l] < in->first[l] || choice[l] >= in->first[l + 1] ||
            !cand_ok(in, choice[l]))
            return 0;
    return 1;
}

static int n_compared, n_feasible, n_infeasible;

/* Solve one instance both ways and compare everything. */
static void compare(const inst *in, const bp_solve_opts *o, const char *what, int id)
{
    bp_problem p = inst_problem(in);
    bp_solution sol;
    bp_error err = {{0}};
    truth t = exhaustive(in, o);
    int rc = bp_solve_ip(&p, o, &sol, &err);
    n_compared++;
    CHECK_MSG(rc == 0, "%s #%d: %s", what, id, err.msg);
    if (!t.feasible) {
        n_infeasible++;
        CHECK_MSG(sol.status == BP_SOLVE_INFEASIBLE, "%s #%d: status %s", what, id,
                  bp_solve_status_name(sol.status));
        CHECK_MSG(sol.binding_budget == t.single, "%s #%d: binding %d vs %d", what, id,
                  sol.binding_budget, t.single);
        if (t.single >= 0)
            CHECK_MSG(sol.min_feasible == t.single_min, "%s #%d: min %.17g vs %.17g", what,
                      id, sol.min_feasible, t.single_min);
        CHECK(sol.choice == NULL);
        bp_solution_free(&sol);
        return;
    }
    n_feasible++;
    CHECK_MSG(sol.status == BP_SOLVE_OPTIMAL, "%s #%d: status %s", what, id,
              bp_solve_status_name(sol.status));
    if (sol.choice && choice_valid(in, sol.choice)) {
        const double *vo = res_of(in, o->objective), *vs = res_of(in, 1 - o->objective);
        double got0 = plan_total(in, vo, sol.choice), got1 = plan_total(in, vs, sol.choice);
        CHECK_MSG(plan_meets(in, o->budgets, o->n_budgets, sol.choice),
                  "%s #%d: plan breaks a budget", what, id);
        CHECK_MSG(rel_eq(got0, t.best[0], 1e-9), "%s #%d: objective %.17g vs best %.17g",
                  what, id, got0, t.best[0]);
        CHECK_MSG(rel_eq(got1, t.best[1], 1e-9), "%s #%d: tie-break %.17g vs best %.17g",
                  what, id, got1, t.best[1]);
        CHECK(sol.objective == got0);
        CHECK(sol.totals[BP_RES_ERROR] == plan_total(in, in->err, sol.choice));
        CHECK(sol.totals[BP_RES_BITS] == plan_total(in, in->bits, sol.choice));
        CHECK(sol.gap == 0.0);
    } else {
        CHECK_MSG(0, "%s #%d: no valid plan returned", what, id);
    }
    bp_solution_free(&sol);
}

/* ---- random instances ------------------------------------------------------ */

enum { DATA_PLAIN, DATA_TIES, DATA_SCALED };

/* Candidate values: realistic (more bits, less error), tied or badly scaled. */
static void fill_candidate(inst *in, size_t c, double params, int kind, check_rng *rng)
{
    int wbits = 2 + (int)(check_uniform(rng) * 7);
    if (kind == DATA_TIES) {
        in->err[c] = 0.25 * (double)(1 + (int)(check_uniform(rng) * 4));
        in->bits[c] = 10.0 * (double)(1 + (int)(check_uniform(rng) * 4));
    } else if (kind == DATA_SCALED) {
        in->err[c] = pow(10.0, -10.0 + 13.0 * check_uniform(rng));
        in->bits[c] = params * wbits + 32.0 * floor(params / 128.0);
    } else {
        in->err[c] = check_uniform(rng) * params / (double)(1 << wbits);
        in->bits[c] = params * wbits + 16.0 * (double)(1 + (int)(check_uniform(rng) * 4));
    }
}

static void random_inst(inst *in, int kind, int pins, check_rng *rng)
{
    memset(in, 0, sizeof *in);
    in->n_layers = 2 + (size_t)(check_uniform(rng) * (MAX_L - 1));
    for (size_t l = 0; l < in->n_layers; l++) {
        size_t k = 2 + (size_t)(check_uniform(rng) * (MAX_C - 1));
        double params = kind == DATA_SCALED ? floor(1e8 * (0.5 + check_uniform(rng)))
                                            : floor(10 + 200 * check_uniform(rng));
        in->first[l + 1] = in->first[l] + k;
        for (size_t c = in->first[l]; c < in->first[l + 1]; c++) {
            fill_candidate(in, c, params, kind, rng);
            in->allowed[c] = !pins || check_uniform(rng) < 0.6;
        }
        in->allowed[in->first[l] + (size_t)(check_uniform(rng) * (double)k)] = 1;
    }
    in->use_allowed = pins;
}

/* A limit somewhere between the smallest and largest total; now and then
 * exactly some plan's total, or just below the smallest (infeasible). */
static double random_limit(const inst *in, const double *v, check_rng *rng)
{
    double lo = 0.0, hi = 0.0, u = check_uniform(rng);
    size_t choice[MAX_L];
    for (size_t l = 0; l < in->n_layers; l++) {
        double a = INFINITY, b = -INFINITY;
        for (size_t c = in->first[l]; c < in->first[l + 1]; c++)
            if (cand_ok(in, c)) {
                a = fmin(a, v[c]), b = fmax(b, v[c]);
                if (check_uniform(rng) < 0.5 || a == v[c])
                    choice[l] = c;
            }
        lo += a, hi += b;
    }
    if (u < 0.3)
        return plan_total(in, v, choice);       /* exactly at a plan */
    if (u < 0.36)
        return lo * (1.0 - 1e-6) - 1e-9;        /* below every plan */
    return lo + (hi - lo) * check_uniform(rng);
}

/* Objective + budgets by mode: 0 error|bits, 1 bits|error, 2 error|both,
 * 3 bits|both. */
static void set_mode(const inst *in, int mode, bp_solve_opts *o, bp_budget *b,
                     check_rng *rng)
{
    bp_solve_opts_init(o);
    o->objective = mode == 1 || mode == 3 ? BP_RES_BITS : BP_RES_ERROR;
    size_t nb = 0;
    if (mode != 1)
        b[nb++] = (bp_budget){BP_RES_BITS, random_limit(in, in->bits, rng)};
    if (mode != 0)
        b[nb++] = (bp_budget){BP_RES_ERROR, random_limit(in, in->err, rng)};
    o->budgets = b;
    o->n_budgets = nb;
}

static void test_against_exhaustive(void)
{
    static const char *const kinds[] = {"plain", "ties", "scaled"};
    check_rng rng = {0x1234567887654321ULL};
    int id = 0;
    for (int kind = DATA_PLAIN; kind <= DATA_SCALED; kind++)
        for (int mode = 0; mode < 4; mode++)
            for (int pins = 0; pins < 2; pins++)
                for (int rep = 0; rep < (kind == DATA_SCALED ? 20 : 40); rep++) {
                    inst in;
                    bp_solve_opts o;
                    bp_budget b[2];
                    char what[64];
                    random_inst(&in, kind, pins, &rng);
                    set_mode(&in, mode, &o, b, &rng);
                    snprintf(what, sizeof what, "%s mode %d pins %d", kinds[kind], mode, pins);
                    compare(&in, &o, what, id++);
                    o.glpk_only = 1;       /* the same without the frontier route */
                    snprintf(what, sizeof what, "%s mode %d pins %d glpk", kinds[kind], mode,
                             pins);
                    compare(&in, &o, what, id++);
                }
    printf("exhaustive: %d instances (%d feasible, %d infeasible)\n", n_compared,
           n_feasible, n_infeasible);
    CHECK(n_compared >= 200);
}

/* ---- hand-made cases ------------------------------------------------------- */

/* 3 layers x 3 candidates: bits 2/4/8 per parameter, errors falling. */
static void small_inst(inst *in)
{
    static const double params[3] = {100, 200, 50};
    static const double e[3] = {1.0, 0.3, 0.01};
    memset(in, 0, sizeof *in);
    in->n_layers = 3;
    for (size_t l = 0; l < 3; l++) {
        in->first[l + 1] = in->first[l] + 3;
        for (size_t k = 0; k < 3; k++) {
            size_t c = in->first[l] + k;
            in->bits[c] = params[l] * (double)(2 << k);
            in->err[c] = e[k] * (double)(l + 1);
            in->allowed[c] = 1;
        }
    }
}

static void test_infeasible_budgets(void)
{
    inst in;
    small_inst(&in);
    bp_problem p = inst_problem(&in);
    bp_solve_opts o;
    bp_solution sol;
    bp_error err = {{0}};
    double min_bits = 0.0;
    CHECK(bp_problem_min_resource(&p, BP_RES_BITS, &min_bits, &err) == 0);
    CHECK(min_bits == 2.0 * 350.0);
    bp_budget b[2] = {{BP_RES_ERROR, 100.0}, {BP_RES_BITS, 699.0}};
    bp_solve_opts_init(&o);
    o.budgets = b;
    o.n_budgets = 2;
    CHECK(bp_solve_ip(&p, &o, &sol, &err) == 0);
    CHECK(sol.status == BP_SOLVE_INFEASIBLE);
    CHECK(sol.binding_budget == 1);
    CHECK(sol.min_feasible == 700.0);
    CHECK(sol.choice == NULL);
    bp_solution_free(&sol);
    /* each alone feasible (bits 700 needs error 6, error 0.06 needs 2800 bits) */
    b[0] = (bp_budget){BP_RES_BITS, 700.0};
    b[1] = (bp_budget){BP_RES_ERROR, 1.0};
    CHECK(bp_solve_ip(&p, &o, &sol, &err) == 0);
    CHECK(sol.status == BP_SOLVE_INFEASIBLE);
    CHECK(sol.binding_budget == -1);
    bp_solution_free(&sol);
    /* at exactly the smallest value it is feasible */
    b[1] = (bp_budget){BP_RES_ERROR, 6.0};
    CHECK(bp_solve_ip(&p, &o, &sol, &err) == 0);
    CHECK(sol.status == BP_SOLVE_OPTIMAL);
    CHECK(sol.totals[BP_RES_BITS] == 700.0 && sol.totals[BP_RES_ERROR] == 6.0);
    bp_solution_free(&sol);
}

static void test_layer_without_candidates(void)
{
    inst in;
    small_inst(&in);
    in.use_allowed = 1;
    in.allowed[6] = in.allowed[7] = in.allowed[8] = 0;   /* layer 2 */
    bp_problem p = inst_problem(&in);
    bp_budget b = {BP_RES_BITS, 5000.0};
    bp_solve_opts o;
    bp_solution sol;
    bp_error err = {{0}};
    double m;
    bp_solve_opts_init(&o);
    o.budgets = &b;
    o.n_budgets = 1;
    CHECK(bp_solve_ip(&p, &o, &sol, &err) == -1);
    CHECK(sol.status == BP_SOLVE_ERROR);
    CHECK(sol.choice == NULL);
    CHECK_STR_CONTAINS(err.msg, "layer 2");
    CHECK(bp_problem_min_resource(&p, BP_RES_ERROR, &m, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "layer 2");
    bp_solution_free(&sol);
}

static void test_bad_inputs(void)
{
    inst in;
    small_inst(&in);
    bp_problem p = inst_problem(&in);
    bp_budget b = {BP_RES_BITS, NAN};
    bp_solve_opts o;
    bp_solution sol;
    bp_error err = {{0}};
    bp_solve_opts_init(&o);
    o.budgets = &b;
    o.n_budgets = 1;
    CHECK(bp_solve_ip(&p, &o, &sol, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "NaN");
    b.limit = 1e6;
    o.mip_gap = -1.0;
    CHECK(bp_solve_ip(&p, &o, &sol, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "mip_gap");
    o.mip_gap = 0.0;
    in.err[4] = NAN;
    CHECK(bp_solve_ip(&p, &o, &sol, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "layer 1, candidate 4");
    in.err[4] = 0.5;
    p.res[BP_RES_BITS] = NULL;          /* a budget on a resource with no values */
    CHECK(bp_solve_ip(&p, &o, &sol, &err) == -1);
    CHECK_STR_CONTAINS(err.msg, "bits");
    bp_solution_free(&sol);
}

static void test_names_and_defaults(void)
{
    bp_solve_opts o;
    bp_solve_opts_init(&o);
    CHECK(o.objective == BP_RES_ERROR && o.n_budgets == 0 && o.mip_gap == 0.0);
    CHECK(strcmp(bp_solve_status_name(BP_SOLVE_OPTIMAL), "optimal") == 0);
    CHECK(strcmp(bp_solve_status_name(BP_SOLVE_FEASIBLE), "feasible") == 0);
    CHECK(strcmp(bp_solve_status_name(BP_SOLVE_INFEASIBLE), "infeasible") == 0);
    CHECK(strcmp(bp_solve_status_name(BP_SOLVE_TIME_LIMIT), "time_limit") == 0);
    CHECK(strcmp(bp_solve_status_name(BP_SOLVE_ERROR), "error") == 0);
}

/* No budgets: every layer takes its smallest error, ties to fewer bits. */
static void test_no_budget(void)
{
    inst in;
    small_inst(&in);
    in.err[1] = in.err[2];                  /* layer 0: 4 and 8 bits tie */
    bp_problem p = inst_problem(&in);
    bp_solve_opts o;
    bp_solution sol;
    bp_error err = {{0}};
    bp_solve_opts_init(&o);
    CHECK(bp_solve_ip(&p, &o, &sol, &err) == 0);
    CHECK(sol.status == BP_SOLVE_OPTIMAL);
    CHECK(sol.choice && sol.choice[0] == 1 && sol.choice[1] == 5 && sol.choice[2] == 8);
    bp_solution_free(&sol);
    /* exact duplicates: the lowest index wins */
    in.err[0] = in.err[1] = in.err[2] = 0.5;
    in.bits[0] = in.bits[1] = in.bits[2] = 64;
    CHECK(bp_solve_ip(&p, &o, &sol, &err) == 0);
    CHECK(sol.choice && sol.choice[0] == 0);
    bp_solution_free(&sol);
}

/* ---- a large instance ------------------------------------------------------ */

typedef struct big {
    size_t n_layers, k;
    size_t *first;
    double *err, *bits, params;
} big;

/* 20 candidates = 5 weight widths x 4 activation widths per layer. */
static void big_make(big *g, size_t n_layers, int distinct_bits, check_rng *rng)
{
    static const int wb[5] = {2, 3, 4, 6, 8}, ab[4] = {4, 6, 8, 16};
    g->n_layers = n_layers;
    g->k = 20;
    g->first = malloc((n_layers + 1) * sizeof *g->first);
    g->err = malloc(n_layers * g->k * sizeof *g->err);
    g->bits = malloc(n_layers * g->k * sizeof *g->bits);
    g->params = 0.0;
    g->first[0] = 0;
    for (size_t l = 0; l < n_layers; l++) {
        double params = floor(1e4 + 4e6 * check_uniform(rng) * check_uniform(rng));
        double sens = exp(4.0 * check_normal(rng));
        g->params += params;
        g->first[l + 1] = g->first[l] + g->k;
        for (size_t j = 0; j < g->k; j++) {
            size_t c = g->first[l] + j;
            int w = wb[j / 4], a = ab[j % 4];
            double noise = 1.0 + 0.2 * check_uniform(rng);
            g->err[c] = sens * params * (pow(4.0, -w) + 0.5 * pow(4.0, -a)) * noise;
            g->bits[c] = params * w + 16.0 * ceil(params / 128.0) +
                         (distinct_bits ? (double)(j % 4) * ceil(params / 64.0) : 0.0);
        }
    }
}

static void big_free(big *g)
{
    free(g->first);
    free(g->err);
    free(g->bits);
}

/* A feasible plan by greedy: everyone at the cheapest, then buy the best
 * error drop per bit while the budget lasts (a bound the IP must beat). */
static double greedy_error(const big *g, double limit)
{
    size_t *ch = malloc(g->n_layers * sizeof *ch);
    double used = 0.0, e = 0.0;
    for (size_t l = 0; l < g->n_layers; l++) {
        size_t b = g->first[l];
        for (size_t c = g->first[l]; c < g->first[l + 1]; c++)
            if (g->bits[c] < g->bits[b] || (g->bits[c] == g->bits[b] && g->err[c] < g->err[b]))
                b = c;
        ch[l] = b;
        used += g->bits[b];
    }
    for (;;) {
        double best = 0.0;
        size_t bl = 0, bc = 0;
        for (size_t l = 0; l < g->n_layers; l++)
            for (size_t c = g->first[l]; c < g->first[l + 1]; c++) {
                double db = g->bits[c] - g->bits[ch[l]], de = g->err[ch[l]] - g->err[c];
                if (de > 0 && used + db <= limit && (db <= 0 ? INFINITY : de / db) > best)
                    best = db <= 0 ? INFINITY : de / db, bl = l, bc = c;
            }
        if (best == 0.0)
            break;
        used += g->bits[bc] - g->bits[ch[bl]];
        ch[bl] = bc;
    }
    for (size_t l = 0; l < g->n_layers; l++)
        e += g->err[ch[l]];
    free(ch);
    return e;
}

static void big_solve(const big *g, double avg_bits, const char *label)
{
    bp_problem p = {g->n_layers, g->first, {g->err, g->bits}, NULL};
    bp_budget b = {BP_RES_BITS, floor(avg_bits * g->params)};
    bp_solve_opts o;
    bp_solution sol, again;
    bp_error err = {{0}};
    bp_solve_opts_init(&o);
    o.budgets = &b;
    o.n_budgets = 1;
    double t0 = bp_now();
    int rc = bp_solve_ip(&p, &o, &sol, &err);
    double t1 = bp_now();
    CHECK_MSG(rc == 0, "%s", err.msg);
    CHECK_MSG(sol.status == BP_SOLVE_OPTIMAL, "%s: %s", label, bp_solve_status_name(sol.status));
    if (sol.choice) {
        double bits = 0.0;
        for (size_t l = 0; l < g->n_layers; l++)
            bits += g->bits[sol.choice[l]];
        CHECK(bits <= b.limit);
        CHECK(sol.objective <= greedy_error(g, b.limit) * (1.0 + 1e-12));
    }
    printf("large %s: %zu x %zu, avg_bits %.2f: %s in %.3f s (solver says %.3f s), "
           "error %.6g, %.4f bits/weight\n", label, g->n_layers, g->k, avg_bits,
           bp_solve_status_name(sol.status), t1 - t0, sol.seconds, sol.objective,
           sol.totals[BP_RES_BITS] / g->params);
    /* same input, same plan */
    CHECK(bp_solve_ip(&p, &o, &again, &err) == 0);
    CHECK(sol.choice && again.choice &&
          memcmp(sol.choice, again.choice, g->n_layers * sizeof *sol.choice) == 0);
    bp_solution_free(&sol);
    bp_solution_free(&again);
}

static void test_large(void)
{
    check_rng rng = {0x9e3779b97f4a7c15ULL};
    big g;
    big_make(&g, 2000, 0, &rng);
    big_solve(&g, 4.25, "5 widths");
    big_solve(&g, 3.0, "5 widths");
    big_free(&g);
    big_make(&g, 2000, 1, &rng);
    big_solve(&g, 4.6, "20 sizes");
    big_free(&g);
}

/* A tiny time limit or a loose gap may stop early, never with a bad plan. */
static void test_limits(void)
{
    check_rng rng = {0x51ed2701ULL};
    big g;
    big_make(&g, 800, 1, &rng);
    bp_problem p = {g.n_layers, g.first, {g.err, g.bits}, NULL};
    bp_budget b = {BP_RES_BITS, floor(3.7 * g.params)};
    bp_solve_opts o;
    bp_solution sol;
    bp_error err = {{0}};
    bp_solve_opts_init(&o);
    o.budgets = &b;
    o.n_budgets = 1;
    for (int t = 0; t < 2; t++) {
        o.time_limit = t == 0 ? 1e-4 : 0.0;
        o.mip_gap = t == 0 ? 0.0 : 0.05;
        CHECK(bp_solve_ip(&p, &o, &sol, &err) == 0);
        CHECK(sol.status != BP_SOLVE_INFEASIBLE && sol.status != BP_SOLVE_ERROR);
        if (sol.status == BP_SOLVE_OPTIMAL || sol.status == BP_SOLVE_FEASIBLE) {
            double bits = 0.0;
            for (size_t l = 0; l < g.n_layers; l++)
                bits += g.bits[sol.choice[l]];
            CHECK(bits <= b.limit);
        } else {
            CHECK(sol.status == BP_SOLVE_TIME_LIMIT && sol.choice == NULL);
        }
        if (sol.status == BP_SOLVE_FEASIBLE && t == 1)
            CHECK(sol.gap <= 0.05 + 1e-9);
        printf("limits: time_limit %g s, mip_gap %g: %s, gap %g\n", o.time_limit, o.mip_gap,
               bp_solve_status_name(sol.status), sol.gap);
        bp_solution_free(&sol);
    }
    big_free(&g);
}

int main(void)
{
    test_names_and_defaults();
    test_against_exhaustive();
    test_infeasible_budgets();
    test_layer_without_candidates();
    test_bad_inputs();
    test_no_budget();
    test_limits();
    test_large();
    return check_done();
}
