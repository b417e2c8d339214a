/*
 * config_query.c - what the rest of the program asks of a loaded config:
 * the names of the output set in output.dir (and that no two coincide),
 * the activation quantizer of a layer, whether a budget is set.
 */
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

char *bp_config_json_name(const char *plan)
{
    size_t n = strlen(plan);
    size_t stem = n > 5 && !strcmp(plan + n - 5, ".yaml") ? n - 5
                  : n > 4 && !strcmp(plan + n - 4, ".yml") ? n - 4 : n;
    char *out = malloc(stem + 6);
    if (out)
        snprintf(out, stem + 6, "%.*s.json", (int)stem, plan);
    return out;
}

static int add_name(char **names, size_t *n, const char *fmt, const char *a, const char *b)
{
    size_t len = strlen(a) + (b ? strlen(b) : 0) + 16;
    if (*n + 1 >= BP_OUTPUT_NAMES_MAX || !(names[*n] = malloc(len)))
        return -1;
    snprintf(names[*n], len, fmt, a, b ? b : "");
    names[++*n] = NULL;
    return 0;
}

size_t bp_config_output_names(const bp_config *c, char **names)
{
    size_t n = 0;
    names[0] = NULL;
    add_name(names, &n, "%s%s", c->plan_name, NULL);
    if ((names[n] = bp_config_json_name(c->plan_name)))
        names[++n] = NULL;
    add_name(names, &n, "%s%s", c->table_name, NULL);
    add_name(names, &n, "%s%s", c->table_name, ".key");
    add_name(names, &n, "%s%s", c->table_name, ".partial");
    for (int f = 0; f < BP_EXPORT_COUNT; f++) {
        if (!(c->exports & (1u << f)))
            continue;
        add_name(names, &n, "%s%s", bp_export_files[f], NULL);
        if (f == 0) {
            add_name(names, &n, "%s%s", bp_export_files[f], ".args");
            add_name(names, &n, "%s%s", bp_export_files[f], ".cmd");
        }
    }
    if (c->weights_out)
        add_name(names, &n, "%s%s", c->weights_out, NULL);
    static const char *const fixed[] = {"frontier.csv", "pareto.csv", "frontier.svg"};
    for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++)
        add_name(names, &n, "%s%s", fixed[i], NULL);
    return n;
}

void bp_config_output_names_free(char **names)
{
    for (size_t i = 0; names[i]; i++)
        free(names[i]);
    names[0] = NULL;
}

int bp_config_check_outputs(const char *label, const bp_config *c, bp_error *err)
{
    size_t n = strlen(c->plan_name);
    if (n > 5 && !strcmp(c->plan_name + n - 5, ".json"))
        return bp_fail(err, "%s: output.plan: '%s' ends in .json, but the plan file is YAML "
                       "(the JSON plan is written beside it); name it '%.*s.yaml'", label,
                       c->plan_name, (int)(n - 5), c->plan_name);
    char *names[BP_OUTPUT_NAMES_MAX + 1];
    bp_config_output_names(c, names);
    /* who owns each name, for the message */
    const char *owner[] = {"output.plan", "the JSON plan", "output.table", "the table's key",
                           "the table's journal"};
    int rc = 0;
    for (size_t i = 0; rc == 0 && names[i]; i++)
        for (size_t j = i + 1; rc == 0 && names[j]; j++)
            if (strcmp(names[i], names[j]) == 0) {
                const char *a = i < 5 ? owner[i] : "an export";
                const char *b = c->weights_out && !strcmp(names[j], c->weights_out)
                                    ? "output.weights"
                                : j < 5 ? owner[j] : "an export or sweep output";
                if (i >= 5 && c->weights_out && !strcmp(names[i], c->weights_out))
                    a = "output.weights";
                rc = bp_fail(err, "%s: %s and %s are both '%s' in output.dir; give them "
                             "different names", label, a, b, names[i]);
            }
    for (size_t i = 0; rc == 0 && names[i]; i++)
        if (!strcmp(names[i], ".bitplan-sets") ||
            !strcmp(names[i], ".bitplan-hashes"))
            rc = bp_fail(err, "%s: '%s' is bitplan's own file in output.dir; choose another "
                         "name", label, names[i]);
    bp_config_output_names_free(names);
    return rc;
}

bp_qspec bp_config_acts_for(const bp_config *c, const char *layer)
{
    bp_qspec q = c->acts_q;
    for (size_t i = 0; i < c->n_act_rules; i++) {
        const bp_act_rule *r = &c->act_rules[i];
        if (fnmatch(r->pattern, layer, 0) != 0)
            continue;
        if (r->kind >= 0)
            q.kind = (bp_qkind)r->kind;
        if (r->granularity >= 0)
            q.granularity = (bp_granularity)r->granularity;
        if (r->range >= 0)
            q.range = (bp_range)r->range;
        break;
    }
    return q;
}

bp_qspec bp_config_acts_for_quantizer(const bp_config *c, const char *layer, bp_wquantizer q)
{
    bp_qspec a = bp_config_acts_for(c, layer);
    int rule_range = 0;
    for (size_t i = 0; i < c->n_act_rules; i++)
        if (fnmatch(c->act_rules[i].pattern, layer, 0) == 0) {
            rule_range = c->act_rules[i].range >= 0;
            break;
        }
    if (q == BP_WQ_ERQ && !c->acts_range_set && !rule_range && a.kind == BP_AQ_UNIFORM) {
        a.range = BP_RANGE_ERQ_A;
        a.granularity = BP_GRAN_TENSOR;
        a.symmetric = 0;
    }
    return a;
}

int bp_config_has_budget(const bp_config *c)
{
    return c->budget.avg_bits > 0 || c->budget.max_bytes > 0 || c->budget.max_error >= 0 ||
           c->budget.max_bops > 0 || c->budget.max_latency > 0 || c->budget.max_file_bytes > 0 ||
           c->budget.bpw > 0;
}
