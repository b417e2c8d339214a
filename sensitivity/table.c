/*
 * table.c - the sensitivity table in memory and as CSV (RFC 4180 quoting).
 *
 * Errors are printed with 17 significant digits so a table read back from
 * its CSV (the cache, or `bitplan solve --table`) solves to the same plan.
 */
#include "table.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../common/bp_file.h"

#define TABLE_MAX_FIELD 4096

static const char *const metric_names[BP_METRIC_COUNT] = {
    "mse", "relative", "weight", "hawq", "fisher", "kfac", "margin"};

const char *bp_metric_name(bp_metric m)
{
    return (unsigned)m < BP_METRIC_COUNT ? metric_names[m] : "?";
}

int bp_metric_parse(const char *name)
{
    for (int i = 0; i < BP_METRIC_COUNT; i++)
        if (strcmp(name, metric_names[i]) == 0)
            return i;
    return -1;
}

void bp_table_row_clear_values(bp_table_row *r)
{
    for (int m = 0; m < BP_METRIC_COUNT; m++)
        r->value[m] = NAN;
}

int bp_table_select(bp_table *t, bp_metric m, bp_error *err)
{
    for (size_t i = 0; i < t->n; i++)
        if (isnan(t->rows[i].value[m]))
            return bp_fail(err, "layer '%s': metric '%s' was not measured for it",
                           t->rows[i].layer, bp_metric_name(m));
    for (size_t i = 0; i < t->n; i++)
        t->rows[i].error = t->rows[i].value[m];
    return 0;
}

void bp_table_init(bp_table *t)
{
    memset(t, 0, sizeof *t);
}

void bp_table_free(bp_table *t)
{
    for (size_t i = 0; i < t->n; i++)
        free(t->rows[i].layer);
    free(t->rows);
    bp_table_init(t);
}

int bp_table_add(bp_table *t, const bp_table_row *row, bp_error *err)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        bp_table_row *r = realloc(t->rows, cap * sizeof *r);
        if (!r)
            return bp_fail(err, "out of memory growing the sensitivity table");
        t->rows = r;
        t->cap = cap;
    }
    bp_table_row *dst = &t->rows[t->n];
    *dst = *row;
    dst->layer = bp_strdup(row->layer, err);
    if (!dst->layer)
        return -1;
    t->n++;
    return 0;
}

void bp_csv_field(FILE *fp, const char *s)
{
    if (!strpbrk(s, ",\"\r\n")) {
        fputs(s, fp);
        return;
    }
    fputc('"', fp);
    for (; *s; s++) {
        if (*s == '"')
            fputc('"', fp);
        fputc(*s, fp);
    }
    fputc('"', fp);
}

int bp_table_write_csv(const bp_table *t, FILE *fp)
{
    fputs(BP_TABLE_HEADER "\n", fp);
    return bp_table_write_rows(t, 0, t->n, fp);
}

int bp_table_write_rows(const bp_table *t, size_t from, size_t to, FILE *fp)
{
    for (size_t i = from; i < to && i < t->n; i++) {
        const bp_table_row *r = &t->rows[i];
        bp_csv_field(fp, r->layer);
        fprintf(fp, ",%d,%d,", r->wbits, r->abits);
        bp_csv_field(fp, r->quantizer);
        fprintf(fp, ",%.17g,%lld,%lld,%lld", r->error, (long long)r->params,
                (long long)r->weight_bits, (long long)r->macs);
        for (int m = 0; m < BP_METRIC_COUNT; m++)     /* unmeasured: empty */
            isnan(r->value[m]) ? (void)fputc(',', fp)
                               : (void)fprintf(fp, ",%.17g", r->value[m]);
        fputc('\n', fp);
    }
    return ferror(fp) ? -1 : 0;
}

/* ---- reading ---------------------------------------------------------- */

typedef struct csv_reader {
    const char *p, *end;
    const char *label;
    long line;
} csv_reader;

