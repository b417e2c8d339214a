/*
 * layer.h - the read-only view of one layer that the sensitivity stage
 * measures: weights, optional bias, optional calibration inputs.
 *
 * W is row-major out x in.  A conv weight (Cout, Cin/g, kh, kw) has
 * out = Cout, in = (Cin/g)*kh*kw; its calibration patches are n x (in*groups)
 * with group j's columns at [j*in, (j+1)*in), and the rows of group j
 * (out/groups of them, consecutive) see only those columns.
 */
#ifndef BP_LAYER_H
#define BP_LAYER_H

#include <stdint.h>

typedef struct bp_layer {
    const char *name;
    int64_t out, in;          /* W is out x in */
    int kh, kw;               /* 1 x 1 for linear layers */
    int groups;               /* 1 for linear and ordinary conv */
    const float *W;
    const float *bias;        /* out floats, or NULL */
    int64_t n;                /* calibration rows, 0 when none */
    const float *X;           /* n x (in*groups), or NULL */
    const float *grad2;       /* out: mean squared loss gradient per output
                               * channel (metric fisher), or NULL */
    int fisher;               /* weight output errors by grad2 (set by the
                               * sensitivity stage) */
} bp_layer;

static inline int64_t bp_layer_params(const bp_layer *l) { return l->out * l->in; }
/* Multiply-accumulates per calibration sample (one patch / token). */
static inline int64_t bp_layer_macs(const bp_layer *l) { return l->out * l->in; }

#endif
