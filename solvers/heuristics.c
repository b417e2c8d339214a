/*
 * heuristics.c - the integer program's exact shortcuts around GLPK (ip.c):
 * the dominance pre-pass, the per-layer best plan, the greedy incumbent of
 * a single budget (and the columns it lets GLPK drop), and the 1-swap
 * polish of GLPK's answer.  None changes the optimum: they find it sooner
 * or remove what GLPK's tolerances left behind.
 */
#include "ipctx.h"

#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- dominance pre-pass -------------------------------------------------- */

/*
 * d dominates c (same layer, both allowed) when v_r[d] <= v_r[c] for every
 * resource r in play and v_r[d] < v_r[c] for one of them, or the two are
 * equal everywhere and d < c.  A plan using c is never better than the
 * same plan using d (objective, tie-break and every budget are sums of
 * these values), so dropping c keeps the lexicographic optimum; exact
 * duplicates keep the lowest index.
 */
static int ip_dominates(const ip_ctx *x, size_t d, size_t c)
{
    int strict = 0;
    for (int r = 0; r < BP_RES_COUNT; r++) {
        if (!x->used[r])
            continue;
        double vd = x->p->res[r][d], vc = x->p->res[r][c];
        if (vd > vc)
            return 0;
        strict |= vd < vc;
    }
    return strict || d < c;
}

void ip_prune(ip_ctx *x)
{
    const bp_problem *p = x->p;
    for (size_t l = 0; l < p->n_layers; l++)
        for (size_t c = p->first[l]; c < p->first[l + 1]; c++) {
            int alive = ip_allowed(p, c);
            for (size_t d = p->first[l]; alive && d < p->first[l + 1]; d++)
                if (d != c && ip_allowed(p, d) && ip_dominates(x, d, c))
                    alive = 0;
            x->keep[c] = (unsigned char)alive;
        }
}

/* Per layer, the kept candidate with the smallest (primary, secondary). */
void ip_best_each_layer(const ip_ctx *x, size_t *choice)
{
    const bp_problem *p = x->p;
    for (size_t l = 0; l < p->n_layers; l++) {
        size_t best = SIZE_MAX;
        for (size_t c = p->first[l]; c < p->first[l + 1]; c++) {
            if (!x->keep[c])
                continue;
            if (best == SIZE_MAX || p->res[x->primary][c] < p->res[x->primary][best] ||
                (p->res[x->primary][c] == p->res[x->primary][best] && x->secondary >= 0 &&
                 p->res[x->secondary][c] < p->res[x->secondary][best]))
                best = c;
        }
        choice[l] = best;
    }
}

/* Could swapping choice[l] for c keep every budget?  A cheap estimate from
 * running totals; the exact check follows only when this says yes. */
static int ip_swap_may_fit(const ip_ctx *x, const double *btot, size_t old, size_t c)
{
    for (size_t i = 0; i < x->n_budgets; i++) {
        const double *v = x->p->res[x->budgets[i].res];
        double est = btot[i] - v[old] + v[c], lim = x->budgets[i].limit;
        if (est > lim + 1e-9 * fmax(fabs(lim), fabs(est)))
            return 0;
    }
    return 1;
}

static void ip_budget_totals(const ip_ctx *x, const size_t *choice, double *btot)
{
    for (size_t i = 0; i < x->n_budgets; i++)
        btot[i] = ip_total(x->p, x->budgets[i].res, choice);
}

/* Is t better than cur?  Phase 1: lexicographically.  Phase 2: lower
 * secondary with the primary still within cap. */
static int ip_better(const ip_ctx *x, int phase, const double *t, const double *cur,
                     double cap)
{
    if (phase == 1)
        return ip_lex_less(x, t, cur);
    return t[1] < cur[1] && t[0] <= cap;
}

/* Try c in place of choice[l]; keep it when the plan gets better and
 * still meets every budget exactly. */
static int ip_try_swap(const ip_ctx *x, int phase, double cap, size_t *choice, size_t l,
                       size_t c, double *cur, double *btot)
{
    double t[2];
    size_t old = choice[l];
    if (!ip_swap_may_fit(x, btot, old, c))
        return 0;
    if (phase == 2) {
        double est = cur[0] - x->p->res[x->primary][old] + x->p->res[x->primary][c];
        if (est > cap + 1e-9 * fabs(cap))
            return 0;
    }
    choice[l] = c;
    ip_lex_totals(x, choice, t);
    if (ip_better(x, phase, t, cur, cap) &&
        ip_rows_hold(x, x->budgets, x->n_budgets, choice, NULL)) {
        cur[0] = t[0], cur[1] = t[1];
        ip_budget_totals(x, choice, btot);
        return 1;
    }
    choice[l] = old;
    return 0;
}

/* Would c improve the plan in its own layer (phase 1: (primary, secondary);
 * phase 2: secondary)? */
