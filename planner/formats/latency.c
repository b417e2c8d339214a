/*
 * latency.c - read a latency table (see latency.h).
 */
#include "latency.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/bp_file.h"
#include "plaincsv.h"

void bp_latency_free(bp_latency *lt)
{
    for (size_t i = 0; i < lt->n; i++)
        free(lt->rows[i].layer);
    free(lt->rows);
    free(lt->path);
    memset(lt, 0, sizeof *lt);
}

static int row_cmp(const void *a, const void *b)
{
    const bp_latency_row *x = a, *y = b;
    int c = strcmp(x->layer, y->layer);
    if (c)
        return c;
    if (x->wbits != y->wbits)
        return x->wbits < y->wbits ? -1 : 1;
    return x->abits < y->abits ? -1 : x->abits > y->abits;
}

static int parse_row(void *ctx, char **f, size_t nf, const int *col, long line,
                     bp_error *err)
{
    bp_latency *lt = ctx;
    (void)nf;
    char *end;
    long w = strtol(f[col[1]], &end, 10);
    int bad = *end || w < 1 || w > 32;
    long a = strtol(f[col[2]], &end, 10);
    bad |= *end || a < 1 || a > 32;
    double v = strtod(f[col[3]], &end);
    if (bad || *end || !*f[col[3]] || !isfinite(v) || v < 0 || !*f[col[0]])
        return bp_fail(err, "%s:%ld: expected layer,wbits,abits,latency with integer widths "
                       "and a latency >= 0", lt->path, line);
    bp_latency_row *r = realloc(lt->rows, (lt->n + 1) * sizeof *r);
    if (!r)
        return bp_fail(err, "%s: out of memory", lt->path);
    lt->rows = r;
    r[lt->n] = (bp_latency_row){bp_strdup(f[col[0]], err), (int)w, (int)a, v, line};
    if (!r[lt->n].layer)
        return -1;
    lt->n++;
    return 0;
}

int bp_latency_load(bp_latency *lt, const char *path, bp_error *err)
{
    static const char *const names[4] = {"layer", "wbits", "abits", "latency"};
    memset(lt, 0, sizeof *lt);
    if (!(lt->path = bp_strdup(path, err)))
        return -1;
    int rc = bp_plaincsv_read(path, names, 4, 4, "layer,wbits,abits,latency", parse_row, lt, err);
    if (rc == 0 && lt->n > 1)
        qsort(lt->rows, lt->n, sizeof *lt->rows, row_cmp);
    for (size_t i = 1; rc == 0 && i < lt->n; i++)
        if (row_cmp(&lt->rows[i - 1], &lt->rows[i]) == 0)
            rc = bp_fail(err, "%s:%ld: layer '%s' at %d/%d bits is listed twice", path,
                         lt->rows[i].line > lt->rows[i - 1].line ? lt->rows[i].line
                                                                 : lt->rows[i - 1].line,
                         lt->rows[i].layer, lt->rows[i].wbits, lt->rows[i].abits);
    if (rc < 0)
        bp_latency_free(lt);
    return rc;
}

double bp_latency_get(const bp_latency *lt, const char *layer, int wbits, int abits)
{
    if (lt->n == 0)
        return -1.0;
    bp_latency_row key = {(char *)layer, wbits, abits, 0.0, 0};
    const bp_latency_row *r = bsearch(&key, lt->rows, lt->n, sizeof *lt->rows, row_cmp);
    return r ? r->latency : -1.0;
}
