/*
 * plan.h - the quantization plan: what the solver chose for every layer,
 * with the provenance (files and their SHA-256), the budget, the solver's
 * status and the totals.  Written as YAML and/or JSON, atomically and
 * deterministically (same plan -> same bytes).
 */
#ifndef BP_PLAN_H
#define BP_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "../../common/bp_error.h"

#define BP_PLAN_FORMAT_VERSION 1

typedef struct bp_plan_layer {
    const char *name;
    int wbits, abits;
    const char *quantizer;
    const char *granularity;  /* NULL when unknown (plans from a bare table) */
    int64_t group_size;       /* 0 when not per-group */
    int symmetric;            /* -1 when unknown */
    const char *act_kind;     /* uniform | log2 | ptf; NULL when activations
                               * stay float (abits 16) or are unknown */
    const char *act_granularity; /* per_tensor | per_token; NULL likewise */
    int act_symmetric;        /* -1 when NULL above */
    int64_t in_features;      /* inputs per output row (llama.cpp's ne[0]); 0 unknown */
    const char *tied_with;    /* a layer with byte-identical weights, or NULL */
    double error;
    int64_t params;
    int64_t weight_bits;
} bp_plan_layer;

typedef struct bp_plan {
    const char *model_path, *model_sha256;       /* NULL when unknown */
    const char *calib_path, *calib_sha256;
    const char *table_path;                      /* for solve --table */
    const char *metric;                          /* NULL when unknown */
    const char *metric_scales;                   /* the scales file, or NULL */
    const char *predicts;                        /* the objective the scaled errors
                                                  * predict (kl, flips, loss, metric) */
    double exponent;                             /* it is (sum of errors)^exponent */
    const char *noise;                           /* what was done about a noisy
                                                  * Fisher, or NULL */
    double budget_avg_bits;                      /* 0 = not set */
    double budget_max_bytes;                     /* 0 = not set */
    double budget_max_error;                     /* < 0 = not set */
    double budget_max_bops;                      /* 0 = not set */
    double budget_max_latency;                   /* 0 = not set */
    const char *objective_name;                  /* "error" or "size" */
    const char *solver, *status;
    double objective, gap, seconds;
    int64_t total_params, total_weight_bits;
    double total_error;
    double total_bops;
    double total_latency;                        /* NAN without a latency table */
    bp_plan_layer *layers;
    size_t n_layers;
} bp_plan;

int bp_plan_write_yaml(const bp_plan *p, const char *path, bp_error *err);
int bp_plan_write_json(const bp_plan *p, const char *path, bp_error *err);

#endif
