/*
 * erq.h - ERQ (Zhong et al., ICML 2024): reduce the error that quantized
 * activations and then quantized weights cause, by ridge regression on the
 * weights still in full precision (ALGORITHMS.md section 3).
 *
 * With A = [Xq | 1] (the ones column only when the layer has a bias):
 *   Aqer:  Wc += -(W dX^T) A (A^T A + l1 I)^-1,  dX = Xq - X  (Cholesky solve);
 *   Wqer:  scales frozen on the Aqer weights; while columns remain, take the
 *          first half J of them, round, refine the rounding row by row with
 *          single flips that never raise the proxy d^T (mu mu^T + Sigma) d of
 *          Xq_J (at most max_flips), put w_J on the grid, and move the
 *          remaining columns K by ridge regression
 *          dW_K = -d (A_J^T A_K) (A_K^T A_K + l2 I)^-1.
 * The bias column is never quantized.  Sums over samples, not means.
 */
#ifndef BP_ERQ_H
#define BP_ERQ_H

#include <stdint.h>

#include "../common/bp_error.h"
#include "quant.h"

typedef struct bp_erq_opts {
    double lambda1;           /* Aqer ridge (default 0.1 * 20000) */
    double lambda2;           /* Wqer ridge (default 0.1 * 20000) */
    int max_flips;            /* per row and step (default 100) */
} bp_erq_opts;

void bp_erq_opts_init(bp_erq_opts *o);

/*
 * W: o x d, bias: o or NULL; X, Xq: n x d (Xq = X when activations are not
 * quantized).  wspec: bits, granularity (tensor, channel or group), symmetry,
 * range.  Wout (o x d) receives weights exactly on the frozen grid, bout (o,
 * when bias) the updated bias; scale and zero (o x d each, may be NULL) the
 * frozen grid parameters of every element.
 */
int bp_erq_quantize(const float *W, const float *bias, int64_t o, int64_t d, const float *X,
                    const float *Xq, int64_t n, const bp_qspec *wspec, const bp_erq_opts *opt,
                    float *Wout, float *bout, float *scale, float *zero, bp_error *err);

/* The same from sums over the n rows (calibration statistics): G = A^T A
 * (da x da, full) and DA = dX^T A (d x da), A = [Xq | 1] when there is a
 * bias (da = d + 1), else Xq (da = d), dX = Xq - X.  G and DA may be NULL
 * at 16 bits. */
int bp_erq_quantize_sums(const float *W, const float *bias, int64_t o, int64_t d,
                         const double *G, const double *DA, int64_t n, const bp_qspec *wspec,
                         const bp_erq_opts *opt, float *Wout, float *bout, float *scale,
                         float *zero, bp_error *err);

/*
 * The rounding refinement on one row, exposed for tests: C (m x m, the
 * proxy matrix), delta (m, the rounding errors, updated), step (m, the grid
 * step of each element), room_up / room_down (m: may the element move one
 * step up / down).  Each step takes the element with the largest gradient
 * |g| = |2 C delta| among those it would move toward a lower proxy and flips
 * it when delta - g lies nearer the other grid point (|g| over half a step,
 * ERQ's rule); it stops at the first element that stays, cannot move or
 * would raise the proxy, or after max_flips.  Returns the flips kept.
 */
int bp_erq_refine(const double *C, int64_t m, double *delta, const double *step,
                  const unsigned char *room_up, const unsigned char *room_down,
                  int max_flips);

#endif
