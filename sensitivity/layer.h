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

/*
 * The output Fisher of a layer, F = E[g g^T] with g = dloss/dy the loss
 * gradient at the layer's output y, summed over a sample's output positions
 * and averaged over samples (K-FAC's output factor).  One factor per group
 * of og = out / groups output rows (groups = 1 but for grouped convs), in
 * one of two forms:
 *   rank == 0: F dense, groups x og x og (symmetric);
 *   rank  > 0: F ~= U^T diag(s) U + P diag(d) P, with U groups x rank x og
 *              (the eigenvectors as rows), s groups x rank, d groups x og (the
 *              diagonal the eigenpairs leave out) and P = I - n n^T for an
 *              optional unit vector n (groups x og) that F annihilates (the
 *              all-ones direction of logits before a softmax: a common offset
 *              costs nothing), P = I without one.
 */
typedef struct bp_ofactor {
    int64_t groups, og, rank;
    const float *F;           /* rank 0 */
    const float *U, *s, *d;   /* rank > 0 */
    const float *n;           /* rank > 0: the null direction, or NULL */
} bp_ofactor;

/*
 * Calibration statistics instead of rows (tools/capture.py --stats): sums
 * over n rows, per conv group j of the in columns it reads, in double.
 * xtx (groups x in x in) = X^T X, xsum (groups x in) = the column sums;
 * per activation width of the measurement (grid[a] for spec->abits[a];
 * unused at 16 bits), with Xbar the inputs on that width's grid: qtq =
 * Xbar^T Xbar, qtx = Xbar^T X (groups x in x in), qsum (groups x in).
 * Everything bitplan computes from rows is a function of these.
 */
typedef struct bp_stats_grid {
    const double *qtq, *qtx, *qsum;
} bp_stats_grid;

typedef struct bp_stats {
    int64_t n;
    const double *xtx, *xsum;
    const bp_stats_grid *grid;
    const void *id;           /* equal for layers that read the same statistics */
} bp_stats;

/*
 * Diagonal statistics: an importance matrix (llama-imatrix) gives, per input
 * column j, only the mean squared input d_j = E[x_j^2].  With them the
 * output error of dW is taken as sum_r sum_j d_j dW_rj^2: the error
 * llama.cpp's quantizers minimise, exact when the inputs are uncorrelated.
 * A stack of n_mat matrices (MoE experts; out / n_mat rows each) has a row
 * of d per matrix.  An embedding table (read by rows, row r the vector of
 * token r) adds row_w * sum_j dW_rj^2 per row: each token's perturbation of
 * the residual stream, weighted by its frequency (uniform: 1 / rows).
 * qw are the importance weights of the ggml quantizers (sensitivity/ggml.h),
 * computed in float as llama-quantize computes them, or NULL.
 */
typedef struct bp_diag {
    int64_t n_mat;
    const double *d;          /* n_mat x in, or NULL (an embedding without one) */
    const float *qw;          /* n_mat x in, or NULL */
    double row_w;             /* > 0 for an embedding table */
} bp_diag;

typedef struct bp_layer {
    const char *name;
    int64_t out, in;          /* W is out x in */
    int kh, kw;               /* 1 x 1 for linear layers */
    int groups;               /* 1 for linear and ordinary conv */
    const float *W;
    const float *bias;        /* out floats, or NULL */
    int64_t n;                /* calibration rows, 0 when none */
    const float *X;           /* n x (in*groups), or NULL */
    const float *grad2;       /* out: the diagonal of the output Fisher, per
                               * output channel (metric fisher), or NULL */
    const bp_ofactor *ofactor; /* the output Fisher (metric kfac), or NULL */
    const bp_stats *stats;    /* instead of X (X NULL, n = stats->n), or NULL */
    const bp_ofactor *mfactor; /* the decision Fisher (metric margin), or NULL: the
                               * same form, with g = the gradient of a decision's
                               * margin weighted by how near it is to flipping */
    const bp_diag *diag;      /* diagonal statistics (errors when neither X nor stats
                               * is given; qw for the ggml types), or NULL */
} bp_layer;

static inline int64_t bp_layer_params(const bp_layer *l) { return l->out * l->in; }
/* Multiply-accumulates per calibration sample (one patch / token). */
static inline int64_t bp_layer_macs(const bp_layer *l) { return l->out * l->in; }

#endif
