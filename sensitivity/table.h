/*
 * table.h - the sensitivity table: the one contract between measuring and
 * solving.  One row per (layer, candidate).
 *
 * CSV form (long), header exactly:
 *   layer,wbits,abits,quantizer,error,params,weight_bits,macs
 * Reading accepts any column order and extra columns; only layer, wbits,
 * abits, error and params are required (weight_bits defaults to
 * params * wbits, quantizer to "rtn", macs to 0).  Layer order is the order
 * of first appearance.
 */
#ifndef BP_TABLE_H
#define BP_TABLE_H

#include <stdint.h>
#include <stdio.h>

#include "../common/bp_error.h"

#define BP_QUANTIZER_NAME_MAX 16

typedef struct bp_table_row {
    char *layer;
    int wbits;
    int abits;                /* 16 = activations unquantized */
    char quantizer[BP_QUANTIZER_NAME_MAX];
    double error;
    int64_t params;
    int64_t weight_bits;      /* all bits of the layer's weights incl. scales */
    int64_t macs;             /* multiply-accumulates per calibration sample */
} bp_table_row;

typedef struct bp_table {
    bp_table_row *rows;
    size_t n, cap;
} bp_table;

void bp_table_init(bp_table *t);
void bp_table_free(bp_table *t);
/* Append a row (layer is copied). */
int bp_table_add(bp_table *t, const bp_table_row *row, bp_error *err);

int bp_table_write_csv(const bp_table *t, FILE *fp);
/* Rows [from, to) without the header. */
int bp_table_write_rows(const bp_table *t, size_t from, size_t to, FILE *fp);
/* Parse CSV text; label (a file name) is used in error messages. */
int bp_table_parse_csv(bp_table *t, const char *text, size_t size,
                       const char *label, bp_error *err);
int bp_table_read_csv(bp_table *t, const char *path, bp_error *err);

#endif
