/*
 * ip.c - the AdaQuant integer program (ALGORITHMS.md section 5), solved
 * with GLPK.
 *
 * The program, for candidates c of layer l and binary x[c]:
 *
 *     minimise   sum_c v_obj[c] x[c]
 *     subject to sum_{c in l} x[c] = 1                 for every layer l
 *                sum_c v_r[c] x[c] <= limit_b          for every budget b
 *                x[c] = 0                              if c is disallowed
 *
 * The route through this file:
 *   1. validate, and answer infeasibility without GLPK when one budget
 *      alone cannot be met (naming the budget and its smallest value);
 *   2. drop dominated candidates (exact: never changes the optimum);
 *   3. if the per-layer best plan already meets every budget, it is the
 *      optimum and GLPK is not needed;
 *   3b. with one budget and the error objective, the exact Pareto frontier
 *      (frontier.c), when it stays small, answers exactly without GLPK:
 *      its lowest-error point within the budget is the optimum, and the
 *      smallest such plan, as the tie-break asks;
 *   4. with one budget, the multiple-choice knapsack greedy (convex-hull
 *      steps by efficiency) gives a plan U; it is GLPK's first incumbent,
 *      and every candidate whose reduced objective alone exceeds U's is
 *      dropped, which keeps GLPK's objective well scaled;
 *   5. GLPK stage 1 minimises the objective.  Every plan GLPK returns is
 *      re-checked with exact sums; a plan that slipped past GLPK's MIP
 *      preprocessor is re-solved without it, and a budget GLPK's
 *      tolerances still let slip is tightened and re-solved (a "repair");
 *   6. GLPK stage 2 (lexicographic tie-break) keeps the objective at its
 *      stage-1 value and minimises the other resource;
 *   7. a 1-swap polish removes anything GLPK's tolerances left on the table.
 *
 * Budgets are judged on the sum over layers in layer order, in double, with
 * no tolerance: the plan returned satisfies `total <= limit` exactly as any
 * caller summing the same way will see it.
 *
 * The exact shortcuts of steps 2, 3, 4 and 7 are in heuristics.c; what
 * stays here is the GLPK driver (its model, its runs, the exact check and
 * repair of what it returns, the stages), one route read top to bottom,
 * which is why the file is a little over 900 lines.
 */
#include "ip.h"
#include "ipctx.h"
#include "frontier.h"
#include "../common/bp_profile.h"

#include <float.h>
#include <glpk.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>

/* How many times a plan that breaks a budget is tightened and re-solved. */
#define IP_REPAIR_ROUNDS 4
/* GLPK's primal feasibility test is |violation| <= 1e-7 + 1e-10 |bound| in
 * its scaled model (rows scaled to max |a| ~ 1); a repair steps the bound
 * down by a few times that. */
#define IP_GLPK_TOL_ABS 1e-7
#define IP_GLPK_TOL_REL 1e-10
/* Integer sums are exact in double below 2^53. */
#define IP_EXACT_INT 9007199254740992.0

static const char *const ip_res_name[BP_RES_COUNT] = {"error", "bits", "bops", "latency"};

/* ---- small public pieces ------------------------------------------------ */

const char *bp_solve_status_name(bp_solve_status s)
{
    switch (s) {
    case BP_SOLVE_OPTIMAL:
        return "optimal";
    case BP_SOLVE_FEASIBLE:
        return "feasible";
    case BP_SOLVE_INFEASIBLE:
        return "infeasible";
    case BP_SOLVE_TIME_LIMIT:
        return "time_limit";
    case BP_SOLVE_ERROR:
        return "error";
    }
    return "error";
}

void bp_solve_opts_init(bp_solve_opts *o)
{
    memset(o, 0, sizeof *o);
    o->objective = BP_RES_ERROR;
    o->budgets = NULL;
    o->n_budgets = 0;
    o->time_limit = 0.0;
    o->mip_gap = 0.0;
}

void bp_solution_free(bp_solution *sol)
{
    if (!sol)
        return;
    free(sol->choice);
    sol->choice = NULL;
}

/* ---- validation ---------------------------------------------------------- */

static int ip_check_layers(const bp_problem *p, bp_error *err)
{
    if (!p)
        return bp_fail(err, "ip: no problem given");
    if (!p->first)
        return bp_fail(err, "ip: the problem has no candidate offsets (first is NULL)");
    for (size_t l = 0; l < p->n_layers; l++)
        if (p->first[l + 1] < p->first[l])
            return bp_fail(err, "ip: layer %zu: candidate offsets decrease "
                           "(first[%zu] = %zu > first[%zu] = %zu)",
                           l, l, p->first[l], l + 1, p->first[l + 1]);
    return 0;
}

/* Every allowed value of resource r must be a finite number. */
static int ip_check_resource(const bp_problem *p, int r, const char *role, bp_error *err)
{
    if (r < 0 || r >= BP_RES_COUNT)
        return bp_fail(err, "ip: %s resource %d is not a known resource", role, r);
    if (!p->res[r])
        return bp_fail(err, "ip: the %s resource '%s' has no values", role, ip_res_name[r]);
    for (size_t l = 0; l < p->n_layers; l++)
        for (size_t c = p->first[l]; c < p->first[l + 1]; c++)
            if (ip_allowed(p, c) && !isfinite(p->res[r][c]))
                return bp_fail(err, "ip: layer %zu, candidate %zu: %s is %g; expected a "
                               "finite number", l, c, ip_res_name[r], p->res[r][c]);
    return 0;
}

