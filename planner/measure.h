/*
 * measure.h - the sensitivity stage: the table measured (layer by layer,
 * journaled; over MPI ranks in distrib.c), resumed from an interrupted run,
 * or read from the cache (cache.h), after the checks (checks.h).  Progress
 * goes through a callback; nothing here prints.
 */
#ifndef BP_MEASURE_H
#define BP_MEASURE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/bp_error.h"
#include "../include/bitplan.h"
#include "../sensitivity/sensitivity.h"
#include "../sensitivity/table.h"
#include "config.h"
#include "journal.h"
#include "model.h"

/* Progress of one stage's items (the session turns it into bp_progress_fn):
 * done of total, `what` the item, NULL when the stage ended. */
typedef void (*bp_step_fn)(void *ctx, size_t done, size_t total, const char *what);


typedef struct bp_sens_result {
    bp_table table;
    char model_sha256[65];
    char calib_sha256[65];    /* "" when there is no calibration file */
    char imatrix_sha256[65];  /* "" when there is no importance matrix */
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

/* Set (by a SIGINT/SIGTERM handler) to stop the sensitivity stage after the
 * layer in progress; measured layers stay in the resumable journal. */
extern volatile sig_atomic_t bp_interrupt_requested;

/* The sensitivity settings of a config (first quantizer, global
 * activation settings). */
void bp_sens_spec_from_config(const bp_config *cfg, bp_sens_spec *s);

/* Measure the table for cfg, or load it from the cache in cfg->out_dir when
 * its key matches; force = 1 ignores the cache.  The table is (re)written to
 * the cache.  metric: auto is resolved here (cfg->metric set,
 * cfg->metric_auto cleared). */
int bp_run_sensitivity(bp_config *cfg, int force, bp_step_fn progress,
                       void *progress_ctx, bp_sens_result *res, bp_error *err);
void bp_sens_result_free(bp_sens_result *res);

/* What measuring consecutive layers carries from one to the next: the
 * Grams and GPTQ factors of the last layer's inputs, and how to tell that
 * the next layer reads the same inputs. */
typedef struct bp_measurer {
    const bp_config *cfg;
    const bp_model *m;
    bp_sens_spec spec;
    bp_sens_cache cache;
    size_t seen_i;                   /* the layer measured last, or (size_t)-1 */
    uint64_t seen_fp;                /* its inputs' fingerprint, with their shape */
    int64_t seen_n, seen_w;
    bp_stats_grid *sg;
} bp_measurer;

int bp_measurer_init(bp_measurer *ms, const bp_config *cfg, const bp_model *m, bp_error *err);
void bp_measurer_free(bp_measurer *ms);
/* Layer i under every quantizer of the config (rows quantizer-major) into t. */
int bp_measure_layer(bp_measurer *ms, size_t i, bp_table *t, bp_error *err);

#endif
