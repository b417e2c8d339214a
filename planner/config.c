/*
 * config.c - schema walk over the YAML tree: one function per key, each
 * value read by formats/yamlread (type and range checked, every error with
 * file:line:col and the dotted key path); the defaults, loading and
 * freeing.  What the rest of the program asks of a config is
 * config_query.c.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/bp_file.h"
#include "../common/bp_ggml.h"
#include "../sensitivity/ggml.h"
#include "formats/yamlread.h"

/* ---- sections ---------------------------------------------------------- */

typedef int (*key_fn)(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg);
typedef struct key_def {
    const char *name;
    key_fn fn;
} key_def;

/* Walk a mapping, dispatching each key; unknown and duplicate keys are errors. */
static int walk_map(const bp_yread *c, const bp_ynode *map, const char *section,
                    const key_def *defs, bp_config *cfg)
{
    if (bp_yr_type(c, map, section[0] ? section : "config", BP_Y_MAP) < 0)
        return -1;
    for (size_t i = 0; i < map->n; i++) {
        const bp_ynode *k = map->items[2 * i], *v = map->items[2 * i + 1];
        char key[256];
        snprintf(key, sizeof key, "%s%s%s", section, section[0] ? "." : "", k->str);
        for (size_t j = 0; j < i; j++)
            if (strcmp(map->items[2 * j]->str, k->str) == 0)
                return bp_yr_at(c, k, key, "duplicate key", NULL);
        const key_def *d = defs;
        while (d->name && strcmp(d->name, k->str) != 0)
            d++;
        if (!d->name) {
            char list[512] = "";
            for (const key_def *e = defs; e->name; e++) {
                strncat(list, e == defs ? "" : ", ", sizeof list - strlen(list) - 1);
                strncat(list, e->name, sizeof list - strlen(list) - 1);
            }
            return bp_fail(c->err, "%s:%d:%d: %s: unknown key (expected one of: %s)",
                           c->label, k->line, k->col, key, list);
        }
        if (d->fn(c, v, key, cfg) < 0)
            return -1;
    }
    return 0;
}

static int resolve(const bp_yread *c, const bp_ynode *v, const char *key, char **resolved,
                   char **written)
{
    if (bp_yr_string(c, v, key, written) < 0)
        return -1;
    free(*resolved);
    *resolved = bp_path_join(c->dir, *written, c->err);
    return *resolved ? 0 : -1;
}

static int k_weights_path(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return resolve(c, v, key, &cfg->weights, &cfg->weights_as_written);
}
static int k_calibration(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    if (bp_yr_null(v)) {
        free(cfg->calibration);
        free(cfg->calibration_as_written);
        cfg->calibration = cfg->calibration_as_written = NULL;
        return 0;
    }
    return resolve(c, v, key, &cfg->calibration, &cfg->calibration_as_written);
}
static int k_imatrix(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    if (bp_yr_null(v)) {
        free(cfg->imatrix);
        free(cfg->imatrix_as_written);
        cfg->imatrix = cfg->imatrix_as_written = NULL;
        return 0;
    }
    return resolve(c, v, key, &cfg->imatrix, &cfg->imatrix_as_written);
}
static int k_include(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return bp_yr_strings(c, v, key, &cfg->include, &cfg->n_include);
}
static int k_exclude(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return bp_yr_strings(c, v, key, &cfg->exclude, &cfg->n_exclude);
}
static const key_def model_keys[] = {
    {"weights", k_weights_path}, {"calibration", k_calibration}, {"imatrix", k_imatrix},
    {"include", k_include}, {"exclude", k_exclude}, {NULL, NULL}};
static int k_model(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return walk_map(c, v, key, model_keys, cfg);
}

static int k_wbits(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    cfg->wbits_set = 1;
    return bp_yr_bits(c, v, key, &cfg->wbits, &cfg->n_wbits);
}
static int k_abits(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    cfg->abits_set = 1;
    return bp_yr_bits(c, v, key, &cfg->abits, &cfg->n_abits);
}
/* candidates.types: llama.cpp's types by ggml's names (q4_K, iq4_xs, ...). */
static int k_types(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    if (bp_yr_type(c, v, key, BP_Y_SEQ) < 0)
        return -1;
    if (v->n == 0)
        return bp_yr_at(c, v, key, "expected at least one type", NULL);
    free(cfg->ggml_types);
    cfg->n_ggml_types = 0;
    if (!(cfg->ggml_types = bp_malloc(v->n * sizeof *cfg->ggml_types, c->err)))
        return -1;
    for (size_t i = 0; i < v->n; i++) {
        const bp_ynode *it = v->items[i];
        if (bp_yr_type(c, it, key, BP_Y_SCALAR) < 0)
            return -1;
        int t = bp_ggml_type_parse(it->str);
        if (t < 0 || !bp_ggml_can_quantize(t))
            return bp_yr_at(c, it, key, t < 0 ? "unknown ggml type (expected one of q2_K, q3_K, "
                            "q4_K, q5_K, q6_K, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, iq4_xs, "
                            "f16, bf16, f32)" : "a ggml type bitplan does not quantize (it "
                            "quantizes q2_K..q6_K, q8_0, q4_0, q4_1, q5_0, q5_1, iq4_nl, "
                            "iq4_xs, f16, bf16, f32)", NULL);
        for (size_t j = 0; j < cfg->n_ggml_types; j++)
            if (cfg->ggml_types[j] == t)
                return bp_yr_at(c, it, key, "type listed twice", NULL);
        cfg->ggml_types[cfg->n_ggml_types++] = t;
    }
    return 0;
}
static const key_def candidate_keys[] = {{"wbits", k_wbits}, {"abits", k_abits},
                                         {"types", k_types}, {NULL, NULL}};
