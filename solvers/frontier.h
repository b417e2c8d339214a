/*
 * frontier.h - the exact Pareto frontier of (resource, error) over all
 * plans of a problem (one candidate per layer), by merging per-layer option
 * lists with dominance pruning, and its lower convex hull (the points a
 * Lagrangian sweep reaches).
 *
 * Layers are merged in order: the running list of non-dominated partial
 * sums (strictly increasing resource, strictly decreasing error) is added
 * to each layer's non-dominated options, sorted, and pruned.  Points with
 * equal (resource, error) are one point (ties grouped; the first plan in
 * candidate order is kept).  Sums are taken in layer order, as the IP's.
 */
#ifndef BP_FRONTIER_H
#define BP_FRONTIER_H

#include <stddef.h>

#include "../common/bp_error.h"
#include "ip.h"

typedef struct bp_front_point {
    double res;               /* total of the resource */
    double error;             /* total error */
    int on_hull;              /* on the lower convex hull */
} bp_front_point;

typedef struct bp_frontier {
    bp_front_point *p;        /* by increasing res, decreasing error */
    size_t n;
    size_t n_layers;
    size_t *choice;           /* n x n_layers: the plan of each point */
} bp_frontier;

/* Fails (naming the size) when a partial frontier exceeds max_points. */
int bp_pareto_frontier(const bp_problem *p, bp_resource r, size_t max_points,
                       bp_frontier *out, bp_error *err);
void bp_frontier_free(bp_frontier *f);

#endif