static int ip_check_opts(const bp_problem *p, const bp_solve_opts *o, bp_error *err)
{
    if (!o)
        return bp_fail(err, "ip: no solve options given");
    if (ip_check_resource(p, (int)o->objective, "objective", err) < 0)
        return -1;
    if (o->n_budgets > 0 && !o->budgets)
        return bp_fail(err, "ip: %zu budgets announced but none given", o->n_budgets);
    for (size_t b = 0; b < o->n_budgets; b++) {
        if (ip_check_resource(p, (int)o->budgets[b].resource, "budget", err) < 0)
            return bp_fail_prefix(err, "budget %zu", b);
        if (isnan(o->budgets[b].limit))
            return bp_fail(err, "ip: budget %zu: the limit is NaN", b);
    }
    if (!(o->mip_gap >= 0.0 && o->mip_gap < INFINITY))
        return bp_fail(err, "ip: mip_gap = %g; expected a finite number >= 0", o->mip_gap);
    if (isnan(o->time_limit))
        return bp_fail(err, "ip: time_limit is NaN; expected seconds (<= 0 for none)");
    return 0;
}

/* ---- smallest sums ------------------------------------------------------- */

/* min over allowed c of layer l of v_r[c]; -1 when the layer has none. */
static int ip_layer_min(const bp_problem *p, int r, size_t l, double *out)
{
    int any = 0;
    for (size_t c = p->first[l]; c < p->first[l + 1]; c++) {
        if (!ip_allowed(p, c))
            continue;
        if (!any || p->res[r][c] < *out)
            *out = p->res[r][c];
        any = 1;
    }
    return any ? 0 : -1;
}

static int ip_no_candidate(const bp_problem *p, size_t l, bp_error *err)
{
    size_t n = p->first[l + 1] - p->first[l];
    if (n == 0)
        return bp_fail(err, "layer %zu has no candidates", l);
    return bp_fail(err, "layer %zu has no allowed candidate (all %zu are excluded by "
                   "pins or allowed lists)", l, n);
}

/*
 * min over plans of sum_l v_r[choice_l] = sum_l min_{c in l, allowed} v_r[c]
 * (the layers are independent once the budgets are gone), summed in layer
 * order like every total in this file.
 */
int bp_problem_min_resource(const bp_problem *p, bp_resource r, double *out,
                            bp_error *err)
{
    if (ip_check_layers(p, err) < 0)
        return -1;
    if ((int)r < 0 || r >= BP_RES_COUNT || !p->res[r])
        return bp_fail(err, "ip: resource %d has no values", (int)r);
    double sum = 0.0;
    for (size_t l = 0; l < p->n_layers; l++) {
        double m = 0.0;
        if (ip_layer_min(p, (int)r, l, &m) < 0)
            return ip_no_candidate(p, l, err);
        sum += m;
    }
    *out = sum;
    return 0;
}

/* Values are integers and every partial sum stays below 2^53. */
static int ip_is_integral(const bp_problem *p, int r)
{
    double reach = 0.0;
    for (size_t l = 0; l < p->n_layers; l++) {
        double big = 0.0;
        for (size_t c = p->first[l]; c < p->first[l + 1]; c++) {
            double v = p->res[r][c];
            if (!ip_allowed(p, c))
                continue;
            if (v != floor(v))
                return 0;
            big = fmax(big, fabs(v));
        }
        reach += big;
    }
    return reach < IP_EXACT_INT;
}

static void ip_ctx_free(ip_ctx *x)
{
    for (int r = 0; r < BP_RES_COUNT; r++)
        free(x->base[r]);
    free(x->keep);
    free(x->budgets);
}

static int ip_ctx_bases(ip_ctx *x, bp_error *err)
{
    const bp_problem *p = x->p;
    for (int r = 0; r < BP_RES_COUNT; r++) {
        if (!x->used[r])
            continue;
        x->base[r] = bp_calloc(p->n_layers, sizeof(double), err);
        if (!x->base[r])
            return -1;
        x->min_sum[r] = 0.0;
        for (size_t l = 0; l < p->n_layers; l++) {
            if (ip_layer_min(p, r, l, &x->base[r][l]) < 0)
                return ip_no_candidate(p, l, err);
            x->min_sum[r] += x->base[r][l];
        }
        x->integral[r] = ip_is_integral(p, r);
    }
    return 0;
}

static int ip_ctx_init(ip_ctx *x, const bp_problem *p, const bp_solve_opts *o,
                       double t0, bp_error *err)
{
    memset(x, 0, sizeof *x);
    x->p = p;
    x->o = o;
    x->n_cand = p->n_layers ? p->first[p->n_layers] : 0;
    x->primary = (int)o->objective;
    /* ties: error breaks ties of a size-like objective; size those of error */
    int sec = x->primary == BP_RES_ERROR ? BP_RES_BITS : BP_RES_ERROR;
    x->secondary = p->res[sec] ? sec : -1;
    x->deadline = o->time_limit > 0 ? t0 + o->time_limit : INFINITY;
    x->cut = INFINITY;
    x->used[x->primary] = 1;
    if (x->secondary >= 0)
        x->used[x->secondary] = 1;
    x->budgets = bp_calloc(o->n_budgets, sizeof *x->budgets, err);
    x->keep = bp_calloc(x->n_cand, 1, err);
    if (!x->budgets || !x->keep)
        return -1;
    for (size_t b = 0; b < o->n_budgets; b++) {
        if (o->budgets[b].limit == INFINITY)
            continue;               /* +inf: always met, no row */
        x->budgets[x->n_budgets++] = (ip_row){(int)o->budgets[b].resource,
                                              o->budgets[b].limit, 0.0};
        x->used[o->budgets[b].resource] = 1;
    }
    return ip_ctx_bases(x, err);
}

/* ---- the GLPK model ------------------------------------------------------ */

