/*
 * export.c - plans in other quantizers' formats (see export.h).
 */
#include "export.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../../common/bp_file.h"
#include "yamltree.h"

/* ---- reading a plan back -------------------------------------------------- */

void bp_export_plan_free(bp_export_plan *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->layers[i].name);
        free(p->layers[i].quantizer);
        free(p->layers[i].granularity);
        free(p->layers[i].act_kind);
        free(p->layers[i].act_granularity);
        free(p->layers[i].tied_with);
    }
    free(p->layers);
    memset(p, 0, sizeof *p);
}

static const bp_ynode *map_get(const bp_ynode *m, const char *key)
{
    if (!m || m->type != BP_Y_MAP)
        return NULL;
    for (size_t i = 0; i < m->n; i++)
        if (strcmp(m->items[2 * i]->str, key) == 0)
            return m->items[2 * i + 1];
    return NULL;
}

static int layer_field(const char *path, const bp_ynode *m, size_t i, const char *key,
                       const char **out, bp_error *err)
{
    const bp_ynode *v = map_get(m, key);
    if (!v || v->type != BP_Y_SCALAR)
        return bp_fail(err, "%s: layers[%zu]: missing '%s' (not a bitplan plan?)", path, i,
                       key);
    *out = v->str;
    return 0;
}

/* An optional string field: NULL when absent or null. */
static int opt_str(const bp_ynode *m, const char *key, char **out, bp_error *err)
{
    const bp_ynode *v = map_get(m, key);
    *out = NULL;
    if (!v || v->type != BP_Y_SCALAR || (!v->quoted && !strcmp(v->str, "null")))
        return 0;
    return (*out = bp_strdup(v->str, err)) ? 0 : -1;
}

/* Names reach other tools' regexes, JSON and YAML: printable UTF-8 only. */
static int check_name(const char *path, size_t i, const char *name, bp_error *err)
{
    if (!*name)
        return bp_fail(err, "%s: layers[%zu]: empty layer name", path, i);
    if (!bp_printable_utf8(name))
        return bp_fail(err, "%s: layers[%zu]: layer name '%.200s' has a control character or "
                       "is not UTF-8 (other tools cannot match it)", path, i, name);
    return 0;
}

static int read_layer(const char *path, const bp_ynode *m, size_t i, bp_export_layer *l,
                      bp_error *err)
{
    const char *name = NULL, *w = NULL, *a = NULL, *q = NULL, *g = "none", *gs = "0";
    const char *sym = "true", *asym = "null", *inf = "0";
    l->act_symmetric = -1;
    if (layer_field(path, m, i, "name", &name, err) < 0 ||
        layer_field(path, m, i, "wbits", &w, err) < 0 ||
        layer_field(path, m, i, "abits", &a, err) < 0 ||
        layer_field(path, m, i, "quantizer", &q, err) < 0)
        return -1;
    const bp_ynode *v;
    if ((v = map_get(m, "granularity")) && v->type == BP_Y_SCALAR && strcmp(v->str, "null"))
        g = v->str;
    if ((v = map_get(m, "group_size")) && v->type == BP_Y_SCALAR)
        gs = v->str;
    if ((v = map_get(m, "symmetric")) && v->type == BP_Y_SCALAR)
        sym = v->str;
    if ((v = map_get(m, "act_symmetric")) && v->type == BP_Y_SCALAR)
        asym = v->str;
    if ((v = map_get(m, "in_features")) && v->type == BP_Y_SCALAR && strcmp(v->str, "null"))
        inf = v->str;
    long params = (v = map_get(m, "params")) && v->type == BP_Y_SCALAR ? atol(v->str) : 0;
    l->wbits = atoi(w), l->abits = atoi(a), l->group_size = atol(gs), l->in_features = atol(inf);
    l->out_features = l->in_features > 0 && params % l->in_features == 0 ? params / l->in_features
                                                                         : 0;
    l->symmetric = strcmp(sym, "false") != 0;
    l->act_symmetric = !strcmp(asym, "true") ? 1 : !strcmp(asym, "false") ? 0 : -1;
    if (l->wbits < 1 || l->wbits > 16 || l->abits < 1 || l->abits > 16)
        return bp_fail(err, "%s: layers[%zu]: bit widths %s/%s out of range", path, i, w, a);
    if (check_name(path, i, name, err) < 0)
        return -1;
    l->name = bp_strdup(name, err);
    l->quantizer = bp_strdup(q, err);
    l->granularity = bp_strdup(g, err);
    if (!l->name || !l->quantizer || !l->granularity ||
        opt_str(m, "act_kind", &l->act_kind, err) < 0 ||
        opt_str(m, "act_granularity", &l->act_granularity, err) < 0 ||
        opt_str(m, "tied_with", &l->tied_with, err) < 0)
        return -1;
    if (l->abits >= 16) {             /* float activations carry no grid */
        free(l->act_kind), free(l->act_granularity);
        l->act_kind = l->act_granularity = NULL;
        l->act_symmetric = -1;
    }
    return 0;
}

