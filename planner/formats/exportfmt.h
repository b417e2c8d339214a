/*
 * exportfmt.h - what the export writers share: the layer predicates every
 * consumer's rules are phrased in, the warnings' wording, and each format's
 * writer (export_llamacpp.c, export_gptqmodel.c, export_llmcompressor.c,
 * export_autoround.c), which export.c dispatches to.  Internal to
 * planner/formats/.
 */
#ifndef BP_EXPORTFMT_H
#define BP_EXPORTFMT_H

#include <stdio.h>
#include <string.h>

#include "export.h"

/* ---- what a layer is, in the consumers' terms ---------------------------- */

/* The group size, -1 for per channel. */
static inline long xp_group_of(const bp_export_layer *l)
{
    return strcmp(l->granularity, "per_group") == 0 ? l->group_size : -1;
}

static inline int xp_per_tensor(const bp_export_layer *l)
{
    return strcmp(l->granularity, "per_tensor") == 0;
}

static inline int xp_embedding(const bp_export_layer *l)
{
    return bp_embedding_name(l->name);
}

/* Activations whose grid only a uniform integer grid can stand in for. */
static inline int xp_act_not_uniform(const bp_export_layer *l)
{
    return l->abits < 16 && l->act_kind && strcmp(l->act_kind, "uniform") != 0;
}

/* "^escaped$" (Python re and POSIX ERE agree on these escapes). */
void xp_anchored(const char *name, char *out, size_t cap);

/* ---- warnings ------------------------------------------------------------ */

/* One warning for the flagged layers: "FORMAT: N layer(s) (a, b, c, ...): what". */
void xp_warn_layers(const bp_export_opts *o, const char *fmt, const bp_export_plan *p,
                    const unsigned char *flag, const char *what);

/* Flag the layers (L, not merged) for which pred holds and warn once. */
#define XP_WARN_IF(o, fmt, p, flag, pred, what)                                              \
    do {                                                                                     \
        for (size_t i_ = 0; i_ < (p)->n; i_++) {                                             \
            const bp_export_layer *L = &(p)->layers[i_];                                     \
            (flag)[i_] = !L->merged && (pred);                                               \
        }                                                                                    \
        xp_warn_layers(o, fmt, p, flag, what);                                               \
    } while (0)

/* The layers whose weights are an embedding's: what the format does to them. */
void xp_warn_tied(const bp_export_opts *o, const char *fmt, const bp_export_plan *p,
                  unsigned char *flag, const char *what);

/* How to run the consumer (only with o->notes). */
void xp_note(const bp_export_opts *o, const char *fmt, const char *text);

/* ---- the writers --------------------------------------------------------- */

/* llama.cpp: the user's rule for (bits, group), else the default type (NULL:
 * none); the patterns ("pattern=type" lines, or with args "--tensor-type"
 * arguments), -1 out of memory; the warnings, once both files are written. */
const char *xp_ggml_for(const bp_export_layer *l, const bp_ggml_rule *types, size_t n);
int xp_write_llamacpp(FILE *fp, const bp_export_plan *p, int args, const char **type,
                      int compress);
void xp_llamacpp_warnings(const bp_export_plan *p, const char **type, const bp_export_opts *o,
                          unsigned char *flag);
/* The llama-quantize command line that applies the types (FILE.cmd):
 * --imatrix when the plan had one, the type file, the embedding's and the
 * output's types, the plan's model, MODEL-bitplan.gguf, and the mix named
 * for the most common type as the base (it only fills general.file_type
 * when every tensor has its own type). */
void xp_write_llamacpp_command(FILE *fp, const bp_export_plan *p, const char **type,
                               const char *type_file, const char *model, const char *imatrix);

/* GPTQModel: its limits (an error before writing), then quantize_config.json. */
int xp_gptqmodel_check(const bp_export_plan *p, bp_error *err);
void xp_write_gptqmodel(FILE *fp, const bp_export_plan *p, const bp_export_opts *o,
                        unsigned char *flag);

/* llm-compressor's recipe and AutoRound's layer config. */
void xp_write_llmcompressor(FILE *fp, const bp_export_plan *p, const bp_export_opts *o,
                            unsigned char *flag);
void xp_write_autoround(FILE *fp, const bp_export_plan *p, const bp_export_opts *o,
                        unsigned char *flag);

#endif