/*
 * Reduced, normalised rows.  With m_l = min_{c in l} v[c] and M = sum_l m_l,
 * and exactly one x per layer,
 *     sum_c v[c] x[c] <= L   <=>   sum_c (v[c] - m_l) x[c] <= L - M =: H,
 * so coefficients d[c] = v[c] - m_l >= 0 measure the cost over the cheapest
 * choice and H is the headroom.  A candidate with d[c] > H can never be
 * used (it alone overspends).  Each row is divided by N = max d[c] over the
 * usable candidates, so GLPK sees coefficients in [0, 1]; the objective is
 * likewise reduced and divided by its largest coefficient sigma.  This keeps
 * errors from 1e-12 to 1e4 and bits up to 1e11 in one well-scaled model.
 * A layer left with one usable candidate is not in the model at all: its
 * candidate is taken, its d[c] comes off every row's headroom (which can
 * only tighten what fits elsewhere), and GLPK sees the layers that are
 * still to be decided -- after the Lagrangian fixing, a few hundred of
 * thousands.
 */
typedef struct ip_model {
    int *col;                     /* n_cand: GLPK column, 0 = not in model */
    int n_cols;
    int *lrow;                    /* per layer: its GLPK row, 0 when fixed */
    size_t *only;                 /* per layer: the candidate of a fixed layer */
    int n_lrows;                  /* layers in the model */
    double *head;                 /* per row: headroom H (after shrink) */
    double *norm;                 /* per row: N, 0 = row left out */
    double sigma;                 /* objective normalisation */
    int *ia, *ja;                 /* the matrix in GLPK's 1-based triplets */
    double *ar;
    int nnz;
} ip_model;

static void ip_model_free(ip_model *m)
{
    free(m->col);
    free(m->lrow);
    free(m->only);
    free(m->head);
    free(m->norm);
    free(m->ia);
    free(m->ja);
    free(m->ar);
}

static double ip_reduced(const ip_ctx *x, int r, size_t c, size_t l)
{
    return x->p->res[r][c] - x->base[r][l];
}

/* H = (floor of) limit + slack - M - shrink; integer data stays integer. */
static double ip_headroom(const ip_ctx *x, const ip_row *row, double shrink)
{
    double lim = row->limit + row->slack;
    if (x->integral[row->res])
        return floor(lim) - x->min_sum[row->res] - ceil(shrink);
    return lim - x->min_sum[row->res] - shrink;
}

/* A candidate overspends a row only if it does so beyond rounding noise. */
static int ip_fits(const ip_ctx *x, const ip_row *row, double head, size_t c, size_t l)
{
    double d = ip_reduced(x, row->res, c, l);
    if (x->integral[row->res])
        return d <= head;
    return d <= head + 1e-12 * (fabs(row->limit) + fabs(x->min_sum[row->res]));
}

/* Decide the columns and the fixed layers; -1 when some layer keeps no
 * usable candidate, or the fixed layers alone overspend a row. */
static int ip_model_columns(const ip_ctx *x, const ip_row *rows, size_t nrows,
                            ip_model *m)
{
    const bp_problem *p = x->p;
    m->n_cols = 0;
    m->n_lrows = 0;
    for (size_t l = 0; l < p->n_layers; l++) {
        int any = 0;
        size_t last = 0;
        for (size_t c = p->first[l]; c < p->first[l + 1]; c++) {
            int ok = x->keep[c] && ip_reduced(x, x->primary, c, l) <= x->cut;
            for (size_t i = 0; ok && i < nrows; i++)
                ok = ip_fits(x, &rows[i], m->head[i], c, l);
            m->col[c] = ok ? ++m->n_cols : 0;
            any += ok;
            if (ok)
                last = c;
        }
        if (!any)
            return -1;
        if (any > 1) {
            m->lrow[l] = ++m->n_lrows;
            continue;
        }
        m->col[last] = 0, m->n_cols--;       /* fixed: its candidate, out of the model */
        m->lrow[l] = 0, m->only[l] = last;
        for (size_t i = 0; i < nrows; i++)
            m->head[i] -= ip_reduced(x, rows[i].res, last, l);
    }
    for (size_t i = 0; i < nrows; i++) {     /* the fixed layers within every row */
        double tol = x->integral[rows[i].res]
                         ? 0.0 : 1e-12 * (fabs(rows[i].limit) + fabs(x->min_sum[rows[i].res]));
        if (m->head[i] < -tol)
            return -1;
    }
    for (size_t l = 0, k = 0; l < p->n_layers; l++)   /* columns renumbered densely */
        for (size_t c = p->first[l]; c < p->first[l + 1]; c++)
            if (m->col[c])
                m->col[c] = (int)++k;
    return 0;
}

static void ip_model_scales(const ip_ctx *x, const ip_row *rows, size_t nrows, int obj,
                            ip_model *m)
{
    const bp_problem *p = x->p;
    m->sigma = 0.0;
    for (size_t i = 0; i < nrows; i++)
        m->norm[i] = 0.0;
    for (size_t l = 0; l < p->n_layers; l++)
        for (size_t c = p->first[l]; c < p->first[l + 1]; c++) {
            if (!m->col[c])
                continue;
            m->sigma = fmax(m->sigma, ip_reduced(x, obj, c, l));
            for (size_t i = 0; i < nrows; i++)
                m->norm[i] = fmax(m->norm[i], ip_reduced(x, rows[i].res, c, l));
        }
    if (!(m->sigma > 0.0))
        m->sigma = 1.0;
}

/* Rows 1..L' are the layers still to decide; the budget rows with norm > 0
 * follow. */