int bp_export_read_plan(const char *path, bp_export_plan *p, bp_error *err)
{
    char *text;
    size_t size;
    bp_ynode *root = NULL;
    memset(p, 0, sizeof *p);
    if (bp_read_file(path, &text, &size, err) < 0)
        return -1;
    int rc = bp_yaml_parse(text, size, path, &root, err);
    free(text);
    const bp_ynode *layers = rc == 0 ? map_get(root, "layers") : NULL;
    if (rc == 0 && (!layers || layers->type != BP_Y_SEQ))
        rc = bp_fail(err, "%s: no 'layers' list (not a bitplan plan?)", path);
    if (rc == 0 && !(p->layers = bp_calloc(layers->n ? layers->n : 1, sizeof *p->layers, err)))
        rc = -1;
    for (size_t i = 0; rc == 0 && i < layers->n; i++) {
        p->n++;
        rc = read_layer(path, layers->items[i], i, &p->layers[i], err);
    }
    bp_ynode_free(root);
    if (rc < 0)
        bp_export_plan_free(p);
    return rc;
}

/* ---- names ---------------------------------------------------------------- */

/* PyTorch names -> GGUF tensor names (weight suffix added), as llama.cpp's
 * convert_hf_to_gguf.py writes them: Llama, Mistral, Qwen2/3 (the same
 * names), Phi-3's fused qkv_proj and gate_up_proj (GGUF ffn_up holds both),
 * MoE experts of Mixtral (block_sparse_moe.experts.E.w1/w3/w2) and Qwen MoE
 * (mlp.experts.E.*_proj), which GGUF merges into one 3-D tensor per block,
 * shared experts and routers. */
#define BLK "^model\\.layers\\.([0-9]+)\\."
static const bp_name_rule llama_rules[] = {
    {BLK "self_attn\\.q_proj$", "blk.\\1.attn_q.weight"},
    {BLK "self_attn\\.k_proj$", "blk.\\1.attn_k.weight"},
    {BLK "self_attn\\.v_proj$", "blk.\\1.attn_v.weight"},
    {BLK "self_attn\\.o_proj$", "blk.\\1.attn_output.weight"},
    {BLK "self_attn\\.qkv_proj$", "blk.\\1.attn_qkv.weight"},
    {BLK "mlp\\.gate_proj$", "blk.\\1.ffn_gate.weight"},
    {BLK "mlp\\.up_proj$", "blk.\\1.ffn_up.weight"},
    {BLK "mlp\\.down_proj$", "blk.\\1.ffn_down.weight"},
    {BLK "mlp\\.gate_up_proj$", "blk.\\1.ffn_up.weight"},
    {BLK "block_sparse_moe\\.experts\\.[0-9]+\\.w1$", "blk.\\1.ffn_gate_exps.weight"},
    {BLK "block_sparse_moe\\.experts\\.[0-9]+\\.w3$", "blk.\\1.ffn_up_exps.weight"},
    {BLK "block_sparse_moe\\.experts\\.[0-9]+\\.w2$", "blk.\\1.ffn_down_exps.weight"},
    {BLK "block_sparse_moe\\.gate$", "blk.\\1.ffn_gate_inp.weight"},
    {BLK "mlp\\.experts\\.[0-9]+\\.gate_proj$", "blk.\\1.ffn_gate_exps.weight"},
    {BLK "mlp\\.experts\\.[0-9]+\\.up_proj$", "blk.\\1.ffn_up_exps.weight"},
    {BLK "mlp\\.experts\\.[0-9]+\\.down_proj$", "blk.\\1.ffn_down_exps.weight"},
    {BLK "mlp\\.shared_expert\\.gate_proj$", "blk.\\1.ffn_gate_shexp.weight"},
    {BLK "mlp\\.shared_expert\\.up_proj$", "blk.\\1.ffn_up_shexp.weight"},
    {BLK "mlp\\.shared_expert\\.down_proj$", "blk.\\1.ffn_down_shexp.weight"},
    {BLK "mlp\\.shared_expert_gate$", "blk.\\1.ffn_gate_inp_shexp.weight"},
    {BLK "mlp\\.gate$", "blk.\\1.ffn_gate_inp.weight"},
    {"^model\\.embed_tokens$", "token_embd.weight"},
    {"^lm_head$", "output.weight"},
};
#undef BLK

