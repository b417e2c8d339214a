/*
 * bp_profile.h - where the time of a run goes: seconds and floating-point
 * operations per stage, accumulated process-wide and printed on request
 * (BITPLAN_PROFILE=1 in the environment; see README "Measured results").
 */
#ifndef BP_PROFILE_H
#define BP_PROFILE_H

#include <stddef.h>
#include <stdio.h>

typedef enum bp_stage {
    BP_STAGE_LOAD,       /* "load": open, map and hash the inputs; convert a layer's tensors */
    BP_STAGE_ACTS,       /* "activations": quantize calibration inputs */
    BP_STAGE_WEIGHTS,    /* "weights": quantize weights (RTN, SQuant, GPTQ, ERQ) */
    BP_STAGE_ERRORS,     /* "errors": output errors (Grams, quadratic forms, products) */
    BP_STAGE_SOLVE,      /* "solve": the integer program */
    BP_STAGE_WRITE,      /* "write": the table cache and quantized weights */
    BP_STAGE_COUNT
} bp_stage;

double bp_now(void);                              /* monotonic seconds */
void bp_profile_add(bp_stage s, double seconds);  /* time spent in s */
void bp_profile_flops(bp_stage s, double flops);  /* floating-point operations done in s */
/* Grams and GPTQ factors one layer's measurement reused from the last's. */
void bp_profile_reused(size_t n);
/* One line per stage with time, share, GFLOP and GFLOP/s, and the reuse;
 * nothing if no time. */
void bp_profile_report(FILE *f);

#endif
