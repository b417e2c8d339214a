/*
 * bitplan.h - the bitplan library: which bit widths each layer of a neural
 * network gets, under a size, speed or error budget.
 *
 *     bp_session *s;
 *     bp_plan *plan;
 *     bp_error err;
 *     bp_options o = {0};                          // the config's settings
 *     if (bp_open(&s, "my.yaml", &o, &err) < 0 ||  // a YAML config (README)
 *         bp_measure(s, &err) < 0 ||               // the sensitivity table
 *         bp_solve(s, NULL, &plan, &err) < 0)      // under the config's budget
 *         ...err.msg...
 *     bp_write(s, plan, NULL, NULL, &err);         // plan, exports, weights
 *     bp_plan_free(plan);
 *     bp_close(s);
 *
 * Every function that can fail returns 0, or -1 with err->msg one sentence
 * naming the file, key or layer and what was expected.  Nothing prints and
 * nothing exits: progress goes to the callback, the exports' warnings to
 * the stream the options name, and the rest to FILE* arguments.  Compile and
 * link with `pkg-config --cflags --libs bitplan`.
 */
#ifndef BITPLAN_H
#define BITPLAN_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What the shared library exports. */
#define BP_API __attribute__((visibility("default")))

/* ---- errors ---------------------------------------------------------------- */

#ifndef BP_ERROR_RECORD
#define BP_ERROR_RECORD
#define BP_ERROR_MAX 8192          /* a 4096-byte path and the reason after it */
typedef struct bp_error {
    char msg[BP_ERROR_MAX];
} bp_error;
#endif

/* "MAJOR.MINOR.PATCH" */
BP_API const char *bp_version(void);

/* Is name one of kind's: "metric" (auto, mse, relative, weight, hawq, fisher,
 * kfac, margin), "quantizer" (rtn, gptq, squant, erq) or "format" (llamacpp,
 * gptqmodel, llmcompressor, autoround)?  0, or -1 with err saying what is
 * expected. */
BP_API int bp_check_name(const char *kind, const char *name, bp_error *err);

/* A list of budget values "a,b,c" or a range "START:STOP:STEP" (STOP
 * included within rounding); opt names the option in messages.  *values
 * malloc'ed. */
BP_API int bp_parse_values(const char *opt, const char *spec, double **values, size_t *n,
                           bp_error *err);

/* ---- budgets --------------------------------------------------------------- */

#ifndef BP_BUDGET_RECORD
#define BP_BUDGET_RECORD
typedef enum bp_minimize {
    BP_MIN_AUTO = 0,          /* error, or size when only max_error is given */
    BP_MIN_ERROR,
    BP_MIN_SIZE,
    BP_MIN_BOPS,
    BP_MIN_LATENCY
} bp_minimize;

/* Any combination; unset budgets are 0 (max_error: < 0). */
typedef struct bp_budget_spec {
    double avg_bits;          /* average weight bits, scales included */
    double max_bytes;         /* total weight bytes, scales included */
    double max_error;         /* total predicted error (in the objective's units
                               * with metric scales); < 0: none */
    double max_bops;          /* bit operations per sample */
    double max_latency;       /* from the latency table */
    bp_minimize minimize;
    double max_file_bytes;    /* a GGUF model: the quantized file's bytes */
    double bpw;               /* a GGUF model: bits per weight as llama.cpp counts them
                               * (all tensors' bits over all their elements) */
} bp_budget_spec;
#endif

/* ---- plans ----------------------------------------------------------------- */

#ifndef BP_PLAN_RECORD
#define BP_PLAN_RECORD
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
    const char *imatrix_path, *imatrix_sha256;   /* llama.cpp's importance matrix, or NULL */
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
    const char *objective_name;                  /* min_error | min_size | ... */
    const char *solver, *status;
    double objective, gap, seconds;
    int64_t total_params, total_weight_bits;
    double total_error;
    double total_bops;
    double total_latency;                        /* NAN without a latency table */
    double gguf_file_bytes;                      /* a GGUF model: the quantized file's
                                                  * predicted bytes; 0 otherwise */
    double gguf_bpw;                             /* ... and llama.cpp's bits per weight */
    bp_plan_layer *layers;
    size_t n_layers;
} bp_plan;
#endif

/* ---- sessions -------------------------------------------------------------- */