/* Apply one rule; 1 = matched (out set), 0 = no match, -1 = error. */
static int rename_one(const bp_name_rule *r, const char *name, char *out, size_t cap,
                      bp_error *err)
{
    regex_t re;
    regmatch_t m[10];
    if (regcomp(&re, r->from, REG_EXTENDED) != 0)
        return bp_fail(err, "rename rule '%s' is not a valid extended regular expression",
                       r->from);
    int hit = regexec(&re, name, 10, m, 0) == 0;
    size_t groups = re.re_nsub;
    regfree(&re);
    if (!hit)
        return 0;
    size_t k = 0;
    for (const char *t = r->to; *t; t++) {
        if (t[0] == '\\' && t[1] >= '1' && t[1] <= '9') {
            size_t g = (size_t)(t[1] - '0');
            if (g > groups)
                return bp_fail(err, "rename rule '%s' -> '%s': \\%zu names a group the pattern "
                               "does not have (it has %zu)", r->from, r->to, g, groups);
            if (m[g].rm_so >= 0)
                for (regoff_t i = m[g].rm_so; i < m[g].rm_eo && k + 1 < cap; i++)
                    out[k++] = name[i];
            t++;
        } else if (k + 1 < cap) {
            out[k++] = *t;
        }
    }
    out[k] = '\0';
    if (k + 1 >= cap)
        return bp_fail(err, "rename rule '%s': the new name of '%.100s' is too long", r->from,
                       name);
    if (k == 0)
        return bp_fail(err, "rename rule '%s' -> '%s' gives layer '%.200s' an empty name",
                       r->from, r->to, name);
    return 1;
}

/* Do two layers export the same settings (one shared tensor is fine)? */
static int same_settings(const bp_export_layer *a, const bp_export_layer *b)
{
    return a->wbits == b->wbits && a->abits == b->abits && a->group_size == b->group_size &&
           a->symmetric == b->symmetric && !strcmp(a->granularity, b->granularity);
}

static const bp_export_plan *sort_plan;
static int by_name(const void *x, const void *y)
{
    size_t a = *(const size_t *)x, b = *(const size_t *)y;
    int c = strcmp(sort_plan->layers[a].name, sort_plan->layers[b].name);
    return c ? c : (a > b) - (a < b);
}

int bp_export_rename(bp_export_plan *p, const bp_name_rule *rules, size_t n_rules, int llama,
                     bp_error *err)
{
    char buf[1024];
    char **old = calloc(p->n + 1, sizeof *old);
    unsigned char *by_user = calloc(p->n + 1, 1);
    int rc = old && by_user ? 0 : bp_fail(err, "out of memory");
    for (size_t i = 0; rc == 0 && i < p->n; i++) {
        int hit = 0;
        for (size_t r = 0; r < n_rules && !hit; r++)
            if ((hit = rename_one(&rules[r], p->layers[i].name, buf, sizeof buf, err)) < 0)
                rc = -1;
        by_user[i] = hit > 0;
        for (size_t r = 0; rc == 0 && llama && !hit && r < sizeof llama_rules / sizeof *llama_rules;
             r++)
            if ((hit = rename_one(&llama_rules[r], p->layers[i].name, buf, sizeof buf, err)) < 0)
                rc = -1;
        if (rc == 0 && hit > 0) {
            char *s = bp_strdup(buf, err);
            if (!s) {
                rc = -1;
                break;
            }
            old[i] = p->layers[i].name;
            p->layers[i].name = s;
        }
    }
    /* names that now coincide: one tensor (experts) when the map made them and
     * the settings agree; a user rule that merges layers is a mistake.  Sorted
     * by name (stable by index), each run of equal names is one tensor. */
    size_t *order = rc == 0 ? malloc((p->n + 1) * sizeof *order) : NULL;
    if (rc == 0 && !order)
        rc = bp_fail(err, "out of memory");
    for (size_t i = 0; order && i < p->n; i++)
        order[i] = i;
    if (order) {
        sort_plan = p;
        qsort(order, p->n, sizeof *order, by_name);
    }
    size_t first = order ? order[0] : 0;  /* the run's first layer (lowest index) */
    for (size_t k = 1; rc == 0 && k < p->n; k++) {
        size_t i = order[k];
        const bp_export_layer *a = &p->layers[first], *b = &p->layers[i];
        if (strcmp(a->name, b->name) != 0) {
            first = i;
            continue;
        }
        const char *an = old[first] ? old[first] : a->name, *bn = old[i] ? old[i] : b->name;
        if (by_user[i] || by_user[first] || !old[i] || !old[first])
            rc = bp_fail(err, "export.rename maps layers '%.200s' and '%.200s' both to "
                         "'%.200s' (each layer needs its own name)", an, bn, b->name);
        else if (!same_settings(a, b))
            rc = bp_fail(err, "layers '%.200s' (%d-bit) and '%.200s' (%d-bit) are one "
                         "tensor '%.200s' in GGUF and need the same settings: tie them "
                         "(ties: in the config) or plan them together", an, a->wbits, bn,
                         b->wbits, b->name);
        else
            p->layers[i].merged = 1;
    }
    free(order);
    for (size_t i = 0; old && i < p->n; i++)
        free(old[i]);
    free(old);
    free(by_user);
    return rc;
}

void bp_regex_escape(const char *s, char *out, size_t cap)
{
    size_t k = 0;
    for (; *s && k + 2 < cap; s++) {
        if (strchr(".[]()*+?{}|^$\\", *s))
            out[k++] = '\\';
        out[k++] = *s;
    }
    out[k] = '\0';
}

