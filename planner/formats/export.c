/*
 * export.c - plans in other quantizers' formats (see export.h): reading a
 * plan back, names (the user's rules, PyTorch -> GGUF), the warnings every
 * writer shares, and the dispatch that writes one format atomically.  The
 * writers are export_FORMAT.c.
 */
#include "export.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../../common/bp_file.h"
#include "../../common/bp_ggml.h"
#include "exportfmt.h"
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
    free(p->model);
    free(p->imatrix);
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

/* An optional string field: NULL when absent or null. */
static int opt_str(const bp_ynode *m, const char *key, char **out, bp_error *err)
{
    const bp_ynode *v = map_get(m, key);
    *out = NULL;
    if (!v || v->type != BP_Y_SCALAR || (!v->quoted && !strcmp(v->str, "null")))
        return 0;
    return (*out = bp_strdup(v->str, err)) ? 0 : -1;
}

/* "PATH:LINE:COL: layers[i].KEY: what" (the node's place, or the layer's). */
static int pfail(bp_error *err, const char *path, const bp_ynode *at, size_t i, const char *key,
                 const char *what)
{
    return bp_fail(err, "%s:%d:%d: layers[%zu].%s: %s", path, at ? at->line : 0,
                   at ? at->col : 0, i, key, what);
}

/* A scalar that is not null (unquoted null, ~ or empty). */
static const bp_ynode *scalar(const bp_ynode *m, const char *key)
{
    const bp_ynode *v = map_get(m, key);
    return v && v->type == BP_Y_SCALAR && (v->quoted || (strcmp(v->str, "null") &&
                                                         strcmp(v->str, "~") && *v->str))
               ? v : NULL;
}

/* A whole number in [lo, hi] (not 4.5, not 1e3); *out. */
static int whole(const bp_ynode *v, long lo, long hi, long *out)
{
    char *end;
    if (!v || v->type != BP_Y_SCALAR || v->quoted || !*v->str)   /* a map or list: no */
        return 0;
    long x = strtol(v->str, &end, 10);
    if (*end || x < lo || x > hi)
        return 0;
    *out = x;
    return 1;
}

static int boolean(const bp_ynode *v, int *out)
{
    if (!v || v->type != BP_Y_SCALAR || v->quoted ||
        (strcmp(v->str, "true") && strcmp(v->str, "false")))
        return 0;
    *out = !strcmp(v->str, "true");
    return 1;
}

/* The layer's required text field. */
static int text_field(const char *path, const bp_ynode *m, size_t i, const char *key,
                      const char **out, bp_error *err)
{
    const bp_ynode *v = map_get(m, key);
    if (!v || v->type != BP_Y_SCALAR || !*v->str)
        return pfail(err, path, v ? v : m, i, key, v ? "expected a non-empty string"
                                                     : "missing (not a bitplan plan?)");
    *out = v->str;
    return 0;
}

/* Names reach other tools' regexes, JSON and YAML: printable UTF-8 only. */
static int check_name(const char *path, const bp_ynode *at, size_t i, const char *name,
                      bp_error *err)
{
    if (!bp_printable_utf8(name))
        return bp_fail(err, "%s:%d:%d: layers[%zu]: layer name '%.200s' has a control character "
                       "or is not UTF-8 (other tools cannot match it)", path, at->line, at->col,
                       i, name);
    return 0;
}

/*
 * One layer, checked as strictly as a config: name, wbits and abits whole
 * numbers 2..16, a quantizer bitplan knows (rtn, gptq, squant, erq, or a
 * llama.cpp type), granularity per_channel / per_group / per_tensor / none
 * with group_size > 0 exactly for per_group, symmetric a boolean (or null),
 * in_features, params and weight_bits whole numbers >= 0.
 */
