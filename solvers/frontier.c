/*
 * frontier.c - exact Pareto frontier by merging layers (see frontier.h).
 */
#include "frontier.h"

#include <stdlib.h>
#include <string.h>

typedef struct fr_item {
    double res, error;
    size_t parent;            /* index in the previous frontier */
    size_t cand;              /* candidate of this layer */
} fr_item;

static int fr_cmp(const void *a, const void *b)
{
    const fr_item *x = a, *y = b;
    if (x->res != y->res)
        return x->res < y->res ? -1 : 1;
    if (x->error != y->error)
        return x->error < y->error ? -1 : 1;
    if (x->parent != y->parent)
        return x->parent < y->parent ? -1 : 1;
    return x->cand < y->cand ? -1 : x->cand > y->cand;
}

/* Keep strictly improving errors along increasing resource. */
static size_t fr_prune(fr_item *it, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (k == 0 || it[i].error < it[k - 1].error)
            it[k++] = it[i];
    return k;
}

/* One layer's allowed candidates as items (parent 0), pruned. */
static size_t fr_options(const bp_problem *p, int r, size_t l, fr_item *opt)
{
    size_t k = 0;
    for (size_t c = p->first[l]; c < p->first[l + 1]; c++)
        if (!p->allowed || p->allowed[c])
            opt[k++] = (fr_item){p->res[r][c], p->res[BP_RES_ERROR][c], 0, c};
    qsort(opt, k, sizeof *opt, fr_cmp);
    return fr_prune(opt, k);
}

/* Mark the lower convex hull (by increasing res, decreasing error). */
static void fr_hull(bp_front_point *pt, size_t n)
{
    size_t *h = malloc((n ? n : 1) * sizeof *h), m = 0;
    if (!h)
        return;
    for (size_t i = 0; i < n; i++) {
        while (m >= 2) {
            const bp_front_point *a = &pt[h[m - 2]], *b = &pt[h[m - 1]], *c = &pt[i];
            double cross = (b->res - a->res) * (c->error - a->error) -
                           (b->error - a->error) * (c->res - a->res);
            if (cross > 0.0)
                break;
            m--;
        }
        h[m++] = i;
    }
    for (size_t i = 0; i < m; i++)
        pt[h[i]].on_hull = 1;
    free(h);
}

void bp_frontier_free(bp_frontier *f)
{
    free(f->p);
    free(f->choice);
    memset(f, 0, sizeof *f);
}

/* Walk the back-pointers of every final point into out->choice. */
static int fr_plans(fr_item **stage, size_t n_layers, bp_frontier *out, bp_error *err)
{
    out->choice = bp_malloc((out->n ? out->n : 1) * n_layers * sizeof *out->choice, err);
    if (!out->choice)
        return -1;
    for (size_t i = 0; i < out->n; i++) {
        size_t at = i;
        for (size_t l = n_layers; l-- > 0;) {
            out->choice[i * n_layers + l] = stage[l][at].cand;
            at = stage[l][at].parent;
        }
    }
    return 0;
}

int bp_pareto_frontier(const bp_problem *p, bp_resource r, size_t max_points,
                       bp_frontier *out, bp_error *err)
{
    memset(out, 0, sizeof *out);
    if (!p->res[r] || !p->res[BP_RES_ERROR])
        return bp_fail(err, "frontier: the problem lacks the resource values");
    size_t L = p->n_layers, widest = 1;
    for (size_t l = 0; l < L; l++)
        widest = p->first[l + 1] - p->first[l] > widest ? p->first[l + 1] - p->first[l] : widest;
    fr_item **stage = bp_calloc(L ? L : 1, sizeof *stage, err);
    size_t *size = bp_calloc(L ? L : 1, sizeof *size, err);
    fr_item *opt = bp_malloc(widest * sizeof *opt, err);
    int rc = stage && size && opt ? 0 : -1;
    for (size_t l = 0; rc == 0 && l < L; l++) {
        size_t k = fr_options(p, (int)r, l, opt), m = l ? size[l - 1] : 1, n = 0;
        if (k == 0) {
            rc = bp_fail(err, "frontier: layer %zu has no allowed candidate", l);
            break;
        }
        if (m * k > max_points * widest || !(stage[l] = malloc(m * k * sizeof **stage))) {
            rc = bp_fail(err, "frontier: more than %zu partial points at layer %zu; the exact "
                         "frontier is too large for this table", max_points, l);
            break;
        }
        for (size_t i = 0; i < m; i++)
            for (size_t j = 0; j < k; j++) {
                double r0 = l ? stage[l - 1][i].res : 0.0, e0 = l ? stage[l - 1][i].error : 0.0;
                stage[l][n++] = (fr_item){r0 + opt[j].res, e0 + opt[j].error, i, opt[j].cand};
            }
        qsort(stage[l], n, sizeof **stage, fr_cmp);
        size[l] = fr_prune(stage[l], n);
        if (size[l] > max_points)
            rc = bp_fail(err, "frontier: more than %zu points; the exact frontier is too large "
                         "for this table", max_points);
    }
    if (rc == 0 && L > 0) {
        out->n = size[L - 1];
        out->n_layers = L;
        out->p = bp_calloc(out->n, sizeof *out->p, err);
        rc = out->p ? 0 : -1;
        for (size_t i = 0; rc == 0 && i < out->n; i++)
            out->p[i] = (bp_front_point){stage[L - 1][i].res, stage[L - 1][i].error, 0};
        if (rc == 0) {
            fr_hull(out->p, out->n);
            rc = fr_plans(stage, L, out, err);
        }
    }
    for (size_t l = 0; stage && l < L; l++)
        free(stage[l]);
    free(stage);
    free(size);
    free(opt);
    if (rc < 0)
        bp_frontier_free(out);
    return rc;
}