const char *bp_ggml_type(int bits)
{
    switch (bits) {
    case 2: return "q2_K";
    case 3: return "q3_K";
    case 4: return "q4_K";
    case 5: return "q5_K";
    case 6: return "q6_K";
    case 8: return "q8_0";
    case 16: return "f16";
    }
    return NULL;
}

/* ---- warnings ------------------------------------------------------------- */

/* One warning for the flagged layers: "FORMAT: N layer(s) (a, b, c, ...): what". */
static void warn_layers(const bp_export_opts *o, const char *fmt, const bp_export_plan *p,
                        const unsigned char *flag, const char *what)
{
    size_t n = 0, shown = 0;
    for (size_t i = 0; i < p->n; i++)
        n += flag[i] != 0;
    if (!o || !o->warn || n == 0)
        return;
    fprintf(o->warn, "bitplan: warning: %s: %zu layer%s (", fmt, n, n == 1 ? "" : "s");
    for (size_t i = 0; i < p->n && shown < 3; i++)
        if (flag[i])
            fprintf(o->warn, "%s%s", shown++ ? ", " : "", p->layers[i].name);
    fprintf(o->warn, "%s): %s\n", n > shown ? ", ..." : "", what);
}

/* Flag the layers for which pred holds, warn once, clear the flags. */
#define WARN_IF(o, fmt, p, flag, pred, what)                                                 \
    do {                                                                                     \
        for (size_t i_ = 0; i_ < (p)->n; i_++) {                                             \
            const bp_export_layer *L = &(p)->layers[i_];                                     \
            (flag)[i_] = !L->merged && (pred);                                               \
        }                                                                                    \
        warn_layers(o, fmt, p, flag, what);                                                  \
    } while (0)

static void note(const bp_export_opts *o, const char *fmt, const char *text)
{
    if (o && o->warn && o->notes)
        fprintf(o->warn, "bitplan: note: %s: %s\n", fmt, text);
}

static long group_of(const bp_export_layer *l)
{
    return strcmp(l->granularity, "per_group") == 0 ? l->group_size : -1;   /* -1 channel */
}

static int per_tensor(const bp_export_layer *l)
{
    return strcmp(l->granularity, "per_tensor") == 0;
}

int bp_embedding_name(const char *name)
{
    return strstr(name, "embed") || strstr(name, "wte") || strstr(name, "tok_emb") ||
           !strcmp(name, "token_embd.weight");
}

static int embedding(const bp_export_layer *l)
{
    return bp_embedding_name(l->name);
}

/* Activations whose grid only a uniform integer grid can stand in for. */
static int act_not_uniform(const bp_export_layer *l)
{
    return l->abits < 16 && l->act_kind && strcmp(l->act_kind, "uniform") != 0;
}

static void warn_tied(const bp_export_opts *o, const char *fmt, const bp_export_plan *p,
                      unsigned char *flag, const char *what)
{
    WARN_IF(o, fmt, p, flag, L->tied_with != NULL, what);
}

/* ---- llama.cpp ------------------------------------------------------------ */

/* "^pattern$" for llama-quantize: regex-escaped, and every character its
 * parser would change written as \xHH (it lowercases the pattern, splits
 * the token at the first '=' and the file at whitespace); std::regex's
 * ECMAScript grammar reads \xHH. */
static void llama_pattern(const char *name, char *out, size_t cap)
{
    size_t k = 0;
    out[k++] = '^';
    for (const unsigned char *s = (const unsigned char *)name; *s && k + 6 < cap; s++) {
        if ((*s >= 'A' && *s <= 'Z') || *s == '=' || *s == ' ' || *s == '#')
            k += (size_t)snprintf(out + k, cap - k, "\\x%02x", *s);
        else if (*s >= 0x80)         /* bytes of UTF-8: hex too, lowercase-proof */
            k += (size_t)snprintf(out + k, cap - k, "\\x%02x", *s);
        else {
            if (strchr(".[]()*+?{}|^$\\", *s))
                out[k++] = '\\';
            out[k++] = (char)*s;
        }
    }
    out[k++] = '$';
    out[k] = '\0';
}

/* The user's rule for (bits, group), else the default type. */
static const char *ggml_for(const bp_export_layer *l, const bp_ggml_rule *types, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (types[k].bits == l->wbits &&
            (types[k].group == -1 || (types[k].group == -2 && group_of(l) < 0) ||
             types[k].group == group_of(l)))
            return types[k].type;
    return bp_ggml_type(l->wbits);
}

/* llama.cpp's block size of a type (ggml.c type traits), 0 if unknown. */
static int ggml_block(const char *t)
{
    static const char *const k256[] = {"q2_K", "q3_K", "q4_K", "q5_K", "q6_K", "q8_K",
                                       "iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s",
                                       "iq3_xxs", "iq3_s", "iq4_xs", "tq1_0", "tq2_0"};
    static const char *const k32[] = {"q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q8_1", "iq4_nl",
                                      "mxfp4"};
    for (size_t i = 0; i < sizeof k256 / sizeof *k256; i++)
        if (!strcasecmp(t, k256[i]))
            return 256;
    for (size_t i = 0; i < sizeof k32 / sizeof *k32; i++)
        if (!strcasecmp(t, k32[i]))
            return 32;
    if (!strcasecmp(t, "f16") || !strcasecmp(t, "bf16") || !strcasecmp(t, "f32"))
        return 1;
    return 0;
}