static int read_layer(const char *path, const bp_ynode *m, size_t i, bp_export_layer *l,
                      bp_error *err)
{
    static const char *const quantizers[] = {"rtn", "gptq", "squant", "erq"};
    static const char *const grans[] = {"per_channel", "per_group", "per_tensor", "none"};
    const char *name = NULL, *q = NULL, *g = "none";
    long w, a, gs = 0, inf = 0, params = 0, wb = 0;
    l->act_symmetric = -1;
    if (!m || m->type != BP_Y_MAP)
        return bp_fail(err, "%s:%d:%d: layers[%zu]: expected a mapping (a layer)", path,
                       m ? m->line : 0, m ? m->col : 0, i);
    if (text_field(path, m, i, "name", &name, err) < 0 ||
        check_name(path, map_get(m, "name"), i, name, err) < 0 ||
        text_field(path, m, i, "quantizer", &q, err) < 0)
        return -1;
    const bp_ynode *v;
    if (!whole(v = map_get(m, "wbits"), 2, 16, &w))
        return pfail(err, path, v ? v : m, i, "wbits", "expected a whole number of bits 2..16");
    if (!whole(v = map_get(m, "abits"), 2, 16, &a))
        return pfail(err, path, v ? v : m, i, "abits", "expected a whole number of bits 2..16");
    int known = bp_ggml_type_parse(q) >= 0;
    for (size_t k = 0; k < 4; k++)
        known |= !strcmp(q, quantizers[k]);
    if (!known)
        return pfail(err, path, map_get(m, "quantizer"), i, "quantizer",
                     "expected rtn, gptq, squant, erq or a llama.cpp type (q4_K, ...)");
    if ((v = scalar(m, "granularity"))) {
        g = v->str;
        int ok = 0;
        for (size_t k = 0; k < 4; k++)
            ok |= !strcmp(g, grans[k]);
        if (!ok)
            return pfail(err, path, v, i, "granularity",
                         "expected per_channel, per_group, per_tensor or none");
    }
    if ((v = scalar(m, "group_size")) && !whole(v, 0, 1L << 30, &gs))
        return pfail(err, path, v, i, "group_size", "expected a whole number >= 0");
    if ((gs > 0) != !strcmp(g, "per_group"))
        return pfail(err, path, v ? v : m, i, "group_size", gs > 0
                     ? "a group size is for granularity per_group only"
                     : "granularity per_group needs a group size > 0");
    int sym = 1;
    if ((v = scalar(m, "symmetric")) && !boolean(v, &sym))
        return pfail(err, path, v, i, "symmetric", "expected true, false or null");
    if ((v = scalar(m, "act_symmetric")) && !boolean(v, &l->act_symmetric))
        return pfail(err, path, v, i, "act_symmetric", "expected true, false or null");
    if ((v = scalar(m, "in_features")) && !whole(v, 0, 1L << 40, &inf))
        return pfail(err, path, v, i, "in_features", "expected a whole number >= 0 or null");
    if ((v = scalar(m, "params")) && !whole(v, 0, 1L << 50, &params))
        return pfail(err, path, v, i, "params", "expected a whole number >= 0");
    if ((v = scalar(m, "weight_bits")) && !whole(v, 0, 1L << 60, &wb))
        return pfail(err, path, v, i, "weight_bits", "expected a whole number >= 0");
    l->wbits = (int)w, l->abits = (int)a, l->group_size = gs, l->in_features = inf;
    l->out_features = inf > 0 && params % inf == 0 ? params / inf : 0;
    l->symmetric = sym;
    l->name = bp_strdup(name, err);
    l->quantizer = bp_strdup(q, err);
    l->granularity = bp_strdup(g, err);
    if (!l->name || !l->quantizer || !l->granularity ||
        opt_str(m, "act_kind", &l->act_kind, err) < 0 ||
        opt_str(m, "act_granularity", &l->act_granularity, err) < 0 ||
        opt_str(m, "tied_with", &l->tied_with, err) < 0)
        return -1;
    l->ggml = bp_ggml_type_parse(l->quantizer) >= 0;
    if (l->abits >= 16) {             /* float activations carry no grid */
        free(l->act_kind), free(l->act_granularity);
        l->act_kind = l->act_granularity = NULL;
        l->act_symmetric = -1;
    }
    return 0;
}