/* Read one field into buf; *eol is set at the end of a record. */
static int csv_field(csv_reader *c, char *buf, size_t cap, int *eol, bp_error *err)
{
    size_t n = 0;
    int quoted = c->p < c->end && *c->p == '"';
    if (quoted)
        c->p++;
    for (;;) {
        if (c->p >= c->end) {
            if (quoted)
                return bp_fail(err, "%s:%ld: unterminated quoted field", c->label, c->line);
            *eol = 1;
            break;
        }
        char ch = *c->p;
        if (quoted && ch == '"') {
            if (c->p + 1 < c->end && c->p[1] == '"') {
                c->p++;
            } else {
                quoted = 0;
                c->p++;
                continue;
            }
        } else if (!quoted && (ch == ',' || ch == '\n' || ch == '\r')) {
            c->p++;
            if (ch == '\r' && c->p < c->end && *c->p == '\n')
                c->p++;
            *eol = ch != ',';
            break;
        } else if (!quoted && ch == '"') {
            return bp_fail(err, "%s:%ld: stray quote in field", c->label, c->line);
        }
        if (ch == '\0')
            return bp_fail(err, "%s:%ld: NUL byte in field", c->label, c->line);
        if (n + 1 >= cap)
            return bp_fail(err, "%s:%ld: field longer than %d bytes", c->label,
                           c->line, TABLE_MAX_FIELD);
        buf[n++] = ch;
        c->p++;
    }
    buf[n] = '\0';
    return 0;
}

enum { COL_LAYER, COL_WBITS, COL_ABITS, COL_QUANT, COL_ERROR, COL_PARAMS,
       COL_WBITS_TOTAL, COL_MACS, COL_METRIC0, COL_COUNT = COL_METRIC0 + BP_METRIC_COUNT };
static const char *const column_names[COL_COUNT] = {
    "layer", "wbits", "abits", "quantizer", "error", "params", "weight_bits", "macs",
    "mse", "relative", "weight", "hawq", "fisher", "kfac", "margin"};

static int parse_header(csv_reader *c, int *map, size_t *n_cols, bp_error *err)
{
    char buf[TABLE_MAX_FIELD];
    int eol = 0;
    int seen[COL_COUNT];
    memset(seen, 0, sizeof seen);
    *n_cols = 0;
    while (!eol) {
        if (csv_field(c, buf, sizeof buf, &eol, err) < 0)
            return -1;
        if (*n_cols >= 64)
            return bp_fail(err, "%s:1: more than 64 columns", c->label);
        map[*n_cols] = -1;
        if (strcmp(buf, "loss_delta") == 0)     /* measured end-to-end loss deltas */
            strcpy(buf, "error");
        for (int k = 0; k < COL_COUNT; k++)
            if (strcmp(buf, column_names[k]) == 0) {
                if (seen[k])
                    return bp_fail(err, "%s:1: column '%s' appears twice (loss_delta stands "
                                   "for error)", c->label, buf);
                seen[k] = 1;
                map[*n_cols] = k;
            }
        (*n_cols)++;
    }
    static const int required[] = {COL_LAYER, COL_WBITS, COL_ABITS, COL_ERROR, COL_PARAMS};
    for (size_t i = 0; i < sizeof required / sizeof *required; i++)
        if (!seen[required[i]])
            return bp_fail(err, "%s: missing required column '%s' (required: layer, "
                           "wbits, abits, error or loss_delta, params)", c->label,
                           column_names[required[i]]);
    return 0;
}

static int parse_int(const csv_reader *c, const char *col, const char *s,
                     long long lo, long long hi, long long *out, bp_error *err)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi)
        return bp_fail(err, "%s:%ld: column '%s': expected an integer in [%lld, %lld], "
                       "got '%s'", c->label, c->line, col, lo, hi, s);
    *out = v;
    return 0;
}