static int k_candidates(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return walk_map(c, v, key, candidate_keys, cfg);
}

/* Keys shared by the weights and activations sections; `q` is chosen by
 * the section name in the key path. */
static bp_qspec *qspec_for(const char *key, bp_config *cfg)
{
    return strncmp(key, "weights.", 8) == 0 ? &cfg->weights_q : &cfg->acts_q;
}
/* weights.quantizer: a name, or a list of names to measure them all and let
 * the solver choose per layer. */
static int k_quantizer(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    static const char *const names[] = {"rtn", "gptq", "squant", "erq", NULL};
    int seq = v && v->type == BP_Y_SEQ;
    size_t n = seq ? v->n : 1;
    cfg->quantizer_set = 1;
    if (seq && n == 0)
        return bp_yr_at(c, v, key, "expected at least one quantizer", NULL);
    cfg->n_quantizers = 0;
    for (size_t i = 0; i < n; i++) {
        const bp_ynode *item = seq ? v->items[i] : v;
        int q;
        if (bp_yr_enum(c, item, key, names, &q) < 0)
            return -1;
        for (size_t j = 0; j < cfg->n_quantizers; j++)
            if ((int)cfg->quantizers[j] == q)
                return bp_yr_at(c, item, key, "quantizer listed twice", NULL);
        cfg->quantizers[cfg->n_quantizers++] = (bp_wquantizer)q;
    }
    return 0;
}
static int k_granularity(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    static const char *const wnames[] = {"per_tensor", "per_channel", "per_group", NULL};
    static const char *const anames[] = {"per_tensor", "per_token", NULL};
    static const bp_granularity avals[] = {BP_GRAN_TENSOR, BP_GRAN_TOKEN};
    int w = strncmp(key, "weights.", 8) == 0, i;
    if (bp_yr_enum(c, v, key, w ? wnames : anames, &i) < 0)
        return -1;
    qspec_for(key, cfg)->granularity = w ? (bp_granularity)i : avals[i];
    return 0;
}
static int k_group_size(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    long g;
    if (bp_yr_int(c, v, key, 1, 1L << 30, &g) < 0)
        return -1;
    cfg->weights_q.group_size = g;
    return 0;
}
static int k_symmetric(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return bp_yr_bool(c, v, key, &qspec_for(key, cfg)->symmetric);
}
/* "erq" is ERQ's weight grid under weights, its activation grid under
 * activations; a range given here is kept for ERQ too. */
static int k_range(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    static const char *const names[] = {"minmax", "mse", "percentile", "erq", NULL};
    int i;
    if (bp_yr_enum(c, v, key, names, &i) < 0)
        return -1;
    bp_qspec *q = qspec_for(key, cfg);
    q->range = i < 3 ? (bp_range)i : q == &cfg->weights_q ? BP_RANGE_ERQ_W : BP_RANGE_ERQ_A;
    *(q == &cfg->weights_q ? &cfg->weights_range_set : &cfg->acts_range_set) = 1;
    return 0;
}
/* weights.scales: fp16 (what the consumers store, and counted so) or fp32. */
static int k_scales(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    static const char *const names[] = {"fp32", "fp16", NULL};
    return bp_yr_enum(c, v, key, names, &cfg->weights_q.fp16_scales);
}
static int k_mse_norm(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return bp_yr_double(c, v, key, 1.0, 4.0, &qspec_for(key, cfg)->mse_norm);
}
static int k_block_size(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    long b;
    if (bp_yr_int(c, v, key, 1, 1L << 20, &b) < 0)
        return -1;
    cfg->gptq.block_size = b;
    return 0;
}
static int k_damp(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return bp_yr_double(c, v, key, 1e-6, 10.0, &cfg->gptq.damp);
}
static int k_act_order(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return bp_yr_bool(c, v, key, &cfg->gptq.act_order);
}
static int k_squant_mode(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    static const char *const names[] = {"e", "ek", "ec", "ekc", NULL};
    return bp_yr_enum(c, v, key, names, &cfg->squant_mode);
}
static const key_def squant_keys[] = {{"mode", k_squant_mode}, {NULL, NULL}};
static int k_squant(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return walk_map(c, v, key, squant_keys, cfg);
}
static int k_lambda(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    size_t n = strlen(key);
    double *out = key[n - 1] == '1' ? &cfg->erq.lambda1 : &cfg->erq.lambda2;
    if (bp_yr_double(c, v, key, 0.0, 1e12, out) < 0)
        return -1;
    return *out > 0 ? 0 : bp_yr_at(c, v, key, "expected a positive number", NULL);
}
static int k_max_flips(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    long f;
    if (bp_yr_int(c, v, key, 0, 1000000, &f) < 0)
        return -1;
    cfg->erq.max_flips = (int)f;
    return 0;
}
static const key_def erq_keys[] = {
    {"lambda1", k_lambda}, {"lambda2", k_lambda}, {"max_flips", k_max_flips}, {NULL, NULL}};
