/*
 * checks.h - before any work: what a run needs is there (the pins match
 * layers, every layer has what its quantizers and metric need, statistics
 * match the config's activation grids), the largest layer fits in memory,
 * and metric auto is resolved.  Each failure is one message naming the
 * layer, the tensor or the key.
 */
#ifndef BP_CHECKS_H
#define BP_CHECKS_H

#include "../common/bp_error.h"
#include "config.h"
#include "model.h"

int bp_check_pins(const bp_config *cfg, const bp_model *m, bp_error *err);
int bp_check_layers(const bp_config *cfg, const bp_model *m, bp_error *err);
/* The largest layer's measurement, by the README's formula, against
 * MemAvailable. */
int bp_check_memory(const bp_config *cfg, const bp_model *m, bp_error *err);
/* metric: auto -> the most informed metric every layer's data allows. */
void bp_resolve_metric(bp_config *cfg, const bp_model *m);

#endif