static int ip_swap_helps(const ip_ctx *x, int phase, size_t cur, size_t c)
{
    const double *vs = x->secondary >= 0 ? x->p->res[x->secondary] : NULL;
    double dp = x->p->res[x->primary][c] - x->p->res[x->primary][cur];
    if (phase == 2)
        return vs && vs[c] < vs[cur];
    if (dp != 0.0)
        return dp < 0.0;
    return vs && vs[c] < vs[cur];
}

static void ip_polish_phase(const ip_ctx *x, int phase, double cap, size_t *choice,
                            double *btot)
{
    const bp_problem *p = x->p;
    double cur[2];
    ip_lex_totals(x, choice, cur);
    ip_budget_totals(x, choice, btot);
    for (int pass = 0, moved = 1; moved && pass < 8; pass++) {
        moved = 0;
        for (size_t l = 0; l < p->n_layers; l++)
            for (size_t c = p->first[l]; c < p->first[l + 1]; c++)
                if (x->keep[c] && c != choice[l] && ip_swap_helps(x, phase, choice[l], c))
                    moved |= ip_try_swap(x, phase, cap, choice, l, c, cur, btot);
    }
}

/*
 * 1-swap polish.  Phase 1 replaces one layer's choice whenever that
 * strictly lowers (primary, secondary) and keeps every budget; GLPK's
 * optimality tolerances can leave such moves.  Phase 2 then lowers the
 * secondary resource while the primary stays within the tie slack of its
 * phase-1 value (the tie-break GLPK cannot resolve below its tolerances).
 * Each phase moves monotonically, so both end.
 */
void ip_polish(const ip_ctx *x, size_t *choice)
{
    double *btot = malloc((x->n_budgets + 1) * sizeof *btot), t[2];
    if (!btot)
        return;
    ip_polish_phase(x, 1, 0.0, choice, btot);
    if (x->secondary >= 0) {
        ip_lex_totals(x, choice, t);
        double cap = t[0] + (x->integral[x->primary] ? 0.0 : IP_LEX_SLACK * fabs(t[0]));
        ip_polish_phase(x, 2, cap, choice, btot);
    }
    free(btot);
}

/* ---- a greedy incumbent for one budget ------------------------------------- */

typedef struct ip_step {
    double slope;                 /* primary saved per unit of budget */
    size_t layer, from, to;       /* candidate indices */
} ip_step;

static int ip_step_cmp(const void *a, const void *b)
{
    const ip_step *s = a, *t = b;
    if (s->slope != t->slope)
        return s->slope > t->slope ? -1 : 1;
    if (s->layer != t->layer)
        return s->layer < t->layer ? -1 : 1;
    return s->from < t->from ? -1 : s->from > t->from;
}

/* Kept candidates of layer l on the lower convex hull of (budget q,
 * primary p), by ascending q, into hull[]; returns how many. */
static size_t ip_layer_hull(const ip_ctx *x, int q, size_t l, size_t *hull)
{
    const double *vq = x->p->res[q], *vp = x->p->res[x->primary];
    size_t n = 0;
    for (size_t c = x->p->first[l]; c < x->p->first[l + 1]; c++) {
        if (!x->keep[c])
            continue;
        size_t i = n++;       /* insertion sort by (q, p) */
        while (i > 0 && (vq[hull[i - 1]] > vq[c] ||
                         (vq[hull[i - 1]] == vq[c] && vp[hull[i - 1]] > vp[c])))
            hull[i] = hull[i - 1], i--;
        hull[i] = c;
    }
    size_t h = 0;
    for (size_t i = 0; i < n; i++) {
        size_t c = hull[i];
        if (h > 0 && vp[c] >= vp[hull[h - 1]])
            continue;                          /* costs more, saves nothing */
        while (h >= 2) {
            size_t a = hull[h - 2], b = hull[h - 1];
            double cross = (vq[b] - vq[a]) * (vp[c] - vp[a]) - (vp[b] - vp[a]) * (vq[c] - vq[a]);
            if (cross > 0.0)
                break;                         /* b lies on or above a--c */
            h--;
        }
        hull[h++] = c;
    }
    return h;
}

/*
 * The classic multiple-choice knapsack greedy: every layer at its cheapest
 * hull point, then hull steps in order of primary saved per unit of budget
 * while they fit.  Returns 1 with a plan meeting the one budget row.
 *
 * *bound: the LP relaxation's optimum (a lower bound on the primary total of
 * every plan within the budget): the steps in that order up to the first
 * that does not fit, plus the fraction of it that does (Dantzig's bound for
 * the multiple-choice knapsack; ties dropped, which only relaxes further).
 */
