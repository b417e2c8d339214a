/*
 * checks.c - what a run checks before any work (checks.h).
 */
#include "checks.h"

#include <cblas.h>
#include <fnmatch.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "../sensitivity/sensitivity.h"
#include "measure.h"

/* ---- sensitivity -------------------------------------------------------- */

static int matches_some_layer(const bp_model *m, const char *pattern)
{
    for (size_t i = 0; i < m->n_layers; i++)
        if (fnmatch(pattern, m->layers[i].name, 0) == 0)
            return 1;
    return 0;
}

/* Patterns that select layers must select at least one. */
int bp_check_pins(const bp_config *cfg, const bp_model *m, bp_error *err)
{
    for (size_t p = 0; p < cfg->n_pins; p++)
        if (!matches_some_layer(m, cfg->pins[p].pattern))
            return bp_fail(err, "%s: pins[%zu]: pattern '%s' matches no layer", cfg->path,
                           p, cfg->pins[p].pattern);
    for (size_t r = 0; r < cfg->n_act_rules; r++)
        if (!matches_some_layer(m, cfg->act_rules[r].pattern))
            return bp_fail(err, "%s: activations.per_layer[%zu]: pattern '%s' matches no "
                           "layer", cfg->path, r, cfg->act_rules[r].pattern);
    return 0;
}

/* The first quantizer (in config order) that needs data, or -1. */
static int needs_data(const bp_config *cfg, bp_sens_spec *spec)
{
    for (size_t q = 0; q < cfg->n_quantizers; q++) {
        spec->quantizer = cfg->quantizers[q];
        if (bp_sens_needs_data(spec))
            return (int)q;
    }
    return -1;
}

static int no_data_error(const bp_config *cfg, const bp_model *m, const bp_layer_desc *d,
                         int q, bp_error *err)
{
    int by_metric = cfg->metric != BP_METRIC_WEIGHT;
    if (m->weights.is_gguf)
        return bp_fail(err, "layer '%s': %s '%s' needs the layer's inputs, but %s has no entry "
                       "'%s.weight'%s (give the model's importance matrix as model.imatrix, "
                       "exclude the layer, or use metric: weight)", d->name,
                       by_metric ? "metric" : "quantizer",
                       by_metric ? bp_metric_name(cfg->metric)
                                 : bp_wquantizer_name(cfg->quantizers[q]),
                       cfg->imatrix ? cfg->imatrix : "model.imatrix (unset)", d->name,
                       cfg->calibration ? " and model.calibration none either" : "");
    return bp_fail(err, "layer '%s': %s '%s' needs calibration inputs, but '%s.input' is not "
                   "in %s (use metric: weight and quantizer: rtn or squant for data-free "
                   "planning)", d->name, by_metric ? "metric" : "quantizer",
                   by_metric ? bp_metric_name(cfg->metric)
                             : bp_wquantizer_name(cfg->quantizers[q]),
                   d->name, cfg->calibration ? cfg->calibration : "model.calibration (unset)");
}

/* A layer measured from diagonal statistics alone (an importance matrix,
 * or an embedding table): what they cannot measure. */
static int check_diag(const bp_config *cfg, const bp_layer_desc *d, bp_error *err)
{
    const char *im = cfg->imatrix ? cfg->imatrix : "the importance matrix";
    for (size_t a = 0; a < cfg->n_abits; a++)
        if (cfg->abits[a] < BP_BITS_FLOAT)
            return bp_fail(err, "layer '%s': %s holds no activation statistics, so %d-bit "
                           "activations cannot be measured (use candidates.abits: [16], or "
                           "capture statistics with tools/capture.py --stats)", d->name, im,
                           cfg->abits[a]);
    for (size_t q = 0; q < cfg->n_quantizers; q++)
        if (cfg->quantizers[q] == BP_WQ_GPTQ || cfg->quantizers[q] == BP_WQ_ERQ)
            return bp_fail(err, "layer '%s': %s needs the inputs' full statistics (X^T X); %s "
                           "holds their diagonal only (use llama.cpp's types, "
                           "candidates.types, or rtn; or capture statistics with "
                           "tools/capture.py --stats)", d->name,
                           bp_wquantizer_name(cfg->quantizers[q]), im);
    if (cfg->metric == BP_METRIC_KFAC || cfg->metric == BP_METRIC_MARGIN)
        return bp_fail(err, "layer '%s': metric '%s' needs calibration rows or statistics; %s "
                       "gives mse, relative, hawq and weight", d->name,
                       bp_metric_name(cfg->metric), im);
    return 0;
}

