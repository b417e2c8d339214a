/*
 * quantize.c - the plan's weights: every layer quantized again at its
 * chosen candidate (the same quantizer, grid and activation grid the
 * sensitivity stage measured), written as one quantized-weights file
 * (formats/qweights.h).
 */
#include "quantize.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bp_profile.h"
#include "formats/qweights.h"
#include "model.h"

static int shape_meta(bp_qfile *f, const bp_model *m, const bp_layer_desc *d, bp_error *err)
{
    bp_tensor_ref w = bp_tensorset_get(&m->weights, (size_t)d->weight);
    char buf[200] = "";
    for (int i = 0; i < w.rank; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%lld", i ? "," : "",
                 (long long)w.shape[i]);
    return bp_qfile_meta(f, d->name, "shape", buf, err);
}

/* The activation grid the plan's abits use on this layer's inputs, as the
 * sensitivity stage fitted it on the calibration rows: NAME.act_scale and
 * NAME.act_zero (one pair, or one per input column for ptf; log2 keeps its
 * maximum in act_scale), plus NAME.act_quantizer / act_granularity /
 * act_symmetric / act_range.  Per-token grids are fitted per row at run
 * time, so they have the metadata only. */
static int export_act_grid(bp_qfile *f, const bp_layer *l, const bp_qspec *acts,
                           const bp_plan_layer *pl, bp_error *err)
{
    bp_qspec a = *acts;
    a.bits = pl->abits;
    int64_t cols = l->in * l->groups;
    int rc = bp_qfile_meta(f, pl->name, "act_quantizer", bp_qkind_name(a.kind), err);
    rc = rc < 0 ? -1 : bp_qfile_meta(f, pl->name, "act_granularity",
                                a.kind == BP_AQ_UNIFORM ? bp_granularity_name(a.granularity)
                                                        : "per_tensor", err);
    rc = rc < 0 ? -1 : bp_qfile_meta(f, pl->name, "act_symmetric", a.symmetric ? "true" : "false", err);
    rc = rc < 0 ? -1 : bp_qfile_meta(f, pl->name, "act_range", bp_range_name(a.range), err);
    if (rc < 0 || !l->X || l->n <= 0)
        return rc;
    float *S = bp_qfile_own(f, malloc((size_t)cols * sizeof(float)));
    float *Z = bp_qfile_own(f, malloc((size_t)cols * sizeof(float)));
    if (!S || !Z)
        return bp_fail(err, "out of memory exporting layer '%s'", pl->name);
    int64_t k = bp_act_grid(l->X, l->n, cols, &a, S, Z);
    if (k == 0)
        return 0;
    rc = bp_qfile_add(f, pl->name, ".act_scale", BP_DT_F32, k, 0, 1, S, (size_t)k * sizeof(float),
                   err);
    return rc < 0 ? -1 : bp_qfile_add(f, pl->name, ".act_zero", BP_DT_F32, k, 0, 1, Z,
                                   (size_t)k * sizeof(float), err);
}

/* One layer at its chosen candidate into f; *spent: the seconds it gave to
 * the load and weights stages. */