int ip_greedy(const ip_ctx *x, size_t *choice, double *bound, double *lambda)
{
    const bp_problem *p = x->p;
    const ip_row *row = &x->budgets[0];
    const double *vq = p->res[row->res], *vp = p->res[x->primary];
    size_t *hull = malloc((x->n_cand + 1) * sizeof *hull);
    ip_step *steps = malloc((x->n_cand + 1) * sizeof *steps);
    size_t n_steps = 0;
    int ok = 0;
    double used = 0.0;
    if (!hull || !steps)
        goto done;
    for (size_t l = 0; l < p->n_layers; l++) {
        size_t h = ip_layer_hull(x, row->res, l, hull);
        if (h == 0)
            goto done;
        choice[l] = hull[0];
        used += vq[hull[0]];
        for (size_t i = 0; i + 1 < h; i++)
            steps[n_steps++] = (ip_step){(vp[hull[i]] - vp[hull[i + 1]]) /
                                         (vq[hull[i + 1]] - vq[hull[i]]),
                                         l, hull[i], hull[i + 1]};
    }
    qsort(steps, n_steps, sizeof *steps, ip_step_cmp);
    double lp = 0.0, lp_used = used;
    int broken = 0;
    *lambda = 0.0;                     /* the LP's price of the budget: the breaking step's */
    for (size_t l = 0; l < p->n_layers; l++)
        lp += vp[choice[l]];
    for (size_t i = 0; i < n_steps; i++) {
        const ip_step *s = &steps[i];
        double add = vq[s->to] - vq[s->from];
        if (!broken) {                 /* the LP takes steps whole until one does not fit */
            double room = row->limit - lp_used;
            double f = add <= room ? 1.0 : room > 0.0 ? room / add : 0.0;
            lp -= f * (vp[s->from] - vp[s->to]);
            lp_used += f * add;
            broken = f < 1.0;
            if (broken)
                *lambda = s->slope;
        }
        if (choice[s->layer] == s->from && used + add <= row->limit)
            choice[s->layer] = s->to, used += add;
    }
    *bound = lp;
    ok = ip_rows_hold(x, x->budgets, x->n_budgets, choice, NULL);
done:
    free(hull);
    free(steps);
    return ok;
}

/*
 * Reduced-cost fixing from the Lagrangian of the one budget row (exact):
 * for any price lambda >= 0,
 *     L(lambda) = sum_l min_c (p_c + lambda q_c) - lambda B
 * is a lower bound on the primary total of every plan within the budget,
 * and a plan that takes candidate c in layer l is bounded below by
 * L(lambda) + r_c, r_c = (p_c + lambda q_c) - min_c' (p_c' + lambda q_c').
 * With an incumbent of primary total U, every c with L + r_c > U lies only
 * in worse plans and is dropped.  At the LP's price (the greedy's breaking
 * step) L is the LP bound and U - L the greedy's gap, typically a few parts
 * per million: most candidates go, and GLPK solves what is left.  Plans
 * whose total equals U keep every candidate (the tie-break needs them):
 * the test is strict, with a margin of 1e-9 of the magnitudes summed.
 * Sums in long double; returns how many candidates were dropped.
 */
size_t ip_lagrange_fix(ip_ctx *x, double lambda, double U)
{
    const bp_problem *p = x->p;
    if (x->n_budgets != 1 || !(lambda > 0.0) || !isfinite(lambda) || !isfinite(U))
        return 0;
    const ip_row *row = &x->budgets[0];
    const double *vq = p->res[row->res], *vp = p->res[x->primary];
    long double L = -(long double)lambda * row->limit, mag = fabsl(L) + fabs(U);
    double *best = malloc(p->n_layers * sizeof *best);
    if (!best)
        return 0;
    for (size_t l = 0; l < p->n_layers; l++) {
        long double m = INFINITY;
        for (size_t c = p->first[l]; c < p->first[l + 1]; c++)
            if (x->keep[c])
                m = fminl(m, (long double)vp[c] + (long double)lambda * vq[c]);
        if (!isfinite((double)m)) {
            free(best);
            return 0;                  /* a layer without candidates: not for here */
        }
        best[l] = (double)m;
        L += m;
        mag += fabsl(m);
    }
    long double slack = (long double)U - L + 1e-9L * mag;
    size_t dropped = 0;
    for (size_t l = 0; slack >= 0 && l < p->n_layers; l++)
        for (size_t c = p->first[l]; c < p->first[l + 1]; c++) {
            long double r = (long double)vp[c] + (long double)lambda * vq[c] - best[l];
            if (x->keep[c] && r > slack)
                x->keep[c] = 0, dropped++;
        }
    free(best);
    return dropped;
}

/*
 * With a plan meeting every budget at primary total U, a candidate whose
 * reduced primary alone exceeds U - sum_l base_l can only be in worse
 * plans; dropping it shrinks the model and, above all, keeps GLPK's
 * objective well scaled (its tolerances are relative to the largest
 * coefficient).
 */
void ip_set_cut(ip_ctx *x, const size_t *choice)
{
    double u = ip_total(x->p, x->primary, choice);
    double cut = u - x->min_sum[x->primary];
    cut += 1e-9 * (fabs(u) + fabs(x->min_sum[x->primary])) + DBL_MIN;
    x->cut = fmin(x->cut, cut);
}
