/*
 * ties.h - tied groups: layers whose weight bits and/or activation bits
 * must be equal (q/k/v projections of a block, a residual branch and its
 * downsample), solved exactly by merging each group into one solver layer
 * whose candidates are the member combinations that agree on the tied
 * widths.  The merged program is again one candidate per (solver) layer, so
 * the integer program, its incumbent and the exact frontier apply unchanged.
 *
 * A tie is a POSIX extended regular expression over layer names; matching
 * layers are grouped by the text of its first capture group (one group per
 * block), or all together when it has none.
 */
#ifndef BP_TIES_H
#define BP_TIES_H

#include <stddef.h>

#include "../common/bp_error.h"
#include "../solvers/ip.h"

typedef struct bp_tie {
    char *regex;
    int wbits;                /* tie weight bits (default 1) */
    int abits;                /* tie activation bits (default 0) */
} bp_tie;

/* The per-layer candidate view the merge works on. */
typedef struct bp_tie_input {
    size_t n_layers;
    const size_t *first;      /* n_layers + 1 */
    const char *const *names;
    const int *wbits, *abits; /* per candidate */
    const unsigned char *allowed;
    const double *res[BP_RES_COUNT]; /* per candidate, NULL when unused */
} bp_tie_input;

typedef struct bp_tied {
    size_t n_groups;
    size_t *first;            /* n_groups + 1: merged candidates */
    size_t *mfirst;           /* n_groups + 1: into members */
    size_t *members;          /* input layer indices, in model order per group */
    size_t *pick;             /* merged candidate c, member k -> input candidate at
                               * pick[pfirst[c] + k] */
    size_t *pfirst;
    double *res[BP_RES_COUNT]; /* summed per merged candidate (NULL when unused) */
    unsigned char *allowed;
} bp_tied;

/* Build the merged program (identity when there are no ties).  Errors name
 * the tie (bad regex, matching nothing, overlapping ties, no agreeing
 * combination, too many combinations). */
int bp_ties_merge(const bp_tie_input *in, const bp_tie *ties, size_t n_ties, bp_tied *out,
                  bp_error *err);
void bp_tied_free(bp_tied *t);

#endif
