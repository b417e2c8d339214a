/*
 * scales.h - per-layer metric scales (tools/calibrate.py): CSV with a header
 * naming (in any order) at least the columns
 *   layer,metric,objective,scale
 * and optionally `exponent` and `wbits`, one row per (layer, metric), or per
 * (layer, metric, weight width) with a wbits column: the measured
 * change of the objective with that layer alone quantized, in additive
 * units (the objective to the power 1 / exponent: the objective adds over
 * layers in them, e.g. squared flips), over the metric's prediction of it.
 * Every row names the same objective (kl, flips, loss or metric) and
 * exponent (in (0, 1], default 1); scales are finite and >= 0.  Fields are
 * plain (no quoting); extra columns (points, measured, predicted) are
 * ignored.
 */
#ifndef BP_SCALES_H
#define BP_SCALES_H

#include <stddef.h>

#include "../../common/bp_error.h"

typedef struct bp_scale_row {
    char *layer, *metric;
    int wbits;                /* 0: every width of the layer */
    double scale;
    long line;
} bp_scale_row;

typedef struct bp_scales {
    char *path;
    char objective[16];
    double exponent;          /* objective = (sum of scaled errors)^exponent */
    bp_scale_row *rows;       /* sorted by (layer, metric) */
    size_t n;
} bp_scales;

int bp_scales_load(bp_scales *s, const char *path, bp_error *err);
void bp_scales_free(bp_scales *s);
/* The scale of (layer, metric) at weight width wbits: that width's row, else
 * the layer's row without a width; -1 when the file has neither. */
double bp_scales_get(const bp_scales *s, const char *layer, const char *metric, int wbits);

#endif