/* What llama-quantize uses instead when a row does not fill the type's
 * block (llama-quant.cpp, tensor_type_fallback), or NULL if nothing. */
static const char *ggml_fallback(const char *t, long cols)
{
    int b = ggml_block(t);
    if (b <= 1 || cols <= 0 || cols % b == 0)
        return NULL;
    const char *f = "f16";
    if (!strncasecmp(t, "iq", 2))
        f = "iq4_nl";
    else if (!strcasecmp(t, "q2_K") || !strcasecmp(t, "q3_K") || !strncasecmp(t, "tq", 2))
        f = "q4_0";
    else if (!strcasecmp(t, "q4_K"))
        f = "q5_0";
    else if (!strcasecmp(t, "q5_K"))
        f = "q5_1";
    else if (!strcasecmp(t, "q6_K"))
        f = "q8_0";
    return cols % ggml_block(f) == 0 ? f : "f16";
}

/* Types llama-quantize refuses without --imatrix (tensor_requires_imatrix). */
static int needs_imatrix(const char *t)
{
    static const char *const iq[] = {"iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq3_xxs"};
    for (size_t i = 0; i < sizeof iq / sizeof *iq; i++)
        if (!strcasecmp(t, iq[i]))
            return 1;
    return 0;
}

/* A GGUF tensor name ("blk.3.attn_q.weight", "output.weight", ...)? */
static int gguf_name(const char *n)
{
    size_t len = strlen(n);
    if (len < 8 || strcmp(n + len - 7, ".weight") != 0)
        return 0;
    for (const char *s = n; *s; s++)
        if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '.' || *s == '_'))
            return 0;
    return !strstr(n, "model.") && !strstr(n, "_proj.") && !strstr(n, "layers.");
}

/* Tensors llama-quantize never quantizes (tensor_allows_quantization). */
static int llama_keeps(const char *n)
{
    return strstr(n, "_norm.weight") || strstr(n, "ffn_gate_inp") || strstr(n, "norm.weight");
}

static void llama_warnings(const bp_export_plan *p, const char **type, const bp_export_opts *o,
                           unsigned char *flag)
{
    const char *F = "llamacpp";
    char msg[400];
    WARN_IF(o, F, p, flag, !gguf_name(L->name),
            "not a GGUF tensor name: llama-quantize matches its patterns against GGUF names "
            "(blk.N.attn_q.weight, ...) and will apply nothing; use --llama-names "
            "(export.llama_names) or export.rename");
    WARN_IF(o, F, p, flag, gguf_name(L->name) && llama_keeps(L->name),
            "llama-quantize never quantizes norms and MoE routers; these stay in the source "
            "type");
    warn_tied(o, F, p, flag,
              "the weights are the embedding's (tied embeddings): a GGUF of this model has no "
              "separate output.weight, so this override applies to nothing; the embedding's "
              "type is what the head gets");
    WARN_IF(o, F, p, flag, L->abits < 16,
            "llama.cpp quantizes weights only; the planned activation widths are not applied");
    WARN_IF(o, F, p, flag, needs_imatrix(type[i_]),
            "this type needs an importance matrix: run llama-quantize with --imatrix FILE");
    WARN_IF(o, F, p, flag, L->wbits < 16 && (per_tensor(L) || !L->symmetric || group_of(L) > 0),
            "llama.cpp's types fix their own blocks and zero points (q4_K: 32-wide blocks "
            "with minimums in 256-wide super-blocks); the plan's bit width is applied, its "
            "granularity, group size and symmetry are not");
    /* rows that do not fill the type's block, one warning per (type, fallback) */
    unsigned char *told = calloc(p->n + 1, 1);
    for (size_t i = 0; told && i < p->n; i++) {
        const bp_export_layer *l = &p->layers[i];
        const char *fb = l->merged || told[i] ? NULL : ggml_fallback(type[i], l->in_features);
        if (!fb)
            continue;
        for (size_t j = 0; j < p->n; j++) {
            const bp_export_layer *m = &p->layers[j];
            const char *fb2 = m->merged ? NULL : ggml_fallback(type[j], m->in_features);
            flag[j] = j >= i && fb2 && !strcmp(fb2, fb) && !strcmp(type[j], type[i]);
            told[j] |= flag[j];
        }
        snprintf(msg, sizeof msg, "rows (%ld inputs in the first) are not a multiple of %s's "
                 "block of %d: llama-quantize falls back to %s for these", l->in_features,
                 type[i], ggml_block(type[i]), fb);
        warn_layers(o, F, p, flag, msg);
    }
    free(told);
    WARN_IF(o, F, p, flag, !strcasecmp(type[i_], "q2_K"),
            "q2_K needs an importance matrix under base type Q2_K_S (tensor_requires_imatrix); "
            "use another base type or --imatrix FILE");
    note(o, F, "llama-quantize applies these types only under a quantized base type, e.g. "
         "llama-quantize --tensor-type-file tensor-types.txt model-f32.gguf out.gguf Q8_0 "
         "(with F16, BF16 or F32 as the type it ignores them; --token-embedding-type and "
         "--output-tensor-type override them)");
}

