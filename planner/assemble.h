/*
 * assemble.h - the plan from a solved table: per layer its candidate with
 * the grids behind it (quantizer, granularity, symmetry, activation grid),
 * its inputs per row and any embedding it shares its weights with; the
 * provenance (files and their SHA-256), the budget, the solver's status and
 * the totals.
 */
#ifndef BP_ASSEMBLE_H
#define BP_ASSEMBLE_H

#include "../common/bp_error.h"
#include "../sensitivity/table.h"
#include "config.h"
#include "formats/plan.h"
#include "measure.h"
#include "problem.h"

/* Fill a plan from a solved table (cfg may be NULL for bare tables). The
 * plan's layer array is malloc'ed; the strings point into t and cfg. */
int bp_make_plan(const bp_table *t, const bp_solve_result *r, const bp_config *cfg,
                 const bp_sens_result *sens, const bp_solve_request *req,
                 bp_plan *plan, bp_error *err);

#endif
