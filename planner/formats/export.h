/*
 * export.h - a plan in the formats other quantizers read, each checked
 * against its consumer's own matching and field rules (README "Exports"):
 *
 *   llamacpp      llama-quantize --tensor-type-file: whitespace-separated
 *                 "pattern=type" tokens (llama-quantize lowercases the
 *                 pattern, splits at the first '=' and std::regex_search-es
 *                 GGUF tensor names), plus FILE.args with --tensor-type
 *   gptqmodel     a complete quantize_config.json with a "dynamic" entry per
 *                 layer ("+:^name$" / "-:^name$", GPTQModel's dynamic_get)
 *   llmcompressor a recipe YAML: one config_groups entry per distinct
 *                 weight and activation setting, targets "re:^name$"
 *                 (compressed-tensors' match: re.match)
 *   autoround     {"name": {bits, group_size, sym, data_type, act_*}}
 *                 (AutoRound's layer_config: exact names)
 *
 * Whatever a consumer cannot express is a warning naming the layers and the
 * setting; what it would reject is an error before anything is written.
 */
#ifndef BP_EXPORT_H
#define BP_EXPORT_H

#include <stddef.h>
#include <stdio.h>

#include "../../common/bp_error.h"

/* One layer of a plan as read back from plan.yaml / plan.json. */
typedef struct bp_export_layer {
    char *name;
    int wbits, abits;
    char *quantizer;
    char *granularity;        /* per_channel | per_group | per_tensor | none */
    long group_size;          /* 0 unless per_group */
    int symmetric;            /* 1 / 0 */
    char *act_kind;           /* uniform | log2 | ptf, or NULL (float or unknown) */
    char *act_granularity;    /* per_tensor | per_token, or NULL */
    int act_symmetric;        /* 1 / 0, -1 unknown */
    long in_features;         /* inputs per output row; 0 unknown */
    long out_features;        /* rows (params / in_features); 0 unknown */
    char *tied_with;          /* an embedding with the same weights, or NULL */
    int ggml;                 /* the quantizer is a llama.cpp type (planned from a GGUF:
                               * the name is the tensor's without ".weight") */
    int merged;               /* internal: renamed onto an earlier layer's name */
} bp_export_layer;

typedef struct bp_export_plan {
    bp_export_layer *layers;
    size_t n;
    char *model, *imatrix;    /* model.weights and model.imatrix as the plan has them */
} bp_export_plan;

int bp_export_read_plan(const char *path, bp_export_plan *p, bp_error *err);
void bp_export_plan_free(bp_export_plan *p);

/* A rename rule: POSIX extended regex -> replacement with \1..\9. */
typedef struct bp_name_rule {
    const char *from, *to;
} bp_name_rule;

/* Map names in place: the first matching user rule, else (when llama is
 * set) the built-in PyTorch -> GGUF rules (Llama, Mistral, Qwen2/3, Phi-3
 * fused qkv / gate_up, Mixtral and Qwen MoE experts, which GGUF stores as
 * one tensor per block); unmatched names stay.  Errors: a bad regex, an
 * empty result, two layers mapped onto one name by a user rule, or experts
 * that share one GGUF tensor with different settings.  Experts with equal
 * settings become one entry. */
int bp_export_rename(bp_export_plan *p, const bp_name_rule *rules, size_t n_rules, int llama,
                     bp_error *err);

/* ggml type for (bits, group size) in llama.cpp: 2 q2_K, 3 q3_K, 4 q4_K,
 * 5 q5_K, 6 q6_K, 8 q8_0, 16 f16 (k-quants use 256-wide super-blocks;
 * other widths are an error). */
const char *bp_ggml_type(int bits);

/* Does a layer name read as an embedding table (embed, wte, tok_emb,
 * token_embd.weight)?  Consumers treat those apart. */
int bp_embedding_name(const char *name);

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
#define BP_EXPORT_COUNT 4
extern const char *const bp_export_names[BP_EXPORT_COUNT];
extern const char *const bp_export_files[BP_EXPORT_COUNT];
int bp_export_format(const char *name);

/* "unknown export format ..." with the accepted names (and why hawq went). */
int bp_export_unknown(const char *fmt, bp_error *err);

typedef struct bp_export_opts {
    const bp_ggml_rule *types;  /* llamacpp: the user's type map */
    size_t n_types;
    int compress;             /* llamacpp: layers blk.N.REST of one REST and type in
                               * one pattern ^blk\.(N1|N2|...)\.REST$ */
    FILE *warn;               /* warnings go here; NULL: none */
    int notes;                /* also notes (how to run the consumer) */
    const char *cmd_model, *cmd_imatrix, *cmd_types; /* llamacpp: the paths its command
                               * line names (NULL: the plan's, and the file written) */
} bp_export_opts;

/* Write format `fmt` to path (atomically; llamacpp also path.args). */
int bp_export_write_opts(const bp_export_plan *p, const char *fmt, const char *path,
                         const bp_export_opts *o, bp_error *err);
/* The same without compression or warnings. */
int bp_export_write(const bp_export_plan *p, const char *fmt, const char *path,
                    const bp_ggml_rule *types, size_t n_types, bp_error *err);

#endif
