/*
 * measure.c - the sensitivity stage (measure.h): checks, the cache, the
 * journal and the measurement of every layer not yet done, with the Grams
 * and GPTQ factors of one layer's inputs kept for the next layer that reads
 * the same inputs (q/k/v, gate/up).
 */
#include "measure.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bp_file.h"
#include "../common/bp_profile.h"
#include "cache.h"
#include "checks.h"
#include "distrib.h"
#include "validate.h"

static int measure_all(const bp_config *cfg, const bp_model *m, bp_step_fn progress,
                       void *ctx, bp_table *t, const unsigned char *done, size_t n_done,
                       bp_journal *jr, bp_error *err);

void bp_sens_spec_from_config(const bp_config *cfg, bp_sens_spec *s)
{
    s->wbits = cfg->wbits;
    s->n_wbits = cfg->n_wbits;
    s->abits = cfg->abits;
    s->n_abits = cfg->n_abits;
    s->weights = cfg->weights_q;
    s->acts = cfg->acts_q;
    s->quantizer = cfg->quantizers[0];
    s->gptq = cfg->gptq;
    s->squant_mode = cfg->squant_mode;
    s->erq = cfg->erq;
    s->cross_fit = cfg->cross_fit;
    s->precision = cfg->precision;
    s->erq_grid = !cfg->weights_range_set;
    s->metric = cfg->metric;
    s->ggml_types = cfg->ggml_types;
}