static int k_erq(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return walk_map(c, v, key, erq_keys, cfg);
}
static int k_gptq_precision(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    static const char *const names[] = {"single", "double", NULL};
    int i;
    if (bp_yr_enum(c, v, key, names, &i) < 0)
        return -1;
    cfg->gptq.precision = i == 0 ? BP_GPTQ_SINGLE : BP_GPTQ_DOUBLE;
    return 0;
}
static const key_def gptq_keys[] = {{"block_size", k_block_size}, {"damp", k_damp},
                                    {"act_order", k_act_order}, {"precision", k_gptq_precision},
                                    {NULL, NULL}};
static int k_gptq(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return walk_map(c, v, key, gptq_keys, cfg);
}
static int k_cross_fit(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    static const char *const names[] = {"false", "true", "auto", NULL};
    int i;
    if (bp_yr_enum(c, v, key, names, &i) < 0)
        return -1;
    cfg->cross_fit = i;               /* BP_XFIT_OFF, _ON, _AUTO in that order */
    return 0;
}
static const key_def weight_keys[] = {
    {"quantizer", k_quantizer}, {"granularity", k_granularity}, {"gptq", k_gptq},
    {"squant", k_squant}, {"erq", k_erq}, {"cross_fit", k_cross_fit},
    {"group_size", k_group_size}, {"symmetric", k_symmetric},
    {"range", k_range}, {"mse_norm", k_mse_norm}, {"scales", k_scales}, {NULL, NULL}};
static const char *const act_kinds[] = {"uniform", "log2", "ptf", NULL};
static int k_act_quantizer(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    int i;
    if (bp_yr_enum(c, v, key, act_kinds, &i) < 0)
        return -1;
    cfg->acts_q.kind = (bp_qkind)i;
    return 0;
}

/* One key of a per_layer rule: pattern, quantizer, granularity, range. */
static int rule_key(const bp_yread *c, const char *kk, const bp_ynode *kn, const bp_ynode *vn,
                    void *ctx)
{
    static const char *const grans[] = {"per_tensor", "per_token", NULL};
    static const char *const ranges[] = {"minmax", "mse", "percentile", "erq", NULL};
    static const bp_range rvals[] = {BP_RANGE_MINMAX, BP_RANGE_MSE, BP_RANGE_PERCENTILE,
                                     BP_RANGE_ERQ_A};
    static const bp_granularity gvals[] = {BP_GRAN_TENSOR, BP_GRAN_TOKEN};
    bp_act_rule *r = ctx;
    int i;
    if (strcmp(kn->str, "pattern") == 0)
        return bp_yr_string(c, vn, kk, &r->pattern);
    if (strcmp(kn->str, "quantizer") == 0)
        return bp_yr_enum(c, vn, kk, act_kinds, &r->kind);
    if (strcmp(kn->str, "range") == 0) {
        if (bp_yr_enum(c, vn, kk, ranges, &i) < 0)
            return -1;
        r->range = (int)rvals[i];
        return 0;
    }
    if (strcmp(kn->str, "granularity") == 0) {
        if (bp_yr_enum(c, vn, kk, grans, &i) < 0)
            return -1;
        r->granularity = (int)gvals[i];
        return 0;
    }
    return bp_yr_at(c, kn, kk, "unknown key (expected one of: pattern, quantizer, granularity, "
                    "range)", NULL);
}

static int act_rule(const bp_yread *c, const bp_ynode *m, const char *k, bp_act_rule *r)
{
    *r = (bp_act_rule){NULL, -1, -1, -1};
    if (bp_yr_walk_item(c, m, k, rule_key, r) < 0)
        return -1;
    if (!r->pattern)
        return bp_yr_at(c, m, k, "missing key 'pattern'", NULL);
    return 0;
}

static int k_act_rules(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    if (bp_yr_type(c, v, key, BP_Y_SEQ) < 0)
        return -1;
    cfg->act_rules = bp_calloc(v->n ? v->n : 1, sizeof *cfg->act_rules, c->err);
    if (!cfg->act_rules)
        return -1;
    for (size_t i = 0; i < v->n; i++) {
        char k[80];
        snprintf(k, sizeof k, "%s[%zu]", key, i);
        cfg->n_act_rules++;
        if (act_rule(c, v->items[i], k, &cfg->act_rules[i]) < 0)
            return -1;
    }
    return 0;
}

static const key_def act_keys[] = {
    {"quantizer", k_act_quantizer}, {"per_layer", k_act_rules},
    {"granularity", k_granularity}, {"symmetric", k_symmetric},
    {"range", k_range}, {"mse_norm", k_mse_norm}, {NULL, NULL}};
static int k_weights(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return walk_map(c, v, key, weight_keys, cfg);
}
static int k_activations(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return walk_map(c, v, key, act_keys, cfg);
}

