/*
 * test_export.c - every export, read the way its consumer reads it, gives
 * every layer its planned settings, on two plans: Llama-named layers at 2..16
 * bits (PyTorch names mapped to GGUF), and a plan with per-group 64 / 128,
 * per-tensor, asymmetric, 8-bit activations per tensor, per token and log2,
 * 16-bit layers, look-alike and awkward names and a tied head.  The
 * consumers' rules, each from its own code:
 *
 *   llama.cpp  tools/quantize/quantize.cpp parse_tensor_type_file: tokens
 *              split at whitespace, each at its first '=', the pattern
 *              lowercased; src/llama-quant.cpp llama_tensor_get_type: the
 *              first pattern (file order) whose std::regex_search hits
 *   GPTQModel  gptqmodel/quantization/config.py: "-:" keys moved first,
 *              _resolve_dynamic_override: the first key whose regex
 *              .match()es (anchored at the start) decides; "-:" skips
 *   compressed-tensors  utils/match.py _match_name: "re:" targets by
 *              re.match, others by equality; ignore checked first
 *              (match_named_modules); quant_args.py QuantizationArgs
 *              validate_model_after: group_size only with strategy group,
 *              strategy token only with dynamic
 *   AutoRound  compressors/layer_config/resolver.py: exact module names
 *              first; data_type/utils.py: group_size 0 per tensor, -1 per
 *              channel (per token for activations)
 *
 * POSIX ERE stands in for Python's re and std::regex (ECMAScript): the
 * patterns use only escapes the three agree on, plus \xHH for llama.cpp,
 * which the test decodes as ECMAScript does.
 */
#include <ctype.h>
#include <regex.h>
#include <stdlib.h>

#include "check.h"
#include "common/bp_file.h"
#include "planner/formats/export.h"
#include "planner/formats/plan.h"
#include "planner/formats/yamltree.h"

static char tmp[512];

/* ---- the two plans ---------------------------------------------------------- */

typedef struct spec {
    const char *name;
    int w, a;
    const char *gran;         /* per_channel | per_group | per_tensor */
    long group;
    int sym;
    const char *akind, *agran;
    int asym;
    long in;
    const char *tied;
} spec;

#define LLAMA_N 16
static spec llama[LLAMA_N];
static char llama_names[LLAMA_N][64];

static void make_llama(void)
{
    static const char *const proj[7] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                        "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj",
                                        "mlp.down_proj"};
    static const int bits[7] = {2, 3, 4, 5, 6, 8, 16};
    int n = 0;
    snprintf(llama_names[n], 64, "model.embed_tokens");
    llama[n] = (spec){llama_names[n], 8, 16, "per_channel", 0, 1, NULL, NULL, -1, 256, NULL};
    n++;
    for (int b = 0; b < 2; b++)
        for (int k = 0; k < 7; k++, n++) {
            snprintf(llama_names[n], 64, "model.layers.%d.%s", b, proj[k]);
            llama[n] = (spec){llama_names[n], bits[(k + 3 * b) % 7], 16, "per_channel", 0, 1,
                              NULL, NULL, -1, k == 6 ? 384 : 256, NULL};
        }
    snprintf(llama_names[n], 64, "lm_head");
    llama[n] = (spec){llama_names[n], 6, 16, "per_channel", 0, 1, NULL, NULL, -1, 256, NULL};
}

#define MIXED_N 12
static const spec mixed[MIXED_N] = {
    {"model.layers.1.self_attn.q_proj", 4, 8, "per_group", 128, 1, "uniform", "per_tensor", 0, 256, NULL},
    {"model.layers.10.self_attn.q_proj", 3, 16, "per_group", 64, 0, NULL, NULL, -1, 256, NULL},
    {"model.layers.1.mlp.down_proj", 8, 8, "per_tensor", 0, 1, "uniform", "per_token", 1, 512, NULL},
    {"odd+name(with)[chars]*?", 2, 8, "per_channel", 0, 0, "log2", "per_tensor", 0, 256, NULL},
    {"model.layers.2.self_attn.v_proj", 4, 16, "per_group", 128, 0, NULL, NULL, -1, 256, NULL},
    {"conv.1", 6, 8, "per_channel", 0, 1, "ptf", "per_tensor", 0, 27, NULL},
    {"attn.Wq=proj x", 5, 16, "per_tensor", 0, 0, NULL, NULL, -1, 256, NULL},
    {"blk.3.ffn_norm.weight", 16, 8, "none", 0, 1, "uniform", "per_tensor", 1, 256, NULL},
    {"vision.patch", 16, 16, "none", 0, 1, NULL, NULL, -1, 256, NULL},
    {"model.embed_tokens", 4, 16, "per_group", 128, 1, NULL, NULL, -1, 256, NULL},
    {"it's.a \"quoted\" name", 8, 16, "per_channel", 0, 1, NULL, NULL, -1, 256, NULL},
    {"lm_head", 4, 16, "per_group", 128, 1, NULL, NULL, -1, 256, "model.embed_tokens"},
};
static const char *const decoys[] = {"model.layers.1.self_attn.q_projX", "xmodel.layers.1.mlp.down_proj",
                                     "model.layers.11.self_attn.q_proj", "conv_1", "lm_head.weight",
                                     "attn.wq=proj x", "blk.3.ffn_norm.weightx", "blk.30.attn_q.weight"};

