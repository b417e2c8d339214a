/*
 * export.h - a plan in the formats other quantizers read.
 *
 *   llamacpp      llama-quantize --tensor-type-file: whitespace-separated
 *                 "pattern=type" tokens (anchored, escaped regexes over GGUF
 *                 tensor names), plus FILE.args with the same as --tensor-type
 *                 arguments
 *   gptqmodel     {"dynamic": {"+:^name$": {bits, group_size, sym}, "-:^name$": {}}}
 *   llmcompressor a recipe YAML: one config_groups entry per distinct
 *                 (bits, group size, symmetric, activation bits), targets "re:^name$"
 *   autoround     {"name": {bits, group_size, sym, act_bits}}
 *   hawq          {"bit_config": {"name": bits}, "calibtip": {"name": [wbits, abits]}}
 *
 * Layer names may be mapped first (llama-style PyTorch names to GGUF, or
 * user rules): see bp_name_map.
 */
#ifndef BP_EXPORT_H
#define BP_EXPORT_H

#include <stddef.h>

#include "../../common/bp_error.h"

/* One layer of a plan as read back from plan.yaml / plan.json. */
typedef struct bp_export_layer {
    char *name;
    int wbits, abits;
    char *quantizer;
    char *granularity;        /* per_channel | per_group | per_tensor | none */
    long group_size;          /* 0 unless per_group */
    int symmetric;            /* 1 / 0 */
} bp_export_layer;

typedef struct bp_export_plan {
    bp_export_layer *layers;
    size_t n;
} bp_export_plan;

int bp_export_read_plan(const char *path, bp_export_plan *p, bp_error *err);
void bp_export_plan_free(bp_export_plan *p);

/* A rename rule: POSIX extended regex -> replacement with \1..\9. */
typedef struct bp_name_rule {
    const char *from, *to;
} bp_name_rule;

/* Map names in place: the first matching user rule, else (when llama is
 * set) the built-in llama-style PyTorch -> GGUF rules; unmatched names
 * stay.  Errors on a bad regex. */
int bp_export_rename(bp_export_plan *p, const bp_name_rule *rules, size_t n_rules, int llama,
                     bp_error *err);

/* ggml type for (bits, group size) in llama.cpp: 2 q2_K, 3 q3_K, 4 q4_K,
 * 5 q5_K, 6 q6_K, 8 q8_0, 16 f16 (k-quants use 256-wide super-blocks;
 * other widths are an error). */
const char *bp_ggml_type(int bits);

/* Escape regex metacharacters of s into out (cap bytes). */
void bp_regex_escape(const char *s, char *out, size_t cap);

/* A user entry of the llama.cpp type map: weight bits and group size
 * (-1: any, -2: per channel) -> ggml type name; consulted first. */
typedef struct bp_ggml_rule {
    int bits;
    long group;
    const char *type;
} bp_ggml_rule;

/* The formats, their default file names, and name -> index (-1 unknown). */
#define BP_EXPORT_COUNT 5
extern const char *const bp_export_names[BP_EXPORT_COUNT];
extern const char *const bp_export_files[BP_EXPORT_COUNT];
int bp_export_format(const char *name);

/* Write format `fmt` to path (atomically). */
int bp_export_write(const bp_export_plan *p, const char *fmt, const char *path,
                    const bp_ggml_rule *types, size_t n_types, bp_error *err);
/* The same; compress (llamacpp): layers blk.N.REST of one REST and type in
 * one pattern ^blk\.(N1|N2|...)\.REST$ (the same tensors match). */
int bp_export_write_opts(const bp_export_plan *p, const char *fmt, const char *path,
                         const bp_ggml_rule *types, size_t n_types, int compress, bp_error *err);

#endif
