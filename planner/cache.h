/*
 * cache.h - the sensitivity cache: a table is reused while nothing that
 * changes its values has changed.  Its key is the SHA-256 of the inputs'
 * contents (hashed once per file state, remembered in output.dir's hash
 * memo), the layers and every setting that changes a value; the cache is
 * "<table>" plus "<table>.key" (the key and the SHA-256 of the CSV bytes,
 * both must match).
 */
#ifndef BP_CACHE_H
#define BP_CACHE_H

#include "../common/bp_error.h"
#include "../sensitivity/table.h"
#include "config.h"
#include "model.h"

/* SHA-256 (hex) of the contents of a tensor set (a file or a directory),
 * through the hash memo (memo may be NULL). */
struct bp_hash_memo;
int bp_tensorset_sha256(const bp_tensorset *ts, struct bp_hash_memo *memo, char hex[65],
                        bp_error *err);
/* The input files' SHA-256 ("" for a missing calibration or importance
 * matrix), with the memo in cfg->out_dir. */
int bp_hash_inputs(const bp_config *cfg, const bp_model *m, char model_hex[65],
                   char calib_hex[65], char imatrix_hex[65], bp_error *err);
/* The cache key of cfg's table over m with those inputs. */
void bp_cache_key(const bp_config *cfg, const bp_model *m, const char *model_hex,
                  const char *calib_hex, const char *imatrix_hex, char hex[65]);
/* The cached table when its key matches (0), else -1; its error column
 * becomes the metric's (*reselected set when that changed it). */
int bp_cache_load(const char *csv_path, const char *key, bp_metric metric, bp_table *t,
                  int *reselected);
/* Store the table and its key (the write counted in the profile). */
int bp_cache_store(const bp_table *t, const char *csv_path, const char *key, bp_error *err);
/* Write a table as CSV, atomically. */
int bp_write_table(const bp_table *t, const char *path, bp_error *err);

#endif