static int k_precision(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    static const char *const names[] = {"single", "double", NULL};
    int i;
    if (bp_yr_enum(c, v, key, names, &i) < 0)
        return -1;
    cfg->precision = i == 0 ? BP_PREC_SINGLE : BP_PREC_DOUBLE;
    return 0;
}
static int k_metric(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    static const char *names[BP_METRIC_COUNT + 2];
    int i;
    for (i = 0; i < BP_METRIC_COUNT; i++)
        names[i] = bp_metric_name((bp_metric)i);
    names[i] = "auto";
    names[i + 1] = NULL;
    if (bp_yr_enum(c, v, key, names, &i) < 0)
        return -1;
    cfg->metric_auto = i == BP_METRIC_COUNT;
    if (!cfg->metric_auto)
        cfg->metric = (bp_metric)i;
    return 0;
}

static int k_metric_scales(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return resolve(c, v, key, &cfg->metric_scales, &cfg->metric_scales_as_written);
}

static int k_noise(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    static const char *const names[] = {"shrink", "ignore", NULL};
    int i;
    if (bp_yr_enum(c, v, key, names, &i) < 0)
        return -1;
    cfg->noise_shrink = i == 0;
    return 0;
}

static int k_avg_bits(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    if (bp_yr_double(c, v, key, 0.0, 32.0, &cfg->budget.avg_bits) < 0)
        return -1;
    return cfg->budget.avg_bits > 0 ? 0 : bp_yr_at(c, v, key, "expected a positive number", NULL);
}
static int k_max_bytes(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    if (bp_yr_double(c, v, key, 0.0, 1e18, &cfg->budget.max_bytes) < 0)
        return -1;
    return cfg->budget.max_bytes > 0 ? 0 : bp_yr_at(c, v, key, "expected a positive number", NULL);
}
static int k_max_error(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return bp_yr_double(c, v, key, 0.0, 1e300, &cfg->budget.max_error);
}
static int k_max_file_bytes(const bp_yread *c, const bp_ynode *v, const char *key,
                            bp_config *cfg)
{
    if (bp_yr_double(c, v, key, 0.0, 1e18, &cfg->budget.max_file_bytes) < 0)
        return -1;
    return cfg->budget.max_file_bytes > 0 ? 0
           : bp_yr_at(c, v, key, "expected a positive number of bytes", NULL);
}
/* budget.max_bytes_of: the size of another file (a GGUF of a llama.cpp mix). */
static int k_max_bytes_of(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    char *path = NULL, *written = NULL;
    int rc = resolve(c, v, key, &path, &written);
    struct stat sb;
    if (rc == 0 && (stat(path, &sb) != 0 || !S_ISREG(sb.st_mode) || sb.st_size <= 0))
        rc = bp_yr_at(c, v, key, "expected an existing, non-empty file (its size becomes "
                      "budget.max_file_bytes)", NULL);
    if (rc == 0)
        cfg->budget.max_file_bytes = (double)sb.st_size;
    free(path);
    free(written);
    return rc;
}
static int k_bpw(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    if (bp_yr_double(c, v, key, 0.0, 64.0, &cfg->budget.bpw) < 0)
        return -1;
    return cfg->budget.bpw > 0 ? 0 : bp_yr_at(c, v, key, "expected a positive number", NULL);
}
static int k_max_bops(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    if (bp_yr_double(c, v, key, 0.0, 1e30, &cfg->budget.max_bops) < 0)
        return -1;
    return cfg->budget.max_bops > 0 ? 0 : bp_yr_at(c, v, key, "expected a positive number", NULL);
}
static int k_max_latency(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    if (bp_yr_double(c, v, key, 0.0, 1e30, &cfg->budget.max_latency) < 0)
        return -1;
    return cfg->budget.max_latency > 0 ? 0
                                       : bp_yr_at(c, v, key, "expected a positive number", NULL);
}
static int k_latency_table(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    char *written = NULL;
    int rc = resolve(c, v, key, &cfg->latency_table, &written);
    free(written);
    return rc;
}
static int k_minimize(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    static const char *const names[] = {"error", "size", "bops", "latency", NULL};
    int i;
    if (bp_yr_enum(c, v, key, names, &i) < 0)
        return -1;
    cfg->budget.minimize = BP_MIN_ERROR + i;
    return 0;
}
static const key_def budget_keys[] = {
    {"avg_bits", k_avg_bits}, {"max_bytes", k_max_bytes}, {"max_error", k_max_error},
    {"max_bops", k_max_bops}, {"max_latency", k_max_latency},
    {"max_file_bytes", k_max_file_bytes}, {"max_bytes_of", k_max_bytes_of}, {"bpw", k_bpw},
    {"latency_table", k_latency_table}, {"minimize", k_minimize}, {NULL, NULL}};
static int k_budget(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return walk_map(c, v, key, budget_keys, cfg);
}

