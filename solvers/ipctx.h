/*
 * ipctx.h - what the integer program's GLPK driver (ip.c) and its
 * heuristics (heuristics.c) share: the solver's working state, one solver
 * answer, and exact totals of a plan.  Internal to solvers/.
 */
#ifndef BP_IPCTX_H
#define BP_IPCTX_H

#include <stddef.h>

#include "ip.h"

/* Relative slack of the stage-2 "objective stays optimal" row for
 * non-integer objectives. */
#define IP_LEX_SLACK 1e-12
static inline int ip_allowed(const bp_problem *p, size_t c)
{
    return !p->allowed || p->allowed[c];
}

/* ---- the solver's working state ------------------------------------------ */

/* One exact constraint: sum_l v_res[choice_l] <= limit + slack. */
typedef struct ip_row {
    int res;
    double limit;
    double slack;
} ip_row;

typedef struct ip_ctx {
    const bp_problem *p;
    const bp_solve_opts *o;
    size_t n_cand;                /* first[n_layers]: arrays are indexed by c */
    int primary, secondary;       /* objective and tie-break (-1: none) */
    int used[BP_RES_COUNT];       /* resource takes part in the program */
    int integral[BP_RES_COUNT];   /* all values integers, sums exact */
    double *base[BP_RES_COUNT];   /* per-layer minimum over allowed c */
    double min_sum[BP_RES_COUNT]; /* sum_l base[r][l] */
    unsigned char *keep;          /* allowed and not dominated */
    ip_row *budgets;              /* the user's budgets as rows */
    size_t n_budgets;
    double deadline;              /* monotonic seconds; INFINITY: none */
    double cut;                   /* reduced primary above this: column dropped */
    int no_presolve;              /* set after GLPK's preprocessor misjudged */
} ip_ctx;

/* One solver answer: status, plan (when any) and the absolute gap. */
typedef struct ip_result {
    bp_solve_status status;
    int have_plan;
    size_t *choice;               /* n_layers, owned by the caller */
    double gap_abs;               /* objective units; 0 optimal, NaN unknown */
} ip_result;

/* ---- exact totals -------------------------------------------------------- */

/* total_r = sum_l v_r[choice_l], in layer order. */
static inline double ip_total(const bp_problem *p, int r, const size_t *choice)
{
    double s = 0.0;
    for (size_t l = 0; l < p->n_layers; l++)
        s += p->res[r][choice[l]];
    return s;
}

/* 1 when every row holds exactly; viol[i] (if given) = total - bound. */
static inline int ip_rows_hold(const ip_ctx *x, const ip_row *rows, size_t n,
                        const size_t *choice, double *viol)
{
    int ok = 1;
    for (size_t i = 0; i < n; i++) {
        double over = ip_total(x->p, rows[i].res, choice) - (rows[i].limit + rows[i].slack);
        if (viol)
            viol[i] = over;
        if (over > 0.0)
            ok = 0;
    }
    return ok;
}

/* (P, S) lexicographic order on the plan's (primary, secondary) totals. */
static inline int ip_lex_less(const ip_ctx *x, const double *a, const double *b)
{
    if (a[0] != b[0])
        return a[0] < b[0];
    return x->secondary >= 0 && a[1] < b[1];
}

static inline void ip_lex_totals(const ip_ctx *x, const size_t *choice, double *t)
{
    t[0] = ip_total(x->p, x->primary, choice);
    t[1] = x->secondary >= 0 ? ip_total(x->p, x->secondary, choice) : 0.0;
}

/* ---- heuristics (heuristics.c) -------------------------------------------- */

/* Drop dominated candidates (x->keep): exact, the optimum never changes. */
void ip_prune(ip_ctx *x);
/* Per layer, the kept candidate with the smallest (primary, secondary). */
void ip_best_each_layer(const ip_ctx *x, size_t *choice);
/* 1-swap polish of a feasible plan: budgets kept, (primary, secondary) lowered. */
void ip_polish(const ip_ctx *x, size_t *choice);
/* One budget: the multiple-choice knapsack greedy over convex-hull steps;
 * its plan into choice (0) or -1 when it found none, *bound its LP bound,
 * *lambda the LP's price of the budget (0 when it does not bind). */
int ip_greedy(const ip_ctx *x, size_t *choice, double *bound, double *lambda);
/* Reduced-cost fixing from the budget row's Lagrangian at price lambda
 * against an incumbent of primary total U (exact); returns how many
 * candidates were dropped from x->keep. */
size_t ip_lagrange_fix(ip_ctx *x, double lambda, double U);
/* Candidates whose reduced primary alone exceeds the incumbent's are cut. */
void ip_set_cut(ip_ctx *x, const size_t *choice);

#endif
