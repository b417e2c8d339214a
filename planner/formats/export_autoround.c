/*
 * export_autoround.c - a plan as AutoRound's layer_config JSON: exact layer
 * names with bits, group size (0 per tensor, -1 per channel), symmetry and
 * the activation settings.
 */
#include <stdio.h>
#include <string.h>

#include "../../common/bp_file.h"
#include "exportfmt.h"

/* ---- AutoRound ------------------------------------------------------------ */

/* AutoRound's group_size: 0 per tensor, -1 per channel / token, else the group
 * (data_type/utils.py, reshape_pad_tensor_by_group_size). */
static long ar_group(const bp_export_layer *l)
{
    return xp_per_tensor(l) ? 0 : xp_group_of(l);
}

void xp_write_autoround(FILE *fp, const bp_export_plan *p, const bp_export_opts *o,
                            unsigned char *flag)
{
    int first = 1;
    fprintf(fp, "{");
    for (size_t i = 0; i < p->n; i++) {
        const bp_export_layer *l = &p->layers[i];
        if (l->merged)
            continue;
        fprintf(fp, "%s\n  ", first ? "" : ",");
        first = 0;
        bp_json_string(fp, l->name);
        if (l->wbits < 16)
            fprintf(fp, ": {\"bits\": %d, \"group_size\": %ld, \"sym\": %s, \"data_type\": \"int\"",
                    l->wbits, ar_group(l), l->symmetric ? "true" : "false");
        else
            fprintf(fp, ": {\"bits\": 16, \"data_type\": \"float\"");
        if (l->abits < 16) {
            int token = l->act_granularity && !strcmp(l->act_granularity, "per_token");
            fprintf(fp, ", \"act_bits\": %d, \"act_group_size\": %d, \"act_sym\": %s, "
                        "\"act_data_type\": \"int\", \"act_dynamic\": %s}",
                    l->abits, token ? -1 : 0, l->act_symmetric == 1 ? "true" : "false",
                    token ? "true" : "false");
        } else {
            fprintf(fp, ", \"act_bits\": 16, \"act_data_type\": \"float\"}");
        }
    }
    fprintf(fp, "\n}\n");
    XP_WARN_IF(o, "autoround", p, flag, xp_act_not_uniform(L),
               "AutoRound has no log2 or power-of-two-factor activation grid; written as a "
               "uniform integer grid of the same width");
    XP_WARN_IF(o, "autoround", p, flag, L->wbits < 16 && xp_embedding(L),
               "AutoRound never quantizes embeddings (but for GGUF output); it ignores this entry");
    XP_WARN_IF(o, "autoround", p, flag,
               L->wbits < 16 && !xp_embedding(L) && L->in_features > 0 &&
                (L->in_features % 32 || L->out_features % 32),
            "AutoRound keeps layers whose weight shape is not a multiple of 32 in 16 bits "
            "(resolver.py, apply_layer_config_special_cases)");
    xp_warn_tied(o, "autoround", p, flag,
                 "the weights are the embedding's (tied embeddings): AutoRound does not quantize "
                 "a tied head and keeps it in 16 bits");
    XP_WARN_IF(o, "autoround", p, flag, L->abits < 16 && L->act_symmetric < 0,
               "the plan does not say how activations are quantized (a plan from a bare table); "
               "written as asymmetric per-tensor");
    xp_note(o, "autoround", "AutoRound takes the layer config as JSON text, not a path: "
            "auto-round --model MODEL --layer_config \"$(cat autoround_layer_config.json)\"");
}