/* One key of a pin: pattern, wbits, abits. */
static int pin_key(const bp_yread *c, const char *kk, const bp_ynode *kn, const bp_ynode *vn,
                   void *ctx)
{
    bp_pin *p = ctx;
    long bits;
    if (strcmp(kn->str, "pattern") == 0)
        return bp_yr_string(c, vn, kk, &p->pattern);
    if (strcmp(kn->str, "wbits") == 0 || strcmp(kn->str, "abits") == 0) {
        if (bp_yr_int(c, vn, kk, 2, 16, &bits) < 0)
            return -1;
        *(kn->str[0] == 'w' ? &p->wbits : &p->abits) = (int)bits;
        return 0;
    }
    return bp_yr_at(c, kn, kk, "unknown key (expected one of: pattern, wbits, abits)", NULL);
}

/* pins: a list of {pattern, wbits, abits}; at least one of the widths. */
static int k_pins(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    if (bp_yr_type(c, v, key, BP_Y_SEQ) < 0)
        return -1;
    cfg->pins = bp_calloc(v->n ? v->n : 1, sizeof *cfg->pins, c->err);
    if (!cfg->pins)
        return -1;
    for (size_t i = 0; i < v->n; i++) {
        const bp_ynode *m = v->items[i];
        bp_pin *p = &cfg->pins[cfg->n_pins++];
        char k[64];
        snprintf(k, sizeof k, "pins[%zu]", i);
        if (bp_yr_walk_item(c, m, k, pin_key, p) < 0)
            return -1;
        if (!p->pattern)
            return bp_yr_at(c, m, k, "missing key 'pattern'", NULL);
        if (!p->wbits && !p->abits)
            return bp_yr_at(c, m, k, "expected wbits and/or abits to pin", NULL);
    }
    return 0;
}

/* One key of a tie: pattern (a regular expression), wbits, abits. */
static int tie_key(const bp_yread *c, const char *kk, const bp_ynode *kn, const bp_ynode *vn,
                   void *ctx)
{
    bp_tie *t = ctx;
    if (strcmp(kn->str, "pattern") == 0)
        return bp_yr_string(c, vn, kk, &t->regex);
    if (strcmp(kn->str, "wbits") == 0)
        return bp_yr_bool(c, vn, kk, &t->wbits);
    if (strcmp(kn->str, "abits") == 0)
        return bp_yr_bool(c, vn, kk, &t->abits);
    return bp_yr_at(c, kn, kk, "unknown key (expected one of: pattern, wbits, abits)", NULL);
}

/* One key of a rename rule: from (regex), to (replacement with \1..\9). */
static int rename_key(const bp_yread *c, const char *kk, const bp_ynode *kn, const bp_ynode *vn,
                      void *ctx)
{
    bp_name_rule *r = ctx;
    char *s = NULL;
    if (strcmp(kn->str, "from") != 0 && strcmp(kn->str, "to") != 0)
        return bp_yr_at(c, kn, kk, "unknown key (expected one of: from, to)", NULL);
    if (bp_yr_string(c, vn, kk, &s) < 0)
        return -1;
    *(kn->str[0] == 'f' ? &r->from : &r->to) = s;
    return 0;
}
static int k_rename(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    if (bp_yr_type(c, v, key, BP_Y_SEQ) < 0)
        return -1;
    cfg->rename = bp_calloc(v->n ? v->n : 1, sizeof *cfg->rename, c->err);
    if (!cfg->rename)
        return -1;
    for (size_t i = 0; i < v->n; i++) {
        char k[64];
        snprintf(k, sizeof k, "%s[%zu]", key, i);
        cfg->n_rename++;
        if (bp_yr_walk_item(c, v->items[i], k, rename_key, &cfg->rename[i]) < 0)
            return -1;
        if (!cfg->rename[i].from || !cfg->rename[i].to)
            return bp_yr_at(c, v->items[i], k, "expected keys 'from' and 'to'", NULL);
    }
    return 0;
}
static int k_llama_names(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return bp_yr_bool(c, v, key, &cfg->llama_names);
}
static int k_compress(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return bp_yr_bool(c, v, key, &cfg->llama_compress);
}
/* export.ggml_types: {"4": q4_0, "4/32": q4_0, ...}: bits, or bits/group. */
static int k_ggml_types(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    if (bp_yr_type(c, v, key, BP_Y_MAP) < 0)
        return -1;
    cfg->ggml = bp_calloc(v->n ? v->n : 1, sizeof *cfg->ggml, c->err);
    if (!cfg->ggml)
        return -1;
    for (size_t i = 0; i < v->n; i++) {
        const bp_ynode *kn = v->items[2 * i], *vn = v->items[2 * i + 1];
        char kk[128], *end, *type = NULL;
        snprintf(kk, sizeof kk, "%s.%s", key, kn->str);
        long b = strtol(kn->str, &end, 10), g = -1;
        if (*end == '/')
            g = strtol(end + 1, &end, 10);
        if (*end || b < 1 || b > 16 || (g < 0 && strchr(kn->str, '/')))
            return bp_yr_at(c, kn, kk, "expected a key BITS or BITS/GROUP (GROUP 0 = per channel)",
                            NULL);
        if (bp_yr_string(c, vn, kk, &type) < 0)
            return -1;
        cfg->ggml[cfg->n_ggml++] = (bp_ggml_rule){(int)b, g == 0 ? -2 : g, type};
    }
    return 0;
}
static const key_def export_keys[] = {
    {"llama_names", k_llama_names}, {"rename", k_rename}, {"ggml_types", k_ggml_types},
    {"compress_blocks", k_compress}, {NULL, NULL}};
