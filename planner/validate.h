/*
 * validate.h - what calibration statistics and Fishers must satisfy before
 * bitplan computes with them, checked on the file's bytes before any work
 * (and by `bitplan inspect`).  Every check is a property the mathematics
 * relies on, not trusted from the file:
 *
 *   X^T X (and per grid Xbar^T Xbar)  symmetric (to 1e-7 of sqrt(a_ii a_jj)),
 *       a non-negative diagonal, every 2x2 principal minor non-negative
 *       (Cauchy-Schwarz: a_ij^2 <= a_ii a_jj), positive semi-definite by a
 *       shifted Cholesky factorisation (LAPACKE dpotrf) up to 2,048 columns;
 *   count and sums  xsum_j^2 <= count * xtx_jj per column (so ||xsum||^2 <=
 *       count tr(xtx)), |mean_j| and the root mean square within 2^40 (the
 *       limit rows are refused at), Xbar^T X within Cauchy-Schwarz of its
 *       two diagonals;
 *   output and decision Fishers  dense: symmetric, PSD as above; low rank:
 *       at most as many vectors as outputs, orthonormal rows (U U^T = I to
 *       1e-3), s, d >= 0;
 *   grad2  finite, >= 0.
 * A failure names the file, the tensor and the rule.  A layer whose
 * matrices pass but are indefinite anyway (the minors are necessary, not
 * sufficient, above 2,048 columns) shows it as a negative error, which the
 * sensitivity stage refuses (sensitivity.c).
 */
#ifndef BP_VALIDATE_H
#define BP_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#include "../common/bp_error.h"
#include "model.h"

/* Every layer's statistics set (once per set), Fishers and grad2. */
int bp_validate_calibration(const bp_model *m, bp_error *err);

/* The same over a calibration or statistics file alone (inspect): every
 * set found by its tensors' names; *checked counts what was checked. */
int bp_validate_calibration_file(const bp_tensorset *ts, size_t *checked, bp_error *err);

#endif