/* Write specs as a plan (YAML or JSON) and read it back as exports do. */
static void read_plan(const spec *s, size_t n, int json, bp_export_plan *out)
{
    bp_plan_layer *layers = calloc(n, sizeof *layers);
    for (size_t i = 0; i < n; i++)
        layers[i] = (bp_plan_layer){.name = s[i].name, .wbits = s[i].w, .abits = s[i].a,
                                    .quantizer = "rtn", .granularity = s[i].gran,
                                    .group_size = s[i].group, .symmetric = s[i].sym,
                                    .act_kind = s[i].akind, .act_granularity = s[i].agran,
                                    .act_symmetric = s[i].asym, .in_features = s[i].in,
                                    .tied_with = s[i].tied, .error = 0.1, .params = 100,
                                    .weight_bits = 400};
    bp_plan p;
    memset(&p, 0, sizeof p);
    p.layers = layers;
    p.n_layers = n;
    p.objective_name = "min_error";
    p.solver = "glpk", p.status = "optimal";
    p.budget_max_error = -1;
    p.total_latency = NAN;
    bp_error err;
    char path[600];
    snprintf(path, sizeof path, "%s/plan.%s", tmp, json ? "json" : "yaml");
    CHECK_MSG((json ? bp_plan_write_json : bp_plan_write_yaml)(&p, path, &err) == 0, "%s", err.msg);
    CHECK_MSG(bp_export_read_plan(path, out, &err) == 0, "%s", err.msg);
    free(layers);
}

/* ---- small readers ------------------------------------------------------------ */

static char *slurp(const char *file)
{
    char path[700], *text = NULL;
    size_t n;
    bp_error err;
    snprintf(path, sizeof path, "%s/%s", tmp, file);
    CHECK_MSG(bp_read_file(path, &text, &n, &err) == 0, "%s", err.msg);
    return text;
}

static bp_ynode *parse(const char *file)
{
    char *text = slurp(file);
    bp_ynode *root = NULL;
    bp_error err;
    if (text && bp_yaml_parse(text, strlen(text), file, &root, &err) < 0)
        fprintf(stderr, "%s\n", err.msg);
    free(text);
    return root;
}

static const bp_ynode *get(const bp_ynode *m, const char *key)
{
    for (size_t i = 0; m && m->type == BP_Y_MAP && i < m->n; i++)
        if (strcmp(m->items[2 * i]->str, key) == 0)
            return m->items[2 * i + 1];
    return NULL;
}

static const char *gets(const bp_ynode *m, const char *key)
{
    const bp_ynode *v = get(m, key);
    return v && v->type == BP_Y_SCALAR ? v->str : "<missing>";
}

static long getl(const bp_ynode *m, const char *key)
{
    const bp_ynode *v = get(m, key);
    return v && v->type == BP_Y_SCALAR ? atol(v->str) : -999;
}

/* Does pattern hit name: anywhere (search) or at its start (Python re.match)? */
static int hits(const char *pattern, const char *name, int at_start)
{
    regex_t re;
    regmatch_t m;
    if (regcomp(&re, pattern, REG_EXTENDED) != 0)
        return -1;
    int hit = regexec(&re, name, 1, &m, 0) == 0 && (!at_start || m.rm_so == 0);
    regfree(&re);
    return hit;
}

