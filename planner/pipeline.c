/*
 * pipeline.c - sensitivity with a content-addressed cache, the table -> IP
 * translation (layers, pins, budgets), and plan assembly.
 */
#include "pipeline.h"

#include <errno.h>
#include <fnmatch.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../common/bp_file.h"
#include "../sensitivity/sensitivity.h"
#include "distrib.h"
#include "filehash.h"
#include "model.h"
#include "formats/scales.h"
#include "sha256.h"
#include "common/bp_profile.h"

#define CACHE_FORMAT "bitplan-sensitivity-cache-v3"
#define HASH_MEMO ".bitplan-hashes"

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
}

/* ---- cache -------------------------------------------------------------- */

static void hash_str(bp_sha256 *h, const char *s)
{
    bp_sha256_update(h, s, strlen(s) + 1);
}

static void hash_qspec(bp_sha256 *h, const bp_qspec *q)
{
    char buf[160];
    snprintf(buf, sizeof buf, "%s %lld %d %s %.17g %s %s", bp_granularity_name(q->granularity),
             (long long)q->group_size, q->symmetric, bp_range_name(q->range), q->mse_norm,
             bp_qkind_name(q->kind), q->fp16_scales ? "fp16" : "fp32");
    hash_str(h, buf);
}

/* The key covers the input files' contents, the selected layers and every
 * setting that changes a table value.  The metric is not among them: the
 * table holds every metric, and the metric only picks its error column. */
static void cache_key(const bp_config *cfg, const bp_model *m, const bp_sens_result *r,
                      char hex[65])
{
    bp_sha256 h;
    unsigned char d[32];
    char buf[192];
    bp_sha256_init(&h);
    hash_str(&h, CACHE_FORMAT);
    hash_str(&h, r->model_sha256);
    hash_str(&h, r->calib_sha256);
    for (size_t i = 0; i < m->n_layers; i++)
        hash_str(&h, m->layers[i].name);
    hash_str(&h, "wbits");
    for (size_t i = 0; i < cfg->n_wbits; i++) {
        snprintf(buf, sizeof buf, "%d", cfg->wbits[i]);
        hash_str(&h, buf);
    }
    hash_str(&h, "abits");
    for (size_t i = 0; i < cfg->n_abits; i++) {
        snprintf(buf, sizeof buf, "%d", cfg->abits[i]);
        hash_str(&h, buf);
    }
    for (size_t i = 0; i < cfg->n_quantizers; i++)
        hash_str(&h, bp_wquantizer_name(cfg->quantizers[i]));
    snprintf(buf, sizeof buf, "gptq %lld %.17g %d %d squant %d", (long long)cfg->gptq.block_size,
             cfg->gptq.damp, cfg->gptq.act_order, cfg->gptq.precision, cfg->squant_mode);
    hash_str(&h, buf);
    snprintf(buf, sizeof buf, "erq %.17g %.17g %d cross_fit %d", cfg->erq.lambda1,
             cfg->erq.lambda2, cfg->erq.max_flips, cfg->cross_fit);
    hash_str(&h, buf);
    hash_qspec(&h, &cfg->weights_q);
    for (size_t i = 0; i < m->n_layers; i++)      /* per-layer activation settings */
        for (size_t q = 0; q < cfg->n_quantizers; q++) {
            bp_qspec a = bp_config_acts_for_quantizer(cfg, m->layers[i].name,
                                                      cfg->quantizers[q]);
            hash_qspec(&h, &a);
        }
    hash_str(&h, cfg->weights_range_set ? "weights range given" : "weights range default");
    hash_str(&h, cfg->precision == BP_PREC_SINGLE ? "errors single" : "errors double");
    bp_sha256_final(&h, d);
    bp_sha256_hex(d, hex);
}

static void sha_of(const void *data, size_t n, char hex[65])
{
    bp_sha256 h;
    unsigned char d[32];
    bp_sha256_init(&h);
    bp_sha256_update(&h, data, n);
    bp_sha256_final(&h, d);
    bp_sha256_hex(d, hex);
}

/* The cache is "<table>" plus "<table>.key" holding the inputs' key and the
 * SHA-256 of the CSV bytes: a table is trusted only when both match.  Its
 * error column becomes the metric's (*reselected is set when that changed
 * it, so the caller writes the table back). */
static int cache_load(const char *csv_path, const char *key, bp_metric metric, bp_table *t,
                      int *reselected)
{
    char key_path[4096], *text = NULL, *csv = NULL, want[256], sha[65];
    size_t n, csv_n;
    snprintf(key_path, sizeof key_path, "%s.key", csv_path);
    int ok = bp_read_file(key_path, &text, &n, NULL) == 0 &&
             bp_read_file(csv_path, &csv, &csv_n, NULL) == 0;
    if (ok) {
        sha_of(csv, csv_n, sha);
        snprintf(want, sizeof want, "key %s\ncsv %s\n", key, sha);
        ok = strcmp(text, want) == 0 &&
             bp_table_parse_csv(t, csv, csv_n, csv_path, NULL) == 0;
        for (size_t i = 0; ok && i < t->n; i++)     /* measured under another metric? */
            *reselected |= !(t->rows[i].error == t->rows[i].value[metric]);
        if (ok && bp_table_select(t, metric, NULL) < 0) {
            bp_table_free(t);
            ok = 0;
        }
    }
    free(text);
    free(csv);
    return ok ? 0 : -1;
}

static int write_table_file(const bp_table *t, const char *path, char sha[65],
                            bp_error *err)
{
    char *buf = NULL;
    size_t n = 0;
    FILE *mem = open_memstream(&buf, &n);
    if (!mem)
        return bp_fail(err, "out of memory formatting the table");
    bp_table_write_csv(t, mem);
    fclose(mem);
    bp_atomic a;
    int rc = bp_atomic_open(&a, path, err);
    if (rc == 0) {
        fwrite(buf, 1, n, a.fp);
        rc = bp_atomic_commit(&a, err);
    }
    if (sha)
        sha_of(buf, n, sha);
    free(buf);
    return rc;
}

static int cache_store(const bp_table *t, const char *csv_path, const char *key,
                       bp_error *err)
{
    char key_path[4096], sha[65];
    snprintf(key_path, sizeof key_path, "%s.key", csv_path);
    remove(key_path);                /* never pair an old key with a new table */
    if (write_table_file(t, csv_path, sha, err) < 0)
        return -1;
    bp_atomic a;
    if (bp_atomic_open(&a, key_path, err) < 0)
        return -1;
    fprintf(a.fp, "key %s\ncsv %s\n", key, sha);
    return bp_atomic_commit(&a, err);
}

static int store_timed(const bp_table *t, const char *csv_path, const char *key,
                       bp_error *err)
{
    double t0 = bp_now();
    int rc = cache_store(t, csv_path, key, err);
    bp_profile_add(BP_STAGE_WRITE, bp_now() - t0);
    return rc;
}

int bp_write_table(const bp_table *t, const char *path, bp_error *err)
{
    return write_table_file(t, path, NULL, err);
}

/* A file's SHA-256; for a directory of .npy files, the SHA-256 of the list
 * of (name, file SHA-256) in name order.  Files unchanged since the memo
 * saw them are not read again. */
