/*
 * ip.h - the AdaQuant integer program (ALGORITHMS.md section 5), solved with
 * GLPK.
 *
 * Binary x[l,c]: layer l uses its candidate c.  Exactly one candidate per
 * layer.  The objective minimises one resource (error by default); budgets
 * bound any of the others.  Candidates can be disallowed (pins, allowed
 * lists) through the `allowed` mask.
 *
 * The problem is stored flat: candidates of layer l are the indices
 * [first[l], first[l+1]) into the per-candidate arrays.
 */
#ifndef BP_IP_H
#define BP_IP_H

#include <stddef.h>
#include <stdint.h>

#include "../common/bp_error.h"

typedef enum bp_resource {
    BP_RES_ERROR = 0,         /* predicted error */
    BP_RES_BITS,              /* weight bits incl. scales and zero points */
    BP_RES_BOPS,              /* bit operations: macs x wbits x abits */
    BP_RES_LATENCY,           /* measured latency from a user table */
    BP_RES_COUNT
} bp_resource;

typedef struct bp_problem {
    size_t n_layers;
    const size_t *first;      /* n_layers + 1 offsets */
    const double *res[BP_RES_COUNT]; /* per-candidate resource values */
    const unsigned char *allowed;    /* per candidate; NULL = all allowed */
} bp_problem;

typedef struct bp_budget {
    bp_resource resource;
    double limit;             /* sum over layers <= limit */
} bp_budget;

typedef struct bp_solve_opts {
    bp_resource objective;    /* resource to minimise */
    const bp_budget *budgets;
    size_t n_budgets;
    double time_limit;        /* seconds; <= 0 means none */
    double mip_gap;           /* relative gap; 0 = prove optimality */
    int glpk_only;            /* skip the exact frontier route (tests: the GLPK route's
                               * own exactness, Lagrangian fixing included) */
} bp_solve_opts;

typedef enum bp_solve_status {
    BP_SOLVE_OPTIMAL = 0,
    BP_SOLVE_FEASIBLE,        /* time limit hit with an incumbent */
    BP_SOLVE_INFEASIBLE,
    BP_SOLVE_TIME_LIMIT,      /* time limit hit without any solution */
    BP_SOLVE_ERROR
} bp_solve_status;

typedef struct bp_solution {
    bp_solve_status status;
    size_t *choice;           /* n_layers candidate indices (global) */
    double objective;
    double gap;               /* relative MIP gap of the returned solution */
    const char *method;       /* what found it: "glpk", "frontier" (exact Pareto
                               * frontier) or "per-layer" (no budget binds) */
    double seconds;
    double totals[BP_RES_COUNT];   /* resource sums of the chosen plan */
    /* When infeasible: the budget that cannot be met and the smallest
     * value of its resource any plan reaches (respecting `allowed`). */
    int binding_budget;       /* index into opts->budgets, or -1 */
    double min_feasible;
} bp_solution;

const char *bp_solve_status_name(bp_solve_status s);

void bp_solve_opts_init(bp_solve_opts *o);
/* Solve; returns 0 whenever the solver ran (see sol->status), -1 on an
 * internal error (err filled).  sol->choice is malloc'ed; free with
 * bp_solution_free. */
int bp_solve_ip(const bp_problem *p, const bp_solve_opts *o,
                bp_solution *sol, bp_error *err);
void bp_solution_free(bp_solution *sol);

/* Smallest achievable sum of one resource over all plans (respecting
 * `allowed`); -1 (with err) when some layer has no allowed candidate. */
int bp_problem_min_resource(const bp_problem *p, bp_resource r,
                            double *out, bp_error *err);

#endif
