/*
 * yamlread.c - typed values from a YAML tree (see yamlread.h).
 */
#include "yamlread.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "../../common/bp_file.h"

int bp_yr_at(const bp_yread *c, const bp_ynode *n, const char *key, const char *fmt,
             const char *what)
{
    return bp_fail(c->err, "%s:%d:%d: %s: %s%s", c->label, n ? n->line : 0,
                   n ? n->col : 0, key, fmt, what ? what : "");
}

int bp_yr_null(const bp_ynode *n)
{
    return !n || (n->type == BP_Y_SCALAR && !n->quoted &&
                  (!n->str[0] || strcmp(n->str, "~") == 0 || strcmp(n->str, "null") == 0));
}

int bp_yr_scalar(const bp_yread *c, const bp_ynode *n, const char *key, const char *what)
{
    if (n && n->type == BP_Y_SCALAR && !bp_yr_null(n))
        return 0;
    char buf[160];
    snprintf(buf, sizeof buf, "expected %s, got %s", what,
             bp_yr_null(n) ? "null" : bp_ynode_type_name(n));
    return bp_yr_at(c, n, key, buf, NULL);
}

int bp_yr_string(const bp_yread *c, const bp_ynode *n, const char *key, char **out)
{
    if (bp_yr_scalar(c, n, key, "a string") < 0)
        return -1;
    free(*out);
    *out = bp_strdup(n->str, c->err);
    return *out ? 0 : -1;
}

int bp_yr_double(const bp_yread *c, const bp_ynode *n, const char *key, double lo, double hi,
                 double *out)
{
    if (bp_yr_scalar(c, n, key, "a number") < 0)
        return -1;
    char *end;
    errno = 0;
    double v = strtod(n->str, &end);
    if (*end || errno || !isfinite(v) || n->quoted) {
        char buf[200];
        if (n->quoted && !*end && !errno && n->str[0])
            snprintf(buf, sizeof buf, "expected a number, got the quoted string \"%.100s\" "
                     "(write it without quotes)", n->str);
        else
            snprintf(buf, sizeof buf, "expected a number, got '%.100s'", n->str);
        return bp_yr_at(c, n, key, buf, NULL);
    }
    if (v < lo || v > hi) {
        char buf[200];
        snprintf(buf, sizeof buf, "expected a value in [%g, %g], got %g", lo, hi, v);
        return bp_yr_at(c, n, key, buf, NULL);
    }
    *out = v;
    return 0;
}

int bp_yr_int(const bp_yread *c, const bp_ynode *n, const char *key, long lo, long hi,
              long *out)
{
    if (bp_yr_scalar(c, n, key, "an integer") < 0)
        return -1;
    char *end;
    errno = 0;
    long v = strtol(n->str, &end, 10);
    if (*end || errno || n->quoted || !n->str[0]) {
        char buf[200];
        if (n->quoted && !*end && !errno && n->str[0])
            snprintf(buf, sizeof buf, "expected an integer, got the quoted string \"%.100s\" "
                     "(write it without quotes)", n->str);
        else
            snprintf(buf, sizeof buf, "expected an integer, got '%.100s'", n->str);
        return bp_yr_at(c, n, key, buf, NULL);
    }
    if (v < lo || v > hi) {
        char buf[200];
        snprintf(buf, sizeof buf, "expected an integer in [%ld, %ld], got %ld", lo, hi, v);
        return bp_yr_at(c, n, key, buf, NULL);
    }
    *out = v;
    return 0;
}

int bp_yr_bool(const bp_yread *c, const bp_ynode *n, const char *key, int *out)
{
    if (bp_yr_scalar(c, n, key, "true or false") < 0)
        return -1;
    static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
    for (int i = 0; i < 3 && !n->quoted; i++) {
        if (strcasecmp(n->str, yes[i]) == 0) { *out = 1; return 0; }
        if (strcasecmp(n->str, no[i]) == 0) { *out = 0; return 0; }
    }
    char buf[200];
    snprintf(buf, sizeof buf, "expected true or false, got '%.100s'", n->str);
    return bp_yr_at(c, n, key, buf, NULL);
}