/* Progress of long work: in `stage` (sensitivity, quantized weights,
 * quantize, sweep), done of total items, `what` the item (a layer's name, a
 * budget); what NULL: the stage ended (clear any progress line). */
typedef void (*bp_progress_fn)(void *ctx, const char *stage, size_t done, size_t total,
                               const char *what);

/* What a session overrides in its config (zero-initialise: nothing). */
typedef struct bp_options {
    const char *metric;          /* auto | mse | relative | weight | hawq | fisher | kfac
                                  * | margin; NULL: the config's */
    const char *metric_scales;   /* per-layer metric scales (tools/calibrate.py) */
    const char *errors;          /* a table of measured errors to plan with */
    const char *choices;         /* a plan whose layers keep their candidates */
    const char *latency;         /* a latency table (else budget.latency_table) */
    int force;                   /* measure again, ignoring the cached table */
    double time_limit;           /* solver seconds; <= 0: the config's */
    int messages_notes;          /* exports: also notes on running the consumer */
    FILE *messages;              /* exports' warnings (and notes); NULL: none */
    bp_progress_fn progress;     /* NULL: none */
    void *progress_ctx;
} bp_options;

typedef struct bp_session bp_session;

/* A session over a YAML config (paths in it relative to it). */
BP_API int bp_open(bp_session **s, const char *config, const bp_options *o, bp_error *err);
/* A session over a bare sensitivity table (CSV layer,wbits,abits,error,params). */
BP_API int bp_open_table(bp_session **s, const char *table, const bp_options *o, bp_error *err);
BP_API void bp_close(bp_session *s);

/* Ask a running measurement to stop after its layer (async-signal-safe);
 * measured layers are kept in the resumable journal. */
BP_API void bp_interrupt(void);

/* ---- the sensitivity table ------------------------------------------------- */

/* Measure the table, resume an interrupted measurement, or read the cache
 * (output.dir is locked for the session from here on: one run writes into a
 * directory at a time).  A bare table is measured already. */
BP_API int bp_measure(bp_session *s, bp_error *err);

typedef struct bp_table_info {
    size_t rows, layers;
    int from_cache;
    size_t resumed_layers;       /* layers taken from an interrupted run's journal */
    double seconds;
    const char *metric;          /* the metric the errors are (auto resolved) */
    const char *cache_path;      /* the cached table in output.dir, or NULL */
} bp_table_info;
BP_API void bp_table_info_get(const bp_session *s, bp_table_info *info);
/* The measured table as CSV (the sensitivity table's columns). */
BP_API int bp_save_table(const bp_session *s, const char *path, bp_error *err);
/* The program the solver sees (after pins, allowed widths, choices and ties)
 * as CSV group,choice,layer,wbits,abits,quantizer,error,weight_bits, to the
 * file out (written atomically; NULL or "-": stdout). */
BP_API int bp_candidates(bp_session *s, const char *out, bp_error *err);

/* ---- solving and writing --------------------------------------------------- */

/* Is there a budget to solve under (budget, the config's, or choices for
 * every layer)?  Check it before bp_measure: an error names the config. */
BP_API int bp_check_budget(const bp_session *s, const bp_budget_spec *budget, bp_error *err);
/* The optimal plan under budget (NULL: the config's); an infeasible budget is
 * an error naming its smallest feasible value.  *plan: free with
 * bp_plan_free, before bp_close (its strings point into the session). */
BP_API int bp_solve(bp_session *s, const bp_budget_spec *budget, bp_plan **plan, bp_error *err);
BP_API void bp_plan_free(bp_plan *plan);
/* Write the plan: out NULL writes the config's outputs (the plan, its JSON,
 * the exports and the quantized weights) as one set into output.dir (the
 * previous set stays whole until the new one is complete); out a path
 * writes the plan alone (".json": JSON; "-": YAML on stdout).  *written
 * (may be NULL): the plan's path, owned by the session. */
BP_API int bp_write(bp_session *s, const bp_plan *plan, const char *out, const char **written,
                    bp_error *err);
/* Write the output set (the plan, its JSON, the exports and the quantized
 * weights) into dir instead of output.dir, e.g. a refined plan beside the IP
 * plan; the sensitivity table stays cached in output.dir.  dir is created
 * when missing, and locked and written like output.dir. */
