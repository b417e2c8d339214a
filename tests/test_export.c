/*
 * test_export.c - every export assigns exactly the planned bits: each file
 * is parsed back (JSON/YAML through the same tree reader users' tools would
 * use), and for the pattern formats every layer name is matched against
 * every pattern with POSIX regex: each layer hits exactly one pattern, with
 * its own bits, and look-alike names (blk.1 vs blk.10, dots vs any char)
 * hit none.
 */
#include <regex.h>
#include <stdlib.h>

#include "check.h"
#include "common/bp_file.h"
#include "planner/formats/export.h"
#include "planner/formats/plan.h"
#include "planner/formats/yamltree.h"

#define NL 7
static const char *const names[NL] = {
    "model.layers.1.self_attn.q_proj", "model.layers.10.self_attn.q_proj",
    "model.layers.1.mlp.down_proj", "odd+name(with)[chars]*?", "lm_head",
    "model.layers.2.self_attn.v_proj", "conv.1"};
static const int wb[NL] = {4, 3, 8, 2, 16, 4, 6}, ab[NL] = {16, 8, 16, 8, 16, 16, 16};
static const long gs[NL] = {128, 0, 64, 0, 0, 128, 0};
static const char *const decoys[] = {"model.layers.1.self_attn.q_projX", "xmodel.layers.1.mlp.down_proj",
                                     "model.layers.11.self_attn.q_proj", "conv_1", "lm_head.weight"};

static char tmp[512];

static const char *write_plan(void)
{
    static bp_plan_layer layers[NL];
    static char path[600];
    for (int i = 0; i < NL; i++)
        layers[i] = (bp_plan_layer){names[i], wb[i], ab[i], "rtn",
                                    wb[i] == 16 ? "none" : gs[i] ? "per_group" : "per_channel",
                                    gs[i], i % 3 != 0, 0.1, 100, 400};
    bp_plan p;
    memset(&p, 0, sizeof p);
    p.layers = layers;
    p.n_layers = NL;
    p.objective_name = "min_error";
    p.solver = "glpk", p.status = "optimal";
    p.budget_max_error = -1;
    p.total_latency = NAN;
    bp_error err;
    snprintf(path, sizeof path, "%s/plan.yaml", tmp);
    CHECK_MSG(bp_plan_write_yaml(&p, path, &err) == 0, "%s", err.msg);
    return path;
}

static bp_ynode *parse_file(const char *path)
{
    char *text;
    size_t n;
    bp_error err;
    bp_ynode *root = NULL;
    if (bp_read_file(path, &text, &n, &err) < 0)
        return NULL;
    if (bp_yaml_parse(text, n, path, &root, &err) < 0)
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

static int matches(const char *pattern, const char *name)
{
    regex_t re;
    if (regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB) != 0)
        return -1;
    int hit = regexec(&re, name, 0, NULL, 0) == 0;
    regfree(&re);
    return hit;
}

static int layer_index(const char *name)
{
    for (int i = 0; i < NL; i++)
        if (strcmp(names[i], name) == 0)
            return i;
    return -1;
}

/* The layer a pattern matches (the last one when several do), or -1. */
static int owner_of(const char *pattern)
{
    int owner = -1;
    for (int l = 0; l < NL; l++)
        if (matches(pattern, names[l]) == 1)
            owner = l;
    return owner;
}

/* Every layer hits exactly the patterns listed for it and no decoy hits any. */
static void check_patterns(const char *const *pats, const int *owner, size_t n, const char *what)
{
    int ok = 1;
    for (int l = 0; l < NL; l++) {
        int hits = 0, right = 0;
        for (size_t k = 0; k < n; k++)
            if (matches(pats[k], names[l]) == 1)
                hits++, right |= owner[k] == l;
        ok &= hits == 1 && right;
        if (hits != 1 || !right)
            fprintf(stderr, "%s: layer %s hit %d patterns\n", what, names[l], hits);
    }
    for (size_t d = 0; d < sizeof decoys / sizeof *decoys; d++)
        for (size_t k = 0; k < n; k++)
            if (matches(pats[k], decoys[d]) != 0) {
                ok = 0;
                fprintf(stderr, "%s: decoy %s hits %s\n", what, decoys[d], pats[k]);
            }
    CHECK_MSG(ok, "%s patterns", what);
}