static int cmp_layer_name(const void *a, const void *b)
{
    return strcmp((*(const bp_export_layer *const *)a)->name,
                  (*(const bp_export_layer *const *)b)->name);
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
    const bp_ynode *layers = rc == 0 ? map_get(root, "layers") : NULL, *fv;
    long version;
    if (rc == 0 && (fv = map_get(root, "format_version")) &&
        (!whole(fv, 1, 1, &version)))
        rc = bp_fail(err, "%s:%d:%d: format_version: %s (this bitplan reads plans of format 1)",
                     path, fv->line, fv->col, fv->type == BP_Y_SCALAR ? fv->str : "not a number");
    if (rc == 0 && (!layers || layers->type != BP_Y_SEQ))
        rc = bp_fail(err, "%s: no 'layers' list (not a bitplan plan?)", path);
    if (rc == 0 && layers->n == 0)
        rc = bp_fail(err, "%s:%d:%d: layers: an empty list (a plan has at least one layer)", path,
                     layers->line, layers->col);
    if (rc == 0 && !(p->layers = bp_calloc(layers->n ? layers->n : 1, sizeof *p->layers, err)))
        rc = -1;
    for (size_t i = 0; rc == 0 && i < layers->n; i++) {
        p->n++;
        rc = read_layer(path, layers->items[i], i, &p->layers[i], err);
    }
    /* a layer named twice is no plan (whatever rename rules follow) */
    const bp_export_layer **by = rc == 0 ? malloc((p->n + 1) * sizeof *by) : NULL;
    for (size_t i = 0; by && i < p->n; i++)
        by[i] = &p->layers[i];
    if (by && p->n > 1)
        qsort(by, p->n, sizeof *by, cmp_layer_name);
    for (size_t i = 1; by && rc == 0 && i < p->n; i++)
        if (!strcmp(by[i]->name, by[i - 1]->name))
            rc = bp_fail(err, "%s: layer '%s' appears twice (layers[%zu] and layers[%zu])", path,
                         by[i]->name, (size_t)(by[i - 1] - p->layers), (size_t)(by[i] - p->layers));
    free(by);
    const bp_ynode *model = rc == 0 ? map_get(root, "model") : NULL;
    if (rc == 0 && (opt_str(model, "weights", &p->model, err) < 0 ||
                    opt_str(model, "imatrix", &p->imatrix, err) < 0))
        rc = -1;
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

int bp_embedding_name(const char *name)
{
    return strstr(name, "embed") || strstr(name, "wte") || strstr(name, "tok_emb") ||
           !strcmp(name, "token_embd.weight");
}

void xp_anchored(const char *name, char *out, size_t cap)
{
    char esc[2100];
    bp_regex_escape(name, esc, sizeof esc);
    snprintf(out, cap, "^%s$", esc);
}

/* ---- warnings ------------------------------------------------------------- */

void xp_warn_layers(const bp_export_opts *o, const char *fmt, const bp_export_plan *p,
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

void xp_note(const bp_export_opts *o, const char *fmt, const char *text)
{
    if (o && o->warn && o->notes)
        fprintf(o->warn, "bitplan: note: %s: %s\n", fmt, text);
}

void xp_warn_tied(const bp_export_opts *o, const char *fmt, const bp_export_plan *p,
                  unsigned char *flag, const char *what)
{
    XP_WARN_IF(o, fmt, p, flag, L->tied_with != NULL, what);
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
    bp_export_opts o = {types, n_types, 0, NULL, 0, NULL, NULL, NULL};
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
    case 0:
        if (args == 2) {                 /* FILE.cmd: the command line */
            char file[4096];
            snprintf(file, sizeof file, "%.*s", (int)(strlen(path) - 4), path);
            xp_write_llamacpp_command(a.fp, p, type, o->cmd_types ? o->cmd_types : file,
                                      o->cmd_model, o->cmd_imatrix);
        } else {
            rc = xp_write_llamacpp(a.fp, p, args, type, o->compress);
        }
        break;
    case 1: xp_write_gptqmodel(a.fp, p, o, flag); break;
    case 2: xp_write_llmcompressor(a.fp, p, o, flag); break;
    default: xp_write_autoround(a.fp, p, o, flag); break;
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
        if (!(type[i] = xp_ggml_for(&p->layers[i], o->types, o->n_types)))
            rc = bp_fail(err, "layer '%s': %d-bit weights have no llama.cpp type (use 2, 3, "
                         "4, 5, 6, 8 or 16, or map it in export.ggml_types)", p->layers[i].name,
                         p->layers[i].wbits);
    if (rc == 0 && f == 1)
        rc = xp_gptqmodel_check(p, err);
    if (rc == 0)
        rc = write_one(p, f, path, type, o, 0, flag, err);
    if (rc == 0 && f == 0 && strcmp(path, "-") != 0) {
        char args[4096];             /* llama.cpp: the same as --tensor-type arguments */
        snprintf(args, sizeof args, "%s.args", path);
        rc = write_one(p, f, args, type, o, 1, flag, err);
        snprintf(args, sizeof args, "%s.cmd", path);   /* and the command line */
        if (rc == 0)
            rc = write_one(p, f, args, type, o, 2, flag, err);
    }
    if (rc == 0 && f == 0)
        xp_llamacpp_warnings(p, type, o, flag);
    free(type);
    free(flag);
    return rc;
}
