/*
 * yamlread.h - typed values from a YAML tree (yamltree.h): strings,
 * numbers and integers in a range, booleans, names from a list, lists of
 * strings and of bit widths, and a list item's keys walked once each.
 * Every refusal is one message "FILE:LINE:COL: KEY: expected ..., got ...".
 */
#ifndef BP_YAMLREAD_H
#define BP_YAMLREAD_H

#include <stddef.h>

#include "../../common/bp_error.h"
#include "yamltree.h"

/* Where values come from: the file's label for messages, the directory
 * relative paths resolve against, and where errors go. */
typedef struct bp_yread {
    const char *label;
    const char *dir;
    bp_error *err;
} bp_yread;

/* "LABEL:LINE:COL: KEY: FMT WHAT" at node n (n may be NULL); returns -1. */
int bp_yr_at(const bp_yread *c, const bp_ynode *n, const char *key, const char *fmt,
             const char *what);

/* An absent value, or an unquoted empty, ~ or null. */
int bp_yr_null(const bp_ynode *n);

/* A non-null scalar (what names the expected value), or an error. */
int bp_yr_scalar(const bp_yread *c, const bp_ynode *n, const char *key, const char *what);
/* A node of type t (a mapping or a list), or an error. */
int bp_yr_type(const bp_yread *c, const bp_ynode *n, const char *key, bp_ynode_type t);

/* *out (freed first) = a copy of the string. */
int bp_yr_string(const bp_yread *c, const bp_ynode *n, const char *key, char **out);
/* An unquoted finite number / decimal integer in [lo, hi]. */
int bp_yr_double(const bp_yread *c, const bp_ynode *n, const char *key, double lo, double hi,
                 double *out);
int bp_yr_int(const bp_yread *c, const bp_ynode *n, const char *key, long lo, long hi,
              long *out);
/* true/yes/on or false/no/off (any case, unquoted). */
int bp_yr_bool(const bp_yread *c, const bp_ynode *n, const char *key, int *out);
/* One of the NULL-terminated names; *out its index. */
int bp_yr_enum(const bp_yread *c, const bp_ynode *n, const char *key, const char *const *names,
               int *out);
/* A list of strings, replacing *out (and its *count strings). */
int bp_yr_strings(const bp_yread *c, const bp_ynode *n, const char *key, char ***out,
                  size_t *count);
/* A non-empty list of distinct bit widths in [2, 16], replacing *out. */
int bp_yr_bits(const bp_yread *c, const bp_ynode *n, const char *key, int **out,
               size_t *count);

/* Walk the keys of one list item (a mapping) named k, refusing duplicate
 * keys; fn handles each key (with its full path kk) and value. */
typedef int (*bp_yr_item_fn)(const bp_yread *c, const char *kk, const bp_ynode *kn,
                             const bp_ynode *vn, void *ctx);
int bp_yr_walk_item(const bp_yread *c, const bp_ynode *m, const char *k, bp_yr_item_fn fn,
                    void *ctx);

#endif