/* A statistics layer: what statistics cannot do (cross-fitting), and every
 * activation candidate's grid among the set's (the fit on the range rows
 * is skipped when the previous layer read the same set the same way). */
static int check_stats(const bp_config *cfg, const bp_model *m, size_t i, bp_error *err)
{
    const bp_layer_desc *d = &m->layers[i];
    for (size_t q = 0; q < cfg->n_quantizers; q++)
        if (cfg->cross_fit == BP_XFIT_ON &&
            (cfg->quantizers[q] == BP_WQ_GPTQ || cfg->quantizers[q] == BP_WQ_ERQ))
            return bp_fail(err, "layer '%s': weights.cross_fit: on needs calibration rows to "
                           "split in two; statistics (%s) cannot be split (use cross_fit: auto "
                           "or false, or capture rows)", d->name, cfg->calibration);
    for (size_t q = 0; q < cfg->n_quantizers; q++) {
        bp_qspec a = bp_config_acts_for_quantizer(cfg, d->name, cfg->quantizers[q]);
        int same = 0;
        for (size_t p = 0; i > 0 && p < cfg->n_quantizers && !same; p++) {
            bp_qspec b = bp_config_acts_for_quantizer(cfg, m->layers[i - 1].name,
                                                      cfg->quantizers[p]);
            same = m->layers[i - 1].stats && strcmp(m->layers[i - 1].stats, d->stats) == 0 &&
                   memcmp(&a, &b, sizeof a) == 0;
        }
        for (size_t w = 0; !same && w < cfg->n_abits; w++) {
            size_t k;
            if (cfg->abits[w] < BP_BITS_FLOAT &&
                bp_model_match_grid(m, i, &a, cfg->abits[w], &k, err) < 0)
                return -1;
        }
    }
    return 0;
}

/* Before any work: every layer has what the quantizers and the metric need
 * (calibration inputs, grad2 for fisher, the output Fisher for kfac). */
int bp_check_layers(const bp_config *cfg, const bp_model *m, bp_error *err)
{
    bp_sens_spec spec;
    bp_sens_spec_from_config(cfg, &spec);
    int q_data = needs_data(cfg, &spec);
    const char *cf = cfg->calibration ? cfg->calibration : "model.calibration (unset)";
    for (size_t i = 0; i < m->n_layers; i++) {
        const bp_layer_desc *d = &m->layers[i];
        int diag_only = d->input < 0 && !d->stats && (d->im || d->im_missing || d->embedding);
        if (q_data >= 0 && d->input < 0 && !d->stats && !diag_only)
            return no_data_error(cfg, m, d, q_data, err);
        if (d->stats && check_stats(cfg, m, i, err) < 0)
            return -1;
        if (diag_only && check_diag(cfg, d, err) < 0)
            return -1;
        if (cfg->metric == BP_METRIC_FISHER && d->grad2 < 0)
            return bp_fail(err, "layer '%s': metric 'fisher' needs '%s.grad2' (the diagonal of "
                           "the output Fisher, from tools/capture.py --fisher), but %s has "
                           "none", d->name, d->name, cf);
        if (cfg->metric == BP_METRIC_FISHER && d->n_grad2 != d->out)
            return bp_fail(err, "%s: tensor '%s.grad2' has %lld values, but layer '%s' has "
                           "%lld output channels", cf, d->name, (long long)d->n_grad2,
                           d->name, (long long)d->out);
        if (cfg->metric == BP_METRIC_KFAC && !bp_factor_present(&d->factor[BP_FACTOR_FISHER]))
            return bp_fail(err, "layer '%s': metric 'kfac' needs '%s.fisher' (or '%s.fisher_u', "
                           "'_s' and '_d': the output Fisher, from tools/capture.py --fisher), "
                           "but %s has none", d->name, d->name, d->name, cf);
        if (cfg->metric == BP_METRIC_MARGIN && !bp_factor_present(&d->factor[BP_FACTOR_MARGIN]))
            return bp_fail(err, "layer '%s': metric 'margin' needs '%s.margin' (or "
                           "'%s.margin_u', '_s' and '_d': the decision Fisher, from "
                           "tools/capture.py --margin), but %s has none", d->name, d->name,
                           d->name, cf);
    }
    return 0;
}