/* "blk.N.rest": N's digits and the rest, or 0. */
static int block_name(const char *name, const char **num, size_t *len, const char **rest)
{
    if (strncmp(name, "blk.", 4) != 0)
        return 0;
    const char *d = name + 4, *e = d;
    while (*e >= '0' && *e <= '9')
        e++;
    if (e == d || *e != '.')
        return 0;
    *num = d, *len = (size_t)(e - d), *rest = e + 1;
    return 1;
}

/* One token: "pattern=type" or "--tensor-type pattern=type". */
static void llama_token(FILE *fp, int args, int *first, const char *pat, const char *type)
{
    fprintf(fp, args ? "%s--tensor-type %s=%s" : "%s%s=%s", *first ? "" : (args ? " " : "\n"),
            pat, type);
    *first = 0;
}

/* Can layer j join layer i's compressed token (same rest of name, same type)? */
static int joins(const bp_export_plan *p, const char **type, const unsigned char *used, size_t i,
                 size_t j)
{
    const char *num, *rest, *num2, *rest2;
    size_t len, len2;
    return !used[j] && !p->layers[j].merged && strcmp(type[j], type[i]) == 0 &&
           block_name(p->layers[i].name, &num, &len, &rest) &&
           block_name(p->layers[j].name, &num2, &len2, &rest2) && strcmp(rest, rest2) == 0;
}

static int write_llamacpp(FILE *fp, const bp_export_plan *p, int args, const char **type,
                          int compress)
{
    char pat[2200];
    unsigned char *used = calloc(p->n + 1, 1);
    if (!used)
        return -1;
    int first = 1;
    for (size_t i = 0; i < p->n; i++) {
        const char *num = NULL, *rest = NULL;
        size_t len = 0, members = 0;
        if (used[i] || p->layers[i].merged)
            continue;
        for (size_t j = i + 1; compress && j < p->n; j++)
            members += joins(p, type, used, i, j);
        if (!members) {
            llama_pattern(p->layers[i].name, pat, sizeof pat);
            llama_token(fp, args, &first, pat, type[i]);
            continue;
        }
        char *buf = NULL;
        size_t n = 0;
        FILE *mem = open_memstream(&buf, &n);
        if (!mem) {
            free(used);
            return -1;
        }
        block_name(p->layers[i].name, &num, &len, &rest);
        fprintf(mem, "^blk\\.(%.*s", (int)len, num);
        for (size_t j = i + 1; j < p->n; j++)
            if (joins(p, type, used, i, j)) {
                const char *num2 = NULL, *rest2 = NULL;
                size_t len2 = 0;
                block_name(p->layers[j].name, &num2, &len2, &rest2);
                fprintf(mem, "|%.*s", (int)len2, num2);
                used[j] = 1;
            }
        llama_pattern(rest, pat, sizeof pat);          /* "^rest$" */
        fprintf(mem, ")\\.%s", pat + 1);
        fclose(mem);
        llama_token(fp, args, &first, buf, type[i]);
        free(buf);
    }
    fputc('\n', fp);
    free(used);
    return 0;
}

/* ---- GPTQModel ------------------------------------------------------------ */

/* "^escaped$" (Python re and POSIX ERE agree on these escapes) */
static void anchored(const char *name, char *out, size_t cap)
{
    char esc[2100];
    bp_regex_escape(name, esc, sizeof esc);
    snprintf(out, cap, "^%s$", esc);
}

/* GPTQModel's own limits (quantization/config.py: bits 2..8, and 5, 6 and 7
 * bits only in its planar gptq_p checkpoint format). */
static int gptq_check(const bp_export_plan *p, bp_error *err)
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
    return !l->merged && l->wbits < 16 && !embedding(l);
}

