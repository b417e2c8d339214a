/*
 * errors.h - the errors the integer program minimises: the metric's
 * (bp_table_select), measured ones (--errors), the metric scaled by measured
 * per-layer scales (metric_scales, from tools/calibrate.py), or the metric
 * with a noisy Fisher's layer scales shrunk (noise: shrink).
 */
#ifndef BP_ERRORS_H
#define BP_ERRORS_H

#include "../common/bp_error.h"
#include "../sensitivity/table.h"
#include "measure.h"

/* Every candidate's error taken from the table at path (e.g. measured
 * deltas), matched by layer, widths and quantizer. */
int bp_take_errors(bp_table *t, const char *path, bp_error *err);

/* metric_scales: every row's error (the metric's value) times its layer's
 * scale for that metric at its weight width from the scales file at path,
 * so that errors are in additive units of the objective the file calibrates
 * to (copied to predicts, at least 16 bytes), which is the errors' sum to
 * the power *exponent.  A layer without a scale is an error naming the
 * file, the layer, the metric and the width. */
int bp_scale_errors(bp_table *t, const char *path, bp_metric metric, char *predicts,
                    double *exponent, bp_error *err);

/*
 * Plan robustly with a noisy Fisher (no metric_scales): each layer's scale
 * rho = sum of its metric over sum of its relative error (the exact, cheap
 * metric) is an estimate with relative standard error rse (res->noise_rse);
 * log rho is shrunk toward the layers' pooled mean by the empirical-Bayes
 * weight tau^2 / (tau^2 + rse^2), tau^2 the spread of log rho between layers
 * beyond the noise (method of moments), and every error of the layer is
 * multiplied by the shrunk over the raw scale.  Needs every layer's rse and
 * relative error; otherwise, and for metrics without a Fisher, nothing is
 * done (*shrunk 0).  note (>= 512 bytes) says what was done.
 */
int bp_shrink_noisy(bp_table *t, const bp_sens_result *res, bp_metric metric, int *shrunk,
                    char *note, bp_error *err);

#endif