static int tensorset_sha256(const bp_tensorset *ts, bp_hash_memo *memo, char hex[65],
                            bp_error *err)
{
    if (!ts->is_dir)
        return bp_hash_memo_file(memo, ts->path, hex, err);
    bp_sha256 h;
    unsigned char d[32];
    bp_sha256_init(&h);
    for (size_t i = 0; i < ts->n_npy; i++) {
        char file_hex[65];
        if (bp_hash_memo_file(memo, ts->npy[i].path, file_hex, err) < 0)
            return -1;
        hash_str(&h, ts->npy_names[i]);
        hash_str(&h, file_hex);
    }
    bp_sha256_final(&h, d);
    bp_sha256_hex(d, hex);
    return 0;
}

/* ---- sensitivity -------------------------------------------------------- */

static int matches_some_layer(const bp_model *m, const char *pattern)
{
    for (size_t i = 0; i < m->n_layers; i++)
        if (fnmatch(pattern, m->layers[i].name, 0) == 0)
            return 1;
    return 0;
}

/* Patterns that select layers must select at least one. */
static int check_pins(const bp_config *cfg, const bp_model *m, bp_error *err)
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

static int no_data_error(const bp_config *cfg, const bp_layer_desc *d, int q, bp_error *err)
{
    int by_metric = cfg->metric != BP_METRIC_WEIGHT;
    return bp_fail(err, "layer '%s': %s '%s' needs calibration inputs, but '%s.input' is not "
                   "in %s (use metric: weight and quantizer: rtn or squant for data-free "
                   "planning)", d->name, by_metric ? "metric" : "quantizer",
                   by_metric ? bp_metric_name(cfg->metric)
                             : bp_wquantizer_name(cfg->quantizers[q]),
                   d->name, cfg->calibration ? cfg->calibration : "model.calibration (unset)");
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
static int check_layers(const bp_config *cfg, const bp_model *m, bp_error *err)
{
    bp_sens_spec spec;
    bp_sens_spec_from_config(cfg, &spec);
    int q_data = needs_data(cfg, &spec);
    const char *cf = cfg->calibration ? cfg->calibration : "model.calibration (unset)";
    for (size_t i = 0; i < m->n_layers; i++) {
        const bp_layer_desc *d = &m->layers[i];
        if (q_data >= 0 && d->input < 0 && !d->stats)
            return no_data_error(cfg, d, q_data, err);
        if (d->stats && check_stats(cfg, m, i, err) < 0)
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

volatile sig_atomic_t bp_interrupt_requested = 0;

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
 * decision Fisher) with its product.
 * From statistics there are no rows: instead the sums (X^T X and, per
 * activation grid loaded, Xbar^T Xbar and Xbar^T X: (1 + 2 k) g in^2
 * doubles, k at most the quantized widths times the quantizers) and the
 * range rows (r in g floats).
 */
static double layer_bytes(const bp_layer_desc *d, const bp_config *cfg)
{
    double in = (double)d->in, n = (double)d->n, g = d->groups, o = (double)d->out / g;
    double a = (double)cfg->n_abits, q = (double)cfg->n_quantizers;
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
    return 4.0 * (2.0 * n * in * g + (double)d->out * in * ((double)cfg->n_wbits + 2.0) +
                  2.0 * o * in) +
           8.0 * ((a * q * g + a * g + 2.0) * in * in + 2.0 * (in + 1.0) * (in + 1.0) +
                  chunks + 4.0 * o * in + fisher);
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

/* Refuse before any work when the largest layer cannot fit in memory. */
static int check_memory(const bp_config *cfg, const bp_model *m, bp_error *err)
{
    double avail = mem_available(), worst = 0.0;
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
                       "%lld, out = %lld, %zu weight widths) but only %.2f GiB are available; "
                       "%s", m->layers[at].name,
                       worst / 1073741824.0, (long long)m->layers[at].n,
                       (long long)m->layers[at].in, (long long)m->layers[at].out, cfg->n_wbits,
                       avail / 1073741824.0,
                       m->layers[at].stats ? "exclude it, or measure fewer weight or activation "
                                             "widths at a time"
                                           : "subsample its calibration rows or exclude it");
    return 0;
}

/*
 * The journal "<table>.partial": "key <hex>", the CSV header, then each
 * measured layer's rows followed by "#done <index>", flushed to disk per
 * layer.  A run with the same key resumes after the last complete layer.
 */
typedef struct journal {
    FILE *fp;
    char *path;
} journal;

/* Layers already measured under this key: their rows into t, done[i] set
 * for each (in any order: a distributed run completes layers out of
 * order); returns how many.  Rows after the last marker are incomplete. */
static size_t journal_resume(const char *path, const char *key, const bp_model *m,
                             unsigned char *done, bp_table *t, long *keep)
{
    char *text = NULL, want[80];
    size_t n, count = 0;
    bp_error err;
    *keep = 0;
    if (bp_read_file(path, &text, &n, &err) < 0)
        return 0;
    snprintf(want, sizeof want, "key %s\n", key);
    char *csv = strncmp(text, want, strlen(want)) == 0 ? text + strlen(want) : NULL;
    char *last = NULL;
    for (char *p = csv ? strstr(csv, "\n#done ") : NULL; p; p = strstr(p + 1, "\n#done "))
        last = p;
    if (last) {
        char *eol = strchr(last + 1, '\n');
        *keep = eol ? (long)(eol + 1 - text) : (long)n;   /* the journal to append to */
        unsigned long li = strtoul(last + 7, NULL, 10);
        if (li < m->n_layers && !done[li])
            done[li] = 1, count++;
        last[1] = '\0';                 /* rows of the complete layers only */
        char *q = csv;
        for (char *r = csv; *r; r++)     /* drop the marker lines, noting their layers */
            if (r[0] == '#' && (r == csv || r[-1] == '\n')) {
                if (strncmp(r, "#done ", 6) == 0) {
                    unsigned long i = strtoul(r + 6, NULL, 10);
                    if (i < m->n_layers && !done[i])
                        done[i] = 1, count++;
                }
                while (*r && *r != '\n')
                    r++;
                if (!*r)
                    break;
            } else {
                *q++ = *r;
            }
        *q = '\0';
        if (bp_table_parse_csv(t, csv, strlen(csv), path, &err) < 0) {
            bp_table_free(t);
            bp_table_init(t);
            memset(done, 0, m->n_layers);
            count = 0;
            *keep = 0;
        }
    }
    free(text);
    return count;
}

/* Open the journal: new, or (keep > 0) truncated after the last complete
 * layer, so that rows of a layer cut short are not taken for the next. */
static int journal_open(journal *j, const char *csv_path, const char *key, long keep,
                        bp_error *err)
{
    int resumed = keep > 0;
    size_t n = strlen(csv_path) + 9;
    j->path = bp_malloc(n, err);
    if (!j->path)
        return -1;
    snprintf(j->path, n, "%s.partial", csv_path);
    if (resumed && truncate(j->path, (off_t)keep) != 0)
        return bp_fail(err, "%s: cannot write: %s", j->path, strerror(errno));
    j->fp = fopen(j->path, resumed ? "a" : "w");
    if (!j->fp)
        return bp_fail(err, "%s: cannot write: %s", j->path, strerror(errno));
    if (!resumed)
        fprintf(j->fp, "key %s\n" BP_TABLE_HEADER "\n", key);
    return 0;
}

static int journal_layer(journal *j, const bp_table *t, size_t from, size_t layer,
                         bp_error *err)
{
    bp_table_write_rows(t, from, t->n, j->fp);
    fprintf(j->fp, "#done %zu\n", layer);
    if (fflush(j->fp) != 0 || fsync(fileno(j->fp)) != 0)
        return bp_fail(err, "%s: write failed: %s", j->path, strerror(errno));
    return 0;
}

static void journal_close(journal *j, int finished)
{
    if (j->fp)
        fclose(j->fp);
    if (finished && j->path)
        remove(j->path);
    free(j->path);
    memset(j, 0, sizeof *j);
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

/* What measuring consecutive layers carries from one to the next: the
 * Grams and GPTQ factors of the last layer's inputs, and how to tell that
 * the next layer reads the same inputs. */
typedef struct measurer {
    const bp_config *cfg;
    const bp_model *m;
    bp_sens_spec spec;
    bp_sens_cache cache;
    size_t seen_i;                   /* the layer measured last, or (size_t)-1 */
    uint64_t seen_fp;                /* its inputs' fingerprint, with their shape */
    int64_t seen_n, seen_w;
    bp_stats_grid *sg;
} measurer;

static int measurer_init(measurer *ms, const bp_config *cfg, const bp_model *m, bp_error *err)
{
    memset(ms, 0, sizeof *ms);
    ms->cfg = cfg, ms->m = m, ms->seen_i = (size_t)-1, ms->seen_n = ms->seen_w = -1;
    bp_sens_spec_from_config(cfg, &ms->spec);
    ms->sg = bp_malloc(BP_WQ_COUNT * (cfg->n_abits + 1) * sizeof *ms->sg, err);
    return ms->sg ? 0 : -1;
}

static void measurer_free(measurer *ms)
{
    if (getenv("BITPLAN_PROFILE") && ms->cache.hits)
        fprintf(stderr, "profile: shared inputs: %zu Grams and GPTQ factors reused\n",
                ms->cache.hits);
    bp_sens_cache_free(&ms->cache);
    free(ms->sg);
    memset(ms, 0, sizeof *ms);
}

/* Layer i under every quantizer of the config (rows quantizer-major) into t. */
static int measure_layer(measurer *ms, size_t i, bp_table *t, bp_error *err)
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
static int measure_all(const bp_config *cfg, const bp_model *m, bp_progress_fn progress,
                       void *ctx, bp_table *t, const unsigned char *done, size_t n_done,
                       journal *jr, bp_error *err)
{
    const char *stop = getenv("BITPLAN_INTERRUPT_AFTER");   /* test hook: raise SIGINT */
    measurer ms;
    if (measurer_init(&ms, cfg, m, err) < 0)
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
        if (measure_layer(&ms, i, t, err) < 0 || journal_layer(jr, t, before, i, err) < 0)
            rc = -1;
        finished++;
        if (rc == 0 && stop && i + 1 == (size_t)atol(stop))
            raise(SIGINT);
    }
    measurer_free(&ms);
    if (rc < 0)
        return -1;
    if (progress)
        progress(ctx, m->n_layers, m->n_layers, NULL);
    if (bp_interrupt_requested)
        return bp_fail(err, "interrupted after the last layer; run again to finish");
    return 0;
}

/* ---- distributed (distrib.h) -------------------------------------------- */

/*
 * The cost model the layers are dealt by: estimated flops of measuring
 * layer d (README, "Running across machines"): per activation width the
 * Gram (n in^2 per group, from rows) and, quantized, the cross terms; per
 * candidate the quadratic form 2 o in^2; GPTQ's factor (in^3 / 3) per
 * width and its updates 2 o in^2 per candidate; ERQ's solves (in^3) and
 * products per candidate.
 */
static double layer_flops(const bp_layer_desc *d, const bp_config *cfg)
{
    double in = (double)d->in, g = d->groups, o = (double)d->out / g;
    double n = d->stats ? 0.0 : (double)d->n, w = (double)cfg->n_wbits;
    double a = (double)cfg->n_abits, qa = 0.0, f = 0.0;
    for (size_t i = 0; i < cfg->n_abits; i++)
        qa += cfg->abits[i] < BP_BITS_FLOAT;
    double cross = d->stats ? 4.0 * o * in * in : fmin(3.0 * n * in * in + 4.0 * o * in * in,
                                                       4.0 * n * in * o);
    f += a * n * in * in + qa * cross;
    for (size_t q = 0; q < cfg->n_quantizers; q++) {
        f += w * a * 2.0 * o * in * in;
        if (cfg->quantizers[q] == BP_WQ_GPTQ)
            f += a * (in * in * in / 3.0 + w * 2.0 * o * in * in);
        else if (cfg->quantizers[q] == BP_WQ_ERQ)
            f += a * w * (in * in * in + 4.0 * o * in * in);
    }
    return g * f + 1.0;
}

/* Do layers i - 1 and i read the same inputs (the same statistics set, or
 * equal bytes of the same shape in a safetensors file)? */
static int same_inputs(const bp_model *m, size_t i)
{
    const bp_layer_desc *a = &m->layers[i - 1], *b = &m->layers[i];
    if (a->stats || b->stats)
        return a->stats && b->stats && strcmp(a->stats, b->stats) == 0;
    if (a->input < 0 || b->input < 0 || m->calib.is_dir)
        return 0;
    const bp_st_tensor *x = &m->calib.st.tensors[a->input], *y = &m->calib.st.tensors[b->input];
    const unsigned char *base = m->calib.st.map + m->calib.st.data_start;
    return x->dtype == y->dtype && x->end - x->begin == y->end - y->begin &&
           memcmp(x->shape, y->shape, sizeof x->shape) == 0 &&
           memcmp(base + x->begin, base + y->begin, x->end - x->begin) == 0;
}

typedef struct unit {
    size_t first, count;             /* consecutive layers reading the same inputs */
    double cost;
} unit;

static int cmp_unit_cost(const void *a, const void *b)
{
    const unit *x = a, *y = b;
    return x->cost > y->cost ? -1 : x->cost < y->cost ? 1 : (x->first > y->first) - (x->first < y->first);
}

/* owner[i] = the rank that measures layer i (layers not done): runs of
 * layers with the same inputs stay together, dealt longest first to the
 * least loaded rank. */
static int deal_layers(const bp_config *cfg, const bp_model *m, const unsigned char *done,
                       int ranks, int *owner, bp_error *err)
{
    unit *u = bp_malloc((m->n_layers + 1) * sizeof *u, err);
    double *load = bp_calloc((size_t)ranks, sizeof *load, err);
    if (!u || !load) {
        free(u);
        free(load);
        return -1;
    }
    size_t nu = 0;
    for (size_t i = 0; i < m->n_layers; i++) {
        owner[i] = -1;
        if (done[i])
            continue;
        double c = layer_flops(&m->layers[i], cfg);
        if (nu && u[nu - 1].first + u[nu - 1].count == i && same_inputs(m, i))
            u[nu - 1].count++, u[nu - 1].cost += c;
        else
            u[nu++] = (unit){i, 1, c};
    }
    qsort(u, nu, sizeof *u, cmp_unit_cost);
    for (size_t k = 0; k < nu; k++) {
        int best = 0;
        for (int r = 1; r < ranks; r++)
            if (load[r] < load[best])
                best = r;
        load[best] += u[k].cost;
        for (size_t j = 0; j < u[k].count; j++)
            owner[u[k].first + j] = best;
    }
    free(u);
    free(load);
    return 0;
}

/* A worker's message on rank 0: a layer's rows into t and the journal. */
static int take_message(const bp_model *m, int from, int kind, const char *buf, size_t n,
                        bp_table *t, journal *jr, bp_error *err)
{
    if (kind == BP_MSG_ERROR)
        return bp_fail(err, "rank %d: %s", from, buf);
    int64_t idx;
    if (kind != BP_MSG_LAYER || n < sizeof idx)
        return bp_fail(err, "rank %d: unexpected message %d", from, kind);
    memcpy(&idx, buf, sizeof idx);
    if (idx < 0 || (size_t)idx >= m->n_layers)
        return bp_fail(err, "rank %d: layer index %lld out of range", from, (long long)idx);
    bp_table got;
    size_t before = t->n;
    if (bp_table_parse_csv(&got, buf + sizeof idx, n - sizeof idx, "rank message", err) < 0)
        return -1;
    int rc = 0;
    for (size_t r = 0; rc == 0 && r < got.n; r++)
        rc = bp_table_add(t, &got.rows[r], err);
    bp_table_free(&got);
    return rc < 0 ? -1 : journal_layer(jr, t, before, (size_t)idx, err);
}

/* Rank 0 of several: deal the layers not done, measure its own, gather the
 * others' as they come (each journaled on arrival). */
static int measure_distributed(const bp_config *cfg, const bp_model *m, bp_progress_fn progress,
                               void *ctx, bp_table *t, const unsigned char *done,
                               size_t n_done, journal *jr, bp_error *err)
{
    int ranks = bp_dist_size();
    int *owner = bp_malloc((m->n_layers + 1) * sizeof *owner, err);
    int64_t *list = bp_malloc((m->n_layers + 1) * sizeof *list, err);
    measurer ms = {0};
    int rc = owner && list && deal_layers(cfg, m, done, ranks, owner, err) == 0 &&
             measurer_init(&ms, cfg, m, err) == 0 ? 0 : -1;
    size_t remote = 0, finished = n_done;
    for (int r = 1; rc == 0 && r < ranks; r++) {
        size_t k = 0;
        for (size_t i = 0; i < m->n_layers; i++)
            if (owner[i] == r)
                list[k++] = (int64_t)i;
        remote += k;
        if (bp_dist_send(r, BP_MSG_PLAN, list, k * sizeof *list, 1) < 0)
            rc = bp_fail(err, "cannot send rank %d its layers", r);
    }
    for (size_t i = 0; rc == 0 && (i < m->n_layers || remote); ) {
        int from, kind;
        char *buf = NULL;
        size_t n;
        int own = i < m->n_layers;
        if (own && owner[i] != 0) {
            i++;
            continue;
        }
        int got = bp_dist_recv(0, 0, &from, &kind, &buf, &n);   /* what has arrived */
        if (got < 0)
            rc = bp_fail(err, "out of memory receiving a rank's rows");
        else if (got) {
            rc = take_message(m, from, kind, buf, n, t, jr, err);
            remote--, finished++;
            if (rc == 0 && progress)
                progress(ctx, finished, m->n_layers, t->n ? t->rows[t->n - 1].layer : NULL);
        } else if (bp_interrupt_requested) {
            rc = bp_fail(err, "interrupted after %zu of %zu layers; they are kept in %s, run "
                         "again to continue", finished, m->n_layers, jr->path);
        } else if (own) {
            size_t before = t->n;
            if (progress)
                progress(ctx, finished, m->n_layers, m->layers[i].name);
            rc = measure_layer(&ms, i, t, err) < 0 || journal_layer(jr, t, before, i, err) < 0
                     ? -1 : 0;
            i++, finished++;
        } else {
            struct timespec ts = {0, 5000000};   /* waiting for the others */
            nanosleep(&ts, NULL);
        }
        free(buf);
    }
    if (ms.sg)
        measurer_free(&ms);
    free(owner);
    free(list);
    if (rc == 0 && progress)
        progress(ctx, m->n_layers, m->n_layers, NULL);
    return rc;
}

int bp_sens_worker(const bp_config *cfg, const bp_error *cfg_err)
{
    bp_model m;
    int opened = 0;
    for (;;) {
        int from, kind;
        char *buf = NULL;
        size_t n;
        bp_error err;
        if (bp_dist_recv(1, 1, &from, &kind, &buf, &n) <= 0 || kind != BP_MSG_PLAN) {
            free(buf);
            break;                   /* STOP (or nothing more can come) */
        }
        int rc = 0;
        if (!cfg) {
            err = *cfg_err;
            rc = -1;
        } else if (!opened) {
            rc = bp_model_open(&m, cfg->weights, cfg->calibration, cfg->include, cfg->n_include,
                               cfg->exclude, cfg->n_exclude, &err);
            opened = rc == 0;
        }
        measurer ms = {0};
        if (rc == 0)
            rc = measurer_init(&ms, cfg, &m, &err);
        const int64_t *list = (const int64_t *)buf;
        for (size_t k = 0; rc == 0 && k < n / sizeof *list; k++) {
            bp_table t;
            bp_table_init(&t);
            char *text = NULL;
            size_t len = 0;
            FILE *mem = NULL;
            if (list[k] < 0 || (size_t)list[k] >= m.n_layers)
                rc = bp_fail(&err, "layer index %lld out of range", (long long)list[k]);
            else if ((rc = measure_layer(&ms, (size_t)list[k], &t, &err)) == 0 &&
                     !(mem = open_memstream(&text, &len)))
                rc = bp_fail(&err, "out of memory");
            if (rc == 0) {
                fwrite(&list[k], sizeof *list, 1, mem);
                fputs(BP_TABLE_HEADER "\n", mem);
                bp_table_write_rows(&t, 0, t.n, mem);
                fclose(mem);
                mem = NULL;
                if (bp_dist_send(0, BP_MSG_LAYER, text, len, 1) < 0)
                    rc = bp_fail(&err, "cannot send layer %lld's rows", (long long)list[k]);
            }
            if (mem)
                fclose(mem);
            free(text);
            bp_table_free(&t);
        }
        if (ms.sg)
            measurer_free(&ms);
        if (rc < 0)                  /* rank 0 reports it and ends the job */
            bp_dist_send(0, BP_MSG_ERROR, err.msg, strlen(err.msg) + 1, 0);
        bp_dist_flush();
        free(buf);
    }
    if (opened)
        bp_model_close(&m);
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

static int record_noise(const bp_model *m, bp_metric metric, bp_sens_result *res,
                        bp_error *err);

/* metric: auto -> the most informed metric every layer's data allows: the
 * decision Fisher (ranks layers by what they cost the task best on the e2e
 * models: README), the output Fisher, its diagonal, the relative error, the
 * weights' error without calibration. */
static void resolve_metric(bp_config *cfg, const bp_model *m)
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
                  : m->has_calib ? BP_METRIC_RELATIVE
                                 : BP_METRIC_WEIGHT;
    cfg->metric_auto = 0;
}

int bp_run_sensitivity(bp_config *cfg, int force, bp_progress_fn progress,
                       void *progress_ctx, bp_sens_result *res, bp_error *err)
{
    bp_model m;
    char key[65];
    double t0 = bp_now();
    memset(res, 0, sizeof *res);
    bp_table_init(&res->table);
    if (bp_model_open(&m, cfg->weights, cfg->calibration, cfg->include, cfg->n_include,
                      cfg->exclude, cfg->n_exclude, err) < 0)
        return -1;
    res->n_layers = m.n_layers;
    resolve_metric(cfg, &m);
    if (record_noise(&m, cfg->metric, res, err) < 0) {
        bp_model_close(&m);
        bp_sens_result_free(res);
        return -1;
    }
    int rc = -1;
    char *csv = NULL, *memo_path = NULL;
    bp_hash_memo memo;
    memset(&memo, 0, sizeof memo);
    if (check_pins(cfg, &m, err) < 0 || check_layers(cfg, &m, err) < 0 ||
        bp_mkdirs(cfg->out_dir, err) < 0 ||
        !(csv = bp_path_join(cfg->out_dir, cfg->table_name, err)) ||
        !(memo_path = bp_path_join(cfg->out_dir, HASH_MEMO, err)))
        goto out;
    bp_hash_memo_open(&memo, memo_path);
    int hashed = tensorset_sha256(&m.weights, &memo, res->model_sha256, err) == 0 &&
                 (!m.has_calib || tensorset_sha256(&m.calib, &memo, res->calib_sha256, err) == 0);
    bp_hash_memo_close(&memo);
    if (!hashed)
        goto out;
    bp_profile_add(BP_STAGE_LOAD, bp_now() - t0);
    cache_key(cfg, &m, res, key);
    int reselected = 0;
    if (!force && cache_load(csv, key, cfg->metric, &res->table, &reselected) == 0) {
        res->from_cache = 1;
        if (reselected && store_timed(&res->table, csv, key, err) < 0)
            goto out;
    } else {
        char partial[4096];
        journal jr = {NULL, NULL};
        snprintf(partial, sizeof partial, "%s.partial", csv);
        if (check_memory(cfg, &m, err) < 0)
            goto out;
        unsigned char *done = bp_calloc(m.n_layers + 1, 1, err);
        if (!done)
            goto out;
        long keep = 0;
        size_t n_done = force ? 0 : journal_resume(partial, key, &m, done, &res->table, &keep);
        res->resumed_layers = n_done;
        int ok = journal_open(&jr, csv, key, n_done ? keep : 0, err) == 0 &&
                 (bp_dist_size() > 1
                      ? measure_distributed(cfg, &m, progress, progress_ctx, &res->table, done,
                                            n_done, &jr, err)
                      : measure_all(cfg, &m, progress, progress_ctx, &res->table, done, n_done,
                                    &jr, err)) == 0 &&
                 sort_by_layer(&m, &res->table, err) == 0 &&
                 bp_table_select(&res->table, cfg->metric, err) == 0 &&   /* resumed rows too */
                 store_timed(&res->table, csv, key, err) == 0;
        free(done);
        journal_close(&jr, ok);
        if (!ok)
            goto out;
    }
    rc = 0;
out:
    res->seconds = bp_now() - t0;
    free(csv);
    free(memo_path);
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

int bp_shrink_noisy(bp_table *t, const bp_sens_result *res, bp_metric metric, int *shrunk,
                    char *note, bp_error *err)
{
    *shrunk = 0;
    note[0] = '\0';
    size_t n = res->n_layers;
    if (!res->noise_rse || !n)
        return 0;
    double *y = bp_calloc(n, sizeof *y, err), *v = bp_calloc(n, sizeof *v, err);
    double *s2 = bp_malloc(n * sizeof *s2, err);
    int rc = -1;
    if (!y || !v || !s2)
        goto out;
    /* per layer: log(sum metric / sum relative) and its noise variance */
    for (size_t i = 0; i < t->n; i++) {
        const bp_table_row *r = &t->rows[i];
        size_t l = 0;
        while (l < n && strcmp(res->noise_layer[l], r->layer) != 0)
            l++;
        if (l == n || !isfinite(r->value[metric]) || !isfinite(r->value[BP_METRIC_RELATIVE]))
            goto none;
        y[l] += r->value[metric];
        v[l] += r->value[BP_METRIC_RELATIVE];
    }
    double worst = 0.0, mean_s2 = 0.0, mean = 0.0, var = 0.0;
    for (size_t l = 0; l < n; l++) {
        double rse = res->noise_rse[l];
        if (!isfinite(rse) || !(y[l] > 0) || !(v[l] > 0))
            goto none;
        y[l] = log(y[l] / v[l]);
        s2[l] = log1p(rse * rse);       /* the variance of log rho */
        worst = fmax(worst, rse);
        mean_s2 += s2[l] / (double)n;
        mean += y[l] / (double)n;
    }
    for (size_t l = 0; l < n; l++)
        var += (y[l] - mean) * (y[l] - mean) / (double)(n > 1 ? n - 1 : 1);
    double tau2 = fmax(var - mean_s2, 0.0), wsum = 0.0, mu = 0.0;
    for (size_t l = 0; l < n; l++) {                /* the precision-weighted mean */
        double w = 1.0 / (tau2 + s2[l] + 1e-300);
        mu += w * y[l];
        wsum += w;
    }
    mu /= wsum;
    double most = 0.0;
    for (size_t l = 0; l < n; l++) {
        double keep = tau2 / (tau2 + s2[l] + 1e-300), shrunk_y = mu + keep * (y[l] - mu);
        v[l] = exp(shrunk_y - y[l]);                /* the factor on the layer's errors */
        most = fmax(most, fabs(shrunk_y - y[l]));
    }
    for (size_t i = 0; i < t->n; i++) {
        size_t l = 0;
        while (strcmp(res->noise_layer[l], t->rows[i].layer) != 0)
            l++;
        t->rows[i].error *= v[l];
    }
    *shrunk = 1;
    snprintf(note, 512, "%s; relative standard error of tr F up to %.0f %%: layer scales "
             "(over the relative error) shrunk toward their mean, errors moved up to %.2fx",
             res->noise_how[0] ? res->noise_how : "Fisher", 100.0 * worst, exp(most));
none:
    rc = 0;
out:
    free(y);
    free(v);
    free(s2);
    return rc;
}

int bp_scale_errors(bp_table *t, const char *path, bp_metric metric, char *predicts,
                    double *exponent, bp_error *err)
{
    bp_scales sc;
    if (bp_scales_load(&sc, path, err) < 0)
        return -1;
    const char *m = bp_metric_name(metric);
    int rc = 0;
    for (size_t i = 0; i < t->n && rc == 0; i++) {
        double s = bp_scales_get(&sc, t->rows[i].layer, m, t->rows[i].wbits);
        if (s < 0)
            rc = bp_fail(err, "%s: no scale for layer '%s' and metric '%s' at %d-bit weights "
                         "(calibrate with this config: tools/calibrate.py)", path,
                         t->rows[i].layer, m, t->rows[i].wbits);
        else
            t->rows[i].error *= s;
    }
    if (rc == 0) {
        snprintf(predicts, 16, "%s", sc.objective);
        *exponent = sc.exponent;
    }
    bp_scales_free(&sc);
    return rc;
}

/* ---- table -> integer program ----------------------------------------- */

typedef struct ip_build {
    size_t n_layers;
    size_t *first;            /* n_layers + 1 */
    size_t *row;              /* candidate -> table row */
    double *error, *bits, *bops, *latency;
    unsigned char *allowed;
    int64_t *params;          /* per layer */
    const char **names;       /* per layer */
    size_t fixed;             /* layers whose candidate was given */
} ip_build;

static void ip_build_free(ip_build *b)
{
    free(b->first);
    free(b->row);
    free(b->error);
    free(b->bits);
    free(b->bops);
    free(b->latency);
    free(b->allowed);
    free(b->params);
    free(b->names);
    memset(b, 0, sizeof *b);
}

static const bp_table *sort_tab;
static int cmp_by_layer(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    int c = strcmp(sort_tab->rows[x].layer, sort_tab->rows[y].layer);
    return c ? c : (x < y ? -1 : x > y);
}
static int cmp_by_first_row(const void *a, const void *b)
{
    size_t x = **(const size_t *const *)a, y = **(const size_t *const *)b;
    return x < y ? -1 : x > y;
}

/* Candidates grouped by layer; layers in order of first appearance, the
 * candidates of a layer in table order. */
static int group_rows(const bp_table *t, ip_build *b, bp_error *err)
{
    size_t n = t->n, *idx = bp_malloc(n * sizeof *idx, err);
    size_t **starts = bp_malloc(n * sizeof *starts, err);
    int rc = -1;
    if (!idx || !starts)
        goto out;
    for (size_t i = 0; i < n; i++)
        idx[i] = i;
    sort_tab = t;
    qsort(idx, n, sizeof *idx, cmp_by_layer);
    size_t ng = 0;
    for (size_t i = 0; i < n; i++)
        if (i == 0 || strcmp(t->rows[idx[i]].layer, t->rows[idx[i - 1]].layer) != 0)
            starts[ng++] = &idx[i];
    qsort(starts, ng, sizeof *starts, cmp_by_first_row);
    b->n_layers = ng;
    b->first = bp_malloc((ng + 1) * sizeof *b->first, err);
    b->row = bp_malloc(n * sizeof *b->row, err);
    b->params = bp_malloc(ng * sizeof *b->params, err);
    b->names = bp_malloc(ng * sizeof *b->names, err);
    if (!b->first || !b->row || !b->params || !b->names)
        goto out;
    size_t c = 0;
    for (size_t g = 0; g < ng; g++) {
        const char *name = t->rows[*starts[g]].layer;
        b->first[g] = c;
        b->names[g] = name;
        b->params[g] = t->rows[*starts[g]].params;
        for (size_t *p = starts[g]; p < idx + n && strcmp(t->rows[*p].layer, name) == 0; p++)
            b->row[c++] = *p;
    }
    b->first[ng] = c;
    rc = 0;
out:
    free(idx);
    free(starts);
    return rc;
}

/* Layers whose candidate is given keep only that candidate (b->fixed counts
 * the layers so restricted). */
static int apply_fixed(const bp_table *t, const bp_solve_request *req, ip_build *b,
                       bp_error *err)
{
    if (!req->n_fixed)
        return 0;
    unsigned char *mark = bp_calloc(b->n_layers ? b->n_layers : 1, 1, err);
    if (!mark)
        return -1;
    int rc = 0;
    for (size_t f = 0; rc == 0 && f < req->n_fixed; f++) {
        const bp_choice *ch = &req->fixed[f];
        int hit = 0;
        for (size_t l = 0; l < b->n_layers; l++) {
            if (ch->layer && strcmp(ch->layer, b->names[l]) != 0)
                continue;
            int any = 0;
            hit = 1;
            for (size_t c = b->first[l]; c < b->first[l + 1]; c++) {
                const bp_table_row *r = &t->rows[b->row[c]];
                int ok = r->wbits == ch->wbits && r->abits == ch->abits &&
                         (!ch->quantizer || strcmp(r->quantizer, ch->quantizer) == 0);
                b->allowed[c] &= (unsigned char)ok;
                any |= b->allowed[c];
            }
            if (!any) {
                rc = bp_fail(err, "layer '%s': no measured candidate at %d-bit weights and "
                             "%d-bit activations%s%s (within its pins and allowed widths)",
                             b->names[l], ch->wbits, ch->abits,
                             ch->quantizer ? " with quantizer " : "",
                             ch->quantizer ? ch->quantizer : "");
                break;
            }
            b->fixed += !mark[l];
            mark[l] = 1;
        }
        if (rc == 0 && !hit)
            rc = bp_fail(err, "layer '%s' is given a candidate but is not among the planned "
                         "layers", ch->layer);
    }
    free(mark);
    return rc;
}

static int apply_pins(const bp_table *t, const bp_solve_request *req, ip_build *b,
                      bp_error *err)
{
    for (size_t p = 0; p < req->n_pins; p++) {
        const bp_pin *pin = &req->pins[p];
        int hit = 0;
        for (size_t l = 0; l < b->n_layers; l++) {
            if (fnmatch(pin->pattern, b->names[l], 0) != 0)
                continue;
            hit = 1;
            for (size_t c = b->first[l]; c < b->first[l + 1]; c++) {
                const bp_table_row *r = &t->rows[b->row[c]];
                if ((pin->wbits && r->wbits != pin->wbits) ||
                    (pin->abits && r->abits != pin->abits))
                    b->allowed[c] = 0;
            }
        }
        if (!hit)
            return bp_fail(err, "pins[%zu]: pattern '%s' matches no layer", p, pin->pattern);
    }
    for (size_t a = 0; a < req->n_allow; a++) {
        const bp_allow *al = &req->allow[a];
        int hit = 0;
        for (size_t l = 0; l < b->n_layers; l++) {
            if (fnmatch(al->pattern, b->names[l], 0) != 0)
                continue;
            hit = 1;
            for (size_t c = b->first[l]; c < b->first[l + 1]; c++) {
                const bp_table_row *r = &t->rows[b->row[c]];
                int ok_w = !al->n_wbits, ok_a = !al->n_abits;
                for (size_t i = 0; i < al->n_wbits; i++)
                    ok_w |= r->wbits == al->wbits[i];
                for (size_t i = 0; i < al->n_abits; i++)
                    ok_a |= r->abits == al->abits[i];
                if (!ok_w || !ok_a)
                    b->allowed[c] = 0;
            }
        }
        if (!hit)
            return bp_fail(err, "allowed[%zu]: pattern '%s' matches no layer", a, al->pattern);
    }
    for (size_t l = 0; l < b->n_layers; l++) {
        int any = 0;
        for (size_t c = b->first[l]; c < b->first[l + 1]; c++)
            any |= b->allowed[c];
        if (!any)
            return bp_fail(err, "layer '%s': no candidate satisfies its pins and allowed "
                           "widths", b->names[l]);
    }
    return apply_fixed(t, req, b, err);
}

static int build_ip(const bp_table *t, const bp_solve_request *req, ip_build *b,
                    bp_error *err)
{
    memset(b, 0, sizeof *b);
    if (group_rows(t, b, err) < 0)
        return -1;
    size_t nc = b->first[b->n_layers];
    b->error = bp_malloc(nc * sizeof *b->error, err);
    b->bits = bp_malloc(nc * sizeof *b->bits, err);
    b->bops = bp_malloc(nc * sizeof *b->bops, err);
    b->allowed = bp_malloc(nc, err);
    if (!b->error || !b->bits || !b->bops || !b->allowed)
        return -1;
    for (size_t c = 0; c < nc; c++) {
        const bp_table_row *r = &t->rows[b->row[c]];
        b->error[c] = r->error;
        b->bits[c] = (double)r->weight_bits;
        b->bops[c] = (double)r->macs * r->wbits * r->abits;
        b->allowed[c] = 1;
    }
    if (req->latency) {
        if (!(b->latency = bp_malloc(nc * sizeof *b->latency, err)))
            return -1;
        for (size_t c = 0; c < nc; c++) {
            const bp_table_row *r = &t->rows[b->row[c]];
            b->latency[c] = bp_latency_get(req->latency, r->layer, r->wbits, r->abits);
            if (b->latency[c] < 0)
                return bp_fail(err, "%s: no latency for layer '%s' at %d-bit weights and "
                               "%d-bit activations", req->latency->path, r->layer, r->wbits,
                               r->abits);
        }
    }
    return apply_pins(t, req, b, err);
}

/* The program the solver sees: tied layers merged into one (identity
 * without ties).  tied->res point at the merged sums. */
static int build_tied(const bp_table *t, const bp_solve_request *req, const ip_build *b,
                      bp_tied *tied, bp_error *err)
{
    size_t nc = b->first[b->n_layers];
    int *wb = bp_malloc((nc ? nc : 1) * sizeof *wb, err), *ab = bp_malloc((nc ? nc : 1) * sizeof *ab, err);
    int rc = wb && ab ? 0 : -1;
    for (size_t c = 0; rc == 0 && c < nc; c++)
        wb[c] = t->rows[b->row[c]].wbits, ab[c] = t->rows[b->row[c]].abits;
    bp_tie_input in = {b->n_layers, b->first, b->names, wb, ab, b->allowed,
                       {b->error, b->bits, b->bops, b->latency}};
    if (rc == 0)
        rc = bp_ties_merge(&in, req->ties, req->n_ties, tied, err);
    free(wb);
    free(ab);
    return rc;
}

/* Table rows per input layer from a merged choice (one candidate per group). */
static void unmerge(const ip_build *b, const bp_tied *tied, const size_t *choice, size_t *rows)
{
    for (size_t g = 0; g < tied->n_groups; g++)
        for (size_t k = tied->mfirst[g]; k < tied->mfirst[g + 1]; k++) {
            size_t base = tied->pick[tied->pfirst[choice[g]] + (k - tied->mfirst[g])];
            rows[tied->members[k]] = b->row[base];
        }
}

/* ---- solving ------------------------------------------------------------ */

static int infeasible(const bp_solve_request *req, const bp_solution *sol,
                      const char *const *keys, int64_t params, bp_error *err)
{
    if (sol->binding_budget < 0)
        return bp_fail(err, "budget infeasible: each budget can be met alone, but not "
                       "all at once; relax one of them");
    const char *k = keys[sol->binding_budget];
    double m = sol->min_feasible;
    if (strcmp(k, "avg_bits") == 0)
        return bp_fail(err, "budget.avg_bits = %g is infeasible: the smallest feasible "
                       "value is %.6f bits per weight (scales and zero points included)",
                       req->budget.avg_bits, ceil(m / (double)params * 1e6) / 1e6);
    if (strcmp(k, "max_bytes") == 0)
        return bp_fail(err, "budget.max_bytes = %.0f is infeasible: the smallest feasible "
                       "value is %.0f bytes", req->budget.max_bytes, ceil(m / 8.0));
    if (strcmp(k, "max_latency") == 0)
        return bp_fail(err, "budget.max_latency = %.17g is infeasible: the smallest feasible "
                       "value is %.17g", req->budget.max_latency, m);
    if (strcmp(k, "max_bops") == 0)
        return bp_fail(err, "budget.max_bops = %.17g is infeasible: the smallest feasible "
                       "value is %.17g bit operations per sample", req->budget.max_bops, m);
    double ex = req->error_exponent > 0 ? req->error_exponent : 1.0;
    return bp_fail(err, "budget.max_error = %g is infeasible: the smallest feasible value "
                   "is %.17g", req->budget.max_error, ex == 1.0 ? m : pow(fmax(m, 0.0), ex));
}

static int solve_table(const bp_table *t, const bp_solve_request *req, bp_solve_result *res,
                       bp_error *err);

int bp_solve_table(const bp_table *t, const bp_solve_request *req, bp_solve_result *res,
                   bp_error *err)
{
    double t0 = bp_now();
    int rc = solve_table(t, req, res, err);
    bp_profile_add(BP_STAGE_SOLVE, bp_now() - t0);
    return rc;
}

static int solve_table(const bp_table *t, const bp_solve_request *req, bp_solve_result *res,
                       bp_error *err)
{
    ip_build b;
    bp_budget budgets[5];
    const char *keys[5];
    size_t nb = 0;
    memset(res, 0, sizeof *res);
    /* every plan's total error must be a finite double (a sum beyond the largest
     * double would reach the plan as null); the sum of all rows bounds them */
    double all = 0.0;
    size_t worst = 0;
    for (size_t i = 0; i < t->n; i++) {
        all += fabs(t->rows[i].error);
        if (fabs(t->rows[i].error) > fabs(t->rows[worst].error))
            worst = i;
    }
    if (!isfinite(all))
        return bp_fail(err, "the errors sum beyond the largest double (layer '%s' has %g); "
                       "rescale them (plans depend only on their ratios)", t->rows[worst].layer,
                       t->rows[worst].error);
    if (build_ip(t, req, &b, err) < 0) {
        ip_build_free(&b);
        return -1;
    }
    for (size_t l = 0; l < b.n_layers; l++)
        res->total_params += b.params[l];
    /* weight bits are integers, so size limits are floored */
    if (req->budget.avg_bits > 0) {
        keys[nb] = "avg_bits";
        budgets[nb++] = (bp_budget){BP_RES_BITS,
                                    floor(req->budget.avg_bits * (double)res->total_params + 1e-6)};
    }
    if (req->budget.max_bytes > 0) {
        keys[nb] = "max_bytes";
        budgets[nb++] = (bp_budget){BP_RES_BITS, floor(8.0 * req->budget.max_bytes)};
    }
    if (req->budget.max_bops > 0) {
        keys[nb] = "max_bops";
        budgets[nb++] = (bp_budget){BP_RES_BOPS, req->budget.max_bops};
    }
    int wants_latency = req->budget.max_latency > 0 || req->budget.minimize == BP_MIN_LATENCY;
    if (wants_latency && !req->latency) {
        ip_build_free(&b);
        return bp_fail(err, "a latency budget or objective needs a latency table "
                       "(budget.latency_table, or --latency FILE)");
    }
    if (req->budget.max_latency > 0) {
        keys[nb] = "max_latency";
        budgets[nb++] = (bp_budget){BP_RES_LATENCY, req->budget.max_latency};
    }
    if (req->budget.max_error >= 0) {       /* in the objective's units: to additive ones */
        double ex = req->error_exponent > 0 ? req->error_exponent : 1.0;
        keys[nb] = "max_error";
        budgets[nb++] = (bp_budget){BP_RES_ERROR, ex == 1.0 ? req->budget.max_error
                                                            : pow(req->budget.max_error, 1.0 / ex)};
    }
    bp_tied tied;
    if (build_tied(t, req, &b, &tied, err) < 0) {
        ip_build_free(&b);
        return -1;
    }
    bp_problem p = {tied.n_groups, tied.first,
                    {tied.res[0], tied.res[1], tied.res[2], tied.res[3]}, tied.allowed};
    bp_solve_opts o;
    bp_solve_opts_init(&o);
    int only_error = req->budget.max_error >= 0 && nb == 1;
    switch (req->budget.minimize) {
    case BP_MIN_SIZE: o.objective = BP_RES_BITS; break;
    case BP_MIN_BOPS: o.objective = BP_RES_BOPS; break;
    case BP_MIN_LATENCY: o.objective = BP_RES_LATENCY; break;
    case BP_MIN_ERROR: o.objective = BP_RES_ERROR; break;
    default: o.objective = only_error ? BP_RES_BITS : BP_RES_ERROR; break;
    }
    o.budgets = budgets;
    o.n_budgets = nb;
    o.time_limit = req->time_limit;
    o.mip_gap = req->mip_gap;
    res->objective_name = o.objective == BP_RES_ERROR  ? "min_error"
                          : o.objective == BP_RES_BITS ? "min_size"
                          : o.objective == BP_RES_BOPS ? "min_bops"
                                                       : "min_latency";
    int rc = bp_solve_ip(&p, &o, &res->sol, err);
    if (rc == 0 && res->sol.status == BP_SOLVE_INFEASIBLE)
        rc = infeasible(req, &res->sol, keys, res->total_params, err);
    else if (rc == 0 && res->sol.status == BP_SOLVE_TIME_LIMIT)
        rc = bp_fail(err, "the solver hit its time limit (%g s) before finding any plan; "
                     "raise solver.time_limit", req->time_limit);
    else if (rc == 0 && res->sol.status == BP_SOLVE_ERROR)
        rc = bp_fail(err, "the solver failed");
    if (rc == 0) {
        res->n_layers = b.n_layers;
        res->all_fixed = b.fixed >= b.n_layers;
        res->chosen = bp_malloc(b.n_layers * sizeof *res->chosen, err);
        if (!res->chosen)
            rc = -1;
        if (rc == 0)
            unmerge(&b, &tied, res->sol.choice, res->chosen);
        for (size_t l = 0; rc == 0 && l < b.n_layers; l++) {
            const bp_table_row *r = &t->rows[res->chosen[l]];
            res->total_weight_bits += r->weight_bits;
            res->total_error += r->error;
            res->total_bops += (double)r->macs * r->wbits * r->abits;
            if (req->latency)
                res->total_latency += bp_latency_get(req->latency, r->layer, r->wbits, r->abits);
        }
    }
    ip_build_free(&b);
    bp_tied_free(&tied);
    if (rc < 0) {
        int infeasible = res->sol.status == BP_SOLVE_INFEASIBLE;
        bp_solve_result_free(res);
        res->infeasible = infeasible;
    }
    return rc;
}

int bp_table_frontier(const bp_table *t, const bp_solve_request *req, size_t max_points,
                      bp_frontier *f, bp_error *err)
{
    ip_build b;
    memset(f, 0, sizeof *f);
    bp_tied tied;
    memset(&tied, 0, sizeof tied);
    int rc = build_ip(t, req, &b, err);
    if (rc == 0)
        rc = build_tied(t, req, &b, &tied, err);
    if (rc == 0) {
        bp_problem p = {tied.n_groups, tied.first, {tied.res[0], tied.res[1]}, tied.allowed};
        rc = bp_pareto_frontier(&p, BP_RES_BITS, max_points, f, err);
    }
    size_t *rows = rc == 0 ? bp_malloc((f->n ? f->n : 1) * (b.n_layers ? b.n_layers : 1) *
                                       sizeof *rows, err) : NULL;
    if (rc == 0 && !rows)
        rc = -1;
    for (size_t i = 0; rc == 0 && i < f->n; i++)   /* merged candidates -> table rows */
        unmerge(&b, &tied, f->choice + i * tied.n_groups, rows + i * b.n_layers);
    if (rc == 0) {
        free(f->choice);
        f->choice = rows;
        f->n_layers = b.n_layers;
    } else {
        free(rows);
        bp_frontier_free(f);
    }
    ip_build_free(&b);
    bp_tied_free(&tied);
    return rc;
}

int bp_write_program(const bp_table *t, const bp_solve_request *req, FILE *fp, bp_error *err)
{
    ip_build b;
    bp_tied tied;
    memset(&tied, 0, sizeof tied);
    int rc = build_ip(t, req, &b, err);
    if (rc == 0)
        rc = build_tied(t, req, &b, &tied, err);
    if (rc == 0)
        fputs("group,choice,layer,wbits,abits,quantizer,error,weight_bits\n", fp);
    for (size_t g = 0; rc == 0 && g < tied.n_groups; g++)
        for (size_t c = tied.first[g], k = 0; c < tied.first[g + 1]; c++) {
            if (!tied.allowed[c])
                continue;
            for (size_t m = tied.mfirst[g]; m < tied.mfirst[g + 1]; m++) {
                size_t in = tied.pick[tied.pfirst[c] + (m - tied.mfirst[g])];
                const bp_table_row *r = &t->rows[b.row[in]];
                fprintf(fp, "%zu,%zu,", g, k);
                bp_csv_field(fp, r->layer);
                fprintf(fp, ",%d,%d,%s,%.17g,%lld\n", r->wbits, r->abits, r->quantizer,
                        r->error, (long long)r->weight_bits);
            }
            k++;
        }
    ip_build_free(&b);
    bp_tied_free(&tied);
    return rc;
}

void bp_solve_result_free(bp_solve_result *res)
{
    free(res->chosen);
    bp_solution_free(&res->sol);
    memset(res, 0, sizeof *res);
}

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
        plan->metric = bp_metric_name(cfg->metric);
    }
    if (sens) {
        plan->model_sha256 = sens->model_sha256;
        plan->calib_sha256 = sens->calib_sha256[0] ? sens->calib_sha256 : NULL;
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