static double layer_bytes_common(const bp_layer_desc *d, const bp_config *cfg, double in,
                                 double n, double g, double o, double a, double q,
                                 double wide, double chunks);

/*
 * Peak memory of measuring one layer (bytes), the README's formula: inputs
 * and their quantized copy (2 n in g floats), the weights and one copy per
 * weight width (out in (w + 2) floats), the float work rows (2 o in), the
 * shared-input cache (a Gram per activation width, quantizer and group, a
 * GPTQ factor per activation width and group: (a q g + a g) in^2 doubles at
 * most), the cross-term Grams (2 in^2), GPTQ's Hessian and factor or ERQ's
 * augmented Gram (2 (in + 1)^2), the 1024-row chunks (2048 in), the double
 * work rows (4 o in), and each output factor (the output Fisher, the
 * decision Fisher) with its product; without them, the layer totals'
 * matrices (g in^2 doubles per weight width and one more, up to 1 GiB; else
 * g in^2 + in^2), and what the quantizers of the layer share: a copy of the
 * weights (out in floats) and W H^T per activation width (out in doubles).
 * From statistics there are no rows: instead the sums (X^T X and, per
 * activation grid loaded, Xbar^T Xbar and Xbar^T X: (1 + 2 k) g in^2
 * doubles, k at most the quantized widths times the quantizers) and the
 * range rows (r in g floats).
 */
static double layer_bytes(const bp_layer_desc *d, const bp_config *cfg)
{
    double in = (double)d->in, n = (double)d->n, g = d->groups, o = (double)d->out / g;
    double a = (double)cfg->n_abits, q = (double)cfg->n_quantizers;
    if (d->input < 0 && !d->stats && (d->im || d->im_missing || d->embedding)) {
        /* diagonal statistics: the weights, d and qw, llama.cpp's types a row
         * per thread (diag.c), bitplan's quantizers a copy per width */
        double copies = cfg->quantizers[0] == BP_WQ_GGML ? 1.0 : 1.0 + (double)cfg->n_wbits;
        return 4.0 * copies * (double)d->out * in + 12.0 * in * (double)d->n_mat +
               16.0 * 64.0 * in;
    }
    double wide = fmax(2.0 * in, d->stats ? 0.0 : n);
    if (d->stats) {
        double qa = 0.0;
        for (size_t i = 0; i < cfg->n_abits; i++)
            qa += cfg->abits[i] < BP_BITS_FLOAT;
        double grids = fmin((double)d->n_grids, qa * q);
        n = 0.0;                     /* no rows, and no 1024-row chunks below */
        return layer_bytes_common(d, cfg, in, n, g, o, a, q, wide, 0.0) +
               8.0 * (1.0 + 2.0 * grids) * g * in * in + 4.0 * (double)d->st_range_rows * in * g;
    }
    return layer_bytes_common(d, cfg, in, n, g, o, a, q, wide, 2048.0 * in);
}

static double layer_bytes_common(const bp_layer_desc *d, const bp_config *cfg, double in,
                                 double n, double g, double o, double a, double q,
                                 double wide, double chunks)
{
    double fisher = 0.0;
    for (int i = 0; i < BP_FACTORS; i++) {
        const bp_factor_desc *f = &d->factor[i];
        double k = (double)f->rank;
        fisher += f->dense >= 0 ? g * o * o + o * wide        /* F and F V (or F D) */
                  : f->u >= 0   ? g * (k + 2.0) * o + 2.0 * k * wide
                                : 0.0;
    }
    /* layer totals (no grad2, no factor): W^T W and dW^T dW per weight width
     * while they fit in 1 GiB (sensitivity.c), else W^T W and one dW^T dW */
    double per = 8.0 * g * in * in, w = (double)cfg->n_wbits;
    double totals = d->grad2 >= 0 || fisher > 0.0 ? 0.0
                    : (per * (w + 1.0) <= 1073741824.0 ? per * (w + 1.0) : per + 8.0 * in * in) +
                      (4.0 + 8.0 * a) * (double)d->out * in;
    return 4.0 * (2.0 * n * in * g + (double)d->out * in * (w + 2.0) + 2.0 * o * in) +
           8.0 * ((a * q * g + a * g + 2.0) * in * in + 2.0 * (in + 1.0) * (in + 1.0) +
                  chunks + 4.0 * o * in + fisher) + totals;
}