static const char **sort_names;
static int cmp_name_idx(const void *a, const void *b)
{
    return strcmp(sort_names[*(const size_t *)a], sort_names[*(const size_t *)b]);
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

/* A fast 64-bit fingerprint of n floats (a multiply-xorshift over their
 * bits): equal inputs give equal fingerprints; equal fingerprints are then
 * confirmed byte by byte. */
static uint64_t fingerprint(const float *x, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ULL ^ (uint64_t)n;
    const uint32_t *u = (const uint32_t *)x;
    for (size_t i = 0; i < n; i++) {
        h ^= u[i];
        h *= 0xff51afd7ed558ccdULL;
        h ^= h >> 29;
    }
    return h;
}

int bp_measurer_init(bp_measurer *ms, const bp_config *cfg, const bp_model *m, bp_error *err)
{
    memset(ms, 0, sizeof *ms);
    ms->cfg = cfg, ms->m = m, ms->seen_i = (size_t)-1, ms->seen_n = ms->seen_w = -1;
    bp_sens_spec_from_config(cfg, &ms->spec);
    ms->sg = bp_malloc(BP_WQ_COUNT * (cfg->n_abits + 1) * sizeof *ms->sg, err);
    return ms->sg ? 0 : -1;
}

void bp_measurer_free(bp_measurer *ms)
{
    bp_profile_reused(ms->cache.hits);
    bp_sens_cache_free(&ms->cache);
    free(ms->sg);
    memset(ms, 0, sizeof *ms);
}

/* Layer i under every quantizer of the config (rows quantizer-major) into t. */
int bp_measure_layer(bp_measurer *ms, size_t i, bp_table *t, bp_error *err)
{
    const bp_config *cfg = ms->cfg;
    const bp_model *m = ms->m;
    bp_qspec acts[BP_WQ_COUNT];
    bp_loaded_layer l;
    const char *hook = getenv("BITPLAN_TEST_FAIL_LAYER");     /* test hooks: a layer that */
    if (hook && strcmp(hook, m->layers[i].name) == 0)        /* fails, or kills its process */
        return bp_fail(err, "layer '%s': failing as BITPLAN_TEST_FAIL_LAYER asks", hook);
    hook = getenv("BITPLAN_TEST_KILL_LAYER");
    if (hook && strcmp(hook, m->layers[i].name) == 0)
        raise(SIGKILL);
    double t_load = bp_now();
    for (size_t q = 0; q < cfg->n_quantizers; q++)
        acts[q] = bp_config_acts_for_quantizer(cfg, m->layers[i].name, cfg->quantizers[q]);
    if (bp_model_load_layer_acts(m, i, acts, cfg->n_quantizers, cfg->abits, cfg->n_abits, &l,
                                 ms->sg, err) < 0)
        return -1;
    /* layers reading the same inputs (q/k/v, gate/up) share their Grams */
    int64_t w = l.view.in * l.view.groups;
    uint64_t fp = l.view.X && l.view.n > 0 ? fingerprint(l.view.X, (size_t)(l.view.n * w)) : 0;
    int same = l.view.X && l.view.n == ms->seen_n && w == ms->seen_w && fp == ms->seen_fp;
    if (same) {                      /* a likely match: the bytes decide */
        bp_loaded_layer prev;
        if (bp_model_load_layer(m, ms->seen_i, &prev, err) < 0) {
            bp_loaded_layer_free(&l);
            return -1;
        }
        same = prev.view.X && memcmp(prev.view.X, l.view.X,
                                     (size_t)(l.view.n * w) * sizeof(float)) == 0;
        bp_loaded_layer_free(&prev);
    }
    if (l.view.stats)                /* the same statistics set: the same inputs */
        same = ms->seen_i != (size_t)-1 && m->layers[ms->seen_i].stats &&
               strcmp(m->layers[ms->seen_i].stats, m->layers[i].stats) == 0;
    if (!same)
        bp_sens_cache_reset(&ms->cache);
    ms->seen_i = i, ms->seen_fp = fp, ms->seen_n = l.view.X ? l.view.n : -1, ms->seen_w = w;
    bp_profile_add(BP_STAGE_LOAD, bp_now() - t_load);
    int rc = 0;
    for (size_t q = 0; rc == 0 && q < cfg->n_quantizers; q++) {
        ms->spec.quantizer = cfg->quantizers[q];
        ms->spec.acts = acts[q];
        if (l.view.stats)
            l.stats.grid = ms->sg + q * cfg->n_abits;
        if (ms->spec.quantizer == BP_WQ_ERQ && l.view.groups > 1 && cfg->n_quantizers > 1)
            continue;                /* ERQ has no grouped form; the others cover it */
        rc = bp_sensitivity_layer_cached(&l.view, &ms->spec, t, &ms->cache, err);
    }
    bp_loaded_layer_free(&l);
    return rc;
}

/* Every layer not done, in order, journaled one by one. */
static int measure_all(const bp_config *cfg, const bp_model *m, bp_step_fn progress,
                       void *ctx, bp_table *t, const unsigned char *done, size_t n_done,
                       bp_journal *jr, bp_error *err)
{
    const char *stop = getenv("BITPLAN_INTERRUPT_AFTER");   /* test hook: raise SIGINT */
    bp_measurer ms;
    if (bp_measurer_init(&ms, cfg, m, err) < 0)
        return -1;
    int rc = 0;
    size_t finished = n_done;
    for (size_t i = 0; rc == 0 && i < m->n_layers; i++) {
        if (done[i])
            continue;
        size_t before = t->n;
        if (bp_interrupt_requested) {
            rc = bp_fail(err, "interrupted after %zu of %zu layers; they are kept in %s, run "
                         "again to continue", finished, m->n_layers, jr->path);
            break;
        }
        if (progress)
            progress(ctx, finished, m->n_layers, m->layers[i].name);
        if (bp_measure_layer(&ms, i, t, err) < 0 || bp_journal_layer(jr, t, before, i, err) < 0)
            rc = -1;
        finished++;
        if (rc == 0 && stop && i + 1 == (size_t)atol(stop))
            raise(SIGINT);
    }
    bp_measurer_free(&ms);
    if (rc < 0)
        return -1;
    if (progress)
        progress(ctx, m->n_layers, m->n_layers, NULL);
    if (bp_interrupt_requested)
        return bp_fail(err, "interrupted after the last layer; run again to finish");
    return 0;
}

/* Rows in layer order (a stable sort: within a layer, as measured). */
static int sort_by_layer(const bp_model *m, bp_table *t, bp_error *err)
{
    size_t n = t->n, nl = m->n_layers;
    const char **names = bp_malloc((nl + 1) * sizeof *names, err);
    size_t *key = bp_malloc((n + 1) * sizeof *key, err);
    bp_table_row *rows = NULL;
    int rc = -1;
    if (!names || !key)
        goto out;
    for (size_t i = 0; i < nl; i++)
        names[i] = m->layers[i].name;
    sort_names = names;
    size_t *by_name = bp_malloc((nl + 1) * sizeof *by_name, err);
    if (!by_name)
        goto out;
    for (size_t i = 0; i < nl; i++)
        by_name[i] = i;
    qsort(by_name, nl, sizeof *by_name, cmp_name_idx);
    for (size_t r = 0; r < n; r++) {
        size_t lo = 0, hi = nl;
        while (lo < hi) {
            size_t mid = (lo + hi) / 2;
            if (strcmp(names[by_name[mid]], t->rows[r].layer) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        key[r] = lo < nl && strcmp(names[by_name[lo]], t->rows[r].layer) == 0 ? by_name[lo] : nl;
        key[r] = key[r] * (n + 1) + r;        /* layer, then position */
    }
    free(by_name);
    if (!(rows = bp_malloc((n + 1) * sizeof *rows, err)))
        goto out;
    qsort(key, n, sizeof *key, cmp_size);
    for (size_t r = 0; r < n; r++)
        rows[r] = t->rows[key[r] % (n + 1)];
    memcpy(t->rows, rows, n * sizeof *rows);
    rc = 0;
out:
    free(names);
    free(key);
    free(rows);
    return rc;
}


/* The metric's Fisher noise per layer, from the calibration file's metadata. */
static int record_noise(const bp_model *m, bp_metric metric, bp_sens_result *res,
                        bp_error *err)
{
    const char *kind = metric == BP_METRIC_MARGIN ? "margin" : "fisher";
    if (!m->has_calib || (metric != BP_METRIC_MARGIN && metric != BP_METRIC_KFAC &&
                          metric != BP_METRIC_FISHER))
        return 0;
    res->noise_layer = bp_calloc(m->n_layers ? m->n_layers : 1, sizeof *res->noise_layer, err);
    res->noise_rse = bp_malloc((m->n_layers ? m->n_layers : 1) * sizeof *res->noise_rse, err);
    if (!res->noise_layer || !res->noise_rse)
        return -1;
    char key[1100];
    for (size_t i = 0; i < m->n_layers; i++) {
        snprintf(key, sizeof key, "%s.%s_rse", m->layers[i].name, kind);
        const char *v = bp_tensorset_meta(&m->calib, key);
        char *end = NULL;
        double r = v ? strtod(v, &end) : NAN;
        res->noise_rse[i] = v && !*end && isfinite(r) && r >= 0 ? r : NAN;
        if (!(res->noise_layer[i] = bp_strdup(m->layers[i].name, err)))
            return -1;
    }
    const char *how = bp_tensorset_meta(&m->calib, kind);
    snprintf(res->noise_how, sizeof res->noise_how, "%s", how ? how : "");
    return 0;
}

volatile sig_atomic_t bp_interrupt_requested = 0;

int bp_run_sensitivity(bp_config *cfg, int force, bp_step_fn progress,
                       void *progress_ctx, bp_sens_result *res, bp_error *err)
{
    bp_model m;
    char key[65];
    double t0 = bp_now();
    memset(res, 0, sizeof *res);
    bp_table_init(&res->table);
    if (bp_model_open(&m, cfg->weights, cfg->calibration, cfg->imatrix, cfg->include, cfg->n_include,
                      cfg->exclude, cfg->n_exclude, err) < 0)
        return -1;
    res->n_layers = m.n_layers;
    bp_resolve_metric(cfg, &m);
    if (record_noise(&m, cfg->metric, res, err) < 0) {
        bp_model_close(&m);
        bp_sens_result_free(res);
        return -1;
    }
    int rc = -1;
    char *csv = NULL;
    if (bp_check_pins(cfg, &m, err) < 0 || bp_check_layers(cfg, &m, err) < 0 ||
        bp_mkdirs(cfg->out_dir, err) < 0 ||
        !(csv = bp_path_join(cfg->out_dir, cfg->table_name, err)) ||
        bp_hash_inputs(cfg, &m, res->model_sha256, res->calib_sha256, res->imatrix_sha256,
                       err) < 0)
        goto out;
    bp_profile_add(BP_STAGE_LOAD, bp_now() - t0);
    bp_cache_key(cfg, &m, res->model_sha256, res->calib_sha256, res->imatrix_sha256, key);
    int reselected = 0;
    if (!force && bp_cache_load(csv, key, cfg->metric, &res->table, &reselected) == 0) {
        res->from_cache = 1;
        if (reselected && bp_cache_store(&res->table, csv, key, err) < 0)
            goto out;
    } else {
        char partial[4096];
        bp_journal jr = {NULL, NULL};
        snprintf(partial, sizeof partial, "%s.partial", csv);
        if (bp_check_memory(cfg, &m, err) < 0 || bp_validate_calibration(&m, err) < 0)
            goto out;
        unsigned char *done = bp_calloc(m.n_layers + 1, 1, err);
        if (!done)
            goto out;
        long keep = 0;
        size_t n_done = force ? 0 : bp_journal_resume(partial, key, &m, done, &res->table, &keep);
        res->resumed_layers = n_done;
        int ok = bp_journal_open(&jr, csv, key, n_done ? keep : 0, err) == 0 &&
                 (bp_dist_size() > 1
                      ? bp_measure_distributed(cfg, &m, progress, progress_ctx, &res->table, done,
                                            n_done, &jr, err)
                      : measure_all(cfg, &m, progress, progress_ctx, &res->table, done, n_done,
                                    &jr, err)) == 0 &&
                 sort_by_layer(&m, &res->table, err) == 0 &&
                 bp_table_select(&res->table, cfg->metric, err) == 0 &&   /* resumed rows too */
                 bp_cache_store(&res->table, csv, key, err) == 0;
        free(done);
        bp_journal_close(&jr, ok);
        if (!ok)
            goto out;
    }
    rc = 0;
out:
    res->seconds = bp_now() - t0;
    free(csv);
    bp_model_close(&m);
    if (rc < 0)
        bp_sens_result_free(res);
    return rc;
}

void bp_sens_result_free(bp_sens_result *res)
{
    bp_table_free(&res->table);
    for (size_t i = 0; res->noise_layer && i < res->n_layers; i++)
        free(res->noise_layer[i]);
    free(res->noise_layer);
    free(res->noise_rse);
    res->noise_layer = NULL, res->noise_rse = NULL;
}