static int parse_field(const csv_reader *c, int col, const char *s,
                       bp_table_row *row, bp_error *err)
{
    long long v = 0;
    const char *name = column_names[col];
    if (col >= COL_METRIC0) {        /* a metric's value; empty = not measured */
        char *end;
        double x = *s ? strtod(s, &end) : NAN;
        if (*s && (*end || !isfinite(x)))
            return bp_fail(err, "%s:%ld: column '%s': expected a finite number or nothing, "
                           "got '%s'", c->label, c->line, name, s);
        row->value[col - COL_METRIC0] = x;
        return 0;
    }
    switch (col) {
    case COL_LAYER:
        if (!*s)
            return bp_fail(err, "%s:%ld: empty layer name", c->label, c->line);
        row->layer = (char *)s;
        return 0;
    case COL_QUANT:
        if (!*s || strlen(s) >= BP_QUANTIZER_NAME_MAX)
            return bp_fail(err, "%s:%ld: column 'quantizer': expected a name of 1..%d "
                           "characters, got '%s'", c->label, c->line,
                           BP_QUANTIZER_NAME_MAX - 1, s);
        strcpy(row->quantizer, s);
        return 0;
    case COL_ERROR: {
        char *end;
        row->error = strtod(s, &end);
        if (!*s || *end || !isfinite(row->error))
            return bp_fail(err, "%s:%ld: column 'error': expected a finite number, "
                           "got '%s'", c->label, c->line, s);
        return 0;
    }
    case COL_WBITS:
    case COL_ABITS:
        if (parse_int(c, name, s, 1, 32, &v, err) < 0)
            return -1;
        *(col == COL_WBITS ? &row->wbits : &row->abits) = (int)v;
        return 0;
    case COL_PARAMS:
        if (parse_int(c, name, s, 1, (long long)1 << 50, &v, err) < 0)
            return -1;
        row->params = v;
        return 0;
    case COL_WBITS_TOTAL:
    case COL_MACS:
        if (parse_int(c, name, s, 0, (long long)1 << 60, &v, err) < 0)
            return -1;
        *(col == COL_MACS ? &row->macs : &row->weight_bits) = v;
        return 0;
    }
    return 0;
}

/* Sort key for the duplicate check: (layer, wbits, abits, quantizer). */
static const bp_table *sort_table;
static int cmp_key(const bp_table_row *x, const bp_table_row *y)
{
    int c = strcmp(x->layer, y->layer);
    if (c) return c;
    if (x->wbits != y->wbits) return x->wbits < y->wbits ? -1 : 1;
    if (x->abits != y->abits) return x->abits < y->abits ? -1 : 1;
    return strcmp(x->quantizer, y->quantizer);
}
static int cmp_rows(const void *a, const void *b)
{
    int c = cmp_key(&sort_table->rows[*(const size_t *)a], &sort_table->rows[*(const size_t *)b]);
    if (c) return c;
    return *(const size_t *)a < *(const size_t *)b ? -1 : 1;
}

/* Row indices of t in (layer, wbits, abits, quantizer) order; malloc'ed. */
static size_t *sorted_rows(const bp_table *t, bp_error *err)
{
    size_t *idx = bp_malloc((t->n ? t->n : 1) * sizeof *idx, err);
    if (!idx)
        return NULL;
    for (size_t i = 0; i < t->n; i++)
        idx[i] = i;
    sort_table = t;
    qsort(idx, t->n, sizeof *idx, cmp_rows);
    return idx;
}

int bp_table_take_errors(bp_table *t, const bp_table *from, const char *label, bp_error *err)
{
    size_t *idx = sorted_rows(from, err);
    if (!idx)
        return -1;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < t->n; i++) {
        const bp_table_row *r = &t->rows[i];
        size_t lo = 0, hi = from->n;        /* first row not below r's key */
        while (lo < hi) {
            size_t mid = lo + (hi - lo) / 2;
            if (cmp_key(&from->rows[idx[mid]], r) < 0)
                lo = mid + 1;
            else
                hi = mid;
        }
        if (lo == from->n || cmp_key(&from->rows[idx[lo]], r) != 0)
            rc = bp_fail(err, "%s: no row for layer '%s' at %d-bit weights and %d-bit "
                         "activations with quantizer %s", label, r->layer, r->wbits, r->abits,
                         r->quantizer);
        else
            t->rows[i].error = from->rows[idx[lo]].error;
    }
    free(idx);
    return rc;
}

