/*
 * export_llmcompressor.c - a plan as an llm-compressor recipe: one
 * config_groups entry per distinct weight and activation setting, targets
 * "re:^name$" (compressed-tensors' match is re.match), the float layers
 * under ignore.
 */
#include <stdio.h>
#include <string.h>

#include "../../common/bp_file.h"
#include "exportfmt.h"

/* ---- llm-compressor / compressed-tensors ---------------------------------- */

/* Same config group: weight bits, granularity, group, symmetry, activations. */
static int same_group(const bp_export_layer *a, const bp_export_layer *b)
{
    int aw = a->wbits < 16, bw = b->wbits < 16;
    if (aw != bw || (a->abits < 16) != (b->abits < 16))
        return 0;
    if (aw && (a->wbits != b->wbits || xp_group_of(a) != xp_group_of(b) ||
               xp_per_tensor(a) != xp_per_tensor(b) || a->symmetric != b->symmetric))
        return 0;
    if (a->abits < 16) {
        const char *ga = a->act_granularity ? a->act_granularity : "per_tensor";
        const char *gb = b->act_granularity ? b->act_granularity : "per_tensor";
        return a->abits == b->abits && !strcmp(ga, gb) && a->act_symmetric == b->act_symmetric;
    }
    return 1;
}

/* A YAML line "- \"re:^name$\"" (a JSON string is a YAML double-quoted one). */
static void yaml_target(FILE *fp, const char *indent, const char *name)
{
    char pat[2200], t[2210];
    xp_anchored(name, pat, sizeof pat);
    snprintf(t, sizeof t, "re:%s", pat);
    fprintf(fp, "%s- ", indent);
    bp_json_string(fp, t);
    fputc('\n', fp);
}

static int lc_quantized(const bp_export_layer *l)
{
    return !l->merged && (l->wbits < 16 || l->abits < 16);
}

void xp_write_llmcompressor(FILE *fp, const bp_export_plan *p, const bp_export_opts *o,
                                unsigned char *flag)
{
    int groups = 0, ignored = 0;
    fprintf(fp, "# llm-compressor recipe written by bitplan: one group per distinct weight\n"
                "# and activation setting\n"
                "quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n");
    for (size_t i = 0; i < p->n; i++)
        ignored |= !p->layers[i].merged && !lc_quantized(&p->layers[i]);
    if (ignored) {
        fprintf(fp, "      ignore:\n");
        for (size_t i = 0; i < p->n; i++)
            if (!p->layers[i].merged && !lc_quantized(&p->layers[i]))
                yaml_target(fp, "        ", p->layers[i].name);
    }
    fprintf(fp, "      config_groups:\n");
    for (size_t i = 0; i < p->n; i++) {
        const bp_export_layer *l = &p->layers[i];
        int seen = !lc_quantized(l);
        for (size_t j = 0; j < i && !seen; j++)
            seen = lc_quantized(&p->layers[j]) && same_group(&p->layers[j], l);
        if (seen)
            continue;
        fprintf(fp, "        group_%d:\n          targets:\n", groups++);
        for (size_t j = i; j < p->n; j++)
            if (lc_quantized(&p->layers[j]) && same_group(&p->layers[j], l))
                yaml_target(fp, "            ", p->layers[j].name);
        long g = xp_group_of(l);
        if (l->wbits < 16) {
            fprintf(fp, "          weights:\n            num_bits: %d\n            type: int\n"
                        "            symmetric: %s\n            strategy: %s\n"
                        "            dynamic: false\n", l->wbits,
                    l->symmetric ? "true" : "false",
                    xp_per_tensor(l) ? "tensor" : g > 0 ? "group" : "channel");
            if (g > 0)
                fprintf(fp, "            group_size: %ld\n", g);
        }
        if (l->abits < 16) {
            int token = l->act_granularity && !strcmp(l->act_granularity, "per_token");
            fprintf(fp, "          input_activations:\n            num_bits: %d\n"
                        "            type: int\n            symmetric: %s\n"
                        "            strategy: %s\n            dynamic: %s\n", l->abits,
                    l->act_symmetric == 1 ? "true" : "false", token ? "token" : "tensor",
                    token ? "true" : "false");
        }
    }
    XP_WARN_IF(o, "llmcompressor", p, flag, xp_act_not_uniform(L),
               "compressed-tensors has no log2 or power-of-two-factor activation grid; written "
               "as a uniform integer grid of the same width");
    XP_WARN_IF(o, "llmcompressor", p, flag, L->abits < 16 && L->act_symmetric < 0,
               "the plan does not say how activations are quantized (a plan from a bare table); "
               "written as asymmetric per-tensor");
    xp_warn_tied(o, "llmcompressor", p, flag,
                 "the weights are the embedding's (tied embeddings); a target on the head "
                 "quantizes the shared tensor");
}