static void write_gptqmodel(FILE *fp, const bp_export_plan *p, const bp_export_opts *o,
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
        while (k < n_seen && !(seen[k].bits == l->wbits && seen[k].group == group_of(l) &&
                               seen[k].sym == l->symmetric))
            k++;
        if (k == n_seen) {
            if (n_seen == cap) {
                struct setting *g = realloc(seen, (cap ? 2 * cap : 8) * sizeof *seen);
                if (!g)
                    break;
                seen = g, cap = cap ? 2 * cap : 8;
            }
            seen[n_seen++] = (struct setting){l->wbits, l->symmetric, group_of(l), 0, i};
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
            b ? b->wbits : 4, b ? group_of(b) : 128L, !b || b->symmetric ? "true" : "false",
            head ? "true" : "false", format, format);
    char pat[2200], key[2300];
    int first = 1;
    for (size_t i = 0; i < p->n; i++) {
        const bp_export_layer *l = &p->layers[i];
        if (l->merged || embedding(l))
            continue;
        anchored(l->name, pat, sizeof pat);
        snprintf(key, sizeof key, "%s:%s", l->wbits >= 16 ? "-" : "+", pat);
        fprintf(fp, "%s\n    ", first ? "" : ",");
        first = 0;
        bp_json_string(fp, key);
        if (l->wbits >= 16)
            fprintf(fp, ": {}");
        else
            fprintf(fp, ": {\"bits\": %d, \"group_size\": %ld, \"sym\": %s}", l->wbits,
                    group_of(l), l->symmetric ? "true" : "false");
    }
    fprintf(fp, "\n  }\n}\n");
    WARN_IF(o, F, p, flag, L->wbits < 16 && embedding(L),
            "GPTQModel never quantizes embeddings; left out, they stay in the source type");
    WARN_IF(o, F, p, flag, L->wbits < 16 && per_tensor(L),
            "GPTQModel has no per-tensor grid; written as per-channel (group_size -1)");
    WARN_IF(o, F, p, flag, L->abits < 16,
            "GPTQModel quantizes weights only; the planned activation widths are not applied");
    warn_tied(o, F, p, flag,
              "the weights are the embedding's (tied embeddings); GPTQModel quantizes lm_head "
              "(lm_head: true) as its own tensor");
    if (planar)
        note(o, F, "5-, 6- or 7-bit layers: GPTQModel stores these only in its planar "
             "format, so the whole checkpoint is written as checkpoint_format gptq_p "
             "(readers must support it)");
}

/* ---- llm-compressor / compressed-tensors ---------------------------------- */

/* Same config group: weight bits, granularity, group, symmetry, activations. */
static int same_group(const bp_export_layer *a, const bp_export_layer *b)
{
    int aw = a->wbits < 16, bw = b->wbits < 16;
    if (aw != bw || (a->abits < 16) != (b->abits < 16))
        return 0;
    if (aw && (a->wbits != b->wbits || group_of(a) != group_of(b) ||
               per_tensor(a) != per_tensor(b) || a->symmetric != b->symmetric))
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
    anchored(name, pat, sizeof pat);
    snprintf(t, sizeof t, "re:%s", pat);
    fprintf(fp, "%s- ", indent);
    bp_json_string(fp, t);
    fputc('\n', fp);
}

static int lc_quantized(const bp_export_layer *l)
{
    return !l->merged && (l->wbits < 16 || l->abits < 16);
}

