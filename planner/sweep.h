/*
 * sweep.h - what-if sweeps: one plan per budget over a sensitivity table,
 * the uniform baselines beside them, and the results as CSV and SVG.
 *
 * frontier.csv, one row per point:
 *   kind,budget,status,weight_bytes,avg_bits,bops,predicted_error,layers
 * kind is "plan" (one per budget), "uniform" (every layer at b weight
 * bits) or "first_last_8" (first and last layer at 8 bits, the rest at b);
 * layers lists name=wbits/abits for every layer in model order.
 */
#ifndef BP_SWEEP_H
#define BP_SWEEP_H

#include <stddef.h>

#include "../common/bp_error.h"
#include "../include/bitplan.h"
#include "../sensitivity/table.h"
#include "problem.h"

/* bp_sweep_point: include/bitplan.h */

typedef struct bp_sweep_set {
    bp_sweep_point *p;
    size_t n, cap;
    const char *budget_name;  /* avg_bits | max_bytes | max_error */
} bp_sweep_set;

void bp_sweep_free(bp_sweep_set *s);

/* "a:b:step" (inclusive of b within rounding) or "x,y,z" -> values. */
int bp_sweep_parse_values(const char *opt, const char *spec, double **values, size_t *n,
                          bp_error *err);

/* Append the outcome of one solve (r may describe an infeasible budget). */
int bp_sweep_add_plan(bp_sweep_set *s, const bp_table *t, double budget, const bp_solve_result *r,
                      bp_error *err);

/* Append the uniform and first/last-8 baselines for every weight width of
 * the table (activations at the widest candidate, best quantizer). */
/* Distinct layers of a table (O(n log n)). */
size_t bp_table_layer_count(const bp_table *t);
int bp_sweep_add_baselines(bp_sweep_set *s, const bp_table *t, bp_error *err);

int bp_sweep_write_csv(const bp_sweep_set *s, const char *path, bp_error *err);

/* pareto.csv: every point of the exact frontier,
 *   weight_bytes,avg_bits,bops,predicted_error,on_hull,layers */
int bp_sweep_write_pareto(const bp_table *t, const bp_frontier *f, const char *path,
                          bp_error *err);
/* Predicted error (log scale) against weight size, plans as a line,
 * baselines as labelled markers. */
int bp_sweep_write_svg(const bp_sweep_set *s, const char *path, bp_error *err);

#endif
