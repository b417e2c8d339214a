/*
 * plaincsv.h - the small hand-written tables users bring (latencies, metric
 * scales): CSV without quoting, a header naming the columns in any order
 * (extra columns ignored), fields trimmed of spaces and a CR, blank lines
 * skipped, a UTF-8 byte-order mark allowed.
 */
#ifndef BP_PLAINCSV_H
#define BP_PLAINCSV_H

#include <stddef.h>

#include "../../common/bp_error.h"

/* One data line: f[0..nf) its fields, col[k] the field of names[k]. */
typedef int (*bp_plaincsv_row)(void *ctx, char **f, size_t nf, const int *col, long line,
                               bp_error *err);

/* Read path; the first `required` of the n names must be header columns
 * (else an error quoting `header`, the header expected), the others may be
 * (col[k] = -1 when absent); row is called per data line.  An empty file is
 * an error. */
int bp_plaincsv_read(const char *path, const char *const *names, int n, int required,
                     const char *header, bp_plaincsv_row row, void *ctx, bp_error *err);

#endif