static int k_export(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return walk_map(c, v, key, export_keys, cfg);
}

/* One key of an allowed rule: pattern, wbits (list), abits (list). */
static int allow_key(const bp_yread *c, const char *kk, const bp_ynode *kn, const bp_ynode *vn,
                     void *ctx)
{
    bp_allow *a = ctx;
    if (strcmp(kn->str, "pattern") == 0)
        return bp_yr_string(c, vn, kk, &a->pattern);
    if (strcmp(kn->str, "wbits") == 0)
        return bp_yr_bits(c, vn, kk, &a->wbits, &a->n_wbits);
    if (strcmp(kn->str, "abits") == 0)
        return bp_yr_bits(c, vn, kk, &a->abits, &a->n_abits);
    return bp_yr_at(c, kn, kk, "unknown key (expected one of: pattern, wbits, abits)", NULL);
}

/* allowed: a list of {pattern, wbits: [...], abits: [...]}. */
static int k_allow(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    if (bp_yr_type(c, v, key, BP_Y_SEQ) < 0)
        return -1;
    cfg->allow = bp_calloc(v->n ? v->n : 1, sizeof *cfg->allow, c->err);
    if (!cfg->allow)
        return -1;
    for (size_t i = 0; i < v->n; i++) {
        bp_allow *a = &cfg->allow[cfg->n_allow++];
        char k[64];
        snprintf(k, sizeof k, "allowed[%zu]", i);
        if (bp_yr_walk_item(c, v->items[i], k, allow_key, a) < 0)
            return -1;
        if (!a->pattern)
            return bp_yr_at(c, v->items[i], k, "missing key 'pattern'", NULL);
        if (!a->n_wbits && !a->n_abits)
            return bp_yr_at(c, v->items[i], k, "expected a wbits and/or abits list", NULL);
    }
    return 0;
}

/* ties: a list of {pattern, wbits, abits}; wbits defaults to true. */
static int k_ties(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    if (bp_yr_type(c, v, key, BP_Y_SEQ) < 0)
        return -1;
    cfg->ties = bp_calloc(v->n ? v->n : 1, sizeof *cfg->ties, c->err);
    if (!cfg->ties)
        return -1;
    for (size_t i = 0; i < v->n; i++) {
        bp_tie *t = &cfg->ties[cfg->n_ties++];
        char k[64];
        *t = (bp_tie){NULL, 1, 0};
        snprintf(k, sizeof k, "ties[%zu]", i);
        if (bp_yr_walk_item(c, v->items[i], k, tie_key, t) < 0)
            return -1;
        if (!t->regex)
            return bp_yr_at(c, v->items[i], k, "missing key 'pattern'", NULL);
        if (!t->wbits && !t->abits)
            return bp_yr_at(c, v->items[i], k, "expected wbits and/or abits to tie", NULL);
    }
    return 0;
}

static int k_time_limit(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    if (bp_yr_double(c, v, key, 0.0, 1e7, &cfg->time_limit) < 0)
        return -1;
    return cfg->time_limit > 0
               ? 0
               : bp_yr_at(c, v, key, "expected a positive number of seconds", NULL);
}
static int k_mip_gap(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return bp_yr_double(c, v, key, 0.0, 1.0, &cfg->mip_gap);
}
static const key_def solver_keys[] = {
    {"time_limit", k_time_limit}, {"mip_gap", k_mip_gap}, {NULL, NULL}};
static int k_solver(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return walk_map(c, v, key, solver_keys, cfg);
}

static int k_out_dir(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    char *written = NULL;
    int rc = resolve(c, v, key, &cfg->out_dir, &written);
    free(written);
    return rc;
}
/* A plain file name: the outputs live inside output.dir. */
static int get_file_name(const bp_yread *c, const bp_ynode *v, const char *key, char **out)
{
    if (bp_yr_string(c, v, key, out) < 0)
        return -1;
    if (!(*out)[0] || strchr(*out, '/') || strcmp(*out, ".") == 0 || strcmp(*out, "..") == 0)
        return bp_yr_at(c, v, key, "expected a file name without '/' (it is placed in output.dir)",
                        NULL);
    return 0;
}
static int k_plan(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return get_file_name(c, v, key, &cfg->plan_name);
}
static int k_table(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return get_file_name(c, v, key, &cfg->table_name);
}
static int k_formats(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    /* yaml, json, then the exports in bp_export_names order */
    const char *names[2 + BP_EXPORT_COUNT + 1] = {"yaml", "json"};
    for (int f = 0; f < BP_EXPORT_COUNT; f++)
        names[2 + f] = bp_export_names[f];
    names[2 + BP_EXPORT_COUNT] = NULL;
    if (bp_yr_type(c, v, key, BP_Y_SEQ) < 0)
        return -1;
    if (v->n == 0)
        return bp_yr_at(c, v, key, "expected at least one format", NULL);
    cfg->write_yaml = cfg->write_json = 0;
    cfg->exports = 0;
    for (size_t i = 0; i < v->n; i++) {
        int f;
        if (v->items[i]->type == BP_Y_SCALAR && !strcmp(v->items[i]->str, "hawq")) {
            bp_error why;
            bp_export_unknown("hawq", &why);
            return bp_yr_at(c, v->items[i], key, why.msg, NULL);
        }
        if (bp_yr_enum(c, v->items[i], key, names, &f) < 0)
            return -1;
        if (f < 2)
            *(f == 0 ? &cfg->write_yaml : &cfg->write_json) = 1;
        else
            cfg->exports |= 1u << (f - 2);
    }
    if (!cfg->write_yaml && !cfg->write_json)
        cfg->write_yaml = 1;         /* exports are made from the YAML plan */
    return 0;
}
static int k_weights_out(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    free(cfg->weights_out);
    cfg->weights_out = NULL;
    return get_file_name(c, v, key, &cfg->weights_out);
}
static int k_dequantized(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return bp_yr_bool(c, v, key, &cfg->dequantized);
}
static const key_def output_keys[] = {
    {"weights", k_weights_out}, {"dequantized", k_dequantized},
    {"dir", k_out_dir}, {"plan", k_plan}, {"table", k_table}, {"formats", k_formats},
    {NULL, NULL}};