static void ip_model_matrix(const ip_ctx *x, const ip_row *rows, size_t nrows, ip_model *m)
{
    const bp_problem *p = x->p;
    int k = 0;
    for (size_t l = 0; l < p->n_layers; l++)
        for (size_t c = p->first[l]; c < p->first[l + 1]; c++) {
            if (!m->col[c])
                continue;
            k++;
            m->ia[k] = m->lrow[l], m->ja[k] = m->col[c], m->ar[k] = 1.0;
            int row = m->n_lrows;
            for (size_t i = 0; i < nrows; i++) {
                if (m->norm[i] == 0.0)
                    continue;
                row++;
                double a = ip_reduced(x, rows[i].res, c, l) / m->norm[i];
                if (a == 0.0)
                    continue;
                k++;
                m->ia[k] = row, m->ja[k] = m->col[c], m->ar[k] = a;
            }
        }
    m->nnz = k;
}

/* Allocate and fill the model; 1 = built, 0 = no plan can fit, -1 = error. */
static int ip_model_build(const ip_ctx *x, const ip_row *rows, size_t nrows,
                          const double *shrink, int obj, ip_model *m, bp_error *err)
{
    size_t nnz_max;
    memset(m, 0, sizeof *m);
    if (bp_mul_size(x->n_cand, nrows + 1, &nnz_max) < 0 || nnz_max >= INT_MAX ||
        x->p->n_layers + nrows >= INT_MAX)
        return bp_fail(err, "ip: the program is too large for GLPK "
                       "(%zu candidates, %zu layers)", x->n_cand, x->p->n_layers);
    m->col = bp_calloc(x->n_cand, sizeof *m->col, err);
    m->lrow = bp_calloc(x->p->n_layers + 1, sizeof *m->lrow, err);
    m->only = bp_calloc(x->p->n_layers + 1, sizeof *m->only, err);
    m->head = bp_calloc(nrows, sizeof *m->head, err);
    m->norm = bp_calloc(nrows, sizeof *m->norm, err);
    m->ia = bp_calloc(nnz_max + 1, sizeof *m->ia, err);
    m->ja = bp_calloc(nnz_max + 1, sizeof *m->ja, err);
    m->ar = bp_calloc(nnz_max + 1, sizeof *m->ar, err);
    if (!m->col || !m->lrow || !m->only || !m->head || !m->norm || !m->ia || !m->ja || !m->ar)
        return -1;
    for (size_t i = 0; i < nrows; i++)
        m->head[i] = ip_headroom(x, &rows[i], shrink ? shrink[i] : 0.0);
    if (ip_model_columns(x, rows, nrows, m) < 0)
        return 0;
    ip_model_scales(x, rows, nrows, obj, m);
    ip_model_matrix(x, rows, nrows, m);
    return 1;
}

/* ---- running GLPK -------------------------------------------------------- */

/* GLPK aborts on internal errors unless its error hook jumps out. */
typedef struct ip_guard {
    jmp_buf jump;
} ip_guard;

static void ip_on_glpk_error(void *info)
{
    longjmp(((ip_guard *)info)->jump, 1);
}

/* Callback: remember the absolute gap |incumbent - best bound| (model units). */
typedef struct ip_progress {
    double gap_abs;
    double *start;                /* 1-based column values of a known plan */
} ip_progress;

static void ip_on_node(glp_tree *T, void *info)
{
    int why = glp_ios_reason(T);
    ip_progress *prog = info;
    if (why == GLP_IHEUR && prog->start) {
        glp_ios_heur_sol(T, prog->start);   /* once: the known plan */
        free(prog->start);
        prog->start = NULL;
        return;
    }
    if (why != GLP_ISELECT && why != GLP_IBINGO)
        return;
    glp_prob *mip = glp_ios_get_prob(T);
    if (glp_mip_status(mip) != GLP_FEAS)
        return;
    double rel = glp_ios_mip_gap(T);
    if (rel < DBL_MAX)
        ((ip_progress *)info)->gap_abs = rel * (fabs(glp_mip_obj_val(mip)) + DBL_EPSILON);
}

static void ip_load(const ip_ctx *x, size_t nrows, int obj, const ip_model *m,
                    glp_prob *lp)
{
    const bp_problem *p = x->p;
    int n_budget_rows = 0;
    for (size_t i = 0; i < nrows; i++)
        n_budget_rows += m->norm[i] > 0.0;
    glp_set_obj_dir(lp, GLP_MIN);
    glp_add_rows(lp, m->n_lrows + n_budget_rows);
    for (int r = 1; r <= m->n_lrows; r++)
        glp_set_row_bnds(lp, r, GLP_FX, 1.0, 1.0);
    for (size_t i = 0, row = (size_t)m->n_lrows; i < nrows; i++)
        if (m->norm[i] > 0.0)
            glp_set_row_bnds(lp, (int)++row, GLP_UP, 0.0, m->head[i] / m->norm[i]);
    glp_add_cols(lp, m->n_cols);
    for (size_t l = 0; l < p->n_layers; l++)
        for (size_t c = p->first[l]; c < p->first[l + 1]; c++)
            if (m->col[c]) {
                glp_set_col_kind(lp, m->col[c], GLP_BV);
                glp_set_obj_coef(lp, m->col[c], ip_reduced(x, obj, c, l) / m->sigma);
            }
    glp_load_matrix(lp, m->nnz, m->ia, m->ja, m->ar);
}

static int ip_time_left_ms(const ip_ctx *x, int *ms)
{
    if (x->deadline == INFINITY) {
        *ms = INT_MAX;
        return 1;
    }
    double left = (x->deadline - bp_now()) * 1000.0;
    if (left < 1.0)
        return 0;
    *ms = left >= (double)INT_MAX ? INT_MAX : (int)ceil(left);
    return 1;
}

