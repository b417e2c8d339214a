/*
 * pipeline.h - the stages a command runs, glued together: measure (or reuse
 * the cached) sensitivity table, turn table + budget + pins into an integer
 * program, solve it, and assemble the plan.  No terminal I/O here: progress
 * goes through a callback that main.c provides.
 */
#ifndef BP_PIPELINE_H
#define BP_PIPELINE_H

#include <signal.h>
#include <stddef.h>
#include <stdio.h>

#include "../common/bp_error.h"
#include "../sensitivity/table.h"
#include "../solvers/frontier.h"
#include "../solvers/ip.h"
#include "config.h"
#include "formats/latency.h"
#include "formats/plan.h"
#include "ties.h"

typedef void (*bp_progress_fn)(void *ctx, size_t done, size_t total, const char *layer);

typedef struct bp_sens_result {
    bp_table table;
    char model_sha256[65];
    char calib_sha256[65];    /* "" when there is no calibration file */
    int from_cache;
    size_t resumed_layers;    /* layers taken from an interrupted run's journal */
    size_t n_layers;
    double seconds;
    /* the noise of the metric's Fisher, from the calibration file's metadata
     * (NAME.fisher_rse or NAME.margin_rse, tools/capture.py): per model layer
     * (names owned), NAN where unknown; and how it was drawn */
    char **noise_layer;
    double *noise_rse;
    char noise_how[160];
} bp_sens_result;

/* Measure the table for cfg, or load it from the cache in cfg->out_dir when
 * its key (hash of the inputs and every setting that affects it) matches.
 * force = 1 ignores the cache.  The table is (re)written to the cache. */
/* Set (by a SIGINT/SIGTERM handler) to stop the sensitivity stage after the
 * layer in progress; measured layers stay in the resumable journal. */
extern volatile sig_atomic_t bp_interrupt_requested;

/* The sensitivity settings of a config (first quantizer, global
 * activation settings). */
void bp_sens_spec_from_config(const bp_config *cfg, bp_sens_spec *s);

/* metric: auto is resolved here (cfg->metric set, cfg->metric_auto
 * cleared): margin when every layer has its decision Fisher, else kfac when
 * every layer has its output Fisher, else fisher when every layer has grad2,
 * else relative, or weight without calibration. */
int bp_run_sensitivity(bp_config *cfg, int force, bp_progress_fn progress,
                       void *progress_ctx, bp_sens_result *res, bp_error *err);
void bp_sens_result_free(bp_sens_result *res);

/* A worker rank of a distributed run (distrib.h): measure the layers rank
 * 0 deals, send their rows, until it stops the worker.  cfg NULL: the
 * config did not load (cfg_err says why; reported when work arrives).
 * Returns 0; failures go to rank 0, which ends the job. */
int bp_sens_worker(const bp_config *cfg, const bp_error *cfg_err);

/* metric_scales: every row's error (the metric's value) times its layer's
 * scale for that metric from the scales file at path (tools/calibrate.py),
 * so that errors are in the units of the objective the file calibrates to
 * (copied to predicts, at least 16 bytes), which is the errors' sum to the
 * power *exponent.  A layer without a scale for the metric is an error
 * naming the file, the layer and the metric. */
int bp_scale_errors(bp_table *t, const char *path, bp_metric metric, char *predicts,
                    double *exponent, bp_error *err);

/*
 * Plan robustly with a noisy Fisher (no metric_scales): each layer's scale
 * rho = sum of its metric over sum of its relative error (the exact, cheap
 * metric) is an estimate with relative standard error rse (res->noise_rse);
 * log rho is shrunk toward the layers' pooled mean by the empirical-Bayes
 * weight tau^2 / (tau^2 + rse^2), tau^2 the spread of log rho between layers
 * beyond the noise (method of moments), and every error of the layer is
 * multiplied by the shrunk over the raw scale.  Needs every layer's rse and
 * relative error; otherwise, and for metrics without a Fisher, nothing is
 * done (*shrunk 0).  note (>= 512 bytes) says what was done.
 */
int bp_shrink_noisy(bp_table *t, const bp_sens_result *res, bp_metric metric, int *shrunk,
                    char *note, bp_error *err);

/* Write a table as CSV, atomically. */
int bp_write_table(const bp_table *t, const char *path, bp_error *err);

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

/* Fill a plan from a solved table (cfg may be NULL for bare tables). The
 * plan's layer array is malloc'ed; the strings point into t and cfg. */
int bp_make_plan(const bp_table *t, const bp_solve_result *r, const bp_config *cfg,
                 const bp_sens_result *sens, const bp_solve_request *req,
                 bp_plan *plan, bp_error *err);

#endif
