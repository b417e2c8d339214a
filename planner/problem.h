/*
 * problem.h - the sensitivity table turned into the integer program and
 * solved: candidates grouped by layer, pins, allowed widths and given
 * choices applied, tied groups merged into one solver layer, budgets (and
 * which of them binds when infeasible), the exact Pareto frontier of a
 * table, and the program the solver sees as CSV.
 */
#ifndef BP_PROBLEM_H
#define BP_PROBLEM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../common/bp_error.h"
#include "../sensitivity/table.h"
#include "../solvers/frontier.h"
#include "../solvers/ip.h"
#include "config.h"
#include "formats/latency.h"
#include "gguffile.h"
#include "ties.h"

/* A layer's candidate given rather than chosen: layer NULL stands for every
 * layer, quantizer NULL for any quantizer (the best one at those widths). */
typedef struct bp_choice {
    const char *layer;
    int wbits, abits;
    const char *quantizer;
} bp_choice;

/* What to solve: the budget plus structure (pins). */
typedef struct bp_solve_request {
    bp_budget_spec budget;
    const bp_pin *pins;
    size_t n_pins;
    const bp_tie *ties;       /* tied groups (NULL: none) */
    size_t n_ties;
    const bp_allow *allow;    /* allowed widths per pattern (NULL: none) */
    size_t n_allow;
    const bp_latency *latency; /* per-layer latencies (NULL: none) */
    double time_limit;
    double mip_gap;
    const bp_choice *fixed;   /* layers whose candidate is given (NULL: none) */
    size_t n_fixed;
    double error_exponent;    /* errors in additive units of an objective that is
                               * (sum of errors)^error_exponent (metric_scales);
                               * budget.max_error is in the objective's units.
                               * 0 or 1: the errors themselves */
    const bp_gguf_footprint *gguf; /* a GGUF model's file outside the planned layers
                               * (budget.max_file_bytes, budget.bpw), or NULL */
} bp_solve_request;

/* The outcome: chosen table rows in layer order plus solver facts. */
typedef struct bp_solve_result {
    size_t n_layers;
    size_t *chosen;           /* table row index per layer, model order */
    bp_solution sol;
    const char *objective_name;
    int64_t total_params, total_weight_bits;
    double total_error;
    double total_bops;        /* sum of macs x wbits x abits */
    double total_latency;     /* NAN without a latency table */
    int infeasible;           /* set (and the call fails) when the budget cannot be met */
    int all_fixed;            /* every layer's candidate was given */
} bp_solve_result;

/* Solve over a table.  An infeasible budget is an error naming the smallest
 * feasible value; a time limit without any plan is an error too. */
int bp_solve_table(const bp_table *t, const bp_solve_request *req,
                   bp_solve_result *res, bp_error *err);
void bp_solve_result_free(bp_solve_result *res);

/* The exact (weight bits, error) Pareto frontier of a table under the
 * request's pins; plans (f->choice) are table row indices. */
int bp_table_frontier(const bp_table *t, const bp_solve_request *req, size_t max_points,
                      bp_frontier *f, bp_error *err);

/*
 * The program the solver sees, as CSV: after pins, allowed widths, given
 * choices and ties, one row per (solver layer, candidate, member layer):
 *   group,choice,layer,wbits,abits,quantizer,error,weight_bits
 * A group is one layer, or a tied group whose choices are the members'
 * combinations that agree on the tied widths; a plan picks one choice per
 * group.  Tools that search plans themselves (tools/refine_plan.py) search
 * exactly the IP's feasible set with it.
 */
int bp_write_program(const bp_table *t, const bp_solve_request *req, FILE *fp, bp_error *err);


#endif