/*
 * glp_intopt's outcome:  GLP_OPT -> optimal; gap or time limit with an
 * incumbent -> feasible; no primal feasible point (GLP_ENOPFS, GLP_NOFEAS)
 * -> infeasible; time limit without incumbent -> time_limit; else error.
 */
static bp_solve_status ip_map_status(int ret, int mip_status)
{
    if (ret == 0 && mip_status == GLP_OPT)
        return BP_SOLVE_OPTIMAL;
    if (ret == GLP_ENOPFS || (ret == 0 && mip_status == GLP_NOFEAS))
        return BP_SOLVE_INFEASIBLE;
    if ((ret == GLP_ETMLIM || ret == GLP_EMIPGAP) && mip_status == GLP_FEAS)
        return BP_SOLVE_FEASIBLE;
    if (ret == GLP_ETMLIM)
        return BP_SOLVE_TIME_LIMIT;
    return BP_SOLVE_ERROR;
}

/* Read one candidate per layer out of GLPK's integer solution. */
static int ip_read_plan(const ip_ctx *x, const ip_model *m, glp_prob *lp, size_t *choice)
{
    const bp_problem *p = x->p;
    for (size_t l = 0; l < p->n_layers; l++) {
        int n = 0;
        if (!m->lrow[l]) {
            choice[l] = m->only[l];
            continue;
        }
        for (size_t c = p->first[l]; lp && c < p->first[l + 1]; c++)
            if (m->col[c] && glp_mip_col_val(lp, m->col[c]) > 0.5)
                choice[l] = c, n++;
        if (n != 1)
            return -1;
    }
    return 0;
}

static void ip_set_params(const ip_ctx *x, int ms, int pre, ip_progress *prog,
                          glp_iocp *parm)
{
    glp_init_iocp(parm);
    parm->msg_lev = GLP_MSG_OFF;
    parm->presolve = pre ? GLP_ON : GLP_OFF;
    parm->mip_gap = x->o->mip_gap;
    parm->tm_lim = ms;
    parm->tol_int = 1e-9;        /* 1e-5 default lets rounding overspend */
    parm->tol_obj = 1e-9;        /* prune only what is really no better */
    parm->pp_tech = GLP_PP_ROOT; /* node preprocessing costs more than it saves here */
    parm->cb_func = ip_on_node;
    parm->cb_info = prog;
}

/*
 * Without GLPK's MIP preprocessor: the LP relaxation is solved first (as
 * glp_intopt then requires), and an infeasible relaxation means no plan.
 */
static int ip_intopt_plain(glp_prob *lp, glp_iocp *parm)
{
    glp_smcp sp;
    glp_init_smcp(&sp);
    sp.msg_lev = GLP_MSG_OFF;
    sp.presolve = GLP_OFF;
    sp.tm_lim = parm->tm_lim;
    glp_scale_prob(lp, GLP_SF_AUTO);
    int ret = glp_simplex(lp, &sp);
    if (ret == GLP_ETMLIM)
        return GLP_ETMLIM;
    if (ret != 0)
        return ret == GLP_ENOPFS ? GLP_ENOPFS : GLP_EFAIL;
    if (glp_get_status(lp) != GLP_OPT)
        return glp_get_status(lp) == GLP_NOFEAS ? GLP_ENOPFS : GLP_EFAIL;
    return glp_intopt(lp, parm);
}

/*
 * Build, solve, read.  GLPK's own fatal errors come back through the hook
 * as a longjmp; the GLPK environment is then freed (as its manual asks) and
 * the run reports an error instead of aborting the process.
 */
/* The plan `start` as GLPK column values, or NULL when it is not in m. */
static double *ip_start_vector(const ip_ctx *x, const ip_model *m, const size_t *start)
{
    if (!start)
        return NULL;
    for (size_t l = 0; l < x->p->n_layers; l++)
        if (m->lrow[l] ? !m->col[start[l]] : start[l] != m->only[l])
            return NULL;
    double *v = calloc((size_t)m->n_cols + 1, sizeof *v);
    for (size_t l = 0; v && l < x->p->n_layers; l++)
        if (m->lrow[l])
            v[m->col[start[l]]] = 1.0;
    return v;
}

static int ip_glpk(const ip_ctx *x, size_t nrows, int obj, const ip_model *m, int ms,
                   int pre, const size_t *start, ip_result *out, bp_error *err)
{
    ip_guard guard;
    ip_progress prog = {NAN, pre ? NULL : ip_start_vector(x, m, start)};
    glp_iocp parm;
    int old_term = glp_term_out(GLP_OFF);
    glp_error_hook(ip_on_glpk_error, &guard);
    if (setjmp(guard.jump)) {
        glp_free_env();
        return bp_fail(err, "ip: GLPK failed internally (out of memory or a numerical fault)");
    }
    glp_prob *lp = glp_create_prob();
    ip_load(x, nrows, obj, m, lp);
    ip_set_params(x, ms, pre, &prog, &parm);
    int ret = pre ? glp_intopt(lp, &parm) : ip_intopt_plain(lp, &parm);
    out->status = ip_map_status(ret, glp_mip_status(lp));
    out->have_plan = out->status == BP_SOLVE_OPTIMAL || out->status == BP_SOLVE_FEASIBLE;
    out->gap_abs = out->status == BP_SOLVE_OPTIMAL ? 0.0 : prog.gap_abs * m->sigma;
    int bad = out->have_plan && ip_read_plan(x, m, lp, out->choice) < 0;
    glp_delete_prob(lp);
    free(prog.start);
    glp_error_hook(NULL, NULL);
    glp_term_out(old_term);
    if (bad)
        return bp_fail(err, "ip: GLPK returned a plan without exactly one candidate per layer");
    if (out->status == BP_SOLVE_ERROR)
        return bp_fail(err, "ip: GLPK's glp_intopt failed (code %d)", ret);
    return 0;
}