static int k_output(const bp_yread *c, const bp_ynode *v, const char *key, bp_config *cfg)
{
    return walk_map(c, v, key, output_keys, cfg);
}

static const key_def top_keys[] = {
    {"model", k_model}, {"candidates", k_candidates}, {"weights", k_weights},
    {"activations", k_activations}, {"metric", k_metric}, {"metric_scales", k_metric_scales},
    {"noise", k_noise},
    {"precision", k_precision}, {"budget", k_budget},
    {"pins", k_pins}, {"ties", k_ties}, {"allowed", k_allow}, {"export", k_export},
    {"solver", k_solver}, {"output", k_output}, {NULL, NULL}};

/* ---- defaults and loading ---------------------------------------------- */

static int set_defaults(bp_config *c, const char *dir, bp_error *err)
{
    static const int wbits[] = {2, 3, 4, 6, 8};
    memset(c, 0, sizeof *c);
    c->include = bp_calloc(1, sizeof *c->include, err);
    c->wbits = bp_malloc(sizeof wbits, err);
    c->abits = bp_malloc(sizeof(int), err);
    c->out_dir = bp_path_join(dir, "out", err);
    c->plan_name = bp_strdup("plan.yaml", err);
    c->table_name = bp_strdup("sensitivity.csv", err);
    if (!c->include || !c->wbits || !c->abits || !c->out_dir || !c->plan_name ||
        !c->table_name || !(c->include[0] = bp_strdup("*", err)))
        return -1;
    c->n_include = 1;
    memcpy(c->wbits, wbits, sizeof wbits);
    c->n_wbits = 5;
    c->abits[0] = 16;
    c->n_abits = 1;
    c->quantizers[0] = BP_WQ_RTN;
    c->n_quantizers = 1;
    bp_gptq_opts_init(&c->gptq);
    c->squant_mode = BP_SQ_K | BP_SQ_C;
    bp_erq_opts_init(&c->erq);
    c->cross_fit = BP_XFIT_AUTO;
    c->weights_q = (bp_qspec){.granularity = BP_GRAN_CHANNEL, .group_size = 128, .symmetric = 1,
                              .range = BP_RANGE_MINMAX, .mse_norm = 2.0, .kind = BP_AQ_UNIFORM,
                              .fp16_scales = 1};
    c->acts_q = (bp_qspec){.granularity = BP_GRAN_TENSOR, .range = BP_RANGE_MINMAX,
                           .mse_norm = 2.0, .kind = BP_AQ_UNIFORM};
    c->metric = BP_METRIC_RELATIVE;
    c->precision = BP_PREC_SINGLE;
    c->metric_auto = 1;
    c->noise_shrink = 1;
    c->budget.max_error = -1.0;
    c->time_limit = 60.0;
    c->write_yaml = 1;
    return 0;
}

static int check_pins(const bp_yread *c, const bp_config *cfg)
{
    for (size_t i = 0; i < cfg->n_pins; i++) {
        const bp_pin *p = &cfg->pins[i];
        int okw = !p->wbits, oka = !p->abits;
        for (size_t j = 0; j < cfg->n_wbits; j++)
            okw |= cfg->wbits[j] == p->wbits;
        for (size_t j = 0; j < cfg->n_abits; j++)
            oka |= cfg->abits[j] == p->abits;
        if (!okw || !oka)
            return bp_fail(c->err, "%s: pins[%zu] ('%s'): %s %d is not among "
                           "candidates.%s", c->label, i, p->pattern,
                           okw ? "abits" : "wbits", okw ? p->abits : p->wbits,
                           okw ? "abits" : "wbits");
    }
    return 0;
}

/* A type's nominal width: its bits per weight rounded down (16 for the
 * float types: unquantized). */
static int ggml_nominal_bits(int type)
{
    int64_t blck;
    size_t bytes;
    if (!bp_ggml_is_quantized(type))
        return BP_BITS_FLOAT;
    bp_ggml_block(type, &blck, &bytes);
    return (int)(bytes * 8 / (size_t)blck);
}