static void write_llmcompressor(FILE *fp, const bp_export_plan *p, const bp_export_opts *o,
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
        long g = group_of(l);
        if (l->wbits < 16) {
            fprintf(fp, "          weights:\n            num_bits: %d\n            type: int\n"
                        "            symmetric: %s\n            strategy: %s\n"
                        "            dynamic: false\n", l->wbits,
                    l->symmetric ? "true" : "false",
                    per_tensor(l) ? "tensor" : g > 0 ? "group" : "channel");
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
    WARN_IF(o, "llmcompressor", p, flag, act_not_uniform(L),
            "compressed-tensors has no log2 or power-of-two-factor activation grid; written "
            "as a uniform integer grid of the same width");
    WARN_IF(o, "llmcompressor", p, flag, L->abits < 16 && L->act_symmetric < 0,
            "the plan does not say how activations are quantized (a plan from a bare table); "
            "written as asymmetric per-tensor");
    warn_tied(o, "llmcompressor", p, flag,
              "the weights are the embedding's (tied embeddings); a target on the head "
              "quantizes the shared tensor");
}

/* ---- AutoRound ------------------------------------------------------------ */

/* AutoRound's group_size: 0 per tensor, -1 per channel / token, else the group
 * (data_type/utils.py, reshape_pad_tensor_by_group_size). */
static long ar_group(const bp_export_layer *l)
{
    return per_tensor(l) ? 0 : group_of(l);
}

static void write_autoround(FILE *fp, const bp_export_plan *p, const bp_export_opts *o,
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
    WARN_IF(o, "autoround", p, flag, act_not_uniform(L),
            "AutoRound has no log2 or power-of-two-factor activation grid; written as a "
            "uniform integer grid of the same width");
    WARN_IF(o, "autoround", p, flag, L->wbits < 16 && embedding(L),
            "AutoRound never quantizes embeddings (but for GGUF output); it ignores this entry");
    WARN_IF(o, "autoround", p, flag,
            L->wbits < 16 && !embedding(L) && L->in_features > 0 &&
                (L->in_features % 32 || L->out_features % 32),
            "AutoRound keeps layers whose weight shape is not a multiple of 32 in 16 bits "
            "(resolver.py, apply_layer_config_special_cases)");
    warn_tied(o, "autoround", p, flag,
              "the weights are the embedding's (tied embeddings): AutoRound does not quantize "
              "a tied head and keeps it in 16 bits");
    WARN_IF(o, "autoround", p, flag, L->abits < 16 && L->act_symmetric < 0,
            "the plan does not say how activations are quantized (a plan from a bare table); "
            "written as asymmetric per-tensor");
    note(o, "autoround", "AutoRound takes the layer config as JSON text, not a path: "
         "auto-round --model MODEL --layer_config \"$(cat autoround_layer_config.json)\"");
}

/* ---- dispatch ------------------------------------------------------------- */

const char *const bp_export_names[BP_EXPORT_COUNT] = {"llamacpp", "gptqmodel", "llmcompressor",
                                                      "autoround"};
const char *const bp_export_files[BP_EXPORT_COUNT] = {
    "tensor-types.txt", "quantize_config.json", "recipe.yaml", "autoround_layer_config.json"};

int bp_export_format(const char *name)
{
    for (int f = 0; f < BP_EXPORT_COUNT; f++)
        if (strcmp(name, bp_export_names[f]) == 0)
            return f;
    return -1;
}

int bp_export_unknown(const char *fmt, bp_error *err)
{
    if (!strcmp(fmt, "hawq"))
        return bp_fail(err, "export format 'hawq' is not written: HAWQ reads a Python dict "
                       "keyed by its own quantized module names (bit_config.py), which no name "
                       "map from a model's layers can give; expected one of: llamacpp, "
                       "gptqmodel, llmcompressor, autoround");
    return bp_fail(err, "unknown export format '%s' (expected one of: llamacpp, gptqmodel, "
                   "llmcompressor, autoround)", fmt);
}

int bp_export_write(const bp_export_plan *p, const char *fmt, const char *path,
                    const bp_ggml_rule *types, size_t n_types, bp_error *err)
{
    bp_export_opts o = {types, n_types, 0, NULL, 0};
    return bp_export_write_opts(p, fmt, path, &o, err);
}

/* Write one file atomically: f, or (args) the llama.cpp arguments file. */
static int write_one(const bp_export_plan *p, int f, const char *path, const char **type,
                     const bp_export_opts *o, int args, unsigned char *flag, bp_error *err)
{
    bp_atomic a;
    if (bp_atomic_open(&a, path, err) < 0)
        return -1;
    int rc = 0;
    switch (f) {
    case 0: rc = write_llamacpp(a.fp, p, args, type, o->compress); break;
    case 1: write_gptqmodel(a.fp, p, o, flag); break;
    case 2: write_llmcompressor(a.fp, p, o, flag); break;
    default: write_autoround(a.fp, p, o, flag); break;
    }
    if (rc < 0) {
        bp_atomic_abort(&a);
        return bp_fail(err, "out of memory");
    }
    return bp_atomic_commit(&a, err);
}

static int write_opts(const bp_export_plan *p, int f, const char *path, const bp_export_opts *o,
                      bp_error *err);

/* Warnings are collected while writing and printed only once the export is
 * in place (a failed export says only why it failed). */
int bp_export_write_opts(const bp_export_plan *p, const char *fmt, const char *path,
                         const bp_export_opts *o, bp_error *err)
{
    int f = bp_export_format(fmt);
    if (f < 0)
        return bp_export_unknown(fmt, err);
    char *text = NULL;
    size_t len = 0;
    bp_export_opts quiet = *o;
    quiet.warn = o->warn ? open_memstream(&text, &len) : NULL;
    int rc = write_opts(p, f, path, &quiet, err);
    if (quiet.warn)
        fclose(quiet.warn);
    if (rc == 0 && o->warn && text)
        fputs(text, o->warn);
    free(text);
    return rc;
}

static int write_opts(const bp_export_plan *p, int f, const char *path, const bp_export_opts *o,
                      bp_error *err)
{
    const char **type = calloc(p->n + 1, sizeof *type);
    unsigned char *flag = calloc(p->n + 1, 1);
    int rc = type && flag ? 0 : bp_fail(err, "out of memory");
    for (size_t i = 0; rc == 0 && f == 0 && i < p->n; i++)
        if (!(type[i] = ggml_for(&p->layers[i], o->types, o->n_types)))
            rc = bp_fail(err, "layer '%s': %d-bit weights have no llama.cpp type (use 2, 3, "
                         "4, 5, 6, 8 or 16, or map it in export.ggml_types)", p->layers[i].name,
                         p->layers[i].wbits);
    if (rc == 0 && f == 1)
        rc = gptq_check(p, err);
    if (rc == 0)
        rc = write_one(p, f, path, type, o, 0, flag, err);
    if (rc == 0 && f == 0 && strcmp(path, "-") != 0) {
        char args[4096];             /* llama.cpp: the same as --tensor-type arguments */
        snprintf(args, sizeof args, "%s.args", path);
        rc = write_one(p, f, args, type, o, 1, flag, err);
    }
    if (rc == 0 && f == 0)
        llama_warnings(p, type, o, flag);
    free(type);
    free(flag);
    return rc;
}
