/*
 * cache.c - the sensitivity cache (cache.h): the key, loading a cached
 * table when the key matches, storing one, and hashing the inputs.
 */
#include "cache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bp_file.h"
#include "../common/bp_ggml.h"
#include "../common/bp_profile.h"
#include "filehash.h"
#include "sha256.h"

#define CACHE_FORMAT "bitplan-sensitivity-cache-v3"
#define HASH_MEMO ".bitplan-hashes"

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
void bp_cache_key(const bp_config *cfg, const bp_model *m, const char *model_hex,
                  const char *calib_hex, const char *imatrix_hex, char hex[65])
{
    bp_sha256 h;
    unsigned char d[32];
    char buf[192];
    bp_sha256_init(&h);
    hash_str(&h, CACHE_FORMAT);
    hash_str(&h, model_hex);
    hash_str(&h, calib_hex);
    if (imatrix_hex[0]) {            /* keys without one stay as they were */
        hash_str(&h, "imatrix");
        hash_str(&h, imatrix_hex);
    }
    for (size_t i = 0; i < cfg->n_ggml_types; i++)
        hash_str(&h, bp_ggml_type_name(cfg->ggml_types[i]));
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
int bp_cache_load(const char *csv_path, const char *key, bp_metric metric, bp_table *t,
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

int bp_cache_store(const bp_table *t, const char *csv_path, const char *key,
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
int bp_tensorset_sha256(const bp_tensorset *ts, bp_hash_memo *memo, char hex[65],
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

int bp_hash_inputs(const bp_config *cfg, const bp_model *m, char model_hex[65],
                   char calib_hex[65], char imatrix_hex[65], bp_error *err)
{
    char *memo_path = bp_path_join(cfg->out_dir, HASH_MEMO, err);
    if (!memo_path)
        return -1;
    bp_hash_memo memo;
    memset(&memo, 0, sizeof memo);
    bp_hash_memo_open(&memo, memo_path);
    calib_hex[0] = imatrix_hex[0] = '\0';
    int rc = bp_tensorset_sha256(&m->weights, &memo, model_hex, err) == 0 &&
                     (!m->has_calib || bp_tensorset_sha256(&m->calib, &memo, calib_hex, err) == 0) &&
                     (!m->has_imatrix || bp_hash_memo_file(&memo, m->im.path, imatrix_hex,
                                                           err) == 0)
                 ? 0 : -1;
    bp_hash_memo_close(&memo);
    free(memo_path);
    return rc;
}