/* candidates.types: the candidates are llama.cpp's types, measured with its
 * quantizers, activations float. */
static int finish_types(const bp_yread *c, bp_config *cfg)
{
    if (!cfg->n_ggml_types)
        return 0;
    if (cfg->wbits_set)
        return bp_fail(c->err, "%s: candidates.types and candidates.wbits both list the "
                       "candidates; keep one (types are llama.cpp's, wbits bitplan's own "
                       "integer widths)", c->label);
    if (cfg->quantizer_set)
        return bp_fail(c->err, "%s: weights.quantizer does not apply to candidates.types "
                       "(each type is quantized by llama.cpp's own algorithm); remove it",
                       c->label);
    if (cfg->abits_set && (cfg->n_abits != 1 || cfg->abits[0] != BP_BITS_FLOAT))
        return bp_fail(c->err, "%s: llama.cpp's types keep activations in float: "
                       "candidates.abits must be [16] or left out", c->label);
    if (cfg->weights_out)
        return bp_fail(c->err, "%s: output.weights is bitplan's own quantized-weights format; "
                       "with candidates.types llama-quantize writes the quantized GGUF from "
                       "the exported type file (remove output.weights)", c->label);
    int *w = bp_malloc(cfg->n_ggml_types * sizeof *w, c->err);
    if (!w)
        return -1;
    for (size_t i = 0; i < cfg->n_ggml_types; i++)
        w[i] = ggml_nominal_bits(cfg->ggml_types[i]);
    free(cfg->wbits);
    cfg->wbits = w;
    cfg->n_wbits = cfg->n_ggml_types;
    cfg->quantizers[0] = BP_WQ_GGML;
    cfg->n_quantizers = 1;
    return 0;
}

int bp_config_parse(bp_config *c, const char *text, size_t size, const char *label,
                    const char *dir, bp_error *err)
{
    bp_ynode *root = NULL;
    bp_yread ctx = {label, dir, err};
    if (set_defaults(c, dir, err) < 0)
        goto fail;
    if (bp_yaml_parse(text, size, label, &root, err) < 0)
        goto fail;
    if (!root) {
        bp_fail(err, "%s: the config is empty (expected at least model.weights)", label);
        goto fail;
    }
    if (walk_map(&ctx, root, "", top_keys, c) < 0)
        goto fail;
    if (!c->weights) {
        bp_fail(err, "%s: missing required key model.weights", label);
        goto fail;
    }
    if (finish_types(&ctx, c) < 0 || check_pins(&ctx, c) < 0 ||
        bp_config_check_outputs(label, c, err) < 0)
        goto fail;
    bp_ynode_free(root);
    c->path = bp_strdup(label, err);
    return c->path ? 0 : (bp_config_free(c), -1);
fail:
    bp_ynode_free(root);
    bp_config_free(c);
    return -1;
}

int bp_config_load(bp_config *c, const char *path, bp_error *err)
{
    char *text, *dir;
    size_t size;
    memset(c, 0, sizeof *c);
    if (bp_read_file_max(path, BP_CONFIG_MAX, "a config (YAML)", &text, &size, err) < 0)
        return -1;
    if (!(dir = bp_path_dir(path, err))) {
        free(text);
        return -1;
    }
    int rc = bp_config_parse(c, text, size, path, dir, err);
    free(text);
    free(dir);
    return rc;
}

static void free_list(char **list, size_t n)
{
    for (size_t i = 0; list && i < n; i++)
        free(list[i]);
    free(list);
}

void bp_config_free(bp_config *c)
{
    free(c->path);
    free(c->weights);
    free(c->weights_as_written);
    free(c->calibration);
    free(c->calibration_as_written);
    free(c->imatrix);
    free(c->imatrix_as_written);
    free(c->ggml_types);
    free_list(c->include, c->n_include);
    free_list(c->exclude, c->n_exclude);
    free(c->wbits);
    free(c->abits);
    for (size_t i = 0; c->pins && i < c->n_pins; i++)
        free(c->pins[i].pattern);
    free(c->pins);
    for (size_t i = 0; c->allow && i < c->n_allow; i++) {
        free(c->allow[i].pattern);
        free(c->allow[i].wbits);
        free(c->allow[i].abits);
    }
    free(c->allow);
    free(c->latency_table);
    free(c->metric_scales);
    free(c->metric_scales_as_written);
    for (size_t i = 0; c->rename && i < c->n_rename; i++) {
        free((char *)c->rename[i].from);
        free((char *)c->rename[i].to);
    }
    free(c->rename);
    for (size_t i = 0; c->ggml && i < c->n_ggml; i++)
        free((char *)c->ggml[i].type);
    free(c->ggml);
    for (size_t i = 0; c->ties && i < c->n_ties; i++)
        free(c->ties[i].regex);
    free(c->ties);
    for (size_t i = 0; c->act_rules && i < c->n_act_rules; i++)
        free(c->act_rules[i].pattern);
    free(c->act_rules);
    free(c->out_dir);
    free(c->plan_name);
    free(c->table_name);
    free(c->weights_out);
    memset(c, 0, sizeof *c);
}