/* Every layer has one params value and no candidate appears twice. */
static int check_rows(const bp_table *t, const long *lines, const char *label,
                      bp_error *err)
{
    size_t *idx = sorted_rows(t, err);
    if (!idx)
        return -1;
    int rc = 0;
    for (size_t i = 1; i < t->n && rc == 0; i++) {
        const bp_table_row *o = &t->rows[idx[i - 1]], *r = &t->rows[idx[i]];
        long line = lines[idx[i]];
        if (strcmp(o->layer, r->layer) != 0)
            continue;
        if (o->params != r->params)
            rc = bp_fail(err, "%s:%ld: layer '%s' has params %lld here but %lld on "
                         "line %ld", label, line, r->layer, (long long)r->params,
                         (long long)o->params, lines[idx[i - 1]]);
        else if (o->wbits == r->wbits && o->abits == r->abits &&
                 strcmp(o->quantizer, r->quantizer) == 0)
            rc = bp_fail(err, "%s:%ld: duplicate row for layer '%s' (wbits %d, abits "
                         "%d, quantizer %s; first on line %ld)", label, line, r->layer,
                         r->wbits, r->abits, r->quantizer, lines[idx[i - 1]]);
    }
    free(idx);
    return rc;
}

static int parse_record(csv_reader *c, const int *map, size_t n_cols, bp_table *t,
                        bp_error *err)
{
    char fields[COL_COUNT][TABLE_MAX_FIELD];
    int have[COL_COUNT] = {0};
    char buf[TABLE_MAX_FIELD];
    int eol = 0;
    size_t i = 0;
    for (; !eol; i++) {
        if (csv_field(c, buf, sizeof buf, &eol, err) < 0)
            return -1;
        if (i < n_cols && map[i] >= 0) {
            strcpy(fields[map[i]], buf);
            have[map[i]] = 1;
        }
    }
    if (i != n_cols)
        return bp_fail(err, "%s:%ld: expected %zu fields, got %zu", c->label, c->line,
                       n_cols, i);
    bp_table_row row = {.quantizer = "rtn", .weight_bits = -1};
    bp_table_row_clear_values(&row);
    for (int k = 0; k < COL_COUNT; k++)
        if (have[k] && parse_field(c, k, fields[k], &row, err) < 0)
            return -1;
    if (row.weight_bits < 0)
        row.weight_bits = row.params * row.wbits;
    return bp_table_add(t, &row, err);
}

/* Rows for one layer are grouped by first appearance. */
int bp_table_parse_csv(bp_table *t, const char *text, size_t size, const char *label,
                       bp_error *err)
{
    bp_table_init(t);
    if (size >= 3 && !memcmp(text, "\xef\xbb\xbf", 3))    /* a UTF-8 byte-order mark */
        text += 3, size -= 3;
    csv_reader c = {text, text + size, label, 1};
    int map[64];
    size_t n_cols;
    if (size == 0)
        return bp_fail(err, "%s: empty file (expected a CSV header)", label);
    if (parse_header(&c, map, &n_cols, err) < 0)
        return -1;
    long *lines = NULL;
    size_t lines_cap = 0;
    while (c.p < c.end) {
        c.line++;
        if (*c.p == '\n' || *c.p == '\r') {    /* blank line */
            c.p++;
            continue;
        }
        if (t->n == lines_cap) {
            lines_cap = lines_cap ? 2 * lines_cap : 64;
            long *nl = realloc(lines, lines_cap * sizeof *lines);
            if (!nl) {
                bp_fail(err, "%s: out of memory", label);
                goto fail;
            }
            lines = nl;
        }
        lines[t->n] = c.line;
        if (parse_record(&c, map, n_cols, t, err) < 0)
            goto fail;
    }
    if (t->n == 0) {
        bp_fail(err, "%s: no rows after the header", label);
        goto fail;
    }
    if (check_rows(t, lines, label, err) < 0)
        goto fail;
    free(lines);
    return 0;
fail:
    free(lines);
    bp_table_free(t);
    return -1;
}

int bp_table_read_csv(bp_table *t, const char *path, bp_error *err)
{
    char *text;
    size_t size;
    bp_table_init(t);
    if (bp_read_file(path, &text, &size, err) < 0)
        return -1;
    int rc = bp_table_parse_csv(t, text, size, path, err);
    free(text);
    return rc;
}
