/*
 * quantize.h - the plan's weights (formats/qweights.h has the layout).
 */
#ifndef BP_QUANTIZE_H
#define BP_QUANTIZE_H

#include "../common/bp_error.h"
#include "config.h"
#include "formats/plan.h"
#include "measure.h"

/* Quantize every layer of the plan again with its chosen candidate and
 * write the file atomically; progress (may be NULL) is called per layer. */
int bp_write_quantized(const bp_config *cfg, const bp_plan *plan, const char *path,
                       int dequantized, bp_step_fn progress, void *ctx, bp_error *err);

#endif
