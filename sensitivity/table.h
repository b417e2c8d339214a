/*
 * table.h - the sensitivity table: the one contract between measuring and
 * solving.  One row per (layer, candidate).
 *
 * CSV form (long), header exactly:
 *   layer,wbits,abits,quantizer,error,params,weight_bits,macs,
 *   mse,relative,weight,hawq,fisher,kfac,margin
 * `error` is the value the solver minimises (the configured metric); the
 * metric columns hold every metric the sensitivity stage could measure
 * (empty where it could not), so that another metric is read off the same
 * table instead of measuring again.  Reading accepts any column order and
 * extra columns; only layer, wbits, abits, error and params are required
 * (weight_bits defaults to params * wbits, quantizer to "rtn", macs to 0,
 * metric columns to unmeasured).  Layer order is the order of first
 * appearance.
 */
#ifndef BP_TABLE_H
#define BP_TABLE_H

#include <stdint.h>
#include <stdio.h>

#include "../common/bp_error.h"

#define BP_QUANTIZER_NAME_MAX 16
#define BP_TABLE_HEADER \
    "layer,wbits,abits,quantizer,error,params,weight_bits,macs,mse,relative,weight,hawq,fisher," \
    "kfac,margin"

/* The error metrics, in table column order (README "Metrics"). */
typedef enum bp_metric {
    BP_METRIC_MSE = 0,        /* ||What Xbar^T - W X^T||^2 / n */
    BP_METRIC_RELATIVE,       /* the above / (||W X^T||^2 / n) */
    BP_METRIC_WEIGHT,         /* ||What - W||^2 / params (data-free) */
    BP_METRIC_HAWQ,           /* (Tr(H) / params) * ||What - W||^2 */
    BP_METRIC_FISHER,         /* 1/2 sum_r grad2_r e_r: diagonal output Fisher */
    BP_METRIC_KFAC,           /* 1/2 tr(F E[dy dy^T]): full output Fisher */
    BP_METRIC_MARGIN,         /* 1/2 tr(Fm E[dy dy^T]): the decision Fisher */
    BP_METRIC_COUNT
} bp_metric;

const char *bp_metric_name(bp_metric m);
/* name -> metric; -1 when unknown */
int bp_metric_parse(const char *name);

typedef struct bp_table_row {
    char *layer;
    int wbits;
    int abits;                /* 16 = activations unquantized */
    char quantizer[BP_QUANTIZER_NAME_MAX];
    double error;
    int64_t params;
    int64_t weight_bits;      /* all bits of the layer's weights incl. scales */
    int64_t macs;             /* multiply-accumulates per calibration sample */
    double value[BP_METRIC_COUNT];  /* every metric measured; NAN where not */
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
/* One CSV field, quoted (RFC 4180) when it holds a comma, quote or newline. */
void bp_csv_field(FILE *fp, const char *s);
/* Rows [from, to) without the header. */
int bp_table_write_rows(const bp_table *t, size_t from, size_t to, FILE *fp);
/* Parse CSV text; label (a file name) is used in error messages. */
int bp_table_parse_csv(bp_table *t, const char *text, size_t size,
                       const char *label, bp_error *err);
int bp_table_read_csv(bp_table *t, const char *path, bp_error *err);

/* error := value[m] for every row; fails (naming the first layer without
 * it) unless every row has that metric. */
int bp_table_select(bp_table *t, bp_metric m, bp_error *err);
/* error := the error of the same (layer, wbits, abits, quantizer) row of
 * `from` (e.g. measured end-to-end deltas), for every row of t; a row that
 * `from` lacks is an error naming it and `label` (from's file). */
int bp_table_take_errors(bp_table *t, const bp_table *from, const char *label, bp_error *err);
/* A row with every metric unmeasured. */
void bp_table_row_clear_values(bp_table_row *r);

#endif
