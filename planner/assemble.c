/*
 * assemble.c - the plan from a solved table (assemble.h).
 */
#include "assemble.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../sensitivity/sensitivity.h"
#include "formats/export.h"
#include "model.h"

/* ---- plan --------------------------------------------------------------- */

/* Each layer's inputs per output row, and an embedding whose weights a layer
 * shares byte for byte (tied embeddings: consumers keep one tensor).  Best
 * effort: a weights file that no longer opens leaves them unknown. */
static void plan_shapes(const char *weights, bp_plan *plan)
{
    bp_tensorset ts;
    bp_error quiet;
    if (bp_tensorset_open(&ts, weights, &quiet) < 0)
        return;
    char name[1100];
    long *idx = calloc(plan->n_layers + 1, sizeof *idx);
    for (size_t l = 0; idx && l < plan->n_layers; l++) {
        bp_plan_layer *pl = &plan->layers[l];
        snprintf(name, sizeof name, "%s.weight", pl->name);
        long t = idx[l] = bp_tensorset_find(&ts, name);
        if (t < 0)
            continue;
        bp_tensor_ref r = bp_tensorset_get(&ts, (size_t)t);
        int64_t n = 1;
        for (int d = 1; d < r.rank; d++)
            n *= r.shape[d];
        pl->in_features = r.rank >= 2 ? n : 0;
    }
    /* the embeddings first (few), then each other layer against them: linear in
     * the layers; same_data compares shapes before any byte */
    size_t *emb = idx ? malloc((plan->n_layers + 1) * sizeof *emb) : NULL, n_emb = 0;
    for (size_t e = 0; emb && e < plan->n_layers; e++)
        if (idx[e] >= 0 && bp_embedding_name(plan->layers[e].name))
            emb[n_emb++] = e;
    for (size_t l = 0; emb && n_emb && l < plan->n_layers; l++)
        for (size_t k = 0; idx[l] >= 0 && k < n_emb && !plan->layers[l].tied_with; k++)
            if (!bp_embedding_name(plan->layers[l].name) &&
                bp_tensorset_same_data(&ts, (size_t)idx[l], (size_t)idx[emb[k]]))
                plan->layers[l].tied_with = plan->layers[emb[k]].name;
    free(emb);
    free(idx);
    bp_tensorset_close(&ts);
}

int bp_make_plan(const bp_table *t, const bp_solve_result *r, const bp_config *cfg,
                 const bp_sens_result *sens, const bp_solve_request *req, bp_plan *plan,
                 bp_error *err)
{
    bp_sens_spec spec;               /* the grids behind each row's quantizer */
    if (cfg)
        bp_sens_spec_from_config(cfg, &spec);
    memset(plan, 0, sizeof *plan);
    plan->layers = bp_calloc(r->n_layers, sizeof *plan->layers, err);
    if (!plan->layers)
        return -1;
    plan->n_layers = r->n_layers;
    for (size_t l = 0; l < r->n_layers; l++) {
        const bp_table_row *row = &t->rows[r->chosen[l]];
        bp_plan_layer *pl = &plan->layers[l];
        *pl = (bp_plan_layer){.name = row->layer, .wbits = row->wbits, .abits = row->abits,
                              .quantizer = row->quantizer, .symmetric = -1,
                              .act_symmetric = -1, .error = row->error, .params = row->params,
                              .weight_bits = row->weight_bits};
        int wq = bp_wquantizer_parse(row->quantizer);
        if (cfg && row->wbits < BP_BITS_FLOAT && wq >= 0) {
            bp_qspec g = bp_sens_weight_grid(&spec, (bp_wquantizer)wq);
            pl->granularity = bp_granularity_name(g.granularity);
            pl->group_size = g.granularity == BP_GRAN_GROUP ? g.group_size : 0;
            pl->symmetric = g.symmetric;
        } else if (cfg) {
            pl->granularity = "none";
        }
        if (cfg && row->abits < BP_BITS_FLOAT && wq >= 0) {
            bp_qspec a = bp_config_acts_for_quantizer(cfg, row->layer, (bp_wquantizer)wq);
            pl->act_kind = bp_qkind_name(a.kind);
            pl->act_granularity = bp_granularity_name(a.granularity);
            pl->act_symmetric = a.symmetric;
        }
    }
    if (cfg && cfg->weights)
        plan_shapes(cfg->weights, plan);
    if (cfg) {
        plan->model_path = cfg->weights_as_written;
        plan->calib_path = cfg->calibration_as_written;
        plan->imatrix_path = cfg->imatrix_as_written;
        plan->metric = bp_metric_name(cfg->metric);
    }
    if (sens) {
        plan->model_sha256 = sens->model_sha256;
        plan->calib_sha256 = sens->calib_sha256[0] ? sens->calib_sha256 : NULL;
        plan->imatrix_sha256 = sens->imatrix_sha256[0] ? sens->imatrix_sha256 : NULL;
    }
    plan->budget_avg_bits = req->budget.avg_bits;
    plan->budget_max_bytes = req->budget.max_bytes;
    plan->budget_max_error = req->budget.max_error;
    plan->budget_max_bops = req->budget.max_bops;
    plan->total_bops = r->total_bops;
    plan->budget_max_latency = req->budget.max_latency;
    plan->total_latency = req->latency ? r->total_latency : NAN;
    plan->objective_name = r->objective_name;
    plan->solver = r->all_fixed ? "given" : r->sol.method ? r->sol.method : "glpk";
    plan->status = bp_solve_status_name(r->sol.status);
    plan->objective = r->sol.objective;
    plan->gap = r->sol.gap;
    /* tenths of a second: re-running an unchanged plan gives the same bytes */
    plan->seconds = round(r->sol.seconds * 10.0) / 10.0;
    plan->total_params = r->total_params;
    plan->total_weight_bits = r->total_weight_bits;
    plan->total_error = r->total_error;
    return 0;
}