static int export_layer(bp_qfile *f, const bp_config *cfg, const bp_model *m, size_t idx,
                        const bp_plan_layer *pl, int dequantized, double *spent, bp_error *err)
{
    bp_loaded_layer ll;
    const bp_layer *l = &ll.view;
    int wq = bp_wquantizer_parse(pl->quantizer);
    if (wq < 0)
        return bp_fail(err, "layer '%s': quantizer '%s' is not one bitplan can apply",
                       pl->name, pl->quantizer);
    bp_sens_spec spec;
    bp_sens_spec_from_config(cfg, &spec);
    spec.quantizer = (bp_wquantizer)wq;
    spec.acts = bp_config_acts_for_quantizer(cfg, pl->name, spec.quantizer);
    spec.abits = &pl->abits, spec.n_abits = 1;    /* statistics: this width's grid only */
    bp_stats_grid sg[1];
    double t = bp_now();
    if (bp_model_load_layer_acts(m, idx, &spec.acts, 1, &pl->abits, 1, &ll, sg, err) < 0)
        return -1;
    double t_load = bp_now() - t;
    bp_profile_add(BP_STAGE_LOAD, t_load);
    *spent += t_load;
    bp_qspec g = bp_sens_weight_grid(&spec, spec.quantizer);
    g.bits = pl->wbits;
    size_t nel = (size_t)(l->out * l->in);
    float *What = bp_qfile_own(f, bp_malloc(nel * sizeof(float), NULL));
    float *bhat = l->bias ? bp_qfile_own(f, malloc((size_t)l->out * sizeof(float))) : NULL;
    size_t ngrid = (size_t)(l->out * bp_grid_groups(&g, l->in));   /* per row and group */
    float *es = malloc(ngrid * sizeof(float)), *ez = malloc(ngrid * sizeof(float));
    int32_t *g_idx = bp_qfile_own(f, malloc((size_t)(l->in * l->groups) * sizeof(int32_t)));
    char num[32];
    int rc = What && (bhat || !l->bias) && es && ez && g_idx ? 0
             : bp_fail(err, "out of memory exporting layer '%s'", pl->name);
    if (rc == 0 && pl->wbits >= BP_BITS_FLOAT) {
        memcpy(What, l->W, nel * sizeof(float));
        if (bhat)
            memcpy(bhat, l->bias, (size_t)l->out * sizeof(float));
        rc = bp_qfile_add(f, pl->name, ".weight", BP_DT_F32, l->out, l->in, 2, What,
                          nel * sizeof(float), err);
    } else if (rc == 0) {
        t = bp_now();
        rc = bp_quantize_candidate(l, &spec, pl->wbits, pl->abits, What, bhat, es, ez, g_idx,
                                   err);
        double t_w = bp_now() - t;
        bp_profile_add(BP_STAGE_WEIGHTS, t_w);
        *spent += t_w;
        bp_qlayer q = {pl->name, l->out, l->in, l->groups, What, es, ez, g_idx};
        bp_qgrid qg = {g.bits, g.granularity == BP_GRAN_TENSOR,
                       g.granularity == BP_GRAN_GROUP ? g.group_size : 0, g.fp16_scales,
                       bp_granularity_name(g.granularity)};
        if (rc == 0)
            rc = bp_qfile_add_codes(f, &q, &qg, dequantized, err);
    }
    if (rc == 0 && bhat)
        rc = bp_qfile_add(f, pl->name, ".bias", BP_DT_F32, l->out, 0, 1, bhat,
                       (size_t)l->out * sizeof(float), err);
    if (rc == 0 && pl->abits < BP_BITS_FLOAT)
        rc = export_act_grid(f, l, &spec.acts, pl, err);
    snprintf(num, sizeof num, "%d", pl->wbits);
    rc = rc < 0 ? -1 : bp_qfile_meta(f, pl->name, "wbits", num, err);
    snprintf(num, sizeof num, "%d", pl->abits);
    rc = rc < 0 ? -1 : bp_qfile_meta(f, pl->name, "abits", num, err);
    rc = rc < 0 ? -1 : bp_qfile_meta(f, pl->name, "quantizer", pl->quantizer, err);
    rc = rc < 0 ? -1 : bp_qfile_meta(f, pl->name, "granularity",
                                pl->wbits >= BP_BITS_FLOAT ? "none"
                                                           : bp_granularity_name(g.granularity),
                                err);
    snprintf(num, sizeof num, "%lld",
             (long long)(g.granularity == BP_GRAN_GROUP ? g.group_size : 0));
    rc = rc < 0 ? -1 : bp_qfile_meta(f, pl->name, "group_size", num, err);
    if (pl->wbits < BP_BITS_FLOAT)
        rc = rc < 0 ? -1 : bp_qfile_meta(f, pl->name, "symmetric", g.symmetric ? "true" : "false", err);
    rc = rc < 0 ? -1 : shape_meta(f, m, &m->layers[idx], err);
    free(es);
    free(ez);
    bp_loaded_layer_free(&ll);
    return rc;
}

int bp_write_quantized(const bp_config *cfg, const bp_plan *plan, const char *path,
                       int dequantized, bp_step_fn progress, void *ctx, bp_error *err)
{
    bp_model m;
    bp_qfile f;
    double t0 = bp_now();
    memset(&f, 0, sizeof f);
    if (bp_model_open(&m, cfg->weights, cfg->calibration, cfg->imatrix, cfg->include, cfg->n_include,
                      cfg->exclude, cfg->n_exclude, err) < 0)
        return -1;
    int rc = 0;
    double spent = 0.0;          /* given to the load and weights stages */
    for (size_t i = 0; rc == 0 && i < plan->n_layers; i++) {
        const bp_plan_layer *pl = &plan->layers[i];
        size_t idx = 0;
        if (progress)
            progress(ctx, i, plan->n_layers, pl->name);
        while (idx < m.n_layers && strcmp(m.layers[idx].name, pl->name) != 0)
            idx++;
        if (idx == m.n_layers)
            rc = bp_fail(err, "%s: plan layer '%s' is not in the model", cfg->weights, pl->name);
        else
            rc = export_layer(&f, cfg, &m, idx, pl, dequantized, &spent, err);
    }
    if (progress)
        progress(ctx, plan->n_layers, plan->n_layers, NULL);
    if (rc == 0)
        rc = bp_qfile_write(&f, path, err);
    bp_qfile_free(&f);
    bp_model_close(&m);
    bp_profile_add(BP_STAGE_WRITE, bp_now() - t0 - spent);
    return rc;
}
