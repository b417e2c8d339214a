/*
 * journal.h - the resume journal "<table>.partial": "key <hex>", the CSV
 * header, then each measured layer's rows followed by "#done <index>",
 * flushed to disk per layer.  A run with the same key resumes after the
 * last complete layer, in any order (a distributed run completes layers out
 * of order); rows after the last marker were cut short and are dropped.
 */
#ifndef BP_JOURNAL_H
#define BP_JOURNAL_H

#include <stddef.h>
#include <stdio.h>

#include "../common/bp_error.h"
#include "../sensitivity/table.h"
#include "model.h"

typedef struct bp_journal {
    FILE *fp;
    char *path;
} bp_journal;

/* Layers already measured under this key: their rows into t, done[i] set
 * for each; returns how many; *keep: the journal's bytes to keep. */
size_t bp_journal_resume(const char *path, const char *key, const bp_model *m,
                         unsigned char *done, bp_table *t, long *keep);
/* Open the journal of csv_path: new, or (keep > 0) truncated after the
 * last complete layer. */
int bp_journal_open(bp_journal *j, const char *csv_path, const char *key, long keep,
                    bp_error *err);
/* Rows [from, t->n) of layer `layer`, flushed to disk. */
int bp_journal_layer(bp_journal *j, const bp_table *t, size_t from, size_t layer,
                     bp_error *err);
/* Close; a finished run removes it. */
void bp_journal_close(bp_journal *j, int finished);

#endif