/* One GLPK run on the given rows, bounds lowered by shrink[i]. */
static int ip_run(const ip_ctx *x, const ip_row *rows, size_t nrows, const double *shrink,
                  int obj, int pre, const size_t *start, ip_result *out, bp_error *err)
{
    ip_model m;
    int ms = 0;
    out->have_plan = 0;
    out->gap_abs = NAN;
    int built = ip_model_build(x, rows, nrows, shrink, obj, &m, err);
    if (built == 0)
        out->status = BP_SOLVE_INFEASIBLE;
    else if (built > 0 && m.n_cols == 0) {   /* every layer fixed: that is the plan */
        ip_read_plan(x, &m, NULL, out->choice);
        out->status = BP_SOLVE_OPTIMAL, out->have_plan = 1, out->gap_abs = 0.0;
    } else if (built > 0 && !ip_time_left_ms(x, &ms))
        out->status = BP_SOLVE_TIME_LIMIT;
    else if (built > 0)
        built = ip_glpk(x, nrows, obj, &m, ms, pre, start, out, err) < 0 ? -1 : 1;
    ip_model_free(&m);
    return built < 0 ? -1 : 0;
}

/* ---- exact verification and repair --------------------------------------- */

/* max over kept c of the reduced coefficient of a row (original units). */
static double ip_row_span(const ip_ctx *x, int r)
{
    double span = 0.0;
    for (size_t l = 0; l < x->p->n_layers; l++)
        for (size_t c = x->p->first[l]; c < x->p->first[l + 1]; c++)
            if (x->keep[c])
                span = fmax(span, ip_reduced(x, r, c, l));
    return span;
}

/*
 * A violated row i is stepped down by its violation plus GLPK's tolerance
 * in original units, 4 (1e-7 N + 1e-10 |H|), growing 4x per round.
 */
static void ip_tighten(const ip_ctx *x, const ip_row *rows, size_t nrows, const double *viol,
                       int round, double *shrink)
{
    for (size_t i = 0; i < nrows; i++) {
        if (!(viol[i] > 0.0))
            continue;
        double head = ip_headroom(x, &rows[i], 0.0);
        double tol = 4.0 * (IP_GLPK_TOL_ABS * ip_row_span(x, rows[i].res) +
                            IP_GLPK_TOL_REL * fabs(head));
        double step = (viol[i] + tol) * pow(4.0, round);
        shrink[i] = fmax(shrink[i] + step, 2.0 * shrink[i]);
    }
}

/*
 * A plan found only after tightening is optimal if it is no worse than the
 * first (overspending) answer, whose value - gap bounds the true optimum
 * from below (every truly feasible plan was open to that first run).
 */
static void ip_judge_repair(const ip_ctx *x, int obj, double lower, ip_result *out)
{
    double v = ip_total(x->p, obj, out->choice);
    double own = out->status == BP_SOLVE_OPTIMAL ? 0.0 : out->gap_abs;
    double gap = v - lower;
    if (gap <= 1e-12 * fabs(v) && out->status == BP_SOLVE_OPTIMAL)
        return;
    out->status = BP_SOLVE_FEASIBLE;
    out->gap_abs = isnan(lower) ? NAN : fmax(gap, own);
}

/* viol NULL: the tightened model had no plan at all. */
static int ip_repair_failed(const ip_row *rows, size_t nrows, const double *viol,
                            bp_error *err)
{
    for (size_t i = 0; viol && i < nrows; i++)
        if (viol[i] > 0.0)
            return bp_fail(err, "ip: GLPK kept returning plans over the %s limit %.17g "
                           "(by %.3g) even after tightening it %d times",
                           ip_res_name[rows[i].res], rows[i].limit, viol[i],
                           IP_REPAIR_ROUNDS);
    return bp_fail(err, "ip: GLPK found no plan inside the tightened budgets, although "
                   "its first answer overspent them only by rounding");
}

/*
 * Solve, then check the plan with exact sums.  A broken row is first taken
 * as a misjudgement of GLPK's MIP preprocessor (which accepts small
 * violations) and the same model is solved again without it; while a row
 * is still broken, it is tightened and the model solved again.  Never
 * returns a plan that breaks a row.
 */
static int ip_solve_rows(const ip_ctx *x, const ip_row *rows, size_t nrows, int obj,
                         const size_t *start, ip_result *out, bp_error *err)
{
    double *shrink = bp_calloc(nrows, sizeof *shrink, err);
    double *viol = bp_calloc(nrows, sizeof *viol, err);
    double lower = NAN;
    int rc = shrink && viol ? 0 : -1, pre = start == NULL;
    for (int round = 0; rc == 0; round++) {
        if ((rc = ip_run(x, rows, nrows, shrink, obj, pre, round == 0 ? start : NULL, out,
                         err)) < 0)
            break;
        if (!out->have_plan) {
            if (round > 0 && out->status == BP_SOLVE_INFEASIBLE)
                rc = ip_repair_failed(rows, nrows, NULL, err);
            break;
        }
        if (round == 0)
            lower = ip_total(x->p, obj, out->choice) - out->gap_abs;
        if (ip_rows_hold(x, rows, nrows, out->choice, viol)) {
            if (round > 0)
                ip_judge_repair(x, obj, lower, out);
            break;
        }
        if (pre) {
            pre = 0, round = -1;     /* same model, no preprocessor */
            continue;
        }
        if (round == IP_REPAIR_ROUNDS)
            rc = ip_repair_failed(rows, nrows, viol, err);
        else
            ip_tighten(x, rows, nrows, viol, round, shrink);
    }
    if (rc < 0)
        out->have_plan = 0, out->status = BP_SOLVE_ERROR;
    free(shrink);
    free(viol);
    return rc;
}