/* A width llama.cpp has no type for is an error, and no file is left. */
static void test_llamacpp_bad(bp_export_plan *p)
{
    char out[700];
    bp_error err;
    snprintf(out, sizeof out, "%s/bad_types.txt", tmp);
    int keep = p->layers[1].wbits;
    p->layers[1].wbits = 7;
    CHECK(bp_export_write(p, "llamacpp", out, NULL, 0, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "no llama.cpp type");
    FILE *fp = fopen(out, "r");
    CHECK(fp == NULL);
    if (fp)
        fclose(fp);
    p->layers[1].wbits = keep;
}

static void test_llamacpp_ok(bp_export_plan *p)
{
    char out[700], *text;
    size_t n;
    bp_error err;
    snprintf(out, sizeof out, "%s/types.txt", tmp);
    CHECK_MSG(bp_export_write(p, "llamacpp", out, NULL, 0, &err) == 0, "%s", err.msg);
    CHECK(bp_read_file(out, &text, &n, &err) == 0);
    char *pats[NL];
    int owner[NL];
    size_t k = 0;
    int types_ok = 1;
    for (char *tok = strtok(text, " \n"); tok && k < NL; tok = strtok(NULL, " \n")) {
        char *eq = strrchr(tok, '=');
        CHECK(eq != NULL);
        if (!eq)
            continue;
        *eq = '\0';
        pats[k] = tok;
        owner[k] = owner_of(tok);
        types_ok &= owner[k] >= 0 && strcmp(eq + 1, bp_ggml_type(wb[owner[k]])) == 0;
        k++;
    }
    CHECK(k == NL);
    CHECK(types_ok);
    check_patterns((const char *const *)pats, owner, k, "llamacpp");
    free(text);
    snprintf(out, sizeof out, "%s/types.txt.args", tmp);
    CHECK(bp_read_file(out, &text, &n, &err) == 0);
    CHECK(strncmp(text, "--tensor-type ^", 15) == 0);
    free(text);
    /* a user type map: (4, group 128) and 3 bits overridden, the rest default */
    bp_ggml_rule map[] = {{4, 128, "q4_0"}, {3, -1, "iq3_xxs"}, {6, -2, "q6_K_custom"}};
    snprintf(out, sizeof out, "%s/types.txt", tmp);
    CHECK(bp_export_write(p, "llamacpp", out, map, 3, &err) == 0);
    CHECK(bp_read_file(out, &text, &n, &err) == 0);
    CHECK_STR_CONTAINS(text, "^model\\.layers\\.1\\.self_attn\\.q_proj$=q4_0");
    CHECK_STR_CONTAINS(text, "^model\\.layers\\.10\\.self_attn\\.q_proj$=iq3_xxs");
    CHECK_STR_CONTAINS(text, "^conv\\.1$=q6_K_custom");
    CHECK_STR_CONTAINS(text, "^model\\.layers\\.1\\.mlp\\.down_proj$=q8_0");
    free(text);
}

/* Write one format into the scratch directory and parse it back. */
static bp_ynode *export_parsed(const bp_export_plan *p, const char *fmt, const char *file)
{
    char out[700];
    bp_error err;
    snprintf(out, sizeof out, "%s/%s", tmp, file);
    CHECK_MSG(bp_export_write(p, fmt, out, NULL, 0, &err) == 0, "%s: %s", fmt, err.msg);
    return parse_file(out);
}

static void test_gptqmodel(const bp_export_plan *p)
{
    bp_ynode *root = export_parsed(p, "gptqmodel", "dyn.json");
    const bp_ynode *dyn = get(root, "dynamic");
    CHECK(dyn && dyn->n == NL);
    const char *pats[NL];
    int owner[NL], fields = 1;
    for (size_t k = 0; dyn && k < dyn->n && k < NL; k++) {
        const char *key = dyn->items[2 * k]->str;
        const bp_ynode *v = dyn->items[2 * k + 1];
        pats[k] = key + 2;
        int l = owner[k] = owner_of(pats[k]);
        if (l < 0) {
            fields = 0;
            continue;
        }
        if (wb[l] == 16) {
            fields &= key[0] == '-' && v->n == 0;
        } else {
            fields &= key[0] == '+' && atoi(get(v, "bits")->str) == wb[l];
            fields &= atol(get(v, "group_size")->str) == (gs[l] ? gs[l] : -1);
            fields &= strcmp(get(v, "sym")->str, l % 3 != 0 ? "true" : "false") == 0;
        }
    }
    CHECK(fields);
    if (dyn)
        check_patterns(pats, owner, dyn->n, "gptqmodel");
    bp_ynode_free(root);
}

static void test_llmcompressor(const bp_export_plan *p)
{
    bp_ynode *root = export_parsed(p, "llmcompressor", "recipe.yaml");
    const bp_ynode *qm = get(get(get(root, "quant_stage"), "quant_modifiers"), "QuantizationModifier");
    const bp_ynode *groups = get(qm, "config_groups"), *ignore = get(qm, "ignore");
    CHECK(groups && ignore && ignore->n == 1);
    const char *pats[NL + 1];
    int owner[NL + 1], ok = 1;
    size_t k = 0;
    for (size_t g = 0; groups && g < groups->n; g++) {
        const bp_ynode *grp = groups->items[2 * g + 1], *t = get(grp, "targets");
        const bp_ynode *w = get(grp, "weights"), *a = get(grp, "input_activations");
        for (size_t i = 0; t && i < t->n && k < NL; i++, k++) {
            pats[k] = t->items[i]->str + 3;                 /* after "re:" */
            int l = owner[k] = owner_of(pats[k]);
            if (l < 0) {
                ok = 0;
                continue;
            }
            ok &= atoi(get(w, "num_bits")->str) == wb[l];
            ok &= strcmp(get(w, "strategy")->str, gs[l] ? "group" : "channel") == 0;
            ok &= !gs[l] || atol(get(w, "group_size")->str) == gs[l];
            ok &= ab[l] == 16 ? a == NULL : a && atoi(get(a, "num_bits")->str) == ab[l];
        }
    }
    if (ignore && ignore->n == 1 && k < NL + 1) {
        pats[k] = ignore->items[0]->str + 3;
        owner[k] = layer_index("lm_head");
        k++;
    }
    CHECK(ok);
    check_patterns(pats, owner, k, "llmcompressor");
    bp_ynode_free(root);
}

static void test_json_maps(const bp_export_plan *p)
{
    char out[700];
    bp_error err;
    bp_ynode *root = export_parsed(p, "autoround", "ar.json");
    int ok = root && root->n == NL;
    for (int l = 0; ok && l < NL; l++) {
        const bp_ynode *v = get(root, names[l]);
        ok &= v && atoi(get(v, "bits")->str) == wb[l] && atoi(get(v, "act_bits")->str) == ab[l];
    }
    CHECK(ok);
    bp_ynode_free(root);
    root = export_parsed(p, "hawq", "hawq.json");
    snprintf(out, sizeof out, "%s/hawq.json", tmp);
    const bp_ynode *bc = get(root, "bit_config"), *ct = get(root, "calibtip");
    ok = bc && ct && bc->n == NL && ct->n == NL;
    for (int l = 0; ok && l < NL; l++) {
        const bp_ynode *pair = get(ct, names[l]);
        ok &= atoi(get(bc, names[l])->str) == wb[l] && pair && pair->n == 2 &&
              atoi(pair->items[0]->str) == wb[l] && atoi(pair->items[1]->str) == ab[l];
    }
    CHECK(ok);
    bp_ynode_free(root);
    CHECK(bp_export_write(p, "gguf", out, NULL, 0, &err) < 0);
    CHECK_STR_CONTAINS(err.msg, "unknown export format 'gguf'");
}

static void test_rename(void)
{
    bp_export_layer ls[4] = {{"model.layers.7.self_attn.q_proj", 4, 16, "rtn", "per_channel", 0, 1},
                             {"model.layers.7.mlp.down_proj", 4, 16, "rtn", "per_channel", 0, 1},
                             {"lm_head", 8, 16, "rtn", "per_channel", 0, 1},
                             {"custom.block3.ff", 4, 16, "rtn", "per_channel", 0, 1}};
    bp_export_plan p = {NULL, 4};
    bp_error err;
    p.layers = malloc(sizeof ls);
    for (int i = 0; i < 4; i++) {
        p.layers[i] = ls[i];
        p.layers[i].name = strdup(ls[i].name);
        p.layers[i].quantizer = strdup(ls[i].quantizer);
        p.layers[i].granularity = strdup(ls[i].granularity);
    }
    bp_name_rule rules[] = {{"^custom\\.block([0-9]+)\\.ff$", "blk.\\1.ffn_down.weight"},
                            {"^lm_head$", "my_output"}};
    CHECK(bp_export_rename(&p, rules, 2, 1, &err) == 0);
    CHECK(strcmp(p.layers[0].name, "blk.7.attn_q.weight") == 0);
    CHECK(strcmp(p.layers[1].name, "blk.7.ffn_down.weight") == 0);
    CHECK(strcmp(p.layers[2].name, "my_output") == 0);          /* user rules first */
    CHECK(strcmp(p.layers[3].name, "blk.3.ffn_down.weight") == 0);
    bp_name_rule bad = {"^(oops", "x"};
    CHECK(bp_export_rename(&p, &bad, 1, 0, &err) < 0);
    bp_export_plan_free(&p);
}

/* compress_blocks: GGUF block names of one kind and type share a pattern
 * over their block numbers; every tensor is matched by exactly one token
 * (llama-quantize's regex search), with its own type, and by fewer tokens. */
static void test_llamacpp_compress(void)
{
    enum { NB = 12, KINDS = 3 };
    static const char *const kind[KINDS] = {"attn_q.weight", "ffn_down.weight", "attn_k.weight"};
    bp_export_layer l[NB * KINDS + 2];
    char names_buf[NB * KINDS + 2][64];
    size_t n = 0;
    for (int b = 0; b < NB; b++)
        for (int k = 0; k < KINDS; k++) {
            snprintf(names_buf[n], sizeof names_buf[n], "blk.%d.%s", b, kind[k]);
            l[n] = (bp_export_layer){names_buf[n], (b * 7 + k) % 3 == 0 ? 6 : (b % 2 ? 4 : 3), 16,
                                     "rtn", "per_channel", 0, 1};
            n++;
        }
    l[n++] = (bp_export_layer){"output.weight", 8, 16, "rtn", "per_channel", 0, 1};
    l[n++] = (bp_export_layer){"blk.x.odd", 4, 16, "rtn", "per_channel", 0, 1};
    bp_export_plan p = {l, n};
    char out[700], *text;
    size_t len;
    bp_error err;
    snprintf(out, sizeof out, "%s/compressed.txt", tmp);
    CHECK_MSG(bp_export_write_opts(&p, "llamacpp", out, NULL, 0, 1, &err) == 0, "%s", err.msg);
    CHECK(bp_read_file(out, &text, &len, &err) == 0);
    char *tok[NB * KINDS + 2];
    size_t nt = 0;
    for (char *t = strtok(text, "\n"); t && nt < n; t = strtok(NULL, "\n"))
        tok[nt++] = t;
    printf("compress_blocks: %zu tensors in %zu tokens\n", n, nt);
    CHECK(nt < n / 2);
    int all = 1;
    for (size_t i = 0; i < n; i++) {
        int hits = 0, right = 0;
        for (size_t t = 0; t < nt; t++) {
            char pat[512];
            const char *eq = strrchr(tok[t], '=');
            snprintf(pat, sizeof pat, "%.*s", (int)(eq - tok[t]), tok[t]);
            if (matches(pat, l[i].name) == 1) {
                hits++;
                right = strcmp(eq + 1, bp_ggml_type(l[i].wbits)) == 0;
            }
        }
        all &= hits == 1 && right;
    }
    CHECK(all);
    free(text);
}

int main(void)
{
    const char *base = getenv("BP_TEST_TMP");
    bp_error err;
    snprintf(tmp, sizeof tmp, "%s", base ? base : "/tmp/bp_test_export");
    if (bp_mkdirs(tmp, &err) < 0)
        return 1;
    const char *plan = write_plan();
    bp_export_plan p;
    CHECK_MSG(bp_export_read_plan(plan, &p, &err) == 0, "%s", err.msg);
    CHECK(p.n == NL);
    for (size_t i = 0; i < p.n && i < NL; i++)
        CHECK(strcmp(p.layers[i].name, names[i]) == 0 && p.layers[i].wbits == wb[i] &&
              p.layers[i].abits == ab[i] && p.layers[i].group_size == gs[i]);
    test_llamacpp_bad(&p);
    test_llamacpp_ok(&p);
    test_gptqmodel(&p);
    test_llmcompressor(&p);
    test_json_maps(&p);
    test_rename();
    test_llamacpp_compress();
    bp_export_plan_free(&p);
    return check_done();
}
