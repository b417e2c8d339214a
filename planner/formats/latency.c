/*
 * latency.c - read a latency table (see latency.h).
 */
#include "latency.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../../common/bp_file.h"

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

/* Split line (modified in place) at commas into at most max fields. */
static size_t split(char *line, char **f, size_t max)
{
    size_t n = 0;
    for (char *p = line; n < max;) {
        f[n++] = p;
        char *c = strchr(p, ',');
        if (!c)
            break;
        *c = '\0';
        p = c + 1;
    }
    for (size_t i = 0; i < n; i++) {             /* trim spaces and a CR */
        while (*f[i] == ' ')
            f[i]++;
        size_t k = strlen(f[i]);
        while (k && (f[i][k - 1] == ' ' || f[i][k - 1] == '\r'))
            f[i][--k] = '\0';
    }
    return n;
}

static int parse_row(bp_latency *lt, char **f, size_t nf, const int *col, long line,
                     bp_error *err)
{
    for (int k = 0; k < 4; k++)
        if ((size_t)col[k] >= nf)
            return bp_fail(err, "%s:%ld: expected at least %d fields", lt->path, line,
                           col[k] + 1);
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
    char *text;
    size_t size;
    memset(lt, 0, sizeof *lt);
    if (!(lt->path = bp_strdup(path, err)) || bp_read_file(path, &text, &size, err) < 0) {
        bp_latency_free(lt);
        return -1;
    }
    int col[4] = {-1, -1, -1, -1}, rc = 0;
    long line = 0;
    char *f[64], *next;
    char *start = size >= 3 && !memcmp(text, "\xef\xbb\xbf", 3) ? text + 3 : text; /* BOM */
    for (char *ln = start; ln && *ln && rc == 0; ln = next) {
        next = strchr(ln, '\n');
        if (next)
            *next++ = '\0';
        line++;
        size_t nf = split(ln, f, 64);
        if (line == 1) {
            for (size_t i = 0; i < nf; i++)
                for (int k = 0; k < 4; k++)
                    if (strcmp(f[i], names[k]) == 0)
                        col[k] = (int)i;
            for (int k = 0; k < 4 && rc == 0; k++)
                if (col[k] < 0)
                    rc = bp_fail(err, "%s: missing required column '%s' (header needs "
                                 "layer,wbits,abits,latency)", path, names[k]);
        } else if (nf > 1 || f[0][0]) {
            rc = parse_row(lt, f, nf, col, line, err);
        }
    }
    if (rc == 0 && line == 0)
        rc = bp_fail(err, "%s: empty file (expected a header layer,wbits,abits,latency)", path);
    if (rc == 0)
        if (lt->n > 1)
            qsort(lt->rows, lt->n, sizeof *lt->rows, row_cmp);
    for (size_t i = 1; rc == 0 && i < lt->n; i++)
        if (row_cmp(&lt->rows[i - 1], &lt->rows[i]) == 0)
            rc = bp_fail(err, "%s:%ld: layer '%s' at %d/%d bits is listed twice", path,
                         lt->rows[i].line > lt->rows[i - 1].line ? lt->rows[i].line
                                                                 : lt->rows[i - 1].line,
                         lt->rows[i].layer, lt->rows[i].wbits, lt->rows[i].abits);
    free(text);
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