/* ---- lexicographic tie-break and polish ----------------------------------- */

/*
 * Stage 2: with P1 the stage-1 objective total, solve
 *     minimise sum v_sec x   s.t. budgets,  sum v_obj x <= P1 (+ 1e-12 |P1|
 *     when the objective is not integer-valued),
 * and take its plan only if it is lexicographically better.  Anything that
 * goes wrong here keeps the stage-1 plan, which is already valid.
 */
/*
 * Can distinct plans have exactly equal objective totals?  Only when the
 * values are integers or short binary fractions (k / 2^20); real-valued
 * measurements practically never tie, and near-ties are left to the polish.
 */
static int ip_tie_prone(const ip_ctx *x)
{
    if (x->integral[x->primary])
        return 1;
    const double *v = x->p->res[x->primary];
    for (size_t c = 0; c < x->n_cand; c++) {
        double s = v[c] * 1048576.0;
        if (x->keep[c] && (s != floor(s) || fabs(s) >= IP_EXACT_INT))
            return 0;
    }
    return 1;
}

static void ip_tie_break(const ip_ctx *x, size_t *choice)
{
    if (x->secondary < 0 || !ip_tie_prone(x))
        return;
    size_t nrows = x->n_budgets + 1;
    ip_row *rows = malloc(nrows * sizeof *rows);
    ip_result r2 = {BP_SOLVE_ERROR, 0, malloc(x->p->n_layers * sizeof(size_t) + 1), NAN};
    double t1[2], t2[2];
    if (rows && r2.choice) {
        ip_lex_totals(x, choice, t1);
        memcpy(rows, x->budgets, x->n_budgets * sizeof *rows);
        rows[x->n_budgets] = (ip_row){x->primary, t1[0],
                                      x->integral[x->primary] ? 0.0 : IP_LEX_SLACK * fabs(t1[0])};
        if (ip_solve_rows(x, rows, nrows, x->secondary, choice, &r2, NULL) == 0 && r2.have_plan) {
            ip_lex_totals(x, r2.choice, t2);
            if (t2[1] < t1[1] || (t2[1] == t1[1] && t2[0] < t1[0]))
                memcpy(choice, r2.choice, x->p->n_layers * sizeof *choice);
        }
    }
    free(rows);
    free(r2.choice);
}

/* ---- the entry point ----------------------------------------------------- */

static void ip_fill_totals(const bp_problem *p, bp_solution *sol)
{
    for (int r = 0; r < BP_RES_COUNT; r++)
        sol->totals[r] = p->res[r] ? ip_total(p, r, sol->choice) : NAN;
}

/* A budget that alone cannot be met: its smallest sum exceeds its limit. */
static int ip_single_budget_infeasible(const ip_ctx *x, bp_solution *sol)
{
    const bp_solve_opts *o = x->o;
    for (size_t b = 0; b < o->n_budgets; b++) {
        double m = x->min_sum[o->budgets[b].resource];
        if (m > o->budgets[b].limit) {
            sol->status = BP_SOLVE_INFEASIBLE;
            sol->binding_budget = (int)b;
            sol->min_feasible = m;
            return 1;
        }
    }
    return 0;
}

static void ip_sol_reset(bp_solution *sol)
{
    memset(sol, 0, sizeof *sol);
    sol->status = BP_SOLVE_ERROR;
    sol->choice = NULL;
    sol->objective = NAN;
    sol->gap = NAN;
    sol->binding_budget = -1;
    sol->min_feasible = NAN;
    sol->method = "glpk";
    for (int r = 0; r < BP_RES_COUNT; r++)
        sol->totals[r] = NAN;
}

/* Stage 1 (+ stage 2 and polish when it finds a plan). */
/* A greedy plan for the single-budget case (the usual one); 1 when found. */
static int ip_incumbent(ip_ctx *x, size_t *greedy, double *bound)
{
    *bound = NAN;
    double lambda;
    if (x->n_budgets != 1 || x->budgets[0].res == x->primary ||
        !ip_greedy(x, greedy, bound, &lambda))
        return 0;
    ip_polish(x, greedy);
    ip_set_cut(x, greedy);
    ip_lagrange_fix(x, lambda, ip_total(x->p, x->primary, greedy));
    return 1;
}

/* Keep GLPK's plan unless the incumbent is lexicographically better (GLPK
 * then stopped short inside its tolerances; the incumbent is used). */
static void ip_keep_better(const ip_ctx *x, size_t *choice, const size_t *incumbent)
{
    double a[2], b[2];
    ip_lex_totals(x, choice, a);
    ip_lex_totals(x, incumbent, b);
    if (ip_lex_less(x, b, a))
        memcpy(choice, incumbent, x->p->n_layers * sizeof *choice);
}