/* names is NULL-terminated; *out = index of the match */
int bp_yr_enum(const bp_yread *c, const bp_ynode *n, const char *key, const char *const *names,
               int *out)
{
    if (bp_yr_scalar(c, n, key, "a name") < 0)
        return -1;
    char list[256] = "";
    for (int i = 0; names[i]; i++) {
        if (strcmp(n->str, names[i]) == 0) {
            *out = i;
            return 0;
        }
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, names[i], sizeof list - strlen(list) - 1);
    }
    char buf[400];
    snprintf(buf, sizeof buf, "expected one of %s, got '%.100s'", list, n->str);
    return bp_yr_at(c, n, key, buf, NULL);
}

int bp_yr_type(const bp_yread *c, const bp_ynode *n, const char *key, bp_ynode_type t)
{
    if (n && n->type == t)
        return 0;
    char buf[160];
    snprintf(buf, sizeof buf, "expected %s, got %s", t == BP_Y_MAP ? "a mapping" : "a list",
             bp_yr_null(n) ? "null" : bp_ynode_type_name(n));
    return bp_yr_at(c, n, key, buf, NULL);
}

int bp_yr_strings(const bp_yread *c, const bp_ynode *n, const char *key, char ***out,
                  size_t *count)
{
    if (bp_yr_type(c, n, key, BP_Y_SEQ) < 0)
        return -1;
    char **list = bp_calloc(n->n, sizeof *list, c->err);
    if (!list)
        return -1;
    for (size_t i = 0; i < n->n; i++)
        if (bp_yr_string(c, n->items[i], key, &list[i]) < 0) {
            for (size_t j = 0; j < i; j++)
                free(list[j]);
            free(list);
            return -1;
        }
    for (size_t i = 0; i < *count; i++)
        free((*out)[i]);
    free(*out);
    *out = list;
    *count = n->n;
    return 0;
}

/* A non-empty list of distinct bit widths in [2, 16]. */
int bp_yr_bits(const bp_yread *c, const bp_ynode *n, const char *key, int **out,
               size_t *count)
{
    if (bp_yr_type(c, n, key, BP_Y_SEQ) < 0)
        return -1;
    if (n->n == 0)
        return bp_yr_at(c, n, key, "expected at least one bit width", NULL);
    int *bits = bp_calloc(n->n, sizeof *bits, c->err);
    if (!bits)
        return -1;
    for (size_t i = 0; i < n->n; i++) {
        long v;
        if (bp_yr_int(c, n->items[i], key, 2, 16, &v) < 0)
            goto fail;
        for (size_t j = 0; j < i; j++)
            if (bits[j] == v) {
                bp_yr_at(c, n->items[i], key, "bit width listed twice", NULL);
                goto fail;
            }
        bits[i] = (int)v;
    }
    free(*out);
    *out = bits;
    *count = n->n;
    return 0;
fail:
    free(bits);
    return -1;
}

/* Walk the keys of one list item (a mapping) named k, refusing duplicate
 * keys; fn handles each key (with its full path kk) and value. */
int bp_yr_walk_item(const bp_yread *c, const bp_ynode *m, const char *k, bp_yr_item_fn fn,
                    void *ctx)
{
    if (bp_yr_type(c, m, k, BP_Y_MAP) < 0)
        return -1;
    for (size_t j = 0; j < m->n; j++) {
        const bp_ynode *kn = m->items[2 * j], *vn = m->items[2 * j + 1];
        char kk[160];
        snprintf(kk, sizeof kk, "%s.%s", k, kn->str);
        for (size_t t = 0; t < j; t++)
            if (strcmp(m->items[2 * t]->str, kn->str) == 0)
                return bp_yr_at(c, kn, kk, "duplicate key", NULL);
        if (fn(c, kk, kn, vn, ctx) < 0)
            return -1;
    }
    return 0;
}
