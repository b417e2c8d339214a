/*
 * export.c - plans in other quantizers' formats (see export.h).
 */
#include "export.h"

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/bp_file.h"
#include "yamltree.h"

/* ---- reading a plan back -------------------------------------------------- */

void bp_export_plan_free(bp_export_plan *p)
{
    for (size_t i = 0; i < p->n; i++) {
        free(p->layers[i].name);
        free(p->layers[i].quantizer);
        free(p->layers[i].granularity);
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

static int read_layer(const char *path, const bp_ynode *m, size_t i, bp_export_layer *l,
                      bp_error *err)
{
    const char *name = NULL, *w = NULL, *a = NULL, *q = NULL, *g = "none", *gs = "0";
    const char *sym = "true";
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
    l->wbits = atoi(w), l->abits = atoi(a), l->group_size = atol(gs);
    l->symmetric = strcmp(sym, "false") != 0;
    if (l->wbits < 1 || l->wbits > 16 || l->abits < 1 || l->abits > 16)
        return bp_fail(err, "%s: layers[%zu]: bit widths %s/%s out of range", path, i, w, a);
    l->name = bp_strdup(name, err);
    l->quantizer = bp_strdup(q, err);
    l->granularity = bp_strdup(g, err);
    return l->name && l->quantizer && l->granularity ? 0 : -1;
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

/* PyTorch Llama-style names -> GGUF tensor names (weight suffix added). */
static const bp_name_rule llama_rules[] = {
    {"^model\\.layers\\.([0-9]+)\\.self_attn\\.q_proj$", "blk.\\1.attn_q.weight"},
    {"^model\\.layers\\.([0-9]+)\\.self_attn\\.k_proj$", "blk.\\1.attn_k.weight"},
    {"^model\\.layers\\.([0-9]+)\\.self_attn\\.v_proj$", "blk.\\1.attn_v.weight"},
    {"^model\\.layers\\.([0-9]+)\\.self_attn\\.o_proj$", "blk.\\1.attn_output.weight"},
    {"^model\\.layers\\.([0-9]+)\\.mlp\\.gate_proj$", "blk.\\1.ffn_gate.weight"},
    {"^model\\.layers\\.([0-9]+)\\.mlp\\.up_proj$", "blk.\\1.ffn_up.weight"},
    {"^model\\.layers\\.([0-9]+)\\.mlp\\.down_proj$", "blk.\\1.ffn_down.weight"},
    {"^model\\.embed_tokens$", "token_embd.weight"},
    {"^lm_head$", "output.weight"},
};

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
    regfree(&re);
    if (!hit)
        return 0;
    size_t k = 0;
    for (const char *t = r->to; *t && k + 1 < cap; t++) {
        if (t[0] == '\\' && t[1] >= '1' && t[1] <= '9') {
            int g = t[1] - '0';
            if (m[g].rm_so >= 0)
                for (regoff_t i = m[g].rm_so; i < m[g].rm_eo && k + 1 < cap; i++)
                    out[k++] = name[i];
            t++;
        } else {
            out[k++] = *t;
        }
    }
    out[k] = '\0';
    return 1;
}

int bp_export_rename(bp_export_plan *p, const bp_name_rule *rules, size_t n_rules, int llama,
                     bp_error *err)
{
    char buf[1024];
    for (size_t i = 0; i < p->n; i++) {
        int hit = 0;
        for (size_t r = 0; r < n_rules && !hit; r++)
            if ((hit = rename_one(&rules[r], p->layers[i].name, buf, sizeof buf, err)) < 0)
                return -1;
        for (size_t r = 0; llama && !hit && r < sizeof llama_rules / sizeof *llama_rules; r++)
            hit = rename_one(&llama_rules[r], p->layers[i].name, buf, sizeof buf, err);
        if (hit > 0) {
            char *s = bp_strdup(buf, err);
            if (!s)
                return -1;
            free(p->layers[i].name);
            p->layers[i].name = s;
        }
    }
    return 0;
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

/* ---- writers -------------------------------------------------------------- */

/* "^escaped$" */
static void anchored(const char *name, char *out, size_t cap)
{
    char esc[2100];
    bp_regex_escape(name, esc, sizeof esc);
    snprintf(out, cap, "^%s$", esc);
}

static long group_of(const bp_export_layer *l)
{
    return strcmp(l->granularity, "per_group") == 0 ? l->group_size : -1;   /* -1 channel */
}

static long group_of(const bp_export_layer *l);

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

/* compress: layers "blk.N.rest" of the same rest and type share one token
 * ^blk\.(N1|N2|...)\.rest$ (the same tensors match; fewer tokens). */
static int write_llamacpp(FILE *fp, const bp_export_plan *p, int args, const bp_ggml_rule *types,
                          size_t n_types, int compress, bp_error *err)
{
    char pat[2200];
    const char **type = malloc((p->n + 1) * sizeof *type);
    unsigned char *used = calloc(p->n + 1, 1);
    if (!type || !used) {
        free(type);
        free(used);
        return bp_fail(err, "out of memory");
    }
    int rc = 0, first = 1;
    for (size_t i = 0; rc == 0 && i < p->n; i++)
        if (!(type[i] = ggml_for(&p->layers[i], types, n_types)))
            rc = bp_fail(err, "layer '%s': %d-bit weights have no llama.cpp type (use 2, 3, "
                         "4, 5, 6, 8 or 16, or map it in export.ggml_types)", p->layers[i].name,
                         p->layers[i].wbits);
    for (size_t i = 0; rc == 0 && i < p->n; i++) {
        const char *num, *rest, *num2, *rest2;
        size_t len, len2, members = 0;
        if (used[i])
            continue;
        if (compress && block_name(p->layers[i].name, &num, &len, &rest))
            for (size_t j = i + 1; j < p->n; j++)
                members += !used[j] && strcmp(type[j], type[i]) == 0 &&
                           block_name(p->layers[j].name, &num2, &len2, &rest2) &&
                           strcmp(rest, rest2) == 0;
        if (!members) {
            anchored(p->layers[i].name, pat, sizeof pat);
            llama_token(fp, args, &first, pat, type[i]);
            continue;
        }
        char *buf = NULL, esc[2100];
        size_t n = 0;
        FILE *mem = open_memstream(&buf, &n);
        if (!mem) {
            rc = bp_fail(err, "out of memory");
            break;
        }
        fprintf(mem, "^blk\\.(%.*s", (int)len, num);
        for (size_t j = i + 1; j < p->n; j++)
            if (!used[j] && strcmp(type[j], type[i]) == 0 &&
                block_name(p->layers[j].name, &num2, &len2, &rest2) && strcmp(rest, rest2) == 0) {
                fprintf(mem, "|%.*s", (int)len2, num2);
                used[j] = 1;
            }
        bp_regex_escape(rest, esc, sizeof esc);
        fprintf(mem, ")\\.%s$", esc);
        fclose(mem);
        llama_token(fp, args, &first, buf, type[i]);
        free(buf);
    }
    if (rc == 0)
        fputc('\n', fp);
    free(type);
    free(used);
    return rc;
}

static void write_gptqmodel(FILE *fp, const bp_export_plan *p)
{
    char pat[2200];
    fprintf(fp, "{\n  \"dynamic\": {");
    for (size_t i = 0; i < p->n; i++) {
        const bp_export_layer *l = &p->layers[i];
        char key[2300];
        anchored(l->name, pat, sizeof pat);
        snprintf(key, sizeof key, "%s:%s", l->wbits >= 16 ? "-" : "+", pat);
        fprintf(fp, "%s\n    ", i ? "," : "");
        bp_json_string(fp, key);
        if (l->wbits >= 16)
            fprintf(fp, ": {}");
        else
            fprintf(fp, ": {\"bits\": %d, \"group_size\": %ld, \"sym\": %s}", l->wbits,
                    group_of(l), l->symmetric ? "true" : "false");
    }
    fprintf(fp, "\n  }\n}\n");
}

static void write_autoround(FILE *fp, const bp_export_plan *p)
{
    fprintf(fp, "{");
    for (size_t i = 0; i < p->n; i++) {
        const bp_export_layer *l = &p->layers[i];
        fprintf(fp, "%s\n  ", i ? "," : "");
        bp_json_string(fp, l->name);
        fprintf(fp, ": {\"bits\": %d, \"group_size\": %ld, \"sym\": %s, \"act_bits\": %d}",
                l->wbits, group_of(l), l->symmetric ? "true" : "false", l->abits);
    }
    fprintf(fp, "\n}\n");
}

static void write_hawq(FILE *fp, const bp_export_plan *p)
{
    fprintf(fp, "{\n  \"bit_config\": {");
    for (size_t i = 0; i < p->n; i++) {
        fprintf(fp, "%s\n    ", i ? "," : "");
        bp_json_string(fp, p->layers[i].name);
        fprintf(fp, ": %d", p->layers[i].wbits);
    }
    fprintf(fp, "\n  },\n  \"calibtip\": {");
    for (size_t i = 0; i < p->n; i++) {
        fprintf(fp, "%s\n    ", i ? "," : "");
        bp_json_string(fp, p->layers[i].name);
        fprintf(fp, ": [%d, %d]", p->layers[i].wbits, p->layers[i].abits);
    }
    fprintf(fp, "\n  }\n}\n");
}

/* Same llm-compressor group: bits, group, symmetry, activation bits. */
static int same_group(const bp_export_layer *a, const bp_export_layer *b)
{
    return a->wbits == b->wbits && group_of(a) == group_of(b) &&
           a->symmetric == b->symmetric && a->abits == b->abits;
}

static void write_llmcompressor(FILE *fp, const bp_export_plan *p)
{
    char pat[2200];
    int groups = 0, any16 = 0;
    fprintf(fp, "# llm-compressor recipe written by bitplan: one group per distinct\n"
                "# (weight bits, group size, symmetric, activation bits)\n"
                "quant_stage:\n  quant_modifiers:\n    QuantizationModifier:\n");
    for (size_t i = 0; i < p->n; i++)
        any16 |= p->layers[i].wbits >= 16;
    if (any16) {
        fprintf(fp, "      ignore:\n");
        for (size_t i = 0; i < p->n; i++)
            if (p->layers[i].wbits >= 16) {
                anchored(p->layers[i].name, pat, sizeof pat);
                fprintf(fp, "        - 're:%s'\n", pat);
            }
    }
    fprintf(fp, "      config_groups:\n");
    for (size_t i = 0; i < p->n; i++) {
        const bp_export_layer *l = &p->layers[i];
        int seen = l->wbits >= 16;
        for (size_t j = 0; j < i && !seen; j++)
            seen = p->layers[j].wbits < 16 && same_group(&p->layers[j], l);
        if (seen)
            continue;
        fprintf(fp, "        group_%d:\n          targets:\n", groups++);
        for (size_t j = i; j < p->n; j++)
            if (p->layers[j].wbits < 16 && same_group(&p->layers[j], l)) {
                anchored(p->layers[j].name, pat, sizeof pat);
                fprintf(fp, "            - 're:%s'\n", pat);
            }
        long g = group_of(l);
        fprintf(fp, "          weights:\n            num_bits: %d\n            type: int\n"
                    "            symmetric: %s\n            strategy: %s\n", l->wbits,
                l->symmetric ? "true" : "false", g > 0 ? "group" : "channel");
        if (g > 0)
            fprintf(fp, "            group_size: %ld\n", g);
        if (l->abits < 16)
            fprintf(fp, "          input_activations:\n            num_bits: %d\n"
                        "            type: int\n            symmetric: false\n"
                        "            strategy: tensor\n            dynamic: false\n", l->abits);
    }
}

const char *const bp_export_names[BP_EXPORT_COUNT] = {"llamacpp", "gptqmodel", "llmcompressor",
                                                      "autoround", "hawq"};
const char *const bp_export_files[BP_EXPORT_COUNT] = {
    "tensor-types.txt", "gptqmodel_dynamic.json", "recipe.yaml", "autoround_layer_config.json",
    "hawq_bit_config.json"};

int bp_export_format(const char *name)
{
    for (int f = 0; f < BP_EXPORT_COUNT; f++)
        if (strcmp(name, bp_export_names[f]) == 0)
            return f;
    return -1;
}

int bp_export_write(const bp_export_plan *p, const char *fmt, const char *path,
                    const bp_ggml_rule *types, size_t n_types, bp_error *err)
{
    return bp_export_write_opts(p, fmt, path, types, n_types, 0, err);
}

int bp_export_write_opts(const bp_export_plan *p, const char *fmt, const char *path,
                         const bp_ggml_rule *types, size_t n_types, int compress, bp_error *err)
{
    int f = bp_export_format(fmt);
    if (f < 0)
        return bp_fail(err, "unknown export format '%s' (expected one of: llamacpp, gptqmodel, "
                       "llmcompressor, autoround, hawq)", fmt);
    bp_atomic a;
    if (bp_atomic_open(&a, path, err) < 0)
        return -1;
    int rc = 0;
    switch (f) {
    case 0: rc = write_llamacpp(a.fp, p, 0, types, n_types, compress, err); break;
    case 1: write_gptqmodel(a.fp, p); break;
    case 2: write_llmcompressor(a.fp, p); break;
    case 3: write_autoround(a.fp, p); break;
    default: write_hawq(a.fp, p); break;
    }
    if (rc < 0) {
        bp_atomic_abort(&a);
        return -1;
    }
    if (bp_atomic_commit(&a, err) < 0)
        return -1;
    if (f != 0)
        return 0;
    char args[4096];                 /* llama.cpp: the same as --tensor-type arguments */
    snprintf(args, sizeof args, "%s.args", path);
    if (bp_atomic_open(&a, args, err) < 0)
        return -1;
    if (write_llamacpp(a.fp, p, 1, types, n_types, compress, err) < 0) {
        bp_atomic_abort(&a);
        return -1;
    }
    return bp_atomic_commit(&a, err);
}
