/*
 * export_gptqmodel.c - a plan as GPTQModel's quantize_config.json: the most
 * common setting on top, every layer in "dynamic" ("+:^name$" with its
 * bits, group and symmetry, "-:^name$" to leave it in float).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/bp_file.h"
#include "exportfmt.h"

/* ---- GPTQModel ------------------------------------------------------------ */

/* GPTQModel's own limits (quantization/config.py: bits 2..8, and 5, 6 and 7
 * bits only in its planar gptq_p checkpoint format). */
int xp_gptqmodel_check(const bp_export_plan *p, bp_error *err)
{
    for (size_t i = 0; i < p->n; i++) {
        const bp_export_layer *l = &p->layers[i];
        if (!l->merged && l->wbits < 16 && (l->wbits < 2 || l->wbits > 8))
            return bp_fail(err, "gptqmodel: layer '%s': GPTQModel quantizes to 2..8 bits, not "
                           "%d (pin the layer or leave the width out of weights.bits)", l->name,
                           l->wbits);
    }
    return 0;
}

/* Does GPTQModel quantize this layer (it never quantizes embeddings)? */
static int gptq_layer(const bp_export_layer *l)
{
    return !l->merged && l->wbits < 16 && !xp_embedding(l);
}

void xp_write_gptqmodel(FILE *fp, const bp_export_plan *p, const bp_export_opts *o,
                            unsigned char *flag)
{
    const char *F = "gptqmodel";
    /* the top-level settings: the most common (bits, group, sym); ties go to
     * the setting met first */
    size_t best = p->n, best_count = 0;
    int planar = 0, head = 0;
    struct setting { int bits, sym; long group; size_t count, first; } *seen = NULL;
    size_t n_seen = 0, cap = 0;
    for (size_t i = 0; i < p->n; i++) {
        const bp_export_layer *l = &p->layers[i];
        if (!gptq_layer(l))
            continue;
        planar |= l->wbits >= 5 && l->wbits <= 7;
        head |= !strcmp(l->name, "lm_head") || !strcmp(l->name, "output.weight");
        size_t k = 0;
        while (k < n_seen && !(seen[k].bits == l->wbits && seen[k].group == xp_group_of(l) &&
                               seen[k].sym == l->symmetric))
            k++;
        if (k == n_seen) {
            if (n_seen == cap) {
                struct setting *g = realloc(seen, (cap ? 2 * cap : 8) * sizeof *seen);
                if (!g)
                    break;
                seen = g, cap = cap ? 2 * cap : 8;
            }
            seen[n_seen++] = (struct setting){l->wbits, l->symmetric, xp_group_of(l), 0, i};
        }
        seen[k].count++;
    }
    for (size_t k = 0; k < n_seen; k++)
        if (seen[k].count > best_count)
            best = seen[k].first, best_count = seen[k].count;
    free(seen);
    const bp_export_layer *b = best < p->n ? &p->layers[best] : NULL;
    const char *format = planar ? "gptq_p" : "gptq";
    fprintf(fp, "{\n  \"bits\": %d,\n  \"group_size\": %ld,\n  \"desc_act\": false,\n"
                "  \"sym\": %s,\n  \"lm_head\": %s,\n  \"quant_method\": \"gptq\",\n"
                "  \"checkpoint_format\": \"%s\",\n  \"format\": \"%s\",\n  \"dynamic\": {",
            b ? b->wbits : 4, b ? xp_group_of(b) : 128L, !b || b->symmetric ? "true" : "false",
            head ? "true" : "false", format, format);
    char pat[2200], key[2300];
    int first = 1;
    for (size_t i = 0; i < p->n; i++) {
        const bp_export_layer *l = &p->layers[i];
        if (l->merged || xp_embedding(l))
            continue;
        xp_anchored(l->name, pat, sizeof pat);
        snprintf(key, sizeof key, "%s:%s", l->wbits >= 16 ? "-" : "+", pat);
        fprintf(fp, "%s\n    ", first ? "" : ",");
        first = 0;
        bp_json_string(fp, key);
        if (l->wbits >= 16)
            fprintf(fp, ": {}");
        else
            fprintf(fp, ": {\"bits\": %d, \"group_size\": %ld, \"sym\": %s}", l->wbits,
                    xp_group_of(l), l->symmetric ? "true" : "false");
    }
    fprintf(fp, "\n  }\n}\n");
    XP_WARN_IF(o, F, p, flag, L->wbits < 16 && xp_embedding(L),
               "GPTQModel never quantizes embeddings; left out, they stay in the source type");
    XP_WARN_IF(o, F, p, flag, L->wbits < 16 && xp_per_tensor(L),
               "GPTQModel has no per-tensor grid; written as per-channel (group_size -1)");
    XP_WARN_IF(o, F, p, flag, L->abits < 16,
               "GPTQModel quantizes weights only; the planned activation widths are not applied");
    xp_warn_tied(o, F, p, flag,
                 "the weights are the embedding's (tied embeddings); GPTQModel quantizes lm_head "
                 "(lm_head: true) as its own tensor");
    if (planar)
        xp_note(o, F, "5-, 6- or 7-bit layers: GPTQModel stores these only in its planar "
                "format, so the whole checkpoint is written as checkpoint_format gptq_p "
                "(readers must support it)");
}