static int ip_solve_stages(ip_ctx *x, bp_solution *sol, bp_error *err)
{
    ip_result r1 = {BP_SOLVE_ERROR, 0, sol->choice, NAN};
    ip_best_each_layer(x, sol->choice);
    if (ip_rows_hold(x, x->budgets, x->n_budgets, sol->choice, NULL)) {
        sol->status = BP_SOLVE_OPTIMAL;     /* no budget binds */
        sol->gap = 0.0;
        sol->method = "per-layer";
        ip_polish(x, sol->choice);          /* ties within the slack */
        return 0;
    }
    size_t *greedy = bp_calloc(x->p->n_layers, sizeof *greedy, err);
    if (!greedy)
        return -1;
    double lp_bound;
    int have_greedy = ip_incumbent(x, greedy, &lp_bound);
    if (have_greedy && x->o->mip_gap > 0.0) {  /* within the gap asked for already */
        double g = ip_total(x->p, x->primary, greedy);
        double gap = fmax(0.0, g - lp_bound) / fmax(fabs(g), DBL_MIN);
        if (gap <= x->o->mip_gap) {
            memcpy(sol->choice, greedy, x->p->n_layers * sizeof *greedy);
            free(greedy);
            ip_tie_break(x, sol->choice);
            ip_polish(x, sol->choice);
            sol->status = gap == 0.0 ? BP_SOLVE_OPTIMAL : BP_SOLVE_FEASIBLE;
            sol->gap = gap;
            sol->method = "greedy";
            return 0;
        }
    }
    if (ip_solve_rows(x, x->budgets, x->n_budgets, x->primary,
                      have_greedy ? greedy : NULL, &r1, err) < 0) {
        free(greedy);
        return -1;
    }
    sol->status = r1.status;
    if (!r1.have_plan && have_greedy && r1.status == BP_SOLVE_TIME_LIMIT) {
        memcpy(sol->choice, greedy, x->p->n_layers * sizeof *greedy);
        r1.have_plan = 1, r1.gap_abs = NAN;
        sol->status = BP_SOLVE_FEASIBLE;
    }
    if (!r1.have_plan) {
        free(greedy);
        return 0;
    }
    ip_set_cut(x, sol->choice);
    if (have_greedy)
        ip_keep_better(x, sol->choice, greedy);
    free(greedy);
    ip_tie_break(x, sol->choice);
    ip_polish(x, sol->choice);
    double v = ip_total(x->p, x->primary, sol->choice);
    if (r1.status != BP_SOLVE_OPTIMAL && !(r1.gap_abs >= 0.0) && have_greedy &&
        isfinite(lp_bound))
        r1.gap_abs = fmax(0.0, v - lp_bound);     /* GLPK gave no bound: the LP's */
    sol->gap = r1.status == BP_SOLVE_OPTIMAL ? 0.0 : r1.gap_abs / fmax(fabs(v), DBL_MIN);
    return 0;
}

/* Partial frontiers are bounded so that the route's memory (32 bytes per
 * point and layer) stays near 128 MB and its time near a second. */
#define IP_FRONTIER_ITEMS 4000000.0

/*
 * Route 3b: 1 when the exact frontier of (budget resource, error) was small
 * enough to build and holds a plan within the budget (sol->choice filled,
 * optimal); 0 to go on with GLPK.
 */
static int ip_frontier_route(const ip_ctx *x, bp_solution *sol)
{
    const bp_solve_opts *o = x->o;
    if (o->glpk_only || o->n_budgets != 1 || o->objective != BP_RES_ERROR ||
        o->budgets[0].resource == BP_RES_ERROR || !x->p->res[o->budgets[0].resource])
        return 0;
    size_t cap = (size_t)(IP_FRONTIER_ITEMS / (double)x->p->n_layers);
    bp_frontier f;
    bp_error ignored;
    if (bp_pareto_frontier(x->p, o->budgets[0].resource, cap < 256 ? 256 : cap, &f, &ignored) < 0)
        return 0;                       /* too large: GLPK decides */
    size_t best = f.n;
    for (size_t i = 0; i < f.n && f.p[i].res <= o->budgets[0].limit; i++)
        best = i;                       /* resource up, error down */
    int found = best < f.n;
    if (found) {
        memcpy(sol->choice, f.choice + best * f.n_layers, f.n_layers * sizeof *sol->choice);
        sol->status = BP_SOLVE_OPTIMAL;
        sol->gap = 0.0;
        sol->method = "frontier";
    }
    bp_frontier_free(&f);
    return found;
}

static int ip_solve_checked(const bp_problem *p, const bp_solve_opts *o, double t0,
                            bp_solution *sol, bp_error *err)
{
    ip_ctx x;
    int rc = ip_ctx_init(&x, p, o, t0, err);
    if (rc == 0 && !ip_single_budget_infeasible(&x, sol)) {
        sol->choice = bp_calloc(p->n_layers, sizeof *sol->choice, err);
        rc = sol->choice ? 0 : -1;
        if (rc == 0 && !ip_frontier_route(&x, sol)) {
            ip_prune(&x);
            rc = ip_solve_stages(&x, sol, err);
        }
    }
    ip_ctx_free(&x);
    return rc;
}

/*
 * Validate, solve, and leave either a plan meeting every budget exactly
 * (optimal or feasible) or no plan (infeasible, time limit, error).
 */
int bp_solve_ip(const bp_problem *p, const bp_solve_opts *o, bp_solution *sol,
                bp_error *err)
{
    double t0 = bp_now();
    if (!sol)
        return bp_fail(err, "ip: no solution record given");
    ip_sol_reset(sol);
    int rc = ip_check_layers(p, err);
    if (rc == 0)
        rc = ip_check_opts(p, o, err);
    if (rc == 0)
        rc = ip_solve_checked(p, o, t0, sol, err);
    if (rc < 0)
        sol->status = BP_SOLVE_ERROR;
    if (sol->status == BP_SOLVE_OPTIMAL || sol->status == BP_SOLVE_FEASIBLE) {
        ip_fill_totals(p, sol);
        sol->objective = sol->totals[o->objective];
    } else {
        bp_solution_free(sol);
    }
    sol->seconds = bp_now() - t0;
    return rc;
}
