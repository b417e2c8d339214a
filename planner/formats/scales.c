/*
 * scales.c - read per-layer metric scales (see scales.h).
 */
#include "scales.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/bp_file.h"
#include "plaincsv.h"

void bp_scales_free(bp_scales *s)
{
    for (size_t i = 0; i < s->n; i++) {
        free(s->rows[i].layer);
        free(s->rows[i].metric);
    }
    free(s->rows);
    free(s->path);
    memset(s, 0, sizeof *s);
}

static int row_cmp(const void *a, const void *b)
{
    const bp_scale_row *x = a, *y = b;
    int c = strcmp(x->layer, y->layer);
    if (!c)
        c = strcmp(x->metric, y->metric);
    return c ? c : (x->wbits > y->wbits) - (x->wbits < y->wbits);
}

static const char *const objectives[] = {"kl", "flips", "loss", "metric", NULL};

static int parse_row(void *ctx, char **f, size_t nf, const int *col, long line,
                     bp_error *err)
{
    bp_scales *s = ctx;
    char *end;
    double v = strtod(f[col[3]], &end);
    if (!*f[col[0]] || !*f[col[1]] || !*f[col[3]] || *end || !isfinite(v) || v < 0)
        return bp_fail(err, "%s:%ld: expected layer,metric,objective,scale with a scale that "
                       "is a finite number >= 0", s->path, line);
    double ex = 1.0;
    if (col[4] >= 0 && (size_t)col[4] < nf && *f[col[4]]) {
        ex = strtod(f[col[4]], &end);
        if (*end || !(ex > 0.0 && ex <= 1.0))
            return bp_fail(err, "%s:%ld: exponent '%s': expected a number in (0, 1]", s->path,
                           line, f[col[4]]);
    }
    if (s->n && ex != s->exponent)
        return bp_fail(err, "%s:%ld: exponent %g, but earlier rows have %g (one per file)",
                       s->path, line, ex, s->exponent);
    s->exponent = ex;
    long w = 0;
    if (col[5] >= 0 && (size_t)col[5] < nf && *f[col[5]]) {
        w = strtol(f[col[5]], &end, 10);
        if (*end || w < 2 || w > 16)
            return bp_fail(err, "%s:%ld: wbits '%s': expected an integer in 2..16 (or nothing: "
                           "every width)", s->path, line, f[col[5]]);
    }
    const char *obj = f[col[2]];
    int known = 0;
    for (int i = 0; objectives[i]; i++)
        known |= strcmp(obj, objectives[i]) == 0;
    if (!known)
        return bp_fail(err, "%s:%ld: objective '%s': expected kl, flips, loss or metric",
                       s->path, line, obj);
    if (!s->objective[0])
        snprintf(s->objective, sizeof s->objective, "%s", obj);
    else if (strcmp(s->objective, obj) != 0)
        return bp_fail(err, "%s:%ld: objective '%s', but earlier rows calibrate to '%s' (one "
                       "objective per file)", s->path, line, obj, s->objective);
    bp_scale_row *r = realloc(s->rows, (s->n + 1) * sizeof *r);
    if (!r)
        return bp_fail(err, "%s: out of memory", s->path);
    s->rows = r;
    r[s->n] = (bp_scale_row){bp_strdup(f[col[0]], err), bp_strdup(f[col[1]], err), (int)w, v,
                             line};
    if (!r[s->n].layer || !r[s->n].metric) {
        free(r[s->n].layer);
        free(r[s->n].metric);
        return -1;
    }
    s->n++;
    return 0;
}

int bp_scales_load(bp_scales *s, const char *path, bp_error *err)
{
    static const char *const names[6] = {"layer", "metric", "objective", "scale", "exponent",
                                         "wbits"};
    memset(s, 0, sizeof *s);
    if (!(s->path = bp_strdup(path, err)))
        return -1;
    int rc = bp_plaincsv_read(path, names, 6, 4, "layer,metric,objective,scale (tools/calibrate.py "
                              "writes it)", parse_row, s, err);
    if (rc == 0 && s->n == 0)
        rc = bp_fail(err, "%s: no scales (expected one row per layer and metric)", path);
    if (rc == 0 && s->n > 1)
        qsort(s->rows, s->n, sizeof *s->rows, row_cmp);
    for (size_t i = 1; rc == 0 && i < s->n; i++)
        if (row_cmp(&s->rows[i - 1], &s->rows[i]) == 0)
            rc = bp_fail(err, "%s:%ld: layer '%s' and metric '%s'%s are listed twice", path,
                         s->rows[i].line > s->rows[i - 1].line ? s->rows[i].line
                                                               : s->rows[i - 1].line,
                         s->rows[i].layer, s->rows[i].metric,
                         s->rows[i].wbits ? " at that width" : "");
    if (rc < 0)
        bp_scales_free(s);
    return rc;
}

double bp_scales_get(const bp_scales *s, const char *layer, const char *metric, int wbits)
{
    if (!s->n)
        return -1.0;
    bp_scale_row key = {(char *)layer, (char *)metric, wbits, 0.0, 0};
    const bp_scale_row *r = bsearch(&key, s->rows, s->n, sizeof *s->rows, row_cmp);
    if (!r && wbits) {
        key.wbits = 0;
        r = bsearch(&key, s->rows, s->n, sizeof *s->rows, row_cmp);
    }
    return r ? r->scale : -1.0;
}