/* MemAvailable from /proc/meminfo in bytes, or 0 when unknown. */
static double mem_available(void)
{
    FILE *fp = fopen("/proc/meminfo", "r");
    char line[256];
    double kb = 0.0;
    while (fp && fgets(line, sizeof line, fp))
        if (sscanf(line, "MemAvailable: %lf kB", &kb) == 1)
            break;
    if (fp)
        fclose(fp);
    return kb * 1024.0;
}

/* The address space left under RLIMIT_AS (ulimit -v) after what the process
 * maps already, less what OpenBLAS maps for its buffers at its first large
 * product (about 64 MB per thread and its caller, twice): with less,
 * OpenBLAS retries its allocation forever instead of failing.  0 when there
 * is no limit. */
#define BLAS_RESERVE(threads) (2.0 * 64.0 * 1048576.0 * ((threads) + 1))
static double address_space_left(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_AS, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY)
        return 0.0;
    FILE *fp = fopen("/proc/self/statm", "r");
    double pages = 0.0;
    if (fp) {
        if (fscanf(fp, "%lf", &pages) != 1)
            pages = 0.0;
        fclose(fp);
    }
    double left = (double)rl.rlim_cur - pages * (double)sysconf(_SC_PAGESIZE) -
                  BLAS_RESERVE(openblas_get_num_threads());
    return left > 1.0 ? left : 1.0;
}

/* Refuse before any work when the largest layer cannot fit in memory. */
int bp_check_memory(const bp_config *cfg, const bp_model *m, bp_error *err)
{
    double avail = mem_available(), worst = 0.0, as = address_space_left();
    int limited = as > 0.0 && (avail <= 0.0 || as < avail);
    if (limited)
        avail = as;
    size_t at = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        double b = layer_bytes(&m->layers[i], cfg);
        if (b > worst)
            worst = b, at = i;
    }
    if (getenv("BITPLAN_MEMORY_LIMIT"))           /* for tests: pretend less memory */
        avail = atof(getenv("BITPLAN_MEMORY_LIMIT"));
    if (avail > 0 && worst > avail)
        return bp_fail(err, "layer '%s' needs about %.2f GiB to measure (n = %lld rows, in = "
                       "%lld, out = %lld, %zu weight widths) but only %.2f GiB are available%s; "
                       "%s", m->layers[at].name,
                       worst / 1073741824.0, (long long)m->layers[at].n,
                       (long long)m->layers[at].in, (long long)m->layers[at].out, cfg->n_wbits,
                       avail / 1073741824.0,
                       limited ? " under the address-space limit (ulimit -v), after OpenBLAS's "
                                 "buffers" : "",
                       m->layers[at].stats ? "exclude it, or measure fewer weight or activation "
                                             "widths at a time"
                                           : "subsample its calibration rows or exclude it");
    return 0;
}

/* metric: auto -> the most informed metric every layer's data allows: the
 * decision Fisher (ranks layers by what they cost the task best on the e2e
 * models: README), the output Fisher, its diagonal, the relative error (from
 * calibration or an importance matrix), the weights' error without either. */
void bp_resolve_metric(bp_config *cfg, const bp_model *m)
{
    if (!cfg->metric_auto)
        return;
    int margin = m->has_calib, kfac = m->has_calib, fisher = m->has_calib;
    for (size_t i = 0; i < m->n_layers; i++) {
        const bp_layer_desc *d = &m->layers[i];
        margin &= bp_factor_present(&d->factor[BP_FACTOR_MARGIN]);
        kfac &= bp_factor_present(&d->factor[BP_FACTOR_FISHER]);
        fisher &= d->grad2 >= 0 && d->n_grad2 == d->out;
    }
    cfg->metric = margin   ? BP_METRIC_MARGIN
                  : kfac   ? BP_METRIC_KFAC
                  : fisher ? BP_METRIC_FISHER
                  : m->has_calib || m->has_imatrix ? BP_METRIC_RELATIVE
                                                   : BP_METRIC_WEIGHT;
    cfg->metric_auto = 0;
}