/* Write one export of p into the scratch directory; warnings into *warn. */
static int export_to(const bp_export_plan *p, const char *fmt, const char *file,
                     const bp_export_opts *base, char **warn)
{
    char path[700];
    size_t n;
    bp_error err;
    FILE *mem = open_memstream(warn, &n);
    bp_export_opts o = base ? *base : (bp_export_opts){0};
    o.warn = mem, o.notes = 1;
    snprintf(path, sizeof path, "%s/%s", tmp, file);
    int rc = bp_export_write_opts(p, fmt, path, &o, &err);
    fclose(mem);
    CHECK_MSG(rc == 0, "%s: %s", fmt, err.msg);
    return rc;
}

/* The spec a (possibly renamed) export layer came from. */
static const spec *spec_of(const spec *s, size_t n, size_t i)
{
    return i < n ? &s[i] : NULL;
}

/* ---- llama.cpp ---------------------------------------------------------------- */

/* An ECMAScript pattern as llama-quantize holds it -> POSIX ERE: \xHH is the
 * character (escaped when special); other escapes stay. */
static void ecma_to_ere(const char *in, char *out, size_t cap)
{
    size_t k = 0;
    for (const char *s = in; *s && k + 3 < cap; s++) {
        if (s[0] == '\\' && s[1] == 'x' && isxdigit((unsigned char)s[2]) &&
            isxdigit((unsigned char)s[3])) {
            char hex[3] = {s[2], s[3], 0};
            char c = (char)strtol(hex, NULL, 16);
            if (strchr(".[]()*+?{}|^$\\", c))
                out[k++] = '\\';
            out[k++] = c;
            s += 3;
        } else if (s[0] == '\\' && s[1]) {
            out[k++] = *s++;
            out[k++] = *s;
        } else {
            out[k++] = *s;
        }
    }
    out[k] = '\0';
}

/* The type llama-quantize gives tensor `name` from a --tensor-type-file text,
 * and how many patterns hit it; NULL when none does. */
static const char *llama_type(const char *text, const char *name, int *n_hits, char *type,
                              size_t cap)
{
    char *copy = strdup(text), *save = NULL;
    const char *found = NULL;
    *n_hits = 0;
    for (char *tok = strtok_r(copy, " \t\n", &save); tok; tok = strtok_r(NULL, " \t\n", &save)) {
        char *eq = strchr(tok, '=');                 /* the first '=' */
        if (!eq)
            continue;
        *eq = '\0';
        for (char *c = tok; *c; c++)
            *c = (char)tolower((unsigned char)*c);   /* as parse_tensor_type does */
        char ere[2400];
        ecma_to_ere(tok, ere, sizeof ere);
        if (hits(ere, name, 0) == 1) {
            if (!found)
                snprintf(type, cap, "%s", eq + 1), found = type;
            (*n_hits)++;
        }
    }
    free(copy);
    return found;
}

static void check_llamacpp(const bp_export_plan *p, const spec *s, const char *file,
                           const char *what)
{
    char *text = slurp(file), type[64];
    int ok = 1;
    for (size_t i = 0; text && i < p->n; i++) {
        int n;
        const char *t = llama_type(text, p->layers[i].name, &n, type, sizeof type);
        const char *want = bp_ggml_type(spec_of(s, p->n, i)->w);
        int good = t && n == 1 && !strcmp(t, want);
        if (!good)
            fprintf(stderr, "%s: %s: %d patterns, type %s, want %s\n", what, p->layers[i].name,
                    n, t ? t : "none", want);
        ok &= good;
    }
    for (size_t d = 0; text && d < sizeof decoys / sizeof *decoys; d++) {
        int n;
        llama_type(text, decoys[d], &n, type, sizeof type);
        if (n)
            fprintf(stderr, "%s: decoy %s matched\n", what, decoys[d]);
        ok &= n == 0;
    }
    CHECK_MSG(ok, "%s: every tensor gets its planned type from exactly one pattern", what);
    free(text);
}