BP_API int bp_set_output_dir(bp_session *s, const char *dir, bp_error *err);
/* The quantized weights the last bp_write wrote (output.weights), or NULL. */
BP_API const char *bp_weights_path(const bp_session *s);

/* Every layer quantized at one candidate (quantizer NULL: the config's first;
 * abits 0: the widest candidate) into the quantized-weights file out; with
 * plan_out, also that uniform plan, solved like bp_solve's. */
typedef struct bp_quantize_info {
    size_t layers;
    int abits;                /* as resolved */
    const char *quantizer;
} bp_quantize_info;
BP_API int bp_quantize(bp_session *s, int wbits, int abits, const char *quantizer, const char *out,
                       const char *plan_out, bp_quantize_info *info, bp_error *err);

/* ---- sweeps ---------------------------------------------------------------- */

typedef struct bp_sweep_point {
    char kind[16];            /* plan | uniform | first_last_8 */
    double budget;            /* the budget asked for (baselines: their b) */
    char status[16];          /* optimal | feasible | infeasible */
    double weight_bytes, avg_bits, bops, error;
    char *layers;             /* "name=w/a name=w/a ..."; NULL when infeasible */
} bp_sweep_point;

typedef struct bp_sweep_summary {
    const bp_sweep_point *points;
    size_t n_points;
    const char *budget_name;  /* avg_bits | max_bytes | max_bops | max_latency | max_error */
    const char *csv, *svg;    /* frontier.csv, frontier.svg */
    const char *pareto;       /* pareto.csv, or why it was skipped */
} bp_sweep_summary;

/* One plan per budget value of the kind budget_name (avg_bits, max_bytes,
 * max_bops, max_latency or max_error) with the uniform baselines and the
 * exact frontier, written to dir (NULL: output.dir, or "." for a bare table)
 * as frontier.csv, frontier.svg and pareto.csv, with plans every point's
 * plan in dir/plans/.  *summary is the session's until the next sweep. */
BP_API int bp_sweep(bp_session *s, const char *budget_name, const double *values, size_t n,
                    const char *dir, int plans, const bp_sweep_summary **summary, bp_error *err);

/* ---- exports, grids, inspection ------------------------------------------- */

/* A plan file (YAML or JSON) for another quantizer: format llamacpp,
 * gptqmodel, llmcompressor or autoround; config (may be NULL) applies its
 * export settings and, without out, writes into its output.dir; out NULL:
 * the format's file name (there or in the current directory).  Warnings go
 * to o->messages.  *written (may be NULL, malloc'ed): the file written. */
BP_API int bp_export(const char *plan, const char *format, const char *out, const char *config,
                     int llama_names, int compress, const bp_options *o, char **written,
                     bp_error *err);

/* The static activation grid of every layer's activation candidates, fitted
 * on the rows of calibration as the sensitivity stage fits them, as JSON
 * (format bitplan-grids-v1) to the file out (atomically; NULL or "-":
 * stdout). */
BP_API int bp_grids(const char *config, const char *calibration, const char *out, bp_error *err);

/* What a file is and holds (a model, calibration, statistics or quantized-
 * weights file, a config, plan, table, export...), to out; a quantized-
 * weights file is checked layer by layer, a config with its files. */
BP_API int bp_inspect(const char *path, FILE *out, bp_error *err);

/* A commented, working config for src (a capture directory, a safetensors,
 * .npy-directory or GGUF model), opened as bp_open opens it, written to out
 * (NULL or "-": stdout); an existing out is never overwritten. */
BP_API int bp_init(const char *src, const char *out, bp_error *err);

/* ---- several processes (an MPI build; one process otherwise) ---------------- */

BP_API int bp_mpi_init(int *argc, char ***argv);
BP_API int bp_mpi_rank(void);
/* Ranks above 0: measure what rank 0 deals for the config (NULL: the
 * command has no sensitivity stage) until it stops them. */
BP_API int bp_mpi_worker(const char *config, const bp_options *o);
/* Rank 0 when the command ended with exit status rc: a failure ends every
 * rank, success releases the workers; then MPI ends. */
BP_API void bp_mpi_end(int rc);

/* Where the time went (seconds, GFLOP and GFLOP/s per stage), to out. */
BP_API void bp_profile_print(FILE *out);

#ifdef __cplusplus
}
#endif

#endif
