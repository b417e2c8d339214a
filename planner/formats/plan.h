/*
 * plan.h - the quantization plan: what the solver chose for every layer,
 * with the provenance (files and their SHA-256), the budget, the solver's
 * status and the totals.  Written as YAML and/or JSON, atomically and
 * deterministically (same plan -> same bytes).
 */
#ifndef BP_PLAN_H
#define BP_PLAN_H

#include <stddef.h>
#include <stdint.h>

#include "../../common/bp_error.h"
#include "../../include/bitplan.h"

#define BP_PLAN_FORMAT_VERSION 1

/* bp_plan and bp_plan_layer: include/bitplan.h */

int bp_plan_write_yaml(const bp_plan *p, const char *path, bp_error *err);
int bp_plan_write_json(const bp_plan *p, const char *path, bp_error *err);

#endif
