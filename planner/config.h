/*
 * config.h - the YAML run configuration (see README "Config reference").
 *
 * bp_config_load validates every key: unknown keys, duplicate keys, wrong
 * types and out-of-range values are errors naming the file, line and key.
 * Paths in the file are relative to the config file's directory.
 */
#ifndef BP_CONFIG_H
#define BP_CONFIG_H

#include "../include/bitplan.h"
#include <stddef.h>

#include "../common/bp_error.h"
#include "../sensitivity/gptq.h"
#include "../sensitivity/quant.h"
#include "../sensitivity/sensitivity.h"
#include "formats/export.h"
#include "ties.h"

typedef struct bp_pin {
    char *pattern;            /* glob over layer names */
    int wbits;                /* 0 = not pinned */
    int abits;                /* 0 = not pinned */
} bp_pin;

/* activations.per_layer: the first rule whose pattern matches a layer
 * replaces the activation settings it names (-1 = keep). */
typedef struct bp_act_rule {
    char *pattern;
    int kind;                 /* bp_qkind or -1 */
    int granularity;          /* bp_granularity or -1 */
    int range;                /* bp_range or -1 */
} bp_act_rule;

/* allowed: for layers matching pattern, only these widths (empty = any). */
typedef struct bp_allow {
    char *pattern;
    int *wbits, *abits;
    size_t n_wbits, n_abits;
} bp_allow;

/* bp_budget_spec and bp_minimize (budget.minimize): include/bitplan.h */

typedef struct bp_config {
    char *path;               /* the config file as given */
    char *weights;            /* resolved model path */
    char *weights_as_written;
    char *calibration;        /* resolved, or NULL */
    char *calibration_as_written;
    char *imatrix;            /* model.imatrix: llama.cpp's importance matrix, resolved,
                               * or NULL */
    char *imatrix_as_written;
    char **include;
    size_t n_include;
    char **exclude;
    size_t n_exclude;
    int *wbits;
    size_t n_wbits;
    int *abits;
    size_t n_abits;
    int *ggml_types;          /* candidates.types: llama.cpp's types (wbits then holds
                               * each one's nominal width and the quantizer is ggml) */
    size_t n_ggml_types;
    int wbits_set, abits_set, quantizer_set;  /* given in the file */
    bp_wquantizer quantizers[BP_WQ_COUNT]; /* weights.quantizer: one or a list */
    size_t n_quantizers;
    bp_gptq_opts gptq;        /* weights.gptq */
    int squant_mode;          /* weights.squant.mode */
    bp_erq_opts erq;          /* weights.erq */
    int cross_fit;            /* weights.cross_fit: BP_XFIT_* */
    int precision;            /* precision: BP_PREC_SINGLE (default) or BP_PREC_DOUBLE */
    bp_qspec weights_q;       /* bits set per candidate */
    bp_qspec acts_q;
    int weights_range_set;    /* weights.range given (else ERQ uses its own grid) */
    int acts_range_set;       /* activations.range given (likewise) */
    bp_act_rule *act_rules;
    size_t n_act_rules;
    bp_metric metric;
    int metric_auto;          /* metric: auto (the default): resolved from the
                               * calibration file by the sensitivity stage */
    char *metric_scales;      /* metric_scales: per-layer scales (tools/calibrate.py),
                               * resolved; NULL when none */
    char *metric_scales_as_written;
    int noise_shrink;         /* noise: shrink (1, the default) | ignore (0) */
    bp_budget_spec budget;
    bp_pin *pins;
    size_t n_pins;
    bp_tie *ties;
    size_t n_ties;
    bp_allow *allow;
    size_t n_allow;
    char *latency_table;      /* budget.latency_table, resolved; NULL when none */
    unsigned exports;         /* output.formats beyond yaml/json: bit i = export i */
    int llama_names;          /* export.llama_names */
    int llama_compress;       /* export.compress_blocks: llama.cpp patterns per kind */
    bp_name_rule *rename;     /* export.rename */
    size_t n_rename;
    bp_ggml_rule *ggml;       /* export.ggml_types */
    size_t n_ggml;
    double time_limit;        /* seconds */
    double mip_gap;
    char *out_dir;            /* resolved */
    char *plan_name;          /* file name inside out_dir */
    char *table_name;
    char *weights_out;        /* output.weights: file name inside out_dir, or NULL */
    int dequantized;          /* output.dequantized */
    int write_yaml, write_json;
} bp_config;

int bp_config_load(bp_config *c, const char *path, bp_error *err);
/* The largest config file read (a config is small; anything bigger is not one). */
#define BP_CONFIG_MAX ((size_t)16 << 20)

/* The file names a run writes inside output.dir (plan, its JSON, the table
 * and its cache companions, exports, weights, sweep outputs), NULL-terminated
 * in names (at least BP_OUTPUT_NAMES_MAX slots); malloc'ed strings the
 * caller frees with bp_config_output_names_free. */
#define BP_OUTPUT_NAMES_MAX 24
size_t bp_config_output_names(const bp_config *c, char **names);
void bp_config_output_names_free(char **names);
/* plan.yaml -> plan.json (the JSON plan beside the YAML one); malloc'ed. */
char *bp_config_json_name(const char *plan_name);

/* output.plan, output.table and output.weights must not land on each other
 * or on another output of the run (label names the config in messages). */
int bp_config_check_outputs(const char *label, const bp_config *c, bp_error *err);
/* Parse from memory; `dir` resolves relative paths. */
int bp_config_parse(bp_config *c, const char *text, size_t size, const char *label,
                    const char *dir, bp_error *err);
void bp_config_free(bp_config *c);
/* Is any budget set? */
int bp_config_has_budget(const bp_config *c);

/* The activation settings for one layer and weight quantizer: acts_q with
 * the first matching per_layer rule applied; for ERQ, without a range in the
 * config or the rule, ERQ's own activation grid (asymmetric per tensor). */
bp_qspec bp_config_acts_for_quantizer(const bp_config *c, const char *layer, bp_wquantizer q);

/* The activation settings for one layer (acts_q with the first matching
 * per_layer rule applied). */
bp_qspec bp_config_acts_for(const bp_config *c, const char *layer);

#endif
