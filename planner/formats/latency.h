/*
 * latency.h - a per-layer latency table for latency budgets and
 * objectives: CSV with a header naming (in any order) the columns
 *   layer,wbits,abits,latency
 * one row per (layer, weight bits, activation bits) the user measured on
 * their hardware, latency in any unit (the budget uses the same unit).
 * Fields are plain (no quoting); extra columns are ignored.
 */
#ifndef BP_LATENCY_H
#define BP_LATENCY_H

#include <stddef.h>

#include "../../common/bp_error.h"

typedef struct bp_latency_row {
    char *layer;
    int wbits, abits;
    double latency;
    long line;                /* where it was read */
} bp_latency_row;

typedef struct bp_latency {
    char *path;
    bp_latency_row *rows;
    size_t n;
} bp_latency;

int bp_latency_load(bp_latency *lt, const char *path, bp_error *err);
void bp_latency_free(bp_latency *lt);
/* The latency of (layer, wbits, abits); -1 when the table lacks it. */
double bp_latency_get(const bp_latency *lt, const char *layer, int wbits, int abits);

#endif
