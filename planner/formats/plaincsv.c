/*
 * plaincsv.c - read the small plain CSV tables (see plaincsv.h).
 */
#include "plaincsv.h"

#include <stdlib.h>
#include <string.h>

#include "../../common/bp_file.h"

#define MAX_FIELDS 64

/* Split line (modified in place) at commas into at most max fields, each
 * trimmed of spaces and a CR. */
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
    for (size_t i = 0; i < n; i++) {
        while (*f[i] == ' ')
            f[i]++;
        size_t k = strlen(f[i]);
        while (k && (f[i][k - 1] == ' ' || f[i][k - 1] == '\r'))
            f[i][--k] = '\0';
    }
    return n;
}

int bp_plaincsv_read(const char *path, const char *const *names, int n, int required,
                     const char *header, bp_plaincsv_row row, void *ctx, bp_error *err)
{
    char *text, *f[MAX_FIELDS], *next;
    size_t size;
    int col[MAX_FIELDS], rc = 0;
    long line = 0;
    if (n > MAX_FIELDS)
        return bp_fail(err, "%s: too many columns asked for", path);
    if (bp_read_file(path, &text, &size, err) < 0)
        return -1;
    for (int k = 0; k < n; k++)
        col[k] = -1;
    char *start = size >= 3 && !memcmp(text, "\xef\xbb\xbf", 3) ? text + 3 : text;
    for (char *ln = start; ln && *ln && rc == 0; ln = next) {
        next = strchr(ln, '\n');
        if (next)
            *next++ = '\0';
        line++;
        size_t nf = split(ln, f, MAX_FIELDS);
        if (line == 1) {
            for (size_t i = 0; i < nf; i++)
                for (int k = 0; k < n; k++)
                    if (strcmp(f[i], names[k]) == 0)
                        col[k] = (int)i;
            for (int k = 0; k < required && rc == 0; k++)
                if (col[k] < 0)
                    rc = bp_fail(err, "%s: missing required column '%s' (header needs %s)",
                                 path, names[k], header);
        } else if (nf > 1 || f[0][0]) {
            for (int k = 0; k < required && rc == 0; k++)
                if ((size_t)col[k] >= nf)
                    rc = bp_fail(err, "%s:%ld: expected at least %d fields", path, line,
                                 col[k] + 1);
            if (rc == 0)
                rc = row(ctx, f, nf, col, line, err);
        }
    }
    if (rc == 0 && line == 0)
        rc = bp_fail(err, "%s: empty file (expected a header %s)", path, header);
    free(text);
    return rc;
}