static void test_llamacpp(void)
{
    bp_export_plan p;
    bp_error err;
    char *warn = NULL;
    make_llama();
    read_plan(llama, LLAMA_N, 0, &p);
    CHECK(bp_export_rename(&p, NULL, 0, 1, &err) == 0);
    CHECK(strcmp(p.layers[1].name, "blk.0.attn_q.weight") == 0);
    CHECK(strcmp(p.layers[0].name, "token_embd.weight") == 0);
    CHECK(strcmp(p.layers[LLAMA_N - 1].name, "output.weight") == 0);
    export_to(&p, "llamacpp", "llama.txt", NULL, &warn);
    check_llamacpp(&p, llama, "llama.txt", "llamacpp/llama");
    check_llamacpp(&p, llama, "llama.txt.args", "llamacpp/llama args");
    /* ffn_down has 384 inputs per row: k-quants fall back, and the user is told */
    CHECK_STR_CONTAINS(warn, "rows (384 inputs in the first) are not a multiple of");
    CHECK_STR_CONTAINS(warn, "(blk.1.ffn_down.weight): rows (384 inputs");     /* blk.0: f16 */
    CHECK_STR_CONTAINS(warn, "quantized base type");
    CHECK_STR_CONTAINS(warn, "(blk.0.attn_q.weight, blk.1.ffn_gate.weight): q2_K needs an "
                             "importance matrix under base type Q2_K_S");
    CHECK(strstr(warn, "not a GGUF tensor name") == NULL);
    free(warn);
    /* compressed: the same type for every tensor, fewer tokens */
    bp_export_opts o = {.compress = 1};
    export_to(&p, "llamacpp", "llama_c.txt", &o, &warn);
    check_llamacpp(&p, llama, "llama_c.txt", "llamacpp/compressed");
    free(warn);
    /* PyTorch names without the map: loud */
    bp_export_plan_free(&p);
    read_plan(llama, LLAMA_N, 1, &p);
    export_to(&p, "llamacpp", "unmapped.txt", NULL, &warn);
    CHECK_STR_CONTAINS(warn, "16 layers (model.embed_tokens, model.layers.0.self_attn.q_proj, "
                             "model.layers.0.self_attn.k_proj, ...): not a GGUF tensor name");
    free(warn);
    bp_export_plan_free(&p);

    /* the mixed plan: awkward names escaped for llama-quantize's parser */
    read_plan(mixed, MIXED_N, 0, &p);
    bp_ggml_rule map[] = {{3, 64, "iq3_xxs"}};
    o = (bp_export_opts){.types = map, .n_types = 1};
    export_to(&p, "llamacpp", "mixed.txt", &o, &warn);
    char *text = slurp("mixed.txt"), type[64];
    int n, ok = 1;
    for (size_t i = 0; text && i < p.n; i++) {
        const char *t = llama_type(text, p.layers[i].name, &n, type, sizeof type);
        const char *want = i == 1 ? "iq3_xxs" : bp_ggml_type(mixed[i].w);
        ok &= t && n == 1 && !strcmp(t, want);
    }
    CHECK_MSG(ok, "llamacpp/mixed: uppercase, '=', space and quotes survive the parser");
    free(text);
    CHECK_STR_CONTAINS(warn, "(model.layers.10.self_attn.q_proj): this type needs an importance "
                             "matrix");
    CHECK_STR_CONTAINS(warn, "(lm_head): the weights are the embedding's (tied embeddings)");
    CHECK_STR_CONTAINS(warn, "(blk.3.ffn_norm.weight): llama-quantize never quantizes norms");
    CHECK_STR_CONTAINS(warn, "5 layers (model.layers.1.self_attn.q_proj, model.layers.1.mlp."
                             "down_proj, odd+name(with)[chars]*?, ...): llama.cpp quantizes "
                             "weights only");
    CHECK_STR_CONTAINS(warn, "rows (27 inputs in the first) are not a multiple of q6_K's "
                             "block of 256: llama-quantize falls back to f16");
    CHECK_STR_CONTAINS(warn, "its granularity, group size and symmetry are not");
    free(warn);
    /* a width llama.cpp has no type for: an error, no file */
    p.layers[1].wbits = 7;
    CHECK(bp_export_write(&p, "llamacpp", "/nonexistent-dir/never.txt", NULL, 0, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "7-bit weights have no llama.cpp type");
    bp_export_plan_free(&p);
}

/* ---- GPTQModel ---------------------------------------------------------------- */

/* GPTQModel's resolution of one module: "-:" keys first, then file order; the
 * first key (without its "+:" / "-:") that re.match()es decides.  Returns the
 * override map, or NULL with *skipped set for "-:", or NULL for no match. */
static const bp_ynode *gptq_lookup(const bp_ynode *dyn, const char *name, int *skipped,
                                   int *n_match)
{
    const bp_ynode *found = NULL;
    *skipped = 0, *n_match = 0;
    for (int pass = 0; pass < 2; pass++)
        for (size_t k = 0; dyn && k < dyn->n; k++) {
            const char *key = dyn->items[2 * k]->str;
            int neg = key[0] == '-' && key[1] == ':';
            if (neg != (pass == 0))
                continue;
            const char *pat = (key[0] == '+' || key[0] == '-') && key[1] == ':' ? key + 2 : key;
            if (hits(pat, name, 1) == 1) {
                if (!found && !*skipped) {
                    if (neg)
                        *skipped = 1;
                    else
                        found = dyn->items[2 * k + 1];
                }
                (*n_match)++;
            }
        }
    return found;
}

static void check_gptqmodel(const bp_export_plan *p, const spec *s, const char *what,
                            int want_planar)
{
    bp_ynode *root = parse("quantize_config.json");
    const bp_ynode *dyn = get(root, "dynamic");
    int ok = root && dyn, planar = 0;
    CHECK_MSG(ok, "%s: a quantize_config.json with dynamic", what);
    CHECK(!strcmp(gets(root, "quant_method"), "gptq") && !strcmp(gets(root, "desc_act"), "false"));
    CHECK(getl(root, "bits") >= 2 && getl(root, "bits") <= 8);
    for (size_t i = 0; ok && i < p->n; i++) {
        const spec *sp = spec_of(s, p->n, i);
        int skipped, n;
        const bp_ynode *v = gptq_lookup(dyn, p->layers[i].name, &skipped, &n);
        int embed = strstr(sp->name, "embed") != NULL;
        int good;
        if (embed)
            good = n == 0;                       /* GPTQModel never quantizes them */
        else if (sp->w >= 16)
            good = skipped && n == 1;
        else
            good = v && n == 1 && getl(v, "bits") == sp->w &&
                   getl(v, "group_size") == (!strcmp(sp->gran, "per_group") ? sp->group : -1) &&
                   !strcmp(gets(v, "sym"), sp->sym ? "true" : "false");
        planar |= !embed && sp->w >= 5 && sp->w <= 7;
        if (!good)
            fprintf(stderr, "%s: %s: %d matches\n", what, p->layers[i].name, n);
        ok &= good;
    }
    for (size_t d = 0; d < sizeof decoys / sizeof *decoys; d++) {
        int skipped, n;
        gptq_lookup(dyn, decoys[d], &skipped, &n);
        ok &= n == 0;
    }
    CHECK_MSG(ok, "%s: every layer resolves to its own bits, group and symmetry", what);
    CHECK(planar == want_planar);
    CHECK(!strcmp(gets(root, "checkpoint_format"), planar ? "gptq_p" : "gptq"));
    bp_ynode_free(root);
}

static void test_gptqmodel(void)
{
    bp_export_plan p;
    char *warn = NULL;
    bp_error err;
    make_llama();
    read_plan(llama, LLAMA_N, 0, &p);
    export_to(&p, "gptqmodel", "quantize_config.json", NULL, &warn);
    check_gptqmodel(&p, llama, "gptqmodel/llama", 1);
    CHECK_STR_CONTAINS(warn, "(model.embed_tokens): GPTQModel never quantizes embeddings");
    CHECK_STR_CONTAINS(warn, "checkpoint_format gptq_p");
    bp_ynode *root = parse("quantize_config.json");
    CHECK(!strcmp(gets(root, "lm_head"), "true"));
    bp_ynode_free(root);
    free(warn);
    bp_export_plan_free(&p);

    read_plan(mixed, MIXED_N, 1, &p);
    export_to(&p, "gptqmodel", "quantize_config.json", NULL, &warn);
    check_gptqmodel(&p, mixed, "gptqmodel/mixed", 1);
    CHECK_STR_CONTAINS(warn, "(model.layers.1.mlp.down_proj, attn.Wq=proj x): GPTQModel has no "
                             "per-tensor grid");
    CHECK_STR_CONTAINS(warn, "GPTQModel quantizes weights only");
    free(warn);
    p.layers[0].wbits = 12;          /* GPTQModel rejects it: so do we, before writing */
    CHECK(bp_export_write(&p, "gptqmodel", "/nonexistent-dir/q.json", NULL, 0, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "GPTQModel quantizes to 2..8 bits, not 12");
    bp_export_plan_free(&p);
}

/* ---- llm-compressor / compressed-tensors -------------------------------------- */

static int ct_match(const char *target, const char *name)
{
    if (!strncmp(target, "re:", 3))
        return hits(target + 3, name, 1) == 1;
    return strcmp(target, name) == 0;
}

static void check_llmcompressor(const bp_export_plan *p, const spec *s, const char *what)
{
    bp_ynode *root = parse("recipe.yaml");
    const bp_ynode *qm = get(get(get(root, "quant_stage"), "quant_modifiers"), "QuantizationModifier");
    const bp_ynode *groups = get(qm, "config_groups"), *ignore = get(qm, "ignore");
    int ok = groups != NULL;
    for (size_t i = 0; ok && i < p->n; i++) {
        const spec *sp = spec_of(s, p->n, i);
        const char *name = p->layers[i].name;
        int ignored = 0, n = 0;
        const bp_ynode *grp = NULL;
        for (size_t k = 0; ignore && k < ignore->n; k++)
            ignored |= ct_match(ignore->items[k]->str, name);
        for (size_t g = 0; !ignored && g < groups->n; g++) {
            const bp_ynode *t = get(groups->items[2 * g + 1], "targets");
            for (size_t k = 0; t && k < t->n; k++)
                if (ct_match(t->items[k]->str, name))
                    n++, grp = groups->items[2 * g + 1];
        }
        int good;
        if (sp->w >= 16 && sp->a >= 16) {
            good = ignored;
        } else {
            const bp_ynode *w = get(grp, "weights"), *a = get(grp, "input_activations");
            good = n == 1;
            if (good && sp->w < 16) {
                const char *strat = !strcmp(sp->gran, "per_tensor")  ? "tensor"
                                    : !strcmp(sp->gran, "per_group") ? "group"
                                                                     : "channel";
                good = w && getl(w, "num_bits") == sp->w && !strcmp(gets(w, "strategy"), strat) &&
                       !strcmp(gets(w, "symmetric"), sp->sym ? "true" : "false") &&
                       (strcmp(strat, "group") ? get(w, "group_size") == NULL
                                               : getl(w, "group_size") == sp->group);
            } else if (good) {
                good = w == NULL;
            }
            if (good && sp->a < 16) {
                int token = !strcmp(sp->agran, "per_token");
                good = a && getl(a, "num_bits") == sp->a &&
                       !strcmp(gets(a, "symmetric"), sp->asym ? "true" : "false") &&
                       !strcmp(gets(a, "strategy"), token ? "token" : "tensor") &&
                       !strcmp(gets(a, "dynamic"), token ? "true" : "false");
            } else if (good) {
                good = a == NULL;
            }
        }
        if (!good)
            fprintf(stderr, "%s: %s: %d targets%s\n", what, name, n, ignored ? ", ignored" : "");
        ok &= good;
    }
    for (size_t d = 0; ok && d < sizeof decoys / sizeof *decoys; d++)
        for (size_t g = 0; g < groups->n; g++) {
            const bp_ynode *t = get(groups->items[2 * g + 1], "targets");
            for (size_t k = 0; t && k < t->n; k++)
                ok &= !ct_match(t->items[k]->str, decoys[d]);
        }
    CHECK_MSG(ok, "%s: every module gets its scheme from exactly one target", what);
    bp_ynode_free(root);
}

static void test_llmcompressor(void)
{
    bp_export_plan p;
    char *warn = NULL;
    make_llama();
    read_plan(llama, LLAMA_N, 0, &p);
    export_to(&p, "llmcompressor", "recipe.yaml", NULL, &warn);
    check_llmcompressor(&p, llama, "llmcompressor/llama");
    free(warn);
    bp_export_plan_free(&p);
    read_plan(mixed, MIXED_N, 1, &p);
    export_to(&p, "llmcompressor", "recipe.yaml", NULL, &warn);
    check_llmcompressor(&p, mixed, "llmcompressor/mixed");
    CHECK_STR_CONTAINS(warn, "(odd+name(with)[chars]*?, conv.1): compressed-tensors has no log2");
    free(warn);
    bp_export_plan_free(&p);
}

/* ---- AutoRound ---------------------------------------------------------------- */

static void check_autoround(const bp_export_plan *p, const spec *s, const char *what)
{
    bp_ynode *root = parse("autoround.json");
    int ok = root && root->type == BP_Y_MAP && root->n == p->n;
    for (size_t i = 0; ok && i < p->n; i++) {
        const spec *sp = spec_of(s, p->n, i);
        const bp_ynode *v = get(root, p->layers[i].name);
        int good = v != NULL;
        if (good && sp->w < 16)
            good = getl(v, "bits") == sp->w && !strcmp(gets(v, "data_type"), "int") &&
                   getl(v, "group_size") == (!strcmp(sp->gran, "per_tensor")  ? 0
                                             : !strcmp(sp->gran, "per_group") ? sp->group
                                                                              : -1) &&
                   !strcmp(gets(v, "sym"), sp->sym ? "true" : "false");
        else if (good)
            good = getl(v, "bits") == 16 && !strcmp(gets(v, "data_type"), "float");
        if (good && sp->a < 16) {
            int token = !strcmp(sp->agran, "per_token");
            good = getl(v, "act_bits") == sp->a && !strcmp(gets(v, "act_data_type"), "int") &&
                   getl(v, "act_group_size") == (token ? -1 : 0) &&
                   !strcmp(gets(v, "act_sym"), sp->asym ? "true" : "false") &&
                   !strcmp(gets(v, "act_dynamic"), token ? "true" : "false");
        } else if (good) {
            good = getl(v, "act_bits") == 16 && !strcmp(gets(v, "act_data_type"), "float");
        }
        if (!good)
            fprintf(stderr, "%s: %s\n", what, p->layers[i].name);
        ok &= good;
    }
    CHECK_MSG(ok, "%s: every layer's entry carries its weight and activation settings", what);
    bp_ynode_free(root);
}

static void test_autoround(void)
{
    bp_export_plan p;
    char *warn = NULL;
    make_llama();
    read_plan(llama, LLAMA_N, 0, &p);
    export_to(&p, "autoround", "autoround.json", NULL, &warn);
    check_autoround(&p, llama, "autoround/llama");
    CHECK_STR_CONTAINS(warn, "--layer_config \"$(cat autoround_layer_config.json)\"");
    free(warn);
    bp_export_plan_free(&p);
    read_plan(mixed, MIXED_N, 0, &p);
    export_to(&p, "autoround", "autoround.json", NULL, &warn);
    check_autoround(&p, mixed, "autoround/mixed");
    CHECK_STR_CONTAINS(warn, "AutoRound has no log2");
    free(warn);
    bp_export_plan_free(&p);
}

/* ---- names -------------------------------------------------------------------- */

static void plan_of(bp_export_plan *p, const char *const *names, const int *bits, size_t n)
{
    *p = (bp_export_plan){0};
    p->layers = calloc(n, sizeof *p->layers);
    p->n = n;
    for (size_t i = 0; i < n; i++)
        p->layers[i] = (bp_export_layer){.name = strdup(names[i]), .wbits = bits[i], .abits = 16,
                                         .quantizer = strdup("rtn"),
                                         .granularity = strdup("per_channel"), .symmetric = 1,
                                         .act_symmetric = -1};
}

static void test_rename(void)
{
    static const char *const names[] = {"model.layers.7.self_attn.q_proj", "model.layers.7.mlp.down_proj",
                                        "lm_head", "custom.block3.ff",
                                        "model.layers.2.self_attn.qkv_proj",
                                        "model.layers.2.mlp.gate_up_proj",
                                        "model.layers.4.mlp.shared_expert.up_proj",
                                        "model.layers.4.mlp.gate"};
    static const int bits[] = {4, 4, 8, 4, 4, 4, 4, 8};
    bp_export_plan p;
    bp_error err;
    plan_of(&p, names, bits, 8);
    bp_name_rule rules[] = {{"^custom\\.block([0-9]+)\\.ff$", "blk.\\1.ffn_down.weight"},
                            {"^lm_head$", "my_output"}};
    CHECK(bp_export_rename(&p, rules, 2, 1, &err) == 0);
    CHECK(strcmp(p.layers[0].name, "blk.7.attn_q.weight") == 0);
    CHECK(strcmp(p.layers[1].name, "blk.7.ffn_down.weight") == 0);
    CHECK(strcmp(p.layers[2].name, "my_output") == 0);          /* user rules first */
    CHECK(strcmp(p.layers[3].name, "blk.3.ffn_down.weight") == 0);
    CHECK(strcmp(p.layers[4].name, "blk.2.attn_qkv.weight") == 0);      /* Phi-3 fused */
    CHECK(strcmp(p.layers[5].name, "blk.2.ffn_up.weight") == 0);
    CHECK(strcmp(p.layers[6].name, "blk.4.ffn_up_shexp.weight") == 0);  /* Qwen MoE */
    CHECK(strcmp(p.layers[7].name, "blk.4.ffn_gate_inp.weight") == 0);
    bp_name_rule bad = {"^(oops", "x"};
    CHECK(bp_export_rename(&p, &bad, 1, 0, &err) < 0);
    bp_export_plan_free(&p);

    /* user rules that merge layers, empty names and missing groups: refused */
    static const char *const two[] = {"a.1", "a.2"};
    static const int b2[] = {4, 4};
    bp_name_rule merge = {"^a\\.[0-9]$", "same"}, empty = {"^a\\.1$", ""}, group = {"^(a)\\.1$", "\\9"};
    plan_of(&p, two, b2, 2);
    CHECK(bp_export_rename(&p, &merge, 1, 0, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "maps layers 'a.1' and 'a.2' both to 'same'");
    bp_export_plan_free(&p);
    plan_of(&p, two, b2, 2);
    CHECK(bp_export_rename(&p, &empty, 1, 0, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "an empty name");
    bp_export_plan_free(&p);
    plan_of(&p, two, b2, 2);
    CHECK(bp_export_rename(&p, &group, 1, 0, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "\\9 names a group the pattern does not have");
    bp_export_plan_free(&p);
}

/* MoE experts are one GGUF tensor per block: equal settings give one token,
 * different ones an error naming both experts. */
static void test_experts(void)
{
    static const char *const ex[] = {"model.layers.0.block_sparse_moe.experts.0.w1",
                                     "model.layers.0.block_sparse_moe.experts.1.w1",
                                     "model.layers.0.block_sparse_moe.experts.0.w2",
                                     "model.layers.0.block_sparse_moe.experts.1.w2",
                                     "model.layers.1.mlp.experts.5.down_proj"};
    static const int same[] = {4, 4, 3, 3, 6}, differ[] = {4, 3, 3, 3, 6};
    bp_export_plan p;
    bp_error err;
    char *warn = NULL;
    plan_of(&p, ex, same, 5);
    CHECK_MSG(bp_export_rename(&p, NULL, 0, 1, &err) == 0, "%s", err.msg);
    export_to(&p, "llamacpp", "experts.txt", NULL, &warn);
    char *text = slurp("experts.txt"), type[64];
    int n;
    CHECK(text && llama_type(text, "blk.0.ffn_gate_exps.weight", &n, type, sizeof type) &&
          n == 1 && !strcmp(type, "q4_K"));
    CHECK(text && llama_type(text, "blk.0.ffn_down_exps.weight", &n, type, sizeof type) &&
          n == 1 && !strcmp(type, "q3_K"));
    int tokens = 0;
    for (char *t = text; t && *t; t++)
        tokens += *t == '\n';
    CHECK(tokens == 3);           /* 5 experts, 3 GGUF tensors */
    free(text);
    free(warn);
    bp_export_plan_free(&p);
    plan_of(&p, ex, differ, 4);
    CHECK(bp_export_rename(&p, NULL, 0, 1, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "experts.0.w1' (4-bit) and 'model.layers.0.block_sparse_moe."
                                "experts.1.w1' (3-bit) are one tensor 'blk.0.ffn_gate_exps.weight'");
    bp_export_plan_free(&p);
}

/* Names that no tool can match are refused when the plan is read (bytes that
 * are not UTF-8 never reach a plan: the model reader refuses them). */
static void test_bad_names(void)
{
    static const char *const bad[] = {"line\nbreak", "bell\a", "tab\there"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        spec s = {bad[i], 4, 16, "per_channel", 0, 1, NULL, NULL, -1, 0, NULL};
        bp_plan_layer l = {.name = s.name, .wbits = 4, .abits = 16, .quantizer = "rtn",
                           .granularity = "per_channel", .symmetric = 1, .act_symmetric = -1};
        bp_plan pl;
        memset(&pl, 0, sizeof pl);
        pl.layers = &l, pl.n_layers = 1, pl.objective_name = "min_error";
        pl.solver = "glpk", pl.status = "optimal", pl.budget_max_error = -1, pl.total_latency = NAN;
        char path[600];
        bp_error err;
        snprintf(path, sizeof path, "%s/bad.yaml", tmp);
        CHECK(bp_plan_write_yaml(&pl, path, &err) == 0);
        bp_export_plan p;
        CHECK(bp_export_read_plan(path, &p, &err) < 0);
        CHECK_STR_CONTAINS(err.msg, "has a control character or is not UTF-8");
    }
}

int main(void)
{
    const char *base = getenv("BP_TEST_TMP");
    bp_error err;
    snprintf(tmp, sizeof tmp, "%s", base ? base : "/tmp/bp_test_export");
    if (bp_mkdirs(tmp, &err) < 0)
        return 1;
    test_llamacpp();
    test_gptqmodel();
    test_llmcompressor();
    test_autoround();
    test_rename();
    test_experts();
    test_bad_names();
    CHECK(bp_export_write(&(bp_export_plan){0}, "hawq", "x", NULL, 0, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "HAWQ reads a Python dict");
    return check_done();
}
